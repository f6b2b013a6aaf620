//! Sessions from peers outside the route table: who may open one.
//!
//! Every such session costs memory and timers, and in plaintext mode it
//! costs its opener one datagram, so they are limited twice: at most
//! `Config::max_inbound_sessions_per_ip` per source IP (an IPv6 /64),
//! beyond which a new one is refused (`refused_sessions`), and at most
//! `Config::max_inbound_sessions` in all, beyond which one of them is
//! closed to make room (`evicted_sessions`): the least recently active
//! session of the source IP holding the most. One host therefore cannot
//! fill the table, a full table (many hosts) still lets a new node in,
//! and the sessions that give way are the crowded hosts' (when every host
//! holds one, simply the least recently active). Peers in the route table
//! never count and are never refused: their slots are reserved.
//!
//! The sessions counted are those the endpoint admitted as inbound from a
//! peer outside the route table. A peer the route table takes in (by
//! `add`) leaves the count; its session goes on.

use std::net::SocketAddr;

use rand::rngs::StdRng;

use super::peer::{Peer, PeerId};
use super::source::SourceIp;
use super::{table, Endpoint, HashMap};
use crate::session::Session;
use crate::wire::CloseReason;

/// The counted sessions, by peer and by source IP.
#[derive(Debug)]
pub(super) struct InboundSlots {
    by_peer: HashMap<PeerId, SourceIp>,
    per_ip: HashMap<SourceIp, usize>,
}

impl InboundSlots {
    pub(super) fn new(rng: &mut StdRng) -> Self {
        Self {
            by_peer: table(rng),
            per_ip: table(rng),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_peer.len()
    }

    fn holds(&self, id: PeerId) -> bool {
        self.by_peer.contains_key(&id)
    }

    fn count(&self, ip: SourceIp) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn insert(&mut self, id: PeerId, ip: SourceIp) {
        if self.by_peer.insert(id, ip).is_none() {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    pub(super) fn remove(&mut self, id: PeerId) {
        if let Some(ip) = self.by_peer.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Endpoint {
    /// Whether a new inbound session from `from` (for peer `id`, if known)
    /// may open: peers in the route table always may; others unless the
    /// config refuses them or their IP holds its share already (refusals
    /// counted and logged). A full table makes room first.
    pub(super) fn admits_inbound(&mut self, id: Option<PeerId>, from: SocketAddr) -> bool {
        if id
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| p.added)
        {
            return true;
        }
        if self.config.refuse_unknown_inbound || self.config.max_inbound_sessions == 0 {
            self.counters.refused_sessions += 1;
            tracing::debug!(%from, "inbound session refused: unknown peers are");
            return false;
        }
        // A peer replacing its own counted session keeps its slot.
        if id.is_some_and(|id| self.inbound.holds(id)) {
            return true;
        }
        if self.inbound.count(SourceIp::from(from)) >= self.config.max_inbound_sessions_per_ip {
            self.counters.refused_sessions += 1;
            tracing::debug!(%from, "inbound session refused: its IP holds its share");
            return false;
        }
        while self.inbound.len() >= self.config.max_inbound_sessions {
            if !self.evict_inbound() {
                break;
            }
        }
        true
    }

    /// Count `id`'s new session, opened from `from`, if the peer is outside
    /// the route table.
    pub(super) fn count_inbound(&mut self, id: PeerId, from: SocketAddr) {
        if self.peers.get(id).is_some_and(|p| !p.added) {
            self.inbound.insert(id, SourceIp::from(from));
        }
    }

    /// Close the least recently active counted session of the source IP
    /// that holds the most. False if none.
    fn evict_inbound(&mut self) -> bool {
        let now = self.now();
        let Some((&crowded, _)) = self.inbound.per_ip.iter().max_by_key(|(ip, n)| (**n, **ip))
        else {
            return false;
        };
        let last_active = |p: &Peer| p.session().and_then(Session::last_recv).unwrap_or(0);
        let victim = self
            .inbound
            .by_peer
            .iter()
            .filter(|(_, ip)| **ip == crowded)
            .map(|(id, _)| (self.peers.get(*id).map_or(0, last_active), *id))
            .min();
        let Some((_, id)) = victim else {
            return false;
        };
        self.inbound.remove(id);
        self.counters.evicted_sessions += 1;
        if let Some(s) = self.peers.get_mut(id).and_then(Peer::session_mut) {
            s.close(now, CloseReason::Deleted);
            self.drain_events(id);
            self.touch(id);
        }
        if let Some(p) = self.peers.get(id) {
            tracing::debug!(addr = %p.addr(), "inbound session evicted: the table is full");
        }
        true
    }
}
