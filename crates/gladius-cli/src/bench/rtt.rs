//! `rtt`: sequential request/reply round trips between two nodes, each on
//! its own thread and runtime: `Network::request` answered by a request
//! handler in the server's driver (`Network::handle_requests`, see
//! `node::answer_in_driver`). Baseline: raw UDP ping-pong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gladius_p2p::Message;
use serde_json::{json, Value};

use super::node::{self, Link, Server, SinkStats, BENCH_TYPE};
use super::stats::{ratio, round2, summarize, Summary};
use super::udp::{self, Api};
use super::{mode_name, progress, Out, Plan};

/// Body sizes measured.
const SIZES: [usize; 2] = [64, 1024];

/// Run the scenario: `plan.repeat` rounds over every point (sizes, the
/// raw-UDP baselines and each mode), keeping per point the run with the
/// lowest p50, as `bench/peers --repeat` does; every run's p50 stays in
/// the line (`p50_us_runs`). Rounds over all points rather than repeats of
/// one, so that a burst of load from elsewhere hits every point alike.
pub(super) fn run(plan: &Plan, out: &mut Out) -> Result<(), String> {
    let rounds = plan.repeat;
    let mut best: Vec<Best> = Vec::new();
    for round in 1..=rounds {
        let mut point = 0;
        for size in SIZES {
            if rounds > 1 {
                progress(format_args!("rtt {size} B, round {round}/{rounds}"));
            }
            progress(format_args!("rtt {size} B raw UDP"));
            for api in [Api::Blocking, Api::Tokio] {
                let s = summarize(&mut udp::ping_pong(api, size, plan.warmup, plan.rounds)?);
                keep(&mut best, point, s);
                point += 1;
            }
            for &encrypted in &plan.modes {
                progress(format_args!(
                    "rtt {size} B gladius {}",
                    mode_name(encrypted)
                ));
                let s = summarize(&mut measure(encrypted, size, plan.warmup, plan.rounds)?);
                keep(&mut best, point, s);
                point += 1;
            }
        }
    }
    let mut points = best.into_iter();
    for size in SIZES {
        let (Some(blocking), Some(tokio)) = (points.next(), points.next()) else {
            break;
        };
        for (api, b) in [(Api::Blocking, &blocking), (Api::Tokio, &tokio)] {
            let mut line = line("raw-udp", size, false, b);
            line["udp_api"] = api.name().into();
            out.emit(line);
        }
        for &encrypted in &plan.modes {
            let Some(ours) = points.next() else { break };
            let mut line = line("gladius", size, encrypted, &ours);
            let (blocking, tokio) = (&blocking.summary, &tokio.summary);
            let ours = &ours.summary;
            let extra = json!({
                "udp_p50_us": blocking.p50_us,
                "udp_p99_us": blocking.p99_us,
                "udp_rtt_per_s": per_s(blocking),
                "udp_tokio_p50_us": tokio.p50_us,
                "udp_tokio_p99_us": tokio.p99_us,
                "udp_tokio_rtt_per_s": per_s(tokio),
                "ratio_p50": ratio(ours.p50_us, blocking.p50_us),
                "ratio_p99": ratio(ours.p99_us, blocking.p99_us),
                "ratio_p50_tokio": ratio(ours.p50_us, tokio.p50_us),
            });
            if let (Some(l), Value::Object(e)) = (line.as_object_mut(), extra) {
                l.extend(e);
            }
            out.emit(line);
        }
    }
    Ok(())
}

/// One point's best run so far, and every run's p50.
struct Best {
    summary: Summary,
    p50_us_runs: Vec<f64>,
}

/// Keep `s` as point `i`'s run if its p50 is the lowest yet.
fn keep(best: &mut Vec<Best>, i: usize, s: Summary) {
    match best.get_mut(i) {
        Some(b) => {
            b.p50_us_runs.push(s.p50_us);
            if s.p50_us < b.summary.p50_us {
                b.summary = s;
            }
        }
        None => best.push(Best {
            p50_us_runs: vec![s.p50_us],
            summary: s,
        }),
    }
}

/// Round trips per second of a sequential run: 1 / mean round trip.
fn per_s(s: &Summary) -> f64 {
    if s.mean_us > 0.0 {
        round2(1e6 / s.mean_us)
    } else {
        0.0
    }
}

/// The common keys of an rtt line.
fn line(library: &str, size: usize, encrypted: bool, best: &Best) -> Value {
    let s = &best.summary;
    json!({
        "scenario": "rtt",
        "library": library,
        "size": size,
        "encrypted": encrypted,
        "round_trips": s.n,
        "p50_us": s.p50_us,
        "p90_us": s.p90_us,
        "p99_us": s.p99_us,
        "max_us": s.max_us,
        "mean_us": s.mean_us,
        "rtt_per_s": per_s(s),
        "answered_by": if library == "gladius" { "request_handler" } else { "" },
        "quantiles_us": s.quantiles_us,
        "p50_us_runs": best.p50_us_runs,
    })
}

/// `warmup + rounds` requests of `size` bytes; the last `rounds` round-trip
/// times in ns.
fn measure(encrypted: bool, size: usize, warmup: usize, rounds: usize) -> Result<Vec<u64>, String> {
    let server = Server::start(
        node::config(encrypted),
        Link::Udp,
        Arc::new(SinkStats::default()),
    )?;
    let peer = server.addr;
    let samples = node::client(node::config(encrypted), Link::Udp, move |net| async move {
        node::connect(&net, &[peer], Duration::from_secs(10)).await?;
        let body = Bytes::from(vec![7u8; size]);
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..warmup + rounds {
            let msg = Message::new(BENCH_TYPE, body.clone()).map_err(|e| e.to_string())?;
            let t = Instant::now();
            let reply = net
                .request(msg, peer, Duration::from_secs(5))
                .await
                .map_err(|e| format!("request: {e}"))?;
            let ns = t.elapsed().as_nanos() as u64;
            if reply.message().body().len() != size {
                return Err("the reply's body differs from the request's".into());
            }
            if i >= warmup {
                samples.push(ns);
            }
        }
        Ok(samples)
    })?;
    server.stop()?;
    Ok(samples)
}
