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
    if let Some(v4) = parse_canonical_v4(raw) {
        return Ok(v4);
    }
    let text = std::str::from_utf8(raw).map_err(|_| WireError::BadAddress)?;
    let addr: SocketAddr = text.parse().map_err(|_| WireError::BadAddress)?;
    let canonical = AddrText::new(&addr);
    if canonical.as_bytes() == raw {
        Ok((addr, canonical))
    } else {
        Err(WireError::BadAddress)
    }
}

/// The common case without `core::net`'s parser and a re-format: a V4
/// address in canonical spelling (`a.b.c.d:port`, decimal, no leading
/// zeros, in range). Anything else, including non-canonical V4, is `None`
/// and goes the general way, which decides the same (proptested).
fn parse_canonical_v4(raw: &[u8]) -> Option<(SocketAddr, AddrText)> {
    /// A canonical decimal number up to `max`, then the rest.
    fn number(raw: &[u8], max: u32) -> Option<(u32, &[u8])> {
        let digits = raw.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 5 || (digits > 1 && raw[0] == b'0') {
            return None;
        }
        let n = raw[..digits]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        (n <= max).then_some((n, &raw[digits..]))
    }
    let mut octets = [0u8; 4];
    let mut rest = raw;
    for (i, octet) in octets.iter_mut().enumerate() {
        let (n, after) = number(rest, 255)?;
        *octet = u8::try_from(n).ok()?;
        let separator = if i == 3 { b':' } else { b'.' };
        rest = after.strip_prefix(&[separator])?;
    }
    let (port, after) = number(rest, 65_535)?;
    if !after.is_empty() {
        return None;
    }
    let addr = SocketAddr::from((octets, u16::try_from(port).ok()?));
    let mut text = AddrText {
        buf: [0; CAPACITY],
        len: raw.len(),
    };
    text.buf.get_mut(..raw.len())?.copy_from_slice(raw);
    Some((addr, text))
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

    /// The general path alone, to compare the fast one against.
    fn parse_slow(raw: &[u8]) -> Option<SocketAddr> {
        let addr: SocketAddr = std::str::from_utf8(raw).ok()?.parse().ok()?;
        (AddrText::new(&addr).as_bytes() == raw).then_some(addr)
    }

    proptest! {
        /// The V4 fast path accepts exactly the canonical V4 texts, and
        /// reads them as the general path does.
        #[test]
        fn fast_v4_parse_agrees_with_the_general_one(raw in "[0-9.:]{0,24}") {
            let fast = parse_canonical_v4(raw.as_bytes());
            let slow = parse_slow(raw.as_bytes()).filter(SocketAddr::is_ipv4);
            prop_assert_eq!(fast.map(|(a, _)| a), slow);
            if let Some((a, text)) = fast {
                let canonical = AddrText::new(&a);
                prop_assert_eq!(text.as_bytes(), canonical.as_bytes());
            }
        }

        #[test]
        fn canonical_v4_texts_take_the_fast_path(ip in any::<u32>(), port in any::<u16>()) {
            let a = SocketAddr::from((Ipv4Addr::from(ip), port));
            let text = a.to_string();
            prop_assert_eq!(parse_canonical_v4(text.as_bytes()).map(|(a, _)| a), Some(a));
        }
    }

    #[test]
    fn fast_v4_parse_rejects_near_misses() {
        for raw in [
            "01.2.3.4:5",
            "1.2.3.4:05",
            "256.1.1.1:1",
            "1.2.3.4:65536",
            "1.2.3:4",
            "1.2.3.4.5:6",
            "1.2.3.4:",
            ".1.2.3:4",
            "1.2.3.4:5 ",
            "1.2.3.4:99999",
            "1.2.3.4:100000",
        ] {
            assert!(parse_canonical_v4(raw.as_bytes()).is_none(), "{raw}");
            assert!(parse(raw.as_bytes()).is_err(), "{raw}");
        }
        assert!(parse(b"0.0.0.0:0").is_ok());
        assert!(parse(b"255.255.255.255:65535").is_ok());
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
