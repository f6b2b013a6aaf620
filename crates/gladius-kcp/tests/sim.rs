//! State machine tests over the in-memory simulator (virtual time).

mod common;

use common::*;
use gladius_kcp::{KcpConfig, SendError};
use rand::SeedableRng;

fn run_stream(
    seed: u64,
    ab: LinkConfig,
    ba: LinkConfig,
    writes: usize,
    limit_ms: u64,
) -> TransferReport {
    let config = KcpConfig::default();
    let mut sim = Sim::new(seed, &config, ab, ba);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabcd);
    let messages = make_messages(&mut rng, writes, 5000);
    let report = transfer(&mut sim, &messages, 512 * 1024, limit_ms, |_| {});
    eprintln!(
        "seed {seed}: {} writes in {} virtual ms, {} updates, a {:?}, b {:?}, srtt {:?}",
        writes,
        report.virtual_ms,
        report.updates,
        sim.a.stats(),
        sim.b.stats(),
        sim.a.srtt_ms()
    );
    report
}

#[test]
fn lossless_stream_is_exact() {
    let r = run_stream(
        1,
        LinkConfig::clean(20),
        LinkConfig::clean(20),
        2000,
        30_000,
    );
    assert!(r.virtual_ms < 10_000, "{r:?}");
}

#[test]
fn five_percent_loss_stream_is_exact() {
    let r = run_stream(
        2,
        LinkConfig::lossy(0.05),
        LinkConfig::lossy(0.05),
        2000,
        60_000,
    );
    assert!(r.virtual_ms < 30_000, "{r:?}");
}

#[test]
fn twenty_percent_loss_stream_is_exact() {
    let r = run_stream(
        3,
        LinkConfig::lossy(0.20),
        LinkConfig::lossy(0.20),
        2000,
        120_000,
    );
    assert!(r.virtual_ms < 90_000, "{r:?}");
}

#[test]
fn reordering_stream_is_exact() {
    let reorder = LinkConfig {
        loss: 0.0,
        duplicate: 0.0,
        delay_min: 5,
        delay_max: 80,
    };
    let r = run_stream(4, reorder, reorder, 2000, 60_000);
    assert!(r.virtual_ms < 30_000, "{r:?}");
}

#[test]
fn duplication_stream_is_exact() {
    let dup = LinkConfig {
        loss: 0.0,
        duplicate: 0.3,
        delay_min: 10,
        delay_max: 40,
    };
    let r = run_stream(5, dup, dup, 2000, 60_000);
    assert!(r.virtual_ms < 30_000, "{r:?}");
}

#[test]
fn everything_bad_at_once_stream_is_exact() {
    let bad = LinkConfig {
        loss: 0.1,
        duplicate: 0.1,
        delay_min: 1,
        delay_max: 120,
    };
    let r = run_stream(6, bad, bad, 1000, 120_000);
    assert!(r.virtual_ms < 90_000, "{r:?}");
}

#[test]
fn idle_endpoints_have_no_timeout() {
    let config = KcpConfig::default();
    let mut sim = Sim::new(7, &config, LinkConfig::clean(10), LinkConfig::clean(10));
    assert_eq!(sim.a.poll_timeout(), None);
    assert_eq!(sim.b.poll_timeout(), None);
    assert_eq!(sim.a.send(b""), Err(SendError::Empty));
    sim.a.send(b"hello").unwrap();
    assert!(sim.a.poll_timeout().is_some());
    assert_eq!(sim.a.unacked_bytes(), 5);
    for _ in 0..1000 {
        sim.step_io();
        while sim.b.recv().is_some() {}
        if sim.idle() {
            break;
        }
        sim.advance(1000);
    }
    assert!(sim.idle());
    assert_eq!(sim.a.unacked_bytes(), 0);
    assert_eq!(sim.a.poll_timeout(), None);
    assert_eq!(sim.b.poll_timeout(), None);
    assert!(sim.a.srtt_ms().is_some_and(|s| (20..=40).contains(&s)));
}

#[test]
fn dead_link_is_detected_when_everything_is_dropped() {
    let config = KcpConfig::default();
    let mut sim = Sim::new(8, &config, LinkConfig::lossy(1.0), LinkConfig::lossy(1.0));
    sim.a.send(&[7u8; 3000]).unwrap();
    let mut steps = 0;
    while !sim.a.is_dead() {
        sim.step_io();
        assert!(sim.advance(600_000));
        steps += 1;
        assert!(sim.elapsed < 3_600_000, "not dead after an hour");
    }
    // The endpoint slept until each retransmission instead of ticking.
    assert!(steps < 200, "{steps} steps");
    assert!(sim.a.stats().timeout_retransmits >= u64::from(config.dead_link - 1));
    eprintln!("dead after {} virtual ms, {steps} steps", sim.elapsed);
}

#[test]
fn window_closes_when_reader_stalls_and_reopens_when_it_reads() {
    let config = KcpConfig {
        recv_window: 16,
        ..KcpConfig::default()
    };
    let mut sim = Sim::new(9, &config, LinkConfig::clean(15), LinkConfig::clean(15));
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let messages = make_messages(&mut rng, 300, 2000);
    for m in &messages {
        sim.a.send(m).unwrap();
    }
    let total: usize = messages.iter().map(Vec::len).sum();

    // Nobody reads b for 20 virtual seconds.
    let start = sim.elapsed;
    let mut steps = 0;
    while sim.elapsed - start < 20_000 {
        sim.step_io();
        sim.advance(1000);
        steps += 1;
    }
    assert_eq!(sim.a.remote_window(), 0, "window did not close");
    assert!(
        sim.a.unacked_bytes() > total / 2,
        "sender was not held back"
    );
    assert!(!sim.a.is_dead());
    // While closed, the endpoints wait for probe/retransmit timers rather
    // than ticking every interval.
    assert!(steps < 500, "{steps} steps while the window was closed");

    // Now read everything: the window reopens and the stream completes.
    let mut got = Deframer::default();
    let limit = sim.elapsed + 30_000;
    loop {
        while let Some(chunk) = sim.b.recv() {
            got.push(&chunk);
        }
        sim.step_io();
        if got.messages.len() == messages.len() && sim.idle() {
            break;
        }
        assert!(
            sim.elapsed < limit,
            "stream did not resume: {} bytes",
            got.bytes
        );
        sim.advance(1000);
    }
    assert_eq!(got.messages, messages);
    assert!(!sim.a.is_dead());
}

#[test]
fn window_probe_recovers_a_lost_window_update() {
    // b reopens its window, but every datagram b sends in that moment is lost;
    // a must find out by probing (WASK) instead of waiting forever.
    let config = KcpConfig {
        recv_window: 4,
        ..KcpConfig::default()
    };
    let mut sim = Sim::new(10, &config, LinkConfig::clean(10), LinkConfig::clean(10));
    sim.a.send(&[1u8; 20_000]).unwrap();
    for _ in 0..200 {
        sim.step_io();
        sim.advance(1000);
    }
    assert_eq!(sim.a.remote_window(), 0);
    // Drain b; its "window open" message goes into a black hole.
    let mut got = 0;
    while let Some(c) = sim.b.recv() {
        got += c.len();
    }
    sim.ba.config = Some(LinkConfig::lossy(1.0));
    sim.b.update(sim.now);
    sim.step_io();
    sim.ba.config = Some(LinkConfig::clean(10));
    let limit = sim.elapsed + 60_000;
    while got < 20_000 {
        sim.step_io();
        while let Some(c) = sim.b.recv() {
            got += c.len();
        }
        assert!(sim.elapsed < limit, "no recovery: {got} bytes");
        sim.advance(1000);
    }
}

#[test]
fn congestion_control_mode_completes() {
    let config = KcpConfig {
        no_congestion_control: false,
        nodelay: false,
        interval_ms: 20,
        ..KcpConfig::default()
    };
    let mut sim = Sim::new(
        11,
        &config,
        LinkConfig::lossy(0.05),
        LinkConfig::lossy(0.05),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let messages = make_messages(&mut rng, 300, 3000);
    let r = transfer(&mut sim, &messages, 256 * 1024, 300_000, |_| {});
    eprintln!("cc mode: {r:?}");
}

#[test]
fn tiny_mtu_and_windows_work() {
    let config = KcpConfig {
        mtu: 0, // clamped to the minimum
        send_window: 0,
        recv_window: 0,
        interval_ms: 0,
        ..KcpConfig::default()
    };
    let mut sim = Sim::new(
        12,
        &config,
        LinkConfig::lossy(0.05),
        LinkConfig::lossy(0.05),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let messages = make_messages(&mut rng, 50, 300);
    transfer(&mut sim, &messages, 4096, 600_000, |_| {});
}

#[test]
fn both_directions_at_once() {
    let config = KcpConfig::default();
    let bad = LinkConfig {
        loss: 0.05,
        duplicate: 0.05,
        delay_min: 5,
        delay_max: 50,
    };
    let mut sim = Sim::new(13, &config, bad, bad);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let to_b = make_messages(&mut rng, 500, 4000);
    let to_a = make_messages(&mut rng, 500, 4000);
    let (mut ia, mut ib) = (0, 0);
    let (mut got_a, mut got_b) = (Deframer::default(), Deframer::default());
    while got_a.messages.len() < to_a.len() || got_b.messages.len() < to_b.len() || !sim.idle() {
        while ia < to_b.len() && sim.a.unacked_bytes() < 200_000 {
            sim.a.send(&to_b[ia]).unwrap();
            ia += 1;
        }
        while ib < to_a.len() && sim.b.unacked_bytes() < 200_000 {
            sim.b.send(&to_a[ib]).unwrap();
            ib += 1;
        }
        sim.step_io();
        while let Some(c) = sim.a.recv() {
            got_a.push(&c);
        }
        while let Some(c) = sim.b.recv() {
            got_b.push(&c);
        }
        assert!(sim.elapsed < 60_000, "bidirectional transfer too slow");
        sim.advance(1000);
    }
    assert_eq!(got_a.messages, to_a);
    assert_eq!(got_b.messages, to_b);
}
