//! What the driver keeps about one peer, with or without a session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::Reply;
use crate::crypto::{Initiator, PublicKey, SecureChannel};
use crate::error::NetworkError;
use crate::session::{Session, SessionStats};
use crate::state::Direction;

/// Everything the driver keeps about one peer, with or without a session.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) session: Option<Session>,
    /// Encoded frames waiting for the session to be established.
    pub(super) pending: VecDeque<Bytes>,
    pub(super) pending_bytes: usize,
    /// In the route table (added by the user or a plugin).
    pub(super) added: bool,
    pub(super) writable: bool,
    pub(super) backoff: Duration,
    pub(super) reconnect_at: Option<u64>,
    /// Earliest session timer in the heap for this peer.
    pub(super) timer_at: Option<u64>,
    pub(super) dirty: bool,
    pub(super) advertised: Option<SocketAddr>,
    pub(super) direction: Direction,
    /// Counts of sessions that already ended.
    pub(super) past: SessionStats,
    pub(super) last_seen: Option<u64>,
    /// Encrypted mode: our handshake in progress (no session yet).
    pub(super) handshake: Option<Initiator>,
    /// Encrypted mode: the channel the session's datagrams are sealed with.
    pub(super) channel: Option<SecureChannel>,
    /// Initiator only: our `Finish`, resent at the given time until the
    /// first sealed datagram from the peer proves it arrived.
    pub(super) finish: Option<(Bytes, u64)>,
    /// The static key the peer must prove, if pinned.
    pub(super) pinned: Option<PublicKey>,
    /// What the last handshake proved and carried.
    pub(super) public_key: Option<PublicKey>,
    pub(super) handshake_payload: Bytes,
    pub(super) handshake_advertised: Option<SocketAddr>,
    pub(super) last_error: Option<String>,
    /// Callers of `Network::wait_for_room`: bytes needed, and whom to tell.
    pub(super) room_waiters: Vec<(usize, Reply<Result<(), NetworkError>>)>,
}

impl Peer {
    pub(super) fn new(added: bool, direction: Direction, backoff: Duration) -> Self {
        Self {
            session: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            added,
            writable: added,
            backoff,
            reconnect_at: None,
            timer_at: None,
            dirty: false,
            advertised: None,
            direction,
            past: Default::default(),
            last_seen: None,
            handshake: None,
            channel: None,
            finish: None,
            pinned: None,
            public_key: None,
            handshake_payload: Bytes::new(),
            handshake_advertised: None,
            last_error: None,
            room_waiters: Vec::new(),
        }
    }

    /// Register a caller waiting for `need` bytes of room, or answer at
    /// once if there is room already. Callers that gave up (timed out) are
    /// dropped first, so the list holds only live waiters.
    pub(super) fn wait_for_room(
        &mut self,
        need: usize,
        limit: usize,
        reply: Reply<Result<(), NetworkError>>,
    ) {
        self.room_waiters.retain(|(_, r)| !r.is_closed());
        if self.queued_bytes().saturating_add(need) <= limit {
            let _ = reply.send(Ok(()));
        } else {
            self.room_waiters.push((need, reply));
        }
    }

    /// Answer every waiter whose message now fits under `limit`. Room is
    /// not reserved: two waiters woken together may race for it, and the
    /// loser's send reports `QueueFull` again.
    pub(super) fn answer_room_waiters(&mut self, limit: usize) {
        if self.room_waiters.is_empty() {
            return;
        }
        let queued = self.queued_bytes();
        for (need, reply) in std::mem::take(&mut self.room_waiters) {
            if queued.saturating_add(need) <= limit {
                let _ = reply.send(Ok(()));
            } else if !reply.is_closed() {
                self.room_waiters.push((need, reply));
            }
        }
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.pending_bytes + self.session.as_ref().map_or(0, Session::unacked_bytes)
    }

    /// A session or a handshake is under way.
    pub(super) fn has_link(&self) -> bool {
        self.session.is_some() || self.handshake.is_some()
    }

    /// The earliest time any of the peer's state machines needs the clock.
    pub(super) fn deadline(&self, now: u64) -> Option<u64> {
        let session = self.session.as_ref().and_then(|s| s.poll_timeout(now));
        let handshake = self.handshake.as_ref().and_then(Initiator::poll_timeout);
        let finish = self.finish.as_ref().map(|(_, at)| *at);
        [session, handshake, finish].into_iter().flatten().min()
    }
}
