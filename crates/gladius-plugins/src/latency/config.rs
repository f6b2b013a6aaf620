//! [`LatencyConfig`]: how often to ping, how long to wait, when to give up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of the latency audit. Every field is public; start from
/// [`LatencyConfig::default`] and change what you need, or use the `with_*`
/// methods. [`LatencyAudit::new`](super::LatencyAudit::new) checks it with
/// [`validate`](Self::validate).
///
/// With the defaults a peer that goes silent is **suspect** after about
/// 2–3 s and **dead** (and deleted) within
/// `dead_after × interval + timeout` = 6 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyConfig {
    /// Time between two pings to the same peer. Default **1 s**.
    pub interval: Duration,
    /// How long a ping waits for its pong before it counts as missed.
    /// Must be positive and at most `interval` (so at most one ping per
    /// peer is in flight). Default **1 s**.
    pub timeout: Duration,
    /// `k`: consecutive missed pings after which a peer is
    /// [`Suspect`](super::PeerStatus::Suspect). At least 1. Default **2**.
    pub suspect_after: u32,
    /// `m`: consecutive missed pings after which a peer is
    /// [`Dead`](super::PeerStatus::Dead). At least `suspect_after`.
    /// Default **5**.
    pub dead_after: u32,
    /// Whether a dead peer is removed with `Network::delete` (closing its
    /// session and dropping it from the route table). Default **true**.
    pub delete_on_dead: bool,
    /// Whether this node pings its peers. With `false` it only answers
    /// pings (a responder). Default **true**.
    pub probe: bool,
    /// How many recent samples per peer p50/p99 are computed over
    /// (memory per peer is 8 bytes × window). 1..=65536. Default **128**.
    pub window: usize,
    /// EWMA weight of a new sample, in `(0, 1]`. Default **0.125**
    /// (TCP's SRTT gain, RFC 6298).
    pub ewma_alpha: f64,
    /// How many dead peers are remembered (status and statistics) after
    /// they left the node, oldest forgotten first. Default **256**.
    pub max_dead_remembered: usize,
    /// Seed of the first ping nonce, so a simulation repeats exactly.
    /// Default `None`: drawn from the OS.
    #[serde(default)]
    pub rng_seed: Option<u64>,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            suspect_after: 2,
            dead_after: 5,
            delete_on_dead: true,
            probe: true,
            window: 128,
            ewma_alpha: 0.125,
            max_dead_remembered: 256,
            rng_seed: None,
        }
    }
}

/// Why a [`LatencyConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LatencyConfigError {
    /// `interval` is zero.
    #[error("interval must be positive")]
    ZeroInterval,
    /// `timeout` is zero or longer than `interval`.
    #[error("timeout must be positive and at most the interval")]
    Timeout,
    /// `suspect_after` is zero or larger than `dead_after`.
    #[error("need 1 <= suspect_after <= dead_after")]
    Thresholds,
    /// `window` is outside 1..=65536.
    #[error("window must be between 1 and 65536 samples")]
    Window,
    /// `ewma_alpha` is not in `(0, 1]`.
    #[error("ewma_alpha must be in (0, 1]")]
    Alpha,
}

impl LatencyConfig {
    /// Check the invariants documented on each field.
    pub fn validate(&self) -> Result<(), LatencyConfigError> {
        if self.interval.is_zero() {
            return Err(LatencyConfigError::ZeroInterval);
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(LatencyConfigError::Timeout);
        }
        if self.suspect_after == 0 || self.suspect_after > self.dead_after {
            return Err(LatencyConfigError::Thresholds);
        }
        if !(1..=65536).contains(&self.window) {
            return Err(LatencyConfigError::Window);
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(LatencyConfigError::Alpha);
        }
        Ok(())
    }

    /// The longest a silent peer stays undeclared dead, ignoring scheduling
    /// delays: `dead_after × interval + timeout`. (The first missed ping is
    /// sent at most one interval after the silence starts; the `m`-th one
    /// `m − 1` intervals later and times out `timeout` after that.)
    pub fn dead_bound(&self) -> Duration {
        self.interval
            .saturating_mul(self.dead_after)
            .saturating_add(self.timeout)
    }

    /// Set `interval` and `timeout` together (timeout = interval).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.timeout = interval;
        self
    }

    /// Set `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set `suspect_after` (k) and `dead_after` (m).
    pub fn with_thresholds(mut self, suspect_after: u32, dead_after: u32) -> Self {
        self.suspect_after = suspect_after;
        self.dead_after = dead_after;
        self
    }

    /// Set `delete_on_dead`.
    pub fn with_delete_on_dead(mut self, delete: bool) -> Self {
        self.delete_on_dead = delete;
        self
    }

    /// Set `probe` (false: only answer pings).
    pub fn with_probe(mut self, probe: bool) -> Self {
        self.probe = probe;
        self
    }

    /// Set `window`.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Set `ewma_alpha`.
    pub fn with_ewma_alpha(mut self, alpha: f64) -> Self {
        self.ewma_alpha = alpha;
        self
    }

    /// Set `rng_seed`.
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}
