//! # Signed shared state
//!
//! Each node holds a secp256k1 key and its Ethereum address, and publishes
//! *fields*: (field name, value bytes, timestamp) signed with EIP-191
//! `personal_sign`. Peers verify every entry, keep the newest per
//! (signer, field), and converge by anti-entropy: every round a node sends
//! a 16-byte fingerprint of its state to a few random peers; a peer whose
//! state differs answers with a digest ((signer, field, timestamp, tag) per
//! entry), and the two exchange only the entries one of them lacks or holds
//! older (see [`sync`] for the protocol).
//!
//! Registration, one line:
//!
//! ```no_run
//! # use gladius_plugins::signed_state::*;
//! # async fn f(net: gladius_p2p::Network) -> Result<(), Box<dyn std::error::Error>> {
//! let (plugin, state) = SignedState::new(EthKey::load_or_generate("node.key")?, SignedStateConfig::default());
//! net.register_plugin(plugin).await?;
//! state.set("status", "ready").await?;
//! # Ok(()) }
//! ```
//!
//! ## Canonical message (version 1)
//!
//! The signed text is UTF-8 (in fact ASCII), five lines joined by `\n`
//! (0x0a), **no** trailing newline:
//!
//! ```text
//! gladius signed state v1
//! signer: <signer address, EIP-55 checksummed, 0x-prefixed>
//! field: <field name>
//! timestamp: <unix time in milliseconds, decimal, no leading zeros>
//! value: 0x<value bytes, lowercase hex; "0x" alone for an empty value>
//! ```
//!
//! Field names are 1..=255 bytes (64 by default config) of printable ASCII
//! without spaces (`0x21..=0x7e`). For example, the key
//! `0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318`
//! setting `pool.fee` to the bytes `"hi"` at 1700000000000 signs exactly:
//!
//! ```text
//! gladius signed state v1
//! signer: 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23
//! field: pool.fee
//! timestamp: 1700000000000
//! value: 0x6869
//! ```
//!
//! ## Signature and how anyone verifies it
//!
//! The signature is `personal_sign` (EIP-191 version `0x45`) of that text:
//! 65 bytes `r || s || v`, `v` = 27 or 28, low `s`, deterministic (RFC 6979).
//! It verifies when
//!
//! ```text
//! ecrecover(keccak256("\x19Ethereum Signed Message:\n" + len(message) + message), sig) == signer
//! ```
//!
//! with `len(message)` the message's length in bytes, in decimal ASCII.
//! With standard libraries:
//!
//! * ethers.js: `ethers.verifyMessage(message, signature) === signer`
//!   (v5: `ethers.utils.verifyMessage`);
//! * web3.py: `Account.recover_message(encode_defunct(text=message), signature=signature) == signer`;
//! * viem: `await verifyMessage({ address: signer, message, signature })`.
//!
//! [`SignedStateHandle::entries`] gives, per entry, the exact `message` text
//! and the `signature` hex to feed them.
//!
//! ## Acceptance and merge rules
//!
//! An entry is refused (and counted in [`SyncStats::rejections`]) when its
//! field name or value is out of bounds, its timestamp is more than
//! [`SignedStateConfig::max_clock_skew`] ahead of the local clock, the
//! [`Validator`] refuses its (signer, field), it is not newer than the entry
//! held (older replays), the store is full, or its signature is invalid or
//! by another address than the claimed signer. Among entries for the same
//! (signer, field) the newest timestamp wins; equal timestamps are broken
//! by the larger value, then the larger signature (bytewise), so every node
//! converges on the same entry whatever the order it saw them in.
//!
//! ## Structure
//!
//! The protocol is the sans-IO [`replica::Replica`]: the store, what each
//! sync message is answered with, the pacing of answers and the byte
//! counts, with the time passed in (tokio's `Instant` for pacing, wall-clock
//! milliseconds for entry timestamps, which are part of what is signed). The
//! plugin is its shell: a task ticks the anti-entropy rounds on tokio's
//! clock (so `tokio::time::pause` and the simulator drive it), and every
//! received `signed_state.*` message goes through the replica, whose answers
//! the shell sends back over the sender's session.

mod entry;
mod eth;
mod plugin;
pub mod replica;
mod store;
pub mod sync;
mod validator;

pub use entry::{
    canonical_message, is_valid_field, CanonicalMessage, EntryError, EntryRecord, ParseError,
    SignedEntry, CANONICAL_HEADER, MAX_FIELD_LEN,
};
pub use eth::{
    from_hex, keccak256, personal_message_hash, recover_personal, recover_prehash, to_hex,
    AddressError, EthAddress, EthKey, EthSignature, KeyError, RecoverError,
};
pub use plugin::{
    RoundBytes, SetError, SignedState, SignedStateConfig, SignedStateHandle, SyncStats,
    CHANGES_QUEUE_LEN,
};
pub use store::{
    entry_bytes, precheck, Accepted, DigestItem, Key, Limits, Policy, Rejection, Rejections, Store,
};
pub use validator::{AcceptAll, AllowList, FieldRules, Validator};
