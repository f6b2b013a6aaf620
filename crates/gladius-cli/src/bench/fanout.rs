//! `fanout`: one node (own thread and runtime) sending 1 KiB messages to
//! every one of N peers, which run together in one multi-thread runtime
//! and count what arrives. Each message goes out through one
//! `broadcast_to(msg, all peers)` call; peers whose queue is full get it
//! again once `wait_for_room` returns, so nothing is dropped. Baseline: raw UDP, every
//! datagram sent to each of N sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gladius_p2p::Network;
use serde_json::json;

use super::node::{self, now_ns, plugin_drops, Sink, SinkStats};
use super::stats::{ratio, round2};
use super::udp::{self, Api};
use super::{mode_name, progress, Out, Plan};

/// Body size.
const SIZE: usize = 1024;
/// Deliveries (messages × peers) per measurement (full run).
const DELIVERIES: u64 = 256_000;

/// Run the scenario.
pub(super) fn run(plan: &Plan, out: &mut Out) -> Result<(), String> {
    for &peers in &plan.peers {
        let messages = plan.scaled(DELIVERIES, 1000) / peers as u64;
        progress(format_args!("fanout {peers} peers raw UDP"));
        let blocking = udp::one_way(Api::Blocking, SIZE, messages, peers)?;
        let tokio = udp::one_way(Api::Tokio, SIZE, messages, peers)?;
        for (api, r) in [(Api::Blocking, &blocking), (Api::Tokio, &tokio)] {
            out.emit(json!({
                "scenario": "fanout",
                "library": "raw-udp",
                "size": SIZE,
                "encrypted": false,
                "peers": peers,
                "udp_api": api.name(),
                "messages": messages,
                "deliveries": r.received,
                "deliveries_per_s": round2(r.msgs_per_s()),
                "mb_per_s": round2(r.msgs_per_s() * SIZE as f64 / 1e6),
                "lost_percent": round2(r.lost_percent()),
            }));
        }
        for &encrypted in &plan.modes {
            progress(format_args!(
                "fanout {peers} peers x {messages} gladius {}",
                mode_name(encrypted)
            ));
            let f = measure(encrypted, peers, messages)?;
            let per_s = f.deliveries as f64 / f.secs.max(1e-9);
            out.emit(json!({
                "scenario": "fanout",
                "library": "gladius",
                "size": SIZE,
                "encrypted": encrypted,
                "peers": peers,
                "messages": messages,
                "deliveries": f.deliveries,
                "deliveries_per_s": round2(per_s),
                "mb_per_s": round2(per_s * SIZE as f64 / 1e6),
                "retries": f.retries,
                "sender_datagrams_out": f.datagrams_out,
                "sender_retransmits": f.retransmits,
                "sender_spurious_retransmits": f.spurious_retransmits,
                "secs": round2(f.secs),
                "udp_deliveries_per_s": round2(blocking.msgs_per_s()),
                "udp_tokio_deliveries_per_s": round2(tokio.msgs_per_s()),
                "ratio": ratio(per_s, blocking.msgs_per_s()),
                "ratio_tokio": ratio(per_s, tokio.msgs_per_s()),
            }));
        }
    }
    Ok(())
}

/// What one fan-out run measured.
#[derive(Debug, Clone, Copy)]
struct Fanned {
    /// Messages received, over all receivers.
    deliveries: u64,
    /// Seconds from the first send to the last delivery.
    secs: f64,
    /// Sends to a peer refused with `QueueFull` and retried.
    retries: u64,
    /// Datagrams the sending node sent (handshakes and retransmissions
    /// included).
    datagrams_out: u64,
    /// KCP segments the sender sent again, and how many of those turned
    /// out unnecessary (the first copy had arrived).
    retransmits: u64,
    spurious_retransmits: u64,
}

/// Send `messages` messages to `peers` receivers.
fn measure(encrypted: bool, peers: usize, messages: u64) -> Result<Fanned, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let stats = Arc::new(SinkStats::default());
    let receivers: Vec<(Network, std::net::SocketAddr)> = rt.block_on(async {
        let mut nodes = Vec::with_capacity(peers);
        for _ in 0..peers {
            let net = Network::new(node::config(encrypted)).map_err(|e| e.to_string())?;
            net.register_plugin(Sink {
                stats: stats.clone(),
            })
            .await
            .map_err(|e| e.to_string())?;
            let addr = net
                .listen("127.0.0.1:0")
                .await
                .map_err(|e| format!("listen: {e}"))?;
            nodes.push((net, addr));
        }
        Ok::<_, String>(nodes)
    })?;
    let addrs: Vec<_> = receivers.iter().map(|(_, a)| *a).collect();
    let expected = messages * peers as u64;
    let sent = {
        let stats = stats.clone();
        node::client(
            node::config(encrypted),
            node::Link::Udp,
            move |net| async move {
                node::connect(&net, &addrs, Duration::from_secs(30)).await?;
                let body = Bytes::from(vec![7u8; SIZE]);
                let start = now_ns();
                let mut retries = 0;
                for _ in 0..messages {
                    retries += node::send_reliably(&net, body.clone(), &addrs).await?;
                }
                stats.wait_for(expected, Duration::from_secs(20)).await?;
                let state = net.network_state().await.map_err(|e| e.to_string())?;
                let sum = |f: fn(&gladius_p2p::PeerState) -> u64| state.peers.iter().map(f).sum();
                let resent = (sum(|p| p.retransmits), sum(|p| p.spurious_retransmits));
                Ok((start, retries, state.counters.datagrams_out, resent))
            },
        )
    };
    let dropped = rt.block_on(async {
        let mut dropped = 0;
        for (net, _) in &receivers {
            dropped += plugin_drops(net).await;
        }
        let mut closing = tokio::task::JoinSet::new();
        for (net, _) in receivers {
            closing.spawn(async move { net.close().await });
        }
        while closing.join_next().await.is_some() {}
        dropped
    });
    rt.shutdown_background();
    if dropped > 0 {
        return Err(format!(
            "receiving plugins dropped {dropped} events (queue full); {} of {expected} counted",
            stats.received()
        ));
    }
    let (start, retries, datagrams_out, (retransmits, spurious_retransmits)) = sent?;
    let secs = stats.last_ns.load(Ordering::Relaxed).saturating_sub(start) as f64 / 1e9;
    Ok(Fanned {
        deliveries: stats.received(),
        secs,
        retries,
        datagrams_out,
        retransmits,
        spurious_retransmits,
    })
}
