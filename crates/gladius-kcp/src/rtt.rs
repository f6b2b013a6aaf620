//! Round-trip time estimation and retransmission timeout, as ikcp
//! (`ikcp_update_ack`, itself RFC 6298 with ikcp's constants), plus the
//! Eifel response to spurious retransmissions (RFC 4015 idea, not in ikcp).
//!
//! ikcp takes an RTT sample from every ACK, not once per round trip as TCP
//! does, so a burst of late ACKs is forgotten within a few dozen ACKs of
//! normal ones: `rttval` shrinks by 1/4 per sample. Where the late ACKs come
//! back again and again (a busy receiver, or many receivers sharing a CPU)
//! the RTO keeps dropping below the delay and every late ACK costs a
//! spurious retransmission. So a detected spurious retransmission also sets
//! an RTO floor covering the late ACK's RTT with a margin, and that floor
//! fades only with time ([`FLOOR_HALF_LIFE`]), not with the sample count.

use crate::clock::diff;

/// RTO before the first RTT sample (ikcp `IKCP_RTO_DEF`).
const RTO_DEFAULT: u32 = 200;
/// Upper bound of the RTO (ikcp `IKCP_RTO_MAX`). Also the largest RTT sample
/// we believe: anything longer is a forged or absurdly stale timestamp.
pub(crate) const RTO_MAX: u32 = 60_000;

/// The spurious-retransmission RTO floor halves every this many ms.
pub(crate) const FLOOR_HALF_LIFE: u32 = 2_000;

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT; `None` until the first sample.
    srtt: Option<u32>,
    /// RTT variation.
    rttval: u32,
    /// Current retransmission timeout.
    rto: u32,
    /// Floor of the RTO (30 ms with nodelay, else 100 ms).
    min_rto: u32,
    /// The flush interval: ACKs can be delayed by up to this much, so the RTO
    /// never gets below `srtt + interval`.
    interval: u32,
    /// RTO floor set by the latest spurious retransmission (0 = none), as
    /// of `floor_set_at`; it halves every [`FLOOR_HALF_LIFE`] ms.
    floor: u32,
    floor_set_at: u32,
}

impl RttEstimator {
    pub(crate) fn new(min_rto: u32, interval: u32) -> Self {
        Self {
            srtt: None,
            rttval: 0,
            rto: RTO_DEFAULT,
            min_rto,
            interval,
            floor: 0,
            floor_set_at: 0,
        }
    }

    /// The RTO to arm timers with at `now`: the estimate, but not below
    /// what is left of the spurious-retransmission floor.
    pub(crate) fn rto(&self, now: u32) -> u32 {
        self.rto.max(self.floor_at(now)).min(RTO_MAX)
    }

    /// The floor decayed to `now`: halved per [`FLOOR_HALF_LIFE`] elapsed,
    /// linear within a half-life. A `now` before `floor_set_at` (the clock
    /// went back) counts as no time elapsed.
    fn floor_at(&self, now: u32) -> u32 {
        let elapsed = diff(now, self.floor_set_at).max(0) as u32;
        let Some(start) = self.floor.checked_shr(elapsed / FLOOR_HALF_LIFE) else {
            return 0;
        };
        // start <= RTO_MAX, so the product fits in u64 and the result in u32.
        let into = u64::from(elapsed % FLOOR_HALF_LIFE);
        let drop = u64::from(start / 2) * into / u64::from(FLOOR_HALF_LIFE);
        start - drop as u32
    }

    /// A retransmission was spurious: the ACK of an earlier copy came back
    /// `rtt` ms after that copy was sent, later than the timer allowed.
    /// Eifel response (RFC 4015 step 10): `srtt = max(srtt, rtt)`,
    /// `rttval = max(rttval, rtt / 2)` and the RTO recomputed from them.
    /// That alone fades within a few dozen ACKs here (see the module docs),
    /// so the RTO also gets a floor of `2 * rtt` (at least `rtt + interval`)
    /// that halves every [`FLOOR_HALF_LIFE`] ms; a new spurious
    /// retransmission raises it again. Samples above [`RTO_MAX`] are ignored.
    pub(crate) fn on_spurious(&mut self, rtt: u32, now: u32) {
        if rtt > RTO_MAX {
            return;
        }
        let srtt = self.srtt.unwrap_or(0).max(rtt).max(1);
        self.srtt = Some(srtt);
        self.rttval = self.rttval.max(rtt / 2);
        self.recompute_rto();
        let wanted = rtt.saturating_add(rtt.max(self.interval)).min(RTO_MAX);
        let current = self.floor_at(now);
        if wanted >= current {
            self.floor = wanted;
            self.floor_set_at = now;
        }
    }

    fn recompute_rto(&mut self) {
        let srtt = self.srtt.unwrap_or(0);
        let rto = srtt.saturating_add(self.interval.max(self.rttval.saturating_mul(4)));
        self.rto = rto.clamp(self.min_rto, RTO_MAX);
    }

    pub(crate) fn srtt(&self) -> Option<u32> {
        self.srtt
    }

    /// Feed one RTT sample in ms. Samples above [`RTO_MAX`] are ignored.
    pub(crate) fn on_sample(&mut self, rtt: u32) {
        if rtt > RTO_MAX {
            return;
        }
        // All values are <= RTO_MAX here, so u64 arithmetic cannot overflow
        // and every result fits back into u32.
        let rtt = u64::from(rtt);
        match self.srtt {
            None => {
                self.srtt = Some(rtt as u32);
                self.rttval = (rtt / 2) as u32;
            }
            Some(srtt) => {
                let srtt = u64::from(srtt);
                let delta = rtt.abs_diff(srtt);
                self.rttval = ((3 * u64::from(self.rttval) + delta) / 4) as u32;
                self.srtt = Some((((7 * srtt + rtt) / 8) as u32).max(1));
            }
        }
        self.recompute_rto();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_srtt() {
        let mut r = RttEstimator::new(30, 10);
        assert_eq!(r.srtt(), None);
        assert_eq!(r.rto(0), RTO_DEFAULT);
        r.on_sample(100);
        assert_eq!(r.srtt(), Some(100));
        // rto = srtt + max(interval, 4 * rttval) = 100 + 200
        assert_eq!(r.rto(0), 300);
    }

    #[test]
    fn absurd_samples_are_ignored_and_rto_bounded() {
        let mut r = RttEstimator::new(100, 10);
        r.on_sample(u32::MAX);
        assert_eq!(r.srtt(), None);
        r.on_sample(RTO_MAX);
        assert!(r.rto(0) <= RTO_MAX);
        r.on_sample(0);
        assert!(r.rto(0) >= 100);
        assert!(r.srtt().unwrap_or(0) >= 1);
    }

    #[test]
    fn spurious_response_covers_the_late_rtt_and_fades_with_time() {
        let mut r = RttEstimator::new(30, 10);
        for _ in 0..50 {
            r.on_sample(10);
        }
        assert!(r.rto(0) < 100);
        r.on_sample(300);
        r.on_spurious(300, 1_000);
        assert_eq!(r.srtt(), Some(300));
        assert!(r.rto(1_000) >= 600, "{}", r.rto(1_000));
        // Many fast samples bring the estimate back down...
        for _ in 0..200 {
            r.on_sample(10);
        }
        assert!(r.srtt().unwrap_or(0) < 50);
        // ...but the floor holds until it decays with time.
        assert_eq!(r.rto(1_000), 600);
        assert_eq!(r.rto(1_000 + FLOOR_HALF_LIFE / 2), 450);
        assert_eq!(r.rto(1_000 + FLOOR_HALF_LIFE), 300);
        assert!(r.rto(1_000 + 40 * FLOOR_HALF_LIFE) < 100);
        // A clock going backwards does not make the floor grow or panic.
        assert_eq!(r.rto(0), 600);
        // Absurd samples change nothing; the floor stays bounded.
        r.on_spurious(u32::MAX, 1_000);
        assert_eq!(r.rto(1_000), 600);
        r.on_spurious(RTO_MAX, 1_000);
        assert_eq!(r.rto(1_000), RTO_MAX);
        // A smaller spurious delay does not lower a higher floor.
        r.on_spurious(10, 1_000);
        assert_eq!(r.rto(1_000), RTO_MAX);
    }
}
