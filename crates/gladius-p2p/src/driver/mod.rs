//! The driver: the one task that owns the socket, the clock, the reply
//! channels and the plugins, around the sans-IO [`Endpoint`] that makes
//! every protocol decision. The [`Network`](crate::Network) handle talks to
//! it through [`Command`]s.
//!
//! One loop iteration handles one input (a command, a burst of datagrams or
//! the due timers), hands what the endpoint produced to plugins and
//! callers, then sends every datagram the endpoint has batched, so many
//! small messages and ACKs leave in few datagrams and few socket calls.
//! [`PeerSender`](crate::PeerSender)s' messages come on a channel of their
//! own, drained once per wake-up (see `senders`).

mod senders;

use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::api::{
    NodeEvent, Origin, Received, RequestHandler, RequestHandlerId, SendReport, Targets,
};
use crate::endpoint::{Endpoint, Event, KeyDial, PeerId, Transmit};
use crate::error::{NetworkError, RequestError};
use crate::plugin::{PluginEvent, PluginId, PluginSlot, Registration};
use crate::sender::{Budget, Push};
use crate::socket::{Arrival, DatagramSocket};
use crate::state::{NetworkState, PluginState};
use crate::wire::Message;
use crate::{Config, Filter, Network};

/// Largest UDP payload; receive buffers are this big so nothing is truncated.
const MAX_DATAGRAM: usize = 65_536;
/// Receive buffers: one receive fills up to this many. Two are enough for
/// a receive to tell that nothing more is queued (it fills only one), so
/// the socket is not asked again just to hear it is empty: one system call
/// less per wake-up.
const RECV_BUFFERS: usize = 2;

/// Datagrams read per wake-up before the sessions are flushed; bounds the
/// latency one burst adds to everything else.
const RECV_BURST: usize = 64;
/// Commands handled per wake-up before the sessions are flushed (see
/// `Driver::take_more_commands`).
const COMMAND_BURST: usize = 256;

type Reply<T> = oneshot::Sender<T>;
/// The driver's own tables are only looked up, never iterated.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A caller of `Network::wait_for_room`.
struct RoomWaiter {
    /// The address it named the peer by.
    addr: SocketAddr,
    /// Bytes its message needs.
    need: usize,
    reply: Reply<Result<(), NetworkError>>,
}

/// What a [`Network`] handle asks of the driver.
pub(crate) enum Command {
    Listen {
        socket: Arc<dyn DatagramSocket>,
        reply: Reply<Result<SocketAddr, NetworkError>>,
    },
    Add {
        addr: SocketAddr,
        key: Option<crate::PublicKey>,
        by: Origin,
        reply: Reply<Result<(), NetworkError>>,
    },
    AddKey {
        key: crate::PublicKey,
        hints: Vec<SocketAddr>,
        by: Origin,
        reply: Reply<Result<SocketAddr, NetworkError>>,
    },
    AddViaRelay {
        key: crate::PublicKey,
        relay: SocketAddr,
        by: Origin,
        reply: Reply<Result<SocketAddr, NetworkError>>,
    },
    Delete {
        addr: SocketAddr,
        by: Origin,
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
    /// `Network::sender`: the peer's send budget.
    OpenSender {
        addr: SocketAddr,
        reply: Reply<Result<Arc<Budget>, NetworkError>>,
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
    AddHandler {
        id: RequestHandlerId,
        filter: Filter,
        handler: Arc<RequestHandler>,
        reply: Reply<()>,
    },
    /// Answers whether the handler was registered.
    RemoveHandler {
        id: RequestHandlerId,
        reply: Reply<bool>,
    },
    SetHandshakePayload {
        payload: Bytes,
        reply: Reply<()>,
    },
}

impl Command {
    /// Whether the caller waits on the network rather than on the driver:
    /// a request waits for its reply, a key for its lookup, a room waiter
    /// for room, a close for the peers. Such a caller cannot queue more
    /// while the driver yields, so taking one is no reason to yield.
    fn waits_on_the_network(&self) -> bool {
        matches!(
            self,
            Command::Request { .. }
                | Command::AddKey { .. }
                | Command::WaitForRoom { .. }
                | Command::Close { .. }
        )
    }
}

/// Counts only the driver sees: what the socket did with our datagrams.
#[derive(Debug, Default)]
struct SocketCounters {
    datagrams_out: u64,
    send_errors: u64,
    send_buffer_full: u64,
    handler_panics: u64,
}

pub(crate) struct Driver {
    config: Arc<Config>,
    endpoint: Endpoint,
    socket: Option<Arc<dyn DatagramSocket>>,
    epoch: Instant,
    /// Milliseconds since `epoch`, read once per wake-up (see `tick`).
    now_ms: u64,
    plugins: Vec<PluginSlot>,
    /// `Network::handle_requests`, in the order added.
    handlers: Vec<(RequestHandlerId, Filter, Arc<RequestHandler>)>,
    plugin_handle: Network,
    /// Callers of `Network::request` by request id.
    answers: HashMap<u64, Reply<Result<Received, RequestError>>>,
    /// `add_key` callers waiting for their key's lookup.
    lookups: HashMap<u64, Reply<Result<SocketAddr, NetworkError>>>,
    /// Callers of `Network::wait_for_room` by peer: bytes needed, whom to tell.
    room_waiters: HashMap<PeerId, Vec<RoomWaiter>>,
    /// Open `PeerSender` budgets by peer, with the messages waiting for
    /// room in the peer's queue.
    senders: HashMap<PeerId, senders::SenderQueue>,
    /// A message or a reply went to a plugin or a caller since the last
    /// flush: its answer may be one yield away (see `take_more_commands`).
    handed_over: bool,
    /// Whoever waits for the graceful close to finish.
    close_waiters: Vec<Reply<()>>,
    socket_counters: SocketCounters,
    span: tracing::Span,
}

impl Driver {
    pub(crate) fn spawn(
        config: Arc<Config>,
        commands: mpsc::Receiver<Command>,
        pushes: mpsc::UnboundedReceiver<Push>,
        shutdown: oneshot::Receiver<()>,
        plugin_handle: Network,
    ) {
        let seed = config.rng_seed.unwrap_or_else(|| rand::thread_rng().gen());
        let driver = Driver {
            endpoint: Endpoint::new(config.clone(), seed),
            config,
            socket: None,
            epoch: Instant::now(),
            now_ms: 0,
            plugins: Vec::new(),
            handlers: Vec::new(),
            plugin_handle,
            answers: HashMap::default(),
            lookups: HashMap::default(),
            room_waiters: HashMap::default(),
            senders: HashMap::default(),
            handed_over: false,
            close_waiters: Vec::new(),
            socket_counters: SocketCounters::default(),
            span: tracing::info_span!("node", addr = tracing::field::Empty),
        };
        let span = driver.span.clone();
        tokio::spawn(driver.run(commands, pushes, shutdown).instrument(span));
    }

    /// The driver's clock: milliseconds since it started, as of the last
    /// [`tick`](Self::tick). Everything one wake-up handles shares one
    /// reading; KCP's timers have millisecond resolution, and reading the
    /// clock per message was 5% of the time of a 64 B stream.
    fn now(&self) -> u64 {
        self.now_ms
    }

    /// Read the clock: at every wake-up, after every yield and after a
    /// wait for room in the socket (once per round trip's wake-up on a
    /// quiet node, each read ~170 instructions).
    fn tick(&mut self) {
        self.now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut pushes: mpsc::UnboundedReceiver<Push>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let mut shutdown_seen = false;
        let mut commands_open = true;
        let mut pushes_open = true;
        // One timer for the driver's life, moved only to an earlier
        // deadline. A later deadline keeps it where it is: it fires early,
        // `handle_timeout` finds nothing due, and it is set again. Moving a
        // tokio timer earlier than the runtime's next wake-up, which a new
        // `Sleep` per wake-up always was, wakes the runtime through its
        // eventfd (a write and one more `epoll_wait` per wake-up: about a
        // microsecond of every request/reply round trip).
        let timer = tokio::time::sleep_until(self.epoch);
        tokio::pin!(timer);
        let mut armed: Option<u64> = None;
        // Whether the last iteration handled a receive (see `Wake`).
        let mut received = false;
        loop {
            let socket = self.socket.clone();
            if let Some(at) = self.endpoint.poll_timeout() {
                if armed.is_none_or(|armed| at < armed) {
                    armed = Some(at);
                    timer.as_mut().reset(self.epoch + Duration::from_millis(at));
                }
            }
            let mut channels_first = std::mem::take(&mut received);
            let wake = std::future::poll_fn(|cx| {
                if !shutdown_seen && Pin::new(&mut shutdown).poll(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                let socket = socket.as_deref();
                let socket_first = !std::mem::take(&mut channels_first);
                if socket_first {
                    if let Poll::Ready(wake) = poll_recv_wake(socket, cx) {
                        return Poll::Ready(wake);
                    }
                }
                if commands_open {
                    if let Poll::Ready(cmd) = commands.poll_recv(cx) {
                        return Poll::Ready(Wake::Command(cmd));
                    }
                }
                if pushes_open {
                    if let Poll::Ready(push) = pushes.poll_recv(cx) {
                        return Poll::Ready(Wake::Push(push));
                    }
                }
                if !socket_first {
                    if let Poll::Ready(wake) = poll_recv_wake(socket, cx) {
                        return Poll::Ready(wake);
                    }
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            self.tick();
            match wake {
                Wake::Shutdown => {
                    shutdown_seen = true;
                    self.begin_close(None);
                }
                Wake::Command(Some(cmd)) => {
                    let answered = !cmd.waits_on_the_network();
                    self.handle_command(cmd);
                    commands_open = self.take_more_commands(&mut commands, 1, answered).await;
                }
                Wake::Command(None) => {
                    commands_open = false;
                    self.begin_close(None);
                }
                Wake::Push(Some(push)) => self.take_pushes(push, &mut pushes),
                Wake::Push(None) => pushes_open = false,
                Wake::Recv(first, mut bufs) => {
                    received = true;
                    self.handle_recv(socket.as_deref(), first, &mut bufs);
                    give_back_recv_buffers(bufs);
                    // A request handed to a plugin is usually answered at
                    // once: wait one yield for the answer so that it leaves
                    // with the ACK, in one datagram instead of two.
                    if std::mem::take(&mut self.handed_over) && commands_open {
                        commands_open = self.take_more_commands(&mut commands, 0, true).await;
                    }
                }
                Wake::Timer => {
                    armed = None;
                    self.endpoint.handle_timeout(self.now_ms);
                    self.dispatch_events();
                }
            }
            // No clock read here: a flush takes time only when it waits
            // for the socket, and `send` reads the clock then.
            self.flush().await;
            if self.endpoint.is_closed(self.now()) {
                break;
            }
        }
        self.close_all_senders(&mut pushes);
        self.finish_close().await;
    }

    // ----- commands -------------------------------------------------------

    /// Take the commands that arrive while we work, before flushing, so a
    /// burst of sends leaves in full datagrams rather than one datagram (and
    /// one seal, one syscall) per message.
    ///
    /// After the queue runs dry the driver yields once if it answered a
    /// caller (`answered`: a command's caller, or a plugin or caller that
    /// was handed a message): the callers it just answered run and may
    /// queue their next message, which joins this flush. If nothing came,
    /// or every caller taken since waits on the network (a request, which
    /// waits for its reply), the flush goes out at once: a lone request
    /// pays no scheduler pass and no timer. Returns whether the command
    /// channel is still open (a closed one starts the graceful close).
    async fn take_more_commands(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        mut taken: usize,
        mut answered: bool,
    ) -> bool {
        while taken < COMMAND_BURST {
            match commands.try_recv() {
                Ok(cmd) => {
                    answered |= !cmd.waits_on_the_network();
                    self.handle_command(cmd);
                    taken += 1;
                }
                Err(mpsc::error::TryRecvError::Empty) if answered => {
                    answered = false;
                    // `yield_now`, not a self-wake: a caller that is a
                    // runtime's `block_on` future runs only once the run
                    // queue is empty, which a self-woken driver never
                    // lets happen (the sends stopped sharing datagrams).
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
        let now = self.now();
        if self.endpoint.is_closing() {
            // Dropping the reply sender answers `NetworkError::Closed`;
            // a second close just waits for the first.
            if let Command::Close { reply } = cmd {
                self.close_waiters.push(reply);
            }
            return;
        }
        match cmd {
            Command::Listen { socket, reply } => {
                let _ = reply.send(self.listen(socket));
            }
            Command::Add {
                addr,
                key,
                by,
                reply,
            } => {
                let _ = reply.send(self.endpoint.add(now, addr, key, by));
            }
            Command::AddKey {
                key,
                hints,
                by,
                reply,
            } => match self.endpoint.add_key_or_look_up(now, key, &hints, by) {
                Ok(KeyDial::Dialled(addr)) => {
                    let _ = reply.send(Ok(addr));
                }
                Ok(KeyDial::LookingUp(id)) => {
                    self.lookups.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::AddViaRelay {
                key,
                relay,
                by,
                reply,
            } => {
                let _ = reply.send(self.endpoint.add_via_relay(now, key, relay, by));
            }
            Command::Delete { addr, by, reply } => {
                self.endpoint.delete(now, addr, by);
                let _ = reply.send(());
            }
            Command::SetWritable {
                addr,
                writable,
                reply,
            } => {
                let _ = reply.send(self.endpoint.set_writable(addr, writable));
            }
            Command::Send {
                msg,
                targets,
                reply,
            } => {
                let _ = reply.send(self.endpoint.send(now, msg, targets));
            }
            Command::Request {
                msg,
                peer,
                timeout,
                answer,
            } => match self.endpoint.request(now, msg, peer, timeout) {
                Ok(id) => {
                    self.answers.insert(id, answer);
                }
                Err(e) => {
                    let _ = answer.send(Err(e));
                }
            },
            Command::Reply {
                msg,
                peer,
                id,
                reply,
            } => {
                let _ = reply.send(self.endpoint.reply(now, msg, peer, id));
            }
            Command::State { reply } => {
                let _ = reply.send(self.state());
            }
            Command::WaitForRoom { addr, need, reply } => self.wait_for_room(addr, need, reply),
            Command::OpenSender { addr, reply } => self.open_sender(addr, reply),
            Command::RegisterPlugin { plugin, reply } => {
                let handle = self.plugin_handle.for_plugin(plugin.plugin.name());
                let mut slot = PluginSlot::spawn(plugin, handle);
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
            Command::AddHandler {
                id,
                filter,
                handler,
                reply,
            } => {
                self.handlers.push((id, filter, handler));
                let _ = reply.send(());
            }
            Command::RemoveHandler { id, reply } => {
                let before = self.handlers.len();
                self.handlers.retain(|(h, _, _)| *h != id);
                let _ = reply.send(self.handlers.len() < before);
            }
            Command::SetHandshakePayload { payload, reply } => {
                self.endpoint.set_handshake_payload(payload);
                let _ = reply.send(());
            }
        }
        self.dispatch_events();
    }

    fn listen(&mut self, socket: Arc<dyn DatagramSocket>) -> Result<SocketAddr, NetworkError> {
        if let Some(local) = self.socket.as_ref().and_then(|s| s.local_addr().ok()) {
            return Err(NetworkError::AlreadyListening(local));
        }
        let local = socket.local_addr().map_err(|source| NetworkError::Bind {
            addr: "socket".into(),
            source,
        })?;
        self.endpoint.listen(self.now(), local)?;
        self.socket = Some(socket);
        self.span.record("addr", tracing::field::display(local));
        tracing::info!(%local, "listening");
        for slot in self.plugins.iter_mut().filter(|s| !s.started) {
            slot.deliver(PluginEvent::Startup);
            slot.started = true;
        }
        Ok(local)
    }

    /// Register a caller of `Network::wait_for_room`, or answer at once.
    /// Callers that gave up (timed out) are dropped first, so the list
    /// holds only live waiters.
    fn wait_for_room(
        &mut self,
        addr: SocketAddr,
        need: usize,
        reply: Reply<Result<(), NetworkError>>,
    ) {
        let Some((peer, queued)) = self.endpoint.watch_room(addr) else {
            let _ = reply.send(Err(NetworkError::UnknownPeer(addr)));
            return;
        };
        let waiters = self.room_waiters.entry(peer).or_default();
        waiters.retain(|w| !w.reply.is_closed());
        waiters.push(RoomWaiter { addr, need, reply });
        self.answer_room_waiters(peer, Some(queued));
    }

    /// Answer every waiter whose message now fits. Room is not reserved:
    /// two waiters woken together may race for it, and the loser's send
    /// reports `QueueFull` again.
    fn answer_room_waiters(&mut self, peer: PeerId, queued: Option<usize>) {
        let limit = self.config.peer_queue_bytes;
        let Some(waiters) = self.room_waiters.get_mut(&peer) else {
            return;
        };
        for w in std::mem::take(waiters) {
            match queued {
                None => {
                    let _ = w.reply.send(Err(NetworkError::UnknownPeer(w.addr)));
                }
                Some(q) if q.saturating_add(w.need) <= limit => {
                    let _ = w.reply.send(Ok(()));
                }
                Some(_) if !w.reply.is_closed() => waiters.push(w),
                Some(_) => {}
            }
        }
        if waiters.is_empty() {
            self.room_waiters.remove(&peer);
            self.unwatch_if_unused(peer);
        }
    }

    fn state(&self) -> NetworkState {
        let mut state = self.endpoint.state(self.now());
        state.counters.datagrams_out = self.socket_counters.datagrams_out;
        state.counters.send_errors = self.socket_counters.send_errors;
        state.counters.send_buffer_full = self.socket_counters.send_buffer_full;
        state.counters.handler_panics = self.socket_counters.handler_panics;
        state.plugins = self
            .plugins
            .iter()
            .map(|s| PluginState {
                name: s.name.clone(),
                events_dropped: s.counters.events_dropped.load(Ordering::Relaxed),
                panics: s.counters.panics.load(Ordering::Relaxed),
            })
            .collect();
        state
    }

    // ----- what the endpoint produced --------------------------------------

    /// Hand every endpoint event to whoever waits for it.
    fn dispatch_events(&mut self) {
        self.take_events();
        self.hand_over();
    }

    /// Send each plugin its batch of this wake-up's events (see
    /// [`PluginSlot::hand_over`]).
    fn hand_over(&mut self) {
        for slot in &mut self.plugins {
            slot.hand_over();
        }
    }

    /// [`dispatch_events`](Self::dispatch_events), with what goes to
    /// plugins left in their batches.
    fn take_events(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Node(NodeEvent::Message(m)) if self.answered_here(&m) => {}
                Event::Node(event) => {
                    if matches!(event, NodeEvent::Message(_)) {
                        self.handed_over = true;
                    }
                    // Events are cheap to clone (messages are behind an Arc).
                    for slot in &mut self.plugins {
                        slot.deliver(PluginEvent::Node(event.clone()));
                    }
                }
                Event::RequestDone { id, result } => {
                    if let Some(answer) = self.answers.remove(&id) {
                        self.handed_over |= result.is_ok();
                        let _ = answer.send(result);
                    }
                }
                Event::Room { peer, queued } => {
                    self.answer_room_waiters(peer, queued);
                    self.sender_room(peer, queued);
                }
                Event::LookupDone { id, result } => {
                    if let Some(reply) = self.lookups.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    /// Offer a request to the request handlers; true if one answered it
    /// (the reply is queued, or refused and counted like any send).
    fn answered_here(&mut self, m: &Received) -> bool {
        let Some(id) = m.request_id else {
            return false;
        };
        for i in 0..self.handlers.len() {
            let (_, filter, handler) = &self.handlers[i];
            if !filter.matches_message(&m.message) {
                continue;
            }
            let handler = handler.clone();
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(m)));
            match answer {
                Ok(Some(reply)) if reply.body().len() <= self.config.max_message_size => {
                    let now = self.now();
                    if let Err(e) = self.endpoint.reply(now, reply, m.peer, id) {
                        tracing::debug!("request handler's reply not sent: {e}");
                    }
                    return true;
                }
                Ok(Some(reply)) => {
                    tracing::warn!(
                        size = reply.body().len(),
                        "request handler's reply is larger than max_message_size; \
                         the request goes to the plugins"
                    );
                    return false;
                }
                Ok(None) => {}
                Err(_) => {
                    self.socket_counters.handler_panics += 1;
                    tracing::error!("request handler panicked");
                    return false;
                }
            }
        }
        false
    }

    /// Handle what one receive brought (in each buffer one datagram, or
    /// with GRO a run of them from one source) and keep reading while the
    /// socket has more, up to `RECV_BURST` datagrams.
    fn handle_recv(
        &mut self,
        socket: Option<&dyn DatagramSocket>,
        first: std::io::Result<Filled>,
        bufs: &mut RecvBuffers,
    ) {
        let now = self.now();
        let mut result = first;
        let mut handled = 0;
        loop {
            match result {
                Ok(Filled { filled, arrivals }) => {
                    for (buf, arrival) in bufs.iter().zip(arrivals.iter().take(filled)) {
                        let Arrival { from, len, stride } = *arrival;
                        let Some(data) = buf.get(..len) else { continue };
                        // An empty datagram is one datagram too (malformed).
                        let datagrams = data.chunks(stride.max(1));
                        let empty = (len == 0).then_some(&[][..]);
                        for datagram in datagrams.chain(empty) {
                            handled += 1;
                            self.endpoint.handle_datagram(now, from, datagram);
                        }
                    }
                }
                // ICMP errors surface here on Linux (port unreachable);
                // they say nothing KCP's timers don't already handle.
                Err(e) => {
                    handled += 1;
                    tracing::debug!("recv error: {e}");
                }
            }
            self.take_events();
            // Read again only below the burst bound; whatever is read is
            // handled before the loop ends, so nothing read is lost.
            if handled >= RECV_BURST {
                break;
            }
            let Some(socket) = socket else { break };
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            result = match poll_recv(socket, &mut cx, bufs) {
                Poll::Ready(r) => r,
                Poll::Pending => break,
            };
        }
        // One batch per plugin for the whole burst.
        self.hand_over();
    }

    /// Send every batch the endpoint has ready. Send errors (EPERM from a
    /// firewall, ENOBUFS, unreachable) are loss to KCP, which retransmits:
    /// they are counted, never fatal.
    async fn flush(&mut self) {
        self.handed_over = false;
        let socket = self.socket.clone();
        let max_segments = socket.as_ref().map_or(1, |s| s.max_send_segments()).max(1);
        while let Some(transmit) = self.endpoint.poll_transmit(self.now_ms, max_segments) {
            if let Some(socket) = socket.as_deref() {
                self.send(socket, &transmit).await;
            }
            self.endpoint.recycle(transmit);
        }
        // Flushing retires closed sessions, which plugins and callers hear.
        self.dispatch_events();
    }

    async fn send(&mut self, socket: &dyn DatagramSocket, t: &Transmit) {
        let mut waited = false;
        let sent = std::future::poll_fn(|cx| {
            let sent = socket.poll_send_segments(cx, &t.payload, t.segment_size, t.to);
            waited |= sent.is_pending();
            sent
        })
        .await;
        if waited {
            self.socket_counters.send_buffer_full += 1;
            // Time passed while the socket was full.
            self.tick();
        }
        match sent {
            Ok(()) => self.socket_counters.datagrams_out += t.count as u64,
            Err(e) => {
                self.socket_counters.send_errors += t.count as u64;
                tracing::debug!(to = %t.to, datagrams = t.count, "send error: {e}");
            }
        }
    }

    // ----- shutdown -------------------------------------------------------

    fn begin_close(&mut self, waiter: Option<Reply<()>>) {
        self.close_waiters.extend(waiter);
        self.endpoint.begin_close(self.now());
        self.dispatch_events();
    }

    async fn finish_close(mut self) {
        self.endpoint.finish_close();
        self.dispatch_events();
        for slot in &mut self.plugins {
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
        for w in std::mem::take(&mut self.close_waiters) {
            let _ = w.send(());
        }
        tracing::info!("closed");
    }
}

/// What woke the driver: the first of its inputs found ready.
///
/// The socket is asked first, then the command and sender channels, except
/// on the first look after a receive, where the channels come first: a
/// datagram that wakes an idle driver is read without asking two empty
/// channels before it (about 400 instructions, on the path of every request
/// and reply), and a flood of datagrams still leaves the channels a turn
/// between any two receive bursts. The shutdown signal always comes first.
enum Wake {
    Shutdown,
    /// `None`: every handle is gone.
    Command(Option<Command>),
    /// `None`: every sender is gone.
    Push(Option<Push>),
    Recv(std::io::Result<Filled>, Box<RecvBuffers>),
    Timer,
}

/// What one receive filled in: the first `filled` buffers, as `arrivals`
/// says.
struct Filled {
    filled: usize,
    arrivals: [Arrival; RECV_BUFFERS],
}

fn poll_recv(
    socket: &dyn DatagramSocket,
    cx: &mut Context<'_>,
    bufs: &mut RecvBuffers,
) -> Poll<std::io::Result<Filled>> {
    let mut slices = bufs.each_mut().map(|b| IoSliceMut::new(b));
    let mut arrivals = [Arrival::default(); RECV_BUFFERS];
    socket
        .poll_recv_batch(cx, &mut slices, &mut arrivals)
        .map_ok(|filled| Filled {
            filled: filled.min(RECV_BUFFERS),
            arrivals,
        })
}

/// The buffers one receive fills.
type RecvBuffers = [Vec<u8>; RECV_BUFFERS];

thread_local! {
    /// The receive buffers of the drivers polled on this thread. A driver
    /// takes them only while it reads and handles what it read, within one
    /// poll, so the drivers of a thread share one set: a process of 1,000
    /// nodes on two threads holds two sets of 128 KiB, not 1,000.
    static SHARED_RECV_BUFFERS: std::cell::RefCell<Option<Box<RecvBuffers>>> =
        const { std::cell::RefCell::new(None) };
}

/// This thread's receive buffers, or new ones if they are taken (only a
/// driver polled inside another's handler could see that).
fn take_recv_buffers() -> Box<RecvBuffers> {
    SHARED_RECV_BUFFERS
        .with(|slot| slot.borrow_mut().take())
        .unwrap_or_else(|| Box::new(std::array::from_fn(|_| vec![0u8; MAX_DATAGRAM])))
}

/// Give the buffers back for the next driver on this thread (a second set,
/// from a nested take, is freed).
fn give_back_recv_buffers(bufs: Box<RecvBuffers>) {
    SHARED_RECV_BUFFERS.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(bufs);
        }
    });
}

/// Poll for a receive: a [`Wake::Recv`] with what it filled and the
/// buffers it filled (this thread's, held only from the moment something
/// arrived until the driver has handled it). Without a socket, never ready.
fn poll_recv_wake(socket: Option<&dyn DatagramSocket>, cx: &mut Context<'_>) -> Poll<Wake> {
    let Some(socket) = socket else {
        return Poll::Pending;
    };
    let mut bufs = take_recv_buffers();
    match poll_recv(socket, cx, &mut bufs) {
        Poll::Ready(filled) => Poll::Ready(Wake::Recv(filled, bufs)),
        Poll::Pending => {
            give_back_recv_buffers(bufs);
            Poll::Pending
        }
    }
}
