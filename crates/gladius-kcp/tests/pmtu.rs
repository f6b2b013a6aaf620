//! Datagram-size probing over the in-memory simulator, with links that
//! drop every datagram above a size (a path MTU, an old peer's small
//! receive buffer, or a black hole appearing mid-transfer): the size found,
//! the fallbacks, and exactly-once in-order delivery throughout.

mod common;

use common::*;
use gladius_kcp::KcpConfig;
use rand::SeedableRng;

const MTU: usize = 1400;
/// The most 1400-byte segments below 64 KiB: 46.
const MAX: usize = 46 * MTU;

/// A sim whose sender `a` probes up to `MAX`.
fn sim(seed: u64, loss: f64) -> Sim {
    let config = KcpConfig::default();
    let link = LinkConfig {
        loss,
        ..LinkConfig::clean(10)
    };
    let mut sim = Sim::new(seed, &config, link, link);
    sim.a.set_max_datagram(MAX);
    sim.a_max = MAX;
    sim
}

/// 400 messages of up to 64 KiB: about 13 MB of bulk data.
fn bulk(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    make_messages(&mut rng, 400, 65_536)
}

#[test]
fn the_search_climbs_to_the_largest_size_a_clean_path_carries() {
    let mut sim = sim(1, 0.0);
    assert_eq!(sim.a.datagram_limit(), MTU, "starts at the base size");
    transfer(&mut sim, &bulk(1), 1 << 20, 600_000, |_| {});
    let stats = sim.a.stats();
    assert_eq!(sim.a.datagram_limit(), MAX);
    assert_eq!(sim.ab.largest, MAX);
    // 3, 6, 12, 24 and 46 segments, each confirmed at the first try.
    assert_eq!(stats.mtu_probes_confirmed, 5);
    assert_eq!(stats.mtu_probes_lost, 0);
    assert_eq!(stats.timeout_retransmits + stats.fast_retransmits, 0);
}

#[test]
fn the_search_stops_below_the_path_mtu() {
    let mut sim = sim(2, 0.0);
    // A 9000-byte jumbo path: 6 segments (8400 bytes) pass, 12 do not.
    sim.ab.max_size = Some(9000);
    transfer(&mut sim, &bulk(2), 1 << 20, 600_000, |_| {});
    let stats = sim.a.stats();
    assert_eq!(sim.a.datagram_limit(), 6 * MTU);
    assert_eq!(stats.mtu_probes_confirmed, 2);
    // Three lost probes of 12 segments rule that size out: no more tries.
    assert_eq!(stats.mtu_probes_lost, 3);
    assert_eq!(sim.ab.too_big, 3);
    assert_eq!(stats.mtu_black_holes, 0);
}

#[test]
fn a_peer_that_cannot_read_larger_datagrams_never_confirms_one() {
    let mut sim = sim(3, 0.0);
    // An implementation reading into 1400-byte buffers: larger datagrams
    // are truncated and dropped, so the probes' data is never acknowledged.
    sim.ab.max_size = Some(MTU);
    transfer(&mut sim, &bulk(3), 1 << 20, 600_000, |_| {});
    let stats = sim.a.stats();
    assert_eq!(sim.a.datagram_limit(), MTU);
    assert_eq!(stats.mtu_probes_confirmed, 0);
    assert_eq!(stats.mtu_probes_lost, 3);
    assert_eq!(sim.ab.too_big, 3);
}

#[test]
fn a_black_hole_mid_transfer_falls_back_to_the_base_size() {
    let mut sim = sim(4, 0.0);
    let mut hole_at = None;
    transfer(&mut sim, &bulk(4), 1 << 20, 600_000, |sim| {
        // Once the largest size is in use, the path stops carrying
        // anything above 1400 bytes (a route change, a middlebox).
        if hole_at.is_none() && sim.a.datagram_limit() == MAX {
            hole_at = Some(sim.elapsed);
            sim.ab.max_size = Some(MTU);
        }
    });
    assert!(hole_at.is_some(), "the search reached the largest size");
    let stats = sim.a.stats();
    assert_eq!(stats.mtu_black_holes, 1);
    assert_eq!(sim.a.datagram_limit(), MTU);
    assert!(!sim.a.is_dead());
}

#[test]
fn the_search_survives_random_loss() {
    // 2 % loss both ways: every message still arrives once, in order, and
    // the size still grows above the base.
    let mut sim = sim(5, 0.02);
    transfer(&mut sim, &bulk(5), 1 << 20, 600_000, |_| {});
    assert!(sim.a.stats().mtu_probes_confirmed >= 1);
    assert!(sim.ab.largest > MTU);
}

#[test]
fn a_path_change_restarts_at_the_base_size() {
    let mut sim = sim(6, 0.0);
    let mut reset = false;
    let mut after_reset = Vec::new();
    transfer(&mut sim, &bulk(6), 1 << 20, 600_000, |sim| {
        if !reset && sim.a.datagram_limit() == MAX {
            reset = true;
            sim.a.reset_path();
            after_reset.push(sim.a.datagram_limit());
        } else if reset {
            after_reset.push(sim.a.datagram_limit());
        }
    });
    assert!(reset);
    assert_eq!(after_reset.first(), Some(&MTU));
    // It searched again and found the largest size again.
    assert_eq!(sim.a.datagram_limit(), MAX);
    assert_eq!(sim.a.stats().mtu_probes_confirmed, 10);
}

#[test]
fn probing_is_off_by_default() {
    let config = KcpConfig::default();
    let mut sim = Sim::new(7, &config, LinkConfig::clean(10), LinkConfig::clean(10));
    transfer(&mut sim, &bulk(7), 1 << 20, 600_000, |_| {});
    assert_eq!(sim.ab.largest, MTU);
    assert_eq!(sim.a.stats().mtu_probes_confirmed, 0);
}
