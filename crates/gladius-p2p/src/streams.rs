//! Receive streams: messages and peer events for an application that is not
//! a plugin.
//!
//! [`Network::subscribe`] and [`Network::events`] register a small internal
//! plugin (through the same public mechanism as any other) that forwards
//! what it gets into a bounded channel; the [`Subscription`] returned is the
//! channel's receiving end, an async [`Stream`]. The forwarder never waits
//! for the reader: when the channel is full the newest item is dropped and
//! counted ([`Subscription::dropped`], and the plugin's `events_dropped` in
//! `network_state().plugins`), so a stalled reader costs bounded memory and
//! never slows the node. Dropping the subscription removes its plugin.
//!
//! [`Subscription::channel`] gives the same bounded, counting channel
//! without a plugin, for other crates' notification streams (the signed
//! state's entry stream is one).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::plugin::{PluginCounters, PluginId};
use crate::{
    async_trait, Network, NetworkError, PathChange, PeerInfo, PeerReason, Plugin, Received,
};

/// Items a [`Subscription`] holds for its reader by default. A reader that
/// keeps up never sees it; one that stalls loses what comes after (counted)
/// instead of holding the node's memory: at most this many messages, each
/// at most `max_message_size`.
pub const SUBSCRIPTION_QUEUE_LEN: usize = 1024;

/// Which messages a [`Network::subscribe`] stream gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filter {
    /// Every message and request.
    All,
    /// Those whose type starts with this prefix (`"chat"` matches `"chat"`
    /// and `"chat.room1"`).
    TypePrefix(String),
}

impl Filter {
    /// Messages whose type starts with `prefix`.
    pub fn type_prefix(prefix: impl Into<String>) -> Self {
        Filter::TypePrefix(prefix.into())
    }

    /// Whether a message of type `msg_type` passes.
    pub fn matches(&self, msg_type: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::TypePrefix(p) => msg_type.starts_with(p.as_str()),
        }
    }

    /// Whether `message` passes (its type is not checked for UTF-8 again).
    pub fn matches_message(&self, message: &crate::Message) -> bool {
        match self {
            Filter::All => true,
            Filter::TypePrefix(p) => message.type_starts_with(p),
        }
    }
}

/// A change in the node's peers, as [`Network::events`] reports it: the
/// plugin hooks of the same names, as values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A peer entered the route table (writable).
    Added(SocketAddr),
    /// A peer left the route table, and why.
    Deleted(SocketAddr, PeerReason),
    /// A session completed: who the peer is and whether it is writable.
    Connected(PeerInfo),
    /// The session to this peer ended, and why.
    Disconnected(SocketAddr, PeerReason),
    /// A route-table peer did not answer a connection attempt (the node
    /// keeps retrying with backoff).
    ConnectFailed {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Messages queued to a peer were dropped unsent: it was forgotten
    /// before a session to it came up.
    Abandoned {
        /// The peer.
        addr: SocketAddr,
        /// How many messages.
        count: u64,
    },
    /// The peer's active path moved to a new address (roaming), without a
    /// new handshake.
    PathChanged(PathChange),
    /// Hole punching with a relayed peer gave up: it stays relayed (a
    /// successful punch is a `PathChanged` from the relay path to a direct
    /// address). See `docs/nat.md`.
    PunchFailed {
        /// The peer, by its relay path.
        addr: SocketAddr,
        /// The key its session proved.
        public_key: crate::PublicKey,
    },
    /// A connection attempt failed for a reason worth telling (the peer
    /// refused us, or its key was not the pinned one).
    Rejected {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl PeerEvent {
    /// The peer the event is about.
    pub fn addr(&self) -> SocketAddr {
        match self {
            PeerEvent::Added(a) | PeerEvent::Deleted(a, _) | PeerEvent::Disconnected(a, _) => *a,
            PeerEvent::Connected(info) => info.addr,
            PeerEvent::PathChanged(change) => change.new,
            PeerEvent::Rejected { addr, .. }
            | PeerEvent::PunchFailed { addr, .. }
            | PeerEvent::ConnectFailed { addr, .. }
            | PeerEvent::Abandoned { addr, .. } => *addr,
        }
    }
}

/// The sending end of a [`Subscription::channel`]: never waits, drops and
/// counts what does not fit.
#[derive(Debug)]
pub struct Feed<T> {
    tx: mpsc::Sender<T>,
    counters: Arc<PluginCounters>,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> Feed<T> {
    /// Queue `item` for the reader. Returns false when it was not queued:
    /// the channel is full (the item is dropped and counted) or the reader
    /// is gone (see [`is_closed`](Self::is_closed)).
    pub fn send(&self, item: T) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the reader dropped its [`Subscription`].
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A bounded stream of `T` ([`Received`] messages, [`PeerEvent`]s, or a
/// plugin's notifications). Read it with `next().await` (inherent, no
/// import needed) or as a [`futures_util::Stream`]; it ends when its source
/// does (the node closed, the plugin was removed). Dropping it unregisters
/// the forwarding plugin, if any.
#[derive(Debug)]
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    counters: Arc<PluginCounters>,
    /// The forwarding plugin to remove on drop.
    plugin: Option<(Network, PluginId)>,
}

impl<T> Subscription<T> {
    /// A bounded channel of `capacity` items (at least 1): the [`Feed`] to
    /// send with and the subscription to read from.
    pub fn channel(capacity: usize) -> (Feed<T>, Subscription<T>) {
        Self::with_counters(capacity, Arc::default())
    }

    fn with_counters(capacity: usize, counters: Arc<PluginCounters>) -> (Feed<T>, Self) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let feed = Feed {
            tx,
            counters: counters.clone(),
        };
        let sub = Subscription {
            rx,
            counters,
            plugin: None,
        };
        (feed, sub)
    }

    /// The next item, or `None` once the source has ended and everything
    /// queued was read.
    pub async fn next(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// The next item if one is queued now.
    pub fn try_next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Items lost because the reader lagged: the channel was full (or, for
    /// node streams, the forwarding plugin's own queue was).
    pub fn dropped(&self) -> u64 {
        self.counters.events_dropped.load(Ordering::Relaxed)
    }

    /// The id of the forwarding plugin, for node streams (what
    /// `network_state().plugins` lists it under, by its name).
    pub fn plugin_id(&self) -> Option<PluginId> {
        self.plugin.as_ref().map(|(_, id)| *id)
    }
}

impl<T> Stream for Subscription<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some((net, id)) = self.plugin.take() {
            net.remove_plugin_soon(id);
        }
    }
}

/// Forwards matching messages into a [`Feed`].
struct MessageForwarder {
    name: String,
    filter: Filter,
    feed: Feed<Received>,
}

#[async_trait]
impl Plugin for MessageForwarder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn new_message(&self, _net: &Network, msg: &Received) {
        if self.filter.matches_message(msg.message()) {
            self.feed.send(msg.clone());
        }
    }
}

/// Forwards peer events into a [`Feed`].
struct EventForwarder {
    feed: Feed<PeerEvent>,
}

#[async_trait]
impl Plugin for EventForwarder {
    fn name(&self) -> &str {
        "events"
    }

    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        self.feed.send(PeerEvent::Added(addr));
    }

    async fn node_deleted(&self, _net: &Network, addr: SocketAddr, reason: &PeerReason) {
        self.feed.send(PeerEvent::Deleted(addr, reason.clone()));
    }

    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        self.feed.send(PeerEvent::Connected(peer.clone()));
    }

    async fn peer_rejected(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        let reason = reason.to_owned();
        self.feed.send(PeerEvent::Rejected { addr, reason });
    }

    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr, reason: &PeerReason) {
        self.feed
            .send(PeerEvent::Disconnected(addr, reason.clone()));
    }

    async fn connect_failed(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        let reason = reason.to_owned();
        self.feed.send(PeerEvent::ConnectFailed { addr, reason });
    }

    async fn messages_abandoned(&self, _net: &Network, addr: SocketAddr, count: u64) {
        self.feed.send(PeerEvent::Abandoned { addr, count });
    }

    async fn path_changed(&self, _net: &Network, change: &PathChange) {
        self.feed.send(PeerEvent::PathChanged(change.clone()));
    }

    async fn punch_failed(&self, _net: &Network, addr: SocketAddr, public_key: &crate::PublicKey) {
        self.feed.send(PeerEvent::PunchFailed {
            addr,
            public_key: *public_key,
        });
    }
}

impl Network {
    /// Receive messages without writing a plugin: every message (and
    /// request; answer it with [`reply`](Self::reply)) that passes `filter`,
    /// from the moment this returns, in the order the node hands them to
    /// plugins (per peer, send order). Holds up to
    /// [`SUBSCRIPTION_QUEUE_LEN`] messages for a slow reader, then drops and
    /// counts ([`Subscription::dropped`]). Replies to this node's own
    /// requests go to [`request`](Self::request), not here.
    ///
    /// ```
    /// use gladius_p2p::{Config, Filter, Message, Network};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
    /// a.listen("127.0.0.1:0").await?;
    /// let b_addr = b.listen("127.0.0.1:0").await?;
    /// let mut inbox = b.subscribe(Filter::type_prefix("chat")).await?;
    /// a.add(b_addr).await?;
    /// a.wait_connected(b_addr, std::time::Duration::from_secs(5)).await?;
    /// a.broadcast(Message::new("chat", "hello")?).await?;
    /// while let Some(msg) = inbox.next().await {
    ///     assert_eq!(msg.message().body(), "hello");
    ///     break;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, filter: Filter) -> Result<Subscription<Received>, NetworkError> {
        self.subscribe_bounded(filter, SUBSCRIPTION_QUEUE_LEN).await
    }

    /// [`subscribe`](Self::subscribe) holding up to `capacity` messages.
    pub async fn subscribe_bounded(
        &self,
        filter: Filter,
        capacity: usize,
    ) -> Result<Subscription<Received>, NetworkError> {
        let name = match &filter {
            Filter::All => "subscribe".to_owned(),
            Filter::TypePrefix(p) => format!("subscribe:{p}"),
        };
        let (feed, sub) = Subscription::with_counters(capacity, Arc::default());
        let plugin = MessageForwarder { name, filter, feed };
        self.register_stream(Box::new(plugin), sub).await
    }

    /// Peer events (added, deleted, connected, disconnected, rejected) from
    /// the moment this returns, bounded like [`subscribe`](Self::subscribe).
    ///
    /// ```
    /// use gladius_p2p::{Config, Network, PeerEvent};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
    /// a.listen("127.0.0.1:0").await?;
    /// let b_addr = b.listen("127.0.0.1:0").await?;
    /// let mut events = a.events().await?;
    /// a.add(b_addr).await?;
    /// while let Some(event) = events.next().await {
    ///     if let PeerEvent::Connected(peer) = event {
    ///         assert_eq!(peer.addr, b_addr);
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn events(&self) -> Result<Subscription<PeerEvent>, NetworkError> {
        let (feed, sub) = Subscription::with_counters(SUBSCRIPTION_QUEUE_LEN, Arc::default());
        self.register_stream(Box::new(EventForwarder { feed }), sub)
            .await
    }

    async fn register_stream<T>(
        &self,
        plugin: Box<dyn Plugin>,
        mut sub: Subscription<T>,
    ) -> Result<Subscription<T>, NetworkError> {
        let id = self
            .register_with_counters(plugin, sub.counters.clone())
            .await?;
        // A weak handle: a subscription must not keep the node alive.
        sub.plugin = Some((self.downgrade(), id));
        Ok(sub)
    }
}
