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

/// Room for the longest `SocketAddr` text (58 bytes, see [`AddrText::new`]);
/// the wire could carry 255 (its length is one byte), but a smaller buffer
/// is cheaper to set up on every encode.
const CAPACITY: usize = 64;

/// The canonical text of an address, formatted on the stack so that encoding
/// a message does not allocate.
#[derive(Clone, Copy, PartialEq, Eq)]
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
        match addr {
            // The common case, spelled out: `core::fmt` costs more than the
            // rest of a small message's encoding (profiled with callgrind).
            SocketAddr::V4(v4) => {
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    text.push_decimal(u32::from(octet));
                }
                text.push(b':');
                text.push_decimal(u32::from(v4.port()));
            }
            SocketAddr::V6(_) => {
                let _ = write!(text, "{addr}");
            }
        }
        text
    }

    /// Append one byte (at most 21 for a V4 address: always fits).
    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// Append `n` in decimal without leading zeros, as `Display` does.
    fn push_decimal(&mut self, n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.push(d);
        }
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

impl fmt::Debug for AddrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
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
/// Returns the address and its text.
pub(super) fn parse(raw: &[u8]) -> Result<(SocketAddr, AddrText), WireError> {
    let text = std::str::from_utf8(raw).map_err(|_| WireError::BadAddress)?;
    let addr: SocketAddr = text.parse().map_err(|_| WireError::BadAddress)?;
    let canonical = AddrText::new(&addr);
    if canonical.as_bytes() == raw {
        Ok((addr, canonical))
    } else {
        Err(WireError::BadAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    proptest! {
        /// The hand-written V4 path prints exactly what `Display` prints.
        #[test]
        fn text_is_display(ip in any::<u32>(), port in any::<u16>(), v6 in any::<u128>(), scope in any::<u32>()) {
            let v4 = SocketAddr::from((Ipv4Addr::from(ip), port));
            let text = v4.to_string();
            prop_assert!(AddrText::new(&v4).as_bytes() == text.as_bytes());
            prop_assert!(parse(text.as_bytes()).ok().map(|(a, _)| a) == Some(v4));
            let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v6), port, 0, scope));
            let text = v6.to_string();
            prop_assert!(AddrText::new(&v6).as_bytes() == text.as_bytes());
        }
    }

    #[test]
    fn edge_values() {
        for (ip, port) in [
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 65535),
            ([10, 0, 100, 9], 10),
        ] {
            let a = SocketAddr::from((ip, port));
            assert_eq!(AddrText::new(&a).as_bytes(), a.to_string().as_bytes());
        }
    }
}
