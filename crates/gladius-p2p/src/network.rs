//! The public handle: a cheap `Clone` that sends commands to the node's
//! driver task over a bounded channel and awaits the answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use bytes::Bytes;

use crate::api::{Origin, Received, RequestHandler, RequestHandlerId, SendReport, Targets};
use crate::crypto::PublicKey;
use crate::driver::{Command, Driver};
use crate::error::{NetworkError, RequestError};
use crate::plugin::{PluginCounters, PluginId, Registration};
use crate::sender::{PeerSender, Push};
use crate::socket::DatagramSocket;
use crate::state::NetworkState;
use crate::wire::Message;
use crate::{Config, ConfigError, Filter, Plugin};

/// Commands the application may have waiting for the driver. Sends return
/// as soon as the driver has queued them, so this only smooths bursts; a
/// full channel makes callers wait (local work before remote work).
const COMMAND_QUEUE_LEN: usize = 1024;

/// Closes the node when the last application handle is dropped.
#[derive(Debug)]
struct LiveGuard {
    _shutdown: oneshot::Sender<()>,
}

/// The handle to a node. Cheap to clone; every clone drives the same node.
/// Must be created inside a tokio runtime.
///
/// Handles the application holds keep the node alive; when the last one is
/// dropped the node closes gracefully in the background. Handles given to
/// plugins do not keep it alive.
///
/// Every method that names a peer takes a `SocketAddr` or a `"host:port"`
/// string ([`ToPeerAddr`]).
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Filter, Message, Network};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let a = Network::new(Config::default())?;
/// let b = Network::new(Config::default())?;
/// a.listen("127.0.0.1:0").await?;
/// let b_addr = b.listen("127.0.0.1:0").await?;
/// let mut inbox = b.subscribe(Filter::type_prefix("chat")).await?;
///
/// a.add(b_addr).await?; // writable peer; connects, reconnects with backoff
/// a.wait_peers(1, Duration::from_secs(5)).await?;
/// let report = a.broadcast(Message::new("chat", "hello")?).await?;
/// assert_eq!(report.queued, [b_addr]);
/// assert_eq!(inbox.next().await.unwrap().message().body(), "hello");
///
/// let state = a.network_state().await?; // peers, RTT, counters
/// assert!(state.peer(b_addr).is_some_and(|p| p.writable));
/// a.close().await?; // flush, tell peers, stop
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    /// [`PeerSender`]s' messages to the driver (bounded in bytes by their
    /// budgets, not here).
    pushes: mpsc::UnboundedSender<Push>,
    /// Present in application handles only; see [`Network::downgrade`].
    _live: Option<Arc<LiveGuard>>,
    config: Arc<Config>,
    /// Whose handle this is (see [`Origin`]).
    origin: Origin,
}

impl Network {
    /// Validate `config` and start the node's driver (not yet listening).
    pub fn new(mut config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        if !config.plaintext && config.identity.is_none() {
            config.identity = Some(crate::crypto::Identity::generate());
        }
        let config = Arc::new(config);
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE_LEN);
        let (pushes, pushes_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let plugin_handle = Network {
            commands: commands.clone(),
            pushes: pushes.clone(),
            _live: None,
            config: config.clone(),
            origin: Origin::Plugin(Arc::from("")),
        };
        Driver::spawn(config.clone(), rx, pushes_rx, shutdown_rx, plugin_handle);
        Ok(Self {
            commands,
            pushes,
            _live: Some(Arc::new(LiveGuard {
                _shutdown: shutdown_tx,
            })),
            config,
            origin: Origin::App,
        })
    }

    /// A handle that does not keep the node alive (what plugins get).
    pub fn downgrade(&self) -> Network {
        Network {
            commands: self.commands.clone(),
            pushes: self.pushes.clone(),
            _live: None,
            config: self.config.clone(),
            origin: self.origin.clone(),
        }
    }

    /// The handle the hooks of the plugin called `name` get: like
    /// [`downgrade`](Self::downgrade), and what it does to the route table
    /// is the plugin's, not the application's.
    pub(crate) fn for_plugin(&self, name: &str) -> Network {
        Network {
            origin: Origin::Plugin(Arc::from(name)),
            ..self.downgrade()
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.submit(make(tx)).await?;
        rx.await.map_err(|_| NetworkError::Closed)
    }

    /// Queue `cmd` for the driver, waiting for room only when the queue
    /// is full. `try_send` first: with room (the usual case) it skips the
    /// semaphore's acquire future that `send` builds on every call (with
    /// the driver's one clock read per wake-up, 20.6 k → 20.3 k
    /// instructions per 64 B round trip on the caller's side).
    async fn submit(&self, cmd: Command) -> Result<(), NetworkError> {
        match self.commands.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => self
                .commands
                .send(cmd)
                .await
                .map_err(|_| NetworkError::Closed),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NetworkError::Closed),
        }
    }

    /// Bind the node's UDP socket on `addr` (e.g. `"127.0.0.1:0"`) and start
    /// serving. Returns the bound address.
    pub async fn listen(&self, addr: impl ToPeerAddr) -> Result<SocketAddr, NetworkError> {
        let addr = resolve(addr).await?;
        let socket = crate::socket::bind_batch_udp(addr, self.config.socket_buffer_bytes).map_err(
            |source| NetworkError::Bind {
                addr: addr.to_string(),
                source,
            },
        )?;
        self.listen_shared(socket).await
    }

    /// Serve on an already bound socket (any [`DatagramSocket`], such as a
    /// [`MemorySocket`](crate::MemorySocket) in tests, a plain tokio socket,
    /// or a [`BatchUdpSocket`](crate::BatchUdpSocket)).
    pub async fn listen_on(&self, socket: impl DatagramSocket) -> Result<SocketAddr, NetworkError> {
        self.listen_shared(Arc::new(socket)).await
    }

    async fn listen_shared(
        &self,
        socket: Arc<dyn DatagramSocket>,
    ) -> Result<SocketAddr, NetworkError> {
        self.call(|reply| Command::Listen { socket, reply }).await?
    }

    /// Add a peer to the route table as writable, fire `node_added`, and keep
    /// connecting (with backoff) while it stays there. Accepts DNS names.
    /// Idempotent; also promotes a known non-writable peer.
    pub async fn add(&self, addr: impl ToPeerAddr) -> Result<SocketAddr, NetworkError> {
        let addr = resolve(addr).await?;
        let by = self.origin.clone();
        self.call(|reply| Command::Add {
            addr,
            key: None,
            by,
            reply,
        })
        .await??;
        Ok(addr)
    }

    /// [`add`](Self::add) with the peer's static key pinned: the session
    /// completes only if the peer proves `key`; otherwise the attempt is
    /// refused, counted (`pin_mismatches`) and reported to plugins
    /// (`peer_rejected`). A peer already pinned to, or proven to hold,
    /// another key gives [`NetworkError::KeyConflict`]: delete it first to
    /// change its key.
    pub async fn add_pinned(
        &self,
        addr: impl ToPeerAddr,
        key: PublicKey,
    ) -> Result<SocketAddr, NetworkError> {
        let addr = resolve(addr).await?;
        let by = self.origin.clone();
        self.call(|reply| Command::Add {
            addr,
            key: Some(key),
            by,
            reply,
        })
        .await??;
        Ok(addr)
    }

    /// Add the peer whose static key is `key` to the route table, as
    /// [`add`](Self::add) does for an address: it is known by its key, and
    /// `addrs_hint` are paths to try (it may also be reached at, or come
    /// from, any other address, once it proves `key` there). A session
    /// completes only with `key`. With no hint and no path known, the node
    /// asks its peers (`docs/nat.md`, dial by key): each established
    /// encrypted session is asked whether it has a session with `key`, and
    /// the node dials what they know once all answered (at most 2 s):
    /// straight to an address where the peer looks public (falling back
    /// to a relay if that handshake gets no answer), else through a peer
    /// that relays and has it (the returned address is then the relay
    /// path naming it, see [`add_via_relay`](Self::add_via_relay)), else
    /// straight to the first address found. [`NetworkError::NoPath`] when
    /// no peer knows `key` (or there is no peer to ask). Returns the
    /// address dialled. Encrypted mode only: in plaintext mode nothing
    /// proves a key.
    pub async fn add_key(
        &self,
        key: PublicKey,
        addrs_hint: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<SocketAddr, NetworkError> {
        let hints: Vec<SocketAddr> = addrs_hint.into_iter().collect();
        let by = self.origin.clone();
        self.call(|reply| Command::AddKey {
            key,
            hints,
            by,
            reply,
        })
        .await?
    }

    /// Add the peer whose static key is `key` to the route table, reached
    /// through the peer at `relay` (encrypted mode; `docs/nat.md`). The
    /// relay must have an established encrypted session with this node and
    /// with the peer, and relay (`Config::with_relay`). The Noise session
    /// with the peer is end to end: the relay forwards sealed datagrams it
    /// can neither read nor forge. Returns the *relay path* that names the
    /// peer (an address of the discard prefix `100::/64` standing for "this
    /// key via that relay"; use it like any peer address). The peer's
    /// `network_state()` entry shows `path: relayed` and the relay's
    /// address. [`NetworkError::NoRelay`] if `relay` has no established
    /// encrypted session with this node (or is the peer itself).
    pub async fn add_via_relay(
        &self,
        key: PublicKey,
        relay: impl ToPeerAddr,
    ) -> Result<SocketAddr, NetworkError> {
        let relay = resolve(relay).await?;
        let by = self.origin.clone();
        self.call(|reply| Command::AddViaRelay {
            key,
            relay,
            by,
            reply,
        })
        .await?
    }

    /// Close the session to `addr` gracefully, remove it from the route
    /// table and fire `node_deleted`. Idempotent. Like every method naming
    /// a peer, takes what [`add`](Self::add) takes: a `SocketAddr` or a
    /// `"host:port"` string.
    pub async fn delete(&self, addr: impl ToPeerAddr) -> Result<(), NetworkError> {
        let addr = resolve(addr).await?;
        let by = self.origin.clone();
        self.call(|reply| Command::Delete { addr, by, reply }).await
    }

    /// Make a known peer writable or not without changing the route table.
    pub async fn set_writable(
        &self,
        addr: impl ToPeerAddr,
        writable: bool,
    ) -> Result<(), NetworkError> {
        let addr = resolve(addr).await?;
        self.call(|reply| Command::SetWritable {
            addr,
            writable,
            reply,
        })
        .await?
    }

    /// Send to every writable peer.
    pub async fn broadcast(&self, msg: Message) -> Result<SendReport, NetworkError> {
        self.send(msg, Targets::AllWritable).await
    }

    /// Send to exactly these peers, connecting if needed. This is an explicit
    /// choice of the caller, so it also reaches non-writable peers.
    pub async fn broadcast_to(
        &self,
        msg: Message,
        peers: &[SocketAddr],
    ) -> Result<SendReport, NetworkError> {
        self.send(msg, Targets::These(peers.to_vec())).await
    }

    /// Send to `min(n, writable peers)` distinct writable peers chosen
    /// uniformly at random.
    pub async fn broadcast_randomly(
        &self,
        msg: Message,
        n: usize,
    ) -> Result<SendReport, NetworkError> {
        self.send(msg, Targets::Random(n)).await
    }

    async fn send(&self, msg: Message, targets: Targets) -> Result<SendReport, NetworkError> {
        self.check_size(&msg)?;
        self.call(|reply| Command::Send {
            msg,
            targets,
            reply,
        })
        .await?
    }

    /// Wait until `peer`'s send queue has room for `msg`: the way to
    /// answer a [`SendFailure::QueueFull`](crate::SendFailure::QueueFull) without polling. Returns at once
    /// if there is room now. Room opens as the peer acknowledges what was
    /// sent (or its session ends); it is not reserved, so a send after this
    /// can still meet `QueueFull` when other senders took the room first.
    ///
    /// Errors: [`NetworkError::UnknownPeer`] if the node has (or comes to
    /// have) no state for `peer`, [`NetworkError::Timeout`] after
    /// `timeout` (a peer that stopped acknowledging keeps its queue full
    /// until the dead-link timeout ends its session), and
    /// [`NetworkError::MessageTooLarge`] as for sends.
    pub async fn wait_for_room(
        &self,
        peer: impl ToPeerAddr,
        msg: &Message,
        timeout: Duration,
    ) -> Result<(), NetworkError> {
        self.check_size(msg)?;
        let peer = resolve(peer).await?;
        // An upper bound on the frame `msg` becomes (sender and framing
        // included), which the configured queue bound always admits.
        let need = crate::wire::Frame::max_len(msg.body().len());
        let wait = self.call(|reply| Command::WaitForRoom {
            addr: peer,
            need,
            reply,
        });
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result?,
            Err(_) => Err(NetworkError::Timeout(timeout)),
        }
    }

    /// A [`PeerSender`] to `peer`: a stream of messages with no round trip
    /// to the driver per message, for many small messages to one peer.
    /// Its sends are checked against a byte budget in the caller's task and
    /// reported only when they fail (see [`PeerSender`] for what `Ok`
    /// promises and how a lost message is counted). One budget per peer,
    /// shared by every sender opened to it; the budget, like the peer's
    /// queue, is [`Config::with_peer_queue_bytes`](crate::Config::with_peer_queue_bytes).
    ///
    /// Errors: [`NetworkError::UnknownPeer`] if the node has no state for
    /// `peer` (add it, or wait for its session, first), and
    /// [`NetworkError::Closed`].
    pub async fn sender(&self, peer: impl ToPeerAddr) -> Result<PeerSender, NetworkError> {
        let addr = resolve(peer).await?;
        let budget = self
            .call(|reply| Command::OpenSender { addr, reply })
            .await??;
        Ok(PeerSender::new(
            budget,
            self.pushes.clone(),
            self.config.max_message_size,
        ))
    }

    fn check_size(&self, msg: &Message) -> Result<(), NetworkError> {
        let max = self.config.max_message_size;
        if msg.body().len() > max {
            return Err(NetworkError::MessageTooLarge {
                size: msg.body().len(),
                max,
            });
        }
        Ok(())
    }

    /// Send `msg` to `peer` as a request and wait up to `timeout` for the
    /// reply (which does not go to plugins).
    pub async fn request(
        &self,
        msg: Message,
        peer: impl ToPeerAddr,
        timeout: Duration,
    ) -> Result<Received, RequestError> {
        self.check_size(&msg)?;
        let peer = resolve(peer).await?;
        let (answer, reply) = oneshot::channel();
        self.submit(Command::Request {
            msg,
            peer,
            timeout,
            answer,
        })
        .await?;
        // The driver answers by the deadline (its timer), so no second
        // timer is needed here.
        reply.await.map_err(|_| NetworkError::Closed)?
    }

    /// Answer requests inside the node: from when this returns, every
    /// request whose type passes `filter` goes first to `handler`, which
    /// the node's driver task runs as the request arrives. A `Some(reply)`
    /// is sent back at once as the request's reply (as
    /// [`reply`](Self::reply) would, usually in the same datagram as the
    /// acknowledgement), and the request goes nowhere else; `None` passes
    /// it on to the plugins and streams like any other request. Handlers
    /// are tried in the order they were added; the first that answers wins.
    ///
    /// This is the short path for request/reply: no plugin task runs, so
    /// a round trip costs two hand-offs between tasks (the caller's and
    /// the driver's) instead of four. The price is that `handler` runs on
    /// the driver: it must be quick and must not block (no I/O, no locks
    /// held long); everything else the node does waits while it runs. A
    /// handler that panics is caught and counted
    /// ([`Counters::handler_panics`](crate::Counters)) and the request
    /// goes to the plugins. Plain messages never reach a handler. A reply
    /// that cannot be queued (the peer's queue is full) is counted like
    /// any refused send (`queue_full`) and the requester times out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gladius_p2p::{Config, Filter, Message, Network};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
    /// a.listen("127.0.0.1:0").await?;
    /// let b_addr = b.listen("127.0.0.1:0").await?;
    /// b.handle_requests(Filter::type_prefix("echo"), |req| {
    ///     Message::new("echo", req.message().body().clone()).ok()
    /// })
    /// .await?;
    /// a.add(b_addr).await?;
    /// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
    /// let answer = a
    ///     .request(Message::new("echo", "hi")?, b_addr, Duration::from_secs(5))
    ///     .await?;
    /// assert_eq!(answer.message().body(), "hi");
    /// # Ok(()) }
    /// ```
    pub async fn handle_requests(
        &self,
        filter: Filter,
        handler: impl Fn(&Received) -> Option<Message> + Send + Sync + 'static,
    ) -> Result<RequestHandlerId, NetworkError> {
        let id = RequestHandlerId::next();
        let handler: Arc<RequestHandler> = Arc::new(handler);
        self.call(|reply| Command::AddHandler {
            id,
            filter,
            handler,
            reply,
        })
        .await?;
        Ok(id)
    }

    /// Stop the request handler `id` (see
    /// [`handle_requests`](Self::handle_requests)): requests it would have
    /// answered go to the plugins from when this returns. Returns whether
    /// it was registered.
    pub async fn remove_request_handler(&self, id: RequestHandlerId) -> Result<bool, NetworkError> {
        self.call(|reply| Command::RemoveHandler { id, reply })
            .await
    }

    /// Answer a message received in `new_message`, over the session it came
    /// on, never opening a new one (a peer that is gone gets
    /// [`SendFailure::NotConnected`](crate::SendFailure::NotConnected)). For a request the answer is its reply,
    /// which goes to the waiting [`request`](Self::request) instead of to
    /// plugins; for a plain message it is a plain message to that peer.
    /// Answers reach non-writable peers too: they answer the peer rather than
    /// write to it unasked.
    pub async fn reply(&self, to: &Received, msg: Message) -> Result<SendReport, NetworkError> {
        self.check_size(&msg)?;
        let peer = to.peer;
        match to.request_id {
            Some(id) => {
                self.call(|reply| Command::Reply {
                    msg,
                    peer,
                    id,
                    reply,
                })
                .await?
            }
            None => {
                let targets = Targets::Connected(peer);
                self.call(|reply| Command::Send {
                    msg,
                    targets,
                    reply,
                })
                .await?
            }
        }
    }

    /// Replace the application bytes (at most 1024) this node sends in its
    /// handshakes from now on; peers see them in
    /// [`PeerInfo::handshake_payload`](crate::PeerInfo::handshake_payload). Plugins may call it from `startup`,
    /// e.g. to bind an application key to the node's static key. There is
    /// one payload per node: the application decides which plugin owns it.
    /// Default: [`Config::with_handshake_payload`], else empty.
    pub async fn set_handshake_payload(
        &self,
        payload: impl Into<Bytes>,
    ) -> Result<(), NetworkError> {
        let payload = payload.into();
        if payload.len() > crate::crypto::MAX_APP_PAYLOAD {
            return Err(NetworkError::HandshakePayloadTooLarge(payload.len()));
        }
        self.call(|reply| Command::SetHandshakePayload { payload, reply })
            .await
    }

    /// A snapshot of the node, its peers, plugins and counters.
    pub async fn network_state(&self) -> Result<NetworkState, NetworkError> {
        self.call(|reply| Command::State { reply }).await
    }

    /// Register a plugin; its `startup` fires once the node listens. The
    /// id it returns is what [`remove_plugin`](Self::remove_plugin) takes.
    pub async fn register_plugin(&self, plugin: impl Plugin) -> Result<PluginId, NetworkError> {
        self.register_with_counters(Box::new(plugin), Arc::default())
            .await
    }

    /// Register `plugin` sharing `counters` with its slot (what the
    /// receive streams use to report their drops in `network_state`).
    pub(crate) async fn register_with_counters(
        &self,
        plugin: Box<dyn Plugin>,
        counters: Arc<PluginCounters>,
    ) -> Result<PluginId, NetworkError> {
        let plugin = Registration::new(plugin, counters);
        let id = plugin.id;
        self.call(|reply| Command::RegisterPlugin { plugin, reply })
            .await?;
        Ok(id)
    }

    /// Take a plugin out of the node: once this returns it receives no
    /// further event (events still queued for it are discarded), its
    /// `close` hook runs on its own task, and it leaves
    /// `network_state().plugins`. The other plugins are untouched.
    ///
    /// Does not wait for `close` to finish, so a plugin may remove itself
    /// from inside one of its hooks. Returns whether `id` was registered
    /// (removing twice is harmless).
    pub async fn remove_plugin(&self, id: PluginId) -> Result<bool, NetworkError> {
        self.call(|reply| Command::RemovePlugin { id, reply }).await
    }

    /// [`remove_plugin`](Self::remove_plugin) from synchronous code (a
    /// `Drop`), without waiting for the answer.
    pub(crate) fn remove_plugin_soon(&self, id: PluginId) {
        let (reply, _) = oneshot::channel();
        match self.commands.try_send(Command::RemovePlugin { id, reply }) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A burst of commands: queue the removal behind it.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let net = self.clone();
                    rt.spawn(async move { net.remove_plugin(id).await });
                }
            }
        }
    }

    /// Graceful shutdown: flush queued messages, send close frames to every
    /// peer (waiting up to the close timeout for acknowledgements), call
    /// `close` on every plugin, and stop. Idempotent.
    pub async fn close(&self) -> Result<(), NetworkError> {
        match self.call(|reply| Command::Close { reply }).await {
            Ok(()) | Err(NetworkError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Anything that names one peer or bind address: a `SocketAddr`, or a
/// `"host:port"` string resolved through DNS.
pub trait ToPeerAddr: tokio::net::ToSocketAddrs + std::fmt::Debug {}
impl<T: tokio::net::ToSocketAddrs + std::fmt::Debug> ToPeerAddr for T {}

/// The first address `addr` names. A `SocketAddr` costs no lookup and no
/// allocation (requests take this path per call); the name is formatted
/// only for an error.
pub(crate) async fn resolve(addr: impl ToPeerAddr) -> Result<SocketAddr, NetworkError> {
    let error = |reason: String| NetworkError::Resolve {
        addr: format!("{addr:?}"),
        reason,
    };
    match tokio::net::lookup_host(&addr).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| error("no addresses".into())),
        Err(e) => Err(error(e.to_string())),
    }
}
