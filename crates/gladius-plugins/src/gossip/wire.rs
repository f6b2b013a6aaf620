//! The gossip wire format, version 1: the body of a gladius message of
//! type [`MESSAGE_TYPE`]. Every integer is big-endian; a frame is exactly
//! as long as its fields (trailing bytes are an error). See
//! `docs/gossip.md` for the same tables with examples.
//!
//! ```text
//! every frame:  version u8 = 1 | kind u8 | topic_len u8 (1..=255) | topic (UTF-8)
//! kind 0 data:        origin [32] | timestamp_ms u64 | nonce u64 | hops u16
//!                     | body_len u32 | body | signature [64]
//! kind 1 ihave:       count u8 (1..=255) | count × (id [32] | hops u16)
//! kind 2 graft:       count u8 (0..=255) | count × id [32]
//! kind 3 prune:       (nothing)
//! kind 4 subscribe:   (nothing)
//! kind 5 unsubscribe: (nothing)
//! kind 6 shortcut:    as kind 0
//! kind 7 branch:      as kind 0, then branch u32
//! ```
//!
//! A data frame's id is `SHA-256("gladius gossip v1\0" | topic_len | topic
//! | origin | timestamp_ms | nonce | body_len | body)` and its signature
//! is the origin's Ed25519 signature of those 32 bytes. `hops` is the only
//! field a forwarder changes, so it is not signed (a forwarder can lie
//! about it, and about nothing else); so are the kinds 0, 6 and 7, which
//! say how a copy travels ([`Via`]: the tree, a shortcut, a branch of the
//! tree that a shortcut started; see [`super::proto`]). An `ihave` entry's `hops` is the
//! announcer's own hop count for that message (what it got it with); a
//! `graft` with no ids only asks to be pushed to eagerly (the tree
//! optimisation in [`super::proto`]).

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::key::{GossipKey, MessageId, Origin};

/// The gladius message type every gossip frame travels in.
pub const MESSAGE_TYPE: &str = "gossip.frame";
/// The only wire version so far.
pub const VERSION: u8 = 1;
/// The longest topic name in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// The most ids one `ihave` or `graft` frame can carry.
pub const MAX_IDS_PER_FRAME: usize = 255;
/// Bytes a data frame adds to its topic and body.
pub const DATA_OVERHEAD: usize = 3 + 32 + 8 + 8 + 2 + 4 + 64;
const ID_DOMAIN: &[u8] = b"gladius gossip v1\0";

const KIND_DATA: u8 = 0;
const KIND_IHAVE: u8 = 1;
const KIND_GRAFT: u8 = 2;
const KIND_PRUNE: u8 = 3;
const KIND_SUBSCRIBE: u8 = 4;
const KIND_UNSUBSCRIBE: u8 = 5;
const KIND_SHORTCUT: u8 = 6;
const KIND_BRANCH: u8 = 7;

/// A topic name: 1..=255 bytes of UTF-8. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a topic name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a topic is 1..=255 bytes of UTF-8")]
pub struct TopicError;

impl Topic {
    /// A topic, if `name` is 1..=255 bytes.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() || name.len() > MAX_TOPIC_LEN {
            return Err(TopicError);
        }
        Ok(Self(name.into()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(name: &str) -> Result<Self, TopicError> {
        Topic::new(name)
    }
}

/// A signed message as it travels: everything but the id, which is
/// computed from the fields (so it cannot disagree with them).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Data {
    /// The topic.
    pub topic: Topic,
    /// Who published and signed it.
    pub origin: Origin,
    /// The origin's clock when it published, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Random, so equal bodies published in the same millisecond differ.
    pub nonce: u64,
    /// Links crossed before this one (0 when the origin sends it).
    pub hops: u16,
    /// The application's bytes.
    pub body: Bytes,
    /// The origin's Ed25519 signature of the id.
    pub signature: [u8; 64],
    /// How this copy travels. Like `hops`, not signed.
    pub via: Via,
}

/// How a copy of a message travels: the frame's kind. A duplicate closes a
/// cycle of tree links (and prunes one) only if this node already had a
/// copy from the same source: the tree (the origin's copies) or the same
/// branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// On the tree, from the origin (kind 0).
    #[default]
    Tree,
    /// Over a link outside the tree: the origin's fan-out or a shortcut
    /// push (kind 6). Its receiver neither makes the sender eager nor
    /// prunes on it.
    Shortcut,
    /// On the tree, from the node that got the message by a shortcut
    /// (kind 7): that node names the branch with a random non-zero number.
    Branch(u32),
}

impl Data {
    /// A message signed by `key`.
    pub fn signed(
        key: &GossipKey,
        topic: Topic,
        timestamp_ms: u64,
        nonce: u64,
        body: Bytes,
    ) -> Self {
        let mut data = Self {
            topic,
            origin: key.origin(),
            timestamp_ms,
            nonce,
            hops: 0,
            body,
            signature: [0; 64],
            via: Via::Tree,
        };
        data.signature = key.sign(&data.id());
        data
    }

    /// The id: SHA-256 over the signed fields (see the module docs).
    pub fn id(&self) -> MessageId {
        let mut h = Sha256::new();
        h.update(ID_DOMAIN);
        h.update([topic_len(&self.topic)]);
        h.update(self.topic.as_str().as_bytes());
        h.update(self.origin.0);
        h.update(self.timestamp_ms.to_be_bytes());
        h.update(self.nonce.to_be_bytes());
        h.update(body_len(&self.body).to_be_bytes());
        h.update(&self.body);
        MessageId(h.finalize().into())
    }

    /// Whether the signature is the origin's over `id` (which the caller
    /// computed with [`Data::id`]).
    pub fn verifies(&self, id: &MessageId) -> bool {
        self.origin.verifies(id, &self.signature)
    }
}

/// One gossip frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Frame {
    /// A full message (eager push, or the answer to a graft).
    Data(Data),
    /// "I have these messages" (lazy push).
    IHave {
        /// Their topic.
        topic: Topic,
        /// Their ids with the announcer's hop count for each, 1..=255.
        ids: Vec<(MessageId, u16)>,
    },
    /// "Send me these, and push to me eagerly from now on."
    Graft {
        /// The topic.
        topic: Topic,
        /// The ids wanted, 0..=255 (none: just push to me eagerly).
        ids: Vec<MessageId>,
    },
    /// "Stop pushing this topic to me; announce it lazily."
    Prune {
        /// The topic.
        topic: Topic,
    },
    /// "I am subscribed to this topic" (sent to every peer on subscribing
    /// and to every peer that comes up).
    Subscribe {
        /// The topic.
        topic: Topic,
    },
    /// "I left this topic."
    Unsubscribe {
        /// The topic.
        topic: Topic,
    },
}

/// Why a frame did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame ends before its fields do.
    #[error("truncated gossip frame")]
    Truncated,
    /// A version this node does not speak.
    #[error("unknown gossip version {0}")]
    Version(u8),
    /// An unknown frame kind.
    #[error("unknown gossip frame kind {0}")]
    Kind(u8),
    /// An empty or non-UTF-8 topic.
    #[error("bad topic")]
    Topic,
    /// An `ihave` with no ids, or an `ihave`/`graft` with more than this
    /// node accepts.
    #[error("bad id count {0}")]
    IdCount(usize),
    /// A body longer than this node accepts.
    #[error("body of {len} bytes is over the limit of {max}")]
    BodyTooLarge {
        /// The length the frame declares.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

impl WireError {
    /// Whether the frame was refused for its size rather than its shape.
    pub fn is_oversized(&self) -> bool {
        matches!(self, WireError::BodyTooLarge { .. } | WireError::IdCount(_))
    }
}

fn topic_len(topic: &Topic) -> u8 {
    // Topic::new bounds the length to 255.
    u8::try_from(topic.as_str().len()).unwrap_or(u8::MAX)
}

fn body_len(body: &Bytes) -> u32 {
    // Bodies over 4 GiB cannot be published (the publisher checks
    // max_body_len first), so this never saturates in practice.
    u32::try_from(body.len()).unwrap_or(u32::MAX)
}

impl Frame {
    /// The topic the frame is about.
    pub fn topic(&self) -> &Topic {
        match self {
            Frame::Data(d) => &d.topic,
            Frame::IHave { topic, .. }
            | Frame::Graft { topic, .. }
            | Frame::Prune { topic }
            | Frame::Subscribe { topic }
            | Frame::Unsubscribe { topic } => topic,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let topic = self.topic();
        let (kind, extra) = match self {
            Frame::Data(d) => match d.via {
                Via::Tree => (KIND_DATA, DATA_OVERHEAD + d.body.len()),
                Via::Shortcut => (KIND_SHORTCUT, DATA_OVERHEAD + d.body.len()),
                Via::Branch(_) => (KIND_BRANCH, DATA_OVERHEAD + 4 + d.body.len()),
            },
            Frame::IHave { ids, .. } => (KIND_IHAVE, 1 + 34 * ids.len()),
            Frame::Graft { ids, .. } => (KIND_GRAFT, 1 + 32 * ids.len()),
            Frame::Prune { .. } => (KIND_PRUNE, 0),
            Frame::Subscribe { .. } => (KIND_SUBSCRIBE, 0),
            Frame::Unsubscribe { .. } => (KIND_UNSUBSCRIBE, 0),
        };
        let mut b = BytesMut::with_capacity(3 + topic.as_str().len() + extra);
        b.put_u8(VERSION);
        b.put_u8(kind);
        b.put_u8(topic_len(topic));
        b.put_slice(topic.as_str().as_bytes());
        match self {
            Frame::Data(d) => {
                b.put_slice(&d.origin.0);
                b.put_u64(d.timestamp_ms);
                b.put_u64(d.nonce);
                b.put_u16(d.hops);
                b.put_u32(body_len(&d.body));
                b.put_slice(&d.body);
                b.put_slice(&d.signature);
                if let Via::Branch(branch) = d.via {
                    b.put_u32(branch);
                }
            }
            Frame::IHave { ids, .. } => {
                // Senders chunk to MAX_IDS_PER_FRAME.
                b.put_u8(u8::try_from(ids.len()).unwrap_or(u8::MAX));
                for (id, hops) in ids.iter().take(MAX_IDS_PER_FRAME) {
                    b.put_slice(&id.0);
                    b.put_u16(*hops);
                }
            }
            Frame::Graft { ids, .. } => {
                b.put_u8(u8::try_from(ids.len()).unwrap_or(u8::MAX));
                for id in ids.iter().take(MAX_IDS_PER_FRAME) {
                    b.put_slice(&id.0);
                }
            }
            Frame::Prune { .. } | Frame::Subscribe { .. } | Frame::Unsubscribe { .. } => {}
        }
        b.freeze()
    }

    /// Parse a frame from untrusted bytes: bodies over `max_body_len` and
    /// more than `max_ids` ids are refused before anything is copied.
    /// Never panics.
    pub fn decode(bytes: &Bytes, max_body_len: usize, max_ids: usize) -> Result<Frame, WireError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = r.u8()?;
        if kind > KIND_BRANCH {
            return Err(WireError::Kind(kind));
        }
        let topic_len = usize::from(r.u8()?);
        let topic = std::str::from_utf8(r.take(topic_len)?).map_err(|_| WireError::Topic)?;
        let topic = Topic::new(topic).map_err(|_| WireError::Topic)?;
        let frame = match kind {
            KIND_DATA | KIND_SHORTCUT | KIND_BRANCH => {
                let origin = Origin(r.array()?);
                let timestamp_ms = r.u64()?;
                let nonce = r.u64()?;
                let hops = u16::from_be_bytes(r.array()?);
                let len = usize::try_from(u32::from_be_bytes(r.array()?)).unwrap_or(usize::MAX);
                if len > max_body_len {
                    return Err(WireError::BodyTooLarge {
                        len,
                        max: max_body_len,
                    });
                }
                let start = r.at;
                r.take(len)?;
                let body = bytes.slice(start..start + len);
                let signature = r.array()?;
                let via = match kind {
                    KIND_SHORTCUT => Via::Shortcut,
                    KIND_BRANCH => Via::Branch(u32::from_be_bytes(r.array()?)),
                    _ => Via::Tree,
                };
                Frame::Data(Data {
                    topic,
                    origin,
                    timestamp_ms,
                    nonce,
                    hops,
                    body,
                    signature,
                    via,
                })
            }
            KIND_IHAVE => {
                let count = usize::from(r.u8()?);
                if count == 0 || count > max_ids {
                    return Err(WireError::IdCount(count));
                }
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = MessageId(r.array()?);
                    ids.push((id, u16::from_be_bytes(r.array()?)));
                }
                Frame::IHave { topic, ids }
            }
            KIND_GRAFT => {
                let count = usize::from(r.u8()?);
                if count > max_ids {
                    return Err(WireError::IdCount(count));
                }
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(MessageId(r.array()?));
                }
                Frame::Graft { topic, ids }
            }
            KIND_PRUNE => Frame::Prune { topic },
            KIND_SUBSCRIBE => Frame::Subscribe { topic },
            _ => Frame::Unsubscribe { topic },
        };
        match bytes.len() - r.at {
            0 => Ok(frame),
            n => Err(WireError::Trailing(n)),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic() -> Topic {
        Topic::new("news").unwrap()
    }

    fn data() -> Data {
        let key = GossipKey::from_bytes(&[1; 32]);
        Data::signed(
            &key,
            topic(),
            1_700_000_000_000,
            42,
            Bytes::from_static(b"hello"),
        )
    }

    #[test]
    fn every_frame_kind_round_trips() {
        let ids = vec![MessageId([3; 32]), MessageId([4; 32])];
        let frames = [
            Frame::Data(data()),
            Frame::Data(Data {
                via: Via::Shortcut,
                ..data()
            }),
            Frame::Data(Data {
                via: Via::Branch(0xdead_beef),
                ..data()
            }),
            Frame::IHave {
                topic: topic(),
                ids: vec![(ids[0], 1), (ids[1], 300)],
            },
            Frame::Graft {
                topic: topic(),
                ids,
            },
            Frame::Graft {
                topic: topic(),
                ids: vec![],
            },
            Frame::Prune { topic: topic() },
            Frame::Subscribe { topic: topic() },
            Frame::Unsubscribe { topic: topic() },
        ];
        for f in frames {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes, 1024, 64), Ok(f));
        }
    }

    #[test]
    fn a_data_frame_has_the_documented_layout() {
        let d = data();
        let bytes = Frame::Data(d.clone()).encode();
        assert_eq!(bytes.len(), DATA_OVERHEAD + 4 + 5);
        assert_eq!(&bytes[..7], b"\x01\x00\x04news");
        assert_eq!(&bytes[7..39], &d.origin.0);
        assert_eq!(&bytes[39..47], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[47..55], &42u64.to_be_bytes());
        assert_eq!(&bytes[55..57], &[0, 0]);
        assert_eq!(&bytes[57..61], &[0, 0, 0, 5]);
        assert_eq!(&bytes[61..66], b"hello");
        assert!(d.verifies(&d.id()));
        // A shortcut: kind 6, the same fields, the same id. A branch:
        // kind 7, the same fields and then the branch.
        let shortcut = Data {
            via: Via::Shortcut,
            ..d.clone()
        };
        let shortcut_bytes = Frame::Data(shortcut.clone()).encode();
        assert_eq!(shortcut_bytes[1], 6);
        assert_eq!(shortcut_bytes[2..], bytes[2..]);
        assert_eq!(shortcut.id(), d.id());
        let branch = Data {
            via: Via::Branch(0x0102_0304),
            ..d.clone()
        };
        let branch_bytes = Frame::Data(branch.clone()).encode();
        assert_eq!(branch_bytes[1], 7);
        assert_eq!(branch_bytes[2..bytes.len()], bytes[2..]);
        assert_eq!(branch_bytes[bytes.len()..], [1, 2, 3, 4]);
        assert_eq!(branch.id(), d.id());
    }

    #[test]
    fn any_changed_signed_byte_breaks_the_signature_but_hops_do_not() {
        let d = data();
        let bytes = Frame::Data(d).encode();
        for i in 3..bytes.len() {
            let mut evil = bytes.to_vec();
            evil[i] ^= 1;
            let Ok(Frame::Data(e)) = Frame::decode(&Bytes::from(evil), 1024, 64) else {
                continue; // a changed length or topic byte no longer parses
            };
            let ok = e.verifies(&e.id());
            assert_eq!(ok, (55..57).contains(&i), "byte {i}");
        }
    }

    #[test]
    fn oversized_bodies_and_id_lists_are_refused_before_copying() {
        let bytes = Frame::Data(data()).encode();
        assert_eq!(
            Frame::decode(&bytes, 4, 64),
            Err(WireError::BodyTooLarge { len: 5, max: 4 })
        );
        let ids = vec![(MessageId([0; 32]), 0); 10];
        let bytes = Frame::IHave {
            topic: topic(),
            ids,
        }
        .encode();
        assert!(Frame::decode(&bytes, 1024, 9).unwrap_err().is_oversized());
    }

    #[test]
    fn short_long_and_strange_frames_are_errors() {
        let bytes = Frame::Prune { topic: topic() }.encode();
        for n in 0..bytes.len() {
            assert!(Frame::decode(&bytes.slice(..n), 1024, 64).is_err());
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(
            Frame::decode(&Bytes::from(long), 1024, 64),
            Err(WireError::Trailing(1))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[2, 0]), 1024, 64),
            Err(WireError::Version(2))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[1, 9]), 1024, 64),
            Err(WireError::Kind(9))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[1, 3, 0]), 1024, 64),
            Err(WireError::Topic)
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[1, 3, 1, 0xff]), 1024, 64),
            Err(WireError::Topic)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let bytes = Bytes::from(bytes);
            if let Ok(frame) = Frame::decode(&bytes, 256, 8) {
                // What decodes re-encodes to the same bytes.
                prop_assert_eq!(frame.encode(), bytes);
            }
        }

        #[test]
        fn mutated_frames_never_panic_the_parser(pos in 0usize..200, val in any::<u8>(), cut in 0usize..200) {
            let mut bytes = Frame::Data(data()).encode().to_vec();
            if let Some(b) = bytes.get_mut(pos) { *b = val; }
            bytes.truncate(bytes.len().saturating_sub(cut % 8));
            let _ = Frame::decode(&Bytes::from(bytes), 256, 8);
        }
    }
}
