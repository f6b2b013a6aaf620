//! Frames on a session's reliable stream.
//!
//! KCP turns a session into one reliable, ordered byte stream; frames cut
//! that stream into units:
//!
//! ```text
//! len u32 LE | kind u8 | payload
//! ```
//!
//! where `len` counts the kind byte and the payload. The session layer
//! encodes outgoing frames with [`Frame::encode`] and feeds every received
//! stream chunk to a [`FrameDecoder`], which hands back whole frames. The
//! length prefix is checked against [`Frame::max_len`] as soon as its four
//! bytes arrive, so a peer cannot make a node buffer an oversized frame.
//! [`peek_hello`] lets the node inspect an unknown datagram's first stream
//! bytes before deciding to create a session for it.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::addr::{self, AddrText};
use super::message::{Sender, MAX_OVERHEAD as MAX_MESSAGE_OVERHEAD};
use super::reader::Reader;
use super::{Message, WireError};

/// Magic at the start of a hello payload.
pub const HELLO_MAGIC: [u8; 4] = *b"GLAD";
/// Protocol version carried in the hello.
pub const PROTOCOL_VERSION: u8 = 1;

/// Kind byte of each frame.
const KIND_HELLO: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_REQUEST: u8 = 3;
const KIND_REPLY: u8 = 4;
const KIND_PING: u8 = 5;
const KIND_CLOSE: u8 = 6;

/// Length of the `len` prefix.
const LEN_PREFIX: usize = 4;

/// The largest `len` of a frame whose message body is empty: kind, request
/// id, and the message's maximal overhead. A frame's `len` is at most this
/// plus the body length.
pub(super) const MAX_FRAME_OVERHEAD: usize = 1 + 8 + MAX_MESSAGE_OVERHEAD;

/// The largest `len` of a valid hello frame: kind, magic, version,
/// instance and a 255-byte address.
const MAX_HELLO_LEN: usize = 1 + 4 + 1 + 8 + 1 + 255;

/// What a hello frame says, as [`peek_hello`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloFields {
    /// Protocol version.
    pub version: u8,
    /// Random id of the sending node's process, fixed for its lifetime.
    pub instance: u64,
    /// The sender's advertised address.
    pub advertised: SocketAddr,
}

/// Why a session was closed, carried in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The node is shutting down.
    Shutdown,
    /// The peer was deleted from the route table.
    Deleted,
    /// The peer violated the protocol.
    ProtocolError,
    /// A reason code this version does not know.
    ///
    /// `Other(0)`..`Other(2)` encode as the codes of the named reasons and so
    /// decode as those.
    Other(u8),
}

impl CloseReason {
    /// The reason's wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Shutdown => 0,
            Self::Deleted => 1,
            Self::ProtocolError => 2,
            Self::Other(code) => code,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Shutdown,
            1 => Self::Deleted,
            2 => Self::ProtocolError,
            other => Self::Other(other),
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// First frame on every session.
    Hello {
        /// Protocol version.
        version: u8,
        /// Random id of the sending node's process, fixed for its lifetime:
        /// tells a late copy of an old hello from a restarted peer's.
        instance: u64,
        /// The sender's advertised address.
        advertised: SocketAddr,
    },
    /// A one-way message.
    Message(Message),
    /// A request expecting a reply with the same id.
    Request {
        /// Correlation id.
        id: u64,
        /// The request.
        message: Message,
    },
    /// The reply to request `id`.
    Reply {
        /// Correlation id.
        id: u64,
        /// The reply.
        message: Message,
    },
    /// Keepalive.
    Ping,
    /// Graceful close.
    Close(CloseReason),
}

impl Frame {
    /// Bytes `encode` appends.
    pub fn encoded_len(&self) -> usize {
        LEN_PREFIX + self.len_field()
    }

    /// Like [`encode`](Self::encode), but a message body of at least
    /// `min_body` bytes is not copied: the bytes before it are appended to
    /// `out`, and the body and the four checksum bytes after it are
    /// returned; the frame is `out`'s new bytes, the body, the checksum.
    /// `None`: the whole frame was appended.
    pub(crate) fn encode_split(
        &self,
        out: &mut BytesMut,
        min_body: usize,
    ) -> Option<(Bytes, [u8; 4])> {
        let Some(message) = self.message().filter(|m| m.body().len() >= min_body) else {
            self.encode(out);
            return None;
        };
        let len = self.len_field();
        out.reserve(LEN_PREFIX + len - message.body().len() - 4);
        // Fits: see `encode`.
        out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
        self.put_message_kind(out);
        message.encode_head(out);
        Some((message.body().clone(), message.checksum_bytes()))
    }

    /// The message a `Message`, `Request` or `Reply` frame carries.
    fn message(&self) -> Option<&Message> {
        match self {
            Self::Message(message)
            | Self::Request { message, .. }
            | Self::Reply { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The kind byte, and the id of a request or reply: what precedes the
    /// message in a frame that carries one (nothing for other frames).
    fn put_message_kind(&self, out: &mut BytesMut) {
        match self {
            Self::Message(_) => out.put_u8(KIND_MESSAGE),
            Self::Request { id, .. } => {
                out.put_u8(KIND_REQUEST);
                out.put_u64_le(*id);
            }
            Self::Reply { id, .. } => {
                out.put_u8(KIND_REPLY);
                out.put_u64_le(*id);
            }
            _ => {}
        }
    }

    /// Append the wire encoding (length prefix included).
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.len_field();
        out.reserve(LEN_PREFIX + len);
        // Fits: a message body is at most MAX_BODY_LEN, chosen so that every
        // frame's length fits a u32.
        out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
        match self {
            Self::Hello {
                version,
                instance,
                advertised,
            } => {
                let text = AddrText::new(advertised);
                out.put_u8(KIND_HELLO);
                out.put_slice(&HELLO_MAGIC);
                out.put_u8(*version);
                out.put_u64_le(*instance);
                out.put_u8(text.len_u8());
                out.put_slice(text.as_bytes());
            }
            Self::Message(message)
            | Self::Request { message, .. }
            | Self::Reply { message, .. } => {
                self.put_message_kind(out);
                message.encode(out);
            }
            Self::Ping => out.put_u8(KIND_PING),
            Self::Close(reason) => {
                out.put_u8(KIND_CLOSE);
                out.put_u8(reason.code());
            }
        }
    }

    /// Largest frame length field accepted for a given `max_message_size`.
    ///
    /// That is the `len` of a request or reply whose sender and type are 255
    /// bytes each and whose body is `max_message_size` bytes:
    /// `max_message_size + 529`. Saturates instead of overflowing.
    pub fn max_len(max_message_size: usize) -> usize {
        max_message_size.saturating_add(MAX_FRAME_OVERHEAD)
    }

    /// Decode exactly one complete frame, length prefix included, occupying
    /// all of `buf`.
    ///
    /// No size limit is applied (the bytes are already in memory); streams
    /// should go through [`FrameDecoder`], which enforces one. Message bodies
    /// are zero-copy slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let len = usize::try_from(r.u32_le()?).map_err(|_| WireError::Truncated)?;
        r.take(len)?;
        r.finish()?;
        decode_contents(buf.slice(LEN_PREFIX..), &mut None)
    }

    /// The value of the `len` field: kind byte plus payload.
    fn len_field(&self) -> usize {
        1 + match self {
            Self::Hello { advertised, .. } => {
                HELLO_MAGIC.len() + 1 + 8 + 1 + AddrText::new(advertised).as_bytes().len()
            }
            Self::Message(message) => message.encoded_len(),
            Self::Request { message, .. } | Self::Reply { message, .. } => {
                8 + message.encoded_len()
            }
            Self::Ping => 0,
            Self::Close(_) => 1,
        }
    }
}

/// Decode a frame's contents (kind byte and payload, without the length
/// prefix). Takes `Bytes` so that message bodies can be sliced out of it;
/// `last` is the stream's last sender (see [`Message::decode_cached`]).
fn decode_contents(contents: Bytes, last: &mut Option<Sender>) -> Result<Frame, WireError> {
    let kind = *contents.first().ok_or(WireError::Truncated)?;
    let payload = contents.slice(1..);
    match kind {
        KIND_HELLO => {
            let h = decode_hello(&payload)?;
            Ok(Frame::Hello {
                version: h.version,
                instance: h.instance,
                advertised: h.advertised,
            })
        }
        KIND_MESSAGE => Message::decode_cached(&payload, last).map(Frame::Message),
        KIND_REQUEST | KIND_REPLY => {
            let id = Reader::new(&payload).u64_le()?;
            let message = Message::decode_cached(&payload.slice(8..), last)?;
            Ok(if kind == KIND_REQUEST {
                Frame::Request { id, message }
            } else {
                Frame::Reply { id, message }
            })
        }
        KIND_PING => {
            Reader::new(&payload).finish()?;
            Ok(Frame::Ping)
        }
        KIND_CLOSE => {
            let mut r = Reader::new(&payload);
            let code = r.u8()?;
            r.finish()?;
            Ok(Frame::Close(CloseReason::from_code(code)))
        }
        unknown => Err(WireError::UnknownFrameKind(unknown)),
    }
}

/// Decode a hello payload (after the kind byte): magic, version, instance,
/// address.
fn decode_hello(payload: &[u8]) -> Result<HelloFields, WireError> {
    let mut r = Reader::new(payload);
    if r.array::<4>()? != HELLO_MAGIC {
        return Err(WireError::BadHello);
    }
    let version = r.u8()?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::BadHello);
    }
    let instance = r.u64_le()?;
    let (advertised, _) = addr::parse(r.short_bytes()?)?;
    r.finish()?;
    Ok(HelloFields {
        version,
        instance,
        advertised,
    })
}

/// The hello at the start of a session's stream, if the bytes begin with a
/// complete, valid hello frame.
///
/// Bytes after the hello are ignored. The node uses this on the payload of a
/// datagram from an unknown peer to decide whether it may create a session;
/// it does not allocate, so probing junk datagrams is cheap.
pub fn peek_hello(stream_start: &[u8]) -> Option<HelloFields> {
    let mut r = Reader::new(stream_start);
    let len = usize::try_from(r.u32_le().ok()?).ok()?;
    if len > MAX_HELLO_LEN {
        return None;
    }
    let mut contents = Reader::new(r.take(len).ok()?);
    if contents.u8().ok()? != KIND_HELLO {
        return None;
    }
    let payload = contents.take(len.checked_sub(1)?).ok()?;
    decode_hello(payload).ok()
}

/// Incremental decoder of frames from a byte stream.
///
/// One per session, fed the bytes KCP delivers in whatever chunks they come.
/// After an error the stream is unusable (the frame boundaries are lost) and
/// the caller closes the session; the decoder does not try to recover.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
    /// Bytes of a dropped frame still to come, skipped as they arrive.
    skip: usize,
    /// The sender of the last message decoded, reused while it repeats.
    last_sender: Option<Sender>,
}

impl FrameDecoder {
    /// A decoder accepting bodies up to `max_message_size`.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len: Frame::max_len(max_message_size),
            skip: 0,
            last_sender: None,
        }
    }

    /// Append received stream bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        let skipped = self.skip.min(chunk.len());
        self.skip -= skipped;
        if let Some(rest) = chunk.get(skipped..).filter(|r| !r.is_empty()) {
            self.buf.extend_from_slice(rest);
        }
    }

    /// Drop the frame being received: free its buffered bytes and skip the
    /// rest of it as it arrives; the frames after it decode as usual.
    /// Returns the bytes freed: 0 if nothing is buffered, or too little to
    /// know the frame's length (then nothing is dropped).
    pub fn drop_partial(&mut self) -> usize {
        let mut r = Reader::new(&self.buf);
        let Ok(len) = r.u32_le() else {
            return 0;
        };
        let total = LEN_PREFIX.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        let buffered = self.buf.len();
        if buffered >= total {
            // A whole frame waits to be decoded: not partial.
            return 0;
        }
        self.skip = total - buffered;
        // A new, empty buffer: `clear` would keep the allocation.
        self.buf = BytesMut::new();
        buffered
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// An oversized length is reported as soon as the four length bytes are
    /// buffered, before any of the frame's payload arrives.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let mut r = Reader::new(&self.buf);
        let Ok(len) = r.u32_le() else {
            return Ok(None);
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_len {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        // Deliberately no `reserve(len)` here: that would let a peer make
        // the node allocate `max_len` bytes per session with four bytes.
        // The buffer grows as bytes actually arrive.
        let total = LEN_PREFIX
            .checked_add(len)
            .ok_or(WireError::FrameTooLarge {
                len,
                max: self.max_len,
            })?;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        // Split the frame off without copying; the message body is then
        // sliced out of this same allocation.
        let contents = self.buf.split_to(len).freeze();
        decode_contents(contents, &mut self.last_sender).map(Some)
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
