//! The unit the node's per-host limits count in: a source IP.
//!
//! One host can use as many ports as it likes, so limits kept per address
//! and port (as the half-open table's throttle once was) let one host with
//! 2,048 ports take 2,048 shares. Limits are kept per IPv4 address and per
//! IPv6 /64 instead (a host or a small site usually gets a whole /64, so a
//! per-address IPv6 limit would be as easy to multiply). An IPv4-mapped IPv6
//! address counts as the IPv4 address it maps.

use std::net::{IpAddr, SocketAddr};

/// A source address reduced to the host it comes from: an IPv4 address,
/// or the first 64 bits of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SourceIp {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl From<SocketAddr> for SourceIp {
    fn from(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => SourceIp::V4(ip.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => SourceIp::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&ip.octets()[..8]);
                    SourceIp::V6(prefix)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SourceIp {
        SourceIp::from(s.parse::<SocketAddr>().expect("address"))
    }

    #[test]
    fn ports_do_not_matter_and_ipv6_counts_per_64() {
        assert_eq!(ip("10.0.0.1:1"), ip("10.0.0.1:2"));
        assert_ne!(ip("10.0.0.1:1"), ip("10.0.0.2:1"));
        assert_eq!(ip("[2001:db8:1:2::1]:1"), ip("[2001:db8:1:2:ffff::9]:7"));
        assert_ne!(ip("[2001:db8:1:2::1]:1"), ip("[2001:db8:1:3::1]:1"));
        assert_eq!(ip("[::ffff:10.0.0.1]:5"), ip("10.0.0.1:6"));
    }
}
