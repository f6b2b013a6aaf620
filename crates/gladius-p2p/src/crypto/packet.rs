//! The datagrams of encrypted mode: layouts, zero-copy parsing and encoding.
//!
//! Every encrypted-mode datagram starts with a 4-byte header: a type byte in
//! `0xE1..=0xE7` and three zero bytes. The rest depends on the type (all
//! integers little-endian, `|` separates fields):
//!
//! | type | name | after the header |
//! | --- | --- | --- |
//! | `0xE1` | `Init` | `sender_index u32 \| noise message 1 (32) \| cookie (16)` |
//! | `0xE2` | `Response` | `sender_index u32 \| receiver_index u32 \| noise message 2 (rest)` |
//! | `0xE3` | `Finish` | `receiver_index u32 \| noise message 3 (rest)` |
//! | `0xE4` | `Data` | `receiver_index u32 \| counter u64 \| ciphertext and tag (rest)` |
//! | `0xE5` | `Cookie` | `receiver_index u32 \| cookie (16)` |
//! | `0xE6` | `Reject` | `reason u8` |
//! | `0xE7` | `Init` (AES-GCM) | as `0xE1`; the handshake is [`Cipher::AesGcm`]'s |
//!
//! # Telling plaintext from encrypted
//!
//! A plaintext (KCP) datagram has its first segment's `cmd` at byte 4, always
//! one of 81..=84. In every encrypted-mode datagram byte 4 is the low byte of
//! an index (or a reject reason 1..=3), and **indices whose low byte is
//! 81..=84 are reserved**: nodes never pick them ([`is_valid_index`]) and
//! [`parse`] rejects packets carrying them. So byte 4 alone decides: 81..=84
//! is plaintext, anything else with an encrypted header is encrypted, and
//! [`classify`] never confuses the two, not even for a KCP conversation id of
//! `0xE1..=0xE7`.
//!
//! Lengths are exact: message 1 of `XX` carries no payload and is exactly
//! 32 bytes; messages 2 and 3 carry a [`HandshakePayload`] whose length
//! bounds the message (see [`RESPONSE_NOISE_MIN`] and friends); a `Data`
//! ciphertext is at least the 16-byte tag.
//!
//! [`HandshakePayload`]: super::HandshakePayload

use bytes::{BufMut as _, Bytes, BytesMut};

use super::cipher::Cipher;
use super::cookie::COOKIE_LEN;
use super::handshake::{MAX_PAYLOAD_LEN, MIN_PAYLOAD_LEN};

/// Length of the common header (type byte and three zero bytes).
pub const HEADER_LEN: usize = 4;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of an X25519 public key inside a noise message.
const DH_LEN: usize = 32;
/// Length of noise message 1 of `XX` (`e`, no payload).
pub const INIT_NOISE_LEN: usize = DH_LEN;
/// Fixed part of noise message 2 (`e`, encrypted `s`, payload tag).
const RESPONSE_NOISE_OVERHEAD: usize = DH_LEN + DH_LEN + TAG_LEN + TAG_LEN;
/// Fixed part of noise message 3 (encrypted `s`, payload tag).
const FINISH_NOISE_OVERHEAD: usize = DH_LEN + TAG_LEN + TAG_LEN;
/// Shortest noise message 2 (smallest payload).
pub const RESPONSE_NOISE_MIN: usize = RESPONSE_NOISE_OVERHEAD + MIN_PAYLOAD_LEN;
/// Longest noise message 2 (largest payload).
pub const RESPONSE_NOISE_MAX: usize = RESPONSE_NOISE_OVERHEAD + MAX_PAYLOAD_LEN;
/// Shortest noise message 3.
pub const FINISH_NOISE_MIN: usize = FINISH_NOISE_OVERHEAD + MIN_PAYLOAD_LEN;
/// Longest noise message 3.
pub const FINISH_NOISE_MAX: usize = FINISH_NOISE_OVERHEAD + MAX_PAYLOAD_LEN;
/// Length of an `Init` datagram.
pub const INIT_LEN: usize = HEADER_LEN + 4 + INIT_NOISE_LEN + COOKIE_LEN;
/// Length of a `Cookie` datagram.
pub const COOKIE_PACKET_LEN: usize = HEADER_LEN + 4 + COOKIE_LEN;
/// Length of a `Reject` datagram.
pub const REJECT_LEN: usize = HEADER_LEN + 1;
/// Bytes a `Data` datagram adds to the KCP datagram it seals.
pub const DATA_OVERHEAD: usize = HEADER_LEN + 4 + 8 + TAG_LEN;
/// Longest `Data` ciphertext (a Noise message is at most 65535 bytes).
pub const DATA_CIPHERTEXT_MAX: usize = 65_535;

/// The type byte of an encrypted-mode datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Noise message 1, from the initiator.
    Init = 0xE1,
    /// Noise message 2, from the responder.
    Response = 0xE2,
    /// Noise message 3, from the initiator.
    Finish = 0xE3,
    /// A sealed KCP datagram.
    Data = 0xE4,
    /// A loaded responder's cookie, instead of a `Response`.
    Cookie = 0xE5,
    /// A refusal, in the clear.
    Reject = 0xE6,
    /// Noise message 1 of the AES-GCM suite ([`Cipher::AesGcm`]), from the
    /// initiator; parsed into an [`InitPacket`] like `Init`.
    InitAesGcm = 0xE7,
}

impl PacketType {
    /// The type of a type byte.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0xE1 => Self::Init,
            0xE2 => Self::Response,
            0xE3 => Self::Finish,
            0xE4 => Self::Data,
            0xE5 => Self::Cookie,
            0xE6 => Self::Reject,
            0xE7 => Self::InitAesGcm,
            _ => return None,
        })
    }
}

/// What a datagram looks like, from its first five bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Byte 4 is a KCP command (81..=84): a plaintext KCP datagram (not yet
    /// validated beyond that).
    Plaintext,
    /// An encrypted-mode header of this type (not yet validated beyond
    /// that; [`parse`] does).
    Encrypted(PacketType),
    /// Neither.
    Garbage,
}

/// Whether an index may be used: its low byte (byte 4 of the packets that
/// lead with it) must not be a KCP command (81..=84).
pub const fn is_valid_index(index: u32) -> bool {
    !matches!(index.to_le_bytes()[0], 81..=84)
}

/// A uniformly random valid index.
pub fn random_index() -> u32 {
    index_from(&mut rand::thread_rng())
}

/// A uniformly random valid index drawn from `rng`.
pub fn index_from(rng: &mut impl rand::Rng) -> u32 {
    loop {
        let index = rng.gen::<u32>();
        if is_valid_index(index) {
            return index;
        }
    }
}

/// Tell plaintext KCP from encrypted-mode datagrams (see the module docs).
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram {
        [_, _, _, _, 81..=84, ..] => Kind::Plaintext,
        [t, 0, 0, 0, ..] => match PacketType::from_byte(*t) {
            Some(t) => Kind::Encrypted(t),
            None => Kind::Garbage,
        },
        _ => Kind::Garbage,
    }
}

/// Why a datagram is not a valid encrypted-mode packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Shorter than the 4-byte header, or the header is not a type byte in
    /// `0xE1..=0xE7` followed by three zero bytes.
    #[error("not an encrypted-mode header")]
    BadHeader,
    /// The length does not fit the type.
    #[error("{kind:?} packet of {len} bytes has the wrong length")]
    BadLength {
        /// The packet's type.
        kind: PacketType,
        /// Its length.
        len: usize,
    },
    /// An index whose low byte is a KCP command.
    #[error("reserved index {0:#010x}")]
    ReservedIndex(u32),
    /// A reject reason that is not 1, 2 or 3.
    #[error("unknown reject reason {0}")]
    BadReason(u8),
}

/// Why a node refused us (the `Reject` packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum RejectReason {
    /// This node requires encryption (sent to a plaintext hello).
    RequiresEncryption = 1,
    /// This node is plaintext only (sent to an `Init`).
    PlaintextOnly = 2,
    /// The handshake was refused: pinned key mismatch or policy.
    Refused = 3,
}

impl RejectReason {
    /// The reason of a reason byte.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::RequiresEncryption,
            2 => Self::PlaintextOnly,
            3 => Self::Refused,
            _ => return None,
        })
    }
}

/// An `Init` packet (noise message 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitPacket<'a> {
    /// The initiator's index: the responder sends to it.
    pub sender_index: u32,
    /// Noise message 1 (exactly 32 bytes: the initiator's ephemeral key).
    pub noise: &'a [u8],
    /// A cookie from a `Cookie` packet, or all zeros.
    pub cookie: [u8; COOKIE_LEN],
    /// The suite of the handshake, told by the type byte (`0xE1`:
    /// [`Cipher::ChaChaPoly`], `0xE7`: [`Cipher::AesGcm`]).
    pub cipher: Cipher,
}

/// A `Response` packet (noise message 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePacket<'a> {
    /// The responder's index.
    pub sender_index: u32,
    /// The initiator's index, from its `Init`.
    pub receiver_index: u32,
    /// Noise message 2.
    pub noise: &'a [u8],
}

/// A `Finish` packet (noise message 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishPacket<'a> {
    /// The responder's index, from its `Response`.
    pub receiver_index: u32,
    /// Noise message 3.
    pub noise: &'a [u8],
}

/// A `Data` packet: one sealed KCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPacket<'a> {
    /// The receiver's index.
    pub receiver_index: u32,
    /// The nonce counter.
    pub counter: u64,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: &'a [u8],
}

/// A `Cookie` packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePacket {
    /// The initiator's index, from its `Init`.
    pub receiver_index: u32,
    /// The cookie to put into the re-sent `Init`.
    pub cookie: [u8; COOKIE_LEN],
}

/// A `Reject` packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectPacket {
    /// Why.
    pub reason: RejectReason,
}

/// A parsed encrypted-mode datagram, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// See [`InitPacket`].
    Init(InitPacket<'a>),
    /// See [`ResponsePacket`].
    Response(ResponsePacket<'a>),
    /// See [`FinishPacket`].
    Finish(FinishPacket<'a>),
    /// See [`DataPacket`].
    Data(DataPacket<'a>),
    /// See [`CookiePacket`].
    Cookie(CookiePacket),
    /// See [`RejectPacket`].
    Reject(RejectPacket),
}

/// A forward-only reader that never panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn index(&mut self) -> Result<u32, PacketError> {
        let index = u32::from_le_bytes(self.take::<4>().ok_or(PacketError::BadHeader)?);
        if is_valid_index(index) {
            Ok(index)
        } else {
            Err(PacketError::ReservedIndex(index))
        }
    }
}

/// Parse an encrypted-mode datagram, checking its header, its exact length
/// and its indices; the noise messages and ciphertexts are not touched.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    let Some(([t, 0, 0, 0], body)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(PacketError::BadHeader);
    };
    let kind = PacketType::from_byte(*t).ok_or(PacketError::BadHeader)?;
    let len = datagram.len();
    let bad_len = PacketError::BadLength { kind, len };
    let len_ok = match kind {
        PacketType::Init | PacketType::InitAesGcm => len == INIT_LEN,
        PacketType::Response => (HEADER_LEN + 8 + RESPONSE_NOISE_MIN
            ..=HEADER_LEN + 8 + RESPONSE_NOISE_MAX)
            .contains(&len),
        PacketType::Finish => {
            (HEADER_LEN + 4 + FINISH_NOISE_MIN..=HEADER_LEN + 4 + FINISH_NOISE_MAX).contains(&len)
        }
        PacketType::Data => (DATA_OVERHEAD..=HEADER_LEN + 12 + DATA_CIPHERTEXT_MAX).contains(&len),
        PacketType::Cookie => len == COOKIE_PACKET_LEN,
        PacketType::Reject => len == REJECT_LEN,
    };
    if !len_ok {
        return Err(bad_len);
    }
    let mut r = Reader(body);
    Ok(match kind {
        PacketType::Init | PacketType::InitAesGcm => {
            let sender_index = r.index()?;
            let noise = r.bytes(INIT_NOISE_LEN).ok_or(bad_len.clone())?;
            let cookie = r.take::<COOKIE_LEN>().ok_or(bad_len)?;
            Packet::Init(InitPacket {
                sender_index,
                noise,
                cookie,
                cipher: match kind {
                    PacketType::InitAesGcm => Cipher::AesGcm,
                    _ => Cipher::ChaChaPoly,
                },
            })
        }
        PacketType::Response => Packet::Response(ResponsePacket {
            sender_index: r.index()?,
            receiver_index: r.index()?,
            noise: r.0,
        }),
        PacketType::Finish => Packet::Finish(FinishPacket {
            receiver_index: r.index()?,
            noise: r.0,
        }),
        PacketType::Data => {
            let receiver_index = r.index()?;
            let counter = u64::from_le_bytes(r.take::<8>().ok_or(bad_len)?);
            Packet::Data(DataPacket {
                receiver_index,
                counter,
                ciphertext: r.0,
            })
        }
        PacketType::Cookie => Packet::Cookie(CookiePacket {
            receiver_index: r.index()?,
            cookie: r.take::<COOKIE_LEN>().ok_or(bad_len)?,
        }),
        PacketType::Reject => {
            let [b] = r.take::<1>().ok_or(bad_len)?;
            Packet::Reject(RejectPacket {
                reason: RejectReason::from_byte(b).ok_or(PacketError::BadReason(b))?,
            })
        }
    })
}

fn header(out: &mut BytesMut, kind: PacketType) {
    out.put_slice(&[kind as u8, 0, 0, 0]);
}

impl InitPacket<'_> {
    /// The datagram.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(INIT_LEN);
        header(
            &mut out,
            match self.cipher {
                Cipher::ChaChaPoly => PacketType::Init,
                Cipher::AesGcm => PacketType::InitAesGcm,
            },
        );
        out.put_u32_le(self.sender_index);
        out.put_slice(self.noise);
        out.put_slice(&self.cookie);
        out.freeze()
    }
}

impl ResponsePacket<'_> {
    /// The datagram.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + 8 + self.noise.len());
        header(&mut out, PacketType::Response);
        out.put_u32_le(self.sender_index);
        out.put_u32_le(self.receiver_index);
        out.put_slice(self.noise);
        out.freeze()
    }
}

impl FinishPacket<'_> {
    /// The datagram.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + 4 + self.noise.len());
        header(&mut out, PacketType::Finish);
        out.put_u32_le(self.receiver_index);
        out.put_slice(self.noise);
        out.freeze()
    }
}

impl DataPacket<'_> {
    /// Append the datagram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[PacketType::Data as u8, 0, 0, 0]);
        out.extend_from_slice(&self.receiver_index.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(self.ciphertext);
    }
}

impl CookiePacket {
    /// The datagram.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(COOKIE_PACKET_LEN);
        header(&mut out, PacketType::Cookie);
        out.put_u32_le(self.receiver_index);
        out.put_slice(&self.cookie);
        out.freeze()
    }
}

impl RejectPacket {
    /// The datagram.
    pub fn encode(&self) -> Bytes {
        Bytes::copy_from_slice(&[PacketType::Reject as u8, 0, 0, 0, self.reason as u8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classify_plaintext_and_encrypted() {
        // A KCP PUSH header whose conv looks like an encrypted header.
        let mut kcp = vec![0xE4, 0, 0, 0, 81, 0, 0, 1];
        kcp.resize(24, 0);
        assert_eq!(classify(&kcp), Kind::Plaintext);
        for cmd in 81..=84 {
            kcp[4] = cmd;
            assert_eq!(classify(&kcp), Kind::Plaintext);
        }
        let reject = RejectPacket {
            reason: RejectReason::Refused,
        }
        .encode();
        assert_eq!(classify(&reject), Kind::Encrypted(PacketType::Reject));
        assert_eq!(
            classify(&[0xE4, 0, 0, 0]),
            Kind::Encrypted(PacketType::Data)
        );
        assert_eq!(classify(&[0xE8, 0, 0, 0, 0]), Kind::Garbage);
        assert_eq!(classify(&[0xE1, 0, 1, 0, 0]), Kind::Garbage);
        assert_eq!(classify(&[]), Kind::Garbage);
        assert_eq!(classify(&[0xE1]), Kind::Garbage);
    }

    #[test]
    fn indices() {
        for low in 0..=255u8 {
            let index = u32::from_le_bytes([low, 1, 2, 3]);
            assert_eq!(is_valid_index(index), !(81..=84).contains(&low));
        }
        for _ in 0..1000 {
            assert!(is_valid_index(random_index()));
        }
    }

    #[test]
    fn fixed_length_round_trips() {
        let noise = [9u8; INIT_NOISE_LEN];
        let init = InitPacket {
            sender_index: 0x0102_0300,
            noise: &noise,
            cookie: [7; COOKIE_LEN],
            cipher: Cipher::ChaChaPoly,
        };
        let bytes = init.encode();
        assert_eq!(bytes.len(), INIT_LEN);
        assert_eq!(parse(&bytes), Ok(Packet::Init(init)));
        assert!(matches!(
            parse(&bytes[..INIT_LEN - 1]),
            Err(PacketError::BadLength { .. })
        ));
        // The AES-GCM suite's `Init`: same layout, type 0xE7.
        let aes = InitPacket {
            cipher: Cipher::AesGcm,
            ..init
        };
        let aes_bytes = aes.encode();
        assert_eq!(aes_bytes.first(), Some(&0xE7));
        assert_eq!(aes_bytes.get(1..), bytes.get(1..));
        assert_eq!(parse(&aes_bytes), Ok(Packet::Init(aes)));
        assert_eq!(
            classify(&aes_bytes),
            Kind::Encrypted(PacketType::InitAesGcm)
        );

        let cookie = CookiePacket {
            receiver_index: 5,
            cookie: [1; COOKIE_LEN],
        };
        assert_eq!(parse(&cookie.encode()), Ok(Packet::Cookie(cookie)));

        for reason in [
            RejectReason::RequiresEncryption,
            RejectReason::PlaintextOnly,
            RejectReason::Refused,
        ] {
            let r = RejectPacket { reason };
            assert_eq!(parse(&r.encode()), Ok(Packet::Reject(r)));
        }
        assert_eq!(parse(&[0xE6, 0, 0, 0, 4]), Err(PacketError::BadReason(4)));
        assert_eq!(parse(&[0xE6, 0, 0, 1, 1]), Err(PacketError::BadHeader));
    }

    #[test]
    fn variable_length_bounds() {
        let min = vec![0u8; RESPONSE_NOISE_MIN];
        let r = ResponsePacket {
            sender_index: 1,
            receiver_index: 2,
            noise: &min,
        };
        assert_eq!(parse(&r.encode()), Ok(Packet::Response(r)));
        assert!(parse(&r.encode()[..HEADER_LEN + 8 + RESPONSE_NOISE_MIN - 1]).is_err());
        let max = vec![0u8; RESPONSE_NOISE_MAX + 1];
        let r = ResponsePacket { noise: &max, ..r };
        assert!(matches!(
            parse(&r.encode()),
            Err(PacketError::BadLength { .. })
        ));

        let f = FinishPacket {
            receiver_index: 3,
            noise: &max[..FINISH_NOISE_MAX],
        };
        assert_eq!(parse(&f.encode()), Ok(Packet::Finish(f)));
        let f = FinishPacket {
            noise: &max[..FINISH_NOISE_MIN - 1],
            ..f
        };
        assert!(parse(&f.encode()).is_err());

        let d = DataPacket {
            receiver_index: 4,
            counter: u64::MAX,
            ciphertext: &max[..TAG_LEN],
        };
        let mut out = Vec::new();
        d.encode_into(&mut out);
        assert_eq!(out.len(), DATA_OVERHEAD);
        assert_eq!(parse(&out), Ok(Packet::Data(d)));
        assert!(parse(&out[..DATA_OVERHEAD - 1]).is_err());
    }

    #[test]
    fn reserved_indices_rejected() {
        let c = CookiePacket {
            receiver_index: 0x0000_0052,
            cookie: [0; COOKIE_LEN],
        };
        assert_eq!(parse(&c.encode()), Err(PacketError::ReservedIndex(0x52)));
        let noise = vec![0u8; RESPONSE_NOISE_MIN];
        let r = ResponsePacket {
            sender_index: 1,
            receiver_index: 0x1234_5654,
            noise: &noise,
        };
        assert_eq!(
            parse(&r.encode()),
            Err(PacketError::ReservedIndex(0x1234_5654))
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = parse(&bytes);
            let _ = classify(&bytes);
        }

        #[test]
        fn parse_never_panics_on_headers(t in 0xE1u8..=0xE7, rest in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let mut bytes = vec![t, 0, 0, 0];
            bytes.extend_from_slice(&rest);
            if let Ok(p) = parse(&bytes) {
                // Whatever parses re-encodes to the same bytes.
                let again: Vec<u8> = match p {
                    Packet::Init(p) => p.encode().to_vec(),
                    Packet::Response(p) => p.encode().to_vec(),
                    Packet::Finish(p) => p.encode().to_vec(),
                    Packet::Data(p) => { let mut v = Vec::new(); p.encode_into(&mut v); v }
                    Packet::Cookie(p) => p.encode().to_vec(),
                    Packet::Reject(p) => p.encode().to_vec(),
                };
                prop_assert_eq!(again, bytes.clone());
                prop_assert_eq!(classify(&bytes), Kind::Encrypted(PacketType::from_byte(t).unwrap()));
            }
        }
    }
}
