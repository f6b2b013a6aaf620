//! Requests waiting for the driving program's `reply`.
//!
//! A request of a type the daemon does not answer itself is shown as a
//! `message` event with a `token`; `{"cmd":"reply","to":TOKEN,…}` answers
//! it. Until then the [`Received`](gladius_p2p::Received) (which carries the core's request id and
//! the peer) waits here. The table is bounded by count and by body bytes
//! (the oldest request is evicted first, and counted), and a request
//! expires after [`REPLY_TOKEN_TTL`]: its requester has given up long
//! before. Time is passed in, so the rules are tested without a clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Requests waiting for a reply at most. A program that never replies
/// costs this many entries, not more.
pub(crate) const MAX_PENDING_REPLIES: usize = 1024;
/// Body bytes of waiting requests at most (one 16 MiB request fits; a
/// flood of large ones evicts the oldest).
pub(crate) const MAX_PENDING_REPLY_BYTES: usize = 32 << 20;
/// How long a request waits for its reply. Requesters usually give up
/// after seconds (the daemon's own `request` after 5 s by default); a
/// minute leaves room for slow scripts without keeping the dead forever.
pub(crate) const REPLY_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Why a `reply` found no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// No request ever had this token.
    #[error("reply token {0} was never issued")]
    Unknown(u64),
    /// It was answered, expired or evicted.
    #[error(
        "reply token {0} is no longer pending (already answered, expired after {ttl} s, \
         or evicted by newer requests)",
        ttl = REPLY_TOKEN_TTL.as_secs()
    )]
    Gone(u64),
}

/// What happened to the requests that reached the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ReplyCounters {
    /// Requests waiting now.
    pub(crate) pending: usize,
    /// Requests given a token.
    pub(crate) issued: u64,
    /// Requests answered with `reply`.
    pub(crate) answered: u64,
    /// Requests dropped unanswered after [`REPLY_TOKEN_TTL`].
    pub(crate) expired: u64,
    /// Requests dropped unanswered to make room for newer ones.
    pub(crate) evicted: u64,
}

/// The waiting requests (a [`Received`](gladius_p2p::Received) in the
/// daemon), by token, with their body sizes.
#[derive(Debug)]
pub(crate) struct PendingReplies<T> {
    waiting: HashMap<u64, (T, usize)>,
    /// Tokens in issue order with their deadlines (tokens grow with time,
    /// so the front expires first). Answered tokens stay until they reach
    /// the front; they are skipped there.
    order: VecDeque<(u64, Instant)>,
    bytes: usize,
    next: u64,
    counters: ReplyCounters,
}

impl<T> Default for PendingReplies<T> {
    fn default() -> Self {
        PendingReplies {
            waiting: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next: 0,
            counters: ReplyCounters::default(),
        }
    }
}

impl<T> PendingReplies<T> {
    /// Keep `request` (`size` body bytes) until it is answered; returns its
    /// token.
    pub(crate) fn insert(&mut self, request: T, size: usize, now: Instant) -> u64 {
        self.expire(now);
        self.next += 1;
        let token = self.next;
        self.bytes += size;
        self.waiting.insert(token, (request, size));
        self.order.push_back((token, now + REPLY_TOKEN_TTL));
        self.counters.issued += 1;
        while self.waiting.len() > MAX_PENDING_REPLIES
            || (self.bytes > MAX_PENDING_REPLY_BYTES && self.waiting.len() > 1)
        {
            let Some((oldest, _)) = self.order.pop_front() else {
                break;
            };
            if self.remove(oldest).is_some() {
                self.counters.evicted += 1;
            }
        }
        // Answered tokens wait in `order` behind an older unanswered one;
        // past twice the table size they are swept out at once.
        if self.order.len() > 2 * MAX_PENDING_REPLIES {
            let waiting = &self.waiting;
            self.order.retain(|(t, _)| waiting.contains_key(t));
        }
        token
    }

    /// The request of `token`, taken out (a request is answered once).
    pub(crate) fn take(&mut self, token: u64, now: Instant) -> Result<T, TokenError> {
        self.expire(now);
        match self.remove(token) {
            Some(r) => {
                self.counters.answered += 1;
                Ok(r)
            }
            None if token == 0 || token > self.next => Err(TokenError::Unknown(token)),
            None => Err(TokenError::Gone(token)),
        }
    }

    /// The counters, after dropping what expired by `now`.
    pub(crate) fn counters(&mut self, now: Instant) -> ReplyCounters {
        self.expire(now);
        ReplyCounters {
            pending: self.waiting.len(),
            ..self.counters
        }
    }

    fn remove(&mut self, token: u64) -> Option<T> {
        let (r, size) = self.waiting.remove(&token)?;
        self.bytes -= size;
        Some(r)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(token, deadline)) = self.order.front() {
            if !self.waiting.contains_key(&token) {
                self.order.pop_front(); // answered already
                continue;
            }
            if deadline > now {
                break;
            }
            self.order.pop_front();
            if self.remove(token).is_some() {
                self.counters.expired += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_once_and_unknown_tokens_are_told_apart() {
        let t0 = Instant::now();
        let mut p = PendingReplies::default();
        let a = p.insert("a", 1, t0);
        let b = p.insert("b", 1, t0);
        assert_ne!(a, b);
        assert_eq!(p.take(b, t0), Ok("b"));
        assert_eq!(p.take(b, t0), Err(TokenError::Gone(b)));
        assert_eq!(p.take(b + 100, t0), Err(TokenError::Unknown(b + 100)));
        assert_eq!(p.take(0, t0), Err(TokenError::Unknown(0)));
        let c = p.counters(t0);
        assert_eq!((c.pending, c.issued, c.answered), (1, 2, 1));
        assert_eq!(p.take(a, t0), Ok("a"));
    }

    #[test]
    fn requests_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut p = PendingReplies::default();
        let a = p.insert("a", 1, t0);
        let b = p.insert("b", 1, t0 + Duration::from_secs(10));
        let late = t0 + REPLY_TOKEN_TTL;
        assert_eq!(p.take(a, late), Err(TokenError::Gone(a)));
        assert_eq!(p.take(b, late), Ok("b"));
        let c = p.counters(late);
        assert_eq!((c.pending, c.expired, c.answered), (0, 1, 1));
    }

    #[test]
    fn the_table_is_bounded_by_count_and_bytes_oldest_out_first() {
        let t0 = Instant::now();
        let mut p = PendingReplies::default();
        let tokens: Vec<u64> = (0..MAX_PENDING_REPLIES + 10)
            .map(|i| p.insert(i, 1, t0))
            .collect();
        let c = p.counters(t0);
        assert_eq!((c.pending, c.evicted), (MAX_PENDING_REPLIES, 10));
        assert_eq!(p.take(tokens[9], t0), Err(TokenError::Gone(tokens[9])));
        assert_eq!(p.take(tokens[10], t0), Ok(10));

        let mut p = PendingReplies::default();
        let big = MAX_PENDING_REPLY_BYTES / 2 + 1;
        let first = p.insert("first", big, t0);
        let second = p.insert("second", big, t0);
        assert_eq!(p.take(first, t0), Err(TokenError::Gone(first)));
        assert_eq!(p.counters(t0).evicted, 1);
        // One request larger than the budget still waits (alone).
        let huge = p.insert("huge", MAX_PENDING_REPLY_BYTES * 2, t0);
        assert_eq!(p.take(second, t0), Err(TokenError::Gone(second)));
        assert_eq!(p.take(huge, t0), Ok("huge"));
    }

    #[test]
    fn answered_tokens_do_not_pile_up_behind_an_old_one() {
        let t0 = Instant::now();
        let mut p = PendingReplies::default();
        p.insert("old", 1, t0);
        for i in 0..10 * MAX_PENDING_REPLIES {
            let t = p.insert("x", 1, t0);
            assert_eq!(p.take(t, t0), Ok("x"), "{i}");
        }
        assert!(p.order.len() <= 2 * MAX_PENDING_REPLIES + 1);
        assert_eq!(p.counters(t0).pending, 1);
    }
}
