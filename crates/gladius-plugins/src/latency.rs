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
//! ## Structure
//! The protocol — whom to track and ping, what a ping's outcome means, when
//! a peer is suspect or dead, which dead peers are remembered — is the
//! sans-IO [`detector::Detector`]: no tasks, no sockets, no clock reads; its
//! unit tests step time by hand. The plugin is its shell: the ping loop is a
//! task spawned in `startup` and stopped in `close` (or when the node is
//! gone) that ticks on tokio's clock (so `tokio::time::pause` and the
//! simulator drive it), sends the pings the detector orders and reports
//! their outcomes back. The detector lives behind a mutex shared with
//! [`LatencyHandle`]; it is never held across an `.await`.

mod config;
pub mod detector;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gladius_p2p::{
    async_trait, ConnectionState, Message, Network, NetworkError, PeerInfo, PeerReason, Plugin,
    Received, RequestError,
};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use detector::{Detector, Outcome, PingOrder, Verdict};

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

#[derive(Debug)]
struct Inner {
    /// The protocol: whom to ping, what the outcomes mean.
    detector: Detector,
    task: Option<JoinHandle<()>>,
    /// Hands the ping loop a ping to a newly connected peer, at once.
    kick: Option<mpsc::Sender<PingOrder>>,
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
        let first_nonce = match config.rng_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed).gen(),
            None => rand::random(),
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                detector: Detector::new(config.clone(), first_nonce),
                task: None,
                kick: None,
            }),
            config,
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
        self.shared.lock().detector.closest(k)
    }

    /// The statistics of `addr`, if tracked.
    pub fn stats(&self, addr: SocketAddr) -> Option<PeerStats> {
        self.shared.lock().detector.stats(addr)
    }

    /// The status of `addr`, if tracked.
    pub fn status(&self, addr: SocketAddr) -> Option<PeerStatus> {
        self.shared.lock().detector.status(addr)
    }

    /// The statistics of every tracked peer, by address.
    pub fn peers(&self) -> Vec<PeerStats> {
        self.shared.lock().detector.peers()
    }

    /// Plugin-wide counters.
    pub fn counters(&self) -> LatencyCounters {
        self.shared.lock().detector.counters().clone()
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
}

/// Send one ping and wait for its end. `None` when the node is closed.
async fn ping(net: Network, order: PingOrder, timeout: Duration) -> Option<Outcome> {
    let body = wire::encode(&Ping {
        version: WIRE_VERSION,
        nonce: order.nonce,
    });
    let Ok(msg) = Message::new(PING_TYPE, body) else {
        return Some(Outcome::Missed);
    };
    let start = Instant::now();
    match net.request(msg, order.addr, timeout).await {
        Ok(reply) => {
            let rtt = start.elapsed();
            let m = reply.message();
            Some(match wire::decode::<Pong>(m.body()) {
                Some(p) if p.nonce == order.nonce && m.is_type(PONG_TYPE) => {
                    Outcome::Pong(order.connected.then_some(rtt))
                }
                _ => Outcome::BadPong,
            })
        }
        Err(RequestError::Network(NetworkError::Closed)) => None,
        Err(e) => {
            tracing::trace!(peer = %order.addr, error = %e, "latency: ping missed");
            Some(Outcome::Missed)
        }
    }
}

/// The ping loop, the detector's I/O: every interval, a round of the
/// pings it orders for the peers present; kicked pings at once; each
/// outcome back to it, and the dead deleted (with `delete_on_dead`). Runs
/// until the node closes.
async fn run(net: Network, shared: Arc<Shared>, mut kicks: mpsc::Receiver<PingOrder>) {
    let cfg = shared.config.clone();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut inflight: JoinSet<(PingOrder, Option<Outcome>)> = JoinSet::new();
    let spawn = |inflight: &mut JoinSet<_>, order: PingOrder| {
        let net = net.clone();
        inflight.spawn(async move { (order, ping(net, order, cfg.timeout).await) });
    };
    loop {
        tokio::select! {
            // Biased: an unbiased select draws from the runtime's unseeded
            // RNG, and a simulation must repeat exactly.
            biased;
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
                let orders = shared.lock().detector.round(Instant::now(), &present);
                for order in orders {
                    spawn(&mut inflight, order);
                }
            }
            Some(order) = kicks.recv() => spawn(&mut inflight, order),
            Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                let Ok((order, outcome)) = joined else { continue };
                let Some(outcome) = outcome else { break };
                let verdict = shared.lock().detector.outcome(order.addr, order.nonce, outcome);
                if verdict == Verdict::Died && cfg.delete_on_dead {
                    match net.delete(order.addr).await {
                        Ok(()) => {
                            tracing::info!(peer = %order.addr, "latency: peer dead, deleted");
                            shared.lock().detector.count_deleted();
                        }
                        Err(NetworkError::Closed) => break,
                        Err(e) => tracing::debug!(peer = %order.addr, error = %e, "latency: delete failed"),
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
        let mut guard = self.shared.lock();
        let Inner { detector, kick, .. } = &mut *guard;
        // Its first sample now, not a round later: a ping goes at once if
        // the loop can take it (if not, the next round pings it anyway).
        let permit = kick.as_ref().and_then(|k| k.try_reserve().ok());
        match permit {
            Some(permit) => {
                if let Some(order) = detector.connected(Instant::now(), peer.addr) {
                    permit.send(order);
                }
            }
            None => detector.track(peer.addr),
        };
    }

    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        self.shared.lock().detector.added(addr);
    }

    async fn node_deleted(&self, _net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        self.shared.lock().detector.deleted(addr);
    }

    async fn new_message(&self, net: &Network, msg: &Received) {
        let m = msg.message();
        if !m.is_type(PING_TYPE) {
            return;
        }
        let ping = msg
            .is_request()
            .then(|| wire::decode::<Ping>(m.body()))
            .flatten();
        let Some(ping) = ping else {
            self.shared.lock().detector.count_ping_received(false);
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
            Ok(_) => self.shared.lock().detector.count_ping_received(true),
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
