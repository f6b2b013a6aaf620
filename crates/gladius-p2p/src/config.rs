//! Node configuration: every knob with its default and unit, validated once
//! when the node is created.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gladius_kcp::KcpConfig;

use crate::crypto::{Cipher, Identity, PublicKey, MAX_APP_PAYLOAD};

use crate::error::ConfigError;
use crate::wire::Frame;

/// Default largest message body: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Default budget for partially received messages, all sessions together:
/// 64 MiB (four messages of the default largest size).
pub const DEFAULT_PARTIAL_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default budget for out-of-order KCP segments held by sessions outside
/// the route table, all together (see [`Config::with_reorder_bytes`]).
pub const DEFAULT_REORDER_BYTES: usize = 32 * 1024 * 1024;

/// Default most pairs of peers a relay serves at once: 64.
pub const DEFAULT_RELAY_MAX_PAIRS: usize = 64;

/// Default relayed bytes per second per pair of peers: 1 MiB/s.
pub const DEFAULT_RELAY_BYTES_PER_SEC: u64 = 1024 * 1024;

/// Default largest datagram a session probes for, in KCP bytes before
/// sealing: 8,920, so that a sealed datagram with its IPv6 and UDP headers
/// fits a 9,000-byte jumbo frame (6 segments of the default 1400-byte
/// `mtu`: 8,400 bytes). On loopback this was also the fastest size
/// measured: larger datagrams leave fewer per segmentation-offload send
/// and were slower (docs/wire-format.md §1.1). See
/// [`Config::with_max_datagram_size`].
pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = 9_000 - 48 - crate::crypto::packet::DATA_OVERHEAD;

/// The largest `max_datagram_size`: a sealed datagram stays within the
/// 65,000 bytes one UDP segmentation-offload send takes.
pub const MAX_DATAGRAM_SIZE_LIMIT: usize = 65_000 - crate::crypto::packet::DATA_OVERHEAD;

/// KCP tuning presets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KcpPreset {
    /// Low latency and high throughput (the default): nodelay, 10 ms
    /// interval, fast resend after 2 skips, no congestion window, 1024-segment
    /// windows, 1400-byte datagrams.
    #[default]
    Fast,
    /// ikcp's conservative defaults: 40 ms interval, no fast resend,
    /// congestion control on, 128-segment windows. Kinder to shared links.
    Normal,
    /// Any parameters.
    Custom(KcpConfig),
}

impl KcpPreset {
    /// The KCP parameters this preset stands for.
    pub fn kcp_config(&self) -> KcpConfig {
        match self {
            KcpPreset::Fast => KcpConfig::default(),
            KcpPreset::Normal => KcpConfig {
                interval_ms: 40,
                nodelay: false,
                fast_resend: 0,
                no_congestion_control: false,
                send_window: 128,
                recv_window: 128,
                ..KcpConfig::default()
            },
            KcpPreset::Custom(c) => c.clone(),
        }
    }
}

/// Configuration of a node. Build with [`Config::default`] and the `with_*`
/// setters; [`Network::new`](crate::Network::new) validates it.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, ConfigError, Identity, Network};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::default()
///     .with_identity(Identity::generate()) // or Identity::load_or_generate(path)?
///     .with_max_message_size(1 << 20)      // 1 MiB bodies
///     .with_keepalive_interval(Duration::from_secs(2))
///     .with_refuse_unknown_inbound(true);  // only peers we add
/// let node = Network::new(config)?;
/// node.listen("127.0.0.1:0").await?;
/// // Invalid settings are refused once, by `Network::new`.
/// let zero = Network::new(Config::default().with_max_message_size(0));
/// assert!(matches!(zero, Err(ConfigError::MaxMessageSize(0))));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) max_message_size: usize,
    pub(crate) kcp: KcpPreset,
    pub(crate) keepalive_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) peer_queue_bytes: usize,
    pub(crate) refuse_unknown_inbound: bool,
    pub(crate) max_inbound_sessions: usize,
    pub(crate) max_inbound_sessions_per_ip: usize,
    pub(crate) partial_frame_bytes: usize,
    pub(crate) reorder_bytes: usize,
    pub(crate) key_exchanges_per_sec: u32,
    pub(crate) cookie_key_exchanges_per_sec: u32,
    pub(crate) advertise_addr: Option<SocketAddr>,
    pub(crate) socket_buffer_bytes: usize,
    pub(crate) plaintext: bool,
    pub(crate) cipher: Cipher,
    pub(crate) max_datagram_size: usize,
    pub(crate) identity: Option<Identity>,
    pub(crate) known_peers: HashMap<SocketAddr, PublicKey>,
    pub(crate) max_half_open: usize,
    pub(crate) handshake_payload: Bytes,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) relay: bool,
    pub(crate) relay_max_pairs: usize,
    pub(crate) relay_bytes_per_sec: u64,
    /// A misbehaving relay, for tests (`relay-faults` feature): corrupt
    /// every `.0`th and drop every `.1`th forwarded `Data` datagram (0:
    /// never).
    pub(crate) relay_faults: (u64, u64),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            kcp: KcpPreset::Fast,
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            peer_queue_bytes: 2 * DEFAULT_MAX_MESSAGE_SIZE + 4096,
            refuse_unknown_inbound: false,
            max_inbound_sessions: 4096,
            max_inbound_sessions_per_ip: 256,
            partial_frame_bytes: DEFAULT_PARTIAL_FRAME_BYTES,
            reorder_bytes: DEFAULT_REORDER_BYTES,
            key_exchanges_per_sec: 500,
            cookie_key_exchanges_per_sec: 1_000,
            advertise_addr: None,
            socket_buffer_bytes: 4 * 1024 * 1024,
            plaintext: false,
            cipher: Cipher::preferred(),
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            identity: None,
            known_peers: HashMap::new(),
            max_half_open: 1024,
            handshake_payload: Bytes::new(),
            rng_seed: None,
            relay: false,
            relay_max_pairs: DEFAULT_RELAY_MAX_PAIRS,
            relay_bytes_per_sec: DEFAULT_RELAY_BYTES_PER_SEC,
            relay_faults: (0, 0),
        }
    }
}

impl Config {
    /// Largest message body in bytes. Default 16 MiB.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// KCP preset. Default [`KcpPreset::Fast`].
    pub fn with_kcp(mut self, preset: KcpPreset) -> Self {
        self.kcp = preset;
        self
    }
    /// Largest datagram a session may grow to where the path and the peer
    /// carry it, in KCP bytes before sealing (datagram-size probing, see
    /// docs/wire-format.md §1.1): sessions start at the KCP
    /// `mtu` and confirm larger sizes, whole multiples of it, with
    /// acknowledged probes; they fall back to the `mtu` when larger
    /// datagrams stop arriving or the peer's address changes, and never
    /// probe through a relay. At or below the `mtu`, probing is off.
    /// Default [`DEFAULT_MAX_DATAGRAM_SIZE`] (8,920); at most
    /// [`MAX_DATAGRAM_SIZE_LIMIT`] (64,968).
    pub fn with_max_datagram_size(mut self, bytes: usize) -> Self {
        self.max_datagram_size = bytes;
        self
    }
    /// A session quiet for this long sends a keepalive ping. Default 5 s.
    pub fn with_keepalive_interval(mut self, d: Duration) -> Self {
        self.keepalive_interval = d;
        self
    }
    /// A session that hears nothing for this long is closed as dead. Must
    /// exceed the keepalive interval. Default 20 s.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// An outbound session whose peer does not answer the hello within this
    /// time is abandoned (and retried with backoff). Default 5 s.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// How long a graceful close waits for queued data to be acknowledged.
    /// Default 2 s.
    pub fn with_close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }
    /// Reconnect backoff for peers in the route table: starts at `min`,
    /// doubles per failure up to `max`. Defaults 250 ms and 30 s.
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }
    /// Bytes that may wait for one peer (queued plus unacknowledged); a send
    /// beyond it is refused and reported. Default 2 × max message + 4 KiB.
    ///
    /// Counted in encoded frame bytes. A message body of 2 KiB or more is
    /// not copied into its frame: the session holds the body's own `Bytes`
    /// until the peer acknowledged it, so a body sliced out of a larger
    /// buffer keeps that buffer allocated meanwhile.
    pub fn with_peer_queue_bytes(mut self, bytes: usize) -> Self {
        self.peer_queue_bytes = bytes;
        self
    }
    /// Refuse sessions from peers not in the route table. Default false
    /// (they are accepted as non-writable).
    pub fn with_refuse_unknown_inbound(mut self, refuse: bool) -> Self {
        self.refuse_unknown_inbound = refuse;
        self
    }
    /// Most sessions from peers not in the route table at once. Peers in
    /// the route table do not count: their slots are always there. When
    /// the limit is reached, a new session makes one of these give way
    /// (closed, counted in `evicted_sessions`): the least recently active
    /// of the source IP that holds the most. A table full of squatters
    /// never keeps a new node out. Default 4096.
    pub fn with_max_inbound_sessions(mut self, n: usize) -> Self {
        self.max_inbound_sessions = n;
        self
    }
    /// Most sessions from peers not in the route table from one source IP
    /// (IPv4 address or IPv6 /64) at once; more are refused (counted in
    /// `refused_sessions`), so one host cannot fill the inbound sessions.
    /// Default 256 (a sixteenth of the default total).
    pub fn with_max_inbound_sessions_per_ip(mut self, n: usize) -> Self {
        self.max_inbound_sessions_per_ip = n;
        self
    }
    /// Bytes of partially received messages held for all sessions
    /// together. Past it, the largest partial message of a peer outside
    /// the route table is dropped (then of a route-table peer): its bytes
    /// are freed, the rest of it is skipped as it arrives, and the session
    /// goes on (counted in `partial_frames_dropped`). Must hold one message
    /// of the largest size. Default 64 MiB
    /// ([`DEFAULT_PARTIAL_FRAME_BYTES`]).
    pub fn with_partial_frame_bytes(mut self, bytes: usize) -> Self {
        self.partial_frame_bytes = bytes;
        self
    }
    /// Bytes of out-of-order KCP segments (received beyond a gap, waiting
    /// for it to fill) held by sessions of peers outside the route table,
    /// all together; each such session gets at most an equal share of it
    /// (the budget divided by their number). A segment that does not fit
    /// is neither held nor acknowledged, so its sender retransmits it
    /// (counted in `reorder_refused`), and such sessions advertise a
    /// receive window no larger than their share holds. Route-table peers
    /// keep their full receive window. Default 32 MiB
    /// ([`DEFAULT_REORDER_BYTES`]).
    pub fn with_reorder_bytes(mut self, bytes: usize) -> Self {
        self.reorder_bytes = bytes;
        self
    }
    /// Key exchanges per second for handshake initiators without a cookie
    /// (encrypted mode), at most 10 ms worth at once; each source IP (IPv6
    /// /64) gets a fair share of every 100 ms, at most a quarter. Past it,
    /// initiators must prove their address with a cookie first. Route-table
    /// peers and pinned addresses have a budget of the same size of their
    /// own. Default 500.
    pub fn with_key_exchanges_per_sec(mut self, n: u32) -> Self {
        self.key_exchanges_per_sec = n;
        self
    }
    /// Key exchanges per second for initiators that showed a valid cookie
    /// (encrypted mode), at most 10 ms worth at once; each source IP (IPv6
    /// /64) gets a fair share of every 100 ms, at most a quarter. Past it
    /// their `Init`s are dropped (counted in `key_exchanges_refused`) until
    /// their retransmission. Default 1000.
    pub fn with_cookie_key_exchanges_per_sec(mut self, n: u32) -> Self {
        self.cookie_key_exchanges_per_sec = n;
        self
    }
    /// Address announced to peers (and used as `sender`) instead of the
    /// listen address. Default: the bound address.
    pub fn with_advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise_addr = Some(addr);
        self
    }
    /// Requested UDP send and receive buffer sizes in bytes (the kernel may
    /// cap them at `net.core.{r,w}mem_max`). Default 4 MiB.
    pub fn with_socket_buffer_bytes(mut self, bytes: usize) -> Self {
        self.socket_buffer_bytes = bytes;
        self
    }
    /// Opt out of encryption: datagrams are bare KCP segments, readable by
    /// anyone and interoperable with ikcp. Default false (encrypted). An
    /// encrypted and a plaintext node refuse each other with a counted
    /// `Reject`.
    pub fn with_plaintext(mut self, plaintext: bool) -> Self {
        self.plaintext = plaintext;
        self
    }
    /// The cipher suite this node starts its handshakes with. Default
    /// [`Cipher::preferred`]: AES-256-GCM where the CPU has AES
    /// instructions, ChaCha20-Poly1305 otherwise. As a responder a node
    /// answers either suite, whatever this says; as an initiator it falls
    /// back from AES-256-GCM to ChaCha20-Poly1305 when a peer does not
    /// answer ([`AES_GCM_UNANSWERED_LIMIT`](crate::crypto::AES_GCM_UNANSWERED_LIMIT)),
    /// and starts with ChaCha20-Poly1305 with a peer whose last handshake
    /// ran it.
    /// `network_state` shows each session's suite. No effect in plaintext
    /// mode.
    pub fn with_cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = cipher;
        self
    }
    /// The node's static X25519 identity. Default: a fresh one per node
    /// (see [`Identity::load_or_generate`] for a persistent one).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
    /// Pin `key` for `addr`: a session with that address completes only if
    /// the peer proves this static key (counted and reported otherwise).
    pub fn with_known_peer(mut self, addr: SocketAddr, key: PublicKey) -> Self {
        self.known_peers.insert(addr, key);
        self
    }
    /// Most inbound handshakes waiting for their last message. Past half of
    /// it (or past the key-exchange budget, whatever the table holds), new
    /// initiators must prove their address with a cookie first. When full,
    /// the source IP holding the most gives way. Default 1024.
    pub fn with_max_half_open(mut self, n: usize) -> Self {
        self.max_half_open = n;
        self
    }
    /// Bytes (at most 1024) every peer receives in our handshake, e.g. a
    /// signature binding an application key to our static key; peers' show
    /// in [`PeerInfo::handshake_payload`](crate::PeerInfo). Default empty.
    pub fn with_handshake_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.handshake_payload = payload.into();
        self
    }
    /// Seed every random choice the node's protocol makes — conversation
    /// ids, handshake indices, random broadcast targets, backoff jitter,
    /// the hashing of its tables — so that a test or a simulation repeats
    /// exactly. Secrets (identity and ephemeral keys, cookie secrets) never
    /// come from it. Default: a fresh seed from the OS per node; leave it so
    /// outside tests (a known seed makes handshake indices predictable).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
    /// Relay for peers (encrypted mode; `docs/nat.md`): forward the sealed
    /// datagrams of a peer A to a peer B this node also has a session with,
    /// when A asks, so two peers that cannot reach each other directly
    /// still get an end-to-end encrypted session. The relay sees only
    /// sealed A–B bytes. Bounded by
    /// [`with_relay_limits`](Self::with_relay_limits). Default off: a node
    /// that does not relay refuses (and counts) every request.
    pub fn with_relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }
    /// Limits of a relaying node: at most `max_pairs` pairs of peers
    /// relayed at once (a pair idle for 30 s gives way to a new one) and at
    /// most `bytes_per_sec` bytes of relayed datagrams per second per pair,
    /// both directions together (bursts up to one second's worth). Beyond
    /// either, datagrams are dropped and counted (`relay_refused`,
    /// `relay_rate_limited`). Defaults [`DEFAULT_RELAY_MAX_PAIRS`] and
    /// [`DEFAULT_RELAY_BYTES_PER_SEC`].
    pub fn with_relay_limits(mut self, max_pairs: usize, bytes_per_sec: u64) -> Self {
        self.relay_max_pairs = max_pairs;
        self.relay_bytes_per_sec = bytes_per_sec;
        self
    }
    /// **For tests** (feature `relay-faults`): a relay that flips one bit
    /// of every `corrupt_every`th sealed `Data` datagram it forwards and
    /// drops every `drop_every`th (0: never), so tests can check that the
    /// ends detect a tampering relay and lose nothing to a dropping one.
    #[cfg(feature = "relay-faults")]
    pub fn with_relay_faults(mut self, corrupt_every: u64, drop_every: u64) -> Self {
        self.relay_faults = (corrupt_every, drop_every);
        self
    }
    /// Whether the node relays for its peers.
    pub fn is_relay(&self) -> bool {
        self.relay
    }
    /// Whether the node runs without encryption.
    pub fn is_plaintext(&self) -> bool {
        self.plaintext
    }
    /// The configured maximum message body size.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Check every value and relation once.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_size == 0 || self.max_message_size > 1 << 30 {
            return Err(ConfigError::MaxMessageSize(self.max_message_size));
        }
        let needed = Frame::max_len(self.max_message_size) + 4;
        if self.peer_queue_bytes < needed {
            return Err(ConfigError::PeerQueueTooSmall {
                queue: self.peer_queue_bytes,
                needed,
            });
        }
        let nonzero = [
            self.keepalive_interval,
            self.idle_timeout,
            self.connect_timeout,
            self.close_timeout,
            self.reconnect_min,
        ];
        if nonzero.iter().any(Duration::is_zero) {
            return Err(ConfigError::Timing(
                "timeouts and intervals must be non-zero",
            ));
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::Timing(
                "idle_timeout must exceed keepalive_interval",
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::Timing("reconnect max below min"));
        }
        let kcp = self.kcp.kcp_config();
        if !(100..=65_000).contains(&kcp.mtu) {
            return Err(ConfigError::Kcp("mtu must be 100..=65000"));
        }
        if self.max_datagram_size > MAX_DATAGRAM_SIZE_LIMIT {
            return Err(ConfigError::Kcp("max_datagram_size must be at most 64968"));
        }
        if kcp.interval_ms == 0 || kcp.interval_ms > 5000 {
            return Err(ConfigError::Kcp("interval must be 1..=5000 ms"));
        }
        if kcp.send_window == 0 || kcp.recv_window == 0 {
            return Err(ConfigError::Kcp("windows must be non-zero"));
        }
        if !self.plaintext && kcp.mtu + crate::crypto::packet::DATA_OVERHEAD > 65_507 {
            return Err(ConfigError::Kcp(
                "mtu too large to seal in one UDP datagram",
            ));
        }
        if self.handshake_payload.len() > MAX_APP_PAYLOAD {
            return Err(ConfigError::HandshakePayload(self.handshake_payload.len()));
        }
        if self.max_half_open == 0 {
            return Err(ConfigError::Timing("max_half_open must be non-zero"));
        }
        if self.key_exchanges_per_sec == 0 || self.cookie_key_exchanges_per_sec == 0 {
            return Err(ConfigError::Limit("key exchange budgets must be non-zero"));
        }
        if self.max_inbound_sessions_per_ip == 0 {
            return Err(ConfigError::Limit(
                "max_inbound_sessions_per_ip must be non-zero",
            ));
        }
        if self.relay && (self.relay_max_pairs == 0 || self.relay_bytes_per_sec == 0) {
            return Err(ConfigError::Limit("relay limits must be non-zero"));
        }
        let one_message = Frame::max_len(self.max_message_size) + 4;
        if self.partial_frame_bytes < one_message {
            return Err(ConfigError::PartialFramesTooSmall {
                budget: self.partial_frame_bytes,
                needed: one_message,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() -> Result<(), ConfigError> {
        Config::default().validate()
    }

    #[test]
    fn rejects_inconsistent_values() {
        let c = Config::default().with_max_message_size(0);
        assert_eq!(c.validate(), Err(ConfigError::MaxMessageSize(0)));
        let c = Config::default().with_peer_queue_bytes(10);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::PeerQueueTooSmall { .. })
        ));
        let c = Config::default().with_idle_timeout(Duration::from_secs(1));
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
    }
}
