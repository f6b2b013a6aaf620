//! A small deterministic simulator for the gossip core: N [`State`]s on a
//! random graph with a fixed latency per link, one event queue in virtual
//! time, one seed. Frames between two nodes arrive in the order they were
//! sent (as over KCP) and are never lost; crashed nodes silently stop
//! (their neighbours are not told, as right after a real crash).
//!
//! It is what the crate's own tests measure reliability and redundancy
//! with, and a reusable driver for `gladius-sim` (feature `sim`). Example:
//!
//! ```
//! # #[cfg(feature = "sim")] {
//! use gladius_plugins::gossip::sim::{Scenario, Sim};
//! let report = Sim::run(&Scenario { nodes: 50, messages: 10, ..Scenario::default() });
//! assert_eq!(report.reliability_min, 1.0);
//! # }
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::config::GossipConfig;
use super::key::{GossipKey, MessageId};
use super::proto::{InEvent, State, Timer};
use super::wire::Topic;

/// Virtual time starts here (Unix ms), so message timestamps look real.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// One simulated run: a topology, a workload and a failure.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes, all subscribed to one topic.
    pub nodes: usize,
    /// Each node links to this many random others (links are two-way, so
    /// the mean degree is about twice this).
    pub links_per_node: usize,
    /// Link latency, uniform in this range per link, in ms.
    pub latency_ms: (u64, u64),
    /// Messages published (from random live origins) before measuring,
    /// so that the tree has formed.
    pub warmup: usize,
    /// Messages published after the crash and before the measured ones,
    /// not measured: the tree re-forms meanwhile.
    pub settle: usize,
    /// Messages measured.
    pub messages: usize,
    /// Time between two publications, ms.
    pub interval_ms: u64,
    /// Fraction of nodes crashed after the warm-up, before the measured
    /// messages (0.0..1.0).
    pub crash: f64,
    /// How long after a crash the crashed node's neighbours notice (their
    /// session times out: `PeerDown`), ms. The latency audit's default
    /// declares a silent peer dead after about 6 s.
    pub detect_ms: u64,
    /// The gossip settings (set `flood` for the baseline).
    pub gossip: GossipConfig,
    /// The seed of everything random: topology, latencies, keys, origins.
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            nodes: 200,
            links_per_node: 4,
            latency_ms: (10, 60),
            warmup: 20,
            settle: 0,
            messages: 50,
            interval_ms: 500,
            crash: 0.0,
            detect_ms: 6000,
            gossip: GossipConfig::default(),
            seed: 1,
        }
    }
}

/// What a run measured over its measured messages.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Live nodes at measurement.
    pub live_nodes: usize,
    /// Live nodes cut off from the largest live component by the crash (no
    /// protocol can reach them; they are left out of `reliability_*`).
    pub partitioned: usize,
    /// Mean over messages of the fraction of live subscribers (other than
    /// the origin) reachable from the origin that got the message.
    pub reliability_mean: f64,
    /// The worst message's fraction.
    pub reliability_min: f64,
    /// Relative message redundancy: full-message frames sent by live nodes
    /// per delivery, minus one (0 = every copy was needed).
    pub rmr: f64,
    /// Deliveries of the same message twice to an application (must be 0).
    pub double_deliveries: u64,
    /// The largest hop count of any delivery.
    pub last_delivery_hop: u16,
    /// Median delivery latency, ms.
    pub latency_p50_ms: u64,
    /// 99th percentile delivery latency, ms.
    pub latency_p99_ms: u64,
    /// Largest delivery latency, ms.
    pub latency_max_ms: u64,
    /// Frame bytes sent per live node during the measured messages.
    pub bytes_per_node: u64,
    /// Grafts sent during the measured messages (tree repairs).
    pub grafts: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Frame {
        to: usize,
        from: usize,
        frame: Bytes,
    },
    Timer {
        node: usize,
        timer: Timer,
    },
    PeerDown {
        node: usize,
        peer: usize,
    },
}

#[derive(Debug)]
struct Node {
    state: State<usize>,
    alive: bool,
    /// Link latency to each neighbour, ms.
    links: HashMap<usize, u64>,
}

#[derive(Debug, Default)]
struct Delivered {
    origin: usize,
    published_ms: u64,
    receivers: BTreeSet<usize>,
    doubles: u64,
    latencies: Vec<u64>,
    max_hops: u16,
}

/// The simulator: nodes, an event queue in virtual time, and what was
/// delivered.
#[derive(Debug)]
pub struct Sim {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    nodes: Vec<Node>,
    rng: StdRng,
    topic: Topic,
    delivered: HashMap<MessageId, Delivered>,
}

impl Sim {
    /// Build the topology, bring every link up, subscribe every node to
    /// the topic and let the subscriptions settle.
    pub fn new(s: &Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let n = s.nodes;
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                state: State::new(
                    GossipKey::generate_with(&mut rng),
                    s.gossip.clone(),
                    s.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                alive: true,
                links: HashMap::new(),
            })
            .collect();
        let mut edges = BTreeSet::new();
        for i in 0..n {
            let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            others.shuffle(&mut rng);
            for &j in others.iter().take(s.links_per_node) {
                edges.insert((i.min(j), i.max(j)));
            }
        }
        for &(a, b) in &edges {
            let lat = rng.gen_range(s.latency_ms.0..=s.latency_ms.1.max(s.latency_ms.0));
            nodes[a].links.insert(b, lat);
            nodes[b].links.insert(a, lat);
        }
        let topic = Topic::new("sim").unwrap_or_else(|_| unreachable!("a valid topic"));
        let mut sim = Self {
            now: EPOCH_MS,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            rng,
            topic: topic.clone(),
            delivered: HashMap::new(),
        };
        for i in 0..n {
            let _ = sim.nodes[i].state.subscribe(sim.now, topic.clone());
        }
        for &(a, b) in &edges {
            // The round trip, as the node's sessions would measure it.
            let ms = u32::try_from(2 * sim.nodes[a].links[&b]).unwrap_or(u32::MAX);
            for (x, y) in [(a, b), (b, a)] {
                sim.nodes[x].state.handle(sim.now, InEvent::PeerUp(y));
                sim.nodes[x]
                    .state
                    .handle(sim.now, InEvent::Rtt { peer: y, ms });
            }
        }
        for i in 0..n {
            sim.drain(i);
        }
        let settle = sim.now + 1000;
        sim.run_until(settle);
        sim
    }

    /// Run a scenario: warm up, crash, measure.
    pub fn run(s: &Scenario) -> Report {
        let mut sim = Sim::new(s);
        for _ in 0..s.warmup {
            sim.publish_random();
            let t = sim.now + s.interval_ms;
            sim.run_until(t);
        }
        sim.crash(s.crash, s.detect_ms);
        for _ in 0..s.settle {
            sim.publish_random();
            let t = sim.now + s.interval_ms;
            sim.run_until(t);
        }
        let before = sim.totals();
        let mut ids = Vec::new();
        for _ in 0..s.messages {
            ids.push(sim.publish_random());
            let t = sim.now + s.interval_ms;
            sim.run_until(t);
        }
        // Let repairs finish.
        let t = sim.now + 10_000;
        sim.run_until(t);
        sim.report(&ids, before)
    }

    /// Virtual time now, Unix ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Node `i`'s state machine.
    pub fn node(&self, i: usize) -> &State<usize> {
        &self.nodes[i].state
    }

    /// Publish from a random live node.
    pub fn publish_random(&mut self) -> MessageId {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        let origin = *live.choose(&mut self.rng).unwrap_or(&0);
        self.publish(origin, Bytes::from(vec![0u8; 64]))
    }

    /// Publish `body` from node `origin`.
    pub fn publish(&mut self, origin: usize, body: Bytes) -> MessageId {
        let topic = self.topic.clone();
        let id = match self.nodes[origin].state.publish(self.now, topic, body) {
            Ok(id) => id,
            Err(e) => panic!("the simulation publishes small bodies: {e}"),
        };
        self.delivered.insert(
            id,
            Delivered {
                origin,
                published_ms: self.now,
                receivers: BTreeSet::from([origin]),
                ..Delivered::default()
            },
        );
        self.drain(origin);
        id
    }

    /// Crash a random `fraction` of the nodes at once; their neighbours
    /// notice after `detect_ms`.
    pub fn crash(&mut self, fraction: f64, detect_ms: u64) {
        let mut all: Vec<usize> = (0..self.nodes.len()).collect();
        all.shuffle(&mut self.rng);
        let k = (fraction * self.nodes.len() as f64).round() as usize;
        for &i in all.iter().take(k) {
            self.nodes[i].alive = false;
            let mut neighbours: Vec<usize> = self.nodes[i].links.keys().copied().collect();
            neighbours.sort_unstable();
            for node in neighbours {
                let at = self.now + detect_ms;
                self.schedule(at, Event::PeerDown { node, peer: i });
            }
        }
    }

    /// Process events up to virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, event))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            let node = match event {
                Event::Frame { to, from, frame } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    self.nodes[to]
                        .state
                        .handle(at, InEvent::Message { from, frame });
                    to
                }
                Event::Timer { node, timer } => {
                    if !self.nodes[node].alive {
                        continue;
                    }
                    self.nodes[node].state.handle(at, InEvent::Timer(timer));
                    node
                }
                Event::PeerDown { node, peer } => {
                    if !self.nodes[node].alive {
                        continue;
                    }
                    self.nodes[node].state.handle(at, InEvent::PeerDown(peer));
                    node
                }
            };
            self.drain(node);
        }
        self.now = self.now.max(until);
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    /// Move node `i`'s outputs into the queue and the delivery records.
    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].state.poll_transmit() {
            let lat = self.nodes[i].links.get(&t.to).copied().unwrap_or(50);
            let at = self.now + lat;
            self.schedule(
                at,
                Event::Frame {
                    to: t.to,
                    from: i,
                    frame: t.frame,
                },
            );
        }
        while let Some((at, timer)) = self.nodes[i].state.poll_timer() {
            self.schedule(at, Event::Timer { node: i, timer });
        }
        while let Some(m) = self.nodes[i].state.poll_delivery() {
            let now = self.now;
            let d = self.delivered.entry(m.id).or_default();
            if d.receivers.insert(i) {
                d.latencies.push(now - d.published_ms);
                d.max_hops = d.max_hops.max(m.hops);
            } else {
                d.doubles += 1;
            }
        }
    }

    /// A component number per node over live links (`usize::MAX` if dead).
    fn live_components(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut comp = vec![usize::MAX; n];
        for start in 0..n {
            if !self.nodes[start].alive || comp[start] != usize::MAX {
                continue;
            }
            comp[start] = start;
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                for &j in self.nodes[i].links.keys() {
                    if self.nodes[j].alive && comp[j] == usize::MAX {
                        comp[j] = start;
                        stack.push(j);
                    }
                }
            }
        }
        comp
    }

    /// (data frames sent, deliveries, bytes sent, grafts) over live nodes.
    fn totals(&self) -> (u64, u64, u64, u64) {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.state.counters())
            .fold((0, 0, 0, 0), |t, c| {
                (
                    t.0 + c.data_sent,
                    t.1 + c.delivered,
                    t.2 + c.bytes_sent,
                    t.3 + c.grafts_sent,
                )
            })
    }

    /// Figures over the messages `ids`, counters since `before`.
    fn report(&self, ids: &[MessageId], before: (u64, u64, u64, u64)) -> Report {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        let component = self.live_components();
        let after = self.totals();
        let mut fractions = Vec::new();
        let mut latencies = Vec::new();
        let mut report = Report {
            live_nodes: live.len(),
            ..Report::default()
        };
        for id in ids {
            let Some(d) = self.delivered.get(id) else {
                continue;
            };
            let origin = d.origin;
            let reachable: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| component[i] == component[origin])
                .collect();
            if reachable.len() < 2 {
                continue; // an isolated origin has nobody to reach
            }
            let got = reachable.iter().filter(|i| d.receivers.contains(i)).count();
            // The origin is live and in `receivers`.
            fractions.push((got - 1) as f64 / (reachable.len() - 1).max(1) as f64);
            latencies.extend_from_slice(&d.latencies);
            report.double_deliveries += d.doubles;
            report.last_delivery_hop = report.last_delivery_hop.max(d.max_hops);
        }
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for &i in &live {
            *sizes.entry(component[i]).or_default() += 1;
        }
        report.partitioned = live.len() - sizes.values().copied().max().unwrap_or(0);
        latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
            latencies.get(i).copied().unwrap_or(0)
        };
        report.latency_p50_ms = pct(0.50);
        report.latency_p99_ms = pct(0.99);
        report.latency_max_ms = latencies.last().copied().unwrap_or(0);
        report.reliability_mean = fractions.iter().sum::<f64>() / fractions.len().max(1) as f64;
        report.reliability_min = fractions.iter().copied().fold(1.0, f64::min);
        let sent = after.0 - before.0;
        let delivered = after.1 - before.1;
        report.rmr = sent as f64 / delivered.max(1) as f64 - 1.0;
        report.bytes_per_node = (after.2 - before.2) / live.len().max(1) as u64;
        report.grafts = after.3 - before.3;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures for docs/gossip.md: `GOSSIP_SIM_NODES=1000 cargo test -p
    /// gladius-plugins --lib gossip::sim::tests::print_figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints the figures for docs/gossip.md"]
    fn print_figures() {
        let nodes = std::env::var("GOSSIP_SIM_NODES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        for crash in [0.0, 0.1, 0.3] {
            for flood in [false, true] {
                let s = Scenario {
                    nodes,
                    messages: 100,
                    crash,
                    gossip: GossipConfig::default().with_flood(flood),
                    ..Scenario::default()
                };
                let r = Sim::run(&s);
                println!(
                    "{} nodes crash {:.0}% {}: {}",
                    nodes,
                    crash * 100.0,
                    if flood { "flood" } else { "plumtree" },
                    serde_json::to_string(&r).unwrap_or_default()
                );
            }
        }
    }

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Tries settings of the latency optimisations: `GOSSIP_SIM_NODES`,
    /// `OPT_AFTER`, `OPT_WINDOW`, `OPT_LEAD_MS`, `CRASH_PCT`, `FANOUT`,
    /// `SHORTCUTS`, `DEPTH`, `FLOOD` (0/1), `LINKS`, `SETTLE` (messages
    /// between the crash and the measured ones).
    #[test]
    #[ignore = "an experiment, prints figures"]
    fn latency_experiment() {
        let nodes = env("GOSSIP_SIM_NODES", 1000) as usize;
        let gossip = GossipConfig::default().with_optimise(
            env("OPT_AFTER", 0) as usize,
            env("OPT_WINDOW", 16) as usize,
            std::time::Duration::from_millis(env("OPT_LEAD_MS", 20)),
        );
        let defaults = GossipConfig::default();
        let gossip = gossip
            .with_shortcuts(
                env("FANOUT", defaults.origin_fanout as u64) as usize,
                env("SHORTCUTS", defaults.shortcut_pushes as u64) as usize,
            )
            .with_shortcut_depth(env("DEPTH", 1) as u16)
            .with_flood(env("FLOOD", 0) == 1);
        let s = Scenario {
            nodes,
            links_per_node: env("LINKS", Scenario::default().links_per_node as u64) as usize,
            messages: 100,
            warmup: env("WARMUP", 20) as usize,
            settle: env("SETTLE", 0) as usize,
            crash: env("CRASH_PCT", 0) as f64 / 100.0,
            gossip,
            ..Scenario::default()
        };
        let r = Sim::run(&s);
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }

    #[test]
    fn every_live_node_gets_every_message_once_with_little_redundancy() {
        let s = Scenario {
            nodes: 500,
            ..Scenario::default()
        };
        let tree = Sim::run(&s);
        assert_eq!(tree.reliability_min, 1.0, "{tree:?}");
        assert_eq!(tree.double_deliveries, 0, "{tree:?}");
        assert!(tree.rmr < 0.2, "{tree:?}");
        let flood = Sim::run(&Scenario {
            gossip: GossipConfig::default().with_flood(true),
            ..s
        });
        assert_eq!(flood.reliability_min, 1.0, "{flood:?}");
        // Flooding sends every message over every link (both ways).
        assert!(flood.rmr > 5.0, "{flood:?}");
        // A shared tree is longer than the shortest paths flooding takes
        // (docs/gossip.md has the figures); it must not be absurdly so.
        assert!(
            tree.latency_p99_ms <= flood.latency_p99_ms * 4,
            "tree {tree:?} flood {flood:?}"
        );
    }

    #[test]
    fn shortcuts_bring_the_median_within_one_and_a_half_times_flooding() {
        // The figures of docs/gossip.md ("Shortcuts"), 1,000 nodes.
        let s = Scenario {
            nodes: 1000,
            messages: 100,
            ..Scenario::default()
        };
        let tree = Sim::run(&s);
        let short = Sim::run(&Scenario {
            gossip: GossipConfig::default().with_shortcuts(8, 2),
            ..s.clone()
        });
        let flood = Sim::run(&Scenario {
            gossip: GossipConfig::default().with_flood(true),
            ..s
        });
        assert_eq!(short.reliability_min, 1.0, "{short:?}");
        assert_eq!(short.double_deliveries, 0, "{short:?}");
        // Each shortcut is a redundant copy, but a few per message.
        assert!(short.rmr < 0.2, "{short:?}");
        assert!(
            short.latency_p50_ms < tree.latency_p50_ms,
            "shortcuts {short:?} tree {tree:?}"
        );
        assert!(
            short.latency_p50_ms * 2 <= flood.latency_p50_ms * 3,
            "shortcuts {short:?} flood {flood:?}"
        );
    }

    #[test]
    fn the_tree_repairs_itself_when_30_percent_of_nodes_crash() {
        let r = Sim::run(&Scenario {
            nodes: 500,
            crash: 0.3,
            ..Scenario::default()
        });
        assert_eq!(r.reliability_min, 1.0, "{r:?}");
        assert_eq!(r.double_deliveries, 0, "{r:?}");
        assert!(r.grafts > 0, "{r:?}");
    }

    #[test]
    fn a_run_is_reproducible_from_its_seed() {
        let s = Scenario {
            nodes: 60,
            messages: 10,
            ..Scenario::default()
        };
        assert_eq!(Sim::run(&s), Sim::run(&s));
    }
}
