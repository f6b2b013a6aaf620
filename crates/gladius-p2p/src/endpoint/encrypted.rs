//! The encrypted-mode half of the endpoint: Noise handshakes (the half-open
//! table is `half_open`, who gets a key exchange `admission`), cookies,
//! simultaneous opens, opening sealed datagrams, and the `Reject`s
//! exchanged with nodes of the other mode. Sealing happens where every
//! session's datagrams leave, in `Endpoint::flush`.
//!
//! Nothing an `Init` carries is authenticated, so an `Init` only ever costs
//! the responder what admission allows: it never ends, replaces or delays
//! the node's own handshakes and sessions. Two nodes that dial each other
//! at once settle on one handshake only when one has completed, by a rule
//! on the proven keys (`Endpoint::loses_race`).
//!
//! Who retransmits: only the initiator. It resends `Init` until a `Response`
//! arrives, then `Finish` until the first sealed datagram from the peer
//! proves the peer has its keys. A responder answers each (re)sent `Init`
//! once and never sends on its own timer, so a spoofed `Init` earns one
//! `Response` and no more.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;

use super::admission::{Admission, Limits, Plain};
use super::exchanges::{ExchangeQueue, Queued};
use super::half_open::{HalfOpen, HalfOpenTable};
use super::peer::{Link, Peer, PeerId};
use super::relay::is_relay_addr;
use super::source::SourceIp;
use super::{demux, Endpoint, Event, TimerKey};
use crate::api::{NodeEvent, PathChange};
use crate::crypto::packet::{index_from, CookiePacket, RejectPacket, INIT_LEN};
use crate::crypto::{
    self, ChannelError, Cipher, CookieJar, Established, HandshakeError, HandshakePayload, Identity,
    Initiator, Packet, PublicKey, RejectReason, Responder, COOKIE_LEN,
};
use crate::error::RequestError;
use crate::session::Session;
use crate::state::Direction;
use crate::Config;

/// Duplicates of an `Init` we answered are answered again at most this
/// often, and an address gets a new handshake on a cookie at most this
/// often. Honest initiators retransmit no faster than every 200 ms.
const INIT_INTERVAL_MS: u64 = 100;
/// How long an inbound half-open handshake waits for its `Finish`.
const HALF_OPEN_MS: u64 = 5_000;
/// How often an initiator resends `Finish` until the peer's first sealed
/// datagram arrives.
const FINISH_RESEND_MS: u64 = 250;

/// The node's encrypted-mode state.
#[derive(Debug)]
pub(crate) struct CryptoState {
    identity: Identity,
    /// Inbound handshakes waiting for `Finish`, bounded by
    /// `Config::max_half_open`.
    half_open: HalfOpenTable,
    cookies: CookieJar,
    /// Which `Init`s get a key exchange.
    admission: Admission,
    /// Admitted key exchanges waiting to run.
    pub(super) exchanges: ExchangeQueue,
}

/// How much more an address that has not proven it receives may get back
/// than it sent (QUIC allows 3×).
pub(super) const AMPLIFICATION_FACTOR: usize = 3;

impl CryptoState {
    pub(crate) fn new(identity: Identity, config: &Config, rng: &mut StdRng) -> Self {
        let limits = Limits {
            plain_per_sec: config.key_exchanges_per_sec,
            cookie_per_sec: config.cookie_key_exchanges_per_sec,
        };
        Self {
            identity,
            half_open: HalfOpenTable::new(config.max_half_open, rng),
            cookies: CookieJar::new(),
            admission: Admission::new(limits, rng),
            exchanges: ExchangeQueue::default(),
        }
    }
    pub(crate) fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }
    pub(crate) fn half_open_len(&self) -> usize {
        self.half_open.len()
    }
    #[cfg(test)]
    pub(super) fn check(&self) {
        self.half_open.check();
        assert!(self.exchanges.len() <= super::exchanges::QUEUE_LEN);
    }
}

fn reject(reason: RejectReason) -> Bytes {
    RejectPacket { reason }.encode()
}

fn reason_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::RequiresEncryption => "the peer requires encryption (this node is plaintext)",
        RejectReason::PlaintextOnly => "the peer is plaintext only (this node encrypts)",
        _ => "the peer refused the handshake (key pinning or policy)",
    }
}

impl Endpoint {
    fn our_payload(&self) -> Option<HandshakePayload> {
        let advertised = self.advertised?;
        Some(HandshakePayload::new(
            advertised,
            self.handshake_payload.clone(),
        ))
    }

    /// The key a handshake over `addr` must prove, if any: the pin of the
    /// peer that address leads to, or the configuration's.
    fn pin_for(&self, addr: SocketAddr) -> Option<PublicKey> {
        self.peers
            .at(addr)
            .and_then(|id| self.peers.get(id))
            .and_then(|p| p.pinned)
            .or_else(|| self.config.known_peers.get(&addr).copied())
    }

    /// Start a handshake to `id` over its active path.
    pub(super) fn initiate(&mut self, id: PeerId) {
        let now = self.now();
        let Some(payload) = self.our_payload() else {
            return;
        };
        let Some(to) = self.peers.get(id).map(Peer::addr) else {
            return;
        };
        let pin = self
            .peers
            .get(id)
            .and_then(|p| p.pinned)
            .or_else(|| self.pin_for(to));
        let index = index_from(&mut self.rng);
        // A peer whose last handshake ran ChaCha20-Poly1305 gets it again
        // at once, not after two unanswered AES-GCM `Init`s.
        let cipher = match (
            self.config.cipher,
            self.peers.get(id).and_then(|p| p.last_cipher),
        ) {
            (Cipher::AesGcm, Some(Cipher::ChaChaPoly)) => Cipher::ChaChaPoly,
            (configured, _) => configured,
        };
        let Some(crypto) = self.crypto.as_ref() else {
            return;
        };
        let started = Initiator::new(&crypto.identity, index, &payload, cipher, now);
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        match started {
            Ok((initiator, init)) => {
                peer.link = Link::Handshaking(Box::new(match pin {
                    Some(key) => initiator.expect_remote(key),
                    None => initiator,
                }));
                peer.active = Some(to);
                peer.reconnect_at = None;
                peer.direction = Direction::Outbound;
                self.outbox.push((to, init));
                self.touch(id);
            }
            // Only an over-long handshake payload gets here, and the config
            // check rules that out.
            Err(e) => peer.last_error = Some(format!("cannot start handshake: {e}")),
        }
    }

    pub(super) fn handle_encrypted(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = self.now();
        let packet = match crypto::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.counters.malformed_datagrams += 1;
                tracing::debug!(%from, %e, "malformed encrypted datagram");
                return;
            }
        };
        match packet {
            Packet::Init(init) => self.on_init(from, &init, now),
            Packet::Response(response) => self.on_response(from, &response, datagram, now),
            Packet::Finish(finish) => self.on_finish(from, &finish, now),
            Packet::Data(d) if self.held_by_takeover(from, Some(d.receiver_index)) => {
                self.hold_datagram(from, datagram);
            }
            Packet::Data(_) => self.on_data(from, datagram, now),
            Packet::Cookie(cookie) => self.on_cookie(from, cookie, now),
            Packet::Reject(r) => self.on_reject(from, r.reason),
        }
    }

    /// Whether `from` is the address of a route-table peer.
    fn in_route_table(&self, from: SocketAddr) -> bool {
        self.peers
            .at(from)
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| p.added)
    }

    /// An `Init`: answer a retransmission again; otherwise decide, by the
    /// half-open table and the admission budgets, whether it costs us a
    /// key exchange, a `Cookie` reply or nothing. Nothing an `Init` says is
    /// authenticated, so it never touches our own handshakes or sessions:
    /// simultaneous opens are settled once handshakes complete
    /// ([`loses_race`](Self::loses_race)).
    fn on_init(&mut self, from: SocketAddr, init: &crypto::packet::InitPacket<'_>, now: u64) {
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        if let Some(h) = crypto.half_open.duplicate_of(from, init) {
            // Our Response was lost: answer the retransmission again, within
            // the amplification limit.
            if let Some(response) = h.responder.answer_duplicate_init(init) {
                h.bytes_in = h.bytes_in.saturating_add(INIT_LEN);
                let out = h.bytes_out.saturating_add(response.len());
                if now < h.answered_at.saturating_add(INIT_INTERVAL_MS) {
                    self.counters.throttled_handshakes += 1;
                } else if out > AMPLIFICATION_FACTOR.saturating_mul(h.bytes_in) {
                    self.counters.amplification_drops += 1;
                } else {
                    h.bytes_out = out;
                    h.answered_at = now;
                    self.outbox.push((from, response));
                }
                return;
            }
        }
        if crypto.exchanges.holds_init(from, init) {
            // Retransmitted while its key exchange waits in the queue.
            self.counters.throttled_handshakes += 1;
            return;
        }
        let known = self.in_route_table(from);
        if !known && self.config.refuse_unknown_inbound {
            self.counters.refused_sessions += 1;
            self.outbox.push((from, reject(RejectReason::Refused)));
            return;
        }
        // Route-table peers and pinned keys go first under load.
        let priority = known || self.pin_for(from).is_some();
        let max_half_open = self.config.max_half_open;
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        let ip = SourceIp::from(from);
        let cookie_valid =
            init.cookie != [0; COOKIE_LEN] && crypto.cookies.verify(from, &init.cookie, now);
        if cookie_valid {
            // The initiator receives at `from`. Forgeries cannot get here,
            // so nothing they do delays it.
            let recent = crypto.exchanges.holds(from, true)
                || crypto
                    .half_open
                    .last_cookied(from)
                    .is_some_and(|t| now < t.saturating_add(INIT_INTERVAL_MS));
            if recent {
                self.counters.throttled_handshakes += 1;
                return;
            }
            if !crypto.admission.cookied(now, ip, priority) {
                self.counters.key_exchanges_refused += 1;
                return;
            }
        } else {
            // Unproven. An address that holds an unproven handshake must
            // prove itself for another: a forgery in a peer's name can then
            // neither replace the peer's handshake nor block it (the peer
            // answers the cookie; the forger never sees it).
            let holds =
                crypto.half_open.holds_uncookied(from) || crypto.exchanges.holds(from, false);
            let verdict = if holds {
                crypto.admission.cookie_for(now, ip)
            } else {
                let loaded = crypto.half_open.len() >= max_half_open / 2;
                crypto.admission.plain(now, ip, priority, loaded)
            };
            if verdict == Plain::Nothing {
                self.counters.throttled_handshakes += 1;
                return;
            }
            if verdict == Plain::Cookie {
                let cookie = crypto.cookies.cookie(from, now);
                let packet = CookiePacket {
                    receiver_index: init.sender_index,
                    cookie,
                };
                self.outbox.push((from, packet.encode()));
                self.counters.cookies_sent += 1;
                return;
            }
        }
        // Admitted: the key exchange runs once the established sessions'
        // traffic has left (see `exchanges`).
        self.queue_exchange(Queued {
            from,
            init: init.encode(),
            sender_index: init.sender_index,
            ephemeral: Bytes::copy_from_slice(init.noise),
            cookied: cookie_valid,
            priority,
        });
    }

    /// Run the key exchange of an admitted `Init` (see `exchanges`):
    /// answer it with a `Response` and hold the handshake half-open.
    pub(super) fn respond(&mut self, q: Queued) {
        let now = self.now();
        let from = q.from;
        let Ok(Packet::Init(init)) = crypto::parse(&q.init) else {
            return;
        };
        let pin = self.pin_for(from);
        let Some(payload) = self.our_payload() else {
            return;
        };
        let index = loop {
            let index = index_from(&mut self.rng);
            if self
                .crypto
                .as_ref()
                .is_none_or(|c| !c.half_open.contains(index))
            {
                break index;
            }
        };
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        match Responder::new(&crypto.identity, index, &init, &payload, now) {
            Ok((responder, response)) => {
                let responder = match pin {
                    Some(key) => responder.expect_remote(key),
                    None => responder,
                };
                let evicted = crypto.half_open.insert(
                    index,
                    HalfOpen {
                        responder,
                        from,
                        created: now,
                        cookied: q.cookied,
                        bytes_in: INIT_LEN,
                        bytes_out: response.len(),
                        answered_at: now,
                    },
                );
                self.counters.throttled_handshakes += evicted as u64;
                self.outbox.push((from, response));
                let at = now.saturating_add(HALF_OPEN_MS);
                self.timers
                    .push(std::cmp::Reverse((at, TimerKey::HalfOpen(index))));
            }
            Err(e) => {
                self.counters.bad_handshakes += 1;
                tracing::debug!(%from, %e, "bad handshake initiation");
            }
        }
    }

    fn on_response(
        &mut self,
        from: SocketAddr,
        response: &crypto::packet::ResponsePacket<'_>,
        datagram: &[u8],
        now: u64,
    ) {
        let Some(id) = self.peers.at(from) else {
            self.counters.bad_handshakes += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let handshake = match &mut peer.link {
            Link::Handshaking(h) => h,
            Link::Sealed { channel, .. } => {
                // Our Finish was lost and the responder asks again.
                match channel.answer_duplicate_response(datagram) {
                    Some(finish) => self.outbox.push((from, finish)),
                    None => self.counters.bad_handshakes += 1,
                }
                return;
            }
            Link::Idle | Link::Plaintext(_) => {
                self.counters.bad_handshakes += 1;
                return;
            }
        };
        match handshake.handle_response(response, now) {
            Ok(established) => {
                peer.link = Link::Idle;
                self.establish(from, established, Direction::Outbound, None, now);
            }
            // Forged or corrupted: the handshake goes on.
            Err(
                HandshakeError::Decrypt
                | HandshakeError::Noise(_)
                | HandshakeError::WrongIndex { .. },
            ) => {
                self.counters.bad_handshakes += 1;
            }
            Err(e) => {
                peer.link = Link::Idle;
                if matches!(e, HandshakeError::PinnedKeyMismatch { .. }) {
                    self.counters.pin_mismatches += 1;
                    self.outbox.push((from, reject(RejectReason::Refused)));
                } else {
                    self.counters.bad_handshakes += 1;
                }
                self.handshake_failed(id, e.to_string());
            }
        }
    }

    fn on_finish(&mut self, from: SocketAddr, finish: &crypto::packet::FinishPacket<'_>, now: u64) {
        if self.held_by_takeover(from, Some(finish.receiver_index)) {
            // The newcomer resends its Finish while we decide.
            return;
        }
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        let index = finish.receiver_index;
        let Some(mut half) = crypto.half_open.take(index, from) else {
            self.counters.bad_handshakes += 1;
            return;
        };
        match half.responder.handle_finish(finish) {
            Ok(established) => {
                let started = Some(half.created);
                self.establish(from, established, Direction::Inbound, started, now);
            }
            Err(
                HandshakeError::Decrypt
                | HandshakeError::Noise(_)
                | HandshakeError::WrongIndex { .. },
            ) => {
                crypto.half_open.put_back(index, half);
                self.counters.bad_handshakes += 1;
            }
            Err(e) => {
                if matches!(e, HandshakeError::PinnedKeyMismatch { .. }) {
                    self.counters.pin_mismatches += 1;
                    self.outbox.push((from, reject(RejectReason::Refused)));
                    self.emit(NodeEvent::PeerRejected(from, Arc::from(e.to_string())));
                } else {
                    self.counters.bad_handshakes += 1;
                }
                tracing::debug!(%from, %e, "inbound handshake refused");
            }
        }
    }

    /// A handshake over `from` completed: find the peer it proved (by key
    /// first, then by address), and install the channel and a session over
    /// it.
    ///
    /// The key decides who the peer is. A known key at a new address is
    /// that peer on a new path (it restarted on another port, or its NAT
    /// rebound). A new key at the address of a peer that has a live session
    /// under another key is refused while that session lives: a key changes
    /// only once the old session is gone, and never for a pinned peer (the
    /// handshake's own pin check refused that already).
    /// `started`: when the peer's `Init` arrived, for an inbound handshake.
    fn establish(
        &mut self,
        from: SocketAddr,
        est: Established,
        direction: Direction,
        started: Option<u64>,
        now: u64,
    ) {
        let key = est.remote_static;
        // Over a relay path, the key proven must be the one the relay
        // named: otherwise what we send back would go to someone else.
        if self.relay_of(from).is_some_and(|p| p.key != key) {
            self.counters.bad_handshakes += 1;
            tracing::debug!(%from, %key, "relayed handshake proved another key than the relay named");
            return;
        }
        let at_addr = self.peers.at(from);
        let with_key = self.peers.with_key(&key);
        let displaced = at_addr.filter(|id| Some(*id) != with_key);
        let live_other_key = displaced
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| {
                p.public_key.is_some_and(|k| k != key)
                    && p.session()
                        .is_some_and(|s| !s.is_closing() && !s.is_closed())
            });
        if let Some(old) = displaced.filter(|_| live_other_key) {
            self.start_takeover(from, est, direction, old);
            return;
        }
        let lost = with_key
            .or(at_addr)
            .filter(|id| self.loses_race(*id, &est, direction, started));
        if let Some(id) = lost {
            self.counters.simultaneous_open_drops += 1;
            tracing::debug!(%from, ?direction, "simultaneous open: this handshake lost");
            self.hurry_winner(id);
            return;
        }
        self.install(from, est, direction, now);
    }

    /// The peer just completed a handshake that lost to ours: it is up and
    /// answering, so ours need not wait for its retransmission timer.
    fn hurry_winner(&mut self, id: PeerId) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let to = peer.addr();
        match &mut peer.link {
            Link::Handshaking(h) => {
                if let Some(init) = h.resend_now(now) {
                    self.outbox.push((to, init));
                }
            }
            Link::Sealed {
                finish: Some((finish, at)),
                ..
            } => {
                self.outbox.push((to, finish.clone()));
                *at = now.saturating_add(FINISH_RESEND_MS);
            }
            _ => {}
        }
        self.touch(id);
    }

    /// Whether the handshake `est` of `direction`, just completed for peer
    /// `id` (the peer that proved its key, or the one at its address),
    /// loses a simultaneous open to a handshake of the other direction.
    ///
    /// Both nodes may dial each other at once, and each must end with the
    /// same one session. Only authenticated facts decide, so a forged
    /// `Init` cannot make a node give up anything: of two handshakes
    /// between the same two keys, the one initiated by the lower key wins
    /// (for two equal keys, the lower initiator index). Both nodes know both
    /// keys once a handshake completed, so both keep the same one. The rule
    /// applies while the two are concurrent: our own handshake still under
    /// way, or a session of ours the peer's `Init` (arriving at `started`)
    /// came before the peer was heard on. An `Init` that came after the
    /// peer used our session is a new start (the peer restarted or
    /// re-keys) and replaces it, whoever initiated it.
    fn loses_race(
        &self,
        id: PeerId,
        est: &Established,
        direction: Direction,
        started: Option<u64>,
    ) -> bool {
        let Some(ours) = self.crypto.as_ref().map(CryptoState::public_key) else {
            return false;
        };
        let theirs = est.remote_static;
        let rank = |by_us: bool, index: u32| (if by_us { ours } else { theirs }, index);
        let new = match direction {
            Direction::Outbound => rank(true, est.channel.local_index()),
            Direction::Inbound => rank(false, est.channel.remote_index()),
        };
        let Some(peer) = self.peers.get(id) else {
            return false;
        };
        match &peer.link {
            Link::Handshaking(h) if direction == Direction::Inbound => {
                rank(true, h.local_index()) < new
            }
            Link::Sealed {
                session,
                channel,
                heard_at,
                ..
            } if channel.remote_static() == theirs
                && peer.direction != direction
                && !session.is_closing()
                && !session.is_closed() =>
            {
                let existing = match peer.direction {
                    Direction::Outbound => rank(true, channel.local_index()),
                    Direction::Inbound => rank(false, channel.remote_index()),
                };
                let concurrent = match (heard_at, started) {
                    (Some(heard), Some(started)) => started < *heard,
                    _ => true,
                };
                concurrent && existing < new
            }
            _ => false,
        }
    }

    /// Refuse a handshake that proved a new key at a live session's
    /// address.
    pub(super) fn refuse_newcomer(&mut self, from: SocketAddr, why: &str) {
        self.counters.key_conflicts += 1;
        self.outbox.push((from, reject(RejectReason::Refused)));
        tracing::debug!(%from, "new key refused: {why}");
    }

    /// Install the channel of a handshake over `from` and a session over
    /// it, for the peer the key (else the address) leads to.
    pub(super) fn install(
        &mut self,
        from: SocketAddr,
        est: Established,
        direction: Direction,
        now: u64,
    ) {
        let Some(advertised) = self.advertised else {
            return;
        };
        let key = est.remote_static;
        let at_addr = self.peers.at(from);
        let with_key = self.peers.with_key(&key);
        let displaced = at_addr.filter(|id| Some(*id) != with_key);
        let target = with_key.or(at_addr);
        if direction == Direction::Inbound && !self.admits_inbound(target, from) {
            return;
        }
        let id = match target {
            Some(id) => id,
            None => self.new_peer(from, direction),
        };
        if let Some(old) = displaced.filter(|d| *d != id) {
            self.merge(old, id);
        }
        if self
            .peers
            .get(id)
            .and_then(|p| p.public_key)
            .is_some_and(|k| k != key)
        {
            self.counters.key_changes += 1;
            if let Some(peer) = self.peers.get_mut(id) {
                peer.key_changed = true;
            }
            tracing::debug!(%from, %key, "peer came back under a new key");
        }
        // One handshake per peer wins (see `loses_race`): our own initiation, if
        // still under way, lost to this one.
        if let Some(peer) = self.peers.get_mut(id) {
            if matches!(peer.link, Link::Handshaking(_)) {
                peer.link = Link::Idle;
                self.counters.simultaneous_open_drops += 1;
            }
        }
        // A completed handshake of a peer we have a session with is that
        // peer's new session (it restarted, or re-keyed).
        self.end_session(id);
        self.peers.add_path(id, from);
        self.peers.set_key(id, key);
        // Both ends name the KCP conversation after the initiator's index.
        let conv = match direction {
            Direction::Outbound => est.channel.local_index(),
            Direction::Inbound => est.channel.remote_index(),
        };
        let session = Session::new(conv, advertised, &self.session_config, now);
        if let Some(finish) = &est.finish {
            self.outbox.push((from, finish.clone()));
        }
        self.peers.set_index(id, est.channel.local_index());
        self.counters.handshakes_completed += 1;
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.last_cipher = Some(est.channel.cipher());
        peer.link = Link::Sealed {
            session,
            channel: est.channel,
            finish: est
                .finish
                .map(|finish| (finish, now.saturating_add(FINISH_RESEND_MS))),
            heard_at: None,
        };
        peer.active = Some(from);
        peer.handshake_payload = est.remote_payload.app;
        peer.handshake_advertised = Some(est.remote_payload.advertised);
        peer.direction = direction;
        peer.reconnect_at = None;
        if direction == Direction::Inbound {
            self.count_inbound(id, from);
        }
        tracing::debug!(%from, %key, ?direction, "handshake complete");
        self.touch(id);
    }

    /// `old` turned out to be `into` (an address we knew before its key):
    /// `into` takes over its route-table entry, frames and requests.
    fn merge(&mut self, old: PeerId, into: PeerId) {
        self.end_session(old);
        let Some(gone) = self.peers.remove(old) else {
            return;
        };
        self.requests.retarget(old, into);
        if gone.room_watched {
            self.events.push_back(Event::Room {
                peer: old,
                queued: None,
            });
        }
        let paths = gone.paths.clone();
        for path in paths {
            self.peers.add_path(into, path);
        }
        if let Some(peer) = self.peers.get_mut(into) {
            peer.added |= gone.added;
            peer.writable |= gone.writable;
            peer.pinned = peer.pinned.or(gone.pinned);
            peer.pending_bytes += gone.pending_bytes;
            peer.pending.extend(gone.pending);
            peer.past += gone.past;
        }
    }

    /// The peer a sealed datagram for our index `index` from `from`
    /// belongs to: the peer at `from` if its session has that index, else
    /// the peer whose session has it (it may be writing from a new
    /// address: roaming), else whoever is at `from` (to count the miss).
    fn data_target(&self, from: SocketAddr, index: u32) -> Option<PeerId> {
        let at = self.peers.at(from);
        let has_index = |id: PeerId| {
            matches!(
                self.peers.get(id).map(|p| &p.link),
                Some(Link::Sealed { channel, .. }) if channel.local_index() == index
            )
        };
        match at {
            Some(id) if has_index(id) => Some(id),
            _ => self
                .peers
                .with_index(index)
                .filter(|id| has_index(*id))
                .or(at),
        }
    }

    pub(super) fn on_data(&mut self, from: SocketAddr, datagram: &[u8], now: u64) {
        let Ok(Packet::Data(data)) = crypto::parse(datagram) else {
            self.counters.malformed_datagrams += 1;
            return;
        };
        let counter = data.counter;
        let Some(id) = self.data_target(from, data.receiver_index) else {
            self.counters.unknown_session_datagrams += 1;
            return;
        };
        let refused = self.arm_reorder(id);
        let opened = &mut self.open_buf;
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let active = peer.active;
        let Link::Sealed {
            session,
            channel,
            finish,
            heard_at,
        } = &mut peer.link
        else {
            self.counters.unknown_session_datagrams += 1;
            return;
        };
        let newest = channel.highest_received().is_none_or(|h| counter > h);
        if opened.capacity() > datagram.len().saturating_mul(2) {
            // KCP may keep this buffer (out-of-order segments): never let
            // a small datagram pin a much larger allocation.
            *opened = Vec::new();
        }
        match channel.open(datagram, opened) {
            Ok(()) => {
                // The peer sealed this with its keys: it has our Finish.
                *finish = None;
                heard_at.get_or_insert(now);
                // An empty payload is a probe (hole punching, §7.13): it
                // proves the path, and carries nothing for KCP.
                let result = if opened.is_empty() {
                    Ok(())
                } else {
                    // KCP keeps slices of the opened datagram instead of
                    // copying it; the buffer comes back for the next one
                    // unless KCP still holds some of it.
                    let owned = Bytes::from(std::mem::take(opened));
                    let result = session.handle_owned_datagram(now, owned.clone());
                    if let Ok(mut back) = owned.try_into_mut() {
                        back.clear();
                        *opened = Vec::from(back);
                    }
                    result
                };
                // Authenticated, not replayed, and the newest the peer
                // sent: the peer is at `from` now (see `roam`). A relayed
                // datagram never moves a direct path: the peer may still
                // send through the relay after a direct path works.
                // A direct one moves a relayed path even if a newer one
                // came through the relay first (hole punching).
                let from_relay = super::relay::is_relay_addr(from);
                let active_relay = active.is_some_and(super::relay::is_relay_addr);
                let relayed_over_direct = from_relay && active.is_some() && !active_relay;
                let upgrade = !from_relay && active_relay;
                if (newest || upgrade) && active != Some(from) && !relayed_over_direct {
                    self.roam(id, from);
                }
                if let Err(e) = result {
                    self.counters.malformed_datagrams += 1;
                    tracing::debug!(%from, ?e, "sealed datagram is not KCP");
                    return;
                }
                self.track_reorder(id, refused);
                self.track_partial(id);
                self.answered(id);
                self.drain_events(id);
                self.touch(id);
            }
            Err(ChannelError::Replayed(_) | ChannelError::TooOld(_)) => {
                self.counters.replayed_datagrams += 1;
            }
            Err(ChannelError::Decrypt) => {
                self.counters.decrypt_failures += 1;
                tracing::debug!(%from, "sealed datagram failed authentication");
            }
            Err(ChannelError::WrongIndex { .. }) => self.counters.unknown_session_datagrams += 1,
            Err(_) => self.counters.malformed_datagrams += 1,
        }
    }

    /// Roaming: move `id`'s active path to `from`, the source of a sealed
    /// datagram of its session that authenticated, passed the replay window
    /// and carried the highest counter yet (WireGuard's rule: only the
    /// peer's keys can move its path, and a reordered older datagram from
    /// the old address cannot move it back). No handshake: the session and
    /// its KCP state go on, and what we send next goes to `from`.
    ///
    /// Not when `from` is a path of another peer whose link is up: an
    /// authenticated peer that spoofs another peer's address must not take
    /// that peer's path (the datagram is still delivered).
    fn roam(&mut self, id: PeerId, from: SocketAddr) {
        if let Some(other) = self.peers.at(from).filter(|o| *o != id) {
            if self.peers.get(other).is_some_and(Peer::has_link) {
                self.counters.path_conflicts += 1;
                tracing::debug!(%from, "sealed datagram from another live peer's address: path kept");
                return;
            }
        }
        let Some(old) = self.peers.get(id).map(|p| p.active) else {
            return;
        };
        self.peers.add_path(id, from);
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.active = Some(from);
        // A new path may carry less: datagrams return to the base size
        // and probe afresh (docs/wire-format.md §1.1).
        if let Link::Sealed { session, .. } = &mut peer.link {
            session.path_changed();
        }
        let Some(public_key) = peer.public_key else {
            return;
        };
        self.counters.path_changes += 1;
        if old.is_some_and(super::relay::is_relay_addr) && !super::relay::is_relay_addr(from) {
            self.counters.punch_successes += 1;
            tracing::debug!(?old, new = %from, %public_key, "relayed peer reached directly");
        }
        tracing::debug!(?old, new = %from, %public_key, "peer roamed to a new address");
        self.emit(NodeEvent::PathChanged(PathChange {
            public_key,
            old,
            new: from,
        }));
        // The peer's mapping changed: tell it what we see now.
        self.send_observation(id);
    }

    fn on_cookie(&mut self, from: SocketAddr, cookie: CookiePacket, now: u64) {
        let link = self
            .peers
            .at(from)
            .and_then(|id| self.peers.get_mut(id))
            .map(|p| &mut p.link);
        match link {
            Some(Link::Handshaking(h)) if h.local_index() == cookie.receiver_index => {
                let init = h.with_cookie(cookie.cookie, now);
                self.outbox.push((from, init));
            }
            _ => self.counters.bad_handshakes += 1,
        }
    }

    /// A `Reject` from `from` outlived its grace (see `rejects`): the
    /// attempt to `id` ends with its reason.
    pub(super) fn honour_reject(&mut self, id: PeerId, from: SocketAddr, reason: RejectReason) {
        self.counters.rejected_by_peer += 1;
        if let Some(peer) = self.peers.get_mut(id) {
            match &mut peer.link {
                Link::Handshaking(_) => peer.link = Link::Idle,
                link => {
                    if let Some(s) = link.session_mut() {
                        s.replace();
                    }
                }
            }
        }
        self.drain_events(id);
        self.take_session(id);
        let text = reason_text(reason);
        tracing::warn!(%from, "connection refused: {text}");
        self.handshake_failed(id, text.to_owned());
    }

    /// Our connection attempt to `id` failed for a reason worth telling.
    fn handshake_failed(&mut self, id: PeerId, reason: String) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.last_error = Some(reason.clone());
        let addr = peer.addr();
        self.fail_requests_with(id, || RequestError::ConnectFailed(reason.clone()));
        self.emit(NodeEvent::PeerRejected(addr, Arc::from(reason)));
        self.link_down(id);
    }

    /// A plaintext node's datagram reached us (we encrypt): refuse its
    /// session opener clearly, drop anything else.
    pub(super) fn plaintext_at_encrypted_node(&mut self, from: SocketAddr, datagram: &[u8]) {
        let decision = demux::conv_of(datagram).map(|conv| demux::decide(None, conv, datagram));
        match decision {
            Some(demux::Decision::Open) => {
                self.counters.encryption_mismatches += 1;
                self.outbox
                    .push((from, reject(RejectReason::RequiresEncryption)));
                tracing::debug!(%from, "plaintext hello refused: this node encrypts");
            }
            Some(demux::Decision::Unknown) => self.counters.unknown_session_datagrams += 1,
            _ => self.counters.malformed_datagrams += 1,
        }
    }

    /// An encrypted-mode datagram reached us (we are plaintext).
    pub(super) fn encrypted_at_plaintext_node(&mut self, from: SocketAddr, datagram: &[u8]) {
        match crypto::parse(datagram) {
            Ok(Packet::Init(_)) => {
                self.counters.encryption_mismatches += 1;
                self.outbox
                    .push((from, reject(RejectReason::PlaintextOnly)));
                tracing::debug!(%from, "handshake refused: this node is plaintext");
            }
            Ok(Packet::Reject(r)) => self.on_reject(from, r.reason),
            Ok(_) => self.counters.unknown_session_datagrams += 1,
            Err(_) => self.counters.malformed_datagrams += 1,
        }
    }

    /// Retransmit our `Init` or `Finish` when due; give up an expired
    /// handshake.
    pub(super) fn handshake_timers(&mut self, id: PeerId, now: u64) {
        // A direct dial found by a lookup that failed: through the relay.
        // So does a direct reconnect of a peer once reached through a
        // relay (its direct path died).
        let fallback = self.peers.get(id).and_then(|p| match &p.link {
            Link::Handshaking(h) if h.is_expired(now) && !p.active.is_some_and(is_relay_addr) => {
                let relay = p.relay_fallback.or_else(|| {
                    p.paths
                        .iter()
                        .find_map(|a| self.relay_of(*a))
                        .map(|r| r.relay)
                });
                relay.zip(p.pinned.or(p.public_key))
            }
            _ => None,
        });
        if let Some((relay, key)) = fallback {
            if self.fall_back_to_relay(id, relay, key) {
                return;
            }
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let to = peer.addr();
        match &mut peer.link {
            Link::Handshaking(handshake) if handshake.is_expired(now) => {
                peer.link = Link::Idle;
                let reason = "no answer to the handshake (timed out)";
                peer.last_error = Some(reason.into());
                let added = peer.added;
                self.counters.handshake_timeouts += 1;
                tracing::debug!(%to, "handshake timed out");
                if added {
                    self.emit(NodeEvent::ConnectFailed(to, Arc::from(reason)));
                }
                self.fail_requests_with(id, || RequestError::ConnectFailed(reason.to_owned()));
                self.link_down(id);
            }
            Link::Handshaking(handshake) => {
                if let Some(init) = handshake.handle_timeout(now) {
                    self.outbox.push((to, init));
                }
            }
            Link::Sealed {
                finish: Some((finish, at)),
                ..
            } if now >= *at => {
                self.outbox.push((to, finish.clone()));
                *at = now.saturating_add(FINISH_RESEND_MS);
            }
            _ => {}
        }
    }

    pub(super) fn expire_half_open(&mut self, index: u32, now: u64) {
        let Some(crypto) = self.crypto.as_mut() else {
            return;
        };
        if let Some(at) = crypto.half_open.expire(index, now, HALF_OPEN_MS) {
            self.timers
                .push(std::cmp::Reverse((at, TimerKey::HalfOpen(index))));
        }
    }

    /// Drop every half-open handshake (shutdown).
    pub(super) fn clear_half_open(&mut self) {
        if let Some(c) = self.crypto.as_mut() {
            c.half_open.clear();
            c.exchanges.clear();
        }
    }
}
