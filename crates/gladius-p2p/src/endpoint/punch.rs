//! Hole punching: upgrading a relayed peer to a direct path (issue 13,
//! item 3; `docs/nat.md`, `wire-format.md` §7.13).
//!
//! Coordinated like libp2p's DCUtR, over the relayed A–B session itself
//! (so end to end authenticated): once a session over a relay path is
//! established, the side that dialled (A) sends a [`PUNCH_TYPE`] `CONNECT`
//! with its candidate addresses (its reflexive addresses as its peers
//! observe them, and its bound address); B answers `REPLY` with its own.
//! A measures the round trip through the relay, sends `SYNC`, and waits
//! half of it; B starts when `SYNC` arrives, so both send at about the
//! same moment. Each sends *probes* — sealed `Data` datagrams of the live
//! A–B session with an empty payload — straight to every candidate
//! address of the other, so each NAT gets an outbound mapping towards the
//! other and lets the other's probes in. Rounds repeat with backoff
//! ([`ROUNDS`] in all) until the path is direct.
//!
//! An authenticated probe (or any sealed datagram of the session) that
//! arrives directly moves the relayed path to its source by the roaming
//! rule: no handshake, the KCP session goes on, so nothing in flight is
//! lost or duplicated (what is still in the relay arrives later and is
//! delivered or discarded by KCP as usual). The moved side's next datagram
//! (at least its observed-address report) reaches the other directly and
//! moves it too.

use std::net::SocketAddr;

use bytes::Bytes;
use rand::rngs::StdRng;

use super::addr_list;
use super::peer::{Link, PeerId};
use super::relay::is_relay_addr;
use super::{table, Endpoint, HashMap, TimerKey};

/// The message type of the punch coordination messages.
pub(crate) const PUNCH_TYPE: &str = "gladius.punch";
const CONNECT: u8 = 0;
const REPLY: u8 = 1;
const SYNC: u8 = 2;
/// Candidate addresses a side offers.
const MAX_CANDIDATES: usize = 6;
/// Punch rounds (probes to every candidate) before giving up.
pub(crate) const ROUNDS: u8 = 4;
/// The wait after the first round; doubled after each.
const BACKOFF_MS: u64 = 250;
/// A `CONNECT` without a `REPLY` is given up after this.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// One peer's punch.
#[derive(Debug, Clone, Copy)]
struct Punch {
    /// When our `CONNECT` left (the initiator measures the RTT from it).
    connect_at: Option<u64>,
    /// Rounds done.
    rounds: u8,
    /// When the next round is due.
    next_at: Option<u64>,
}

/// Punches under way, by peer.
#[derive(Debug)]
pub(crate) struct Punches {
    by_peer: HashMap<PeerId, Punch>,
}

impl Punches {
    pub(crate) fn new(rng: &mut StdRng) -> Self {
        Self {
            by_peer: table(rng),
        }
    }
}

fn encode(kind: u8, addrs: &[SocketAddr]) -> Vec<u8> {
    let mut body = vec![kind];
    addr_list::encode(&mut body, addrs, MAX_CANDIDATES);
    body
}

fn decode(body: &[u8]) -> Option<(u8, Vec<SocketAddr>)> {
    let (&kind, rest) = body.split_first()?;
    Some((kind, addr_list::decode(rest, MAX_CANDIDATES)?))
}

impl Endpoint {
    /// Where others may reach us directly: our reflexive addresses, then
    /// our bound address (for a peer behind the same NAT).
    fn own_candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.observations.reflexive();
        if let Some(local) = self.local.filter(|l| !l.ip().is_unspecified()) {
            out.push(local);
        }
        if let Some(adv) = self.advertised.filter(|a| !a.ip().is_unspecified()) {
            out.push(adv);
        }
        let mut seen = Vec::new();
        out.retain(|a| {
            !is_relay_addr(*a) && !seen.contains(a) && {
                seen.push(*a);
                true
            }
        });
        out.truncate(MAX_CANDIDATES);
        out
    }

    /// A session over a relay path was established: if we dialled it,
    /// start the punch.
    pub(super) fn session_up(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        let relayed = peer.active.is_some_and(is_relay_addr);
        if !relayed || peer.direction != crate::state::Direction::Outbound {
            return;
        }
        let candidates = self.own_candidates();
        if self.send_reserved(id, PUNCH_TYPE, encode(CONNECT, &candidates)) {
            let now = self.now();
            self.punches.by_peer.insert(
                id,
                Punch {
                    connect_at: Some(now),
                    rounds: 0,
                    next_at: None,
                },
            );
            let at = now.saturating_add(CONNECT_TIMEOUT_MS);
            self.timers
                .push(std::cmp::Reverse((at, TimerKey::Punch(id))));
        }
    }

    /// A [`PUNCH_TYPE`] message from `id` (encrypted sessions only).
    pub(super) fn on_punch_message(&mut self, id: PeerId, body: &Bytes) {
        let now = self.now();
        let Some((kind, addrs)) = decode(body) else {
            self.counters.bad_punches += 1;
            return;
        };
        let relayed = self
            .peers
            .get(id)
            .is_some_and(|p| p.active.is_some_and(is_relay_addr));
        if !relayed {
            // Already direct (a late message): nothing to punch.
            return;
        }
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| !is_relay_addr(*a) && !self.is_self(*a))
            .collect();
        if let Some(peer) = self.peers.get_mut(id) {
            for a in addrs {
                if !peer.direct_candidates.contains(&a) {
                    peer.direct_candidates.push(a);
                }
            }
            let keep = peer
                .direct_candidates
                .len()
                .saturating_sub(2 * MAX_CANDIDATES);
            peer.direct_candidates.drain(..keep);
        }
        match kind {
            CONNECT => {
                let candidates = self.own_candidates();
                if self.send_reserved(id, PUNCH_TYPE, encode(REPLY, &candidates)) {
                    self.punches.by_peer.insert(
                        id,
                        Punch {
                            connect_at: None,
                            rounds: 0,
                            next_at: None,
                        },
                    );
                }
            }
            REPLY => {
                let Some(p) = self.punches.by_peer.get_mut(&id) else {
                    self.counters.bad_punches += 1;
                    return;
                };
                let Some(sent) = p.connect_at.take() else {
                    self.counters.bad_punches += 1;
                    return;
                };
                // Half the round trip through the relay: when our SYNC
                // reaches the peer, which punches at once.
                let at = now.saturating_add(now.saturating_sub(sent) / 2);
                p.next_at = Some(at);
                self.send_reserved(id, PUNCH_TYPE, encode(SYNC, &[]));
                self.timers
                    .push(std::cmp::Reverse((at, TimerKey::Punch(id))));
            }
            SYNC => {
                let known = self
                    .punches
                    .by_peer
                    .get(&id)
                    .is_some_and(|p| p.connect_at.is_none() && p.rounds == 0);
                if !known {
                    self.counters.bad_punches += 1;
                    return;
                }
                self.punch_round(id);
            }
            _ => self.counters.bad_punches += 1,
        }
    }

    /// A punch timer of `id` fired.
    pub(super) fn punch_timer(&mut self, id: PeerId) {
        let now = self.now();
        let Some(p) = self.punches.by_peer.get(&id).copied() else {
            return;
        };
        if p.connect_at
            .is_some_and(|t| now >= t.saturating_add(CONNECT_TIMEOUT_MS))
        {
            // No REPLY: the peer does not punch (or the relay dropped it).
            self.punches.by_peer.remove(&id);
            self.punch_failed(id);
            return;
        }
        if p.next_at.is_some_and(|t| t <= now) {
            self.punch_round(id);
        }
    }

    /// The punch with `id` gave up: count it, tell the plugins.
    fn punch_failed(&mut self, id: PeerId) {
        self.counters.punch_failures += 1;
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        let addr = peer.addr();
        tracing::debug!(%addr, "hole punching failed: staying relayed");
        if let Some(key) = peer.public_key {
            self.emit(crate::api::NodeEvent::PunchFailed(addr, key));
        }
    }

    /// One round: probes to every candidate of `id`; the next round
    /// scheduled, or the punch ended.
    fn punch_round(&mut self, id: PeerId) {
        let now = self.now();
        let relayed = self
            .peers
            .get(id)
            .is_some_and(|p| p.active.is_some_and(is_relay_addr) && p.session().is_some());
        let Some(mut p) = self.punches.by_peer.remove(&id) else {
            return;
        };
        if !relayed {
            // Direct already (counted when the path moved), or gone.
            return;
        }
        if p.rounds >= ROUNDS {
            self.punch_failed(id);
            return;
        }
        p.rounds += 1;
        self.counters.punch_attempts += 1;
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let candidates = peer.direct_candidates.clone();
        if let Link::Sealed { channel, .. } = &mut peer.link {
            for to in candidates {
                let mut probe = Vec::new();
                if channel.seal(&[], &mut probe).is_ok() {
                    self.outbox.push((to, Bytes::from(probe)));
                    self.counters.punch_probes += 1;
                }
            }
        }
        let at = now.saturating_add(BACKOFF_MS << (p.rounds - 1));
        p.next_at = Some(at);
        self.punches.by_peer.insert(id, p);
        self.timers
            .push(std::cmp::Reverse((at, TimerKey::Punch(id))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip_and_malformed_ones_are_refused() {
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.1:7000".parse().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ];
        assert_eq!(decode(&encode(REPLY, &addrs)), Some((REPLY, addrs)));
        assert_eq!(decode(&encode(SYNC, &[])), Some((SYNC, vec![])));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[CONNECT, 3, b'a', b'b', b'c']), None);
        assert_eq!(decode(&[CONNECT, 9, b'1']), None);
    }
}
