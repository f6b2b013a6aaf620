//! What the endpoint keeps about one peer, with or without a session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::crypto::{Initiator, PublicKey, SecureChannel};
use crate::session::{Session, SessionStats};
use crate::state::Direction;

/// Everything the endpoint keeps about one peer, with or without a session.
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
    /// Someone waits for room in the queue: report it after every flush.
    pub(super) room_watched: bool,
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
            room_watched: false,
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
