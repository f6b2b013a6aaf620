//! The serializable snapshot returned by
//! [`Network::network_state`](crate::Network::network_state).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::crypto::{Cipher, PublicKey};

/// Everything the node knows about itself and its peers at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkState {
    /// The bound address, once listening.
    pub local_addr: Option<SocketAddr>,
    /// The address announced to peers and used as `sender`.
    pub advertised_addr: Option<SocketAddr>,
    /// This node's static public key (hex in JSON); `None` in plaintext mode.
    pub public_key: Option<PublicKey>,
    /// Whether datagrams are encrypted.
    pub encrypted: bool,
    /// Inbound handshakes waiting for their last message (bounded by
    /// `max_half_open`).
    pub half_open_handshakes: usize,
    /// Sessions from peers outside the route table (bounded by
    /// `max_inbound_sessions`, and per source IP by
    /// `max_inbound_sessions_per_ip`).
    #[serde(default)]
    pub inbound_sessions: usize,
    /// Bytes of partially received messages held, all sessions together
    /// (bounded by `partial_frame_bytes`).
    #[serde(default)]
    pub partial_frame_bytes: usize,
    /// Bytes of out-of-order KCP segments held by sessions outside the
    /// route table (bounded by `reorder_bytes`).
    #[serde(default)]
    pub reorder_bytes: usize,
    /// This node's address as its peers see it (their authenticated
    /// observations), most observers first; empty in plaintext mode and
    /// before any peer reported.
    #[serde(default)]
    pub reflexive_addrs: Vec<SocketAddr>,
    /// The NAT mapping those observations show (one vote per observer key).
    #[serde(default)]
    pub nat: NatType,
    /// Every peer in the route table or with a live session, sorted by address.
    pub peers: Vec<PeerState>,
    /// Registered plugins, in registration order.
    pub plugins: Vec<PluginState>,
    /// Drop and error counters since the node started.
    pub counters: Counters,
}

impl NetworkState {
    /// The entry for `addr`, if any.
    pub fn peer(&self, addr: SocketAddr) -> Option<&PeerState> {
        self.peers.iter().find(|p| p.addr == addr)
    }
}

/// How a peer's active path reaches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Datagrams go straight to the peer's address (or there is no path
    /// yet).
    #[default]
    Direct,
    /// Datagrams go, sealed end to end, through a relay peer.
    Relayed,
}

/// How the NAT in front of this node maps its address, as its peers'
/// observations show it (encrypted mode; see `docs/nat.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatType {
    /// Fewer than two observers, or no majority among them.
    #[default]
    Unknown,
    /// No NAT: observers see the address the node is bound to.
    None,
    /// Observers see one address whoever they are (a "cone" NAT): a
    /// mapping that hole punching can reuse.
    EndpointIndependent,
    /// Observers see different addresses (a "symmetric" NAT): each
    /// destination gets its own mapping.
    EndpointDependent,
}

/// Who opened the session.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This node connected to the peer.
    Outbound,
    /// The peer connected to this node.
    Inbound,
}

/// Where a peer's session stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// No session; waiting to (re)connect after a backoff.
    Disconnected,
    /// Hello sent, no answer yet.
    Connecting,
    /// Both hellos exchanged; messages flow.
    Connected,
    /// A graceful close is flushing.
    Closing,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerState {
    /// The address that names the peer: its active path, else the most
    /// recent of its paths.
    pub addr: SocketAddr,
    /// Every address the peer was reached at, most recent last (at most
    /// four). In encrypted mode a peer is its key and these are paths to
    /// it; in plaintext mode a peer is its one address.
    #[serde(default)]
    pub paths: Vec<SocketAddr>,
    /// The path the current session or handshake runs over; `None` while
    /// there is neither.
    #[serde(default)]
    pub active_path: Option<SocketAddr>,
    /// How the active path reaches the peer: `direct` (to `active_path`)
    /// or `relayed` (through the peer at `relay`). A peer reached only
    /// through a relay is named (`addr`) by a relay address of the
    /// discard-only prefix `100::/64`, which stands for "this key via
    /// that relay" and never reaches a socket.
    #[serde(default)]
    pub path: PathKind,
    /// The direct address the session runs over, if it is direct.
    #[serde(default)]
    pub direct_addr: Option<SocketAddr>,
    /// The relay's address, if the active path is relayed.
    #[serde(default)]
    pub relay: Option<SocketAddr>,
    /// The relay's static key, if the active path is relayed.
    #[serde(default)]
    pub relay_key: Option<PublicKey>,
    /// The address the peer announced in its hello.
    pub advertised: Option<SocketAddr>,
    /// The peer's static public key, as proven in the handshake.
    pub public_key: Option<PublicKey>,
    /// The cipher suite of the encrypted session (`chachapoly` or
    /// `aesgcm` in JSON); `None` without one (plaintext mode, or no
    /// session yet).
    #[serde(default)]
    pub cipher: Option<Cipher>,
    /// The key the peer must prove, if pinned with `add_pinned`.
    pub pinned_key: Option<PublicKey>,
    /// Whether broadcasts write to it.
    pub writable: bool,
    /// Whether it is in the route table (added by the user or a plugin).
    pub in_route_table: bool,
    /// Who opened the current (or last) session.
    pub direction: Direction,
    /// Session state.
    pub connection: ConnectionState,
    /// Smoothed round-trip time measured by KCP, in milliseconds.
    pub rtt_ms: Option<u32>,
    /// Datagram bytes received from the peer.
    pub bytes_in: u64,
    /// Datagram bytes sent to the peer.
    pub bytes_out: u64,
    /// Messages (and requests and replies) received.
    pub messages_in: u64,
    /// Messages (and requests and replies) queued to the peer.
    pub messages_out: u64,
    /// KCP segments sent again because they were lost or their
    /// acknowledgement was late (timeout and fast resend).
    #[serde(default)]
    pub retransmits: u64,
    /// Of `retransmits`, those found unnecessary: the acknowledgement of the
    /// first copy arrived after it (KCP's echoed timestamps tell).
    #[serde(default)]
    pub spurious_retransmits: u64,
    /// The largest datagram the session sends now, before sealing: the
    /// KCP `mtu`, or the larger size datagram-size probing confirmed
    /// (wire-format §1.1); `None` without a session.
    #[serde(default)]
    pub datagram_size: Option<usize>,
    /// Datagram-size probes the peer acknowledged (each confirms a larger
    /// size), over all sessions with the peer.
    #[serde(default)]
    pub size_probes_confirmed: u64,
    /// Datagram-size probes lost (three losses rule a size out).
    #[serde(default)]
    pub size_probes_lost: u64,
    /// Falls back to the base size because larger datagrams stopped
    /// arriving (a black hole on the path).
    #[serde(default)]
    pub size_black_holes: u64,
    /// Milliseconds since the last valid datagram from the peer.
    pub last_seen_ms_ago: Option<u64>,
    /// Bytes waiting for the peer: queued plus unacknowledged.
    pub queued_bytes: usize,
    /// Why the last connection attempt or session failed, if it did.
    pub last_error: Option<String>,
}

/// One plugin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginState {
    /// Its name.
    pub name: String,
    /// Events dropped because its queue was full.
    pub events_dropped: u64,
    /// Hook calls that panicked.
    pub panics: u64,
}

/// Drop and error counters. Every datagram or message the node discards is
/// counted in exactly one of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams that were not valid KCP (truncated, bad header, wrong conv).
    pub malformed_datagrams: u64,
    /// Valid-looking datagrams for no session that could not open one.
    pub unknown_session_datagrams: u64,
    /// Inbound sessions refused: unknown peers refused by config, or their
    /// source IP already holds `max_inbound_sessions_per_ip`.
    pub refused_sessions: u64,
    /// Sessions from peers outside the route table closed to make room for
    /// a new one when `max_inbound_sessions` were open (the least recently
    /// active first).
    #[serde(default)]
    pub evicted_sessions: u64,
    /// The losing half of a simultaneous open: a session opener dropped as
    /// stale (plaintext; or a late copy of an opener from a peer already
    /// connected), or a completed handshake dropped because the other
    /// direction's wins (encrypted).
    pub simultaneous_open_drops: u64,
    /// Messages dropped for a bad checksum.
    pub checksum_failures: u64,
    /// Messages dropped because `sender` differed from the peer's hello.
    pub wrong_sender: u64,
    /// Sessions closed for a protocol violation (bad frame, oversized frame).
    pub protocol_errors: u64,
    /// Replies matching no outstanding request.
    pub unmatched_replies: u64,
    /// Socket send errors.
    pub send_errors: u64,
    /// Sends that found the socket's send buffer full and waited for room
    /// (nothing is lost: the node waits). Many: it sends faster than its
    /// link or its `socket_buffer_bytes` carry.
    #[serde(default)]
    pub send_buffer_full: u64,
    /// Sends refused because a peer's queue was full.
    pub queue_full: u64,
    /// Request handlers ([`Network::handle_requests`](crate::Network::handle_requests))
    /// that panicked; the request went to the plugins instead.
    #[serde(default)]
    pub handler_panics: u64,
    /// Sessions closed because the peer went silent or KCP gave up.
    pub dead_sessions: u64,
    /// Frames queued to a peer that was forgotten before a session to it
    /// was established (it never answered, or was deleted).
    pub abandoned_frames: u64,
    /// Session openers from a node of the other mode (plaintext vs
    /// encrypted), answered with a `Reject`.
    pub encryption_mismatches: u64,
    /// Our connection attempts the peer answered with a `Reject` (honoured
    /// once no answer of the peer overruled it within the grace).
    pub rejected_by_peer: u64,
    /// `Reject`s in a peer's name that the peer's own answer overruled
    /// within the grace: forged, or late from an earlier attempt.
    pub rejects_overruled: u64,
    /// Handshakes refused because the peer's key is not the pinned one.
    pub pin_mismatches: u64,
    /// Handshakes that proved another key at the address of a peer whose
    /// session is still live: refused (a key changes only once the old
    /// session is gone).
    #[serde(default)]
    pub key_conflicts: u64,
    /// Deletes by a plugin of a peer the application added, turned into a
    /// demotion (not writable until it answers again).
    #[serde(default)]
    pub demotions: u64,
    /// Peers added by address that came back under a new key once their
    /// old session was gone (a restart with a fresh identity).
    #[serde(default)]
    pub key_changes: u64,
    /// Handshake messages that did not authenticate or did not fit a
    /// handshake in progress.
    pub bad_handshakes: u64,
    /// Our handshakes that got no answer in time.
    pub handshake_timeouts: u64,
    /// Handshake initiations dropped: a retransmission answered less than
    /// 100 ms before, a new one on a cookie from an address that got one
    /// less than 100 ms before, or one to be asked for a cookie from a
    /// source IP that got its 50 cookie replies of the last 100 ms; and
    /// half-open handshakes evicted from a full table.
    pub throttled_handshakes: u64,
    /// Handshake initiations with a valid cookie dropped because the cookie
    /// key-exchange budget, or their source IP's share of it, was spent
    /// (the initiator's retransmission tries again).
    #[serde(default)]
    pub key_exchanges_refused: u64,
    /// Datagrams not sent to an address that has not proven it receives
    /// (a session or handshake it opened, unanswered), because it would
    /// have got more than three times the bytes it sent.
    #[serde(default)]
    pub amplification_drops: u64,
    /// Cookie replies sent instead of a key exchange: to initiators past
    /// the key-exchange budget or their IP's share of it, while the
    /// half-open table is half full, or from an address that already holds
    /// a half-open handshake without a cookie.
    pub cookies_sent: u64,
    /// Sealed datagrams that failed authentication (forged or corrupted).
    pub decrypt_failures: u64,
    /// Sealed datagrams rejected by the replay window (replayed or too old).
    pub replayed_datagrams: u64,
    /// Sessions closed to re-key before the nonce limit.
    pub rekeys: u64,
    /// Partially received messages dropped to keep all sessions' partial
    /// messages within `partial_frame_bytes` (the rest of each is skipped;
    /// the session goes on).
    #[serde(default)]
    pub partial_frames_dropped: u64,
    /// The bytes those held when dropped.
    #[serde(default)]
    pub partial_frame_bytes_dropped: u64,
    /// KCP segments beyond a gap neither held nor acknowledged: the
    /// session's share of `reorder_bytes` was full (the sender
    /// retransmits them).
    #[serde(default)]
    pub reorder_refused: u64,
    /// Handshakes completed (encrypted mode), each giving a session.
    #[serde(default)]
    pub handshakes_completed: u64,
    /// Peers' active paths moved to a new address by an authenticated,
    /// fresh datagram of their session (roaming, without a handshake).
    #[serde(default)]
    pub path_changes: u64,
    /// Authenticated datagrams from an address that is another live peer's
    /// path: delivered, but the path did not move.
    #[serde(default)]
    pub path_conflicts: u64,
    /// Observed-address reports sent to peers (one per established
    /// encrypted session, and one per path change).
    #[serde(default)]
    pub observations_sent: u64,
    /// Observed-address reports received from peers with a proven key.
    #[serde(default)]
    pub observations_received: u64,
    /// Observed-address reports whose body was not a canonical address:
    /// dropped.
    #[serde(default)]
    pub bad_observations: u64,
    /// As a relay: datagrams forwarded from one peer to another.
    #[serde(default)]
    pub relay_forwarded: u64,
    /// As a relay: bytes of the datagrams forwarded.
    #[serde(default)]
    pub relay_forwarded_bytes: u64,
    /// As a relay: requests to forward refused and dropped (this node does
    /// not relay, the target has no established session with it, the
    /// relayed pairs are at `relay_max_pairs`, the target's queue is full,
    /// or the request was malformed).
    #[serde(default)]
    pub relay_refused: u64,
    /// As a relay: datagrams dropped because their pair was over
    /// `relay_bytes_per_sec`.
    #[serde(default)]
    pub relay_rate_limited: u64,
    /// Datagrams of our sessions sent through a relay.
    #[serde(default)]
    pub relayed_out: u64,
    /// Datagrams of our sessions received through a relay.
    #[serde(default)]
    pub relayed_in: u64,
    /// Datagrams for a relayed path that could not go out: the relay's
    /// session is gone or not established, or its queue is full.
    #[serde(default)]
    pub relay_send_failures: u64,
    /// Dial by key: queries sent to peers ("do you have a session with
    /// this key?").
    #[serde(default)]
    pub lookups_sent: u64,
    /// Dial by key: queries of peers answered.
    #[serde(default)]
    pub lookups_answered: u64,
    /// Dial by key: lookups that found a path and dialled it.
    #[serde(default)]
    pub lookups_found: u64,
    /// Dial by key: lookups that found nothing (or could not start: no
    /// peer to ask, too many in flight).
    #[serde(default)]
    pub lookups_failed: u64,
    /// Dial by key: malformed, unexpected or duplicate lookup messages,
    /// dropped.
    #[serde(default)]
    pub bad_lookups: u64,
    /// Dial by key: direct dials that got no answer and went through a
    /// relay instead.
    #[serde(default)]
    pub relay_fallbacks: u64,
    /// Hole punching: rounds of probes sent to a relayed peer's candidate
    /// addresses.
    #[serde(default)]
    pub punch_attempts: u64,
    /// Hole punching: probe datagrams sent.
    #[serde(default)]
    pub punch_probes: u64,
    /// Hole punching: relayed peers whose path moved to a direct address
    /// (an authenticated datagram of the session arrived directly).
    #[serde(default)]
    pub punch_successes: u64,
    /// Hole punching: punches given up (every round done, or the peer
    /// never answered the `CONNECT`), the peer staying relayed.
    #[serde(default)]
    pub punch_failures: u64,
    /// Hole punching: malformed or unexpected coordination messages,
    /// dropped.
    #[serde(default)]
    pub bad_punches: u64,
}
