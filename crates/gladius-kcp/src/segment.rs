//! The KCP segment wire format, with a zero-copy parser that needs no endpoint.
//!
//! A datagram is one or more segments laid end to end. Each segment is a
//! 24-byte little-endian header followed by `len` payload bytes, exactly as
//! the reference C implementation (ikcp) writes them:
//!
//! ```text
//! offset  size  field
//!      0     4  conv   conversation id
//!      4     1  cmd    81 PUSH (data), 82 ACK, 83 WASK (window probe), 84 WINS (window tell)
//!      5     1  frg    fragment countdown (message mode); 0 in stream mode
//!      6     2  wnd    sender's free receive window, in segments
//!      8     4  ts     PUSH: send time; ACK: the echoed ts of the acked PUSH
//!     12     4  sn     sequence number (ACK: the sn being acknowledged)
//!     16     4  una    every sn below this was received by the sender
//!     20     4  len    payload length
//!     24   len  data
//! ```
//!
//! [`parse_datagram`] is stricter than ikcp: a datagram must consist of whole
//! segments only. Trailing bytes that do not form a full segment, a `len` that
//! runs past the end, or an unknown `cmd` make the datagram malformed
//! ([`InputError::Truncated`] / [`InputError::BadCommand`]). ikcp itself never
//! emits such datagrams. The conversation id is *not* checked here (the parser
//! has no endpoint); a demultiplexer can use [`SegmentHeader::conv`] to route.

use crate::InputError;

/// Size of a segment header in bytes (ikcp `IKCP_OVERHEAD`).
pub const HEADER_LEN: usize = 24;

/// The command byte of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Data (`IKCP_CMD_PUSH`, 81).
    Push,
    /// Acknowledgement of one PUSH (`IKCP_CMD_ACK`, 82).
    Ack,
    /// "Tell me your window" probe (`IKCP_CMD_WASK`, 83).
    WindowAsk,
    /// "Here is my window" answer (`IKCP_CMD_WINS`, 84).
    WindowTell,
}

impl Command {
    /// The wire value of this command.
    pub const fn to_byte(self) -> u8 {
        match self {
            Command::Push => 81,
            Command::Ack => 82,
            Command::WindowAsk => 83,
            Command::WindowTell => 84,
        }
    }

    /// Decode a wire value; `None` for anything ikcp does not know.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            81 => Some(Command::Push),
            82 => Some(Command::Ack),
            83 => Some(Command::WindowAsk),
            84 => Some(Command::WindowTell),
            _ => None,
        }
    }
}

/// A decoded segment header. See the module docs for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// Conversation id.
    pub conv: u32,
    /// Command.
    pub cmd: Command,
    /// Fragment countdown (ignored on receive: this crate is stream-only).
    pub frg: u8,
    /// Sender's free receive window, in segments.
    pub wnd: u16,
    /// Timestamp (send time, or echoed send time in an ACK).
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// Cumulative acknowledgement: all sn below this were received.
    pub una: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl SegmentHeader {
    /// Decode the header at the start of `bytes`.
    ///
    /// Only the 24 header bytes are read; whether `len` payload bytes follow
    /// is the caller's business ([`parse_datagram`] checks it).
    pub fn decode(bytes: &[u8]) -> Result<Self, InputError> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(InputError::Truncated)?;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(Self {
            conv: u32_at(0),
            cmd: Command::from_byte(h[4]).ok_or(InputError::BadCommand)?,
            frg: h[5],
            wnd: u16::from_le_bytes([h[6], h[7]]),
            ts: u32_at(8),
            sn: u32_at(12),
            una: u32_at(16),
            len: u32_at(20),
        })
    }

    /// The 24 wire bytes of this header, `len` written verbatim (which lets
    /// tests forge headers that lie about their payload).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.conv.to_le_bytes());
        out[4] = self.cmd.to_byte();
        out[5] = self.frg;
        out[6..8].copy_from_slice(&self.wnd.to_le_bytes());
        out[8..12].copy_from_slice(&self.ts.to_le_bytes());
        out[12..16].copy_from_slice(&self.sn.to_le_bytes());
        out[16..20].copy_from_slice(&self.una.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
        out
    }
}

/// Append one well-formed segment (`header` then `payload`) to `out`.
///
/// The `len` field written is `payload.len()`, whatever `header.len` says.
/// A payload longer than `u32::MAX` bytes cannot be put on the wire:
/// [`SendError::TooLong`](crate::SendError::TooLong), and `out` is left
/// as it was.
pub fn encode(
    header: &SegmentHeader,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), crate::SendError> {
    let len = u32::try_from(payload.len()).map_err(|_| crate::SendError::TooLong)?;
    let header = SegmentHeader { len, ..*header };
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Parse a datagram into its segments without copying.
///
/// The iterator yields each segment with its payload slice, in wire order.
/// On the first malformed segment it yields that error once and then ends,
/// so `parse_datagram(d).collect::<Result<Vec<_>, _>>()` validates a whole
/// datagram. An empty datagram is [`InputError::Truncated`].
pub fn parse_datagram(datagram: &[u8]) -> Segments<'_> {
    Segments {
        inner: SegmentRanges::new(datagram),
    }
}

/// Iterator over the segments of one datagram; see [`parse_datagram`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    inner: SegmentRanges<'a>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<(SegmentHeader, &'a [u8]), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        let datagram = self.inner.datagram;
        self.inner.next().map(|r| {
            r.map(|(header, range)| {
                // The range was bounds-checked by SegmentRanges; `get` keeps
                // that a non-panicking fact rather than a promise.
                (header, datagram.get(range).unwrap_or_default())
            })
        })
    }
}

impl std::iter::FusedIterator for Segments<'_> {}

/// Like [`Segments`] but yields payload *offsets* into the datagram, so the
/// endpoint can slice a shared `Bytes` instead of copying.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRanges<'a> {
    datagram: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> SegmentRanges<'a> {
    pub(crate) fn new(datagram: &'a [u8]) -> Self {
        Self {
            datagram,
            pos: 0,
            done: false,
        }
    }

    fn parse_one(&mut self) -> Result<(SegmentHeader, std::ops::Range<usize>), InputError> {
        let rest = self.datagram.get(self.pos..).unwrap_or_default();
        let header = SegmentHeader::decode(rest)?;
        let start = self
            .pos
            .checked_add(HEADER_LEN)
            .ok_or(InputError::Truncated)?;
        let len = usize::try_from(header.len).map_err(|_| InputError::Truncated)?;
        let end = start.checked_add(len).ok_or(InputError::Truncated)?;
        if end > self.datagram.len() {
            return Err(InputError::Truncated);
        }
        self.pos = end;
        Ok((header, start..end))
    }
}

impl Iterator for SegmentRanges<'_> {
    type Item = Result<(SegmentHeader, std::ops::Range<usize>), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // An empty datagram is malformed; a consumed one simply ends.
        if self.pos >= self.datagram.len() && self.pos > 0 {
            self.done = true;
            return None;
        }
        let item = self.parse_one();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cmd: Command, len: u32) -> SegmentHeader {
        SegmentHeader {
            conv: 7,
            cmd,
            frg: 0,
            wnd: 32,
            ts: 1,
            sn: 2,
            una: 3,
            len,
        }
    }

    #[test]
    fn header_is_little_endian_in_ikcp_order() {
        let h = SegmentHeader {
            conv: 0x0403_0201,
            cmd: Command::Ack,
            frg: 5,
            wnd: 0x0706,
            ts: 0x0b0a_0908,
            sn: 0x0f0e_0d0c,
            una: 0x1312_1110,
            len: 0,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(b[4], 82);
        assert_eq!(b[5], 5);
        assert_eq!(&b[6..8], &[6, 7]);
        assert_eq!(&b[8..12], &[8, 9, 10, 11]);
        assert_eq!(&b[12..16], &[12, 13, 14, 15]);
        assert_eq!(&b[16..20], &[16, 17, 18, 19]);
        assert_eq!(&b[20..24], &[0, 0, 0, 0]);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
    }

    #[test]
    fn empty_datagram_is_truncated() {
        let all: Vec<_> = parse_datagram(&[]).collect();
        assert_eq!(all, vec![Err(InputError::Truncated)]);
    }

    #[test]
    fn trailing_partial_header_is_truncated() {
        let mut d = Vec::new();
        encode(&header(Command::Push, 0), b"abc", &mut d).expect("a short payload encodes");
        d.extend_from_slice(&[0; 5]);
        let all: Vec<_> = parse_datagram(&d).collect();
        assert_eq!(all.len(), 2);
        assert!(all[0].is_ok());
        assert_eq!(all[1], Err(InputError::Truncated));
    }
}
