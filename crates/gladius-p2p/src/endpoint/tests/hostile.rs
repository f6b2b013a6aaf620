//! What the network throws at an endpoint: floods, garbage, forgeries.

use std::time::Duration;

use rand::Rng;

use super::world::*;
use crate::api::NodeEvent;
use crate::endpoint::Event;
use crate::error::RequestError;
use crate::wire::Message;

/// Quick keepalives and a short idle timeout, so deaths show in seconds.
fn quick(key: u8, seed: u64) -> crate::Config {
    World::config(key, seed)
        .with_keepalive_interval(Duration::from_millis(1000))
        .with_idle_timeout(Duration::from_secs(4))
}

/// The regression test of the discovery swarm's isolated nodes: the seed
/// of a busy swarm always had datagrams waiting, and its driver reads the
/// socket before it looks at the clock, so its timers did not run for 16 s
/// (no keepalive, no retransmission, no timeout). Here a datagram reaches
/// the endpoint every millisecond for ten seconds, and everything its
/// timers do must still happen on time.
#[test]
fn a_flooded_endpoint_still_runs_its_timers() {
    let (s, q, d, attacker) = (addr(1), addr(2), addr(3), addr(666));
    let mut w = World::new(1, 10, 0.0);
    for (at, key) in [(s, 1), (q, 2), (d, 3)] {
        let seed = w.rng.gen();
        w.spawn_with(at, quick(key, seed));
    }
    // S reads one datagram per millisecond: the flood keeps it saturated.
    w.nodes.get_mut(&s).expect("S").read_cost = 1;
    w.add(s, q);
    w.add(s, d);
    w.run_until(2_000);
    assert!(w.connected(s, q) && w.connected(s, d));
    // D vanishes; S asks Q something Q never answers.
    w.nodes.remove(&d);
    let asked = w.now;
    let msg = Message::new("ask", "?").expect("message");
    let id = w
        .node(s)
        .request(asked, msg, q, Duration::from_millis(1_500))
        .expect("request");
    for t in asked..asked + 10_000 {
        w.inject(attacker, s, vec![0xff; 8]);
        w.run_until(t + 1);
    }
    let events = &w.nodes[&s].events;
    let timed_out = events.iter().find_map(|(t, e)| match e {
        Event::RequestDone {
            id: done,
            result: Err(RequestError::Timeout(_)),
        } if *done == id => Some(*t),
        _ => None,
    });
    assert_eq!(
        timed_out,
        Some(asked + 1_500),
        "the request times out at its deadline"
    );
    let dead = events.iter().find_map(|(t, e)| match e {
        Event::Node(NodeEvent::PeerDisconnected(p)) if *p == d => Some(*t),
        _ => None,
    });
    // D was last heard at most one keepalive interval before it vanished.
    let dead = dead.expect("the silent peer is found dead");
    assert!(
        (asked + 3_000..=asked + 4_000).contains(&dead),
        "dead at {dead}"
    );
    assert!(w.connected(s, q) && w.connected(q, s), "keepalives kept Q");
    let c = w.state(s).counters;
    assert!(c.malformed_datagrams >= 9_000, "{c:?}");
}
