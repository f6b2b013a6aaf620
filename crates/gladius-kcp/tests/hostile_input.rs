//! Hostile input: arbitrary bytes and forged segments never panic, never
//! corrupt the endpoint, and keep RTT estimates sane.

mod common;

use common::*;
use gladius_kcp::segment::{encode, Command, SegmentHeader};
use gladius_kcp::KcpConfig;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn forged_segment() -> impl Strategy<Value = (SegmentHeader, Vec<u8>)> {
    (
        prop_oneof![
            Just(Command::Push),
            Just(Command::Ack),
            Just(Command::WindowAsk),
            Just(Command::WindowTell),
        ],
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(cmd, frg, wnd, ts, sn, una, payload)| {
            (
                SegmentHeader {
                    conv: CONV,
                    cmd,
                    frg,
                    wnd,
                    ts,
                    sn,
                    una,
                    len: 0,
                },
                payload,
            )
        })
}

fn small_transfer(sim: &mut Sim, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let messages = make_messages(&mut rng, 40, 3000);
    transfer(sim, &messages, 64 * 1024, 300_000, |_| {});
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Raw garbage (some of it carrying the right conv) is rejected or
    /// ignored, and the endpoint still carries a stream afterwards.
    #[test]
    fn arbitrary_bytes_never_panic_and_leave_a_working_endpoint(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..20),
        right_conv in any::<bool>(),
    ) {
        let mut sim = Sim::new(21, &KcpConfig::default(), LinkConfig::clean(10), LinkConfig::clean(10));
        for mut d in datagrams {
            if right_conv && d.len() >= 4 {
                d[..4].copy_from_slice(&CONV.to_le_bytes());
            }
            let now = sim.now;
            let _ = sim.a.input(now, &d);
            let _ = sim.b.input(now, &d);
        }
        // Whatever was injected into b's receive stream is not the test's
        // business; drain it before the real transfer.
        while sim.b.recv().is_some() {}
        small_transfer(&mut sim, 22);
    }

    /// Well-formed segments with forged fields (any sn, una, ts, wnd, cmd)
    /// fed to the sender: no panic, RTT sane, the a->b stream still exact.
    #[test]
    fn forged_segments_to_the_sender_do_not_break_the_stream(
        forged in proptest::collection::vec(proptest::collection::vec(forged_segment(), 1..5), 1..10),
        inject_every in 1u64..20,
    ) {
        let mut sim = Sim::new(23, &KcpConfig::default(), LinkConfig::clean(10), LinkConfig::clean(10));
        let mut rng = rand::rngs::StdRng::seed_from_u64(24);
        let messages = make_messages(&mut rng, 40, 3000);
        let mut step = 0u64;
        let mut queue = forged.into_iter();
        transfer(&mut sim, &messages, 64 * 1024, 600_000, |sim| {
            step += 1;
            if step % inject_every != 0 {
                return;
            }
            if let Some(segments) = queue.next() {
                let mut wire = Vec::new();
                for (h, p) in &segments {
                    encode(h, p, &mut wire).expect("a short payload encodes");
                }
                let now = sim.now;
                sim.a.input(now, &wire).unwrap();
            }
        });
        prop_assert!(sim.a.srtt_ms().is_none_or(|s| s <= 60_000));
    }
}

/// Forged ACKs with a far-past (and far-future) ts and forged una/sn, aimed
/// at the sequence numbers actually in flight, mid-transfer over a lossy link.
#[test]
fn forged_acks_with_far_past_ts_keep_rtt_sane() {
    let mut sim = Sim::new(
        31,
        &KcpConfig::default(),
        LinkConfig::lossy(0.05),
        LinkConfig::lossy(0.05),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(32);
    let messages = make_messages(&mut rng, 500, 4000);
    let mut forge_rng = rand::rngs::StdRng::seed_from_u64(33);
    let mut max_srtt = 0;
    let mut forged_count = 0;
    transfer(&mut sim, &messages, 256 * 1024, 120_000, |sim| {
        let now = sim.now;
        let mut wire = Vec::new();
        for _ in 0..20 {
            let ts = match forge_rng.gen_range(0..4) {
                0 => now.wrapping_sub(0x7fff_0000), // far past: i32 wrap edge
                1 => now.wrapping_sub(59_000),      // old but under 60 s
                2 => now.wrapping_add(1_000_000),   // future
                _ => forge_rng.gen(),
            };
            let h = SegmentHeader {
                conv: CONV,
                cmd: Command::Ack,
                frg: 0,
                wnd: forge_rng.gen_range(1..=u16::MAX),
                ts,
                // Small sn hit real in-flight segments (the sim's sn start at 0).
                sn: if forge_rng.gen_bool(0.5) {
                    forge_rng.gen_range(0..20_000)
                } else {
                    forge_rng.gen()
                },
                // An una far ahead must not release unsent or unacked data.
                una: if forge_rng.gen_bool(0.5) {
                    0
                } else {
                    forge_rng.gen()
                },
                len: 0,
            };
            encode(&h, &[], &mut wire).expect("a short payload encodes");
        }
        sim.a.input(now, &wire).unwrap();
        forged_count += 1;
        if let Some(s) = sim.a.srtt_ms() {
            max_srtt = max_srtt.max(s);
        }
    });
    eprintln!(
        "{forged_count} forged datagrams, max srtt {max_srtt} ms, final {:?}",
        sim.a.srtt_ms()
    );
    // Real RTT is ~40 ms plus ACK delay; forged timestamps must not drag it up.
    assert!(max_srtt < 500, "srtt reached {max_srtt} ms");
}
