//! Sessions begin and end: graceful close, deletion, reconnection.

use std::time::Duration;

use rand::Rng;

use super::world::*;
use crate::api::NodeEvent;
use crate::api::{Origin, PeerReason};
use crate::endpoint::Event;
use crate::state::ConnectionState;
use crate::wire::Message;

/// When `at` heard `PeerDisconnected(peer)` first.
fn disconnected_at(w: &World, at: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u64> {
    w.nodes[&at].events.iter().find_map(|(t, e)| match e {
        Event::Node(NodeEvent::PeerDisconnected(p, _)) if *p == peer => Some(*t),
        _ => None,
    })
}

/// Was tests/swarm.rs's "within 5 s of wall clock" (idle timeout 20 s):
/// the close frame tells the peer one way later, exactly, and the closing
/// node is done once the frame is acknowledged, a round trip after.
#[test]
fn close_tells_the_peer_one_way_later_and_ends_when_acknowledged() {
    let (a, b) = (addr(1), addr(2));
    let mut w = World::new(1, 10, 0.0);
    w.spawn(a, 1);
    let seed = w.rng.gen();
    let slow_idle = World::config(2, seed)
        .with_keepalive_interval(Duration::from_secs(5))
        .with_idle_timeout(Duration::from_secs(20));
    w.spawn_with(b, slow_idle);
    w.add(a, b);
    w.run_until(1_000);
    assert!(w.connected(a, b) && w.connected(b, a));
    let t0 = w.now;
    w.node(a).begin_close(t0);
    assert!(!w.nodes[&a].endpoint.is_closed(t0));
    w.run_until(t0 + 100);
    assert_eq!(disconnected_at(&w, b, a), Some(t0 + 10), "one way");
    assert!(w.nodes[&a].endpoint.is_closed(w.now), "acknowledged");
    w.run_until(t0 + 1_000);
    assert!(w.peer(b, a).is_none(), "b forgets a peer it never added");
    // Closed: every command fails.
    let now = w.now;
    assert!(matches!(
        w.node(a).add(now, b, None, Origin::App),
        Err(crate::NetworkError::Closed)
    ));
}

#[test]
fn deletes_and_disconnects_say_why_and_requests_to_the_unreachable_fail_fast() {
    let mut w = World::new(14, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    w.node(addr(2))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.run_until(2_000);
    // Node 2's application deletes node 1: node 2 says deleted_by_user and
    // closed_locally, node 1 hears closed_by_peer.
    let now = w.now;
    w.node(addr(2)).delete(now, addr(1), Origin::App);
    w.run_until(4_000);
    let mut two = w.nodes[&addr(2)].endings.clone();
    two.sort_by_key(|e| e.0);
    assert_eq!(
        two,
        vec![
            ("deleted", addr(1), PeerReason::DeletedByUser),
            ("disconnected", addr(1), PeerReason::ClosedLocally),
        ]
    );
    assert_eq!(
        w.nodes[&addr(1)].endings.first(),
        Some(&("disconnected", addr(2), PeerReason::ClosedByPeer))
    );
    // A request to an address where nothing answers ends with
    // ConnectFailed when the handshake gives up, long before its timeout.
    let now = w.now;
    let msg = Message::new("ask", "?").expect("message");
    let id = w
        .node(addr(1))
        .request(now, msg, addr(9), Duration::from_secs(3_600))
        .expect("queued");
    let mut answer = None;
    let mut t = now;
    while answer.is_none() && t < now + 120_000 {
        t += 100;
        w.node(addr(1)).handle_timeout(t);
        while let Some(e) = w.node(addr(1)).poll_event() {
            if let Event::RequestDone { id: done, result } = e {
                assert_eq!(done, id);
                answer = Some(result);
            }
        }
        while let Some(tx) = w.node(addr(1)).poll_transmit(t, 8) {
            w.node(addr(1)).recycle(tx);
        }
    }
    let result = answer.expect("answered well before the hour");
    assert!(
        matches!(result, Err(crate::RequestError::ConnectFailed(_))),
        "{result:?}"
    );
}

#[test]
fn a_plugin_demotes_a_peer_the_application_added_and_it_returns_when_it_answers() {
    let mut w = World::new(13, 10, 0.0);
    w.spawn(addr(1), 1);
    // Node 1 starts before its seed: the attempts fail (connect_failed,
    // reasons told) and go on with backoff.
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    w.run_until(12_000);
    let failures = &w.nodes[&addr(1)].failures;
    assert!(!failures.is_empty());
    for (a, reason) in failures {
        assert_eq!(*a, addr(2));
        assert!(reason.contains("timed out"), "{reason}");
    }
    // A plugin judges it dead and deletes it: it stays, demoted.
    let now = w.now;
    w.node(addr(1))
        .delete(now, addr(2), Origin::Plugin("latency".into()));
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("still in the table");
    assert!(peer.in_route_table && !peer.writable);
    assert_eq!(state.counters.demotions, 1);
    // The seed comes up: the retries reach it and it is writable again.
    w.spawn(addr(2), 2);
    w.run_until(60_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    assert_eq!(peer.connection, ConnectionState::Connected);
    assert!(peer.writable, "{peer:?}");
    // The application's delete removes it; a plugin's delete of a peer a
    // plugin added removes it too.
    let now = w.now;
    w.node(addr(1)).delete(now, addr(2), Origin::App);
    assert!(!w.nodes[&addr(1)]
        .endpoint
        .state(w.now)
        .peer(addr(2))
        .is_some_and(|p| p.in_route_table));
    w.spawn(addr(3), 3);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(3), None, Origin::Plugin("latency".into()))
        .expect("add");
    w.node(addr(1))
        .delete(now, addr(3), Origin::Plugin("latency".into()));
    assert!(!w.nodes[&addr(1)]
        .endpoint
        .state(w.now)
        .peer(addr(3))
        .is_some_and(|p| p.in_route_table));
}

#[test]
fn messages_queued_to_a_peer_that_never_answers_are_reported_abandoned() {
    // Three messages to an address where nothing answers (outside the
    // route table): once the handshake gives up, the node forgets the
    // peer and says how many messages were never sent, naming the peer.
    let mut w = World::new(17, 10, 0.0);
    w.spawn(addr(1), 1);
    for i in 0..3 {
        let now = w.now;
        let msg = Message::new("t", format!("m{i}")).expect("message");
        let report = w
            .node(addr(1))
            .send(now, msg, crate::api::Targets::These(vec![addr(9)]))
            .expect("send");
        assert!(report.all_queued(), "{report:?}");
    }
    w.run_until(60_000);
    let abandoned: Vec<(std::net::SocketAddr, u64)> = w.nodes[&addr(1)]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Node(NodeEvent::Abandoned(a, n)) => Some((*a, *n)),
            _ => None,
        })
        .collect();
    assert_eq!(abandoned, vec![(addr(9), 3)]);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    assert_eq!(state.counters.abandoned_frames, 3);
    assert!(state.peer(addr(9)).is_none(), "forgotten");
}
