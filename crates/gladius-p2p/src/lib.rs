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
//! ordered stream, sans-IO), `session` (frames over KCP, sans-IO), `driver`
//! (the one task owning socket, sessions and timers), [`Network`] (the
//! handle). See `docs/wire-format.md` for the bytes.

mod config;
pub mod crypto;
mod demux;
mod driver;
mod error;
#[cfg(feature = "json")]
mod json;
mod network;
mod plugin;
mod session;
pub mod socket;
mod state;
mod streams;
mod wait;
pub mod wire;

pub use async_trait::async_trait;
pub use config::{Config, KcpPreset, DEFAULT_MAX_MESSAGE_SIZE};
pub use crypto::{Identity, IdentityError, PublicKey};
pub use error::{ConfigError, NetworkError, RequestError};
pub use gladius_kcp::KcpConfig;
#[cfg(feature = "json")]
pub use json::JsonError;
pub use network::{Network, PeerInfo, Received, SendFailure, SendReport, ToPeerAddr};
pub use plugin::{Plugin, PluginId, PLUGIN_QUEUE_LEN};
pub use socket::{BatchUdpSocket, DatagramSocket, LinkFaults, MemoryNetwork, MemorySocket};
pub use state::{ConnectionState, Counters, Direction, NetworkState, PeerState, PluginState};
pub use streams::{Feed, Filter, PeerEvent, Subscription, SUBSCRIPTION_QUEUE_LEN};
pub use wire::{Message, MessageError};
