//! The gossip protocol as a sans-IO state machine: PlumTree (epidemic
//! broadcast trees) per topic over the peers the node has.
//!
//! [`State`] never touches a socket, a clock or a global random generator.
//! Its driver (the [`Gossip`](super::Gossip) plugin on a real network, or
//! `gossip::sim` (feature `sim`) in tests and simulations) feeds it
//!
//! * [`State::handle`] with `(now_ms, InEvent)`: a peer came up or went
//!   down, a frame arrived from a peer, a timer fired;
//! * [`State::subscribe`], [`State::unsubscribe`] and [`State::publish`]
//!   from the application;
//!
//! and after each call drains [`State::poll_transmit`] (frames to send),
//! [`State::poll_timer`] (timers to set; fire each as
//! [`InEvent::Timer`] at or after its time) and [`State::poll_delivery`]
//! (messages for the application). [`State::counters`] says what it did
//! and dropped. `now_ms` is Unix time in milliseconds (message timestamps
//! and their TTL are compared with it) and must not go backwards. The
//! only randomness (message nonces) comes from the seed given to
//! [`State::new`], so a run is reproducible.
//!
//! ## The tree
//!
//! Per topic, every peer that told us it is subscribed (a `subscribe`
//! frame) is a neighbour, in one of two sets: **eager** (gets full
//! messages at once) or **lazy** (gets `ihave` announcements of ids).
//! New neighbours start eager. A node that receives a message for the
//! first time delivers it, makes the sender eager, pushes the message to
//! its other eager neighbours and announces it to its lazy ones. A
//! duplicate from an eager neighbour means that link closes a cycle: the
//! receiver moves it to lazy and sends `prune`, and the other side does
//! the same. After a few messages the eager links form a spanning tree,
//! so each node gets each message once. An `ihave` for an id not received
//! within [`graft_timeout`](super::GossipConfig::graft_timeout) means the
//! tree is broken (a crashed node, a lost link) or slow: the node sends
//! `graft` to the announcer, which sends the message and makes the link
//! eager again, repairing the tree; another announcer is tried every
//! [`graft_retry`](super::GossipConfig::graft_retry).
//!
//! **Shorter paths.** A tree formed by pruning is short for the origins
//! that shaped it and long for others. Each `ihave` carries the
//! announcer's hop count; when an announcer has a message at least
//! [`reroute_threshold`](super::GossipConfig::reroute_threshold) hops
//! closer to its origin than the tree brought it to us, the node makes
//! the announcer eager (a `graft` with no ids: no payload is resent) and
//! prunes its tree parent (PlumTree's optimisation, section 3.8 of the
//! paper). It is off by default: with messages from random origins it
//! made things worse in simulation (see `docs/gossip.md`).
//!
//! **Faster paths.** The same swap, decided on time and over many
//! messages rather than one
//! ([`optimise_after`](super::GossipConfig::optimise_after)): a lazy
//! neighbour whose `ihave` arrived at least
//! [`optimise_lead`](super::GossipConfig::optimise_lead) before the tree
//! delivered the message, for enough of the last
//! [`optimise_window`](super::GossipConfig::optimise_window) messages,
//! replaces the neighbour that delivered them. Also off by default: it
//! changed the median latency by a few percent at most in both simulators
//! (`docs/gossip.md` says why no shared tree gets much closer to
//! flooding).
//!
//! ## What a node refuses
//!
//! Frames from a peer beyond its rate (a token bucket), frames that do not
//! parse, topics we are not subscribed to, messages older than the TTL or
//! further in the future than the clock skew allows, and messages whose
//! origin signature does not verify (the forwarder is then not trusted
//! for that id again: its later copies and announcements of it are
//! ignored). Each is counted in [`Counters`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::config::GossipConfig;
use super::key::{GossipKey, MessageId, Origin};
use super::wire::{Data, Frame, Topic, Via, MAX_IDS_PER_FRAME};

/// What names a peer: the session address on a real network, an index in
/// a simulation. Ordered so that every iteration is deterministic.
pub trait PeerId: Copy + Ord + Hash + Debug + Send + Sync + 'static {}
impl<T: Copy + Ord + Hash + Debug + Send + Sync + 'static> PeerId for T {}

/// An input to [`State::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEvent<P> {
    /// A session to this peer is up: it can be sent to.
    PeerUp(P),
    /// The session to this peer ended.
    PeerDown(P),
    /// A gossip frame (the body of a `gossip.frame` message) from a peer.
    Message {
        /// Who sent it.
        from: P,
        /// The frame's bytes, untrusted.
        frame: Bytes,
    },
    /// A timer set through [`State::poll_timer`] fired.
    Timer(Timer),
    /// The round-trip time to a peer, as the node measured it: shortcut
    /// pushes go to the fastest lazy neighbours.
    Rtt {
        /// The peer.
        peer: P,
        /// Its round-trip time, ms.
        ms: u32,
    },
}

/// A timer the state machine wants fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Graft the next announcer of this id if it is still missing.
    Graft(MessageId),
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The peer.
    pub to: P,
    /// The bytes: the body of a [`MESSAGE_TYPE`](super::wire::MESSAGE_TYPE) message.
    pub frame: Bytes,
}

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMessage {
    /// Its topic.
    pub topic: Topic,
    /// The key of the node that published and signed it.
    pub origin: Origin,
    /// Its id (SHA-256 of what the origin signed).
    pub id: MessageId,
    /// The application's bytes.
    pub body: Bytes,
    /// Links it crossed to reach this node (1 from a direct neighbour of
    /// the origin); reported by forwarders, not signed.
    pub hops: u16,
    /// When the origin published it, Unix milliseconds by its clock.
    pub timestamp_ms: u64,
}

/// What the state machine did and refused, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages this node published.
    pub published: u64,
    /// Messages delivered to the application (each once).
    pub delivered: u64,
    /// Full messages received again (the redundancy the tree removes).
    pub duplicates: u64,
    /// Full-message frames sent (eager pushes and graft answers).
    pub data_sent: u64,
    /// Of `data_sent`, copies sent over links outside the tree (the
    /// origin's fan-out and shortcut pushes).
    pub shortcuts_sent: u64,
    /// `ihave` ids sent.
    pub ihave_sent: u64,
    /// `graft` frames sent (tree repairs).
    pub grafts_sent: u64,
    /// `graft` frames received.
    pub grafts_received: u64,
    /// `prune` frames sent.
    pub prunes_sent: u64,
    /// `prune` frames received.
    pub prunes_received: u64,
    /// Frames sent, all kinds.
    pub frames_sent: u64,
    /// Bytes of frames sent.
    pub bytes_sent: u64,
    /// Bytes of frames received (before any check).
    pub bytes_received: u64,
    /// Messages whose origin signature failed (forged or modified).
    pub forged: u64,
    /// Copies or announcements of an id from a peer that forged it before.
    pub distrusted: u64,
    /// Messages older than the TTL (or than the oldest id forgotten).
    pub too_old: u64,
    /// Messages timestamped further ahead than the allowed clock skew.
    pub from_future: u64,
    /// Frames dropped because their peer exceeded its rate.
    pub throttled: u64,
    /// Frames that did not parse.
    pub malformed: u64,
    /// Frames refused for their size (body or id count).
    pub oversized: u64,
    /// Frames about topics this node is not subscribed to.
    pub not_subscribed: u64,
    /// Announced ids not awaited because `max_pending_grafts` were.
    pub pending_full: u64,
    /// Subscriptions of peers ignored because of `max_topics_per_peer`.
    pub peer_topics_full: u64,
    /// Grafted ids no longer held (answered with nothing).
    pub graft_misses: u64,
    /// Missing ids given up after every announcer was grafted.
    pub grafts_exhausted: u64,
    /// Tree parents swapped for an announcer closer to the origin.
    pub reroutes: u64,
}

/// A topic's tree as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Neighbours pushed to eagerly (tree links).
    pub eager: usize,
    /// Neighbours told lazily (repair links).
    pub lazy: usize,
}

/// Why [`State::publish`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The body is longer than [`max_body_len`](GossipConfig::max_body_len).
    #[error("body of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why [`State::subscribe`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// Already subscribed to [`max_topics`](GossipConfig::max_topics) topics.
    #[error("already subscribed to the maximum of {0} topics")]
    TooManyTopics(usize),
}

/// The PlumTree state of one node; see the [module docs](self).
#[derive(Debug)]
pub struct State<P: PeerId> {
    key: GossipKey,
    origin: Origin,
    config: GossipConfig,
    ms: Millis,
    rng: StdRng,
    peers: BTreeMap<P, Peer>,
    topics: BTreeMap<Topic, Tree<P>>,
    seen: Seen,
    cache: Cache<P>,
    missing: HashMap<MessageId, Missing<P>>,
    distrusted: Distrusted<P>,
    transmits: VecDeque<Transmit<P>>,
    timers: VecDeque<(u64, Timer)>,
    deliveries: VecDeque<GossipMessage>,
    counters: Counters,
}

/// The config's durations in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Millis {
    graft_timeout: u64,
    graft_retry: u64,
    ttl: u64,
    skew: u64,
    cache_ttl: u64,
    optimise_lead: u64,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One peer: what it subscribed to and its rate budget.
#[derive(Debug)]
struct Peer {
    topics: BTreeSet<Topic>,
    bucket: Bucket,
    rtt_ms: Option<u32>,
}

/// A token bucket in thousandths of a frame.
#[derive(Debug)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(now: u64, burst: u32) -> Self {
        Self {
            milli_tokens: u64::from(burst) * 1000,
            at_ms: now,
        }
    }
    /// Take one frame's token if there is one.
    fn take(&mut self, now: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now);
        // rate frames/s = rate milli-frames/ms.
        let cap = u64::from(burst) * 1000;
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(cap);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// One topic's neighbours.
#[derive(Debug)]
struct Tree<P> {
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    /// Flooded: every neighbour stays eager, duplicates never prune.
    flood: bool,
    /// A message of the topic went through this node: the tree is in use.
    active: bool,
    /// For each of the last messages delivered, the lazy neighbour that
    /// announced it well before the tree brought it, if one did.
    leads: VecDeque<Option<P>>,
}

impl<P: PeerId> Tree<P> {
    fn make_eager(&mut self, p: P) {
        self.lazy.remove(&p);
        self.eager.insert(p);
    }
    /// Whether `p` was eager (and is now lazy).
    fn make_lazy(&mut self, p: P) -> bool {
        let was = self.eager.remove(&p);
        if was {
            self.lazy.insert(p);
        }
        was
    }
}

/// Ids seen, oldest timestamp first. Forgetting is safe: an id leaves
/// only when its TTL is over (the message would be refused as too old) or
/// when the set is full, and then every message no newer than the
/// forgotten one is refused (`horizon`).
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<MessageId>,
    by_age: BTreeSet<(u64, MessageId)>,
    horizon: u64,
}

impl Seen {
    fn expire(&mut self, now: u64, ttl: u64) {
        while let Some(&(ts, id)) = self.by_age.first() {
            if ts.saturating_add(ttl) >= now {
                break;
            }
            self.by_age.pop_first();
            self.ids.remove(&id);
        }
    }
    fn insert(&mut self, id: MessageId, ts: u64, max: usize) {
        while self.ids.len() >= max {
            let Some((old_ts, old)) = self.by_age.pop_first() else {
                break;
            };
            self.ids.remove(&old);
            self.horizon = self.horizon.max(old_ts);
        }
        if self.ids.insert(id) {
            self.by_age.insert((ts, id));
        }
    }
}

/// Full messages kept to answer grafts, oldest first, each with the
/// peer it came from (`None` if published here) and the sources its copies
/// came from; `hops` and `via` in the kept message are this node's own.
#[derive(Debug)]
struct Cache<P> {
    messages: HashMap<MessageId, (Data, Option<P>, Sources)>,
    order: VecDeque<(u64, MessageId)>,
    bytes: usize,
}

impl<P: PeerId> Cache<P> {
    fn expire(&mut self, now: u64, ttl: u64) {
        while let Some(&(at, _)) = self.order.front() {
            if at.saturating_add(ttl) >= now {
                break;
            }
            self.pop();
        }
    }
    fn pop(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            if let Some((d, _, _)) = self.messages.remove(&id) {
                self.bytes -= d.body.len();
            }
        }
    }
    fn insert(&mut self, now: u64, id: MessageId, data: Data, from: Option<P>, max_bytes: usize) {
        if data.body.len() > max_bytes || self.messages.contains_key(&id) {
            return;
        }
        while self.bytes + data.body.len() > max_bytes && !self.order.is_empty() {
            self.pop();
        }
        self.bytes += data.body.len();
        self.order.push_back((now, id));
        let sources = Sources::of(data.via);
        self.messages.insert(id, (data, from, sources));
    }
}

/// The sources (the tree, or a branch) of the copies of one message
/// received on tree links: a second copy from the same source closed a
/// cycle. A handful at most; beyond that, new ones are not remembered.
#[derive(Debug, Default)]
struct Sources(Vec<u32>);

impl Sources {
    const MAX: usize = 8;

    fn of(via: Via) -> Self {
        let mut s = Self::default();
        s.seen_before(via);
        s
    }

    /// Whether a copy from `via`'s source came before (shortcuts never
    /// count); remember the source.
    fn seen_before(&mut self, via: Via) -> bool {
        let source = match via {
            Via::Shortcut => return false,
            Via::Tree => 0,
            Via::Branch(b) => b,
        };
        if self.0.contains(&source) {
            return true;
        }
        if self.0.len() < Self::MAX {
            self.0.push(source);
        }
        false
    }
}

/// An id announced but not received yet.
#[derive(Debug)]
struct Missing<P> {
    topic: Topic,
    announcers: VecDeque<P>,
    /// The announcer with the fewest hops, and its count.
    closest: (u16, P),
    /// The first announcer, and when it announced.
    first: (u64, P),
    /// A timer firing earlier belongs to an older entry for the same id.
    next_graft_ms: u64,
}

/// (peer, id) pairs whose copy did not verify; oldest forgotten first.
#[derive(Debug)]
struct Distrusted<P> {
    set: HashSet<(P, MessageId)>,
    order: VecDeque<(P, MessageId)>,
}

impl<P: PeerId> Distrusted<P> {
    fn insert(&mut self, p: P, id: MessageId, max: usize) {
        if self.set.insert((p, id)) {
            self.order.push_back((p, id));
        }
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

impl<P: PeerId> State<P> {
    /// A node publishing as `key`, with `seed` for its random nonces.
    pub fn new(key: GossipKey, config: GossipConfig, seed: u64) -> Self {
        let ms = Millis {
            graft_timeout: ms(config.graft_timeout),
            graft_retry: ms(config.graft_retry),
            ttl: ms(config.message_ttl),
            skew: ms(config.max_clock_skew),
            cache_ttl: ms(config.cache_ttl),
            optimise_lead: ms(config.optimise_lead),
        };
        Self {
            origin: key.origin(),
            key,
            config,
            ms,
            rng: StdRng::seed_from_u64(seed),
            peers: BTreeMap::new(),
            topics: BTreeMap::new(),
            seen: Seen::default(),
            cache: Cache {
                messages: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            },
            missing: HashMap::new(),
            distrusted: Distrusted {
                set: HashSet::new(),
                order: VecDeque::new(),
            },
            transmits: VecDeque::new(),
            timers: VecDeque::new(),
            deliveries: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// This node's origin key (the public half of its gossip key).
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The settings.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// What happened so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The topics this node is subscribed to, with their eager and lazy
    /// neighbour counts.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.topics
            .iter()
            .map(|(t, tree)| TopicInfo {
                topic: t.to_string(),
                eager: tree.eager.len(),
                lazy: tree.lazy.len(),
            })
            .collect()
    }

    /// The eager (tree) neighbours of `topic`, sorted.
    pub fn eager_peers(&self, topic: &Topic) -> Vec<P> {
        self.topics
            .get(topic)
            .map(|t| t.eager.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The lazy neighbours of `topic`, sorted.
    pub fn lazy_peers(&self, topic: &Topic) -> Vec<P> {
        self.topics
            .get(topic)
            .map(|t| t.lazy.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether this node is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &Topic) -> bool {
        self.topics.contains_key(topic)
    }

    /// Ids awaited after an announcement (bounded by `max_pending_grafts`).
    pub fn pending_grafts(&self) -> usize {
        self.missing.len()
    }

    /// Ids remembered (bounded by `max_seen`).
    pub fn seen_len(&self) -> usize {
        self.seen.ids.len()
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        self.transmits.pop_front()
    }

    /// The next timer to set: fire `timer` at `at_ms` (or later).
    pub fn poll_timer(&mut self) -> Option<(u64, Timer)> {
        self.timers.pop_front()
    }

    /// The next message for the application.
    pub fn poll_delivery(&mut self) -> Option<GossipMessage> {
        self.deliveries.pop_front()
    }

    /// Join `topic`: tell every peer, and take the peers already known to
    /// be subscribed as eager neighbours. `Ok(false)` if already joined.
    pub fn subscribe(&mut self, now_ms: u64, topic: Topic) -> Result<bool, SubscribeError> {
        let _ = now_ms;
        if self.topics.contains_key(&topic) {
            return Ok(false);
        }
        if self.topics.len() >= self.config.max_topics {
            return Err(SubscribeError::TooManyTopics(self.config.max_topics));
        }
        let eager = self.interested(&topic).collect();
        let flood =
            self.config.flood || self.config.flood_topics.iter().any(|t| t == topic.as_str());
        self.topics.insert(
            topic.clone(),
            Tree {
                eager,
                lazy: BTreeSet::new(),
                flood,
                active: false,
                leads: VecDeque::new(),
            },
        );
        let frame = Frame::Subscribe { topic }.encode();
        let peers: Vec<P> = self.peers.keys().copied().collect();
        for p in peers {
            self.send(p, frame.clone());
        }
        Ok(true)
    }

    /// Leave `topic`: tell every peer and forget its tree. Messages of the
    /// topic are neither delivered nor forwarded from now on. `false` if
    /// not subscribed.
    pub fn unsubscribe(&mut self, now_ms: u64, topic: &Topic) -> bool {
        let _ = now_ms;
        if self.topics.remove(topic).is_none() {
            return false;
        }
        let frame = Frame::Unsubscribe {
            topic: topic.clone(),
        }
        .encode();
        let peers: Vec<P> = self.peers.keys().copied().collect();
        for p in peers {
            self.send(p, frame.clone());
        }
        true
    }

    /// Sign and send a message; returns its id. The publisher's own
    /// subscription does not receive it. Publishing to a topic this node
    /// is not subscribed to pushes it to every peer known to be
    /// subscribed.
    pub fn publish(
        &mut self,
        now_ms: u64,
        topic: Topic,
        body: Bytes,
    ) -> Result<MessageId, PublishError> {
        if body.len() > self.config.max_body_len {
            return Err(PublishError::TooLarge {
                len: body.len(),
                max: self.config.max_body_len,
            });
        }
        self.expire(now_ms);
        let nonce = self.rng.gen();
        let data = Data::signed(&self.key, topic, now_ms, nonce, body);
        let id = data.id();
        self.seen.insert(id, now_ms, self.config.max_seen);
        self.counters.published += 1;
        self.push(now_ms, id, data, None);
        Ok(id)
    }

    /// Feed one input.
    pub fn handle(&mut self, now_ms: u64, event: InEvent<P>) {
        self.expire(now_ms);
        match event {
            InEvent::PeerUp(p) => self.peer_up(now_ms, p),
            InEvent::PeerDown(p) => {
                self.peers.remove(&p);
                for tree in self.topics.values_mut() {
                    tree.eager.remove(&p);
                    tree.lazy.remove(&p);
                }
            }
            InEvent::Message { from, frame } => self.on_frame(now_ms, from, frame),
            InEvent::Timer(Timer::Graft(id)) => self.on_graft_timer(now_ms, id),
            InEvent::Rtt { peer, ms } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtt_ms = Some(ms);
                }
            }
        }
    }

    fn peer_up(&mut self, now: u64, p: P) {
        if !self.peers.contains_key(&p) {
            let peer = Peer {
                topics: BTreeSet::new(),
                bucket: Bucket::full(now, self.config.peer_burst),
                rtt_ms: None,
            };
            self.peers.insert(p, peer);
        }
        let frames: Vec<Bytes> = self
            .topics
            .keys()
            .map(|t| Frame::Subscribe { topic: t.clone() }.encode())
            .collect();
        for f in frames {
            self.send(p, f);
        }
    }

    fn interested<'a>(&'a self, topic: &'a Topic) -> impl Iterator<Item = P> + 'a {
        self.peers
            .iter()
            .filter(move |(_, peer)| peer.topics.contains(topic))
            .map(|(p, _)| *p)
    }

    fn expire(&mut self, now: u64) {
        self.seen.expire(now, self.ms.ttl);
        self.cache.expire(now, self.ms.cache_ttl);
    }

    fn send(&mut self, to: P, frame: Bytes) {
        self.counters.frames_sent += 1;
        self.counters.bytes_sent += frame.len() as u64;
        self.transmits.push_back(Transmit { to, frame });
    }

    fn on_frame(&mut self, now: u64, from: P, bytes: Bytes) {
        self.counters.bytes_received += bytes.len() as u64;
        if !self.peers.contains_key(&from) {
            // A frame can overtake the "up" event; the peer is up anyway.
            self.peer_up(now, from);
        }
        let (rate, burst) = (self.config.peer_rate, self.config.peer_burst);
        let allowed = self
            .peers
            .get_mut(&from)
            .is_some_and(|p| p.bucket.take(now, rate, burst));
        if !allowed {
            self.counters.throttled += 1;
            return;
        }
        let max_ids = self.config.max_ids_per_frame.min(MAX_IDS_PER_FRAME);
        let frame = match Frame::decode(&bytes, self.config.max_body_len, max_ids) {
            Ok(f) => f,
            Err(e) => {
                if e.is_oversized() {
                    self.counters.oversized += 1;
                } else {
                    self.counters.malformed += 1;
                }
                tracing::debug!(?from, %e, "gossip frame dropped");
                return;
            }
        };
        match frame {
            Frame::Subscribe { topic } => self.on_subscribe(from, topic),
            Frame::Unsubscribe { topic } => {
                if let Some(peer) = self.peers.get_mut(&from) {
                    peer.topics.remove(&topic);
                }
                if let Some(tree) = self.topics.get_mut(&topic) {
                    tree.eager.remove(&from);
                    tree.lazy.remove(&from);
                }
            }
            other => {
                if !self.topics.contains_key(other.topic()) {
                    self.counters.not_subscribed += 1;
                    return;
                }
                match other {
                    Frame::Data(data) => self.on_data(now, from, data),
                    Frame::IHave { topic, ids } => self.on_ihave(now, from, topic, ids),
                    Frame::Graft { topic, ids } => self.on_graft(from, topic, ids),
                    Frame::Prune { topic } => {
                        self.counters.prunes_received += 1;
                        if let Some(tree) = self.topics.get_mut(&topic) {
                            if !tree.flood {
                                tree.make_lazy(from);
                            }
                        }
                    }
                    Frame::Subscribe { .. } | Frame::Unsubscribe { .. } => {}
                }
            }
        }
    }

    fn on_subscribe(&mut self, from: P, topic: Topic) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        if !peer.topics.contains(&topic) && peer.topics.len() >= self.config.max_topics_per_peer {
            self.counters.peer_topics_full += 1;
            return;
        }
        peer.topics.insert(topic.clone());
        let join_lazy = self.config.join_lazy;
        let Some(tree) = self.topics.get_mut(&topic) else {
            return;
        };
        if tree.eager.contains(&from) || tree.lazy.contains(&from) {
            return;
        }
        if !join_lazy || tree.flood {
            tree.eager.insert(from);
        } else if tree.eager.is_empty() {
            // Not on the tree (a newcomer, or every tree link lost):
            // join through this neighbour, and ask it to push to us.
            tree.eager.insert(from);
            let graft = Frame::Graft {
                topic,
                ids: Vec::new(),
            }
            .encode();
            self.send(from, graft);
        } else if !tree.active {
            // Before the first message (a forming network), as in the
            // PlumTree paper: eager, and duplicates prune the cycles.
            tree.eager.insert(from);
        } else {
            // On a tree in use: a repair link. Eager, it would close a
            // cycle that costs a duplicate and a prune.
            tree.lazy.insert(from);
        }
    }

    fn on_data(&mut self, now: u64, from: P, data: Data) {
        let id = data.id();
        if self.seen.ids.contains(&id) {
            self.counters.duplicates += 1;
            // A shortcut is a duplicate by design. A copy on a link that is
            // lazy here is not: its other side still pushes (it took us
            // eager while we took it lazy), so prune it. On an eager link,
            // a copy from another source than the ones before (the tree's
            // copy meeting a branch a shortcut started) says nothing about
            // the tree; a second copy from the same source does: it went
            // round a cycle of tree links. (A message no longer kept: as if
            // it did.)
            let sources = self.cache.messages.get_mut(&id).map(|(_, _, s)| s);
            let same_source = match sources {
                Some(sources) => sources.seen_before(data.via),
                None => true,
            };
            let pruned = data.via != Via::Shortcut
                && self.topics.get_mut(&data.topic).is_some_and(|t| {
                    !t.flood && (t.lazy.contains(&from) || (same_source && t.make_lazy(from)))
                });
            if pruned {
                self.counters.prunes_sent += 1;
                let frame = Frame::Prune { topic: data.topic }.encode();
                self.send(from, frame);
            }
            return;
        }
        if self.distrusted.set.contains(&(from, id)) {
            self.counters.distrusted += 1;
            return;
        }
        if data.timestamp_ms.saturating_add(self.ms.ttl) < now
            || data.timestamp_ms <= self.seen.horizon
        {
            self.counters.too_old += 1;
            return;
        }
        if data.timestamp_ms > now.saturating_add(self.ms.skew) {
            self.counters.from_future += 1;
            return;
        }
        if !data.verifies(&id) {
            self.counters.forged += 1;
            self.distrusted.insert(from, id, self.config.max_distrusted);
            if let Some(m) = self.missing.get_mut(&id) {
                m.announcers.retain(|a| *a != from);
            }
            tracing::debug!(?from, ?id, "forged gossip message dropped");
            return;
        }
        self.seen
            .insert(id, data.timestamp_ms, self.config.max_seen);
        let announced = self.missing.remove(&id).map(|m| (m.closest, m.first));
        let mut data = data;
        data.hops = data.hops.saturating_add(1);
        self.counters.delivered += 1;
        self.deliveries.push_back(GossipMessage {
            topic: data.topic.clone(),
            origin: data.origin,
            id,
            body: data.body.clone(),
            hops: data.hops,
            timestamp_ms: data.timestamp_ms,
        });
        if data.via == Via::Shortcut {
            // Not a tree link: the copies this node forwards start a
            // branch of their own.
            data.via = Via::Branch(self.rng.gen_range(1..=u32::MAX));
        } else if let Some(tree) = self.topics.get_mut(&data.topic) {
            tree.make_eager(from);
        }
        let topic = data.topic.clone();
        let hops = data.hops;
        self.push(now, id, data, Some(from));
        if let Some(((their_hops, closer), _)) = announced {
            self.maybe_reroute(&topic, id, hops, from, their_hops, closer);
        }
        let lead = announced.and_then(|(_, (at, first))| {
            (first != from && now.saturating_sub(at) >= self.ms.optimise_lead).then_some(first)
        });
        self.note_lead(&topic, id, from, lead);
    }

    /// Latency optimisation (see the module docs): remember whether a
    /// lazy neighbour announced this message well before `parent`
    /// delivered it; once the same one did for `optimise_after` of the
    /// last `optimise_window` messages, make it eager and prune `parent`.
    fn note_lead(&mut self, topic: &Topic, id: MessageId, parent: P, lead: Option<P>) {
        let (after, window) = (self.config.optimise_after, self.config.optimise_window);
        if after == 0 {
            return;
        }
        let Some(tree) = self.topics.get_mut(topic) else {
            return;
        };
        if tree.flood {
            return;
        }
        tree.leads.push_back(lead);
        while tree.leads.len() > window.max(1) {
            tree.leads.pop_front();
        }
        let Some(faster) = lead else {
            return;
        };
        let wins = tree.leads.iter().filter(|l| **l == Some(faster)).count();
        if wins < after || !tree.eager.contains(&parent) || !tree.lazy.contains(&faster) {
            return;
        }
        tree.leads.clear();
        self.swap_parent(topic, id, parent, faster, None);
    }

    /// The tree optimisation (see the module docs): `closer` has message
    /// `id` with `their_hops`, we got it with `our_hops` from `parent`.
    fn maybe_reroute(
        &mut self,
        topic: &Topic,
        id: MessageId,
        our_hops: u16,
        parent: P,
        their_hops: u16,
        closer: P,
    ) {
        let threshold = self.config.reroute_threshold;
        if threshold == 0
            || closer == parent
            || u32::from(their_hops) + 1 + u32::from(threshold) > u32::from(our_hops)
        {
            return;
        }
        let Some(tree) = self.topics.get_mut(topic) else {
            return;
        };
        if tree.flood || !tree.eager.contains(&parent) {
            return;
        }
        self.swap_parent(topic, id, parent, closer, Some(their_hops));
    }

    /// Make `closer` eager with a payload-less graft and prune `parent`.
    fn swap_parent(
        &mut self,
        topic: &Topic,
        id: MessageId,
        parent: P,
        closer: P,
        their_hops: Option<u16>,
    ) {
        let Some(tree) = self.topics.get_mut(topic) else {
            return;
        };
        tree.make_eager(closer);
        tree.make_lazy(parent);
        if let Some((data, from, _)) = self.cache.messages.get_mut(&id) {
            if let Some(h) = their_hops {
                data.hops = h.saturating_add(1);
            }
            *from = Some(closer);
        }
        self.counters.reroutes += 1;
        let graft = Frame::Graft {
            topic: topic.clone(),
            ids: Vec::new(),
        }
        .encode();
        self.send(closer, graft);
        self.counters.prunes_sent += 1;
        let prune = Frame::Prune {
            topic: topic.clone(),
        }
        .encode();
        self.send(parent, prune);
    }

    /// Eager push to the tree, lazy push to the rest, except `from`; and
    /// the copies off the tree (the origin's fan-out, the shortcut pushes
    /// of the origin's neighbours) instead of announcements to some lazy
    /// neighbours.
    fn push(&mut self, now: u64, id: MessageId, data: Data, from: Option<P>) {
        let (eager, mut lazy, flood): (Vec<P>, Vec<P>, bool) =
            match self.topics.get_mut(&data.topic) {
                Some(tree) => {
                    tree.active = true;
                    (
                        tree.eager.iter().copied().collect(),
                        tree.lazy.iter().copied().collect(),
                        tree.flood,
                    )
                }
                None => (self.interested(&data.topic).collect(), Vec::new(), true),
            };
        lazy.retain(|p| Some(*p) != from);
        let shortcuts = match from {
            _ if flood => 0,
            None => self.config.origin_fanout.min(lazy.len()),
            // Near the origin (1: straight from it).
            Some(_) if data.hops <= self.config.shortcut_depth => {
                self.config.shortcut_pushes.min(lazy.len())
            }
            _ => 0,
        };
        if shortcuts < lazy.len() && shortcuts > 0 {
            // The fastest first; unknown round trips last.
            let peers = &self.peers;
            lazy.sort_by_key(|p| peers.get(p).and_then(|x| x.rtt_ms).unwrap_or(u32::MAX));
        }
        let announced = lazy.split_off(shortcuts);
        let full = Frame::Data(data.clone()).encode();
        for p in eager.into_iter().filter(|p| Some(*p) != from) {
            self.counters.data_sent += 1;
            self.send(p, full.clone());
        }
        if !lazy.is_empty() {
            let shortcut = Frame::Data(Data {
                via: Via::Shortcut,
                ..data.clone()
            })
            .encode();
            for p in lazy {
                self.counters.data_sent += 1;
                self.counters.shortcuts_sent += 1;
                self.send(p, shortcut.clone());
            }
        }
        if !announced.is_empty() {
            let ihave = Frame::IHave {
                topic: data.topic.clone(),
                ids: vec![(id, data.hops)],
            }
            .encode();
            for p in announced {
                self.counters.ihave_sent += 1;
                self.send(p, ihave.clone());
            }
        }
        self.cache
            .insert(now, id, data, from, self.config.max_cache_bytes);
    }

    fn on_ihave(&mut self, now: u64, from: P, topic: Topic, ids: Vec<(MessageId, u16)>) {
        for (id, hops) in ids {
            if self.seen.ids.contains(&id) {
                let held = self.cache.messages.get(&id);
                if let Some((data, Some(parent), _)) = held {
                    let (ours, parent) = (data.hops, *parent);
                    self.maybe_reroute(&topic, id, ours, parent, hops, from);
                }
                continue;
            }
            if self.distrusted.set.contains(&(from, id)) {
                self.counters.distrusted += 1;
                continue;
            }
            if let Some(m) = self.missing.get_mut(&id) {
                if !m.announcers.contains(&from) && m.announcers.len() < self.config.max_announcers
                {
                    m.announcers.push_back(from);
                    if hops < m.closest.0 {
                        m.closest = (hops, from);
                    }
                }
                continue;
            }
            if self.missing.len() >= self.config.max_pending_grafts {
                self.counters.pending_full += 1;
                continue;
            }
            let at = now.saturating_add(self.ms.graft_timeout);
            self.missing.insert(
                id,
                Missing {
                    topic: topic.clone(),
                    announcers: VecDeque::from([from]),
                    closest: (hops, from),
                    first: (now, from),
                    next_graft_ms: at,
                },
            );
            self.timers.push_back((at, Timer::Graft(id)));
        }
    }

    fn on_graft_timer(&mut self, now: u64, id: MessageId) {
        let Some(mut m) = self.missing.remove(&id) else {
            return;
        };
        if now < m.next_graft_ms {
            self.missing.insert(id, m);
            return;
        }
        let mut chosen = None;
        while let Some(a) = m.announcers.pop_front() {
            if self.peers.contains_key(&a) {
                chosen = Some(a);
                break;
            }
        }
        let (Some(a), Some(tree)) = (chosen, self.topics.get_mut(&m.topic)) else {
            self.counters.grafts_exhausted += 1;
            return;
        };
        tree.make_eager(a);
        let at = now.saturating_add(self.ms.graft_retry);
        m.next_graft_ms = at;
        let frame = Frame::Graft {
            topic: m.topic.clone(),
            ids: vec![id],
        }
        .encode();
        self.missing.insert(id, m);
        self.timers.push_back((at, Timer::Graft(id)));
        self.counters.grafts_sent += 1;
        self.send(a, frame);
    }

    fn on_graft(&mut self, from: P, topic: Topic, ids: Vec<MessageId>) {
        self.counters.grafts_received += 1;
        if let Some(tree) = self.topics.get_mut(&topic) {
            tree.make_eager(from);
        }
        for id in ids {
            let Some((data, _, _)) = self.cache.messages.get(&id) else {
                self.counters.graft_misses += 1;
                continue;
            };
            if data.topic != topic {
                self.counters.graft_misses += 1;
                continue;
            }
            let frame = Frame::Data(data.clone()).encode();
            self.counters.data_sent += 1;
            self.send(from, frame);
        }
    }
}

#[cfg(test)]
mod tests;
