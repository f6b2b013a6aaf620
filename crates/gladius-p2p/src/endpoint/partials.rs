//! The budget for partially received messages, all sessions together.
//!
//! A message arrives in pieces, and its bytes are held until the last one
//! is in (up to `max_message_size` per session: the frame length is checked
//! first). A peer that starts large messages and never finishes them, over
//! many sessions, would make the node hold everything it received: 32
//! sessions of 8 MiB each held 266 MiB until the sessions died. So the
//! endpoint counts the bytes every session holds for its current message,
//! and past `Config::partial_frame_bytes` drops whole partial messages,
//! largest first: those of peers outside the route table before those of
//! route-table peers. Largest first is also fair per peer: a peer holding
//! more than others loses first, and a small message of a well-behaved
//! peer is the last to go.
//!
//! A dropped message is lost (the session stays up: the rest of it is
//! skipped as it arrives), and counted in `partial_frames_dropped` and
//! `partial_frame_bytes_dropped`. The KCP reassembly buffer below (at most
//! one receive window per session) has a budget of its own (`reorder`).

use std::cmp::Reverse;

use super::peer::{Peer, PeerId};
use super::Endpoint;
use crate::session::Session;

impl Endpoint {
    /// A datagram reached `id`'s session: count what it holds of its
    /// current message, and keep the total within the budget.
    pub(super) fn track_partial(&mut self, id: PeerId) {
        self.track_partial_only(id);
        if self.partial_bytes > self.config.partial_frame_bytes {
            self.shed_partials();
        }
    }

    /// `id`'s session is gone: so is what it held.
    pub(super) fn untrack_partial(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id) {
            self.partial_bytes -= std::mem::take(&mut peer.partial_bytes);
        }
    }

    /// Drop partial messages, largest first (peers outside the route table
    /// before route-table peers), until the total is within the budget.
    fn shed_partials(&mut self) {
        while self.partial_bytes > self.config.partial_frame_bytes {
            let victim = self
                .peers
                .iter()
                .filter(|(_, p)| p.partial_bytes > 0)
                .min_by_key(|(id, p)| (p.added, Reverse(p.partial_bytes), *id))
                .map(|(id, _)| id);
            let Some(id) = victim else {
                return;
            };
            let freed = self
                .peers
                .get_mut(id)
                .and_then(Peer::session_mut)
                .map_or(0, Session::drop_partial);
            let before = self.partial_bytes;
            self.track_partial_only(id);
            if self.partial_bytes >= before {
                // Too little buffered to know its length: nothing to drop.
                return;
            }
            self.counters.partial_frames_dropped += 1;
            self.counters.partial_frame_bytes_dropped += freed as u64;
            if let Some(peer) = self.peers.get(id) {
                tracing::debug!(addr = %peer.addr(), freed, "partial message dropped: over the budget");
            }
        }
    }

    /// Re-count `id`'s partial message without enforcing the budget.
    fn track_partial_only(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id) {
            let held = peer.session().map_or(0, Session::partial_bytes);
            self.partial_bytes = self.partial_bytes - peer.partial_bytes + held;
            peer.partial_bytes = held;
        }
    }

    /// The count matches the sessions.
    #[cfg(test)]
    pub(super) fn check_partials(&self) {
        let sum: usize = self.peers.values().map(|p| p.partial_bytes).sum();
        assert_eq!(sum, self.partial_bytes);
        for p in self.peers.values() {
            assert_eq!(
                p.partial_bytes,
                p.session().map_or(0, Session::partial_bytes)
            );
        }
    }
}
