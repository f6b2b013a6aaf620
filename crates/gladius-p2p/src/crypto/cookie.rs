//! Load protection for responders: WireGuard-style cookies.
//!
//! A responder under load (its half-open handshake table over a threshold)
//! answers an `Init` with a `Cookie` packet instead of doing the Diffie-Hellman
//! work of a `Response`, and from then on only accepts `Init`s that carry a
//! valid cookie. The initiator re-sends its `Init` with the cookie
//! ([`Initiator::with_cookie`]); since only a host that receives packets at
//! its source address can learn the cookie, a spoofed flood of `Init`s costs
//! the responder one MAC each and no state.
//!
//! A cookie is `BLAKE2s-MAC-128(secret, addr_bytes | bucket u64 LE)` where
//! `bucket = now / COOKIE_ROTATION_MS`, `secret` is a random 32-byte key
//! drawn for each bucket, and `addr_bytes` is the initiator's source address
//! as `4 | IPv4 (4) | port u16 LE` or `6 | IPv6 (16) | port u16 LE`. A
//! cookie verifies during its own bucket and the next one (so it lives 2 to 4
//! minutes), after which its secret is gone.
//!
//! The cookie packet itself travels in the clear: an on-path attacker can
//! read it, but it could equally receive at the spoofed address.
//!
//! [`Initiator::with_cookie`]: super::Initiator::with_cookie

use std::fmt;
use std::net::SocketAddr;

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac as _};
use blake2::Blake2sMac;
use rand::RngCore as _;

/// Length of a cookie.
pub const COOKIE_LEN: usize = 16;

/// How long each cookie secret is used for, in milliseconds (2 minutes).
pub const COOKIE_ROTATION_MS: u64 = 120_000;

/// Cookie secrets, rotated as time passes.
pub struct CookieJar {
    /// Secret of the current bucket.
    current: [u8; 32],
    /// Secret of the bucket before, if it was in use.
    previous: Option<[u8; 32]>,
    /// The current bucket (`None` before first use).
    bucket: Option<u64>,
}

/// Cookie secrets are wiped from memory when the jar is dropped.
impl Drop for CookieJar {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.current);
        if let Some(previous) = self.previous.as_mut() {
            zeroize::Zeroize::zeroize(previous);
        }
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Default for CookieJar {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieJar {
    /// A jar whose first secret is drawn on first use.
    pub fn new() -> Self {
        Self {
            current: [0; 32],
            previous: None,
            bucket: None,
        }
    }

    /// The cookie for an initiator at `addr`, valid from now until the end
    /// of the next bucket.
    pub fn cookie(&mut self, addr: SocketAddr, now: u64) -> [u8; COOKIE_LEN] {
        let bucket = self.rotate(now);
        mac(&self.current, addr, bucket)
    }

    /// Whether `cookie` is one this jar gave `addr` in the current or the
    /// previous bucket. Constant time in the cookie's contents.
    pub fn verify(&mut self, addr: SocketAddr, cookie: &[u8; COOKIE_LEN], now: u64) -> bool {
        let bucket = self.rotate(now);
        let current = ct_eq(&mac(&self.current, addr, bucket), cookie);
        let previous = match (self.previous, bucket.checked_sub(1)) {
            (Some(secret), Some(prev)) => ct_eq(&mac(&secret, addr, prev), cookie),
            _ => false,
        };
        current | previous
    }

    /// Move to the bucket of `now`, drawing secrets as needed; returns it.
    /// Time going backwards keeps the current bucket.
    fn rotate(&mut self, now: u64) -> u64 {
        let bucket = now / COOKIE_ROTATION_MS;
        match self.bucket {
            Some(b) if bucket <= b => b,
            Some(b) => {
                self.previous = (bucket == b + 1).then_some(self.current);
                self.current = fresh_secret();
                self.bucket = Some(bucket);
                bucket
            }
            None => {
                self.current = fresh_secret();
                self.previous = None;
                self.bucket = Some(bucket);
                bucket
            }
        }
    }

    /// A jar with fixed secrets, for tests.
    #[cfg(test)]
    pub(crate) fn with_secret(secret: [u8; 32], now: u64) -> Self {
        Self {
            current: secret,
            previous: None,
            bucket: Some(now / COOKIE_ROTATION_MS),
        }
    }
}

fn fresh_secret() -> [u8; 32] {
    let mut secret = [0; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The cookie MAC.
fn mac(secret: &[u8; 32], addr: SocketAddr, bucket: u64) -> [u8; COOKIE_LEN] {
    // A 32-byte key is always valid for BLAKE2s; the fallback is unreachable.
    let Ok(mut mac) = <Blake2sMac<U16> as KeyInit>::new_from_slice(secret) else {
        return [0xff; COOKIE_LEN];
    };
    match addr {
        SocketAddr::V4(a) => {
            mac.update(&[4]);
            mac.update(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            mac.update(&[6]);
            mac.update(&a.ip().octets());
        }
    }
    mac.update(&addr.port().to_le_bytes());
    mac.update(&bucket.to_le_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two cookies.
fn ct_eq(a: &[u8; COOKIE_LEN], b: &[u8; COOKIE_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u64 = COOKIE_ROTATION_MS;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn current_and_previous_bucket_accepted() {
        let a = addr("192.0.2.1:7001");
        let mut jar = CookieJar::new();
        let c = jar.cookie(a, 5 * R + 10);
        assert!(jar.verify(a, &c, 5 * R + 10));
        assert!(jar.verify(a, &c, 6 * R - 1));
        assert!(jar.verify(a, &c, 6 * R), "previous bucket");
        assert!(jar.verify(a, &c, 7 * R - 1), "previous bucket");
        assert!(!jar.verify(a, &c, 7 * R), "two buckets old");
        // A fresh cookie works again.
        let c2 = jar.cookie(a, 7 * R);
        assert_ne!(c, c2);
        assert!(jar.verify(a, &c2, 7 * R + 1));
    }

    #[test]
    fn other_addresses_and_forgeries_rejected() {
        let a = addr("192.0.2.1:7001");
        let mut jar = CookieJar::new();
        let c = jar.cookie(a, 0);
        assert!(jar.verify(a, &c, 1));
        assert!(!jar.verify(addr("192.0.2.1:7002"), &c, 1));
        assert!(!jar.verify(addr("192.0.2.2:7001"), &c, 1));
        assert!(!jar.verify(addr("[::ffff:192.0.2.1]:7001"), &c, 1));
        assert!(!jar.verify(a, &[0; COOKIE_LEN], 1));
        let mut flipped = c;
        flipped[15] ^= 1;
        assert!(!jar.verify(a, &flipped, 1));
        // Another jar's cookie (another secret) is rejected.
        let mut other = CookieJar::new();
        assert!(!jar.verify(a, &other.cookie(a, 0), 1));
    }

    #[test]
    fn long_gap_forgets_both_secrets() {
        let a = addr("[2001:db8::1]:9000");
        let mut jar = CookieJar::new();
        let c = jar.cookie(a, 0);
        assert!(!jar.verify(a, &c, 10 * R));
        // Time going backwards does not resurrect anything.
        assert!(!jar.verify(a, &c, 0));
    }

    #[test]
    fn deterministic_with_fixed_secret() {
        let a = addr("127.0.0.1:7001");
        let mut j1 = CookieJar::with_secret([3; 32], 0);
        let mut j2 = CookieJar::with_secret([3; 32], 0);
        assert_eq!(j1.cookie(a, 0), j2.cookie(a, 0));
        assert_ne!(j1.cookie(a, 0), [0; COOKIE_LEN]);
    }
}
