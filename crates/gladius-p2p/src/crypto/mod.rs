//! Encrypted mode, sans-IO: node identities, the Noise handshake, sealed
//! datagrams with a replay window, and load-protection cookies.
//!
//! Everything here sits **below KCP**. In encrypted mode every UDP datagram
//! a node sends is one of the packets of [`packet`]: the three handshake
//! messages (`Init`, `Response`, `Finish`) of
//! `Noise_XX_25519_ChaChaPoly_BLAKE2s` or `Noise_XX_25519_AESGCM_BLAKE2s`
//! ([`handshake`], [`cipher`]), the `Cookie` reply a loaded responder sends
//! instead of a `Response` ([`cookie`]), the clear `Reject`, and `Data`:
//! one whole KCP datagram sealed with the suite's AEAD (ChaCha20-Poly1305
//! or AES-256-GCM) under a 64-bit counter nonce ([`channel`]). A `Data`
//! datagram is opened, and its counter checked against a sliding
//! [`replay`] window, before a single byte of it reaches KCP, so forged,
//! corrupted and replayed datagrams never touch the KCP state machine.
//!
//! Like the session layer, nothing here touches a socket or a clock: time is
//! a `now: u64` in milliseconds passed in by the driver, and every state
//! machine returns the datagrams to send. The only I/O is
//! [`Identity::save`]/[`Identity::load`], which read and write the node's
//! key file.
//!
//! The bytes are specified in `docs/wire-format.md` §7, whose test vectors the
//! unit tests of this module reproduce byte for byte.

pub mod channel;
pub mod cipher;
pub mod cookie;
pub mod handshake;
pub mod identity;
pub mod packet;
pub mod replay;

#[cfg(test)]
mod tests;

pub use channel::{ChannelError, SecureChannel, DEFAULT_SEND_LIMIT};
pub use cipher::{Cipher, UnknownCipher, AES_GCM_UNANSWERED_LIMIT};
pub use cookie::{CookieJar, COOKIE_LEN, COOKIE_ROTATION_MS};
pub use handshake::{
    Established, HandshakeConfig, HandshakeError, HandshakePayload, Initiator, PayloadError,
    Responder, HANDSHAKE_VERSION, MAX_APP_PAYLOAD, PROLOGUE,
};
pub use identity::{Identity, IdentityError, KeyParseError, PublicKey, KEY_LEN};
pub use packet::{classify, parse, Kind, Packet, PacketError, PacketType, RejectReason};
pub use replay::ReplayWindow;

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The value of one hex digit (either case).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode exactly 32 bytes of hex (64 digits, either case).
fn key_from_hex(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let digits = s.as_bytes();
    if digits.len() != KEY_LEN * 2 {
        return Err(KeyParseError::Length(digits.len()));
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (hex_digit(*hi), hex_digit(*lo)),
            _ => (None, None),
        };
        match (hi, lo) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err(KeyParseError::Hex),
        }
    }
    Ok(key)
}
