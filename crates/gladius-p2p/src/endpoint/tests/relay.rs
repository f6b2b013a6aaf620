//! Relays: A and B cannot reach each other, R has sessions with both and
//! relays the A–B datagrams, which stay sealed end to end between A and B.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::world::*;
use crate::api::Origin;
use crate::endpoint::relay::{is_relay_addr, RelayTap};
use crate::state::{ConnectionState, PathKind};
use crate::Config;

const A: u16 = 1;
const B: u16 = 2;
const R: u16 = 3;

/// A (key 1), B (key 2) and R (key 3, relaying with `relay`), 10 ms apart;
/// nothing passes between A and B; A and B each added R. At 2 s, A adds B
/// through R. Returns the world at 4 s and A's name for B (the relay path).
fn relayed_world(seed: u64, relay: Config) -> (World, SocketAddr) {
    let mut w = World::new(seed, 10, 0.0);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), relay);
    w.filter = Some(Box::new(|_, d| {
        let ab = [d.from, d.to];
        !(ab.contains(&addr(A)) && ab.contains(&addr(B)))
    }));
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(2_000);
    assert!(w.connected(addr(A), addr(R)) && w.connected(addr(B), addr(R)));
    let now = w.now;
    let via = w
        .node(addr(A))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("add via relay");
    assert!(is_relay_addr(via), "{via}");
    w.run_until(4_000);
    (w, via)
}

fn relay_config(seed: u64) -> Config {
    World::config(3, seed).with_relay(true)
}

/// B's name for A: the peer that proved key 1.
fn name_of(w: &World, at: SocketAddr, k: u8) -> SocketAddr {
    w.state(at)
        .peers
        .iter()
        .find(|p| p.public_key == Some(key(k)))
        .map(|p| p.addr)
        .expect("peer with that key")
}

#[test]
fn a_relay_carries_a_session_between_peers_that_cannot_reach_each_other() {
    let (mut w, via) = relayed_world(1, relay_config(9));
    assert!(w.connected(addr(A), via), "{:?}", w.state(addr(A)).peers);
    let a_at_b = name_of(&w, addr(B), 1);
    assert!(is_relay_addr(a_at_b));
    assert!(w.connected(addr(B), a_at_b));
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    for body in &expected {
        w.send(addr(A), via, body);
        w.send(addr(B), a_at_b, body);
    }
    w.run_for(5_000);
    assert_eq!(w.bodies(addr(B)), expected, "A -> B exactly once, in order");
    assert_eq!(w.bodies(addr(A)), expected, "B -> A exactly once, in order");
    // Each end shows the peer as relayed through R, with its proven key.
    let b_at_a = w.peer(addr(A), via).expect("B at A");
    assert_eq!(b_at_a.path, PathKind::Relayed);
    assert_eq!(b_at_a.relay, Some(addr(R)));
    assert_eq!(b_at_a.relay_key, Some(key(3)));
    assert_eq!(b_at_a.direct_addr, None);
    assert_eq!(b_at_a.public_key, Some(key(2)));
    let a_at_b_state = w.peer(addr(B), a_at_b).expect("A at B");
    assert_eq!(a_at_b_state.path, PathKind::Relayed);
    assert_eq!(a_at_b_state.relay, Some(addr(R)));
    assert_eq!(a_at_b_state.public_key, Some(key(1)));
    // R is a direct peer of each, and forwarded every A–B datagram.
    let r_at_a = w.peer(addr(A), addr(R)).expect("R at A");
    assert_eq!(r_at_a.path, PathKind::Direct);
    assert_eq!(r_at_a.direct_addr, Some(addr(R)));
    let (a, b, r) = (
        w.state(addr(A)).counters,
        w.state(addr(B)).counters,
        w.state(addr(R)).counters,
    );
    // (A datagram of the last keepalive may still be on its way to R.)
    assert!(r.relay_forwarded <= a.relayed_out + b.relayed_out);
    assert!(r.relay_forwarded + 2 >= a.relayed_out + b.relayed_out);
    assert_eq!(a.relayed_in + b.relayed_in, r.relay_forwarded);
    assert_eq!(r.relay_refused + r.relay_rate_limited, 0);
    assert!(r.relay_forwarded_bytes > 200 * 2 * 3);
    // Nothing ever went straight between A and B (the filter would have
    // eaten it, but nothing even tried).
    assert!(!w
        .trace
        .iter()
        .any(|(_, f, t, _)| [*f, *t] == [addr(A), addr(B)] || [*f, *t] == [addr(B), addr(A)]));
    // Observations never name a relay path.
    for at in [A, B] {
        assert!(!w
            .state(addr(at))
            .reflexive_addrs
            .iter()
            .any(|a| is_relay_addr(*a)));
    }
}

#[test]
fn a_tampering_relay_is_detected_and_nothing_forged_is_delivered() {
    let tamper = Arc::new(Mutex::new(false));
    let flipped = Arc::new(Mutex::new(0u64));
    let (mut w, via) = relayed_world(2, relay_config(8));
    let (on, count) = (tamper.clone(), flipped.clone());
    w.node(addr(R)).relay_tap = Some(RelayTap(Box::new(move |d: &mut Vec<u8>| {
        // Sealed Data datagrams (type 0xE4, after the direction byte and
        // the key): flip a bit of the ciphertext.
        if *on.lock().unwrap() && d.get(33) == Some(&0xE4) && d.len() > 60 {
            let last = d.len() - 1;
            d[last] ^= 1;
            *count.lock().unwrap() += 1;
        }
    })));
    let before = w.state(addr(B)).counters.decrypt_failures;
    *tamper.lock().unwrap() = true;
    w.send(addr(A), via, "while tampered");
    w.run_for(1_000);
    assert!(*flipped.lock().unwrap() > 0);
    let b = w.state(addr(B)).counters;
    assert!(
        b.decrypt_failures >= before + *flipped.lock().unwrap() / 2,
        "B detects the tampering: {} failures for {} flipped",
        b.decrypt_failures,
        flipped.lock().unwrap()
    );
    assert!(
        w.bodies(addr(B)).is_empty(),
        "nothing from a forged datagram"
    );
    // The relay behaves again: the message arrives once, by the A–B
    // session's own retransmission; no new handshake.
    let handshakes = b.handshakes_completed;
    *tamper.lock().unwrap() = false;
    w.run_for(5_000);
    assert_eq!(w.bodies(addr(B)), vec!["while tampered".to_owned()]);
    assert_eq!(w.state(addr(B)).counters.handshakes_completed, handshakes);
}

#[test]
fn the_relay_never_sees_the_plaintext() {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let mut w = World::new(3, 10, 0.0);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), relay_config(7));
    let keep = seen.clone();
    // Installed before the handshake: the relay records all it forwards.
    w.node(addr(R)).relay_tap = Some(RelayTap(Box::new(move |d: &mut Vec<u8>| {
        keep.lock().unwrap().push(d.clone())
    })));
    w.filter = Some(Box::new(|_, d| {
        let ab = [d.from, d.to];
        !(ab.contains(&addr(A)) && ab.contains(&addr(B)))
    }));
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(2_000);
    let now = w.now;
    let via = w
        .node(addr(A))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("add via relay");
    w.run_until(4_000);
    let secret = "attack at dawn, the secret is 5f3c9a";
    w.send(addr(A), via, secret);
    w.run_for(2_000);
    assert_eq!(w.bodies(addr(B)), vec![secret.to_owned()]);
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 4, "the relay forwarded the handshake and data");
    for d in seen.iter() {
        assert!(
            !d.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "plaintext visible to the relay"
        );
        for piece in secret.as_bytes().chunks(8) {
            assert!(
                !d.windows(piece.len()).any(|w| w == piece),
                "part of the plaintext visible to the relay"
            );
        }
    }
    // Every forwarded datagram is an encrypted-mode packet (type 0xE1..).
    assert!(seen.iter().all(|d| d.get(33).is_some_and(|t| *t >= 0xE0)));
}

#[test]
fn a_node_that_does_not_relay_refuses_and_counts() {
    let (w, via) = relayed_world(4, World::config(3, 6));
    assert!(!w.connected(addr(A), via));
    let r = w.state(addr(R)).counters;
    assert!(r.relay_refused > 0);
    assert_eq!(r.relay_forwarded, 0);
    assert!(w.bodies(addr(B)).is_empty());
    let b_at_a = w.peer(addr(A), via).expect("B in A's route table");
    assert_ne!(b_at_a.connection, ConnectionState::Connected);
}

#[test]
fn relayed_pairs_are_bounded() {
    // R relays one pair at a time: A–B takes it, C–B is refused.
    let (mut w, via) = relayed_world(5, relay_config(5).with_relay_limits(1, 1 << 20));
    assert!(w.connected(addr(A), via));
    w.spawn(addr(4), 4);
    w.add(addr(4), addr(R));
    w.run_for(2_000);
    let now = w.now;
    let c_via = w
        .node(addr(4))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("add via relay");
    w.run_for(2_000);
    assert!(!w.connected(addr(4), c_via));
    assert!(w.state(addr(R)).counters.relay_refused > 0);
    assert!(w.connected(addr(A), via), "the first pair keeps its relay");
}

#[test]
fn a_relay_over_its_byte_rate_drops_and_the_session_recovers() {
    // 20 kB/s per pair: 100 messages of 1 kB take several seconds.
    let (mut w, via) = relayed_world(6, relay_config(4).with_relay_limits(4, 20_000));
    let body = "x".repeat(1_000);
    for _ in 0..100 {
        w.send(addr(A), via, &body);
    }
    w.run_for(30_000);
    assert_eq!(w.bodies(addr(B)).len(), 100, "all delivered, once each");
    assert!(w.state(addr(R)).counters.relay_rate_limited > 0);
}

#[test]
fn add_via_relay_needs_an_established_relay() {
    let mut w = World::connected_pair(7);
    let now = w.now;
    let e = w
        .node(addr(1))
        .add_via_relay(now, key(5), addr(9), Origin::App);
    assert!(matches!(e, Err(crate::NetworkError::NoRelay(_))), "{e:?}");
    // The relay cannot be the peer itself.
    let e = w
        .node(addr(1))
        .add_via_relay(now, key(2), addr(2), Origin::App);
    assert!(matches!(e, Err(crate::NetworkError::NoRelay(_))), "{e:?}");
}

#[test]
fn a_relay_naming_another_source_key_gets_no_session() {
    // R claims A's datagrams come from key 9. B answers "key 9 via R",
    // which leads nowhere, so no session forms under either key. (Were
    // R to route it to A anyway, B's handshake would prove key 1, not the
    // key the relay path names, and B refuses it: `establish`.)
    let mut w = World::new(8, 10, 0.0);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), relay_config(3));
    let lie = *key(9).as_bytes();
    w.node(addr(R)).relay_tap = Some(RelayTap(Box::new(move |d: &mut Vec<u8>| {
        if d.len() > 33 && d[1..33] == *key(1).as_bytes() {
            d[1..33].copy_from_slice(&lie);
        }
    })));
    w.filter = Some(Box::new(|_, d| {
        let ab = [d.from, d.to];
        !(ab.contains(&addr(A)) && ab.contains(&addr(B)))
    }));
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(2_000);
    let now = w.now;
    let via = w
        .node(addr(A))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("add via relay");
    w.run_until(6_000);
    assert!(!w.connected(addr(A), via));
    let b = w.state(addr(B));
    assert!(w.state(addr(R)).counters.relay_refused > 0);
    assert!(!b
        .peers
        .iter()
        .any(|p| p.public_key == Some(key(1)) || p.public_key == Some(key(9))));
}

#[test]
fn someone_elses_relay_path_cannot_be_added() {
    let mut w = World::connected_pair(9);
    let now = w.now;
    let stranger: SocketAddr = "[100::7]:1".parse().unwrap();
    let e = w.node(addr(1)).add(now, stranger, None, Origin::App);
    assert!(matches!(e, Err(crate::NetworkError::NoRelay(_))), "{e:?}");
}

#[test]
fn both_ends_dialling_through_the_relay_at_once_settle_on_one_session() {
    let mut w = World::new(10, 10, 0.0).with_jitter(3);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), relay_config(2));
    w.filter = Some(Box::new(|_, d| {
        let ab = [d.from, d.to];
        !(ab.contains(&addr(A)) && ab.contains(&addr(B)))
    }));
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(2_000);
    let now = w.now;
    let a_via = w
        .node(addr(A))
        .add_via_relay(now, key(2), addr(R), Origin::App)
        .expect("a adds b");
    let b_via = w
        .node(addr(B))
        .add_via_relay(now, key(1), addr(R), Origin::App)
        .expect("b adds a");
    w.run_for(5_000);
    assert!(w.connected(addr(A), a_via) && w.connected(addr(B), b_via));
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    for body in &expected {
        w.send(addr(A), a_via, body);
        w.send(addr(B), b_via, body);
    }
    w.run_for(5_000);
    assert_eq!(w.bodies(addr(B)), expected);
    assert_eq!(w.bodies(addr(A)), expected);
    // One peer entry per key at each end.
    for (at, k) in [(A, 2), (B, 1)] {
        let n = w
            .state(addr(at))
            .peers
            .iter()
            .filter(|p| p.public_key == Some(key(k)))
            .count();
        assert_eq!(n, 1);
    }
}
