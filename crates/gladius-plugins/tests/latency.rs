//! Tests of the latency audit plugin.
//!
//! * statistics (EWMA, min, p50/p99 over the window, bounded memory), unit
//!   and property tests without sockets;
//! * RTT through delaying UDP relays (real sockets on 127.0.0.1, default
//!   encrypted nodes): each relay adds a known **round-trip** delay, split
//!   evenly between the two directions;
//! * failure detection: a silenced peer goes suspect then dead (and is
//!   deleted) within the configured bound; one that comes back stays.
//!
//! Socket tests run one at a time (`serial`) so their timing assertions do
//! not compete for the CPU with each other.

mod latency_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::Message;
use gladius_plugins::latency::{
    LatencyAudit, LatencyConfig, LatencyConfigError, LatencySnapshot, PeerStatus, RttStats,
    PING_TYPE,
};
use latency_support::{
    in_route_table, is_writable, latency_node, responder, serial, wait_for, Relay,
};
use proptest::prelude::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ----- statistics ------------------------------------------------------------

/// Nearest-rank percentile, written independently of the library.
fn reference_percentile(window: &[u64], p: f64) -> u64 {
    let mut v = window.to_vec();
    v.sort();
    let n = v.len();
    let mut rank = 1;
    while (rank as f64) < p / 100.0 * n as f64 {
        rank += 1;
    }
    v[rank - 1]
}

#[test]
fn stats_known_values() {
    let mut s = RttStats::new(4, 0.25);
    assert_eq!(
        (s.ewma(), s.min(), s.p50(), s.p99()),
        (None, None, None, None)
    );
    for x in [40, 10, 30, 20] {
        s.record(ms(x));
    }
    // ewma: 40 → 32.5 → 31.875 → 28.90625 ms
    assert_eq!(s.ewma(), Some(Duration::from_nanos(28_906_250)));
    assert_eq!(s.min(), Some(ms(10)));
    assert_eq!(s.p50(), Some(ms(20)));
    assert_eq!(s.p99(), Some(ms(40)));
    // The window slides: 40 and 10 leave, the all-time min stays.
    s.record(ms(50));
    s.record(ms(60));
    assert_eq!(s.window_len(), 4);
    assert_eq!(s.samples(), 6);
    assert_eq!(s.min(), Some(ms(10)));
    assert_eq!(s.p50(), Some(ms(30)));
    assert_eq!(s.p99(), Some(ms(60)));
    assert_eq!(s.percentile(0.0), Some(ms(20)));
}

#[test]
fn misses_drive_status_and_a_pong_resets_them() {
    let mut s = RttStats::new(8, 0.125);
    assert_eq!(s.status(2, 4), PeerStatus::Alive);
    s.record_miss();
    assert_eq!(s.status(2, 4), PeerStatus::Alive);
    s.record_miss();
    assert_eq!(s.status(2, 4), PeerStatus::Suspect);
    s.record(ms(1));
    assert_eq!(
        (s.status(2, 4), s.consecutive_missed(), s.missed()),
        (PeerStatus::Alive, 0, 2)
    );
    for _ in 0..4 {
        s.record_miss();
    }
    assert_eq!(s.status(2, 4), PeerStatus::Dead);
    assert_eq!(s.missed(), 6);
}

#[test]
fn memory_is_bounded_by_the_window() {
    let mut s = RttStats::new(16, 0.125);
    for i in 0..100_000u64 {
        s.record(Duration::from_micros(i));
    }
    assert_eq!(s.window_len(), 16);
    assert_eq!(s.capacity(), 16);
    assert_eq!(s.samples(), 100_000);
    assert_eq!(s.p50(), Some(Duration::from_micros(99_991)));
    // Degenerate parameters are clamped, never a panic.
    let mut z = RttStats::new(0, f64::NAN);
    z.record(Duration::MAX);
    assert_eq!(z.last(), Some(gladius_plugins::latency::MAX_SAMPLE));
    z.record(ms(3));
    assert_eq!(
        (z.capacity(), z.window_len(), z.ewma()),
        (1, 1, Some(ms(3)))
    );
}

#[test]
fn config_is_validated() {
    let ok = LatencyConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.dead_bound(), ms(6000));
    let bad = |c: LatencyConfig| LatencyAudit::new(c).err();
    assert_eq!(
        bad(ok.clone().with_interval(Duration::ZERO)),
        Some(LatencyConfigError::ZeroInterval)
    );
    assert_eq!(
        bad(ok.clone().with_timeout(ms(1001))),
        Some(LatencyConfigError::Timeout)
    );
    assert_eq!(
        bad(ok.clone().with_thresholds(0, 3)),
        Some(LatencyConfigError::Thresholds)
    );
    assert_eq!(
        bad(ok.clone().with_thresholds(4, 3)),
        Some(LatencyConfigError::Thresholds)
    );
    assert_eq!(
        bad(ok.clone().with_window(0)),
        Some(LatencyConfigError::Window)
    );
    assert_eq!(
        bad(ok.clone().with_ewma_alpha(0.0)),
        Some(LatencyConfigError::Alpha)
    );
    assert_eq!(
        bad(ok.with_ewma_alpha(f64::NAN)),
        Some(LatencyConfigError::Alpha)
    );
}

proptest! {
    #[test]
    fn stats_match_a_reference(
        samples in prop::collection::vec(0u64..5_000_000, 1..300),
        window in 1usize..64,
        alpha in 0.01f64..=1.0,
    ) {
        let mut s = RttStats::new(window, alpha);
        for &us in &samples {
            s.record(Duration::from_micros(us));
        }
        let tail = &samples[samples.len().saturating_sub(window)..];
        prop_assert_eq!(s.window_len(), tail.len());
        prop_assert_eq!(s.samples(), samples.len() as u64);
        let min = *samples.iter().min().unwrap();
        let max = *samples.iter().max().unwrap();
        prop_assert_eq!(s.min(), Some(Duration::from_micros(min)));
        prop_assert_eq!(s.last(), Some(Duration::from_micros(*samples.last().unwrap())));
        let p50 = s.p50().unwrap();
        let p99 = s.p99().unwrap();
        prop_assert_eq!(p50, Duration::from_micros(reference_percentile(tail, 50.0)));
        prop_assert_eq!(p99, Duration::from_micros(reference_percentile(tail, 99.0)));
        prop_assert!(s.min().unwrap() <= p50 && p50 <= p99);
        prop_assert!(p99 <= Duration::from_micros(*tail.iter().max().unwrap()));
        // The EWMA is a convex combination of the samples.
        let e = s.ewma().unwrap();
        prop_assert!(e + Duration::from_micros(1) >= Duration::from_micros(min));
        prop_assert!(e <= Duration::from_micros(max) + Duration::from_micros(1));
    }

    #[test]
    fn constant_rtt_gives_constant_stats(us in 0u64..10_000_000, n in 1usize..200) {
        let mut s = RttStats::new(32, 0.125);
        for _ in 0..n {
            s.record(Duration::from_micros(us));
        }
        let d = Duration::from_micros(us);
        prop_assert_eq!((s.min(), s.p50(), s.p99()), (Some(d), Some(d), Some(d)));
        let e = s.ewma().unwrap();
        prop_assert!(e.abs_diff(d) <= Duration::from_micros(1));
    }

    #[test]
    fn misses_and_samples_interleaved(
        ops in prop::collection::vec(prop::option::of(0u64..1_000_000), 0..200),
        k in 1u32..5,
        extra in 0u32..5,
    ) {
        let m = k + extra;
        let mut s = RttStats::new(8, 0.5);
        for op in &ops {
            match op {
                Some(us) => s.record(Duration::from_micros(*us)),
                None => s.record_miss(),
            }
        }
        let missed = ops.iter().filter(|o| o.is_none()).count() as u64;
        let trailing = ops.iter().rev().take_while(|o| o.is_none()).count() as u32;
        prop_assert_eq!(s.missed(), missed);
        prop_assert_eq!(s.consecutive_missed(), trailing);
        prop_assert_eq!(s.samples(), ops.len() as u64 - missed);
        prop_assert!(s.window_len() <= 8);
        prop_assert_eq!(s.status(k, m), PeerStatus::from_misses(trailing, k, m));
    }
}

// ----- RTT through delaying relays --------------------------------------------

/// Measured p50 must be at least the added round-trip delay (the relay's
/// sleeps guarantee it) and at most this much above it: loopback, two
/// encrypted KCP stacks, two driver tasks, the responder's plugin task and
/// tokio's millisecond timer granularity, on a shared 2-core machine.
const TOLERANCE: Duration = Duration::from_millis(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_through_delaying_relays_is_measured_and_ranked() {
    let _serial = serial().await;
    let started = Instant::now();
    let cfg = LatencyConfig::default().with_interval(ms(150));
    let (a, _a_addr, latency) = latency_node(cfg).await;
    // Added round-trip delays; each relay sleeps half of it per direction.
    let added = [ms(50), ms(0), ms(20)];
    let mut relays = Vec::new();
    let mut peers = Vec::new();
    for d in added {
        let (net, addr, _) = responder().await;
        let relay = Relay::start(addr, d / 2).await;
        a.add(relay.addr).await.unwrap();
        relays.push(relay);
        peers.push(net);
    }
    const SAMPLES: u64 = 20;
    wait_for(
        Duration::from_secs(20),
        "20 samples from every peer",
        || {
            let latency = latency.clone();
            let relays: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
            async move {
                relays
                    .iter()
                    .all(|r| latency.stats(*r).is_some_and(|s| s.samples >= SAMPLES))
            }
        },
    )
    .await;

    let mut expected: Vec<(SocketAddr, Duration)> = Vec::new();
    for (relay, d) in relays.iter().zip(added) {
        let s = latency.stats(relay.addr).unwrap();
        println!(
            "added RTT {:>3?}: p50 {:?} ewma {:?} min {:?} p99 {:?} ({} samples, {} missed)",
            d,
            s.p50.unwrap(),
            s.ewma.unwrap(),
            s.min.unwrap(),
            s.p99.unwrap(),
            s.samples,
            s.missed
        );
        let p50 = s.p50.unwrap();
        assert!(
            p50 >= d,
            "{}: p50 {p50:?} below the added {d:?}",
            relay.addr
        );
        assert!(
            p50 <= d + TOLERANCE,
            "{}: p50 {p50:?} more than {TOLERANCE:?} above the added {d:?}",
            relay.addr
        );
        assert_eq!(s.status, PeerStatus::Alive);
        expected.push((relay.addr, d));
    }
    expected.sort_by_key(|e| e.1);
    let closest: Vec<SocketAddr> = latency.closest(3).iter().map(|c| c.0).collect();
    let want: Vec<SocketAddr> = expected.iter().map(|e| e.0).collect();
    assert_eq!(closest, want, "closest(3) ranks by added delay");
    assert_eq!(latency.closest(1).len(), 1);

    // The snapshot serializes (for the daemon) and reads back.
    let snap = latency.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    assert!(json.contains("\"p50_ms\""));
    let back: LatencySnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.peers.len(), 3);
    assert_eq!(back.counters, snap.counters);
    assert!(snap.counters.pongs_received >= 3 * SAMPLES);

    a.close().await.unwrap();
    for p in peers {
        p.close().await.unwrap();
    }
    println!("rtt test took {:?}", started.elapsed());
}

// ----- failure detection -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silenced_peer_is_declared_dead_within_the_bound_and_a_returning_one_stays() {
    let _serial = serial().await;
    let started = Instant::now();
    let cfg = LatencyConfig::default()
        .with_interval(ms(200))
        .with_thresholds(2, 5)
        .with_delete_on_dead(true);
    let bound = cfg.dead_bound(); // 5 × 200 ms + 200 ms
                                  // Scheduling slack on a loaded machine: timers, task wake-ups, one poll.
    let slack = ms(500);
    let (a, _, latency) = latency_node(cfg).await;
    let (b_net, b_addr, _) = responder().await;
    let (c_net, c_addr, _) = responder().await;
    let silent = Relay::start(b_addr, Duration::ZERO).await;
    let flaky = Relay::start(c_addr, Duration::ZERO).await;
    a.add(silent.addr).await.unwrap();
    a.add(flaky.addr).await.unwrap();
    wait_for(Duration::from_secs(10), "3 samples from both", || {
        let l = latency.clone();
        let (s, f) = (silent.addr, flaky.addr);
        async move {
            [s, f]
                .iter()
                .all(|p| l.stats(*p).is_some_and(|s| s.samples >= 3))
        }
    })
    .await;

    let t0 = Instant::now();
    silent.set_dropping(true);
    flaky.set_dropping(true);
    let (mut b_suspect, mut b_dead, mut b_deleted, mut c_suspect) = (None, None, None, None);
    let mut c_back = None;
    let mut c_worst = PeerStatus::Alive;
    while t0.elapsed() < bound + slack + ms(2000) {
        let now = t0.elapsed();
        match latency.status(silent.addr) {
            Some(PeerStatus::Suspect) if b_suspect.is_none() => b_suspect = Some(now),
            Some(PeerStatus::Dead) if b_dead.is_none() => {
                b_suspect.get_or_insert(now);
                b_dead = Some(now);
            }
            _ => {}
        }
        // A peer the application added is demoted, not deleted: it stays
        // in the route table, not writable, until it answers again.
        if b_deleted.is_none() && b_dead.is_some() && !is_writable(&a, silent.addr).await {
            b_deleted = Some(now);
        }
        let c = latency.status(flaky.addr).unwrap();
        if c == PeerStatus::Dead {
            c_worst = c;
        }
        if c == PeerStatus::Suspect && c_suspect.is_none() {
            // Came back as soon as it was suspected: before the dead bound.
            c_suspect = Some(now);
            c_worst = c;
            flaky.set_dropping(false);
        }
        if c_suspect.is_some() && c_back.is_none() && c == PeerStatus::Alive {
            c_back = Some(now);
        }
        if b_deleted.is_some() && c_back.is_some() && now > c_suspect.unwrap() + bound {
            break;
        }
        tokio::time::sleep(ms(5)).await;
    }
    println!(
        "bound {bound:?} (+ slack {slack:?}): silenced peer suspect after {b_suspect:?}, \
         dead after {b_dead:?}, out of the route table after {b_deleted:?}; \
         flaky peer suspect after {c_suspect:?} (then restored), alive again after {c_back:?}"
    );
    let b_dead = b_dead.expect("silenced peer declared dead");
    assert!(b_suspect.unwrap() <= b_dead);
    assert!(
        b_dead <= bound + slack,
        "dead after {b_dead:?} > {bound:?} + {slack:?}"
    );
    assert!(b_deleted.is_some(), "dead peer demoted (not writable)");
    assert!(
        in_route_table(&a, silent.addr).await,
        "a peer the application added stays in the route table"
    );
    // Remembered as dead after deletion, with its misses.
    let s = latency.stats(silent.addr).unwrap();
    assert_eq!(s.status, PeerStatus::Dead);
    assert!(s.consecutive_missed >= 5, "{s:?}");
    assert!(latency.closest(3).iter().all(|c| c.0 != silent.addr));
    assert!(latency.counters().peers_deleted >= 1);

    assert!(c_suspect.is_some(), "flaky peer became suspect");
    assert!(c_back.is_some(), "flaky peer alive again");
    assert_eq!(c_worst, PeerStatus::Suspect, "flaky peer never dead");
    assert!(in_route_table(&a, flaky.addr).await, "flaky peer kept");
    assert_eq!(latency.stats(flaky.addr).unwrap().consecutive_missed, 0);

    a.close().await.unwrap();
    b_net.close().await.unwrap();
    c_net.close().await.unwrap();
    println!("failure test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delete_on_dead_a_dead_peer_stays_and_can_revive() {
    let _serial = serial().await;
    let cfg = LatencyConfig::default()
        .with_interval(ms(100))
        .with_thresholds(1, 3)
        .with_delete_on_dead(false);
    let bound = cfg.dead_bound();
    let (a, _, latency) = latency_node(cfg).await;
    let (b_net, b_addr, _) = responder().await;
    let relay = Relay::start(b_addr, Duration::ZERO).await;
    a.add(relay.addr).await.unwrap();
    let l = latency.clone();
    wait_for(Duration::from_secs(10), "a sample", || {
        let l = l.clone();
        async move { l.stats(relay.addr).is_some_and(|s| s.samples >= 1) }
    })
    .await;
    relay.set_dropping(true);
    let t0 = Instant::now();
    wait_for(bound + ms(1000), "dead", || {
        let l = l.clone();
        async move { l.status(relay.addr) == Some(PeerStatus::Dead) }
    })
    .await;
    println!("dead after {:?} (bound {bound:?})", t0.elapsed());
    assert!(in_route_table(&a, relay.addr).await, "not deleted");
    relay.set_dropping(false);
    wait_for(Duration::from_secs(10), "alive again", || {
        let l = l.clone();
        async move { l.status(relay.addr) == Some(PeerStatus::Alive) }
    })
    .await;
    println!("alive again {:?} after the relay resumed", t0.elapsed());
    a.close().await.unwrap();
    b_net.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pings_are_counted_and_ignored() {
    let _serial = serial().await;
    let (a, _, _) = latency_node(LatencyConfig::default().with_probe(false)).await;
    let (b, b_addr, b_latency) = responder().await;
    // Not a request, and a request whose body does not decode.
    a.broadcast_to(Message::new(PING_TYPE, vec![1u8, 2]).unwrap(), &[b_addr])
        .await
        .unwrap();
    let r = a
        .request(
            Message::new(PING_TYPE, vec![0xffu8; 3]).unwrap(),
            b_addr,
            ms(300),
        )
        .await;
    assert!(r.is_err(), "garbage ping answered: {r:?}");
    // A valid ping still gets its pong.
    let body = [1u8, 42]; // version 1, nonce 42 (postcard varint)
    let pong = a
        .request(
            Message::new(PING_TYPE, body.to_vec()).unwrap(),
            b_addr,
            ms(2000),
        )
        .await
        .unwrap();
    assert_eq!(pong.message().msg_type(), "latency.pong");
    assert_eq!(pong.message().body().as_ref(), &[1u8, 42]);
    let c = b_latency.counters();
    assert_eq!((c.bad_pings, c.pings_answered), (2, 1));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closest_lists_a_peer_one_round_trip_after_it_connects_not_a_round_later() {
    let _serial = serial().await;
    // A round every minute: only the ping on connection can explain a
    // sample within the deadline.
    let slow = LatencyConfig::default()
        .with_interval(Duration::from_secs(60))
        .with_timeout(Duration::from_secs(5));
    let (a, _, latency) = latency_node(slow).await;
    let (b, b_addr, _) = responder().await;
    a.add(b_addr).await.unwrap();
    a.wait_connected(b_addr, Duration::from_secs(10))
        .await
        .unwrap();
    let took = wait_for(Duration::from_secs(10), "b among the closest", || async {
        latency.closest(1).first().map(|p| p.0) == Some(b_addr)
    })
    .await;
    println!("closest(1) listed b {took:?} after its session was up");
    assert!(took < Duration::from_secs(10));
    a.close().await.unwrap();
    b.close().await.unwrap();
}
