//! The byte layouts of everything a node sends above KCP: messages and the
//! frames that carry them on a session's reliable stream.
//!
//! Layering: the datagram and KCP layers below deliver each session's
//! reliable byte stream; this module cuts that stream into [`Frame`]s
//! ([`FrameDecoder`]) and builds the bytes to send ([`Frame::encode`]). A
//! frame carries at most one [`Message`], the unit applications see. Nothing
//! here does I/O or keeps session state: the session layer decides what a
//! frame means (which must come first, who may send what).
//!
//! Every decoder here takes untrusted input: lengths are bounds-checked
//! and overflow-checked, a bad input is a [`WireError`], never a panic, and
//! message bodies are zero-copy slices of the received buffer.
//!
//! `docs/wire-format.md` is the normative description; the test vectors there
//! are checked by this module's tests.

mod addr;
mod frame;
mod message;
mod reader;
#[cfg(test)]
mod tests;

pub use frame::{
    peek_hello, CloseReason, Frame, FrameDecoder, HelloFields, HELLO_MAGIC, PROTOCOL_VERSION,
};
pub(crate) use message::SenderStamp;
pub use message::{Message, MessageError, MAX_BODY_LEN, MAX_TYPE_LEN};

/// Why bytes from the network could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure was complete.
    #[error("truncated input")]
    Truncated,
    /// A frame announced a length above the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Unknown frame kind byte.
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    /// The message type is empty, too long or not UTF-8.
    #[error("invalid message type")]
    BadType,
    /// The sender or advertised address is not a valid `ip:port`.
    #[error("invalid sender address")]
    BadAddress,
    /// Bytes left over inside a frame after its payload.
    #[error("trailing bytes in frame")]
    TrailingBytes,
    /// The CRC-32C in the message does not match its contents.
    #[error("checksum mismatch: carried {carried:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum carried by the message.
        carried: u32,
        /// Checksum computed over the received bytes.
        computed: u32,
    },
    /// A hello frame with the wrong magic or an unsupported version.
    #[error("bad hello (magic or version)")]
    BadHello,
}
