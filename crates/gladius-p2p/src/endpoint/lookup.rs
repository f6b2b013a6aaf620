//! Dial by key (issue 13, item 2; `docs/nat.md`, `wire-format.md` §7.12).
//!
//! `add_key(key, [])` for a key the node has no path to asks its peers:
//! each established encrypted session gets a query of the reserved type
//! [`LOOKUP_TYPE`] — "do you have a session with this key?" — and answers
//! with whether it does, whether it relays, whether the key's node looks
//! public to it (the address it sees it at is the one it advertises), and
//! the addresses it knows for it (the one it sees, its reflexive address,
//! and the one it advertises). Once every asked peer answered, or after
//! [`LOOKUP_MS`], the node dials: straight to the address of a node that
//! looks public; else through a peer that relays and has a session with
//! it; else straight to the first address found; else the lookup fails
//! with `NoPath`. Bounded: at most [`MAX_LOOKUPS`] in flight, at most
//! [`MAX_ASKED`] peers asked each, at most [`MAX_ANSWER_ADDRS`] addresses
//! per answer.

use std::net::SocketAddr;

use bytes::Bytes;
use rand::rngs::StdRng;

use super::addr_list;
use super::peer::{Link, PeerId};
use super::relay::is_relay_addr;
use super::{table, Endpoint, Event, HashMap, TimerKey};
use crate::api::Origin;
use crate::crypto::PublicKey;
use crate::error::NetworkError;

/// The message type of a lookup query or answer.
pub(crate) const LOOKUP_TYPE: &str = "gladius.lookup";
const QUERY: u8 = 0;
const ANSWER: u8 = 1;
const KEY_LEN: usize = 32;
/// Query: kind, id, key.
const QUERY_LEN: usize = 1 + 4 + KEY_LEN;
/// Answer flags.
const FOUND: u8 = 1;
const RELAYS: u8 = 2;
const PUBLIC: u8 = 4;
/// Lookups in flight at once; more fail at once with `NoPath`.
pub(crate) const MAX_LOOKUPS: usize = 16;
/// Peers asked per lookup (the first ones with established sessions).
pub(crate) const MAX_ASKED: usize = 8;
/// Addresses one answer carries.
pub(crate) const MAX_ANSWER_ADDRS: usize = 4;
/// How long a lookup waits for its answers.
pub(crate) const LOOKUP_MS: u64 = 2_000;

/// What `add_key` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDial {
    /// Dialled this address (or relay path) at once.
    Dialled(SocketAddr),
    /// Looking the key up; [`Event::LookupDone`] with this id tells how it
    /// ended.
    LookingUp(u64),
}

/// One peer's answer.
#[derive(Debug, Clone)]
struct Found {
    from: PeerId,
    relays: bool,
    public: bool,
    addrs: Vec<SocketAddr>,
}

#[derive(Debug)]
struct Lookup {
    key: PublicKey,
    by: Origin,
    asked: Vec<PeerId>,
    answered: Vec<PeerId>,
    found: Vec<Found>,
}

/// Lookups in flight, by id.
#[derive(Debug)]
pub(crate) struct Lookups {
    by_id: HashMap<u32, Lookup>,
    next: u32,
}

impl Lookups {
    pub(crate) fn new(rng: &mut StdRng) -> Self {
        Self {
            by_id: table(rng),
            next: 0,
        }
    }

    /// End every lookup (the node closes); their ids.
    pub(crate) fn take_all(&mut self) -> Vec<u64> {
        self.by_id.drain().map(|(id, _)| u64::from(id)).collect()
    }
}

fn encode_answer(id: u32, flags: u8, addrs: &[SocketAddr]) -> Vec<u8> {
    let mut body = vec![ANSWER];
    body.extend_from_slice(&id.to_be_bytes());
    body.push(flags);
    addr_list::encode(&mut body, addrs, MAX_ANSWER_ADDRS);
    body
}

/// An answer's id, flags and addresses; `None` if malformed.
fn decode_answer(body: &[u8]) -> Option<(u32, u8, Vec<SocketAddr>)> {
    let id = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
    let flags = *body.get(5)?;
    let addrs = addr_list::decode(body.get(6..)?, MAX_ANSWER_ADDRS)?;
    Some((id, flags, addrs))
}

impl Endpoint {
    /// `add_key`, looking the key up through the peers when the node has
    /// no path to it and no hint was given.
    pub(crate) fn add_key_or_look_up(
        &mut self,
        now: u64,
        key: PublicKey,
        hints: &[SocketAddr],
        by: Origin,
    ) -> Result<KeyDial, NetworkError> {
        self.tick(now);
        let known = self.peers.with_key(&key).is_some();
        let hinted = hints.iter().any(|a| !self.is_self(*a));
        if known || hinted || self.crypto.is_none() {
            return self.add_key(now, key, hints, by).map(KeyDial::Dialled);
        }
        if self.closing.is_some() {
            return Err(NetworkError::Closed);
        }
        if self.crypto.as_ref().map(|c| c.public_key()) == Some(key) {
            return Err(NetworkError::NoPath(key));
        }
        let asked: Vec<PeerId> = self
            .peers
            .ids()
            .into_iter()
            .filter(|id| self.sealed_key(*id).is_some())
            .take(MAX_ASKED)
            .collect();
        if asked.is_empty() || self.lookups.by_id.len() >= MAX_LOOKUPS {
            self.counters.lookups_failed += 1;
            return Err(NetworkError::NoPath(key));
        }
        self.lookups.next = self.lookups.next.wrapping_add(1);
        let id = self.lookups.next;
        let mut query = Vec::with_capacity(QUERY_LEN);
        query.push(QUERY);
        query.extend_from_slice(&id.to_be_bytes());
        query.extend_from_slice(key.as_bytes());
        let mut sent = Vec::new();
        for peer in asked {
            if self.send_reserved(peer, LOOKUP_TYPE, query.clone()) {
                self.counters.lookups_sent += 1;
                sent.push(peer);
            }
        }
        if sent.is_empty() {
            self.counters.lookups_failed += 1;
            return Err(NetworkError::NoPath(key));
        }
        self.lookups.by_id.insert(
            id,
            Lookup {
                key,
                by,
                asked: sent,
                answered: Vec::new(),
                found: Vec::new(),
            },
        );
        let at = self.now().saturating_add(LOOKUP_MS);
        self.timers
            .push(std::cmp::Reverse((at, TimerKey::Lookup(id))));
        tracing::debug!(%key, id, "looking the key up through the peers");
        Ok(KeyDial::LookingUp(u64::from(id)))
    }

    /// A [`LOOKUP_TYPE`] message from peer `from` (encrypted sessions only;
    /// the caller checks).
    pub(super) fn on_lookup_message(&mut self, from: PeerId, body: &Bytes) {
        match body.first() {
            Some(&QUERY) if body.len() == QUERY_LEN => {
                let id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                let Some(key) = PublicKey::from_slice(&body[5..]) else {
                    self.counters.bad_lookups += 1;
                    return;
                };
                self.answer_lookup(from, id, key);
            }
            Some(&ANSWER) => match decode_answer(body) {
                Some((id, flags, addrs)) => self.lookup_answered(from, id, flags, addrs),
                None => self.counters.bad_lookups += 1,
            },
            _ => self.counters.bad_lookups += 1,
        }
    }

    /// Tell `from` what we know of `key`.
    fn answer_lookup(&mut self, from: PeerId, id: u32, key: PublicKey) {
        let target = self
            .peers
            .with_key(&key)
            .filter(|t| *t != from && self.sealed_key(*t).is_some())
            .and_then(|t| self.peers.get(t));
        let mut flags = 0;
        let mut addrs = Vec::new();
        if let Some(peer) = target {
            flags |= FOUND;
            if self.config.relay {
                flags |= RELAYS;
            }
            let seen = peer.active.filter(|a| !is_relay_addr(*a));
            let advertised = peer
                .handshake_advertised
                .filter(|a| !a.ip().is_unspecified() && a.port() != 0);
            if seen.is_some() && seen == advertised {
                flags |= PUBLIC;
            }
            addrs.extend(seen);
            addrs.extend(advertised.filter(|a| Some(*a) != seen));
        }
        if let Link::Sealed { .. } = self.peers.get(from).map_or(&Link::Idle, |p| &p.link) {
            if self.send_reserved(from, LOOKUP_TYPE, encode_answer(id, flags, &addrs)) {
                self.counters.lookups_answered += 1;
            }
        }
    }

    fn lookup_answered(&mut self, from: PeerId, id: u32, flags: u8, addrs: Vec<SocketAddr>) {
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| !self.is_self(*a)).collect();
        let Some(lookup) = self.lookups.by_id.get_mut(&id) else {
            self.counters.bad_lookups += 1;
            return;
        };
        if !lookup.asked.contains(&from) || lookup.answered.contains(&from) {
            self.counters.bad_lookups += 1;
            return;
        }
        lookup.answered.push(from);
        if flags & FOUND != 0 {
            lookup.found.push(Found {
                from,
                relays: flags & RELAYS != 0,
                public: flags & PUBLIC != 0,
                addrs,
            });
        }
        if lookup.answered.len() == lookup.asked.len() {
            self.finish_lookup(id);
        }
    }

    /// The lookup's time is up (or every answer is in): dial what it found.
    pub(super) fn finish_lookup(&mut self, id: u32) {
        let Some(lookup) = self.lookups.by_id.remove(&id) else {
            return;
        };
        let now = self.now();
        let key = lookup.key;
        let public = lookup
            .found
            .iter()
            .find(|f| f.public && !f.addrs.is_empty());
        let relay = lookup
            .found
            .iter()
            .find(|f| f.relays && self.sealed_key(f.from).is_some());
        let any = lookup.found.iter().find(|f| !f.addrs.is_empty());
        let result = if let Some(f) = public {
            let dialled = self.add_key(now, key, &f.addrs, lookup.by.clone());
            // Public-looking is not reachable from here for sure (a
            // firewall): a relay, if one has the peer, is the fallback.
            let fallback = relay.map(|r| r.from);
            if let Some(peer) = dialled
                .as_ref()
                .ok()
                .and_then(|a| self.peers.at(*a))
                .and_then(|id| self.peers.get_mut(id))
                .filter(|p| p.public_key.is_none())
            {
                peer.relay_fallback = fallback;
            }
            dialled
        } else if let Some(f) = relay {
            let relay_addr = self.peers.get(f.from).map(super::peer::Peer::addr);
            let addrs = f.addrs.clone();
            let dialled = match relay_addr {
                Some(r) => self.add_via_relay(now, key, r, lookup.by.clone()),
                None => Err(NetworkError::NoPath(key)),
            };
            if let Ok(via) = dialled {
                self.remember_candidates(via, &addrs);
            }
            dialled
        } else if let Some(f) = any {
            self.add_key(now, key, &f.addrs, lookup.by.clone())
        } else {
            Err(NetworkError::NoPath(key))
        };
        match &result {
            Ok(addr) => {
                self.counters.lookups_found += 1;
                tracing::debug!(%key, %addr, "lookup found the key");
            }
            Err(e) => {
                self.counters.lookups_failed += 1;
                tracing::debug!(%key, %e, "lookup found no path to the key");
            }
        }
        self.events.push_back(Event::LookupDone {
            id: u64::from(id),
            result,
        });
    }

    /// Addresses a relayed peer was seen at, for upgrading to a direct
    /// path later.
    fn remember_candidates(&mut self, via: SocketAddr, addrs: &[SocketAddr]) {
        if let Some(peer) = self.peers.at(via).and_then(|id| self.peers.get_mut(id)) {
            peer.direct_candidates = addrs.iter().copied().take(MAX_ANSWER_ADDRS).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_malformed_ones_are_refused() {
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.1:7000".parse().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ];
        let body = encode_answer(7, FOUND | RELAYS, &addrs);
        assert_eq!(decode_answer(&body), Some((7, FOUND | RELAYS, addrs)));
        assert_eq!(
            decode_answer(&encode_answer(1, 0, &[])),
            Some((1, 0, vec![]))
        );
        // Truncated, not an address, a non-canonical address.
        assert_eq!(decode_answer(&body[..body.len() - 1]), None);
        assert_eq!(
            decode_answer(&[ANSWER, 0, 0, 0, 1, 0, 3, b'a', b'b', b'c']),
            None
        );
        let mut odd = vec![ANSWER, 0, 0, 0, 1, 0];
        odd.push(13);
        odd.extend_from_slice(b"010.0.0.1:700");
        assert_eq!(decode_answer(&odd), None);
        assert_eq!(decode_answer(&[ANSWER, 0]), None);
    }
}
