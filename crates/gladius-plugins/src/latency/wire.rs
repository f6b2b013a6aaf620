//! The bodies of `latency.ping` requests and `latency.pong` replies.
//!
//! Both are postcard-encoded structs whose first field is a version byte
//! (currently [`WIRE_VERSION`] = 1). A later version may only **append**
//! fields: postcard ignores trailing bytes, so an old node still reads the
//! prefix it knows and answers. Bodies come from the network and are decoded
//! without panicking; anything that does not decode is counted and ignored.

use serde::{Deserialize, Serialize};

/// Message type of a ping (always sent as a request).
pub const PING_TYPE: &str = "latency.ping";
/// Message type of a pong (the reply to a ping).
pub const PONG_TYPE: &str = "latency.pong";
/// The body version this node writes.
pub const WIRE_VERSION: u8 = 1;
/// Bodies longer than this are not even decoded.
pub(crate) const MAX_BODY: usize = 1024;

/// A ping: version and a nonce the pong must echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ping {
    pub(crate) version: u8,
    pub(crate) nonce: u64,
}

/// A pong: version and the ping's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pong {
    pub(crate) version: u8,
    pub(crate) nonce: u64,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Encoding a struct of a u8 and a u64 into a Vec cannot fail.
    postcard::to_stdvec(v).unwrap_or_default()
}

/// Decode a body of a version ≥ 1 (newer versions append fields).
pub(crate) fn decode<'a, T: Deserialize<'a> + Versioned>(body: &'a [u8]) -> Option<T> {
    if body.len() > MAX_BODY {
        return None;
    }
    let v: T = postcard::from_bytes(body).ok()?;
    (v.version() >= 1).then_some(v)
}

pub(crate) trait Versioned {
    fn version(&self) -> u8;
}
impl Versioned for Ping {
    fn version(&self) -> u8 {
        self.version
    }
}
impl Versioned for Pong {
    fn version(&self) -> u8 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_forward_compatible() {
        let p = Ping {
            version: 1,
            nonce: 0xdead_beef,
        };
        let mut b = encode(&p);
        assert_eq!(decode::<Ping>(&b), Some(p));
        // A future version appends a field: still readable.
        b[0] = 2;
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode::<Ping>(&b).map(|p| p.nonce), Some(0xdead_beef));
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert_eq!(decode::<Ping>(&[]), None);
        assert_eq!(decode::<Ping>(&[1]), None);
        assert_eq!(decode::<Ping>(&[0, 5]), None); // version 0
        assert_eq!(decode::<Pong>(&[1, 0xff, 0xff]), None); // truncated varint
        assert_eq!(decode::<Pong>(&vec![1u8; 4096]), None);
        for i in 0..=255u8 {
            let _ = decode::<Pong>(&[i, i, i, i, i, i, i, i, i, i, i]);
        }
    }
}
