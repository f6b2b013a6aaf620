//! The sans-IO endpoint: every protocol decision the node makes, with no
//! socket, no clock and no tokio. The [driver](crate::driver) feeds it
//! datagrams, commands and the time, and drains what it produced:
//!
//! * inputs: [`handle_datagram`](Endpoint::handle_datagram),
//!   [`handle_timeout`](Endpoint::handle_timeout) and one method per
//!   command ([`add`](Endpoint::add), [`send`](Endpoint::send),
//!   [`request`](Endpoint::request), …), each taking `now`, milliseconds on
//!   the caller's clock;
//! * outputs: [`poll_transmit`](Endpoint::poll_transmit) (datagrams, in
//!   batches of one size for one peer; timers already due run first, so a
//!   driver kept busy by its socket cannot starve them),
//!   [`poll_timeout`](Endpoint::poll_timeout) (when to call
//!   `handle_timeout` next) and [`poll_event`](Endpoint::poll_event) (what
//!   plugins and waiting callers must hear).
//!
//! This is the shape of quinn-proto's `Endpoint`/`Connection`: because time
//! and randomness come in from outside (the RNG is seeded by the caller),
//! the same inputs give the same outputs, so pairs and swarms of endpoints
//! run in virtual time in tests and in a simulator.
//!
//! Inside: `peer` (what is kept per peer) and `peers` (the table of them),
//! `sessions` (opening plaintext sessions, acting on what sessions report,
//! retiring them), `encrypted` (Noise handshakes, simultaneous opens,
//! cookies, sealing), `half_open` (inbound handshakes waiting for their
//! last message), `admission` (which `Init`s cost a key exchange),
//! `exchanges` (admitted key exchanges, run a few per turn after the
//! sessions' traffic),
//! `takeover` (a new key at a live session's address), `rejects`
//! (unauthenticated `Reject`s wait out a grace), `inbound` (limits
//! on sessions from outside the route table), `partials` (the budget for
//! partially received messages), `reorder` (the budget for out-of-order
//! KCP segments), `source` (the per-IP unit those limits
//! count in), `requests` (requests awaiting replies) and `batch`
//! (datagrams gathered for one socket call).
//!
//! Commands are methods rather than one `handle_command(cmd)` entry point:
//! each returns its own typed result at once, which an enum of commands
//! would have to route back through events.

mod addr_list;
mod admission;
mod batch;
mod demux;
mod encrypted;
mod exchanges;
mod half_open;
mod inbound;
mod lookup;
mod observed;
mod partials;
mod peer;
mod peers;
mod punch;
mod rejects;
pub(crate) mod relay;
mod reorder;
mod requests;
mod sessions;
mod source;
mod takeover;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::{NodeEvent, Origin, PeerReason, Received, SendFailure, SendReport, Targets};
use crate::crypto::{self, Kind, PublicKey};
use crate::error::{NetworkError, RequestError};
use crate::session::{EncodedFrame, Session, SessionConfig};
use crate::state::{ConnectionState, Counters, Direction, NetworkState, PathKind, PeerState};
use crate::wire::{CloseReason, Frame, Message, SenderStamp};
use crate::Config;
pub(crate) use batch::Transmit;
use batch::TransmitQueue;
pub(crate) use lookup::KeyDial;
pub(crate) use peer::PeerId;
use peer::{Link, Peer};
use peers::Peers;
use requests::{PendingRequest, Requests};

/// The endpoint's tables are looked up several times per message; SipHash
/// showed up at 5% of all instructions in the profile. Each table's
/// foldhash is keyed from the endpoint's RNG (see [`table`]): random per
/// node, so remote peers cannot aim collisions at it, and repeatable in a
/// seeded run, so iterating a table gives the same order every time.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// An empty table hashed with a key drawn from `rng`.
fn table<K, V>(rng: &mut StdRng) -> HashMap<K, V> {
    HashMap::with_hasher(foldhash::fast::FixedState::with_seed(rng.gen()))
}

/// What the endpoint tells its driver.
// Events pass through one queue once each; boxing the reply would cost an
// allocation per request answered.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Event {
    /// For the plugins.
    Node(NodeEvent),
    /// Request `id` got its answer: the reply, or why there will be none.
    RequestDone {
        id: u64,
        result: Result<Received, RequestError>,
    },
    /// A peer whose room was watched (see [`Endpoint::watch_room`]) was
    /// flushed: this many bytes are queued now. `None`: the peer is gone.
    Room { peer: PeerId, queued: Option<usize> },
    /// The lookup `id` of a key (see [`Endpoint::add_key_or_look_up`])
    /// ended: the address or relay path dialled, or why none.
    LookupDone {
        id: u64,
        result: Result<SocketAddr, NetworkError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(PeerId),
    Reconnect(PeerId),
    /// Expiry of an inbound half-open handshake (by our index).
    HalfOpen(u32),
    /// The end of a probe deciding a new key at a live session's address.
    Takeover(SocketAddr),
    /// The next step of a hole punch with a relayed peer.
    Punch(PeerId),
    /// The end of a key lookup's wait for answers.
    Lookup(u32),
    /// The end of the grace of a `Reject` (see `rejects`).
    Reject(PeerId),
    /// The graceful-close deadline.
    CloseDeadline,
}

/// All protocol state of one node. See the module docs.
#[derive(Debug)]
pub(crate) struct Endpoint {
    config: Arc<Config>,
    session_config: SessionConfig,
    local: Option<SocketAddr>,
    advertised: Option<SocketAddr>,
    /// `advertised` formatted once for every message sent.
    stamp: Option<SenderStamp>,
    /// The time of the input being handled (milliseconds on the driver's
    /// clock): everything one input does shares one reading.
    now_ms: u64,
    peers: Peers,
    timers: BinaryHeap<Reverse<(u64, TimerKey)>>,
    requests: Requests,
    counters: Counters,
    dirty: Vec<PeerId>,
    rng: StdRng,
    /// The graceful-close deadline, once closing.
    closing: Option<u64>,
    /// Encrypted mode only.
    crypto: Option<encrypted::CryptoState>,
    /// New keys at live sessions' addresses, held while those are probed.
    takeovers: HashMap<SocketAddr, takeover::Takeover>,
    /// `Reject`s waiting out their grace, per peer (see `rejects`).
    rejects: HashMap<PeerId, rejects::PendingReject>,
    /// Sessions from peers outside the route table, counted per source IP.
    inbound: inbound::InboundSlots,
    /// Bytes of partially received messages, all sessions together.
    partial_bytes: usize,
    /// Bytes of out-of-order KCP segments held by sessions outside the
    /// route table (see `reorder`).
    reorder_bytes: usize,
    /// Datagrams to send that no session produced (handshake packets,
    /// rejects), sent with the next flush.
    outbox: Vec<(SocketAddr, Bytes)>,
    /// Scratch buffer for opening sealed datagrams, reused.
    open_buf: Vec<u8>,
    /// Where short frames are encoded ([`EncodedFrame::new_in`]).
    frame_scratch: bytes::BytesMut,
    /// Datagrams ready for the socket, batched per peer.
    transmits: TransmitQueue,
    events: VecDeque<Event>,
    /// The application bytes our handshakes carry (see
    /// `Network::set_handshake_payload`).
    handshake_payload: Bytes,
    /// What our peers see as our address (encrypted mode).
    observations: observed::Observations,
    /// Relay paths: peers reached (or reaching us) through a relay.
    relay_paths: relay::RelayPaths,
    /// As a relay: the pairs relayed and their byte budgets.
    relay_pairs: relay::RelayPairs,
    /// Keys being looked up through the peers.
    lookups: lookup::Lookups,
    /// Hole punches with relayed peers under way.
    punches: punch::Punches,
    /// Sealed `Data` datagrams forwarded under `Config::with_relay_faults`.
    relay_fault_count: u64,
    /// Test only: what this node, as a relay, does to what it forwards.
    #[cfg(test)]
    pub(crate) relay_tap: Option<relay::RelayTap>,
}

impl Endpoint {
    /// A node's endpoint, not yet listening. `seed` drives every random
    /// choice it makes (conversation ids, random broadcast targets, backoff
    /// jitter), so a seeded run repeats exactly.
    pub(crate) fn new(config: Arc<Config>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let crypto = config
            .identity
            .clone()
            .filter(|_| !config.plaintext)
            .map(|identity| encrypted::CryptoState::new(identity, &config, &mut rng));
        let takeovers = table(&mut rng);
        let rejects = table(&mut rng);
        let inbound = inbound::InboundSlots::new(&mut rng);
        let relay_paths = relay::RelayPaths::new(&mut rng);
        let relay_pairs = relay::RelayPairs::new(&mut rng);
        let lookups = lookup::Lookups::new(&mut rng);
        let punches = punch::Punches::new(&mut rng);
        Self {
            session_config: SessionConfig::from_config(&config, rng.gen()),
            handshake_payload: config.handshake_payload.clone(),
            config,
            local: None,
            advertised: None,
            stamp: None,
            now_ms: 0,
            peers: Peers::new(&mut rng),
            timers: BinaryHeap::new(),
            requests: Requests::new(table(&mut rng)),
            counters: Counters::default(),
            dirty: Vec::new(),
            rng,
            closing: None,
            crypto,
            takeovers,
            rejects,
            inbound,
            partial_bytes: 0,
            reorder_bytes: 0,
            outbox: Vec::new(),
            open_buf: Vec::new(),
            frame_scratch: bytes::BytesMut::new(),
            transmits: TransmitQueue::default(),
            events: VecDeque::new(),
            observations: observed::Observations::default(),
            relay_paths,
            relay_pairs,
            lookups,
            punches,
            relay_fault_count: 0,
            #[cfg(test)]
            relay_tap: None,
        }
    }

    /// The time of the input being handled.
    fn now(&self) -> u64 {
        self.now_ms
    }

    /// Every input starts here. The clock never runs backwards inside the
    /// endpoint, whatever the caller passes.
    fn tick(&mut self, now: u64) {
        self.now_ms = self.now_ms.max(now);
    }

    // ----- outputs --------------------------------------------------------

    /// The next thing plugins or a waiting caller must hear.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let first_timer = self.timers.peek().map(|Reverse((t, _))| *t);
        // Queued key exchanges run in the next turn (see `exchanges`).
        let exchanges = self.exchanges_waiting().then_some(self.now_ms);
        [first_timer, self.requests.next_deadline(), exchanges]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next batch of datagrams for the socket: one or more datagrams of
    /// `segment_size` bytes (the last may be shorter) to one address, at
    /// most `max_segments` of them. Timers due by `now` run first; then
    /// sessions touched since the last call are flushed, so everything one
    /// wake-up queued leaves together; then at most `exchanges::PER_TURN`
    /// queued key exchanges run (a turn ends when this returns `None`).
    /// Give the batch's buffer back with [`recycle`](Self::recycle).
    pub(crate) fn poll_transmit(&mut self, now: u64, max_segments: usize) -> Option<Transmit> {
        self.tick(now);
        loop {
            if let Some(t) = self.transmits.pop() {
                return Some(t);
            }
            // Timers due by now run before the flush, whether or not the
            // driver found a moment for `handle_timeout`: a driver that
            // always has datagrams to read first (a busy seed, a flood)
            // would otherwise starve them. The seed of a 200-node swarm on
            // a loaded machine ran no timer for 16 s (no keepalive, no
            // retransmission), its peers' sessions died of silence, and
            // some of them, left without a peer, stayed isolated.
            if self.poll_timeout().is_some_and(|t| t <= self.now()) {
                self.handle_timeout(now);
            }
            if self.outbox.is_empty() && self.dirty.is_empty() {
                // Everything else has left: now a queued key exchange.
                if self.run_queued_exchange() {
                    continue;
                }
                self.end_exchange_turn();
                return None;
            }
            self.flush(max_segments.max(1));
        }
    }

    /// Return a sent batch's buffer for reuse.
    pub(crate) fn recycle(&mut self, transmit: Transmit) {
        self.transmits.recycle(transmit);
    }

    // ----- commands -------------------------------------------------------

    /// Serve on a socket bound to `local`.
    pub(crate) fn listen(&mut self, now: u64, local: SocketAddr) -> Result<(), NetworkError> {
        self.tick(now);
        if let Some(local) = self.local {
            return Err(NetworkError::AlreadyListening(local));
        }
        self.local = Some(local);
        let advertised = self.config.advertise_addr.unwrap_or(local);
        self.advertised = Some(advertised);
        self.stamp = Some(SenderStamp::new(advertised));
        Ok(())
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        Some(addr) == self.local || Some(addr) == self.advertised
    }

    /// Put `addr` in the route table as writable (pinned to `key` if
    /// given) and connect.
    pub(crate) fn add(
        &mut self,
        now: u64,
        addr: SocketAddr,
        key: Option<PublicKey>,
        by: Origin,
    ) -> Result<(), NetworkError> {
        self.tick(now);
        if self.closing.is_some() {
            return Err(NetworkError::Closed);
        }
        if self.local.is_none() {
            return Err(NetworkError::NotListening);
        }
        if self.is_self(addr) {
            return Err(NetworkError::SelfAddress(addr));
        }
        // A relay path names "a key via a relay" here only: someone else's
        // (learnt from a plugin, say) leads nowhere.
        if relay::is_relay_addr(addr) && self.relay_of(addr).is_none() {
            return Err(NetworkError::NoRelay(addr));
        }
        let id = match self.peers.at(addr) {
            Some(id) => id,
            None => {
                // A peer known by key (it connected from elsewhere) is the
                // one this address leads to once it proves that key.
                let known = key.and_then(|k| self.peers.with_key(&k));
                match known {
                    Some(id) => {
                        self.peers.add_path(id, addr);
                        id
                    }
                    None => self.new_peer(addr, Direction::Outbound),
                }
            }
        };
        let Some(peer) = self.peers.get_mut(id) else {
            return Err(NetworkError::UnknownPeer(addr));
        };
        if let Some(key) = key {
            // Someone else's word must not re-pin a known peer: keys change
            // only by deleting the peer first.
            if let Some(existing) = peer.pinned.or(peer.public_key).filter(|k| *k != key) {
                return Err(NetworkError::KeyConflict { addr, existing });
            }
            peer.pinned = Some(key);
        }
        // A route-table peer's session does not count among the inbound.
        self.inbound.remove(id);
        if by == Origin::App {
            peer.added_by_app = true;
            if peer.demoted {
                // The application's word restores what a plugin demoted.
                peer.demoted = false;
                peer.writable = true;
            }
        }
        if peer.added {
            return Ok(());
        }
        peer.added = true;
        peer.writable = true;
        if !peer.has_link() {
            // Dial where the user said.
            peer.active = Some(addr);
        }
        let needs_connect = !peer.has_link();
        let name = peer.addr();
        self.emit(NodeEvent::NodeAdded(name));
        if needs_connect {
            self.connect(id);
        }
        Ok(())
    }

    /// Put the peer with static key `key` in the route table (pinned to
    /// that key), with `hints` as paths to it; returns the address it is
    /// dialled at. See `Network::add_key`.
    pub(crate) fn add_key(
        &mut self,
        now: u64,
        key: PublicKey,
        hints: &[SocketAddr],
        by: Origin,
    ) -> Result<SocketAddr, NetworkError> {
        self.tick(now);
        if self.crypto.is_none() {
            return Err(NetworkError::NoPath(key));
        }
        let hints: Vec<SocketAddr> = hints
            .iter()
            .copied()
            .filter(|a| !self.is_self(*a))
            .collect();
        let known = self.peers.with_key(&key).and_then(|id| self.peers.get(id));
        let dial = match (known.map(Peer::addr), hints.first()) {
            (Some(addr), _) => addr,
            (None, Some(first)) => *first,
            (None, None) => return Err(NetworkError::NoPath(key)),
        };
        self.add(now, dial, Some(key), by)?;
        let Some(id) = self.peers.at(dial) else {
            return Err(NetworkError::UnknownPeer(dial));
        };
        for hint in hints {
            // A hint another peer answers at stays theirs until this key
            // is proven there.
            if self.peers.at(hint).is_none() {
                self.peers.add_path(id, hint);
            }
        }
        Ok(dial)
    }

    /// Close the session to `addr` gracefully and take it out of the route
    /// table. Idempotent. A plugin cannot remove a peer the application
    /// added: its delete demotes the peer (not writable, still in the route
    /// table and reconnected with backoff) until the peer answers again.
    pub(crate) fn delete(&mut self, now: u64, addr: SocketAddr, by: Origin) {
        self.tick(now);
        let Some(id) = self.peers.at(addr) else {
            return;
        };
        if let Origin::Plugin(_) = by {
            if let Some(peer) = self.peers.get_mut(id).filter(|p| p.added_by_app) {
                if !peer.demoted {
                    peer.demoted = true;
                    peer.writable = false;
                    self.counters.demotions += 1;
                    tracing::debug!(%addr, "a plugin's delete of a peer the application added: demoted");
                }
                // The plugin judged the session dead: end it, and the node
                // reconnects with backoff (the peer stays in the table).
                if let Some(s) = peer
                    .session_mut()
                    .filter(|s| !s.is_closing() && !s.is_closed())
                {
                    s.close(now, CloseReason::Deleted);
                    self.drain_events(id);
                    self.touch(id);
                }
                return;
            }
        }
        // A deleted peer may come back under another key.
        self.peers.clear_key(id);
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let was_added = peer.added;
        peer.added = false;
        peer.added_by_app = false;
        peer.demoted = false;
        peer.writable = false;
        peer.reconnect_at = None;
        peer.pinned = None;
        if matches!(peer.link, Link::Handshaking(_)) {
            peer.link = Link::Idle;
        }
        let name = peer.addr();
        match peer.session_mut() {
            Some(s) => {
                s.close(now, CloseReason::Deleted);
                self.drain_events(id);
                self.touch(id);
            }
            None => self.forget(id),
        }
        if was_added {
            let reason = match by {
                Origin::App => PeerReason::DeletedByUser,
                Origin::Plugin(plugin) => PeerReason::DeletedByPlugin(plugin.to_string()),
            };
            self.emit(NodeEvent::NodeDeleted(name, reason));
        }
    }

    /// A new peer reached at `addr`, outside the route table.
    fn new_peer(&mut self, addr: SocketAddr, direction: Direction) -> PeerId {
        let min = self.config.reconnect_min;
        self.peers
            .insert(Peer::new(Some(addr), false, direction, min))
    }

    /// Promote or demote a known peer.
    pub(crate) fn set_writable(
        &mut self,
        addr: SocketAddr,
        writable: bool,
    ) -> Result<(), NetworkError> {
        match self.peers.at(addr).and_then(|id| self.peers.get_mut(id)) {
            Some(p) => {
                p.writable = writable;
                Ok(())
            }
            None => Err(NetworkError::UnknownPeer(addr)),
        }
    }

    /// Replace the application bytes of our future handshakes.
    pub(crate) fn set_handshake_payload(&mut self, payload: Bytes) {
        self.handshake_payload = payload;
    }

    fn with_sender(&self, mut msg: Message) -> Result<Message, NetworkError> {
        if self.closing.is_some() {
            return Err(NetworkError::Closed);
        }
        let stamp = self.stamp.as_ref().ok_or(NetworkError::NotListening)?;
        msg.stamp(stamp);
        Ok(msg)
    }

    /// `frame`, encoded for queueing (short ones in the shared scratch
    /// block).
    fn encode(&mut self, frame: &Frame) -> EncodedFrame {
        EncodedFrame::new_in(frame, &mut self.frame_scratch)
    }

    /// Queue `msg` to `targets`; the report says who got it and who not.
    pub(crate) fn send(
        &mut self,
        now: u64,
        msg: Message,
        targets: Targets,
    ) -> Result<SendReport, NetworkError> {
        self.tick(now);
        let msg = self.with_sender(msg)?;
        let frame = self.encode(&Frame::Message(msg));
        let mut report = SendReport::default();
        match targets {
            Targets::AllWritable => {
                for id in self.writable_peers() {
                    self.queue_into_report(Ok(id), &frame, false, &mut report);
                }
            }
            Targets::Random(n) => {
                let writable = self.writable_peers();
                let k = n.min(writable.len());
                for i in rand::seq::index::sample(&mut self.rng, writable.len(), k) {
                    self.queue_into_report(Ok(writable[i]), &frame, false, &mut report);
                }
            }
            Targets::Connected(addr) => {
                let to = self.peers.at(addr).ok_or(addr);
                self.queue_into_report(to, &frame, false, &mut report);
            }
            Targets::These(mut peers) => {
                dedup_in_order(&mut peers);
                for addr in peers {
                    if self.is_self(addr) {
                        report.failed.push((addr, SendFailure::NotConnected));
                    } else {
                        let to = self.peers.at(addr).ok_or(addr);
                        self.queue_into_report(to, &frame, true, &mut report);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Answer request `id` from `peer` over the session it came on.
    pub(crate) fn reply(
        &mut self,
        now: u64,
        msg: Message,
        peer: SocketAddr,
        id: u64,
    ) -> Result<SendReport, NetworkError> {
        self.tick(now);
        let msg = self.with_sender(msg)?;
        let frame = self.encode(&Frame::Reply { id, message: msg });
        let mut report = SendReport::default();
        let to = self.peers.at(peer).ok_or(peer);
        self.queue_into_report(to, &frame, false, &mut report);
        Ok(report)
    }

    /// Send `msg` to `peer` as a request. Returns its id; the answer comes
    /// as [`Event::RequestDone`] by `timeout` at the latest.
    pub(crate) fn request(
        &mut self,
        now: u64,
        msg: Message,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        self.tick(now);
        let msg = self.with_sender(msg)?;
        let id = self.requests.next_id();
        let frame = self.encode(&Frame::Request { id, message: msg });
        let to = self.peers.at(peer).ok_or(peer);
        let peer = self
            .queue_frame(to, &frame, true)
            .map_err(RequestError::NotSent)?;
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(ms);
        self.requests.insert(
            id,
            PendingRequest {
                peer,
                deadline,
                timeout,
            },
        );
        Ok(id)
    }

    /// Writable peers in a stable order (so a seeded RNG picks reproducibly).
    fn writable_peers(&self) -> Vec<PeerId> {
        let mut v: Vec<_> = self
            .peers
            .iter()
            .filter(|(_, p)| p.writable)
            .map(|(id, p)| (p.addr(), id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Queue `frame` to a peer (or to an address no peer has yet), and say
    /// so in `report` under the peer's address.
    fn queue_into_report(
        &mut self,
        to: Result<PeerId, SocketAddr>,
        frame: &EncodedFrame,
        connect: bool,
        report: &mut SendReport,
    ) {
        let name = match to {
            Ok(id) => self.peers.get(id).map_or_else(unspecified, Peer::addr),
            Err(addr) => addr,
        };
        match self.queue_frame(to, frame, connect) {
            Ok(_) => report.queued.push(name),
            Err(f) => report.failed.push((name, f)),
        }
    }

    /// Queue one encoded frame to a peer, within its byte bound. With
    /// `connect`, an address no peer has gets one (outside the route
    /// table) so the frame can go out. Returns the peer.
    fn queue_frame(
        &mut self,
        to: Result<PeerId, SocketAddr>,
        frame: &EncodedFrame,
        connect: bool,
    ) -> Result<PeerId, SendFailure> {
        let id = match to {
            Ok(id) => id,
            Err(_) if !connect || self.local.is_none() => return Err(SendFailure::NotConnected),
            Err(addr) => self.new_peer(addr, Direction::Outbound),
        };
        let limit = self.config.peer_queue_bytes;
        let now = self.now();
        let Some(peer) = self.peers.get_mut(id) else {
            return Err(SendFailure::NotConnected);
        };
        if peer.queued_bytes().saturating_add(frame.len()) > limit {
            self.counters.queue_full += 1;
            return Err(SendFailure::QueueFull);
        }
        let added = peer.added;
        let unproven = peer.unproven();
        match peer.session_mut() {
            Some(s) if s.is_established() && !unproven => {
                s.send_frame(now, frame);
            }
            Some(s) if s.is_closing() && !added => return Err(SendFailure::NotConnected),
            _ => {
                peer.pending.push_back(frame.detached());
                peer.pending_bytes += frame.len();
            }
        }
        let needs_connect = !peer.has_link() && peer.reconnect_at.is_none();
        if needs_connect {
            self.connect(id);
        }
        self.touch(id);
        Ok(id)
    }

    /// Queue `msg` to the peer `id`, as a send to that one peer would
    /// (a [`PeerSender`](crate::PeerSender)'s message). A full queue hands
    /// the message back, so it can wait for room in order.
    // The message comes back by value (see `queue_push` in the driver).
    #[allow(clippy::result_large_err)]
    pub(crate) fn send_to_peer(
        &mut self,
        now: u64,
        id: PeerId,
        msg: Message,
    ) -> Result<(), (SendFailure, Option<Message>)> {
        self.tick(now);
        let msg = self
            .with_sender(msg)
            .map_err(|_| (SendFailure::NotConnected, None))?;
        let frame = Frame::Message(msg);
        let encoded = self.encode(&frame);
        match self.queue_frame(Ok(id), &encoded, false) {
            Ok(_) => Ok(()),
            Err(failure) => match frame {
                Frame::Message(msg) => Err((failure, Some(msg))),
                _ => Err((failure, None)),
            },
        }
    }

    /// The peer `addr` leads to, its bytes queued (queued plus
    /// unacknowledged), and from now on an [`Event::Room`] after every
    /// flush of it until [`unwatch_room`](Self::unwatch_room). `None` if no
    /// peer has that address.
    pub(crate) fn watch_room(&mut self, addr: SocketAddr) -> Option<(PeerId, usize)> {
        let id = self.peers.at(addr)?;
        let peer = self.peers.get_mut(id)?;
        peer.room_watched = true;
        Some((id, peer.queued_bytes()))
    }

    /// Stop the [`Event::Room`]s of [`watch_room`](Self::watch_room).
    pub(crate) fn unwatch_room(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.room_watched = false;
        }
    }

    /// A snapshot of the node and its peers (the caller adds its plugins).
    pub(crate) fn state(&self, now: u64) -> NetworkState {
        let now = now.max(self.now_ms);
        let mut peers: Vec<PeerState> = self
            .peers
            .values()
            .map(|p| {
                let live = p.session().map(Session::stats).unwrap_or_default();
                let connection = match (&p.link, p.session()) {
                    (Link::Handshaking(_), _) => ConnectionState::Connecting,
                    (_, None) => ConnectionState::Disconnected,
                    (_, Some(s)) if s.is_established() => ConnectionState::Connected,
                    (_, Some(s)) if s.is_connecting() => ConnectionState::Connecting,
                    (_, Some(_)) => ConnectionState::Closing,
                };
                let active = p.active.filter(|_| p.has_link());
                let via = active.and_then(|a| self.relay_of(a));
                let relay = via.and_then(|v| self.peers.get(v.relay));
                PeerState {
                    addr: p.addr(),
                    paths: p.paths.clone(),
                    active_path: active,
                    path: if via.is_some() {
                        PathKind::Relayed
                    } else {
                        PathKind::Direct
                    },
                    direct_addr: active.filter(|a| !relay::is_relay_addr(*a)),
                    relay: relay.map(Peer::addr),
                    relay_key: relay.and_then(|r| r.public_key),
                    advertised: p.advertised,
                    public_key: p.public_key,
                    cipher: match &p.link {
                        Link::Sealed { channel, .. } => Some(channel.cipher()),
                        _ => None,
                    },
                    pinned_key: p.pinned,
                    writable: p.writable,
                    in_route_table: p.added,
                    direction: p.direction,
                    connection,
                    rtt_ms: p.session().and_then(Session::rtt_ms),
                    bytes_in: p.past.bytes_in + live.bytes_in,
                    bytes_out: p.past.bytes_out + live.bytes_out,
                    messages_in: p.past.messages_in + live.messages_in,
                    messages_out: p.past.messages_out + live.messages_out,
                    retransmits: p.past.retransmits + live.retransmits,
                    spurious_retransmits: p.past.spurious_retransmits + live.spurious_retransmits,
                    datagram_size: p.session().map(Session::datagram_size),
                    size_probes_confirmed: p.past.size_probes_confirmed
                        + live.size_probes_confirmed,
                    size_probes_lost: p.past.size_probes_lost + live.size_probes_lost,
                    size_black_holes: p.past.size_black_holes + live.size_black_holes,
                    last_seen_ms_ago: p
                        .session()
                        .and_then(Session::last_recv)
                        .or(p.last_seen)
                        .map(|t| now.saturating_sub(t)),
                    queued_bytes: p.queued_bytes(),
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        peers.sort_by_key(|p| p.addr);
        NetworkState {
            local_addr: self.local,
            advertised_addr: self.advertised,
            public_key: self.crypto.as_ref().map(|c| c.public_key()),
            encrypted: self.crypto.is_some(),
            half_open_handshakes: self.crypto.as_ref().map_or(0, |c| c.half_open_len()),
            inbound_sessions: self.inbound.len(),
            partial_frame_bytes: self.partial_bytes,
            reorder_bytes: self.reorder_bytes,
            reflexive_addrs: self.observations.reflexive(),
            nat: self.observations.classify(self.local),
            peers,
            plugins: Vec::new(),
            counters: self.counters.clone(),
        }
    }

    // ----- inputs ---------------------------------------------------------

    /// One datagram from `from`.
    pub(crate) fn handle_datagram(&mut self, now: u64, from: SocketAddr, datagram: &[u8]) {
        self.tick(now);
        self.counters.datagrams_in += 1;
        match (crypto::classify(datagram), self.crypto.is_some()) {
            (Kind::Encrypted(_), true) => self.handle_encrypted(from, datagram),
            (Kind::Encrypted(_), false) => self.encrypted_at_plaintext_node(from, datagram),
            (Kind::Plaintext, true) => self.plaintext_at_encrypted_node(from, datagram),
            (Kind::Plaintext, false) => self.handle_plaintext(from, datagram),
            (Kind::Garbage, _) => {
                self.counters.malformed_datagrams += 1;
                tracing::debug!(%from, len = datagram.len(), "malformed datagram");
            }
        }
    }

    /// Run every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: u64) {
        self.tick(now);
        let now = self.now();
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Session(id) => {
                    let Some(peer) = self.peers.get_mut(id) else {
                        continue;
                    };
                    if peer.timer_at != Some(t) {
                        continue; // superseded by an earlier entry
                    }
                    peer.timer_at = None;
                    self.handshake_timers(id, now);
                    if let Some(s) = self.peers.get_mut(id).and_then(Peer::session_mut) {
                        s.handle_timeout(now);
                        self.drain_events(id);
                    }
                    self.touch(id);
                }
                TimerKey::HalfOpen(index) => self.expire_half_open(index, now),
                TimerKey::Takeover(addr) => self.finish_takeover(addr),
                TimerKey::Lookup(id) => self.finish_lookup(id),
                TimerKey::Punch(id) => self.punch_timer(id),
                TimerKey::Reject(id) => self.reject_due(id),
                TimerKey::Reconnect(id) => {
                    let due = self.peers.get(id).is_some_and(|p| {
                        p.reconnect_at == Some(t) && p.added && p.session().is_none()
                    });
                    if due {
                        self.connect(id);
                    }
                }
                // Nothing to do but wake up: the driver checks it.
                TimerKey::CloseDeadline => {}
            }
        }
        for (id, r) in self.requests.take_expired(now) {
            self.events.push_back(Event::RequestDone {
                id,
                result: Err(RequestError::Timeout(r.timeout)),
            });
        }
    }

    // ----- sessions -------------------------------------------------------

    fn touch(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id) {
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        self.events.push_back(Event::Node(event));
    }

    /// Flush every touched session once, batch its datagrams, retire it if
    /// it closed, and re-arm its timer.
    fn flush(&mut self, max_segments: usize) {
        for (to, datagram) in std::mem::take(&mut self.outbox) {
            if relay::is_relay_addr(to) {
                self.send_relayed(to, &datagram);
                continue;
            }
            self.transmits.push(to, &datagram, 1);
            self.transmits.end_run();
        }
        if self.dirty.is_empty() {
            return;
        }
        let now = self.now();
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            peer.dirty = false;
            let to = peer.addr();
            let relayed = relay::is_relay_addr(to);
            let mut via_relay: Vec<Vec<u8>> = Vec::new();
            let unproven = peer.unproven();
            let closed = match &mut peer.link {
                Link::Plaintext(session) => {
                    session.flush(now);
                    // Frames wait until the peer proves its address, but
                    // retransmissions of our Hello, probes and ACKs still
                    // stay within the limit.
                    let limit = encrypted::AMPLIFICATION_FACTOR.saturating_mul(
                        usize::try_from(session.stats().bytes_in).unwrap_or(usize::MAX),
                    );
                    while let Some(datagram) = session.poll_transmit() {
                        // A probe for a larger size leaves alone (see
                        // the sealed case below).
                        let segments = if datagram.len() > session.datagram_limit() {
                            self.transmits.end_run();
                            1
                        } else {
                            max_segments
                        };
                        if unproven {
                            let sent = peer.unproven_sent.saturating_add(datagram.len());
                            if sent > limit {
                                self.counters.amplification_drops += 1;
                                continue;
                            }
                            peer.unproven_sent = sent;
                        }
                        self.transmits.push(to, &datagram, segments);
                        if segments == 1 {
                            self.transmits.end_run();
                        }
                    }
                    session.is_closed()
                }
                Link::Sealed {
                    session, channel, ..
                } => {
                    session.set_relayed(relayed);
                    session.flush(now);
                    while let Some(datagram) = session.poll_transmit() {
                        // A probe for a larger size leaves alone, never in
                        // a segmentation-offload run: a run whose segment
                        // size the local link cannot carry fails whole
                        // (EMSGSIZE, or on some drivers EINVAL/EIO, after
                        // which quinn-udp stops batching on the socket for
                        // good), losing the base-size datagrams batched
                        // with it; alone, only the probe is lost.
                        let probe = datagram.len() > session.datagram_limit();
                        if probe {
                            self.transmits.end_run();
                        }
                        let segments = if probe { 1 } else { max_segments };
                        let sealed = if relayed {
                            let mut out = Vec::new();
                            let sealed = channel.seal(&datagram, &mut out);
                            via_relay.push(out);
                            sealed
                        } else {
                            self.transmits.push_sealed(to, channel, &datagram, segments)
                        };
                        if probe {
                            self.transmits.end_run();
                        }
                        if let Err(e) = sealed {
                            // Only the nonce limit stops sealing: end the
                            // session and handshake afresh.
                            tracing::debug!(%to, %e, "cannot seal; closing to re-key");
                            self.counters.rekeys += 1;
                            session.replace();
                            break;
                        }
                    }
                    session.is_closed()
                }
                Link::Idle | Link::Handshaking(_) => false,
            };
            self.transmits.end_run();
            for datagram in via_relay {
                self.send_relayed(to, &datagram);
            }
            if closed {
                self.drain_events(id);
                self.retire_session(id);
                self.report_room(id);
                continue;
            }
            self.report_room(id);
            if let Some(deadline) = self.peers.get(id).and_then(|p| p.deadline(now)) {
                self.schedule_session(id, deadline);
            }
        }
        // Recycle the list's allocation.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Tell the driver how much room a watched peer has after a flush.
    /// Room opens when ACKs empty the send buffer or a session ends, and
    /// both make the peer dirty, so this runs after every flush of it.
    fn report_room(&mut self, id: PeerId) {
        match self.peers.get(id) {
            Some(peer) if peer.room_watched => self.events.push_back(Event::Room {
                peer: id,
                queued: Some(peer.queued_bytes()),
            }),
            // A watched peer that was forgotten was reported then.
            _ => {}
        }
    }

    fn schedule_session(&mut self, id: PeerId, deadline: u64) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.timer_at.is_none_or(|t| deadline < t) {
            peer.timer_at = Some(deadline);
            self.timers.push(Reverse((deadline, TimerKey::Session(id))));
        }
    }

    // ----- shutdown -------------------------------------------------------

    /// Start the graceful close: close every session, stop handshaking,
    /// refuse new work.
    pub(crate) fn begin_close(&mut self, now: u64) {
        self.tick(now);
        if self.closing.is_some() {
            return;
        }
        let now = self.now();
        let close_ms = u64::try_from(self.config.close_timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(close_ms);
        self.closing = Some(deadline);
        for peer in self.peers.values_mut() {
            if matches!(peer.link, Link::Handshaking(_)) {
                peer.link = Link::Idle;
            }
        }
        self.clear_half_open();
        self.takeovers.clear();
        self.rejects.clear();
        for id in self.peers.ids() {
            if let Some(s) = self.peers.get_mut(id).and_then(Peer::session_mut) {
                s.close(now, CloseReason::Shutdown);
                self.drain_events(id);
                self.touch(id);
            }
        }
        // Wake up at the deadline even if no session has a timer left.
        self.timers
            .push(Reverse((deadline, TimerKey::CloseDeadline)));
    }

    /// Whether the graceful close has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Whether a close began and is over: every session closed, or the
    /// deadline passed.
    pub(crate) fn is_closed(&self, now: u64) -> bool {
        match self.closing {
            None => false,
            Some(deadline) => now >= deadline || self.peers.values().all(|p| p.session().is_none()),
        }
    }

    /// After [`is_closed`](Self::is_closed): fail what still waits. Every
    /// request in flight ends as [`Event::RequestDone`] with `Closed`.
    pub(crate) fn finish_close(&mut self) {
        let abandoned: u64 = self.peers.values().map(|p| p.pending.len() as u64).sum();
        if abandoned > 0 {
            tracing::debug!(frames = abandoned, "closing with frames never sent");
        }
        for id in self.lookups.take_all() {
            self.events.push_back(Event::LookupDone {
                id,
                result: Err(NetworkError::Closed),
            });
        }
        for (id, _) in self.requests.take_all() {
            self.events.push_back(Event::RequestDone {
                id,
                result: Err(RequestError::Network(NetworkError::Closed)),
            });
        }
    }
}

#[cfg(test)]
impl Endpoint {
    /// Every table agrees with itself: the peer indices, the half-open
    /// table's bookkeeping, the partial-message count, the inbound slots.
    pub(crate) fn check_invariants(&self) {
        self.peers.check_indices();
        if let Some(c) = &self.crypto {
            c.check();
        }
        self.check_partials();
        self.check_reorder();
        assert!(self.inbound.len() <= self.config.max_inbound_sessions);
        assert!(self.partial_bytes <= self.config.partial_frame_bytes);
    }
}

/// The address of nowhere, for a report about a peer that vanished.
fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Keep the first occurrence of each address, in order. Short lists (the
/// common one-peer send) are checked without allocating a set.
fn dedup_in_order(peers: &mut Vec<SocketAddr>) {
    if peers.len() <= 16 {
        let mut i = 0;
        while i < peers.len() {
            if peers[..i].contains(&peers[i]) {
                peers.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(peers.len());
        peers.retain(|a| seen.insert(*a));
    }
}

#[cfg(test)]
mod tests;
