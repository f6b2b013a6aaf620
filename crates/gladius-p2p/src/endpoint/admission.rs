//! Handshake admission: which `Init`s may cost this node a key exchange.
//!
//! A responder's Diffie-Hellman work is the one thing an initiator can make
//! it spend without proving anything, so it is rationed per 100 ms window
//! in three budgets:
//!
//! * **known**: `Init`s from an address in the route table or with a
//!   pinned key. They go first: strangers cannot spend this budget, so a
//!   flood leaves the node's own peers able to reconnect.
//! * **plain**: `Init`s without a valid cookie, from anyone
//!   (`Config::with_key_exchanges_per_sec`). Past it (or its per-IP share,
//!   or with the half-open table half full) an initiator is asked for a
//!   cookie instead: a `Cookie` reply is a MAC, smaller than the `Init`.
//! * **cookie**: `Init`s that carry a valid cookie, i.e. from initiators
//!   that receive at their address (`Config::with_cookie_key_exchanges_per_sec`).
//!   A cookie buys admission to this budget, never a way around every
//!   budget: past it the `Init` is dropped (counted) and the initiator's
//!   retransmission tries again.
//!
//! Within the plain and cookie budgets each source IP (an IPv6 /64) gets a
//! fair share per window: the budget divided by the number of IPs that
//! used it in this window or the one before, and never more than half of it
//! even alone, so a host with thousands of ports takes one share and the
//! first newcomer in a window still finds room. Spoofed sources can spend
//! the plain budget but not the cookie budget: a flood of forgeries makes
//! everyone show a cookie, one round trip more, and nothing worse.
//!
//! State is a few counters and a map of the IPs admitted in the current
//! window, so it is bounded by the budgets themselves.

use rand::rngs::StdRng;

use super::source::SourceIp;
use super::{table, HashMap};

/// Length of one budget window, in ms. Honest initiators retransmit no
/// faster than every 200 ms, so one window sees at most one `Init` of each.
pub(super) const WINDOW_MS: u64 = 100;
/// Even an IP alone in a window gets at most 1/`MIN_SHARERS` of a budget:
/// the rest is for others that arrive in the same window.
const MIN_SHARERS: usize = 2;

/// Budget sizes, per second (see `Config`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) plain_per_sec: u32,
    pub(crate) cookie_per_sec: u32,
}

/// What an `Init` without a valid cookie gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// A key exchange now.
    Exchange,
    /// A `Cookie` reply: prove your address first.
    Cookie,
}

/// The three budgets of the current window. See the module docs.
#[derive(Debug)]
pub(super) struct Admission {
    window_start: u64,
    known: Budget,
    plain: Budget,
    cookie: Budget,
}

impl Admission {
    pub(super) fn new(limits: Limits, rng: &mut StdRng) -> Self {
        Self {
            window_start: 0,
            // Route-table peers get as much as strangers without a cookie.
            known: Budget::new(limits.plain_per_sec, rng),
            plain: Budget::new(limits.plain_per_sec, rng),
            cookie: Budget::new(limits.cookie_per_sec, rng),
        }
    }

    /// Start a new window if `now` is past the current one.
    fn roll(&mut self, now: u64) {
        if now >= self.window_start.saturating_add(WINDOW_MS) {
            self.window_start = now;
            self.known.roll();
            self.plain.roll();
            self.cookie.roll();
        }
    }

    /// An `Init` without a valid cookie from `ip`. `known`: its address is
    /// a route-table peer's or pinned; `loaded`: the half-open table is
    /// half full, so strangers must show a cookie whatever the budget.
    pub(super) fn plain(&mut self, now: u64, ip: SourceIp, known: bool, loaded: bool) -> Plain {
        self.roll(now);
        if known && self.known.take_unshared() {
            return Plain::Exchange;
        }
        if !loaded && self.plain.take(ip) {
            return Plain::Exchange;
        }
        Plain::Cookie
    }

    /// An `Init` with a valid cookie from `ip`: whether it gets a key
    /// exchange (else it is dropped).
    pub(super) fn cookied(&mut self, now: u64, ip: SourceIp, known: bool) -> bool {
        self.roll(now);
        (known && self.known.take_unshared()) || self.cookie.take(ip)
    }
}

/// One budget: key exchanges per window, and who took them.
#[derive(Debug)]
struct Budget {
    per_window: u32,
    used: u32,
    /// Key exchanges per source IP in this window.
    by_ip: HashMap<SourceIp, u32>,
    /// How many IPs took some in the window before.
    ips_before: usize,
}

impl Budget {
    fn new(per_sec: u32, rng: &mut StdRng) -> Self {
        let per_window = u64::from(per_sec).saturating_mul(WINDOW_MS).div_ceil(1_000);
        Self {
            per_window: u32::try_from(per_window).unwrap_or(u32::MAX).max(1),
            used: 0,
            by_ip: table(rng),
            ips_before: 0,
        }
    }

    fn roll(&mut self) {
        self.ips_before = self.by_ip.len();
        self.by_ip.clear();
        self.used = 0;
    }

    /// Take one for anyone, without shares.
    fn take_unshared(&mut self) -> bool {
        if self.used >= self.per_window {
            return false;
        }
        self.used += 1;
        true
    }

    /// Take one for `ip`, within its share.
    fn take(&mut self, ip: SourceIp) -> bool {
        if self.used >= self.per_window {
            return false;
        }
        let mine = self.by_ip.get(&ip).copied().unwrap_or(0);
        let now = self.by_ip.len() + usize::from(mine == 0);
        let sharers = now.max(self.ips_before).max(MIN_SHARERS);
        let share = (self.per_window as usize / sharers).max(1);
        if mine as usize >= share {
            return false;
        }
        self.used += 1;
        *self.by_ip.entry(ip).or_insert(0) += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ip(last: u8) -> SourceIp {
        SourceIp::V4([10, 0, 0, last])
    }

    fn admission() -> Admission {
        let limits = Limits {
            plain_per_sec: 500,
            cookie_per_sec: 1_000,
        };
        Admission::new(limits, &mut StdRng::seed_from_u64(1))
    }

    #[test]
    fn one_ip_alone_takes_half_of_each_budget_per_window() {
        let mut a = admission();
        let plain = (0..100)
            .filter(|_| a.plain(0, ip(1), false, false) == Plain::Exchange)
            .count();
        let cookied = (0..200).filter(|_| a.cookied(0, ip(1), false)).count();
        assert_eq!((plain, cookied), (25, 50));
        // A second IP in the same window finds the other half.
        let other = (0..100).filter(|_| a.cookied(1, ip(2), false)).count();
        assert_eq!(other, 50);
        // The next window: shares by the two IPs seen, whatever their order.
        let first = (0..100).filter(|_| a.cookied(100, ip(1), false)).count();
        assert_eq!(first, 50);
    }

    #[test]
    fn many_ips_share_and_spoofers_cannot_touch_the_cookie_budget() {
        let mut a = admission();
        // 1,000 spoofed sources spend the plain budget, one each...
        let plain = (0..1_000u32)
            .filter(|i| {
                let src = SourceIp::V4(i.to_be_bytes());
                a.plain(0, src, false, false) == Plain::Exchange
            })
            .count();
        assert_eq!(plain, 50);
        // ...and a real initiator, asked for a cookie, still gets in.
        assert_eq!(a.plain(1, ip(7), false, false), Plain::Cookie);
        assert!(a.cookied(2, ip(7), false));
    }

    #[test]
    fn known_addresses_go_first_and_load_asks_strangers_for_cookies() {
        let mut a = admission();
        for _ in 0..50 {
            assert_eq!(a.plain(0, ip(1), true, true), Plain::Exchange);
        }
        // The known budget is spent: known peers queue with the others.
        assert_eq!(a.plain(0, ip(1), true, true), Plain::Cookie);
        assert!(a.cookied(0, ip(1), true));
        assert_eq!(a.plain(0, ip(2), false, true), Plain::Cookie);
        // Past the window, it is back.
        assert_eq!(a.plain(100, ip(1), true, true), Plain::Exchange);
    }
}
