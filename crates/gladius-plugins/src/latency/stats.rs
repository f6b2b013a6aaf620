//! Per-peer RTT statistics, free of sockets and clocks: feed it samples and
//! misses, read EWMA, min, percentiles and the peer's status.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const MAX_SAMPLE_US: u64 = 1 << 40;

/// The largest round trip recorded; longer ones are recorded as this.
pub const MAX_SAMPLE: Duration = Duration::from_micros(MAX_SAMPLE_US);

/// Whether a peer answers its pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// Fewer than `suspect_after` consecutive pings missed (including a peer
    /// not pinged yet).
    Alive,
    /// At least `suspect_after` but fewer than `dead_after` consecutive
    /// pings missed.
    Suspect,
    /// At least `dead_after` consecutive pings missed.
    Dead,
}

impl PeerStatus {
    /// The status implied by `consecutive` missed pings with the thresholds
    /// `suspect_after` (k) and `dead_after` (m). Any answered ping resets
    /// `consecutive` to zero, so status is never sticky.
    pub fn from_misses(consecutive: u32, suspect_after: u32, dead_after: u32) -> Self {
        if consecutive >= dead_after {
            Self::Dead
        } else if consecutive >= suspect_after {
            Self::Suspect
        } else {
            Self::Alive
        }
    }
}

/// Round-trip statistics of one peer.
///
/// * **EWMA**: `ewma ← (1 − α)·ewma + α·sample`, seeded with the first
///   sample (α = [`LatencyConfig::ewma_alpha`](super::LatencyConfig)).
/// * **min**: the smallest sample ever recorded (not only in the window).
/// * **p50 / p99**: nearest-rank percentiles over the last `window`
///   samples: the value at rank `⌈p/100 · n⌉` of the `n` sorted samples.
/// * memory is bounded: at most `window` samples are kept.
///
/// Samples are kept in whole microseconds, capped at [`MAX_SAMPLE`]
/// (about 12.7 days) so the floating-point EWMA keeps sub-microsecond
/// precision whatever it is fed.
#[derive(Debug, Clone)]
pub struct RttStats {
    window: VecDeque<u64>,
    capacity: usize,
    alpha: f64,
    ewma_us: Option<f64>,
    min_us: Option<u64>,
    last_us: Option<u64>,
    samples: u64,
    missed: u64,
    consecutive_missed: u32,
}

impl RttStats {
    /// Empty statistics keeping at most `window` samples (at least 1) with
    /// EWMA weight `alpha` (clamped into `(0, 1]`; NaN becomes 1).
    pub fn new(window: usize, alpha: f64) -> Self {
        let capacity = window.max(1);
        let alpha = if alpha.is_nan() {
            1.0
        } else {
            alpha.clamp(f64::MIN_POSITIVE, 1.0)
        };
        Self {
            window: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            alpha,
            ewma_us: None,
            min_us: None,
            last_us: None,
            samples: 0,
            missed: 0,
            consecutive_missed: 0,
        }
    }

    /// Record an answered ping's round trip; resets the consecutive misses.
    pub fn record(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros())
            .unwrap_or(u64::MAX)
            .min(MAX_SAMPLE_US);
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(us);
        let x = us as f64;
        self.ewma_us = Some(match self.ewma_us {
            None => x,
            Some(e) => e + self.alpha * (x - e),
        });
        self.min_us = Some(self.min_us.map_or(us, |m| m.min(us)));
        self.last_us = Some(us);
        self.samples = self.samples.saturating_add(1);
        self.consecutive_missed = 0;
    }

    /// Record an answered ping whose round trip is not a fair sample (e.g.
    /// it waited for the session's handshake): resets the consecutive
    /// misses without touching the RTT statistics.
    pub fn record_answer(&mut self) {
        self.consecutive_missed = 0;
    }

    /// Record a ping that got no (valid) answer in time.
    pub fn record_miss(&mut self) {
        self.missed = self.missed.saturating_add(1);
        self.consecutive_missed = self.consecutive_missed.saturating_add(1);
    }

    /// The exponentially weighted moving average, if any sample.
    pub fn ewma(&self) -> Option<Duration> {
        self.ewma_us
            .map(|e| Duration::from_nanos((e * 1000.0) as u64))
    }

    /// The smallest sample ever recorded.
    pub fn min(&self) -> Option<Duration> {
        self.min_us.map(Duration::from_micros)
    }

    /// The most recent sample.
    pub fn last(&self) -> Option<Duration> {
        self.last_us.map(Duration::from_micros)
    }

    /// Nearest-rank percentile `p` (clamped into `[0, 100]`) over the
    /// window; `None` without samples. `p = 0` gives the window's minimum.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted: Vec<u64> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        percentile_of_sorted(&sorted, p).map(Duration::from_micros)
    }

    /// The median over the window.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(50.0)
    }

    /// The 99th percentile over the window.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(99.0)
    }

    /// Samples recorded in total (not only those in the window).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Samples currently in the window (at most [`capacity`](Self::capacity)).
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// The window's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pings missed in total.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Pings missed since the last answered one.
    pub fn consecutive_missed(&self) -> u32 {
        self.consecutive_missed
    }

    /// The status under thresholds `suspect_after` and `dead_after`.
    pub fn status(&self, suspect_after: u32, dead_after: u32) -> PeerStatus {
        PeerStatus::from_misses(self.consecutive_missed, suspect_after, dead_after)
    }
}

/// Nearest-rank percentile of an ascending slice.
pub(crate) fn percentile_of_sorted(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() {
        50.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ewma_is_seeded_then_smoothed() {
        let mut s = RttStats::new(8, 0.5);
        assert_eq!(s.ewma(), None);
        s.record(ms(10));
        assert_eq!(s.ewma(), Some(ms(10)));
        s.record(ms(20));
        assert_eq!(s.ewma(), Some(ms(15)));
        s.record(ms(5));
        assert_eq!(s.ewma(), Some(ms(10)));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_of_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_of_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_of_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_of_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_of_sorted(&[7], 99.0), Some(7));
        assert_eq!(percentile_of_sorted(&[], 50.0), None);
        assert_eq!(percentile_of_sorted(&[1, 2], f64::NAN), Some(1));
    }

    #[test]
    fn status_thresholds() {
        assert_eq!(PeerStatus::from_misses(0, 2, 4), PeerStatus::Alive);
        assert_eq!(PeerStatus::from_misses(1, 2, 4), PeerStatus::Alive);
        assert_eq!(PeerStatus::from_misses(2, 2, 4), PeerStatus::Suspect);
        assert_eq!(PeerStatus::from_misses(3, 2, 4), PeerStatus::Suspect);
        assert_eq!(PeerStatus::from_misses(4, 2, 4), PeerStatus::Dead);
        assert_eq!(PeerStatus::from_misses(9, 2, 4), PeerStatus::Dead);
    }
}
