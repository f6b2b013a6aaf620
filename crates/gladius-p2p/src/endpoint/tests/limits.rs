//! What peers can make a node hold: partially received messages and
//! sessions from outside the route table (issue 12, weaknesses 7 and 8).

use std::net::SocketAddr;

use gladius_kcp::segment::{self, Command};
use rand::Rng;

use super::world::*;
use crate::Config;

/// `i`'s address on its own IP (10.3.x.y), port 1000.
fn host(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 3, (i >> 8) as u8, i as u8], 1000))
}

fn plaintext(seed: u64) -> Config {
    Config::default().with_plaintext(true).with_rng_seed(seed)
}

/// Whether a plaintext datagram carries a PUSH segment at or past `sn`.
fn pushes_from(datagram: &[u8], sn: u32) -> bool {
    segment::parse_datagram(datagram)
        .filter_map(Result::ok)
        .any(|(h, _)| h.cmd == Command::Push && h.sn >= sn)
}

/// Issue 12 #7: eight peers outside the route table each start a 1 MiB
/// message and never finish it (everything past its first 500 segments is
/// lost on the way), into a node whose budget for partial messages is
/// 2 MiB. The budget holds at every step (the world checks it after each
/// datagram), the largest partial messages are dropped and counted, the
/// sessions go on, and a route-table peer's own 1 MiB message, sent in the
/// middle of it, arrives whole.
#[test]
fn partial_messages_stay_within_their_budget() {
    const MIB: usize = 1 << 20;
    let (b, a) = (addr(1), addr(2));
    let mut w = World::new(41, 5, 0.0);
    let config = |seed| plaintext(seed).with_max_message_size(MIB);
    w.spawn_with(b, config(1).with_partial_frame_bytes(2 * MIB));
    w.spawn_with(a, config(2));
    w.add(b, a);
    w.run_until(500);
    let attackers: Vec<SocketAddr> = (0..8).map(host).collect();
    for (i, &x) in attackers.iter().enumerate() {
        w.spawn_with(x, config(10 + i as u64));
    }
    let cut = attackers.clone();
    w.filter = Some(Box::new(move |_, d| {
        !(cut.contains(&d.from) && pushes_from(&d.bytes, 500))
    }));
    let big = "x".repeat(MIB - 100);
    for &x in &attackers {
        w.send(x, b, &big);
    }
    let mut max_held = 0;
    for t in 0..4_000u64 {
        if t == 1_000 {
            w.send(a, b, &big);
        }
        w.run_for(1);
        max_held = max_held.max(w.state(b).partial_frame_bytes);
    }
    let st = w.state(b);
    println!(
        "max held {max_held} bytes; {} dropped, {} bytes",
        st.counters.partial_frames_dropped, st.counters.partial_frame_bytes_dropped
    );
    assert!(max_held <= 2 * MIB && max_held > MIB, "held {max_held}");
    assert!(st.counters.partial_frames_dropped >= 4, "{:?}", st.counters);
    assert_eq!(
        w.bodies(b),
        vec![big],
        "the route-table peer's message, whole"
    );
    assert!(w.nodes[&b].messages.iter().all(|m| m.0 == a));
    assert!(w.connected(b, a));
    // The attackers' sessions were not closed for it.
    assert!(attackers.iter().all(|x| w.connected(b, *x)));
}

/// The squatters: `n` endpoints on `ip`'s ports dial `b`.
fn squat(w: &mut World, b: SocketAddr, ip: [u8; 4], n: u16, encrypted: bool, key: &mut u8) {
    for port in 1..=n {
        let at = SocketAddr::from((ip, port));
        let seed = w.rng.gen();
        *key += 1;
        let config = World::config(*key, seed).with_plaintext(!encrypted);
        w.spawn_with(at, config);
        w.add(at, b);
    }
}

/// Issue 12 #8: squatters from three hosts open sessions into a node that
/// takes 8 sessions from outside the route table, 3 per source IP. One
/// host gets 3 and no more (the rest refused, counted); once the table is
/// full, a new node still joins, in place of the least recently active
/// squatter (evicted, counted); the route-table peer never counts and
/// stays connected.
fn squatters_get_their_share(encrypted: bool) {
    let (b, a, c) = (addr(1), addr(2), host(50));
    let mut w = World::new(42, 5, 0.0);
    let mut key = 10u8;
    let config = |key: u8, seed| World::config(key, seed).with_plaintext(!encrypted);
    w.spawn_with(
        b,
        config(1, 1)
            .with_max_inbound_sessions(8)
            .with_max_inbound_sessions_per_ip(3),
    );
    w.spawn_with(a, config(2, 2));
    w.add(b, a);
    w.run_until(500);
    squat(&mut w, b, [10, 4, 0, 1], 5, encrypted, &mut key);
    w.run_for(1_000);
    let st = w.state(b);
    assert_eq!(st.inbound_sessions, 3, "one host, its share");
    assert!(st.counters.refused_sessions >= 2, "{:?}", st.counters);
    squat(&mut w, b, [10, 4, 0, 2], 3, encrypted, &mut key);
    squat(&mut w, b, [10, 4, 0, 3], 3, encrypted, &mut key);
    w.run_for(1_000);
    let st = w.state(b);
    assert_eq!(st.inbound_sessions, 8, "full");
    assert!(st.counters.evicted_sessions >= 1, "{:?}", st.counters);
    // Everyone active; then a newcomer.
    w.spawn_with(c, config(3, 3));
    w.add(c, b);
    let added = w.now;
    w.run_for(1_000);
    assert!(
        w.connected(c, b) && w.connected(b, c),
        "the newcomer joined"
    );
    let joined = w.nodes[&c].events.iter().find_map(|(t, e)| match e {
        crate::endpoint::Event::Node(crate::api::NodeEvent::PeerConnected(_)) => Some(*t - added),
        _ => None,
    });
    println!(
        "newcomer joined after {joined:?} ms: {:?}",
        w.state(b).counters
    );
    assert!(joined.is_some_and(|ms| ms <= 100));
    let st = w.state(b);
    assert!(st.inbound_sessions <= 8);
    assert!(w.connected(b, a), "the route-table peer never gave way");
}

#[test]
fn squatters_get_their_share_plaintext() {
    squatters_get_their_share(false);
}

#[test]
fn squatters_get_their_share_encrypted() {
    squatters_get_their_share(true);
}
