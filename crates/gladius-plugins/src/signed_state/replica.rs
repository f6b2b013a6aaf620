//! The signed-state protocol core, free of sockets, tasks and clocks: one
//! node's replica of the store and what it answers to each sync message.
//!
//! The plugin's shell ([`super::SignedState`]) hands it every received
//! `signed_state.*` body together with the time (tokio's [`Instant`] for
//! the pacing of answers, wall-clock milliseconds for the entries'
//! timestamps) and sends back the answers it returns; it asks it for the
//! root at each round. Nothing here awaits, so two replicas can be synced
//! in a unit test by passing messages by hand.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::entry::SignedEntry;
use super::eth::EthAddress;
use super::plugin::{RoundBytes, SignedStateConfig, SyncStats};
use super::store::{entry_bytes, Accepted, Key, Limits, Policy, Rejection, Store};
use super::sync::{chunks, reconcile, Bounds, SyncMessage};

/// What one received message led to.
#[derive(Debug, Default)]
pub struct Handled {
    /// Messages to send back to the sender, in order, over its session.
    pub answers: Vec<SyncMessage>,
    /// Entries accepted (new or newer), for the change streams; filled only
    /// when asked for.
    pub accepted: Vec<SignedEntry>,
}

/// One node's replica: the store, the anti-entropy cursor and pacing, and
/// the byte counts.
pub struct Replica {
    store: Store,
    policy: Policy,
    bounds: Bounds,
    /// Half a sync interval: a peer's roots are answered at most this often.
    answer_gap: Duration,
    max_answer_bytes: usize,
    max_entries_per_message: usize,
    max_digest_items: usize,
    history_rounds: usize,
    /// Where the next root's digest page starts.
    answer_cursor: Option<Key>,
    /// When each peer's root was last answered (pruned as it ages).
    root_answered: BTreeMap<SocketAddr, Instant>,
    stats: SyncStats,
    history: VecDeque<RoundBytes>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("entries", &self.store.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// An empty replica with `config`'s limits, whose `own` address's
    /// fields are always accepted.
    pub fn new(config: &SignedStateConfig, own: EthAddress) -> Self {
        Self {
            store: Store::with_limits(
                Limits {
                    max_entries: config.max_entries,
                    max_signers: config.max_signers,
                    max_entries_per_signer: config.max_entries_per_signer,
                    max_bytes_per_signer: config.max_bytes_per_signer,
                },
                Some(own),
            ),
            policy: config.policy(),
            bounds: config.bounds(),
            answer_gap: config.sync_interval / 2,
            max_answer_bytes: config.max_answer_bytes,
            max_entries_per_message: config.max_entries_per_message,
            max_digest_items: config.max_digest_items,
            history_rounds: config.history_rounds,
            answer_cursor: None,
            root_answered: BTreeMap::new(),
            stats: SyncStats::default(),
            history: VecDeque::new(),
        }
    }

    /// The entries held.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The statistics, with the recent rounds.
    pub fn stats(&self) -> SyncStats {
        let mut s = self.stats.clone();
        s.recent_rounds = self.history.iter().copied().collect();
        s
    }

    /// The timestamp for a new value of `signer`'s `field` at `now_ms`:
    /// strictly after the one held, so the new value supersedes it.
    pub fn next_timestamp(&self, signer: &EthAddress, field: &str, now_ms: u64) -> u64 {
        match self.store.get(signer, field) {
            Some(prev) => now_ms.max(prev.timestamp_ms.saturating_add(1)),
            None => now_ms,
        }
    }

    /// Check and store an entry (own or received), counting the outcome.
    pub fn ingest(&mut self, entry: SignedEntry, now_ms: u64) -> Result<Accepted, Rejection> {
        let r = self.store.ingest(entry, &self.policy, now_ms);
        match r {
            Ok(Accepted::Duplicate) => self.stats.duplicates += 1,
            Ok(_) => self.stats.accepted += 1,
            Err(rej) => self.stats.rejections.count(rej),
        }
        r
    }

    /// The fingerprint of the entries held.
    pub fn root(&mut self) -> [u8; 16] {
        self.store.root()
    }

    /// The current root, as a message for peers.
    pub fn root_message(&mut self) -> SyncMessage {
        let count = u32::try_from(self.store.len()).unwrap_or(u32::MAX);
        SyncMessage::Root {
            root: self.store.root(),
            count,
        }
    }

    /// Close the current round, start the next, and return its root.
    pub fn next_round(&mut self) -> SyncMessage {
        let done = std::mem::take(&mut self.stats.current_round);
        self.stats.total.add(&done);
        if self.stats.rounds > 0 {
            self.history.push_back(done);
            while self.history.len() > self.history_rounds {
                self.history.pop_front();
            }
        }
        // Traffic before the first tick is in the totals only.
        self.stats.rounds += 1;
        self.root_message()
    }

    /// A message of `body_len` bytes was queued to `peers` peers and could
    /// not be queued to `failed`.
    pub fn count_sent(&mut self, body_len: usize, peers: usize, failed: usize) {
        let r = &mut self.stats.current_round;
        r.bytes_sent += (body_len * peers) as u64;
        r.messages_sent += peers as u64;
        self.stats.send_failures += failed as u64;
    }

    /// A `signed_state.*` message from `peer`: decode it within the bounds
    /// and answer it. `keep_accepted` asks for the accepted entries back.
    pub fn receive(
        &mut self,
        peer: SocketAddr,
        msg_type: &str,
        body: &[u8],
        now: Instant,
        now_ms: u64,
        keep_accepted: bool,
    ) -> Handled {
        self.stats.current_round.bytes_received += body.len() as u64;
        self.stats.current_round.messages_received += 1;
        let mut out = Handled::default();
        let decoded = match SyncMessage::decode(msg_type, body, &self.bounds) {
            Ok(d) => d,
            Err(e) => {
                self.stats.malformed_messages += 1;
                tracing::debug!(%peer, error = %e, "signed_state: bad message dropped");
                return out;
            }
        };
        match decoded {
            SyncMessage::Root { root, .. } => {
                if let Some(page) = self.answer_root(peer, root, now) {
                    out.answers.push(page);
                }
            }
            SyncMessage::Digest { from, to, items } => {
                let r = reconcile(
                    &self.store,
                    from.as_ref(),
                    to.as_ref(),
                    &items,
                    &self.policy,
                    now_ms,
                );
                let send = within(r.send, self.max_answer_bytes);
                for c in chunks(&send, self.max_entries_per_message) {
                    out.answers.push(SyncMessage::Entries { entries: c });
                }
                for c in chunks(&r.want, self.max_digest_items) {
                    out.answers.push(SyncMessage::Want { keys: c });
                }
            }
            SyncMessage::Want { keys } => {
                let found: Vec<SignedEntry> = keys
                    .iter()
                    .filter_map(|(s, f)| self.store.get(s, f).cloned())
                    .collect();
                let found = within(found, self.max_answer_bytes);
                for c in chunks(&found, self.max_entries_per_message) {
                    out.answers.push(SyncMessage::Entries { entries: c });
                }
            }
            SyncMessage::Entries { entries } => {
                for e in entries {
                    let copy = keep_accepted.then(|| e.clone());
                    match self.ingest(e, now_ms) {
                        Ok(Accepted::Inserted | Accepted::Replaced) => {
                            out.accepted.extend(copy);
                        }
                        Ok(Accepted::Duplicate) => {}
                        Err(r) => {
                            tracing::debug!(%peer, reason = %r, "signed_state: entry refused");
                        }
                    }
                }
            }
        }
        out
    }

    /// One digest page per root, bounded in bytes, from where the last
    /// answer stopped: a flood of roots draws a bounded multiple of its
    /// bytes, and honest rounds still cover the store. Honest peers send one
    /// root a round: more within half a round are not answered.
    fn answer_root(
        &mut self,
        peer: SocketAddr,
        root: [u8; 16],
        now: Instant,
    ) -> Option<SyncMessage> {
        if self.store.root() == root {
            return None;
        }
        let gap = self.answer_gap;
        if self
            .root_answered
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < gap)
        {
            self.stats.roots_unanswered += 1;
            return None;
        }
        self.root_answered
            .retain(|_, t| now.saturating_duration_since(*t) < gap);
        self.root_answered.insert(peer, now);
        let from = self.answer_cursor.take();
        let (items, next) = self.store.digest_page_within(
            from.as_ref(),
            self.max_digest_items,
            self.max_answer_bytes,
        );
        self.answer_cursor = next.clone();
        Some(SyncMessage::Digest {
            from,
            to: next,
            items,
        })
    }
}

/// The first of `entries` whose [`entry_bytes`] fit in `max_bytes` (at
/// least one); the rest is left for later rounds.
fn within(mut entries: Vec<SignedEntry>, max_bytes: usize) -> Vec<SignedEntry> {
    let mut total = 0usize;
    let keep = entries
        .iter()
        .take_while(|e| {
            total += entry_bytes(e);
            total <= max_bytes
        })
        .count();
    entries.truncate(keep.max(1));
    entries
}

#[cfg(test)]
mod tests {
    use super::super::eth::EthKey;
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    struct Node {
        key: EthKey,
        replica: Replica,
        addr: SocketAddr,
    }

    fn node(i: u8, config: &SignedStateConfig) -> Node {
        let key = EthKey::from_bytes(&[i; 32]).expect("a valid key");
        let replica = Replica::new(config, key.address());
        Node {
            key,
            replica,
            addr: addr(u16::from(i)),
        }
    }

    fn set(n: &mut Node, field: &str, value: &str) {
        let me = n.key.address();
        let ts = n.replica.next_timestamp(&me, field, NOW_MS);
        let e = SignedEntry::sign(
            &n.key,
            field,
            bytes::Bytes::from(value.as_bytes().to_vec()),
            ts,
        )
        .expect("signs");
        assert!(n.replica.ingest(e, NOW_MS).is_ok());
    }

    /// Deliver `msg` from `from` to `to`; return `to`'s answers.
    fn deliver(from: &Node, to: &mut Node, msg: &SyncMessage, now: Instant) -> Vec<SyncMessage> {
        let (t, body) = msg.encode();
        to.replica
            .receive(from.addr, t, &body, now, NOW_MS, false)
            .answers
    }

    /// One anti-entropy exchange started by `a`'s root, played to the end.
    fn exchange(a: &mut Node, b: &mut Node, now: Instant) -> usize {
        let mut in_flight = vec![(true, a.replica.root_message())];
        let mut messages = 0;
        while let Some((from_a, msg)) = in_flight.pop() {
            messages += 1;
            let answers = if from_a {
                deliver(a, b, &msg, now)
            } else {
                deliver(b, a, &msg, now)
            };
            in_flight.extend(answers.into_iter().map(|m| (!from_a, m)));
        }
        messages
    }

    #[test]
    fn two_replicas_converge_by_exchanging_only_what_differs() {
        let config = SignedStateConfig::default();
        let (mut a, mut b) = (node(1, &config), node(2, &config));
        for i in 0..50 {
            set(&mut a, &format!("a{i}"), "x");
        }
        set(&mut b, "b", "y");
        set(&mut a, "shared", "old");
        let mut t = Instant::now();
        exchange(&mut a, &mut b, t);
        t += config.sync_interval;
        exchange(&mut b, &mut a, t);
        assert_eq!(a.replica.store().len(), 52);
        assert_eq!(a.replica.store.root(), b.replica.store.root());
        // A newer value spreads; the roots agree again.
        set(&mut a, "shared", "new");
        t += config.sync_interval;
        exchange(&mut a, &mut b, t);
        let got = b.replica.store().get(&a.key.address(), "shared");
        assert_eq!(got.map(|e| &e.value[..]), Some(&b"new"[..]));
        assert_eq!(a.replica.store.root(), b.replica.store.root());
        // In sync, a root draws nothing.
        t += config.sync_interval;
        assert_eq!(exchange(&mut a, &mut b, t), 1);
        let (sa, sb) = (a.replica.stats(), b.replica.stats());
        assert_eq!(sb.accepted, 1 + 51 + 1, "b's own, a's 51, the newer one");
        assert_eq!(sa.rejections.total() + sb.rejections.total(), 0);
    }

    #[test]
    fn a_peers_roots_are_answered_at_most_once_per_half_interval() {
        let config = SignedStateConfig::default();
        let (mut a, mut b) = (node(1, &config), node(2, &config));
        set(&mut b, "f", "v");
        let root = a.replica.root_message();
        let t = Instant::now();
        assert_eq!(deliver(&a, &mut b, &root, t).len(), 1);
        assert!(deliver(&a, &mut b, &root, t + config.sync_interval / 4).is_empty());
        assert_eq!(b.replica.stats().roots_unanswered, 1);
        assert_eq!(
            deliver(&a, &mut b, &root, t + config.sync_interval / 2).len(),
            1
        );
    }

    #[test]
    fn garbage_is_counted_and_answers_stay_within_their_byte_budget() {
        let config = SignedStateConfig::default().with_max_answer_bytes(2_000);
        let (mut a, mut b) = (node(1, &config), node(2, &config));
        for i in 0..100 {
            set(&mut b, &format!("f{i}"), &"v".repeat(100));
        }
        let h = a.replica.receive(
            b.addr,
            "signed_state.entries",
            b"\xff\x00garbage",
            Instant::now(),
            NOW_MS,
            true,
        );
        assert!(h.answers.is_empty() && h.accepted.is_empty());
        assert_eq!(a.replica.stats().malformed_messages, 1);
        // b answers a's empty root with one digest page; a wants everything;
        // b sends at most 2,000 bytes of entries for it.
        let t = Instant::now();
        let root = a.replica.root_message();
        let page = deliver(&a, &mut b, &root, t);
        let wants = deliver(&b, &mut a, &page[0], t);
        assert!(!wants.is_empty());
        let entries = deliver(&a, &mut b, &wants[0], t);
        let sent: usize = entries
            .iter()
            .map(|m| match m {
                SyncMessage::Entries { entries } => entries.iter().map(entry_bytes).sum(),
                _ => 0,
            })
            .sum();
        assert!(sent > 0 && sent <= 2_000, "{sent} bytes of entries");
    }
}
