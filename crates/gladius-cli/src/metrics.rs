//! `GET /metrics`: the node in the Prometheus text exposition format
//! (version 0.0.4). Every metric is named `gladius_*` and has `# HELP` and
//! `# TYPE` lines; counters end in `_total`, times are in seconds, sizes in
//! bytes. Per-peer series are labelled with `peer` (the UDP address) and
//! `key` (the peer's public key, empty in plaintext mode or before the
//! handshake).
//!
//! Rendering is a pure function of a [`Snapshot`], so it is tested without
//! a node; the node's counters are taken from the JSON form of
//! `network_state()` so that a counter added to the core shows up here
//! without a change.

use std::fmt::Write;

use gladius_p2p::NetworkState;
use gladius_plugins::latency::LatencySnapshot;
use gladius_plugins::signed_state::SyncStats;
use serde::Serialize;
use serde_json::Value;

use crate::counter_help;
use crate::replies::ReplyCounters;

/// The `Content-Type` of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` shows, taken at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) network: NetworkState,
    pub(crate) latency: LatencySnapshot,
    pub(crate) signed_entries: usize,
    pub(crate) signed_stats: SyncStats,
    pub(crate) replies: ReplyCounters,
    pub(crate) stream_clients: usize,
    /// API connections closed on accept: the connection cap was reached.
    pub(crate) api_connections_refused: u64,
    /// Resident set size, when the platform tells.
    pub(crate) rss_bytes: Option<u64>,
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS`).
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The text format of `s`.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut m = Exposition::default();
    let net = &s.network;

    // Node-wide counters, one family each.
    for (name, value) in json_numbers(&net.counters) {
        let help = counter_help::help(counter_help::NODE, &name);
        m.family(&format!("gladius_{name}_total"), "counter", &help);
        m.sample(&format!("gladius_{name}_total"), &[], value);
    }
    m.gauge(
        "gladius_half_open_handshakes",
        "Inbound handshakes waiting for their last message.",
        net.half_open_handshakes as f64,
    );
    m.gauge(
        "gladius_inbound_sessions",
        "Sessions from peers outside the route table (bounded by max_inbound_sessions).",
        net.inbound_sessions as f64,
    );
    m.gauge(
        "gladius_partial_frame_bytes",
        "Bytes of partially received messages held (bounded by partial_frame_bytes).",
        net.partial_frame_bytes as f64,
    );
    m.gauge(
        "gladius_reorder_bytes",
        "Bytes of out-of-order KCP segments held by sessions outside the route table (bounded by reorder_bytes).",
        net.reorder_bytes as f64,
    );
    m.gauge(
        "gladius_encrypted",
        "1 when datagrams are encrypted, 0 in plaintext mode.",
        f64::from(u8::from(net.encrypted)),
    );

    // Peers.
    m.family(
        "gladius_peers",
        "gauge",
        "Peers known (route table or live session), by connection state.",
    );
    for state in ["connected", "connecting", "closing", "disconnected"] {
        let n = net
            .peers
            .iter()
            .filter(|p| json_str(&p.connection) == state)
            .count();
        m.sample("gladius_peers", &[("connection", state)], n as f64);
    }
    m.family(
        "gladius_peers_writable",
        "gauge",
        "Peers that broadcasts write to.",
    );
    m.sample(
        "gladius_peers_writable",
        &[],
        net.peers.iter().filter(|p| p.writable).count() as f64,
    );
    let labels: Vec<(String, String)> = net
        .peers
        .iter()
        .map(|p| {
            let key = p.public_key.map(|k| k.to_string()).unwrap_or_default();
            (p.addr.to_string(), key)
        })
        .collect();
    let per_peer = |m: &mut Exposition,
                    name: &str,
                    kind: &str,
                    help: &str,
                    f: &dyn Fn(usize) -> Option<f64>| {
        m.family(name, kind, help);
        for (i, (peer, key)) in labels.iter().enumerate() {
            if let Some(v) = f(i) {
                m.sample(name, &[("peer", peer), ("key", key)], v);
            }
        }
    };
    let p = &net.peers;
    per_peer(
        &mut m,
        "gladius_peer_connected",
        "gauge",
        "1 while the peer's session is connected.",
        &|i| {
            Some(f64::from(u8::from(
                json_str(&p[i].connection) == "connected",
            )))
        },
    );
    per_peer(
        &mut m,
        "gladius_peer_writable",
        "gauge",
        "1 when broadcasts write to the peer.",
        &|i| Some(f64::from(u8::from(p[i].writable))),
    );
    per_peer(
        &mut m,
        "gladius_peer_rtt_seconds",
        "gauge",
        "Smoothed round-trip time measured by KCP.",
        &|i| p[i].rtt_ms.map(|ms| f64::from(ms) / 1000.0),
    );
    per_peer(
        &mut m,
        "gladius_peer_received_bytes_total",
        "counter",
        "Datagram bytes received from the peer.",
        &|i| Some(p[i].bytes_in as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_sent_bytes_total",
        "counter",
        "Datagram bytes sent to the peer.",
        &|i| Some(p[i].bytes_out as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_received_messages_total",
        "counter",
        "Messages (requests and replies included) received from the peer.",
        &|i| Some(p[i].messages_in as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_sent_messages_total",
        "counter",
        "Messages (requests and replies included) queued to the peer.",
        &|i| Some(p[i].messages_out as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_retransmits_total",
        "counter",
        "KCP segments sent again (lost, or acknowledged late).",
        &|i| Some(p[i].retransmits as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_datagram_size_bytes",
        "gauge",
        "Largest datagram the session sends now, before sealing: the KCP mtu, or the larger size datagram-size probing confirmed.",
        &|i| p[i].datagram_size.map(|b| b as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_size_probes_lost_total",
        "counter",
        "Datagram-size probes lost (three losses rule a size out); with black holes, a path that drops large datagrams.",
        &|i| Some(p[i].size_probes_lost as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_size_black_holes_total",
        "counter",
        "Falls back to the base datagram size because larger datagrams stopped arriving.",
        &|i| Some(p[i].size_black_holes as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_queued_bytes",
        "gauge",
        "Bytes waiting for the peer: queued plus unacknowledged.",
        &|i| Some(p[i].queued_bytes as f64),
    );
    per_peer(
        &mut m,
        "gladius_peer_last_seen_seconds",
        "gauge",
        "Seconds since the last valid datagram from the peer.",
        &|i| p[i].last_seen_ms_ago.map(|ms| ms as f64 / 1000.0),
    );

    // Latency audit: per-peer statistics, then its counters.
    let key_of = |addr: &std::net::SocketAddr| {
        net.peer(*addr)
            .and_then(|p| p.public_key)
            .map(|k| k.to_string())
            .unwrap_or_default()
    };
    let audit: Vec<(String, String, &gladius_plugins::latency::PeerStats)> = s
        .latency
        .peers
        .iter()
        .map(|st| (st.addr.to_string(), key_of(&st.addr), st))
        .collect();
    for (name, help, pick) in [
        (
            "gladius_latency_rtt_p50_seconds",
            "Latency audit: median ping RTT over the recent window.",
            0,
        ),
        (
            "gladius_latency_rtt_p99_seconds",
            "Latency audit: 99th percentile ping RTT over the recent window.",
            1,
        ),
        (
            "gladius_latency_rtt_ewma_seconds",
            "Latency audit: moving average of the ping RTT.",
            2,
        ),
        (
            "gladius_latency_rtt_min_seconds",
            "Latency audit: smallest ping RTT measured.",
            3,
        ),
    ] {
        m.family(name, "gauge", help);
        for (peer, key, st) in &audit {
            let d = [st.p50, st.p99, st.ewma, st.min][pick];
            if let Some(d) = d {
                m.sample(name, &[("peer", peer), ("key", key)], d.as_secs_f64());
            }
        }
    }
    m.family(
        "gladius_latency_peer_status",
        "gauge",
        "Latency audit: 1 for the peer's current status (alive, suspect or dead).",
    );
    for (peer, key, st) in &audit {
        let status = json_str(&st.status);
        m.sample(
            "gladius_latency_peer_status",
            &[("peer", peer), ("key", key), ("status", &status)],
            1.0,
        );
    }
    for (name, value) in json_numbers(&s.latency.counters) {
        let help = counter_help::help(counter_help::LATENCY, &name);
        let metric = format!("gladius_latency_{name}_total");
        m.family(&metric, "counter", &help);
        m.sample(&metric, &[], value);
    }

    // Plugins.
    for (name, help, pick) in [
        (
            "gladius_plugin_events_dropped_total",
            "Events dropped because the plugin's queue was full (the plugin is slower than the node).",
            (|p| p.events_dropped) as fn(&gladius_p2p::PluginState) -> u64,
        ),
        (
            "gladius_plugin_panics_total",
            "Plugin hook calls that panicked.",
            |p| p.panics,
        ),
    ] {
        m.family(name, "counter", help);
        for pl in &net.plugins {
            m.sample(name, &[("plugin", &pl.name)], pick(pl) as f64);
        }
    }

    // Signed state.
    m.gauge(
        "gladius_signed_state_entries",
        "Signed-state entries held (newest per signer and field).",
        s.signed_entries as f64,
    );
    let st = &s.signed_stats;
    for (name, help, v) in [
        (
            "gladius_signed_state_accepted_total",
            "Signed-state entries accepted (new or newer), local or received.",
            st.accepted,
        ),
        (
            "gladius_signed_state_duplicates_total",
            "Signed-state entries received that were already held (normal).",
            st.duplicates,
        ),
        (
            "gladius_signed_state_malformed_messages_total",
            "Signed-state messages that did not decode or broke the bounds.",
            st.malformed_messages,
        ),
        (
            "gladius_signed_state_send_failures_total",
            "Signed-state sends the node could not queue to some peer.",
            st.send_failures,
        ),
        (
            "gladius_signed_state_rounds_total",
            "Signed-state anti-entropy rounds started.",
            st.rounds,
        ),
    ] {
        m.counter(name, help, v);
    }
    m.family(
        "gladius_signed_state_rejected_total",
        "counter",
        "Signed-state entries refused, by reason.",
    );
    for (reason, v) in json_numbers(&st.rejections) {
        m.sample(
            "gladius_signed_state_rejected_total",
            &[("reason", &reason)],
            v,
        );
    }

    // The daemon itself.
    m.gauge(
        "gladius_reply_tokens_pending",
        "Requests waiting for the program's `reply`.",
        s.replies.pending as f64,
    );
    let r = &s.replies;
    for (name, help, v) in [
        (
            "gladius_reply_tokens_issued_total",
            "Requests shown to the program with a reply token.",
            r.issued,
        ),
        (
            "gladius_reply_tokens_answered_total",
            "Requests the program answered with `reply`.",
            r.answered,
        ),
        (
            "gladius_reply_tokens_expired_total",
            "Requests dropped unanswered after the reply token's lifetime.",
            r.expired,
        ),
        (
            "gladius_reply_tokens_evicted_total",
            "Requests dropped unanswered to make room for newer ones.",
            r.evicted,
        ),
    ] {
        m.counter(name, help, v);
    }
    m.counter(
        "gladius_api_connections_refused_total",
        "HTTP API connections closed on accept because the connection cap was reached.",
        s.api_connections_refused,
    );
    m.gauge(
        "gladius_event_stream_clients",
        "Clients of GET /api/events.",
        s.stream_clients as f64,
    );
    if let Some(rss) = s.rss_bytes {
        m.gauge(
            "gladius_process_resident_memory_bytes",
            "Resident set size of the gladius process.",
            rss as f64,
        );
    }
    m.out
}

/// The numeric fields of a serializable struct, by name, in order.
fn json_numbers(v: &impl Serialize) -> Vec<(String, f64)> {
    match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A unit-variant enum's serde name (`connected`, `alive`, …).
fn json_str(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The text being written.
#[derive(Debug, Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut m = Exposition::default();
        m.family("gladius_x", "gauge", "a \\ b\nc");
        m.sample("gladius_x", &[("plugin", "q\"u\\o\nte"), ("k", "")], 1.5);
        assert_eq!(
            m.out,
            "# HELP gladius_x a \\\\ b\\nc\n# TYPE gladius_x gauge\n\
             gladius_x{plugin=\"q\\\"u\\\\o\\nte\",k=\"\"} 1.5\n"
        );
    }
}
