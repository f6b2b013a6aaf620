//! The driver: the one task that owns the socket, the sessions, the route
//! table and the timers. The [`Network`](crate::Network) handle talks to it
//! through [`Command`]s; sessions are sans-IO state machines it feeds.
//!
//! One loop iteration handles one input (a command, a burst of datagrams or
//! the due timers), then flushes every session it touched once, so many
//! small messages and ACKs leave in few datagrams.
//!
//! In encrypted mode (the default) a session exists only after a Noise
//! handshake; every datagram it sends is sealed and every datagram it gets
//! is opened first. That path lives in [`encrypted`]; this file is the part
//! common to both modes.

mod batch;
mod encrypted;
mod peer;
mod requests;
mod sessions;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::ReadBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::crypto::{self, Kind, PublicKey};
use crate::error::{NetworkError, RequestError};
use crate::network::{Received, SendFailure, SendReport, Targets};
use crate::plugin::{PluginEvent, PluginId, PluginSlot, Registration};
use crate::session::{encode_frame, Session, SessionConfig};
use crate::socket::DatagramSocket;
use crate::state::{ConnectionState, Counters, Direction, NetworkState, PeerState, PluginState};
use crate::wire::{CloseReason, Frame, Message};
use crate::{Config, Network};
use batch::SendBatch;
use peer::Peer;
use requests::{PendingRequest, Requests};

/// Largest UDP payload; receive buffers are this big so nothing is truncated.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read per wake-up before the sessions are flushed; bounds the
/// latency one burst adds to everything else.
const RECV_BURST: usize = 64;
/// Commands handled per wake-up before the sessions are flushed (see
/// `Driver::take_more_commands`).
const COMMAND_BURST: usize = 256;

type Reply<T> = oneshot::Sender<T>;

/// The driver's tables are looked up several times per message; SipHash
/// showed up at 5% of all instructions in the profile. foldhash is keyed per
/// process (random seed), so remote peers cannot aim collisions at it.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What a [`Network`] handle asks of the driver.
pub(crate) enum Command {
    Listen {
        socket: Arc<dyn DatagramSocket>,
        reply: Reply<Result<SocketAddr, NetworkError>>,
    },
    Add {
        addr: SocketAddr,
        key: Option<PublicKey>,
        reply: Reply<Result<(), NetworkError>>,
    },
    Delete {
        addr: SocketAddr,
        reply: Reply<()>,
    },
    SetWritable {
        addr: SocketAddr,
        writable: bool,
        reply: Reply<Result<(), NetworkError>>,
    },
    Send {
        msg: Message,
        targets: Targets,
        reply: Reply<Result<SendReport, NetworkError>>,
    },
    Request {
        msg: Message,
        peer: SocketAddr,
        timeout: Duration,
        answer: Reply<Result<Received, RequestError>>,
    },
    Reply {
        msg: Message,
        peer: SocketAddr,
        id: u64,
        reply: Reply<Result<SendReport, NetworkError>>,
    },
    State {
        reply: Reply<NetworkState>,
    },
    WaitForRoom {
        addr: SocketAddr,
        need: usize,
        reply: Reply<Result<(), NetworkError>>,
    },
    RegisterPlugin {
        plugin: Registration,
        reply: Reply<()>,
    },
    /// Answers whether the plugin was registered.
    RemovePlugin {
        id: PluginId,
        reply: Reply<bool>,
    },
    Close {
        reply: Reply<()>,
    },
    SetHandshakePayload {
        payload: Bytes,
        reply: Reply<()>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(SocketAddr),
    Reconnect(SocketAddr),
    /// Expiry of an inbound half-open handshake.
    HalfOpen(SocketAddr),
    /// The graceful-close deadline.
    CloseDeadline,
}

/// Shutdown in progress: who waits for it and until when.
struct Closing {
    deadline: u64,
    waiters: Vec<Reply<()>>,
}

pub(crate) struct Driver {
    config: Arc<Config>,
    session_config: SessionConfig,
    socket: Option<Arc<dyn DatagramSocket>>,
    local: Option<SocketAddr>,
    advertised: Option<SocketAddr>,
    epoch: Instant,
    /// Milliseconds since `epoch`, read once per wake-up (see `tick`).
    now_ms: u64,
    peers: HashMap<SocketAddr, Peer>,
    timers: BinaryHeap<Reverse<(u64, TimerKey)>>,
    requests: Requests,
    plugins: Vec<PluginSlot>,
    plugin_handle: Network,
    counters: Counters,
    dirty: Vec<SocketAddr>,
    /// A message or a reply went to a plugin or a caller since the last
    /// flush: its answer may be one yield away (see `take_more_commands`).
    handed_over: bool,
    rng: StdRng,
    closing: Option<Closing>,
    span: tracing::Span,
    /// Encrypted mode only.
    crypto: Option<encrypted::CryptoState>,
    /// Datagrams to send that no session produced (handshake packets,
    /// rejects), sent with the next flush.
    outbox: Vec<(SocketAddr, Bytes)>,
    /// Scratch buffers for sealing and opening, reused.
    seal_buf: Vec<u8>,
    /// Datagrams to one peer gathered for one socket call, reused.
    batch: SendBatch,
    open_buf: Vec<u8>,
    /// The application bytes our handshakes carry (see
    /// `Network::set_handshake_payload`).
    handshake_payload: Bytes,
}

impl Driver {
    pub(crate) fn spawn(
        config: Arc<Config>,
        commands: mpsc::Receiver<Command>,
        shutdown: oneshot::Receiver<()>,
        plugin_handle: Network,
    ) {
        let handshake_payload = config.handshake_payload.clone();
        let mut rng = StdRng::from_entropy();
        let crypto = config
            .identity
            .clone()
            .filter(|_| !config.plaintext)
            .map(encrypted::CryptoState::new);
        let driver = Driver {
            session_config: SessionConfig::from_config(&config, rng.gen()),
            config,
            socket: None,
            local: None,
            advertised: None,
            epoch: Instant::now(),
            now_ms: 0,
            peers: HashMap::default(),
            timers: BinaryHeap::new(),
            requests: Requests::default(),
            plugins: Vec::new(),
            plugin_handle,
            counters: Counters::default(),
            dirty: Vec::new(),
            handed_over: false,
            rng,
            closing: None,
            span: tracing::info_span!("node", addr = tracing::field::Empty),
            crypto,
            outbox: Vec::new(),
            seal_buf: Vec::new(),
            batch: SendBatch::default(),
            open_buf: Vec::new(),
            handshake_payload,
        };
        let span = driver.span.clone();
        tokio::spawn(driver.run(commands, shutdown).instrument(span));
    }

    /// The driver's clock: milliseconds since it started, as of the last
    /// [`tick`](Self::tick). Everything one wake-up handles shares one
    /// reading; KCP's timers have millisecond resolution, and reading the
    /// clock per message was 5% of the time of a 64 B stream.
    fn now(&self) -> u64 {
        self.now_ms
    }

    /// Read the clock; at every wake-up and after every yield.
    fn tick(&mut self) {
        self.now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut shutdown_seen = false;
        let mut commands_open = true;
        loop {
            let socket = self.socket.clone();
            let first_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let wake_at = [first_timer, self.requests.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| self.epoch + Duration::from_millis(t));
            tokio::select! {
                biased;
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    self.tick();
                    self.begin_close(None);
                }
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        self.tick();
                        self.handle_command(cmd);
                        commands_open = self.take_more_commands(&mut commands, 1).await;
                    }
                    None => {
                        commands_open = false;
                        self.tick();
                        self.begin_close(None);
                    }
                },
                first = recv(socket.as_deref(), &mut buf) => {
                    self.tick();
                    self.handle_recv(socket.as_deref(), first, &mut buf);
                    // A request handed to a plugin is usually answered at
                    // once: wait one yield for the answer so that it leaves
                    // with the ACK, in one datagram instead of two.
                    if std::mem::take(&mut self.handed_over) && commands_open {
                        commands_open = self.take_more_commands(&mut commands, 0).await;
                    }
                }
                _ = sleep_until(wake_at) => {
                    self.tick();
                    self.handle_timers();
                }
            }
            self.flush_dirty().await;
            self.tick();
            if self.close_finished() {
                break;
            }
        }
        self.finish_close().await;
    }

    // ----- commands -------------------------------------------------------

    /// Take the commands that arrive while we work, before flushing, so a
    /// burst of sends leaves in full datagrams rather than one datagram (and
    /// one seal, one syscall) per message.
    ///
    /// After the queue runs dry the driver yields once: the callers it just
    /// answered run and may queue their next message, which joins this
    /// flush. If nothing came, the flush goes out at once, so a lone request
    /// pays one scheduler pass and no timer. Returns whether the command
    /// channel is still open (a closed one starts the graceful close).
    async fn take_more_commands(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        mut taken: usize,
    ) -> bool {
        let mut yielded = false;
        while taken < COMMAND_BURST {
            match commands.try_recv() {
                Ok(cmd) => {
                    self.handle_command(cmd);
                    taken += 1;
                    yielded = false;
                }
                Err(mpsc::error::TryRecvError::Empty) if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                    self.tick();
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.begin_close(None);
                    return false;
                }
            }
        }
        true
    }

    fn handle_command(&mut self, cmd: Command) {
        if self.closing.is_some() {
            // Dropping the reply sender answers `NetworkError::Closed`;
            // a second close just waits for the first.
            if let Command::Close { reply } = cmd {
                if let Some(c) = self.closing.as_mut() {
                    c.waiters.push(reply);
                }
            }
            return;
        }
        match cmd {
            Command::Listen { socket, reply } => {
                let _ = reply.send(self.listen(socket));
            }
            Command::Add { addr, key, reply } => {
                let _ = reply.send(self.add(addr, key));
            }
            Command::Delete { addr, reply } => {
                self.delete(addr);
                let _ = reply.send(());
            }
            Command::SetWritable {
                addr,
                writable,
                reply,
            } => {
                let result = match self.peers.get_mut(&addr) {
                    Some(p) => {
                        p.writable = writable;
                        Ok(())
                    }
                    None => Err(NetworkError::UnknownPeer(addr)),
                };
                let _ = reply.send(result);
            }
            Command::Send {
                msg,
                targets,
                reply,
            } => {
                let _ = reply.send(self.send(msg, targets));
            }
            Command::Request {
                msg,
                peer,
                timeout,
                answer,
            } => self.request(msg, peer, timeout, answer),
            Command::Reply {
                msg,
                peer,
                id,
                reply,
            } => {
                let result = self.with_sender(msg).map(|msg| {
                    let frame = encode_frame(&Frame::Reply { id, message: msg });
                    let mut report = SendReport::default();
                    self.queue_into_report(peer, &frame, false, &mut report);
                    report
                });
                let _ = reply.send(result);
            }
            Command::State { reply } => {
                let _ = reply.send(self.state());
            }
            Command::WaitForRoom { addr, need, reply } => match self.peers.get_mut(&addr) {
                Some(peer) => peer.wait_for_room(need, self.config.peer_queue_bytes, reply),
                None => {
                    let _ = reply.send(Err(NetworkError::UnknownPeer(addr)));
                }
            },
            Command::RegisterPlugin { plugin, reply } => {
                let mut slot = PluginSlot::spawn(plugin, self.plugin_handle.clone());
                if self.socket.is_some() {
                    slot.deliver(PluginEvent::Startup);
                    slot.started = true;
                }
                self.plugins.push(slot);
                let _ = reply.send(());
            }
            Command::RemovePlugin { id, reply } => {
                let at = self.plugins.iter().position(|s| s.id == id);
                if let Some(at) = at {
                    self.plugins.remove(at).remove();
                }
                let _ = reply.send(at.is_some());
            }
            Command::Close { reply } => self.begin_close(Some(reply)),
            Command::SetHandshakePayload { payload, reply } => {
                self.handshake_payload = payload;
                let _ = reply.send(());
            }
        }
    }

    fn listen(&mut self, socket: Arc<dyn DatagramSocket>) -> Result<SocketAddr, NetworkError> {
        if let Some(local) = self.local {
            return Err(NetworkError::AlreadyListening(local));
        }
        let local = socket.local_addr().map_err(|source| NetworkError::Bind {
            addr: "socket".into(),
            source,
        })?;
        self.local = Some(local);
        self.advertised = Some(self.config.advertise_addr.unwrap_or(local));
        self.socket = Some(socket);
        self.span.record("addr", tracing::field::display(local));
        tracing::info!(%local, "listening");
        for slot in self.plugins.iter_mut().filter(|s| !s.started) {
            slot.deliver(PluginEvent::Startup);
            slot.started = true;
        }
        Ok(local)
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        Some(addr) == self.local || Some(addr) == self.advertised
    }

    fn add(&mut self, addr: SocketAddr, key: Option<PublicKey>) -> Result<(), NetworkError> {
        if self.socket.is_none() {
            return Err(NetworkError::NotListening);
        }
        if self.is_self(addr) {
            return Err(NetworkError::SelfAddress(addr));
        }
        let min = self.config.reconnect_min;
        let peer = self
            .peers
            .entry(addr)
            .or_insert_with(|| Peer::new(false, Direction::Outbound, min));
        if let Some(key) = key {
            // Someone else's word must not re-pin a known peer: keys change
            // only by deleting the peer first.
            if let Some(existing) = peer.pinned.or(peer.public_key).filter(|k| *k != key) {
                return Err(NetworkError::KeyConflict { addr, existing });
            }
            peer.pinned = Some(key);
        }
        if peer.added {
            return Ok(());
        }
        peer.added = true;
        peer.writable = true;
        let needs_connect = !peer.has_link();
        self.emit(PluginEvent::NodeAdded(addr));
        if needs_connect {
            self.connect(addr);
        }
        Ok(())
    }

    fn delete(&mut self, addr: SocketAddr) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let was_added = peer.added;
        peer.added = false;
        peer.writable = false;
        peer.reconnect_at = None;
        peer.handshake = None;
        // A deleted peer may come back under another key.
        peer.pinned = None;
        peer.public_key = None;
        match peer.session.as_mut() {
            Some(s) => {
                s.close(now, CloseReason::Deleted);
                self.drain_events(addr);
                self.touch(addr);
            }
            None => self.forget(addr),
        }
        if was_added {
            self.emit(PluginEvent::NodeDeleted(addr));
        }
    }

    fn with_sender(&self, mut msg: Message) -> Result<Message, NetworkError> {
        let advertised = self.advertised.ok_or(NetworkError::NotListening)?;
        msg.set_sender(advertised);
        Ok(msg)
    }

    fn send(&mut self, msg: Message, targets: Targets) -> Result<SendReport, NetworkError> {
        let msg = self.with_sender(msg)?;
        let frame = encode_frame(&Frame::Message(msg));
        let mut report = SendReport::default();
        match targets {
            Targets::AllWritable => {
                for addr in self.writable_peers() {
                    self.queue_into_report(addr, &frame, false, &mut report);
                }
            }
            Targets::Random(n) => {
                let writable = self.writable_peers();
                let k = n.min(writable.len());
                for i in rand::seq::index::sample(&mut self.rng, writable.len(), k) {
                    self.queue_into_report(writable[i], &frame, false, &mut report);
                }
            }
            Targets::Connected(addr) => {
                self.queue_into_report(addr, &frame, false, &mut report);
            }
            Targets::These(mut peers) => {
                dedup_in_order(&mut peers);
                for addr in peers {
                    if self.is_self(addr) {
                        report.failed.push((addr, SendFailure::NotConnected));
                    } else {
                        self.queue_into_report(addr, &frame, true, &mut report);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Writable peers in a stable order (so a seeded RNG picks reproducibly).
    fn writable_peers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self
            .peers
            .iter()
            .filter(|(_, p)| p.writable)
            .map(|(a, _)| *a)
            .collect();
        v.sort_unstable();
        v
    }

    fn queue_into_report(
        &mut self,
        addr: SocketAddr,
        frame: &Bytes,
        connect: bool,
        report: &mut SendReport,
    ) {
        match self.queue_frame(addr, frame, connect) {
            Ok(()) => report.queued.push(addr),
            Err(f) => report.failed.push((addr, f)),
        }
    }

    /// Queue one encoded frame to `addr`, within the peer's byte bound.
    /// With `connect`, an unknown peer gets a session (outside the route
    /// table) so the frame can go out.
    fn queue_frame(
        &mut self,
        addr: SocketAddr,
        frame: &Bytes,
        connect: bool,
    ) -> Result<(), SendFailure> {
        if !self.peers.contains_key(&addr) {
            if !connect || self.socket.is_none() {
                return Err(SendFailure::NotConnected);
            }
            let min = self.config.reconnect_min;
            self.peers
                .insert(addr, Peer::new(false, Direction::Outbound, min));
        }
        let limit = self.config.peer_queue_bytes;
        let now = self.now();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return Err(SendFailure::NotConnected);
        };
        if peer.queued_bytes().saturating_add(frame.len()) > limit {
            self.counters.queue_full += 1;
            return Err(SendFailure::QueueFull);
        }
        match peer.session.as_mut() {
            Some(s) if s.is_established() => {
                s.send_frame(now, frame);
            }
            Some(s) if s.is_closing() && !peer.added => return Err(SendFailure::NotConnected),
            _ => {
                peer.pending.push_back(frame.clone());
                peer.pending_bytes += frame.len();
            }
        }
        let needs_connect = !peer.has_link() && peer.reconnect_at.is_none();
        if needs_connect {
            self.connect(addr);
        }
        self.touch(addr);
        Ok(())
    }

    fn request(
        &mut self,
        msg: Message,
        peer: SocketAddr,
        timeout: Duration,
        answer: Reply<Result<Received, RequestError>>,
    ) {
        let msg = match self.with_sender(msg) {
            Ok(m) => m,
            Err(e) => {
                let _ = answer.send(Err(e.into()));
                return;
            }
        };
        let id = self.requests.next_id();
        let frame = encode_frame(&Frame::Request { id, message: msg });
        if let Err(f) = self.queue_frame(peer, &frame, true) {
            let _ = answer.send(Err(RequestError::NotSent(f)));
            return;
        }
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.now().saturating_add(ms);
        self.requests.insert(
            id,
            PendingRequest {
                peer,
                deadline,
                timeout,
                answer,
            },
        );
    }

    fn state(&self) -> NetworkState {
        let now = self.now();
        let mut peers: Vec<PeerState> = self
            .peers
            .iter()
            .map(|(addr, p)| {
                let live = p.session.as_ref().map(Session::stats).unwrap_or_default();
                let connection = match &p.session {
                    None if p.handshake.is_some() => ConnectionState::Connecting,
                    None => ConnectionState::Disconnected,
                    Some(s) if s.is_established() => ConnectionState::Connected,
                    Some(s) if s.is_connecting() => ConnectionState::Connecting,
                    Some(_) => ConnectionState::Closing,
                };
                PeerState {
                    addr: *addr,
                    advertised: p.advertised,
                    public_key: p.public_key,
                    pinned_key: p.pinned,
                    writable: p.writable,
                    in_route_table: p.added,
                    direction: p.direction,
                    connection,
                    rtt_ms: p.session.as_ref().and_then(Session::rtt_ms),
                    bytes_in: p.past.bytes_in + live.bytes_in,
                    bytes_out: p.past.bytes_out + live.bytes_out,
                    messages_in: p.past.messages_in + live.messages_in,
                    messages_out: p.past.messages_out + live.messages_out,
                    retransmits: p.past.retransmits + live.retransmits,
                    spurious_retransmits: p.past.spurious_retransmits + live.spurious_retransmits,
                    last_seen_ms_ago: p
                        .session
                        .as_ref()
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
            peers,
            plugins: self
                .plugins
                .iter()
                .map(|s| PluginState {
                    name: s.name.clone(),
                    events_dropped: s.counters.events_dropped.load(Ordering::Relaxed),
                    panics: s.counters.panics.load(Ordering::Relaxed),
                })
                .collect(),
            counters: self.counters.clone(),
        }
    }

    // ----- sessions -------------------------------------------------------

    fn touch(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(addr);
            }
        }
    }

    fn emit(&self, event_of: PluginEvent) {
        // Events are cheap to rebuild per plugin except messages, which are
        // shared behind an Arc.
        for slot in &self.plugins {
            slot.deliver(clone_event(&event_of));
        }
    }

    /// Handle what one receive brought (one datagram, or with GRO a run of
    /// them from one source) and keep reading while the socket has more, up
    /// to `RECV_BURST` datagrams.
    fn handle_recv(
        &mut self,
        socket: Option<&dyn DatagramSocket>,
        first: std::io::Result<Arrived>,
        buf: &mut [u8],
    ) {
        let mut result = first;
        let mut handled = 0;
        loop {
            match result {
                Ok(Arrived { len, from, stride }) => {
                    // An empty datagram is one datagram too (malformed).
                    let datagrams = buf[..len].chunks(stride.max(1));
                    let empty = (len == 0).then_some(&[][..]);
                    for datagram in datagrams.chain(empty) {
                        self.counters.datagrams_in += 1;
                        handled += 1;
                        self.handle_datagram(from, datagram);
                    }
                }
                // ICMP errors surface here on Linux (port unreachable);
                // they say nothing KCP's timers don't already handle.
                Err(e) => {
                    handled += 1;
                    tracing::debug!("recv error: {e}");
                }
            }
            // Read again only below the burst bound; whatever is read is
            // handled before the loop ends, so nothing read is lost.
            if handled >= RECV_BURST {
                break;
            }
            let Some(socket) = socket else { break };
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            result = match poll_recv(socket, &mut cx, buf) {
                Poll::Ready(r) => r,
                Poll::Pending => break,
            };
        }
    }

    fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
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

    fn handle_timers(&mut self) {
        let now = self.now();
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Session(addr) => {
                    let Some(peer) = self.peers.get_mut(&addr) else {
                        continue;
                    };
                    if peer.timer_at != Some(t) {
                        continue; // superseded by an earlier entry
                    }
                    peer.timer_at = None;
                    if peer.handshake.is_some() || peer.finish.is_some() {
                        self.handshake_timers(addr, now);
                    }
                    if let Some(s) = self.peers.get_mut(&addr).and_then(|p| p.session.as_mut()) {
                        s.handle_timeout(now);
                        self.drain_events(addr);
                    }
                    self.touch(addr);
                }
                TimerKey::HalfOpen(addr) => self.expire_half_open(addr, now),
                TimerKey::Reconnect(addr) => {
                    let due = self.peers.get(&addr).is_some_and(|p| {
                        p.reconnect_at == Some(t) && p.added && p.session.is_none()
                    });
                    if due {
                        self.connect(addr);
                    }
                }
                // Nothing to do but wake up: the main loop checks it.
                TimerKey::CloseDeadline => {}
            }
        }
        for r in self.requests.take_expired(now) {
            let _ = r.answer.send(Err(RequestError::Timeout(r.timeout)));
        }
    }

    /// Flush every touched session once, send its datagrams, retire it if it
    /// closed, and re-arm its timer.
    async fn flush_dirty(&mut self) {
        self.handed_over = false;
        let socket = self.socket.clone();
        let socket = socket.as_deref();
        for (to, datagram) in std::mem::take(&mut self.outbox) {
            self.batch.push(&datagram);
            self.batch.send(socket, &mut self.counters, to).await;
        }
        if self.dirty.is_empty() {
            return;
        }
        let now = self.now();
        let dirty = std::mem::take(&mut self.dirty);
        let max_segments = socket.map_or(1, |s| s.max_send_segments()).max(1);
        for addr in &dirty {
            let Some(peer) = self.peers.get_mut(addr) else {
                continue;
            };
            peer.dirty = false;
            if let Some(session) = peer.session.as_mut() {
                session.flush(now);
                while let Some(datagram) = session.poll_transmit() {
                    let wire: &[u8] = match peer.channel.as_mut() {
                        None => &datagram,
                        Some(channel) => match channel.seal(&datagram, &mut self.seal_buf) {
                            Ok(()) => &self.seal_buf,
                            Err(e) => {
                                // Only the nonce limit stops sealing: end the
                                // session and handshake afresh.
                                tracing::debug!(%addr, %e, "cannot seal; closing to re-key");
                                self.counters.rekeys += 1;
                                session.replace();
                                break;
                            }
                        },
                    };
                    if !self.batch.accepts(wire.len(), max_segments) {
                        self.batch.send(socket, &mut self.counters, *addr).await;
                    }
                    self.batch.push(wire);
                }
                self.batch.send(socket, &mut self.counters, *addr).await;
                if session.is_closed() {
                    self.drain_events(*addr);
                    self.retire_session(*addr);
                    self.answer_room_waiters(*addr);
                    continue;
                }
            }
            self.answer_room_waiters(*addr);
            if let Some(deadline) = self.peers.get(addr).and_then(|p| p.deadline(now)) {
                self.schedule_session(*addr, deadline);
            }
        }
        // Recycle the buffer's allocation.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Tell the callers of `Network::wait_for_room` whose message now fits.
    /// Room opens when ACKs empty the send buffer or a session ends, and
    /// both make the peer dirty, so this runs after every flush of it.
    fn answer_room_waiters(&mut self, addr: SocketAddr) {
        let limit = self.config.peer_queue_bytes;
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.answer_room_waiters(limit);
        }
    }

    fn schedule_session(&mut self, addr: SocketAddr, deadline: u64) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.timer_at.is_none_or(|t| deadline < t) {
            peer.timer_at = Some(deadline);
            self.timers
                .push(Reverse((deadline, TimerKey::Session(addr))));
        }
    }

    // ----- shutdown -------------------------------------------------------

    fn begin_close(&mut self, waiter: Option<Reply<()>>) {
        if let Some(c) = self.closing.as_mut() {
            c.waiters.extend(waiter);
            return;
        }
        let now = self.now();
        let close_ms = u64::try_from(self.config.close_timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(close_ms);
        self.closing = Some(Closing {
            deadline,
            waiters: waiter.into_iter().collect(),
        });
        for peer in self.peers.values_mut() {
            peer.handshake = None;
        }
        self.clear_half_open();
        let addrs: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            if let Some(s) = self.peers.get_mut(&addr).and_then(|p| p.session.as_mut()) {
                s.close(now, CloseReason::Shutdown);
                self.drain_events(addr);
                self.touch(addr);
            }
        }
        // Wake up at the deadline even if no session has a timer left.
        self.timers
            .push(Reverse((deadline, TimerKey::CloseDeadline)));
    }

    fn close_finished(&self) -> bool {
        match &self.closing {
            None => false,
            Some(c) => self.now() >= c.deadline || self.peers.values().all(|p| p.session.is_none()),
        }
    }

    async fn finish_close(mut self) {
        let abandoned: u64 = self.peers.values().map(|p| p.pending.len() as u64).sum();
        if abandoned > 0 {
            tracing::debug!(frames = abandoned, "closing with frames never sent");
        }
        for r in self.requests.take_all() {
            let _ = r
                .answer
                .send(Err(RequestError::Network(NetworkError::Closed)));
        }
        for slot in &self.plugins {
            slot.deliver(PluginEvent::Close);
        }
        let wait = self.config.close_timeout;
        for slot in std::mem::take(&mut self.plugins) {
            let PluginSlot { tx, task, name, .. } = slot;
            drop(tx);
            if tokio::time::timeout(wait, task).await.is_err() {
                tracing::warn!(plugin = %name, "plugin did not finish closing in time");
            }
        }
        if let Some(c) = self.closing.take() {
            for w in c.waiters {
                let _ = w.send(());
            }
        }
        tracing::info!("closed");
    }
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

fn clone_event(e: &PluginEvent) -> PluginEvent {
    match e {
        PluginEvent::Startup => PluginEvent::Startup,
        PluginEvent::NodeAdded(a) => PluginEvent::NodeAdded(*a),
        PluginEvent::NodeDeleted(a) => PluginEvent::NodeDeleted(*a),
        PluginEvent::PeerConnected(p) => PluginEvent::PeerConnected(p.clone()),
        PluginEvent::PeerRejected(a, r) => PluginEvent::PeerRejected(*a, r.clone()),
        PluginEvent::PeerDisconnected(a) => PluginEvent::PeerDisconnected(*a),
        PluginEvent::Message(m) => PluginEvent::Message(m.clone()),
        PluginEvent::Close => PluginEvent::Close,
    }
}

/// What one receive filled in: `len` bytes from `from`, one datagram every
/// `stride` bytes.
struct Arrived {
    len: usize,
    from: SocketAddr,
    stride: usize,
}

fn poll_recv(
    socket: &dyn DatagramSocket,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<std::io::Result<Arrived>> {
    let mut rb = ReadBuf::new(buf);
    socket
        .poll_recv_segments(cx, &mut rb)
        .map_ok(|(from, stride)| Arrived {
            len: rb.filled().len(),
            from,
            stride,
        })
}

async fn recv(socket: Option<&dyn DatagramSocket>, buf: &mut [u8]) -> std::io::Result<Arrived> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| poll_recv(socket, cx, buf)).await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::dedup_in_order;
    use std::net::SocketAddr;

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        for n in [3u16, 40] {
            let mut v: Vec<_> = (0..n).chain(0..n).chain([1, 0]).map(a).collect();
            dedup_in_order(&mut v);
            assert_eq!(v, (0..n).map(a).collect::<Vec<_>>());
        }
    }
}
