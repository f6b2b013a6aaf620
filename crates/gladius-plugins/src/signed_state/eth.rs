//! Ethereum primitives: keccak-256, addresses (EIP-55), secp256k1 keys,
//! EIP-191 `personal_sign` signatures and their recovery.
//!
//! Everything here is standard Ethereum, so the results check out in any
//! Ethereum library (ethers.js, web3.py, viem, go-ethereum).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

/// keccak-256 (the pre-standard Keccak Ethereum uses, not SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// Lowercase hex without a prefix.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Parse hex (either case, optional `0x`/`0X` prefix, no whitespace).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if s.len() % 2 != 0 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// The EIP-191 version `0x45` ("personal_sign") hash of `message`:
/// `keccak256("\x19Ethereum Signed Message:\n" + len(message) + message)`,
/// with `len` in decimal ASCII bytes.
pub fn personal_message_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// A 20-byte Ethereum address. Displays EIP-55 checksummed (`0x5aAe…`);
/// orders by its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthAddress(pub [u8; 20]);

impl EthAddress {
    /// The address of a public key: the last 20 bytes of keccak-256 over the
    /// 64-byte uncompressed point (without the `0x04` prefix).
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&hash[12..]);
        Self(a)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// EIP-55 mixed-case checksummed hex with `0x`.
    pub fn to_checksum(&self) -> String {
        let lower = to_hex(&self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthAddress({})", self.to_checksum())
    }
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `0x` followed by 40 hex digits.
    #[error("an address is 0x followed by 40 hex digits")]
    Format,
    /// Mixed case that is not the EIP-55 checksum (a likely typo).
    #[error("the address's mixed case does not match its EIP-55 checksum")]
    Checksum,
}

impl FromStr for EthAddress {
    type Err = AddressError;
    /// Accepts `0x` + 40 hex digits; all-lowercase or all-uppercase is taken
    /// as is, mixed case must be the EIP-55 checksum.
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let hex = s.strip_prefix("0x").ok_or(AddressError::Format)?;
        if hex.len() != 40 {
            return Err(AddressError::Format);
        }
        let bytes = from_hex(hex).ok_or(AddressError::Format)?;
        let mut a = [0u8; 20];
        a.copy_from_slice(&bytes);
        let addr = Self(a);
        let has_lower = hex.bytes().any(|c| c.is_ascii_lowercase());
        let has_upper = hex.bytes().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper && addr.to_checksum() != s {
            return Err(AddressError::Checksum);
        }
        Ok(addr)
    }
}

impl serde::Serialize for EthAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_checksum())
    }
}

/// A 65-byte Ethereum signature `r || s || v` with `v` = 27 or 28 and a
/// low `s` (EIP-2), as `personal_sign` returns it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthSignature(pub [u8; 65]);

impl EthSignature {
    /// `0x` + 130 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        format!("0x{}", to_hex(&self.0))
    }
    /// Parse `0x` + 130 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = from_hex(s)?;
        let arr: [u8; 65] = b.try_into().ok()?;
        Some(Self(arr))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }
}

impl fmt::Display for EthSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EthSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthSignature({})", self.to_hex())
    }
}

/// Why a signature did not yield an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    /// `v` is not 27, 28 (or the raw 0, 1).
    #[error("signature v must be 27 or 28")]
    BadV,
    /// `r`/`s` out of range, `s` high (malleable), or no key recovers.
    #[error("signature does not recover a public key")]
    Invalid,
}

/// The address that signed `prehash` (a 32-byte hash), like Solidity's
/// `ecrecover`, except that high-`s` signatures are refused (EIP-2).
pub fn recover_prehash(prehash: &[u8; 32], sig: &EthSignature) -> Result<EthAddress, RecoverError> {
    let v = match sig.0[64] {
        27 | 0 => 0,
        28 | 1 => 1,
        _ => return Err(RecoverError::BadV),
    };
    let signature = Signature::from_slice(&sig.0[..64]).map_err(|_| RecoverError::Invalid)?;
    if signature.normalize_s().is_some() {
        return Err(RecoverError::Invalid);
    }
    let recid = RecoveryId::from_byte(v).ok_or(RecoverError::BadV)?;
    let key = VerifyingKey::recover_from_prehash(prehash, &signature, recid)
        .map_err(|_| RecoverError::Invalid)?;
    Ok(EthAddress::from_verifying_key(&key))
}

/// The address that `personal_sign`ed `message` with `sig`: what ethers.js
/// `verifyMessage(message, sig)` returns.
pub fn recover_personal(message: &[u8], sig: &EthSignature) -> Result<EthAddress, RecoverError> {
    recover_prehash(&personal_message_hash(message), sig)
}

/// Why a key could not be loaded, parsed, generated or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not 64 hex digits (optionally `0x`-prefixed).
    #[error("{what}: a private key is 64 hex digits, optionally prefixed with 0x")]
    Format {
        /// Where the text came from.
        what: String,
    },
    /// The number is zero or not below the curve order.
    #[error("{what}: not a valid secp256k1 private key (zero or >= the curve order)")]
    OutOfRange {
        /// Where the text came from.
        what: String,
    },
    /// Signing failed (practically impossible: the nonce's x overflowed).
    #[error("signing failed")]
    Sign,
}

/// A secp256k1 private key with its Ethereum address. `Debug` shows only the
/// address, never the secret.
#[derive(Clone)]
pub struct EthKey {
    key: SigningKey,
    address: EthAddress,
}

impl fmt::Debug for EthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EthKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let address = EthAddress::from_verifying_key(key.verifying_key());
        Self { key, address }
    }

    /// From the 32 big-endian bytes of the secret scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        SigningKey::from_slice(bytes)
            .map(Self::from_signing_key)
            .map_err(|_| KeyError::OutOfRange {
                what: "private key".into(),
            })
    }

    /// From 64 hex digits, optionally `0x`-prefixed; surrounding whitespace
    /// (a trailing newline in a file) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Self::parse(text, "private key")
    }

    fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let format = || KeyError::Format { what: what.into() };
        let t = text.trim();
        let digits = t.strip_prefix("0x").unwrap_or(t);
        if digits.len() != 64 {
            return Err(format());
        }
        let bytes: [u8; 32] = from_hex(digits)
            .ok_or_else(format)?
            .try_into()
            .map_err(|_| format())?;
        SigningKey::from_slice(&bytes)
            .map(Self::from_signing_key)
            .map_err(|_| KeyError::OutOfRange { what: what.into() })
    }

    /// The secret as `0x` + 64 lowercase hex digits (the key file format).
    /// Handle with care.
    pub fn secret_hex(&self) -> String {
        format!("0x{}", to_hex(&self.key.to_bytes()))
    }

    /// Load a key file holding 64 hex digits (optionally `0x`-prefixed,
    /// surrounding whitespace ignored). Warns if others may read it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let text = crate::keyfile::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Write the key to a new file (mode 0600 on Unix), refusing to
    /// overwrite an existing one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        crate::keyfile::create(path, &self.secret_hex()).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Load the key at `path`, or generate one and save it there (0600)
    /// if the file does not exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The key's Ethereum address.
    pub fn address(&self) -> EthAddress {
        self.address
    }

    /// Sign a 32-byte hash (RFC 6979 deterministic nonce, low `s`,
    /// `v` = 27 + parity).
    pub fn sign_prehash(&self, prehash: &[u8; 32]) -> Result<EthSignature, KeyError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(prehash)
            .map_err(|_| KeyError::Sign)?;
        if recid.is_x_reduced() {
            // v = 27/28 cannot express it; probability ~2^-127.
            return Err(KeyError::Sign);
        }
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + u8::from(recid.is_y_odd());
        Ok(EthSignature(out))
    }

    /// EIP-191 `personal_sign` of `message` (what `eth_sign`/`personal_sign`
    /// in a wallet, ethers.js `signMessage` or web3.py `sign_message` do).
    pub fn sign_personal(&self, message: &[u8]) -> Result<EthSignature, KeyError> {
        self.sign_prehash(&personal_message_hash(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests and their helpers report failures as errors instead of panicking.
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    const KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    #[test]
    fn web3js_personal_sign_vector() -> TestResult {
        let key = EthKey::from_hex(KEY)?;
        assert_eq!(
            key.address().to_checksum(),
            "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
        );
        let hash = personal_message_hash(b"Some data");
        assert_eq!(
            to_hex(&hash),
            "1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"
        );
        let sig = key.sign_personal(b"Some data")?;
        assert_eq!(
            sig.to_hex(),
            "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c"
        );
        // And back: recovery of the quoted signature gives the address.
        assert_eq!(recover_personal(b"Some data", &sig)?, key.address());
        assert_eq!(recover_prehash(&hash, &sig)?, key.address());
        // Flipping v recovers someone else; another message, someone else.
        let mut other = sig;
        other.0[64] = 55 - other.0[64];
        assert_ne!(
            recover_personal(b"Some data", &other).ok(),
            Some(key.address())
        );
        assert_ne!(
            recover_personal(b"Some datb", &sig).ok(),
            Some(key.address())
        );
        Ok(())
    }

    #[test]
    fn keccak_of_empty_input() {
        assert_eq!(
            to_hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn eip55_vectors() -> TestResult {
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a: EthAddress = s.parse()?;
            assert_eq!(a.to_checksum(), s);
            assert_eq!(s.to_lowercase().parse::<EthAddress>()?, a);
        }
        assert_eq!(
            "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse::<EthAddress>(),
            Err(AddressError::Checksum)
        );
        assert_eq!("5aAeb6".parse::<EthAddress>(), Err(AddressError::Format));
        Ok(())
    }

    #[test]
    fn high_s_and_bad_v_are_refused() -> TestResult {
        let key = EthKey::from_hex(KEY)?;
        let sig = key.sign_personal(b"x")?;
        let mut bad_v = sig;
        bad_v.0[64] = 29;
        assert_eq!(recover_personal(b"x", &bad_v), Err(RecoverError::BadV));
        // s' = n - s with flipped parity is the malleable twin.
        let s = k256::ecdsa::Signature::from_slice(&sig.0[..64])?;
        let (r, s_low) = (s.r(), s.s());
        let high = k256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s_low).to_bytes())?;
        let mut twin = [0u8; 65];
        twin[..64].copy_from_slice(&high.to_bytes());
        twin[64] = 55 - sig.0[64];
        assert_eq!(
            recover_personal(b"x", &EthSignature(twin)),
            Err(RecoverError::Invalid)
        );
        Ok(())
    }

    #[test]
    fn key_files() -> TestResult {
        let dir = std::env::temp_dir().join(format!("gladius-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let k1 = EthKey::load_or_generate(&path)?;
        let k2 = EthKey::load_or_generate(&path)?;
        assert_eq!(k1.address(), k2.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(k1.save(&path), Err(KeyError::Io { .. })));
        std::fs::write(&path, "nothex\n")?;
        let e = EthKey::load(&path).unwrap_err();
        assert!(matches!(e, KeyError::Format { .. }), "{e}");
        assert!(e.to_string().contains("node.key"));
        std::fs::write(&path, format!("{}\n", "0".repeat(64)))?;
        assert!(matches!(
            EthKey::load(&path),
            Err(KeyError::OutOfRange { .. })
        ));
        assert!(matches!(
            EthKey::load(dir.join("missing")),
            Err(KeyError::Io { .. })
        ));
        assert!(!format!("{k1:?}").contains(&k1.secret_hex()[2..]));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
