//! Requests waiting for their reply, with their deadlines.
//!
//! A reply removes its request and its deadline at once: deadlines live in
//! an ordered set here, not in the driver's lazy timer heap, where every
//! answered request would leave an entry until its timeout passed (memory
//! growing with request rate × timeout).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{HashMap, PeerId};

/// One request in flight.
#[derive(Debug)]
pub(super) struct PendingRequest {
    pub(super) peer: PeerId,
    pub(super) deadline: u64,
    pub(super) timeout: Duration,
}

/// Requests in flight by id, and their deadlines in order.
#[derive(Debug)]
pub(super) struct Requests {
    pending: HashMap<u64, PendingRequest>,
    by_deadline: BTreeSet<(u64, u64)>,
    last_id: u64,
}

impl Requests {
    pub(super) fn new(pending: HashMap<u64, PendingRequest>) -> Self {
        Self {
            pending,
            by_deadline: BTreeSet::new(),
            last_id: 0,
        }
    }

    /// A fresh request id (never 0, never reused by this driver).
    pub(super) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    pub(super) fn insert(&mut self, id: u64, request: PendingRequest) {
        self.by_deadline.insert((request.deadline, id));
        if let Some(old) = self.pending.insert(id, request) {
            self.by_deadline.remove(&(old.deadline, id));
        }
    }

    /// Take request `id` if it went to `peer`; a reply from anyone else
    /// leaves it waiting.
    pub(super) fn take_from(&mut self, id: u64, peer: PeerId) -> Option<PendingRequest> {
        if self.pending.get(&id)?.peer != peer {
            return None;
        }
        self.take(id)
    }

    fn take(&mut self, id: u64) -> Option<PendingRequest> {
        let request = self.pending.remove(&id)?;
        self.by_deadline.remove(&(request.deadline, id));
        Some(request)
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Take every request whose deadline is `now` or earlier.
    pub(super) fn take_expired(&mut self, now: u64) -> Vec<(u64, PendingRequest)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            expired.extend(self.pending.remove(&id).map(|r| (id, r)));
        }
        expired
    }

    /// Take every request that went to `peer`.
    pub(super) fn take_for(&mut self, peer: PeerId) -> Vec<(u64, PendingRequest)> {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        // Oldest first, whatever the table's order.
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.take(id).map(|r| (id, r)))
            .collect()
    }

    /// Requests that went to `from` now wait for `to` (the same peer,
    /// known under another entry until its handshake proved its key).
    pub(super) fn retarget(&mut self, from: PeerId, to: PeerId) {
        for r in self.pending.values_mut().filter(|r| r.peer == from) {
            r.peer = to;
        }
    }

    /// Take them all.
    pub(super) fn take_all(&mut self) -> Vec<(u64, PendingRequest)> {
        self.by_deadline.clear();
        let mut all: Vec<_> = self.pending.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.pending.len(), self.by_deadline.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: u64, deadline: u64) -> PendingRequest {
        PendingRequest {
            peer: PeerId(peer),
            deadline,
            timeout: Duration::from_millis(deadline),
        }
    }

    #[test]
    fn a_reply_takes_its_deadline_with_it() {
        let mut r = Requests::new(HashMap::default());
        for i in 0..1000 {
            let id = r.next_id();
            r.insert(id, request(1, 30_000 + i));
            let peer = PeerId(1);
            assert!(r.take_from(id, peer).is_some());
        }
        assert_eq!(r.len(), (0, 0), "answered requests leave nothing behind");
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn only_the_peer_asked_can_answer_and_deadlines_expire_in_order() {
        let mut r = Requests::new(HashMap::default());
        let ids: Vec<u64> = [300, 100, 200]
            .into_iter()
            .map(|d| {
                let id = r.next_id();
                r.insert(id, request(1, d));
                id
            })
            .collect();
        let stranger = PeerId(2);
        assert!(r.take_from(ids[0], stranger).is_none());
        assert_eq!(r.len(), (3, 3));
        assert_eq!(r.next_deadline(), Some(100));
        let expired: Vec<u64> = r
            .take_expired(200)
            .iter()
            .map(|(_, p)| p.deadline)
            .collect();
        assert_eq!(expired, vec![100, 200]);
        assert_eq!(r.next_deadline(), Some(300));
        assert_eq!(r.take_for(PeerId(1)).len(), 1);
        assert_eq!(r.len(), (0, 0));
    }
}
