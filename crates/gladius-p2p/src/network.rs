//! The public handle: a cheap `Clone` that sends commands to the node's
//! driver task over a bounded channel and awaits the answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use bytes::Bytes;

use crate::api::{Received, SendReport, Targets};
use crate::crypto::PublicKey;
use crate::driver::{Command, Driver};
use crate::error::{NetworkError, RequestError};
use crate::socket::DatagramSocket;
use crate::state::NetworkState;
use crate::wire::Message;
use crate::{Config, ConfigError, Plugin};

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
#[derive(Debug, Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    /// Present in application handles only; see [`Network::downgrade`].
    _live: Option<Arc<LiveGuard>>,
    config: Arc<Config>,
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
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let plugin_handle = Network {
            commands: commands.clone(),
            _live: None,
            config: config.clone(),
        };
        Driver::spawn(config.clone(), rx, shutdown_rx, plugin_handle);
        Ok(Self {
            commands,
            _live: Some(Arc::new(LiveGuard {
                _shutdown: shutdown_tx,
            })),
            config,
        })
    }

    /// A handle that does not keep the node alive (what plugins get).
    pub fn downgrade(&self) -> Network {
        Network {
            commands: self.commands.clone(),
            _live: None,
            config: self.config.clone(),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Closed)?;
        rx.await.map_err(|_| NetworkError::Closed)
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
        self.call(|reply| Command::Add {
            addr,
            key: None,
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
        self.call(|reply| Command::Add {
            addr,
            key: Some(key),
            reply,
        })
        .await??;
        Ok(addr)
    }

    /// Close the session to `addr` gracefully, remove it from the route
    /// table and fire `node_deleted`. Idempotent.
    pub async fn delete(&self, addr: SocketAddr) -> Result<(), NetworkError> {
        self.call(|reply| Command::Delete { addr, reply }).await
    }

    /// Make a known peer writable or not without changing the route table.
    pub async fn set_writable(&self, addr: SocketAddr, writable: bool) -> Result<(), NetworkError> {
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
    /// answer a [`SendFailure::QueueFull`] without polling. Returns at once
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
        peer: SocketAddr,
        msg: &Message,
        timeout: Duration,
    ) -> Result<(), NetworkError> {
        self.check_size(msg)?;
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
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Received, RequestError> {
        self.check_size(&msg)?;
        let (answer, reply) = oneshot::channel();
        self.commands
            .send(Command::Request {
                msg,
                peer,
                timeout,
                answer,
            })
            .await
            .map_err(|_| NetworkError::Closed)?;
        // The driver answers by the deadline (its timer), so no second
        // timer is needed here.
        reply.await.map_err(|_| NetworkError::Closed)?
    }

    /// Answer a message received in `new_message`, over the session it came
    /// on, never opening a new one (a peer that is gone gets
    /// [`SendFailure::NotConnected`]). For a request the answer is its reply,
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
    /// [`PeerInfo::handshake_payload`]. Plugins may call it from `startup`,
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

    /// Register a plugin; its `startup` fires once the node listens.
    pub async fn register_plugin(&self, plugin: impl Plugin) -> Result<(), NetworkError> {
        let plugin: Box<dyn Plugin> = Box::new(plugin);
        self.call(|reply| Command::RegisterPlugin { plugin, reply })
            .await
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

async fn resolve(addr: impl ToPeerAddr) -> Result<SocketAddr, NetworkError> {
    let name = format!("{addr:?}");
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| NetworkError::Resolve {
            addr: name.clone(),
            reason: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| NetworkError::Resolve {
        addr: name,
        reason: "no addresses".into(),
    })
}
