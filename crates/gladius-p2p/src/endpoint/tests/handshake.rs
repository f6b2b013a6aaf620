//! Handshakes under load: simultaneous opens, cookies, loss and reordering.

use rand::Rng;

use super::world::*;
use crate::api::Origin;
use crate::state::ConnectionState;

#[test]
fn a_swarm_that_dials_in_every_direction_at_once_connects_every_pair() {
    // 40 endpoints all dial node 1 at once, then each dials 5 random others
    // at random moments (many simultaneous opens, a loaded seed under the
    // key-exchange budget, 5% loss). Every pair that one side added must
    // end up connected, and a message sent after that must arrive.
    for seed in 0..4u64 {
        let mut w = World::new(seed, 5, 0.05);
        let n = 40u16;
        for i in 1..=n {
            w.spawn(addr(i), i as u8);
        }
        for i in 2..=n {
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(1), None, Origin::App)
                .expect("add");
        }
        let mut pairs = Vec::new();
        for i in 2..=n {
            for _ in 0..5 {
                let j = w.rng.gen_range(1..=n);
                if j != i {
                    pairs.push((i, j));
                }
            }
        }
        let mut t = 0;
        for &(i, j) in &pairs {
            t += w.rng.gen_range(0..20);
            w.run_until(t);
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(j), None, Origin::App)
                .expect("add");
        }
        w.run_until(t + 30_000);
        for i in 2..=n {
            for j in std::iter::once(1).chain(pairs.iter().filter(|p| p.0 == i).map(|p| p.1)) {
                let st = w.nodes[&addr(i)].endpoint.state(w.now);
                let p = st.peer(addr(j)).expect("peer");
                assert_eq!(
                    p.connection,
                    ConnectionState::Connected,
                    "seed {seed}: {i} -> {j}: {p:?}\n{:?}",
                    st.counters
                );
            }
        }
        for i in 2..=n {
            w.send(addr(i), addr(1), &format!("from {i}"));
        }
        w.run_until(t + 40_000);
        assert_eq!(w.bodies(addr(1)).len(), usize::from(n - 1), "seed {seed}");
    }
}

/// The timing of the discovery swarm test's nodes (tests of
/// gladius-plugins): quick connect timeout and reconnects.
fn swarm_config(key: u8, seed: u64) -> crate::Config {
    use std::time::Duration;
    World::config(key, seed)
        .with_keepalive_interval(Duration::from_millis(1000))
        .with_idle_timeout(Duration::from_secs(4))
        .with_connect_timeout(Duration::from_secs(2))
        .with_close_timeout(Duration::from_millis(500))
        .with_reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
}

/// A loaded loopback: datagrams take 0–200 ms and overtake each other, a
/// few are lost, nodes stall for up to 300 ms at random (the seed more
/// often), the seed answers key exchanges under cookies, and pairs dial
/// each other at the same moment like discovery makes them. Returns the
/// pairs (by index) where one side added the other and the two are not
/// both connected at `until`.
fn loaded_swarm(seed: u64, n: u16, until: u64) -> Vec<String> {
    let mut w = World::new(seed, 0, 0.02).with_jitter(200);
    for i in 1..=n {
        let s = w.rng.gen();
        let mut config = swarm_config(i as u8, s);
        if i == 1 {
            // Half-full at 8: the seed asks every new initiator for a cookie.
            config = config.with_max_half_open(16);
        }
        w.spawn_with(addr(i), config);
    }
    let mut added = Vec::new();
    for i in 2..=n {
        w.add(addr(i), addr(1));
        added.push((i, 1));
    }
    let mut dials: Vec<(u64, u16, u16)> = Vec::new();
    for _ in 0..(3 * n) {
        let (i, j) = (w.rng.gen_range(2..=n), w.rng.gen_range(2..=n));
        if i != j {
            dials.push((w.rng.gen_range(0..4_000), i, j));
        }
    }
    dials.sort();
    let mut t = 0;
    let mut dials = dials.into_iter().peekable();
    while t < until {
        t += 50;
        w.run_until(t);
        // Random stalls: a loaded machine.
        for i in 1..=n {
            let p = if i == 1 { 0.05 } else { 0.01 };
            if w.rng.gen_bool(p) {
                let ms = w.rng.gen_range(0..300);
                w.stall(addr(i), ms);
            }
        }
        while let Some(&(at, i, j)) = dials.peek() {
            if at > t {
                break;
            }
            dials.next();
            // Both sides dial: each learnt the other in the same round.
            w.add(addr(i), addr(j));
            w.add(addr(j), addr(i));
            added.push((i, j));
        }
    }
    let mut bad = Vec::new();
    for (i, j) in added {
        let (a, b) = (addr(i), addr(j));
        if !(w.connected(a, b) && w.connected(b, a)) {
            bad.push(format!(
                "{i} <-> {j}:\n  {i}: {:?}\n  {j}: {:?}",
                w.peer(a, b),
                w.peer(b, a)
            ));
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn a_loaded_swarm_connects_every_pair_that_dialled() {
    let mut failures = Vec::new();
    for seed in 0..4 {
        let bad = loaded_swarm(seed, 30, 20_000);
        if !bad.is_empty() {
            failures.push(format!("seed {seed}: {}", bad.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Was tests/encrypted.rs's socket test, which could only wait: an
/// off-path `Init` in a peer's name with index 0 (lower than any we pick)
/// makes us yield our handshake by the simultaneous-open rule. Nobody
/// finishes the forged one; our own starts again exactly when its
/// half-open slot would have expired (5 s and 1 ms later), and connects.
#[test]
fn a_forged_lower_index_init_does_not_stop_reconnecting() {
    use crate::crypto::packet::InitPacket;
    use crate::crypto::COOKIE_LEN;
    let (a, x) = (addr(1), addr(2));
    let mut w = World::new(9, 10, 0.0);
    w.spawn(a, 1);
    w.add(a, x);
    w.run_until(50);
    let forged = InitPacket {
        sender_index: 0,
        noise: &[7; 32],
        cookie: [0; COOKIE_LEN],
    }
    .encode()
    .to_vec();
    w.inject(x, a, forged);
    w.run_until(100);
    assert_eq!(w.state(a).half_open_handshakes, 1, "a answered it");
    let yielded = 60; // the forged Init arrived at 50 + 10
                      // The real X comes up; it does not dial.
    w.spawn(x, 2);
    w.run_until(yielded + 5_000);
    assert!(!w.connected(a, x), "a waits for the forged handshake");
    w.run_until(yielded + 6_000);
    let connected = w.nodes[&a].events.iter().find_map(|(t, e)| match e {
        crate::endpoint::Event::Node(crate::api::NodeEvent::PeerConnected(p)) if p.addr == x => {
            Some(*t)
        }
        _ => None,
    });
    // Init at +5001, Response back, Finish and hello out, X's hello back.
    assert_eq!(connected, Some(yielded + 5_001 + 40));
    w.send(a, x, "late");
    w.run_for(100);
    assert_eq!(w.bodies(x), vec!["late".to_owned()]);
}
