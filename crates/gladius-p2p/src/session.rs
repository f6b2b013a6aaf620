//! One peer session as a sans-IO state machine: KCP below, frames above.
//!
//! The driver feeds it datagrams and the time (`now`, milliseconds since the
//! driver's epoch) and drains datagrams to send, the next deadline and
//! [`SessionEvent`]s. It never touches a socket or a clock, so its unit tests
//! run in virtual time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gladius_kcp::{Kcp, KcpConfig};

use crate::wire::{CloseReason, Frame, FrameDecoder, Message, WireError, PROTOCOL_VERSION};

/// Session timing, in milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) kcp: KcpConfig,
    /// Largest datagram probing may reach (at or below `kcp.mtu`: off).
    pub(crate) max_datagram_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) keepalive_ms: u64,
    pub(crate) idle_ms: u64,
    pub(crate) connect_ms: u64,
    pub(crate) close_ms: u64,
    /// This node's random instance id, sent in every hello.
    pub(crate) instance: u64,
}

impl SessionConfig {
    pub(crate) fn from_config(c: &crate::Config, instance: u64) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            kcp: c.kcp.kcp_config(),
            max_datagram_size: c.max_datagram_size,
            max_message_size: c.max_message_size,
            keepalive_ms: ms(c.keepalive_interval),
            idle_ms: ms(c.idle_timeout),
            connect_ms: ms(c.connect_timeout),
            close_ms: ms(c.close_timeout),
            instance,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// We closed it and the close flushed (or timed out).
    Local,
    /// The peer sent a close frame.
    Peer(CloseReason),
    /// The peer never answered our hello.
    ConnectTimeout,
    /// Nothing heard for the idle timeout, or KCP gave up retransmitting.
    Dead,
    /// The peer broke the protocol.
    Protocol(WireError),
    /// A new session from the same address replaced this one.
    Replaced,
}

/// What a session tells the driver.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// The peer's hello arrived.
    Connected { advertised: SocketAddr },
    /// A message, request (with id) or reply (with id) arrived.
    Frame(Inbound),
    /// A message was dropped for a bad checksum.
    ChecksumFailure,
    /// A message was dropped because its sender differs from the hello.
    WrongSender,
    /// The session is over; the driver removes it.
    Closed(CloseCause),
}

/// A message-carrying frame received from the peer.
#[derive(Debug)]
pub(crate) enum Inbound {
    Message(Message),
    Request(u64, Message),
    Reply(u64, Message),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Our hello is out; the peer's has not arrived.
    Connecting {
        deadline: u64,
    },
    Established,
    /// Our close frame is queued; waiting for everything to be acknowledged.
    Closing {
        deadline: u64,
    },
    Closed,
}

/// Byte and message counts of one session.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionStats {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    /// KCP segments sent again (timeout or fast resend).
    pub(crate) retransmits: u64,
    /// Of those, the ones the peer turned out to have had already.
    pub(crate) spurious_retransmits: u64,
    /// Datagram-size probes confirmed, lost, and falls back to the base
    /// size on a black hole (wire-format §1.1).
    pub(crate) size_probes_confirmed: u64,
    pub(crate) size_probes_lost: u64,
    pub(crate) size_black_holes: u64,
}

impl std::ops::AddAssign for SessionStats {
    fn add_assign(&mut self, s: Self) {
        self.bytes_in += s.bytes_in;
        self.bytes_out += s.bytes_out;
        self.messages_in += s.messages_in;
        self.messages_out += s.messages_out;
        self.retransmits += s.retransmits;
        self.spurious_retransmits += s.spurious_retransmits;
        self.size_probes_confirmed += s.size_probes_confirmed;
        self.size_probes_lost += s.size_probes_lost;
        self.size_black_holes += s.size_black_holes;
    }
}

/// One session. See the module docs.
#[derive(Debug)]
pub(crate) struct Session {
    kcp: Kcp,
    decoder: FrameDecoder,
    phase: Phase,
    peer_advertised: Option<SocketAddr>,
    peer_instance: Option<u64>,
    last_recv: Option<u64>,
    last_send: u64,
    config: SessionConfig,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
}

/// Encode one frame into its own buffer.
pub(crate) fn encode_frame(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    buf.freeze()
}

/// Message bodies at least this long are not copied into their frame's
/// encoding (see [`EncodedFrame`]).
const SPLIT_BODY_MIN: usize = 2048;

/// Frames at most this long are cut from a shared scratch block
/// ([`EncodedFrame::new_in`]) instead of getting an allocation each.
const SCRATCH_FRAME_MAX: usize = 512;

/// The size of a scratch block: many short frames share one allocation
/// (small, since every node that sends keeps one).
const SCRATCH_BLOCK: usize = 8 * 1024;

/// An encoded frame as queued for a session: its bytes are `head`, then
/// `body`, then `tail`. A large message body stays the message's own
/// `Bytes` (no copy); KCP cuts segments out of it directly.
#[derive(Debug, Clone)]
pub(crate) struct EncodedFrame {
    head: Bytes,
    body: Bytes,
    /// The checksum after a split-off body; empty otherwise.
    tail: Option<[u8; 4]>,
    /// `head` is a slice of a scratch block that other frames share
    /// ([`new_in`](Self::new_in)): whoever keeps the bytes copies them
    /// ([`send_frame`](Session::send_frame), [`detached`](Self::detached)),
    /// so that a frame kept long never pins a whole block.
    shared: bool,
}

impl EncodedFrame {
    /// Encode `frame`, keeping a large message body apart.
    pub(crate) fn new(frame: &Frame) -> Self {
        let mut head = BytesMut::new();
        match frame.encode_split(&mut head, SPLIT_BODY_MIN) {
            Some((body, tail)) => Self {
                head: head.freeze(),
                body,
                tail: Some(tail),
                shared: false,
            },
            None => Self::from(head.freeze()),
        }
    }

    /// Like [`new`](Self::new), but a short frame is cut from `scratch`, a
    /// block shared with other short frames and reused once they are all
    /// gone, instead of allocating its own buffer: the per-message cost of
    /// small messages.
    pub(crate) fn new_in(frame: &Frame, scratch: &mut BytesMut) -> Self {
        let len = frame.encoded_len();
        if len > SCRATCH_FRAME_MAX {
            return Self::new(frame);
        }
        if scratch.capacity() < len {
            // Takes the block back if no frame holds a part of it any
            // more, else starts a new one.
            scratch.reserve(SCRATCH_BLOCK);
        }
        frame.encode(scratch);
        Self {
            shared: true,
            ..Self::from(scratch.split().freeze())
        }
    }

    /// The frame with bytes of its own, for keeping it waiting (a copy if
    /// it was cut from a shared block).
    pub(crate) fn detached(&self) -> Self {
        if !self.shared {
            return self.clone();
        }
        Self::from(Bytes::copy_from_slice(&self.head))
    }

    /// Encoded length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.map_or(0, |t| t.len())
    }

    /// Whether it has no bytes.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, contiguous (a copy if the body was split off).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.to_vec();
        v.extend_from_slice(&self.body);
        v.extend_from_slice(self.tail.as_ref().map_or(&[][..], |t| &t[..]));
        v
    }
}

impl From<Bytes> for EncodedFrame {
    /// An already encoded frame.
    fn from(head: Bytes) -> Self {
        Self {
            head,
            body: Bytes::new(),
            tail: None,
            shared: false,
        }
    }
}

fn kcp_now(now: u64) -> u32 {
    // KCP's clock is 32-bit milliseconds and wraps; it compares with
    // wrapping differences, so truncation is intended.
    now as u32
}

impl Session {
    /// A session we open: our hello goes out first.
    pub(crate) fn new(conv: u32, advertised: SocketAddr, config: &SessionConfig, now: u64) -> Self {
        let mut kcp = Kcp::new(conv, &config.kcp, kcp_now(now));
        kcp.set_max_datagram(config.max_datagram_size);
        let hello = encode_frame(&Frame::Hello {
            version: PROTOCOL_VERSION,
            instance: config.instance,
            advertised,
        });
        // Cannot fail: the hello is never empty.
        let _ = kcp.send(&hello);
        Self {
            kcp,
            decoder: FrameDecoder::new(config.max_message_size),
            phase: Phase::Connecting {
                deadline: now.saturating_add(config.connect_ms),
            },
            peer_advertised: None,
            peer_instance: None,
            last_recv: None,
            last_send: now,
            config: config.clone(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    pub(crate) fn conv(&self) -> u32 {
        self.kcp.conv()
    }
    pub(crate) fn peer_advertised(&self) -> Option<SocketAddr> {
        self.peer_advertised
    }
    /// Whether anything valid has been heard from the peer on this session.
    pub(crate) fn heard(&self) -> bool {
        self.last_recv.is_some()
    }
    pub(crate) fn last_recv(&self) -> Option<u64> {
        self.last_recv
    }
    pub(crate) fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }
    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    /// The instance id from the peer's hello, once received.
    pub(crate) fn peer_instance(&self) -> Option<u64> {
        self.peer_instance
    }
    pub(crate) fn stats(&self) -> SessionStats {
        let kcp = self.kcp.stats();
        SessionStats {
            retransmits: kcp.timeout_retransmits + kcp.fast_retransmits,
            spurious_retransmits: kcp.spurious_retransmits,
            size_probes_confirmed: kcp.mtu_probes_confirmed,
            size_probes_lost: kcp.mtu_probes_lost,
            size_black_holes: kcp.mtu_black_holes,
            ..self.stats
        }
    }
    pub(crate) fn rtt_ms(&self) -> Option<u32> {
        self.kcp.srtt_ms()
    }
    /// The largest datagram the session sends now (before sealing): the
    /// KCP mtu, or the larger size probing confirmed.
    pub(crate) fn datagram_size(&self) -> usize {
        self.kcp.datagram_limit()
    }
    /// Bytes accepted and not yet acknowledged by the peer.
    pub(crate) fn unacked_bytes(&self) -> usize {
        self.kcp.unacked_bytes()
    }
    /// Bytes of the message being received, buffered until it is whole.
    pub(crate) fn partial_bytes(&self) -> usize {
        self.decoder.buffered()
    }
    /// Bound the out-of-order KCP segments held (see
    /// [`Kcp::set_reorder_limit`]); `None`: the receive window only.
    pub(crate) fn set_reorder_limit(&mut self, limit: Option<usize>) {
        self.kcp.set_reorder_limit(limit);
    }
    /// Bytes of out-of-order KCP segments held.
    pub(crate) fn reorder_bytes(&self) -> usize {
        self.kcp.reorder_bytes()
    }
    /// KCP segments refused so far for want of reorder room.
    pub(crate) fn reorder_refused(&self) -> u64 {
        self.kcp.stats().reorder_refused
    }
    /// Drop the message being received (see [`FrameDecoder::drop_partial`]);
    /// the bytes freed.
    pub(crate) fn drop_partial(&mut self) -> usize {
        self.decoder.drop_partial()
    }

    /// Feed one datagram addressed to this session's conversation.
    /// `Err` means it was not valid KCP and changed nothing.
    pub(crate) fn handle_datagram(
        &mut self,
        now: u64,
        datagram: &[u8],
    ) -> Result<(), gladius_kcp::InputError> {
        self.handle_input(now, datagram.len(), |kcp, t| kcp.input(t, datagram))
    }

    /// Like [`handle_datagram`](Self::handle_datagram), but the segments
    /// KCP keeps are slices of `datagram`, not copies.
    pub(crate) fn handle_owned_datagram(
        &mut self,
        now: u64,
        datagram: Bytes,
    ) -> Result<(), gladius_kcp::InputError> {
        let len = datagram.len();
        self.handle_input(now, len, |kcp, t| kcp.input_bytes(t, datagram))
    }

    fn handle_input(
        &mut self,
        now: u64,
        len: usize,
        input: impl FnOnce(&mut Kcp, u32) -> Result<(), gladius_kcp::InputError>,
    ) -> Result<(), gladius_kcp::InputError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        input(&mut self.kcp, kcp_now(now))?;
        self.last_recv = Some(now);
        self.stats.bytes_in += len as u64;
        if matches!(self.phase, Phase::Closing { .. }) && self.kcp.unacked_bytes() == 0 {
            // Everything up to our close frame is acknowledged: done.
            self.phase = Phase::Closed;
            self.events
                .push_back(SessionEvent::Closed(CloseCause::Local));
            return Ok(());
        }
        while let Some(chunk) = self.kcp.recv() {
            self.decoder.push(&chunk);
            loop {
                match self.decoder.next_frame() {
                    Ok(Some(frame)) => self.handle_frame(now, frame),
                    Ok(None) => break,
                    // The frame was consumed whole; only that message is lost.
                    Err(WireError::ChecksumMismatch { .. }) => {
                        self.events.push_back(SessionEvent::ChecksumFailure)
                    }
                    Err(e) => {
                        self.fail(now, e);
                        break;
                    }
                }
                if self.phase == Phase::Closed {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn handle_frame(&mut self, now: u64, frame: Frame) {
        let Some(advertised) = self.peer_advertised else {
            match frame {
                Frame::Hello {
                    advertised,
                    instance,
                    ..
                } => {
                    self.peer_advertised = Some(advertised);
                    self.peer_instance = Some(instance);
                    if matches!(self.phase, Phase::Connecting { .. }) {
                        self.phase = Phase::Established;
                    }
                    self.events
                        .push_back(SessionEvent::Connected { advertised });
                }
                _ => self.fail(now, WireError::BadHello),
            }
            return;
        };
        let inbound = match frame {
            Frame::Message(m) => Inbound::Message(m),
            Frame::Request { id, message } => Inbound::Request(id, message),
            Frame::Reply { id, message } => Inbound::Reply(id, message),
            Frame::Ping => return,
            Frame::Close(reason) => {
                self.phase = Phase::Closed;
                // Acknowledge the close before the driver forgets us.
                self.kcp.flush(kcp_now(now));
                self.events
                    .push_back(SessionEvent::Closed(CloseCause::Peer(reason)));
                return;
            }
            // A second hello, or a frame kind from a later version.
            _ => return self.fail(now, WireError::BadHello),
        };
        let message = match &inbound {
            Inbound::Message(m) | Inbound::Request(_, m) | Inbound::Reply(_, m) => m,
        };
        if message.sender() != Some(advertised) {
            self.events.push_back(SessionEvent::WrongSender);
            return;
        }
        self.stats.messages_in += 1;
        self.events.push_back(SessionEvent::Frame(inbound));
    }

    fn fail(&mut self, now: u64, error: WireError) {
        if self.phase == Phase::Closed {
            return;
        }
        // Tell the peer why, best effort; nothing after this is read.
        let _ = self
            .kcp
            .send(&encode_frame(&Frame::Close(CloseReason::ProtocolError)));
        self.kcp.flush(kcp_now(now));
        self.phase = Phase::Closed;
        self.events
            .push_back(SessionEvent::Closed(CloseCause::Protocol(error)));
    }

    /// Queue an encoded frame. Only an established session takes frames;
    /// the driver holds them until then.
    pub(crate) fn send_frame(&mut self, now: u64, frame: &EncodedFrame) -> bool {
        if self.phase != Phase::Established || frame.is_empty() {
            return false;
        }
        if frame.shared {
            // Copied: KCP must not keep a slice of a shared block.
            let _ = self.kcp.send(&frame.head);
        } else {
            // A large body's segments are slices of it, not copies.
            for part in [&frame.head, &frame.body] {
                if !part.is_empty() {
                    let _ = self.kcp.send_bytes(part);
                }
            }
        }
        if let Some(tail) = &frame.tail {
            let _ = self.kcp.send(tail);
        }
        self.stats.messages_out += 1;
        self.last_send = now;
        true
    }

    /// Begin a graceful close: a close frame after everything queued, then
    /// wait (up to the close timeout) until the peer acknowledged it all.
    pub(crate) fn close(&mut self, now: u64, reason: CloseReason) {
        match self.phase {
            Phase::Established => {
                let _ = self.kcp.send(&encode_frame(&Frame::Close(reason)));
                self.kcp.flush(kcp_now(now));
                self.phase = Phase::Closing {
                    deadline: now.saturating_add(self.config.close_ms),
                };
            }
            Phase::Connecting { .. } => {
                self.phase = Phase::Closed;
                self.events
                    .push_back(SessionEvent::Closed(CloseCause::Local));
            }
            Phase::Closing { .. } | Phase::Closed => {}
        }
    }

    /// Mark the session replaced by a newer one from the same address.
    pub(crate) fn replace(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.events
                .push_back(SessionEvent::Closed(CloseCause::Replaced));
        }
    }

    /// Whether the peer acknowledged anything we sent (it receives at the
    /// address we send to).
    /// Whether the session's datagrams go through a relay: larger
    /// datagrams are probed for only on a direct path (a relay forwards
    /// base-size datagrams with its own header, and may refuse more).
    pub(crate) fn set_relayed(&mut self, relayed: bool) {
        let max = if relayed {
            0
        } else {
            self.config.max_datagram_size
        };
        self.kcp.set_max_datagram(max);
    }

    /// The peer's address changed: datagrams return to the base size and
    /// the search for a larger one starts again on the new path.
    pub(crate) fn path_changed(&mut self) {
        self.kcp.reset_path();
    }

    /// The largest datagram the session sends now (before sealing); a
    /// longer one is a probe for a larger size.
    pub(crate) fn datagram_limit(&self) -> usize {
        self.kcp.datagram_limit()
    }

    pub(crate) fn peer_acknowledged(&self) -> bool {
        self.kcp.peer_acknowledged()
    }

    /// Send a keepalive now, which the peer must acknowledge: whether it
    /// does tells a live session from a dead one.
    pub(crate) fn probe(&mut self, now: u64) {
        if self.phase == Phase::Established {
            let ping = encode_frame(&Frame::Ping);
            if self.kcp.send(&ping).is_ok() {
                self.last_send = now;
            }
        }
    }

    /// Run timers due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: u64) {
        if self.phase == Phase::Closed {
            return;
        }
        self.kcp.update(kcp_now(now));
        let cause = match self.phase {
            _ if self.kcp.is_dead() => Some(CloseCause::Dead),
            Phase::Connecting { deadline } if now >= deadline => Some(CloseCause::ConnectTimeout),
            Phase::Closing { deadline } if now >= deadline || self.kcp.unacked_bytes() == 0 => {
                Some(CloseCause::Local)
            }
            _ if self.idle_deadline().is_some_and(|d| now >= d) => Some(CloseCause::Dead),
            _ => None,
        };
        if let Some(cause) = cause {
            self.phase = Phase::Closed;
            self.events.push_back(SessionEvent::Closed(cause));
            return;
        }
        if self.phase == Phase::Established
            && now >= self.last_send.saturating_add(self.config.keepalive_ms)
        {
            let ping = encode_frame(&Frame::Ping);
            if self.kcp.send(&ping).is_ok() {
                self.last_send = now;
                self.kcp.flush(kcp_now(now));
            }
        }
    }

    fn idle_deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::Established | Phase::Closing { .. } => {
                let since = self.last_recv.unwrap_or(self.last_send);
                Some(since.saturating_add(self.config.idle_ms))
            }
            _ => None,
        }
    }

    /// Flush pending ACKs and sendable data now.
    pub(crate) fn flush(&mut self, now: u64) {
        if self.phase != Phase::Closed || self.kcp.unacked_bytes() > 0 {
            self.kcp.flush(kcp_now(now));
        }
    }

    /// Next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        let d = self.kcp.poll_transmit()?;
        self.stats.bytes_out += d.len() as u64;
        Some(d)
    }

    /// Next event.
    pub(crate) fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next run; `None` once closed.
    pub(crate) fn poll_timeout(&self, now: u64) -> Option<u64> {
        let kcp = self.kcp.poll_timeout().map(|t| {
            let ahead = t.wrapping_sub(kcp_now(now)) as i32;
            now.saturating_add(ahead.max(0) as u64)
        });
        let phase = match self.phase {
            Phase::Closed => return None,
            Phase::Connecting { deadline } | Phase::Closing { deadline } => Some(deadline),
            Phase::Established => Some(self.last_send.saturating_add(self.config.keepalive_ms)),
        };
        [kcp, phase, self.idle_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig::from_config(
            &crate::Config::default()
                .with_keepalive_interval(Duration::from_millis(100))
                .with_idle_timeout(Duration::from_millis(1000))
                .with_connect_timeout(Duration::from_millis(500))
                .with_close_timeout(Duration::from_millis(300)),
            7,
        )
    }

    const A: &str = "10.0.0.1:1000";
    const B: &str = "10.0.0.2:2000";

    /// Two sessions wired back to back in virtual time; `drop_every` > 0
    /// loses every n-th datagram in each direction.
    struct Pair {
        a: Session,
        b: Session,
        now: u64,
        drop_every: usize,
        sent: usize,
    }

    impl Pair {
        fn new(drop_every: usize) -> Self {
            Self::with_config(drop_every, &config())
        }

        fn with_config(drop_every: usize, c: &SessionConfig) -> Self {
            Pair {
                a: Session::new(1, A.parse().unwrap(), c, 0),
                b: Session::new(1, B.parse().unwrap(), c, 0),
                now: 0,
                drop_every,
                sent: 0,
            }
        }

        /// Move datagrams both ways and run timers, for `ms` of virtual time.
        fn run(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                for s in [&mut self.a, &mut self.b] {
                    s.flush(self.now);
                }
                let mut moved = true;
                while moved {
                    moved = false;
                    while let Some(d) = self.a.poll_transmit() {
                        self.sent += 1;
                        if self.drop_every == 0 || self.sent % self.drop_every != 0 {
                            let _ = self.b.handle_datagram(self.now, &d);
                        }
                        moved = true;
                    }
                    while let Some(d) = self.b.poll_transmit() {
                        self.sent += 1;
                        if self.drop_every == 0 || self.sent % self.drop_every != 0 {
                            let _ = self.a.handle_datagram(self.now, &d);
                        }
                        moved = true;
                    }
                }
                self.now += 5;
                for s in [&mut self.a, &mut self.b] {
                    if s.poll_timeout(self.now).is_some_and(|t| t <= self.now) {
                        s.handle_timeout(self.now);
                    }
                }
            }
        }
    }

    fn events(s: &mut Session) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn message_frame(sender: &str, body: &str) -> EncodedFrame {
        let mut m = Message::new("t", body.to_owned()).unwrap();
        m.set_sender(sender.parse().unwrap());
        EncodedFrame::new(&Frame::Message(m))
    }

    #[test]
    fn hello_exchange_establishes_both_sides() {
        let mut p = Pair::new(0);
        p.run(50);
        assert!(p.a.is_established() && p.b.is_established());
        assert!(
            matches!(events(&mut p.a)[..], [SessionEvent::Connected { advertised }] if advertised == B.parse().unwrap())
        );
        assert!(matches!(
            events(&mut p.b)[..],
            [SessionEvent::Connected { .. }]
        ));
    }

    /// The bodies of the messages `s` delivered, in order, as text.
    fn received_bodies(s: &mut Session) -> Vec<String> {
        events(s)
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Frame(Inbound::Message(m)) => {
                    Some(String::from_utf8(m.body().to_vec()).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn messages_arrive_once_in_order_despite_loss() {
        let mut p = Pair::new(4);
        p.run(100);
        for i in 0..300 {
            assert!(p.a.send_frame(p.now, &message_frame(A, &i.to_string())));
        }
        p.run(5_000);
        let bodies = received_bodies(&mut p.b);
        assert_eq!(bodies, (0..300).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn large_and_small_frames_arrive_once_in_order_despite_loss() {
        // Frames longer than a segment are queued without a copy and cut
        // into slices of themselves; short ones are coalesced. Mixed, under
        // loss, every body still arrives once and in order.
        let mut p = Pair::new(5);
        p.run(100);
        let body = |i: usize| {
            let len = if i % 3 == 0 { 5_000 + i } else { 10 + i % 7 };
            (0..len)
                .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
                .collect::<String>()
        };
        for i in 0..60 {
            assert!(p.a.send_frame(p.now, &message_frame(A, &body(i))));
        }
        p.run(10_000);
        let bodies = received_bodies(&mut p.b);
        assert_eq!(bodies, (0..60).map(body).collect::<Vec<_>>());
    }

    #[test]
    fn datagrams_grow_with_bulk_data_and_return_to_the_mtu_on_a_path_change_or_relay() {
        let mut p = Pair::new(0);
        p.run(50);
        let mtu = config().kcp.mtu;
        assert_eq!(p.a.datagram_limit(), mtu);
        let bulk = "x".repeat(200_000);
        let mut sent = 0;
        let mut send = |p: &mut Pair, n: usize| {
            for _ in 0..n {
                assert!(p.a.send_frame(p.now, &message_frame(A, &bulk)));
                sent += 1;
                p.run(20);
            }
        };
        send(&mut p, 4);
        // 3, then 6 segments: the most the default maximum holds.
        assert_eq!(p.a.datagram_limit(), 6 * mtu);
        p.a.path_changed();
        assert_eq!(p.a.datagram_limit(), mtu);
        send(&mut p, 4);
        assert_eq!(p.a.datagram_limit(), 6 * mtu, "searched again");
        p.a.set_relayed(true);
        assert_eq!(p.a.datagram_limit(), mtu, "never larger over a relay");
        send(&mut p, 2);
        assert_eq!(p.a.datagram_limit(), mtu);
        p.run(1_000);
        assert_eq!(received_bodies(&mut p.b).len(), sent, "every message once");
    }

    #[test]
    fn a_split_frame_has_the_bytes_of_the_contiguous_encoding() {
        for len in [0, 10, SPLIT_BODY_MIN - 1, SPLIT_BODY_MIN, 70_000] {
            let mut m = Message::new("t", vec![7u8; len]).unwrap();
            m.set_sender(A.parse().unwrap());
            for frame in [
                Frame::Message(m.clone()),
                Frame::Request {
                    id: 9,
                    message: m.clone(),
                },
                Frame::Reply { id: 10, message: m },
            ] {
                let split = EncodedFrame::new(&frame);
                assert_eq!(split.to_vec(), encode_frame(&frame).to_vec(), "{len}");
                assert_eq!(split.len(), frame.encoded_len());
                assert_eq!(split.tail.is_some(), len >= SPLIT_BODY_MIN);
            }
        }
        let ping = EncodedFrame::new(&Frame::Ping);
        assert_eq!(ping.to_vec(), encode_frame(&Frame::Ping).to_vec());
    }

    #[test]
    fn short_frames_share_a_scratch_block_that_nothing_keeps() {
        let msg = |len: usize| {
            let mut m = Message::new("t", vec![7u8; len]).unwrap();
            m.set_sender(A.parse().unwrap());
            Frame::Message(m)
        };
        let mut scratch = BytesMut::new();
        // The bytes are those of the usual encoding, shared or not.
        for len in [0, 10, 400, SCRATCH_FRAME_MAX, 3_000] {
            let frame = msg(len);
            let cut = EncodedFrame::new_in(&frame, &mut scratch);
            assert_eq!(cut.to_vec(), encode_frame(&frame).to_vec(), "{len}");
            assert_eq!(cut.shared, frame.encoded_len() <= SCRATCH_FRAME_MAX);
            let own = cut.detached();
            assert!(!own.shared);
            assert_eq!(own.to_vec(), cut.to_vec());
        }
        // Consecutive short frames sit side by side in one block...
        let mut scratch = BytesMut::new();
        // (Frames longer than a KCP segment, which KCP would keep as
        // slices were they not copied.)
        let mut c = config();
        c.kcp.mtu = 100;
        let body = 2 * c.kcp.mtu;
        let first = EncodedFrame::new_in(&msg(body), &mut scratch);
        let second = EncodedFrame::new_in(&msg(body), &mut scratch);
        assert_eq!(
            second.head.as_ptr(),
            first.head.as_ptr().wrapping_add(first.len())
        );
        // ... and a session copies them: once the frames are gone the
        // block is free, and a later frame starts it over at its
        // beginning, where `first` was. (Were the frames still held, by
        // the session or anyone, the block could not be reused: a new one
        // would be allocated and the old address never come back.)
        let mut p = Pair::with_config(0, &c);
        p.run(50);
        let start = first.head.as_ptr();
        // Enough frames to fill the block twice over.
        let n = 2 * SCRATCH_BLOCK / first.len();
        assert!(p.a.send_frame(p.now, &first) && p.a.send_frame(p.now, &second));
        drop((first, second));
        let mut reused = false;
        for _ in 0..n {
            let f = EncodedFrame::new_in(&msg(body), &mut scratch);
            assert!(p.a.send_frame(p.now, &f));
            reused |= f.head.as_ptr() == start;
        }
        assert!(reused, "the block came back");
        p.run(2_000);
        assert_eq!(received_bodies(&mut p.b).len(), 2 + n);
    }

    #[test]
    fn wrong_sender_is_dropped_and_reported() {
        let mut p = Pair::new(0);
        p.run(50);
        events(&mut p.b);
        p.a.send_frame(p.now, &message_frame("10.9.9.9:1", "forged"));
        p.a.send_frame(p.now, &message_frame(A, "real"));
        p.run(50);
        let ev = events(&mut p.b);
        assert!(matches!(ev[0], SessionEvent::WrongSender));
        assert!(
            matches!(&ev[1], SessionEvent::Frame(Inbound::Message(m)) if &m.body()[..] == b"real")
        );
    }

    #[test]
    fn keepalives_keep_a_quiet_session_alive_and_silence_kills_it() {
        let mut p = Pair::new(0);
        p.run(3_000); // three idle timeouts of quiet, kept alive by pings
        assert!(p.a.is_established() && p.b.is_established());
        // Now b goes silent: a declares it dead within the idle timeout.
        p.drop_every = 1;
        p.run(1_200);
        assert!(p.a.is_closed());
        assert!(events(&mut p.a)
            .iter()
            .any(|e| matches!(e, SessionEvent::Closed(CloseCause::Dead))));
    }

    #[test]
    fn graceful_close_reaches_the_peer_after_queued_data() {
        let mut p = Pair::new(0);
        p.run(50);
        events(&mut p.b);
        p.a.send_frame(p.now, &message_frame(A, "last words"));
        p.a.close(p.now, CloseReason::Shutdown);
        p.run(200);
        let ev = events(&mut p.b);
        assert!(
            matches!(&ev[0], SessionEvent::Frame(Inbound::Message(m)) if &m.body()[..] == b"last words")
        );
        assert!(matches!(
            ev[1],
            SessionEvent::Closed(CloseCause::Peer(CloseReason::Shutdown))
        ));
        assert!(
            p.a.is_closed(),
            "a finished closing once everything was acknowledged"
        );
    }

    #[test]
    fn unanswered_hello_times_out() {
        let c = config();
        let mut a = Session::new(1, A.parse().unwrap(), &c, 0);
        let mut now = 0;
        while !a.is_closed() && now < 2_000 {
            now = a.poll_timeout(now).unwrap_or(now + 10).max(now + 1);
            a.handle_timeout(now);
            while a.poll_transmit().is_some() {}
        }
        assert!(events(&mut a)
            .iter()
            .any(|e| matches!(e, SessionEvent::Closed(CloseCause::ConnectTimeout))));
        assert!((500..1_000).contains(&now), "closed at {now} ms");
    }

    #[test]
    fn garbage_frame_is_a_protocol_error() {
        let mut p = Pair::new(0);
        p.run(50);
        events(&mut p.b);
        // A frame of unknown kind 99.
        assert!(p
            .a
            .send_frame(p.now, &Bytes::from_static(&[1, 0, 0, 0, 99]).into()));
        p.run(50);
        assert!(events(&mut p.b)
            .iter()
            .any(|e| matches!(e, SessionEvent::Closed(CloseCause::Protocol(_)))));
        assert!(p.b.is_closed());
    }
}
