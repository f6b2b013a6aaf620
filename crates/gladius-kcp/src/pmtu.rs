//! Datagram-size probing (DPLPMTUD in the spirit of RFC 8899), as a pure
//! state machine over "how many full segments one datagram may carry".
//!
//! # Design
//! The segment size (`mss = mtu - 24`) never changes: only the number of
//! segments the packer puts into one datagram does. A datagram of `k` full
//! segments is exactly `k * mtu` bytes, so sizes are counted in `k`, and a
//! fallback never has to re-split segments already in flight: they simply
//! leave again in base-size datagrams.
//!
//! Sizes are searched up a ladder of `k` ([`LADDER`], capped by the
//! configured maximum). A **probe** is an ordinary datagram of new data
//! filled to the next rung: the sender records the sequence number of its
//! last segment. The probe is **confirmed** when that segment is
//! acknowledged (by an ACK or by `una`) without having been retransmitted:
//! its only copy was at the end of the probe, so the whole probe crossed
//! the path and the peer read it (a receiver that truncates long datagrams
//! may still read their first segments, never the last). It **failed**
//! when that segment is retransmitted first.
//! One probe is outstanding at a time; probes happen only when there is
//! enough new data to fill one, so an idle or chatty session never probes
//! and pays nothing. A peer that cannot read the larger datagrams (an
//! older or independent implementation with a small receive buffer) simply
//! never acknowledges what they carried, and the session stays at the
//! base size: no new bytes on the wire, nothing a receiver must understand.
//!
//! After [`MAX_PROBES`] consecutive failures at one rung, the search stops
//! below it until [`RAISE_TIMER_MS`] has passed (RFC 8899's
//! `PMTU_RAISE_TIMER`), then starts again.
//!
//! **Black holes.** While datagrams above the base size are in use, a
//! retransmission timeout of a segment already sent twice (the
//! [`BLACK_HOLE_XMIT`]th transmission or later, on a timer rather than on
//! duplicate ACKs, which also re-send after one loss on a clean path) means
//! the path may have stopped carrying them (a route change, a middlebox):
//! the size drops back to the base at once (retransmissions then leave in
//! base-size datagrams) and the search resumes below the size that failed.
//! A path change ([`PathMtu::reset`]) restarts at the base size.

use crate::clock::diff;

/// Rungs of the search, in segments per datagram (3 ≈ 4 KiB, 6 fits a
/// 9000-byte jumbo frame, 46 is the most below 64 KiB at 1400 bytes).
pub(crate) const LADDER: [u16; 6] = [1, 3, 6, 12, 24, 46];
/// Consecutive failures that rule a size out (RFC 8899 `MAX_PROBES`).
pub(crate) const MAX_PROBES: u8 = 3;
/// How long a size that failed is not tried again, in ms (RFC 8899's
/// `PMTU_RAISE_TIMER`, 600 s).
pub(crate) const RAISE_TIMER_MS: u32 = 600_000;
/// Transmissions of one segment that, when the last one is due to a
/// timeout while datagrams above the base size are in use, count as a
/// black hole.
pub(crate) const BLACK_HOLE_XMIT: u32 = 3;

/// The probe in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Sequence number of the last (new) segment of the probe datagram.
    pub(crate) sn: u32,
    /// Segments the probe datagram was filled to.
    pub(crate) k: u16,
}

/// What happened to the probe or the size (for counters and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A probe of `k` segments was confirmed: the size is now `k`.
    Confirmed(u16),
    /// A probe of `k` was lost (retransmitted before acknowledged).
    Lost(u16),
    /// Datagrams of the confirmed size `k` seem to vanish: back to 1.
    BlackHole(u16),
}

/// Datagram-size search state of one endpoint. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct PathMtu {
    /// Largest `k` allowed (1 = probing off).
    max_k: u16,
    /// Segments per datagram known to pass.
    confirmed: u16,
    /// Smallest `k` known to fail (`u16::MAX`: none), until `lift_at`.
    ceiling: u16,
    /// When the ceiling is lifted and the search may go higher again.
    lift_at: u32,
    /// Consecutive failures of probes of the current target.
    failures: u8,
    probe: Option<Probe>,
}

impl Default for PathMtu {
    fn default() -> Self {
        Self {
            max_k: 1,
            confirmed: 1,
            ceiling: u16::MAX,
            lift_at: 0,
            failures: 0,
            probe: None,
        }
    }
}

impl PathMtu {
    /// Allow datagrams of up to `max_k` segments (1: probing off, back to
    /// the base size). Lowering it below the confirmed size drops to it.
    pub(crate) fn set_max(&mut self, max_k: u16) {
        let max_k = max_k.max(1);
        if max_k == self.max_k {
            return;
        }
        self.max_k = max_k;
        if self.confirmed > max_k {
            self.confirmed = max_k;
        }
        if self.probe.is_some_and(|p| p.k > max_k) {
            self.probe = None;
            self.failures = 0;
        }
    }

    /// The path changed: start again at the base size, forgetting what
    /// failed on the old one.
    pub(crate) fn reset(&mut self) {
        *self = Self {
            max_k: self.max_k,
            ..Self::default()
        };
    }

    /// Segments per datagram that ordinary datagrams may carry now.
    pub(crate) fn confirmed(&self) -> u16 {
        self.confirmed
    }

    /// The outstanding probe, if any.
    pub(crate) fn probe(&self) -> Option<Probe> {
        self.probe
    }

    /// The size the next probe should be filled to, if one is due at `now`
    /// (none outstanding, a rung above the confirmed size allowed).
    pub(crate) fn wants_probe(&mut self, now: u32) -> Option<u16> {
        if self.probe.is_some() || self.max_k <= self.confirmed {
            return None;
        }
        if self.ceiling != u16::MAX && diff(now, self.lift_at) >= 0 {
            self.ceiling = u16::MAX;
        }
        let next = LADDER
            .iter()
            .copied()
            .find(|&k| k > self.confirmed)
            .unwrap_or(u16::MAX)
            .min(self.max_k);
        (next > self.confirmed && next < self.ceiling).then_some(next)
    }

    /// A probe of `k` segments ending with segment `sn` left.
    pub(crate) fn sent_probe(&mut self, sn: u32, k: u16) {
        self.probe = Some(Probe { sn, k });
    }

    /// The probe's last segment was acknowledged, never retransmitted.
    pub(crate) fn on_probe_acked(&mut self) -> Option<Outcome> {
        let probe = self.probe.take()?;
        self.failures = 0;
        if probe.k > self.confirmed && probe.k <= self.max_k {
            self.confirmed = probe.k;
            return Some(Outcome::Confirmed(probe.k));
        }
        None
    }

    /// The probe's last segment is being retransmitted at `now`.
    pub(crate) fn on_probe_lost(&mut self, now: u32) -> Option<Outcome> {
        let probe = self.probe.take()?;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= MAX_PROBES {
            self.failures = 0;
            self.ceiling = self.ceiling.min(probe.k);
            self.lift_at = now.wrapping_add(RAISE_TIMER_MS);
        }
        Some(Outcome::Lost(probe.k))
    }

    /// A segment is being sent for the `xmit`-th time at `now`, after a
    /// retransmission timeout (`timeout`) or duplicate ACKs.
    pub(crate) fn on_retransmit(&mut self, xmit: u32, timeout: bool, now: u32) -> Option<Outcome> {
        if !timeout || xmit < BLACK_HOLE_XMIT || self.confirmed <= 1 {
            return None;
        }
        let k = self.confirmed;
        self.confirmed = 1;
        self.probe = None;
        self.failures = 0;
        self.ceiling = self.ceiling.min(k);
        self.lift_at = now.wrapping_add(RAISE_TIMER_MS);
        Some(Outcome::BlackHole(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirm(p: &mut PathMtu, now: u32, sn: u32) -> u16 {
        let k = p.wants_probe(now).expect("a probe is due");
        p.sent_probe(sn, k);
        assert_eq!(p.wants_probe(now), None, "one probe at a time");
        assert_eq!(p.on_probe_acked(), Some(Outcome::Confirmed(k)));
        k
    }

    #[test]
    fn off_until_a_maximum_is_set() {
        let mut p = PathMtu::default();
        assert_eq!(p.wants_probe(0), None);
        p.set_max(46);
        assert_eq!(p.wants_probe(0), Some(3));
    }

    #[test]
    fn climbs_the_ladder_up_to_the_maximum() {
        let mut p = PathMtu::default();
        p.set_max(20);
        let mut sizes = Vec::new();
        while p.wants_probe(0).is_some() {
            sizes.push(confirm(&mut p, 0, sizes.len() as u32));
        }
        // 24 is above the maximum: the last rung is the maximum itself.
        assert_eq!(sizes, vec![3, 6, 12, 20]);
        assert_eq!(p.confirmed(), 20);
    }

    #[test]
    fn three_losses_stop_the_search_below_that_size_until_the_raise_timer() {
        let mut p = PathMtu::default();
        p.set_max(46);
        confirm(&mut p, 0, 1);
        for i in 0..MAX_PROBES {
            assert_eq!(p.wants_probe(10), Some(6), "retry {i}");
            p.sent_probe(100 + u32::from(i), 6);
            assert_eq!(p.on_probe_lost(10), Some(Outcome::Lost(6)));
        }
        assert_eq!(p.confirmed(), 3);
        assert_eq!(p.wants_probe(10), None);
        assert_eq!(p.wants_probe(10 + RAISE_TIMER_MS - 1), None);
        assert_eq!(p.wants_probe(10 + RAISE_TIMER_MS), Some(6));
    }

    #[test]
    fn a_success_between_losses_resets_the_count() {
        let mut p = PathMtu::default();
        p.set_max(46);
        for _ in 0..MAX_PROBES - 1 {
            p.sent_probe(1, 3);
            p.on_probe_lost(0);
        }
        confirm(&mut p, 0, 2);
        for _ in 0..MAX_PROBES - 1 {
            p.sent_probe(3, 6);
            p.on_probe_lost(0);
        }
        assert_eq!(p.wants_probe(0), Some(6));
    }

    #[test]
    fn black_hole_drops_to_base_and_searches_below_the_failed_size() {
        let mut p = PathMtu::default();
        p.set_max(46);
        confirm(&mut p, 0, 1);
        confirm(&mut p, 0, 2);
        assert_eq!(p.confirmed(), 6);
        assert_eq!(p.on_retransmit(BLACK_HOLE_XMIT - 1, true, 5), None);
        assert_eq!(p.on_retransmit(BLACK_HOLE_XMIT + 2, false, 5), None);
        assert_eq!(
            p.on_retransmit(BLACK_HOLE_XMIT, true, 5),
            Some(Outcome::BlackHole(6))
        );
        assert_eq!(p.confirmed(), 1);
        // 3 may still work; 6 is not tried again before the timer.
        assert_eq!(confirm(&mut p, 6, 3), 3);
        assert_eq!(p.wants_probe(6), None);
        assert_eq!(p.wants_probe(5 + RAISE_TIMER_MS), Some(6));
    }

    #[test]
    fn retransmissions_at_the_base_size_are_no_black_hole() {
        let mut p = PathMtu::default();
        p.set_max(46);
        assert_eq!(p.on_retransmit(10, true, 0), None);
        assert_eq!(p.wants_probe(0), Some(3));
    }

    #[test]
    fn reset_restarts_at_the_base_size_and_forgets_failures() {
        let mut p = PathMtu::default();
        p.set_max(46);
        confirm(&mut p, 0, 1);
        for _ in 0..MAX_PROBES {
            p.sent_probe(2, 6);
            p.on_probe_lost(0);
        }
        assert_eq!(p.wants_probe(0), None);
        p.reset();
        assert_eq!(p.confirmed(), 1);
        assert_eq!(p.wants_probe(0), Some(3));
    }

    #[test]
    fn lowering_the_maximum_lowers_the_size() {
        let mut p = PathMtu::default();
        p.set_max(46);
        confirm(&mut p, 0, 1);
        confirm(&mut p, 0, 2);
        p.set_max(1);
        assert_eq!(p.confirmed(), 1);
        assert_eq!(p.wants_probe(0), None);
    }
}
