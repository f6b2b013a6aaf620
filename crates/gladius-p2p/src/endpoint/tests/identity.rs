//! Peers are keys with paths: new ports, new keys, pins, merges, peers added by key.

use super::world::*;
use crate::api::{Origin, PeerReason};
use crate::state::ConnectionState;

#[test]
fn a_peer_that_returns_on_a_new_port_with_its_key_keeps_its_entry() {
    let mut w = World::connected_pair(11);
    assert_eq!(w.nodes[&addr(1)].connected, 1);
    // Node 2 restarts on another port with the same key, and dials node 1.
    w.nodes.remove(&addr(2));
    w.spawn(addr(3), 2);
    let now = w.now;
    w.node(addr(3))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(3), addr(1), "back");
    w.run_until(6_000);
    assert_eq!(w.bodies(addr(1)), vec!["back".to_owned()]);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    assert_eq!(
        state.peers.len(),
        1,
        "one peer, two paths: {:?}",
        state.peers
    );
    let peer = &state.peers[0];
    assert!(peer.in_route_table && peer.writable, "{peer:?}");
    assert_eq!(peer.paths, vec![addr(2), addr(3)]);
    assert_eq!(peer.active_path, Some(addr(3)));
    assert_eq!(peer.connection, ConnectionState::Connected);
    w.nodes[&addr(1)].endpoint.peers.check_indices();
}

#[test]
fn a_new_key_at_a_live_session_is_refused_while_the_session_answers() {
    let mut w = World::connected_pair(5);
    // An on-path attacker with another key at node 2's address, while
    // node 2 is alive: node 1 probes node 2's session, node 2 answers, the
    // attacker is refused every time it tries.
    w.spawn_impostor(addr(200), addr(2), 9);
    let now = w.now;
    w.node(addr(200))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(200), addr(1), "impostor");
    w.run_until(15_000);
    assert!(w.bodies(addr(1)).is_empty(), "nothing from the impostor");
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    assert!(state.counters.key_conflicts >= 2, "{:?}", state.counters);
    assert_eq!(state.counters.key_changes, 0);
    let peer = state.peer(addr(2)).expect("peer");
    let key2 = key(2);
    assert_eq!(peer.public_key, Some(key2));
    assert_eq!(peer.connection, ConnectionState::Connected);
    w.send(addr(2), addr(1), "still me");
    w.run_until(16_000);
    assert_eq!(w.bodies(addr(1)), vec!["still me".to_owned()]);
}

#[test]
fn a_restarted_peer_with_a_new_key_takes_its_entry_over_within_a_probe() {
    let mut w = World::connected_pair(5);
    // Node 2 restarts with a fresh key on the same address, long before
    // its old session would time out (idle timeout 20 s).
    w.nodes.remove(&addr(2));
    w.spawn(addr(2), 9);
    let restarted = w.now;
    w.node(addr(2))
        .add(restarted, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(2), addr(1), "back");
    let mut t = restarted;
    while w.bodies(addr(1)).is_empty() && t < restarted + 10_000 {
        t += 10;
        w.run_until(t);
    }
    assert_eq!(w.bodies(addr(1)), vec!["back".to_owned()]);
    // One probe (1 s) plus a few round trips of 20 ms.
    assert!(t - restarted <= 1_200, "back after {} ms", t - restarted);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    let new_key = key(9);
    assert_eq!(peer.public_key, Some(new_key));
    assert!(peer.in_route_table && peer.writable);
    assert_eq!(state.counters.key_changes, 1);
    assert_eq!(
        w.nodes[&addr(1)].endings,
        vec![("disconnected", addr(2), PeerReason::KeyChanged)],
        "the old session ends saying why"
    );
    w.nodes[&addr(1)].endpoint.peers.check_indices();
}

#[test]
fn a_pinned_peer_never_changes_key() {
    let mut w = World::new(6, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 9);
    let key2 = key(2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), Some(key2), Origin::App)
        .expect("add");
    w.run_until(5_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    assert_ne!(peer.connection, ConnectionState::Connected);
    assert_eq!(peer.public_key, None);
    assert!(state.counters.pin_mismatches >= 1);
}

#[test]
fn an_address_added_before_its_key_merges_with_the_peer_that_proves_it() {
    // Node 2 connects to node 1 first (node 1 knows it by key at port 2);
    // then node 1's user adds node 2 under another address that leads to
    // it (e.g. a second interface). The handshake there proves the same
    // key: one peer with two paths, in the route table.
    let mut w = World::new(8, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(2))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(2), addr(1), "first");
    w.run_until(2_000);
    // The second address: node 2 again, moved (same key, new port).
    let moved = w.nodes.remove(&addr(2)).expect("node 2");
    w.insert(addr(4), moved.endpoint);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(4), None, Origin::App)
        .expect("add");
    w.run_until(4_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    w.nodes[&addr(1)].endpoint.peers.check_indices();
    let key2 = key(2);
    let with_key: Vec<_> = state
        .peers
        .iter()
        .filter(|p| p.public_key == Some(key2))
        .collect();
    assert_eq!(with_key.len(), 1, "{:?}", state.peers);
    assert!(with_key[0].in_route_table);
    assert_eq!(state.peers.len(), 1, "{:?}", state.peers);
}

#[test]
fn a_peer_added_by_key_is_dialled_at_its_hint_and_must_prove_the_key() {
    let mut w = World::new(12, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    w.spawn(addr(3), 3);
    let key2 = key(2);
    let key3 = key(3);
    let now = w.now;
    let unknown = key(42);
    assert!(matches!(
        w.node(addr(1)).add_key(now, unknown, &[], Origin::App),
        Err(crate::NetworkError::NoPath(_))
    ));
    // Right key at the hint: connected, in the route table, pinned.
    assert_eq!(
        w.node(addr(1))
            .add_key(now, key2, &[addr(2)], Origin::App)
            .ok(),
        Some(addr(2))
    );
    // Wrong key at the hint (node 3 lives there): never connected.
    assert_eq!(
        w.node(addr(1))
            .add_key(now, unknown, &[addr(3)], Origin::App)
            .ok(),
        Some(addr(3))
    );
    w.run_until(5_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let p2 = state.peer(addr(2)).expect("peer 2");
    assert_eq!(p2.connection, ConnectionState::Connected);
    assert_eq!((p2.public_key, p2.pinned_key), (Some(key2), Some(key2)));
    assert!(p2.in_route_table);
    let p3 = state.peer(addr(3)).expect("peer 3");
    assert_ne!(p3.connection, ConnectionState::Connected);
    assert_ne!(p3.public_key, Some(key3));
    assert!(state.counters.pin_mismatches >= 1);
    // Known by key now: no hint needed, and it is the same peer.
    let now = w.now;
    assert_eq!(
        w.node(addr(1)).add_key(now, key2, &[], Origin::App).ok(),
        Some(addr(2))
    );
    assert_eq!(w.nodes[&addr(1)].endpoint.state(w.now).peers.len(), 2);
}
