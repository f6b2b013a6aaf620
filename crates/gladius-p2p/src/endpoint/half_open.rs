//! Inbound handshakes waiting for their `Finish`: the half-open table.
//!
//! Entries are keyed by our responder index, which the `Finish` names and
//! an off-path forger never sees, rather than by the initiator's address:
//! a forged `Init` in a peer's name gets an entry of its own and can
//! neither replace nor hold the peer's. Per address there is at most one
//! entry admitted without a cookie (a second such `Init` is asked for a
//! cookie instead) and at most [`MAX_COOKIED_PER_ADDR`] admitted with one;
//! forgeries cannot make cookied entries at all.
//!
//! The table holds at most `Config::max_half_open` entries. When it is full
//! the source IP holding the most entries gives way (its oldest entry
//! admitted without a cookie first), so one host cannot push out others'
//! handshakes.

use std::net::SocketAddr;

use rand::rngs::StdRng;

use super::source::SourceIp;
use super::{table, HashMap};
use crate::crypto::packet::InitPacket;
use crate::crypto::Responder;

/// Entries admitted with a cookie per initiator address: a restarted
/// initiator's new handshake does not have to wait for its old one to
/// expire.
const MAX_COOKIED_PER_ADDR: usize = 2;

/// One inbound handshake waiting for its `Finish`.
#[derive(Debug)]
pub(super) struct HalfOpen {
    pub(super) responder: Responder,
    /// The initiator's address: a `Finish` must come from it.
    pub(super) from: SocketAddr,
    pub(super) created: u64,
    /// Admitted on a valid cookie: its initiator receives at `from`.
    pub(super) cookied: bool,
    /// Bytes received from and sent to the initiator's address: until its
    /// `Finish` proves it receives there, we send at most
    /// `AMPLIFICATION_FACTOR` times what it sent (QUIC's rule), so a
    /// spoofed `Init` cannot turn us into an amplifier.
    pub(super) bytes_in: usize,
    pub(super) bytes_out: usize,
    /// When we last sent it our `Response`: duplicates are answered at
    /// most every `INIT_INTERVAL_MS` (honest initiators resend no faster
    /// than every 200 ms).
    pub(super) answered_at: u64,
}

/// What the table keeps per initiator address.
#[derive(Debug, Default)]
struct AtAddr {
    indices: Vec<u32>,
    /// When an entry admitted with a cookie was last made for it.
    last_cookied: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct HalfOpenTable {
    entries: HashMap<u32, HalfOpen>,
    at_addr: HashMap<SocketAddr, AtAddr>,
    per_ip: HashMap<SourceIp, usize>,
    max: usize,
}

impl HalfOpenTable {
    pub(super) fn new(max: usize, rng: &mut StdRng) -> Self {
        Self {
            entries: table(rng),
            at_addr: table(rng),
            per_ip: table(rng),
            max: max.max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn contains(&self, index: u32) -> bool {
        self.entries.contains_key(&index)
    }

    /// The entry of `from` that `init` is a retransmission of, if any.
    pub(super) fn duplicate_of(
        &mut self,
        from: SocketAddr,
        init: &InitPacket<'_>,
    ) -> Option<&mut HalfOpen> {
        let index = self.at_addr.get(&from)?.indices.iter().copied().find(|i| {
            self.entries
                .get(i)
                .is_some_and(|h| h.responder.remote_index() == init.sender_index)
        })?;
        self.entries.get_mut(&index)
    }

    /// Whether `from` holds an entry admitted without a cookie.
    pub(super) fn holds_uncookied(&self, from: SocketAddr) -> bool {
        self.at_addr.get(&from).is_some_and(|a| {
            a.indices
                .iter()
                .any(|i| self.entries.get(i).is_some_and(|h| !h.cookied))
        })
    }

    /// When `from` last got an entry on a cookie, while it holds any.
    pub(super) fn last_cookied(&self, from: SocketAddr) -> Option<u64> {
        self.at_addr.get(&from).and_then(|a| a.last_cookied)
    }

    /// Take out entry `index` if `from` is its initiator's address.
    pub(super) fn take(&mut self, index: u32, from: SocketAddr) -> Option<HalfOpen> {
        if self.entries.get(&index)?.from != from {
            return None;
        }
        self.remove(index)
    }

    /// Put back an entry [`take`](Self::take) took (its `Finish` was
    /// forged): it keeps its place, and never evicts anything.
    pub(super) fn put_back(&mut self, index: u32, h: HalfOpen) {
        self.link(index, &h);
        self.entries.insert(index, h);
    }

    /// Add an entry under our index `index` (unused), making room as the
    /// module docs say. Returns how many entries had to go.
    pub(super) fn insert(&mut self, index: u32, h: HalfOpen) -> usize {
        let mut evicted = 0;
        if let Some(at) = self.at_addr.get(&h.from) {
            let same_kind: Vec<u32> = at
                .indices
                .iter()
                .copied()
                .filter(|i| self.entries.get(i).is_some_and(|e| e.cookied == h.cookied))
                .collect();
            let room = if h.cookied { MAX_COOKIED_PER_ADDR } else { 1 };
            if same_kind.len() >= room {
                let oldest = same_kind
                    .into_iter()
                    .min_by_key(|i| self.entries.get(i).map(|e| e.created));
                if let Some(oldest) = oldest {
                    self.remove(oldest);
                    evicted += 1;
                }
            }
        }
        while self.entries.len() >= self.max {
            match self.victim() {
                Some(v) => {
                    self.remove(v);
                    evicted += 1;
                }
                None => break,
            }
        }
        if h.cookied {
            self.at_addr.entry(h.from).or_default().last_cookied = Some(h.created);
        }
        self.link(index, &h);
        self.entries.insert(index, h);
        evicted
    }

    /// The entry to evict from a full table: of the IP holding the most,
    /// its oldest admitted without a cookie, else its oldest.
    fn victim(&self) -> Option<u32> {
        let (ip, _) = self.per_ip.iter().max_by_key(|(ip, n)| (**n, **ip))?;
        self.entries
            .iter()
            .filter(|(_, h)| SourceIp::from(h.from) == *ip)
            .min_by_key(|(i, h)| (h.cookied, h.created, **i))
            .map(|(i, _)| *i)
    }

    fn link(&mut self, index: u32, h: &HalfOpen) {
        self.at_addr.entry(h.from).or_default().indices.push(index);
        *self.per_ip.entry(SourceIp::from(h.from)).or_insert(0) += 1;
    }

    /// Remove entry `index`, with its bookkeeping.
    pub(super) fn remove(&mut self, index: u32) -> Option<HalfOpen> {
        let h = self.entries.remove(&index)?;
        if let Some(at) = self.at_addr.get_mut(&h.from) {
            at.indices.retain(|i| *i != index);
            if at.indices.is_empty() {
                self.at_addr.remove(&h.from);
            }
        }
        let ip = SourceIp::from(h.from);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(h)
    }

    /// Entry `index` at its expiry check: removed if it expired; else when
    /// to check again.
    pub(super) fn expire(&mut self, index: u32, now: u64, lifetime: u64) -> Option<u64> {
        let h = self.entries.get(&index)?;
        if h.responder.is_expired(now) {
            self.remove(index);
            return None;
        }
        Some(h.created.saturating_add(lifetime).max(now + 1))
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.at_addr.clear();
        self.per_ip.clear();
    }

    /// The bookkeeping matches the entries.
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut per_ip: std::collections::BTreeMap<SourceIp, usize> = Default::default();
        for (i, h) in &self.entries {
            assert!(self.at_addr[&h.from].indices.contains(i));
            *per_ip.entry(SourceIp::from(h.from)).or_default() += 1;
        }
        assert_eq!(per_ip.len(), self.per_ip.len());
        for (ip, n) in per_ip {
            assert_eq!(self.per_ip[&ip], n);
        }
        let indexed: usize = self.at_addr.values().map(|a| a.indices.len()).sum();
        assert_eq!(indexed, self.entries.len());
        assert!(self.entries.len() <= self.max);
    }
}
