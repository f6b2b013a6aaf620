//! Packing segments into datagrams of at most `limit` bytes (the `mtu`, or a
//! multiple of it once larger datagrams are confirmed, see [`crate::pmtu`]),
//! as ikcp's flush does with its `buffer`, and queueing the datagrams for
//! `poll_transmit`.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::segment::{SegmentHeader, HEADER_LEN};

/// Datagrams' worth of buffer allocated at once: each datagram handed out is
/// a `Bytes` slice of a shared block, so allocation is amortized.
const BLOCK_DATAGRAMS: usize = 4;

#[derive(Debug)]
pub(crate) struct Packer {
    /// The base size (sizes the shared blocks).
    mtu: usize,
    /// Largest ordinary datagram.
    limit: usize,
    /// Largest size of the datagram being filled (`limit`, or a probe's).
    current_limit: usize,
    /// The datagram being filled (and spare capacity for the next ones).
    current: BytesMut,
    ready: VecDeque<Bytes>,
    /// If the caller stops draining, datagrams beyond this are dropped, as a
    /// full network queue would: KCP retransmits them, and memory stays bounded.
    max_ready: usize,
    /// Datagrams produced (stats).
    produced: u64,
}

impl Packer {
    pub(crate) fn new(mtu: usize, max_ready: usize) -> Self {
        Self {
            mtu,
            limit: mtu,
            current_limit: mtu,
            current: BytesMut::new(),
            ready: VecDeque::new(),
            max_ready,
            produced: 0,
        }
    }

    /// Append a segment, first closing the current datagram if the segment
    /// does not fit in it.
    pub(crate) fn push(&mut self, header: &SegmentHeader, payload: &[u8]) {
        let need = HEADER_LEN.saturating_add(payload.len());
        if self.current.len().saturating_add(need) > self.current_limit {
            self.finish();
        }
        let want = self.current_limit.max(need);
        if self.current.is_empty() && self.current.capacity() < want {
            self.current
                .reserve(want.max(self.mtu.saturating_mul(BLOCK_DATAGRAMS)));
        }
        let header = SegmentHeader {
            len: payload.len() as u32,
            ..*header
        };
        self.current.put_slice(&header.to_bytes());
        self.current.put_slice(payload);
    }

    /// Set the largest ordinary datagram (at least the mtu). A datagram
    /// being filled past it is closed.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(self.mtu);
        if self.current.len() > self.limit {
            self.finish();
        }
        self.current_limit = self.limit;
    }

    /// Close the current datagram and let the next one grow to `limit`
    /// bytes (a probe); the one after it is ordinary again.
    pub(crate) fn start_probe(&mut self, limit: usize) {
        self.finish();
        self.current_limit = limit.max(self.mtu);
    }

    /// Close the current datagram, if any.
    pub(crate) fn finish(&mut self) {
        self.current_limit = self.limit;
        if self.current.is_empty() {
            return;
        }
        let datagram = self.current.split().freeze();
        if self.ready.len() < self.max_ready {
            self.ready.push_back(datagram);
            self.produced = self.produced.saturating_add(1);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Let go of the block if nothing is packed or queued, so an idle
    /// endpoint holds no buffer. A busy one keeps it between flushes: once
    /// the datagrams cut from it are dropped, the next `push` reuses it in
    /// place (`BytesMut::reserve` on a block no one else holds), where a
    /// block freed after every drain cost an allocation and a free per
    /// flush (a request's and its reply's, on the path of every round trip).
    pub(crate) fn release(&mut self) {
        if self.ready.is_empty() && self.current.is_empty() {
            self.current = BytesMut::new();
        }
    }

    /// Bytes of buffer held.
    pub(crate) fn held(&self) -> usize {
        self.current.capacity()
    }

    pub(crate) fn produced(&self) -> u64 {
        self.produced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{parse_datagram, Command};

    fn ack(sn: u32) -> SegmentHeader {
        SegmentHeader {
            conv: 1,
            cmd: Command::Ack,
            frg: 0,
            wnd: 0,
            ts: 0,
            sn,
            una: 0,
            len: 0,
        }
    }

    #[test]
    fn packs_up_to_mtu() -> Result<(), Box<dyn std::error::Error>> {
        let mut p = Packer::new(100, 16);
        for sn in 0..10 {
            p.push(&ack(sn), &[]);
        }
        p.finish();
        let mut sns = Vec::new();
        while let Some(d) = p.pop() {
            assert!(d.len() <= 100);
            for seg in parse_datagram(&d) {
                sns.push(seg?.0.sn);
            }
        }
        assert_eq!(sns, (0..10).collect::<Vec<_>>());
        assert_eq!(p.produced(), 3); // 4 + 4 + 2 segments of 24 bytes
        Ok(())
    }

    #[test]
    fn a_probe_grows_one_datagram_then_the_limit_applies_again() {
        let mut p = Packer::new(48, 16); // two 24-byte segments per datagram
        p.push(&ack(0), &[]);
        p.start_probe(96);
        for sn in 1..=6 {
            p.push(&ack(sn), &[]);
        }
        p.finish();
        let sizes: Vec<usize> = std::iter::from_fn(|| p.pop()).map(|d| d.len()).collect();
        assert_eq!(sizes, vec![24, 96, 48]);
        p.set_limit(72);
        for sn in 0..4 {
            p.push(&ack(sn), &[]);
        }
        p.finish();
        let sizes: Vec<usize> = std::iter::from_fn(|| p.pop()).map(|d| d.len()).collect();
        assert_eq!(sizes, vec![72, 24]);
    }

    #[test]
    fn a_drained_block_is_reused_in_place_and_released_only_when_asked() {
        let mut p = Packer::new(100, 16);
        p.push(&ack(0), &[]);
        p.finish();
        let base = p.pop().map_or(0, |d| d.as_ptr() as usize);
        assert!(p.pop().is_none());
        assert!(p.held() > 0, "a drained packer keeps its block");
        let block = 100 * BLOCK_DATAGRAMS;
        // The next flush packs into the rest of the same block.
        for sn in 1..=12 {
            p.push(&ack(sn), &[]);
        }
        p.finish();
        while let Some(d) = p.pop() {
            let at = d.as_ptr() as usize;
            assert!(
                (base..base + block).contains(&at),
                "a new block was allocated"
            );
        }
        // The rest is too short for a datagram now; the datagrams cut from
        // the block are gone, so it is taken back from its start.
        p.push(&ack(13), &[]);
        p.finish();
        assert_eq!(p.pop().map(|d| d.as_ptr() as usize), Some(base));
        // Not released while datagrams wait.
        for sn in 14..=18 {
            p.push(&ack(sn), &[]);
        }
        p.finish();
        assert!(p.pop().is_some());
        p.release();
        assert!(p.held() > 0);
        while p.pop().is_some() {}
        p.release();
        assert_eq!(p.held(), 0);
        // A held datagram keeps its bytes after the release.
        p.push(&ack(20), &[]);
        p.finish();
        let kept = p.pop();
        p.release();
        let sns: Vec<u32> = kept
            .iter()
            .flat_map(|d| parse_datagram(d))
            .filter_map(|seg| seg.ok().map(|(h, _)| h.sn))
            .collect();
        assert_eq!(sns, vec![20]);
    }

    #[test]
    fn bounded_when_not_drained() {
        let mut p = Packer::new(50, 2);
        for sn in 0..10 {
            p.push(&ack(sn), &[]);
            p.finish();
        }
        assert_eq!(p.produced(), 2);
    }
}
