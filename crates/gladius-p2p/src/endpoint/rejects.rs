//! `Reject`s, which are not authenticated (`wire-format.md` §7.3): anyone
//! can send one in a peer's name. A node honours a `Reject` only for a
//! connection attempt still waiting to hear from that address (our
//! handshake, or a session the peer has not used yet), and only once the
//! attempt has stayed unanswered for [`REJECT_GRACE_MS`] after it: if the
//! peer's own answer (its `Response`, its first sealed or plaintext
//! datagram) arrives meanwhile, the `Reject` was not the peer's word for
//! this attempt (a forgery, or a late one from an earlier attempt) and is
//! dropped, counted in `rejects_overruled`. Our `Init` retransmissions go
//! on during the grace, as if nothing had come.
//!
//! An off-path forger can therefore no longer end a handshake whose peer
//! answers; a genuine `Reject` (a node of the other mode, a pinned-key or
//! policy refusal) still ends the attempt, with its reason, one grace
//! later than it arrived.

use std::cmp::Reverse;
use std::net::SocketAddr;

use super::peer::{Link, PeerId};
use super::{Endpoint, TimerKey};
use crate::crypto::RejectReason;

/// How long a `Reject` waits for the peer's own answer to overrule it:
/// the first `Init` retransmission (200 ms) plus a round trip of up to
/// 300 ms.
pub(super) const REJECT_GRACE_MS: u64 = 500;

/// One connection attempt, as a `Reject` found it waiting: a later attempt
/// (or the same one, answered) is another value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Our handshake, by our index.
    Handshake(u32),
    /// A sealed session the peer has not used yet, by our index.
    Sealed(u32),
    /// A plaintext session the peer has not used yet, by conversation.
    Plaintext(u32),
}

/// A `Reject` waiting out its grace.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingReject {
    from: SocketAddr,
    reason: RejectReason,
    attempt: Attempt,
    /// When the grace ends.
    due: u64,
}

impl Endpoint {
    /// The attempt of `id` still waiting to hear from the peer, if any.
    fn waiting_attempt(&self, id: PeerId) -> Option<Attempt> {
        match &self.peers.get(id)?.link {
            Link::Handshaking(h) => Some(Attempt::Handshake(h.local_index())),
            Link::Sealed {
                session, channel, ..
            } if !session.heard() && channel.highest_received().is_none() => {
                Some(Attempt::Sealed(channel.local_index()))
            }
            Link::Plaintext(session) if !session.heard() => {
                Some(Attempt::Plaintext(session.conv()))
            }
            Link::Sealed { .. } | Link::Plaintext(_) | Link::Idle => None,
        }
    }

    /// A `Reject` from `from`: hold it for the grace if an attempt waits
    /// there (see the module docs).
    pub(super) fn on_reject(&mut self, from: SocketAddr, reason: RejectReason) {
        let Some((id, attempt)) = self
            .peers
            .at(from)
            .and_then(|id| Some((id, self.waiting_attempt(id)?)))
        else {
            self.counters.unknown_session_datagrams += 1;
            return;
        };
        match self.rejects.get(&id) {
            // Already held for this attempt (the peer answers each
            // retransmitted `Init`, a forger may repeat itself).
            Some(p) if p.attempt == attempt => return,
            // Held for an earlier attempt, which was answered.
            Some(_) => self.counters.rejects_overruled += 1,
            None => {}
        }
        let due = self.now().saturating_add(REJECT_GRACE_MS);
        self.rejects.insert(
            id,
            PendingReject {
                from,
                reason,
                attempt,
                due,
            },
        );
        self.timers.push(Reverse((due, TimerKey::Reject(id))));
    }

    /// The grace of `id`'s `Reject` is over: honour it if the attempt it
    /// found still waits, unanswered.
    pub(super) fn reject_due(&mut self, id: PeerId) {
        let now = self.now();
        let Some(pending) = self.rejects.get(&id).copied().filter(|p| now >= p.due) else {
            // None held, or one that replaced the `Reject` this timer was
            // for: its own timer comes later.
            return;
        };
        self.rejects.remove(&id);
        if self.peers.get(id).is_none() {
            return; // forgotten meanwhile: nothing to end
        }
        if self.waiting_attempt(id) != Some(pending.attempt) {
            self.counters.rejects_overruled += 1;
            tracing::debug!(from = %pending.from, "Reject overruled: the peer answered");
            return;
        }
        self.honour_reject(id, pending.from, pending.reason);
    }
}
