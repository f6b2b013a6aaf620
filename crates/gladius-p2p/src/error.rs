//! Typed errors, one enum per kind of operation.

use std::net::SocketAddr;

/// Why a [`Config`](crate::Config) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_message_size` is zero or larger than the frame length field allows.
    #[error("max_message_size must be between 1 byte and 1 GiB, got {0}")]
    MaxMessageSize(usize),
    /// The per-peer send queue cannot hold one message of `max_message_size`.
    #[error(
        "peer_queue_bytes ({queue}) must be at least max_message_size plus framing ({needed})"
    )]
    PeerQueueTooSmall {
        /// Configured queue size.
        queue: usize,
        /// Smallest size that holds one maximal frame.
        needed: usize,
    },
    /// A timeout or interval is zero or inconsistent with another.
    #[error("invalid timing: {0}")]
    Timing(&'static str),
    /// The KCP parameters are out of range.
    #[error("invalid KCP parameters: {0}")]
    Kcp(&'static str),
    /// The handshake payload is longer than 1024 bytes.
    #[error("handshake payload of {0} bytes exceeds 1024")]
    HandshakePayload(usize),
    /// A limit on what peers may make the node hold or do is zero.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
    /// The budget for partially received messages cannot hold one message
    /// of `max_message_size`.
    #[error(
        "partial_frame_bytes ({budget}) must be at least max_message_size plus framing ({needed})"
    )]
    PartialFramesTooSmall {
        /// Configured budget.
        budget: usize,
        /// Smallest budget that holds one maximal frame.
        needed: usize,
    },
}

/// Why an operation on the [`Network`](crate::Network) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The node has been closed (or its last handle dropped).
    #[error("the node is closed")]
    Closed,
    /// The operation needs a bound socket; call `listen` first.
    #[error("the node is not listening yet")]
    NotListening,
    /// `listen` was called twice.
    #[error("the node is already listening on {0}")]
    AlreadyListening(SocketAddr),
    /// Binding or configuring the socket failed.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A peer address could not be resolved.
    #[error("could not resolve {addr}: {reason}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The address is this node's own.
    #[error("{0} is this node's own address")]
    SelfAddress(SocketAddr),
    /// The message body exceeds `max_message_size`.
    #[error("message body of {size} bytes exceeds max_message_size {max}")]
    MessageTooLarge {
        /// Body size.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A wait ([`Network::wait_for_room`](crate::Network::wait_for_room))
    /// ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The peer is not known to the node.
    #[error("unknown peer {0}")]
    UnknownPeer(SocketAddr),
    /// A handshake payload longer than 1024 bytes.
    #[error("handshake payload of {0} bytes exceeds 1024")]
    HandshakePayloadTooLarge(usize),
    /// `add_pinned` named a key other than the one already pinned or proven
    /// for that address (delete the peer first to pin another).
    #[error("{addr} is already pinned to or proved key {existing}")]
    KeyConflict {
        /// The peer.
        addr: SocketAddr,
        /// The key it already has.
        existing: crate::PublicKey,
    },
    /// [`add_key`](crate::Network::add_key) named a key the node has no
    /// address for: give at least one address hint.
    #[error("no address is known for peer {0}; give an address hint")]
    NoPath(crate::PublicKey),
    /// [`add_via_relay`](crate::Network::add_via_relay) named a relay the
    /// node has no established encrypted session with (or the peer itself,
    /// or the node's own key).
    #[error("{0} is not a peer with an established encrypted session to relay through")]
    NoRelay(SocketAddr),
    /// A typed (JSON) message could not be built.
    #[cfg(feature = "json")]
    #[error(transparent)]
    Json(crate::JsonError),
}

/// Why a [`request`](crate::Network::request) produced no reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply arrived within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The request could not be queued to the peer.
    #[error("request not sent: {0}")]
    NotSent(crate::SendFailure),
    /// The session to the peer closed before the reply arrived.
    #[error("the session to the peer closed before a reply arrived")]
    SessionClosed,
    /// No session to the peer could be made (no answer, or it refused us);
    /// the request was never delivered.
    #[error("no session to the peer could be made: {0}")]
    ConnectFailed(String),
    /// The node itself failed the call.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A typed request could not be encoded, or its reply not decoded
    /// ([`Network::request_json`](crate::Network::request_json)).
    #[cfg(feature = "json")]
    #[error(transparent)]
    Json(#[from] crate::JsonError),
}
