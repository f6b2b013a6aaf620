//! What the endpoint keeps about one peer: who it is (its key, once
//! proven), where it can be reached (its paths), the link to it, and what
//! waits for it.
//!
//! In encrypted mode a peer is an identity: its static key. Its addresses
//! are paths to it, and a path may change (the peer restarts on another
//! port, its NAT rebinds) while the peer keeps its route-table entry,
//! queues, requests and counters. Until a handshake proves a key, a peer
//! added by address is known by that address alone. In plaintext mode
//! nothing is authenticated, so a peer is its address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::crypto::{Cipher, Initiator, PublicKey, SecureChannel};
use crate::session::{EncodedFrame, Session, SessionStats};
use crate::state::Direction;

/// Paths remembered per peer; the oldest unused one goes first. Enough for
/// an IPv4 and an IPv6 address and a few NAT rebindings.
pub(super) const MAX_PATHS: usize = 4;

/// A peer's handle inside the endpoint. Never reused, so a timer or a
/// request that outlives its peer cannot reach another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(pub(super) u64);

/// The link to a peer: the states that can exist, and only those.
// A sealed session is the common case and is touched by every datagram:
// it stays inline; the smaller plaintext session pays the difference.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub(super) enum Link {
    /// No session and no handshake (waiting to reconnect, or never
    /// connected).
    #[default]
    Idle,
    /// Encrypted mode: our Noise handshake is under way (boxed: it is
    /// short-lived, and inline it would double the size of every link).
    Handshaking(Box<Initiator>),
    /// Encrypted mode: a session whose datagrams are sealed with `channel`.
    /// A session that is closing stays here until its close flushed (the
    /// session's own phase says so).
    Sealed {
        session: Session,
        channel: SecureChannel,
        /// Initiator only: our `Finish`, resent at the given time until the
        /// first sealed datagram from the peer proves it arrived.
        finish: Option<(Bytes, u64)>,
        /// When the first sealed datagram from the peer opened: from then
        /// on the peer is known to use this session.
        heard_at: Option<u64>,
    },
    /// Plaintext mode: a session over bare KCP.
    Plaintext(Session),
}

impl Link {
    pub(super) fn session(&self) -> Option<&Session> {
        match self {
            Link::Sealed { session, .. } | Link::Plaintext(session) => Some(session),
            Link::Idle | Link::Handshaking(_) => None,
        }
    }

    pub(super) fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Link::Sealed { session, .. } | Link::Plaintext(session) => Some(session),
            Link::Idle | Link::Handshaking(_) => None,
        }
    }

    /// A session or a handshake is under way.
    pub(super) fn is_up(&self) -> bool {
        !matches!(self, Link::Idle)
    }
}

/// Everything the endpoint keeps about one peer, with or without a link.
#[derive(Debug)]
pub(super) struct Peer {
    /// Addresses it was reached at or announced, most recent last.
    pub(super) paths: Vec<SocketAddr>,
    /// The path the link runs over (or will: where we dial).
    pub(super) active: Option<SocketAddr>,
    pub(super) link: Link,
    /// Encoded frames waiting for the session to be established (and, on
    /// a plaintext session the peer opened, for its address to prove it
    /// receives: see [`Peer::unproven`]).
    pub(super) pending: VecDeque<EncodedFrame>,
    pub(super) pending_bytes: usize,
    /// In the route table (added by the user or a plugin).
    pub(super) added: bool,
    /// The application added it: plugins may demote it, never remove it.
    pub(super) added_by_app: bool,
    /// A plugin judged it dead and demoted it: not writable until it
    /// answers again.
    pub(super) demoted: bool,
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
    /// The static key the peer must prove, if pinned (`add_pinned`,
    /// `Config::with_known_peer`) or if the peer was added by key.
    pub(super) pinned: Option<PublicKey>,
    /// What the last handshake proved and carried.
    pub(super) public_key: Option<PublicKey>,
    pub(super) handshake_payload: Bytes,
    pub(super) handshake_advertised: Option<SocketAddr>,
    /// The suite of the last completed handshake, either direction. A
    /// peer that ran ChaCha20-Poly1305 may predate AES-GCM, so the next
    /// handshake we start with it is ChaCha20-Poly1305 too, without the
    /// unanswered AES-GCM tries first (see `initiate`).
    pub(super) last_cipher: Option<Cipher>,
    pub(super) last_error: Option<String>,
    /// The session being replaced is replaced by one under a new key (the
    /// disconnect it causes says `key_changed`).
    pub(super) key_changed: bool,
    /// Bytes sent on a plaintext session the peer opened, before it
    /// acknowledged anything (the amplification limit's account).
    pub(super) unproven_sent: usize,
    /// Someone waits for room in the queue: report it after every flush.
    pub(super) room_watched: bool,
    /// Bytes its session holds of the message being received, as counted
    /// in the endpoint's budget (see `partials`).
    pub(super) partial_bytes: usize,
    /// Direct addresses of a peer reached through a relay (what a lookup
    /// found), for upgrading to a direct path.
    pub(super) direct_candidates: Vec<SocketAddr>,
    /// A relay to dial through if the direct handshake times out (a
    /// lookup found the peer at a public-looking address and a relay).
    pub(super) relay_fallback: Option<PeerId>,
    /// Bytes of out-of-order KCP segments its session holds, as counted
    /// in the endpoint's budget (0 while it is in the route table; see
    /// `reorder`).
    pub(super) reorder_bytes: usize,
}

impl Peer {
    pub(super) fn new(
        path: Option<SocketAddr>,
        added: bool,
        direction: Direction,
        backoff: Duration,
    ) -> Self {
        Self {
            paths: path.into_iter().collect(),
            active: path,
            link: Link::Idle,
            pending: VecDeque::new(),
            pending_bytes: 0,
            added,
            added_by_app: false,
            demoted: false,
            writable: added,
            backoff,
            reconnect_at: None,
            timer_at: None,
            dirty: false,
            advertised: None,
            direction,
            past: Default::default(),
            last_seen: None,
            pinned: None,
            public_key: None,
            handshake_payload: Bytes::new(),
            handshake_advertised: None,
            last_cipher: None,
            last_error: None,
            room_watched: false,
            key_changed: false,
            unproven_sent: 0,
            partial_bytes: 0,
            direct_candidates: Vec::new(),
            relay_fallback: None,
            reorder_bytes: 0,
        }
    }

    /// The address that names this peer to the application: the active
    /// path, else the most recent one. Peers always have one: the endpoint
    /// never keeps a peer without a path.
    pub(super) fn addr(&self) -> SocketAddr {
        self.active
            .or_else(|| self.paths.last().copied())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The session, if the link has one.
    pub(super) fn session(&self) -> Option<&Session> {
        self.link.session()
    }

    pub(super) fn session_mut(&mut self) -> Option<&mut Session> {
        self.link.session_mut()
    }

    /// A plaintext session the peer opened, whose address has not yet
    /// proven it receives (no ACK of ours so far). What it gets back stays
    /// within the amplification limit, so only the session's own Hello and
    /// ACKs go out: frames wait in `pending` until the peer acknowledges,
    /// and the first answer is small enough to pass. (A large first answer
    /// would be dropped whole, and the peer, never hearing our Hello, would
    /// keep a session that cannot work until it timed out.)
    pub(super) fn unproven(&self) -> bool {
        self.direction == Direction::Inbound
            && matches!(&self.link, Link::Plaintext(s) if !s.peer_acknowledged())
    }

    /// Hand the frames that waited to the session, in order, once it is
    /// established and not [`unproven`](Self::unproven).
    pub(super) fn release_pending(&mut self, now: u64) {
        if self.unproven() {
            return;
        }
        let Some(session) = self.link.session_mut().filter(|s| s.is_established()) else {
            return;
        };
        while let Some(frame) = self.pending.pop_front() {
            self.pending_bytes -= frame.len();
            session.send_frame(now, &frame);
        }
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.pending_bytes + self.session().map_or(0, Session::unacked_bytes)
    }

    /// A session or a handshake is under way.
    pub(super) fn has_link(&self) -> bool {
        self.link.is_up()
    }

    /// The earliest time any of the peer's state machines needs the clock.
    pub(super) fn deadline(&self, now: u64) -> Option<u64> {
        match &self.link {
            Link::Idle => None,
            Link::Handshaking(h) => h.poll_timeout(),
            Link::Plaintext(session) => session.poll_timeout(now),
            Link::Sealed {
                session, finish, ..
            } => {
                let finish = finish.as_ref().map(|(_, at)| *at);
                [session.poll_timeout(now), finish]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }
}
