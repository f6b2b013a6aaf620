//! The anti-entropy protocol: its messages, their bounded decoding, and the
//! reconciliation step (sans-IO: the plugin does the sending).
//!
//! Every body is one version byte (`1`) followed by a postcard encoding.
//!
//! | type | body | sent |
//! |---|---|---|
//! | `signed_state.root` | 16-byte state fingerprint + entry count | every round to `fanout` random writable peers, and to a newly connected writable peer |
//! | `signed_state.digest` | a key range `[from, to)` and (signer, field, timestamp, tag) for every entry in it | in reply to a root that differs, in pages |
//! | `signed_state.want` | (signer, field) keys | by the root's sender, for entries the digest shows newer |
//! | `signed_state.entries` | signed entries | the deltas: entries the digest shows missing or older, answers to a want, and a fresh `set` |
//!
//! So a round between two converged nodes costs one root (≈ 20 bytes of
//! body); between differing nodes, one digest and only the missing entries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::entry::{is_valid_field, SignedEntry};
use super::eth::{EthAddress, EthSignature};
use super::store::{DigestItem, Key, Policy, Store};

/// Message type of a root.
pub const TYPE_ROOT: &str = "signed_state.root";
/// Message type of a digest page.
pub const TYPE_DIGEST: &str = "signed_state.digest";
/// Message type of a want.
pub const TYPE_WANT: &str = "signed_state.want";
/// Message type of entries.
pub const TYPE_ENTRIES: &str = "signed_state.entries";
/// Prefix shared by all the plugin's message types.
pub const TYPE_PREFIX: &str = "signed_state.";

const VERSION: u8 = 1;

/// Limits applied when decoding untrusted bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries per `entries` message.
    pub max_entries_per_message: usize,
    /// Items per digest page, keys per want.
    pub max_digest_items: usize,
    /// Field name length.
    pub max_field_len: usize,
    /// Value size.
    pub max_value_len: usize,
}

impl Bounds {
    /// Largest body any valid message can have under these bounds; bigger
    /// bodies are refused before decoding.
    pub fn max_body_len(&self) -> usize {
        let entry = 20 + 3 + self.max_field_len + 5 + self.max_value_len + 10 + 65;
        let item = 20 + 3 + self.max_field_len + 10 + 8;
        1 + 10 + (self.max_entries_per_message * entry).max(self.max_digest_items * item + 2 * item)
    }
}

/// One protocol message, decoded and checked against [`Bounds`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// "My state's fingerprint is `root`, with `count` entries."
    Root {
        /// [`Store::root`].
        root: [u8; 16],
        /// Entries held.
        count: u32,
    },
    /// A digest page covering keys in `[from, to)`.
    Digest {
        /// First key covered (`None`: from the start).
        from: Option<Key>,
        /// First key not covered (`None`: to the end).
        to: Option<Key>,
        /// One item per entry held in the range, in key order.
        items: Vec<DigestItem>,
    },
    /// "Send me your entries for these keys."
    Want {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Signed entries (not yet verified).
    Entries {
        /// The entries.
        entries: Vec<SignedEntry>,
    },
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not one of the plugin's types.
    #[error("unknown message type")]
    UnknownType,
    /// Larger than any valid message.
    #[error("body too large")]
    TooLarge,
    /// Unknown version byte (or empty body).
    #[error("unsupported version")]
    Version,
    /// Not a valid encoding (including trailing bytes).
    #[error("malformed body")]
    Malformed,
    /// More items than allowed, or a field name/value out of bounds.
    #[error("over the protocol bounds")]
    OverBounds,
}

#[derive(Serialize, Deserialize)]
struct WireRoot {
    root: [u8; 16],
    count: u32,
}

#[derive(Serialize, Deserialize)]
struct WireDigest {
    from: Option<([u8; 20], String)>,
    to: Option<([u8; 20], String)>,
    items: Vec<([u8; 20], String, u64, [u8; 8])>,
}

#[derive(Serialize, Deserialize)]
struct WireWant {
    keys: Vec<([u8; 20], String)>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    signer: [u8; 20],
    field: String,
    value: Vec<u8>,
    timestamp_ms: u64,
    r: [u8; 32],
    s: [u8; 32],
    v: u8,
}

#[derive(Serialize, Deserialize)]
struct WireEntries {
    entries: Vec<WireEntry>,
}

fn wire_key(k: &Key) -> ([u8; 20], String) {
    (k.0 .0, k.1.clone())
}

fn to_wire_entry(e: &SignedEntry) -> WireEntry {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&e.signature.0[..32]);
    s.copy_from_slice(&e.signature.0[32..64]);
    WireEntry {
        signer: e.signer.0,
        field: e.field.clone(),
        value: e.value.to_vec(),
        timestamp_ms: e.timestamp_ms,
        r,
        s,
        v: e.signature.0[64],
    }
}

fn encode_body<T: Serialize>(v: &T) -> Bytes {
    let mut out = vec![VERSION];
    // Serializing our own plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    Bytes::from(out)
}

impl SyncMessage {
    /// The message type and body to send.
    pub fn encode(&self) -> (&'static str, Bytes) {
        match self {
            SyncMessage::Root { root, count } => (
                TYPE_ROOT,
                encode_body(&WireRoot {
                    root: *root,
                    count: *count,
                }),
            ),
            SyncMessage::Digest { from, to, items } => (
                TYPE_DIGEST,
                encode_body(&WireDigest {
                    from: from.as_ref().map(wire_key),
                    to: to.as_ref().map(wire_key),
                    items: items
                        .iter()
                        .map(|i| (i.signer.0, i.field.clone(), i.timestamp_ms, i.tag))
                        .collect(),
                }),
            ),
            SyncMessage::Want { keys } => (
                TYPE_WANT,
                encode_body(&WireWant {
                    keys: keys.iter().map(wire_key).collect(),
                }),
            ),
            SyncMessage::Entries { entries } => (
                TYPE_ENTRIES,
                encode_body(&WireEntries {
                    entries: entries.iter().map(to_wire_entry).collect(),
                }),
            ),
        }
    }

    /// Decode an untrusted body of type `msg_type`. Never panics; refuses
    /// bodies over [`Bounds::max_body_len`] before decoding, and any count,
    /// field name or value over `bounds` after.
    pub fn decode(msg_type: &str, body: &[u8], bounds: &Bounds) -> Result<Self, DecodeError> {
        if !matches!(msg_type, TYPE_ROOT | TYPE_DIGEST | TYPE_WANT | TYPE_ENTRIES) {
            return Err(DecodeError::UnknownType);
        }
        if body.len() > bounds.max_body_len() {
            return Err(DecodeError::TooLarge);
        }
        let Some((&VERSION, rest)) = body.split_first() else {
            return Err(DecodeError::Version);
        };
        let field_ok = |f: &str| is_valid_field(f) && f.len() <= bounds.max_field_len;
        let key = |(a, f): ([u8; 20], String)| -> Result<Key, DecodeError> {
            if field_ok(&f) {
                Ok((EthAddress(a), f))
            } else {
                Err(DecodeError::OverBounds)
            }
        };
        match msg_type {
            TYPE_ROOT => {
                let w: WireRoot = parse(rest)?;
                Ok(SyncMessage::Root {
                    root: w.root,
                    count: w.count,
                })
            }
            TYPE_DIGEST => {
                let w: WireDigest = parse(rest)?;
                if w.items.len() > bounds.max_digest_items {
                    return Err(DecodeError::OverBounds);
                }
                let items = w
                    .items
                    .into_iter()
                    .map(|(a, f, ts, tag)| {
                        let (signer, field) = key((a, f))?;
                        Ok(DigestItem {
                            signer,
                            field,
                            timestamp_ms: ts,
                            tag,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(SyncMessage::Digest {
                    from: w.from.map(key).transpose()?,
                    to: w.to.map(key).transpose()?,
                    items,
                })
            }
            TYPE_WANT => {
                let w: WireWant = parse(rest)?;
                if w.keys.len() > bounds.max_digest_items {
                    return Err(DecodeError::OverBounds);
                }
                let keys = w.keys.into_iter().map(key).collect::<Result<_, _>>()?;
                Ok(SyncMessage::Want { keys })
            }
            _ => {
                let w: WireEntries = parse(rest)?;
                if w.entries.len() > bounds.max_entries_per_message {
                    return Err(DecodeError::OverBounds);
                }
                let entries = w
                    .entries
                    .into_iter()
                    .map(|e| {
                        if !field_ok(&e.field) || e.value.len() > bounds.max_value_len {
                            return Err(DecodeError::OverBounds);
                        }
                        let mut sig = [0u8; 65];
                        sig[..32].copy_from_slice(&e.r);
                        sig[32..64].copy_from_slice(&e.s);
                        sig[64] = e.v;
                        Ok(SignedEntry {
                            signer: EthAddress(e.signer),
                            field: e.field,
                            value: Bytes::from(e.value),
                            timestamp_ms: e.timestamp_ms,
                            signature: EthSignature(sig),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(SyncMessage::Entries { entries })
            }
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(DecodeError::Malformed),
    }
}

/// Split `items` into messages of at most `per` items each (none if empty).
pub fn chunks<T: Clone>(items: &[T], per: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    items.chunks(per.max(1)).map(<[T]>::to_vec)
}

/// What to do after receiving a digest page from a peer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Our entries the peer lacks or holds older: send them.
    pub send: Vec<SignedEntry>,
    /// Keys the peer holds newer (or tied with another entry): ask for them.
    pub want: Vec<Key>,
}

/// Compare a peer's digest page of `[from, to)` with our store.
pub fn reconcile(
    store: &Store,
    from: Option<&Key>,
    to: Option<&Key>,
    items: &[DigestItem],
    policy: &Policy,
    now_ms: u64,
) -> Reconciled {
    let mut out = Reconciled::default();
    let mut listed = std::collections::BTreeSet::new();
    for item in items {
        // Items outside the announced range are ignored (a confused or
        // hostile peer).
        let k = (item.signer, item.field.clone());
        if from.is_some_and(|f| k < *f) || to.is_some_and(|t| k >= *t) {
            continue;
        }
        match store.get(&item.signer, &item.field) {
            Some(mine) if mine.timestamp_ms > item.timestamp_ms => out.send.push(mine.clone()),
            Some(mine) if mine.timestamp_ms == item.timestamp_ms && mine.tag() != item.tag => {
                // Same timestamp, different entries: both sides get both
                // and keep the same winner.
                out.send.push(mine.clone());
                out.want.push(k.clone());
            }
            Some(mine) if mine.timestamp_ms == item.timestamp_ms => {}
            _ => {
                if store.would_want(&item.signer, &item.field, item.timestamp_ms, policy, now_ms) {
                    out.want.push(k.clone());
                }
            }
        }
        listed.insert(k);
    }
    for e in store.range(from, to) {
        if !listed.contains(&(e.signer, e.field.clone())) {
            out.send.push(e.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::eth::EthKey;
    use super::super::validator::AcceptAll;
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Tests and their helpers report failures as errors instead of panicking.
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    const NOW: u64 = 1_700_000_000_000;

    fn bounds() -> Bounds {
        Bounds {
            max_entries_per_message: 4,
            max_digest_items: 4,
            max_field_len: 16,
            max_value_len: 32,
        }
    }

    fn policy() -> Policy {
        Policy {
            max_field_len: 16,
            max_value_len: 32,
            max_clock_skew_ms: 30_000,
            validator: Arc::new(AcceptAll),
        }
    }

    fn sample() -> TestResult<Vec<SyncMessage>> {
        let k = EthKey::from_bytes(&[9; 32])?;
        let e = SignedEntry::sign(&k, "f", &b"v"[..], NOW)?;
        let key = (k.address(), "f".to_string());
        Ok(vec![
            SyncMessage::Root {
                root: [7; 16],
                count: 3,
            },
            SyncMessage::Digest {
                from: Some(key.clone()),
                to: None,
                items: vec![DigestItem {
                    signer: k.address(),
                    field: "f".into(),
                    timestamp_ms: NOW,
                    tag: e.tag(),
                }],
            },
            SyncMessage::Want { keys: vec![key] },
            SyncMessage::Entries { entries: vec![e] },
        ])
    }

    #[test]
    fn encode_decode_round_trip() -> TestResult {
        for m in sample()? {
            let (t, body) = m.encode();
            assert!(body.len() <= bounds().max_body_len());
            assert_eq!(SyncMessage::decode(t, &body, &bounds())?, m);
            // Every truncation is refused, never a panic.
            for n in 0..body.len() {
                assert!(SyncMessage::decode(t, &body[..n], &bounds()).is_err());
            }
            let mut longer = body.to_vec();
            longer.push(0);
            assert_eq!(
                SyncMessage::decode(t, &longer, &bounds()),
                Err(DecodeError::Malformed)
            );
        }
        Ok(())
    }

    #[test]
    fn over_bounds_is_refused() -> TestResult {
        let k = EthKey::from_bytes(&[9; 32])?;
        let five = (0..5)
            .map(|i| SignedEntry::sign(&k, &format!("f{i}"), &b"v"[..], NOW))
            .collect::<Result<Vec<_>, _>>()?;
        let (t, body) = SyncMessage::Entries { entries: five }.encode();
        assert_eq!(
            SyncMessage::decode(t, &body, &bounds()),
            Err(DecodeError::OverBounds)
        );
        let big = SignedEntry::sign(&k, "f", vec![0u8; 33], NOW)?;
        let (t, body) = SyncMessage::Entries { entries: vec![big] }.encode();
        assert_eq!(
            SyncMessage::decode(t, &body, &bounds()),
            Err(DecodeError::OverBounds)
        );
        let long = SignedEntry::sign(&k, &"x".repeat(17), &b""[..], NOW)?;
        let (t, body) = SyncMessage::Entries {
            entries: vec![long],
        }
        .encode();
        assert_eq!(
            SyncMessage::decode(t, &body, &bounds()),
            Err(DecodeError::OverBounds)
        );
        let huge = vec![1u8; bounds().max_body_len() + 1];
        assert_eq!(
            SyncMessage::decode(TYPE_ENTRIES, &huge, &bounds()),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            SyncMessage::decode("other", b"\x01", &bounds()),
            Err(DecodeError::UnknownType)
        );
        assert_eq!(
            SyncMessage::decode(TYPE_ROOT, b"\x02", &bounds()),
            Err(DecodeError::Version)
        );
        // A length prefix claiming 2^32 items is refused without allocating.
        let mut lie = vec![1u8, 0];
        lie.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(SyncMessage::decode(TYPE_DIGEST, &lie, &bounds()).is_err());
        Ok(())
    }

    #[test]
    fn reconcile_sends_missing_and_wants_newer() -> TestResult {
        let k = EthKey::from_bytes(&[9; 32])?;
        let sign = |f: &str, ts| SignedEntry::sign(&k, f, &b"v"[..], ts);
        let mut mine = Store::new(10);
        for e in [
            sign("a", NOW)?,
            sign("b", NOW)?,
            sign("c", NOW - 5)?,
            sign("d", NOW)?,
        ] {
            mine.ingest(e, &policy(), NOW)?;
        }
        let item = |f: &str, ts, tag| DigestItem {
            signer: k.address(),
            field: f.into(),
            timestamp_ms: ts,
            tag,
        };
        let b_tag = mine.get(&k.address(), "b").ok_or("b was not stored")?.tag();
        let items = vec![
            item("a", NOW - 1, [0; 8]),      // theirs older: send mine
            item("b", NOW, b_tag),           // same: nothing
            item("c", NOW, [0; 8]),          // theirs newer: want
            item("e", NOW, [0; 8]),          // unknown to me: want
            item("f", NOW + 60_000, [0; 8]), // from the future: not wanted
        ];
        // "d" is not listed: send it.
        let r = reconcile(&mine, None, None, &items, &policy(), NOW);
        let sent: Vec<_> = r.send.iter().map(|e| e.field.as_str()).collect();
        let wanted: Vec<_> = r.want.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(sent, ["a", "d"]);
        assert_eq!(wanted, ["c", "e"]);
        // A page [a, c) only covers a and b.
        let to = (k.address(), "c".to_string());
        let r = reconcile(&mine, None, Some(&to), &items[..2], &policy(), NOW);
        assert_eq!(r.send.len(), 1);
        assert!(r.want.is_empty());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decode_arbitrary_bytes_never_panics(
            t in 0..5usize,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let ty = [TYPE_ROOT, TYPE_DIGEST, TYPE_WANT, TYPE_ENTRIES, "x"][t];
            let mut b = body;
            if let Some(first) = b.first_mut() { *first = 1; }
            if let Ok(m) = SyncMessage::decode(ty, &b, &bounds()) {
                // Whatever decodes re-encodes within the bounds.
                let (t2, body2) = m.encode();
                prop_assert_eq!(t2, ty);
                prop_assert!(body2.len() <= bounds().max_body_len());
            }
        }

        #[test]
        fn decode_mutated_valid_bodies_never_panics(
            which in 0..4usize,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let samples = sample().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (t, body) = samples[which].encode();
            let mut b = body.to_vec();
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let _ = SyncMessage::decode(t, &b, &bounds());
        }
    }
}
