//! Messages between endpoints: delivered once, in order, to the right peer; the same seed gives the same run.

use std::net::SocketAddr;

use super::world::*;
use crate::api::Origin;
use crate::endpoint::dedup_in_order;
use crate::state::ConnectionState;

#[test]
fn two_endpoints_handshake_and_deliver_everything_in_order_over_a_lossy_link() {
    let mut w = World::new(7, 20, 0.2);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    for i in 0..200 {
        w.send(addr(1), addr(2), &format!("m{i}"));
    }
    w.run_until(20_000);
    let want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(w.bodies(addr(2)), want, "every message once, in order");
    let key1 = key(1);
    assert!(w.nodes[&addr(2)]
        .messages
        .iter()
        .all(|(peer, key, _)| *peer == addr(1) && *key == Some(key1)));
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    assert_eq!(peer.connection, ConnectionState::Connected);
    assert_eq!(peer.paths, vec![addr(2)]);
    assert_eq!(peer.active_path, Some(addr(2)));
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let run = |seed| {
        let mut w = World::new(seed, 15, 0.1);
        for i in 1..=4u16 {
            w.spawn(addr(i), i as u8);
        }
        for i in 2..=4u16 {
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(1), None, Origin::App)
                .expect("add");
            w.send(addr(i), addr(1), "hello");
        }
        w.run_until(10_000);
        assert_eq!(w.bodies(addr(1)).len(), 3);
        w.trace
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn dedup_keeps_first_occurrences_in_order() {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    for n in [3u16, 40] {
        let mut v: Vec<_> = (0..n).chain(0..n).chain([1, 0]).map(a).collect();
        dedup_in_order(&mut v);
        assert_eq!(v, (0..n).map(a).collect::<Vec<_>>());
    }
}
