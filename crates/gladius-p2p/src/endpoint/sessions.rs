//! Peer sessions, common to both modes: opening them (plaintext; the
//! encrypted handshake is in `encrypted`), acting on what a session reports,
//! and retiring it (reconnect with backoff, or forget the peer).

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;

use super::peer::Peer;
use super::{demux, Endpoint, Event, TimerKey};
use crate::api::{NodeEvent, PeerInfo, Received};
use crate::error::RequestError;
use crate::session::{CloseCause, Inbound, Session, SessionEvent};
use crate::state::Direction;

impl Endpoint {
    pub(super) fn connect(&mut self, addr: SocketAddr) {
        let Some(advertised) = self.advertised else {
            return;
        };
        if self.crypto.is_some() {
            return self.initiate(addr);
        }
        let now = self.now();
        let conv = self.rng.gen_range(1..=u32::MAX);
        let session = Session::new(conv, advertised, &self.session_config, now);
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.reconnect_at = None;
            peer.direction = Direction::Outbound;
            peer.session = Some(session);
            self.touch(addr);
        }
    }

    pub(super) fn handle_plaintext(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = self.now();
        let Some(conv) = demux::conv_of(datagram) else {
            self.counters.malformed_datagrams += 1;
            tracing::debug!(%from, len = datagram.len(), "malformed datagram");
            return;
        };
        let existing = self.peers.get(&from).and_then(|p| p.session.as_ref());
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
                let peer = self.peers.get_mut(&from);
                let Some(session) = peer.and_then(|p| p.session.as_mut()) else {
                    return;
                };
                if let Err(e) = session.handle_datagram(now, datagram) {
                    self.counters.malformed_datagrams += 1;
                    tracing::debug!(%from, ?e, "datagram rejected by KCP");
                    return;
                }
                self.drain_events(from);
                self.touch(from);
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

    pub(super) fn open_inbound(&mut self, from: SocketAddr, conv: u32, datagram: &[u8], now: u64) {
        let Some(advertised) = self.advertised else {
            return;
        };
        if !self.admits_inbound(from) {
            return;
        }
        let mut session = Session::new(conv, advertised, &self.session_config, now);
        if session.handle_datagram(now, datagram).is_err() {
            // Cannot happen for a datagram the demultiplexer called an
            // opener, but a bad one must not replace a working session.
            self.counters.malformed_datagrams += 1;
            return;
        }
        let peer = self.make_way(from);
        peer.direction = if peer.added {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        peer.reconnect_at = None;
        peer.session = Some(session);
        self.drain_events(from);
        self.touch(from);
    }

    /// Whether a new inbound session from `from` may open: peers in the
    /// route table always may; unknown ones unless the config refuses them
    /// or the inbound limit is reached (counted and logged).
    pub(super) fn admits_inbound(&mut self, from: SocketAddr) -> bool {
        let peer = self.peers.get(&from);
        if peer.is_some_and(|p| p.added) {
            return true;
        }
        let replacing = peer.is_some_and(|p| p.session.is_some());
        let inbound = || {
            self.peers
                .values()
                .filter(|p| !p.added && p.session.is_some())
                .count()
        };
        if self.config.refuse_unknown_inbound
            || (!replacing && inbound() >= self.config.max_inbound_sessions)
        {
            self.counters.refused_sessions += 1;
            tracing::debug!(%from, "inbound session refused");
            return false;
        }
        true
    }

    /// End the session `addr` has, if any (the peer restarted, or it lost a
    /// simultaneous open), and return the entry for the new one, creating it
    /// for a peer we did not know.
    pub(super) fn make_way(&mut self, addr: SocketAddr) -> &mut Peer {
        if let Some(old) = self.peers.get_mut(&addr).and_then(|p| p.session.as_mut()) {
            old.replace();
            self.drain_events(addr);
            self.take_session(addr);
        }
        let min = self.config.reconnect_min;
        self.peers
            .entry(addr)
            .or_insert_with(|| Peer::new(false, Direction::Inbound, min))
    }

    /// Act on everything a session reported.
    pub(super) fn drain_events(&mut self, addr: SocketAddr) {
        let now = self.now();
        loop {
            let Some(peer) = self.peers.get_mut(&addr) else {
                return;
            };
            let Some(session) = peer.session.as_mut() else {
                return;
            };
            let Some(event) = session.poll_event() else {
                break;
            };
            match event {
                SessionEvent::Connected { advertised } => {
                    if peer.handshake_advertised.is_some_and(|h| h != advertised) {
                        // The hello must name the address the handshake
                        // authenticated; anything else is a lie.
                        tracing::debug!(%addr, %advertised, "hello contradicts the handshake");
                        session.replace();
                        self.counters.protocol_errors += 1;
                        continue;
                    }
                    peer.advertised = Some(advertised);
                    peer.last_error = None;
                    peer.backoff = self.config.reconnect_min;
                    // Hand over what waited for the hello, in order.
                    while let Some(frame) = peer.pending.pop_front() {
                        peer.pending_bytes -= frame.len();
                        session.send_frame(now, &frame);
                    }
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
                }
                SessionEvent::Frame(inbound) => {
                    let writable = peer.writable;
                    self.deliver(addr, writable, inbound);
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
                    if !matches!(cause, CloseCause::Local | CloseCause::Replaced) {
                        peer.last_error = Some(format!("{cause:?}"));
                    }
                    // A replacing session carries on with the same peer;
                    // requests still queued go out on it.
                    if cause != CloseCause::Replaced {
                        self.fail_requests(addr);
                    }
                    if was_connected {
                        self.emit(NodeEvent::PeerDisconnected(addr));
                    }
                }
            }
        }
    }

    pub(super) fn deliver(&mut self, addr: SocketAddr, writable: bool, inbound: Inbound) {
        let (message, request_id) = match inbound {
            Inbound::Message(m) => (m, None),
            Inbound::Request(id, m) => (m, Some(id)),
            Inbound::Reply(id, message) => {
                match self.requests.take_from(id, addr) {
                    Some(_) => self.events.push_back(Event::RequestDone {
                        id,
                        result: Ok(Received {
                            message,
                            peer: addr,
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
            writable,
            request_id,
        });
        self.emit(NodeEvent::Message(received));
    }

    pub(super) fn fail_requests(&mut self, addr: SocketAddr) {
        for (id, _) in self.requests.take_for(addr) {
            self.events.push_back(Event::RequestDone {
                id,
                result: Err(RequestError::SessionClosed),
            });
        }
    }

    /// Remove a closed session, keep its counts, and decide what comes next
    /// for the peer: a reconnect (route table) or nothing (forget it).
    pub(super) fn retire_session(&mut self, addr: SocketAddr) {
        if self.take_session(addr) {
            self.link_down(addr);
        }
    }

    /// The peer has neither session nor handshake any more: reconnect after
    /// a backoff if it is in the route table, forget it otherwise.
    pub(super) fn link_down(&mut self, addr: SocketAddr) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.added && self.closing.is_none() {
            let jitter = self.rng.gen_range(0.8..1.2);
            let wait = peer.backoff.mul_f64(jitter);
            peer.backoff = (peer.backoff * 2).min(self.config.reconnect_max);
            let at = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            peer.reconnect_at = Some(at);
            self.timers.push(Reverse((at, TimerKey::Reconnect(addr))));
        } else {
            self.forget(addr);
        }
    }

    /// Detach the peer's session, folding its counts into the peer's.
    /// Frames handed to it and never acknowledged are gone with it (the
    /// close cause was counted and logged).
    pub(super) fn take_session(&mut self, addr: SocketAddr) -> bool {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return false;
        };
        let Some(session) = peer.session.take() else {
            return false;
        };
        peer.channel = None;
        peer.finish = None;
        peer.past += session.stats();
        peer.last_seen = session.last_recv().or(peer.last_seen);
        true
    }

    pub(super) fn forget(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get(&addr) {
            if peer.added {
                return;
            }
            if !peer.pending.is_empty() {
                tracing::debug!(%addr, frames = peer.pending.len(), "peer forgotten with frames never sent");
                self.counters.abandoned_frames += peer.pending.len() as u64;
            }
            if let Some(peer) = self.peers.remove(&addr) {
                if peer.room_watched {
                    self.events.push_back(Event::Room {
                        peer: addr,
                        queued: None,
                    });
                }
            }
        }
    }
}
