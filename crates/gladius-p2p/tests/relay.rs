//! Relays over real UDP on 127.0.0.1. A and B cannot reach each other:
//! each listens on a filtering socket that drops whatever arrives from the
//! other's address (and refuses to send to it). R, which both reach,
//! relays: A adds B by key through R, and they exchange messages over an
//! end-to-end encrypted session whose sealed datagrams ride the A–R and
//! R–B sessions.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gladius_p2p::{ConnectionState, Network, PathKind};

/// Addresses a [`filtering`] socket neither receives from nor sends to,
/// and how many datagrams it dropped.
#[derive(Debug, Clone, Default)]
struct Block {
    addrs: Arc<Mutex<HashSet<SocketAddr>>>,
    dropped: Arc<AtomicU64>,
}

impl Block {
    fn add(&self, addr: SocketAddr) {
        self.addrs.lock().unwrap().insert(addr);
    }
    fn has(&self, addr: &SocketAddr) -> bool {
        self.addrs.lock().unwrap().contains(addr)
    }
}

/// A real UDP socket behind a firewall of `block`'s addresses, both ways.
async fn filtering(block: Block) -> HookSocket {
    let (inbound, outbound) = (block.clone(), block);
    let pass = |block: &Block, addr: SocketAddr| {
        let blocked = block.has(&addr);
        if blocked {
            block.dropped.fetch_add(1, Ordering::Relaxed);
        }
        !blocked
    };
    HookSocket::bind()
        .await
        .on_recv(move |_, from| pass(&inbound, from))
        .on_send(move |_, to| pass(&outbound, to))
}

async fn filtered_node() -> (Network, SocketAddr, Recorder, Block) {
    let block = Block::default();
    let socket = filtering(block.clone()).await;
    let (net, addr, rec) = node_on(test_config(), socket).await;
    (net, addr, rec, block)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_cannot_reach_each_other_talk_through_a_relay() {
    const N: usize = 200;
    let (r, r_addr, _) = node_with(test_config().with_relay(true)).await;
    let (a, a_addr, a_rec, a_block) = filtered_node().await;
    let (b, b_addr, b_rec, b_block) = filtered_node().await;
    a_block.add(b_addr);
    b_block.add(a_addr);
    // A dialling B directly gets nowhere.
    a.add(b_addr).await.unwrap();
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_for(Duration::from_secs(10), "r has both", || async {
        let s = r.network_state().await.unwrap();
        [a_addr, b_addr].iter().all(|p| {
            s.peer(*p)
                .is_some_and(|p| p.connection == ConnectionState::Connected)
        })
    })
    .await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    let a_key = a.network_state().await.unwrap().public_key.unwrap();
    a.delete(b_addr).await.unwrap();

    let via = a.add_via_relay(b_key, r_addr).await.unwrap();
    wait_connected(&a, via).await;
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:04}").into_bytes()).collect();
    for body in &expected {
        let report = a
            .broadcast_to(text_msg("seq", String::from_utf8_lossy(body)), &[via])
            .await
            .unwrap();
        assert!(report.all_queued(), "{report:?}");
    }
    wait_for(Duration::from_secs(30), "every message at b", || async {
        b_rec.count_type("seq") >= N
    })
    .await;
    assert_eq!(
        b_rec.bodies_of_type("seq"),
        expected,
        "exactly once, in order"
    );

    // B answers A under the name it knows A by: A's key via R.
    let sb = b.network_state().await.unwrap();
    let a_at_b = sb
        .peers
        .iter()
        .find(|p| p.public_key == Some(a_key))
        .expect("a at b")
        .clone();
    assert_eq!(a_at_b.path, PathKind::Relayed);
    assert_eq!(a_at_b.relay, Some(r_addr));
    assert_eq!(a_at_b.direct_addr, None);
    let report = b
        .broadcast_to(text_msg("back", "through the relay"), &[a_at_b.addr])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "b's answer at a", || async {
        a_rec.count_type("back") == 1
    })
    .await;

    let sa = a.network_state().await.unwrap();
    let b_at_a = sa.peer(via).expect("b at a");
    assert_eq!(b_at_a.path, PathKind::Relayed);
    assert_eq!(b_at_a.relay, Some(r_addr));
    assert_eq!(b_at_a.public_key, Some(b_key));
    assert_eq!(b_at_a.connection, ConnectionState::Connected);
    let sr = r.network_state().await.unwrap();
    assert!(sr.counters.relay_forwarded > 0, "{:?}", sr.counters);
    assert_eq!(sr.counters.relay_refused, 0);
    assert!(sa.counters.relayed_out > 0 && sb.counters.relayed_in > 0);
    // The direct attempt was blocked, so the relay carried everything.
    assert!(a_block.dropped.load(Ordering::Relaxed) > 0);
    for n in [a, b, r] {
        n.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_key_with_no_hint_finds_the_peer_through_the_relay() {
    let (r, r_addr, _) = node_with(test_config().with_relay(true)).await;
    let (a, a_addr, _a_rec, a_block) = filtered_node().await;
    let (b, b_addr, b_rec, b_block) = filtered_node().await;
    a_block.add(b_addr);
    b_block.add(a_addr);
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_for(Duration::from_secs(10), "r has b", || async {
        let s = r.network_state().await.unwrap();
        s.peer(b_addr)
            .is_some_and(|p| p.connection == ConnectionState::Connected)
    })
    .await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    // B looks public to R (it is, on loopback), so A dials it directly
    // first; A's firewall drops that, and A goes through R.
    let dialled = a.add_key(b_key, []).await.unwrap();
    assert_eq!(dialled, b_addr);
    wait_for(Duration::from_secs(20), "b connected through r", || async {
        let s = a.network_state().await.unwrap();
        s.peers.iter().any(|p| {
            p.public_key == Some(b_key)
                && p.path == PathKind::Relayed
                && p.connection == ConnectionState::Connected
        })
    })
    .await;
    let sa = a.network_state().await.unwrap();
    let b_at_a = sa
        .peers
        .iter()
        .find(|p| p.public_key == Some(b_key))
        .unwrap();
    assert_eq!(b_at_a.relay, Some(r_addr));
    assert_eq!(sa.counters.relay_fallbacks, 1);
    assert_eq!(sa.counters.lookups_found, 1);
    let report = a
        .broadcast_to(text_msg("hi", "by key"), &[b_at_a.addr])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "a's message at b", || async {
        b_rec.count_type("hi") == 1
    })
    .await;
    // A key nobody has is a clear error.
    let unknown = gladius_p2p::Identity::generate().public_key();
    let e = a.add_key(unknown, []).await.unwrap_err();
    assert!(matches!(e, gladius_p2p::NetworkError::NoPath(_)), "{e}");
    for n in [a, b, r] {
        n.close().await.unwrap();
    }
}

/// A real UDP socket behind a user-space cone NAT of one mapping (the
/// socket's own port, whatever the destination: endpoint-independent
/// mapping) that lets in only datagrams from addresses it sent to
/// (address-and-port-dependent filtering); `dropped` counts the rest.
async fn cone_socket(dropped: Arc<AtomicU64>) -> HookSocket {
    let sent_to = Arc::new(Mutex::new(HashSet::new()));
    let opened = sent_to.clone();
    HookSocket::bind()
        .await
        .on_send(move |_, to| {
            opened.lock().unwrap().insert(to);
            true
        })
        .on_recv(move |_, from| {
            let known = sent_to.lock().unwrap().contains(&from);
            if !known {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            known
        })
}

/// A node behind a [`cone_socket`] that advertises a private address (as
/// a node on a home LAN does), so it does not look public.
async fn cone_node(private: &str) -> (Network, SocketAddr, Recorder, Arc<AtomicU64>) {
    let config = test_config().with_advertise_addr(private.parse().unwrap());
    let dropped = Arc::new(AtomicU64::new(0));
    let socket = cone_socket(dropped.clone()).await;
    let (net, addr, rec) = node_on(config, socket).await;
    (net, addr, rec, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_cone_nats_find_each_other_by_key_and_punch_through() {
    const N: usize = 300;
    let (r, r_addr, _) = node_with(test_config().with_relay(true)).await;
    let (a, a_addr, a_rec, _) = cone_node("192.168.10.2:7000").await;
    let (b, b_addr, b_rec, b_dropped) = cone_node("192.168.20.2:7000").await;
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_for(Duration::from_secs(10), "r has b", || async {
        let s = r.network_state().await.unwrap();
        s.peer(b_addr)
            .is_some_and(|p| p.connection == ConnectionState::Connected)
    })
    .await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    let a_key = a.network_state().await.unwrap().public_key.unwrap();
    let started = std::time::Instant::now();
    let via = a.add_key(b_key, []).await.unwrap();
    let found = started.elapsed();
    // B does not look public (it advertises a private address): through R.
    assert!(
        matches!(via, SocketAddr::V6(v) if v.ip().segments()[..4] == [0x100, 0, 0, 0]),
        "{via}"
    );
    // (It may be direct already when we look: match by key.)
    wait_for(Duration::from_secs(10), "b connected at a", || async {
        let s = a.network_state().await.unwrap();
        s.peers
            .iter()
            .any(|p| p.public_key == Some(b_key) && p.connection == ConnectionState::Connected)
    })
    .await;
    let relayed = started.elapsed();

    // A stream from A across the upgrade, to B under whatever name A
    // knows it by at the time.
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:04}").into_bytes()).collect();
    let mut direct_at = None;
    for body in &expected {
        let s = a.network_state().await.unwrap();
        let b_at_a = s
            .peers
            .iter()
            .find(|p| p.public_key == Some(b_key))
            .expect("b at a");
        if b_at_a.path == PathKind::Direct && direct_at.is_none() {
            direct_at = Some(started.elapsed());
        }
        let report = a
            .broadcast_to(
                text_msg("seq", String::from_utf8_lossy(body)),
                &[b_at_a.addr],
            )
            .await
            .unwrap();
        assert!(report.all_queued(), "{report:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for(Duration::from_secs(30), "every message at b", || async {
        b_rec.count_type("seq") >= N
    })
    .await;
    assert_eq!(
        b_rec.bodies_of_type("seq"),
        expected,
        "exactly once, in order"
    );
    wait_for(Duration::from_secs(10), "direct at both ends", || async {
        let sa = a.network_state().await.unwrap();
        let sb = b.network_state().await.unwrap();
        sa.peer(b_addr).is_some_and(|p| p.path == PathKind::Direct)
            && sb.peer(a_addr).is_some_and(|p| p.path == PathKind::Direct)
    })
    .await;
    let (sa, sb) = (
        a.network_state().await.unwrap(),
        b.network_state().await.unwrap(),
    );
    let b_at_a = sa.peer(b_addr).unwrap();
    assert_eq!(b_at_a.public_key, Some(b_key));
    assert_eq!(b_at_a.direct_addr, Some(b_addr));
    assert_eq!(sb.peer(a_addr).unwrap().public_key, Some(a_key));
    // One handshake with R and one with each other, each; no new one.
    assert_eq!(sa.counters.handshakes_completed, 2, "{:?}", sa.counters);
    assert_eq!(sb.counters.handshakes_completed, 2, "{:?}", sb.counters);
    assert!(sa.counters.punch_successes + sb.counters.punch_successes >= 2);
    assert!(sa.counters.punch_attempts >= 1);
    let report = b
        .broadcast_to(text_msg("back", "direct"), &[a_addr])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "b's answer at a", || async {
        a_rec.count_type("back") == 1
    })
    .await;
    eprintln!(
        "lookup answered after {found:?}, relayed session up after {relayed:?}, \
         direct seen at A after {direct_at:?}; punch attempts A {} B {}, probes A {} B {}, \
         NAT drops at B {}",
        sa.counters.punch_attempts,
        sb.counters.punch_attempts,
        sa.counters.punch_probes,
        sb.counters.punch_probes,
        b_dropped.load(Ordering::Relaxed)
    );
    for n in [a, b, r] {
        n.close().await.unwrap();
    }
}

/// Figures for `docs/nat.md` (not a test of speed; run by hand):
/// `cargo test -p gladius-p2p --test relay relayed_vs_direct -- --ignored --nocapture`
/// (`GLADIUS_RELAY_BPS=1000000000` to lift the relay's per-pair rate).
/// 2,000 messages of 1 KiB from A to B, directly and through a relay, on
/// loopback; and the round trip of a request each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn relayed_vs_direct() {
    const N: usize = 2_000;
    // GLADIUS_RELAY_BPS: the relay's bytes per second per pair (default
    // the library's, 1 MiB/s).
    let bps = std::env::var("GLADIUS_RELAY_BPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(gladius_p2p::DEFAULT_RELAY_BYTES_PER_SEC);
    let relay = test_config()
        .with_relay(true)
        .with_relay_limits(gladius_p2p::DEFAULT_RELAY_MAX_PAIRS, bps);
    let (r, r_addr, _) = node_with(relay).await;
    let (a, a_addr, _a_rec, a_block) = filtered_node().await;
    let (b, b_addr, b_rec, _) = filtered_node().await;
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    a.add(b_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_connected(&a, b_addr).await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    let body = "x".repeat(1024);
    let run = |to: SocketAddr, kind: &'static str| {
        let (a, b_rec, body) = (a.clone(), b_rec.clone(), body.clone());
        async move {
            let start = std::time::Instant::now();
            for _ in 0..N {
                loop {
                    let report = a
                        .broadcast_to(text_msg(kind, body.clone()), &[to])
                        .await
                        .unwrap();
                    if report.all_queued() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            wait_for(Duration::from_secs(120), "all delivered", || async {
                b_rec.count_type(kind) >= N
            })
            .await;
            start.elapsed()
        }
    };
    let direct = run(b_addr, "direct").await;
    let mut rtt_direct = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        a.request(text_msg("echo", "x"), b_addr, Duration::from_secs(5))
            .await
            .unwrap();
        rtt_direct.push(t.elapsed());
    }
    // Now cut A from B and go through R.
    a.delete(b_addr).await.unwrap();
    a_block.add(b_addr);
    let via = a.add_via_relay(b_key, r_addr).await.unwrap();
    wait_connected(&a, via).await;
    let relayed = run(via, "relayed").await;
    let mut rtt_relayed = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        a.request(text_msg("echo", "x"), via, Duration::from_secs(5))
            .await
            .unwrap();
        rtt_relayed.push(t.elapsed());
    }
    rtt_direct.sort();
    rtt_relayed.sort();
    let mb = (N * 1024) as f64 / 1e6;
    eprintln!(
        "direct: {N} x 1 KiB in {direct:?} ({:.1} MB/s), request p50 {:?}; \
         relayed: {relayed:?} ({:.1} MB/s), request p50 {:?}; relay forwarded {} datagrams",
        mb / direct.as_secs_f64(),
        rtt_direct[25],
        mb / relayed.as_secs_f64(),
        rtt_relayed[25],
        r.network_state().await.unwrap().counters.relay_forwarded
    );
    let _ = a_addr;
}
