//! `loss`: a stream of 1 KiB messages between two nodes (each on its own
//! thread and runtime) over the library's in-process [`MemoryNetwork`],
//! which drops datagrams at random (seeded) once the session is up.
//!
//! Two phases: a saturated one (send as fast as the queue takes them) gives
//! the throughput; a paced one (one message per millisecond, so no queue
//! builds up) gives the delivery latency, from a timestamp in each body.
//! Every message carries a sequence number: the receiver checks that each
//! arrives exactly once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gladius_p2p::{LinkFaults, MemoryNetwork};
use serde_json::json;

use super::node::{self, now_ns, Link, Server, SinkStats};
use super::stats::{round2, summarize};
use super::{mode_name, progress, Out, Plan};

/// Body size.
const SIZE: usize = 1024;
/// Messages of the saturated phase (full run).
const SATURATED: u64 = 20_000;
/// Messages of the paced phase (full run).
const PACED: u64 = 2_000;
/// Gap between paced messages.
const PACE: Duration = Duration::from_millis(1);
/// Seed of the loss RNG (runs are comparable).
const SEED: u64 = 6;

/// Run the scenario.
pub(super) fn run(plan: &Plan, out: &mut Out) -> Result<(), String> {
    // Whole percents, so `loss_percent` is an integer in the JSON.
    let rates: &[u32] = if plan.quick { &[5] } else { &[1, 5, 20] };
    let saturated = plan.scaled(SATURATED, 1000);
    let paced = plan.scaled(PACED, 200);
    for &percent in rates {
        for &encrypted in &plan.modes {
            progress(format_args!("loss {percent}% {}", mode_name(encrypted)));
            let r = measure(encrypted, f64::from(percent) / 100.0, saturated, paced)?;
            let sent = saturated + paced;
            let ok = r.delivered == sent && r.duplicates == 0 && r.dropped_events == 0;
            if !ok {
                out.fail(format!(
                    "loss {percent}% {}: delivered {} of {sent}, {} duplicates, {} plugin drops",
                    mode_name(encrypted),
                    r.delivered,
                    r.duplicates,
                    r.dropped_events
                ));
            }
            let mut paced_ns = r.paced_ns;
            let paced_latency = summarize(&mut paced_ns);
            let mut sat_ns = r.saturated_ns;
            let sat_latency = summarize(&mut sat_ns);
            let per_s = saturated as f64 / r.saturated_secs.max(1e-9);
            out.emit(json!({
                "scenario": "loss",
                "library": "gladius",
                "encrypted": encrypted,
                "loss_percent": percent,
                "size": SIZE,
                "msgs_per_s": round2(per_s),
                "mb_per_s": round2(per_s * SIZE as f64 / 1e6),
                "p50_delivery_us": paced_latency.p50_us,
                "p99_delivery_us": paced_latency.p99_us,
                "delivered": r.delivered,
                "sent": sent,
                "duplicates": r.duplicates,
                "ok": ok,
                "retries": r.retries,
                "saturated_messages": saturated,
                "paced_messages": paced,
                "paced_interval_us": PACE.as_micros() as u64,
                "saturated_p50_delivery_us": sat_latency.p50_us,
                "saturated_p99_delivery_us": sat_latency.p99_us,
                "quantiles_us": paced_latency.quantiles_us,
            }));
        }
    }
    Ok(())
}

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    delivered: u64,
    duplicates: u64,
    dropped_events: u64,
    retries: u64,
    saturated_secs: f64,
    saturated_ns: Vec<u64>,
    paced_ns: Vec<u64>,
}

/// A body: sequence number, send time ([`now_ns`]), padding to [`SIZE`].
fn body(seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(SIZE);
    b.put_u64_le(seq);
    b.put_u64_le(now_ns());
    b.resize(SIZE, 7);
    b.freeze()
}

fn measure(encrypted: bool, loss: f64, saturated: u64, paced: u64) -> Result<Outcome, String> {
    let mem = MemoryNetwork::new(SEED);
    let client_addr: SocketAddr = ([10, 0, 0, 1], 7000).into();
    let server_addr: SocketAddr = ([10, 0, 0, 2], 7000).into();
    let stats = Arc::new(SinkStats::tracking());
    let server = Server::start(
        node::config(encrypted),
        Link::Memory(mem.clone(), server_addr),
        stats.clone(),
    )?;
    let total = saturated + paced;
    let run = {
        let stats = stats.clone();
        let mem = mem.clone();
        node::client(
            node::config(encrypted),
            Link::Memory(mem.clone(), client_addr),
            move |net| async move {
                node::connect(&net, &[server_addr], Duration::from_secs(10)).await?;
                mem.set_faults(LinkFaults {
                    loss,
                    ..LinkFaults::default()
                });
                let stall = Duration::from_secs(30);
                let start = now_ns();
                let mut retries = 0;
                for seq in 0..saturated {
                    retries += node::send_reliably(&net, body(seq), &[server_addr]).await?;
                }
                stats.wait_for(saturated, stall).await?;
                let secs = stats.last_ns.load(Ordering::Relaxed).saturating_sub(start) as f64 / 1e9;
                let mut tick = tokio::time::interval(PACE);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for seq in saturated..total {
                    tick.tick().await;
                    retries += node::send_reliably(&net, body(seq), &[server_addr]).await?;
                }
                stats.wait_for(total, stall).await?;
                mem.set_faults(LinkFaults::default());
                Ok((secs, retries))
            },
        )
    };
    let dropped_events = server.stop()?;
    let (saturated_secs, retries) = run?;
    let tracked = stats
        .tracked
        .as_ref()
        .ok_or("no tracking")?
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let got = |range: std::ops::Range<u64>| -> Vec<u64> {
        range
            .filter_map(|s| tracked.latency_ns.get(s as usize).copied())
            .filter(|&ns| ns != u64::MAX)
            .collect()
    };
    let saturated_ns = got(0..saturated);
    let paced_ns = got(saturated..total);
    Ok(Outcome {
        delivered: (saturated_ns.len() + paced_ns.len()) as u64,
        duplicates: tracked.duplicates + tracked.malformed,
        dropped_events,
        retries,
        saturated_secs,
        saturated_ns,
        paced_ns,
    })
}
