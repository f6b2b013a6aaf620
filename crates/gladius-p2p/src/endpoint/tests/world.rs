//! The test world: endpoints exchanging datagrams through an in-memory
//! network in virtual milliseconds, every random choice from one seed.
//!
//! The network delays each datagram by a base delay plus a uniform jitter
//! (so datagrams overtake each other), loses and duplicates them at seeded
//! rates, and can drop whatever a filter picks (a partition, one packet
//! kind). Each node's driver works like the real one (see [`Node::wake`]):
//! it reads its queue of arrived datagrams before it looks at its timers.
//! Reading can cost virtual time (`read_cost`), so a node can fall behind
//! a flood, and a node can be stalled for a while, like a driver starved
//! of CPU on a loaded machine: it handles nothing until the stall ends,
//! then everything that arrived meanwhile, in arrival order, with its
//! timers late. Datagrams to an address where no endpoint listens are
//! kept in that address's inbox, so a test can play a raw attacker there.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::{NodeEvent, Origin, PeerReason, Targets};
use crate::crypto::{Identity, PublicKey};
use crate::endpoint::{Endpoint, Event};
use crate::state::{ConnectionState, NetworkState, PeerState};
use crate::wire::Message;
use crate::Config;

/// Address `10.0.0.1:port`.
pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// The public key of [`World::spawn`]'s identity `key`.
pub(super) fn key(key: u8) -> PublicKey {
    Identity::from_private_bytes([key; 32]).public_key()
}

/// One datagram in flight.
#[derive(Debug, Clone)]
pub(super) struct Datagram {
    pub(super) from: SocketAddr,
    pub(super) to: SocketAddr,
    pub(super) bytes: Vec<u8>,
}

/// Decides per datagram (at send time) whether the network delivers it.
pub(super) type Filter = Box<dyn FnMut(u64, &Datagram) -> bool>;

/// One endpoint of a [`World`] and what it told its driver.
pub(super) struct Node {
    pub(super) endpoint: Endpoint,
    /// The address it sends from and receives at (an on-path impostor
    /// shares another node's).
    pub(super) addr: SocketAddr,
    /// Every message received: (peer, its key, body).
    pub(super) messages: Vec<(SocketAddr, Option<PublicKey>, String)>,
    /// `PeerConnected` events so far.
    pub(super) connected: usize,
    /// `connect_failed` events: the peer and the reason.
    pub(super) failures: Vec<(SocketAddr, String)>,
    /// `peer_disconnected` and `node_deleted` events with their reasons.
    pub(super) endings: Vec<(&'static str, SocketAddr, PeerReason)>,
    /// Every event, with the virtual time it came out.
    pub(super) events: Vec<(u64, Event)>,
    /// Virtual CPU time one datagram costs this node's driver, ms: with
    /// more arriving than it can read, its queue never empties (0: reading
    /// is free, the queue empties at every wake-up).
    pub(super) read_cost: u64,
    /// Busy (reading, or stalled) until then: it handles nothing before.
    busy_until: u64,
    /// Datagrams that arrived and were not read yet, in arrival order (its
    /// socket's receive queue).
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Node {
    /// When this node next needs the world's attention.
    fn next_due(&self) -> Option<u64> {
        let own = if self.queue.is_empty() {
            self.endpoint.poll_timeout()
        } else {
            Some(self.busy_until)
        };
        own.map(|t| t.max(self.busy_until))
    }

    /// One wake-up of this node's driver at `now`, which works like the
    /// real one: its `select!` is biased towards the socket, so the timers
    /// run only in a wake-up that found no datagram waiting; then it
    /// flushes. Returns what it sent.
    fn wake(
        &mut self,
        now: u64,
        trace: &mut Vec<(u64, SocketAddr, SocketAddr, usize)>,
    ) -> Vec<Datagram> {
        let read = if self.read_cost == 0 {
            self.queue.len()
        } else {
            self.queue.len().min(1)
        };
        if read > 0 {
            for (from, bytes) in self.queue.drain(..read) {
                trace.push((now, from, self.addr, bytes.len()));
                self.endpoint.handle_datagram(now, from, &bytes);
                self.endpoint.check_invariants();
            }
            self.busy_until = now + self.read_cost * read as u64;
        } else if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.flush(now)
    }

    /// Drain the endpoint's transmits and events into the records.
    fn flush(&mut self, now: u64) -> Vec<Datagram> {
        let mut sent = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit(now, 8) {
            let size = t.segment_size.max(1);
            for bytes in t.payload.chunks(size) {
                sent.push(Datagram {
                    from: self.addr,
                    to: t.to,
                    bytes: bytes.to_vec(),
                });
            }
            self.endpoint.recycle(t);
        }
        while let Some(event) = self.endpoint.poll_event() {
            match &event {
                Event::Node(NodeEvent::Message(m)) => self.messages.push((
                    m.peer(),
                    m.public_key(),
                    String::from_utf8_lossy(m.message().body()).into_owned(),
                )),
                Event::Node(NodeEvent::PeerConnected(_)) => self.connected += 1,
                Event::Node(NodeEvent::ConnectFailed(a, why)) => {
                    self.failures.push((*a, why.to_string()))
                }
                Event::Node(NodeEvent::PeerDisconnected(a, why)) => {
                    self.endings.push(("disconnected", *a, why.clone()))
                }
                Event::Node(NodeEvent::NodeDeleted(a, why)) => {
                    self.endings.push(("deleted", *a, why.clone()))
                }
                _ => {}
            }
            self.events.push((now, event));
        }
        sent
    }
}

/// Endpoints and the network between them. See the module docs.
pub(super) struct World {
    pub(super) now: u64,
    pub(super) nodes: BTreeMap<SocketAddr, Node>,
    /// (delivery time, sequence) -> datagram
    in_flight: BTreeMap<(u64, u64), Datagram>,
    seq: u64,
    /// One-way delay every datagram takes, ms.
    pub(super) delay: u64,
    /// Extra delay, uniform in `0..=jitter` ms per datagram.
    pub(super) jitter: u64,
    pub(super) loss: f64,
    pub(super) duplication: f64,
    pub(super) filter: Option<Filter>,
    pub(super) rng: StdRng,
    /// Every datagram delivered: (time, from, to, length).
    pub(super) trace: Vec<(u64, SocketAddr, SocketAddr, usize)>,
    /// Datagrams to addresses where no endpoint listens: (time, datagram).
    pub(super) inboxes: BTreeMap<SocketAddr, Vec<(u64, Datagram)>>,
}

impl World {
    /// A world whose datagrams take `delay` ms and are lost with
    /// probability `loss`.
    pub(super) fn new(seed: u64, delay: u64, loss: f64) -> Self {
        Self {
            now: 0,
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            delay,
            jitter: 0,
            loss,
            duplication: 0.0,
            filter: None,
            rng: StdRng::seed_from_u64(seed),
            trace: Vec::new(),
            inboxes: BTreeMap::new(),
        }
    }

    /// Datagrams also take up to `jitter` ms more, so they reorder.
    pub(super) fn with_jitter(mut self, jitter: u64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Endpoints with identities 1 and 2 at `addr(1)` and `addr(2)`, 10 ms
    /// apart, no loss; 1 added 2, and at 2 s they are connected.
    pub(super) fn connected_pair(seed: u64) -> Self {
        let mut w = World::new(seed, 10, 0.0);
        w.spawn(addr(1), 1);
        w.spawn(addr(2), 2);
        w.add(addr(1), addr(2));
        w.run_until(2_000);
        w
    }

    /// The configuration of a node with identity `key`, its RNG seeded.
    pub(super) fn config(key: u8, seed: u64) -> Config {
        Config::default()
            .with_identity(Identity::from_private_bytes([key; 32]))
            .with_rng_seed(seed)
    }

    /// A listening endpoint at `at` with the identity `key`.
    pub(super) fn spawn(&mut self, at: SocketAddr, key: u8) {
        let seed = self.rng.gen();
        self.spawn_with(at, Self::config(key, seed));
    }

    /// A listening endpoint at `at` with `config`.
    pub(super) fn spawn_with(&mut self, at: SocketAddr, config: Config) {
        let seed = self.rng.gen();
        let mut endpoint = Endpoint::new(Arc::new(config), seed);
        endpoint.listen(self.now, at).expect("listen");
        self.insert(at, endpoint);
    }

    /// Put an endpoint at `at` (one taken from another address: the node
    /// moved).
    pub(super) fn insert(&mut self, at: SocketAddr, endpoint: Endpoint) {
        let node = Node {
            endpoint,
            addr: at,
            messages: Vec::new(),
            connected: 0,
            failures: Vec::new(),
            endings: Vec::new(),
            events: Vec::new(),
            read_cost: 0,
            busy_until: 0,
            queue: VecDeque::new(),
        };
        self.nodes.insert(at, node);
    }

    /// An on-path attacker with identity `key` that sends from and
    /// receives at `claims`, another node's address (`slot` only names it
    /// in the world).
    pub(super) fn spawn_impostor(&mut self, slot: SocketAddr, claims: SocketAddr, key: u8) {
        let seed = self.rng.gen();
        self.spawn_with(slot, Self::config(key, seed));
        let node = self.nodes.get_mut(&slot).expect("impostor");
        node.addr = claims;
    }

    /// The endpoint at `at`.
    pub(super) fn node(&mut self, at: SocketAddr) -> &mut Endpoint {
        &mut self.nodes.get_mut(&at).expect("node").endpoint
    }

    /// The node at `at` handles nothing (datagrams, timers) for `ms`.
    pub(super) fn stall(&mut self, at: SocketAddr, ms: u64) {
        let until = self.now + ms;
        let node = self.nodes.get_mut(&at).expect("node");
        node.busy_until = node.busy_until.max(until);
    }

    /// Send `bytes` from `from` (any address) to `to`, through the network.
    pub(super) fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        self.transmit(now, Datagram { from, to, bytes });
    }

    fn transmit(&mut self, now: u64, datagram: Datagram) {
        if let Some(filter) = self.filter.as_mut() {
            if !filter(now, &datagram) {
                return;
            }
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            return;
        }
        let copies = if self.duplication > 0.0 && self.rng.gen_bool(self.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + self.delay + self.rng.gen_range(0..=self.jitter);
            self.seq += 1;
            self.in_flight.insert((at, self.seq), datagram.clone());
        }
    }

    /// Flush every node that is not busy (after commands the test gave
    /// it) into the network.
    pub(super) fn collect(&mut self) {
        let now = self.now;
        let mut sent = Vec::new();
        for node in self.nodes.values_mut().filter(|n| n.busy_until <= now) {
            sent.extend(node.flush(now));
        }
        for datagram in sent {
            self.transmit(now, datagram);
        }
    }

    /// Run the world until `until` (virtual ms).
    pub(super) fn run_until(&mut self, until: u64) {
        loop {
            self.collect();
            let next_datagram = self.in_flight.keys().next().map(|(t, _)| *t);
            let next_node = self.nodes.values().filter_map(Node::next_due).min();
            let Some(next) = [next_datagram, next_node].into_iter().flatten().min() else {
                self.now = self.now.max(until);
                return;
            };
            if next > until {
                self.now = self.now.max(until);
                return;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Run for `ms` more.
    pub(super) fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Deliver what arrives at `self.now` into the receivers' queues and
    /// wake every node that is not busy.
    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let d = entry.remove();
            let mut listeners = self
                .nodes
                .values_mut()
                .filter(|n| n.addr == d.to)
                .peekable();
            if listeners.peek().is_none() {
                self.trace.push((now, d.from, d.to, d.bytes.len()));
                self.inboxes.entry(d.to).or_default().push((now, d));
                continue;
            }
            for node in listeners {
                node.queue.push_back((d.from, d.bytes.clone()));
            }
        }
        let mut sent = Vec::new();
        for node in self.nodes.values_mut().filter(|n| n.busy_until <= now) {
            sent.extend(node.wake(now, &mut self.trace));
        }
        for datagram in sent {
            self.transmit(now, datagram);
        }
    }

    /// Queue a message with body `body` from `from` to `to`; it must be
    /// accepted.
    pub(super) fn send(&mut self, from: SocketAddr, to: SocketAddr, body: &str) {
        let now = self.now;
        let msg = Message::new("test", body.to_owned()).expect("message");
        let report = self
            .node(from)
            .send(now, msg, Targets::These(vec![to]))
            .expect("send");
        assert!(report.all_queued(), "{report:?}");
    }

    /// `at` adds `to` to its route table.
    pub(super) fn add(&mut self, at: SocketAddr, to: SocketAddr) {
        let now = self.now;
        self.node(at).add(now, to, None, Origin::App).expect("add");
    }

    /// The bodies `at` received, in order.
    pub(super) fn bodies(&self, at: SocketAddr) -> Vec<String> {
        self.nodes[&at]
            .messages
            .iter()
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// `at`'s snapshot.
    pub(super) fn state(&self, at: SocketAddr) -> NetworkState {
        self.nodes[&at].endpoint.state(self.now)
    }

    /// What `at` knows about `peer`, if anything.
    pub(super) fn peer(&self, at: SocketAddr, peer: SocketAddr) -> Option<PeerState> {
        self.state(at).peer(peer).cloned()
    }

    /// Whether `at` has an established session with `peer`.
    pub(super) fn connected(&self, at: SocketAddr, peer: SocketAddr) -> bool {
        self.peer(at, peer)
            .is_some_and(|p| p.connection == ConnectionState::Connected)
    }
}
