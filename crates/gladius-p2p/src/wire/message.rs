//! The message: sender, type, body, checksum.
//!
//! A [`Message`] is what applications exchange. On the wire it is
//!
//! ```text
//! sender_len u8 | sender | type_len u8 | type | body_len u32 LE | body | checksum u32 LE
//! ```
//!
//! where `sender` is the canonical text of the sender's advertised address
//! (empty until the node stamps it on send), `type` is 1..=255 bytes of UTF-8,
//! and `checksum` is the CRC-32C of every byte before it. Frames
//! ([`super::Frame`]) carry this encoding as their payload; the message does
//! not know about frames.
//!
//! The fields are private so that the checksum always matches the fields:
//! [`Message::set_sender`] computes and stores it (a message without a
//! sender computes it when asked: the node sets the sender on every send,
//! so computing it in [`Message::new`] too was work thrown away),
//! [`Message::decode`] verifies it, and [`Message::encode`] writes it.

use std::fmt;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::addr::{self, AddrText};
use super::reader::Reader;
use super::WireError;

/// Longest message type, in bytes.
pub const MAX_TYPE_LEN: usize = 255;

/// Bytes of a message's encoding besides its body, at most: both one-byte
/// length prefixes with their strings at 255 bytes, `body_len` and `checksum`.
pub(super) const MAX_OVERHEAD: usize = 1 + 255 + 1 + MAX_TYPE_LEN + 4 + 4;

/// Longest body a message can carry.
///
/// Frame lengths are `u32`, so the body must leave room for the largest
/// frame header and message overhead (see [`super::Frame::max_len`]).
pub const MAX_BODY_LEN: usize = u32::MAX as usize - super::frame::MAX_FRAME_OVERHEAD;

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The type is empty.
    #[error("message type is empty")]
    EmptyType,
    /// The type is longer than 255 bytes.
    #[error("message type is {0} bytes, more than 255")]
    TypeTooLong(usize),
    /// The body is longer than [`MAX_BODY_LEN`].
    #[error("message body is {0} bytes, more than the wire can carry")]
    BodyTooLong(usize),
}

/// A message: who sent it, its type, its body and a checksum.
///
/// The body is bytes, any encoding; [`Message::json`] (feature `json`)
/// builds one from a serde type. The node fills in the sender on send.
///
/// ```
/// use gladius_p2p::{Message, MessageError};
///
/// let msg = Message::new("chat.room1", "hello")?;
/// assert_eq!(msg.msg_type(), "chat.room1");
/// assert_eq!(msg.body(), "hello");
/// assert_eq!(msg.sender(), None); // set by the node when sent
/// assert_eq!(Message::new("", "x"), Err(MessageError::EmptyType));
/// # Ok::<(), MessageError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    sender: Option<Sender>,
    /// UTF-8 (checked by `new` and `decode`). Bytes, not a `String`, so
    /// that a decoded type is a slice of the received frame and a clone
    /// (a broadcast's copies) shares it: one allocation per message less.
    msg_type: Bytes,
    body: Bytes,
    checksum: u32,
}

/// Longest encoding before the body: sender (length byte and at most 255
/// bytes; our own texts stay under 64), type (the same) and body length.
const HEAD_MAX: usize = 1 + 255 + 1 + 255 + 4;

/// A head this long or shorter (any address text and a type of up to 70
/// bytes) is checksummed from a buffer of this size.
const SHORT_HEAD: usize = 128;

/// The CRC-32C of `parts` laid end to end in `buf` (long enough for them).
fn crc_of_parts(buf: &mut [u8], parts: &[&[u8]]) -> u32 {
    let mut len = 0;
    for part in parts {
        if let Some(dst) = buf.get_mut(len..len + part.len()) {
            dst.copy_from_slice(part);
            len += part.len();
        }
    }
    crc32c::crc32c(buf.get(..len).unwrap_or_default())
}

/// The sender's address with its wire text, formatted once: the checksum
/// and the encoding both need the text, and formatting it for each was
/// 6% of the time of a 64 B stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Sender {
    addr: SocketAddr,
    text: AddrText,
}

/// The node's advertised address, formatted once, to put on every message
/// it sends ([`Message::stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SenderStamp(Sender);

impl SenderStamp {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self(Sender {
            addr,
            text: AddrText::new(&addr),
        })
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("sender", &self.sender)
            .field("msg_type", &self.msg_type())
            .field("body", &self.body)
            .field("checksum", &self.checksum())
            .finish()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.addr, f)
    }
}

impl Message {
    /// A new message with no sender yet (the node fills it in on send).
    pub fn new(msg_type: impl Into<String>, body: impl Into<Bytes>) -> Result<Self, MessageError> {
        let msg_type = Bytes::from(msg_type.into());
        let body = body.into();
        if msg_type.is_empty() {
            return Err(MessageError::EmptyType);
        }
        if msg_type.len() > MAX_TYPE_LEN {
            return Err(MessageError::TypeTooLong(msg_type.len()));
        }
        if body.len() > MAX_BODY_LEN {
            return Err(MessageError::BodyTooLong(body.len()));
        }
        Ok(Self {
            sender: None,
            msg_type,
            body,
            // Computed when the sender is set (the node does it on send);
            // until then `checksum()` computes it when asked.
            checksum: 0,
        })
    }

    /// The sender's advertised address; `None` before the message is sent.
    pub fn sender(&self) -> Option<SocketAddr> {
        self.sender.map(|s| s.addr)
    }

    /// The message type.
    pub fn msg_type(&self) -> &str {
        // Always UTF-8 (see the field); the fallback is never taken.
        std::str::from_utf8(&self.msg_type).unwrap_or_default()
    }

    /// Whether the type is `t`: `msg_type() == t` without checking the
    /// type's UTF-8 again (the cheaper test for a hot path).
    pub fn is_type(&self, t: &str) -> bool {
        self.msg_type.as_ref() == t.as_bytes()
    }

    /// Whether the type starts with `prefix`, like [`is_type`](Self::is_type).
    pub fn type_starts_with(&self, prefix: &str) -> bool {
        self.msg_type.starts_with(prefix.as_bytes())
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// CRC-32C over the encoded sender, type and body.
    pub fn checksum(&self) -> u32 {
        match self.sender {
            Some(_) => self.checksum,
            None => self.compute_checksum(),
        }
    }

    /// Set the sender (recomputing the checksum).
    pub fn set_sender(&mut self, sender: SocketAddr) {
        self.stamp(&SenderStamp::new(sender));
    }

    /// [`set_sender`](Self::set_sender) with the address text formatted
    /// once for every message the node sends.
    pub(crate) fn stamp(&mut self, stamp: &SenderStamp) {
        self.sender = Some(stamp.0);
        self.checksum = self.compute_checksum();
    }

    /// Bytes `encode` appends.
    pub fn encoded_len(&self) -> usize {
        let sender_len = self.sender.map_or(0, |s| s.text.as_bytes().len());
        // Bounded by MAX_OVERHEAD + MAX_BODY_LEN, which fits a u32: no overflow.
        1 + sender_len + 1 + self.msg_type.len() + 4 + self.body.len() + 4
    }

    /// Append the wire encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        self.encode_head(out);
        out.put_slice(&self.body);
        out.put_u32_le(self.checksum());
    }

    /// Append the encoding up to the body (sender, type, body length); the
    /// body and [`checksum_bytes`](Self::checksum_bytes) follow it.
    pub(crate) fn encode_head(&self, out: &mut BytesMut) {
        let (sender_len, sender) = self
            .sender
            .as_ref()
            .map_or((0, &[][..]), |s| (s.text.len_u8(), s.text.as_bytes()));
        out.put_u8(sender_len);
        out.put_slice(sender);
        out.put_u8(self.type_len_u8());
        out.put_slice(&self.msg_type);
        out.put_u32_le(self.body_len_u32());
    }

    /// The encoding's last four bytes, after the body.
    pub(crate) fn checksum_bytes(&self) -> [u8; 4] {
        self.checksum().to_le_bytes()
    }

    /// Decode one message occupying all of `buf`, verifying the checksum.
    ///
    /// The body of the result is a zero-copy slice of `buf`. A message with
    /// no sender (`sender_len` 0) decodes fine; whether it is acceptable is
    /// for the session layer to decide.
    pub fn decode(buf: &Bytes) -> Result<Self, WireError> {
        Self::decode_cached(buf, &mut None)
    }

    /// [`decode`](Self::decode), reusing `last`, the sender of the
    /// previous message of the same stream, when this one names the same
    /// bytes (a session's messages almost always do): parsing the address
    /// text was a tenth of the receiver's work per 64 B message.
    pub(super) fn decode_cached(buf: &Bytes, last: &mut Option<Sender>) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let sender_raw = r.short_bytes()?;
        let type_raw = r.short_bytes()?;
        let type_end = r.pos();
        let type_start = type_end - type_raw.len();
        let body_len = usize::try_from(r.u32_le()?).map_err(|_| WireError::Truncated)?;
        let body_start = r.pos();
        r.take(body_len)?;
        let checked_len = r.pos();
        let carried = r.u32_le()?;
        r.finish()?;

        // Verify integrity before interpreting the contents: a corrupted
        // message should be reported as such, not as a bad address or type.
        let computed = crc32c::crc32c(buf.get(..checked_len).ok_or(WireError::Truncated)?);
        if carried != computed {
            return Err(WireError::ChecksumMismatch { carried, computed });
        }

        let sender = match *last {
            _ if sender_raw.is_empty() => None,
            Some(same) if same.text.as_bytes() == sender_raw => Some(same),
            _ => {
                let (addr, text) = addr::parse(sender_raw)?;
                *last = Some(Sender { addr, text });
                *last
            }
        };
        if type_raw.is_empty() {
            return Err(WireError::BadType);
        }
        std::str::from_utf8(type_raw).map_err(|_| WireError::BadType)?;
        // In range: the reader has just read these bytes.
        let msg_type = buf.slice(type_start..type_end);
        let body = buf.slice(body_start..checked_len);
        Ok(Self {
            sender,
            msg_type,
            body,
            // Kept only with a sender (see `new`), so equal messages
            // compare equal however they were made.
            checksum: if sender.is_some() { carried } else { 0 },
        })
    }

    /// The type length as its one-byte prefix (`new` guarantees it fits).
    fn type_len_u8(&self) -> u8 {
        u8::try_from(self.msg_type.len()).unwrap_or(u8::MAX)
    }

    /// The body length as its `u32` field (`new` guarantees it fits).
    fn body_len_u32(&self) -> u32 {
        u32::try_from(self.body.len()).unwrap_or(u32::MAX)
    }

    /// CRC-32C of the encoding up to the checksum, computed piecewise so that
    /// no encoding has to be built.
    fn compute_checksum(&self) -> u32 {
        let (sender_len, sender) = self
            .sender
            .as_ref()
            .map_or((0, &[][..]), |s| (s.text.len_u8(), s.text.as_bytes()));
        let parts = [
            &[sender_len][..],
            sender,
            &[self.type_len_u8()],
            &self.msg_type,
            &self.body_len_u32().to_le_bytes(),
        ];
        // The head gathered on the stack: two CRC calls instead of six
        // (each call has a fixed cost that dominated small messages). A
        // short head, the usual one, needs only a short buffer to clear.
        let head_len: usize = parts.iter().map(|p| p.len()).sum();
        let crc = if head_len <= SHORT_HEAD {
            crc_of_parts(&mut [0u8; SHORT_HEAD], &parts)
        } else {
            crc_of_parts(&mut [0u8; HEAD_MAX], &parts)
        };
        crc32c::crc32c_append(crc, &self.body)
    }
}
