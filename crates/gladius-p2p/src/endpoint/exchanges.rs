//! Key exchanges admitted but not yet run.
//!
//! A responder's key exchange (a `Responder`: three Diffie-Hellman
//! operations, 0.35–0.5 ms each in a test build) is the most expensive
//! thing an `Init` can cost. Admission (`admission`) bounds how many a
//! second; this queue bounds *when* they run, so a burst of them never
//! delays the node's established sessions.
//!
//! An admitted `Init` is queued here instead of answered at once. The
//! queue runs from [`Endpoint::poll_transmit`] only once everything else
//! the input produced (session datagrams, ACKs, replies, cookies) has been
//! handed to the driver, and at most [`PER_TURN`] exchanges per turn (a
//! turn ends when `poll_transmit` returns `None`). While the queue is not
//! empty `poll_timeout` says "now", so a quiet driver comes back for the
//! rest at once, and a driver busy with its socket runs a few between
//! every burst it reads. Under a flood the latency an echo request sees
//! from key exchanges is thus at most `PER_TURN` of them, not the bucket's
//! burst (10 ms worth).
//!
//! The queue holds at most [`QUEUE_LEN`] exchanges, route-table peers' and
//! pinned keys' first; an exchange that finds it full (of its own kind or
//! better) is refused and counted in `key_exchanges_refused`, like one
//! over the budget: the initiator's retransmission tries again. While an
//! `Init` waits here its address counts as holding the handshake it will
//! get, for the half-open table's per-address rules.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;

use super::Endpoint;
use crate::crypto::packet::InitPacket;

/// Key exchanges run per driver turn. One (0.35–0.5 ms in a test build):
/// with two, the flooded node's turns that ran them took 1–1.25 ms, with
/// one 0.5–0.75 ms; either keeps up with the budgets' 2,000 a second, as
/// a flooded driver turns thousands of times a second.
pub(super) const PER_TURN: usize = 1;
/// Key exchanges waiting at most.
pub(super) const QUEUE_LEN: usize = 64;

/// One admitted `Init` waiting for its key exchange.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) from: SocketAddr,
    /// The `Init` datagram as it arrived.
    pub(super) init: Bytes,
    /// Its initiator's index and ephemeral key, to recognise a
    /// retransmission.
    pub(super) sender_index: u32,
    pub(super) ephemeral: Bytes,
    /// Admitted on a valid cookie.
    pub(super) cookied: bool,
    /// From a route-table peer's address or a pinned key's.
    pub(super) priority: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct ExchangeQueue {
    queue: VecDeque<Queued>,
    /// Exchanges run in the current turn.
    ran: usize,
}

impl ExchangeQueue {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `from` waits for an exchange admitted with (`cookied`) or
    /// without a cookie.
    pub(super) fn holds(&self, from: SocketAddr, cookied: bool) -> bool {
        self.queue
            .iter()
            .any(|q| q.from == from && q.cookied == cookied)
    }

    /// Whether `init` from `from` already waits (this one is its
    /// retransmission: the same index and ephemeral key).
    pub(super) fn holds_init(&self, from: SocketAddr, init: &InitPacket<'_>) -> bool {
        self.queue.iter().any(|q| {
            q.from == from && q.sender_index == init.sender_index && q.ephemeral == init.noise
        })
    }

    /// Queue `q`. `Err(q)`: no room. A priority exchange that finds the
    /// queue full takes the place of the newest other one, returned as
    /// `Ok(Some(bumped))` (refused instead).
    pub(super) fn push(&mut self, q: Queued) -> Result<Option<Queued>, Queued> {
        if self.queue.len() < QUEUE_LEN {
            self.push_in_order(q);
            return Ok(None);
        }
        if !q.priority {
            return Err(q);
        }
        let Some(last) = self.queue.iter().rposition(|e| !e.priority) else {
            return Err(q);
        };
        let bumped = self.queue.remove(last);
        self.push_in_order(q);
        Ok(bumped)
    }

    /// Priority exchanges go before all others, each kind in arrival order.
    fn push_in_order(&mut self, q: Queued) {
        if q.priority {
            let at = self
                .queue
                .iter()
                .position(|e| !e.priority)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, q);
        } else {
            self.queue.push_back(q);
        }
    }

    /// The next exchange to run in this turn, if the turn has room left.
    pub(super) fn next(&mut self) -> Option<Queued> {
        if self.ran >= PER_TURN {
            return None;
        }
        let q = self.queue.pop_front()?;
        self.ran += 1;
        Some(q)
    }

    /// The driver has sent everything: a new turn begins.
    pub(super) fn end_turn(&mut self) {
        self.ran = 0;
    }

    pub(super) fn clear(&mut self) {
        self.queue.clear();
    }
}

impl Endpoint {
    /// Queue the key exchange for an admitted `Init`.
    pub(super) fn queue_exchange(&mut self, q: Queued) {
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        match crypto.exchanges.push(q) {
            Ok(None) => {}
            Ok(Some(bumped)) | Err(bumped) => {
                self.counters.key_exchanges_refused += 1;
                tracing::debug!(from = %bumped.from, "key exchange refused: queue full");
            }
        }
    }

    /// Run the next queued key exchange if this turn has room for it.
    /// Returns whether one ran.
    pub(super) fn run_queued_exchange(&mut self) -> bool {
        let Some(q) = self.crypto.as_mut().and_then(|c| c.exchanges.next()) else {
            return false;
        };
        self.respond(q);
        true
    }

    /// Whether key exchanges wait.
    pub(super) fn exchanges_waiting(&self) -> bool {
        self.crypto
            .as_ref()
            .is_some_and(|c| !c.exchanges.is_empty())
    }

    /// `poll_transmit` has nothing more: the next call starts a new turn.
    pub(super) fn end_exchange_turn(&mut self) {
        if let Some(c) = self.crypto.as_mut() {
            c.exchanges.end_turn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(port: u16, priority: bool) -> Queued {
        Queued {
            from: SocketAddr::from(([10, 0, 0, 1], port)),
            init: Bytes::new(),
            sender_index: u32::from(port),
            ephemeral: Bytes::from_static(&[7; 32]),
            cookied: false,
            priority,
        }
    }

    #[test]
    fn priority_first_bounded_and_per_turn() {
        let mut x = ExchangeQueue::default();
        for p in 0..QUEUE_LEN as u16 {
            assert!(matches!(x.push(q(p, false)), Ok(None)));
        }
        // Full: a stranger is refused, a route-table peer bumps the newest
        // stranger and goes first.
        assert!(x.push(q(1000, false)).is_err());
        let bumped = x.push(q(2000, true)).ok().flatten().map(|b| b.from.port());
        assert_eq!(bumped, Some(QUEUE_LEN as u16 - 1));
        assert_eq!(x.len(), QUEUE_LEN);
        let mut order = Vec::new();
        for _ in 0..3 {
            let turn: Vec<u16> = std::iter::from_fn(|| x.next().map(|q| q.from.port())).collect();
            assert_eq!(turn.len(), PER_TURN, "PER_TURN a turn");
            order.extend(turn);
            x.end_turn();
        }
        assert_eq!(order[..3], [2000, 0, 1]);
        let init = |e| crate::crypto::packet::InitPacket {
            sender_index: 5,
            noise: e,
            cookie: [0; crate::crypto::COOKIE_LEN],
            cipher: crate::crypto::Cipher::ChaChaPoly,
        };
        assert!(x.holds_init(q(5, false).from, &init(&[7; 32])));
        assert!(!x.holds_init(q(5, false).from, &init(&[8; 32])));
        assert!(x.holds(q(5, false).from, false));
        assert!(!x.holds(q(5, false).from, true));
    }
}
