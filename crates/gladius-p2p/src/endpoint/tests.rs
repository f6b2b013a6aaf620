//! Unit tests of the endpoint: endpoints wired together through an
//! in-memory network in virtual time — no sockets, no clock, one seed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{dedup_in_order, Endpoint, Event};
use crate::api::{NodeEvent, Origin, PeerReason, Targets};
use crate::crypto::Identity;
use crate::state::ConnectionState;
use crate::wire::Message;
use crate::Config;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// One endpoint of a [`World`] and what it told its driver.
struct Node {
    endpoint: Endpoint,
    /// The address it sends from and receives at (an on-path impostor
    /// shares another node's).
    addr: SocketAddr,
    messages: Vec<(SocketAddr, Option<crate::PublicKey>, String)>,
    connected: usize,
    /// `connect_failed` events: the peer and the reason.
    failures: Vec<(SocketAddr, String)>,
    /// `peer_disconnected` and `node_deleted` events with their reasons.
    endings: Vec<(&'static str, SocketAddr, PeerReason)>,
}

/// Endpoints exchanging datagrams with a fixed one-way delay and seeded
/// loss, in virtual milliseconds.
struct World {
    now: u64,
    nodes: BTreeMap<SocketAddr, Node>,
    /// (delivery time, sequence) -> (from, to, bytes)
    in_flight: BTreeMap<(u64, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    delay: u64,
    loss: f64,
    rng: StdRng,
    /// Every datagram delivered: (time, from, to, length).
    trace: Vec<(u64, SocketAddr, SocketAddr, usize)>,
}

impl World {
    fn new(seed: u64, delay: u64, loss: f64) -> Self {
        Self {
            now: 0,
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            delay,
            loss,
            rng: StdRng::seed_from_u64(seed),
            trace: Vec::new(),
        }
    }

    fn config(key: u8, seed: u64) -> Config {
        Config::default()
            .with_identity(Identity::from_private_bytes([key; 32]))
            .with_rng_seed(seed)
    }

    /// A listening endpoint at `at` with the identity `key`.
    fn spawn(&mut self, at: SocketAddr, key: u8) {
        let seed = self.rng.gen();
        self.spawn_with(at, Self::config(key, seed));
    }

    /// An on-path attacker with identity `key` that sends from and
    /// receives at `claims`, another node's address (`slot` only names it
    /// in the world).
    fn spawn_impostor(&mut self, slot: SocketAddr, claims: SocketAddr, key: u8) {
        let seed = self.rng.gen();
        self.spawn_with(slot, Self::config(key, seed));
        let node = self.nodes.get_mut(&slot).expect("impostor");
        node.addr = claims;
    }

    fn spawn_with(&mut self, at: SocketAddr, config: Config) {
        let seed = self.rng.gen();
        let mut endpoint = Endpoint::new(Arc::new(config), seed);
        endpoint.listen(self.now, at).expect("listen");
        let node = Node {
            endpoint,
            addr: at,
            messages: Vec::new(),
            connected: 0,
            failures: Vec::new(),
            endings: Vec::new(),
        };
        self.nodes.insert(at, node);
    }

    fn node(&mut self, at: SocketAddr) -> &mut Endpoint {
        &mut self.nodes.get_mut(&at).expect("node").endpoint
    }

    /// Drain every node's transmits and events into the network and the
    /// nodes' records.
    fn collect(&mut self) {
        let now = self.now;
        for node in self.nodes.values_mut() {
            while let Some(t) = node.endpoint.poll_transmit(now, 8) {
                let size = t.segment_size.max(1);
                for datagram in t.payload.chunks(size) {
                    self.seq += 1;
                    if self.rng.gen_bool(self.loss) {
                        continue;
                    }
                    self.in_flight.insert(
                        (now + self.delay, self.seq),
                        (node.addr, t.to, datagram.to_vec()),
                    );
                }
                node.endpoint.recycle(t);
            }
            while let Some(event) = node.endpoint.poll_event() {
                match event {
                    Event::Node(NodeEvent::Message(m)) => node.messages.push((
                        m.peer(),
                        m.public_key(),
                        String::from_utf8_lossy(m.message().body()).into_owned(),
                    )),
                    Event::Node(NodeEvent::PeerConnected(_)) => node.connected += 1,
                    Event::Node(NodeEvent::ConnectFailed(a, why)) => {
                        node.failures.push((a, why.to_string()))
                    }
                    Event::Node(NodeEvent::PeerDisconnected(a, why)) => {
                        node.endings.push(("disconnected", a, why))
                    }
                    Event::Node(NodeEvent::NodeDeleted(a, why)) => {
                        node.endings.push(("deleted", a, why))
                    }
                    _ => {}
                }
            }
        }
    }

    /// Run the world until `until` (virtual ms).
    fn run_until(&mut self, until: u64) {
        loop {
            self.collect();
            let next_datagram = self.in_flight.keys().next().map(|(t, _)| *t);
            let next_timer = self
                .nodes
                .values()
                .filter_map(|n| n.endpoint.poll_timeout())
                .min();
            let Some(next) = [next_datagram, next_timer].into_iter().flatten().min() else {
                self.now = until;
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (from, to, bytes) = entry.remove();
                self.trace.push((now, from, to, bytes.len()));
                for node in self.nodes.values_mut().filter(|n| n.addr == to) {
                    node.endpoint.handle_datagram(now, from, &bytes);
                }
            }
            for node in self.nodes.values_mut() {
                if node.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                    node.endpoint.handle_timeout(now);
                }
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, body: &str) {
        let now = self.now;
        let msg = Message::new("test", body.to_owned()).expect("message");
        let report = self
            .node(from)
            .send(now, msg, Targets::These(vec![to]))
            .expect("send");
        assert!(report.all_queued(), "{report:?}");
    }

    fn bodies(&self, at: SocketAddr) -> Vec<String> {
        self.nodes[&at]
            .messages
            .iter()
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

#[test]
fn two_endpoints_handshake_and_deliver_everything_in_order_over_a_lossy_link() {
    let mut w = World::new(7, 20, 0.2);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    for i in 0..200 {
        w.send(addr(1), addr(2), &format!("m{i}"));
    }
    w.run_until(20_000);
    let want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(w.bodies(addr(2)), want, "every message once, in order");
    let key1 = Identity::from_private_bytes([1; 32]).public_key();
    assert!(w.nodes[&addr(2)]
        .messages
        .iter()
        .all(|(peer, key, _)| *peer == addr(1) && *key == Some(key1)));
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    assert_eq!(peer.connection, ConnectionState::Connected);
    assert_eq!(peer.paths, vec![addr(2)]);
    assert_eq!(peer.active_path, Some(addr(2)));
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let run = |seed| {
        let mut w = World::new(seed, 15, 0.1);
        for i in 1..=4u16 {
            w.spawn(addr(i), i as u8);
        }
        for i in 2..=4u16 {
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(1), None, Origin::App)
                .expect("add");
            w.send(addr(i), addr(1), "hello");
        }
        w.run_until(10_000);
        assert_eq!(w.bodies(addr(1)).len(), 3);
        w.trace
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn a_peer_that_returns_on_a_new_port_with_its_key_keeps_its_entry() {
    let mut w = World::new(11, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    w.run_until(2_000);
    assert_eq!(w.nodes[&addr(1)].connected, 1);
    // Node 2 restarts on another port with the same key, and dials node 1.
    w.nodes.remove(&addr(2));
    w.spawn(addr(3), 2);
    let now = w.now;
    w.node(addr(3))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(3), addr(1), "back");
    w.run_until(6_000);
    assert_eq!(w.bodies(addr(1)), vec!["back".to_owned()]);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    assert_eq!(
        state.peers.len(),
        1,
        "one peer, two paths: {:?}",
        state.peers
    );
    let peer = &state.peers[0];
    assert!(peer.in_route_table && peer.writable, "{peer:?}");
    assert_eq!(peer.paths, vec![addr(2), addr(3)]);
    assert_eq!(peer.active_path, Some(addr(3)));
    assert_eq!(peer.connection, ConnectionState::Connected);
    w.nodes[&addr(1)].endpoint.peers.check_indices();
}

#[test]
fn a_new_key_at_a_live_session_is_refused_while_the_session_answers() {
    let mut w = World::new(5, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    w.run_until(2_000);
    // An on-path attacker with another key at node 2's address, while
    // node 2 is alive: node 1 probes node 2's session, node 2 answers, the
    // attacker is refused every time it tries.
    w.spawn_impostor(addr(200), addr(2), 9);
    let now = w.now;
    w.node(addr(200))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(200), addr(1), "impostor");
    w.run_until(15_000);
    assert!(w.bodies(addr(1)).is_empty(), "nothing from the impostor");
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    assert!(state.counters.key_conflicts >= 2, "{:?}", state.counters);
    assert_eq!(state.counters.key_changes, 0);
    let peer = state.peer(addr(2)).expect("peer");
    let key2 = Identity::from_private_bytes([2; 32]).public_key();
    assert_eq!(peer.public_key, Some(key2));
    assert_eq!(peer.connection, ConnectionState::Connected);
    w.send(addr(2), addr(1), "still me");
    w.run_until(16_000);
    assert_eq!(w.bodies(addr(1)), vec!["still me".to_owned()]);
}

#[test]
fn a_restarted_peer_with_a_new_key_takes_its_entry_over_within_a_probe() {
    let mut w = World::new(5, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), None, Origin::App)
        .expect("add");
    w.run_until(2_000);
    // Node 2 restarts with a fresh key on the same address, long before
    // its old session would time out (idle timeout 20 s).
    w.nodes.remove(&addr(2));
    w.spawn(addr(2), 9);
    let restarted = w.now;
    w.node(addr(2))
        .add(restarted, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(2), addr(1), "back");
    let mut t = restarted;
    while w.bodies(addr(1)).is_empty() && t < restarted + 10_000 {
        t += 10;
        w.run_until(t);
    }
    assert_eq!(w.bodies(addr(1)), vec!["back".to_owned()]);
    // One probe (1 s) plus a few round trips of 20 ms.
    assert!(t - restarted <= 1_200, "back after {} ms", t - restarted);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    let new_key = Identity::from_private_bytes([9; 32]).public_key();
    assert_eq!(peer.public_key, Some(new_key));
    assert!(peer.in_route_table && peer.writable);
    assert_eq!(state.counters.key_changes, 1);
    assert_eq!(
        w.nodes[&addr(1)].endings,
        vec![("disconnected", addr(2), PeerReason::KeyChanged)],
        "the old session ends saying why"
    );
    w.nodes[&addr(1)].endpoint.peers.check_indices();
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
fn a_pinned_peer_never_changes_key() {
    let mut w = World::new(6, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 9);
    let key2 = Identity::from_private_bytes([2; 32]).public_key();
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(2), Some(key2), Origin::App)
        .expect("add");
    w.run_until(5_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let peer = state.peer(addr(2)).expect("peer");
    assert_ne!(peer.connection, ConnectionState::Connected);
    assert_eq!(peer.public_key, None);
    assert!(state.counters.pin_mismatches >= 1);
}

#[test]
fn an_address_added_before_its_key_merges_with_the_peer_that_proves_it() {
    // Node 2 connects to node 1 first (node 1 knows it by key at port 2);
    // then node 1's user adds node 2 under another address that leads to
    // it (e.g. a second interface). The handshake there proves the same
    // key: one peer with two paths, in the route table.
    let mut w = World::new(8, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    let now = w.now;
    w.node(addr(2))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.send(addr(2), addr(1), "first");
    w.run_until(2_000);
    // The second address: node 2 again, moved (same key, new port).
    let moved = w.nodes.remove(&addr(2)).expect("node 2");
    w.nodes.insert(
        addr(4),
        Node {
            addr: addr(4),
            ..moved
        },
    );
    let now = w.now;
    w.node(addr(1))
        .add(now, addr(4), None, Origin::App)
        .expect("add");
    w.run_until(4_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    w.nodes[&addr(1)].endpoint.peers.check_indices();
    let key2 = Identity::from_private_bytes([2; 32]).public_key();
    let with_key: Vec<_> = state
        .peers
        .iter()
        .filter(|p| p.public_key == Some(key2))
        .collect();
    assert_eq!(with_key.len(), 1, "{:?}", state.peers);
    assert!(with_key[0].in_route_table);
    assert_eq!(state.peers.len(), 1, "{:?}", state.peers);
}

#[test]
fn requests_time_out_in_virtual_time() {
    let mut w = World::new(9, 10, 0.0);
    w.spawn(addr(1), 1);
    let now = w.now;
    let msg = Message::new("ask", "?").expect("message");
    let id = w
        .node(addr(1))
        .request(now, msg, addr(7), Duration::from_millis(1_500))
        .expect("queued");
    let mut answer = None;
    let mut t = 0;
    while answer.is_none() && t < 10_000 {
        t += 100;
        w.node(addr(1)).handle_timeout(t);
        while let Some(e) = w.node(addr(1)).poll_event() {
            if let Event::RequestDone { id: done, result } = e {
                assert_eq!(done, id);
                answer = Some((t, result));
            }
        }
    }
    let (t, result) = answer.expect("an answer");
    assert_eq!(t, 1_500, "answered at its deadline, exactly");
    assert!(result.is_err());
}

#[test]
fn dedup_keeps_first_occurrences_in_order() {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    for n in [3u16, 40] {
        let mut v: Vec<_> = (0..n).chain(0..n).chain([1, 0]).map(a).collect();
        dedup_in_order(&mut v);
        assert_eq!(v, (0..n).map(a).collect::<Vec<_>>());
    }
}

#[test]
fn a_swarm_that_dials_in_every_direction_at_once_connects_every_pair() {
    // 40 endpoints all dial node 1 at once, then each dials 5 random others
    // at random moments (many simultaneous opens, a loaded seed under the
    // key-exchange budget, 5% loss). Every pair that one side added must
    // end up connected, and a message sent after that must arrive.
    for seed in 0..4u64 {
        let mut w = World::new(seed, 5, 0.05);
        let n = 40u16;
        for i in 1..=n {
            w.spawn(addr(i), i as u8);
        }
        for i in 2..=n {
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(1), None, Origin::App)
                .expect("add");
        }
        let mut pairs = Vec::new();
        for i in 2..=n {
            for _ in 0..5 {
                let j = w.rng.gen_range(1..=n);
                if j != i {
                    pairs.push((i, j));
                }
            }
        }
        let mut t = 0;
        for &(i, j) in &pairs {
            t += w.rng.gen_range(0..20);
            w.run_until(t);
            let now = w.now;
            w.node(addr(i))
                .add(now, addr(j), None, Origin::App)
                .expect("add");
        }
        w.run_until(t + 30_000);
        for i in 2..=n {
            for j in std::iter::once(1).chain(pairs.iter().filter(|p| p.0 == i).map(|p| p.1)) {
                let st = w.nodes[&addr(i)].endpoint.state(w.now);
                let p = st.peer(addr(j)).expect("peer");
                assert_eq!(
                    p.connection,
                    ConnectionState::Connected,
                    "seed {seed}: {i} -> {j}: {p:?}\n{:?}",
                    st.counters
                );
            }
        }
        for i in 2..=n {
            w.send(addr(i), addr(1), &format!("from {i}"));
        }
        w.run_until(t + 40_000);
        assert_eq!(w.bodies(addr(1)).len(), usize::from(n - 1), "seed {seed}");
    }
}

#[test]
fn a_peer_added_by_key_is_dialled_at_its_hint_and_must_prove_the_key() {
    let mut w = World::new(12, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(2), 2);
    w.spawn(addr(3), 3);
    let key2 = Identity::from_private_bytes([2; 32]).public_key();
    let key3 = Identity::from_private_bytes([3; 32]).public_key();
    let now = w.now;
    let unknown = Identity::from_private_bytes([42; 32]).public_key();
    assert!(matches!(
        w.node(addr(1)).add_key(now, unknown, &[], Origin::App),
        Err(crate::NetworkError::NoPath(_))
    ));
    // Right key at the hint: connected, in the route table, pinned.
    assert_eq!(
        w.node(addr(1))
            .add_key(now, key2, &[addr(2)], Origin::App)
            .ok(),
        Some(addr(2))
    );
    // Wrong key at the hint (node 3 lives there): never connected.
    assert_eq!(
        w.node(addr(1))
            .add_key(now, unknown, &[addr(3)], Origin::App)
            .ok(),
        Some(addr(3))
    );
    w.run_until(5_000);
    let state = w.nodes[&addr(1)].endpoint.state(w.now);
    let p2 = state.peer(addr(2)).expect("peer 2");
    assert_eq!(p2.connection, ConnectionState::Connected);
    assert_eq!((p2.public_key, p2.pinned_key), (Some(key2), Some(key2)));
    assert!(p2.in_route_table);
    let p3 = state.peer(addr(3)).expect("peer 3");
    assert_ne!(p3.connection, ConnectionState::Connected);
    assert_ne!(p3.public_key, Some(key3));
    assert!(state.counters.pin_mismatches >= 1);
    // Known by key now: no hint needed, and it is the same peer.
    let now = w.now;
    assert_eq!(
        w.node(addr(1)).add_key(now, key2, &[], Origin::App).ok(),
        Some(addr(2))
    );
    assert_eq!(w.nodes[&addr(1)].endpoint.state(w.now).peers.len(), 2);
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

/// Bytes each way between two addresses in a world's trace.
fn bytes_between(w: &World, from: SocketAddr, to: SocketAddr) -> usize {
    w.trace
        .iter()
        .filter(|(_, f, t, _)| *f == from && *t == to)
        .map(|(_, _, _, len)| len)
        .sum()
}

#[test]
fn a_spoofed_opener_draws_at_most_three_times_its_bytes() {
    // Plaintext: one session opener from an address that never answers
    // (spoofed) must not earn a stream of retransmissions and keepalives.
    let mut w = World::new(15, 10, 0.0);
    let plaintext = |seed| Config::default().with_plaintext(true).with_rng_seed(seed);
    w.spawn_with(addr(1), plaintext(1));
    w.spawn_with(addr(66), plaintext(2));
    let now = w.now;
    w.node(addr(66))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    w.collect();
    w.nodes.remove(&addr(66)); // the victim never answers
    w.run_until(60_000);
    let (sent, got) = (
        bytes_between(&w, addr(66), addr(1)),
        bytes_between(&w, addr(1), addr(66)),
    );
    assert!(sent > 0);
    assert!(got <= 3 * sent, "{got} bytes back for {sent}");
    let c = w.nodes[&addr(1)].endpoint.state(w.now).counters;
    assert!(c.amplification_drops > 0, "{c:?}");

    // Encrypted: an Init replayed from a spoofed address draws Responses
    // worth at most three times the Inits, and a flood of them far less.
    let mut w = World::new(16, 10, 0.0);
    w.spawn(addr(1), 1);
    w.spawn(addr(66), 66);
    let now = w.now;
    w.node(addr(66))
        .add(now, addr(1), None, Origin::App)
        .expect("add");
    let init = w
        .node(addr(66))
        .poll_transmit(now, 8)
        .expect("init")
        .payload;
    w.nodes.remove(&addr(66));
    // The same Init every 10 ms for a second.
    for _ in 0..100 {
        let now = w.now;
        w.node(addr(1)).handle_datagram(now, addr(66), &init);
        w.collect();
        w.run_until(now + 10);
    }
    w.run_until(10_000);
    let got = bytes_between(&w, addr(1), addr(66));
    let sent = 100 * init.len();
    assert!(got <= 3 * sent, "{got} bytes back for {sent}");
    assert!(
        got < sent,
        "duplicates are throttled: {got} bytes for {sent}"
    );
}
