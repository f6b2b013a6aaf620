//! A node's long-term identity: a static X25519 key pair, and the file it is
//! kept in.
//!
//! The [`PublicKey`] is what peers learn in the Noise handshake, what
//! `network_state` shows and what a pin compares against; it prints and
//! (de)serializes as 64 lowercase hex digits. The private half never leaves
//! [`Identity`]: its `Debug` shows only the public key.
//!
//! # Key file format
//!
//! An identity file is UTF-8 text of exactly two lines:
//!
//! ```text
//! gladius-identity-v1
//! <64 hex digits: the 32-byte X25519 private key>
//! ```
//!
//! The final newline is optional, a trailing `\r` on either line is
//! tolerated, hex digits may be either case, and nothing else is accepted.
//! [`Identity::save`] creates the file with mode `0600` and forces `0600`
//! on an existing file before writing the key into it. [`Identity::load`]
//! does **not** check the mode: a file readable by others is accepted
//! without complaint (it is the operator's file; refusing would only turn a
//! confidentiality problem into an availability one).

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::RngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver as _, DefaultResolver};

use super::{key_from_hex, to_hex};

/// Length in bytes of X25519 public and private keys.
pub const KEY_LEN: usize = 32;

/// First line of an identity file.
const FILE_HEADER: &str = "gladius-identity-v1";

/// A node's static X25519 public key: its identity on the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key from a slice, if it is exactly 32 bytes long.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

/// Why a string is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not 64 characters long.
    #[error("a key is 64 hex digits, got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a key is 64 hex digits, found a non-hex character")]
    Hex,
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    /// Parse 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        key_from_hex(s).map(Self)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read, created or written.
    #[error("identity file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not an identity file (see the module docs for
    /// the format).
    #[error("identity file {}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A node's static X25519 key pair.
///
/// `Debug` prints only the public key.
#[derive(Clone)]
pub struct Identity {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

/// The private key is wiped from memory when the identity is dropped.
impl Drop for Identity {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private);
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity from the OS random number generator.
    pub fn generate() -> Self {
        let mut private = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut private);
        Self::from_private_bytes(private)
    }

    /// The identity with this private key (any 32 bytes; X25519 clamps them).
    pub fn from_private_bytes(private: [u8; KEY_LEN]) -> Self {
        Self {
            private,
            public: public_from_private(&private),
        }
    }

    /// The public half, as peers see it.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The private key's bytes, for the Noise handshake.
    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Write the identity to `path` in the key file format (module docs),
    /// replacing any file there. The file is created with mode `0600`, and
    /// an existing file is set to `0600` before the key is written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        // Write a sibling file and rename it over the target, so a crash
        // mid-write never leaves a truncated key where `load` looks.
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err)?;
        }
        let text = format!("{FILE_HEADER}\n{}\n", to_hex(&self.private));
        file.write_all(text.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)
    }

    /// Read an identity written by [`save`](Self::save). The file's mode is
    /// not checked.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| IdentityError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_file(&bytes).map_err(|reason| IdentityError::Format {
            path: path.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// [`load`](Self::load) the identity at `path`; if there is no file
    /// there, [`generate`](Self::generate) one and [`save`](Self::save) it
    /// (creating missing parent directories). Any other error, including a
    /// malformed file, is returned: an existing identity is never
    /// overwritten.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(|source| IdentityError::Io {
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                let identity = Self::generate();
                identity.save(path)?;
                Ok(identity)
            }
            other => other,
        }
    }

    /// Parse the contents of a key file.
    fn parse_file(bytes: &[u8]) -> Result<Self, &'static str> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text")?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let header = lines.next().unwrap_or_default();
        if header != FILE_HEADER {
            return Err("first line is not `gladius-identity-v1`");
        }
        let key = lines.next().ok_or("missing the private key line")?;
        if lines.next().is_some() {
            return Err("unexpected text after the private key line");
        }
        match key_from_hex(key) {
            Ok(private) => Ok(Self::from_private_bytes(private)),
            Err(KeyParseError::Length(_)) => {
                Err("the private key line is not exactly 64 hex digits")
            }
            Err(_) => Err("the private key line holds a non-hex character"),
        }
    }
}

/// X25519 public key of a private key (through snow's resolver, so that the
/// clamping is exactly the one the handshake uses).
fn public_from_private(private: &[u8; KEY_LEN]) -> PublicKey {
    // The resolver always has Curve25519 (the `use-curve25519` feature) and
    // its public keys are 32 bytes; the fallback is unreachable.
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .and_then(|mut dh| {
            dh.set(private);
            PublicKey::from_slice(dh.pubkey())
        })
        .unwrap_or(PublicKey([0; KEY_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests and their helpers report failures as errors instead of panicking.
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    fn temp_dir(name: &str) -> TestResult<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "gladius-identity-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    #[test]
    fn public_key_hex_round_trip_and_serde() -> TestResult {
        let id = Identity::from_private_bytes([7; 32]);
        let pk = id.public_key();
        let text = pk.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(format!("{pk:?}"), text);
        assert_eq!(text.parse::<PublicKey>()?, pk);
        assert_eq!(text.to_uppercase().parse::<PublicKey>()?, pk);
        let json = serde_json::to_string(&pk)?;
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json)?, pk);
        assert!(serde_json::from_str::<PublicKey>("\"00\"").is_err());
        assert_eq!("zz".parse::<PublicKey>(), Err(KeyParseError::Length(2)));
        assert_eq!("g".repeat(64).parse::<PublicKey>(), Err(KeyParseError::Hex));
        Ok(())
    }

    #[test]
    fn known_x25519_public_key() -> TestResult {
        // RFC 7748 §6.1, Alice.
        let private = super::super::key_from_hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )?;
        assert_eq!(
            Identity::from_private_bytes(private)
                .public_key()
                .to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        Ok(())
    }

    #[test]
    fn debug_hides_private_key() {
        let id = Identity::from_private_bytes([0xab; 32]);
        let debug = format!("{id:?}");
        assert!(!debug.contains(&"ab".repeat(32)), "{debug}");
        assert!(debug.contains(&id.public_key().to_string()));
    }

    #[test]
    fn generate_is_random() {
        assert_ne!(
            Identity::generate().public_key(),
            Identity::generate().public_key()
        );
    }

    #[test]
    fn save_load_round_trip_with_mode_0600() -> TestResult {
        let dir = temp_dir("roundtrip")?;
        let path = dir.join("node.key");
        let id = Identity::generate();
        id.save(&path)?;
        let text = fs::read_to_string(&path)?;
        assert!(text.starts_with("gladius-identity-v1\n"));
        assert_eq!(text.lines().count(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // An existing, too-open file is forced back to 0600 on save.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
            // ... and is still loaded (the mode is not checked on load).
            assert_eq!(Identity::load(&path)?.public_key(), id.public_key());
            id.save(&path)?;
            let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(Identity::load(&path)?.public_key(), id.public_key());
        fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn load_or_generate_creates_once() -> TestResult {
        let dir = temp_dir("log")?;
        let path = dir.join("sub").join("node.key");
        let a = Identity::load_or_generate(&path)?;
        let b = Identity::load_or_generate(&path)?;
        assert_eq!(a.public_key(), b.public_key());
        // A malformed file is an error, never silently replaced.
        fs::write(&path, "junk")?;
        assert!(matches!(
            Identity::load_or_generate(&path),
            Err(IdentityError::Format { .. })
        ));
        fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn bad_files_give_clear_errors() -> TestResult {
        let dir = temp_dir("bad")?;
        let key = "0f".repeat(32);
        let cases: &[(&str, String, &str)] = &[
            (
                "header",
                format!("gladius-identity-v2\n{key}\n"),
                "first line",
            ),
            ("empty", String::new(), "first line"),
            ("nokey", "gladius-identity-v1\n".into(), "missing"),
            (
                "badhex",
                format!("gladius-identity-v1\n{}xx\n", "0f".repeat(31)),
                "non-hex",
            ),
            (
                "short",
                format!("gladius-identity-v1\n{}\n", "0f".repeat(31)),
                "64 hex",
            ),
            ("long", format!("gladius-identity-v1\n{key}00\n"), "64 hex"),
            (
                "extra",
                format!("gladius-identity-v1\n{key}\nmore\n"),
                "after",
            ),
        ];
        for (name, contents, needle) in cases {
            let path = dir.join(name);
            fs::write(&path, contents)?;
            let err = Identity::load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, IdentityError::Format { .. }), "{name}: {msg}");
            assert!(msg.contains(needle), "{name}: {msg}");
            assert!(msg.contains(name), "{name}: path missing from {msg}");
        }
        // Tolerated variants: no final newline, CRLF, uppercase.
        for contents in [
            format!("gladius-identity-v1\n{key}"),
            format!("gladius-identity-v1\r\n{key}\r\n"),
            format!("gladius-identity-v1\n{}\n", key.to_uppercase()),
        ] {
            let path = dir.join("ok");
            fs::write(&path, contents)?;
            assert_eq!(
                Identity::load(&path)?.public_key(),
                Identity::from_private_bytes([0x0f; 32]).public_key()
            );
        }
        let missing = dir.join("missing");
        let err = Identity::load(&missing).unwrap_err();
        assert!(
            matches!(&err, IdentityError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("missing"));
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}
