//! The `gossip` scenario: the real gossip plugin on every node, over the
//! route tables discovery filled, publishing from random origins.
//!
//! After discovery, every node registers a [`Gossip`] plugin (seeded key,
//! seeded nonces, a clock that starts at the same virtual Unix time on
//! every node) and subscribes to the topics of the batches. Each batch is
//! one topic: `plumtree` (the tree, after `--gossip-warmup` messages that
//! let it form) or `flood` (the plugin's flooding baseline, no warm-up:
//! it has no state to form). Then `--crash-fraction` of the nodes crash at
//! once, just before the first batch's measured messages; the later
//! batches run on the survivors. Each batch publishes `--gossip-messages`
//! 64-byte messages from random live nodes, one every
//! `--gossip-interval-ms`, waits until every live subscriber has every
//! message (or `--max-phase-secs` pass), then 2 s more for stray copies.
//! Origins and crash victims come from their own seeded streams: a run of
//! the tree and one of flooding with the same seed crash the same nodes
//! and publish from the same origins, and in a `--gossip-both` run the
//! two batches publish from the same origins.
//!
//! Figures per batch (a `batches` array; with one batch also flat):
//! `reliability_min` / `reliability_mean` (per message, the fraction of
//! live subscribers other than the origin that got it), `rmr` (full-message
//! frames sent by live nodes per delivery, minus one: copies pushed to
//! crashed neighbours before they are detected count),
//! `duplicates_per_delivery` (full copies that arrived at a node that had
//! the message already, per delivery), `last_delivery_hop`,
//! `latency_p50_ms` / `latency_p99_ms` / `latency_max_ms` (publish to
//! delivery, virtual time), `gossip_bytes_per_node` (gossip frame bytes sent
//! per live node during the batch), `datagram_bytes_per_node` (everything
//! the network delivered in that time per live node: the latency audit,
//! discovery and KCP too), `double_deliveries` (must be 0), `grafts`,
//! `rmr_per_10_messages` / `grafts_per_10_messages` (over each block of
//! ten messages' time: how the tree settles after a crash),
//! `prunes`, `eager_mean` / `lazy_mean` (tree neighbours per node at the
//! end).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use gladius_plugins::gossip::{Gossip, GossipConfig, GossipHandle, GossipKey, MessageId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{Sim, SimError};
use crate::network::mix;
use crate::node::node_addr;

/// Unix ms the nodes' gossip clocks read when the simulation starts, so
/// that message timestamps look real and repeat from run to run.
const EPOCH_UNIX_MS: u64 = 1_700_000_000_000;

/// Time left after every message arrived, for stray copies and prunes.
const SETTLE: Duration = Duration::from_secs(2);

/// Body size of the published messages.
const BODY_LEN: usize = 64;

/// The gossip scenario's flags (`gladius-sim --scenario gossip`).
#[derive(Debug, Clone, clap::Args)]
pub struct GossipArgs {
    /// Gossip: messages measured per batch.
    #[arg(long = "gossip-messages", default_value_t = 100)]
    pub messages: usize,
    /// Gossip: messages published before measuring the tree, so that it
    /// has formed (flooding needs none).
    #[arg(long = "gossip-warmup", default_value_t = 20)]
    pub warmup: usize,
    /// Gossip: virtual milliseconds between two publications.
    #[arg(long = "gossip-interval-ms", default_value_t = 250)]
    pub interval_ms: u64,
    /// Gossip: share of the nodes crashed at once just before the first
    /// batch's measured messages (0.0..1.0).
    #[arg(long, default_value_t = 0.0)]
    pub crash_fraction: f64,
    /// Gossip: measure the plugin's plain flooding instead of the tree.
    #[arg(long, conflicts_with = "gossip_both")]
    pub gossip_flood: bool,
    /// Gossip: measure the tree, then flooding, on two topics of the same
    /// run (one discovery for both).
    #[arg(long)]
    pub gossip_both: bool,
    /// Gossip: the plugin's `graft_timeout`, in ms.
    #[arg(long = "gossip-graft-timeout-ms")]
    pub graft_timeout_ms: Option<u64>,
    /// Gossip: the plugin's latency optimisation (`optimise_after`: a
    /// lazy neighbour that announced this many of the last 16 messages
    /// at least `--gossip-optimise-lead-ms` before the tree delivered
    /// them replaces the tree neighbour; 0: off, the default).
    #[arg(long = "gossip-optimise", default_value_t = 0)]
    pub optimise_after: usize,
    /// Gossip: see `--gossip-optimise`.
    #[arg(long = "gossip-optimise-lead-ms", default_value_t = 5)]
    pub optimise_lead_ms: u64,
    /// Gossip: new neighbours of a node on the tree start eager (the
    /// plugin's `join_lazy` false), as in the PlumTree paper.
    #[arg(long = "gossip-join-eager")]
    pub join_eager: bool,
    /// Gossip: the plugin's `origin_fanout` (the origin pushes to this
    /// many of its fastest lazy neighbours too).
    #[arg(long = "gossip-fanout", default_value_t = 0)]
    pub fanout: usize,
    /// Gossip: the plugin's `shortcut_pushes` (a neighbour of the origin
    /// pushes to this many of its fastest lazy neighbours).
    #[arg(long = "gossip-shortcuts", default_value_t = 0)]
    pub shortcuts: usize,
    /// Gossip: the plugin's `shortcut_depth` (nodes up to this many hops
    /// from the origin make the shortcut pushes).
    #[arg(long = "gossip-shortcut-depth", default_value_t = 1)]
    pub shortcut_depth: u16,
}

impl Default for GossipArgs {
    fn default() -> Self {
        Self {
            messages: 100,
            warmup: 20,
            interval_ms: 250,
            crash_fraction: 0.0,
            gossip_flood: false,
            gossip_both: false,
            graft_timeout_ms: None,
            optimise_after: 0,
            optimise_lead_ms: 5,
            join_eager: false,
            fanout: 0,
            shortcuts: 0,
            shortcut_depth: 1,
        }
    }
}

/// A batch's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Plumtree,
    Flood,
}

impl Mode {
    fn topic(self) -> &'static str {
        match self {
            Mode::Plumtree => "sim.tree",
            Mode::Flood => "sim.flood",
        }
    }
}

/// Who got which message, when.
#[derive(Debug, Default)]
struct Recorder {
    messages: HashMap<MessageId, Record>,
}

#[derive(Debug, Default)]
struct Record {
    origin: usize,
    published: Option<Instant>,
    receivers: HashSet<usize>,
    doubles: u64,
    /// (when, hops) of every first delivery.
    deliveries: Vec<(Instant, u16)>,
}

impl Recorder {
    fn delivered(&mut self, node: usize, id: MessageId, hops: u16) {
        let r = self.messages.entry(id).or_default();
        if r.receivers.insert(node) {
            r.deliveries.push((Instant::now(), hops));
        } else {
            r.doubles += 1;
        }
    }
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(r: &Shared) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters summed over a set of nodes.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    data_sent: u64,
    duplicates: u64,
    delivered: u64,
    bytes_sent: u64,
    grafts: u64,
    prunes: u64,
    reroutes: u64,
}

/// Run the scenario on `sim`, whose route tables discovery has filled.
pub(super) async fn run(
    sim: &mut Sim<'_>,
    figures: &mut Map<String, Value>,
) -> Result<bool, SimError> {
    let g = sim.args.gossip.clone();
    if !(0.0..1.0).contains(&g.crash_fraction) {
        return Err(SimError::Args("--crash-fraction is in 0.0..1.0"));
    }
    if g.messages == 0 || g.interval_ms == 0 {
        return Err(SimError::Args(
            "--gossip-messages and --gossip-interval-ms > 0",
        ));
    }
    let modes: Vec<Mode> = if g.gossip_both {
        vec![Mode::Plumtree, Mode::Flood]
    } else if g.gossip_flood {
        vec![Mode::Flood]
    } else {
        vec![Mode::Plumtree]
    };
    let recorder: Shared = Arc::default();
    let mut handles = start_gossip(sim, &g, &modes, &recorder).await?;
    let settled = sim
        .until("gossip: subscriptions", |sim| {
            let want = sim.live().count();
            let ready = handles
                .iter()
                .flatten()
                .filter(|h| {
                    let topics = h.topics();
                    topics.len() == modes.len() && topics.iter().all(|t| t.eager + t.lazy > 0)
                })
                .count();
            (
                ready == want,
                format!("{ready}/{want} nodes have neighbours in every topic"),
            )
        })
        .await;
    let mut converged = settled.is_some();
    let mut batches = Vec::new();
    for (b, &mode) in modes.iter().enumerate() {
        let warmup = if mode == Mode::Plumtree { g.warmup } else { 0 };
        let mut origins = stream(sim.args.seed, WARMUP_ORIGINS);
        for k in 0..warmup {
            publish_random(&mut origins, &handles, mode, &recorder).await;
            tokio::time::sleep(Duration::from_millis(g.interval_ms)).await;
            if (k + 1) % 10 == 0 {
                sim.say(&format!("gossip {mode:?}: {} warm-up messages", k + 1));
            }
        }
        if warmup > 0 {
            // Let the warm-up's last repairs and prunes finish.
            tokio::time::sleep(SETTLE).await;
        }
        let mut crashed = 0;
        if b == 0 {
            let mut victims = stream(sim.args.seed, CRASH_VICTIMS);
            crashed = crash(sim, &mut victims, &mut handles, g.crash_fraction);
        }
        let (batch, done) = measure(sim, &handles, &g, mode, &recorder).await;
        let mut batch = batch;
        batch.insert("crashed".into(), json!(crashed));
        sim.say(&format!(
            "gossip {mode:?}: reliability min {} rmr {:.3} p50 {} ms p99 {} ms",
            batch["reliability_min"],
            batch["rmr"],
            batch["latency_p50_ms"],
            batch["latency_p99_ms"]
        ));
        converged &= done;
        batches.push(Value::Object(batch));
    }
    if let [Value::Object(only)] = batches.as_slice() {
        for (k, v) in only {
            figures.insert(k.clone(), v.clone());
        }
    }
    figures.insert("batches".into(), Value::Array(batches));
    figures.insert("crash_fraction".into(), json!(g.crash_fraction));
    figures.insert("gossip_interval_ms".into(), json!(g.interval_ms));
    figures.insert("gossip_warmup".into(), json!(g.warmup));
    Ok(converged)
}

/// Register a gossip plugin on every live node, subscribe it to every
/// batch's topic and record its deliveries.
async fn start_gossip(
    sim: &mut Sim<'_>,
    g: &GossipArgs,
    modes: &[Mode],
    recorder: &Shared,
) -> Result<Vec<Option<GossipHandle>>, SimError> {
    let mut config = GossipConfig::default().with_flood_topic(Mode::Flood.topic());
    if let Some(ms) = g.graft_timeout_ms {
        config = config.with_graft_timeout(Duration::from_millis(ms));
    }
    config = config
        .with_join_lazy(!g.join_eager)
        .with_shortcuts(g.fanout, g.shortcuts)
        .with_shortcut_depth(g.shortcut_depth);
    if g.optimise_after > 0 {
        config = config.with_optimise(
            g.optimise_after,
            16,
            Duration::from_millis(g.optimise_lead_ms),
        );
    }
    let now_unix_ms = EPOCH_UNIX_MS + super::millis(sim.net.elapsed());
    let mut handles = Vec::with_capacity(sim.nodes.len());
    for (index, node) in sim.nodes.iter().enumerate() {
        let Some(node) = node else {
            handles.push(None);
            continue;
        };
        let seed = mix(mix(sim.args.seed ^ 0x6055_1900) ^ index as u64);
        let key = GossipKey::generate_with(&mut StdRng::seed_from_u64(seed));
        let (plugin, handle) =
            Gossip::with_clock(key, config.clone().with_rng_seed(mix(seed)), now_unix_ms);
        node.net
            .register_plugin(plugin)
            .await
            .map_err(|e| SimError::Node {
                index,
                source: e.into(),
            })?;
        for &mode in modes {
            let mut sub = match handle.subscribe(mode.topic()).await {
                Ok(sub) => sub,
                Err(e) => unreachable!("a valid topic, far below the limit: {e}"),
            };
            let rec = recorder.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.recv().await {
                    lock(&rec).delivered(index, m.id, m.hops);
                }
            });
        }
        handles.push(Some(handle));
    }
    Ok(handles)
}

/// Each random choice of the scenario has its own stream, so that runs
/// of the tree and of flooding with the same seed crash the same nodes
/// and publish the measured messages from the same origins.
const WARMUP_ORIGINS: u64 = 1;
const MEASURED_ORIGINS: u64 = 2;
const CRASH_VICTIMS: u64 = 3;

fn stream(seed: u64, what: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ 0x6055_1900) ^ mix(what)))
}

/// Publish one message from a random live node.
async fn publish_random(
    rng: &mut StdRng,
    handles: &[Option<GossipHandle>],
    mode: Mode,
    recorder: &Shared,
) -> MessageId {
    let live: Vec<usize> = (0..handles.len())
        .filter(|&i| handles[i].is_some())
        .collect();
    let origin = *live.choose(rng).unwrap_or(&0);
    let Some(handle) = &handles[origin] else {
        unreachable!("the origin is live")
    };
    let published = Instant::now();
    let id = match handle
        .publish(mode.topic(), Bytes::from(vec![0u8; BODY_LEN]))
        .await
    {
        Ok(id) => id,
        Err(e) => unreachable!("a small body on a valid topic: {e}"),
    };
    let mut rec = lock(recorder);
    let r = rec.messages.entry(id).or_default();
    r.origin = origin;
    r.published = Some(published);
    id
}

/// Crash `fraction` of the nodes at once; returns how many.
fn crash(
    sim: &mut Sim<'_>,
    rng: &mut StdRng,
    handles: &mut [Option<GossipHandle>],
    fraction: f64,
) -> usize {
    let n = sim.nodes.len();
    let k = (fraction * n as f64).round() as usize;
    if k == 0 {
        return 0;
    }
    let mut victims: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].is_some()).collect();
    victims.shuffle(rng);
    victims.truncate(k);
    victims.sort_unstable();
    for &i in &victims {
        sim.net.crash(node_addr(i));
        sim.nodes[i] = None;
        handles[i] = None;
    }
    sim.say(&format!("gossip: crashed {k} nodes"));
    k
}

fn totals(handles: &[Option<GossipHandle>]) -> Totals {
    handles.iter().flatten().fold(Totals::default(), |t, h| {
        let p = h.stats().protocol;
        Totals {
            data_sent: t.data_sent + p.data_sent,
            duplicates: t.duplicates + p.duplicates,
            delivered: t.delivered + p.delivered,
            bytes_sent: t.bytes_sent + p.bytes_sent,
            grafts: t.grafts + p.grafts_sent,
            prunes: t.prunes + p.prunes_sent,
            reroutes: t.reroutes + p.reroutes,
        }
    })
}

/// Publish the batch's messages, wait for them, and measure.
async fn measure(
    sim: &mut Sim<'_>,
    handles: &[Option<GossipHandle>],
    g: &GossipArgs,
    mode: Mode,
    recorder: &Shared,
) -> (Map<String, Value>, bool) {
    let live: Vec<usize> = (0..handles.len())
        .filter(|&i| handles[i].is_some())
        .collect();
    let before = totals(handles);
    let bytes_before = sim.net.stats().delivered_bytes;
    let start = sim.net.elapsed();
    let mut ids = Vec::with_capacity(g.messages);
    let mut origins = stream(sim.args.seed, MEASURED_ORIGINS);
    // Per block of ten messages (counters over the block's time): how
    // the redundancy and the repairs evolve after a crash.
    let (mut rmr_blocks, mut graft_blocks) = (Vec::new(), Vec::new());
    let mut block_start = before;
    for k in 0..g.messages {
        ids.push(publish_random(&mut origins, handles, mode, recorder).await);
        tokio::time::sleep(Duration::from_millis(g.interval_ms)).await;
        if (k + 1) % 10 == 0 || k + 1 == g.messages {
            let now = totals(handles);
            let sent = now.data_sent - block_start.data_sent;
            let delivered = now.delivered - block_start.delivered;
            rmr_blocks.push(round4(sent as f64 / delivered.max(1) as f64 - 1.0));
            graft_blocks.push(now.grafts - block_start.grafts);
            block_start = now;
            sim.say(&format!(
                "gossip {mode:?}: {} messages published, last ten: rmr {:.3}, {} grafts",
                k + 1,
                rmr_blocks.last().copied().unwrap_or(0.0),
                graft_blocks.last().copied().unwrap_or(0)
            ));
        }
    }
    let want = live.len().saturating_sub(1) * ids.len();
    let all = sim
        .until(&format!("gossip {mode:?}: deliveries"), |_| {
            let rec = lock(recorder);
            let got: usize = ids
                .iter()
                .filter_map(|id| rec.messages.get(id))
                .map(|r| r.receivers.len())
                .sum();
            (got >= want, format!("{got}/{want} deliveries"))
        })
        .await;
    tokio::time::sleep(SETTLE).await;
    let after = totals(handles);
    let took = sim.net.elapsed() - start;
    let window_bytes = sim.net.stats().delivered_bytes - bytes_before;

    let rec = lock(recorder);
    let mut fractions = Vec::with_capacity(ids.len());
    let mut latencies_us = Vec::new();
    let (mut doubles, mut last_hop) = (0, 0u16);
    for id in &ids {
        let Some(r) = rec.messages.get(id) else {
            continue;
        };
        let others = live.len().saturating_sub(1).max(1);
        let got = r
            .receivers
            .iter()
            .filter(|i| **i != r.origin && handles[**i].is_some())
            .count();
        fractions.push(got as f64 / others as f64);
        doubles += r.doubles;
        if let Some(published) = r.published {
            for &(at, hops) in &r.deliveries {
                latencies_us.push(micros(at.saturating_duration_since(published)));
                last_hop = last_hop.max(hops);
            }
        }
    }
    latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        ms_1(latencies_us.get(i).copied().unwrap_or(0))
    };
    let (mut eager, mut lazy) = (0usize, 0usize);
    for h in handles.iter().flatten() {
        if let Some(t) = h.topics().into_iter().find(|t| t.topic == mode.topic()) {
            eager += t.eager;
            lazy += t.lazy;
        }
    }
    let n = live.len().max(1) as f64;
    let sent = after.data_sent - before.data_sent;
    let delivered = after.delivered - before.delivered;
    let reliability_min = fractions.iter().copied().fold(1.0, f64::min);
    let mut batch = Map::new();
    batch.insert("protocol".into(), json!(mode));
    batch.insert("measured_messages".into(), json!(ids.len()));
    batch.insert("live_nodes".into(), json!(live.len()));
    batch.insert("reliability_min".into(), json!(reliability_min));
    batch.insert(
        "reliability_mean".into(),
        json!(fractions.iter().sum::<f64>() / fractions.len().max(1) as f64),
    );
    batch.insert(
        "rmr".into(),
        json!(round4(sent as f64 / delivered.max(1) as f64 - 1.0)),
    );
    batch.insert(
        "duplicates_per_delivery".into(),
        json!(round4(
            (after.duplicates - before.duplicates) as f64 / delivered.max(1) as f64
        )),
    );
    batch.insert("double_deliveries".into(), json!(doubles));
    batch.insert("last_delivery_hop".into(), json!(last_hop));
    batch.insert("latency_p50_ms".into(), json!(pct(0.50)));
    batch.insert("latency_p99_ms".into(), json!(pct(0.99)));
    batch.insert(
        "latency_max_ms".into(),
        json!(ms_1(latencies_us.last().copied().unwrap_or(0))),
    );
    batch.insert(
        "gossip_bytes_per_node".into(),
        json!(((after.bytes_sent - before.bytes_sent) as f64 / n).round()),
    );
    batch.insert(
        "datagram_bytes_per_node".into(),
        json!((window_bytes as f64 / n).round()),
    );
    batch.insert("grafts".into(), json!(after.grafts - before.grafts));
    batch.insert("rmr_per_10_messages".into(), json!(rmr_blocks));
    batch.insert("grafts_per_10_messages".into(), json!(graft_blocks));
    batch.insert("reroutes".into(), json!(after.reroutes - before.reroutes));
    batch.insert("prunes".into(), json!(after.prunes - before.prunes));
    batch.insert("eager_mean".into(), json!(round4(eager as f64 / n)));
    batch.insert("lazy_mean".into(), json!(round4(lazy as f64 / n)));
    batch.insert("batch_ms".into(), json!(super::millis(took)));
    (batch, all.is_some() && reliability_min >= 1.0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds as milliseconds with one decimal.
fn ms_1(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
