//! Unit tests of the endpoint: pairs of endpoints wired back to back in
//! virtual time, no sockets and no clock.

use super::dedup_in_order;
use std::net::SocketAddr;

#[test]
fn dedup_keeps_first_occurrences_in_order() {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    for n in [3u16, 40] {
        let mut v: Vec<_> = (0..n).chain(0..n).chain([1, 0]).map(a).collect();
        dedup_in_order(&mut v);
        assert_eq!(v, (0..n).map(a).collect::<Vec<_>>());
    }
}
