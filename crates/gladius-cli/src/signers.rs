//! Which Ethereum signer each peer is.
//!
//! Every encrypted daemon sends, as its handshake payload, an EIP-191
//! `personal_sign` signature by its Ethereum key over
//! `gladius node key <its Noise public key, hex>`. The peer's key is proven
//! by the handshake itself, so recovering the signature over that text gives
//! the signer address that vouches for this very node: a node cannot
//! borrow another's signer. (Plaintext nodes have no key and send nothing.)
//! The `state` answer and `peer_connected` events show it as `signer`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use gladius_p2p::{PeerInfo, PublicKey};
use gladius_plugins::signed_state::{recover_personal, EthKey, EthSignature};

/// Signers remembered at most (by peer key), oldest forgotten first: more
/// than any route table, so only a churn of strangers evicts anyone.
pub(crate) const MAX_SIGNERS: usize = 4096;

/// The text a node's Ethereum key signs to vouch for its Noise key.
fn proof_text(key: &PublicKey) -> String {
    format!("gladius node key {key}")
}

/// This node's handshake payload: its signer's signature over its key.
pub(crate) fn handshake_payload(eth: &EthKey, key: &PublicKey) -> Result<Bytes, String> {
    let sig = eth
        .sign_personal(proof_text(key).as_bytes())
        .map_err(|e| format!("cannot sign the node key: {e}"))?;
    Ok(Bytes::copy_from_slice(sig.as_bytes()))
}

/// The signer (checksummed address) a connected peer proved, if it sent a
/// valid proof.
pub(crate) fn signer_of(peer: &PeerInfo) -> Option<String> {
    signer_from(peer.public_key.as_ref()?, &peer.handshake_payload)
}

/// The signer that `payload` proves for the node with `key`.
fn signer_from(key: &PublicKey, payload: &[u8]) -> Option<String> {
    let sig: [u8; 65] = payload.try_into().ok()?;
    let address = recover_personal(proof_text(key).as_bytes(), &EthSignature(sig)).ok()?;
    Some(address.to_checksum())
}

/// Signers by peer key (hex), bounded.
#[derive(Debug, Default)]
pub(crate) struct Signers {
    by_key: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Signers {
    /// Remember that `key` belongs to `signer`.
    pub(crate) fn insert(&mut self, key: String, signer: String) {
        if self.by_key.insert(key.clone(), signer).is_none() {
            self.order.push_back(key);
        }
        while self.by_key.len() > MAX_SIGNERS {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_key.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The signer of the peer with this key.
    pub(crate) fn get(&self, key: &str) -> Option<&String> {
        self.by_key.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gladius_p2p::Identity;

    #[test]
    fn a_proof_names_its_signer_for_its_key_only() {
        let eth = EthKey::generate();
        let (mine, other) = (
            Identity::generate().public_key(),
            Identity::generate().public_key(),
        );
        let proof = handshake_payload(&eth, &mine).unwrap();
        assert_eq!(proof.len(), 65);
        let me = Some(eth.address().to_checksum());
        assert_eq!(signer_from(&mine, &proof), me);
        // Replayed by a node with another key, it names someone else.
        assert_ne!(signer_from(&other, &proof), me);
        assert_eq!(signer_from(&mine, b"junk"), None);
    }

    #[test]
    fn the_map_is_bounded_oldest_out() {
        let mut s = Signers::default();
        for i in 0..MAX_SIGNERS + 3 {
            s.insert(format!("k{i}"), format!("s{i}"));
        }
        assert!(s.get("k2").is_none());
        assert_eq!(s.get("k3").map(String::as_str), Some("s3"));
        assert_eq!(s.by_key.len(), MAX_SIGNERS);
        assert_eq!(s.order.len(), MAX_SIGNERS);
    }
}
