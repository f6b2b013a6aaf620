//! The scenarios of `gladius-sim`: start N nodes (each bootstraps from one
//! random earlier node), let discovery fill the route tables, then exercise
//! one thing — signed state, a broadcast, churn or a partition — and
//! measure how long it takes to converge, in virtual time, and what it
//! cost in datagrams and bytes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gladius_p2p::Message;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::network::{LinkConfig, SimNetwork};
use crate::node::{node_addr, NodeSpec, SimNode, StartError, PROBE_TYPE};

mod gossip;
pub use gossip::GossipArgs;

/// What a run exercises after discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Until every route table is full and no node is isolated.
    Discovery,
    /// Every node sets one signed field; until every node holds them all.
    State,
    /// Every node broadcasts one message to its route table; until all
    /// arrived.
    Broadcast,
    /// A share of the nodes crash; until every live node dropped them;
    /// then they restart with new keys; until their tables are full again.
    Churn,
    /// Two halves cut apart, then healed; until the tables are full and
    /// the graph is one component again.
    Partition,
    /// The gossip plugin on every node: messages from random origins,
    /// with crashes (`--crash-fraction`); reliability, redundancy,
    /// latency, against flooding (`--gossip-flood`, `--gossip-both`).
    Gossip,
}

/// The settings of one run (the flags of `gladius-sim`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Nodes to simulate.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Seed of every random choice of the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Scenario::Discovery)]
    pub scenario: Scenario,
    /// Probability that a datagram is lost (0.0..=1.0).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Run the nodes without encryption (faster for large runs).
    #[arg(long)]
    pub plaintext: bool,
    /// Print the report as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Route-table size discovery fills to.
    #[arg(long, default_value_t = 40)]
    pub table_size: usize,
    /// Virtual seconds each phase may take before the run gives up.
    #[arg(long, default_value_t = 600)]
    pub max_phase_secs: u64,
    /// Share of nodes crashed by the churn scenario.
    #[arg(long, default_value_t = 0.1)]
    pub churn: f64,
    /// Virtual seconds the partition scenario keeps the halves apart.
    #[arg(long, default_value_t = 30)]
    pub partition_secs: u64,
    /// Nodes that set a field in the state scenario (a seeded random
    /// choice; default: every node). Every node still receives, verifies
    /// and stores every field: with all of 10,000 nodes writing that is
    /// 10⁸ stored entries, more than this machine holds.
    #[arg(long)]
    pub state_writers: Option<usize>,
    /// The gossip scenario's settings.
    #[command(flatten)]
    pub gossip: GossipArgs,
}

impl SimArgs {
    /// Defaults for `nodes` nodes running `scenario` with `seed`.
    pub fn new(scenario: Scenario, nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            scenario,
            loss: 0.0,
            plaintext: false,
            json: false,
            table_size: 40,
            max_phase_secs: 600,
            churn: 0.1,
            partition_secs: 30,
            state_writers: None,
            gossip: GossipArgs::default(),
        }
    }
}

/// The outcome of a run; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario run.
    pub scenario: Scenario,
    /// Nodes simulated.
    pub nodes: usize,
    /// The run's seed.
    pub seed: u64,
    /// Whether every phase converged before its deadline.
    pub converged: bool,
    /// Virtual time of the whole run, in ms.
    pub sim_ms: u64,
    /// Wall-clock time of the run, in ms (runtime shutdown excluded).
    pub wall_ms: u64,
    /// Datagrams delivered by the simulated network.
    pub messages: u64,
    /// Bytes of those datagrams.
    pub bytes: u64,
    /// `bytes / nodes / sim seconds`.
    pub bytes_per_node_per_s: f64,
    /// The trace digest (see [`SimNetwork::trace_digest`]).
    pub trace_digest: String,
    /// Whether the nodes ran Noise and the AEAD.
    pub encrypted: bool,
    /// The loss probability.
    pub loss: f64,
    /// Peak resident memory of the process, in KiB (Linux).
    pub peak_rss_kib: Option<u64>,
    /// The scenario's own figures.
    #[serde(flatten)]
    pub figures: Map<String, Value>,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A node could not start.
    #[error("node {index}: {source}")]
    Node {
        /// The node's index.
        index: usize,
        /// What failed.
        source: StartError,
    },
    /// The arguments make no sense.
    #[error("invalid arguments: {0}")]
    Args(&'static str),
}

/// Run one simulation on its own current-thread runtime with paused
/// time. `progress` receives a line now and then.
pub fn run(args: &SimArgs, progress: &mut dyn FnMut(&str)) -> Result<Report, SimError> {
    if args.nodes < 2 {
        return Err(SimError::Args("at least 2 nodes"));
    }
    if !(0.0..=1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.churn) {
        return Err(SimError::Args("loss and churn are probabilities"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let wall = std::time::Instant::now();
    let mut report = rt.block_on(run_in_runtime(args, progress))?;
    report.wall_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.peak_rss_kib = peak_rss_kib();
    Ok(report)
}

async fn run_in_runtime(
    args: &SimArgs,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, SimError> {
    let links = LinkConfig {
        loss: args.loss,
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(args, SimNetwork::new(args.seed, links), progress);
    tokio::spawn(sim.net.clone().run_deliveries());
    sim.start_all().await?;
    let mut figures = Map::new();
    let found = sim.until_tables_full("discovery").await;
    figures.insert("discovery_ms".into(), ms_or_null(found));
    let mut converged = found.is_some();
    let converged_here = match args.scenario {
        Scenario::Discovery => {
            sim.graph_figures(&mut figures);
            true
        }
        Scenario::State => sim.state(&mut figures).await,
        Scenario::Broadcast => sim.broadcast(&mut figures).await,
        Scenario::Churn => sim.churn(&mut figures).await?,
        Scenario::Partition => sim.partition(&mut figures).await,
        Scenario::Gossip => gossip::run(&mut sim, &mut figures).await?,
    };
    converged &= converged_here;
    let stats = sim.net.stats();
    let sim_ms = millis(sim.net.elapsed());
    figures.insert("datagrams_sent".into(), json!(stats.sent));
    figures.insert("datagrams_lost".into(), json!(stats.lost));
    figures.insert("datagrams_unreachable".into(), json!(stats.unreachable));
    figures.insert("datagrams_partitioned".into(), json!(stats.partitioned));
    figures.insert("inbox_drops".into(), json!(stats.inbox_drops));
    Ok(Report {
        scenario: args.scenario,
        nodes: args.nodes,
        seed: args.seed,
        converged,
        sim_ms,
        wall_ms: 0,
        messages: stats.delivered,
        bytes: stats.delivered_bytes,
        bytes_per_node_per_s: per_node_per_s(stats.delivered_bytes, args.nodes, sim.net.elapsed()),
        trace_digest: sim.net.trace_digest(),
        encrypted: !args.plaintext,
        loss: args.loss,
        peak_rss_kib: None,
        figures,
    })
}

/// How often convergence is checked, in virtual time.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often progress is reported, in virtual time...
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// ...or in wall-clock time, whichever comes first.
const PROGRESS_WALL: Duration = Duration::from_secs(30);
/// Virtual time spent idle after state converged, to measure idle traffic.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

struct Sim<'a> {
    args: &'a SimArgs,
    net: SimNetwork,
    nodes: Vec<Option<SimNode>>,
    rng: StdRng,
    progress: &'a mut dyn FnMut(&str),
    wall: std::time::Instant,
}

impl<'a> Sim<'a> {
    fn new(args: &'a SimArgs, net: SimNetwork, progress: &'a mut dyn FnMut(&str)) -> Self {
        Self {
            args,
            net,
            nodes: Vec::new(),
            rng: StdRng::seed_from_u64(args.seed ^ 0x5eed_5eed),
            progress,
            wall: std::time::Instant::now(),
        }
    }

    fn say(&mut self, line: &str) {
        let line = format!(
            "[sim {:>8.1}s | wall {:>7.1}s] {line}",
            self.net.elapsed().as_secs_f64(),
            self.wall.elapsed().as_secs_f64()
        );
        (self.progress)(&line);
    }

    fn spec(&self, index: usize, incarnation: u32) -> NodeSpec {
        NodeSpec {
            seed: self.args.seed,
            index,
            incarnation,
            plaintext: self.args.plaintext,
            table_size: self.args.table_size,
        }
    }

    /// Start every node; node i bootstraps from a random node before it.
    async fn start_all(&mut self) -> Result<(), SimError> {
        for index in 0..self.args.nodes {
            let node = SimNode::start(&self.net, self.spec(index, 0))
                .await
                .map_err(|source| SimError::Node { index, source })?;
            if index > 0 {
                let j = self.rng.gen_range(0..index);
                // Only fails once the node stopped, which it has not.
                let _ = node.net.add(node_addr(j)).await;
            }
            self.nodes.push(Some(node));
            if (index + 1) % 1000 == 0 {
                self.say(&format!("{} nodes started", index + 1));
            }
        }
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter().flatten()
    }

    /// Poll `done` every [`CHECK_EVERY`] until it holds or `max_phase_secs`
    /// pass; returns the virtual time it took.
    async fn until(
        &mut self,
        phase: &str,
        mut done: impl FnMut(&Self) -> (bool, String),
    ) -> Option<Duration> {
        let start = self.net.elapsed();
        let deadline = Duration::from_secs(self.args.max_phase_secs);
        let mut next_progress = start;
        let mut next_wall = std::time::Instant::now() + PROGRESS_WALL;
        loop {
            let (ok, status) = done(self);
            let took = self.net.elapsed() - start;
            if ok {
                self.say(&format!(
                    "{phase}: done after {:.1}s ({status})",
                    took.as_secs_f64()
                ));
                return Some(took);
            }
            if took >= deadline {
                self.say(&format!(
                    "{phase}: gave up after {:.1}s ({status})",
                    took.as_secs_f64()
                ));
                return None;
            }
            if self.net.elapsed() >= next_progress || std::time::Instant::now() >= next_wall {
                next_progress = self.net.elapsed() + PROGRESS_EVERY;
                next_wall = std::time::Instant::now() + PROGRESS_WALL;
                self.say(&format!("{phase}: {status}"));
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// Until every live node's route table holds `min(table_size, live-1)`
    /// connected peers.
    async fn until_tables_full(&mut self, phase: &str) -> Option<Duration> {
        self.until(phase, |sim| {
            let live = sim.live().count();
            let want = sim.args.table_size.min(live.saturating_sub(1));
            let (mut full, mut isolated, mut sum) = (0, 0, 0);
            for node in sim.live() {
                let n = node.live_peers().len();
                full += usize::from(n >= want);
                isolated += usize::from(n == 0);
                sum += n;
            }
            let status = format!(
                "{full}/{live} tables full, {isolated} isolated, mean {:.1} peers",
                sum as f64 / live.max(1) as f64
            );
            (full == live, status)
        })
        .await
    }

    /// Route-table figures: smallest and mean table, isolated nodes, and
    /// the connected components of the graph of live route-table links.
    fn graph_figures(&self, figures: &mut Map<String, Value>) {
        let index: std::collections::HashMap<SocketAddr, usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (n.addr, i)))
            .collect();
        let mut parent: Vec<usize> = (0..self.nodes.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let (mut min, mut sum, mut isolated) = (usize::MAX, 0, 0);
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let peers = node.live_peers();
            min = min.min(peers.len());
            sum += peers.len();
            isolated += usize::from(peers.is_empty());
            for p in peers {
                if let Some(&j) = index.get(&p) {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let roots: BTreeSet<usize> = index.values().map(|&i| root(&mut parent, i)).collect();
        let live = index.len().max(1);
        figures.insert("min_table".into(), json!(min));
        figures.insert("mean_table".into(), json!(sum as f64 / live as f64));
        figures.insert("isolated".into(), json!(isolated));
        figures.insert("components".into(), json!(roots.len()));
    }

    /// Every node sets one field; until every node holds every node's.
    async fn state(&mut self, figures: &mut Map<String, Value>) -> bool {
        let before = self.net.stats().delivered_bytes;
        let mut writers: Vec<usize> = (0..self.nodes.len()).collect();
        if let Some(n) = self.args.state_writers {
            writers.shuffle(&mut StdRng::seed_from_u64(self.args.seed ^ 0x57a7e));
            writers.truncate(n);
        }
        for &i in &writers {
            let Some(node) = &self.nodes[i] else { continue };
            let value = node.spec.index.to_string();
            if let Err(e) = node.state.set("sim.n", value).await {
                (self.progress)(&format!("node {}: set failed: {e}", node.spec.index));
            }
        }
        let fields = writers.len();
        figures.insert("state_writers".into(), json!(fields));
        let took = self
            .until("state", |sim| {
                let nodes = sim.live().count();
                let (mut done, mut sum) = (0, 0);
                for node in sim.live() {
                    let n = node.state.len();
                    done += usize::from(n >= fields);
                    sum += n;
                }
                let status = format!(
                    "{done}/{nodes} nodes hold all {fields} fields, mean {:.1}",
                    sum as f64 / nodes.max(1) as f64
                );
                (done == nodes, status)
            })
            .await;
        let converging = self.net.stats().delivered_bytes - before;
        figures.insert("state_ms".into(), ms_or_null(took));
        if let Some(took) = took {
            figures.insert(
                "converging_bytes_per_node_per_s".into(),
                json!(per_node_per_s(converging, self.args.nodes, took)),
            );
        }
        let before = self.net.stats().delivered_bytes;
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle = self.net.stats().delivered_bytes - before;
        figures.insert(
            "idle_bytes_per_node_per_s".into(),
            json!(per_node_per_s(idle, self.args.nodes, IDLE_WINDOW)),
        );
        took.is_some()
    }

    /// Every node broadcasts one probe to its route table; until every
    /// queued probe arrived.
    async fn broadcast(&mut self, figures: &mut Map<String, Value>) -> bool {
        let mut expected = 0u64;
        for node in self.nodes.iter().flatten() {
            let Ok(msg) = Message::new(PROBE_TYPE, vec![0u8; 64]) else {
                continue;
            };
            if let Ok(report) = node.net.broadcast(msg).await {
                expected += report.queued.len() as u64;
            }
        }
        let took = self
            .until("broadcast", |sim| {
                let got: u64 = sim.live().map(|n| n.probes.load(Ordering::Relaxed)).sum();
                (
                    got >= expected,
                    format!("{got}/{expected} probes delivered"),
                )
            })
            .await;
        let got: u64 = self.live().map(|n| n.probes.load(Ordering::Relaxed)).sum();
        figures.insert("broadcast_ms".into(), ms_or_null(took));
        figures.insert("probes_expected".into(), json!(expected));
        figures.insert("probes_delivered".into(), json!(got));
        took.is_some()
    }

    /// Crash a share of the nodes; until no live node has them as live
    /// route-table peers, then until every table is full again; restart
    /// them with new keys (each bootstrapping from a random live node);
    /// until every restarted node has a full table.
    async fn churn(&mut self, figures: &mut Map<String, Value>) -> Result<bool, SimError> {
        let n = self.nodes.len();
        let k = ((n as f64 * self.args.churn).round() as usize).clamp(1, n - 1);
        let mut victims: Vec<usize> = (0..n).collect();
        victims.shuffle(&mut self.rng);
        victims.truncate(k);
        victims.sort_unstable();
        let dead: BTreeSet<SocketAddr> = victims.iter().map(|&i| node_addr(i)).collect();
        for &i in &victims {
            self.net.crash(node_addr(i));
            // Dropping the last handle closes the node; its socket is silent.
            self.nodes[i] = None;
        }
        self.say(&format!("crashed {k} nodes"));
        // Discovery keeps retrying dead peers (pinned to their old keys)
        // in case they come back, so "dropped" means: no live node counts
        // a dead one among its connected route-table peers.
        let dropped = self
            .until("churn: drop the dead", |sim| {
                let holding = sim
                    .live()
                    .filter(|node| node.live_peers().iter().any(|p| dead.contains(p)))
                    .count();
                (
                    holding == 0,
                    format!("{holding} live nodes still have a dead peer"),
                )
            })
            .await;
        figures.insert("crashed".into(), json!(k));
        figures.insert("dropped_dead_ms".into(), ms_or_null(dropped));
        let refilled = self.until_tables_full("churn: refill").await;
        figures.insert(
            "refilled_ms".into(),
            ms_or_null(refilled.zip(dropped).map(|(r, d)| r + d)),
        );
        for &i in &victims {
            let node = SimNode::start(&self.net, self.spec(i, 1))
                .await
                .map_err(|source| SimError::Node { index: i, source })?;
            let live: Vec<usize> = (0..n).filter(|j| self.nodes[*j].is_some()).collect();
            if let Some(&j) = live.choose(&mut self.rng) {
                let _ = node.net.add(node_addr(j)).await;
            }
            self.nodes[i] = Some(node);
        }
        self.say(&format!("restarted {k} nodes with new keys"));
        let table_size = self.args.table_size;
        let back = self
            .until("churn: take back the restarted", |sim| {
                let want = table_size.min(n - 1);
                let full = victims
                    .iter()
                    .filter_map(|&i| sim.nodes[i].as_ref())
                    .filter(|node| node.live_peers().len() >= want)
                    .count();
                (full == k, format!("{full}/{k} restarted have full tables"))
            })
            .await;
        // Full route tables do not promote inbound peers: a restarted node
        // is back in another's table only where there was room.
        let mut held = BTreeSet::new();
        for node in self.live() {
            held.extend(node.live_peers().into_iter().filter(|a| dead.contains(a)));
        }
        figures.insert("restarted_in_others_tables".into(), json!(held.len()));
        figures.insert("taken_back_ms".into(), ms_or_null(back));
        let mut refused = 0u64;
        for node in self.live() {
            if let Ok(state) = node.net.network_state().await {
                refused += state.counters.refused_sessions;
            }
        }
        figures.insert("refused_sessions".into(), json!(refused));
        self.graph_figures(figures);
        Ok(dropped.is_some() && refilled.is_some() && back.is_some())
    }

    /// Cut the nodes into two random halves for `partition_secs`, heal;
    /// until every table is full and the graph is one component.
    async fn partition(&mut self, figures: &mut Map<String, Value>) -> bool {
        let mut order: Vec<SocketAddr> = self.live().map(|n| n.addr).collect();
        order.shuffle(&mut self.rng);
        let half = order.len() / 2;
        let (a, b) = order.split_at(half);
        self.net.partition(&[a.to_vec(), b.to_vec()]);
        self.say(&format!("partitioned {} | {}", a.len(), b.len()));
        tokio::time::sleep(Duration::from_secs(self.args.partition_secs)).await;
        let mut during = Map::new();
        self.graph_figures(&mut during);
        figures.insert(
            "components_partitioned".into(),
            during["components"].clone(),
        );
        self.net.heal();
        self.say("healed");
        let side_b: BTreeSet<SocketAddr> = b.iter().copied().collect();
        let healed = self
            .until("partition: heal", |sim| {
                let mut crossing = 0usize;
                for node in sim.live() {
                    let here = side_b.contains(&node.addr);
                    crossing += node
                        .live_peers()
                        .iter()
                        .filter(|p| side_b.contains(p) != here)
                        .count();
                }
                (crossing > 0, format!("{crossing} live links cross the cut"))
            })
            .await;
        let full = self.until_tables_full("partition: refill").await;
        figures.insert(
            "partition_ms".into(),
            json!(self.args.partition_secs * 1000),
        );
        figures.insert("heal_ms".into(), ms_or_null(healed));
        figures.insert("refill_ms".into(), ms_or_null(full));
        self.graph_figures(figures);
        healed.is_some() && full.is_some() && figures["components"] == json!(1)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_or_null(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(millis(d)))
}

fn per_node_per_s(bytes: u64, nodes: usize, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 || nodes == 0 {
        return 0.0;
    }
    (bytes as f64 / nodes as f64 / secs).round()
}

/// The process's peak resident set (VmHWM), Linux only.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
