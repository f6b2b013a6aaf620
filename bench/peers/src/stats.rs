//! Latency statistics: nearest-rank quantiles over round-trip samples.

use std::time::Duration;

/// Summary of a set of round-trip samples, in microseconds.
#[derive(Debug, Clone)]
pub struct Quantiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99 values: the 1st, 2nd, ..., 99th percentile.
    pub all_us: Vec<f64>,
}

/// Nearest-rank quantile `q` (0 < q <= 1) of already sorted samples.
fn nearest_rank(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds, rounded to 0.1 µs.
fn us(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 100.0).round() / 10.0
}

/// Sorts `samples` and computes the quantiles reported by the benchmark.
pub fn quantiles(samples: &mut [Duration]) -> Quantiles {
    samples.sort_unstable();
    Quantiles {
        p50_us: us(nearest_rank(samples, 0.50)),
        p90_us: us(nearest_rank(samples, 0.90)),
        p99_us: us(nearest_rank(samples, 0.99)),
        all_us: (1..=99)
            .map(|p| us(nearest_rank(samples, p as f64 / 100.0)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_hundred_samples() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let q = quantiles(&mut samples);
        assert_eq!(q.p50_us, 50.0);
        assert_eq!(q.p90_us, 90.0);
        assert_eq!(q.p99_us, 99.0);
        assert_eq!(q.all_us.len(), 99);
        assert_eq!(q.all_us[0], 1.0);
    }

    #[test]
    fn empty_samples_give_zero() {
        let q = quantiles(&mut []);
        assert_eq!(q.p50_us, 0.0);
    }
}
