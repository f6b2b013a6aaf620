//! # Gossip: publish/subscribe over the whole network
//!
//! `broadcast` reaches one hop. This plugin carries a message to every
//! node subscribed to its topic, however far, each copy once: per topic,
//! the subscribed peers of each node form an **epidemic broadcast tree**
//! (PlumTree: eager push on tree links, lazy `ihave` announcements on the
//! others, `graft` to repair, `prune` to remove cycles). Every message is
//! **signed by its origin** (Ed25519) and verified at every hop before it
//! is delivered or forwarded.
//!
//! ```no_run
//! use gladius_p2p::{Config, Network};
//! use gladius_plugins::gossip::{Gossip, GossipConfig, GossipKey};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let net = Network::new(Config::default())?;
//! let (plugin, gossip) = Gossip::new(GossipKey::generate(), GossipConfig::default());
//! net.register_plugin(plugin).await?;
//! net.listen("127.0.0.1:7001").await?;
//! net.add("127.0.0.1:7002").await?;
//! let mut news = gossip.subscribe("news").await?;
//! let id = gossip.publish("news", "hello, everyone").await?;
//! while let Some(m) = news.recv().await {
//!     println!("{} from {} after {} hops: {:?}", m.id, m.origin, m.hops, m.body);
//! }
//! # let _ = id; Ok(()) }
//! ```
//!
//! ## Layers
//!
//! * [`proto`] — the protocol as a sans-IO state machine
//!   ([`proto::State`]): `(now, event)` in, frames, timers and deliveries
//!   out, randomness from a seed. Everything the protocol decides is
//!   there, and it is what `sim` (feature `sim`) and `gladius-sim` drive.
//! * [`wire`] — the frames and their parser (fuzzed).
//! * [`key`] — origin keys, ids and signatures.
//! * this module — the plugin shell: it feeds the state machine the
//!   node's peers (as `peer_connected`/`peer_disconnected` report them)
//!   and their `gossip.frame` messages, sends what it emits with
//!   `broadcast_to`, runs its timers on tokio's clock (so
//!   `tokio::time::pause` drives it) and hands deliveries to subscribers.
//!
//! ## Membership
//!
//! A topic's neighbours are the node's connected peers that are subscribed
//! to it: the route table discovery maintains (its `table_size`) is the
//! view. A node forwards only the topics it is subscribed to; there is no
//! relay mode, so the subscribers of a topic must be connected through
//! each other (with discovery's random peer exchange they are, unless the
//! topic's subscribers are a small fraction of a large network). See
//! `docs/gossip.md` for why this rather than a HyParView overlay.
//!
//! ## Threading
//!
//! Hooks run on the plugin's task; timers on a task spawned at `startup`
//! and stopped at `close`; handle calls on the caller's task. All share
//! the state machine behind a mutex never held across an `.await`, and
//! send in turn (an async mutex), so frames to a peer leave in the order
//! the state machine emitted them.

pub mod config;
pub mod key;
pub mod proto;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod wire;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gladius_p2p::{
    async_trait, ConnectionState, Message, Network, PeerInfo, PeerReason, Plugin, Received,
};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::background::Background;

pub use config::GossipConfig;
pub use key::{GossipKey, GossipKeyError, MessageId, Origin};
pub use proto::{Counters, GossipMessage, PublishError, SubscribeError, TopicInfo};
pub use wire::{Topic, TopicError};

use proto::{InEvent, State, Timer, Transmit};

/// The gossip plugin. Create it with [`Gossip::new`] and register it with
/// [`Network::register_plugin`].
#[derive(Debug)]
pub struct Gossip {
    inner: Arc<Inner>,
}

/// A cheap, cloneable handle to subscribe, publish and read counters.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    inner: Arc<Inner>,
}

/// Why a handle call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// The topic name is empty or longer than 255 bytes.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The body is too large.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Too many topics.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// The state machine's counters and the shell's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GossipStats {
    /// What the protocol did and refused.
    #[serde(flatten)]
    pub protocol: Counters,
    /// Deliveries dropped because a subscriber's queue was full.
    pub subscriber_overflow: u64,
    /// Frames the node could not queue to a peer (full queue, gone).
    pub send_failures: u64,
}

/// A subscription: the messages of one topic, in arrival order. Also a
/// [`futures_util::Stream`]. Dropping every subscription of a topic
/// leaves the topic at the next message for it (or call
/// [`GossipHandle::unsubscribe`]).
#[derive(Debug)]
pub struct Subscription {
    topic: Topic,
    rx: mpsc::Receiver<GossipMessage>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
    /// The next message; `None` once unsubscribed or the node is gone.
    pub async fn recv(&mut self) -> Option<GossipMessage> {
        self.rx.recv().await
    }
    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<GossipMessage> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Subscription {
    type Item = GossipMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GossipMessage>> {
        self.rx.poll_recv(cx)
    }
}

#[derive(Debug)]
struct Shared {
    state: State<SocketAddr>,
    timers: BinaryHeap<Reverse<(u64, Timer)>>,
    subscribers: HashMap<Topic, Vec<mpsc::Sender<GossipMessage>>>,
    subscriber_overflow: u64,
    send_failures: u64,
    net: Option<Network>,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    /// Held while emitting, so frames leave in the order they were made.
    sending: tokio::sync::Mutex<()>,
    timer_changed: Notify,
    ticker: Background,
    /// Refreshes the peers' round-trip times (for shortcut pushes).
    rtt_refresh: Background,
    /// Unix ms at `base`; `now_ms` follows tokio's clock from there.
    base_unix_ms: u64,
    base: Instant,
    origin: Origin,
    subscriber_queue: usize,
}

impl Inner {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Every method finishes its bookkeeping before returning, so a
        // panic while holding the lock leaves consistent data.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unix milliseconds by tokio's clock (paused in tests).
    fn now_ms(&self) -> u64 {
        let since = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_unix_ms.saturating_add(since)
    }

    /// Run `f` on the state machine, then send what it emitted, set its
    /// timers and hand out its deliveries.
    async fn step<R>(&self, f: impl FnOnce(&mut State<SocketAddr>, u64) -> R) -> R {
        let _order = self.sending.lock().await;
        let (result, transmits, net) = {
            let mut s = self.shared();
            let result = f(&mut s.state, self.now_ms());
            // Deliveries first: one may leave a topic whose subscribers
            // are all gone, and its frames go out with the rest.
            while let Some(m) = s.state.poll_delivery() {
                s.deliver(m);
            }
            let mut transmits = Vec::new();
            while let Some(t) = s.state.poll_transmit() {
                transmits.push(t);
            }
            let mut new_timer = false;
            while let Some((at, timer)) = s.state.poll_timer() {
                s.timers.push(Reverse((at, timer)));
                new_timer = true;
            }
            if new_timer {
                self.timer_changed.notify_one();
            }
            (result, transmits, s.net.clone())
        };
        if let Some(net) = net {
            let failures = send_all(&net, transmits).await;
            self.shared().send_failures += failures;
        }
        result
    }
}

impl Shared {
    fn deliver(&mut self, m: GossipMessage) {
        let topic = m.topic.clone();
        let Some(subs) = self.subscribers.get_mut(&topic) else {
            return;
        };
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            if tx.try_send(m.clone()).is_err() {
                self.subscriber_overflow += 1;
            }
        }
        if subs.is_empty() {
            // Every subscription was dropped: leave the topic.
            self.subscribers.remove(&topic);
            self.state.unsubscribe(0, &topic);
        }
    }
}

/// Send frames, one `broadcast_to` per run of equal frames (an eager push
/// or an announcement goes to many peers as one call). Returns how many
/// (peer, frame) pairs could not be queued.
async fn send_all(net: &Network, transmits: Vec<Transmit<SocketAddr>>) -> u64 {
    let mut failures = 0;
    let mut i = 0;
    while i < transmits.len() {
        let frame = transmits[i].frame.clone();
        let mut peers = vec![transmits[i].to];
        i += 1;
        while i < transmits.len() && transmits[i].frame == frame {
            peers.push(transmits[i].to);
            i += 1;
        }
        let Ok(msg) = Message::new(wire::MESSAGE_TYPE, frame) else {
            failures += peers.len() as u64;
            continue;
        };
        match net.broadcast_to(msg, &peers).await {
            Ok(report) => failures += report.failed.len() as u64,
            Err(e) => {
                tracing::debug!(%e, "gossip frames not sent");
                failures += peers.len() as u64;
            }
        }
    }
    failures
}

impl Gossip {
    /// The plugin, publishing as `key`, and a handle to use it.
    pub fn new(key: GossipKey, config: GossipConfig) -> (Gossip, GossipHandle) {
        let now_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::with_clock(key, config, now_unix_ms)
    }

    /// Like [`new`](Self::new), but the plugin's clock reads `now_unix_ms`
    /// now and follows tokio's clock from there, instead of the system
    /// clock: in a simulation in virtual time, with
    /// [`GossipConfig::rng_seed`] set, message timestamps and ids repeat
    /// from run to run. Timestamps are checked against the TTL and the
    /// clock skew, so every node of a network needs the same base.
    pub fn with_clock(
        key: GossipKey,
        config: GossipConfig,
        now_unix_ms: u64,
    ) -> (Gossip, GossipHandle) {
        let origin = key.origin();
        let subscriber_queue = config.subscriber_queue.max(1);
        let base_unix_ms = now_unix_ms;
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared {
                state: State::new(key, config, seed),
                timers: BinaryHeap::new(),
                subscribers: HashMap::new(),
                subscriber_overflow: 0,
                send_failures: 0,
                net: None,
            }),
            sending: tokio::sync::Mutex::new(()),
            timer_changed: Notify::new(),
            ticker: Background::default(),
            rtt_refresh: Background::default(),
            base_unix_ms,
            base: Instant::now(),
            origin,
            subscriber_queue,
        });
        (
            Gossip {
                inner: inner.clone(),
            },
            GossipHandle { inner },
        )
    }

    /// Another handle to this plugin.
    pub fn handle(&self) -> GossipHandle {
        GossipHandle {
            inner: self.inner.clone(),
        }
    }
}

impl GossipHandle {
    /// Join `topic` (if not yet) and get a new stream of its messages.
    /// Messages published before the call are not replayed.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, GossipError> {
        let topic = Topic::new(topic)?;
        let (tx, rx) = mpsc::channel(self.inner.subscriber_queue);
        // Listen before joining, so no message of the topic slips past.
        self.inner
            .shared()
            .subscribers
            .entry(topic.clone())
            .or_default()
            .push(tx);
        let t = topic.clone();
        if let Err(e) = self.inner.step(|s, now| s.subscribe(now, t)).await {
            drop(rx);
            let mut shared = self.inner.shared();
            if let Some(subs) = shared.subscribers.get_mut(&topic) {
                subs.retain(|tx| !tx.is_closed());
                if subs.is_empty() {
                    shared.subscribers.remove(&topic);
                }
            }
            return Err(e.into());
        }
        Ok(Subscription { topic, rx })
    }

    /// Leave `topic`: its subscriptions end and it is no longer forwarded.
    /// `false` if not subscribed.
    pub async fn unsubscribe(&self, topic: &str) -> Result<bool, GossipError> {
        let topic = Topic::new(topic)?;
        self.inner.shared().subscribers.remove(&topic);
        Ok(self.inner.step(|s, now| s.unsubscribe(now, &topic)).await)
    }

    /// Sign `body` and send it to every subscriber of `topic`; returns the
    /// message's id. This node's own subscriptions do not receive it.
    pub async fn publish(
        &self,
        topic: &str,
        body: impl Into<Bytes>,
    ) -> Result<MessageId, GossipError> {
        let topic = Topic::new(topic)?;
        let body = body.into();
        Ok(self
            .inner
            .step(|s, now| s.publish(now, topic, body))
            .await?)
    }

    /// The subscribed topics with their eager and lazy neighbour counts.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.inner.shared().state.topics()
    }

    /// Eager and lazy neighbours of `topic` (session addresses).
    pub fn neighbours(&self, topic: &str) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let Ok(topic) = Topic::new(topic) else {
            return (Vec::new(), Vec::new());
        };
        let s = self.inner.shared();
        (s.state.eager_peers(&topic), s.state.lazy_peers(&topic))
    }

    /// The counters.
    pub fn stats(&self) -> GossipStats {
        let s = self.inner.shared();
        GossipStats {
            protocol: s.state.counters().clone(),
            subscriber_overflow: s.subscriber_overflow,
            send_failures: s.send_failures,
        }
    }

    /// This node's origin key.
    pub fn origin(&self) -> Origin {
        self.inner.origin
    }
}

/// How often the peers' round-trip times are read from the node.
const RTT_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Hand the connected peers' round-trip times to the state machine.
async fn feed_rtts(inner: &Inner, state: &gladius_p2p::NetworkState) {
    let rtts: Vec<(SocketAddr, u32)> = state
        .peers
        .iter()
        .filter(|p| p.connection == ConnectionState::Connected)
        .filter_map(|p| Some((p.addr, p.rtt_ms?)))
        .collect();
    if rtts.is_empty() {
        return;
    }
    inner
        .step(|s, now| {
            for (peer, ms) in rtts {
                s.handle(now, InEvent::Rtt { peer, ms });
            }
        })
        .await;
}

/// [`feed_rtts`] now and every [`RTT_REFRESH`] until aborted.
async fn refresh_rtts(inner: Arc<Inner>, net: Network) {
    loop {
        let Ok(state) = net.network_state().await else {
            return;
        };
        feed_rtts(&inner, &state).await;
        tokio::time::sleep(RTT_REFRESH).await;
    }
}

/// Fire the state machine's timers on tokio's clock until aborted.
async fn run_timers(inner: Arc<Inner>) {
    loop {
        let next = inner.shared().timers.peek().map(|Reverse((at, _))| *at);
        let now = inner.now_ms();
        match next {
            Some(at) if at <= now => {
                let due = inner.shared().timers.pop();
                if let Some(Reverse((_, timer))) = due {
                    inner
                        .step(|s, now| s.handle(now, InEvent::Timer(timer)))
                        .await;
                }
            }
            Some(at) => {
                let wait = std::time::Duration::from_millis(at - now);
                // Biased: an unbiased select! draws from tokio's own
                // RNG, which a simulation cannot seed.
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.timer_changed.notified() => {}
                }
            }
            None => inner.timer_changed.notified().await,
        }
    }
}

#[async_trait]
impl Plugin for Gossip {
    fn name(&self) -> &str {
        "gossip"
    }

    async fn startup(&self, net: &Network) {
        self.inner.shared().net = Some(net.clone());
        self.inner
            .ticker
            .start(tokio::spawn(run_timers(self.inner.clone())));
        // Peers that connected before we were registered.
        if let Ok(state) = net.network_state().await {
            for p in &state.peers {
                if p.connection == ConnectionState::Connected {
                    self.inner
                        .step(|s, now| s.handle(now, InEvent::PeerUp(p.addr)))
                        .await;
                }
            }
        }
        let uses_rtts = {
            let shared = self.inner.shared();
            let config = shared.state.config();
            config.origin_fanout > 0 || config.shortcut_pushes > 0
        };
        if uses_rtts {
            // Shortcuts go to the fastest neighbours: keep their round
            // trips current (the first read is at once).
            self.inner
                .rtt_refresh
                .start(tokio::spawn(refresh_rtts(self.inner.clone(), net.clone())));
        }
    }

    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        let addr = peer.addr;
        self.inner
            .step(|s, now| s.handle(now, InEvent::PeerUp(addr)))
            .await;
    }

    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr, _why: &PeerReason) {
        self.inner
            .step(|s, now| s.handle(now, InEvent::PeerDown(addr)))
            .await;
    }

    async fn new_message(&self, _net: &Network, msg: &Received) {
        if !msg.message().is_type(wire::MESSAGE_TYPE) {
            return;
        }
        let from = msg.peer();
        let frame = msg.message().body().clone();
        self.inner
            .step(|s, now| s.handle(now, InEvent::Message { from, frame }))
            .await;
    }

    async fn close(&self, _net: &Network) {
        self.inner.ticker.stop();
        self.inner.rtt_refresh.stop();
        let mut s = self.inner.shared();
        s.net = None;
        // Subscriptions end.
        s.subscribers.clear();
    }
}
