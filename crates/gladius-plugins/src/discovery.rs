//! # Discovery: learn the network from the peers you were given
//!
//! Register it in one line:
//!
//! ```no_run
//! use gladius_p2p::{Config, Network};
//! use gladius_plugins::discovery::{Discovery, DiscoveryConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let net = Network::new(Config::default())?;
//! let (discovery, handle) = Discovery::new(DiscoveryConfig::default());
//! net.register_plugin(discovery).await?;
//! net.listen("127.0.0.1:7001").await?;
//! net.add("127.0.0.1:7002").await?; // a seed; discovery learns the rest
//! // ... later:
//! println!("{} peers known, {:?}", handle.known_peers().len(), handle.counters());
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * **Bootstrap.** Whatever peers are in the route table (added by you or
//!   another plugin) are asked for their peers as soon as their session is
//!   up.
//! * **Exchange.** Every [`interval`](DiscoveryConfig::interval) (±10 %),
//!   a `discovery.ask` carrying a random sample of our connected peers goes
//!   to [`fanout`](DiscoveryConfig::fanout) random writable peers
//!   (`broadcast_randomly`); each answers with `discovery.peers`, a random
//!   sample of *its* connected peers. Every entry carries the address and
//!   the static key the peer proved, and learned peers are added with
//!   `add_pinned(addr, key)`: a lying peer cannot make us accept another
//!   key for an address. Only peers connected now are shared, so dead
//!   peers stop spreading.
//! * **NAT records.** Every list also carries the NAT type the sender
//!   knows for each entry and the sender's own record: its NAT type and
//!   reflexive addresses as its peers observe them (`network_state().nat`
//!   and `reflexive_addrs`; see `docs/nat.md`). What a peer says of itself
//!   over its own session wins over what others say of it;
//!   [`KnownPeer::nat`] and [`KnownPeer::reflexive_addrs`] show it, and
//!   [`DiscoveryHandle::addrs_of`] gives the addresses to try for a key
//!   (the daemon's `add` by `public_key` uses them).
//! * **Growth** stops at [`table_size`](DiscoveryConfig::table_size) route
//!   table peers. Peers that connect to us on their own are promoted into
//!   the table while it holds fewer than
//!   [`inbound_cap`](DiscoveryConfig::inbound_cap) (`table_size` and an
//!   eighth: only nodes short of peers dial out, and a network of full
//!   tables would otherwise shut its last joiners out), by address (not pinned: a restarted
//!   peer with a fresh key is let in once its old session fails a probe).
//!   With `promote_inbound` off they are not, and neither are the peers
//!   they list in their asks.
//! * **Forgetting.** A deletion by anyone (the latency audit's
//!   `net.delete`, the application) is seen in `node_deleted`; a session
//!   that ends (`peer_disconnected`) and does not come back within
//!   [`disconnect_grace`](DiscoveryConfig::disconnect_grace) is deleted by
//!   discovery. Either way the address is **tombstoned** for
//!   [`tombstone_ttl`](DiscoveryConfig::tombstone_ttl), with the key we
//!   knew for it: gossip naming it is ignored until then (at most
//!   [`max_tombstones`](DiscoveryConfig::max_tombstones) are kept, oldest
//!   forgotten first), so dead peers do not spread back.
//! * **Dead peers are retried, and a peer that proves itself alive is
//!   taken back.** A silent peer may only be on the other side of a
//!   partition, or restarting; deleting it for good would split the network
//!   forever (nobody gossips a peer it is not connected to). So:
//!   * a peer that connects to us and proves the key its tombstone holds
//!     (or any key, if the tombstone holds none) clears the tombstone and
//!     is promoted into the route table while there is room; so does a
//!     peer that connects from the address of a peer that *died* with
//!     another key: it restarted with a fresh identity (counted as
//!     `restarted`), which the core accepts too for a peer added by
//!     address. Another key at a tombstoned address that never died (junk
//!     gossip, a peer deleted on purpose) leaves the tombstone in place:
//!     nobody resurrects someone else's address;
//!   * a peer that had connected and then died is remembered (address and
//!     proven key, at most `max_tombstones` of them) and re-added by
//!     address (not pinned, so a restart with a new key is taken back) by
//!     a later round, after
//!     [`retry_min`](DiscoveryConfig::retry_min) doubled per retry that did
//!     not connect, up to [`retry_max`](DiscoveryConfig::retry_max); at
//!     most [`max_retries_per_round`](DiscoveryConfig::max_retries_per_round)
//!     per round and only while the table has room. A retry waiting to
//!     connect does not hold its slot against live peers learned meanwhile
//!     (most retries never connect); one that connects is kept even if the
//!     table has filled, so the table may exceed `table_size` by the
//!     retries that were in flight. A retry that does not
//!     connect within `connect_deadline` (or that the latency audit declares
//!     dead first) is deleted again and waits longer. It stops when the peer
//!     connects again. Junk addresses that never connected are never
//!     retried (they keep the tombstone rule below). With the defaults, the
//!     two sides of a healed 20 s partition are back in each other's tables
//!     within about 15 s;
//!   * a deletion counts as a death only if the core had heard nothing
//!     from the peer for [`dead_silence`](DiscoveryConfig::dead_silence)
//!     (the latency audit deletes after about 6 s of silence). A peer
//!     deleted while still talking (by the application, say) was deleted
//!     on purpose: tombstoned, never retried, and not taken back when it
//!     connects to us, until its tombstone expires.
//!
//! ## Against a lying peer
//!
//! * a list of more than [`max_entries`](DiscoveryConfig::max_entries)
//!   entries (or a body longer than such a list can be) is dropped whole,
//!   before decoding, and counted; garbage and unknown versions are dropped
//!   and counted; decoding never panics;
//! * no amplification: an answer holds at most `max_entries` entries
//!   (bounded bytes, [`wire::max_body_len`]), each peer gets at most
//!   [`max_answers_per_interval`](DiscoveryConfig::max_answers_per_interval)
//!   answers per interval, and answers nobody asked for are dropped;
//! * an entry with a different key for an address we know is ignored
//!   (`key_conflicts`); a learned key the peer does not prove makes the
//!   handshake fail, and the entry is deleted and that (address, key) pair
//!   not tried again before `tombstone_ttl`; a tombstone is cleared only by
//!   a peer proving the key it holds, and only peers that once connected
//!   are retried;
//! * junk (unreachable) addresses *are* added — there is no way to tell
//!   them from real peers without trying — but at most
//!   [`max_pending`](DiscoveryConfig::max_pending) learned peers may be
//!   connecting at once, and one that has not connected within
//!   [`connect_deadline`](DiscoveryConfig::connect_deadline) is deleted,
//!   tombstoned and counted (`junk_dropped`); unspecified, multicast and
//!   port-0 addresses and our own address are never added.
//!
//! ## Threading
//!
//! The hooks run on the plugin's task (see [`gladius_p2p::Plugin`]); the
//! periodic rounds run on a task spawned at `startup` and stopped at
//! `close`. Both share the [`PeerTable`] behind a mutex that is never held
//! across an `.await`; the [`DiscoveryHandle`] reads it the same way.

mod config;
pub mod table;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gladius_p2p::{async_trait, Message, Network, PeerInfo, PeerReason, Plugin, Received};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
// Tokio's clock, so that `tokio::time::pause` and a simulator drive it.
use tokio::time::Instant;

use crate::background::Background;

pub use config::DiscoveryConfig;
pub use table::{Action, DiscoveryCounters, KnownPeer, Origin, PeerTable};

/// The discovery plugin. Create it with [`Discovery::new`] and register it
/// with [`Network::register_plugin`].
#[derive(Debug)]
pub struct Discovery {
    inner: Arc<Inner>,
}

/// A cheap, cloneable read-only view of a [`Discovery`] plugin's state,
/// usable from any thread while the plugin runs (and after).
///
/// **Ready** once the plugin is registered and the node listens. A seed's
/// peers are learned one round trip after the seed's session is up (it is
/// asked at once), the rest of the network by the periodic exchange (every
/// [`interval`](DiscoveryConfig::interval), 5 s by default). To wait for
/// peers, use `Network::wait_peers` rather than polling this handle.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Network};
/// use gladius_plugins::discovery::{Discovery, DiscoveryConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut nodes = Vec::new();
/// for _ in 0..3 {
///     let net = Network::new(Config::default())?;
///     let (discovery, handle) = Discovery::new(DiscoveryConfig::default());
///     net.register_plugin(discovery).await?;
///     let addr = net.listen("127.0.0.1:0").await?;
///     nodes.push((net, addr, handle));
/// }
/// let seed = nodes[0].1;
/// nodes[1].0.add(seed).await?;
/// nodes[1].0.wait_connected(seed, Duration::from_secs(5)).await?;
/// nodes[2].0.add(seed).await?; // only the seed; discovery finds node 1
/// let peers = nodes[2].0.wait_peers(2, Duration::from_secs(10)).await?;
/// assert!(peers.contains(&nodes[1].1));
/// // The plugin hears of the session on its own task, a moment later.
/// while !nodes[2].2.live_peers().contains(&nodes[1].1) {
///     tokio::time::sleep(Duration::from_millis(10)).await;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DiscoveryHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Mutex<PeerTable>,
    ticker: Background,
    /// Every random choice of the plugin ([`DiscoveryConfig::rng_seed`]).
    rng: Mutex<StdRng>,
    /// What this node says of itself in its lists (its NAT type and
    /// reflexive addresses), refreshed every round.
    me: Mutex<wire::SelfRecord>,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, PeerTable> {
        // A panic while holding the lock leaves consistent data (every
        // method finishes its bookkeeping before returning).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn config(&self) -> DiscoveryConfig {
        self.table().config().clone()
    }
    fn rng(&self) -> MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set_me(&self, state: &gladius_p2p::NetworkState) {
        *self.me.lock().unwrap_or_else(|e| e.into_inner()) = wire::SelfRecord {
            nat: state.nat,
            reflexive_addrs: state.reflexive_addrs.clone(),
        };
    }
    fn me(&self) -> wire::SelfRecord {
        self.me.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Discovery {
    /// The plugin and a handle to read its state.
    pub fn new(config: DiscoveryConfig) -> (Discovery, DiscoveryHandle) {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let inner = Arc::new(Inner {
            table: Mutex::new(PeerTable::new(config)),
            ticker: Background::default(),
            rng: Mutex::new(rng),
            me: Mutex::default(),
        });
        (
            Discovery {
                inner: inner.clone(),
            },
            DiscoveryHandle { inner },
        )
    }

    /// Another handle to this plugin's state.
    pub fn handle(&self) -> DiscoveryHandle {
        DiscoveryHandle {
            inner: self.inner.clone(),
        }
    }
}

impl DiscoveryHandle {
    /// Every peer discovery knows (route-table peers and connected
    /// strangers), sorted by address.
    pub fn known_peers(&self) -> Vec<KnownPeer> {
        self.inner.table().known_peers()
    }

    /// Addresses to try for the peer with static key `key`, from what
    /// discovery knows: the address it is known at, then the reflexive
    /// addresses it reported (its NAT's mappings), without repeats. Empty
    /// if discovery does not know the key.
    pub fn addrs_of(&self, key: &gladius_p2p::PublicKey) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for p in self.known_peers() {
            if p.public_key.as_ref() != Some(key) {
                continue;
            }
            for a in std::iter::once(p.addr).chain(p.reflexive_addrs) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Addresses of route-table peers whose session is up now, sorted.
    pub fn live_peers(&self) -> Vec<SocketAddr> {
        self.known_peers()
            .into_iter()
            .filter(|p| p.in_route_table && p.connected)
            .map(|p| p.addr)
            .collect()
    }

    /// How many peers the route table holds, as discovery knows it.
    pub fn table_len(&self) -> usize {
        self.inner.table().table_len()
    }

    /// The counters.
    pub fn counters(&self) -> DiscoveryCounters {
        self.inner.table().counters()
    }

    /// Whether gossip naming `addr` is being ignored now.
    pub fn is_tombstoned(&self, addr: SocketAddr) -> bool {
        self.inner.table().is_tombstoned(addr, Instant::now())
    }

    /// Addresses tombstoned now.
    pub fn tombstones(&self) -> Vec<SocketAddr> {
        self.inner.table().tombstones(Instant::now())
    }

    /// The plugin's settings.
    pub fn config(&self) -> DiscoveryConfig {
        self.inner.config()
    }
}

/// Perform the table's actions on the network.
async fn perform(inner: &Inner, net: &Network, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Add(addr, key) => {
                let result = match key {
                    Some(k) => net.add_pinned(addr, k).await,
                    None => net.add(addr).await,
                };
                match result {
                    Ok(_) => inner.table().add_done(addr, Instant::now()),
                    Err(e) => {
                        tracing::debug!(%addr, %e, "discovery could not add a peer");
                        inner.table().add_failed(addr);
                    }
                }
            }
            Action::Delete(addr) => {
                if let Err(e) = net.delete(addr).await {
                    tracing::debug!(%addr, %e, "discovery could not delete a peer");
                }
            }
        }
    }
}

/// A `discovery.*` message with our sample (excluding `to`), the NAT type
/// we know for each entry and our own record.
fn list_message(inner: &Inner, msg_type: &str, exclude: Option<SocketAddr>) -> Option<Message> {
    let (entries, nats) = {
        let t = inner.table();
        let entries = t.sample(exclude, Instant::now(), &mut *inner.rng());
        let nats = t.nats_of(&entries);
        (entries, nats)
    };
    let ext = wire::Extension {
        nats,
        me: Some(inner.me()),
    };
    let body = wire::encode_with(&wire::PeerList { entries }, &ext);
    Message::new(msg_type, body).ok()
}

/// One periodic round: reconcile with the node, run the timers, ask
/// `fanout` random peers. `Err` once the node is gone.
async fn round(inner: &Inner, net: &Network) -> Result<(), gladius_p2p::NetworkError> {
    let taken = Instant::now();
    let state = net.network_state().await?;
    inner.set_me(&state);
    let now = Instant::now();
    let snapshot: Vec<_> = state
        .peers
        .iter()
        .map(|p| {
            (
                p.addr,
                p.in_route_table,
                p.connection == gladius_p2p::ConnectionState::Connected,
                p.public_key,
            )
        })
        .collect();
    let demoted: Vec<SocketAddr> = state
        .peers
        .iter()
        .filter(|p| {
            p.in_route_table
                && !p.writable
                && p.connection != gladius_p2p::ConnectionState::Connected
        })
        .map(|p| p.addr)
        .collect();
    let (actions, fanout) = {
        let mut t = inner.table();
        // Learned peers younger than this may not show in the snapshot yet.
        let settle = t.config().interval.max(Duration::from_secs(1));
        t.sync(&snapshot, settle, taken, now);
        t.demoted(&demoted);
        (t.expire(now), t.config().fanout)
    };
    perform(inner, net, actions).await;
    if fanout > 0 {
        if let Some(ask) = list_message(inner, wire::ASK_TYPE, None) {
            let report = net.broadcast_randomly(ask, fanout).await?;
            inner.table().round(&report.queued, Instant::now());
        }
    } else {
        inner.table().round(&[], now);
    }
    Ok(())
}

async fn run_rounds(inner: Arc<Inner>, net: Network) {
    let interval = inner.config().interval;
    // The first round soon, then every interval ± 10 %.
    let mut wait = interval / 10;
    loop {
        tokio::time::sleep(wait).await;
        if let Err(e) = round(&inner, &net).await {
            tracing::debug!(%e, "discovery rounds stop");
            return;
        }
        let jitter = inner.rng().gen_range(0.9..1.1);
        wait = interval.mul_f64(jitter);
    }
}

#[async_trait]
impl Plugin for Discovery {
    fn name(&self) -> &str {
        "discovery"
    }

    async fn startup(&self, net: &Network) {
        if let Ok(state) = net.network_state().await {
            let addrs: Vec<SocketAddr> = state
                .local_addr
                .into_iter()
                .chain(state.advertised_addr)
                .collect();
            self.inner
                .table()
                .set_local(&addrs, state.public_key, state.encrypted);
            self.inner.set_me(&state);
        }
        self.inner
            .ticker
            .start(tokio::spawn(run_rounds(self.inner.clone(), net.clone())));
    }

    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        self.inner.table().node_added(addr, Instant::now());
    }

    async fn node_deleted(&self, net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        // Dead or deleted on purpose? The table decides from when the core
        // last heard from the peer.
        let last_seen = match net.network_state().await {
            Ok(state) => state
                .peers
                .iter()
                .find(|p| p.addr == addr)
                .map(|p| p.last_seen_ms_ago),
            Err(_) => None,
        };
        self.inner
            .table()
            .node_deleted_after(addr, last_seen, Instant::now());
    }

    async fn peer_connected(&self, net: &Network, peer: &PeerInfo) {
        let now = Instant::now();
        let (promote, ask) = {
            let mut t = self.inner.table();
            let promote = t.peer_connected(peer.addr, peer.public_key, now);
            let in_table = t
                .known_peers()
                .iter()
                .any(|p| p.addr == peer.addr && p.in_route_table);
            let ask = in_table && t.table_len() < t.config().table_size;
            (promote, ask)
        };
        perform(&self.inner, net, promote.into_iter().collect()).await;
        if ask {
            // Bootstrap from a fresh peer at once rather than at the next round.
            if let Some(msg) = list_message(&self.inner, wire::ASK_TYPE, Some(peer.addr)) {
                if let Ok(report) = net.broadcast_to(msg, &[peer.addr]).await {
                    self.inner.table().asks_sent(&report.queued, Instant::now());
                }
            }
        }
    }

    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        self.inner.table().peer_disconnected(addr, Instant::now());
    }

    async fn peer_rejected(&self, net: &Network, addr: SocketAddr, reason: &str) {
        let action = self.inner.table().peer_rejected(addr, Instant::now());
        if action.is_some() {
            tracing::debug!(%addr, reason, "learned peer refused; deleting it");
        }
        perform(&self.inner, net, action.into_iter().collect()).await;
    }

    async fn new_message(&self, net: &Network, msg: &Received) {
        if !msg.message().type_starts_with(wire::TYPE_PREFIX) {
            return;
        }
        let msg_type = msg.message().msg_type();
        let from = msg.peer();
        let now = Instant::now();
        let is_ask = msg_type == wire::ASK_TYPE;
        let actions = {
            let mut t = self.inner.table();
            if msg_type != wire::ASK_TYPE && msg_type != wire::PEERS_TYPE {
                t.dropped(false);
                return;
            }
            let welcome = if is_ask {
                t.allow_ask(from, now)
            } else {
                t.take_answer(from, now)
            };
            if !welcome {
                return;
            }
            if is_ask && !msg.is_writable() && !t.config().promote_inbound {
                // Not admitted, so not trusted to name peers either: it is
                // answered, but what it lists is not learned.
                Vec::new()
            } else {
                match wire::decode_all(msg.message().body(), t.config().max_entries) {
                    Ok(body) => {
                        if let Some(me) = &body.ext.me {
                            t.learn_self(from, me);
                        }
                        t.merge_with_nats(&body.list.entries, &body.ext.nats, now)
                    }
                    Err(e) => {
                        tracing::debug!(%from, %e, "discovery list dropped");
                        t.dropped(e.is_oversized());
                        return;
                    }
                }
            }
        };
        if is_ask {
            if let Some(answer) = list_message(&self.inner, wire::PEERS_TYPE, Some(from)) {
                let sent = if msg.is_request() {
                    net.reply(msg, answer).await
                } else {
                    net.broadcast_to(answer, &[from]).await
                };
                if let Err(e) = sent {
                    tracing::debug!(%from, %e, "discovery answer not sent");
                }
            }
        }
        perform(&self.inner, net, actions).await;
    }

    async fn close(&self, _net: &Network) {
        self.inner.ticker.stop();
    }
}
