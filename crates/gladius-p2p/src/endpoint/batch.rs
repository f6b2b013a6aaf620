//! Datagrams gathered so they leave in few socket calls: a run of
//! datagrams of one size to one peer is one [`Transmit`], which the driver
//! sends with one UDP segmentation-offload call (see
//! [`DatagramSocket::poll_send_segments`](crate::socket::DatagramSocket::poll_send_segments)).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::crypto::packet::DATA_OVERHEAD;
use crate::crypto::{ChannelError, SecureChannel};

/// Most bytes one batch carries: a GSO send is one UDP packet to the
/// kernel, whose payload must stay under 64 KiB.
const MAX_BATCH_BYTES: usize = 65_000;
/// Spare batch buffers kept for reuse; enough for one wake-up's flush to
/// a few dozen peers without allocating.
const FREE_BUFFERS: usize = 64;

/// One socket call's worth of datagrams: `count` datagrams of
/// `segment_size` bytes to `to`, back to back in `payload` (the last one
/// may be shorter).
#[derive(Debug)]
pub(crate) struct Transmit {
    /// Where they go.
    pub(crate) to: SocketAddr,
    /// The size of every datagram but the last.
    pub(crate) segment_size: usize,
    /// How many datagrams.
    pub(crate) count: usize,
    /// The datagrams.
    pub(crate) payload: Vec<u8>,
}

/// Batches being built and batches ready for the socket.
#[derive(Debug, Default)]
pub(super) struct TransmitQueue {
    ready: VecDeque<Transmit>,
    /// The run being built.
    current: Option<Transmit>,
    /// A shorter datagram ended the current run; nothing may follow it.
    ended: bool,
    free: Vec<Vec<u8>>,
}

impl TransmitQueue {
    /// Whether a datagram of `len` bytes to `to` can join the current run.
    fn accepts(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.current.as_ref().is_some_and(|t| {
            t.to == to
                && !self.ended
                && t.count < max_segments
                && len <= t.segment_size
                && t.payload.len() + len <= MAX_BATCH_BYTES
        })
    }

    /// Append a datagram to `to`, starting a new run when it cannot join
    /// the current one.
    pub(super) fn push(&mut self, to: SocketAddr, datagram: &[u8], max_segments: usize) {
        self.append(to, datagram.len(), max_segments)
            .extend_from_slice(datagram);
    }

    /// Make room for a datagram of `len` bytes to `to` (starting a new run
    /// when it cannot join the current one) and count it; the caller
    /// appends exactly `len` bytes to the buffer returned.
    fn append(&mut self, to: SocketAddr, len: usize, max_segments: usize) -> &mut Vec<u8> {
        if !self.accepts(to, len, max_segments) {
            self.end_run();
        }
        let free = &mut self.free;
        let t = self.current.get_or_insert_with(|| Transmit {
            to,
            segment_size: len,
            count: 0,
            payload: free.pop().unwrap_or_default(),
        });
        if len < t.segment_size {
            self.ended = true;
        }
        t.count += 1;
        &mut t.payload
    }

    /// Seal `datagram` with `channel` and append it like [`push`](Self::push),
    /// sealing straight into the batch.
    pub(super) fn push_sealed(
        &mut self,
        to: SocketAddr,
        channel: &mut SecureChannel,
        datagram: &[u8],
        max_segments: usize,
    ) -> Result<(), ChannelError> {
        let len = datagram.len().saturating_add(DATA_OVERHEAD);
        let payload = self.append(to, len, max_segments);
        let result = channel.seal_append(datagram, payload);
        if result.is_err() {
            self.unappend();
        }
        result
    }

    /// Take back the datagram [`append`](Self::append) just counted, whose
    /// bytes were not written.
    fn unappend(&mut self) {
        let Some(t) = self.current.as_mut() else {
            return;
        };
        t.count -= 1;
        if t.count == 0 {
            if let Some(t) = self.current.take() {
                self.recycle(t);
            }
            self.ended = false;
        } else if t.payload.len() % t.segment_size == 0 {
            // Every datagram left is full size: the run may go on.
            self.ended = false;
        }
    }

    /// Close the current run: the next datagram starts a new batch.
    pub(super) fn end_run(&mut self) {
        if let Some(t) = self.current.take() {
            self.ready.push_back(t);
        }
        self.ended = false;
    }

    /// The oldest finished batch.
    pub(super) fn pop(&mut self) -> Option<Transmit> {
        self.ready.pop_front()
    }

    /// Keep a sent batch's buffer for a later one.
    pub(super) fn recycle(&mut self, transmit: Transmit) {
        let mut buf = transmit.payload;
        if self.free.len() < FREE_BUFFERS {
            buf.clear();
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn drain(q: &mut TransmitQueue) -> Vec<(u16, usize, usize, usize)> {
        q.end_run();
        std::iter::from_fn(|| q.pop())
            .map(|t| (t.to.port(), t.segment_size, t.count, t.payload.len()))
            .collect()
    }

    #[test]
    fn a_batch_holds_one_size_to_one_peer_and_ends_with_a_shorter_datagram() {
        let mut q = TransmitQueue::default();
        q.push(addr(1), &[1; 100], 4);
        q.push(addr(1), &[2; 100], 4);
        q.push(addr(1), &[3; 40], 4);
        q.push(addr(1), &[4; 40], 4); // nothing follows the shorter last one
        q.push(addr(1), &[5; 101], 4);
        q.push(addr(2), &[6; 101], 4); // another peer
        assert_eq!(
            drain(&mut q),
            vec![
                (1, 100, 3, 240),
                (1, 40, 1, 40),
                (1, 101, 1, 101),
                (2, 101, 1, 101)
            ]
        );
    }

    #[test]
    fn a_batch_respects_the_segment_and_byte_limits() {
        let mut q = TransmitQueue::default();
        q.push(addr(1), &[0; 1400], 1);
        q.push(addr(1), &[0; 1400], 1);
        assert_eq!(drain(&mut q), vec![(1, 1400, 1, 1400), (1, 1400, 1, 1400)]);
        for _ in 0..47 {
            q.push(addr(1), &[0; 1400], 64);
        }
        // 46 × 1400 = 64,400 bytes; one more would pass 65,000.
        assert_eq!(
            drain(&mut q),
            vec![(1, 1400, 46, 64_400), (1, 1400, 1, 1400)]
        );
    }
}
