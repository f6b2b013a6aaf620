//! The anti-replay window for `Data` counters (RFC 6479, as in WireGuard).
//!
//! Every `Data` datagram carries the 64-bit counter that is also its AEAD
//! nonce. The receiver keeps the highest counter it has authenticated and a
//! 2048-bit ring bitmap of the counters just below it. A counter is fresh if
//! it is above the highest, or inside the window and not yet seen; anything
//! older than the window, or seen before, is a replay. [`check`] is the
//! cheap test done *before* decrypting (so a flood of replays costs no
//! ChaCha20), [`update`] records the counter *after* the datagram
//! authenticated (so forged counters cannot move the window).
//!
//! The bitmap is 32 words of 64 bits; the word the highest counter lives in
//! is partially in the future, so the guaranteed window is
//! [`ReplayWindow::WINDOW`] = 2048 − 64 = 1984 counters below the highest.
//!
//! [`check`]: ReplayWindow::check
//! [`update`]: ReplayWindow::update

/// Number of 64-bit words in the ring bitmap.
const WORDS: usize = 32;
/// Bits per word.
const WORD_BITS: u64 = 64;
/// Total bits in the ring.
const RING_BITS: u64 = WORDS as u64 * WORD_BITS;

/// A sliding window of recently accepted counters.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningless while `empty`).
    top: u64,
    /// Nothing accepted yet.
    empty: bool,
    /// Bit `c % 64` of word `(c / 64) % 32` is set once counter `c` is
    /// accepted, for `c` in the window.
    ring: [u64; WORDS],
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &(!self.empty).then_some(self.top))
            .finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// How far below the highest accepted counter a counter may be and still
    /// be accepted (if not seen before): counters `c` with
    /// `top - c < WINDOW` are tracked, older ones are rejected.
    pub const WINDOW: u64 = RING_BITS - WORD_BITS;

    /// An empty window: every counter is fresh.
    pub const fn new() -> Self {
        Self {
            top: 0,
            empty: true,
            ring: [0; WORDS],
        }
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        (!self.empty).then_some(self.top)
    }

    /// Whether `counter` is older than the window (and so rejected whether
    /// or not it was seen).
    pub fn is_too_old(&self, counter: u64) -> bool {
        !self.empty && counter < self.top && self.top - counter >= Self::WINDOW
    }

    /// Whether `counter` would be accepted: not older than the window and
    /// not seen before. Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if self.empty || counter > self.top {
            return true;
        }
        if self.is_too_old(counter) {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.ring[word] & bit == 0
    }

    /// Record `counter` as accepted, if [`check`](Self::check) allows it;
    /// returns whether it did. Call only after the datagram authenticated.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if self.empty || counter > self.top {
            // Clear the words between the old top's word (exclusive) and the
            // new one (inclusive); a jump of a whole ring or more clears all.
            let old_word = self.top / WORD_BITS;
            let new_word = counter / WORD_BITS;
            let clear = if self.empty {
                WORDS as u64
            } else {
                (new_word - old_word).min(WORDS as u64)
            };
            for i in 0..clear {
                let w = (new_word.wrapping_sub(i) % WORDS as u64) as usize;
                self.ring[w] = 0;
            }
            self.top = counter;
            self.empty = false;
        }
        let (word, bit) = Self::slot(counter);
        self.ring[word] |= bit;
        true
    }

    /// Word index (always `< WORDS`) and bit mask of a counter.
    fn slot(counter: u64) -> (usize, u64) {
        let word = ((counter / WORD_BITS) % WORDS as u64) as usize;
        (word, 1u64 << (counter % WORD_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const W: u64 = ReplayWindow::WINDOW;

    /// A reference model: everything accepted, and the window rule.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
    }

    impl Model {
        fn accept(&mut self, c: u64) -> bool {
            let top = self.seen.last().copied();
            let fresh = match top {
                None => true,
                Some(top) => c > top || (top - c < W && !self.seen.contains(&c)),
            };
            if fresh {
                self.seen.insert(c);
            }
            fresh
        }
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        for c in 0..10_000u64 {
            assert!(w.check(c));
            assert!(w.update(c), "{c}");
            assert!(!w.check(c));
            assert!(!w.update(c), "duplicate {c}");
        }
        assert_eq!(w.highest(), Some(9_999));
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::new();
        assert!(w.check(5));
        assert!(w.check(5));
        assert!(w.update(5));
        assert!(!w.check(5));
    }

    #[test]
    fn reordering_inside_window_accepted() {
        let mut w = ReplayWindow::new();
        assert!(w.update(5000));
        // Everything from 5000 - W + 1 up is accepted once, in any order.
        for c in (5000 - W + 1..5000).rev() {
            assert!(w.update(c), "{c}");
        }
        for c in 5000 - W + 1..=5000 {
            assert!(!w.update(c), "dup {c}");
        }
        assert!(w.is_too_old(5000 - W));
        assert!(!w.update(5000 - W));
        assert!(!w.update(0));
        assert!(!w.is_too_old(5000 - W + 1));
    }

    #[test]
    fn window_edge_exact() {
        let mut w = ReplayWindow::new();
        assert!(w.update(W));
        assert!(!w.check(0), "exactly W below is too old");
        assert!(w.check(1), "W-1 below is inside");
        assert!(w.update(1));
        assert!(!w.update(1));
    }

    #[test]
    fn far_jumps() {
        let mut w = ReplayWindow::new();
        assert!(w.update(3));
        assert!(w.update(1_000_000));
        assert!(!w.update(3), "left the window");
        assert!(w.update(1_000_000 - 1));
        assert!(w.update(1_000_000 - W + 1));
        // A jump of exactly one ring length clears everything but the top.
        let top = 1_000_000 + RING_BITS;
        assert!(w.update(top));
        for c in top - W + 1..top {
            assert!(w.check(c), "stale bit for {c}");
        }
        // The top of the counter space.
        assert!(w.update(u64::MAX));
        assert!(!w.update(u64::MAX));
        assert!(w.update(u64::MAX - 1));
        assert!(w.update(u64::MAX - W + 1));
        assert!(!w.update(u64::MAX - W));
        assert!(!w.update(0));
    }

    #[test]
    fn ring_wraps_without_stale_bits() {
        // Walk the top forward one word at a time across several ring
        // lengths, filling every counter; no counter above the old window
        // may ever appear already seen.
        let mut w = ReplayWindow::new();
        for c in 0..RING_BITS * 5 {
            assert!(w.update(c));
            assert!(w.check(c + 1), "stale bit ahead of {c}");
            assert!(w.check(c + WORD_BITS), "stale bit a word ahead of {c}");
        }
        // Jumps of every size from 1 to 3 ring lengths, by 37.
        let mut w = ReplayWindow::new();
        let mut c = 0u64;
        assert!(w.update(0));
        for jump in (1..RING_BITS * 3).step_by(37) {
            c += jump;
            assert!(w.update(c), "{c}");
            assert!(!w.update(c));
            if jump < W {
                assert!(!w.check(c - jump), "previous top forgotten at {c}");
            }
        }
    }

    #[test]
    fn first_counter_may_be_anything() {
        let mut w = ReplayWindow::new();
        assert!(w.update(u64::MAX / 2));
        assert!(w.update(u64::MAX / 2 - 10));
        let mut w = ReplayWindow::new();
        assert!(w.update(0));
        assert!(!w.update(0));
    }

    proptest! {
        #[test]
        fn matches_model(steps in proptest::collection::vec((0u64..4, 0u64..5000), 1..400)) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            let mut base = 0u64;
            for (kind, delta) in steps {
                // Mix forward jumps, small reorders and far-back probes.
                let c = match kind {
                    0 => { base += delta; base }
                    1 => base.saturating_sub(delta),
                    2 => base + delta % 70,
                    _ => base.saturating_sub(W - 2 + delta % 4),
                };
                let expected = m.accept(c);
                prop_assert_eq!(w.check(c), expected, "check {}", c);
                prop_assert_eq!(w.update(c), expected, "update {}", c);
                prop_assert!(!w.check(c));
                base = base.max(c);
            }
        }
    }
}
