//! Origin keys: every gossip message is signed by the Ed25519 key of the
//! node that published it, and every hop verifies the signature before
//! delivering or forwarding (see the module docs of [`super`] for why
//! Ed25519 rather than the node's secp256k1 key).

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;

use crate::signed_state::{from_hex, to_hex};

/// A node's gossip signing key (Ed25519). Its public half, the
/// [`Origin`], names the node as the author of what it publishes.
#[derive(Clone)]
pub struct GossipKey {
    key: SigningKey,
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("GossipKey")
            .field("origin", &self.origin())
            .finish_non_exhaustive()
    }
}

/// Why a gossip key could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipKeyError {
    /// Reading or writing the key file failed.
    #[error("gossip key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not 64 hex digits.
    #[error("gossip key file {path}: an Ed25519 secret is 64 hex digits")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

impl GossipKey {
    /// A fresh key from `rng` (a seeded one in simulations).
    pub fn generate_with(rng: &mut impl RngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self::from_bytes(&secret)
    }

    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rngs::OsRng)
    }

    /// The key with this 32-byte secret (RFC 8032 seed).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The public key that names this node as an origin.
    pub fn origin(&self) -> Origin {
        Origin(self.key.verifying_key().to_bytes())
    }

    /// Sign a message id.
    pub(crate) fn sign(&self, id: &MessageId) -> [u8; 64] {
        self.key.sign(&id.0).to_bytes()
    }

    /// Load a key file (64 hex digits, whitespace ignored), or generate a
    /// key and save it there (mode 0600) if the file does not exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, GossipKeyError> {
        let path = path.as_ref();
        let io = |source| GossipKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match crate::keyfile::read(path) {
            Ok(text) => {
                let secret: [u8; 32] = from_hex(text.trim())
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| GossipKeyError::Format {
                        path: path.to_owned(),
                    })?;
                Ok(Self::from_bytes(&secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                crate::keyfile::create(path, &to_hex(&key.key.to_bytes())).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// The public Ed25519 key of a message's origin (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(pub [u8; 32]);

impl Origin {
    /// Whether `sig` is this origin's signature of `id`. Strict RFC 8032
    /// verification: small-order keys and non-canonical signatures fail,
    /// so a message has exactly one valid signature per key.
    pub fn verifies(&self, id: &MessageId, sig: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(&id.0, &Signature::from_bytes(sig))
            .is_ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

/// A message's id: SHA-256 of everything its origin signed (see
/// [`super::wire`]), so the id names the content and a changed byte is a
/// different (and unsigned) message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes tell ids apart in logs.
        write!(f, "MessageId({}…)", to_hex(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_signature_verifies_only_for_its_id_and_origin() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = GossipKey::generate_with(&mut rng);
        let b = GossipKey::generate_with(&mut rng);
        let id = MessageId([7; 32]);
        let sig = a.sign(&id);
        assert!(a.origin().verifies(&id, &sig));
        assert!(!b.origin().verifies(&id, &sig));
        assert!(!a.origin().verifies(&MessageId([8; 32]), &sig));
        assert!(!Origin([0; 32]).verifies(&id, &sig));
    }

    /// The figure behind choosing Ed25519 (docs/gossip.md):
    /// `cargo test -p gladius-plugins --lib gossip::key -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints verification timings"]
    fn ed25519_and_secp256k1_verification_cost() {
        use crate::signed_state::{recover_prehash, EthKey};
        const N: u32 = 2000;
        let id = MessageId([7; 32]);
        let key = GossipKey::generate();
        let sig = key.sign(&id);
        let t = std::time::Instant::now();
        for _ in 0..N {
            assert!(key.origin().verifies(&id, &sig));
        }
        let ed = t.elapsed() / N;
        let eth = EthKey::generate();
        let esig = eth.sign_prehash(&id.0).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..N {
            assert_eq!(recover_prehash(&id.0, &esig).unwrap(), eth.address());
        }
        let k = t.elapsed() / N;
        println!("per verification: ed25519 {ed:?}, secp256k1 ecrecover {k:?}");
    }

    #[test]
    fn a_key_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("gossip-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let k1 = GossipKey::load_or_generate(&dir).unwrap();
        let k2 = GossipKey::load_or_generate(&dir).unwrap();
        assert_eq!(k1.origin(), k2.origin());
        std::fs::remove_file(&dir).unwrap();
    }
}
