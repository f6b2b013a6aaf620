//! Plaintext and encrypted nodes meet: refused at once, with a reason.

use rand::Rng;

use super::world::*;
use crate::api::NodeEvent;
use crate::endpoint::Event;

/// `init` (plaintext if `init_plaintext`) adds a node of the other mode.
/// Was tests/encrypted.rs's `mode_mismatch`, which could only say "within
/// 3 s of wall clock": the refusal arrives one round trip after the first
/// attempt and is honoured one `Reject` grace later, exactly, and every
/// later attempt is refused the same way.
fn mode_mismatch(init_plaintext: bool) {
    let (i, r) = (addr(1), addr(2));
    let mut w = World::new(1, 10, 0.0);
    for (at, key, plaintext) in [(i, 1, init_plaintext), (r, 2, !init_plaintext)] {
        let seed = w.rng.gen();
        w.spawn_with(at, World::config(key, seed).with_plaintext(plaintext));
    }
    w.add(i, r);
    w.send(i, r, "never");
    w.run_until(10_000);
    let rejections: Vec<(u64, String)> = w.nodes[&i]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Node(NodeEvent::PeerRejected(p, why)) if *p == r => Some((*t, why.to_string())),
            _ => None,
        })
        .collect();
    // Honoured once no other answer came within the grace (see `rejects`).
    let grace = crate::endpoint::rejects::REJECT_GRACE_MS;
    assert_eq!(
        rejections.first().map(|r| r.0),
        Some(20 + grace),
        "one round trip and the grace"
    );
    let want = if init_plaintext {
        "requires encryption"
    } else {
        "plaintext only"
    };
    assert!(
        rejections.iter().all(|(_, why)| why.contains(want)),
        "{rejections:?}"
    );
    assert!(rejections.len() >= 2, "it keeps retrying: {rejections:?}");
    let si = w.state(i);
    let peer = si.peer(r).expect("peer");
    assert_eq!(peer.last_error.as_deref(), Some(&*rejections[0].1));
    assert!(peer.in_route_table);
    assert_eq!(si.counters.rejected_by_peer, rejections.len() as u64);
    assert_eq!(si.counters.handshake_timeouts, 0);
    // Every attempt was refused; the retransmissions sent during each
    // grace were refused too (and held as the same attempt's `Reject`).
    let mismatches = w.state(r).counters.encryption_mismatches;
    assert!(
        mismatches >= rejections.len() as u64,
        "{mismatches} < {}",
        rejections.len()
    );
    assert_eq!(si.counters.rejects_overruled, 0);
    assert!(w.bodies(i).is_empty() && w.bodies(r).is_empty());
    assert_eq!(w.nodes[&i].connected + w.nodes[&r].connected, 0);
}

#[test]
fn an_encrypted_node_adding_a_plaintext_node_is_refused_one_grace_after_the_round_trip() {
    mode_mismatch(false);
}

#[test]
fn a_plaintext_node_adding_an_encrypted_node_is_refused_one_grace_after_the_round_trip() {
    mode_mismatch(true);
}
