//! `gladius bench`: how fast gladius is on this machine, next to raw UDP
//! doing the same work in the same run.
//!
//! Scenarios (each encrypted and plaintext unless `--mode` says otherwise):
//!
//! * `rtt` — sequential request/reply round trips ([`rtt`]);
//! * `throughput` — a one-way stream between two nodes ([`throughput`]);
//! * `fanout` — one node sending to many ([`fanout`]);
//! * `scale` — many nodes in one process: memory and idle CPU ([`scale`]);
//! * `loss` — a stream over an in-process lossy link ([`loss`]).
//!
//! With `--json` every result is one JSON object per line on stdout
//! (progress, the legend and the verdicts go to stderr); otherwise a
//! legend, a table and a one-line verdict per scenario. Every line has
//! `scenario` and `library` (`gladius` or `raw-udp`).

mod fanout;
mod loss;
mod node;
mod rtt;
mod scale;
mod stats;
mod throughput;
mod udp;
mod verdict;

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::Value;

/// The scenarios, in the order they run. `scale` goes first: it measures
/// resident memory, which is cleanest before the other scenarios have left
/// freed (but still resident) memory in the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// 100, 500 and 1000 nodes with 8 peers each: memory and idle CPU.
    Scale,
    /// Request/reply round trips, 64 B and 1 KiB; raw UDP ping-pong baseline.
    Rtt,
    /// One-way stream, 64 B to 1 MiB bodies; raw UDP one-way baseline.
    Throughput,
    /// One node sending 1 KiB messages to 8, 32 and 128 peers.
    Fanout,
    /// A stream under 1%, 5% and 20% random loss.
    Loss,
}

/// Which encryption modes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Encrypted (the default of the library) and plaintext.
    Both,
    /// Encrypted only.
    Encrypted,
    /// Plaintext only.
    Plaintext,
}

/// Options of `gladius bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Scenario to run (repeatable or comma-separated) [default: all, in
    /// the order scale, rtt, throughput, fanout, loss].
    #[arg(
        long = "scenario",
        value_enum,
        value_delimiter = ',',
        value_name = "NAME"
    )]
    scenarios: Vec<Scenario>,
    /// Encryption modes to run.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Reduced run, well under a minute: 1000 round trips, a tenth of the
    /// messages, fan-out to 8 and 32 peers, scale with 100 nodes and a 2 s
    /// idle window, loss at 5% only.
    #[arg(long)]
    quick: bool,
    /// One JSON object per result line on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Round trips per rtt measurement [default: 10000; 1000 with --quick].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Runs of every rtt point (rounds over all of them), keeping per
    /// point the run with the lowest p50, as `bench/peers --repeat` does;
    /// every run's p50 stays in the line (`p50_us_runs`). Load from
    /// elsewhere only ever slows a run down, so the best is the closest to
    /// a quiet machine. Other scenarios run once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Node counts of the scale scenario (repeatable or comma-separated)
    /// [default: 100,500,1000; 100 with --quick].
    #[arg(long = "nodes", value_delimiter = ',', value_name = "N")]
    nodes: Vec<usize>,
    /// Peer counts of the fanout scenario (repeatable or comma-separated)
    /// [default: 8,32,128; 8,32 with --quick].
    #[arg(long = "peers", value_delimiter = ',', value_name = "N")]
    peers: Vec<usize>,
    /// Idle window of the scale scenario in seconds [default: 5; 2 with
    /// --quick].
    #[arg(long, value_name = "SECS")]
    idle_secs: Option<f64>,
}

/// What one run measures, derived from the options.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    quick: bool,
    modes: Vec<bool>,
    rounds: usize,
    /// Runs of every rtt point (`--repeat`).
    repeat: usize,
    warmup: usize,
    nodes: Vec<usize>,
    peers: Vec<usize>,
    idle_secs: f64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let quick = args.quick;
        let modes = match args.mode {
            Mode::Both => vec![true, false],
            Mode::Encrypted => vec![true],
            Mode::Plaintext => vec![false],
        };
        let nodes = if !args.nodes.is_empty() {
            args.nodes.clone()
        } else if quick {
            vec![100]
        } else {
            vec![100, 500, 1000]
        };
        let peers = if !args.peers.is_empty() {
            args.peers.iter().map(|&p| p.max(1)).collect()
        } else if quick {
            vec![8, 32]
        } else {
            vec![8, 32, 128]
        };
        Self {
            quick,
            peers,
            modes,
            rounds: args
                .rounds
                .unwrap_or(if quick { 1000 } else { 10_000 })
                .max(1),
            repeat: args.repeat.max(1),
            warmup: if quick { 100 } else { 500 },
            nodes,
            idle_secs: args
                .idle_secs
                .unwrap_or(if quick { 2.0 } else { 5.0 })
                .max(0.1),
        }
    }

    /// `full` normally, `full / 10` (at least `min`) with `--quick`.
    fn scaled(&self, full: u64, min: u64) -> u64 {
        if self.quick {
            (full / 10).max(min)
        } else {
            full
        }
    }
}

/// Where results go: JSON lines or tables on stdout.
#[derive(Debug)]
pub(crate) struct Out {
    json: bool,
    header: Option<(String, String)>,
    failures: Vec<String>,
    /// The current scenario's lines, for its verdict.
    lines: Vec<Value>,
}

impl Out {
    /// Print one result (and a human line about it on stderr).
    fn emit(&mut self, v: Value) {
        if let Some(line) = verdict::summary(&v) {
            eprintln!("bench:     -> {line}");
        }
        self.lines.push(v.clone());
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let _ = writeln!(stdout, "{v}");
        } else {
            let scenario = v["scenario"].as_str().unwrap_or("").to_owned();
            let library = v["library"].as_str().unwrap_or("").to_owned();
            let cols = columns(&scenario, &library);
            let key = (scenario.clone(), library.clone());
            if self.header.as_ref() != Some(&key) {
                let head: Vec<String> = cols
                    .iter()
                    .map(|c| format!("{c:>w$}", w = width(c)))
                    .collect();
                let _ = writeln!(stdout, "\n{scenario} / {library}\n{}", head.join(" "));
                self.header = Some(key);
            }
            let row: Vec<String> = cols
                .iter()
                .map(|c| format!("{:>w$}", cell(c, &v[*c]), w = width(c)))
                .collect();
            let _ = writeln!(stdout, "{}", row.join(" "));
        }
        let _ = stdout.flush();
    }

    /// A human line: on stdout with the tables, on stderr with `--json`
    /// (stdout then carries JSON lines only).
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }

    /// Note a failed check (the run goes on but exits 1).
    fn fail(&mut self, what: String) {
        eprintln!("bench: FAILED: {what}");
        self.failures.push(what);
    }
}

/// Table columns of one kind of result line.
fn columns(scenario: &str, library: &str) -> &'static [&'static str] {
    match (scenario, library) {
        ("rtt", "raw-udp") => &[
            "size",
            "udp_api",
            "round_trips",
            "p50_us",
            "p90_us",
            "p99_us",
            "rtt_per_s",
        ],
        ("rtt", _) => &[
            "size",
            "encrypted",
            "round_trips",
            "p50_us",
            "p90_us",
            "p99_us",
            "rtt_per_s",
            "udp_p50_us",
            "udp_tokio_p50_us",
            "ratio_p50",
            "ratio_p50_tokio",
        ],
        ("throughput", "raw-udp") => &[
            "size",
            "udp_api",
            "messages",
            "received",
            "msgs_per_s",
            "mb_per_s",
            "lost_percent",
        ],
        ("throughput", _) => &[
            "size",
            "encrypted",
            "messages",
            "msgs_per_s",
            "mb_per_s",
            "retries",
            "udp_size",
            "udp_msgs_per_s",
            "udp_mb_per_s",
            "ratio_msgs",
            "ratio_mb",
            "udp_gso_mb_per_s",
            "ratio_mb_gso",
        ],
        ("fanout", "raw-udp") => &[
            "peers",
            "size",
            "udp_api",
            "deliveries_per_s",
            "mb_per_s",
            "lost_percent",
        ],
        ("fanout", _) => &[
            "peers",
            "size",
            "encrypted",
            "deliveries_per_s",
            "mb_per_s",
            "retries",
            "sender_datagrams_out",
            "sender_retransmits",
            "udp_deliveries_per_s",
            "udp_tokio_deliveries_per_s",
            "ratio",
        ],
        ("scale", _) => &[
            "nodes",
            "encrypted",
            "sessions",
            "connect_ms",
            "rss_bytes",
            "rss_per_node_bytes",
            "rss_per_session_bytes",
            "idle_cpu_percent",
            "idle_datagrams_per_s",
        ],
        ("loss", _) => &[
            "loss_percent",
            "encrypted",
            "size",
            "sent",
            "delivered",
            "duplicates",
            "msgs_per_s",
            "mb_per_s",
            "p50_delivery_us",
            "p99_delivery_us",
            "saturated_p99_delivery_us",
        ],
        _ => &["scenario"],
    }
}

fn width(col: &str) -> usize {
    col.len().max(9)
}

fn cell(col: &str, v: &Value) -> String {
    match v {
        Value::Bool(b) if col == "encrypted" => if *b { "enc" } else { "plain" }.into(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            if col.starts_with("ratio") {
                format!("{x:.3}")
            } else {
                format!("{x:.1}")
            }
        }
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Run `gladius bench`. Builds its own threads and runtimes: call it
/// outside any tokio runtime.
pub(crate) fn run(args: BenchArgs) -> Result<(), String> {
    let plan = Plan::new(&args);
    let scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        let mut s = args.scenarios.clone();
        s.sort_by_key(|x| *x as u8);
        s.dedup();
        s
    };
    let mut out = Out {
        json: args.json,
        header: None,
        failures: Vec::new(),
        lines: Vec::new(),
    };
    eprintln!("bench: {}", machine());
    let start = std::time::Instant::now();
    let mut verdicts = Vec::new();
    let total = scenarios.len();
    for (i, s) in scenarios.into_iter().enumerate() {
        let t = std::time::Instant::now();
        eprintln!(
            "bench: [{}/{total}] {}, {:.0} s into the run",
            i + 1,
            verdict::name(s),
            start.elapsed().as_secs_f64()
        );
        out.say("");
        for line in verdict::legend(s) {
            out.say(line);
        }
        out.header = None;
        let result = match s {
            Scenario::Rtt => rtt::run(&plan, &mut out),
            Scenario::Throughput => throughput::run(&plan, &mut out),
            Scenario::Fanout => fanout::run(&plan, &mut out),
            Scenario::Scale => scale::run(&plan, &mut out),
            Scenario::Loss => loss::run(&plan, &mut out),
        };
        if let Err(e) = result {
            out.fail(format!("{s:?}: {e}"));
        }
        let v = verdict::verdict(s, &out.lines);
        out.lines.clear();
        out.say(&format!("\nverdict: {v}"));
        eprintln!(
            "bench: {} took {:.1} s",
            verdict::name(s),
            t.elapsed().as_secs_f64()
        );
        verdicts.push(v);
    }
    eprintln!("bench: done in {:.1} s", start.elapsed().as_secs_f64());
    if verdicts.len() > 1 {
        out.say("\nverdicts:");
        for v in &verdicts {
            out.say(&format!("  {v}"));
        }
    }
    if out.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            out.failures.len(),
            out.failures.join("; ")
        ))
    }
}

/// Progress on stderr: what is being measured now.
fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("bench:   {what} ...");
}

/// One line about the machine: cores, CPU model, load.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} cores, {cpu}, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// "encrypted" or "plaintext".
fn mode_name(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted"
    } else {
        "plaintext"
    }
}
