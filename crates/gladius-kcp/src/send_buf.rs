//! The send buffer: segments that were given a sequence number (and so went
//! on the wire at least once, or will in the current flush) and are not yet
//! acknowledged.
//!
//! ikcp keeps a linked list and walks it for every ACK. Here slot `i` holds
//! sequence number `una + i`, so an ACK is an O(1) index; a segment acked out
//! of order leaves a `None` hole until everything before it is acked too.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::clock::diff;

/// One in-flight data segment and its retransmission state.
#[derive(Debug, Clone)]
pub(crate) struct SendSegment {
    pub(crate) data: Bytes,
    /// Time of the latest transmission; the peer echoes it in its ACK.
    pub(crate) ts: u32,
    /// Time of the first transmission (for validating echoed timestamps,
    /// and to recognise an ACK of the original copy, see
    /// [`SendBuffer::judge_ack`]).
    pub(crate) first_sent: u32,
    /// The first retransmission was a fast resend (not a timeout).
    pub(crate) fast_resent: bool,
    /// A timeout was not acted on because the peer was silent; the timer
    /// follows the oldest segment's (see the `kcp` module docs).
    pub(crate) deferred: bool,
    /// An ACK for this segment was already judged (see `judge_ack`).
    judged: bool,
    /// When to retransmit if still unacknowledged.
    pub(crate) resend_at: u32,
    /// This segment's own (backed-off) retransmission timeout.
    pub(crate) rto: u32,
    /// How many ACKs for later segments arrived since the last transmission.
    pub(crate) fastack: u32,
    /// Transmissions so far (0 = not sent yet).
    pub(crate) xmit: u32,
}

/// What an ACK says about the transmission it acknowledges (Eifel
/// detection, RFC 3522, with KCP's echoed `ts` as the timestamp option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckVerdict {
    /// The segment was sent once, or the ACK is ambiguous: nothing learned.
    Plain,
    /// The segment was retransmitted and the ACK echoes a retransmitted
    /// copy's ts: the original was lost (or is later than that copy), so
    /// the first retransmission was needed.
    RetransmitNeeded {
        /// The first retransmission was a fast resend.
        fast: bool,
    },
    /// The segment was retransmitted but the ACK echoes the original's ts:
    /// the original arrived, so the retransmission(s) were spurious.
    Spurious {
        /// The first retransmission was a fast resend.
        fast: bool,
        /// Time of the original transmission, echoed by the ACK.
        echoed_ts: u32,
        /// How many retransmissions of the segment were unnecessary.
        retransmits: u32,
    },
}

#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    /// Slot `i` is sequence number `una + i`; `None` = acked out of order.
    /// The front slot is never `None` (see `trim`).
    slots: VecDeque<Option<SendSegment>>,
    /// Oldest unacknowledged sequence number (ikcp `snd_una`).
    una: u32,
    /// Payload bytes of the segments still held.
    bytes: usize,
    /// Segments still held (slots that are `Some`).
    count: usize,
}

impl SendBuffer {
    /// Oldest unacknowledged sequence number (ikcp `snd_una`).
    pub(crate) fn una(&self) -> u32 {
        self.una
    }

    /// Next sequence number to assign (ikcp `snd_nxt`).
    pub(crate) fn nxt(&self) -> u32 {
        // The slot count is bounded by the send window (<= u16::MAX).
        self.una.wrapping_add(self.slots.len() as u32)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `sn` is in `[una, nxt)`, i.e. names a segment we sent.
    pub(crate) fn in_flight_range(&self, sn: u32) -> bool {
        diff(sn, self.una) >= 0 && diff(sn, self.nxt()) < 0
    }

    /// Whether segment `sn` is still held (sent and not acknowledged).
    pub(crate) fn holds(&self, sn: u32) -> bool {
        self.in_flight_range(sn)
            && self
                .slots
                .get(sn.wrapping_sub(self.una) as usize)
                .is_some_and(Option::is_some)
    }

    /// First-transmission time of the oldest unacknowledged segment.
    pub(crate) fn oldest_first_sent(&self) -> Option<u32> {
        match self.slots.front() {
            Some(Some(seg)) if seg.xmit > 0 => Some(seg.first_sent),
            _ => None,
        }
    }

    /// Give `data` the next sequence number. It is sent by the same flush.
    pub(crate) fn push(&mut self, data: Bytes) {
        self.bytes = self.bytes.saturating_add(data.len());
        self.count = self.count.saturating_add(1);
        self.slots.push_back(Some(SendSegment {
            data,
            ts: 0,
            first_sent: 0,
            fast_resent: false,
            deferred: false,
            judged: false,
            resend_at: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
        }));
    }

    /// Classify an ACK of `sn` echoing `ts`, before it (or an una in the
    /// same datagram) releases the segment. Returns `None` if `sn` is not
    /// held or an ACK for it was already judged, so a segment yields at most
    /// one verdict however many ACKs for it arrive together.
    ///
    /// As RFC 3522, only an ACK of the *original* copy makes the
    /// retransmissions spurious: `ts` must equal the first transmission's
    /// time exactly (so a peer cannot fake a verdict with an arbitrary
    /// timestamp) and differ from the latest one's (else it is ambiguous).
    /// An ACK of a middle copy means the original was lost: the first
    /// retransmission was needed, even if a later one was redundant.
    pub(crate) fn judge_ack(&mut self, sn: u32, ts: u32) -> Option<AckVerdict> {
        if !self.in_flight_range(sn) {
            return None;
        }
        let index = sn.wrapping_sub(self.una) as usize;
        let seg = self.slots.get_mut(index)?.as_mut()?;
        if seg.judged || seg.xmit == 0 {
            return None;
        }
        seg.judged = true;
        let fast = seg.fast_resent;
        Some(if seg.xmit < 2 {
            AckVerdict::Plain
        } else if ts == seg.first_sent && ts != seg.ts {
            AckVerdict::Spurious {
                fast,
                echoed_ts: ts,
                retransmits: seg.xmit - 1,
            }
        } else if diff(ts, seg.first_sent) > 0 && diff(ts, seg.ts) <= 0 {
            AckVerdict::RetransmitNeeded { fast }
        } else {
            AckVerdict::Plain
        })
    }

    /// Selective acknowledgement of one sequence number (ikcp `parse_ack`).
    pub(crate) fn ack(&mut self, sn: u32) {
        if !self.in_flight_range(sn) {
            return;
        }
        let index = sn.wrapping_sub(self.una) as usize;
        if let Some(slot) = self.slots.get_mut(index) {
            if let Some(seg) = slot.take() {
                self.forget(&seg);
            }
        }
        self.trim();
    }

    /// Cumulative acknowledgement: everything below `una` was received
    /// (ikcp `parse_una`). Values outside `(una, nxt]` are ignored: an una
    /// beyond what we sent is forged and must not release unsent data.
    pub(crate) fn ack_below(&mut self, una: u32) {
        if diff(una, self.una) <= 0 || diff(una, self.nxt()) > 0 {
            return;
        }
        let n = una.wrapping_sub(self.una);
        for _ in 0..n {
            if let Some(Some(seg)) = self.slots.pop_front() {
                self.forget(&seg);
            }
        }
        self.una = una;
        self.trim();
    }

    /// An ACK for `maxack` arrived: every older segment still held was skipped
    /// once more (ikcp `parse_fastack`).
    pub(crate) fn fast_ack(&mut self, maxack: u32) {
        if !self.in_flight_range(maxack) {
            return;
        }
        let skipped = maxack.wrapping_sub(self.una) as usize;
        for seg in self.slots.iter_mut().take(skipped).flatten() {
            seg.fastack = seg.fastack.saturating_add(1);
        }
    }

    /// Held segments with their sequence numbers, oldest first.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut SendSegment)> {
        let una = self.una;
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(move |(i, slot)| slot.as_mut().map(|s| (una.wrapping_add(i as u32), s)))
    }

    /// Held segments, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SendSegment> {
        self.slots.iter().flatten()
    }

    fn forget(&mut self, seg: &SendSegment) {
        self.bytes = self.bytes.saturating_sub(seg.data.len());
        self.count = self.count.saturating_sub(1);
    }

    /// Drop acknowledged holes at the front, advancing `una`.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.una = self.una.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf_with(n: u32, start: u32) -> SendBuffer {
        let mut b = SendBuffer {
            una: start,
            ..SendBuffer::default()
        };
        for i in 0..n {
            b.push(Bytes::from(vec![i as u8; 10]));
        }
        b
    }

    #[test]
    fn selective_then_cumulative_ack() {
        let mut b = buf_with(5, u32::MAX - 1);
        assert_eq!(b.nxt(), 3);
        b.ack(0); // third segment
        assert_eq!(b.una(), u32::MAX - 1);
        assert_eq!(b.bytes(), 40);
        b.ack(u32::MAX - 1);
        b.ack(u32::MAX);
        // Hole at sn 0 was already acked, so una jumps past it.
        assert_eq!(b.una(), 1);
        b.ack_below(3);
        assert!(b.is_empty());
        assert_eq!(b.una(), 3);
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn forged_acks_are_ignored() {
        let mut b = buf_with(3, 100);
        b.ack(99);
        b.ack(103);
        b.ack(u32::MAX);
        b.ack_below(104);
        b.ack_below(50);
        b.fast_ack(7);
        assert_eq!(b.una(), 100);
        assert_eq!(b.bytes(), 30);
    }

    #[test]
    fn only_an_ack_of_the_original_copy_is_spurious() {
        let mut b = buf_with(4, 50);
        for (i, (_, seg)) in b.iter_mut().enumerate() {
            // Sent at 100; sn 51.. retransmitted at 200, sn 52.. at 300 too.
            seg.first_sent = 100;
            seg.ts = [100, 200, 300, 300][i];
            seg.xmit = [1, 2, 3, 3][i];
            seg.fast_resent = i == 3;
        }
        assert_eq!(b.judge_ack(50, 100), Some(AckVerdict::Plain));
        assert_eq!(
            b.judge_ack(51, 100),
            Some(AckVerdict::Spurious {
                fast: false,
                echoed_ts: 100,
                retransmits: 1,
            })
        );
        // Judged once only, whatever the next ACK says.
        assert_eq!(b.judge_ack(51, 200), None);
        // A middle copy: the original was lost.
        assert_eq!(
            b.judge_ack(52, 200),
            Some(AckVerdict::RetransmitNeeded { fast: false })
        );
        // The latest copy; an invented ts proves nothing.
        assert_eq!(
            b.judge_ack(53, 300),
            Some(AckVerdict::RetransmitNeeded { fast: true })
        );
        let mut b = buf_with(2, 0);
        for (_, seg) in b.iter_mut() {
            seg.first_sent = 100;
            seg.ts = 300;
            seg.xmit = 3;
        }
        assert_eq!(b.judge_ack(0, 99), Some(AckVerdict::Plain));
        assert_eq!(b.judge_ack(1, 301), Some(AckVerdict::Plain));
        // Outside the buffer, or never sent.
        assert_eq!(b.judge_ack(2, 100), None);
        assert_eq!(buf_with(1, 0).judge_ack(0, 0), None);
    }

    #[test]
    fn fast_ack_counts_only_older_segments() {
        let mut b = buf_with(4, 0);
        b.fast_ack(2);
        let counts: Vec<u32> = b.iter().map(|s| s.fastack).collect();
        assert_eq!(counts, vec![1, 1, 0, 0]);
    }
}
