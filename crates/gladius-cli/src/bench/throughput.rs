//! `throughput`: a one-way stream between two nodes (each on its own
//! thread and runtime). The sender streams through a `PeerSender`
//! (`Network::sender`): a message refused because the budget is full is
//! sent again once there is room, and the run fails if the sender counts
//! one dropped, so every message is accounted for; the receiver's
//! plugin counts messages and body bytes. Time runs from the first send to
//! the last message received. Baseline: raw UDP one-way, 1200-byte (and
//! 64-byte) datagrams, one per send call (blocking and tokio sockets, the
//! baseline the targets are set against) and in runs of up to 64 per call
//! with GSO/GRO (the batched-I/O limit).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gladius_p2p::{Message, PeerSendError};
use serde_json::json;

use super::node::{self, now_ns, Link, Server, SinkStats};
use super::stats::{ratio, round2};
use super::udp::{self, Api};
use super::{mode_name, progress, Out, Plan};

/// Body sizes and messages sent of each (full run). The bulk sizes send
/// about 1 GB each, a few seconds like the peers' runs in `bench/peers`,
/// so that the start of the transfer (KCP's window opening) weighs little.
const SIZES: [(usize, u64); 4] = [
    (64, 200_000),
    (1024, 100_000),
    (65_536, 16_000),
    (1 << 20, 1_024),
];
/// Datagram sizes of the raw-UDP baseline.
const UDP_SIZES: [usize; 2] = [64, 1200];
/// Datagrams the baseline sends (full run).
const UDP_COUNT: u64 = 500_000;

/// One measured stream.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Messages received.
    messages: u64,
    /// Body bytes received.
    bytes: u64,
    /// Seconds from the first send to the last receive.
    secs: f64,
    /// Sends refused because the sender's budget was full, then waited
    /// for.
    retries: u64,
    /// Datagrams the sending node sent (handshake included).
    datagrams_out: u64,
    /// Datagrams the sending node received (mostly acknowledgements).
    datagrams_in: u64,
}

impl Stream {
    fn msgs_per_s(&self) -> f64 {
        round2(self.messages as f64 / self.secs.max(1e-9))
    }
    fn mb_per_s(&self) -> f64 {
        round2(self.bytes as f64 / 1e6 / self.secs.max(1e-9))
    }
}

/// Run the scenario.
pub(super) fn run(plan: &Plan, out: &mut Out) -> Result<(), String> {
    let count = plan.scaled(UDP_COUNT, 50_000);
    let mut baseline = Vec::new();
    for size in UDP_SIZES {
        progress(format_args!("throughput {size} B raw UDP"));
        let blocking = udp::one_way(Api::Blocking, size, count, 1)?;
        let tokio = udp::one_way(Api::Tokio, size, count, 1)?;
        let gso = udp::one_way(Api::Gso, size, count, 1)?;
        for (api, r) in [
            (Api::Blocking, &blocking),
            (Api::Tokio, &tokio),
            (Api::Gso, &gso),
        ] {
            out.emit(json!({
                "scenario": "throughput",
                "library": "raw-udp",
                "size": size,
                "encrypted": false,
                "udp_api": api.name(),
                "messages": r.sent,
                "received": r.received,
                "msgs_per_s": round2(r.msgs_per_s()),
                "mb_per_s": round2(r.msgs_per_s() * size as f64 / 1e6),
                "lost_percent": round2(r.lost_percent()),
            }));
        }
        baseline.push((size, blocking, tokio, gso));
    }
    for (size, full) in SIZES {
        let count = plan.scaled(full, 32);
        let (udp_size, blocking, tokio, gso) = if size <= 64 { baseline[0] } else { baseline[1] };
        let udp_msgs = blocking.msgs_per_s();
        let udp_mb = udp_msgs * udp_size as f64 / 1e6;
        let tokio_mb = tokio.msgs_per_s() * udp_size as f64 / 1e6;
        let gso_mb = gso.msgs_per_s() * udp_size as f64 / 1e6;
        for &encrypted in &plan.modes {
            progress(format_args!(
                "throughput {size} B x {count} gladius {}",
                mode_name(encrypted)
            ));
            let s = stream(encrypted, size, count)?;
            out.emit(json!({
                "scenario": "throughput",
                "library": "gladius",
                "size": size,
                "encrypted": encrypted,
                "messages": s.messages,
                "msgs_per_s": s.msgs_per_s(),
                "mb_per_s": s.mb_per_s(),
                "retries": s.retries,
                "sender_datagrams_out": s.datagrams_out,
                "sender_datagrams_in": s.datagrams_in,
                "secs": round2(s.secs),
                "udp_size": udp_size,
                "udp_msgs_per_s": round2(udp_msgs),
                "udp_mb_per_s": round2(udp_mb),
                "udp_tokio_msgs_per_s": round2(tokio.msgs_per_s()),
                "udp_tokio_mb_per_s": round2(tokio_mb),
                "ratio_mb": ratio(s.mb_per_s(), udp_mb),
                "ratio_msgs": ratio(s.msgs_per_s(), udp_msgs),
                "ratio_mb_tokio": ratio(s.mb_per_s(), tokio_mb),
                "udp_gso_msgs_per_s": round2(gso.msgs_per_s()),
                "udp_gso_mb_per_s": round2(gso_mb),
                "ratio_mb_gso": ratio(s.mb_per_s(), gso_mb),
                "ratio_msgs_gso": ratio(s.msgs_per_s(), gso.msgs_per_s()),
            }));
        }
    }
    Ok(())
}

/// Stream `count` messages of `size` bytes from a client node to a server
/// node and count them on arrival.
fn stream(encrypted: bool, size: usize, count: u64) -> Result<Stream, String> {
    let stats = Arc::new(SinkStats::default());
    let server = Server::start(node::config(encrypted), Link::Udp, stats.clone())?;
    let peer = server.addr;
    let sent = {
        let stats = stats.clone();
        node::client(node::config(encrypted), Link::Udp, move |net| async move {
            node::connect(&net, &[peer], Duration::from_secs(10)).await?;
            let body = Bytes::from(vec![7u8; size]);
            let to = net.sender(peer).await.map_err(|e| e.to_string())?;
            let start = now_ns();
            let mut retries = 0;
            for _ in 0..count {
                let msg =
                    Message::new(node::BENCH_TYPE, body.clone()).map_err(|e| e.to_string())?;
                match to.try_send(msg) {
                    Ok(()) => {}
                    Err(PeerSendError::Full(msg)) => {
                        retries += 1;
                        to.send(msg).await.map_err(|e| format!("send: {e}"))?;
                    }
                    Err(e) => return Err(format!("send: {e}")),
                }
            }
            stats.wait_for(count, Duration::from_secs(20)).await?;
            if to.dropped() > 0 {
                return Err(format!("{} messages dropped by the sender", to.dropped()));
            }
            let counters = net
                .network_state()
                .await
                .map_err(|e| e.to_string())?
                .counters;
            Ok((
                start,
                retries,
                counters.datagrams_out,
                counters.datagrams_in,
            ))
        })
    };
    let dropped = server.stop()?;
    if dropped > 0 {
        return Err(format!(
            "the receiving plugin dropped {dropped} events (queue full); {} of {count} counted",
            stats.received()
        ));
    }
    let (start, retries, datagrams_out, datagrams_in) = sent?;
    Ok(Stream {
        messages: stats.received(),
        bytes: stats.bytes.load(Ordering::Relaxed),
        secs: stats.last_ns.load(Ordering::Relaxed).saturating_sub(start) as f64 / 1e9,
        retries,
        datagrams_out,
        datagrams_in,
    })
}
