//! [`GossipConfig`]: timers, bounds and rates, with documented defaults.

use std::time::Duration;

use super::wire::MAX_IDS_PER_FRAME;

/// Settings of the gossip core and plugin. Every bound caps memory or work
/// under hostile input; the defaults suit networks of up to ~10,000 nodes
/// with up to a few hundred messages per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// How long a missing message announced by `ihave` is awaited on the
    /// tree before grafting the first announcer (default 250 ms: several
    /// link latencies; shorter repairs faster, but also grafts when the
    /// tree is merely slower than the announcement, and each such graft
    /// reshapes the tree toward one origin and costs a duplicate later. In
    /// simulation at 1,000 nodes with 10 % crashed, 150 ms gave RMR 0.31
    /// and 250 ms 0.09, with a lower median latency).
    pub graft_timeout: Duration,
    /// How long each further announcer is given after a graft went
    /// unanswered (default 75 ms).
    pub graft_retry: Duration,
    /// Hops an `ihave` must save over the tree path before the node swaps
    /// its tree parent for the announcer (default 0: off). Off because in
    /// simulations with random
    /// origins it made delivery slower and redundancy higher (the tree
    /// keeps turning toward the last origin; see `docs/gossip.md`).
    pub reroute_threshold: u16,
    /// Latency optimisation: a lazy neighbour whose announcement of a
    /// message arrived at least [`optimise_lead`](Self::optimise_lead)
    /// before the tree delivered it, for this many of the last
    /// [`optimise_window`](Self::optimise_window) messages, replaces the
    /// tree neighbour that delivered them (0: off).
    pub optimise_after: usize,
    /// See [`optimise_after`](Self::optimise_after).
    pub optimise_window: usize,
    /// See [`optimise_after`](Self::optimise_after).
    pub optimise_lead: Duration,
    /// A neighbour that subscribes while this node already has a tree
    /// link in the topic starts lazy (a repair link) rather than eager
    /// (default true). Eager, each new link closes a cycle that costs a
    /// duplicate and a prune; after a crash discovery replaces many links
    /// at once, and in simulation (1,000 nodes, 30 % crashed) eager
    /// newcomers raised the redundancy of the following messages above 1.
    pub join_lazy: bool,
    /// The origin of a message pushes it to this many of its lazy
    /// neighbours too, instead of announcing it to them: the ones with the
    /// lowest round-trip time first, unknown last (default 0: off; see
    /// `docs/gossip.md`, "Shortcuts", for what 8 does).
    /// These copies go off the tree (wire kind 6): their receivers neither
    /// make the sender eager nor prune on them. A shared tree is longer
    /// than the shortest paths from a random origin; starting on more links
    /// at once shortens them, at a cost per message, not per node
    /// (`docs/gossip.md`, "Latency").
    pub origin_fanout: usize,
    /// A node that got a message straight from its origin also pushes it,
    /// off the tree, to this many of its lazy neighbours, fastest first
    /// (default 0: off).
    pub shortcut_pushes: usize,
    /// Nodes up to this many hops from the origin make the shortcut
    /// pushes (default 1: the origin's neighbours only). Each level
    /// multiplies the pushes by about the mean degree, so deeper levels
    /// pay off only on large networks, where RMR's budget is per node.
    pub shortcut_depth: u16,
    /// How long a message lives: older ones are dropped, not delivered,
    /// and ids are remembered this long (default 2 min).
    pub message_ttl: Duration,
    /// How far in the future an origin's timestamp may be (default 30 s).
    pub max_clock_skew: Duration,
    /// Ids remembered at most (default 65,536; 32 bytes each plus
    /// overhead, about 6 MiB). When full, the oldest is forgotten and
    /// every message no newer than it is refused from then on, so a
    /// message is never delivered twice.
    pub max_seen: usize,
    /// How long full messages are kept to answer grafts (default 30 s).
    pub cache_ttl: Duration,
    /// Body bytes kept to answer grafts (default 16 MiB; the oldest
    /// messages go first).
    pub max_cache_bytes: usize,
    /// Largest body published or accepted (default 64 KiB).
    pub max_body_len: usize,
    /// Missing ids awaited (announced, not yet received) at most (default
    /// 4096); further announcements are ignored and counted.
    pub max_pending_grafts: usize,
    /// Announcers remembered per missing id (default 8).
    pub max_announcers: usize,
    /// Ids per `ihave`/`graft` frame accepted (default 64, at most 255).
    pub max_ids_per_frame: usize,
    /// Frames per second one peer may send us, sustained (default 2000).
    pub peer_rate: u32,
    /// Frames one peer may send in a burst (default 4000). Beyond the
    /// rate, a peer's frames are dropped and counted (`throttled`).
    pub peer_burst: u32,
    /// Topics this node may subscribe to (default 256).
    pub max_topics: usize,
    /// Topics remembered per peer (default 256); further subscriptions
    /// from that peer are ignored and counted.
    pub max_topics_per_peer: usize,
    /// (peer, id) pairs remembered as forged (default 4096).
    pub max_distrusted: usize,
    /// Deliveries waiting for a slow subscriber, per subscription (default
    /// 1024); beyond it deliveries to that subscriber are dropped and
    /// counted (the network is never held up by a reader).
    pub subscriber_queue: usize,
    /// Baseline mode for measurements: every peer is eager and duplicates
    /// never prune, i.e. plain flooding (default false).
    pub flood: bool,
    /// Topics flooded (as [`flood`](Self::flood) does for all) while the
    /// others use the tree: lets one network measure both side by side
    /// (default none).
    pub flood_topics: Vec<String>,
    /// Seed of the message nonces (default none: from the OS). Set it for
    /// reproducible runs (`gladius-sim`).
    pub rng_seed: Option<u64>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            graft_timeout: Duration::from_millis(250),
            graft_retry: Duration::from_millis(75),
            reroute_threshold: 0,
            join_lazy: true,
            origin_fanout: 0,
            shortcut_pushes: 0,
            shortcut_depth: 1,
            optimise_after: 0,
            optimise_window: 16,
            optimise_lead: Duration::from_millis(20),
            message_ttl: Duration::from_secs(120),
            max_clock_skew: Duration::from_secs(30),
            max_seen: 65_536,
            cache_ttl: Duration::from_secs(30),
            max_cache_bytes: 16 << 20,
            max_body_len: 64 << 10,
            max_pending_grafts: 4096,
            max_announcers: 8,
            max_ids_per_frame: 64,
            peer_rate: 2000,
            peer_burst: 4000,
            max_topics: 256,
            max_topics_per_peer: 256,
            max_distrusted: 4096,
            subscriber_queue: 1024,
            flood: false,
            flood_topics: Vec::new(),
            rng_seed: None,
        }
    }
}

impl GossipConfig {
    /// Set [`graft_timeout`](Self::graft_timeout) (at least 1 ms).
    pub fn with_graft_timeout(mut self, d: Duration) -> Self {
        self.graft_timeout = d.max(Duration::from_millis(1));
        self
    }
    /// Set [`graft_retry`](Self::graft_retry) (at least 1 ms).
    pub fn with_graft_retry(mut self, d: Duration) -> Self {
        self.graft_retry = d.max(Duration::from_millis(1));
        self
    }
    /// Set [`reroute_threshold`](Self::reroute_threshold) (0 = off).
    pub fn with_reroute_threshold(mut self, hops: u16) -> Self {
        self.reroute_threshold = hops;
        self
    }
    /// Set the latency optimisation ([`optimise_after`](Self::optimise_after)).
    pub fn with_optimise(mut self, after: usize, window: usize, lead: Duration) -> Self {
        self.optimise_after = after;
        self.optimise_window = window.max(1);
        self.optimise_lead = lead;
        self
    }
    /// Set [`join_lazy`](Self::join_lazy).
    pub fn with_join_lazy(mut self, lazy: bool) -> Self {
        self.join_lazy = lazy;
        self
    }
    /// Set [`origin_fanout`](Self::origin_fanout) and
    /// [`shortcut_pushes`](Self::shortcut_pushes).
    pub fn with_shortcuts(mut self, origin_fanout: usize, shortcut_pushes: usize) -> Self {
        self.origin_fanout = origin_fanout;
        self.shortcut_pushes = shortcut_pushes;
        self
    }
    /// Set [`shortcut_depth`](Self::shortcut_depth) (at least 1).
    pub fn with_shortcut_depth(mut self, hops: u16) -> Self {
        self.shortcut_depth = hops.max(1);
        self
    }
    /// Set [`message_ttl`](Self::message_ttl) (at least 1 s).
    pub fn with_message_ttl(mut self, d: Duration) -> Self {
        self.message_ttl = d.max(Duration::from_secs(1));
        self
    }
    /// Set [`max_seen`](Self::max_seen) (at least 16).
    pub fn with_max_seen(mut self, n: usize) -> Self {
        self.max_seen = n.max(16);
        self
    }
    /// Set [`max_body_len`](Self::max_body_len).
    pub fn with_max_body_len(mut self, n: usize) -> Self {
        self.max_body_len = n;
        self
    }
    /// Set [`max_pending_grafts`](Self::max_pending_grafts) (at least 1).
    pub fn with_max_pending_grafts(mut self, n: usize) -> Self {
        self.max_pending_grafts = n.max(1);
        self
    }
    /// Set [`max_ids_per_frame`](Self::max_ids_per_frame) (1..=255).
    pub fn with_max_ids_per_frame(mut self, n: usize) -> Self {
        self.max_ids_per_frame = n.clamp(1, MAX_IDS_PER_FRAME);
        self
    }
    /// Set [`peer_rate`](Self::peer_rate) and [`peer_burst`](Self::peer_burst)
    /// (each at least 1).
    pub fn with_peer_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.peer_rate = per_second.max(1);
        self.peer_burst = burst.max(1);
        self
    }
    /// Set [`subscriber_queue`](Self::subscriber_queue) (at least 1).
    pub fn with_subscriber_queue(mut self, n: usize) -> Self {
        self.subscriber_queue = n.max(1);
        self
    }
    /// Set [`flood`](Self::flood).
    pub fn with_flood(mut self, flood: bool) -> Self {
        self.flood = flood;
        self
    }
    /// Flood `topic` (see [`flood_topics`](Self::flood_topics)).
    pub fn with_flood_topic(mut self, topic: impl Into<String>) -> Self {
        self.flood_topics.push(topic.into());
        self
    }
    /// Set [`rng_seed`](Self::rng_seed).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}
