//! `gladius demo`: a local swarm in one process, showing discovery, latency
//! audit, signed state and a broadcast at work. See the crate docs.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use gladius_p2p::{async_trait, Config, Message, Network, Plugin, Received};
use gladius_plugins::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle};
use gladius_plugins::latency::{LatencyAudit, LatencyConfig, LatencyHandle};
use gladius_plugins::signed_state::{
    recover_personal, EntryRecord, EthKey, EthSignature, SignedState, SignedStateConfig,
    SignedStateHandle,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// Interval of every plugin's timer in the demo (short, so it finishes in
/// seconds).
const TICK: Duration = Duration::from_millis(200);
/// How often the waits look at the swarm.
const POLL: Duration = Duration::from_millis(25);
/// Message type of the demo broadcast.
const HELLO_TYPE: &str = "demo.hello";
/// RTT samples per peer before the latency phase is done (so p50 and the
/// EWMA say something).
const MIN_SAMPLES: u64 = 3;
/// Latency rows shown for node 0.
const LATENCY_ROWS: usize = 16;

/// Options of `gladius demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many nodes to start (at least 2).
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(2..=1024))]
    nodes: u16,
    /// Plaintext mode: no encryption between the nodes.
    #[arg(long)]
    insecure: bool,
    /// Give up (exit 1, naming the phase) when the swarm has not converged
    /// this many seconds after the start.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Print one JSON object as the last stdout line (the human-readable
    /// report goes to stderr instead).
    #[arg(long)]
    json: bool,
}

/// Counts `demo.hello` deliveries per node.
struct HelloCounter {
    index: usize,
    delivered: Arc<Vec<AtomicU32>>,
}

#[async_trait]
impl Plugin for HelloCounter {
    fn name(&self) -> &str {
        "demo"
    }

    async fn new_message(&self, _net: &Network, msg: &Received) {
        if msg.message().msg_type() == HELLO_TYPE {
            self.delivered[self.index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Node {
    net: Network,
    addr: SocketAddr,
    discovery: DiscoveryHandle,
    latency: LatencyHandle,
    state: SignedStateHandle,
}

async fn start_node(
    index: usize,
    nodes: usize,
    insecure: bool,
    seed: Option<SocketAddr>,
    delivered: &Arc<Vec<AtomicU32>>,
) -> Result<Node, String> {
    let failed = |e: gladius_p2p::NetworkError| format!("node {index}: {e}");
    let config = Config::default()
        .with_plaintext(insecure)
        .with_keepalive_interval(Duration::from_millis(500))
        .with_idle_timeout(Duration::from_secs(3));
    let net = Network::new(config).map_err(|e| format!("bad configuration: {e}"))?;
    let mut discovery_config = DiscoveryConfig::default();
    discovery_config.interval = TICK;
    let (discovery_plugin, discovery) = Discovery::new(discovery_config);
    // Pings grow with N × table size: past 16 nodes, slow them down so the
    // swarm does not saturate the machine.
    let ping_every = TICK * u32::try_from(nodes.div_ceil(16)).unwrap_or(u32::MAX);
    let latency_config = LatencyConfig::default()
        .with_interval(ping_every)
        .with_timeout(ping_every)
        // Lenient: on a loaded machine (a debug build, many nodes) a few
        // late pongs must not get peers deleted and the swarm churning.
        .with_thresholds(3, 25);
    let (latency_plugin, latency) =
        LatencyAudit::new(latency_config).map_err(|e| format!("latency config: {e}"))?;
    let state_config = SignedStateConfig::default().with_sync_interval(TICK);
    let (state_plugin, state) = SignedState::new(EthKey::generate(), state_config);
    net.register_plugin(discovery_plugin)
        .await
        .map_err(failed)?;
    net.register_plugin(latency_plugin).await.map_err(failed)?;
    net.register_plugin(state_plugin).await.map_err(failed)?;
    net.register_plugin(HelloCounter {
        index,
        delivered: delivered.clone(),
    })
    .await
    .map_err(failed)?;
    let addr = net.listen("127.0.0.1:0").await.map_err(failed)?;
    if let Some(seed) = seed {
        net.add(seed).await.map_err(failed)?;
    }
    Ok(Node {
        net,
        addr,
        discovery,
        latency,
        state,
    })
}

/// Human-readable lines: stdout, or stderr with `--json`.
struct Say {
    json: bool,
}

impl Say {
    fn line(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if self.json {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn bar(prefix: &'static str, len: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner:.green} {prefix:<10.bold} [{bar:32.cyan/blue}] {pos:>5}/{len:<5} {msg} ({elapsed})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(prefix);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Poll `probe` (progress, done, message) until done or `deadline`; the
/// deadline is checked first, so a zero timeout always fails.
async fn wait(
    pb: &ProgressBar,
    deadline: Instant,
    mut probe: impl FnMut() -> (u64, bool, String),
) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let (pos, done, msg) = probe();
        pb.set_position(pos);
        pb.set_message(msg.clone());
        if Instant::now() >= deadline {
            pb.abandon();
            return Err(msg);
        }
        if done {
            pb.finish_and_clear();
            return Ok(t0.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn fmt_rtt(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0),
    )
}

/// What the demo found; becomes the JSON line.
#[derive(Default)]
struct Report {
    discovery_converged: bool,
    latency_measured: bool,
    state_converged: bool,
    broadcast_delivered: usize,
    broadcast_expected: usize,
    broadcast_duplicates: u64,
    start_ms: f64,
    discovery_ms: Option<f64>,
    latency_ms: Option<f64>,
    state_ms: Option<f64>,
    broadcast_ms: Option<f64>,
    root: Option<String>,
    sample: Option<Value>,
}

/// The swarm under demonstration.
struct Demo {
    nodes: Vec<Node>,
    delivered: Arc<Vec<AtomicU32>>,
    /// Peers each route table should reach: N-1, capped by the table size.
    target: usize,
    deadline: Instant,
    say: Say,
}

impl Demo {
    async fn discovery(&self, r: &mut Report) -> Result<(), String> {
        let n = self.nodes.len();
        let target = self.target;
        let pb = bar("discovery", (n * target) as u64);
        let took = wait(&pb, self.deadline, || {
            let live: Vec<usize> = self
                .nodes
                .iter()
                .map(|node| node.discovery.live_peers().len().min(target))
                .collect();
            let full = live.iter().filter(|&&l| l >= target).count();
            let pos = live.iter().sum::<usize>() as u64;
            (
                pos,
                full == n,
                format!("{full} of {n} nodes hold all {target} peers"),
            )
        })
        .await
        .map_err(|m| format!("discovery did not converge ({m})"))?;
        r.discovery_converged = true;
        r.discovery_ms = Some(ms(took));
        let cap = if target < n - 1 {
            format!(" (capped by the table size {target})")
        } else {
            String::new()
        };
        self.say.line(format!(
            "✓ discovery   every node's route table holds {target} live peers{cap}, \
             bootstrapped from node 0, in {} ms",
            ms(took)
        ));
        Ok(())
    }

    async fn latency(&self, r: &mut Report) -> Result<(), String> {
        let n = self.nodes.len();
        let target = self.target;
        let pb = bar("latency", (n * target) as u64);
        let took = wait(&pb, self.deadline, || {
            // Per node: (live route-table peers, how many have MIN_SAMPLES RTTs).
            let counts: Vec<(usize, usize)> = self
                .nodes
                .iter()
                .map(|node| {
                    let live = node.discovery.live_peers();
                    let measured = live
                        .iter()
                        .filter(|a| {
                            node.latency
                                .stats(**a)
                                .is_some_and(|s| s.samples >= MIN_SAMPLES)
                        })
                        .count();
                    (live.len(), measured)
                })
                .collect();
            let full = counts
                .iter()
                .filter(|(live, measured)| *live > 0 && measured == live)
                .count();
            pb.set_length(counts.iter().map(|c| c.0 as u64).sum());
            let pos = counts.iter().map(|c| c.1 as u64).sum();
            (
                pos,
                full == n,
                format!("{full} of {n} nodes measured every live peer"),
            )
        })
        .await
        .map_err(|m| format!("latency audit did not measure every peer ({m})"))?;
        r.latency_measured = true;
        r.latency_ms = Some(ms(took));
        self.say.line(format!(
            "✓ latency     every node has {MIN_SAMPLES}+ RTT samples of every live peer in {} ms",
            ms(took)
        ));
        // Node 0's view, closest first by median RTT (p50: one slow sample
        // moves it less than the EWMA), ties by address for a stable table.
        let node0 = &self.nodes[0];
        let index: BTreeMap<SocketAddr, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.addr, i))
            .collect();
        let mut peers = node0.latency.peers();
        peers.sort_by_key(|p| (p.p50.unwrap_or(Duration::MAX), p.addr));
        self.say.line(format!(
            "\n  RTT seen by node 0 ({}), closest first (by p50):",
            node0.addr
        ));
        self.say.line(format!(
            "  {:<8} {:<17} {:<7} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "peer", "address", "status", "samples", "min", "p50", "ewma", "p99"
        ));
        for p in peers.iter().take(LATENCY_ROWS) {
            let name = index
                .get(&p.addr)
                .map_or_else(|| "?".into(), |i| format!("node-{i}"));
            self.say.line(format!(
                "  {:<8} {:<17} {:<7} {:>7} {:>10} {:>10} {:>10} {:>10}",
                name,
                p.addr.to_string(),
                format!("{:?}", p.status).to_lowercase(),
                p.samples,
                fmt_rtt(p.min),
                fmt_rtt(p.p50),
                fmt_rtt(p.ewma),
                fmt_rtt(p.p99),
            ));
        }
        if peers.len() > LATENCY_ROWS {
            self.say
                .line(format!("  … and {} more", peers.len() - LATENCY_ROWS));
        }
        self.say.line("");
        Ok(())
    }

    async fn signed_state(&self, r: &mut Report) -> Result<(), String> {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            node.state
                .set("name", format!("node-{i}"))
                .await
                .map_err(|e| format!("node {i} could not set its name: {e}"))?;
        }
        let pb = bar("state", (n * n) as u64);
        let took = wait(&pb, self.deadline, || {
            let lens: Vec<usize> = self
                .nodes
                .iter()
                .map(|node| node.state.len().min(n))
                .collect();
            let roots: std::collections::BTreeSet<String> =
                self.nodes.iter().map(|node| node.state.root()).collect();
            let full = lens.iter().filter(|&&l| l == n).count();
            let pos = lens.iter().sum::<usize>() as u64;
            (
                pos,
                full == n && roots.len() == 1,
                format!(
                    "{full} of {n} nodes hold all {n} entries, {} distinct roots",
                    roots.len()
                ),
            )
        })
        .await
        .map_err(|m| format!("signed state did not converge ({m})"))?;
        r.state_converged = true;
        r.state_ms = Some(ms(took));
        let root = self.nodes[0].state.root();
        self.say.line(format!(
            "✓ state       {n} signed `name` fields, identical on all {n} nodes \
             (root {}…) in {} ms",
            &root[..root.len().min(18)],
            ms(took)
        ));
        r.root = Some(root);
        // One entry as node 0 holds it: node 1's name, signed by node 1.
        let signer = self.nodes[1].state.address();
        if let Some(e) = self.nodes[0].state.get(&signer, "name") {
            r.sample = Some(self.show_entry(&e));
        }
        Ok(())
    }

    fn show_entry(&self, e: &EntryRecord) -> Value {
        let verified = EthSignature::from_hex(&e.signature)
            .and_then(|sig| recover_personal(e.message.as_bytes(), &sig).ok())
            .is_some_and(|a| a == e.signer);
        self.say
            .line("\n  One entry, as node 0 holds it (verify with any Ethereum library,");
        self.say.line(
            "  e.g. ethers.verifyMessage(message, signature) or eth_account's \
             recover_message(encode_defunct(text=message), signature=…)):",
        );
        self.say.line(format!("    signer:    {}", e.signer));
        self.say.line(format!(
            "    field:     {} = {}",
            e.field,
            String::from_utf8_lossy(&e.value)
        ));
        self.say
            .line("    message:   (EIP-191 personal_sign of this text)");
        for l in e.message.lines() {
            self.say.line(format!("      | {l}"));
        }
        self.say.line(format!("    signature: {}", e.signature));
        self.say.line(format!(
            "    recovers to the signer here: {}\n",
            if verified { "yes" } else { "NO" }
        ));
        json!({
            "signer": e.signer.to_checksum(),
            "field": e.field,
            "value": String::from_utf8_lossy(&e.value),
            "timestamp": e.timestamp_ms,
            "message": e.message,
            "signature": e.signature,
            "verified": verified,
        })
    }

    async fn broadcast(&self, r: &mut Report) -> Result<(), String> {
        let msg = Message::new(HELLO_TYPE, "hello from node 0")
            .map_err(|e| format!("bad message: {e}"))?;
        let t0 = Instant::now();
        let report = self.nodes[0]
            .net
            .broadcast(msg)
            .await
            .map_err(|e| format!("broadcast failed: {e}"))?;
        let expected = report.queued.len() + report.failed.len();
        r.broadcast_expected = expected;
        let pb = bar("broadcast", expected as u64);
        let delivered = &self.delivered;
        let result = wait(&pb, self.deadline, || {
            let got = delivered
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) > 0)
                .count();
            (
                got as u64,
                got >= expected,
                format!("{got} of {expected} peers got it"),
            )
        })
        .await;
        r.broadcast_delivered = delivered
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count();
        r.broadcast_duplicates = delivered
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed).saturating_sub(1)))
            .sum();
        result.map_err(|m| format!("broadcast did not reach every peer ({m})"))?;
        r.broadcast_ms = Some(ms(t0.elapsed()));
        let failed = if report.failed.is_empty() {
            String::new()
        } else {
            format!(", {} not queued", report.failed.len())
        };
        self.say.line(format!(
            "✓ broadcast   one message from node 0 reached {} of {expected} peers{failed} in {} ms",
            r.broadcast_delivered,
            ms(t0.elapsed())
        ));
        Ok(())
    }

    /// Counters summed over all nodes: the core's, plus a few per plugin.
    async fn counters(&self) -> Map<String, Value> {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let mut add = |k: &str, v: u64| *sums.entry(k.to_owned()).or_default() += v;
        for node in &self.nodes {
            if let Ok(state) = node.net.network_state().await {
                if let Ok(Value::Object(c)) = serde_json::to_value(&state.counters) {
                    for (k, v) in c {
                        add(&k, v.as_u64().unwrap_or(0));
                    }
                }
                for p in &state.peers {
                    add("messages_in", p.messages_in);
                    add("messages_out", p.messages_out);
                }
                for p in &state.plugins {
                    add("plugin_events_dropped", p.events_dropped);
                    add("plugin_panics", p.panics);
                }
            }
            let d = node.discovery.counters();
            add("discovery_rounds", d.rounds);
            let l = node.latency.counters();
            add("pings_sent", l.pings_sent);
            add("pongs_received", l.pongs_received);
            add("pings_missed", l.pings_missed);
            let s = node.state.stats();
            add("state_rounds", s.rounds);
            add("state_bytes_sent", s.total.bytes_sent);
        }
        sums.into_iter().map(|(k, v)| (k, v.into())).collect()
    }

    async fn close(self) -> Vec<String> {
        let mut set = tokio::task::JoinSet::new();
        for (i, node) in self.nodes.into_iter().enumerate() {
            set.spawn(async move { node.net.close().await.map_err(|e| format!("node {i}: {e}")) });
        }
        let mut errors = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    }
}

fn fmt_phase(ms: Option<f64>) -> String {
    ms.map_or_else(|| "—".into(), |ms| format!("{ms} ms"))
}

/// Run `gladius demo`.
pub(crate) async fn run(args: DemoArgs) -> Result<(), String> {
    let n = usize::from(args.nodes);
    let say = Say { json: args.json };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.timeout);
    let mode = if args.insecure {
        "plaintext"
    } else {
        "encrypted"
    };
    say.line(format!(
        "gladius demo: {n} {mode} nodes on 127.0.0.1, discovery + latency audit + signed state, \
         timeout {} s\n",
        args.timeout
    ));

    let delivered: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
    let pb = bar("start", n as u64);
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for i in 0..n {
        let seed = nodes.first().map(|node| node.addr);
        match start_node(i, n, args.insecure, seed, &delivered).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                pb.abandon();
                for node in nodes {
                    let _ = node.net.close().await;
                }
                return Err(format!("demo: cannot start the nodes: {e}"));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut r = Report {
        start_ms: ms(t0.elapsed()),
        ..Report::default()
    };
    say.line(format!(
        "✓ start       {n} nodes listening, nodes 1..{} added only node 0 ({}), in {} ms",
        n - 1,
        nodes[0].addr,
        r.start_ms
    ));

    let table_size = nodes[0].discovery.config().table_size;
    let demo = Demo {
        nodes,
        delivered,
        target: (n - 1).min(table_size),
        deadline,
        say,
    };
    let outcome = async {
        demo.discovery(&mut r).await?;
        demo.latency(&mut r).await?;
        demo.signed_state(&mut r).await?;
        demo.broadcast(&mut r).await
    }
    .await;
    let counters = demo.counters().await;
    let say = Say { json: args.json };
    let close_errors = demo.close().await;
    let total = ms(t0.elapsed());

    say.line("\n  Summary");
    let rows: [(&str, String); 10] = [
        ("nodes", format!("{n} ({mode})")),
        (
            "route table target",
            format!("{} peers per node", (n - 1).min(table_size)),
        ),
        ("start", format!("{} ms", r.start_ms)),
        ("discovery", fmt_phase(r.discovery_ms)),
        ("latency", fmt_phase(r.latency_ms)),
        ("signed state", fmt_phase(r.state_ms)),
        ("broadcast", fmt_phase(r.broadcast_ms)),
        (
            "delivered",
            format!(
                "{} of {} ({} duplicates)",
                r.broadcast_delivered, r.broadcast_expected, r.broadcast_duplicates
            ),
        ),
        ("total", format!("{total} ms")),
        (
            "closed",
            if close_errors.is_empty() {
                "all nodes, gracefully".into()
            } else {
                close_errors.join("; ")
            },
        ),
    ];
    for (k, v) in rows {
        say.line(format!("  {k:<20} {v}"));
    }
    say.line("\n  Counters, summed over all nodes (zeros left out; --json has all)");
    for (k, v) in counters.iter().filter(|(_, v)| v.as_u64() != Some(0)) {
        say.line(format!("  {k:<28} {v}"));
    }

    let mut out = json!({
        "nodes": n,
        "encrypted": !args.insecure,
        "discovery_converged": r.discovery_converged,
        "latency_measured": r.latency_measured,
        "state_converged": r.state_converged,
        "broadcast_delivered": r.broadcast_delivered,
        "broadcast_expected": r.broadcast_expected,
        "broadcast_duplicates": r.broadcast_duplicates,
        "table_target": (n - 1).min(table_size),
        "start_ms": r.start_ms,
        "discovery_ms": r.discovery_ms,
        "latency_ms": r.latency_ms,
        "state_ms": r.state_ms,
        "broadcast_ms": r.broadcast_ms,
        "total_ms": total,
        "root": r.root,
        "sample_entry": r.sample,
        "counters": counters,
        "ok": outcome.is_ok(),
    });
    if let (Err(e), Some(obj)) = (&outcome, out.as_object_mut()) {
        obj.insert("error".into(), e.clone().into());
    }
    if args.json {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{out}").and_then(|()| stdout.flush());
    }
    outcome.map_err(|e| format!("demo: {e} within {} s", args.timeout))
}
