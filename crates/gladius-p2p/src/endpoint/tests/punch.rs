//! Hole punching: two nodes behind cone NATs (endpoint-independent
//! mapping, address-and-port-dependent filtering), connected through a
//! relay, upgrade to a direct path by probes sent at a coordinated time;
//! nothing in flight is lost or duplicated and no handshake runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::world::*;
use crate::api::{NodeEvent, Origin};
use crate::endpoint::relay::is_relay_addr;
use crate::endpoint::{Event, KeyDial};
use crate::state::PathKind;

const A: u16 = 1;
const B: u16 = 2;
const R: u16 = 3;
/// A's and B's NAT mappings (one each, whatever the destination).
const A_NAT: u16 = 11;
const B_NAT: u16 = 12;

/// The NATs' filters: a datagram to a mapping passes only from an
/// address the mapping sent to before (address-and-port dependent).
/// Checked when the datagram is sent (the world's filter runs then).
fn cone_nats(w: &mut World) {
    let mappings = [addr(A_NAT), addr(B_NAT)];
    let opened: Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>> = Arc::default();
    w.filter = Some(Box::new(move |_, d| {
        let mut opened = opened.lock().unwrap();
        if mappings.contains(&d.from) {
            opened.insert((d.from, d.to));
        }
        !mappings.contains(&d.to) || opened.contains(&(d.to, d.from))
    }));
}

/// A and B behind cone NATs, R public and relaying; A and B added R; A
/// looks B up by key and is connected to it through R. Returns A's name
/// for B (the relay path) at the moment the relayed session is up.
fn behind_cone_nats(seed: u64) -> (World, SocketAddr) {
    let mut w = World::new(seed, 10, 0.0).with_jitter(4);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), World::config(3, seed).with_relay(true));
    w.nodes.get_mut(&addr(A)).expect("a").addr = addr(A_NAT);
    w.nodes.get_mut(&addr(B)).expect("b").addr = addr(B_NAT);
    cone_nats(&mut w);
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(1_000);
    // R told each its mapping.
    assert_eq!(w.state(addr(A)).reflexive_addrs, vec![addr(A_NAT)]);
    let now = w.now;
    let Ok(KeyDial::LookingUp(id)) =
        w.node(addr(A))
            .add_key_or_look_up(now, key(2), &[], Origin::App)
    else {
        panic!("a lookup");
    };
    let mut via = None;
    for _ in 0..200 {
        w.run_for(5);
        via = w.nodes[&addr(A)].events.iter().find_map(|(_, e)| match e {
            Event::LookupDone { id: i, result } if *i == id => result.as_ref().ok().copied(),
            _ => None,
        });
        if via.is_some_and(|v| w.connected(addr(A), v)) {
            break;
        }
    }
    let via = via.expect("found");
    assert!(is_relay_addr(via));
    assert!(w.connected(addr(A), via), "relayed session up");
    (w, via)
}

fn path_changes(w: &World, at: SocketAddr) -> Vec<(SocketAddr, Option<SocketAddr>)> {
    w.nodes[&at]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Node(NodeEvent::PathChanged(c)) => Some((c.new, c.old)),
            _ => None,
        })
        .collect()
}

#[test]
fn relayed_peers_behind_cone_nats_punch_through_and_lose_nothing() {
    let (mut w, via) = behind_cone_nats(1);
    let b_name_for_a = w
        .state(addr(B))
        .peers
        .iter()
        .find(|p| p.public_key == Some(key(1)))
        .map(|p| p.addr)
        .expect("a at b");
    let handshakes = (
        w.state(addr(A)).counters.handshakes_completed,
        w.state(addr(B)).counters.handshakes_completed,
    );
    // A stream both ways, across the upgrade: a message every 5 ms.
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let (mut a_to_b, mut b_to_a) = (via, b_name_for_a);
    for body in &expected {
        // Each side writes to the peer under its current name.
        a_to_b = name_of_key(&w, addr(A), 2).unwrap_or(a_to_b);
        b_to_a = name_of_key(&w, addr(B), 1).unwrap_or(b_to_a);
        w.send(addr(A), a_to_b, body);
        w.send(addr(B), b_to_a, body);
        w.run_for(5);
    }
    w.run_for(5_000);
    assert_eq!(w.bodies(addr(B)), expected, "A -> B exactly once, in order");
    assert_eq!(w.bodies(addr(A)), expected, "B -> A exactly once, in order");
    // Both direct now, at each other's NAT mapping.
    let b_at_a = w.peer(addr(A), addr(B_NAT)).expect("b under its mapping");
    assert_eq!(b_at_a.path, PathKind::Direct);
    assert_eq!(b_at_a.direct_addr, Some(addr(B_NAT)));
    assert_eq!(b_at_a.relay, None);
    assert_eq!(b_at_a.public_key, Some(key(2)));
    let a_at_b = w.peer(addr(B), addr(A_NAT)).expect("a under its mapping");
    assert_eq!(a_at_b.path, PathKind::Direct);
    // No new handshake; the punch is counted, and seen as a path change.
    let (sa, sb) = (w.state(addr(A)).counters, w.state(addr(B)).counters);
    assert_eq!(
        (sa.handshakes_completed, sb.handshakes_completed),
        handshakes
    );
    assert_eq!((sa.punch_successes, sb.punch_successes), (1, 1));
    assert!(sa.punch_attempts >= 1 && sb.punch_attempts >= 1);
    assert_eq!(sa.punch_failures + sb.punch_failures, 0);
    assert_eq!(path_changes(&w, addr(A)), vec![(addr(B_NAT), Some(via))]);
    assert_eq!(
        path_changes(&w, addr(B)),
        vec![(addr(A_NAT), Some(b_name_for_a))]
    );
    // After the upgrade the relay carries nothing more of theirs.
    let forwarded = w.state(addr(R)).counters.relay_forwarded;
    w.send(addr(A), addr(B_NAT), "direct");
    w.run_for(1_000);
    assert_eq!(w.bodies(addr(B)).last().map(String::as_str), Some("direct"));
    assert_eq!(w.state(addr(R)).counters.relay_forwarded, forwarded);
}

#[test]
fn the_upgrade_takes_a_few_round_trips() {
    let (mut w, _) = behind_cone_nats(2);
    let up = w.now;
    w.run_for(3_000);
    let at = w.nodes[&addr(A)]
        .events
        .iter()
        .find_map(|(t, e)| match e {
            Event::Node(NodeEvent::PathChanged(_)) => Some(*t),
            _ => None,
        })
        .expect("punched");
    // Virtual time: 10-14 ms one way; via the relay a round trip is
    // about 50 ms. CONNECT, REPLY, SYNC, then the probes.
    assert!(
        at - up < 300,
        "direct {} ms after the relayed session",
        at - up
    );
}

#[test]
fn a_punch_that_cannot_get_through_stays_relayed_and_counts() {
    // Nothing passes between A and B at all (as through two symmetric
    // NATs): every round fails, the relay keeps carrying the session.
    let mut w = World::new(3, 10, 0.0);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), World::config(3, 3).with_relay(true));
    w.filter = Some(Box::new(|_, d| {
        let ab = [d.from, d.to];
        !(ab.contains(&addr(A)) && ab.contains(&addr(B)))
    }));
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(1_000);
    let now = w.now;
    let via = w
        .node(addr(A))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("via relay");
    w.run_for(10_000);
    let a = w.state(addr(A)).counters;
    assert_eq!(a.punch_attempts, u64::from(crate::endpoint::punch::ROUNDS));
    assert_eq!(a.punch_successes, 0);
    assert_eq!(a.punch_failures, 1);
    assert_eq!(w.state(addr(B)).counters.punch_failures, 1);
    assert_eq!(w.peer(addr(A), via).expect("b").path, PathKind::Relayed);
    let failed: Vec<_> = w.nodes[&addr(A)]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Node(NodeEvent::PunchFailed(a, k)) => Some((*a, *k)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(via, key(2))], "one punch_failed event");
    w.send(addr(A), via, "still relayed");
    w.run_for(1_000);
    assert_eq!(w.bodies(addr(B)), vec!["still relayed".to_owned()]);
}

/// `at`'s name for the peer with key `k`.
fn name_of_key(w: &World, at: SocketAddr, k: u8) -> Option<SocketAddr> {
    w.state(at)
        .peers
        .iter()
        .find(|p| p.public_key == Some(key(k)))
        .map(|p| p.addr)
}

#[test]
fn a_punched_path_that_dies_falls_back_to_the_relay() {
    let (mut w, _) = behind_cone_nats(4);
    w.run_for(2_000);
    assert_eq!(
        w.peer(addr(A), addr(B_NAT)).expect("direct").path,
        PathKind::Direct
    );
    // Both NATs now drop everything between A and B (their mappings for
    // each other expired, say); R still reaches both.
    let nats = [addr(A_NAT), addr(B_NAT)];
    w.filter = Some(Box::new(move |_, d| {
        !(nats.contains(&d.from) && nats.contains(&d.to))
    }));
    // The session dies of silence (20 s), A (which added B) dials the
    // direct address again, gets no answer (5 s), and goes through R.
    w.run_for(40_000);
    let a = w.state(addr(A));
    assert!(a.counters.relay_fallbacks >= 1, "{:?}", a.counters);
    let b_at_a = a
        .peers
        .iter()
        .find(|p| p.public_key == Some(key(2)))
        .expect("b at a");
    assert_eq!(b_at_a.path, PathKind::Relayed, "{b_at_a:?}");
    let name = b_at_a.addr;
    w.send(addr(A), name, "relayed again");
    w.run_for(1_000);
    assert_eq!(
        w.bodies(addr(B)).last().map(String::as_str),
        Some("relayed again")
    );
}
