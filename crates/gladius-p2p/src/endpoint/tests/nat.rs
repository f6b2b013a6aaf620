//! NAT traversal, so far. Roaming: an authenticated, fresh datagram of a
//! session from a new address moves the peer's path there, with no
//! handshake and nothing lost; nothing else moves a path (WireGuard's
//! rule). Observed addresses: peers tell a node where they see it, and the
//! node classifies its NAT from them.

use std::cell::RefCell;
use std::rc::Rc;

use super::world::*;
use crate::api::{NodeEvent, PathChange};
use crate::endpoint::Event;
use crate::state::NatType;

/// Sealed `Data` datagrams (type byte `0xE4`) node 2 sent to node 1 that the
/// filter saw; the filter drops those `drop` says to.
type Captured = Rc<RefCell<Vec<Datagram>>>;

fn capture(w: &mut World, drop_from: Option<(u64, u64)>) -> Captured {
    let seen: Captured = Rc::default();
    let keep = seen.clone();
    w.filter = Some(Box::new(move |now, d| {
        let data = d.to == addr(1) && d.bytes.first() == Some(&0xE4);
        if data {
            keep.borrow_mut().push(d.clone());
        }
        !(data && drop_from.is_some_and(|(from, to)| (from..to).contains(&now)))
    }));
    seen
}

/// Node 2's NAT rebinds: from now on its datagrams leave from `to`, and
/// only what is sent to `to` reaches it.
fn rebind(w: &mut World, to: std::net::SocketAddr) {
    w.nodes.get_mut(&addr(2)).expect("node 2").addr = to;
}

fn path_changes(w: &World, at: std::net::SocketAddr) -> Vec<PathChange> {
    w.nodes[&at]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Node(NodeEvent::PathChanged(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rebound_peer_keeps_its_session_and_loses_nothing_both_ways() {
    let mut w = World::connected_pair(3);
    w.add(addr(2), addr(1));
    w.run_for(500);
    let handshakes = w.state(addr(1)).counters.handshakes_completed;
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for (i, body) in expected.iter().enumerate() {
        if i == 50 {
            // Mid-stream, with datagrams of both directions in flight.
            w.run_for(3);
            rebind(&mut w, addr(3));
        }
        w.send(addr(2), addr(1), body);
        w.send(addr(1), addr(2), body);
    }
    w.run_for(5_000);
    // Node 1 sent the second half to the old address until node 2's first
    // datagram from the new one arrived: those were lost, and resent.
    assert_eq!(w.bodies(addr(1)), expected, "2 -> 1 exactly once, in order");
    assert_eq!(w.bodies(addr(2)), expected, "1 -> 2 exactly once, in order");
    let state = w.state(addr(1));
    assert_eq!(
        state.counters.handshakes_completed, handshakes,
        "no new handshake"
    );
    assert_eq!(state.counters.path_changes, 1);
    let peer = state.peer(addr(3)).expect("the peer under its new path");
    assert_eq!(peer.active_path, Some(addr(3)));
    assert_eq!(peer.public_key, Some(key(2)));
    assert_eq!(
        path_changes(&w, addr(1)),
        vec![PathChange {
            public_key: key(2),
            old: Some(addr(2)),
            new: addr(3),
        }]
    );
    // Node 2 saw node 1 nowhere new.
    assert_eq!(w.state(addr(2)).counters.path_changes, 0);
    w.nodes[&addr(1)].endpoint.peers.check_indices();
}

#[test]
fn a_replayed_datagram_from_a_new_address_moves_nothing() {
    let mut w = World::connected_pair(4);
    let seen = capture(&mut w, None);
    w.send(addr(2), addr(1), "once");
    w.run_for(500);
    assert_eq!(w.bodies(addr(1)), vec!["once".to_owned()]);
    let replayed = seen.borrow().clone();
    assert!(!replayed.is_empty());
    let before = w.state(addr(1)).counters;
    for d in replayed {
        w.inject(addr(66), addr(1), d.bytes);
    }
    w.run_for(500);
    let state = w.state(addr(1));
    assert!(state.counters.replayed_datagrams > before.replayed_datagrams);
    assert_eq!(state.counters.path_changes, 0);
    assert_eq!(
        state.peer(addr(2)).and_then(|p| p.active_path),
        Some(addr(2))
    );
    assert!(state.peer(addr(66)).is_none(), "{:?}", state.peers);
    assert!(path_changes(&w, addr(1)).is_empty());
    assert_eq!(w.bodies(addr(1)), vec!["once".to_owned()]);
}

#[test]
fn a_forged_or_garbage_datagram_from_a_new_address_moves_nothing() {
    let mut w = World::connected_pair(5);
    // Capture node 2's datagrams and keep them from node 1: each is fresh
    // (never accepted), so only its forgery is what stops it.
    let seen = capture(&mut w, Some((0, u64::MAX)));
    w.send(addr(2), addr(1), "held");
    w.run_for(300);
    let fresh = seen.borrow().first().cloned().expect("a datagram");
    // Node 2 goes quiet; what follows reaches node 1 unfiltered.
    w.stall(addr(2), 60_000);
    w.filter = None;
    let before = w.state(addr(1)).counters;
    // The right index and counter, one bit of the ciphertext flipped.
    let mut forged = fresh.bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    w.inject(addr(67), addr(1), forged);
    // Garbage, and a well-formed Data header for an index nobody has.
    w.inject(addr(68), addr(1), vec![0xAB; 60]);
    let mut unknown = fresh.bytes.clone();
    unknown[4..8].copy_from_slice(&0x0102_0305_u32.to_le_bytes());
    w.inject(addr(69), addr(1), unknown);
    w.run_for(10);
    let state = w.state(addr(1));
    assert_eq!(state.counters.decrypt_failures, before.decrypt_failures + 1);
    assert!(state.counters.malformed_datagrams > before.malformed_datagrams);
    assert!(state.counters.unknown_session_datagrams > before.unknown_session_datagrams);
    assert_eq!(state.counters.path_changes, 0);
    assert_eq!(
        state.peer(addr(2)).and_then(|p| p.active_path),
        Some(addr(2))
    );
    // The genuine datagram, from yet another address, does move it: the
    // forgery did not spend its counter.
    w.inject(addr(70), addr(1), fresh.bytes);
    w.run_for(10);
    let state = w.state(addr(1));
    assert_eq!(state.counters.path_changes, 1);
    assert_eq!(
        state.peer(addr(70)).and_then(|p| p.active_path),
        Some(addr(70))
    );
}

#[test]
fn an_older_datagram_from_the_old_address_does_not_move_the_path_back() {
    let mut w = World::connected_pair(6);
    // Keep node 2's datagrams of the next 200 ms from node 1 (never
    // accepted there, so not replays), then rebind node 2.
    let start = w.now;
    let seen = capture(&mut w, Some((start, start + 200)));
    w.send(addr(2), addr(1), "late");
    w.run_for(200);
    let late = seen.borrow().first().cloned().expect("a held datagram");
    rebind(&mut w, addr(3));
    w.send(addr(2), addr(1), "new");
    w.run_for(2_000);
    assert_eq!(w.bodies(addr(1)), vec!["late".to_owned(), "new".to_owned()]);
    assert_eq!(
        w.peer(addr(1), addr(3)).and_then(|p| p.active_path),
        Some(addr(3))
    );
    // The held datagram finally arrives from the old address: it opens
    // (within the replay window, never seen), but it is older than what
    // came from the new address.
    let before = w.state(addr(1)).counters;
    w.inject(addr(2), addr(1), late.bytes);
    w.run_for(10);
    let state = w.state(addr(1));
    assert_eq!(state.counters.path_changes, before.path_changes);
    assert_eq!(
        state.peer(addr(3)).and_then(|p| p.active_path),
        Some(addr(3))
    );
}

#[test]
fn a_peer_cannot_take_another_live_peers_address() {
    let mut w = World::connected_pair(7);
    w.spawn(addr(4), 4);
    w.add(addr(4), addr(1));
    w.run_for(2_000);
    assert!(w.connected(addr(1), addr(4)));
    // Node 2's datagrams now come from node 4's address (spoofed, or a
    // NAT port given to another host while node 4's session lives).
    rebind(&mut w, addr(4));
    w.send(addr(2), addr(1), "from 4's address");
    w.run_for(100);
    let state = w.state(addr(1));
    assert!(state.counters.path_conflicts >= 1, "{:?}", state.counters);
    assert_eq!(state.counters.path_changes, 0);
    assert_eq!(
        state.peer(addr(4)).and_then(|p| p.public_key),
        Some(key(4)),
        "node 4 keeps its path"
    );
    assert_eq!(
        state.peer(addr(2)).and_then(|p| p.active_path),
        Some(addr(2))
    );
    assert!(w.bodies(addr(1)).contains(&"from 4's address".to_owned()));
}

// ----- observed addresses ------------------------------------------------

#[test]
fn two_observers_that_see_the_bound_address_mean_no_nat() {
    let mut w = World::connected_pair(8);
    assert_eq!(w.state(addr(1)).nat, NatType::Unknown, "one observer");
    w.spawn(addr(3), 3);
    w.add(addr(1), addr(3));
    w.run_for(2_000);
    let state = w.state(addr(1));
    assert_eq!(state.nat, NatType::None);
    assert_eq!(state.reflexive_addrs, vec![addr(1)]);
    assert_eq!(state.counters.observations_received, 2);
    // The reports are the core's: no message reached the application.
    assert!(w.bodies(addr(1)).is_empty() && w.bodies(addr(2)).is_empty());
}

#[test]
fn observers_behind_one_mapping_see_a_cone_and_follow_a_rebinding() {
    // Node 1 sits behind a NAT that maps it to addr(9) for everyone.
    let mut w = World::new(9, 10, 0.0);
    w.spawn(addr(1), 1);
    w.nodes.get_mut(&addr(1)).expect("node 1").addr = addr(9);
    w.spawn(addr(2), 2);
    w.spawn(addr(3), 3);
    w.add(addr(1), addr(2));
    w.add(addr(1), addr(3));
    w.run_for(2_000);
    let state = w.state(addr(1));
    assert_eq!(state.nat, NatType::EndpointIndependent);
    assert_eq!(state.reflexive_addrs, vec![addr(9)]);
    // The NAT rebinds to addr(10): both observers see node 1 roam, and
    // tell it.
    w.nodes.get_mut(&addr(1)).expect("node 1").addr = addr(10);
    w.send(addr(1), addr(2), "x");
    w.send(addr(1), addr(3), "y");
    w.run_for(2_000);
    let state = w.state(addr(1));
    assert_eq!(state.nat, NatType::EndpointIndependent);
    assert_eq!(state.reflexive_addrs, vec![addr(10)]);
    assert_eq!(w.state(addr(2)).counters.path_changes, 1);
    assert_eq!(w.state(addr(3)).counters.path_changes, 1);
}
