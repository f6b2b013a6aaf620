//! The trace digest: a BLAKE2s hash folded over every event of a run in
//! the order it happened — each delivered datagram as (time in µs, source,
//! destination, length) and each lifecycle event (bind, crash, partition,
//! heal). Two runs with the same digest delivered the same datagrams at
//! the same virtual times. Lengths rather than contents are hashed: the
//! contents of encrypted datagrams differ between runs (ephemeral Noise
//! keys come from the OS), their sizes and timing do not.

use std::net::SocketAddr;

use blake2::{Blake2s256, Digest};

/// A lifecycle event in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Bind = 1,
    Crash = 2,
    Partition = 3,
    Heal = 4,
}

/// The running hash of a trace.
#[derive(Debug, Clone)]
pub(crate) struct TraceDigest {
    hash: Blake2s256,
}

const DATAGRAM: u8 = 0;

impl TraceDigest {
    pub(crate) fn new() -> Self {
        Self {
            hash: Blake2s256::new(),
        }
    }

    pub(crate) fn datagram(&mut self, at_us: u64, from: SocketAddr, to: SocketAddr, len: usize) {
        self.hash.update([DATAGRAM]);
        self.hash.update(at_us.to_le_bytes());
        self.addr(from);
        self.addr(to);
        self.hash.update((len as u64).to_le_bytes());
    }

    pub(crate) fn lifecycle(&mut self, at_us: u64, event: Lifecycle, addr: SocketAddr) {
        self.hash.update([event as u8]);
        self.hash.update(at_us.to_le_bytes());
        self.addr(addr);
    }

    pub(crate) fn lifecycle_n(&mut self, at_us: u64, event: Lifecycle, n: usize) {
        self.hash.update([event as u8]);
        self.hash.update(at_us.to_le_bytes());
        self.hash.update((n as u64).to_le_bytes());
    }

    fn addr(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => self.hash.update(a.ip().octets()),
            SocketAddr::V6(a) => self.hash.update(a.ip().octets()),
        }
        self.hash.update(addr.port().to_le_bytes());
    }

    /// The digest so far, as lowercase hex.
    pub(crate) fn hex(&self) -> String {
        self.hash
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
