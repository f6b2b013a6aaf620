//! The budget for out-of-order KCP segments, sessions outside the route
//! table together.
//!
//! KCP holds segments received beyond a gap until the gap fills, up to a
//! receive window per session (1,024 segments, about 1.4 MiB at the
//! default preset). A peer that opens many sessions and, in each, sends
//! everything but the next expected segment would make the node hold a
//! window per session: 4,096 sessions × 1.4 MiB, outside the budget for
//! partial messages (which counts only what KCP has delivered in order).
//!
//! So every session of a peer outside the route table holds its
//! out-of-order segments within a limit set before each datagram it
//! handles: its fair share of `Config::reorder_bytes` (the budget divided
//! by the number of such sessions), and no more than what is left of the
//! budget. A segment that does not fit is neither held nor acknowledged
//! (`Kcp::set_reorder_limit`): its sender retransmits it, and the refusal
//! is counted in `reorder_refused`. The segment KCP expects next is always
//! taken, so every session keeps moving. Route-table peers keep their full
//! window and are not counted.

use super::peer::{Peer, PeerId};
use super::Endpoint;
#[cfg(test)]
use crate::session::Session;

impl Endpoint {
    /// The reorder limit of a session holding `held` bytes out of order,
    /// of a peer in the route table (`added`, no limit) or not.
    pub(super) fn reorder_allowance(&self, added: bool, held: usize) -> Option<usize> {
        if added {
            return None;
        }
        let budget = self.config.reorder_bytes;
        let fair = budget / self.inbound.len().max(1);
        let free = budget.saturating_sub(self.reorder_bytes);
        Some(fair.min(held.saturating_add(free)))
    }

    /// Before a datagram reaches `id`'s session: set its limit. Returns the
    /// refusals it counted so far, for [`track_reorder`](Self::track_reorder).
    pub(super) fn arm_reorder(&mut self, id: PeerId) -> u64 {
        let Some(peer) = self.peers.get(id) else {
            return 0;
        };
        let limit = self.reorder_allowance(peer.added, peer.reorder_bytes);
        match self.peers.get_mut(id).and_then(Peer::session_mut) {
            Some(session) => {
                session.set_reorder_limit(limit);
                session.reorder_refused()
            }
            None => 0,
        }
    }

    /// After a datagram reached `id`'s session: count what it holds and
    /// what it refused since `refused_before`.
    pub(super) fn track_reorder(&mut self, id: PeerId, refused_before: u64) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let (held, refused) = peer.session().map_or((0, refused_before), |s| {
            (s.reorder_bytes(), s.reorder_refused())
        });
        let held = if peer.added { 0 } else { held };
        self.reorder_bytes = self.reorder_bytes - peer.reorder_bytes + held;
        peer.reorder_bytes = held;
        self.counters.reorder_refused += refused.saturating_sub(refused_before);
    }

    /// `id`'s session is gone: so is what it held.
    pub(super) fn untrack_reorder(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id) {
            self.reorder_bytes -= std::mem::take(&mut peer.reorder_bytes);
        }
    }

    /// The count matches the peers'.
    #[cfg(test)]
    pub(super) fn check_reorder(&self) {
        let sum: usize = self.peers.values().map(|p| p.reorder_bytes).sum();
        assert_eq!(sum, self.reorder_bytes);
        for p in self.peers.values() {
            assert!(p.reorder_bytes <= p.session().map_or(0, Session::reorder_bytes));
        }
    }
}
