//! A new key at the address of a live session: probe before giving way.
//!
//! When a handshake from a peer's address proves a key other than the one
//! its live session proved, the newcomer is either that peer restarted with
//! a fresh identity (its old session is dead but not yet timed out) or
//! someone else at that address (an on-path attacker, a twin behind the
//! same NAT port). The old session is asked: a probe (a keepalive that must
//! be acknowledged) goes out on it, and the newcomer's completed handshake
//! is held. If the old session answers within [`TAKEOVER_PROBE_MS`], the
//! peer is alive and keeps its session; the newcomer is refused (`Reject`,
//! counted in `key_conflicts`). If it stays silent, the newcomer takes the
//! peer's entry over (counted in `key_changes`): a restarted node is back
//! within about a second instead of the idle timeout. Only a datagram that
//! opens under the old session's keys counts as an answer, so a forger
//! cannot keep a dead session alive or kill a live one. A pinned peer
//! never gets here: its pin refuses other keys during the handshake.

use std::net::SocketAddr;

use super::peer::{Peer, PeerId};
use super::{Endpoint, TimerKey};
use crate::crypto::Established;
use crate::state::Direction;

/// How long a probed session has to answer before a new key takes its
/// peer's entry over. A live peer answers within one round trip; a second
/// covers slow paths without keeping a restarted node out for long.
pub(super) const TAKEOVER_PROBE_MS: u64 = 1_000;
/// Takeovers waiting at once. Each needs a completed handshake from the
/// address of a live session, so only an on-path attacker can start one;
/// the bound keeps even that from holding more than a few KiB.
const MAX_TAKEOVERS: usize = 64;
/// Sealed datagrams the newcomer sends while held, kept to be opened once
/// it takes over (its hello among them: without them its first message
/// would wait for KCP's retransmission).
const MAX_HELD_DATAGRAMS: usize = 8;

/// A newcomer's completed handshake, held while the old session is probed.
#[derive(Debug)]
pub(super) struct Takeover {
    est: Established,
    direction: Direction,
    /// The peer whose live session the newcomer would replace.
    old: PeerId,
    /// Bytes that session had received when probed.
    bytes_in_at_probe: u64,
    /// The newcomer's sealed datagrams that arrived meanwhile.
    held: Vec<Vec<u8>>,
}

impl Endpoint {
    /// Hold `est` (a handshake over `from` proving a new key) and probe the
    /// live session of `old`, the peer at `from`.
    pub(super) fn start_takeover(
        &mut self,
        from: SocketAddr,
        est: Established,
        direction: Direction,
        old: PeerId,
    ) {
        let now = self.now();
        if self.takeovers.contains_key(&from) || self.takeovers.len() >= MAX_TAKEOVERS {
            self.refuse_newcomer(from, "a takeover of this address is already being decided");
            return;
        }
        let Some(session) = self.peers.get_mut(old).and_then(Peer::session_mut) else {
            return;
        };
        session.probe(now);
        let bytes_in_at_probe = session.stats().bytes_in;
        self.takeovers.insert(
            from,
            Takeover {
                est,
                direction,
                old,
                bytes_in_at_probe,
                held: Vec::new(),
            },
        );
        let at = now.saturating_add(TAKEOVER_PROBE_MS);
        self.timers
            .push(std::cmp::Reverse((at, TimerKey::Takeover(from))));
        self.touch(old);
        tracing::debug!(%from, "new key at a live session's address: probing the session");
    }

    /// The probe's time is up: the newcomer at `from` takes over if the old
    /// session stayed silent, and is refused otherwise.
    pub(super) fn finish_takeover(&mut self, from: SocketAddr) {
        let now = self.now();
        let Some(t) = self.takeovers.remove(&from) else {
            return;
        };
        let answered = self
            .peers
            .get(t.old)
            .and_then(Peer::session)
            .is_some_and(|s| !s.is_closed() && s.stats().bytes_in > t.bytes_in_at_probe);
        if answered {
            self.refuse_newcomer(from, "the peer at this address is alive under its old key");
        } else {
            tracing::debug!(%from, "the old session stayed silent: the new key takes over");
            self.install(from, t.est, t.direction, now);
            for datagram in t.held {
                self.on_data(from, &datagram, now);
            }
        }
    }

    /// Whether a sealed datagram from `from` for our index `index` belongs
    /// to a held newcomer.
    pub(super) fn held_by_takeover(&self, from: SocketAddr, index: Option<u32>) -> bool {
        self.takeovers
            .get(&from)
            .is_some_and(|t| index.is_none_or(|i| i == t.est.channel.local_index()))
    }

    /// Keep a held newcomer's sealed datagram for after the takeover (the
    /// first few; later ones KCP retransmits).
    pub(super) fn hold_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        if let Some(t) = self.takeovers.get_mut(&from) {
            if t.held.len() < MAX_HELD_DATAGRAMS {
                t.held.push(datagram.to_vec());
            }
        }
    }
}
