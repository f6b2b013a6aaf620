//! The sans-IO heart of discovery: what we know about peers, what gossip we
//! accept, what we share and whom we forget. No sockets, no clock: every
//! method takes `now`, and returns the actions (adds, deletes) for the
//! caller to perform on the [`Network`](gladius_p2p::Network).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::{NatType, PublicKey};
use rand::seq::IteratorRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
// Tokio's clock, so that `tokio::time::pause` and a simulator drive it.
use tokio::time::Instant;

use super::config::DiscoveryConfig;
use super::wire::{PeerEntry, SelfRecord};

/// How a peer came into the route table, as far as discovery knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Added by someone else (the application, another plugin).
    Added,
    /// Added by discovery from a peer list.
    Gossip,
    /// Connected to us on its own and promoted by discovery.
    Inbound,
    /// Connected to us, not in the route table.
    Unlisted,
    /// Re-added by discovery: a peer that was connected once, died and is
    /// being retried (see [`DiscoveryConfig::retry_max`]).
    Retry,
}

/// One peer discovery knows, as [`DiscoveryHandle::known_peers`](super::DiscoveryHandle::known_peers)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer's address (its route-table key).
    pub addr: SocketAddr,
    /// The key it proved (or the one it was pinned to before connecting).
    pub public_key: Option<PublicKey>,
    /// Whether it is in the route table.
    pub in_route_table: bool,
    /// Whether a session with it is up now.
    pub connected: bool,
    /// How it got here.
    pub origin: Origin,
    /// Its NAT type: what it said of itself, or else what a peer that
    /// shared it said (`Unknown` if nobody did).
    pub nat: NatType,
    /// The addresses its peers see it at, as it said itself (empty if it
    /// did not).
    pub reflexive_addrs: Vec<SocketAddr>,
}

/// Counters of everything discovery did or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryCounters {
    /// Rounds (periodic asks) run.
    pub rounds: u64,
    /// Asks sent (one per peer reached).
    pub asks_sent: u64,
    /// Asks answered.
    pub asks_answered: u64,
    /// Asks dropped: over the per-peer budget of the interval.
    pub asks_refused: u64,
    /// Peer lists accepted (asks and answers).
    pub lists_received: u64,
    /// Answers nobody asked for, dropped.
    pub unsolicited_dropped: u64,
    /// Lists dropped for announcing more than `max_entries` entries or being
    /// longer than such a list can be.
    pub oversized_dropped: u64,
    /// Bodies dropped as garbage or of an unknown version, and unknown
    /// `discovery.*` types.
    pub malformed_dropped: u64,
    /// Entries naming something that cannot be a peer (unspecified,
    /// multicast or broadcast address, port 0, ourselves).
    pub invalid_entries: u64,
    /// Entries ignored because the address is tombstoned.
    pub tombstoned_skips: u64,
    /// Entries naming a known address with a different key (ignored; the
    /// key we know stays pinned).
    pub key_conflicts: u64,
    /// Entries not added because the table is full or too many learned
    /// peers are still connecting.
    pub cap_skips: u64,
    /// Entries without a key while we are encrypted (cannot be pinned).
    pub unkeyed_skips: u64,
    /// Peers added from gossip (pinned to the gossiped key).
    pub added: u64,
    /// Inbound peers promoted into the route table.
    pub promoted: u64,
    /// Learned peers that refused the pinned key; deleted, and the
    /// (address, key) pair is not tried again until it expires.
    pub key_rejections: u64,
    /// Learned peers that never connected within `connect_deadline`;
    /// deleted and tombstoned.
    pub junk_dropped: u64,
    /// Peers whose session ended and did not return within
    /// `disconnect_grace`; deleted and tombstoned.
    pub dead_dropped: u64,
    /// Route-table deletions seen (by anyone: the latency audit, the
    /// application, discovery itself).
    pub deletions_seen: u64,
    /// Dead peers re-added for a retry.
    pub retries: u64,
    /// Retries that did not connect (deleted again; their backoff grows).
    pub retries_failed: u64,
    /// Tombstoned peers taken back because they connected to us and proved
    /// the key we knew for them.
    pub revived: u64,
    /// Dead peers taken back with a new key: they connected to us from the
    /// address of a peer that had died (a restart with a fresh identity).
    pub restarted: u64,
}

/// What discovery remembers about one peer.
#[derive(Debug, Clone)]
struct Record {
    key: Option<PublicKey>,
    in_table: bool,
    connected: bool,
    ever_connected: bool,
    origin: Origin,
    since: Instant,
    disconnected_at: Option<Instant>,
    /// Discovery decided to add it and the `add` has not completed yet.
    add_pending: bool,
    /// When discovery's `add` of it completed.
    confirmed: Option<Instant>,
    /// Someone else's peer (`Origin::Added`) disconnected past the grace
    /// period, or judged dead by a plugin (demoted by the core): kept (not
    /// ours to delete), not counted against the cap.
    dormant: bool,
    /// The core reports it demoted (a plugin judged it dead; not writable)
    /// while disconnected.
    demoted: bool,
    /// Its NAT, as it or others told us.
    nat: NatInfo,
}

/// What discovery knows of a peer's NAT.
#[derive(Debug, Clone, Default)]
struct NatInfo {
    nat: NatType,
    reflexive_addrs: Vec<SocketAddr>,
    /// Said by the peer itself (over its authenticated session), which
    /// hearsay from other peers never overrides.
    self_reported: bool,
}

impl Record {
    /// A retry of a dead peer that has not connected (yet).
    fn is_waiting_retry(&self) -> bool {
        self.in_table && self.origin == Origin::Retry && !self.ever_connected
    }

    /// A peer discovery is adding itself now (learned or retried): in the
    /// table, its add not yet confirmed, not connected.
    fn adding(key: Option<PublicKey>, origin: Origin, now: Instant) -> Self {
        Record {
            key,
            in_table: true,
            connected: false,
            ever_connected: false,
            origin,
            since: now,
            disconnected_at: None,
            add_pending: true,
            confirmed: None,
            dormant: false,
            demoted: false,
            nat: NatInfo::default(),
        }
    }
}

/// A bounded map of addresses (or address–key pairs) to expiry times and
/// a value, oldest forgotten first when full.
#[derive(Debug)]
struct Expiring<K, V = ()> {
    until: BTreeMap<K, (Instant, V)>,
    order: VecDeque<(K, Instant)>,
    cap: usize,
}

impl<K: Ord + Copy, V: Copy> Expiring<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            until: BTreeMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    fn insert(&mut self, k: K, until: Instant, v: V) {
        if self.cap == 0 {
            return;
        }
        self.until.insert(k, (until, v));
        self.order.push_back((k, until));
        while self.until.len() > self.cap {
            self.pop_oldest();
        }
        // Stale queue entries (re-inserted keys) must not pile up.
        if self.order.len() > 2 * self.cap {
            self.order
                .retain(|(k, t)| self.until.get(k).map(|e| e.0) == Some(*t));
        }
    }
    fn pop_oldest(&mut self) {
        while let Some((k, t)) = self.order.pop_front() {
            if self.until.get(&k).map(|e| e.0) == Some(t) {
                self.until.remove(&k);
                return;
            }
        }
    }
    fn contains(&self, k: &K, now: Instant) -> bool {
        self.until.get(k).is_some_and(|e| e.0 > now)
    }
    fn get(&self, k: &K, now: Instant) -> Option<V> {
        self.until.get(k).filter(|e| e.0 > now).map(|e| e.1)
    }
    fn remove(&mut self, k: &K) {
        // Its queue entry goes stale and is skipped.
        self.until.remove(k);
    }
    fn expire(&mut self, now: Instant) {
        while let Some((k, t)) = self.order.front().copied() {
            if t > now {
                break;
            }
            self.order.pop_front();
            if self.until.get(&k).map(|e| e.0) == Some(t) {
                self.until.remove(&k);
            }
        }
    }
    fn keys(&self, now: Instant) -> Vec<K> {
        self.until
            .iter()
            .filter(|(_, e)| e.0 > now)
            .map(|(k, _)| *k)
            .collect()
    }
    fn len(&self) -> usize {
        self.until.len()
    }
}

/// An action the caller performs on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `add_pinned(addr, key)` (or `add(addr)` when `key` is `None`,
    /// plaintext mode only).
    Add(SocketAddr, Option<PublicKey>),
    /// `delete(addr)`.
    Delete(SocketAddr),
}

/// The discovery state machine.
#[derive(Debug)]
pub struct PeerTable {
    config: DiscoveryConfig,
    local: BTreeSet<SocketAddr>,
    local_key: Option<PublicKey>,
    encrypted: bool,
    peers: BTreeMap<SocketAddr, Record>,
    /// Tombstoned addresses and the key we knew for each (if any).
    tombstones: Expiring<SocketAddr, Option<PublicKey>>,
    rejected: Expiring<(SocketAddr, PublicKey)>,
    /// Peers deleted while alive (on purpose): not taken back when they
    /// connect to us, until their tombstone expires.
    kept_out: Expiring<SocketAddr>,
    /// Peers we saw die after they had connected: retried with backoff.
    graves: BTreeMap<SocketAddr, Grave>,
    /// `graves` in the order they were dug, oldest first (for the bound).
    grave_order: VecDeque<SocketAddr>,
    /// Deletes we asked for that must not tombstone (key rejections).
    untombstoned_deletes: BTreeSet<SocketAddr>,
    /// Per-peer answer budget: window start and answers given.
    budgets: BTreeMap<SocketAddr, (Instant, u32)>,
    /// Peers we asked, and until when their answer is welcome.
    asked: BTreeMap<SocketAddr, Instant>,
    counters: DiscoveryCounters,
}

/// A peer that was connected once and died: discovery re-adds it after
/// `backoff(failures)` until it connects again.
#[derive(Debug, Clone, Copy)]
struct Grave {
    key: Option<PublicKey>,
    /// Retries that did not connect.
    failures: u32,
    /// When the next retry is due.
    due: Instant,
    /// A retry is in the route table now.
    retrying: bool,
}

/// Most peers tracked for the answer budget or outstanding asks; beyond it
/// new askers are refused (a bound against address churn).
const MAX_TRACKED: usize = 8192;

impl PeerTable {
    /// An empty table. Until [`set_local`](Self::set_local) is called it
    /// assumes an encrypted node.
    pub fn new(config: DiscoveryConfig) -> Self {
        let tombstones = Expiring::new(config.max_tombstones);
        let rejected = Expiring::new(config.max_tombstones);
        let config_cap = config.max_tombstones;
        Self {
            config,
            local: BTreeSet::new(),
            local_key: None,
            encrypted: true,
            peers: BTreeMap::new(),
            tombstones,
            rejected,
            kept_out: Expiring::new(config_cap),
            graves: BTreeMap::new(),
            grave_order: VecDeque::new(),
            untombstoned_deletes: BTreeSet::new(),
            budgets: BTreeMap::new(),
            asked: BTreeMap::new(),
            counters: DiscoveryCounters::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// Who we are: our addresses (never added from gossip), our key and
    /// whether we encrypt (then every learned peer must come with a key).
    pub fn set_local(&mut self, addrs: &[SocketAddr], key: Option<PublicKey>, encrypted: bool) {
        self.local.extend(addrs.iter().copied());
        self.local_key = key;
        self.encrypted = encrypted;
    }

    /// Peers in the route table, as discovery knows it.
    /// Route-table peers that count against `table_size`. A peer someone
    /// else added (the application's seed, say) that has stayed
    /// disconnected past the grace period does not: discovery may not
    /// delete it (the node keeps retrying it for its owner), and a dead
    /// seed must not keep discovery from filling the table with live peers.
    ///
    /// Nor does a retry of a dead peer that has not connected yet: most
    /// never do (the peer is gone), and while one waits for its
    /// `connect_deadline` its slot may go to a live peer learned meanwhile.
    /// A retry that does connect is kept, so the table may hold up to the
    /// retries in flight more than `table_size` (retries are started only
    /// while the table and the retries in flight leave room).
    pub fn table_len(&self) -> usize {
        self.peers
            .values()
            .filter(|r| r.in_table && !r.dormant && !r.is_waiting_retry())
            .count()
    }

    /// Retries of dead peers that have not connected yet.
    fn retrying_len(&self) -> usize {
        self.peers.values().filter(|r| r.is_waiting_retry()).count()
    }

    fn pending_len(&self) -> usize {
        self.peers
            .values()
            .filter(|r| r.in_table && r.origin == Origin::Gossip && !r.ever_connected)
            .count()
    }

    /// Whether gossip naming `addr` is ignored now.
    pub fn is_tombstoned(&self, addr: SocketAddr, now: Instant) -> bool {
        self.tombstones.contains(&addr, now)
    }

    /// Addresses tombstoned now.
    pub fn tombstones(&self, now: Instant) -> Vec<SocketAddr> {
        self.tombstones.keys(now)
    }

    /// The counters.
    pub fn counters(&self) -> DiscoveryCounters {
        self.counters
    }

    /// Count one round and `asked` asks sent to these peers, whose answers
    /// are welcome for two intervals.
    pub fn round(&mut self, asked: &[SocketAddr], now: Instant) {
        self.counters.rounds += 1;
        self.asks_sent(asked, now);
    }

    /// Record asks sent outside a round (e.g. to a freshly connected peer).
    pub fn asks_sent(&mut self, asked: &[SocketAddr], now: Instant) {
        let until = now + self.config.interval * 2;
        for a in asked {
            if self.asked.len() < MAX_TRACKED || self.asked.contains_key(a) {
                self.asked.insert(*a, until);
                self.counters.asks_sent += 1;
            }
        }
    }

    /// Every peer discovery knows, sorted by address.
    pub fn known_peers(&self) -> Vec<KnownPeer> {
        let mut v: Vec<KnownPeer> = self
            .peers
            .iter()
            .map(|(addr, r)| KnownPeer {
                addr: *addr,
                public_key: r.key,
                in_route_table: r.in_table,
                connected: r.connected,
                origin: r.origin,
                nat: r.nat.nat,
                reflexive_addrs: r.nat.reflexive_addrs.clone(),
            })
            .collect();
        v.sort_by_key(|p| p.addr);
        v
    }

    // ----- lifecycle hooks ------------------------------------------------

    /// `node_added`: `addr` entered the route table.
    pub fn node_added(&mut self, addr: SocketAddr, now: Instant) {
        let r = self.peers.entry(addr).or_insert_with(|| Record {
            key: None,
            in_table: true,
            connected: false,
            ever_connected: false,
            origin: Origin::Added,
            since: now,
            disconnected_at: None,
            add_pending: false,
            confirmed: None,
            dormant: false,
            demoted: false,
            nat: NatInfo::default(),
        });
        if !r.in_table {
            r.in_table = true;
            r.origin = Origin::Added;
        }
    }

    /// `node_deleted`: `addr` left the route table. Tombstones it, unless
    /// discovery deleted it for refusing a gossiped key. A peer that had
    /// connected is remembered for retries; a retry that had not connected
    /// yet counts as failed (its backoff grows).
    pub fn node_deleted(&mut self, addr: SocketAddr, now: Instant) {
        self.deleted(addr, now, true);
    }

    /// `node_deleted` of a peer that was still talking (heard within
    /// [`dead_silence`](DiscoveryConfig::dead_silence)): deleted on
    /// purpose. Tombstoned like any deletion, but never retried.
    pub fn node_deleted_while_alive(&mut self, addr: SocketAddr, now: Instant) {
        self.graves.remove(&addr);
        self.kept_out
            .insert(addr, now + self.config.tombstone_ttl, ());
        self.deleted(addr, now, false);
    }

    /// `node_deleted`, told when the core last heard from the peer
    /// (`last_seen`: `None` if the peer is gone from the node's state,
    /// `Some(None)` if never heard, `Some(Some(ms))` if `ms` ago). Dead or
    /// deleted on purpose? A peer heard from within `dead_silence` was
    /// alive: its deletion must stick. One already gone from the state
    /// closed its session cleanly if it was connected (alive too), or never
    /// had one (a retry or a learned peer that never connected: dead).
    pub fn node_deleted_after(
        &mut self,
        addr: SocketAddr,
        last_seen: Option<Option<u64>>,
        now: Instant,
    ) {
        let died = match last_seen {
            Some(ms) => ms.is_none_or(|ms| Duration::from_millis(ms) >= self.config.dead_silence),
            None => !self.peers.get(&addr).is_some_and(|r| r.connected),
        };
        if died {
            self.node_deleted(addr, now);
        } else {
            self.node_deleted_while_alive(addr, now);
        }
    }

    fn deleted(&mut self, addr: SocketAddr, now: Instant, died: bool) {
        self.counters.deletions_seen += 1;
        let rec = self.peers.remove(&addr);
        self.asked.remove(&addr);
        if !self.untombstoned_deletes.remove(&addr) {
            let key = rec
                .as_ref()
                .and_then(|r| r.key)
                .or_else(|| self.tombstones.get(&addr, now).flatten())
                .or_else(|| self.graves.get(&addr).and_then(|g| g.key));
            self.tombstones
                .insert(addr, now + self.config.tombstone_ttl, key);
        }
        match rec {
            Some(r) if r.ever_connected && died => self.bury(addr, r.key, now),
            Some(r) if r.origin == Origin::Retry => self.retry_failed(addr, now),
            _ => {}
        }
    }

    // ----- retries of dead peers ----------------------------------------

    /// The wait before retry number `failures + 1`: `retry_min` doubled
    /// per failed retry, at most `retry_max`.
    pub fn retry_backoff(&self, failures: u32) -> Duration {
        let min = self.config.retry_min;
        let max = self.config.retry_max.max(min);
        let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
        min.checked_mul(factor).map_or(max, |d| d.min(max))
    }

    /// Remember a peer that was connected and died, to retry it.
    fn bury(&mut self, addr: SocketAddr, key: Option<PublicKey>, now: Instant) {
        let cap = self.config.max_tombstones;
        if self.config.max_retries_per_round == 0 || cap == 0 || (key.is_none() && self.encrypted) {
            return;
        }
        if let Some(g) = self.graves.get_mut(&addr) {
            // Died again while known: keep its backoff, learn its key.
            g.key = key.or(g.key);
            return;
        }
        self.graves.insert(
            addr,
            Grave {
                key,
                failures: 0,
                due: now + self.config.retry_min,
                retrying: false,
            },
        );
        self.grave_order.push_back(addr);
        while self.graves.len() > cap {
            match self.grave_order.pop_front() {
                Some(old) => {
                    self.graves.remove(&old);
                }
                None => break,
            }
        }
        if self.grave_order.len() > 2 * cap {
            let mut seen = BTreeSet::new();
            let graves = &self.graves;
            // Keep the newest entry of each live grave, in order.
            let mut v: Vec<SocketAddr> = self.grave_order.drain(..).rev().collect();
            v.retain(|a| graves.contains_key(a) && seen.insert(*a));
            v.reverse();
            self.grave_order = v.into();
        }
    }

    /// A retry of `addr` ended without a connection: back off further.
    fn retry_failed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(g) = self.graves.get(&addr).copied() else {
            return;
        };
        if !g.retrying {
            return;
        }
        let failures = g.failures.saturating_add(1);
        let due = now + self.retry_backoff(failures);
        if let Some(g) = self.graves.get_mut(&addr) {
            g.retrying = false;
            g.failures = failures;
            g.due = due;
        }
        self.counters.retries_failed += 1;
    }

    /// Dead peers remembered for retries.
    pub fn retry_count(&self) -> usize {
        self.graves.len()
    }

    /// When `addr`'s next retry is due and how many retries of it failed,
    /// if it is remembered as dead and not being retried now.
    pub fn retry_due(&self, addr: SocketAddr) -> Option<(Instant, u32)> {
        self.graves
            .get(&addr)
            .filter(|g| !g.retrying)
            .map(|g| (g.due, g.failures))
    }

    /// Re-add up to `max_retries_per_round` dead peers whose backoff has
    /// passed, while the table has room.
    fn retries(&mut self, now: Instant) -> Vec<Action> {
        let stale: Vec<SocketAddr> = self
            .graves
            .iter()
            .filter(|(a, g)| g.retrying && !self.peers.contains_key(a))
            .map(|(a, _)| *a)
            .collect();
        for a in stale {
            // Dropped without a deletion we saw (a failed add, a sync).
            self.retry_failed(a, now);
        }
        let room = self
            .config
            .table_size
            .saturating_sub(self.table_len() + self.retrying_len());
        let n = room.min(self.config.max_retries_per_round);
        if n == 0 {
            return Vec::new();
        }
        let mut due: Vec<(Instant, SocketAddr)> = self
            .graves
            .iter()
            .filter(|(a, g)| {
                !g.retrying
                    && g.due <= now
                    && !self.peers.contains_key(a)
                    && !self.local.contains(a)
            })
            .map(|(a, g)| (g.due, *a))
            .collect();
        due.sort();
        let mut actions = Vec::new();
        for (_, addr) in due.into_iter().take(n) {
            let Some(g) = self.graves.get_mut(&addr) else {
                continue;
            };
            g.retrying = true;
            let key = g.key;
            self.peers
                .insert(addr, Record::adding(key, Origin::Retry, now));
            self.counters.retries += 1;
            // By address, not pinned to the key it had: a peer that
            // restarted with a fresh identity at its address is taken back
            // (the core accepts the new key once the old session is gone).
            actions.push(Action::Add(addr, None));
        }
        actions
    }

    /// `peer_connected`: a session with `addr` is up; `key` is what it
    /// proved. Returns the promotion to perform, if the peer connected on
    /// its own and there is room.
    pub fn peer_connected(
        &mut self,
        addr: SocketAddr,
        key: Option<PublicKey>,
        now: Instant,
    ) -> Option<Action> {
        let table_len = self.table_len();
        let proven = key.is_some() || !self.encrypted;
        if proven && !self.kept_out.contains(&addr, now) {
            // It proved the key we knew for this address (or we knew none):
            // it is alive, take it back. A peer that died and now answers
            // from its address with another key restarted with a fresh
            // identity: take it back too (as the core does for a peer added
            // by address). Another key at an address that never died stays
            // tombstoned: nobody resurrects someone else's address.
            let grave = self.graves.remove(&addr);
            let restarted = grave.is_some_and(|g| g.key.is_some() && g.key != key);
            if let Some(known) = self.tombstones.get(&addr, now) {
                if known.is_none() || known == key || restarted {
                    self.tombstones.remove(&addr);
                    if !restarted {
                        self.counters.revived += 1;
                    }
                }
            }
            if restarted {
                self.counters.restarted += 1;
            }
        }
        let r = self.peers.entry(addr).or_insert_with(|| Record {
            key,
            in_table: false,
            connected: true,
            ever_connected: true,
            origin: Origin::Unlisted,
            since: now,
            disconnected_at: None,
            add_pending: false,
            confirmed: None,
            dormant: false,
            demoted: false,
            nat: NatInfo::default(),
        });
        r.key = key.or(r.key);
        r.connected = true;
        r.dormant = false;
        r.demoted = false;
        r.ever_connected = true;
        r.disconnected_at = None;
        let promote = !r.in_table
            && self.config.promote_inbound
            && table_len < self.config.inbound_cap()
            && !self.tombstones.contains(&addr, now)
            && proven;
        if promote {
            r.in_table = true;
            r.add_pending = true;
            r.origin = Origin::Inbound;
            self.counters.promoted += 1;
            // Added by address, not pinned: it proved its key from this
            // address already, and a pin would shut it out for good when it
            // restarts with a fresh key (issue 16). The core accepts a new
            // key there only once the old session fails a probe.
            return Some(Action::Add(addr, None));
        }
        None
    }

    /// `peer_disconnected`: the session with `addr` ended.
    pub fn peer_disconnected(&mut self, addr: SocketAddr, now: Instant) {
        let Some(r) = self.peers.get_mut(&addr) else {
            return;
        };
        r.connected = false;
        if r.in_table {
            r.disconnected_at.get_or_insert(now);
        } else {
            self.peers.remove(&addr);
        }
    }

    /// The core reports these route-table peers demoted and disconnected
    /// (a plugin such as the latency audit judged them dead; the node keeps
    /// reconnecting them for whoever added them). Someone else's peer in
    /// that state stops counting against the cap at the next [`expire`](Self::expire)
    /// (Self::expire), without waiting for `disconnect_grace`, so a dead
    /// seed does not hold a slot a live peer could take.
    pub fn demoted(&mut self, addrs: &[SocketAddr]) {
        for a in addrs {
            if let Some(r) = self.peers.get_mut(a) {
                if r.in_table && !r.connected {
                    r.demoted = true;
                }
            }
        }
    }

    /// `peer_rejected`: a connection attempt to `addr` failed (e.g. the key
    /// we pinned from gossip is not the peer's). A learned peer that never
    /// connected is deleted without a tombstone (another key may be right)
    /// and its (address, key) pair is not tried again until it expires.
    pub fn peer_rejected(&mut self, addr: SocketAddr, now: Instant) -> Option<Action> {
        let r = self.peers.get(&addr)?;
        if r.origin != Origin::Gossip || r.ever_connected || !r.in_table {
            return None;
        }
        if let Some(key) = r.key {
            self.rejected
                .insert((addr, key), now + self.config.tombstone_ttl, ());
        }
        self.counters.key_rejections += 1;
        self.peers.remove(&addr);
        self.untombstoned_deletes.insert(addr);
        Some(Action::Delete(addr))
    }

    /// An add discovery asked for failed locally; forget it.
    pub fn add_failed(&mut self, addr: SocketAddr) {
        if let Some(r) = self.peers.get_mut(&addr) {
            r.add_pending = false;
        }
        if self.peers.get(&addr).is_some_and(|r| {
            matches!(r.origin, Origin::Gossip | Origin::Inbound | Origin::Retry) && !r.connected
        }) {
            self.peers.remove(&addr);
        }
    }

    /// The `add` discovery asked for went through at `now`.
    pub fn add_done(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(r) = self.peers.get_mut(&addr) {
            r.add_pending = false;
            r.confirmed = Some(now);
        }
    }

    // ----- gossip ----------------------------------------------------------

    /// May `from` have an ask answered now? At most
    /// `max_answers_per_interval` per peer per interval.
    pub fn allow_ask(&mut self, from: SocketAddr, now: Instant) -> bool {
        let interval = self.config.interval;
        if !self.budgets.contains_key(&from) && self.budgets.len() >= MAX_TRACKED {
            self.counters.asks_refused += 1;
            return false;
        }
        let (start, used) = self.budgets.entry(from).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= interval {
            *start = now;
            *used = 0;
        }
        if *used >= self.config.max_answers_per_interval {
            self.counters.asks_refused += 1;
            return false;
        }
        *used += 1;
        self.counters.asks_answered += 1;
        true
    }

    /// Whether an answer from `from` was asked for; consumes the ask.
    pub fn take_answer(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.asked.remove(&from) {
            Some(until) if until > now => true,
            _ => {
                self.counters.unsolicited_dropped += 1;
                false
            }
        }
    }

    /// Count a body refused by the decoder.
    pub fn dropped(&mut self, oversized: bool) {
        if oversized {
            self.counters.oversized_dropped += 1;
        } else {
            self.counters.malformed_dropped += 1;
        }
    }

    /// Merge a received peer list: returns the adds to perform
    /// (already recorded as pending learned peers).
    pub fn merge(&mut self, entries: &[PeerEntry], now: Instant) -> Vec<Action> {
        self.merge_with_nats(entries, &[], now)
    }

    /// [`merge`](Self::merge) with the NAT type the sender gave for each
    /// entry (same order; may be shorter): kept for peers we know or add,
    /// unless the peer told us its own.
    pub fn merge_with_nats(
        &mut self,
        entries: &[PeerEntry],
        nats: &[NatType],
        now: Instant,
    ) -> Vec<Action> {
        self.counters.lists_received += 1;
        let mut table_len = self.table_len();
        let mut pending = self.pending_len();
        let mut adds = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let addr = e.addr;
            let key = e.key.map(PublicKey::from_bytes);
            if let (Some(&nat), Some(r)) = (nats.get(i), self.peers.get_mut(&addr)) {
                if !r.nat.self_reported
                    && nat != NatType::Unknown
                    && (key.is_none() || key == r.key)
                {
                    r.nat.nat = nat;
                }
            }
            if !is_connectable(addr) || self.local.contains(&addr) {
                self.counters.invalid_entries += 1;
                continue;
            }
            if key.is_some() && key == self.local_key {
                // Our own key under another address: a stale or forged entry.
                self.counters.invalid_entries += 1;
                continue;
            }
            if let Some(r) = self.peers.get(&addr) {
                if let (Some(known), Some(k)) = (r.key, key) {
                    if known != k {
                        self.counters.key_conflicts += 1;
                    }
                }
                continue;
            }
            if self.tombstones.contains(&addr, now) {
                self.counters.tombstoned_skips += 1;
                continue;
            }
            let key = if self.encrypted {
                match key {
                    Some(k) => Some(k),
                    None => {
                        self.counters.unkeyed_skips += 1;
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(k) = key {
                if self.rejected.contains(&(addr, k), now) {
                    self.counters.key_conflicts += 1;
                    continue;
                }
            }
            if table_len >= self.config.table_size || pending >= self.config.max_pending {
                self.counters.cap_skips += 1;
                continue;
            }
            let mut record = Record::adding(key, Origin::Gossip, now);
            record.nat.nat = nats.get(i).copied().unwrap_or_default();
            self.peers.insert(addr, record);
            table_len += 1;
            pending += 1;
            self.counters.added += 1;
            adds.push(Action::Add(addr, key));
        }
        adds
    }

    /// The NAT type we know for each of `entries` (for a body's extension).
    pub fn nats_of(&self, entries: &[PeerEntry]) -> Vec<NatType> {
        entries
            .iter()
            .map(|e| {
                self.peers
                    .get(&e.addr)
                    .map(|r| r.nat.nat)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// What the peer at `from` said of itself in a list it sent (over its
    /// own session, so it is believed over hearsay). Ignored for an address
    /// we keep no record of.
    pub fn learn_self(&mut self, from: SocketAddr, me: &SelfRecord) {
        if let Some(r) = self.peers.get_mut(&from) {
            r.nat = NatInfo {
                nat: me.nat,
                reflexive_addrs: me.reflexive_addrs.clone(),
                self_reported: true,
            };
        }
    }

    /// Up to `max_entries` random peers that are connected now (never
    /// `exclude`, never tombstoned), keys included.
    pub fn sample(
        &self,
        exclude: Option<SocketAddr>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<PeerEntry> {
        let now_ok = |a: &SocketAddr, r: &Record| {
            r.connected
                && Some(*a) != exclude
                && is_connectable(*a)
                && (r.key.is_some() || !self.encrypted)
                && !self.tombstones.contains(a, now)
        };
        self.peers
            .iter()
            .filter(|(a, r)| now_ok(a, r))
            .map(|(a, r)| PeerEntry {
                addr: *a,
                key: r.key.map(|k| *k.as_bytes()),
            })
            .choose_multiple(rng, self.config.max_entries)
    }

    // ----- timers -----------------------------------------------------------

    /// Run the timers: learned peers (and retries) that never connected
    /// within the deadline and peers discovery put in the table that stayed
    /// disconnected for longer than the grace period are deleted (and tombstoned, here, so gossip cannot bring them
    /// back before the route table notices); dead peers whose retry backoff
    /// has passed are re-added (at most `max_retries_per_round`, while the
    /// table has room); expired tombstones, budgets and asks are forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<Action> {
        let deadline = self.config.connect_deadline;
        let grace = self.config.disconnect_grace;
        for r in self.peers.values_mut() {
            r.dormant = r.origin == Origin::Added
                && r.in_table
                && !r.connected
                && (r.demoted
                    || r.disconnected_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= grace));
        }
        let mut junk = Vec::new();
        let mut dead = Vec::new();
        for (addr, r) in &self.peers {
            // Peers someone else added are theirs to remove: the node keeps
            // reconnecting them (and a plugin cannot delete a peer the
            // application added anyway). Past the grace they go dormant.
            if !r.in_table || r.connected || r.origin == Origin::Added {
                continue;
            }
            if matches!(r.origin, Origin::Gossip | Origin::Retry) && !r.ever_connected {
                if now.saturating_duration_since(r.since) >= deadline {
                    junk.push(*addr);
                }
            } else if r
                .disconnected_at
                .is_some_and(|t| now.saturating_duration_since(t) >= grace)
            {
                dead.push(*addr);
            }
        }
        self.counters.dead_dropped += dead.len() as u64;
        let mut actions = Vec::with_capacity(junk.len() + dead.len());
        for addr in junk.into_iter().chain(dead) {
            let Some(r) = self.peers.remove(&addr) else {
                continue;
            };
            self.tombstones
                .insert(addr, now + self.config.tombstone_ttl, r.key);
            if r.ever_connected {
                self.bury(addr, r.key, now);
            } else if r.origin == Origin::Retry {
                self.retry_failed(addr, now);
            } else {
                self.counters.junk_dropped += 1;
            }
            actions.push(Action::Delete(addr));
        }
        actions.extend(self.retries(now));
        self.tombstones.expire(now);
        self.rejected.expire(now);
        let interval = self.config.interval;
        self.budgets
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < interval);
        self.asked.retain(|_, until| *until > now);
        actions
    }

    /// Reconcile with a route-table snapshot: `(addr, in_route_table,
    /// connected, key)` for every peer the node reports, requested at
    /// `taken`. Repairs what missed events (a full plugin queue) left stale.
    /// A peer discovery is still adding, whose add completed after the
    /// snapshot was requested, or that is younger than `settle`, is kept
    /// even if the snapshot does not show it: otherwise a slow add (a loaded
    /// node) would free its slot and let the table overshoot its cap.
    pub fn sync(
        &mut self,
        snapshot: &[(SocketAddr, bool, bool, Option<PublicKey>)],
        settle: Duration,
        taken: Instant,
        now: Instant,
    ) {
        let seen: BTreeSet<SocketAddr> = snapshot.iter().map(|s| s.0).collect();
        let in_flight = |r: &Record| r.add_pending || r.confirmed.is_some_and(|c| c >= taken);
        self.peers.retain(|addr, r| {
            seen.contains(addr) || in_flight(r) || now.saturating_duration_since(r.since) < settle
        });
        for &(addr, in_table, connected, key) in snapshot {
            if !in_table && !connected {
                continue;
            }
            let r = self.peers.entry(addr).or_insert_with(|| Record {
                key,
                in_table,
                connected: false,
                ever_connected: false,
                origin: if in_table {
                    Origin::Added
                } else {
                    Origin::Unlisted
                },
                since: now,
                disconnected_at: None,
                add_pending: false,
                confirmed: None,
                dormant: false,
                demoted: false,
                nat: NatInfo::default(),
            });
            if r.in_table
                && !in_table
                && !in_flight(r)
                && now.saturating_duration_since(r.since) >= settle
            {
                r.in_table = false;
            } else if in_table {
                r.in_table = true;
            }
            if connected {
                r.connected = true;
                r.ever_connected = true;
                r.demoted = false;
                r.disconnected_at = None;
                r.key = key.or(r.key);
            } else if r.connected {
                r.connected = false;
                if r.in_table {
                    r.disconnected_at.get_or_insert(now);
                }
            }
        }
        self.peers.retain(|_, r| r.in_table || r.connected);
    }

    /// Tombstones held (expired ones included until the next `expire`).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }
}

/// Whether `addr` could be a peer at all.
fn is_connectable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let bad_v4 = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !bad_v4
        // A relay path names a peer through one node's relay: meaningless
        // to anyone else.
        && !gladius_p2p::is_relay_path(addr)
}
