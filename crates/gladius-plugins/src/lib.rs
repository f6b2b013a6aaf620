//! # gladius-plugins
//!
//! The built-in plugins of gladius-p2p, written only against its public API
//! (so any application can replace them):
//!
//! * [`discovery`] — learn the network from the peers you were given;
//! * [`latency`] — ping every peer, keep RTT statistics, delete dead peers;
//! * [`signed_state`] — fields signed with Ethereum keys (EIP-191), spread
//!   by anti-entropy.
//!
//! Each is registered with one line, e.g.
//! `net.register_plugin(Discovery::new(DiscoveryConfig::default())).await?`,
//! and they work together or alone.

pub mod discovery;
pub mod latency;
pub mod signed_state;
