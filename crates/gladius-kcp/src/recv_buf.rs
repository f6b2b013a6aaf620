//! The receive side: out-of-order segments waiting for a gap to fill
//! (ikcp `rcv_buf`) and in-order chunks waiting for the application (ikcp
//! `rcv_queue`).
//!
//! As in ikcp, the in-order queue is limited to the receive window and the
//! advertised window is what is left of it, so an application that does not
//! read closes the window and the sender stops. Slot `i` of the reorder
//! buffer holds sequence number `nxt + i`; accepted numbers are
//! `[nxt, nxt + window)`, which bounds both structures by `window` segments.
//!
//! The reorder buffer can also be bounded in bytes (see
//! [`Kcp::set_reorder_limit`](crate::Kcp::set_reorder_limit)): a segment
//! ahead of `nxt` that does not fit is not stored, and the caller must not
//! acknowledge it (the sender retransmits it later). The segment at `nxt`
//! always fits: it moves the stream forward.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::clock::diff;

#[derive(Debug)]
pub(crate) struct ReceiveBuffer {
    /// Next sequence number to move to `ready` (ikcp `rcv_nxt`).
    nxt: u32,
    /// Receive window in segments (ikcp `rcv_wnd`), at least 1.
    window: u16,
    /// Slot `i` is sequence number `nxt + i`; `None` = not received yet.
    reorder: VecDeque<Option<Bytes>>,
    /// In-order chunks for the application.
    ready: VecDeque<Bytes>,
    /// What the segments in `reorder` cost (see [`cost`]).
    held: usize,
}

/// What holding one segment of `len` payload bytes in the reorder buffer
/// is counted as: its bytes and a slot's bookkeeping, so even empty
/// segments cost something.
pub(crate) fn cost(len: usize) -> usize {
    len.saturating_add(SLOT_COST)
}

/// Bookkeeping counted per held segment (the slot, the allocation).
const SLOT_COST: usize = 64;

impl ReceiveBuffer {
    pub(crate) fn new(window: u16) -> Self {
        Self {
            nxt: 0,
            window: window.max(1),
            reorder: VecDeque::new(),
            ready: VecDeque::new(),
            held: 0,
        }
    }

    /// Every sequence number below this was received (sent as `una`).
    pub(crate) fn nxt(&self) -> u32 {
        self.nxt
    }

    /// Free window to advertise: the window minus the chunks the application
    /// has not read yet (ikcp `ikcp_wnd_unused`).
    pub(crate) fn window_free(&self) -> u16 {
        let queued = u16::try_from(self.ready.len()).unwrap_or(u16::MAX);
        self.window.saturating_sub(queued)
    }

    /// Whether a PUSH with this sn gets acknowledged: anything below the end
    /// of the window, including duplicates of what was already delivered
    /// (their earlier ACK may have been lost).
    pub(crate) fn acks(&self, sn: u32) -> bool {
        diff(sn, self.nxt.wrapping_add(u32::from(self.window))) < 0
    }

    /// What the out-of-order segments held cost, in bytes (see [`cost`]).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Whether PUSH `sn` (inside the window) with `len` payload bytes may
    /// be stored under `limit`: (bytes of held segments, segments from
    /// `nxt` on). Always the next expected one, a delivered one and one
    /// already held (duplicates); otherwise only if it is within the
    /// limit's window and its bytes fit.
    pub(crate) fn fits(&self, sn: u32, len: usize, limit: Option<(usize, u32)>) -> bool {
        let Some((bytes, window)) = limit else {
            return true;
        };
        let offset = diff(sn, self.nxt);
        if offset <= 0 {
            return true;
        }
        let held = self
            .reorder
            .get(offset as usize)
            .is_some_and(Option::is_some);
        held || ((offset as u32) < window && self.held.saturating_add(cost(len)) <= bytes)
    }

    /// Store the payload of PUSH `sn`. Sequence numbers outside
    /// `[nxt, nxt + window)` and duplicates are ignored.
    pub(crate) fn insert(&mut self, sn: u32, payload: Bytes) {
        let offset = diff(sn, self.nxt);
        if offset < 0 || offset >= i32::from(self.window) {
            return;
        }
        let index = offset as usize;
        if index >= self.reorder.len() {
            self.reorder.resize(index + 1, None);
        }
        if let Some(slot @ None) = self.reorder.get_mut(index) {
            self.held = self.held.saturating_add(cost(payload.len()));
            *slot = Some(payload);
        }
        self.drain_in_order();
    }

    /// Next in-order chunk. The flag is true when this read reopened a
    /// window that was full, so the peer should be told (ikcp "fast recover").
    pub(crate) fn pop(&mut self) -> Option<(Bytes, bool)> {
        let was_full = self.ready.len() >= usize::from(self.window);
        let chunk = self.ready.pop_front()?;
        self.drain_in_order();
        let reopened = was_full && self.ready.len() < usize::from(self.window);
        Some((chunk, reopened))
    }

    /// Move the contiguous run at the front of the reorder buffer to the
    /// ready queue while the window allows.
    fn drain_in_order(&mut self) {
        while self.ready.len() < usize::from(self.window) {
            match self.reorder.front() {
                Some(Some(_)) => {}
                _ => break,
            }
            if let Some(Some(chunk)) = self.reorder.pop_front() {
                self.held = self.held.saturating_sub(cost(chunk.len()));
                // An empty PUSH (ikcp can send one) consumes a sequence
                // number but delivers nothing.
                if !chunk.is_empty() {
                    self.ready.push_back(chunk);
                }
            }
            self.nxt = self.nxt.wrapping_add(1);
        }
    }

    #[cfg(test)]
    fn ready_len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests report failures as errors instead of panicking.
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn reorders_and_dedups() {
        let mut r = ReceiveBuffer::new(4);
        r.insert(2, b("c"));
        r.insert(1, b("b"));
        r.insert(1, b("X"));
        assert_eq!(r.nxt(), 0);
        r.insert(0, b("a"));
        assert_eq!(r.nxt(), 3);
        let got: Vec<Bytes> = std::iter::from_fn(|| r.pop().map(|(c, _)| c)).collect();
        assert_eq!(got, vec![b("a"), b("b"), b("c")]);
        // Duplicate of delivered data: acknowledged but not stored.
        assert!(r.acks(0));
        r.insert(0, b("a"));
        assert!(r.pop().is_none());
    }

    #[test]
    fn window_bounds_and_reopen() -> TestResult {
        let mut r = ReceiveBuffer::new(2);
        assert!(!r.acks(2));
        r.insert(2, b("out of window"));
        r.insert(0, b("a"));
        r.insert(1, b("b"));
        assert_eq!(r.window_free(), 0);
        // Queue full: sn 2 is now inside the window but waits in reorder.
        r.insert(2, b("c"));
        assert_eq!(r.nxt(), 2);
        let (chunk, reopened) = r.pop().ok_or("nothing ready to pop")?;
        assert_eq!(chunk, b("a"));
        // The read moved "c" in, so the window is full again: not reopened.
        assert!(!reopened);
        assert_eq!(r.ready_len(), 2);
        let (_, reopened) = r.pop().ok_or("nothing ready to pop")?;
        assert!(reopened);
        assert_eq!(r.window_free(), 1);
        Ok(())
    }

    #[test]
    fn held_bytes_are_counted_and_bounded() {
        let mut r = ReceiveBuffer::new(16);
        let limit = Some((2 * cost(10), 8));
        assert!(!r.fits(8, 1, limit), "beyond the limit's window");
        assert!(r.fits(1, 10, limit));
        r.insert(1, Bytes::from(vec![1; 10]));
        r.insert(2, Bytes::from(vec![2; 10]));
        assert_eq!(r.held(), 2 * cost(10));
        // Full: a third out-of-order segment does not fit, a duplicate of
        // a held one and the next expected one always do.
        assert!(!r.fits(3, 1, limit));
        assert!(r.fits(2, 10, limit));
        assert!(r.fits(0, 1_000, limit));
        assert!(r.fits(3, 1, None));
        r.insert(0, b("a"));
        assert_eq!(r.nxt(), 3);
        assert_eq!(r.held(), 0, "delivered segments are no longer held");
    }

    #[test]
    fn empty_push_consumes_sn() -> TestResult {
        let mut r = ReceiveBuffer::new(8);
        r.insert(0, Bytes::new());
        r.insert(1, b("x"));
        assert_eq!(r.nxt(), 2);
        assert_eq!(r.pop().ok_or("nothing ready to pop")?.0, b("x"));
        Ok(())
    }
}
