//! Round-trip time estimation and retransmission timeout, as ikcp
//! (`ikcp_update_ack`, itself RFC 6298 with ikcp's constants).

/// RTO before the first RTT sample (ikcp `IKCP_RTO_DEF`).
const RTO_DEFAULT: u32 = 200;
/// Upper bound of the RTO (ikcp `IKCP_RTO_MAX`). Also the largest RTT sample
/// we believe: anything longer is a forged or absurdly stale timestamp.
pub(crate) const RTO_MAX: u32 = 60_000;

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
}

impl RttEstimator {
    pub(crate) fn new(min_rto: u32, interval: u32) -> Self {
        Self {
            srtt: None,
            rttval: 0,
            rto: RTO_DEFAULT,
            min_rto,
            interval,
        }
    }

    pub(crate) fn rto(&self) -> u32 {
        self.rto
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
        let srtt = self.srtt.unwrap_or(0);
        let rto = srtt.saturating_add(self.interval.max(self.rttval.saturating_mul(4)));
        self.rto = rto.clamp(self.min_rto, RTO_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_srtt() {
        let mut r = RttEstimator::new(30, 10);
        assert_eq!(r.srtt(), None);
        assert_eq!(r.rto(), RTO_DEFAULT);
        r.on_sample(100);
        assert_eq!(r.srtt(), Some(100));
        // rto = srtt + max(interval, 4 * rttval) = 100 + 200
        assert_eq!(r.rto(), 300);
    }

    #[test]
    fn absurd_samples_are_ignored_and_rto_bounded() {
        let mut r = RttEstimator::new(100, 10);
        r.on_sample(u32::MAX);
        assert_eq!(r.srtt(), None);
        r.on_sample(RTO_MAX);
        assert!(r.rto() <= RTO_MAX);
        r.on_sample(0);
        assert!(r.rto() >= 100);
        assert!(r.srtt().unwrap_or(0) >= 1);
    }
}
