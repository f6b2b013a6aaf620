//! The replica: newest entry per (signer, field), with the acceptance
//! pipeline every entry goes through, local or received.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::entry::{is_valid_field, EntryError, SignedEntry};
use super::eth::{keccak256, EthAddress};
use super::validator::Validator;

/// Store key: (signer, field).
pub type Key = (EthAddress, String);

/// What the acceptance pipeline checks, besides signatures.
#[derive(Clone)]
pub struct Policy {
    /// Longest field name accepted (at most [`MAX_FIELD_LEN`](super::MAX_FIELD_LEN)).
    pub max_field_len: usize,
    /// Largest value accepted, in bytes.
    pub max_value_len: usize,
    /// How far in the future (ms) a timestamp may be.
    pub max_clock_skew_ms: u64,
    /// Which (signer, field) pairs are accepted.
    pub validator: Arc<dyn Validator>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("max_field_len", &self.max_field_len)
            .field("max_value_len", &self.max_value_len)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .finish_non_exhaustive()
    }
}

/// What happened to an accepted entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new (signer, field).
    Inserted,
    /// It replaced an older entry.
    Replaced,
    /// The store already held this exact entry (normal in anti-entropy).
    Duplicate,
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The field name is empty, too long or has bytes outside `0x21..=0x7e`.
    #[error("invalid field name")]
    InvalidField,
    /// The value exceeds the configured size.
    #[error("value too large")]
    ValueTooLarge,
    /// The timestamp is further in the future than the allowed clock skew.
    #[error("timestamp too far in the future")]
    FromTheFuture,
    /// The validator refused the (signer, field).
    #[error("refused by the validator")]
    NotAllowed,
    /// Not newer than the entry held (an older replay or a losing tie).
    #[error("older than the entry held")]
    Stale,
    /// The signature recovers no key.
    #[error("invalid signature")]
    BadSignature,
    /// The signature is by another address than the claimed signer.
    #[error("signed by another address than the claimed signer")]
    WrongSigner,
    /// The store holds its maximum number of entries, and no signer newer
    /// than this entry's could be evicted to make room.
    #[error("store full")]
    StoreFull,
    /// The signer holds its quota of entries or bytes.
    #[error("signer over its quota")]
    SignerQuota,
}

/// Counts of refused entries, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rejections {
    /// [`Rejection::InvalidField`].
    pub invalid_field: u64,
    /// [`Rejection::ValueTooLarge`].
    pub value_too_large: u64,
    /// [`Rejection::FromTheFuture`].
    pub from_the_future: u64,
    /// [`Rejection::NotAllowed`].
    pub not_allowed: u64,
    /// [`Rejection::Stale`].
    pub stale: u64,
    /// [`Rejection::BadSignature`].
    pub bad_signature: u64,
    /// [`Rejection::WrongSigner`].
    pub wrong_signer: u64,
    /// [`Rejection::StoreFull`].
    pub store_full: u64,
    /// [`Rejection::SignerQuota`].
    pub signer_quota: u64,
}

impl Rejections {
    /// Count one rejection.
    pub fn count(&mut self, r: Rejection) {
        let c = match r {
            Rejection::InvalidField => &mut self.invalid_field,
            Rejection::ValueTooLarge => &mut self.value_too_large,
            Rejection::FromTheFuture => &mut self.from_the_future,
            Rejection::NotAllowed => &mut self.not_allowed,
            Rejection::Stale => &mut self.stale,
            Rejection::BadSignature => &mut self.bad_signature,
            Rejection::WrongSigner => &mut self.wrong_signer,
            Rejection::StoreFull => &mut self.store_full,
            Rejection::SignerQuota => &mut self.signer_quota,
        };
        *c += 1;
    }
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.invalid_field
            + self.value_too_large
            + self.from_the_future
            + self.not_allowed
            + self.stale
            + self.bad_signature
            + self.wrong_signer
            + self.store_full
            + self.signer_quota
    }
}

/// A (signer, field, timestamp, tag) line of a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestItem {
    /// The signer.
    pub signer: EthAddress,
    /// The field.
    pub field: String,
    /// The held entry's timestamp.
    pub timestamp_ms: u64,
    /// The held entry's [`SignedEntry::tag`].
    pub tag: [u8; 8],
}

/// How much a store holds: in all, and per signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in all.
    pub max_entries: usize,
    /// Distinct signers.
    pub max_signers: usize,
    /// Entries per signer (the node's own signer is exempt).
    pub max_entries_per_signer: usize,
    /// Bytes (see [`entry_bytes`]) per signer (the node's own is exempt).
    pub max_bytes_per_signer: usize,
}

impl Limits {
    /// Only a total cap: no per-signer quota.
    pub fn total(max_entries: usize) -> Self {
        Limits {
            max_entries,
            max_signers: usize::MAX,
            max_entries_per_signer: usize::MAX,
            max_bytes_per_signer: usize::MAX,
        }
    }
}

/// The bytes an entry is counted for in quotas and answer budgets: its
/// field, value, signature, signer and timestamp.
pub fn entry_bytes(e: &SignedEntry) -> usize {
    e.field.len() + e.value.len() + 65 + 20 + 8
}

/// What one signer holds, and when it was first seen (lower: older).
#[derive(Debug, Clone, Copy)]
struct SignerUse {
    entries: usize,
    bytes: usize,
    rank: u64,
}

/// Newest entry per (signer, field), within [`Limits`].
///
/// Without the limits, merging is a join: the state after merging a set
/// of entries is the per-key maximum under [`SignedEntry::supersedes`],
/// whatever their order or repetition. With them:
/// - a signer holds at most its quota of entries and bytes, except the
///   store's own signer ([`Store::with_limits`]), whose entries are always
///   accepted;
/// - signers are ranked by when they were first seen; when the store (or
///   its signer table) is full, room is made by evicting whole signers,
///   newest first, and only signers newer than the one whose entry needs
///   the room (any, for the own signer). A flood of new signers thus only
///   churns among the newest and never pushes out established ones; when
///   nothing can be evicted the entry is refused ([`Rejection::StoreFull`]).
#[derive(Debug, Clone)]
pub struct Store {
    entries: BTreeMap<Key, SignedEntry>,
    limits: Limits,
    own: Option<EthAddress>,
    signers: HashMap<EthAddress, SignerUse>,
    next_rank: u64,
    evicted_signers: u64,
    root: Option<[u8; 16]>,
}

impl Store {
    /// An empty store holding at most `max_entries`, no per-signer quota.
    pub fn new(max_entries: usize) -> Self {
        Self::with_limits(Limits::total(max_entries), None)
    }

    /// An empty store within `limits`; entries of `own` (the node's own
    /// signer) are always accepted and never evicted.
    pub fn with_limits(limits: Limits, own: Option<EthAddress>) -> Self {
        Self {
            entries: BTreeMap::new(),
            limits,
            own,
            signers: HashMap::new(),
            next_rank: 0,
            evicted_signers: 0,
            root: None,
        }
    }

    /// Signers evicted so far to make room.
    pub fn evicted_signers(&self) -> u64 {
        self.evicted_signers
    }

    /// Distinct signers held.
    pub fn signers(&self) -> usize {
        self.signers.len()
    }

    /// Whether `entry` (superseding `held`, if any) fits its signer's
    /// quota and, making room by evicting newer signers if needed, the
    /// store; evicts as needed when `evict`.
    fn make_room(
        &mut self,
        entry: &SignedEntry,
        held: Option<usize>,
        evict: bool,
    ) -> Result<(), Rejection> {
        let signer = entry.signer;
        let own = self.own == Some(signer);
        let used = self.signers.get(&signer).copied();
        let bytes = entry_bytes(entry);
        if !own {
            if let Some(u) = used {
                let entries = u.entries + usize::from(held.is_none());
                let total = u.bytes - held.unwrap_or(0) + bytes;
                if entries > self.limits.max_entries_per_signer
                    || total > self.limits.max_bytes_per_signer
                {
                    return Err(Rejection::SignerQuota);
                }
            } else if bytes > self.limits.max_bytes_per_signer {
                return Err(Rejection::SignerQuota);
            }
        }
        let need_entry = held.is_none() && self.entries.len() >= self.limits.max_entries;
        let need_signer = used.is_none() && self.signers.len() >= self.limits.max_signers;
        if !need_entry && !need_signer {
            return Ok(());
        }
        // The newest signer that may give way: newer than this one (a new
        // signer is the newest of all, so for it: the newest other), never
        // the own signer.
        let rank = match (own, used) {
            (true, _) => None,
            (false, Some(u)) => Some(u.rank),
            (false, None) => None,
        };
        let victim = self
            .signers
            .iter()
            .filter(|(s, u)| {
                **s != signer && Some(**s) != self.own && rank.is_none_or(|r| u.rank > r)
            })
            .max_by_key(|(_, u)| u.rank)
            .map(|(s, _)| *s);
        // A new signer may replace only the newest, and only for the
        // signer slot (taking an established signer's entries would let a
        // flood of new signers push them out).
        let victim = match (own, used, need_entry) {
            (false, None, true) => None,
            _ => victim,
        };
        let Some(victim) = victim else {
            // The node's own fields are never refused, even past the cap
            // (only its operator adds them).
            return if own {
                Ok(())
            } else {
                Err(Rejection::StoreFull)
            };
        };
        if evict {
            self.evict(victim);
            // Several small signers may be needed for one entry's room.
            if held.is_none() && self.entries.len() >= self.limits.max_entries {
                return self.make_room(entry, held, evict);
            }
        }
        Ok(())
    }

    /// Remove every entry of `signer`.
    fn evict(&mut self, signer: EthAddress) {
        self.entries.retain(|(s, _), _| *s != signer);
        self.signers.remove(&signer);
        self.evicted_signers += 1;
        self.root = None;
    }

    /// The entry held for (signer, field).
    pub fn get(&self, signer: &EthAddress, field: &str) -> Option<&SignedEntry> {
        // BTreeMap<(A, String)> cannot be queried by (A, &str) without a
        // String; field names are short.
        self.entries.get(&(*signer, field.to_owned()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in (signer, field) order.
    pub fn iter(&self) -> impl Iterator<Item = &SignedEntry> {
        self.entries.values()
    }

    /// The merge rule alone (no signature or policy check): keep `entry`
    /// if it supersedes what is held.
    pub fn merge(&mut self, entry: SignedEntry) -> Result<Accepted, Rejection> {
        let key = (entry.signer, entry.field.clone());
        let held = match self.entries.get(&key) {
            Some(held) if *held == entry => return Ok(Accepted::Duplicate),
            Some(held) if !entry.supersedes(held) => return Err(Rejection::Stale),
            Some(held) => Some(entry_bytes(held)),
            None => None,
        };
        self.make_room(&entry, held, true)?;
        self.root = None;
        let next_rank = &mut self.next_rank;
        let used = self.signers.entry(entry.signer).or_insert_with(|| {
            *next_rank += 1;
            SignerUse {
                entries: 0,
                bytes: 0,
                rank: *next_rank,
            }
        });
        used.bytes = used.bytes - held.unwrap_or(0) + entry_bytes(&entry);
        used.entries += usize::from(held.is_none());
        Ok(match self.entries.insert(key, entry) {
            Some(_) => Accepted::Replaced,
            None => Accepted::Inserted,
        })
    }

    /// The full pipeline, cheapest checks first: bounds, clock skew,
    /// validator, merge order (so replays cost no signature check), store
    /// cap, then the signature; then merge.
    pub fn ingest(
        &mut self,
        entry: SignedEntry,
        policy: &Policy,
        now_ms: u64,
    ) -> Result<Accepted, Rejection> {
        precheck(&entry, policy, now_ms)?;
        let held = match self.get(&entry.signer, &entry.field) {
            Some(held) if *held == entry => return Ok(Accepted::Duplicate),
            Some(held) if !entry.supersedes(held) => return Err(Rejection::Stale),
            Some(held) => Some(entry_bytes(held)),
            None => None,
        };
        // Room (without evicting yet) before the costly signature check.
        self.make_room(&entry, held, false)?;
        entry.verify().map_err(|e| match e {
            EntryError::BadSignature => Rejection::BadSignature,
            EntryError::WrongSigner { .. } => Rejection::WrongSigner,
        })?;
        self.merge(entry)
    }

    /// Whether the store would want an entry for `key` at `timestamp_ms`
    /// that it does not hold (the checks possible without the entry).
    pub fn would_want(
        &self,
        signer: &EthAddress,
        field: &str,
        timestamp_ms: u64,
        policy: &Policy,
        now_ms: u64,
    ) -> bool {
        is_valid_field(field)
            && field.len() <= policy.max_field_len
            && timestamp_ms <= now_ms.saturating_add(policy.max_clock_skew_ms)
            && policy.validator.accept(signer, field)
            && match self.get(signer, field) {
                Some(held) => held.timestamp_ms <= timestamp_ms,
                None => {
                    let own = self.own == Some(*signer);
                    let known = self.signers.get(signer);
                    own || known.is_some_and(|u| u.entries < self.limits.max_entries_per_signer)
                        || (known.is_none() && self.entries.len() < self.limits.max_entries)
                }
            }
    }

    /// Digest of the entries with keys in `[from, ..)`, at most `max` items;
    /// returns the items and the first key not covered (`None`: the end).
    pub fn digest_page(&self, from: Option<&Key>, max: usize) -> (Vec<DigestItem>, Option<Key>) {
        self.digest_page_within(from, max, usize::MAX)
    }

    /// As [`digest_page`](Self::digest_page), also stopping before the
    /// items' bytes (signer, field, timestamp, tag) pass `max_bytes`
    /// (at least one item is given).
    pub fn digest_page_within(
        &self,
        from: Option<&Key>,
        max: usize,
        max_bytes: usize,
    ) -> (Vec<DigestItem>, Option<Key>) {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let iter: Box<dyn Iterator<Item = (&Key, &SignedEntry)>> = match from {
            Some(k) => Box::new(self.entries.range(k.clone()..)),
            None => Box::new(self.entries.iter()),
        };
        for (k, e) in iter {
            let size = 20 + 1 + k.1.len() + 8 + 8;
            if items.len() >= max.max(1) || (!items.is_empty() && bytes + size > max_bytes) {
                return (items, Some(k.clone()));
            }
            bytes += size;
            items.push(DigestItem {
                signer: e.signer,
                field: e.field.clone(),
                timestamp_ms: e.timestamp_ms,
                tag: e.tag(),
            });
        }
        (items, None)
    }

    /// Entries with keys in `[from, to)` (`None`: unbounded).
    pub fn range<'a>(&'a self, from: Option<&Key>, to: Option<&Key>) -> Vec<&'a SignedEntry> {
        self.entries
            .iter()
            .filter(|(k, _)| from.is_none_or(|f| *k >= f) && to.is_none_or(|t| *k < t))
            .map(|(_, e)| e)
            .collect()
    }

    /// A 16-byte fingerprint of the whole state: equal roots mean (up to
    /// hash collisions) identical stores. Cached until the next change.
    pub fn root(&mut self) -> [u8; 16] {
        if let Some(r) = self.root {
            return r;
        }
        let mut buf = Vec::with_capacity(self.entries.len() * 48);
        for e in self.entries.values() {
            buf.extend_from_slice(&e.signer.0);
            buf.push(e.field.len() as u8);
            buf.extend_from_slice(e.field.as_bytes());
            buf.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            buf.extend_from_slice(&e.tag());
        }
        let h = keccak256(&buf);
        let mut r = [0u8; 16];
        r.copy_from_slice(&h[..16]);
        self.root = Some(r);
        r
    }
}

/// Bounds, clock skew and validator: the checks that need no store.
pub fn precheck(entry: &SignedEntry, policy: &Policy, now_ms: u64) -> Result<(), Rejection> {
    if !is_valid_field(&entry.field) || entry.field.len() > policy.max_field_len {
        return Err(Rejection::InvalidField);
    }
    if entry.value.len() > policy.max_value_len {
        return Err(Rejection::ValueTooLarge);
    }
    if entry.timestamp_ms > now_ms.saturating_add(policy.max_clock_skew_ms) {
        return Err(Rejection::FromTheFuture);
    }
    if !policy.validator.accept(&entry.signer, &entry.field) {
        return Err(Rejection::NotAllowed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::eth::EthKey;
    use super::super::validator::{AcceptAll, AllowList};
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Tests and their helpers report failures as errors instead of panicking.
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    const NOW: u64 = 1_700_000_000_000;

    fn policy() -> Policy {
        Policy {
            max_field_len: 64,
            max_value_len: 1024,
            max_clock_skew_ms: 30_000,
            validator: Arc::new(AcceptAll),
        }
    }

    fn keys() -> &'static [EthKey] {
        static K: OnceLock<Vec<EthKey>> = OnceLock::new();
        K.get_or_init(|| {
            (1u8..=3)
                .map(|i| EthKey::from_bytes(&[i; 32]).unwrap())
                .collect()
        })
    }

    /// A pool of signed entries over 3 signers x 2 fields with colliding
    /// timestamps (ties with different values) so every merge rule is hit.
    fn pool() -> &'static [SignedEntry] {
        static P: OnceLock<Vec<SignedEntry>> = OnceLock::new();
        P.get_or_init(|| {
            let mut v = Vec::new();
            for k in keys() {
                for f in ["a", "b"] {
                    for ts in [1u64, 2, 2, 3] {
                        let value = format!("{f}{ts}{}", v.len() % 3);
                        v.push(
                            SignedEntry::sign(k, f, value.into_bytes(), NOW - 100 + ts).unwrap(),
                        );
                    }
                }
            }
            v
        })
    }

    fn merged(order: &[usize]) -> Vec<SignedEntry> {
        let mut s = Store::new(1000);
        for &i in order {
            let _ = s.ingest(pool()[i].clone(), &policy(), NOW);
        }
        s.iter().cloned().collect()
    }

    fn key(i: u32) -> EthKey {
        let mut b = [7u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        EthKey::from_bytes(&b).unwrap()
    }

    fn entry(k: &EthKey, field: &str) -> SignedEntry {
        SignedEntry::sign(k, field, b"v".to_vec(), NOW).unwrap()
    }

    #[test]
    fn quotas_ranked_eviction_and_own_fields() -> TestResult {
        let own = key(0);
        let limits = Limits {
            max_entries: 20,
            max_signers: 4,
            max_entries_per_signer: 5,
            max_bytes_per_signer: 10 * entry_bytes(&entry(&own, "f0")),
        };
        let mut s = Store::with_limits(limits, Some(own.address()));
        let p = policy();
        // A signer past its quota of entries is refused; updates pass.
        let old = key(1);
        for i in 0..5 {
            s.ingest(entry(&old, &format!("f{i}")), &p, NOW)?;
        }
        assert_eq!(
            s.ingest(entry(&old, "f5"), &p, NOW),
            Err(Rejection::SignerQuota)
        );
        let newer = SignedEntry::sign(&old, "f0", b"w".to_vec(), NOW + 1)?;
        assert_eq!(s.ingest(newer, &p, NOW), Ok(Accepted::Replaced));
        // Two more established signers; then a flood of new ones only
        // churns the newest slot.
        for i in 2..4 {
            s.ingest(entry(&key(i), "f"), &p, NOW)?;
        }
        for i in 100..130 {
            s.ingest(entry(&key(i), "f"), &p, NOW)?;
        }
        assert_eq!(s.signers(), 4);
        for i in 1..4 {
            assert!(
                s.get(&key(i).address(), "f0").is_some() || s.get(&key(i).address(), "f").is_some()
            );
        }
        assert!(
            s.get(&key(129).address(), "f").is_some(),
            "the newest holds the last slot"
        );
        assert_eq!(s.evicted_signers(), 29);
        // The own signer: no quota, never refused, even past the cap.
        for i in 0..40 {
            s.ingest(entry(&own, &format!("own{i}")), &p, NOW)?;
        }
        assert!(s.len() >= 40, "{}", s.len());
        assert!(s.get(&old.address(), "f1").is_none(), "others gave way");
        Ok(())
    }

    #[test]
    fn digest_pages_stop_at_their_byte_budget() -> TestResult {
        let mut s = Store::new(100);
        for i in 0..50 {
            s.ingest(entry(&key(1), &format!("field{i:02}")), &policy(), NOW)?;
        }
        let (items, next) = s.digest_page_within(None, 1000, 200);
        assert!(
            !items.is_empty() && items.len() * 44 <= 200,
            "{}",
            items.len()
        );
        assert!(next.is_some());
        let (one, _) = s.digest_page_within(None, 1000, 1);
        assert_eq!(one.len(), 1, "at least one item");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any order and any repetition of the same entries gives the same
        /// state: commutative, associative and idempotent.
        #[test]
        fn merge_is_order_independent(
            picks in proptest::collection::vec(0..24usize, 0..40),
            seed in any::<u64>(),
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut shuffled = picks.clone();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut doubled = picks.clone();
            doubled.extend(picks.iter().rev());
            let a = merged(&picks);
            prop_assert_eq!(&a, &merged(&shuffled));
            prop_assert_eq!(&a, &merged(&doubled));
            // And it is the per-key maximum.
            for e in &a {
                for &i in &picks {
                    let o = &pool()[i];
                    if o.signer == e.signer && o.field == e.field {
                        prop_assert!(!o.supersedes(e));
                    }
                }
            }
        }
    }

    #[test]
    fn pipeline_rules() -> TestResult {
        let k = &keys()[0];
        let p = policy();
        let mut s = Store::new(2);
        let e1 = SignedEntry::sign(k, "f", &b"1"[..], NOW)?;
        let e2 = SignedEntry::sign(k, "f", &b"2"[..], NOW + 1)?;
        assert_eq!(s.ingest(e1.clone(), &p, NOW), Ok(Accepted::Inserted));
        assert_eq!(s.ingest(e1.clone(), &p, NOW), Ok(Accepted::Duplicate));
        assert_eq!(s.ingest(e2.clone(), &p, NOW), Ok(Accepted::Replaced));
        assert_eq!(s.ingest(e1, &p, NOW), Err(Rejection::Stale), "older replay");
        let future = SignedEntry::sign(k, "g", &b"x"[..], NOW + 30_001)?;
        assert_eq!(s.ingest(future, &p, NOW), Err(Rejection::FromTheFuture));
        let edge = SignedEntry::sign(k, "g", &b"x"[..], NOW + 30_000)?;
        assert_eq!(s.ingest(edge, &p, NOW), Ok(Accepted::Inserted));
        let third = SignedEntry::sign(k, "h", &b"x"[..], NOW)?;
        assert_eq!(s.ingest(third, &p, NOW), Err(Rejection::StoreFull));
        let mut forged = SignedEntry::sign(k, "f", &b"3"[..], NOW + 2)?;
        forged.value = bytes::Bytes::from_static(b"4");
        assert!(matches!(
            s.ingest(forged, &p, NOW),
            Err(Rejection::BadSignature | Rejection::WrongSigner)
        ));
        let mut other = SignedEntry::sign(&keys()[1], "f", &b"3"[..], NOW + 2)?;
        other.signer = k.address();
        assert_eq!(s.ingest(other, &p, NOW), Err(Rejection::WrongSigner));
        assert_eq!(s.get(&k.address(), "f").ok_or("f was not stored")?, &e2);

        let strict = Policy {
            validator: Arc::new(AllowList::new([keys()[1].address()])),
            max_value_len: 1,
            ..policy()
        };
        let mut s = Store::new(10);
        let e = SignedEntry::sign(k, "f", &b"1"[..], NOW)?;
        assert_eq!(s.ingest(e, &strict, NOW), Err(Rejection::NotAllowed));
        let e = SignedEntry::sign(&keys()[1], "f", &b"12"[..], NOW)?;
        assert_eq!(s.ingest(e, &strict, NOW), Err(Rejection::ValueTooLarge));
        let e = SignedEntry::sign(&keys()[1], &"x".repeat(65), &b"1"[..], NOW)?;
        assert_eq!(s.ingest(e, &strict, NOW), Err(Rejection::InvalidField));
        Ok(())
    }

    #[test]
    fn digest_pages_cover_everything_once() {
        let mut s = Store::new(100);
        for (i, e) in pool().iter().enumerate() {
            let _ = s.ingest(e.clone(), &policy(), NOW);
            let _ = i;
        }
        let mut seen = Vec::new();
        let mut from = None;
        loop {
            let (items, next) = s.digest_page(from.as_ref(), 2);
            assert!(items.len() <= 2);
            seen.extend(items.into_iter().map(|i| (i.signer, i.field)));
            if next.is_none() {
                break;
            }
            from = next;
        }
        let all: Vec<_> = s.iter().map(|e| (e.signer, e.field.clone())).collect();
        assert_eq!(seen, all);
        let r = s.root();
        assert_eq!(r, s.clone().root());
        assert_ne!(r, Store::new(1).root());
    }
}
