//! The bytes discovery puts in message bodies.
//!
//! Both message types carry the same body, a [`PeerList`]:
//!
//! * [`ASK_TYPE`] (`discovery.ask`): "send me some of your peers"; the
//!   asker's own sample rides along (push–pull gossip);
//! * [`PEERS_TYPE`] (`discovery.peers`): the answer to an ask.
//!
//! A body is one version byte ([`WIRE_VERSION`]) followed by the
//! [postcard](https://docs.rs/postcard) encoding of a [`PeerList`] and then,
//! since this revision, of an [`Extension`]: the NAT type of each entry
//! (as far as the sender knows it) and the sender's own record (its NAT
//! type and reflexive addresses, as its peers observe them; see
//! `docs/nat.md`). Readers of the first revision ignore the bytes after
//! the list; this one reads the extension when it is there and ignores it
//! when it is malformed (the list still counts). [`decode`] never panics and
//! refuses, before decoding a single entry, a body longer than
//! [`max_body_len`] or announcing more entries than the caller's cap.

use std::net::SocketAddr;

use bytes::Bytes;
use gladius_p2p::NatType;
use serde::{Deserialize, Serialize};

/// Message type of an ask (with the asker's sample).
pub const ASK_TYPE: &str = "discovery.ask";
/// Message type of the answer to an ask.
pub const PEERS_TYPE: &str = "discovery.peers";
/// Prefix of every discovery message type.
pub const TYPE_PREFIX: &str = "discovery.";
/// The body version this code writes and reads.
pub const WIRE_VERSION: u8 = 1;
/// Upper bound of one encoded [`PeerEntry`] in bytes (an IPv6 address with
/// port and a key take 53; the rest is slack).
pub const MAX_ENTRY_LEN: usize = 64;

/// One peer as gossiped: where to reach it and the static key it proved to
/// the node that shares it (`None` in plaintext mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The peer's X25519 static public key.
    pub key: Option<[u8; 32]>,
}

/// The body of both discovery messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The peers, at most the receiver's `max_entries`.
    pub entries: Vec<PeerEntry>,
}

/// Reflexive addresses a [`SelfRecord`] carries at most (more are
/// dropped when encoding and refuse the extension when decoding).
pub const MAX_REFLEXIVE: usize = 4;
/// Upper bound of an encoded [`Extension`] beyond one byte per entry: the
/// lengths, the NAT type and [`MAX_REFLEXIVE`] IPv6 addresses.
const MAX_EXTENSION_FIXED: usize = 4 + MAX_REFLEXIVE * 20;

/// What the sender says of itself: the NAT in front of it and the
/// addresses its peers see it at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfRecord {
    /// The sender's NAT type (`network_state().nat`).
    pub nat: NatType,
    /// The sender's reflexive addresses (`network_state().reflexive_addrs`),
    /// at most [`MAX_REFLEXIVE`].
    pub reflexive_addrs: Vec<SocketAddr>,
}

/// What follows the [`PeerList`] in a body of this revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// The NAT type of each entry, in the list's order, as the sender
    /// knows it (`Unknown` when it does not); shorter than the list if the
    /// sender knows fewer.
    pub nats: Vec<NatType>,
    /// The sender's own record.
    pub me: Option<SelfRecord>,
}

/// A decoded body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The peers.
    pub list: PeerList,
    /// The extension; empty if the body had none or a malformed one.
    pub ext: Extension,
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is empty.
    #[error("empty body")]
    Empty,
    /// The version byte is not one this code reads.
    #[error("unsupported version {0}")]
    Version(u8),
    /// The body is longer than any list of the allowed size can be.
    #[error("body of {len} bytes exceeds {max}")]
    TooLong {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The list announces more entries than allowed.
    #[error("{count} entries exceed the cap of {max}")]
    TooManyEntries {
        /// Announced entries.
        count: u64,
        /// The cap.
        max: usize,
    },
    /// Not a valid postcard `PeerList`.
    #[error("malformed body")]
    Malformed,
}

impl DecodeError {
    /// Whether the body was refused for its size (an oversized list) rather
    /// than for being garbage.
    pub fn is_oversized(&self) -> bool {
        matches!(self, Self::TooLong { .. } | Self::TooManyEntries { .. })
    }
}

/// The longest body a list of `max_entries` entries (and its extension)
/// can take.
pub fn max_body_len(max_entries: usize) -> usize {
    1 + 10 + max_entries.saturating_mul(MAX_ENTRY_LEN + 1) + MAX_EXTENSION_FIXED
}

/// Encode `list` as a version-1 body, without an extension.
pub fn encode(list: &PeerList) -> Bytes {
    encode_with(list, &Extension::default())
}

/// Encode `list` and `ext` as a version-1 body. Per-entry NAT types beyond
/// the list's length and reflexive addresses beyond [`MAX_REFLEXIVE`] are
/// left out.
pub fn encode_with(list: &PeerList, ext: &Extension) -> Bytes {
    let mut ext = ext.clone();
    ext.nats.truncate(list.entries.len());
    if let Some(me) = &mut ext.me {
        me.reflexive_addrs.truncate(MAX_REFLEXIVE);
    }
    let mut out = vec![WIRE_VERSION];
    // Serializing plain data into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_stdvec(list).unwrap_or_default());
    if ext != Extension::default() {
        out.extend_from_slice(&postcard::to_stdvec(&ext).unwrap_or_default());
    }
    Bytes::from(out)
}

/// Decode a body, refusing lists of more than `max_entries` entries; the
/// list alone (see [`decode_all`] for the extension too).
pub fn decode(body: &[u8], max_entries: usize) -> Result<PeerList, DecodeError> {
    decode_all(body, max_entries).map(|d| d.list)
}

/// Decode a body with its extension, refusing lists of more than
/// `max_entries` entries. An extension that is malformed, names more NAT
/// types than the list has entries or more than [`MAX_REFLEXIVE`]
/// reflexive addresses is ignored.
pub fn decode_all(body: &[u8], max_entries: usize) -> Result<Decoded, DecodeError> {
    let (&version, rest) = body.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let max = max_body_len(max_entries);
    if body.len() > max {
        return Err(DecodeError::TooLong {
            len: body.len(),
            max,
        });
    }
    // The list starts with its length as a LEB128 varint: check it before
    // decoding anything.
    let count = read_varint(rest).ok_or(DecodeError::Malformed)?;
    if count > max_entries as u64 {
        return Err(DecodeError::TooManyEntries {
            count,
            max: max_entries,
        });
    }
    let (list, trailing) =
        postcard::take_from_bytes::<PeerList>(rest).map_err(|_| DecodeError::Malformed)?;
    let ext = decode_extension(trailing, list.entries.len()).unwrap_or_default();
    Ok(Decoded { list, ext })
}

/// The extension in `bytes`, if it is there and well-formed. Its counts
/// are checked before anything is allocated for them.
fn decode_extension(bytes: &[u8], entries: usize) -> Option<Extension> {
    if bytes.is_empty() {
        return None;
    }
    if read_varint(bytes)? > entries as u64 {
        return None;
    }
    let (ext, _later) = postcard::take_from_bytes::<Extension>(bytes).ok()?;
    let fits = ext
        .me
        .as_ref()
        .is_none_or(|me| me.reflexive_addrs.len() <= MAX_REFLEXIVE);
    fits.then_some(ext)
}

/// A LEB128 varint of at most 10 bytes at the start of `bytes`.
fn read_varint(bytes: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
