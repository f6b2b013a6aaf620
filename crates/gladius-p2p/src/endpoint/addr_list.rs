//! The address lists of the core's reserved messages (`gladius.lookup`
//! answers, `gladius.punch` candidates; `wire-format.md` §7.12–§7.13):
//! each address as `len u8 | canonical address text (len bytes)`, one
//! after the other to the end of the body.

use std::net::SocketAddr;

/// Append at most `max` of `addrs` to `body`.
pub(super) fn encode(body: &mut Vec<u8>, addrs: &[SocketAddr], max: usize) {
    for a in addrs.iter().take(max) {
        let text = a.to_string();
        // Canonical address text is at most 47 bytes.
        body.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        body.extend_from_slice(text.as_bytes());
    }
}

/// The addresses in `rest`; `None` if one is malformed or not in its
/// canonical text, or if there are more than `max`.
pub(super) fn decode(mut rest: &[u8], max: usize) -> Option<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let text = tail.get(..usize::from(len))?;
        let text = std::str::from_utf8(text).ok()?;
        let addr: SocketAddr = text.parse().ok()?;
        if addr.to_string() != text || addrs.len() >= max {
            return None;
        }
        addrs.push(addr);
        rest = tail.get(usize::from(len)..)?;
    }
    Some(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_bad_ones_are_refused() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:7000".parse().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ];
        let mut body = Vec::new();
        encode(&mut body, &addrs, 4);
        assert_eq!(decode(&body, 4), Some(addrs.clone()));
        assert_eq!(decode(&body, 1), None, "more than the cap");
        assert_eq!(decode(&[], 4), Some(vec![]));
        assert_eq!(decode(&[200, b'1'], 4), None, "cut short");
        let mut odd = vec![14];
        odd.extend_from_slice(b"192.0.2.01:700");
        assert_eq!(decode(&odd, 4), None, "not canonical");
        let mut capped = Vec::new();
        encode(&mut capped, &addrs, 1);
        assert_eq!(decode(&capped, 4), Some(addrs[..1].to_vec()));
    }
}
