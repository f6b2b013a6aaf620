//! A byte limit on the out-of-order segments a receiver holds
//! (`Kcp::set_reorder_limit`): segments that do not fit are neither held
//! nor acknowledged, the sender retransmits them, and the stream still
//! arrives whole and in order.

mod common;

use common::*;
use gladius_kcp::segment::{encode, Command, SegmentHeader};
use gladius_kcp::{Kcp, KcpConfig};
use rand::SeedableRng;

/// A 300-message transfer over links losing 10%, with datagrams to the
/// receiver delayed by `delay_min..=40` ms (reordered when below 40), its
/// out-of-order segments held within `limit`. Returns the segments refused
/// and the most held at once.
fn lossy_transfer_within(limit: usize, delay_min: u32, seed: u64) -> (u64, usize) {
    let mut sim = Sim::new(
        seed,
        &KcpConfig::default(),
        LinkConfig {
            loss: 0.1,
            duplicate: 0.02,
            delay_min,
            delay_max: 40,
        },
        LinkConfig::lossy(0.1),
    );
    sim.b.set_reorder_limit(Some(limit));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let messages = make_messages(&mut rng, 300, 4000);
    let mut max_held = 0;
    transfer(&mut sim, &messages, 256 * 1024, 600_000, |sim| {
        max_held = max_held.max(sim.b.reorder_bytes());
    });
    (sim.b.stats().reorder_refused, max_held)
}

/// The receiver advertises no more window than its limit holds, so the
/// sender keeps to it: (almost) nothing is refused, and with a limit of 0
/// the transfer goes one segment per round trip but goes.
#[test]
fn a_lossy_reordering_transfer_completes_within_a_reorder_limit() {
    for (limit, seed) in [(0, 1), (8 * 1024, 2), (64 * 1024, 3), (1 << 20, 4)] {
        let (_refused, max_held) = lossy_transfer_within(limit, 10, seed);
        assert!(max_held <= limit, "held {max_held} > {limit}");
    }
}

/// Segments ahead of a gap that never fills: the receiver holds at most
/// the limit, acknowledges only what it holds, and still takes the next
/// expected segment.
#[test]
fn segments_beyond_a_gap_are_held_up_to_the_limit_and_only_those_acknowledged() {
    let mut b = Kcp::new(CONV, &KcpConfig::default(), 0);
    // Ten full-size segments (mss 1376, counted with 64 bytes each).
    let limit = 10 * (1376 + 64);
    b.set_reorder_limit(Some(limit));
    let mut wire = Vec::new();
    // sn 1..=100, full size: sn 0 never comes.
    for sn in 1..=100u32 {
        let h = SegmentHeader {
            conv: CONV,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: 0,
            sn,
            una: 0,
            len: 1376,
        };
        wire.clear();
        encode(&h, &[7; 1376], &mut wire).expect("a short payload encodes");
        b.input(1, &wire).unwrap();
    }
    assert_eq!(b.reorder_bytes(), limit);
    assert_eq!(b.stats().reorder_refused, 90);
    b.flush(2);
    let mut acked = Vec::new();
    while let Some(d) = b.poll_transmit() {
        for seg in gladius_kcp::segment::parse_datagram(&d) {
            let (h, _) = seg.unwrap();
            if h.cmd == Command::Ack {
                acked.push(h.sn);
            }
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=10).collect::<Vec<u32>>());
    // The gap fills: everything held is delivered and nothing is held.
    let h = SegmentHeader {
        conv: CONV,
        cmd: Command::Push,
        frg: 0,
        wnd: 128,
        ts: 0,
        sn: 0,
        una: 0,
        len: 1376,
    };
    wire.clear();
    encode(&h, &[7; 1376], &mut wire).expect("a short payload encodes");
    b.input(3, &wire).unwrap();
    let mut got = 0;
    while let Some(c) = b.recv() {
        got += c.len();
    }
    assert_eq!(got, 11 * 1376);
    assert_eq!(b.reorder_bytes(), 0);
}
