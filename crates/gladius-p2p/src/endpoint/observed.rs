//! Observed addresses: what the node's peers see as its address, and what
//! that says about the NAT in front of it (issue 13, item 1; `docs/nat.md`).
//!
//! Each encrypted session tells the other side the address it receives
//! that side's datagrams from, in an authenticated message of the reserved
//! type [`OBSERVED_TYPE`] (`wire-format.md` §7.10), once the session is
//! established and again whenever the path moves. The node keeps, per
//! observer **key**, the last [`PER_OBSERVER`] observations, for at most
//! [`MAX_OBSERVERS`] observers, and classifies its mapping from the
//! latest observation of each observer: one vote per key, so a peer that
//! lies, however often, has one vote. Pure: no clock, no IO.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::peer::{Peer, PeerId};
use super::Endpoint;
use crate::crypto::PublicKey;
use crate::session::EncodedFrame;
pub(crate) use crate::state::NatType;
use crate::wire::{Frame, Message};

/// The message type of an observed-address report; its body is the
/// canonical address text (§4.1) of the address the sender sees.
pub(crate) const OBSERVED_TYPE: &str = "gladius.observed_addr";
/// Observations kept per observer.
pub(crate) const PER_OBSERVER: usize = 4;
/// Observers kept; the one heard from least recently goes first.
pub(crate) const MAX_OBSERVERS: usize = 32;
/// Reflexive addresses shown, most voted first.
const MAX_REFLEXIVE: usize = 4;

/// The observations, per observer.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// Observer key, and its observations, oldest first; observers in
    /// order of their last report, least recent first.
    by_observer: VecDeque<(PublicKey, VecDeque<SocketAddr>)>,
}

impl Observations {
    /// `observer` (a proven key) sees this node at `addr`.
    pub(crate) fn record(&mut self, observer: PublicKey, addr: SocketAddr) {
        let mut seen = match self.by_observer.iter().position(|(k, _)| *k == observer) {
            Some(i) => self
                .by_observer
                .remove(i)
                .map(|(_, s)| s)
                .unwrap_or_default(),
            None => VecDeque::new(),
        };
        seen.push_back(addr);
        while seen.len() > PER_OBSERVER {
            seen.pop_front();
        }
        self.by_observer.push_back((observer, seen));
        while self.by_observer.len() > MAX_OBSERVERS {
            self.by_observer.pop_front();
        }
    }

    /// Forget what `observer` said (its session ended).
    pub(crate) fn forget(&mut self, observer: &PublicKey) {
        self.by_observer.retain(|(k, _)| k != observer);
    }

    /// Observers heard from.
    #[cfg(test)]
    pub(crate) fn observers(&self) -> usize {
        self.by_observer.len()
    }

    /// Each observer's latest observation, with the votes for it: most
    /// votes first, then by address.
    fn tally(&self) -> Vec<(SocketAddr, usize)> {
        let mut votes: Vec<(SocketAddr, usize)> = Vec::new();
        for latest in self.by_observer.iter().filter_map(|(_, s)| s.back()) {
            match votes.iter_mut().find(|(a, _)| a == latest) {
                Some((_, n)) => *n += 1,
                None => votes.push((*latest, 1)),
            }
        }
        votes.sort_by(|(a, n), (b, m)| m.cmp(n).then(a.cmp(b)));
        votes
    }

    /// The node's reflexive addresses (as observers see it), most voted
    /// first, at most four.
    pub(crate) fn reflexive(&self) -> Vec<SocketAddr> {
        self.tally()
            .into_iter()
            .take(MAX_REFLEXIVE)
            .map(|(a, _)| a)
            .collect()
    }

    /// Classify the mapping of a node bound to `local`. One vote per
    /// observer (its latest observation). With two or more observers: an
    /// address seen by at least two of them and by more than any other is
    /// the mapping; it is `None` if it is the bound address (an unspecified
    /// bound IP matches any IP with the bound port), `EndpointIndependent`
    /// otherwise. With no such address, the observers disagree:
    /// `EndpointDependent`. One lying observer cannot outvote two honest
    /// ones, nor turn `None` or `EndpointIndependent` into anything else
    /// once three observers agree.
    pub(crate) fn classify(&self, local: Option<SocketAddr>) -> NatType {
        let votes = self.tally();
        let observers: usize = votes.iter().map(|(_, n)| n).sum();
        if observers < 2 {
            return NatType::Unknown;
        }
        let (top, n) = votes[0];
        let runner_up = votes.get(1).map_or(0, |(_, m)| *m);
        if n >= 2 && n > runner_up {
            let bound = local
                .is_some_and(|l| l == top || (l.ip().is_unspecified() && l.port() == top.port()));
            if bound {
                NatType::None
            } else {
                NatType::EndpointIndependent
            }
        } else {
            NatType::EndpointDependent
        }
    }
}

impl Endpoint {
    /// Tell peer `id` the address its datagrams come from (its active
    /// path), on its established encrypted session. Sent when the session
    /// is established and when the path moves.
    pub(super) fn send_observation(&mut self, id: PeerId) {
        let now = self.now();
        let (Some(advertised), true) = (self.advertised, self.crypto.is_some()) else {
            return;
        };
        // A relay path says nothing about where the peer is.
        let seen = self.peers.get(id).and_then(|p| p.active);
        let Some(seen) = seen.filter(|a| !super::relay::is_relay_addr(*a)) else {
            return;
        };
        let Ok(mut msg) = Message::new(OBSERVED_TYPE, seen.to_string()) else {
            return;
        };
        msg.set_sender(advertised);
        let frame = EncodedFrame::new(&Frame::Message(msg));
        if let Some(session) = self
            .peers
            .get_mut(id)
            .and_then(Peer::session_mut)
            .filter(|s| s.is_established())
        {
            session.send_frame(now, &frame);
            self.counters.observations_sent += 1;
            self.touch(id);
        }
    }

    /// The peer at `from`, which proved `key`, reports the address it sees
    /// us at. Encrypted sessions only (the caller checks): the report is as
    /// authentic as the session.
    pub(super) fn observed(&mut self, from: SocketAddr, key: Option<PublicKey>, msg: &Message) {
        let seen = std::str::from_utf8(msg.body()).ok().and_then(|text| {
            text.parse::<SocketAddr>()
                .ok()
                .filter(|a| a.to_string() == text && !super::relay::is_relay_addr(*a))
        });
        match (key, seen) {
            (Some(key), Some(seen)) => {
                self.counters.observations_received += 1;
                let before = self.observations.classify(self.local);
                self.observations.record(key, seen);
                let after = self.observations.classify(self.local);
                if before != after {
                    tracing::info!(?after, %seen, "NAT mapping classified");
                }
            }
            _ => {
                self.counters.bad_observations += 1;
                tracing::debug!(%from, "observed-address report not an address");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;

    fn key(k: u8) -> PublicKey {
        Identity::from_private_bytes([k; 32]).public_key()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.10:7000";

    fn classify(obs: &[(u8, &str)]) -> NatType {
        let mut o = Observations::default();
        for (k, addr) in obs {
            o.record(key(*k), a(addr));
        }
        o.classify(Some(a(LOCAL)))
    }

    #[test]
    fn fewer_than_two_observers_is_unknown() {
        assert_eq!(classify(&[]), NatType::Unknown);
        assert_eq!(classify(&[(1, "1.2.3.4:5000")]), NatType::Unknown);
        // One observer saying it many times is still one observer.
        assert_eq!(
            classify(&[(1, "1.2.3.4:5000"), (1, "1.2.3.4:5000"), (1, LOCAL)]),
            NatType::Unknown
        );
    }

    #[test]
    fn the_bound_address_seen_by_two_is_no_nat() {
        assert_eq!(classify(&[(1, LOCAL), (2, LOCAL)]), NatType::None);
        let mut o = Observations::default();
        o.record(key(1), a("10.0.0.5:7000"));
        o.record(key(2), a("10.0.0.5:7000"));
        assert_eq!(o.classify(Some(a("0.0.0.0:7000"))), NatType::None);
        assert_eq!(
            o.classify(Some(a("0.0.0.0:7001"))),
            NatType::EndpointIndependent
        );
        assert_eq!(o.reflexive(), vec![a("10.0.0.5:7000")]);
    }

    #[test]
    fn one_mapping_for_every_observer_is_endpoint_independent() {
        assert_eq!(
            classify(&[(1, "1.2.3.4:5000"), (2, "1.2.3.4:5000")]),
            NatType::EndpointIndependent
        );
    }

    #[test]
    fn a_mapping_per_observer_is_endpoint_dependent() {
        assert_eq!(
            classify(&[(1, "1.2.3.4:5000"), (2, "1.2.3.4:5001")]),
            NatType::EndpointDependent
        );
        assert_eq!(
            classify(&[
                (1, "1.2.3.4:5000"),
                (2, "1.2.3.4:5001"),
                (3, "1.2.3.4:5002")
            ]),
            NatType::EndpointDependent
        );
    }

    #[test]
    fn a_liar_has_one_vote_however_often_it_lies() {
        let honest = [(1, "1.2.3.4:5000"), (2, "1.2.3.4:5000")];
        let mut obs: Vec<(u8, &str)> = honest.to_vec();
        for _ in 0..100 {
            obs.push((9, "6.6.6.6:666"));
        }
        assert_eq!(classify(&obs), NatType::EndpointIndependent);
        let mut o = Observations::default();
        for (k, addr) in &obs {
            o.record(key(*k), a(addr));
        }
        assert_eq!(o.reflexive()[0], a("1.2.3.4:5000"));
        // Nor can it make a public node look NATed once three agree.
        let mut obs = vec![(1, LOCAL), (2, LOCAL), (3, LOCAL)];
        obs.extend(std::iter::repeat_n((9, "6.6.6.6:666"), 50));
        assert_eq!(classify(&obs), NatType::None);
    }

    #[test]
    fn the_latest_observation_of_each_observer_counts() {
        // The NAT rebound: both observers now see the new port.
        assert_eq!(
            classify(&[
                (1, "1.2.3.4:5000"),
                (2, "1.2.3.4:5000"),
                (1, "1.2.3.4:6000"),
                (2, "1.2.3.4:6000"),
            ]),
            NatType::EndpointIndependent
        );
        let mut o = Observations::default();
        o.record(key(1), a("1.2.3.4:5000"));
        o.record(key(2), a("1.2.3.4:5000"));
        o.record(key(1), a("1.2.3.4:6000"));
        // Mid-way: the two disagree.
        assert_eq!(o.classify(None), NatType::EndpointDependent);
        o.record(key(2), a("1.2.3.4:6000"));
        assert_eq!(o.reflexive(), vec![a("1.2.3.4:6000")]);
        o.forget(&key(2));
        assert_eq!(o.classify(None), NatType::Unknown);
    }

    #[test]
    fn memory_is_bounded() {
        let mut o = Observations::default();
        for k in 0..200u8 {
            for port in 0..20u16 {
                o.record(key(k), SocketAddr::from(([1, 2, 3, 4], port)));
            }
        }
        assert_eq!(o.observers(), MAX_OBSERVERS);
        assert!(o.by_observer.iter().all(|(_, s)| s.len() == PER_OBSERVER));
        assert!(o.reflexive().len() <= MAX_REFLEXIVE);
    }
}
