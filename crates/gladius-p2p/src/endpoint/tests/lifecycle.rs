//! Sessions begin and end: graceful close, deletion, reconnection.

use std::time::Duration;

use rand::Rng;

use super::world::*;
use crate::api::NodeEvent;
use crate::endpoint::Event;

/// When `at` heard `PeerDisconnected(peer)` first.
fn disconnected_at(w: &World, at: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u64> {
    w.nodes[&at].events.iter().find_map(|(t, e)| match e {
        Event::Node(NodeEvent::PeerDisconnected(p)) if *p == peer => Some(*t),
        _ => None,
    })
}

/// Was tests/swarm.rs's "within 5 s of wall clock" (idle timeout 20 s):
/// the close frame tells the peer one way later, exactly, and the closing
/// node is done once the frame is acknowledged, a round trip after.
#[test]
fn close_tells_the_peer_one_way_later_and_ends_when_acknowledged() {
    let (a, b) = (addr(1), addr(2));
    let mut w = World::new(1, 10, 0.0);
    w.spawn(a, 1);
    let seed = w.rng.gen();
    let slow_idle = World::config(2, seed)
        .with_keepalive_interval(Duration::from_secs(5))
        .with_idle_timeout(Duration::from_secs(20));
    w.spawn_with(b, slow_idle);
    w.add(a, b);
    w.run_until(1_000);
    assert!(w.connected(a, b) && w.connected(b, a));
    let t0 = w.now;
    w.node(a).begin_close(t0);
    assert!(!w.nodes[&a].endpoint.is_closed(t0));
    w.run_until(t0 + 100);
    assert_eq!(disconnected_at(&w, b, a), Some(t0 + 10), "one way");
    assert!(w.nodes[&a].endpoint.is_closed(w.now), "acknowledged");
    w.run_until(t0 + 1_000);
    assert!(w.peer(b, a).is_none(), "b forgets a peer it never added");
    // Closed: every command fails.
    let now = w.now;
    assert!(matches!(
        w.node(a).add(now, b, None),
        Err(crate::NetworkError::Closed)
    ));
}
