//! # gladius-p2p
//!
//! A peer-to-peer networking library: nodes exchange minimal messages
//! (sender, type, body, checksum) over KCP on one UDP socket, and every
//! message goes to user [`Plugin`]s.
//!
//! ```no_run
//! use gladius_p2p::{Config, Message, Network};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Network::new(Config::default())?;
//! node.listen("127.0.0.1:7001").await?;
//! node.add("127.0.0.1:7002").await?;
//! let report = node.broadcast(Message::new("chat", "hello")?).await?;
//! assert!(report.all_queued());
//! node.close().await?;
//! # Ok(()) }
//! ```
//!
//! Layers, bottom up: [`socket`] (the datagram seam), `gladius_kcp` (reliable
//! ordered stream, sans-IO), `session` (frames over KCP, sans-IO),
//! `endpoint` (every protocol decision of a node: handshakes, sessions, the
//! route table, requests; sans-IO), `driver` (the one task owning the
//! socket, the clock and the plugins around the endpoint), [`Network`] (the
//! handle). See `docs/wire-format.md` for the bytes.

mod api;
mod config;
pub mod crypto;
mod driver;
mod endpoint;
mod error;
mod network;
mod plugin;
mod session;
pub mod socket;
mod state;
pub mod wire;

pub use api::{PeerInfo, Received, SendFailure, SendReport};
pub use async_trait::async_trait;
pub use config::{Config, KcpPreset, DEFAULT_MAX_MESSAGE_SIZE};
pub use crypto::{Identity, IdentityError, PublicKey};
pub use error::{ConfigError, NetworkError, RequestError};
pub use gladius_kcp::KcpConfig;
pub use network::{Network, ToPeerAddr};
pub use plugin::{Plugin, PLUGIN_QUEUE_LEN};
pub use socket::{BatchUdpSocket, DatagramSocket, LinkFaults, MemoryNetwork, MemorySocket};
pub use state::{ConnectionState, Counters, Direction, NetworkState, PeerState, PluginState};
pub use wire::{Message, MessageError};
