//! `HOST:PORT` as typed by a person: say what is wrong with it (`missing
//! port`, `invalid IP address`, …) before anything tries to resolve it, so
//! that a typo is not answered with a bare "invalid socket address".

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// What is wrong with `addr` as `HOST:PORT`, if anything can be told
/// without asking DNS.
pub(crate) fn problem(addr: &str) -> Option<String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Some("empty address".into());
    }
    if addr.parse::<SocketAddr>().is_ok() {
        return None;
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let Some((host, tail)) = rest.split_once(']') else {
            return Some("missing `]` after the IPv6 address".into());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Some(format!("invalid IPv6 address `{host}`"));
        }
        return match tail.strip_prefix(':') {
            Some(port) => port_problem(port),
            None => Some("missing port".into()),
        };
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return Some("missing port (an IPv6 address goes in brackets: [::1]:7000)".into());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some("missing port".into());
    };
    if host.contains(':') {
        return Some("an IPv6 address goes in brackets: [::1]:7000".into());
    }
    if host.is_empty() {
        return Some("missing host".into());
    }
    if let Some(p) = port_problem(port) {
        return Some(p);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if host.parse::<Ipv4Addr>().is_err() {
            return Some(format!("invalid IP address `{host}`"));
        }
        return None;
    }
    let name_ok = host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !name_ok {
        return Some(format!(
            "invalid host name `{host}` (letters, digits, `-` and `.` only)"
        ));
    }
    None
}

fn port_problem(port: &str) -> Option<String> {
    if port.is_empty() {
        return Some("missing port".into());
    }
    match port.parse::<u16>() {
        Ok(_) => None,
        Err(_) => Some(format!("invalid port `{port}` (want 0 to 65535)")),
    }
}

/// The error for a bad address: what was given and what is wrong.
pub(crate) fn explain(addr: &str, why: &str) -> String {
    format!("bad address `{addr}` (want HOST:PORT): {why}")
}

/// `HOST:PORT` to a socket address (DNS names resolved, first answer).
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.trim().parse() {
        return Ok(a);
    }
    if let Some(why) = problem(addr) {
        return Err(explain(addr, &why));
    }
    tokio::net::lookup_host(addr.trim())
        .await
        .map_err(|e| explain(addr, &e.to_string()))?
        .next()
        .ok_or_else(|| explain(addr, "no address found"))
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("127.0.0.1", "missing port"),
            ("127.0.0.1:", "missing port"),
            ("localhost", "missing port"),
            ("127.0.0.1:70000", "invalid port `70000`"),
            ("127.0.0.1:x", "invalid port `x`"),
            ("127.0.0.300:7000", "invalid IP address `127.0.0.300`"),
            ("::1", "brackets"),
            ("::1:7000", "brackets"),
            ("[::g]:7000", "invalid IPv6 address"),
            ("[::1]", "missing port"),
            (":7000", "missing host"),
            ("bad host:7000", "invalid host name"),
            ("", "empty address"),
        ];
        for (addr, want) in cases {
            let got = problem(addr).unwrap_or_default();
            assert!(got.contains(want), "`{addr}`: got `{got}`, want `{want}`");
        }
        for ok in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "localhost:7000",
            "seed-1.example.org:1",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }
}
