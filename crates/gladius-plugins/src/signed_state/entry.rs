//! The canonical message a field is signed over, signed entries and their
//! verification. The format is specified in the [module docs](super).

use bytes::Bytes;

use super::eth::{from_hex, recover_personal, to_hex, EthAddress, EthKey, EthSignature, KeyError};

/// First line of every canonical message: names the format and its version.
pub const CANONICAL_HEADER: &str = "gladius signed state v1";

/// Longest field name the format allows (a config may lower it).
pub const MAX_FIELD_LEN: usize = 255;

/// Whether `field` is a valid field name: 1..=[`MAX_FIELD_LEN`] bytes of
/// printable ASCII without spaces (`0x21..=0x7e`), so the canonical message
/// stays one unambiguous line per item.
pub fn is_valid_field(field: &str) -> bool {
    !field.is_empty()
        && field.len() <= MAX_FIELD_LEN
        && field.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The canonical message text for one field value: five lines joined by
/// `\n`, no trailing newline.
///
/// ```
/// use gladius_plugins::signed_state::canonical_message;
/// let signer = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".parse().unwrap();
/// assert_eq!(
///     canonical_message(&signer, "pool.fee", 1700000000000, b"hi"),
///     "gladius signed state v1\n\
///      signer: 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\n\
///      field: pool.fee\n\
///      timestamp: 1700000000000\n\
///      value: 0x6869"
/// );
/// ```
pub fn canonical_message(
    signer: &EthAddress,
    field: &str,
    timestamp_ms: u64,
    value: &[u8],
) -> String {
    format!(
        "{CANONICAL_HEADER}\nsigner: {}\nfield: {field}\ntimestamp: {timestamp_ms}\nvalue: 0x{}",
        signer.to_checksum(),
        to_hex(value)
    )
}

/// A canonical message taken apart (see [`CanonicalMessage::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalMessage {
    /// The signer's address.
    pub signer: EthAddress,
    /// The field name.
    pub field: String,
    /// Unix time in milliseconds.
    pub timestamp_ms: u64,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// Why a text is not a canonical message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical signed-state message: {0}")]
pub struct ParseError(&'static str);

impl CanonicalMessage {
    /// Parse the exact text [`canonical_message`] produces; anything else
    /// (other spacing, uppercase hex value, a non-checksummed address,
    /// extra lines, leading zeros in the timestamp) is refused, so a text
    /// parses only if rendering it back gives the same bytes.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text.split('\n');
        let mut line = |prefix: &'static str| -> Result<&str, ParseError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(prefix))
                .ok_or(ParseError(prefix))
        };
        if line("")? != CANONICAL_HEADER {
            return Err(ParseError("header"));
        }
        let signer: EthAddress = line("signer: ")?
            .parse()
            .map_err(|_| ParseError("signer"))?;
        let field = line("field: ")?.to_owned();
        let timestamp_ms: u64 = line("timestamp: ")?
            .parse()
            .map_err(|_| ParseError("timestamp"))?;
        let value = line("value: 0x")
            .ok()
            .and_then(from_hex)
            .ok_or(ParseError("value"))?;
        if lines.next().is_some() {
            return Err(ParseError("trailing lines"));
        }
        if !is_valid_field(&field) {
            return Err(ParseError("field"));
        }
        let parsed = Self {
            signer,
            field,
            timestamp_ms,
            value,
        };
        if parsed.render() != text {
            return Err(ParseError("not canonical"));
        }
        Ok(parsed)
    }

    /// The canonical text.
    pub fn render(&self) -> String {
        canonical_message(&self.signer, &self.field, self.timestamp_ms, &self.value)
    }
}

/// Why an entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The signature recovers no key (forged, corrupted, high `s`, bad `v`).
    #[error("the signature is invalid")]
    BadSignature,
    /// The signature is valid but by another address than the claimed signer.
    #[error("signed by {recovered}, not by the claimed signer {claimed}")]
    WrongSigner {
        /// Who the entry says signed it.
        claimed: EthAddress,
        /// Who did.
        recovered: EthAddress,
    },
}

/// One signed field value: what is stored, exchanged and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    /// The address that signed it.
    pub signer: EthAddress,
    /// The field name (see [`is_valid_field`]).
    pub field: String,
    /// The value bytes.
    pub value: Bytes,
    /// Unix time in milliseconds, set by the signer.
    pub timestamp_ms: u64,
    /// `personal_sign` over [`SignedEntry::message`].
    pub signature: EthSignature,
}

impl SignedEntry {
    /// Sign `value` for `field` at `timestamp_ms` with `key`.
    pub fn sign(
        key: &EthKey,
        field: &str,
        value: impl Into<Bytes>,
        timestamp_ms: u64,
    ) -> Result<Self, KeyError> {
        let value = value.into();
        let signer = key.address();
        let signature =
            key.sign_personal(canonical_message(&signer, field, timestamp_ms, &value).as_bytes())?;
        Ok(Self {
            signer,
            field: field.to_owned(),
            value,
            timestamp_ms,
            signature,
        })
    }

    /// The exact text that was signed.
    pub fn message(&self) -> String {
        canonical_message(&self.signer, &self.field, self.timestamp_ms, &self.value)
    }

    /// Check that the signature is valid and by [`SignedEntry::signer`].
    pub fn verify(&self) -> Result<(), EntryError> {
        let recovered = recover_personal(self.message().as_bytes(), &self.signature)
            .map_err(|_| EntryError::BadSignature)?;
        if recovered != self.signer {
            return Err(EntryError::WrongSigner {
                claimed: self.signer,
                recovered,
            });
        }
        Ok(())
    }

    /// The merge order: whether `self` replaces `other` for the same
    /// (signer, field). Newer timestamp wins; on equal timestamps the
    /// larger value (bytewise), then the larger signature (bytewise) wins,
    /// so every node picks the same entry whatever the arrival order.
    pub fn supersedes(&self, other: &SignedEntry) -> bool {
        (self.timestamp_ms, &self.value[..], &self.signature.0[..])
            > (other.timestamp_ms, &other.value[..], &other.signature.0[..])
    }

    /// A short fingerprint of this exact entry (the first 8 bytes of
    /// keccak-256 over the signature), used in digests to tell two entries
    /// with the same timestamp apart.
    pub fn tag(&self) -> [u8; 8] {
        let h = super::eth::keccak256(&self.signature.0);
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[..8]);
        t
    }

    /// The public view with the signed text and hex signature.
    pub fn record(&self) -> EntryRecord {
        EntryRecord {
            signer: self.signer,
            field: self.field.clone(),
            value: self.value.to_vec(),
            timestamp_ms: self.timestamp_ms,
            message: self.message(),
            signature: self.signature.to_hex(),
        }
    }
}

/// An entry as [`SignedStateHandle::entries`](super::SignedStateHandle::entries)
/// shows it: everything a third party needs to verify it
/// (`ecrecover(personal hash of message, signature) == signer`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRecord {
    /// The signer's address (serialized EIP-55).
    pub signer: EthAddress,
    /// The field name.
    pub field: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Unix time in milliseconds.
    pub timestamp_ms: u64,
    /// The exact canonical text that was signed.
    pub message: String,
    /// The 65-byte signature, `0x`-prefixed hex.
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tests and their helpers report failures as errors instead of panicking.
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    fn key() -> TestResult<EthKey> {
        Ok(EthKey::from_hex(
            "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        )?)
    }

    #[test]
    fn documented_example_text() -> TestResult {
        let e = SignedEntry::sign(&key()?, "pool.fee", &b"hi"[..], 1_700_000_000_000)?;
        assert_eq!(
            e.message(),
            "gladius signed state v1\nsigner: 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\nfield: pool.fee\ntimestamp: 1700000000000\nvalue: 0x6869"
        );
        e.verify()?;
        let rec = e.record();
        assert_eq!(rec.message, e.message());
        assert_eq!(rec.signature.len(), 132);
        // The record verifies from its text alone.
        let sig = EthSignature::from_hex(&rec.signature).ok_or("record signature is not hex")?;
        assert_eq!(recover_personal(rec.message.as_bytes(), &sig)?, rec.signer);
        let empty = canonical_message(&rec.signer, "f", 0, b"");
        assert!(empty.ends_with("\ntimestamp: 0\nvalue: 0x"));
        Ok(())
    }

    #[test]
    fn tampering_is_detected() -> TestResult {
        let e = SignedEntry::sign(&key()?, "f", &b"v"[..], 5)?;
        let mut t = e.clone();
        t.timestamp_ms = 6;
        assert!(t.verify().is_err());
        let mut t = e.clone();
        t.signer = EthAddress([1; 20]);
        assert!(matches!(t.verify(), Err(EntryError::WrongSigner { .. })));
        let mut t = e.clone();
        t.signature.0[10] ^= 1;
        assert!(t.verify().is_err());
        Ok(())
    }

    #[test]
    fn parse_refuses_near_misses() -> TestResult {
        let good = canonical_message(&key()?.address(), "a.b", 12, b"\x01");
        CanonicalMessage::parse(&good)?;
        for bad in [
            good.replace("v1", "v2"),
            good.replace(
                "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
                "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23",
            ),
            good.replace("timestamp: 12", "timestamp: 012"),
            good.replace("value: 0x01", "value: 0X01"),
            format!("{good}\n"),
            good.replace("field: a.b", "field: a b"),
            good.replace("signer: ", "signer:  "),
        ] {
            assert!(CanonicalMessage::parse(&bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn field_names() {
        assert!(is_valid_field("pool.fee"));
        assert!(is_valid_field(&"x".repeat(255)));
        assert!(!is_valid_field(&"x".repeat(256)));
        assert!(!is_valid_field(""));
        assert!(!is_valid_field("a b"));
        assert!(!is_valid_field("a\nsigner: 0x00"));
        assert!(!is_valid_field("é"));
    }

    proptest! {
        #[test]
        fn canonical_round_trip(
            signer in any::<[u8; 20]>(),
            field in "[!-~]{1,64}",
            ts in any::<u64>(),
            value in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let signer = EthAddress(signer);
            let text = canonical_message(&signer, &field, ts, &value);
            let parsed = CanonicalMessage::parse(&text)?;
            prop_assert_eq!(&parsed, &CanonicalMessage { signer, field, timestamp_ms: ts, value });
            prop_assert_eq!(parsed.render(), text);
        }

        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = CanonicalMessage::parse(&s);
        }
    }
}
