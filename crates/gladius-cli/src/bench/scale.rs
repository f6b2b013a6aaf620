//! `scale`: N nodes in one multi-thread runtime on a ring lattice (node i
//! adds nodes i+1..i+4, so every node has 8 sessions: 4 outbound, 4
//! inbound; N × 4 sessions in all). Measures the time until every session
//! is up, resident memory (VmRSS) per node and per session, and the CPU the
//! process burns while idle (thread run times, or utime + stime, over an
//! idle window).

use std::time::{Duration, Instant};

use gladius_p2p::{ConnectionState, Network};
use serde_json::json;

use super::node;
use super::stats::round2;
use super::{mode_name, progress, Out, Plan};

/// Peers each node adds (it gets as many inbound).
const ADDS: usize = 4;
/// Ticks per second of /proc/self/stat times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Run the scenario.
pub(super) fn run(plan: &Plan, out: &mut Out) -> Result<(), String> {
    for &nodes in &plan.nodes {
        if nodes <= 2 * ADDS {
            return Err(format!("--nodes must be above {}", 2 * ADDS));
        }
        for &encrypted in &plan.modes {
            progress(format_args!("scale {nodes} nodes {}", mode_name(encrypted)));
            let line = measure(encrypted, nodes, plan.idle_secs)?;
            out.emit(line);
        }
    }
    Ok(())
}

fn measure(encrypted: bool, n: usize, idle_secs: f64) -> Result<serde_json::Value, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let result = rt.block_on(async {
        let rss_before = rss_bytes()?;
        let started = Instant::now();
        let mut nets = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let net = Network::new(node::config(encrypted)).map_err(|e| e.to_string())?;
            addrs.push(
                net.listen("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("listen: {e}"))?,
            );
            nets.push(net);
        }
        for (i, net) in nets.iter().enumerate() {
            for k in 1..=ADDS {
                net.add(addrs[(i + k) % n])
                    .await
                    .map_err(|e| format!("add: {e}"))?;
            }
        }
        let timeout = Duration::from_secs(120);
        loop {
            let (up, _) = census(&nets).await?;
            if up == n * 2 * ADDS {
                break;
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "only {up} of {} session ends up after {timeout:?}",
                    n * 2 * ADDS
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_ms = started.elapsed().as_secs_f64() * 1e3;
        // Let the last handshakes' garbage and timers settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = rss_bytes()?;
        let (_, datagrams_before) = census(&nets).await?;
        let cpu_before = cpu_secs()?;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
        let cpu = cpu_secs()? - cpu_before;
        let window = t.elapsed().as_secs_f64();
        let (up, datagrams_after) = census(&nets).await?;
        let mut closing = tokio::task::JoinSet::new();
        for net in nets {
            closing.spawn(async move { net.close().await });
        }
        while closing.join_next().await.is_some() {}
        let sessions = n * ADDS;
        let grown = rss_after.saturating_sub(rss_before) as f64;
        Ok(json!({
            "scenario": "scale",
            "library": "gladius",
            "encrypted": encrypted,
            "nodes": n,
            "sessions": sessions,
            "sessions_up_after_idle": up / 2,
            "connect_ms": round2(connect_ms),
            "rss_before_bytes": rss_before,
            "rss_bytes": rss_after,
            "rss_per_node_bytes": (grown / n as f64).round(),
            "rss_per_session_bytes": (grown / sessions as f64).round(),
            "idle_secs": round2(window),
            "idle_cpu_percent": (cpu / window * 100.0 * 1000.0).round() / 1000.0,
            "idle_datagrams_per_s": round2(
                datagrams_after.saturating_sub(datagrams_before) as f64 / window
            ),
        }))
    });
    rt.shutdown_background();
    result
}

/// Connected session ends over all nodes, and datagrams sent in all.
async fn census(nets: &[Network]) -> Result<(usize, u64), String> {
    let mut up = 0;
    let mut datagrams = 0;
    for net in nets {
        let state = net.network_state().await.map_err(|e| e.to_string())?;
        up += state
            .peers
            .iter()
            .filter(|p| p.connection == ConnectionState::Connected)
            .count();
        datagrams += state.counters.datagrams_out;
    }
    Ok((up, datagrams))
}

/// The process's resident memory (VmRSS) in bytes.
fn rss_bytes() -> Result<u64, String> {
    crate::metrics::rss_bytes().ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// CPU seconds the process has used: the sum of its threads' run times
/// from /proc/self/task/*/schedstat (nanoseconds), else utime + stime from
/// /proc/self/stat (10 ms ticks, too coarse for a 2 s window).
fn cpu_secs() -> Result<f64, String> {
    schedstat_secs().map_or_else(stat_secs, Ok)
}

fn schedstat_secs() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// User plus system CPU seconds from /proc/self/stat.
fn stat_secs() -> Result<f64, String> {
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // Fields after the parenthesised command name: state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Ok((u + s) / USER_HZ),
        _ => Err("bad /proc/self/stat".into()),
    }
}
