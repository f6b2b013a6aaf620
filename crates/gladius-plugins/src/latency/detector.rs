//! The latency audit's protocol core, free of sockets, tasks and clocks:
//! which peers to track, when to ping whom, what a ping's outcome means.
//!
//! The plugin's shell ([`super::LatencyAudit`]) feeds it what happens
//! (`round` with the peers present now, `connected`, `added`, `deleted`,
//! `outcome` of each ping) together with the time, and carries out what it
//! answers: the [`PingOrder`]s to send and the [`Verdict`]s to act on. The
//! time is tokio's [`Instant`] only as a type: the core never reads a clock,
//! so its tests step time by hand.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::{PeerStatus, RttStats};
use super::{LatencyConfig, LatencyCounters, PeerStats};

/// Pings per peer allowed in flight at once. With `timeout <= interval` a
/// ping that times out exactly at the next tick is still in flight then;
/// the next one must go out anyway, or the effective period doubles.
pub const MAX_IN_FLIGHT: usize = 2;

/// A ping the shell must send: a `latency.ping` request with `nonce` to
/// `addr`, answered or not within the configured timeout, whose end it
/// reports with [`Detector::outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingOrder {
    /// The peer.
    pub addr: SocketAddr,
    /// The nonce the pong must echo.
    pub nonce: u64,
    /// Whether the peer's session is up: a pong to a ping sent before it
    /// was measures the handshake too and is not recorded as a sample.
    pub connected: bool,
}

/// How one ping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A pong echoing the nonce, after the round trip; `None` when the
    /// ping was sent before the session was up (its round trip includes
    /// the handshake: it proves the peer alive but is not a sample).
    Pong(Option<Duration>),
    /// A pong that did not decode or did not echo the nonce.
    BadPong,
    /// No pong in time, or the ping could not be queued, or its session
    /// closed.
    Missed,
}

/// What an outcome means for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    None,
    /// The peer has just become dead (it was not before this outcome).
    Died,
}

/// The failure detector and RTT bookkeeping of every tracked peer.
///
/// Peers live in a `BTreeMap`, so orders and listings come out in address
/// order whatever the process: a simulation repeats exactly.
#[derive(Debug)]
pub struct Detector {
    config: LatencyConfig,
    peers: BTreeMap<SocketAddr, RttStats>,
    /// Dead peers in the order they died (may hold stale entries that
    /// revived; they are skipped when evicting).
    dead_order: VecDeque<SocketAddr>,
    /// Peer -> (nonce, sent at) of its pings in flight.
    inflight: BTreeMap<SocketAddr, Vec<(u64, Instant)>>,
    nonce: u64,
    counters: LatencyCounters,
}

impl Detector {
    /// An empty detector; `first_nonce` starts the nonce sequence (from the
    /// plugin's seeded or entropy RNG).
    pub fn new(config: LatencyConfig, first_nonce: u64) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            dead_order: VecDeque::new(),
            inflight: BTreeMap::new(),
            nonce: first_nonce,
            counters: LatencyCounters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LatencyConfig {
        &self.config
    }

    fn new_stats(&self) -> RttStats {
        RttStats::new(self.config.window, self.config.ewma_alpha)
    }

    fn status_of(&self, s: &RttStats) -> PeerStatus {
        s.status(self.config.suspect_after, self.config.dead_after)
    }

    /// A ping would not be answered within this: it was lost (the shell's
    /// task died) and is forgotten, so the peer can be pinged again.
    fn stale_after(&self) -> Duration {
        self.config.timeout.saturating_mul(2) + Duration::from_secs(5)
    }

    /// Order a ping to `addr` unless it already has [`MAX_IN_FLIGHT`].
    fn order(&mut self, now: Instant, addr: SocketAddr, connected: bool) -> Option<PingOrder> {
        let pings = self.inflight.entry(addr).or_default();
        if pings.len() >= MAX_IN_FLIGHT {
            return None;
        }
        self.nonce = self.nonce.wrapping_add(1);
        pings.push((self.nonce, now));
        self.counters.pings_sent += 1;
        Some(PingOrder {
            addr,
            nonce: self.nonce,
            connected,
        })
    }

    /// One periodic round: track exactly the peers `present` now (address,
    /// session up), plus remembered dead ones, and ping each of them.
    /// Route-table peers belong in `present` even while (re)connecting, so
    /// that one that never connects is declared dead too.
    pub fn round(&mut self, now: Instant, present: &[(SocketAddr, bool)]) -> Vec<PingOrder> {
        let (k, m) = (self.config.suspect_after, self.config.dead_after);
        let here: std::collections::BTreeSet<SocketAddr> = present.iter().map(|p| p.0).collect();
        self.peers
            .retain(|a, s| here.contains(a) || s.status(k, m) == PeerStatus::Dead);
        for (a, _) in present {
            if !self.peers.contains_key(a) {
                let s = self.new_stats();
                self.peers.insert(*a, s);
            }
        }
        self.evict_dead();
        let stale = self.stale_after();
        self.inflight.retain(|_, pings| {
            pings.retain(|(_, at)| now.saturating_duration_since(*at) < stale);
            !pings.is_empty()
        });
        present
            .iter()
            .filter_map(|&(addr, connected)| self.order(now, addr, connected))
            .collect()
    }

    /// A session with `addr` just came up: track it, and ping it at once
    /// (its first sample now, not a round later) unless pings are in flight.
    pub fn connected(&mut self, now: Instant, addr: SocketAddr) -> Option<PingOrder> {
        if !self.peers.contains_key(&addr) {
            let s = self.new_stats();
            self.peers.insert(addr, s);
        }
        self.order(now, addr, true)
    }

    /// Track `addr` without pinging it yet (a session came up but the
    /// plugin does not probe, or the shell could not take the ping now).
    pub fn track(&mut self, addr: SocketAddr) {
        if !self.peers.contains_key(&addr) {
            let s = self.new_stats();
            self.peers.insert(addr, s);
        }
    }

    /// `addr` was (re-)added to the route table: one that had died starts
    /// afresh; an alive one keeps its history (`add` is idempotent).
    pub fn added(&mut self, addr: SocketAddr) {
        let fresh = match self.peers.get(&addr) {
            Some(s) => self.status_of(s) == PeerStatus::Dead,
            None => true,
        };
        if fresh {
            let s = self.new_stats();
            self.peers.insert(addr, s);
        }
    }

    /// `addr` was deleted: dead peers are remembered (bounded), others are
    /// forgotten unless a live session keeps them (the next round tracks
    /// them again).
    pub fn deleted(&mut self, addr: SocketAddr) {
        if self
            .peers
            .get(&addr)
            .is_some_and(|s| self.status_of(s) != PeerStatus::Dead)
        {
            self.peers.remove(&addr);
        }
    }

    /// The ping `nonce` to `addr` ended with `outcome`.
    pub fn outcome(&mut self, addr: SocketAddr, nonce: u64, outcome: Outcome) -> Verdict {
        if let Some(pings) = self.inflight.get_mut(&addr) {
            pings.retain(|(n, _)| *n != nonce);
            if pings.is_empty() {
                self.inflight.remove(&addr);
            }
        }
        match outcome {
            Outcome::Pong(_) => self.counters.pongs_received += 1,
            Outcome::BadPong => {
                self.counters.bad_pongs += 1;
                self.counters.pings_missed += 1;
            }
            Outcome::Missed => self.counters.pings_missed += 1,
        }
        let (k, m) = (self.config.suspect_after, self.config.dead_after);
        let Some(s) = self.peers.get_mut(&addr) else {
            // Deleted while the ping was in flight: not ours to track.
            return Verdict::None;
        };
        let before = s.status(k, m);
        match outcome {
            Outcome::Pong(Some(rtt)) => s.record(rtt),
            Outcome::Pong(None) => s.record_answer(),
            Outcome::BadPong | Outcome::Missed => s.record_miss(),
        }
        let after = s.status(k, m);
        if before != after {
            tracing::debug!(peer = %addr, ?before, ?after, "latency: peer status changed");
        }
        if after == PeerStatus::Dead && before != PeerStatus::Dead {
            self.dead_order.push_back(addr);
            self.evict_dead();
            return Verdict::Died;
        }
        Verdict::None
    }

    /// The shell deleted a dead peer from the node.
    pub fn count_deleted(&mut self) {
        self.counters.peers_deleted += 1;
    }

    /// A ping from a peer was answered (`ok`) or was malformed (`!ok`).
    pub fn count_ping_received(&mut self, ok: bool) {
        if ok {
            self.counters.pings_answered += 1;
        } else {
            self.counters.bad_pings += 1;
        }
    }

    /// Forget the oldest dead peers that are no longer present beyond
    /// `max_dead_remembered`.
    fn evict_dead(&mut self) {
        let (k, m) = (self.config.suspect_after, self.config.dead_after);
        let peers = &self.peers;
        let mut seen = std::collections::BTreeSet::new();
        // Drop revived ones, and repeats (died, revived, died).
        self.dead_order.retain(|a| {
            peers
                .get(a)
                .is_some_and(|s| s.status(k, m) == PeerStatus::Dead)
                && seen.insert(*a)
        });
        while self.dead_order.len() > self.config.max_dead_remembered {
            if let Some(a) = self.dead_order.pop_front() {
                self.peers.remove(&a);
            }
        }
    }

    /// Up to `k` alive peers with a sample, by ascending p50 (ties by
    /// address).
    pub fn closest(&self, k: usize) -> Vec<(SocketAddr, Duration)> {
        let mut v: Vec<(SocketAddr, Duration)> = self
            .peers
            .iter()
            .filter(|(_, s)| self.status_of(s) == PeerStatus::Alive)
            .filter_map(|(a, s)| s.p50().map(|d| (*a, d)))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    /// The statistics of `addr`, if tracked.
    pub fn stats(&self, addr: SocketAddr) -> Option<PeerStats> {
        self.peers.get(&addr).map(|s| self.peer_stats(addr, s))
    }

    /// The status of `addr`, if tracked.
    pub fn status(&self, addr: SocketAddr) -> Option<PeerStatus> {
        self.peers.get(&addr).map(|s| self.status_of(s))
    }

    /// Every tracked peer's statistics, by address.
    pub fn peers(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|(a, s)| self.peer_stats(*a, s))
            .collect()
    }

    /// How many peers are tracked (alive, suspect and remembered dead).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Pings in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.inflight.get(&addr).map_or(0, Vec::len)
    }

    /// Plugin-wide counters.
    pub fn counters(&self) -> &LatencyCounters {
        &self.counters
    }

    fn peer_stats(&self, addr: SocketAddr, s: &RttStats) -> PeerStats {
        PeerStats {
            addr,
            status: self.status_of(s),
            ewma: s.ewma(),
            min: s.min(),
            p50: s.p50(),
            p99: s.p99(),
            last: s.last(),
            samples: s.samples(),
            missed: s.missed(),
            consecutive_missed: s.consecutive_missed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    fn config() -> LatencyConfig {
        LatencyConfig::default()
    }

    /// Run `rounds` rounds one interval apart in which `answers` decides
    /// each ping's outcome; returns the verdicts per round.
    fn rounds(
        d: &mut Detector,
        t: &mut Instant,
        present: &[(SocketAddr, bool)],
        n: usize,
        mut answers: impl FnMut(SocketAddr) -> Outcome,
    ) -> Vec<Vec<(SocketAddr, Verdict)>> {
        let interval = d.config().interval;
        (0..n)
            .map(|_| {
                let orders = d.round(*t, present);
                *t += interval;
                orders
                    .into_iter()
                    .map(|o| (o.addr, d.outcome(o.addr, o.nonce, answers(o.addr))))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_silent_peer_dies_at_exactly_dead_after_misses_and_a_pong_revives_it() {
        let cfg = config();
        let (k, m) = (cfg.suspect_after as usize, cfg.dead_after as usize);
        let mut d = Detector::new(cfg, 0);
        let mut t = Instant::now();
        let (a, b) = (addr(1), addr(2));
        let present = [(a, true), (b, true)];
        for i in 0..m + 2 {
            let round = rounds(&mut d, &mut t, &present, 1, |p| {
                if p == a {
                    Outcome::Pong(Some(Duration::from_millis(20)))
                } else {
                    Outcome::Missed
                }
            });
            let died: Vec<_> = round[0]
                .iter()
                .filter(|(_, v)| *v == Verdict::Died)
                .map(|(p, _)| *p)
                .collect();
            // Dead once, on the m-th miss, never again while it stays dead.
            assert_eq!(died, if i + 1 == m { vec![b] } else { vec![] }, "round {i}");
            let want = if i + 1 >= m {
                PeerStatus::Dead
            } else if i + 1 >= k {
                PeerStatus::Suspect
            } else {
                PeerStatus::Alive
            };
            assert_eq!(d.status(b), Some(want), "round {i}");
        }
        assert_eq!(d.status(a), Some(PeerStatus::Alive));
        assert_eq!(d.status(b), Some(PeerStatus::Dead));
        assert_eq!(d.closest(5), vec![(a, Duration::from_millis(20))]);
        // One pong and it is alive again, with its sample.
        let o = d.round(t, &present);
        let ob = o.iter().find(|o| o.addr == b).copied();
        let ob = ob.expect("a dead peer still present is pinged");
        assert_eq!(
            d.outcome(b, ob.nonce, Outcome::Pong(Some(Duration::from_millis(5)))),
            Verdict::None
        );
        assert_eq!(d.status(b), Some(PeerStatus::Alive));
        assert_eq!(d.closest(1), vec![(b, Duration::from_millis(5))]);
        let c = d.counters();
        assert_eq!(c.pings_missed, m as u64 + 2);
        assert_eq!(c.pings_sent, c.pongs_received + c.pings_missed + 1);
    }

    #[test]
    fn at_most_two_pings_in_flight_per_peer_and_lost_ones_are_forgotten() {
        let mut d = Detector::new(config(), 7);
        let mut t = Instant::now();
        let a = addr(1);
        assert!(d.connected(t, a).is_some());
        assert!(d.round(t, &[(a, true)]).len() == 1);
        // Two in flight: neither a round nor a kick adds a third.
        assert!(d.round(t, &[(a, true)]).is_empty());
        assert!(d.connected(t, a).is_none());
        assert_eq!(d.in_flight(a), 2);
        // Never answered (the shell lost them): forgotten after a while.
        t += d.stale_after();
        assert_eq!(d.round(t, &[(a, true)]).len(), 1);
        assert_eq!(d.in_flight(a), 1);
    }

    #[test]
    fn nonces_are_distinct_and_a_late_outcome_for_a_forgotten_peer_is_ignored() {
        let mut d = Detector::new(config(), u64::MAX - 1);
        let t = Instant::now();
        let orders = d.round(t, &[(addr(1), true), (addr(2), true), (addr(3), false)]);
        let mut nonces: Vec<u64> = orders.iter().map(|o| o.nonce).collect();
        nonces.sort_unstable();
        nonces.dedup();
        assert_eq!(nonces.len(), 3, "the sequence wraps without repeating");
        assert!(!orders[2].connected);
        // addr(2) leaves (not present, not dead): forgotten at the next round.
        d.round(t, &[(addr(1), true), (addr(3), false)]);
        assert_eq!(d.status(addr(2)), None);
        assert_eq!(
            d.outcome(addr(2), orders[1].nonce, Outcome::Missed),
            Verdict::None
        );
        assert_eq!(d.status(addr(2)), None);
    }

    #[test]
    fn dead_peers_are_remembered_up_to_the_bound_oldest_forgotten_first() {
        let cfg = config();
        let (m, keep) = (cfg.dead_after as usize, cfg.max_dead_remembered);
        let mut d = Detector::new(cfg, 0);
        let mut t = Instant::now();
        let all: Vec<(SocketAddr, bool)> = (0..keep as u16 + 3).map(|i| (addr(i), true)).collect();
        rounds(&mut d, &mut t, &all, m, |_| Outcome::Missed);
        // They all died in the same round, in address order.
        assert_eq!(d.len(), keep);
        assert!(d.peers().iter().all(|p| p.status == PeerStatus::Dead));
        assert_eq!(d.status(addr(0)), None, "the first to die is forgotten");
        assert_eq!(
            d.status(addr(keep as u16 + 2)),
            Some(PeerStatus::Dead),
            "the last to die is remembered"
        );
        // Remembered dead peers survive rounds in which they are absent.
        d.round(t, &[]);
        assert_eq!(d.len(), keep);
        // Re-added: starts afresh.
        d.added(addr(keep as u16 + 2));
        assert_eq!(d.status(addr(keep as u16 + 2)), Some(PeerStatus::Alive));
    }

    #[test]
    fn a_pong_before_the_session_proves_life_but_is_no_sample() {
        let mut d = Detector::new(config(), 0);
        let t = Instant::now();
        let a = addr(9);
        let o = d.round(t, &[(a, false)])[0];
        assert!(!o.connected);
        assert_eq!(d.outcome(a, o.nonce, Outcome::Pong(None)), Verdict::None);
        let s = d.stats(a).expect("tracked");
        assert_eq!((s.samples, s.consecutive_missed, s.p50), (0, 0, None));
        assert_eq!(d.in_flight(a), 0);
    }
}
