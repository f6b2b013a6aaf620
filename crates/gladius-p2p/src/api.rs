//! Types shared by the [`Network`](crate::Network) handle, the sans-IO
//! endpoint and the plugins: what a send reports, what a received message
//! carries, who a connected peer is, and the events a node produces.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::state::Direction;
use crate::wire::Message;

/// A received message with what the node knows about where it came from,
/// as plugins ([`Plugin::new_message`](crate::Plugin::new_message)) and
/// [`subscribe`](crate::Network::subscribe) streams get it.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Filter, Message, Network};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
/// let a_addr = a.listen("127.0.0.1:0").await?;
/// let b_addr = b.listen("127.0.0.1:0").await?;
/// let mut inbox = b.subscribe(Filter::All).await?;
/// a.add(b_addr).await?;
/// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
/// a.broadcast(Message::new("hello", "hi b")?).await?;
/// let got = inbox.next().await.expect("a message");
/// assert_eq!(got.message().sender(), Some(a_addr)); // authenticated
/// assert_eq!(got.peer(), a_addr);
/// assert!(!got.is_writable()); // b did not add a: b's broadcasts skip it
/// assert!(!got.is_request());
/// b.reply(&got, Message::new("hello", "hi a")?).await?; // answers reach it
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Received {
    pub(crate) message: Message,
    pub(crate) peer: SocketAddr,
    pub(crate) public_key: Option<PublicKey>,
    pub(crate) writable: bool,
    pub(crate) request_id: Option<u64>,
}

impl Received {
    /// The message (its `sender` is the peer's authenticated advertised address).
    pub fn message(&self) -> &Message {
        &self.message
    }
    /// The UDP address of the session it came over (the peer's active
    /// path).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The sender's static key, proven in the handshake of the session it
    /// came over; `None` in plaintext mode, where nothing is authenticated.
    /// The message's `sender` is the address the peer advertises; this is
    /// who it is.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.public_key
    }
    /// Whether the peer is writable (broadcasts reach it). Messages from
    /// unknown inbound peers arrive with `false`.
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// Whether the sender awaits an answer via [`Network::reply`](crate::Network::reply).
    pub fn is_request(&self) -> bool {
        self.request_id.is_some()
    }
}

/// A function the node's driver runs on every request whose type passes
/// its filter ([`Network::handle_requests`](crate::Network::handle_requests)):
/// `Some(reply)` answers the request at once, `None` passes it on to the
/// plugins and streams like any request.
pub type RequestHandler = dyn Fn(&Received) -> Option<Message> + Send + Sync + 'static;

/// Names one request handler, for
/// [`Network::remove_request_handler`](crate::Network::remove_request_handler).
/// Unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandlerId(pub(crate) u64);

impl RequestHandlerId {
    pub(crate) fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        RequestHandlerId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Who a newly connected peer is, as [`Plugin::peer_connected`](crate::Plugin::peer_connected) sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The UDP address of the session.
    pub addr: SocketAddr,
    /// The address it announced (its messages' `sender`).
    pub advertised: SocketAddr,
    /// Its static key, proven in the handshake; `None` in plaintext mode.
    pub public_key: Option<PublicKey>,
    /// The application bytes it sent in its handshake (empty if none or in
    /// plaintext mode).
    pub handshake_payload: Bytes,
    /// Whether broadcasts reach it.
    pub writable: bool,
    /// Who opened the session.
    pub direction: Direction,
}

/// A peer's active path moved (roaming): an authenticated, fresh datagram
/// of its session came from a new address, as
/// [`Plugin::path_changed`](crate::Plugin::path_changed) sees it. Encrypted
/// mode only. See `docs/nat.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// The peer, by the key its session proved.
    pub public_key: PublicKey,
    /// The path its datagrams came from and ours went to before (`None` if
    /// it had none).
    pub old: Option<SocketAddr>,
    /// The address they come from now, where ours go from now on.
    pub new: SocketAddr,
}

/// Why a message was not queued to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SendFailure {
    /// The peer's queue (queued + unacknowledged bytes) is full.
    #[error("the peer's send queue is full")]
    QueueFull,
    /// The peer has no session and is not in the route table.
    #[error("the peer is not connected")]
    NotConnected,
}

/// The outcome of a send: who got the message queued, who did not and why.
/// Nothing is dropped without appearing here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReport {
    /// Peers the message was queued to.
    pub queued: Vec<SocketAddr>,
    /// Peers it was not queued to.
    pub failed: Vec<(SocketAddr, SendFailure)>,
}

impl SendReport {
    /// True when every target got the message queued.
    pub fn all_queued(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Whom a send goes to.
#[derive(Debug)]
pub(crate) enum Targets {
    AllWritable,
    These(Vec<SocketAddr>),
    Random(usize),
    /// One peer, only over a session it already has.
    Connected(SocketAddr),
}

/// What the node tells its plugins (and, through them, the application)
/// about its peers and messages.
#[derive(Debug, Clone)]
pub(crate) enum NodeEvent {
    NodeAdded(SocketAddr),
    NodeDeleted(SocketAddr, PeerReason),
    PeerConnected(Arc<PeerInfo>),
    PeerRejected(SocketAddr, Arc<str>),
    /// A connection attempt to a route-table peer got no answer in time.
    ConnectFailed(SocketAddr, Arc<str>),
    PeerDisconnected(SocketAddr, PeerReason),
    /// Frames queued to a peer were dropped unsent: the peer was forgotten
    /// before a session to it came up.
    Abandoned(SocketAddr, u64),
    /// A peer roamed: its active path moved.
    PathChanged(PathChange),
    /// Hole punching with a relayed peer gave up: it stays relayed.
    PunchFailed(SocketAddr, PublicKey),
    Message(Arc<Received>),
}

/// Who asked for a change to the route table: the application (any handle
/// it holds) or a plugin (the handle its hooks get). Plugins may demote a
/// peer the application added, never remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    App,
    /// A plugin, by name.
    Plugin(Arc<str>),
}

/// Why a peer left the route table, or why its session ended: the reason
/// `node_deleted` and `peer_disconnected` carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerReason {
    /// The application deleted it.
    DeletedByUser,
    /// A plugin deleted it (one the plugins had added: discovery forgetting
    /// a dead peer, the latency audit judging it dead).
    DeletedByPlugin(String),
    /// This node closed the session (a delete, or its shutdown).
    ClosedLocally,
    /// The peer closed the session (it deleted us, or shut down).
    ClosedByPeer,
    /// The peer never answered our hello.
    ConnectTimeout,
    /// Nothing was heard for the idle timeout, or KCP gave up resending.
    IdleTimeout,
    /// The peer broke the protocol.
    ProtocolError,
    /// A new session with the same peer replaced this one (it restarted,
    /// or re-keyed).
    Replaced,
    /// The peer came back under a new key and took this entry over.
    KeyChanged,
}

impl std::fmt::Display for PeerReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerReason::DeletedByUser => f.write_str("deleted_by_user"),
            PeerReason::DeletedByPlugin(p) => write!(f, "deleted_by_plugin ({p})"),
            PeerReason::ClosedLocally => f.write_str("closed_locally"),
            PeerReason::ClosedByPeer => f.write_str("closed_by_peer"),
            PeerReason::ConnectTimeout => f.write_str("connect_timeout"),
            PeerReason::IdleTimeout => f.write_str("idle_timeout"),
            PeerReason::ProtocolError => f.write_str("protocol_error"),
            PeerReason::Replaced => f.write_str("replaced"),
            PeerReason::KeyChanged => f.write_str("key_changed"),
        }
    }
}
