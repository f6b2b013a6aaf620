//! Relays (issue 13, item 4; `docs/nat.md`, `wire-format.md` §7.11).
//!
//! Node A with no direct path to node B, and a relay R that has encrypted
//! sessions with both, sends its A–B datagrams (the Noise handshake
//! packets and the sealed `Data` datagrams of the A–B session, byte for
//! byte) to R inside the A–R session, as messages of the reserved type
//! [`RELAY_TYPE`] naming B's static key. R forwards each to B inside the
//! R–B session, naming A's key. B takes the inner datagram as if it had
//! come from a *relay path*: an address of the discard-only prefix
//! `100::/64` (RFC 6666) that stands for "key A via relay R" and never
//! reaches a socket. So the rest of the endpoint (handshakes, sessions,
//! roaming) works on relayed paths unchanged, and what it sends to a relay
//! path is wrapped for the relay when it is flushed.
//!
//! R sees only sealed A–B bytes: the Noise session is end to end between A
//! and B, so R can neither read nor forge them (a changed byte fails
//! authentication at the receiver, `decrypt_failures`). A relayed datagram
//! never moves a direct path (see `Endpoint::on_data`): only a direct one
//! moves a relayed path to direct.
//!
//! A relaying node bounds its work: at most `relay_max_pairs` pairs of
//! keys at once and `relay_bytes_per_sec` bytes per second per pair (a
//! token bucket of one second's worth); anything beyond is dropped and
//! counted. The relayed datagrams ride R's KCP sessions, which are
//! reliable: a datagram R accepted is delivered once, in order, and the
//! A–B session's own KCP retransmits what R dropped.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::Bytes;
use rand::rngs::StdRng;

use super::peer::{Link, PeerId};
use super::{table, Endpoint, HashMap};
use crate::api::Origin;
use crate::crypto::{self, Kind, PublicKey};
use crate::error::NetworkError;
use crate::session::EncodedFrame;
use crate::wire::{Frame, Message};

/// The message type of a relayed datagram. Body: one byte of direction
/// ([`FORWARD`] to the relay, [`FORWARDED`] from it), a 32-byte static key
/// (the destination in a `FORWARD`, the source in a `FORWARDED`), then the
/// datagram.
pub(crate) const RELAY_TYPE: &str = "gladius.relay";
/// "Relay, please forward this to the key named."
pub(crate) const FORWARD: u8 = 0;
/// "The key named sent you this through me."
pub(crate) const FORWARDED: u8 = 1;
const KEY_LEN: usize = 32;
/// Direction byte and key.
pub(crate) const HEADER_LEN: usize = 1 + KEY_LEN;
/// Relay paths a node keeps (pairs of relay and remote key); beyond it,
/// paths no peer uses any more are dropped first.
const MAX_RELAY_PATHS: usize = 1024;
/// A relayed pair idle this long gives way to a new pair when the relay
/// is at `relay_max_pairs`.
const PAIR_IDLE_MS: u64 = 30_000;

/// Whether `addr` is a relay path (in `100::/64`).
pub(crate) fn is_relay_addr(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => a.ip().segments()[..4] == [0x100, 0, 0, 0],
        SocketAddr::V4(_) => false,
    }
}

/// The `n`th relay path address.
fn relay_addr(n: u64) -> SocketAddr {
    // Truncations intended: the four 16-bit pieces of `n`.
    #[allow(clippy::cast_possible_truncation)]
    let ip = Ipv6Addr::new(
        0x100,
        0,
        0,
        0,
        (n >> 48) as u16,
        (n >> 32) as u16,
        (n >> 16) as u16,
        n as u16,
    );
    SocketAddr::V6(SocketAddrV6::new(ip, 1, 0, 0))
}

/// What a relay path stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelayPath {
    /// The relay.
    pub(crate) relay: PeerId,
    /// The remote end's static key.
    pub(crate) key: PublicKey,
}

/// The relay paths a node uses (as A or B), both ways.
#[derive(Debug)]
pub(crate) struct RelayPaths {
    by_addr: HashMap<SocketAddr, RelayPath>,
    by_pair: HashMap<(PeerId, PublicKey), SocketAddr>,
    next: u64,
}

impl RelayPaths {
    pub(crate) fn new(rng: &mut StdRng) -> Self {
        Self {
            by_addr: table(rng),
            by_pair: table(rng),
            next: 0,
        }
    }

    pub(crate) fn get(&self, addr: SocketAddr) -> Option<RelayPath> {
        self.by_addr.get(&addr).copied()
    }

    fn remove(&mut self, addr: SocketAddr) {
        if let Some(p) = self.by_addr.remove(&addr) {
            self.by_pair.remove(&(p.relay, p.key));
        }
    }
}

/// One relayed pair at the relay: its byte bucket.
#[derive(Debug)]
struct Pair {
    tokens: u64,
    refilled_at: u64,
    last_used: u64,
}

/// A relay's pairs, by their two keys (smaller first).
#[derive(Debug)]
pub(crate) struct RelayPairs {
    pairs: HashMap<(PublicKey, PublicKey), Pair>,
}

/// Whether a relay forwards one datagram of a pair.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// No room for another pair.
    Full,
    /// The pair is over its byte rate.
    RateLimited,
}

impl RelayPairs {
    pub(crate) fn new(rng: &mut StdRng) -> Self {
        Self { pairs: table(rng) }
    }

    /// Pairs being relayed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    fn admit(
        &mut self,
        a: PublicKey,
        b: PublicKey,
        bytes: usize,
        now: u64,
        max_pairs: usize,
        rate: u64,
    ) -> Verdict {
        let pair = if a < b { (a, b) } else { (b, a) };
        if !self.pairs.contains_key(&pair) {
            if self.pairs.len() >= max_pairs {
                self.pairs
                    .retain(|_, p| now.saturating_sub(p.last_used) < PAIR_IDLE_MS);
            }
            if self.pairs.len() >= max_pairs {
                return Verdict::Full;
            }
            self.pairs.insert(
                pair,
                Pair {
                    tokens: rate,
                    refilled_at: now,
                    last_used: now,
                },
            );
        }
        let Some(p) = self.pairs.get_mut(&pair) else {
            return Verdict::Full;
        };
        let elapsed = now.saturating_sub(p.refilled_at);
        p.tokens = p
            .tokens
            .saturating_add(rate.saturating_mul(elapsed) / 1000)
            .min(rate);
        p.refilled_at = now;
        p.last_used = now;
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if p.tokens < bytes {
            return Verdict::RateLimited;
        }
        p.tokens -= bytes;
        Verdict::Pass
    }
}

/// Test only: what a relay does to each message it forwards (direction,
/// source key, datagram): a tampering, lying or eavesdropping relay.
#[cfg(test)]
pub(crate) struct RelayTap(pub(crate) Box<TapFn>);

/// The tap's function: sees (and may change) each forwarded datagram.
#[cfg(test)]
pub(crate) type TapFn = dyn FnMut(&mut Vec<u8>) + Send;

#[cfg(test)]
impl std::fmt::Debug for RelayTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayTap")
    }
}

impl Endpoint {
    /// Put the peer with static key `key` in the route table, reached
    /// through the peer at `relay` (which must have an established
    /// encrypted session with us, and relay). Returns the relay path that
    /// names it. See `Network::add_via_relay`.
    pub(crate) fn add_via_relay(
        &mut self,
        now: u64,
        key: PublicKey,
        relay: SocketAddr,
        by: Origin,
    ) -> Result<SocketAddr, NetworkError> {
        self.tick(now);
        let Some(own) = self.crypto.as_ref().map(|c| c.public_key()) else {
            return Err(NetworkError::NoPath(key));
        };
        let relay_id = self
            .peers
            .at(relay)
            .filter(|id| self.sealed_key(*id).is_some_and(|k| k != key && k != own));
        let Some(relay_id) = relay_id.filter(|_| key != own) else {
            return Err(NetworkError::NoRelay(relay));
        };
        let via = self
            .relay_path(relay_id, key)
            .ok_or(NetworkError::NoRelay(relay))?;
        self.add(now, via, Some(key), by)?;
        Ok(via)
    }

    /// The proven key of `id` if it has an established sealed session.
    pub(super) fn sealed_key(&self, id: PeerId) -> Option<PublicKey> {
        let peer = self.peers.get(id)?;
        match &peer.link {
            Link::Sealed { session, .. } if session.is_established() => peer.public_key,
            _ => None,
        }
    }

    /// The relay path for `key` via `relay`, made if new. `None` when the
    /// table is full of paths still in use.
    fn relay_path(&mut self, relay: PeerId, key: PublicKey) -> Option<SocketAddr> {
        if let Some(addr) = self.relay_paths.by_pair.get(&(relay, key)) {
            return Some(*addr);
        }
        if self.relay_paths.by_addr.len() >= MAX_RELAY_PATHS {
            let unused: Vec<SocketAddr> = self
                .relay_paths
                .by_addr
                .keys()
                .copied()
                .filter(|a| self.peers.at(*a).is_none())
                .collect();
            for a in unused {
                self.relay_paths.remove(a);
            }
            if self.relay_paths.by_addr.len() >= MAX_RELAY_PATHS {
                return None;
            }
        }
        self.relay_paths.next += 1;
        let addr = relay_addr(self.relay_paths.next);
        self.relay_paths
            .by_addr
            .insert(addr, RelayPath { relay, key });
        self.relay_paths.by_pair.insert((relay, key), addr);
        Some(addr)
    }

    /// `id`'s direct handshake failed: dial it through `relay` instead.
    /// False if the relay is gone.
    pub(super) fn fall_back_to_relay(&mut self, id: PeerId, relay: PeerId, key: PublicKey) -> bool {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.relay_fallback = None;
        }
        if self.sealed_key(relay).is_none() {
            return false;
        }
        let Some(via) = self.relay_path(relay, key) else {
            return false;
        };
        if self.peers.at(via).is_some_and(|other| other != id) {
            return false;
        }
        self.peers.add_path(id, via);
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        let direct = peer.active;
        peer.link = Link::Idle;
        peer.active = Some(via);
        peer.direct_candidates = direct.into_iter().collect();
        self.counters.relay_fallbacks += 1;
        tracing::debug!(%key, %via, "no answer directly: dialling through the relay");
        self.initiate(id);
        true
    }

    /// What the relay path `addr` stands for, if it is one.
    pub(super) fn relay_of(&self, addr: SocketAddr) -> Option<RelayPath> {
        self.relay_paths.get(addr)
    }

    /// Queue a reserved message of type `msg_type` to `id` on its
    /// established sealed session, within its queue bound. False if it
    /// could not be queued.
    pub(super) fn send_reserved(&mut self, id: PeerId, msg_type: &str, body: Vec<u8>) -> bool {
        let now = self.now();
        let Some(advertised) = self.advertised else {
            return false;
        };
        if self.sealed_key(id).is_none() {
            return false;
        }
        let Ok(mut msg) = Message::new(msg_type, body) else {
            return false;
        };
        msg.set_sender(advertised);
        let frame = EncodedFrame::new(&Frame::Message(msg));
        let limit = self.config.peer_queue_bytes;
        let Some(peer) = self.peers.get_mut(id) else {
            return false;
        };
        if peer.queued_bytes().saturating_add(frame.len()) > limit {
            return false;
        }
        let Some(session) = peer.session_mut() else {
            return false;
        };
        session.send_frame(now, &frame);
        self.touch(id);
        true
    }

    /// Send `datagram` (a handshake packet or a sealed datagram of ours)
    /// over the relay path `via`: to the relay, for the key it stands for.
    pub(super) fn send_relayed(&mut self, via: SocketAddr, datagram: &[u8]) {
        let Some(path) = self.relay_of(via) else {
            self.counters.relay_send_failures += 1;
            return;
        };
        let mut body = Vec::with_capacity(HEADER_LEN + datagram.len());
        body.push(FORWARD);
        body.extend_from_slice(path.key.as_bytes());
        body.extend_from_slice(datagram);
        if self.send_reserved(path.relay, RELAY_TYPE, body) {
            self.counters.relayed_out += 1;
        } else {
            self.counters.relay_send_failures += 1;
            tracing::debug!(%via, "relayed datagram not sent: the relay's session is not up");
        }
    }

    /// A [`RELAY_TYPE`] message from peer `from`, which proved `from_key`
    /// (encrypted sessions only; the caller checks).
    pub(super) fn on_relay_message(
        &mut self,
        from: PeerId,
        from_key: Option<PublicKey>,
        body: &Bytes,
    ) {
        let (Some(from_key), Some(direction), Some(key)) = (
            from_key,
            body.first().copied(),
            body.get(1..HEADER_LEN).and_then(PublicKey::from_slice),
        ) else {
            self.counters.relay_refused += 1;
            return;
        };
        let datagram = body.slice(HEADER_LEN..);
        match direction {
            FORWARD => self.forward(from, from_key, key, datagram),
            FORWARDED => self.relayed_in(from, from_key, key, &datagram),
            _ => self.counters.relay_refused += 1,
        }
    }

    /// As a relay: forward `datagram` from `from` (key `from_key`) to the
    /// peer with key `to_key`, within the limits.
    fn forward(&mut self, from: PeerId, from_key: PublicKey, to_key: PublicKey, datagram: Bytes) {
        let now = self.now();
        if !self.config.relay {
            self.counters.relay_refused += 1;
            tracing::debug!(%from_key, "relay request refused: this node does not relay");
            return;
        }
        let Some(to) = self
            .peers
            .with_key(&to_key)
            .filter(|id| *id != from && self.sealed_key(*id).is_some())
        else {
            self.counters.relay_refused += 1;
            tracing::debug!(%from_key, %to_key, "relay request refused: no session with the target");
            return;
        };
        let verdict = self.relay_pairs.admit(
            from_key,
            to_key,
            datagram.len(),
            now,
            self.config.relay_max_pairs,
            self.config.relay_bytes_per_sec,
        );
        match verdict {
            Verdict::Pass => {}
            Verdict::Full => {
                self.counters.relay_refused += 1;
                tracing::debug!(%from_key, %to_key, "relay request refused: relayed pairs full");
                return;
            }
            Verdict::RateLimited => {
                self.counters.relay_rate_limited += 1;
                return;
            }
        }
        let mut body = Vec::with_capacity(HEADER_LEN + datagram.len());
        body.push(FORWARDED);
        body.extend_from_slice(from_key.as_bytes());
        body.extend_from_slice(&datagram);
        #[cfg(test)]
        if let Some(tap) = self.relay_tap.as_mut() {
            (tap.0)(&mut body);
        }
        if self.config.relay_faults != (0, 0) && !self.relay_fault(&mut body) {
            return;
        }
        let len = datagram.len() as u64;
        if self.send_reserved(to, RELAY_TYPE, body) {
            self.counters.relay_forwarded += 1;
            self.counters.relay_forwarded_bytes += len;
        } else {
            self.counters.relay_refused += 1;
        }
    }

    /// The test-only misbehaving relay (`Config::with_relay_faults`):
    /// corrupt or drop a forwarded sealed `Data` datagram (`body` is the
    /// forwarded message: direction byte, key, datagram). `false`: drop it.
    fn relay_fault(&mut self, body: &mut [u8]) -> bool {
        const DATA: u8 = 0xE4;
        if body.get(HEADER_LEN) != Some(&DATA) || body.len() <= HEADER_LEN + 32 {
            return true;
        }
        self.relay_fault_count += 1;
        let (corrupt_every, drop_every) = self.config.relay_faults;
        let n = self.relay_fault_count;
        if drop_every > 0 && n % drop_every == 0 {
            return false;
        }
        if corrupt_every > 0 && n % corrupt_every == 0 {
            if let Some(last) = body.last_mut() {
                *last ^= 1;
            }
        }
        true
    }

    /// `relay` (key `relay_key`) brings us `datagram` from the peer with
    /// key `key`: handle it as if from the relay path.
    fn relayed_in(&mut self, relay: PeerId, relay_key: PublicKey, key: PublicKey, datagram: &[u8]) {
        let own = self.crypto.as_ref().map(|c| c.public_key());
        // Our own key, or the relay's: nothing to do with a relayed path.
        if Some(key) == own || key == relay_key {
            self.counters.relay_refused += 1;
            return;
        }
        let Some(via) = self.relay_path(relay, key) else {
            self.counters.relay_refused += 1;
            return;
        };
        self.counters.relayed_in += 1;
        match crypto::classify(datagram) {
            Kind::Encrypted(_) => self.handle_encrypted(via, datagram),
            Kind::Plaintext | Kind::Garbage => self.counters.malformed_datagrams += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use rand::SeedableRng;

    fn key(k: u8) -> PublicKey {
        Identity::from_private_bytes([k; 32]).public_key()
    }

    #[test]
    fn relay_addresses_are_in_the_discard_prefix_and_only_they() {
        assert!(is_relay_addr(relay_addr(1)));
        assert!(is_relay_addr(relay_addr(u64::MAX)));
        assert_ne!(relay_addr(1), relay_addr(2));
        assert!(!is_relay_addr("[2001:db8::1]:1".parse().unwrap()));
        assert!(!is_relay_addr("[100:0:0:1::1]:1".parse().unwrap()));
        assert!(!is_relay_addr("10.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn pairs_are_bounded_in_number_and_bytes_per_second() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pairs = RelayPairs::new(&mut rng);
        let (a, b, c) = (key(1), key(2), key(3));
        // 1000 bytes a second, two pairs.
        assert_eq!(pairs.admit(a, b, 600, 0, 2, 1000), Verdict::Pass);
        assert_eq!(pairs.admit(b, a, 400, 0, 2, 1000), Verdict::Pass);
        assert_eq!(pairs.admit(a, b, 1, 0, 2, 1000), Verdict::RateLimited);
        // Half a second refills half.
        assert_eq!(pairs.admit(a, b, 500, 500, 2, 1000), Verdict::Pass);
        assert_eq!(pairs.admit(a, b, 1, 500, 2, 1000), Verdict::RateLimited);
        assert_eq!(pairs.admit(a, c, 1, 500, 2, 1000), Verdict::Pass);
        assert_eq!(pairs.admit(b, c, 1, 500, 2, 1000), Verdict::Full);
        assert_eq!(pairs.len(), 2);
        // Idle pairs give way.
        assert_eq!(
            pairs.admit(b, c, 1, 500 + PAIR_IDLE_MS, 2, 1000),
            Verdict::Pass
        );
        assert_eq!(pairs.len(), 1);
    }
}
