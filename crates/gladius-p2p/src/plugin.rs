//! Plugins: user code that sees every message and the node's lifecycle.
//!
//! # Order and threading
//! Each registered plugin runs on **its own tokio task** and receives events
//! through its own bounded queue ([`PLUGIN_QUEUE_LEN`] events), one hook call
//! at a time, in the order the node produced them:
//!
//! * `startup` first, once the plugin is registered *and* the node listens;
//! * then `node_added`, `node_deleted`, `peer_connected`,
//!   `peer_disconnected` and `new_message` as they happen — per peer,
//!   messages arrive in the order the peer sent them;
//! * `close` last, during [`Network::close`].
//!
//! The node hands every event to the plugins in registration order, but
//! because each plugin has its own task, a slow plugin delays only itself.
//! When a plugin's queue is full the event is dropped *for that plugin*,
//! counted in its [`PluginState::events_dropped`](crate::PluginState) and
//! logged; the transport never waits for a plugin. A hook that panics is
//! caught, counted in `panics`, and the plugin keeps receiving later events.
//!
//! The [`Network`] handle passed to hooks does not keep the node alive: when
//! the application drops its last handle the node shuts down even though
//! plugins still hold theirs (no reference cycle).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;

use crate::api::NodeEvent;
use crate::{Network, PeerInfo, Received};

/// Events one plugin may have waiting. Large enough to absorb bursts of
/// thousands of small messages; small enough that a stuck plugin holds at
/// most a few MiB of references.
pub const PLUGIN_QUEUE_LEN: usize = 8192;

/// A plugin. Every hook has a no-op default; implement the ones you need
/// with `#[async_trait]`.
///
/// ```
/// use gladius_p2p::{async_trait, Network, Plugin, Received};
///
/// struct Logger;
///
/// #[async_trait]
/// impl Plugin for Logger {
///     fn name(&self) -> &str { "logger" }
///     async fn new_message(&self, _net: &Network, msg: &Received) {
///         println!("{} from {}", msg.message().msg_type(), msg.peer());
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// A short name shown in `network_state`.
    fn name(&self) -> &str;
    /// The plugin is live: registered and the node is listening.
    async fn startup(&self, _net: &Network) {}
    /// A peer entered the route table (as writable).
    async fn node_added(&self, _net: &Network, _addr: SocketAddr) {}
    /// A peer left the route table.
    async fn node_deleted(&self, _net: &Network, _addr: SocketAddr) {}
    /// A session completed (handshake and hello): who the peer is, whether
    /// broadcasts will reach it, and what it put in its handshake. A plugin
    /// that vets peers (e.g. checks a signature in the handshake payload)
    /// promotes them with `add`/`set_writable` or drops them with `delete`.
    async fn peer_connected(&self, _net: &Network, _peer: &PeerInfo) {}
    /// A connection attempt to `addr` failed for a reason worth telling:
    /// the peer refused us (other encryption mode, pinned key) or its key
    /// did not match the one pinned.
    async fn peer_rejected(&self, _net: &Network, _addr: SocketAddr, _reason: &str) {}
    /// The session to `addr` ended.
    async fn peer_disconnected(&self, _net: &Network, _addr: SocketAddr) {}
    /// A message (or a request; see [`Received::is_request`]) arrived.
    async fn new_message(&self, _net: &Network, _msg: &Received) {}
    /// The node is closing; the last hook called.
    async fn close(&self, _net: &Network) {}
}

/// What the node tells a plugin's task.
#[derive(Debug)]
pub(crate) enum PluginEvent {
    Startup,
    Node(NodeEvent),
    Close,
}

/// Counters a plugin's task shares with the driver.
#[derive(Debug, Default)]
pub(crate) struct PluginCounters {
    pub(crate) events_dropped: AtomicU64,
    pub(crate) panics: AtomicU64,
}

/// The driver's side of one registered plugin.
#[derive(Debug)]
pub(crate) struct PluginSlot {
    pub(crate) name: String,
    pub(crate) tx: mpsc::Sender<PluginEvent>,
    pub(crate) counters: Arc<PluginCounters>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) started: bool,
}

impl PluginSlot {
    /// Start the plugin's task.
    pub(crate) fn spawn(plugin: Box<dyn Plugin>, net: Network) -> Self {
        let (tx, rx) = mpsc::channel(PLUGIN_QUEUE_LEN);
        let counters = Arc::new(PluginCounters::default());
        let name = plugin.name().to_owned();
        let task = tokio::spawn(run(plugin, net, rx, counters.clone()));
        Self {
            name,
            tx,
            counters,
            task,
            started: false,
        }
    }

    /// Queue an event without waiting; a full queue drops it and counts.
    pub(crate) fn deliver(&self, event: PluginEvent) {
        if self.tx.try_send(event).is_err() {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, "plugin queue full; event dropped");
        }
    }
}

async fn run(
    plugin: Box<dyn Plugin>,
    net: Network,
    mut rx: mpsc::Receiver<PluginEvent>,
    counters: Arc<PluginCounters>,
) {
    while let Some(event) = rx.recv().await {
        let is_close = matches!(event, PluginEvent::Close);
        let call = async {
            match event {
                PluginEvent::Startup => plugin.startup(&net).await,
                PluginEvent::Node(event) => match event {
                    NodeEvent::NodeAdded(a) => plugin.node_added(&net, a).await,
                    NodeEvent::NodeDeleted(a) => plugin.node_deleted(&net, a).await,
                    NodeEvent::PeerConnected(p) => plugin.peer_connected(&net, &p).await,
                    NodeEvent::PeerRejected(a, r) => plugin.peer_rejected(&net, a, &r).await,
                    NodeEvent::PeerDisconnected(a) => plugin.peer_disconnected(&net, a).await,
                    NodeEvent::Message(m) => plugin.new_message(&net, &m).await,
                },
                PluginEvent::Close => plugin.close(&net).await,
            }
        };
        if AssertUnwindSafe(call).catch_unwind().await.is_err() {
            counters.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(plugin = plugin.name(), "plugin hook panicked");
        }
        if is_close {
            break;
        }
    }
}
