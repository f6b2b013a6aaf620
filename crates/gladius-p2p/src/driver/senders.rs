//! The driver's side of [`PeerSender`](crate::PeerSender)s: their messages
//! go into the peer's send queue in order; what does not fit waits here,
//! within the sender's budget, until the peer's acknowledgements make room
//! ([`Event::Room`](crate::endpoint::Event::Room)); a peer that is gone
//! closes its budget and counts what was held.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Driver, Reply};
use crate::api::SendFailure;
use crate::endpoint::PeerId;
use crate::error::NetworkError;
use crate::sender::{Budget, Push};

/// Pushes taken per wake-up before the sessions are flushed (as
/// `COMMAND_BURST` for commands), so one busy sender cannot starve the
/// socket and the timers.
pub(super) const PUSH_BURST: usize = 4096;

/// One peer's open budget and the messages waiting for its queue.
pub(super) struct SenderQueue {
    budget: Arc<Budget>,
    /// Accepted, in order, waiting for room in the peer's queue.
    waiting: VecDeque<Push>,
}

impl Driver {
    /// `Network::sender`: the peer's budget (one per peer, shared by every
    /// sender opened to it while it lasts).
    pub(super) fn open_sender(
        &mut self,
        addr: SocketAddr,
        reply: Reply<Result<Arc<Budget>, NetworkError>>,
    ) {
        let Some((peer, _)) = self.endpoint.watch_room(addr) else {
            let _ = reply.send(Err(NetworkError::UnknownPeer(addr)));
            return;
        };
        let limit = self.config.peer_queue_bytes;
        let queue = self.senders.entry(peer).or_insert_with(|| SenderQueue {
            budget: Arc::new(Budget::new(peer, addr, limit)),
            waiting: VecDeque::new(),
        });
        if queue.budget.is_closed() {
            queue.budget = Arc::new(Budget::new(peer, addr, limit));
        }
        let _ = reply.send(Ok(queue.budget.clone()));
    }

    /// Take every push ready now (up to [`PUSH_BURST`]), in order.
    pub(super) fn take_pushes(&mut self, first: Push, pushes: &mut mpsc::UnboundedReceiver<Push>) {
        self.push(first);
        for _ in 1..PUSH_BURST {
            match pushes.try_recv() {
                Ok(push) => self.push(push),
                Err(_) => break,
            }
        }
    }

    fn push(&mut self, push: Push) {
        let peer = push.budget.peer;
        let in_line = match self.senders.get(&peer) {
            Some(q) if Arc::ptr_eq(&q.budget, &push.budget) => !q.waiting.is_empty(),
            _ => {
                // Sent before its peer went away (and the budget closed).
                push.budget.release(push.need);
                push.budget.close(1);
                return;
            }
        };
        let push = if in_line {
            push
        } else {
            match self.queue_push(push) {
                Ok(()) => return,
                Err(push) => push,
            }
        };
        if let Some(queue) = self.senders.get_mut(&peer) {
            queue.waiting.push_back(push);
        }
    }

    /// Put one push into its peer's send queue. Gives it back if the queue
    /// is full; closes the budget if the peer cannot be sent to any more.
    // The push comes back by value to wait in line; boxing it would
    // allocate on every full queue.
    #[allow(clippy::result_large_err)]
    fn queue_push(&mut self, push: Push) -> Result<(), Push> {
        let Push { budget, msg, need } = push;
        let now = self.now();
        match self.endpoint.send_to_peer(now, budget.peer, msg) {
            Ok(()) => {
                budget.release(need);
                Ok(())
            }
            Err((SendFailure::QueueFull, Some(msg))) => Err(Push { budget, msg, need }),
            Err(_) => {
                budget.release(need);
                self.close_sender(budget.peer, 1);
                Ok(())
            }
        }
    }

    /// The peer's queue was flushed (`queued` bytes in it now) or, with
    /// `None`, the peer is gone: move what waits into its queue, or close.
    pub(super) fn sender_room(&mut self, peer: PeerId, queued: Option<usize>) {
        if queued.is_none() {
            self.close_sender(peer, 0);
            return;
        }
        while let Some(push) = self
            .senders
            .get_mut(&peer)
            .and_then(|q| q.waiting.pop_front())
        {
            if let Err(push) = self.queue_push(push) {
                if let Some(queue) = self.senders.get_mut(&peer) {
                    queue.waiting.push_front(push);
                }
                return;
            }
        }
        // Nobody holds the budget any more and nothing waits: forget it.
        let idle = self
            .senders
            .get(&peer)
            .is_some_and(|q| q.waiting.is_empty() && Arc::strong_count(&q.budget) == 1);
        if idle {
            self.senders.remove(&peer);
            self.unwatch_if_unused(peer);
        }
    }

    /// Close the peer's budget: its senders fail from now on, and what
    /// they had handed over and not yet queued (`extra` more) is counted
    /// as dropped.
    pub(super) fn close_sender(&mut self, peer: PeerId, extra: u64) {
        let Some(queue) = self.senders.remove(&peer) else {
            return;
        };
        let held = queue.waiting.len() as u64;
        for push in &queue.waiting {
            push.budget.release(push.need);
        }
        queue.budget.close(held + extra);
        self.unwatch_if_unused(peer);
    }

    /// The node is closing: every budget closes, and every push still in
    /// the channel counts as dropped.
    pub(super) fn close_all_senders(&mut self, pushes: &mut mpsc::UnboundedReceiver<Push>) {
        pushes.close();
        let peers: Vec<PeerId> = self.senders.keys().copied().collect();
        for peer in peers {
            self.close_sender(peer, 0);
        }
        while let Ok(push) = pushes.try_recv() {
            push.budget.release(push.need);
            push.budget.close(1);
        }
    }

    /// Stop the endpoint's room reports for `peer` when neither a sender
    /// nor a `wait_for_room` caller needs them.
    pub(super) fn unwatch_if_unused(&mut self, peer: PeerId) {
        if !self.senders.contains_key(&peer) && !self.room_waiters.contains_key(&peer) {
            self.endpoint.unwatch_room(peer);
        }
    }
}
