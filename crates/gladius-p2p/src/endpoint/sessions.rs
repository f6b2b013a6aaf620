//! Peer sessions, common to both modes: opening them (plaintext; the
//! encrypted handshake is in `encrypted`), acting on what a session reports,
//! and retiring it (reconnect with backoff, or forget the peer).

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;

use super::peer::{Link, Peer, PeerId};
use super::{demux, lookup, observed, punch, relay, Endpoint, Event, TimerKey};
use crate::api::{NodeEvent, PeerInfo, PeerReason, Received};
use crate::error::RequestError;
use crate::session::{CloseCause, Inbound, Session, SessionEvent};
use crate::state::Direction;

impl Endpoint {
    /// Open a link to `id` over its active path: a handshake in encrypted
    /// mode, a session at once in plaintext mode.
    pub(super) fn connect(&mut self, id: PeerId) {
        let Some(advertised) = self.advertised else {
            return;
        };
        if self.crypto.is_some() {
            return self.initiate(id);
        }
        let now = self.now();
        let conv = self.rng.gen_range(1..=u32::MAX);
        let session = Session::new(conv, advertised, &self.session_config, now);
        if let Some(peer) = self.peers.get_mut(id) {
            peer.reconnect_at = None;
            peer.direction = Direction::Outbound;
            peer.link = Link::Plaintext(session);
            self.touch(id);
        }
    }

    pub(super) fn handle_plaintext(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = self.now();
        let Some(conv) = demux::conv_of(datagram) else {
            self.counters.malformed_datagrams += 1;
            tracing::debug!(%from, len = datagram.len(), "malformed datagram");
            return;
        };
        let id = self.peers.at(from);
        let existing = id.and_then(|id| self.peers.get(id)).and_then(Peer::session);
        let decision = demux::decide(
            existing.map(|s| demux::Existing {
                conv: s.conv(),
                heard: s.heard(),
                peer_instance: s.peer_instance(),
            }),
            conv,
            datagram,
        );
        match decision {
            demux::Decision::Deliver => {
                let Some(id) = id else {
                    return;
                };
                let refused = self.arm_reorder(id);
                let Some(session) = self.peers.get_mut(id).and_then(Peer::session_mut) else {
                    return;
                };
                if let Err(e) = session.handle_datagram(now, datagram) {
                    self.counters.malformed_datagrams += 1;
                    tracing::debug!(%from, ?e, "datagram rejected by KCP");
                    return;
                }
                self.track_reorder(id, refused);
                self.track_partial(id);
                if let Some(peer) = self.peers.get_mut(id) {
                    // The peer may just have proven its address.
                    peer.release_pending(now);
                }
                self.answered(id);
                self.drain_events(id);
                self.touch(id);
            }
            demux::Decision::Malformed => {
                self.counters.malformed_datagrams += 1;
                tracing::debug!(%from, "malformed datagram");
            }
            demux::Decision::Unknown => {
                self.counters.unknown_session_datagrams += 1;
                tracing::debug!(%from, conv, "datagram for no session");
            }
            demux::Decision::Stale => {
                self.counters.simultaneous_open_drops += 1;
                tracing::debug!(%from, conv, "stale session opener dropped");
            }
            demux::Decision::Open => self.open_inbound(from, conv, datagram, now),
        }
    }

    fn open_inbound(&mut self, from: SocketAddr, conv: u32, datagram: &[u8], now: u64) {
        let Some(advertised) = self.advertised else {
            return;
        };
        if !self.admits_inbound(self.peers.at(from), from) {
            return;
        }
        let mut session = Session::new(conv, advertised, &self.session_config, now);
        let added = self
            .peers
            .at(from)
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| p.added);
        session.set_reorder_limit(self.reorder_allowance(added, 0));
        if session.handle_datagram(now, datagram).is_err() {
            // Cannot happen for a datagram the demultiplexer called an
            // opener, but a bad one must not replace a working session.
            self.counters.malformed_datagrams += 1;
            return;
        }
        let id = self.make_way(from);
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.direction = if peer.added {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        peer.reconnect_at = None;
        peer.active = Some(from);
        peer.unproven_sent = 0;
        peer.link = Link::Plaintext(session);
        self.count_inbound(id, from);
        self.track_reorder(id, 0);
        self.track_partial(id);
        self.drain_events(id);
        self.touch(id);
    }

    /// The peer sent something valid on its established session: one a
    /// plugin demoted (judged dead) is writable again.
    pub(super) fn answered(&mut self, id: PeerId) {
        let live = |p: &Peer| p.session().is_some_and(Session::is_established);
        if let Some(peer) = self.peers.get_mut(id).filter(|p| p.demoted && live(p)) {
            peer.demoted = false;
            peer.writable = true;
            tracing::debug!(addr = %peer.addr(), "a demoted peer answers: writable again");
        }
    }

    /// End the session of the peer `addr` leads to, if any (the peer
    /// restarted, or it lost a simultaneous open), and return that peer,
    /// creating one for an address we did not know.
    pub(super) fn make_way(&mut self, addr: SocketAddr) -> PeerId {
        match self.peers.at(addr) {
            Some(id) => {
                self.end_session(id);
                id
            }
            None => self.new_peer(addr, Direction::Inbound),
        }
    }

    /// End `id`'s session, if it has one, for a new session that replaces
    /// it.
    pub(super) fn end_session(&mut self, id: PeerId) {
        if let Some(old) = self.peers.get_mut(id).and_then(Peer::session_mut) {
            old.replace();
            self.drain_events(id);
            self.take_session(id);
        }
    }

    /// Act on everything a session reported.
    pub(super) fn drain_events(&mut self, id: PeerId) {
        let now = self.now();
        loop {
            let Some(peer) = self.peers.get_mut(id) else {
                return;
            };
            let addr = peer.addr();
            let handshake_advertised = peer.handshake_advertised;
            let Some(session) = peer.link.session_mut() else {
                return;
            };
            let Some(event) = session.poll_event() else {
                break;
            };
            match event {
                SessionEvent::Connected { advertised } => {
                    if handshake_advertised.is_some_and(|h| h != advertised) {
                        // The hello must name the address the handshake
                        // authenticated; anything else is a lie.
                        tracing::debug!(%addr, %advertised, "hello contradicts the handshake");
                        session.replace();
                        self.counters.protocol_errors += 1;
                        continue;
                    }
                    // Hand over what waited for the hello, in order.
                    peer.release_pending(now);
                    peer.advertised = Some(advertised);
                    peer.last_error = None;
                    if peer.demoted {
                        peer.demoted = false;
                        peer.writable = true;
                    }
                    peer.backoff = self.config.reconnect_min;
                    let info = PeerInfo {
                        addr,
                        advertised,
                        public_key: peer.public_key,
                        handshake_payload: peer.handshake_payload.clone(),
                        writable: peer.writable,
                        direction: peer.direction,
                    };
                    tracing::debug!(%addr, %advertised, "session established");
                    self.emit(NodeEvent::PeerConnected(Arc::new(info)));
                    self.send_observation(id);
                    self.session_up(id);
                }
                SessionEvent::Frame(inbound) => {
                    let (writable, key) = (peer.writable, peer.public_key);
                    self.deliver(id, addr, writable, key, inbound);
                }
                SessionEvent::ChecksumFailure => {
                    self.counters.checksum_failures += 1;
                    tracing::debug!(%addr, "message with bad checksum dropped");
                }
                SessionEvent::WrongSender => {
                    self.counters.wrong_sender += 1;
                    tracing::debug!(%addr, "message with wrong sender dropped");
                }
                SessionEvent::Closed(cause) => {
                    let was_connected = session.peer_advertised().is_some();
                    match &cause {
                        CloseCause::Dead | CloseCause::ConnectTimeout => {
                            self.counters.dead_sessions += 1
                        }
                        CloseCause::Protocol(e) => {
                            self.counters.protocol_errors += 1;
                            tracing::debug!(%addr, %e, "session closed for a protocol error");
                        }
                        _ => {}
                    }
                    tracing::debug!(%addr, ?cause, "session closed");
                    if let Some(key) = peer.public_key {
                        self.observations.forget(&key);
                    }
                    if !matches!(cause, CloseCause::Local | CloseCause::Replaced) {
                        peer.last_error = Some(format!("{cause:?}"));
                    }
                    let reason = match (&cause, std::mem::take(&mut peer.key_changed)) {
                        (CloseCause::Replaced, true) => PeerReason::KeyChanged,
                        (CloseCause::Replaced, false) => PeerReason::Replaced,
                        (CloseCause::Local, _) => PeerReason::ClosedLocally,
                        (CloseCause::Peer(_), _) => PeerReason::ClosedByPeer,
                        (CloseCause::ConnectTimeout, _) => PeerReason::ConnectTimeout,
                        (CloseCause::Dead, _) => PeerReason::IdleTimeout,
                        (CloseCause::Protocol(_), _) => PeerReason::ProtocolError,
                    };
                    // A replacing session carries on with the same peer;
                    // requests still queued go out on it.
                    if cause != CloseCause::Replaced {
                        self.fail_requests(id);
                    }
                    if was_connected {
                        self.emit(NodeEvent::PeerDisconnected(addr, reason));
                    }
                }
            }
        }
    }

    fn deliver(
        &mut self,
        id: PeerId,
        addr: SocketAddr,
        writable: bool,
        public_key: Option<crate::PublicKey>,
        inbound: Inbound,
    ) {
        let (message, request_id) = match inbound {
            Inbound::Message(m) if m.is_type(relay::RELAY_TYPE) && self.crypto.is_some() => {
                self.on_relay_message(id, public_key, m.body());
                return;
            }
            Inbound::Message(m) if m.is_type(punch::PUNCH_TYPE) && self.crypto.is_some() => {
                self.on_punch_message(id, m.body());
                return;
            }
            Inbound::Message(m) if m.is_type(lookup::LOOKUP_TYPE) && self.crypto.is_some() => {
                self.on_lookup_message(id, m.body());
                return;
            }
            Inbound::Message(m) if m.is_type(observed::OBSERVED_TYPE) => {
                if self.crypto.is_some() {
                    self.observed(addr, public_key, &m);
                    return;
                }
                (m, None)
            }
            Inbound::Message(m) => (m, None),
            Inbound::Request(request, m) => (m, Some(request)),
            Inbound::Reply(request, message) => {
                match self.requests.take_from(request, id) {
                    Some(_) => self.events.push_back(Event::RequestDone {
                        id: request,
                        result: Ok(Received {
                            message,
                            peer: addr,
                            public_key,
                            writable,
                            request_id: None,
                        }),
                    }),
                    None => self.counters.unmatched_replies += 1,
                }
                return;
            }
        };
        let received = Arc::new(Received {
            message,
            peer: addr,
            public_key,
            writable,
            request_id,
        });
        self.emit(NodeEvent::Message(received));
    }

    pub(super) fn fail_requests(&mut self, id: PeerId) {
        self.fail_requests_with(id, || RequestError::SessionClosed);
    }

    /// End every request waiting for `id` with the error `error` makes.
    pub(super) fn fail_requests_with(&mut self, id: PeerId, error: impl Fn() -> RequestError) {
        for (request, _) in self.requests.take_for(id) {
            self.events.push_back(Event::RequestDone {
                id: request,
                result: Err(error()),
            });
        }
    }

    /// Remove a closed session, keep its counts, and decide what comes next
    /// for the peer: a reconnect (route table) or nothing (forget it).
    pub(super) fn retire_session(&mut self, id: PeerId) {
        if self.take_session(id) {
            self.link_down(id);
        }
    }

    /// The peer has neither session nor handshake any more: reconnect after
    /// a backoff if it is in the route table, forget it otherwise.
    pub(super) fn link_down(&mut self, id: PeerId) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.added && self.closing.is_none() {
            let jitter = self.rng.gen_range(0.8..1.2);
            let wait = peer.backoff.mul_f64(jitter);
            peer.backoff = (peer.backoff * 2).min(self.config.reconnect_max);
            let at = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            peer.reconnect_at = Some(at);
            self.timers.push(Reverse((at, TimerKey::Reconnect(id))));
        } else {
            self.forget(id);
        }
    }

    /// Detach the peer's session, folding its counts into the peer's.
    /// Frames handed to it and never acknowledged are gone with it (the
    /// close cause was counted and logged).
    pub(super) fn take_session(&mut self, id: PeerId) -> bool {
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        let Some(session) = peer.link.session() else {
            return false;
        };
        let (stats, last_recv) = (session.stats(), session.last_recv());
        peer.link = Link::Idle;
        peer.past += stats;
        peer.last_seen = last_recv.or(peer.last_seen);
        self.untrack_partial(id);
        self.untrack_reorder(id);
        self.inbound.remove(id);
        true
    }

    /// Drop a peer outside the route table, counting frames it never got.
    pub(super) fn forget(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get(id) {
            if peer.added {
                return;
            }
            if !peer.pending.is_empty() {
                let addr = peer.addr();
                let frames = peer.pending.len() as u64;
                tracing::debug!(%addr, frames, "peer forgotten with frames never sent");
                self.counters.abandoned_frames += frames;
                self.emit(NodeEvent::Abandoned(addr, frames));
            }
            // Requests to it can get no reply now: say so rather than
            // letting them run into their timeout.
            self.fail_requests_with(id, || {
                RequestError::NotSent(crate::SendFailure::NotConnected)
            });
            if let Some(peer) = self.peers.remove(id) {
                if peer.room_watched {
                    self.events.push_back(Event::Room {
                        peer: id,
                        queued: None,
                    });
                }
            }
        }
    }
}
