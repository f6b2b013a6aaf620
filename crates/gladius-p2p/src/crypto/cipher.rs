//! The two cipher suites of encrypted mode.
//!
//! A handshake runs one Noise protocol, and the `Data` sealed after it uses
//! that protocol's AEAD. The initiator chooses by the type of its `Init`
//! (`0xE1` or `0xE7`); a responder answers either. Every node speaks
//! [`Cipher::ChaChaPoly`], the suite of the first wire version, so an
//! initiator whose `AES-GCM` `Init`s go unanswered falls back to it
//! ([`AES_GCM_UNANSWERED_LIMIT`]): a node that predates `0xE7` drops it as
//! garbage and never answers.

use std::fmt;
use std::str::FromStr;

/// How many `Init`s of [`Cipher::AesGcm`] an initiator sends without any
/// answer (no `Response`, `Cookie` or `Reject`) before it starts over with
/// [`Cipher::ChaChaPoly`]: a peer that predates `0xE7` never answers one.
/// With the default handshake timers the fallback `Init` leaves 600 ms
/// after the first.
pub const AES_GCM_UNANSWERED_LIMIT: u32 = 2;

/// The AEAD of a handshake and of every `Data` datagram of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Cipher {
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s`: ChaCha20-Poly1305, `Init` type
    /// `0xE1`. Every node speaks it; the faster one on CPUs without AES
    /// instructions.
    ChaChaPoly,
    /// `Noise_XX_25519_AESGCM_BLAKE2s`: AES-256-GCM, `Init` type `0xE7`.
    /// On CPUs with AES and carry-less multiply instructions, about four
    /// times ChaCha20-Poly1305's speed (BENCHMARKS.md).
    AesGcm,
}

impl Cipher {
    /// The Noise protocol name of the suite.
    pub const fn noise_params(self) -> &'static str {
        match self {
            Self::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            Self::AesGcm => "Noise_XX_25519_AESGCM_BLAKE2s",
        }
    }

    /// The short name used in configuration and in `network_state`:
    /// `chachapoly` or `aesgcm`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChaChaPoly => "chachapoly",
            Self::AesGcm => "aesgcm",
        }
    }

    /// The suite a node initiates with by default: [`Cipher::AesGcm`] where
    /// this CPU has AES and carry-less multiply instructions, otherwise
    /// [`Cipher::ChaChaPoly`] (AES in software is slower and not constant
    /// time in every implementation).
    pub fn preferred() -> Self {
        if has_aes_instructions() {
            Self::AesGcm
        } else {
            Self::ChaChaPoly
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cipher name that is neither `chachapoly` nor `aesgcm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher {0:?}: expected \"aesgcm\" or \"chachapoly\"")]
pub struct UnknownCipher(pub String);

impl FromStr for Cipher {
    type Err = UnknownCipher;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "chachapoly" => Ok(Self::ChaChaPoly),
            "aesgcm" => Ok(Self::AesGcm),
            other => Err(UnknownCipher(other.to_owned())),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_aes_instructions() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn has_aes_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has_aes_instructions() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in [Cipher::ChaChaPoly, Cipher::AesGcm] {
            assert_eq!(c.name().parse::<Cipher>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
            assert!(c
                .noise_params()
                .parse::<snow::params::NoiseParams>()
                .is_ok());
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(serde_json::Value::from(c.name()))
            );
        }
        assert_eq!(
            "aes".parse::<Cipher>(),
            Err(UnknownCipher("aes".to_owned()))
        );
    }
}
