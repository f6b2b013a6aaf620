//! What the network throws at an endpoint: floods, garbage, forgeries.

use std::time::Duration;

use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::world::*;
use crate::api::NodeEvent;
use crate::api::Origin;
use crate::crypto::packet::{index_from, InitPacket};
use crate::crypto::COOKIE_LEN;
use crate::endpoint::{Event, Targets};
use crate::error::RequestError;
use crate::wire::Message;
use crate::Config;

/// Quick keepalives and a short idle timeout, so deaths show in seconds.
fn quick(key: u8, seed: u64) -> crate::Config {
    World::config(key, seed)
        .with_keepalive_interval(Duration::from_millis(1000))
        .with_idle_timeout(Duration::from_secs(4))
}

/// The regression test of the discovery swarm's isolated nodes: the seed
/// of a busy swarm always had datagrams waiting, and its driver reads the
/// socket before it looks at the clock, so its timers did not run for 16 s
/// (no keepalive, no retransmission, no timeout). Here a datagram reaches
/// the endpoint every millisecond for ten seconds, and everything its
/// timers do must still happen on time.
#[test]
fn a_flooded_endpoint_still_runs_its_timers() {
    let (s, q, d, attacker) = (addr(1), addr(2), addr(3), addr(666));
    let mut w = World::new(1, 10, 0.0);
    for (at, key) in [(s, 1), (q, 2), (d, 3)] {
        let seed = w.rng.gen();
        w.spawn_with(at, quick(key, seed));
    }
    // S reads one datagram per millisecond: the flood keeps it saturated.
    w.nodes.get_mut(&s).expect("S").read_cost = 1;
    w.add(s, q);
    w.add(s, d);
    w.run_until(2_000);
    assert!(w.connected(s, q) && w.connected(s, d));
    // D vanishes; S asks Q something Q never answers.
    w.nodes.remove(&d);
    let asked = w.now;
    let msg = Message::new("ask", "?").expect("message");
    let id = w
        .node(s)
        .request(asked, msg, q, Duration::from_millis(1_500))
        .expect("request");
    for t in asked..asked + 10_000 {
        w.inject(attacker, s, vec![0xff; 8]);
        w.run_until(t + 1);
    }
    let events = &w.nodes[&s].events;
    let timed_out = events.iter().find_map(|(t, e)| match e {
        Event::RequestDone {
            id: done,
            result: Err(RequestError::Timeout(_)),
        } if *done == id => Some(*t),
        _ => None,
    });
    assert_eq!(
        timed_out,
        Some(asked + 1_500),
        "the request times out at its deadline"
    );
    let dead = events.iter().find_map(|(t, e)| match e {
        Event::Node(NodeEvent::PeerDisconnected(p, _)) if *p == d => Some(*t),
        _ => None,
    });
    // D was last heard at most one keepalive interval before it vanished.
    let dead = dead.expect("the silent peer is found dead");
    assert!(
        (asked + 3_000..=asked + 4_000).contains(&dead),
        "dead at {dead}"
    );
    assert!(w.connected(s, q) && w.connected(q, s), "keepalives kept Q");
    let c = w.state(s).counters;
    assert!(c.malformed_datagrams >= 9_000, "{c:?}");
}

/// A well-formed `Init` from nobody: a random ephemeral key and index.
fn forged_init(rng: &mut StdRng) -> Vec<u8> {
    let mut e = [0u8; 32];
    rng.fill_bytes(&mut e);
    InitPacket {
        sender_index: index_from(rng),
        noise: &e,
        cookie: [0; COOKIE_LEN],
        cipher: crate::crypto::Cipher::ChaChaPoly,
    }
    .encode()
    .to_vec()
}

const RESPONSE: u8 = 0xE2;
const COOKIE: u8 = 0xE5;

/// The answers `at`'s inbox got of packet type `t`.
fn answers(w: &World, at: SocketAddr, t: u8) -> usize {
    w.inboxes
        .get(&at)
        .map_or(0, |v| v.iter().filter(|(_, d)| d.bytes[0] == t).count())
}

/// A legitimate node dials `b` and both exchange `n` messages in order.
fn legit_exchange(w: &mut World, b: SocketAddr, c: SocketAddr, n: usize) {
    w.spawn(c, 3);
    w.add(c, b);
    send_in_order(w, c, b, n);
    send_in_order(w, b, c, n);
}

/// `from` sends `n` numbered messages to `to`; within 5 s they arrive,
/// once each and in order.
fn send_in_order(w: &mut World, from: SocketAddr, to: SocketAddr, n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("{from} {i}")).collect();
    for body in &want {
        w.send(from, to, body);
    }
    let until = w.now + 5_000;
    while w.bodies(to) != want && w.now < until {
        w.run_for(10);
    }
    assert_eq!(w.bodies(to), want);
}

/// One address floods `Init`s (one per millisecond). Its first gets a key
/// exchange and a half-open slot; the others, while it holds that slot, a
/// cookie (smaller than the `Init`) at most 50 times per 100 ms and
/// nothing after that, so the flood costs one Diffie-Hellman per slot
/// lifetime (5 s) and cannot renew, replace or block anyone's slot. A
/// legitimate peer connects and exchanges during the flood.
#[test]
fn an_init_flood_from_one_address_holds_one_slot() {
    let (b, c, attacker) = (addr(1), addr(2), addr(666));
    let mut w = World::new(2, 5, 0.0);
    w.spawn(b, 1);
    let mut rng = StdRng::seed_from_u64(6);
    let mut max_half_open = 0;
    let flood = |w: &mut World, rng: &mut StdRng, ms: u64, max: &mut usize| {
        for _ in 0..ms {
            w.inject(attacker, b, forged_init(rng));
            let t = w.now + 1;
            w.run_until(t);
            *max = (*max).max(w.state(b).half_open_handshakes);
        }
    };
    flood(&mut w, &mut rng, 1_000, &mut max_half_open);
    assert_eq!(max_half_open, 1, "one flooding address, one slot");
    // All 1,000 Inits arrive: one key exchange, 50 cookies in each of the
    // 10 windows (and 5 in the 11th's first ms), the rest counted.
    w.run_for(10);
    let c0 = w.state(b).counters;
    assert_eq!(answers(&w, attacker, RESPONSE), 1);
    assert_eq!(answers(&w, attacker, COOKIE), 505);
    assert_eq!(c0.cookies_sent, 505);
    assert_eq!(c0.throttled_handshakes, 1_000 - 1 - 505);
    assert_eq!(c0.malformed_datagrams, 0);
    // A legitimate peer, during the flood.
    legit_exchange(&mut w, b, c, 100);
    flood(&mut w, &mut rng, 5_000, &mut max_half_open);
    assert!(max_half_open <= 2, "the attacker's slot and the peer's");
    // Once its slot expired (5 s), the flood got one more key exchange.
    assert_eq!(answers(&w, attacker, RESPONSE), 2);
}

/// Was tests/encrypted.rs's wall-clock version: twenty addresses flood
/// `Init`s into a table of 8 half-open slots. The table stays bounded,
/// fills past half (where cookies start), and a legitimate peer still
/// connects and exchanges in both directions.
#[test]
fn inits_from_many_addresses_meet_cookies_and_a_bounded_table() {
    const MAX: usize = 8;
    let (b, c) = (addr(1), addr(2));
    let mut w = World::new(3, 5, 0.0);
    let seed = w.rng.gen();
    w.spawn_with(b, World::config(1, seed).with_max_half_open(MAX));
    let mut rng = StdRng::seed_from_u64(20);
    let mut max = 0;
    let mut flood = |w: &mut World, ms: u64| {
        for _ in 0..ms / 2 {
            for i in 0..20 {
                w.inject(addr(1000 + i), b, forged_init(&mut rng));
            }
            let t = w.now + 2;
            w.run_until(t);
            max = max.max(w.state(b).half_open_handshakes);
        }
    };
    flood(&mut w, 400);
    legit_exchange(&mut w, b, c, 20);
    flood(&mut w, 400);
    assert!((MAX / 2..=MAX).contains(&max), "half-open table: {max}");
    let counters = w.state(b).counters;
    assert!(counters.cookies_sent > 0, "{counters:?}");
    // The flooders are asked for cookies they never show.
    let cookies: usize = (0..20).map(|i| answers(&w, addr(1000 + i), COOKIE)).sum();
    assert!(cookies > 0 && cookies as u64 <= counters.cookies_sent);
}

/// Was tests/encrypted.rs's version over sockets: with the table at the
/// cookie threshold, a slot holder's fresh `Init` past the throttle gets
/// a cookie, not a second Diffie-Hellman.
#[test]
fn slot_holders_under_load_need_a_cookie_for_a_new_key_exchange() {
    const MAX: usize = 8;
    let b = addr(1);
    let mut w = World::new(4, 5, 0.0);
    let seed = w.rng.gen();
    w.spawn_with(b, World::config(1, seed).with_max_half_open(MAX));
    let mut rng = StdRng::seed_from_u64(21);
    let holders: Vec<SocketAddr> = (0..MAX as u16 / 2).map(|i| addr(1000 + i)).collect();
    for &h in &holders {
        w.inject(h, b, forged_init(&mut rng));
    }
    w.run_for(20);
    for &h in &holders {
        assert_eq!(answers(&w, h, RESPONSE), 1, "below the threshold");
    }
    assert_eq!(w.state(b).half_open_handshakes, MAX / 2);
    w.run_for(150);
    for &h in &holders {
        w.inject(h, b, forged_init(&mut rng));
    }
    w.run_for(20);
    for &h in &holders {
        assert_eq!(answers(&w, h, COOKIE), 1, "at the threshold: a cookie");
        assert_eq!(answers(&w, h, RESPONSE), 1, "and no second exchange");
    }
    assert_eq!(w.state(b).counters.cookies_sent, (MAX / 2) as u64);
}

/// `i`'s address on its own IP (10.1.x.y), port 1000.
fn host(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1000))
}

/// 200 `Init`s in 100 ms, far below half the half-open bound. From 200
/// hosts, the plain key-exchange budget (500 a second, at most 10 ms worth
/// at once) answers 5 at once and then one every 2 ms with a key exchange,
/// the others with a cookie. From 200 ports of one host, that host gets its
/// share of each 100 ms window (a quarter): 12 in the first, 7 more in the
/// 5 ms of the next that the Inits reach; and 50 cookies a window, 3 more
/// in the next; the other 128 Inits are dropped and counted.
#[test]
fn many_inits_in_a_burst_meet_cookies_before_the_table_is_half_full() {
    const N: u16 = 200;
    for (from, want) in [
        (host as fn(u16) -> SocketAddr, (54, 146)),
        (|i| addr(1000 + i), (19, 53)),
    ] {
        let b = addr(1);
        let mut w = World::new(5, 5, 0.0);
        w.spawn(b, 1);
        let mut rng = StdRng::seed_from_u64(22);
        for i in 0..N {
            w.inject(from(i), b, forged_init(&mut rng));
            if i % 2 == 1 {
                w.run_for(1);
            }
        }
        w.run_for(20);
        let count = |t| -> usize { (0..N).map(|i| answers(&w, from(i), t)).sum() };
        assert_eq!((count(RESPONSE), count(COOKIE)), want);
        for i in 0..N {
            let answered = w.inboxes.get(&from(i)).map_or(0, Vec::len);
            assert!(answered <= 1, "at most one answer per Init");
        }
        let c = w.state(b).counters;
        assert_eq!(c.cookies_sent, want.1 as u64);
        assert_eq!(
            c.throttled_handshakes,
            u64::from(N) - (want.0 + want.1) as u64,
            "every Init answered or counted"
        );
    }
}

/// Bytes each way between two addresses in a world's trace.
fn bytes_between(w: &World, from: SocketAddr, to: SocketAddr) -> usize {
    w.trace
        .iter()
        .filter(|(_, f, t, _)| *f == from && *t == to)
        .map(|(_, _, _, len)| len)
        .sum()
}

#[test]
fn an_answer_queued_before_the_peer_proves_its_address_waits_and_the_hello_gets_through() {
    // Plaintext: the acceptor of a session has a large answer ready at
    // once (a discovery plugin's table, say). Sent with its Hello, the
    // first datagram would exceed three times the opener and be dropped
    // whole: the opener, never hearing the Hello, kept a session that could
    // not work until it timed out (the 8-node plaintext demo took 7 s to
    // converge instead of 30 ms). The answer must wait for the opener's ACK.
    let mut w = World::new(17, 10, 0.0);
    let plaintext = |seed| Config::default().with_plaintext(true).with_rng_seed(seed);
    w.spawn_with(addr(1), plaintext(1));
    w.spawn_with(addr(2), plaintext(2));
    let now = w.now;
    w.node(addr(2))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    let opener = w.node(addr(2)).poll_transmit(now, 8).expect("opener");
    assert!(w.node(addr(2)).poll_transmit(now, 8).is_none());
    let opened_at = now;
    let answer = "a".repeat(6_000);
    let node1 = w.node(addr(1));
    node1.handle_datagram(now, addr(2), &opener.payload);
    let report = node1
        .send(
            now,
            Message::new("answer", answer.clone()).expect("message"),
            Targets::These(vec![addr(2)]),
        )
        .expect("send");
    assert!(report.all_queued(), "{report:?}");
    w.collect();
    // Opener, Hello with ACK, ACK: a round trip and a half at 10 ms a way.
    w.run_until(opened_at + 40);
    assert!(w.connected(addr(2), addr(1)), "the opener heard the Hello");
    w.run_for(1_000);
    assert_eq!(w.bodies(addr(2)), vec![answer], "the answer, once");
    let c = w.state(addr(1)).counters;
    assert_eq!(c.amplification_drops, 0, "{c:?}");
    assert_eq!(w.state(addr(2)).counters.dead_sessions, 0);
}

#[test]
fn a_spoofed_opener_draws_at_most_three_times_its_bytes() {
    // Plaintext: one session opener from an address that never answers
    // (spoofed) must not earn a stream of retransmissions and keepalives.
    let mut w = World::new(15, 10, 0.0);
    let plaintext = |seed| Config::default().with_plaintext(true).with_rng_seed(seed);
    w.spawn_with(addr(1), plaintext(1));
    w.spawn_with(addr(66), plaintext(2));
    let now = w.now;
    w.node(addr(66))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.collect();
    w.nodes.remove(&addr(66)); // the victim never answers
    w.run_until(60_000);
    let (sent, got) = (
        bytes_between(&w, addr(66), addr(1)),
        bytes_between(&w, addr(1), addr(66)),
    );
    assert!(sent > 0);
    println!("amplification: {got} bytes back for {sent} bytes in");
    assert!(got <= 3 * sent, "{got} bytes back for {sent}");
    let c = w.nodes[&addr(1)].endpoint.state(w.now).counters;
    assert!(c.amplification_drops > 0, "{c:?}");

    // Encrypted: an Init replayed from a spoofed address draws Responses
    // worth at most three times the Inits, and a flood of them far less.
    let mut w = World::new(16, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(66), 66);
    let now = w.now;
    w.node(addr(66))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    let init = w
        .node(addr(66))
        .poll_transmit(now, 8)
        .expect("init")
        .payload;
    w.nodes.remove(&addr(66));
    // The same Init every 10 ms for a second.
    for _ in 0..100 {
        let now = w.now;
        w.node(addr(1)).handle_datagram(now, addr(66), &init);
        w.collect();
        w.run_until(now + 10);
    }
    w.run_until(10_000);
    let got = bytes_between(&w, addr(1), addr(66));
    let sent = 100 * init.len();
    println!("amplification: {got} bytes back for {sent} bytes in");
    assert!(got <= 3 * sent, "{got} bytes back for {sent}");
    assert!(
        got < sent,
        "duplicates are throttled: {got} bytes for {sent}"
    );
}

/// The first moment `at` reported `peer` connected, at or after `since`.
fn connected_at(w: &World, at: SocketAddr, peer: SocketAddr, since: u64) -> Option<u64> {
    w.nodes[&at].events.iter().find_map(|(t, e)| match e {
        Event::Node(NodeEvent::PeerConnected(p)) if p.addr == peer && *t >= since => Some(*t),
        _ => None,
    })
}

/// Issue 12 #1: one host with 512 ports sends a fresh `Init` from each port
/// every 100 ms and answers every `Cookie`, like a real initiator. A valid
/// cookie no longer skips the key-exchange budget: that host gets its
/// share (a quarter of each budget's 100 ms worth), the rest is refused and
/// counted; a newcomer on another host joins, and a route-table peer that
/// restarts is back at once.
#[test]
fn a_cookie_answering_host_gets_its_share_and_nothing_more() {
    use crate::crypto::packet::CookiePacket;
    use crate::crypto::Packet;
    const PORTS: u16 = 512;
    let (b, a, c) = (addr(1), host(2), host(3));
    let port = |p: u16| SocketAddr::from(([10, 9, 0, 1], 2000 + p));
    let mut w = World::new(31, 5, 0.0);
    w.spawn(b, 1);
    w.spawn(a, 2);
    w.add(b, a);
    w.run_until(500);
    assert!(w.connected(b, a));
    let mut rng = StdRng::seed_from_u64(31);
    // Each port's current Init (index and ephemeral key), and how much of
    // its inbox it read.
    let mut pending: Vec<Option<(u32, [u8; 32])>> = vec![None; usize::from(PORTS)];
    let mut read = vec![0usize; usize::from(PORTS)];
    let (start, end) = (w.now, w.now + 3_000);
    let mut newcomer_added = None;
    let mut restarted = None;
    while w.now < end {
        let t = w.now;
        for p in 0..PORTS {
            let i = usize::from(p);
            if (t + u64::from(p)) % 100 == 0 {
                let mut e = [0u8; 32];
                rng.fill_bytes(&mut e);
                let index = index_from(&mut rng);
                pending[i] = Some((index, e));
                let init = InitPacket {
                    sender_index: index,
                    noise: &e,
                    cookie: [0; COOKIE_LEN],
                    cipher: crate::crypto::Cipher::ChaChaPoly,
                };
                w.inject(port(p), b, init.encode().to_vec());
            }
            let inbox = w.inboxes.get(&port(p)).map_or(&[][..], |v| &v[..]);
            let mut cookied = Vec::new();
            for (_, d) in &inbox[read[i]..] {
                if let Ok(Packet::Cookie(CookiePacket {
                    receiver_index,
                    cookie,
                })) = crate::crypto::parse(&d.bytes)
                {
                    if let Some((index, e)) = pending[i].filter(|(x, _)| *x == receiver_index) {
                        let init = InitPacket {
                            sender_index: index,
                            noise: &e,
                            cookie,
                            cipher: crate::crypto::Cipher::ChaChaPoly,
                        };
                        cookied.push(init.encode().to_vec());
                    }
                }
            }
            read[i] = inbox.len();
            for init in cookied {
                w.inject(port(p), b, init);
            }
        }
        if t == start + 1_000 {
            w.spawn(c, 3);
            w.add(c, b);
            newcomer_added = Some(t);
        }
        if t == start + 2_000 {
            // A restarts: a new process with the same key.
            w.nodes.remove(&a);
            w.spawn(a, 2);
            w.add(a, b);
            restarted = Some(t);
        }
        w.run_until(t + 1);
    }
    let windows = (end - start) / 100;
    let drawn: usize = (0..PORTS).map(|p| answers(&w, port(p), RESPONSE)).sum();
    let counters = w.state(b).counters;
    println!(
        "{PORTS} ports, {} ms: {drawn} key exchanges drawn, {counters:?}",
        end - start
    );
    // A quarter of 50 (plain) and of 100 (cookie) per window, plus a
    // budget's burst at most.
    assert!(drawn as u64 <= windows * (12 + 25) + 15, "drawn {drawn}");
    assert!(
        drawn as u64 >= windows * 25,
        "it does get its share: {drawn}"
    );
    assert!(counters.key_exchanges_refused > 0 && counters.cookies_sent > 0);
    let joined = newcomer_added.and_then(|t| connected_at(&w, c, b, t).map(|at| at - t));
    assert!(
        joined.is_some_and(|ms| ms <= 1_000),
        "newcomer joined after {joined:?} ms"
    );
    let back = restarted.and_then(|t| connected_at(&w, a, b, t).map(|at| at - t));
    assert!(
        back.is_some_and(|ms| ms <= 100),
        "restarted peer back after {back:?} ms"
    );
    println!("newcomer joined after {joined:?} ms, restarted peer after {back:?} ms");
}

/// Issue 12 #2: forged `Init`s with index 0, 40 a second, from each peer's
/// address into the other. They neither touch the pair's live session nor,
/// when both restart (A first, B a second later), keep them from
/// reconnecting at once: the forgeries cannot make a node give up its own
/// handshake, cannot take or hold the half-open slot of the peer's real
/// `Init` (that one shows a cookie), and cannot refresh any throttle.
#[test]
fn a_restarting_pair_reconnects_at_once_under_forged_inits() {
    let (a, b) = (addr(1), addr(2));
    let mut w = World::new(32, 5, 0.0);
    w.spawn(a, 1);
    w.spawn(b, 2);
    w.add(a, b);
    w.add(b, a);
    w.run_until(500);
    assert!(w.connected(a, b) && w.connected(b, a));
    let mut rng = StdRng::seed_from_u64(32);
    let forge = |w: &mut World, rng: &mut StdRng, until: u64| {
        while w.now < until {
            let mut e = [0u8; 32];
            rng.fill_bytes(&mut e);
            let init = InitPacket {
                sender_index: 0,
                noise: &e,
                cookie: [0; COOKIE_LEN],
                cipher: crate::crypto::Cipher::ChaChaPoly,
            }
            .encode()
            .to_vec();
            w.inject(b, a, init.clone());
            w.inject(a, b, init);
            let t = w.now + 25;
            w.run_until(t);
        }
    };
    forge(&mut w, &mut rng, 2_500);
    for (at, peer) in [(a, b), (b, a)] {
        assert!(w.connected(at, peer), "the live session is untouched");
        assert!(w.nodes[&at].endings.is_empty());
    }
    // Both restart with their keys: A now, B a second later.
    w.nodes.remove(&a);
    w.nodes.remove(&b);
    w.spawn(a, 1);
    w.add(a, b);
    forge(&mut w, &mut rng, 3_500);
    w.spawn(b, 2);
    w.add(b, a);
    let restarted = w.now;
    forge(&mut w, &mut rng, 6_000);
    let (ta, tb) = (
        connected_at(&w, a, b, restarted),
        connected_at(&w, b, a, restarted),
    );
    println!(
        "reconnected {:?} / {:?} ms after B's restart",
        ta.map(|t| t - restarted),
        tb.map(|t| t - restarted)
    );
    for t in [ta, tb] {
        assert!(t.is_some_and(|t| t - restarted <= 100), "{ta:?} {tb:?}");
    }
    for (at, peer) in [(a, b), (b, a)] {
        assert_eq!(w.nodes[&at].connected, 1, "{at}: one session");
        let st = w.state(at);
        // One unproven slot per forged address at most, plus the peer's.
        assert!(st.half_open_handshakes <= 2, "{}", st.half_open_handshakes);
        w.send(at, peer, "after");
    }
    w.run_for(100);
    assert_eq!(w.bodies(a), vec!["after".to_owned()]);
    assert_eq!(w.bodies(b), vec!["after".to_owned()]);
}
