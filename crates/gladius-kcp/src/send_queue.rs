//! The send queue: bytes accepted by `send` that have no sequence number
//! yet, cut into mss-sized segments when the window lets them go.
//!
//! Large writes are kept as the caller's `Bytes` and segments are cut as
//! zero-copy slices of them; small writes are coalesced into one tail
//! buffer (copied once), so that many small messages still share segments
//! without a chunk each. A segment is copied only where it spans chunks.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    /// Whole chunks, oldest first; all of them come before `tail`.
    chunks: VecDeque<Bytes>,
    /// Small writes since the last chunk, coalesced.
    tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    len: usize,
}

impl SendQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append a copy of `data`.
    pub(crate) fn push_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Append `data`; kept without copying when it is at least `min_chunk`
    /// bytes (callers pass the mss: anything shorter is cheaper to copy
    /// than to keep as a chunk of its own).
    pub(crate) fn push_bytes(&mut self, data: Bytes, min_chunk: usize) {
        if data.len() < min_chunk {
            return self.push_slice(&data);
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Take the next `n` bytes (fewer if fewer are queued) as one segment.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        if let Some(front) = self.chunks.front_mut() {
            if front.len() > n {
                return front.split_to(n);
            }
            if front.len() == n {
                return self.chunks.pop_front().unwrap_or_default();
            }
        } else if self.tail.len() == n && self.tail.capacity() == n {
            // The whole tail, exactly the size of its block (one write
            // into an empty queue: a lone request or reply), as it is: no
            // split, which would give the block a shared header (one more
            // allocation). A tail with room to spare is split instead, so
            // that the writes after it fill that room.
            return std::mem::take(&mut self.tail).freeze();
        } else {
            let segment = self.tail.split_to(n).freeze();
            if self.tail.is_empty() {
                // Release the tail's block so an idle endpoint holds none.
                self.tail = BytesMut::new();
            }
            return segment;
        }
        // The segment spans chunks (or the last chunk and the tail).
        let mut segment = BytesMut::with_capacity(n);
        while segment.len() < n {
            let want = n - segment.len();
            match self.chunks.front_mut() {
                Some(front) if front.len() > want => {
                    segment.extend_from_slice(&front.split_to(want));
                }
                Some(_) => {
                    if let Some(front) = self.chunks.pop_front() {
                        segment.extend_from_slice(&front);
                    }
                }
                None => {
                    let take = want.min(self.tail.len());
                    segment.extend_from_slice(&self.tail.split_to(take));
                    if self.tail.is_empty() {
                        self.tail = BytesMut::new();
                    }
                    if take < want {
                        break; // cannot happen: `len` counts every byte
                    }
                }
            }
        }
        segment.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_the_byte_order_across_chunks_and_small_writes() {
        let mut q = SendQueue::default();
        let mut expected = Vec::new();
        let mut push = |q: &mut SendQueue, data: Vec<u8>, as_bytes: bool| {
            expected.extend_from_slice(&data);
            if as_bytes {
                q.push_bytes(Bytes::from(data), 10);
            } else {
                q.push_slice(&data);
            }
        };
        push(&mut q, (0..5).collect(), false);
        push(&mut q, (5..40).collect(), true);
        push(&mut q, (40..43).collect(), true); // short: coalesced
        push(&mut q, (43..50).collect(), false);
        push(&mut q, (50..75).collect(), true);
        assert_eq!(q.len(), 75);
        let mut got = Vec::new();
        while !q.is_empty() {
            let s = q.take(8);
            assert!(s.len() == 8 || q.is_empty());
            got.extend_from_slice(&s);
        }
        assert_eq!(got, expected);
        assert_eq!(q.take(8).len(), 0);
    }

    #[test]
    fn a_segment_within_a_large_write_is_a_slice_of_it() {
        let mut q = SendQueue::default();
        let data = Bytes::from(vec![7u8; 100]);
        q.push_bytes(data.clone(), 10);
        let s = q.take(30);
        assert_eq!(s.as_ptr(), data.as_ptr());
        assert_eq!(q.len(), 70);
    }

    #[test]
    fn whole_tails_and_split_tails_keep_their_bytes_and_release_the_block() {
        let mut q = SendQueue::default();
        // A lone small write, taken whole (the tail handed over as it is).
        q.push_slice(b"request");
        assert_eq!(&q.take(100)[..], b"request");
        assert!(q.is_empty());
        assert_eq!(q.tail.capacity(), 0, "an idle queue holds no block");
        // Two writes, taken in two pieces, then whole again.
        q.push_slice(b"abc");
        q.push_slice(b"defgh");
        assert_eq!(&q.take(4)[..], b"abcd");
        assert_eq!(&q.take(4)[..], b"efgh");
        assert!(q.is_empty());
        assert_eq!(q.tail.capacity(), 0);
        q.push_slice(b"again");
        assert_eq!(&q.take(5)[..], b"again");
        assert_eq!(q.take(5).len(), 0);
    }
}
