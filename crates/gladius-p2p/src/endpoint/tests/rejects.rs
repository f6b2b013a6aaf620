//! Unauthenticated `Reject`s: a forged one cannot end a handshake whose
//! peer answers; a genuine one still ends the attempt, one grace later.

use super::world::*;
use crate::api::NodeEvent;
use crate::crypto::packet::RejectPacket;
use crate::crypto::{self, Packet, RejectReason};
use crate::endpoint::rejects::REJECT_GRACE_MS;
use crate::endpoint::Event;

fn reject(reason: RejectReason) -> Vec<u8> {
    RejectPacket { reason }.encode().to_vec()
}

/// `at`'s `PeerRejected` events: (time, peer, reason).
fn rejections(w: &World, at: std::net::SocketAddr) -> Vec<(u64, std::net::SocketAddr, String)> {
    w.nodes[&at]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Node(NodeEvent::PeerRejected(p, why)) => Some((*t, *p, why.to_string())),
            _ => None,
        })
        .collect()
}

/// A forger at the peer's address sends a `Reject` before the peer's
/// `Response` arrives, and another once the handshake completed but the
/// peer has not sent anything yet: both are overruled by the peer's own
/// answers and the session completes.
#[test]
fn a_forged_reject_then_the_peers_response_completes_the_session() {
    let (i, r) = (addr(1), addr(2));
    let mut w = World::new(1, 10, 0.0);
    w.spawn(i, 1);
    w.spawn(r, 2);
    w.add(i, r);
    // Sent at 0, it arrives at 10, before the Response (at 20).
    w.inject(r, i, reject(RejectReason::Refused));
    w.run_until(21);
    // The Response has come; the responder's first sealed datagram comes
    // after our Finish reached it (at 30, back at 40).
    w.inject(r, i, reject(RejectReason::PlaintextOnly));
    w.run_until(2_000);
    assert!(w.connected(i, r) && w.connected(r, i));
    let c = w.state(i).counters;
    assert_eq!(c.rejected_by_peer, 0);
    assert_eq!(c.rejects_overruled, 2);
    assert!(rejections(&w, i).is_empty());
    w.send(i, r, "through");
    w.run_for(500);
    assert_eq!(w.bodies(r), vec!["through".to_owned()]);
}

/// A `Reject` and no other answer: the attempt ends with the refusal's
/// reason once the grace is over, and the `Init`'s retransmission went out
/// meanwhile (the forger cannot tell a silent peer from a refusing one,
/// and neither can we).
#[test]
fn a_genuine_reject_alone_ends_the_attempt_after_the_grace() {
    // Nobody listens at `r`: the test answers for it.
    let (i, r) = (addr(1), addr(2));
    let mut w = World::new(1, 10, 0.0);
    w.spawn(i, 1);
    w.add(i, r);
    w.run_until(15);
    let first_init = w.inboxes[&r].len();
    assert_eq!(first_init, 1);
    w.inject(r, i, reject(RejectReason::Refused));
    // It reaches `i` at 25: honoured at 25 + the grace, not before.
    w.run_until(25 + REJECT_GRACE_MS - 1);
    assert!(rejections(&w, i).is_empty());
    let inits = w.inboxes[&r]
        .iter()
        .filter(|(_, d)| matches!(crypto::parse(&d.bytes), Ok(Packet::Init(_))))
        .count();
    assert!(inits >= 2, "Init retransmitted during the grace: {inits}");
    w.run_until(25 + REJECT_GRACE_MS);
    let got = rejections(&w, i);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 25 + REJECT_GRACE_MS);
    assert_eq!(got[0].1, r);
    assert!(got[0].2.contains("refused"), "{got:?}");
    let st = w.state(i);
    assert_eq!(st.counters.rejected_by_peer, 1);
    assert_eq!(st.counters.rejects_overruled, 0);
    let peer = st.peer(r).expect("still in the route table");
    assert_eq!(peer.last_error.as_deref(), Some(got[0].2.as_str()));
    assert_eq!(peer.connection, crate::state::ConnectionState::Disconnected);
}

/// A `Reject` repeated at a steady rate in a peer's name, during the
/// handshake and after: the pair connects and stays connected, the
/// `Reject`s change nothing on the live session.
#[test]
fn forged_rejects_at_a_steady_rate_do_not_keep_a_pair_apart() {
    let (i, r) = (addr(1), addr(2));
    let mut w = World::new(7, 10, 0.0);
    w.spawn(i, 1);
    w.spawn(r, 2);
    w.add(i, r);
    for t in (0..3_000).step_by(20) {
        w.inject(r, i, reject(RejectReason::Refused));
        w.inject(i, r, reject(RejectReason::Refused));
        w.run_until(t + 20);
    }
    assert!(w.connected(i, r) && w.connected(r, i));
    assert_eq!(w.state(i).counters.rejected_by_peer, 0);
    assert!(rejections(&w, i).is_empty() && rejections(&w, r).is_empty());
    w.send(i, r, "still here");
    w.run_for(500);
    assert_eq!(w.bodies(r), vec!["still here".to_owned()]);
}
