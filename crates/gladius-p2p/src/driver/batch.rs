//! Datagrams to one peer gathered so they leave in one socket call (UDP
//! segmentation offload, see [`DatagramSocket::poll_send_segments`]).

use std::net::SocketAddr;

use crate::socket::DatagramSocket;
use crate::state::Counters;

/// Most bytes one batch carries: a GSO send is one UDP packet to the
/// kernel, whose payload must stay under 64 KiB.
const MAX_BATCH_BYTES: usize = 65_000;

/// A run of datagrams of one size (the last may be shorter) to one peer.
#[derive(Debug, Default)]
pub(super) struct SendBatch {
    buf: Vec<u8>,
    /// Size of every datagram in the batch but the last.
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run; nothing may follow it.
    ended: bool,
}

impl SendBatch {
    /// Whether a datagram of `len` bytes can join without a send first.
    pub(super) fn accepts(&self, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (!self.ended
                && self.count < max_segments
                && len <= self.segment
                && self.buf.len() + len <= MAX_BATCH_BYTES)
    }

    /// Append a datagram; call [`accepts`](Self::accepts) first.
    pub(super) fn push(&mut self, datagram: &[u8]) {
        if self.count == 0 {
            self.segment = datagram.len();
        } else if datagram.len() < self.segment {
            self.ended = true;
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Send what was gathered to `to` and start over. Send errors (EPERM
    /// from a firewall, ENOBUFS, unreachable) are loss to KCP, which
    /// retransmits: they are counted, never fatal.
    pub(super) async fn send(
        &mut self,
        socket: Option<&dyn DatagramSocket>,
        counters: &mut Counters,
        to: SocketAddr,
    ) {
        if self.count == 0 {
            return;
        }
        if let Some(socket) = socket {
            let sent = std::future::poll_fn(|cx| {
                socket.poll_send_segments(cx, &self.buf, self.segment, to)
            })
            .await;
            match sent {
                Ok(()) => counters.datagrams_out += self.count as u64,
                Err(e) => {
                    counters.send_errors += self.count as u64;
                    tracing::debug!(%to, datagrams = self.count, "send error: {e}");
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        self.ended = false;
    }
}

#[cfg(test)]
mod tests {
    use super::SendBatch;

    #[test]
    fn a_batch_holds_one_size_and_ends_with_a_shorter_datagram() {
        let mut b = SendBatch::default();
        assert!(b.accepts(100, 4));
        b.push(&[1; 100]);
        assert!(b.accepts(100, 4));
        assert!(!b.accepts(101, 4), "a longer datagram cannot join");
        b.push(&[2; 100]);
        assert!(b.accepts(40, 4));
        b.push(&[3; 40]);
        assert!(!b.accepts(40, 4), "nothing follows the shorter last one");
        assert_eq!(b.buf.len(), 240);
        assert_eq!(b.segment, 100);
    }

    #[test]
    fn a_batch_respects_the_segment_and_byte_limits() {
        let mut b = SendBatch::default();
        b.push(&[0; 1400]);
        assert!(!b.accepts(1400, 1), "one segment per call");
        for _ in 1..46 {
            assert!(b.accepts(1400, 64));
            b.push(&[0; 1400]);
        }
        // 46 × 1400 = 64,400 bytes; one more would pass 65,000.
        assert!(!b.accepts(1400, 64));
    }
}
