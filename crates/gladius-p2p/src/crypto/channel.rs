//! An established encrypted channel: seals outgoing KCP datagrams into
//! `Data` packets and opens incoming ones.
//!
//! The two keys are the handshake's Noise `Split()` output, used with
//! ring's AEAD directly (sealing and opening in place, with no copy
//! beyond the one into the datagram), exactly as a Noise `CipherState`
//! would: each `Data` packet carries the 64-bit counter used as its AEAD
//! nonce (the Noise nonce: 4 zero bytes and the counter, little-endian for
//! ChaCha20-Poly1305 and big-endian for AES-256-GCM; no associated data).
//! Counters start at 0 and increase by one per sealed datagram. On receipt, in this order: the packet is parsed,
//! its receiver index must be ours, its counter must pass the
//! [`ReplayWindow`] check, the ciphertext must authenticate, and only then is
//! the counter recorded in the window and the plaintext handed out. Nothing
//! that fails any step reaches KCP or changes the channel.
//!
//! A channel refuses to seal past its send limit ([`DEFAULT_SEND_LIMIT`],
//! far below the 2⁶⁴ − 1 nonce space) with [`ChannelError::NeedsRekey`]:
//! the caller then closes the session and runs a new handshake.

use std::fmt;

use bytes::Bytes;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::cipher::Cipher;
use super::identity::PublicKey;
use super::packet::{self, DataPacket, Packet, PacketError, DATA_CIPHERTEXT_MAX, TAG_LEN};
use super::replay::ReplayWindow;

/// Default number of datagrams a channel seals before it needs a new
/// handshake (2⁶⁰).
pub const DEFAULT_SEND_LIMIT: u64 = 1 << 60;

/// Offset of the ciphertext in a `Data` datagram.
const DATA_HEADER_LEN: usize = packet::DATA_OVERHEAD - TAG_LEN;

/// Why a datagram could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Not a well-formed encrypted-mode packet.
    #[error("malformed packet: {0}")]
    Packet(#[from] PacketError),
    /// A well-formed packet, but not `Data`.
    #[error("not a Data packet")]
    NotData,
    /// Addressed to another index.
    #[error("Data for index {got:#010x}, this channel is {expected:#010x}")]
    WrongIndex {
        /// Our index.
        expected: u32,
        /// The packet's.
        got: u32,
    },
    /// A counter already received (a replay or a duplicate).
    #[error("counter {0} already received")]
    Replayed(u64),
    /// A counter older than the replay window.
    #[error("counter {0} is older than the replay window")]
    TooOld(u64),
    /// Authentication failed: forged, corrupted, or sealed with other keys.
    #[error("Data failed authentication")]
    Decrypt,
    /// The send counter reached the limit: close and handshake again.
    #[error("send limit reached; a new handshake is needed")]
    NeedsRekey,
    /// The plaintext is too long for one `Data` packet.
    #[error("datagram of {0} bytes is too long to seal")]
    TooLarge(usize),
}

/// One direction's key of a channel.
struct Key(LessSafeKey);

impl Key {
    /// `None` only if ring refuses the key (a 32-byte key fits both
    /// algorithms, so never).
    fn new(cipher: Cipher, key: &[u8; 32]) -> Option<Self> {
        let algorithm = match cipher {
            Cipher::ChaChaPoly => &aead::CHACHA20_POLY1305,
            Cipher::AesGcm => &aead::AES_256_GCM,
        };
        let unbound = UnboundKey::new(algorithm, key).ok()?;
        Some(Self(LessSafeKey::new(unbound)))
    }
}

/// The Noise nonce of `counter` for `cipher`.
fn nonce(cipher: Cipher, counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&match cipher {
        Cipher::ChaChaPoly => counter.to_le_bytes(),
        Cipher::AesGcm => counter.to_be_bytes(),
    });
    Nonce::assume_unique_for_key(n)
}

/// One peer's established encrypted channel.
pub struct SecureChannel {
    send: Key,
    recv: Key,
    cipher: Cipher,
    local_index: u32,
    remote_index: u32,
    remote_static: PublicKey,
    next_counter: u64,
    send_limit: u64,
    replay: ReplayWindow,
    /// Initiator only, until the first `Data` opens: the `Response` that
    /// completed the handshake and the `Finish` that answered it.
    finish_echo: Option<(Bytes, Bytes)>,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("cipher", &self.cipher)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("remote_static", &self.remote_static)
            .field("next_counter", &self.next_counter)
            .field("send_limit", &self.send_limit)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl SecureChannel {
    /// A channel that seals with `send_key` and opens with `recv_key` (the
    /// two halves of the handshake's `Split()`, in this side's order);
    /// `None` if the AEAD refuses the keys (never, for 32-byte keys).
    pub(crate) fn new(
        (send_key, recv_key): ([u8; 32], [u8; 32]),
        cipher: Cipher,
        local_index: u32,
        remote_index: u32,
        remote_static: PublicKey,
        finish_echo: Option<(Bytes, Bytes)>,
    ) -> Option<Self> {
        Some(Self {
            send: Key::new(cipher, &send_key)?,
            recv: Key::new(cipher, &recv_key)?,
            cipher,
            local_index,
            remote_index,
            remote_static,
            next_counter: 0,
            send_limit: DEFAULT_SEND_LIMIT,
            replay: ReplayWindow::new(),
            finish_echo,
        })
    }

    /// Seal one KCP datagram into a `Data` datagram for the peer, replacing
    /// the contents of `out`. On error `out` is left empty and the counter
    /// unchanged.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
        out.clear();
        self.seal_append(plaintext, out)
    }

    /// Like [`seal`](Self::seal), but the `Data` datagram is appended to
    /// `out` (the batch of datagrams being built for one socket call), so
    /// the ciphertext is written where it leaves from, with no copy. On
    /// error `out` is as it was and the counter unchanged.
    pub fn seal_append(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
        if self.next_counter >= self.send_limit {
            return Err(ChannelError::NeedsRekey);
        }
        let sealed_len = plaintext.len().saturating_add(TAG_LEN);
        if sealed_len > DATA_CIPHERTEXT_MAX {
            return Err(ChannelError::TooLarge(plaintext.len()));
        }
        let start = out.len();
        let counter = self.next_counter;
        out.reserve(DATA_HEADER_LEN + sealed_len);
        DataPacket {
            receiver_index: self.remote_index,
            counter,
            ciphertext: plaintext,
        }
        .encode_into(out);
        let sealed = out.get_mut(start + DATA_HEADER_LEN..).map(|in_out| {
            self.send.0.seal_in_place_separate_tag(
                nonce(self.cipher, counter),
                Aad::empty(),
                in_out,
            )
        });
        match sealed {
            Some(Ok(tag)) => {
                out.extend_from_slice(tag.as_ref());
                self.next_counter += 1;
                Ok(())
            }
            // ring refuses only inputs beyond its limit, which the length
            // check above rules out.
            _ => {
                out.truncate(start);
                Err(ChannelError::TooLarge(plaintext.len()))
            }
        }
    }

    /// Open a `Data` datagram from the peer into `out` (replacing its
    /// contents) — the KCP datagram it sealed. On any error `out` is empty
    /// and the channel unchanged.
    pub fn open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
        out.clear();
        let data = match packet::parse(datagram)? {
            Packet::Data(data) => data,
            _ => return Err(ChannelError::NotData),
        };
        if data.receiver_index != self.local_index {
            return Err(ChannelError::WrongIndex {
                expected: self.local_index,
                got: data.receiver_index,
            });
        }
        let counter = data.counter;
        if !self.replay.check(counter) {
            return Err(if self.replay.is_too_old(counter) {
                ChannelError::TooOld(counter)
            } else {
                ChannelError::Replayed(counter)
            });
        }
        if data.ciphertext.len() < TAG_LEN {
            return Err(ChannelError::Decrypt);
        }
        out.extend_from_slice(data.ciphertext);
        let opened = self
            .recv
            .0
            .open_in_place(nonce(self.cipher, counter), Aad::empty(), out)
            .map(|plaintext| plaintext.len());
        match opened {
            Ok(n) => out.truncate(n),
            Err(_) => {
                out.clear();
                return Err(ChannelError::Decrypt);
            }
        }
        self.replay.update(counter);
        // The peer has keys, so it has our Finish.
        self.finish_echo = None;
        Ok(())
    }

    /// Initiator only: if `datagram` is byte for byte the `Response` that
    /// completed this handshake (the responder retransmitted it because our
    /// `Finish` was lost), the same `Finish` to send again. Only until the
    /// first `Data` from the peer opens; `None` otherwise.
    pub fn answer_duplicate_response(&self, datagram: &[u8]) -> Option<Bytes> {
        match &self.finish_echo {
            Some((response, finish)) if response.as_ref() == datagram => Some(finish.clone()),
            _ => None,
        }
    }

    /// The suite the handshake ran, whose AEAD seals and opens `Data`.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The peer's static key, as authenticated by the handshake.
    pub fn remote_static(&self) -> PublicKey {
        self.remote_static
    }

    /// Our index: incoming `Data` carries it.
    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// The peer's index: outgoing `Data` carries it.
    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    /// Number of datagrams sealed so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.next_counter
    }

    /// The highest counter opened so far.
    pub fn highest_received(&self) -> Option<u64> {
        self.replay.highest()
    }

    /// The send limit (default [`DEFAULT_SEND_LIMIT`]).
    pub fn send_limit(&self) -> u64 {
        self.send_limit
    }

    /// Set the send limit: [`seal`](Self::seal) fails with
    /// [`ChannelError::NeedsRekey`] once this many datagrams were sealed.
    /// Values above [`DEFAULT_SEND_LIMIT`] are clamped to it.
    pub fn set_send_limit(&mut self, limit: u64) {
        self.send_limit = limit.min(DEFAULT_SEND_LIMIT);
    }
}
