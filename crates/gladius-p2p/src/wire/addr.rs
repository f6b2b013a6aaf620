//! The text form of socket addresses on the wire.
//!
//! Senders and advertised addresses travel as the UTF-8 text Rust's
//! `Display` prints for a `SocketAddr` (`127.0.0.1:7001`, `[::1]:7001`,
//! `[fe80::1%2]:7001`). Only that canonical spelling is accepted, so that a
//! message has exactly one encoding: a decoded message re-encodes to the very
//! bytes its checksum was computed over.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use super::WireError;

/// Longest address text the wire can carry (its length is one byte).
const CAPACITY: usize = 255;

/// The canonical text of an address, formatted on the stack so that encoding
/// a message does not allocate.
#[derive(Debug)]
pub(super) struct AddrText {
    buf: [u8; CAPACITY],
    len: usize,
}

impl AddrText {
    /// Format `addr`.
    pub(super) fn new(addr: &SocketAddr) -> Self {
        let mut text = Self {
            buf: [0; CAPACITY],
            len: 0,
        };
        // The longest `SocketAddr` text is 58 bytes
        // (`[ffff:…:ffff%4294967295]:65535`), far below the capacity, so this
        // cannot fail; if it somehow did, the text would be cut short and the
        // receiver would reject it as `BadAddress` rather than anything
        // panicking here.
        let _ = write!(text, "{addr}");
        text
    }

    /// The text's bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The text's length as its one-byte length prefix.
    pub(super) fn len_u8(&self) -> u8 {
        u8::try_from(self.len).unwrap_or(u8::MAX)
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Parse address text received from the network, accepting only the
/// canonical spelling (see the module docs).
pub(super) fn parse(raw: &[u8]) -> Result<SocketAddr, WireError> {
    let text = std::str::from_utf8(raw).map_err(|_| WireError::BadAddress)?;
    let addr: SocketAddr = text.parse().map_err(|_| WireError::BadAddress)?;
    if AddrText::new(&addr).as_bytes() == raw {
        Ok(addr)
    } else {
        Err(WireError::BadAddress)
    }
}
