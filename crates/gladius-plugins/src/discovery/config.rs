//! The discovery plugin's settings.

use std::time::Duration;

/// Settings of the [`Discovery`](super::Discovery) plugin. Start from
/// [`DiscoveryConfig::default`] and change the fields you need.
///
/// | field | default |
/// |---|---|
/// | `interval` | 5 s |
/// | `fanout` | 3 |
/// | `table_size` | 64 |
/// | `max_entries` | 64 |
/// | `max_answers_per_interval` | 2 |
/// | `max_pending` | 32 |
/// | `connect_deadline` | 15 s |
/// | `disconnect_grace` | 30 s |
/// | `tombstone_ttl` | 5 min |
/// | `max_tombstones` | 1024 |
/// | `retry_min` | 2 s |
/// | `retry_max` | 10 s |
/// | `max_retries_per_round` | 4 |
/// | `dead_silence` | 3 s |
/// | `promote_inbound` | true |
/// | `rng_seed` | none (from the OS) |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// How often the plugin asks random peers for theirs, and the window of
    /// the per-peer answer budget. Each round is jittered by ±10 %.
    /// Default 5 s.
    pub interval: Duration,
    /// How many random writable peers each round asks
    /// (`broadcast_randomly`). Default 3.
    pub fanout: usize,
    /// The route-table size discovery grows the table to: it adds learned
    /// peers (and promotes inbound ones) only while the route table holds
    /// fewer peers than this. Peers you add yourself count too but are
    /// never refused. Default 64.
    pub table_size: usize,
    /// Most entries in one discovery message. Lists announcing more are
    /// dropped whole (and counted); our own asks and answers carry at most
    /// this many, so an answer is never larger than
    /// [`max_body_len`](super::wire::max_body_len)`(max_entries)` bytes.
    /// Default 64.
    pub max_entries: usize,
    /// Asks answered per peer per `interval`; more are dropped and counted.
    /// Default 2.
    pub max_answers_per_interval: u32,
    /// Learned peers that may be waiting for their first connection at
    /// once; further entries wait for a later round. Bounds the handshakes
    /// a lying peer can make us start. Default 32.
    pub max_pending: usize,
    /// A peer added from gossip that has not connected within this time is
    /// deleted again (counted as junk) and tombstoned. Default 15 s.
    pub connect_deadline: Duration,
    /// A route-table peer whose session ended and did not come back within
    /// this time is deleted and tombstoned. Default 30 s.
    pub disconnect_grace: Duration,
    /// How long a deleted (dead) peer stays tombstoned: gossip naming it is
    /// ignored until then. Default 5 min.
    pub tombstone_ttl: Duration,
    /// Most tombstones kept; past it the oldest is forgotten first. Also
    /// the most dead peers remembered for retries. Default 1024.
    pub max_tombstones: usize,
    /// A peer that had connected and then died (deleted by anyone, e.g.
    /// the latency audit, or by discovery after `disconnect_grace`) is
    /// re-added (`add_pinned` to the key it proved) on the first round at
    /// least this long after it died. Default 2 s.
    pub retry_min: Duration,
    /// The wait before a retry doubles after each retry that did not
    /// connect (deleted again after `connect_deadline`, or by the latency
    /// audit), up to this. With the defaults (and the latency audit's 6 s
    /// dead bound) the two sides of a healed 20 s partition find each other
    /// again within about 15 s. Default 10 s.
    pub retry_max: Duration,
    /// Most dead peers re-added per round (only while the route table holds
    /// fewer than `table_size` peers). 0 turns retries off: dead peers are
    /// then only taken back when they connect to us. Default 4.
    pub max_retries_per_round: usize,
    /// A deleted peer counts as dead (and is retried) only if nothing was
    /// heard from it for at least this long when it was deleted. A peer
    /// deleted while it was still talking was deleted on purpose (by the
    /// application, say): it is tombstoned and never retried. The latency
    /// audit (probes every second, dead after about 6 s of silence) keeps
    /// live peers well under it; without the audit, an idle peer is heard
    /// only at every keepalive (5 s), so keep this above that or accept
    /// that deliberate deletes of idle peers are retried. Default 3 s.
    pub dead_silence: Duration,
    /// Add peers that connected to us on their own (inbound, non-writable)
    /// to the route table (by address: a restart with a new key is let in
    /// once the old session fails a probe), while below
    /// [`inbound_cap`](Self::inbound_cap): `table_size` plus an eighth.
    /// Only a node whose own table is short dials out, so the slack goes
    /// only to such nodes: without it, the last nodes to join a network
    /// of full tables were refused by everyone (their pings unanswered,
    /// each full peer tombstoned in turn) and stayed short for good.
    /// Default true. When false, the peer lists such peers
    /// send in their asks are not learned either (the asks are still
    /// answered): the table holds only the application's peers and those
    /// writable peers told of.
    pub promote_inbound: bool,
    /// Seed of the plugin's random choices (which peers a list samples,
    /// round jitter), so a simulation repeats exactly. Default `None`: a
    /// fresh seed from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            fanout: 3,
            table_size: 64,
            max_entries: 64,
            max_answers_per_interval: 2,
            max_pending: 32,
            connect_deadline: Duration::from_secs(15),
            disconnect_grace: Duration::from_secs(30),
            tombstone_ttl: Duration::from_secs(300),
            max_tombstones: 1024,
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(10),
            max_retries_per_round: 4,
            dead_silence: Duration::from_secs(3),
            promote_inbound: true,
            rng_seed: None,
        }
    }
}

impl DiscoveryConfig {
    /// The most route-table peers inbound promotion fills to:
    /// `table_size + table_size / 8` (45 for a table of 40; no slack below
    /// 8, so tiny tables keep their exact shape).
    pub fn inbound_cap(&self) -> usize {
        self.table_size + self.table_size / 8
    }

    /// Set [`rng_seed`](Self::rng_seed).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}
