//! # gladius-plugins
//!
//! The built-in plugins of gladius-p2p, written only against its public API
//! (so any application can replace them):
//!
//! * [`discovery`] — learn the network from the peers you were given, up to
//!   a table size, and forget dead peers;
//! * [`latency`] — ping every peer, keep RTT statistics (EWMA, min, p50,
//!   p99), mark silent peers suspect then dead and delete them;
//! * [`gossip`] — publish/subscribe over the whole network: topics carried
//!   by epidemic broadcast trees, every message signed by its origin;
//! * [`signed_state`] — fields signed with Ethereum keys (EIP-191
//!   `personal_sign`), kept newest per (signer, field) and spread by
//!   anti-entropy.
//!
//! Each constructor returns the plugin and a cheap handle to query it; the
//! plugin is registered with one line, alone or together with the others:
//!
//! ```no_run
//! use gladius_p2p::{Config, Network};
//! use gladius_plugins::discovery::{Discovery, DiscoveryConfig};
//! use gladius_plugins::latency::{LatencyAudit, LatencyConfig};
//! use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let net = Network::new(Config::default())?;
//! let (discovery, peers) = Discovery::new(DiscoveryConfig::default());
//! let (latency, rtt) = LatencyAudit::new(LatencyConfig::default())?;
//! let (state, fields) = SignedState::new(EthKey::generate(), SignedStateConfig::default());
//! net.register_plugin(discovery).await?;
//! net.register_plugin(latency).await?;
//! net.register_plugin(state).await?;
//! net.listen("127.0.0.1:7001").await?;
//! net.add("127.0.0.1:7002").await?; // one seed; discovery finds the rest
//! fields.set("name", "alice").await?;
//! println!("{} peers, closest {:?}", peers.live_peers().len(), rtt.closest(3));
//! # Ok(()) }
//! ```

mod background;
pub mod discovery;
pub mod gossip;
mod keyfile;
pub mod latency;
pub mod signed_state;
