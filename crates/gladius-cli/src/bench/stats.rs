//! Percentiles of latency samples (nanoseconds in, microseconds out).

/// The distribution of one set of latency samples, in microseconds.
#[derive(Debug, Clone)]
pub(super) struct Summary {
    /// Number of samples.
    pub(super) n: usize,
    /// Median.
    pub(super) p50_us: f64,
    /// 90th percentile.
    pub(super) p90_us: f64,
    /// 99th percentile.
    pub(super) p99_us: f64,
    /// Largest sample.
    pub(super) max_us: f64,
    /// Mean.
    pub(super) mean_us: f64,
    /// The 1st..99th percentiles (99 values), for plotting the distribution.
    pub(super) quantiles_us: Vec<f64>,
}

/// Sort `ns` and summarize it (nearest-rank percentiles). Empty input gives
/// zeros.
pub(super) fn summarize(ns: &mut [u64]) -> Summary {
    ns.sort_unstable();
    let us = |v: u64| round2(v as f64 / 1e3);
    let q = |p: f64| us(nearest_rank(ns, p));
    let mean = if ns.is_empty() {
        0.0
    } else {
        ns.iter().map(|&v| v as f64).sum::<f64>() / ns.len() as f64 / 1e3
    };
    Summary {
        n: ns.len(),
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: us(ns.last().copied().unwrap_or(0)),
        mean_us: round2(mean),
        quantiles_us: (1..=99).map(|i| q(f64::from(i) / 100.0)).collect(),
    }
}

/// The nearest-rank `p` quantile of sorted `sorted` (0 when empty).
fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `x` rounded to two decimals (keeps the JSON short and readable).
pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `a / b` rounded to four significant digits (ratios of message rates
/// between 1 MiB messages and 1200-byte datagrams are tiny but not 0); 0
/// when `b` is not positive.
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    let r = a / b;
    if b > 0.0 && r.is_finite() && r > 0.0 {
        let scale = 10f64.powi(3 - r.log10().floor() as i32);
        (r * scale).round() / scale
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|i| i * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!(s.n, 100);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.quantiles_us.len(), 99);
        assert_eq!(s.quantiles_us[0], 1.0);
        assert_eq!(s.max_us, 100.0);
    }

    #[test]
    fn empty_is_zero() {
        let s = summarize(&mut []);
        assert_eq!(s.p50_us, 0.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(2.0, 3.0), 0.6667);
        assert_eq!(ratio(1.0, 3000.0), 0.0003333);
    }
}
