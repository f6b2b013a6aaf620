//! Spurious retransmissions (Eifel detection and response) over the
//! in-memory simulator: late ACKs are recognised by their echoed timestamp
//! and stop causing retransmissions; real losses are still repaired and are
//! not mistaken for spurious ones.

mod common;

use common::*;
use gladius_kcp::{KcpConfig, KcpStats};
use rand::SeedableRng;

/// One-way delay of both links outside stalls.
const DELAY: u32 = 10;

fn retransmits(s: &KcpStats) -> u64 {
    s.timeout_retransmits + s.fast_retransmits
}

/// What [`paced_stream`] saw.
#[derive(Debug)]
struct Paced {
    stats: KcpStats,
    /// Retransmissions by `a` during each stall (and until the next one).
    per_stall: Vec<u64>,
}

/// Stream `messages` from `a` to `b`, one every 5 ms, while the ACK path
/// `b -> a` stalls for `stall_ms` every 1000 ms (the receiver is busy: ACKs
/// sent during a stall all arrive `DELAY` ms after it ends), `stalls` times.
/// `drop_ab(elapsed)` says whether to drop everything `a` sends in that
/// virtual ms. Checks exact, in-order delivery, then runs until idle.
fn paced_stream(
    seed: u64,
    messages: &[Vec<u8>],
    stall_ms: u64,
    stalls: u64,
    drop_ab: impl Fn(u64) -> bool,
) -> Paced {
    let config = KcpConfig::default();
    let clean = LinkConfig::clean(DELAY);
    let mut sim = Sim::new(seed, &config, clean, clean);
    let mut got = Deframer::default();
    let mut next = 0;
    let mut per_stall = Vec::new();
    let mut stall_index = None;
    let stall_of = |elapsed: u64| {
        let (k, phase) = (elapsed / 1000, elapsed % 1000);
        (k >= 1 && k <= stalls && phase < stall_ms).then_some((k, 1000 * k + stall_ms))
    };
    loop {
        if next < messages.len() && sim.elapsed >= 5 * next as u64 {
            sim.a.send(&messages[next]).unwrap();
            next += 1;
        }
        let delay = match stall_of(sim.elapsed) {
            Some((k, end)) => {
                if stall_index != Some(k) {
                    stall_index = Some(k);
                    per_stall.push(retransmits(&sim.a.stats()));
                }
                (end - sim.elapsed) as u32 + DELAY
            }
            None => DELAY,
        };
        sim.ba.config = Some(LinkConfig::clean(delay));
        sim.ab.config = Some(if drop_ab(sim.elapsed) {
            LinkConfig::lossy(1.0)
        } else {
            clean
        });
        sim.step_io();
        while let Some(chunk) = sim.b.recv() {
            got.push(&chunk);
        }
        assert!(!sim.a.is_dead());
        if next == messages.len() && got.messages.len() == messages.len() && sim.idle() {
            break;
        }
        assert!(sim.elapsed < 120_000, "stream stuck: {} bytes", got.bytes);
        // 1 ms steps: the pacing and the stalls are time-driven.
        sim.advance(1);
    }
    assert_eq!(got.messages.len(), messages.len());
    assert!(got.messages == messages, "stream differs");
    per_stall.push(retransmits(&sim.a.stats()));
    let per_stall = per_stall.windows(2).map(|w| w[1] - w[0]).collect();
    let stats = sim.a.stats();
    eprintln!(
        "a {stats:?}, b {:?}, per stall {per_stall:?}",
        sim.b.stats()
    );
    Paced { stats, per_stall }
}

fn messages(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    make_messages(&mut rng, count, 1000)
}

#[test]
fn late_acks_are_spurious_and_stop_causing_retransmissions() {
    // 10 s of traffic; from t = 1 s the receiver stalls its ACKs for 150 ms
    // every second, far beyond the ~30-40 ms RTO a 20 ms RTT gives.
    let msgs = messages(21, 2000);
    let r = paced_stream(21, &msgs, 150, 9, |_| false);
    // The first stall retransmits (nothing could know better), and the
    // late ACKs of the originals reveal that as spurious.
    assert!(r.per_stall[0] > 0, "{r:?}");
    assert!(r.stats.spurious_retransmits > 0, "{r:?}");
    assert!(
        r.stats.spurious_retransmits <= retransmits(&r.stats),
        "{r:?}"
    );
    // The later stalls, on the same link, retransmit (almost) nothing: the
    // RTO now covers the stall. Without the response every stall costs
    // about as much as the first one.
    let later: u64 = r.per_stall[1..].iter().sum();
    assert!(later <= r.per_stall[0], "{r:?}");
    assert!(retransmits(&r.stats) <= 2 * r.per_stall[0], "{r:?}");
}

#[test]
fn one_late_ack_burst_is_detected() {
    // A single 300 ms stall: every retransmission it caused is an extra copy
    // of a segment whose original arrived.
    let msgs = messages(22, 600);
    let r = paced_stream(22, &msgs, 300, 1, |_| false);
    assert!(r.stats.spurious_retransmits > 0, "{r:?}");
    // Only segments acked via an earlier copy count, never more than were
    // retransmitted.
    assert!(
        r.stats.spurious_retransmits <= r.stats.timeout_retransmits + r.stats.fast_retransmits,
        "{r:?}"
    );
}

#[test]
fn real_loss_is_repaired_and_not_counted_spurious() {
    // Everything `a` sends in four 1 ms windows is lost; no stalls.
    let msgs = messages(23, 600);
    let lost = |t: u64| [400, 1_003, 1_500, 2_222].contains(&t);
    let r = paced_stream(23, &msgs, 0, 0, lost);
    assert!(retransmits(&r.stats) >= 4, "{r:?}");
    assert_eq!(r.stats.spurious_retransmits, 0, "{r:?}");
}

#[test]
fn random_loss_is_not_counted_spurious() {
    // Loss on the data path only, constant delays: every retransmission
    // repairs a lost copy, and the ACK echoes the copy that made it.
    let config = KcpConfig::default();
    let mut sim = Sim::new(24, &config, LinkConfig::lossy(0.1), LinkConfig::clean(20));
    let msgs = messages(24, 1500);
    transfer(&mut sim, &msgs, 64 * 1024, 120_000, |_| {});
    let stats = sim.a.stats();
    eprintln!("{stats:?}");
    assert!(retransmits(&stats) > 50, "{stats:?}");
    assert_eq!(stats.spurious_retransmits, 0, "{stats:?}");
}

/// Send `messages` as fast as the window allows over `ab` / `ba` links set
/// by `links(elapsed)`; returns the sender's stats after exact delivery.
fn burst(
    seed: u64,
    messages: &[Vec<u8>],
    links: impl Fn(u64) -> (LinkConfig, LinkConfig),
) -> (KcpStats, u64) {
    let config = KcpConfig::default();
    let (ab, ba) = links(0);
    let mut sim = Sim::new(seed, &config, ab, ba);
    let report = transfer(&mut sim, messages, 1 << 20, 60_000, |sim| {
        let (ab, ba) = links(sim.elapsed);
        sim.ab.config = Some(ab);
        sim.ba.config = Some(ba);
    });
    let stats = sim.a.stats();
    eprintln!("burst: {stats:?} {report:?}");
    (stats, report.virtual_ms)
}

#[test]
fn a_window_with_late_acks_is_probed_not_resent_whole() {
    // ~100 segments leave at once and every ACK takes 300 ms to come back:
    // far past the initial 200 ms RTO, but only the oldest segment is
    // resent (as a probe) until the peer is heard from.
    let msgs = messages(25, 250);
    let total: usize = msgs.iter().map(Vec::len).sum();
    assert!(total > 100_000);
    let (stats, _) = burst(25, &msgs, |_| {
        (LinkConfig::clean(10), LinkConfig::clean(300))
    });
    assert!(stats.timeout_retransmits <= 3, "{stats:?}");
    assert_eq!(stats.fast_retransmits, 0, "{stats:?}");
    assert_eq!(
        stats.spurious_retransmits, stats.timeout_retransmits,
        "{stats:?}"
    );
}

#[test]
fn a_window_that_was_really_lost_is_resent_and_not_spurious() {
    // Everything sent in the first 5 ms (the whole first window) is lost;
    // the probe's ACK and the ACKs of later data bring the rest back.
    let msgs = messages(26, 250);
    let (stats, ms) = burst(26, &msgs, |t| {
        let ab = if t < 5 {
            LinkConfig::lossy(1.0)
        } else {
            LinkConfig::clean(10)
        };
        (ab, LinkConfig::clean(10))
    });
    assert!(
        stats.timeout_retransmits + stats.fast_retransmits >= 50,
        "{stats:?}"
    );
    assert_eq!(stats.spurious_retransmits, 0, "{stats:?}");
    // Resent as soon as the probe's ACK shows the loss: the initial 200 ms
    // RTO plus about two RTTs, not a further backed-off timeout.
    assert!(ms < 400, "{ms} ms {stats:?}");
}
