//! # peers: the same `rtt` and `throughput` scenarios as `gladius bench`, run
//! with other Rust P2P / reliable-UDP libraries
//!
//! Libraries (see `Cargo.lock` for the exact versions):
//!
//! - **rust-libp2p, TCP + Noise + Yamux** (`libp2p-tcp-noise-yamux`),
//!   `TCP_NODELAY` on; modes:
//!   - `stream`: one long-lived substream (`libp2p-stream`), every message
//!     its own length-prefixed frame, `write_all` + `flush` per message;
//!   - `stream-coalesced` (throughput only): the same stream behind a 64 KiB
//!     `BufWriter`, flushed only at the end (writes through when full);
//!   - `request-response` (rtt only): `libp2p-request-response`, which
//!     opens one substream per request.
//! - **rust-libp2p, QUIC** (`libp2p-quic`): the same three modes.
//! - **plain TCP** (`tcp`, plaintext, throughput at 64 KiB and 1 MiB
//!   only): the kernel's stream with nothing on top, `stream` mode; the
//!   "TCP's pace" that bulk transfers are compared with.
//! - **tokio_kcp** (plaintext KCP): `KcpNoDelayConfig::fastest()`, flush on
//!   write, stream mode; `stream` and `stream-coalesced` as above.
//!
//! Everything runs in this one process on 127.0.0.1; each endpoint has its
//! own OS thread and its own current-thread tokio runtime, as two processes
//! would. Each data point uses a fresh connection.
//!
//! Scenarios:
//!
//! - `rtt`: sequential request/echo round trips of 64 B and 1 KiB bodies,
//!   after a warm-up: p50, p90, p99, all 99 percentiles, round trips/s.
//!   With `--handoff` the stream round trips become `stream-handoff`: the
//!   stream is driven by a task of its own and the measuring loop hands it
//!   each request over a channel and waits on a oneshot for the reply, the
//!   shape of gladius's handle → driver hand-off (`Network::request`), so
//!   what that shape costs is measured on another library.
//! - `throughput`: one-way stream of 64 B, 1 KiB, 64 KiB and 1 MiB
//!   messages for a fixed time; messages/s and MB/s (10^6 bytes) *as
//!   received*: from the first send to the last byte received.
//!
//! ## Commands (from the repository root)
//!
//! ```text
//! # full run, JSON lines (10,000 round trips per rtt point, 3 s per throughput
//! # point), every point run 3 times in 3 rounds, the best run kept
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin peers -- --json --repeat 3 > bench/results/peers.jsonl
//! # quick run (1,000 round trips, 0.5 s), readable table
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin peers -- --quick
//! # only the points whose "scenario library mode" contains a string
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin peers -- --quick --only tokio_kcp
//! # plots (SVG and PNG) and markdown tables from any JSON-lines results
//! # (ours included; files named *pinned* hold the one-core round trips)
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin report -- bench/results/*.jsonl --out bench/results
//! ```
//!
//! `--repeat N` runs all points N times (N rounds over the list) and keeps,
//! per point, the run with the lowest p50 (rtt) or highest messages/s
//! (throughput); every run's figure stays in the line (`p50_us_runs`,
//! `msgs_per_s_runs`). On a shared machine load from elsewhere only ever
//! slows a run down, so the best run is the closest to a quiet machine; the
//! spread shows how noisy it was.
//!
//! Progress and errors go to stderr; a failing run is reported there and
//! skipped, the others still run (the exit status is then non-zero).

mod framing;
mod reqresp;
mod stats;
mod transports;

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio::sync::{Barrier, Notify};

use framing::{Received, Sent};
use transports::{Addr, Transport};

/// Message sizes of the `rtt` scenario.
const RTT_SIZES: [usize; 2] = [64, 1024];
/// Message sizes of the `throughput` scenario.
const THROUGHPUT_SIZES: [usize; 4] = [64, 1024, 64 * 1024, 1024 * 1024];
/// Message sizes of the bulk rows (plain TCP is measured at these only).
const BULK_SIZES: [usize; 2] = [64 * 1024, 1024 * 1024];

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    /// JSON lines instead of a table.
    json: bool,
    /// Unmeasured round trips before each rtt point.
    warmup: usize,
    /// Measured round trips per rtt point.
    round_trips: usize,
    /// Sending time per throughput point.
    duration: Duration,
    /// Only points whose "scenario library mode" contains this.
    only: Option<String>,
    /// Runs of every point; the best is kept.
    repeat: usize,
    /// Stream round trips with the hand-off of `framing::rtt_client_handoff`
    /// instead of the caller driving the stream.
    handoff: bool,
}

/// Usage text for `--help` and bad arguments.
const USAGE: &str =
    "usage: peers [--json] [--quick] [--repeat N] [--only TEXT] [--round-trips N] [--seconds S] [--handoff]";

impl Options {
    /// Parses `std::env::args`.
    fn parse() -> Result<Self> {
        let mut opts = Options {
            json: false,
            warmup: 1000,
            round_trips: 10_000,
            duration: Duration::from_secs(3),
            only: None,
            repeat: 1,
            handoff: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--json" => opts.json = true,
                "--handoff" => opts.handoff = true,
                "--quick" => {
                    opts.warmup = 100;
                    opts.round_trips = 1000;
                    opts.duration = Duration::from_millis(500);
                }
                "--only" => opts.only = Some(value("--only")?),
                "--repeat" => {
                    opts.repeat = value("--repeat")?.parse().context("--repeat")?;
                }
                "--round-trips" => {
                    opts.round_trips = value("--round-trips")?.parse().context("--round-trips")?;
                    opts.warmup = opts.round_trips / 10;
                }
                "--seconds" => {
                    let s: f64 = value("--seconds")?.parse().context("--seconds")?;
                    opts.duration = Duration::try_from_secs_f64(s).context("--seconds")?;
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if opts.repeat == 0 {
            bail!("--repeat must be at least 1");
        }
        if opts.round_trips == 0 {
            bail!("--round-trips must be at least 1");
        }
        Ok(opts)
    }
}

/// What one data point measures.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// Round trips over the long-lived stream.
    RttStream { size: usize },
    /// The same, the stream driven by a task of its own that the measuring
    /// loop hands each request to (`--handoff`).
    RttHandOff { size: usize },
    /// Round trips through `libp2p-request-response`.
    RttRequestResponse { size: usize },
    /// One-way stream.
    Throughput { size: usize, coalesce: bool },
}

impl Job {
    /// The `scenario` field.
    fn scenario(self) -> &'static str {
        match self {
            Job::RttStream { .. } | Job::RttHandOff { .. } | Job::RttRequestResponse { .. } => {
                "rtt"
            }
            Job::Throughput { .. } => "throughput",
        }
    }

    /// The `mode` field.
    fn mode(self) -> &'static str {
        match self {
            Job::RttStream { .. }
            | Job::Throughput {
                coalesce: false, ..
            } => "stream",
            Job::Throughput { coalesce: true, .. } => "stream-coalesced",
            Job::RttRequestResponse { .. } => "request-response",
            Job::RttHandOff { .. } => "stream-handoff",
        }
    }

    /// The `size` field.
    fn size(self) -> usize {
        match self {
            Job::RttStream { size }
            | Job::RttHandOff { size }
            | Job::RttRequestResponse { size }
            | Job::Throughput { size, .. } => size,
        }
    }
}

/// One `rtt` result line.
#[derive(Debug, Serialize)]
struct RttRow {
    scenario: &'static str,
    library: &'static str,
    mode: &'static str,
    size: usize,
    encrypted: bool,
    round_trips: usize,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    rtt_per_s: f64,
    quantiles_us: Vec<f64>,
    /// Runs of this point (`--repeat`); the one with the lowest p50 is shown.
    runs: usize,
    /// The p50 of every run.
    p50_us_runs: Vec<f64>,
}

/// One `throughput` result line.
#[derive(Debug, Serialize)]
struct ThroughputRow {
    scenario: &'static str,
    library: &'static str,
    mode: &'static str,
    size: usize,
    encrypted: bool,
    messages: u64,
    msgs_per_s: f64,
    mb_per_s: f64,
    seconds: f64,
    /// Runs of this point (`--repeat`); the one with the highest rate is shown.
    runs: usize,
    /// The messages/s of every run.
    msgs_per_s_runs: Vec<f64>,
}

/// A result line of either scenario.
#[derive(Debug)]
enum Row {
    /// Latency.
    Rtt(RttRow),
    /// Throughput.
    Throughput(ThroughputRow),
}

impl Row {
    /// The JSON line.
    fn json(&self) -> Result<String> {
        Ok(match self {
            Row::Rtt(r) => serde_json::to_string(r)?,
            Row::Throughput(r) => serde_json::to_string(r)?,
        })
    }
}

/// What the server endpoint of a point returns.
enum ServerOut {
    /// Echo server done.
    Echoed,
    /// Throughput receiver's counts.
    Received(Received),
}

/// What the client endpoint of a point returns.
enum ClientOut {
    /// Round-trip samples and the wall time of the measured part.
    Rtt(Vec<Duration>, Duration),
    /// Throughput sender's report.
    Sent(Sent),
}

/// Runs `body` on a new OS thread with its own current-thread runtime, bounded
/// by `limit`. If it fails it wakes the other endpoint through `abort`, and
/// it gives up as soon as the other endpoint does so.
fn spawn_endpoint<T, F, Fut>(
    name: &str,
    limit: Duration,
    abort: Arc<Notify>,
    body: F,
) -> Result<std::thread::JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let result = tokio::select! {
                    r = tokio::time::timeout(limit, body()) => {
                        r.map_err(|_| anyhow!("timed out after {limit:?}")).and_then(|r| r)
                    }
                    () = abort.notified() => Err(anyhow!("stopped: the other endpoint failed")),
                };
                if result.is_err() {
                    abort.notify_one();
                }
                result
            })
        })
        .context("spawning endpoint thread")?;
    Ok(thread)
}

/// Waits for the other endpoint to finish too, so that neither side tears
/// down its connection while the other still reads from it. Called only
/// after success: a failed endpoint stops the other one through `abort`.
async fn rendezvous(barrier: &Barrier) {
    let _ = tokio::time::timeout(Duration::from_secs(5), barrier.wait()).await;
}

/// Server endpoint of one point.
async fn server(
    transport: Transport,
    job: Job,
    addr_tx: mpsc::Sender<Addr>,
    barrier: Arc<Barrier>,
) -> Result<ServerOut> {
    if let Job::RttRequestResponse { .. } = job {
        reqresp::server(transport, addr_tx, rendezvous(&barrier)).await?;
        return Ok(ServerOut::Echoed);
    }
    let mut endpoint = transports::listen(transport, addr_tx).await?;
    let out = match job {
        Job::Throughput { .. } => framing::throughput_receiver(&mut endpoint.stream)
            .await
            .map(ServerOut::Received),
        _ => framing::rtt_server(&mut endpoint.stream)
            .await
            .map(|()| ServerOut::Echoed),
    };
    if out.is_ok() {
        rendezvous(&barrier).await;
    }
    out
}

/// Client endpoint of one point.
async fn client(
    transport: Transport,
    job: Job,
    opts: Options,
    addr_rx: mpsc::Receiver<Addr>,
    barrier: Arc<Barrier>,
) -> Result<ClientOut> {
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .context("server never announced its address")?;
    if let Job::RttRequestResponse { size } = job {
        let (samples, wall) =
            reqresp::client(transport, &addr, size, opts.warmup, opts.round_trips).await?;
        rendezvous(&barrier).await;
        return Ok(ClientOut::Rtt(samples, wall));
    }
    let mut endpoint = transports::connect(transport, &addr).await?;
    let out = match job {
        Job::Throughput { size, coalesce } => {
            framing::throughput_sender(&mut endpoint.stream, size, opts.duration, coalesce)
                .await
                .map(ClientOut::Sent)
        }
        Job::RttHandOff { size } => {
            framing::rtt_client_handoff(&mut endpoint.stream, size, opts.warmup, opts.round_trips)
                .await
                .map(|(samples, wall)| ClientOut::Rtt(samples, wall))
        }
        _ => framing::rtt_client(
            &mut endpoint.stream,
            job.size(),
            opts.warmup,
            opts.round_trips,
        )
        .await
        .map(|(samples, wall)| ClientOut::Rtt(samples, wall)),
    };
    if out.is_ok() {
        rendezvous(&barrier).await;
    }
    out
}

/// Runs one data point: a server thread and a client thread.
fn run_point(transport: Transport, job: Job, opts: &Options) -> Result<Row> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(2));
    let abort = Arc::new(Notify::new());
    let limit = Duration::from_secs(60) + opts.duration * 2;
    let server_thread = {
        let barrier = barrier.clone();
        spawn_endpoint("server", limit, abort.clone(), move || {
            server(transport, job, addr_tx, barrier)
        })?
    };
    let client_thread = {
        let opts = opts.clone();
        spawn_endpoint("client", limit, abort, move || {
            client(transport, job, opts, addr_rx, barrier)
        })?
    };
    let client_out = client_thread
        .join()
        .map_err(|_| anyhow!("client thread panicked"))?;
    let server_out = server_thread
        .join()
        .map_err(|_| anyhow!("server thread panicked"))?;
    let (client_out, server_out) = match (client_out, server_out) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(c), Err(s)) => bail!("client: {c:#}; server: {s:#}"),
        (Err(c), _) => return Err(c.context("client")),
        (_, Err(s)) => return Err(s.context("server")),
    };
    match (client_out, server_out) {
        (ClientOut::Rtt(mut samples, wall), _) => {
            let q = stats::quantiles(&mut samples);
            Ok(Row::Rtt(RttRow {
                scenario: "rtt",
                library: transport.library(),
                mode: job.mode(),
                size: job.size(),
                encrypted: transport.encrypted(),
                round_trips: samples.len(),
                p50_us: q.p50_us,
                p90_us: q.p90_us,
                p99_us: q.p99_us,
                rtt_per_s: round1(samples.len() as f64 / wall.as_secs_f64()),
                quantiles_us: q.all_us,
                runs: 1,
                p50_us_runs: Vec::new(),
            }))
        }
        (ClientOut::Sent(sent), ServerOut::Received(received)) => {
            let last = received.last.context("no message received")?;
            let seconds = last.duration_since(sent.start).as_secs_f64();
            if seconds <= 0.0 {
                bail!("no measurable time");
            }
            Ok(Row::Throughput(ThroughputRow {
                scenario: "throughput",
                library: transport.library(),
                mode: job.mode(),
                size: job.size(),
                encrypted: transport.encrypted(),
                messages: received.messages,
                msgs_per_s: round1(received.messages as f64 / seconds),
                mb_per_s: round1(received.bytes as f64 / seconds / 1e6),
                seconds: (seconds * 1e4).round() / 1e4,
                runs: 1,
                msgs_per_s_runs: Vec::new(),
            }))
        }
        (ClientOut::Sent(_), ServerOut::Echoed) => bail!("receiver reported nothing"),
    }
}

/// Rounds to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// All data points, in output order.
fn points() -> Vec<(Transport, Job)> {
    use Transport::*;
    let mut points = Vec::new();
    for size in RTT_SIZES {
        for t in [Libp2pTcp, Libp2pQuic, Kcp] {
            points.push((t, Job::RttStream { size }));
        }
        for t in [Libp2pTcp, Libp2pQuic] {
            points.push((t, Job::RttRequestResponse { size }));
        }
    }
    for size in THROUGHPUT_SIZES {
        for t in [Libp2pTcp, Libp2pQuic, Kcp] {
            for coalesce in [false, true] {
                points.push((t, Job::Throughput { size, coalesce }));
            }
        }
        if BULK_SIZES.contains(&size) {
            points.push((
                Tcp,
                Job::Throughput {
                    size,
                    coalesce: false,
                },
            ));
        }
    }
    points
}

/// Prints the readable table header of a scenario.
fn print_header(scenario: &str) {
    match scenario {
        "rtt" => println!(
            "\n{:<24} {:<18} {:>8} {:>5} {:>8} {:>9} {:>9} {:>9} {:>11}",
            "rtt: library", "mode", "size", "enc", "n", "p50 µs", "p90 µs", "p99 µs", "rtt/s"
        ),
        _ => println!(
            "\n{:<24} {:<18} {:>8} {:>5} {:>10} {:>12} {:>10}",
            "throughput: library", "mode", "size", "enc", "messages", "msgs/s", "MB/s"
        ),
    }
}

/// Prints one readable table row.
fn print_row(row: &Row) {
    match row {
        Row::Rtt(r) => println!(
            "{:<24} {:<18} {:>8} {:>5} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>11.0}",
            r.library,
            r.mode,
            r.size,
            r.encrypted,
            r.round_trips,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.rtt_per_s
        ),
        Row::Throughput(r) => println!(
            "{:<24} {:<18} {:>8} {:>5} {:>10} {:>12.0} {:>10.1}",
            r.library, r.mode, r.size, r.encrypted, r.messages, r.msgs_per_s, r.mb_per_s
        ),
    }
}

/// The figure by which the best of several runs of a point is chosen:
/// lowest median round trip, or highest message rate.
fn merit(row: &Row) -> f64 {
    match row {
        Row::Rtt(r) => -r.p50_us,
        Row::Throughput(r) => r.msgs_per_s,
    }
}

/// Keeps the best of the runs of one point and records all runs' main
/// figure in it (`p50_us_runs` / `msgs_per_s_runs`).
fn best_of(mut runs: Vec<Row>) -> Option<Row> {
    let all: Vec<f64> = runs
        .iter()
        .map(|r| match r {
            Row::Rtt(r) => r.p50_us,
            Row::Throughput(r) => r.msgs_per_s,
        })
        .collect();
    let best = (0..runs.len()).max_by(|&a, &b| merit(&runs[a]).total_cmp(&merit(&runs[b])))?;
    let mut row = runs.swap_remove(best);
    match &mut row {
        Row::Rtt(r) => {
            r.runs = all.len();
            r.p50_us_runs = all;
        }
        Row::Throughput(r) => {
            r.runs = all.len();
            r.msgs_per_s_runs = all;
        }
    }
    Some(row)
}

fn main() -> Result<()> {
    let opts = Options::parse()?;
    let selected: Vec<(Transport, Job)> = points()
        .into_iter()
        .map(|(t, j)| match j {
            Job::RttStream { size } if opts.handoff => (t, Job::RttHandOff { size }),
            _ => (t, j),
        })
        .filter(|(t, j)| {
            let label = format!("{} {} {}", j.scenario(), t.library(), j.mode());
            opts.only
                .as_ref()
                .is_none_or(|o| label.contains(o.as_str()))
        })
        .collect();
    // Rounds over all points rather than repeats of one point: a burst of
    // load from elsewhere then spoils one run of many points, not all runs
    // of one.
    let mut runs: Vec<Vec<Row>> = selected.iter().map(|_| Vec::new()).collect();
    let mut failures = 0;
    for round in 1..=opts.repeat {
        for ((transport, job), runs) in selected.iter().zip(&mut runs) {
            let label = format!(
                "{} {} {} {} B",
                job.scenario(),
                transport.library(),
                job.mode(),
                job.size()
            );
            eprintln!("run {round}/{}: {label}", opts.repeat);
            match run_point(*transport, *job, &opts) {
                Ok(row) => runs.push(row),
                Err(e) => {
                    failures += 1;
                    eprintln!("FAILED {label}: {e:#}");
                }
            }
            // Let the previous point's sockets and threads wind down.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut last_scenario = "";
    for ((_, job), runs) in selected.iter().zip(runs) {
        let Some(row) = best_of(runs) else { continue };
        if opts.json {
            println!("{}", row.json()?);
        } else {
            if job.scenario() != last_scenario {
                print_header(job.scenario());
                last_scenario = job.scenario();
            }
            print_row(&row);
        }
    }
    if failures > 0 {
        bail!("{failures} run(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny parameters: a smoke test of every path, not a measurement.
    fn tiny() -> Options {
        Options {
            json: true,
            warmup: 5,
            round_trips: 50,
            duration: Duration::from_millis(100),
            only: None,
            repeat: 1,
            handoff: false,
        }
    }

    #[test]
    fn every_transport_and_mode_completes() {
        let opts = tiny();
        let cases = [
            (Transport::Libp2pTcp, Job::RttStream { size: 64 }),
            (Transport::Libp2pQuic, Job::RttRequestResponse { size: 64 }),
            (Transport::Kcp, Job::RttStream { size: 1024 }),
            (Transport::Kcp, Job::RttHandOff { size: 64 }),
            (
                Transport::Libp2pTcp,
                Job::Throughput {
                    size: 1024,
                    coalesce: true,
                },
            ),
            (
                Transport::Kcp,
                Job::Throughput {
                    size: 1024 * 1024,
                    coalesce: false,
                },
            ),
            (
                Transport::Tcp,
                Job::Throughput {
                    size: 64 * 1024,
                    coalesce: false,
                },
            ),
        ];
        for (transport, job) in cases {
            let row = run_point(transport, job, &opts)
                .unwrap_or_else(|e| panic!("{transport:?} {job:?}: {e:#}"));
            match row {
                Row::Rtt(r) => {
                    assert_eq!(r.round_trips, 50);
                    assert_eq!(r.quantiles_us.len(), 99);
                    assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us);
                }
                Row::Throughput(r) => {
                    assert!(r.messages > 0);
                    assert!(r.mb_per_s > 0.0);
                }
            }
        }
    }
}
