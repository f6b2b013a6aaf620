//! # gladius-p2p
//!
//! A peer-to-peer networking library: nodes exchange minimal messages
//! (sender, type, body, checksum) over KCP on one UDP socket, encrypted by
//! default, through a cheap-to-clone [`Network`] handle.
//!
//! ## Receiving messages: a stream or a plugin
//!
//! * An **application** reads a [`subscribe`](Network::subscribe) stream:
//!   every message (or those whose type starts with a prefix), in order,
//!   bounded, with what it had to drop counted. [`events`](Network::events)
//!   is the same for peer events, and [`wait_connected`](Network::wait_connected)
//!   / [`wait_peers`](Network::wait_peers) wait for peers without polling.
//! * A **component** that reacts to the node's lifecycle (a protocol, like
//!   the discovery, latency and signed-state plugins of `gladius-plugins`)
//!   implements [`Plugin`]: hooks for startup, peers added, deleted,
//!   connected, disconnected, messages and close, each on the plugin's own
//!   task. [`register_plugin`](Network::register_plugin) returns the id
//!   [`remove_plugin`](Network::remove_plugin) takes.
//!
//! Both see the same messages; a stream is in fact a small plugin.
//! Requests ([`Received::is_request`]) are answered with
//! [`reply`](Network::reply). With the `json` feature (on by default),
//! [`Message::json`], [`Received::json`] and
//! [`request_json`](Network::request_json) carry serde types.
//!
//! ```
//! use std::time::Duration;
//! use gladius_p2p::{Config, Filter, Message, Network};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let alice = Network::new(Config::default())?;
//! let bob = Network::new(Config::default())?;
//! alice.listen("127.0.0.1:0").await?;
//! let bob_addr = bob.listen("127.0.0.1:0").await?;
//! let mut inbox = bob.subscribe(Filter::type_prefix("chat")).await?;
//!
//! alice.add(bob_addr).await?;
//! alice.wait_connected(bob_addr, Duration::from_secs(5)).await?;
//! alice.broadcast(Message::new("chat", "hi bob")?).await?;
//!
//! while let Some(msg) = inbox.next().await {
//!     assert_eq!(msg.message().body(), "hi bob");
//!     break;
//! }
//! alice.close().await?;
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
#[cfg(feature = "json")]
mod json;
mod network;
mod plugin;
mod sender;
mod session;
pub mod socket;
mod state;
mod streams;
mod wait;
pub mod wire;

pub use api::{
    PathChange, PeerInfo, PeerReason, Received, RequestHandler, RequestHandlerId, SendFailure,
    SendReport,
};
pub use async_trait::async_trait;
pub use config::{
    Config, KcpPreset, DEFAULT_MAX_DATAGRAM_SIZE, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PARTIAL_FRAME_BYTES, DEFAULT_RELAY_BYTES_PER_SEC, DEFAULT_RELAY_MAX_PAIRS,
    DEFAULT_REORDER_BYTES, MAX_DATAGRAM_SIZE_LIMIT,
};
pub use crypto::{Cipher, Identity, IdentityError, PublicKey};
pub use error::{ConfigError, NetworkError, RequestError};
pub use gladius_kcp::KcpConfig;
#[cfg(feature = "json")]
pub use json::JsonError;
pub use network::{Network, ToPeerAddr};
pub use plugin::{Plugin, PluginId, PLUGIN_QUEUE_BYTES, PLUGIN_QUEUE_LEN};
pub use sender::{PeerSendError, PeerSender};
#[cfg(unix)]
pub use socket::BatchUdpSocket;
pub use socket::{Arrival, DatagramSocket, LinkFaults, MemoryNetwork, MemorySocket};
pub use state::{
    ConnectionState, Counters, Direction, NatType, NetworkState, PathKind, PeerState, PluginState,
};
pub use streams::{Feed, Filter, PeerEvent, Subscription, SUBSCRIPTION_QUEUE_LEN};
pub use wire::{Message, MessageError};

/// Whether `addr` names a peer reached through a relay: an address of the
/// discard-only prefix `100::/64` that stands for "this key via that
/// relay" (see `docs/nat.md`). Such an address never reaches a socket and
/// means nothing to another node: plugins should not share it.
pub fn is_relay_path(addr: std::net::SocketAddr) -> bool {
    endpoint::relay::is_relay_addr(addr)
}
