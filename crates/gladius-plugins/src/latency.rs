//! # Latency audit
//!
//! Pings every peer periodically, keeps per-peer round-trip statistics
//! (EWMA, min, p50, p99, sample and miss counts) and detects failures:
//! after `k` consecutive missed pings a peer is **suspect**, after `m` it is
//! **dead** and (by default) removed with `Network::delete`.
//!
//! Register it and keep the handle:
//!
//! ```no_run
//! # use gladius_p2p::{Config, Network};
//! # use gladius_plugins::latency::{LatencyAudit, LatencyConfig};
//! # async fn run(net: Network) -> Result<(), Box<dyn std::error::Error>> {
//! let (audit, latency) = LatencyAudit::new(LatencyConfig::default())?; net.register_plugin(audit).await?;
//! // later: the three peers with the lowest median RTT
//! for (peer, rtt) in latency.closest(3) {
//!     println!("{peer}: {rtt:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! ## How it measures
//! Every [`interval`](LatencyConfig::interval) the plugin sends a
//! `latency.ping` **request** ([`Network::request`] with
//! [`timeout`](LatencyConfig::timeout)) to every peer that is in the route
//! table or has a live session (at most two pings per peer outstanding). The
//! peer's latency plugin answers with a `latency.pong` reply echoing the
//! ping's nonce. The round trip is timed on the sender's clock only
//! (`Instant` before the request, after the reply), so no clock agreement
//! is needed. It is an application-level RTT: network time plus both
//! nodes' driver and the responder's plugin-queue time (a busy responding
//! plugin shows up as latency, which is what an application would see).
//!
//! A ping sent while the peer's session is not up yet (a route-table peer
//! still connecting) waits for the handshake; its pong proves the peer
//! alive but its round trip is not recorded as a sample. So that a new
//! peer does not wait a whole `interval` for its first sample, the plugin
//! also pings each peer as soon as its session comes up.
//!
//! A ping that times out, whose session closes, that cannot be queued, or
//! whose pong does not decode or echo the nonce is a **miss**. Any valid
//! pong resets the consecutive-miss count, so a peer that comes back
//! before `dead_after` misses returns to [`PeerStatus::Alive`].
//!
//! **Every node must run the plugin** (at least as a responder,
//! [`LatencyConfig::probe`] = false): a peer that never answers pings is,
//! to this plugin, indistinguishable from a dead one and is deleted when
//! [`delete_on_dead`](LatencyConfig::delete_on_dead) is on.
//!
//! ## Wire
//! Versioned postcard bodies, see [`PING_TYPE`], [`PONG_TYPE`] and
//! [`WIRE_VERSION`]; a body that does not decode is counted
//! ([`LatencyCounters`]) and ignored, never a panic.
//!
//! ## Threading
//! The ping loop is a task spawned in `startup` and stopped in `close` (or
//! when the node is gone). The statistics live behind a mutex shared with
//! [`LatencyHandle`]; it is never held across an `.await`.

mod config;
mod stats;
mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gladius_p2p::{
    async_trait, ConnectionState, Message, Network, NetworkError, PeerInfo, PeerReason, Plugin,
    Received, RequestError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

pub use config::{LatencyConfig, LatencyConfigError};
pub use stats::{PeerStatus, RttStats, MAX_SAMPLE};
pub use wire::{PING_TYPE, PONG_TYPE, WIRE_VERSION};

use wire::{Ping, Pong};

/// The plugin. Create it with [`LatencyAudit::new`], register it with
/// `Network::register_plugin`, and query it through the [`LatencyHandle`].
#[derive(Debug)]
pub struct LatencyAudit {
    shared: Arc<Shared>,
}

/// A cheap, cloneable view of the plugin's statistics. All methods are
/// synchronous and only take a short mutex.
///
/// **Ready** once the plugin is registered and the node listens: each peer
/// gets its first sample one round trip after its session is up (see
/// [`closest`](Self::closest)); until then it is tracked without samples.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Network};
/// use gladius_plugins::latency::{LatencyAudit, LatencyConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
/// let (audit, latency) = LatencyAudit::new(LatencyConfig::default())?;
/// a.register_plugin(audit).await?;
/// let (responder, _) = LatencyAudit::new(LatencyConfig::default().with_probe(false))?;
/// b.register_plugin(responder).await?; // every node answers pings
/// a.listen("127.0.0.1:0").await?;
/// let b_addr = b.listen("127.0.0.1:0").await?;
/// a.add(b_addr).await?;
/// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
/// while latency.closest(1).is_empty() {
///     tokio::time::sleep(Duration::from_millis(5)).await; // one round trip
/// }
/// assert_eq!(latency.closest(1)[0].0, b_addr);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LatencyHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: LatencyConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    peers: HashMap<SocketAddr, RttStats>,
    /// Dead peers in the order they died (may hold stale entries that
    /// revived; they are skipped when evicting).
    dead_order: VecDeque<SocketAddr>,
    counters: LatencyCounters,
    task: Option<JoinHandle<()>>,
    /// Tells the ping loop to ping a newly connected peer at once.
    kick: Option<mpsc::Sender<SocketAddr>>,
}

/// Newly connected peers waiting for their first ping. A burst beyond it
/// (hundreds of peers connecting at once) waits for the next round.
const KICK_QUEUE_LEN: usize = 256;

/// Plugin-wide counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyCounters {
    /// Pings sent (requests queued or attempted).
    pub pings_sent: u64,
    /// Valid pongs received in time.
    pub pongs_received: u64,
    /// Pings that counted as missed (any reason).
    pub pings_missed: u64,
    /// Pongs that arrived but did not decode or did not echo the nonce
    /// (also counted in `pings_missed`).
    pub bad_pongs: u64,
    /// Pings from peers this node answered.
    pub pings_answered: u64,
    /// `latency.ping` messages that were not requests or did not decode
    /// (not answered).
    pub bad_pings: u64,
    /// Peers removed with `Network::delete` because they were dead.
    pub peers_deleted: u64,
}

/// One peer's statistics. Durations serialize as floating-point
/// milliseconds (`ewma_ms`, ...), `null` before the first sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStats {
    /// The peer's UDP address (as in the route table).
    pub addr: SocketAddr,
    /// Alive, suspect or dead, from the consecutive misses.
    pub status: PeerStatus,
    /// Exponentially weighted moving average of the RTT.
    #[serde(rename = "ewma_ms", with = "opt_ms")]
    pub ewma: Option<Duration>,
    /// Smallest RTT ever measured.
    #[serde(rename = "min_ms", with = "opt_ms")]
    pub min: Option<Duration>,
    /// Median over the last `window` samples.
    #[serde(rename = "p50_ms", with = "opt_ms")]
    pub p50: Option<Duration>,
    /// 99th percentile over the last `window` samples.
    #[serde(rename = "p99_ms", with = "opt_ms")]
    pub p99: Option<Duration>,
    /// The most recent RTT.
    #[serde(rename = "last_ms", with = "opt_ms")]
    pub last: Option<Duration>,
    /// Answered pings in total.
    pub samples: u64,
    /// Missed pings in total.
    pub missed: u64,
    /// Missed pings since the last answered one.
    pub consecutive_missed: u32,
}

/// Everything the plugin knows, serde-serializable (e.g. for the daemon's
/// status page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySnapshot {
    /// The configuration in force.
    pub config: LatencyConfig,
    /// Every tracked peer (including remembered dead ones), by address.
    pub peers: Vec<PeerStats>,
    /// Plugin-wide counters.
    pub counters: LatencyCounters,
}

impl LatencyAudit {
    /// A plugin and its handle, after checking `config`.
    pub fn new(config: LatencyConfig) -> Result<(Self, LatencyHandle), LatencyConfigError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner::default()),
        });
        Ok((
            Self {
                shared: shared.clone(),
            },
            LatencyHandle { shared },
        ))
    }

    /// Another handle to this plugin's statistics.
    pub fn handle(&self) -> LatencyHandle {
        LatencyHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for LatencyAudit {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl LatencyHandle {
    /// Up to `k` **alive** peers with at least one sample, ordered by
    /// ascending **p50** over the window (ties by address). Suspect and
    /// dead peers are left out. The median is used rather than the EWMA
    /// because a single delayed pong (a scheduling hiccup, a retransmit)
    /// shifts the EWMA but not the median.
    ///
    /// **When a peer appears:** one sample is enough, and the plugin pings
    /// every peer the moment its session comes up, so a peer is listed one
    /// round trip after it connects (not an `interval` later); its p50
    /// then settles as the window fills, one sample per `interval`.
    pub fn closest(&self, k: usize) -> Vec<(SocketAddr, Duration)> {
        let cfg = &self.shared.config;
        let inner = self.shared.lock();
        let mut v: Vec<(SocketAddr, Duration)> = inner
            .peers
            .iter()
            .filter(|(_, s)| s.status(cfg.suspect_after, cfg.dead_after) == PeerStatus::Alive)
            .filter_map(|(a, s)| s.p50().map(|d| (*a, d)))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    /// The statistics of `addr`, if tracked.
    pub fn stats(&self, addr: SocketAddr) -> Option<PeerStats> {
        let inner = self.shared.lock();
        inner
            .peers
            .get(&addr)
            .map(|s| peer_stats(&self.shared.config, addr, s))
    }

    /// The status of `addr`, if tracked.
    pub fn status(&self, addr: SocketAddr) -> Option<PeerStatus> {
        let cfg = &self.shared.config;
        let inner = self.shared.lock();
        inner
            .peers
            .get(&addr)
            .map(|s| s.status(cfg.suspect_after, cfg.dead_after))
    }

    /// The statistics of every tracked peer, by address.
    pub fn peers(&self) -> Vec<PeerStats> {
        let inner = self.shared.lock();
        let mut v: Vec<PeerStats> = inner
            .peers
            .iter()
            .map(|(a, s)| peer_stats(&self.shared.config, *a, s))
            .collect();
        v.sort_by_key(|p| p.addr);
        v
    }

    /// Plugin-wide counters.
    pub fn counters(&self) -> LatencyCounters {
        self.shared.lock().counters.clone()
    }

    /// Everything at once, serde-serializable.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            config: self.shared.config.clone(),
            peers: self.peers(),
            counters: self.counters(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LatencyConfig {
        &self.shared.config
    }
}

fn peer_stats(cfg: &LatencyConfig, addr: SocketAddr, s: &RttStats) -> PeerStats {
    PeerStats {
        addr,
        status: s.status(cfg.suspect_after, cfg.dead_after),
        ewma: s.ewma(),
        min: s.min(),
        p50: s.p50(),
        p99: s.p99(),
        last: s.last(),
        samples: s.samples(),
        missed: s.missed(),
        consecutive_missed: s.consecutive_missed(),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind;
        // keep serving them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        if let Some(task) = self.lock().task.take() {
            task.abort();
        }
    }

    fn new_stats(&self) -> RttStats {
        RttStats::new(self.config.window, self.config.ewma_alpha)
    }

    fn status_of(&self, s: &RttStats) -> PeerStatus {
        s.status(self.config.suspect_after, self.config.dead_after)
    }

    /// Track exactly `present` (plus remembered dead peers).
    fn sync_peers(&self, present: &[SocketAddr]) {
        let set: HashSet<SocketAddr> = present.iter().copied().collect();
        let mut inner = self.lock();
        let (k, m) = (self.config.suspect_after, self.config.dead_after);
        inner
            .peers
            .retain(|a, s| set.contains(a) || s.status(k, m) == PeerStatus::Dead);
        for a in present {
            if !inner.peers.contains_key(a) {
                let s = self.new_stats();
                inner.peers.insert(*a, s);
            }
        }
        self.evict_dead(&mut inner);
    }

    /// Forget the oldest dead peers that are no longer present beyond
    /// `max_dead_remembered`.
    fn evict_dead(&self, inner: &mut Inner) {
        let (k, m) = (self.config.suspect_after, self.config.dead_after);
        inner.dead_order.retain(|a| {
            inner
                .peers
                .get(a)
                .is_some_and(|s| s.status(k, m) == PeerStatus::Dead)
        });
        // dead_order may list an address twice (died, revived, died).
        let mut seen = HashSet::new();
        inner.dead_order.retain(|a| seen.insert(*a));
        while inner.dead_order.len() > self.config.max_dead_remembered {
            if let Some(a) = inner.dead_order.pop_front() {
                inner.peers.remove(&a);
            }
        }
    }

    /// Record a ping's outcome; returns whether the peer is now dead.
    fn record(&self, addr: SocketAddr, outcome: &Outcome) -> bool {
        let mut inner = self.lock();
        match outcome {
            Outcome::Pong(_) => inner.counters.pongs_received += 1,
            Outcome::BadPong => {
                inner.counters.bad_pongs += 1;
                inner.counters.pings_missed += 1;
            }
            Outcome::Missed => inner.counters.pings_missed += 1,
            Outcome::Closed => return false,
        }
        let Some(s) = inner.peers.get_mut(&addr) else {
            // Deleted while the ping was in flight: not ours to track.
            return false;
        };
        let before = self.status_of(s);
        match outcome {
            Outcome::Pong(Some(rtt)) => s.record(*rtt),
            Outcome::Pong(None) => s.record_answer(),
            _ => s.record_miss(),
        }
        let after = self.status_of(s);
        if before != after {
            tracing::debug!(peer = %addr, ?before, ?after, "latency: peer status changed");
        }
        if after == PeerStatus::Dead && before != PeerStatus::Dead {
            inner.dead_order.push_back(addr);
            self.evict_dead(&mut inner);
        }
        after == PeerStatus::Dead
    }
}

/// How one ping ended.
#[derive(Debug)]
enum Outcome {
    /// A valid pong; the RTT is `None` when the ping was sent before the
    /// session was up (its round trip includes the handshake, not a
    /// sample of the link's latency).
    Pong(Option<Duration>),
    BadPong,
    Missed,
    Closed,
}

async fn ping(
    net: Network,
    addr: SocketAddr,
    nonce: u64,
    timeout: Duration,
    connected: bool,
) -> Outcome {
    let body = wire::encode(&Ping {
        version: WIRE_VERSION,
        nonce,
    });
    let Ok(msg) = Message::new(PING_TYPE, body) else {
        return Outcome::Missed;
    };
    let start = Instant::now();
    match net.request(msg, addr, timeout).await {
        Ok(reply) => {
            let rtt = start.elapsed();
            let m = reply.message();
            match wire::decode::<Pong>(m.body()) {
                Some(p) if p.nonce == nonce && m.msg_type() == PONG_TYPE => {
                    Outcome::Pong(connected.then_some(rtt))
                }
                _ => Outcome::BadPong,
            }
        }
        Err(RequestError::Network(NetworkError::Closed)) => Outcome::Closed,
        Err(e) => {
            tracing::trace!(peer = %addr, error = %e, "latency: ping missed");
            Outcome::Missed
        }
    }
}

/// Pings per peer allowed in flight at once. With `timeout <= interval` a
/// ping that times out exactly at the next tick is still in flight then;
/// the next one must go out anyway, or the effective period doubles.
const MAX_IN_FLIGHT: usize = 2;

/// The ping loop: one round per interval to every present peer (at most
/// [`MAX_IN_FLIGHT`] pings each outstanding), until the node closes.
async fn run(net: Network, shared: Arc<Shared>, mut kicks: mpsc::Receiver<SocketAddr>) {
    let cfg = shared.config.clone();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut inflight: JoinSet<(SocketAddr, u64, Outcome)> = JoinSet::new();
    // Peer -> (nonce, sent at) of its pings in flight.
    let mut busy: HashMap<SocketAddr, Vec<(u64, Instant)>> = HashMap::new();
    let mut nonce: u64 = rand::random();
    // A ping always ends by its timeout (the driver's timer); one that has
    // not after this long was lost (its task panicked) and is forgotten.
    let stale = cfg.timeout.saturating_mul(2) + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let state = match net.network_state().await {
                    Ok(s) => s,
                    Err(NetworkError::Closed) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "latency: no network state");
                        continue;
                    }
                };
                // Route-table peers are pinged even while (re)connecting, so
                // one that never connects is declared dead too.
                let present: Vec<(SocketAddr, bool)> = state
                    .peers
                    .iter()
                    .map(|p| (p.addr, p.in_route_table, p.connection == ConnectionState::Connected))
                    .filter(|(_, routed, connected)| *routed || *connected)
                    .map(|(a, _, connected)| (a, connected))
                    .collect();
                let addrs: Vec<SocketAddr> = present.iter().map(|p| p.0).collect();
                shared.sync_peers(&addrs);
                let now = Instant::now();
                busy.retain(|_, pings| {
                    pings.retain(|(_, at)| now.duration_since(*at) < stale);
                    !pings.is_empty()
                });
                let mut sent = 0;
                for (addr, connected) in present {
                    let pings = busy.entry(addr).or_default();
                    if pings.len() >= MAX_IN_FLIGHT {
                        continue;
                    }
                    nonce = nonce.wrapping_add(1);
                    pings.push((nonce, now));
                    let (net, n, t) = (net.clone(), nonce, cfg.timeout);
                    inflight.spawn(async move {
                        (addr, n, ping(net, addr, n, t, connected).await)
                    });
                    sent += 1;
                }
                shared.lock().counters.pings_sent += sent;
            }
            // A peer just connected: its first sample now, not a round later.
            Some(addr) = kicks.recv() => {
                let pings = busy.entry(addr).or_default();
                if pings.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                nonce = nonce.wrapping_add(1);
                pings.push((nonce, Instant::now()));
                let (net, n, t) = (net.clone(), nonce, cfg.timeout);
                inflight.spawn(async move { (addr, n, ping(net, addr, n, t, true).await) });
                shared.lock().counters.pings_sent += 1;
            }
            Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                let Ok((addr, n, outcome)) = joined else { continue };
                if let Some(pings) = busy.get_mut(&addr) {
                    pings.retain(|(b, _)| *b != n);
                }
                if matches!(outcome, Outcome::Closed) {
                    break;
                }
                if shared.record(addr, &outcome) && cfg.delete_on_dead {
                    match net.delete(addr).await {
                        Ok(()) => {
                            tracing::info!(peer = %addr, "latency: peer dead, deleted");
                            shared.lock().counters.peers_deleted += 1;
                        }
                        Err(NetworkError::Closed) => break,
                        Err(e) => tracing::debug!(peer = %addr, error = %e, "latency: delete failed"),
                    }
                }
            }
        }
    }
    inflight.abort_all();
}

#[async_trait]
impl Plugin for LatencyAudit {
    fn name(&self) -> &str {
        "latency"
    }

    async fn startup(&self, net: &Network) {
        if !self.shared.config.probe {
            return;
        }
        let (kick, kicks) = mpsc::channel(KICK_QUEUE_LEN);
        let task = tokio::spawn(run(net.clone(), self.shared.clone(), kicks));
        let mut inner = self.shared.lock();
        inner.kick = Some(kick);
        if let Some(old) = inner.task.replace(task) {
            old.abort();
        }
    }

    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        let mut inner = self.shared.lock();
        inner
            .peers
            .entry(peer.addr)
            .or_insert_with(|| self.shared.new_stats());
        if let Some(kick) = &inner.kick {
            // Full: the next round pings it anyway.
            let _ = kick.try_send(peer.addr);
        }
    }

    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        // A peer (re-)added after it died starts afresh; an alive one
        // keeps its history (`add` is idempotent).
        let mut inner = self.shared.lock();
        let dead = inner
            .peers
            .get(&addr)
            .is_some_and(|s| self.shared.status_of(s) == PeerStatus::Dead);
        if dead || !inner.peers.contains_key(&addr) {
            let s = self.shared.new_stats();
            inner.peers.insert(addr, s);
        }
    }

    async fn node_deleted(&self, _net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        // Dead peers are remembered (bounded); others are forgotten unless
        // a live session keeps them (the next round re-tracks them).
        let mut inner = self.shared.lock();
        if inner
            .peers
            .get(&addr)
            .is_some_and(|s| self.shared.status_of(s) != PeerStatus::Dead)
        {
            inner.peers.remove(&addr);
        }
    }

    async fn new_message(&self, net: &Network, msg: &Received) {
        let m = msg.message();
        if m.msg_type() != PING_TYPE {
            return;
        }
        let ping = msg
            .is_request()
            .then(|| wire::decode::<Ping>(m.body()))
            .flatten();
        let Some(ping) = ping else {
            self.shared.lock().counters.bad_pings += 1;
            tracing::debug!(peer = %msg.peer(), "latency: ignoring malformed ping");
            return;
        };
        let pong = wire::encode(&Pong {
            version: WIRE_VERSION,
            nonce: ping.nonce,
        });
        let Ok(pong) = Message::new(PONG_TYPE, pong) else {
            return;
        };
        match net.reply(msg, pong).await {
            Ok(_) => self.shared.lock().counters.pings_answered += 1,
            Err(e) => tracing::debug!(peer = %msg.peer(), error = %e, "latency: pong not sent"),
        }
    }

    async fn close(&self, _net: &Network) {
        self.shared.stop();
    }
}

/// `Option<Duration>` as floating-point milliseconds.
mod opt_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64() * 1000.0).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let ms: Option<f64> = Option::deserialize(d)?;
        Ok(ms.and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()))
    }
}
