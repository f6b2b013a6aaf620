//! The last minutes of the node, for the status page's charts
//! (`GET /api/history`): message and byte rates in and out, and each
//! peer's RTT, sampled every [`SAMPLE_INTERVAL`].
//!
//! Kept in the daemon rather than in the page so that a page opened now
//! shows the minutes before it. Bounded: [`HISTORY_LEN`] points, RTT series
//! for at most [`MAX_CHART_PEERS`] peers. [`History::push`] takes the time
//! and the snapshots, so it is tested without a node.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::NetworkState;
use gladius_plugins::latency::LatencySnapshot;
use serde_json::{json, Value};

/// Time between two points.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Points kept: five minutes at one per second.
pub(crate) const HISTORY_LEN: usize = 300;
/// Peers with an RTT series at most (the first by address); a chart of
/// more lines is unreadable anyway.
pub(crate) const MAX_CHART_PEERS: usize = 64;

/// Per-peer totals at the previous point.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// One point: when, and the rates since the previous point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    t_ms: u64,
    messages_in: f64,
    messages_out: f64,
    bytes_in: f64,
    bytes_out: f64,
}

/// The rolling history.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: VecDeque<Rates>,
    /// RTT in ms per peer, aligned with `points` (`None`: no sample).
    rtt: HashMap<SocketAddr, VecDeque<Option<f64>>>,
    previous: Option<(u64, HashMap<SocketAddr, Totals>)>,
}

impl History {
    /// Add the point of `now_ms` (Unix ms). Rates are per-peer counter
    /// increases over the time since the previous point, so a peer that
    /// leaves does not make them negative; the first point has rates 0.
    pub(crate) fn push(&mut self, now_ms: u64, net: &NetworkState, latency: &LatencySnapshot) {
        let totals: HashMap<SocketAddr, Totals> = net
            .peers
            .iter()
            .map(|p| {
                let t = Totals {
                    messages_in: p.messages_in,
                    messages_out: p.messages_out,
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out,
                };
                (p.addr, t)
            })
            .collect();
        let mut rates = Rates {
            t_ms: now_ms,
            ..Rates::default()
        };
        if let Some((then_ms, before)) = &self.previous {
            let secs = now_ms.saturating_sub(*then_ms) as f64 / 1000.0;
            if secs > 0.0 {
                for (addr, now) in &totals {
                    let was = before.get(addr).copied().unwrap_or_default();
                    let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                    rates.messages_in += d(now.messages_in, was.messages_in);
                    rates.messages_out += d(now.messages_out, was.messages_out);
                    rates.bytes_in += d(now.bytes_in, was.bytes_in);
                    rates.bytes_out += d(now.bytes_out, was.bytes_out);
                }
            }
        }
        self.previous = Some((now_ms, totals));

        // RTT now: the latency audit's last ping, else KCP's estimate.
        let mut rtt_now: HashMap<SocketAddr, f64> = net
            .peers
            .iter()
            .filter_map(|p| Some((p.addr, f64::from(p.rtt_ms?))))
            .collect();
        for st in &latency.peers {
            if let Some(last) = st.last {
                rtt_now.insert(st.addr, last.as_secs_f64() * 1000.0);
            }
        }
        let len = self.points.len();
        let mut addrs: Vec<SocketAddr> = rtt_now.keys().copied().collect();
        addrs.sort();
        for addr in addrs {
            if !self.rtt.contains_key(&addr) && self.rtt.len() < MAX_CHART_PEERS {
                self.rtt
                    .insert(addr, std::iter::repeat_n(None, len).collect());
            }
        }
        for (addr, series) in &mut self.rtt {
            series.push_back(rtt_now.get(addr).copied());
        }
        self.points.push_back(rates);
        if self.points.len() > HISTORY_LEN {
            self.points.pop_front();
            for series in self.rtt.values_mut() {
                series.pop_front();
            }
        }
        // A peer with no sample left in the window has no line to draw.
        self.rtt.retain(|_, s| s.iter().any(Option::is_some));
    }

    /// The JSON of `/api/history`: columns aligned with `t` (Unix ms).
    pub(crate) fn to_json(&self) -> Value {
        let col = |f: fn(&Rates) -> f64| -> Vec<f64> {
            self.points
                .iter()
                .map(|p| (f(p) * 10.0).round() / 10.0)
                .collect()
        };
        let mut rtt: Vec<(&SocketAddr, &VecDeque<Option<f64>>)> = self.rtt.iter().collect();
        rtt.sort_by_key(|(a, _)| **a);
        let rtt: serde_json::Map<String, Value> = rtt
            .into_iter()
            .map(|(a, s)| {
                let s: Vec<Option<f64>> = s
                    .iter()
                    .map(|v| v.map(|ms| (ms * 100.0).round() / 100.0))
                    .collect();
                (a.to_string(), json!(s))
            })
            .collect();
        json!({
            "interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
            "t": self.points.iter().map(|p| p.t_ms).collect::<Vec<_>>(),
            "messages_in": col(|p| p.messages_in),
            "messages_out": col(|p| p.messages_out),
            "bytes_in": col(|p| p.bytes_in),
            "bytes_out": col(|p| p.bytes_out),
            "rtt_ms": rtt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gladius_p2p::PeerState;
    use gladius_plugins::latency::LatencyConfig;

    fn peer(addr: &str, messages_in: u64, bytes_out: u64, rtt_ms: Option<u32>) -> PeerState {
        serde_json::from_value(json!({
            "addr": addr, "advertised": null, "public_key": null, "pinned_key": null,
            "writable": true, "in_route_table": true, "direction": "outbound",
            "connection": "connected", "rtt_ms": rtt_ms, "bytes_in": 0, "bytes_out": bytes_out,
            "messages_in": messages_in, "messages_out": 0, "last_seen_ms_ago": 0,
            "queued_bytes": 0, "last_error": null
        }))
        .unwrap()
    }

    fn state(peers: Vec<PeerState>) -> NetworkState {
        NetworkState {
            local_addr: None,
            advertised_addr: None,
            public_key: None,
            encrypted: false,
            half_open_handshakes: 0,
            inbound_sessions: 0,
            partial_frame_bytes: 0,
            reorder_bytes: 0,
            reflexive_addrs: Vec::new(),
            nat: Default::default(),
            peers,
            plugins: Vec::new(),
            counters: Default::default(),
        }
    }

    fn no_latency() -> LatencySnapshot {
        LatencySnapshot {
            config: LatencyConfig::default(),
            peers: Vec::new(),
            counters: Default::default(),
        }
    }

    #[test]
    fn rates_are_per_second_increases_and_never_negative() {
        let mut h = History::default();
        let l = no_latency();
        h.push(0, &state(vec![peer("127.0.0.1:1", 10, 1000, Some(4))]), &l);
        h.push(
            2000,
            &state(vec![
                peer("127.0.0.1:1", 30, 5000, Some(6)),
                peer("127.0.0.1:2", 4, 0, None),
            ]),
            &l,
        );
        // Peer 1 leaves: nothing negative.
        h.push(3000, &state(vec![peer("127.0.0.1:2", 5, 0, None)]), &l);
        let j = h.to_json();
        assert_eq!(j["t"], json!([0, 2000, 3000]));
        assert_eq!(j["messages_in"], json!([0.0, 12.0, 1.0]));
        assert_eq!(j["bytes_out"], json!([0.0, 2000.0, 0.0]));
        assert_eq!(j["rtt_ms"]["127.0.0.1:1"], json!([4.0, 6.0, null]));
        assert!(
            j["rtt_ms"].get("127.0.0.1:2").is_none(),
            "no sample, no series"
        );
    }

    #[test]
    fn the_history_is_bounded_in_points_and_peers() {
        let mut h = History::default();
        let l = no_latency();
        let many: Vec<PeerState> = (0..MAX_CHART_PEERS + 10)
            .map(|i| peer(&format!("127.0.0.1:{}", 1000 + i), 0, 0, Some(1)))
            .collect();
        let s = state(many);
        for i in 0..HISTORY_LEN + 20 {
            h.push(i as u64 * 1000, &s, &l);
        }
        let j = h.to_json();
        assert_eq!(j["t"].as_array().unwrap().len(), HISTORY_LEN);
        assert_eq!(j["rtt_ms"].as_object().unwrap().len(), MAX_CHART_PEERS);
        for series in j["rtt_ms"].as_object().unwrap().values() {
            assert_eq!(series.as_array().unwrap().len(), HISTORY_LEN);
        }
    }
}
