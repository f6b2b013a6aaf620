//! Plugins: user code that sees every message and the node's lifecycle.
//!
//! # Order and threading
//! Each registered plugin runs on **its own tokio task** and receives events
//! through its own bounded queue ([`PLUGIN_QUEUE_LEN`] events and
//! [`PLUGIN_QUEUE_BYTES`] of message bodies), one hook call
//! at a time, in the order the node produced them:
//!
//! * `startup` first, once the plugin is registered *and* the node listens;
//! * then `node_added`, `node_deleted`, `peer_connected`,
//!   `peer_disconnected` and `new_message` as they happen — per peer,
//!   messages arrive in the order the peer sent them;
//! * `close` last, during [`Network::close`] or after
//!   [`Network::remove_plugin`].
//!
//! The node hands every event to the plugins in registration order, but
//! because each plugin has its own task, a slow plugin delays only itself.
//! Events reach a plugin's task in batches: what one wake-up of the node
//! produced (say the messages of a burst of datagrams) is one send on the
//! plugin's queue and one wake-up of its task, which then calls the hooks
//! one after the other. The bounds count events and bytes, not batches.
//! When a plugin's queue is full the event is dropped *for that plugin*,
//! counted in its [`PluginState::events_dropped`](crate::PluginState) and
//! logged; the transport never waits for a plugin. A hook that panics is
//! caught, counted in `panics`, and the plugin keeps receiving later events.
//!
//! # Removal
//! [`Network::register_plugin`] returns a [`PluginId`];
//! [`Network::remove_plugin`] takes the plugin out of the node: from the
//! moment it returns the plugin gets no further event (those still queued
//! for it are discarded), then its task calls `close` and ends. Removal
//! does not wait for `close`, so a hook may remove its own plugin (the hook
//! finishes, then `close` runs). Other plugins are untouched.
//!
//! The [`Network`] handle passed to hooks does not keep the node alive: when
//! the application drops its last handle the node shuts down even though
//! plugins still hold theirs (no reference cycle).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;

use crate::api::{NodeEvent, PathChange, PeerReason};
use crate::{Network, PeerInfo, Received};

/// Events one plugin may have waiting. Large enough to absorb bursts of
/// thousands of small messages; small enough that a stuck plugin holds at
/// most a few MiB of references.
pub const PLUGIN_QUEUE_LEN: usize = 8192;

/// Message body bytes one plugin may have waiting (64 MiB): past it, a
/// message is dropped for that plugin and counted in `events_dropped`, as
/// when the queue is full, so that large messages to a slow plugin cannot
/// grow memory by [`PLUGIN_QUEUE_LEN`] times their size.
pub const PLUGIN_QUEUE_BYTES: usize = 64 << 20;

/// The bytes an event holds for [`PLUGIN_QUEUE_BYTES`]: a message's body.
fn event_bytes(event: &NodeEvent) -> usize {
    match event {
        NodeEvent::Message(m) => m.message().body().len(),
        _ => 0,
    }
}

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
    async fn node_deleted(&self, _net: &Network, _addr: SocketAddr, _reason: &PeerReason) {}
    /// A session completed (handshake and hello): who the peer is, whether
    /// broadcasts will reach it, and what it put in its handshake. A plugin
    /// that vets peers (e.g. checks a signature in the handshake payload)
    /// promotes them with `add`/`set_writable` or drops them with `delete`.
    async fn peer_connected(&self, _net: &Network, _peer: &PeerInfo) {}
    /// A connection attempt to `addr` failed for a reason worth telling:
    /// the peer refused us (other encryption mode, pinned key) or its key
    /// did not match the one pinned.
    async fn peer_rejected(&self, _net: &Network, _addr: SocketAddr, _reason: &str) {}
    /// A connection attempt to `addr`, a route-table peer, got no answer
    /// in time (nothing listens there, or the path drops our packets). The
    /// node keeps retrying with backoff while the peer stays in the route
    /// table; this tells why it is not connected yet.
    async fn connect_failed(&self, _net: &Network, _addr: SocketAddr, _reason: &str) {}
    /// The session to `addr` ended.
    async fn peer_disconnected(&self, _net: &Network, _addr: SocketAddr, _reason: &PeerReason) {}
    /// `count` messages queued to `addr` were dropped unsent: the peer was
    /// forgotten (deleted, or never reachable) before a session to it came
    /// up. What was queued and what was delivered are told apart here.
    async fn messages_abandoned(&self, _net: &Network, _addr: SocketAddr, _count: u64) {}
    /// A peer's active path moved to a new address without a new
    /// handshake (roaming: its NAT rebound, or it moved to another
    /// network). Only an authenticated, fresh datagram of the peer's
    /// session moves a path. Encrypted mode only.
    async fn path_changed(&self, _net: &Network, _change: &PathChange) {}
    /// Hole punching with the peer at `addr` (its relay path), which proved
    /// `public_key`, gave up: the peer stays relayed. A successful punch is
    /// a [`path_changed`](Self::path_changed) from the relay path to a
    /// direct address. Encrypted mode only; see `docs/nat.md`.
    async fn punch_failed(
        &self,
        _net: &Network,
        _addr: SocketAddr,
        _public_key: &crate::PublicKey,
    ) {
    }
    /// A message (or a request; see [`Received::is_request`]) arrived.
    async fn new_message(&self, _net: &Network, _msg: &Received) {}
    /// Messages that reached this plugin together (in arrival order; the
    /// node hands over what one wake-up received). Return `true` if you
    /// handled them all here; the default returns `false`, and each then
    /// goes to [`new_message`](Self::new_message) on its own.
    ///
    /// Worth overriding for a plugin that does little per message: a
    /// hook call (and the boxed future `#[async_trait]` makes of it) per
    /// batch instead of per message. A panic here counts once in the
    /// plugin's `panics` and loses the rest of the batch for this plugin,
    /// where `new_message` loses only the message it panicked on.
    async fn new_messages(&self, _net: &Network, _msgs: &[Arc<Received>]) -> bool {
        false
    }
    /// The node is closing; the last hook called.
    async fn close(&self, _net: &Network) {}
}

/// Names one registered plugin, for [`Network::remove_plugin`]. Unique
/// within the process (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginId(u64);

impl PluginId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PluginId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for PluginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin#{}", self.0)
    }
}

/// A plugin on its way to the driver, with the id and counters it will
/// keep. Built by the handle so that the caller knows the id at once and
/// crate-internal plugins (the receive streams) can share the counters.
pub(crate) struct Registration {
    pub(crate) id: PluginId,
    pub(crate) plugin: Box<dyn Plugin>,
    pub(crate) counters: Arc<PluginCounters>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("name", &self.plugin.name())
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub(crate) fn new(plugin: Box<dyn Plugin>, counters: Arc<PluginCounters>) -> Self {
        Self {
            id: PluginId::next(),
            plugin,
            counters,
        }
    }
}

/// What the node tells a plugin's task.
#[derive(Debug)]
pub(crate) enum PluginEvent {
    Startup,
    Node(NodeEvent),
    Close,
}

/// What goes over a plugin's queue: `Startup`, `Close`, or the node's
/// events of one wake-up, in order.
#[derive(Debug)]
pub(crate) enum Queued {
    Startup,
    /// A batch of one, without a vector to allocate (a lone request).
    One(NodeEvent),
    Batch(Vec<NodeEvent>),
    Close,
}

/// Counters a plugin's task shares with the driver.
#[derive(Debug, Default)]
pub(crate) struct PluginCounters {
    pub(crate) events_dropped: AtomicU64,
    pub(crate) panics: AtomicU64,
    /// Message body bytes queued (see [`PLUGIN_QUEUE_BYTES`]).
    queued_bytes: AtomicUsize,
    /// Node events queued (see [`PLUGIN_QUEUE_LEN`]).
    queued_events: AtomicUsize,
    /// Set by [`PluginSlot::remove`]: the task skips what is still queued
    /// and runs `close`.
    removed: AtomicBool,
}

/// The driver's side of one registered plugin.
#[derive(Debug)]
pub(crate) struct PluginSlot {
    pub(crate) id: PluginId,
    pub(crate) name: String,
    pub(crate) tx: mpsc::Sender<Queued>,
    pub(crate) counters: Arc<PluginCounters>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) started: bool,
    /// Events of this wake-up not yet handed over (see
    /// [`hand_over`](Self::hand_over)), their body bytes, and the queue's
    /// fill when the batch began (an upper bound: the task only drains).
    batch: Vec<NodeEvent>,
    batch_bytes: usize,
    queued_at_start: (usize, usize),
}

impl PluginSlot {
    /// Start the plugin's task.
    pub(crate) fn spawn(registration: Registration, net: Network) -> Self {
        let Registration {
            id,
            plugin,
            counters,
        } = registration;
        let (tx, rx) = mpsc::channel(PLUGIN_QUEUE_LEN);
        let name = plugin.name().to_owned();
        let task = tokio::spawn(run(plugin, net, rx, counters.clone()));
        Self {
            id,
            name,
            tx,
            counters,
            task,
            started: false,
            batch: Vec::new(),
            batch_bytes: 0,
            queued_at_start: (0, 0),
        }
    }

    /// Queue an event without waiting. Node events join the current batch
    /// (sent by [`hand_over`](Self::hand_over)); `Startup` and `Close` go
    /// at once, after the batch. An event past [`PLUGIN_QUEUE_LEN`] events
    /// or [`PLUGIN_QUEUE_BYTES`] of bodies waiting (this batch included)
    /// is dropped for this plugin and counted.
    pub(crate) fn deliver(&mut self, event: PluginEvent) {
        let queued = match event {
            PluginEvent::Node(event) => return self.add_to_batch(event),
            PluginEvent::Startup => Queued::Startup,
            PluginEvent::Close => Queued::Close,
        };
        self.hand_over();
        if self.tx.try_send(queued).is_err() {
            self.dropped(1);
        }
    }

    fn add_to_batch(&mut self, event: NodeEvent) {
        if self.batch.is_empty() {
            self.queued_at_start = (
                self.counters.queued_events.load(Ordering::Acquire),
                self.counters.queued_bytes.load(Ordering::Acquire),
            );
        }
        let bytes = event_bytes(&event);
        let (events_before, bytes_before) = self.queued_at_start;
        let over_len = events_before + self.batch.len() >= PLUGIN_QUEUE_LEN;
        let over_bytes = bytes > 0 && bytes_before + self.batch_bytes + bytes > PLUGIN_QUEUE_BYTES;
        if over_len || over_bytes {
            return self.dropped(1);
        }
        self.batch_bytes += bytes;
        self.batch.push(event);
    }

    /// Send the batch of node events gathered since the last call: one
    /// queue send and at most one wake-up of the plugin's task for all of
    /// them. The driver calls it before every point where the task could
    /// run (a yield, a socket send that waits, the end of a wake-up).
    pub(crate) fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.batch_bytes);
        let n = self.batch.len();
        let queued = match self.batch.pop() {
            // The vector stays for the next batch.
            Some(event) if n == 1 => Queued::One(event),
            Some(event) => {
                self.batch.push(event);
                // The next batch is likely as long: one allocation for
                // it, not one per doubling.
                let next = Vec::with_capacity(n);
                Queued::Batch(std::mem::replace(&mut self.batch, next))
            }
            None => return,
        };
        // Counted before it is sent, so the task's subtraction never
        // comes first.
        self.counters.queued_events.fetch_add(n, Ordering::AcqRel);
        self.counters
            .queued_bytes
            .fetch_add(bytes, Ordering::AcqRel);
        if self.tx.try_send(queued).is_err() {
            self.counters.queued_events.fetch_sub(n, Ordering::AcqRel);
            self.counters
                .queued_bytes
                .fetch_sub(bytes, Ordering::AcqRel);
            self.dropped(n as u64);
        }
    }

    fn dropped(&self, n: u64) {
        self.counters.events_dropped.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(plugin = %self.name, events = n, "plugin queue full; event dropped");
    }

    /// Take the plugin out of the node: it sees no further event, and its
    /// task runs `close` (after any hook in progress) and ends. Dropping
    /// the slot closes the queue, which wakes an idle task.
    pub(crate) fn remove(self) {
        self.counters.removed.store(true, Ordering::Release);
    }
}

async fn run(
    plugin: Box<dyn Plugin>,
    net: Network,
    mut rx: mpsc::Receiver<Queued>,
    counters: Arc<PluginCounters>,
) {
    let mut closed = false;
    'queue: while let Some(queued) = rx.recv().await {
        let event = match queued {
            Queued::Startup => PluginEvent::Startup,
            Queued::Close => PluginEvent::Close,
            Queued::One(NodeEvent::Message(m)) => {
                // A lone message goes the way of a run of them, so a
                // plugin that takes runs (`new_messages`) gets every one.
                if counters.removed.load(Ordering::Acquire) {
                    counters.queued_events.fetch_sub(1, Ordering::AcqRel);
                    let bytes = m.message().body().len();
                    counters.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    break;
                }
                deliver_messages(plugin.as_ref(), &net, &counters, &mut vec![m]).await;
                continue;
            }
            Queued::One(event) => {
                counters.queued_events.fetch_sub(1, Ordering::AcqRel);
                counters
                    .queued_bytes
                    .fetch_sub(event_bytes(&event), Ordering::AcqRel);
                PluginEvent::Node(event)
            }
            Queued::Batch(events) => {
                // Consecutive messages go to `new_messages` together.
                let mut run: Vec<Arc<Received>> = Vec::new();
                for event in events {
                    if counters.removed.load(Ordering::Acquire) {
                        break 'queue;
                    }
                    match event {
                        NodeEvent::Message(m) => run.push(m),
                        event => {
                            deliver_messages(plugin.as_ref(), &net, &counters, &mut run).await;
                            // Each event counts until its hook runs, so the
                            // bounds hold while the task works through a
                            // batch.
                            counters.queued_events.fetch_sub(1, Ordering::AcqRel);
                            let call = node_event(plugin.as_ref(), &net, event);
                            guarded(plugin.as_ref(), &counters, call).await;
                        }
                    }
                }
                if !counters.removed.load(Ordering::Acquire) {
                    deliver_messages(plugin.as_ref(), &net, &counters, &mut run).await;
                }
                continue;
            }
        };
        if counters.removed.load(Ordering::Acquire) {
            break;
        }
        let is_close = matches!(event, PluginEvent::Close);
        closed |= is_close;
        let call = async {
            match event {
                PluginEvent::Startup => plugin.startup(&net).await,
                PluginEvent::Node(event) => node_event(plugin.as_ref(), &net, event).await,
                PluginEvent::Close => plugin.close(&net).await,
            }
        };
        guarded(plugin.as_ref(), &counters, call).await;
        if is_close {
            break;
        }
    }
    // Removed, or the node dropped the queue without a `Close` (it was
    // full): `close` is still the last hook, and it always runs.
    if !closed {
        guarded(plugin.as_ref(), &counters, plugin.close(&net)).await;
    }
}

/// Hand a run of messages to the plugin: to `new_messages` in one call,
/// or, if it does not take them, to `new_message` one by one. They stop
/// counting against the queue's bounds now.
async fn deliver_messages(
    plugin: &dyn Plugin,
    net: &Network,
    counters: &PluginCounters,
    run: &mut Vec<Arc<Received>>,
) {
    if run.is_empty() {
        return;
    }
    let bytes: usize = run.iter().map(|m| m.message().body().len()).sum();
    counters
        .queued_events
        .fetch_sub(run.len(), Ordering::AcqRel);
    if bytes > 0 {
        counters.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
    let taken = AssertUnwindSafe(plugin.new_messages(net, run))
        .catch_unwind()
        .await;
    match taken {
        Ok(true) => {}
        Ok(false) => {
            for m in run.iter() {
                if counters.removed.load(Ordering::Acquire) {
                    break;
                }
                guarded(plugin, counters, plugin.new_message(net, m)).await;
            }
        }
        Err(_) => {
            counters.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(plugin = plugin.name(), "plugin hook panicked");
        }
    }
    run.clear();
}

/// Call the hook that `event` is for.
async fn node_event(plugin: &dyn Plugin, net: &Network, event: NodeEvent) {
    match event {
        NodeEvent::NodeAdded(a) => plugin.node_added(net, a).await,
        NodeEvent::NodeDeleted(a, why) => plugin.node_deleted(net, a, &why).await,
        NodeEvent::PeerConnected(p) => plugin.peer_connected(net, &p).await,
        NodeEvent::PeerRejected(a, r) => plugin.peer_rejected(net, a, &r).await,
        NodeEvent::ConnectFailed(a, r) => plugin.connect_failed(net, a, &r).await,
        NodeEvent::PeerDisconnected(a, why) => plugin.peer_disconnected(net, a, &why).await,
        NodeEvent::Abandoned(a, n) => plugin.messages_abandoned(net, a, n).await,
        NodeEvent::PathChanged(c) => plugin.path_changed(net, &c).await,
        NodeEvent::PunchFailed(a, k) => plugin.punch_failed(net, a, &k).await,
        NodeEvent::Message(m) => plugin.new_message(net, &m).await,
    }
}

/// Run one hook, catching and counting a panic.
async fn guarded(
    plugin: &dyn Plugin,
    counters: &PluginCounters,
    call: impl std::future::Future<Output = ()>,
) {
    if AssertUnwindSafe(call).catch_unwind().await.is_err() {
        counters.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(plugin = plugin.name(), "plugin hook panicked");
    }
}
