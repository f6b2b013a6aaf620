//! The plugin, its configuration, its handle and its statistics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gladius_p2p::{
    async_trait, Feed, Message, Network, NetworkError, PeerInfo, Plugin, Received, Subscription,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::entry::{is_valid_field, EntryRecord, SignedEntry, MAX_FIELD_LEN};
use super::eth::{to_hex, EthAddress, EthKey, KeyError};
use super::replica::Replica;
use super::store::{Accepted, Policy, Rejection, Rejections};
use super::sync::{Bounds, SyncMessage, TYPE_PREFIX};
use super::validator::{AcceptAll, Validator};

/// Configuration of [`SignedState`]. Every limit bounds memory or work
/// under hostile input.
#[derive(Clone)]
pub struct SignedStateConfig {
    /// Peers each anti-entropy round sends its root to (default 3).
    pub fanout: usize,
    /// Time between rounds (default 1 s; each wait is jittered ±10 %).
    pub sync_interval: Duration,
    /// How far in the future a timestamp may be (default 30 s).
    pub max_clock_skew: Duration,
    /// Entries stored at most, over all signers (default 10 000).
    pub max_entries: usize,
    /// Distinct signers stored at most (default 1 000); see [`Store`](super::Store) for
    /// which give way when full.
    pub max_signers: usize,
    /// Entries stored per signer, the node's own exempt (default 256).
    pub max_entries_per_signer: usize,
    /// Bytes stored per signer (field, value, signature, signer,
    /// timestamp), the node's own exempt (default 256 KiB).
    pub max_bytes_per_signer: usize,
    /// Bytes of digest items or entries sent in answer to one received
    /// sync message (default 64 KiB; at least one item is sent). A root
    /// is answered with one digest page of this size, from a cursor that
    /// moves on each time, so large stores converge over several rounds.
    pub max_answer_bytes: usize,
    /// Entries per `entries` message (default 256).
    pub max_entries_per_message: usize,
    /// Items per digest page and keys per want (default 2048).
    pub max_digest_items: usize,
    /// Longest field name, at most 255 (default 64).
    pub max_field_len: usize,
    /// Largest value in bytes (default 4096).
    pub max_value_len: usize,
    /// Rounds of byte counts kept in [`SyncStats::recent_rounds`] (default 64).
    pub history_rounds: usize,
    /// Which signers and fields are accepted (default: all).
    pub validator: Arc<dyn Validator>,
    /// Seed of the round jitter, so a simulation repeats exactly (default
    /// `None`: from the OS).
    pub rng_seed: Option<u64>,
}

impl std::fmt::Debug for SignedStateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedStateConfig")
            .field("fanout", &self.fanout)
            .field("sync_interval", &self.sync_interval)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("max_entries", &self.max_entries)
            .field("max_signers", &self.max_signers)
            .field("max_entries_per_signer", &self.max_entries_per_signer)
            .field("max_bytes_per_signer", &self.max_bytes_per_signer)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .field("max_entries_per_message", &self.max_entries_per_message)
            .field("max_digest_items", &self.max_digest_items)
            .field("max_field_len", &self.max_field_len)
            .field("max_value_len", &self.max_value_len)
            .field("history_rounds", &self.history_rounds)
            .field("rng_seed", &self.rng_seed)
            .finish_non_exhaustive()
    }
}

impl Default for SignedStateConfig {
    fn default() -> Self {
        Self {
            fanout: 3,
            sync_interval: Duration::from_secs(1),
            max_clock_skew: Duration::from_secs(30),
            max_entries: 10_000,
            max_signers: 1_000,
            max_entries_per_signer: 256,
            max_bytes_per_signer: 256 << 10,
            max_answer_bytes: 64 << 10,
            max_entries_per_message: 256,
            max_digest_items: 2048,
            max_field_len: 64,
            max_value_len: 4096,
            history_rounds: 64,
            validator: Arc::new(AcceptAll),
            rng_seed: None,
        }
    }
}

impl SignedStateConfig {
    /// Set [`rng_seed`](Self::rng_seed).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
    /// Set [`fanout`](Self::fanout) (at least 1).
    pub fn with_fanout(mut self, n: usize) -> Self {
        self.fanout = n.max(1);
        self
    }
    /// Set [`sync_interval`](Self::sync_interval) (at least 10 ms).
    pub fn with_sync_interval(mut self, d: Duration) -> Self {
        self.sync_interval = d.max(Duration::from_millis(10));
        self
    }
    /// Set [`max_clock_skew`](Self::max_clock_skew).
    pub fn with_max_clock_skew(mut self, d: Duration) -> Self {
        self.max_clock_skew = d;
        self
    }
    /// Set [`max_entries`](Self::max_entries).
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }
    /// Set [`max_signers`](Self::max_signers) (at least 1).
    pub fn with_max_signers(mut self, n: usize) -> Self {
        self.max_signers = n.max(1);
        self
    }
    /// Set [`max_entries_per_signer`](Self::max_entries_per_signer) and
    /// [`max_bytes_per_signer`](Self::max_bytes_per_signer).
    pub fn with_signer_quota(mut self, entries: usize, bytes: usize) -> Self {
        self.max_entries_per_signer = entries;
        self.max_bytes_per_signer = bytes;
        self
    }
    /// Set [`max_answer_bytes`](Self::max_answer_bytes).
    pub fn with_max_answer_bytes(mut self, n: usize) -> Self {
        self.max_answer_bytes = n;
        self
    }
    /// Set [`max_entries_per_message`](Self::max_entries_per_message) (at least 1).
    pub fn with_max_entries_per_message(mut self, n: usize) -> Self {
        self.max_entries_per_message = n.max(1);
        self
    }
    /// Set [`max_digest_items`](Self::max_digest_items) (at least 1).
    pub fn with_max_digest_items(mut self, n: usize) -> Self {
        self.max_digest_items = n.max(1);
        self
    }
    /// Set [`max_field_len`](Self::max_field_len) (1..=255).
    pub fn with_max_field_len(mut self, n: usize) -> Self {
        self.max_field_len = n.clamp(1, MAX_FIELD_LEN);
        self
    }
    /// Set [`max_value_len`](Self::max_value_len).
    pub fn with_max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = n;
        self
    }
    /// Set the [`validator`](Self::validator).
    pub fn with_validator(mut self, v: impl Validator) -> Self {
        self.validator = Arc::new(v);
        self
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            max_field_len: self.max_field_len,
            max_value_len: self.max_value_len,
            max_clock_skew_ms: u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            validator: self.validator.clone(),
        }
    }

    /// The decoding bounds these settings imply.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_entries_per_message: self.max_entries_per_message,
            max_digest_items: self.max_digest_items,
            max_field_len: self.max_field_len,
            max_value_len: self.max_value_len,
        }
    }
}

/// Bytes of message bodies (and messages) one anti-entropy round sent and
/// received. A round runs from one tick of the node's timer to the next and
/// includes the replies it provoked and the traffic other nodes started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoundBytes {
    /// Body bytes sent (a body sent to 3 peers counts 3 times).
    pub bytes_sent: u64,
    /// Body bytes received.
    pub bytes_received: u64,
    /// Messages sent (per peer).
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
}

impl RoundBytes {
    pub(super) fn add(&mut self, o: &RoundBytes) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
    }
}

/// What the plugin did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Anti-entropy rounds started.
    pub rounds: u64,
    /// Totals since start.
    pub total: RoundBytes,
    /// The round in progress.
    pub current_round: RoundBytes,
    /// The last completed rounds, oldest first.
    pub recent_rounds: Vec<RoundBytes>,
    /// Entries accepted (new or newer), local or received.
    pub accepted: u64,
    /// Entries received that were already held (normal).
    pub duplicates: u64,
    /// Entries refused, by reason.
    pub rejections: Rejections,
    /// Bodies that did not decode or broke the bounds.
    pub malformed_messages: u64,
    /// Roots not answered because their peer's last one was answered
    /// less than half a sync interval ago.
    pub roots_unanswered: u64,
    /// Sends the node could not queue to some peer (full queue, gone).
    pub send_failures: u64,
}

/// Why [`SignedStateHandle::set`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The entry is refused by this node's own rules (field name, value
    /// size, validator).
    #[error("entry refused: {0}")]
    Rejected(#[from] Rejection),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Accepted entries a [`SignedStateHandle::changes`] stream holds for a
/// slow reader before it drops (and counts) newer ones. An entry is at most
/// a field name, a value of `max_value_len` and a signature.
pub const CHANGES_QUEUE_LEN: usize = 1024;

struct Shared {
    key: EthKey,
    config: SignedStateConfig,
    /// The protocol: the store and what each sync message is answered with.
    replica: Mutex<Replica>,
    net: Mutex<Option<Network>>,
    task: crate::background::Background,
    /// Readers of [`SignedStateHandle::changes`]; closed ones are pruned
    /// on the next accepted entry.
    watchers: Mutex<Vec<Feed<SignedEntry>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a sync message goes.
enum Dest<'a> {
    /// Back to the sender of a received message, over its session only.
    Answer(&'a Received),
    /// To one peer, connecting if needed.
    Peer(SocketAddr),
    /// To `fanout` random writable peers.
    Random,
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.replica)
    }

    /// Hand accepted entries to the change streams.
    fn notify(&self, accepted: Vec<SignedEntry>) {
        if accepted.is_empty() {
            return;
        }
        let mut watchers = lock(&self.watchers);
        watchers.retain(|w| !w.is_closed());
        for entry in accepted {
            for w in watchers.iter() {
                w.send(entry.clone());
            }
        }
    }

    fn ingest(&self, entry: SignedEntry, now: u64) -> Result<Accepted, Rejection> {
        let copy = (!lock(&self.watchers).is_empty()).then(|| entry.clone());
        let r = self.replica().ingest(entry, now);
        if let (Ok(Accepted::Inserted | Accepted::Replaced), Some(entry)) = (&r, copy) {
            self.notify(vec![entry]);
        }
        r
    }

    async fn send(
        &self,
        net: &Network,
        msg: &SyncMessage,
        to: Dest<'_>,
    ) -> Result<(), NetworkError> {
        let (t, body) = msg.encode();
        let len = body.len();
        let Ok(m) = Message::new(t, body) else {
            return Ok(());
        };
        let report = match to {
            // Answers go back over the session the question came on, and
            // never reopen one to a peer that has just been deleted.
            Dest::Answer(received) => net.reply(received, m).await?,
            Dest::Peer(peer) => net.broadcast_to(m, &[peer]).await?,
            Dest::Random => net.broadcast_randomly(m, self.config.fanout).await?,
        };
        self.replica()
            .count_sent(len, report.queued.len(), report.failed.len());
        Ok(())
    }

    /// A received sync message: the replica decides, the answers go back.
    async fn handle(&self, net: &Network, msg: &Received) -> Result<(), NetworkError> {
        let m = msg.message();
        let watched = !lock(&self.watchers).is_empty();
        let handled = self.replica().receive(
            msg.peer(),
            m.msg_type(),
            m.body(),
            tokio::time::Instant::now(),
            now_ms(),
            watched,
        );
        self.notify(handled.accepted);
        for answer in &handled.answers {
            self.send(net, answer, Dest::Answer(msg)).await?;
        }
        Ok(())
    }
}

/// The signed shared state plugin. Register it with
/// [`Network::register_plugin`]; use the [`SignedStateHandle`] to publish
/// and read fields.
pub struct SignedState {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SignedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedState")
            .field("address", &self.shared.key.address())
            .finish_non_exhaustive()
    }
}

/// Publishes and reads fields of a [`SignedState`]; cheap to clone.
///
/// **Ready** at once: [`set`](Self::set) signs and stores even before the
/// plugin is registered, and entries spread once the node runs — pushed to
/// random writable peers on `set`, exchanged with every writable peer as
/// its session comes up, and reconciled every
/// [`sync_interval`](SignedStateConfig::sync_interval). Watch arrivals
/// with [`changes`](Self::changes) instead of polling.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Network};
/// use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
/// let (plugin, a_state) = SignedState::new(EthKey::generate(), SignedStateConfig::default());
/// a.register_plugin(plugin).await?;
/// let (plugin, b_state) = SignedState::new(EthKey::generate(), SignedStateConfig::default());
/// b.register_plugin(plugin).await?;
/// a.listen("127.0.0.1:0").await?;
/// let b_addr = b.listen("127.0.0.1:0").await?;
/// let mut arrivals = b_state.changes();
/// a.add(b_addr).await?;
/// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
///
/// a_state.set("serving", "a.mp4").await?; // signed with a's Ethereum key
/// let entry = arrivals.next().await.expect("a's entry");
/// assert_eq!(entry.signer, a_state.address());
/// assert_eq!(b_state.get_value(&a_state.address(), "serving").unwrap(), "a.mp4");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SignedStateHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SignedStateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedStateHandle")
            .field("address", &self.shared.key.address())
            .finish_non_exhaustive()
    }
}

impl SignedState {
    /// The plugin and its handle, signing with `key`.
    pub fn new(key: EthKey, config: SignedStateConfig) -> (SignedState, SignedStateHandle) {
        let shared = Arc::new(Shared {
            replica: Mutex::new(Replica::new(&config, key.address())),
            key,
            config,
            net: Mutex::new(None),
            task: crate::background::Background::default(),
            watchers: Mutex::new(Vec::new()),
        });
        (
            SignedState {
                shared: shared.clone(),
            },
            SignedStateHandle { shared },
        )
    }
}

impl SignedStateHandle {
    /// This node's signing address.
    pub fn address(&self) -> EthAddress {
        self.shared.key.address()
    }

    /// Sign `value` for `field` with the current time (strictly after this
    /// node's previous value of the field), store it, and push it to
    /// `fanout` random peers; anti-entropy spreads it further.
    pub async fn set(&self, field: &str, value: impl Into<Bytes>) -> Result<EntryRecord, SetError> {
        let value = value.into();
        if !is_valid_field(field) || field.len() > self.shared.config.max_field_len {
            return Err(Rejection::InvalidField.into());
        }
        let me = self.address();
        let now = now_ms();
        let ts = self.shared.replica().next_timestamp(&me, field, now);
        let entry = SignedEntry::sign(&self.shared.key, field, value, ts)?;
        let record = entry.record();
        self.shared.ingest(entry.clone(), now)?;
        let net = lock(&self.shared.net).clone();
        if let Some(net) = net {
            let msg = SyncMessage::Entries {
                entries: vec![entry],
            };
            if let Err(e) = self.shared.send(&net, &msg, Dest::Random).await {
                tracing::debug!(error = %e, "signed_state: push after set failed");
            }
        }
        Ok(record)
    }

    /// Offer an entry signed elsewhere (e.g. offline by a manager key): it
    /// goes through the same checks as a received one and, if accepted,
    /// spreads by anti-entropy.
    pub fn insert(&self, entry: SignedEntry) -> Result<Accepted, Rejection> {
        self.shared.ingest(entry, now_ms())
    }

    /// The entry held for (signer, field).
    pub fn get(&self, signer: &EthAddress, field: &str) -> Option<EntryRecord> {
        self.shared
            .replica()
            .store()
            .get(signer, field)
            .map(SignedEntry::record)
    }

    /// The value held for (signer, field).
    pub fn get_value(&self, signer: &EthAddress, field: &str) -> Option<Bytes> {
        self.shared
            .replica()
            .store()
            .get(signer, field)
            .map(|e| e.value.clone())
    }

    /// Every entry held, in (signer, field) order.
    pub fn entries(&self) -> Vec<EntryRecord> {
        self.shared
            .replica()
            .store()
            .iter()
            .map(SignedEntry::record)
            .collect()
    }

    /// Every entry held, as signed entries.
    pub fn signed_entries(&self) -> Vec<SignedEntry> {
        self.shared.replica().store().iter().cloned().collect()
    }

    /// A stream of the entries this node accepts from now on, its own
    /// ([`set`](Self::set), [`insert`](Self::insert)) and remote ones, each
    /// once, as it is stored (a newer entry for a (signer, field) comes
    /// again; duplicates and refused entries do not). Holds up to
    /// [`CHANGES_QUEUE_LEN`] entries for a slow reader, then drops newer
    /// ones and counts them ([`Subscription::dropped`]): read
    /// [`entries`](Self::entries) again after a drop. Ready at once, even
    /// before the plugin is registered.
    ///
    /// ```
    /// # use gladius_plugins::signed_state::*;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (_plugin, state) = SignedState::new(EthKey::generate(), SignedStateConfig::default());
    /// let mut changes = state.changes();
    /// state.set("serving", "a.mp4,b.mp4").await?;
    /// let entry = changes.next().await.expect("an accepted entry");
    /// assert_eq!((entry.signer, entry.field.as_str()), (state.address(), "serving"));
    /// # Ok(()) }
    /// ```
    pub fn changes(&self) -> Subscription<SignedEntry> {
        self.changes_bounded(CHANGES_QUEUE_LEN)
    }

    /// [`changes`](Self::changes) holding up to `capacity` entries.
    pub fn changes_bounded(&self, capacity: usize) -> Subscription<SignedEntry> {
        let (feed, sub) = Subscription::channel(capacity);
        lock(&self.shared.watchers).push(feed);
        sub
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.shared.replica().store().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state fingerprint peers compare (hex): two nodes with the same
    /// root hold the same entries.
    pub fn root(&self) -> String {
        to_hex(&self.shared.replica().root())
    }

    /// Counters: rounds, bytes per round and in total, rejections.
    pub fn stats(&self) -> SyncStats {
        self.shared.replica().stats()
    }

    /// Start an anti-entropy round now (besides the timer's).
    pub async fn sync_now(&self) -> Result<(), NetworkError> {
        let net = lock(&self.shared.net).clone();
        match net {
            Some(net) => {
                let root = self.shared.replica().root_message();
                self.shared.send(&net, &root, Dest::Random).await
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Plugin for SignedState {
    fn name(&self) -> &str {
        "signed_state"
    }

    async fn startup(&self, net: &Network) {
        *lock(&self.shared.net) = Some(net.downgrade());
        let shared = self.shared.clone();
        let net = net.downgrade();
        let task = tokio::spawn(async move {
            let base = shared.config.sync_interval;
            let mut rng = match shared.config.rng_seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_entropy(),
            };
            loop {
                let jitter = rng.gen_range(0.9..1.1);
                tokio::time::sleep(base.mul_f64(jitter)).await;
                let root = shared.replica().next_round();
                if let Err(NetworkError::Closed) = shared.send(&net, &root, Dest::Random).await {
                    break;
                }
            }
        });
        self.shared.task.start(task);
    }

    async fn peer_connected(&self, net: &Network, peer: &PeerInfo) {
        // Sync at once with a new writable peer (a healed partition, a
        // restarted node) instead of waiting for chance to pick it.
        if peer.writable {
            let root = self.shared.replica().root_message();
            let _ = self.shared.send(net, &root, Dest::Peer(peer.addr)).await;
        }
    }

    async fn new_message(&self, net: &Network, msg: &Received) {
        if !msg.message().type_starts_with(TYPE_PREFIX) {
            return;
        }
        if let Err(e) = self.shared.handle(net, msg).await {
            tracing::debug!(error = %e, "signed_state: reply failed");
        }
    }

    async fn close(&self, _net: &Network) {
        self.shared.task.stop();
        *lock(&self.shared.net) = None;
    }
}
