//! The bytes discovery puts in message bodies.
//!
//! Both message types carry the same body, a [`PeerList`]:
//!
//! * [`ASK_TYPE`] (`discovery.ask`): "send me some of your peers"; the
//!   asker's own sample rides along (push–pull gossip);
//! * [`PEERS_TYPE`] (`discovery.peers`): the answer to an ask.
//!
//! A body is one version byte ([`WIRE_VERSION`]) followed by the
//! [postcard](https://docs.rs/postcard) encoding of a [`PeerList`]. Bytes
//! after the list are ignored, so a later revision of version 1 may append
//! fields. [`decode`] never panics and refuses, before decoding a single
//! entry, a body longer than [`max_body_len`] or announcing more entries than
//! the caller's cap.

use std::net::SocketAddr;

use bytes::Bytes;
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

/// The longest body a list of `max_entries` entries can take.
pub fn max_body_len(max_entries: usize) -> usize {
    1 + 10 + max_entries.saturating_mul(MAX_ENTRY_LEN)
}

/// Encode `list` as a version-1 body.
pub fn encode(list: &PeerList) -> Bytes {
    let mut out = vec![WIRE_VERSION];
    // Serializing plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(list).unwrap_or_default();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Decode a body, refusing lists of more than `max_entries` entries.
pub fn decode(body: &[u8], max_entries: usize) -> Result<PeerList, DecodeError> {
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
    let (list, _trailing) =
        postcard::take_from_bytes::<PeerList>(rest).map_err(|_| DecodeError::Malformed)?;
    Ok(list)
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
