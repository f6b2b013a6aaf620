//! Handshake admission: which `Init`s may cost this node a key exchange.
//!
//! A responder's Diffie-Hellman work is the one thing an initiator can make
//! it spend without proving anything, so it is rationed by three budgets,
//! each a rate of key exchanges:
//!
//! * **known**: `Init`s from an address in the route table or with a
//!   pinned key. They go first: strangers cannot spend this budget, so a
//!   flood leaves the node's own peers able to reconnect.
//! * **plain**: `Init`s without a valid cookie, from anyone
//!   (`Config::with_key_exchanges_per_sec`). Past it (or its per-IP share,
//!   or with the half-open table half full) an initiator is asked for a
//!   cookie instead: a `Cookie` reply is a MAC, smaller than the `Init`.
//! * **cookie**: `Init`s that carry a valid cookie, i.e. from initiators
//!   that receive at their address
//!   (`Config::with_cookie_key_exchanges_per_sec`). A cookie buys admission
//!   to this budget, never a way around every budget: past it the `Init`
//!   is dropped (counted) and the initiator's retransmission tries again.
//!
//! Cookie replies themselves are rationed per source IP
//! ([`COOKIES_PER_IP`] per window): a host flooding from many ports gets a
//! few answers, not one per datagram.
//!
//! Each budget is a token bucket holding at most [`BURST_MS`] of its rate,
//! so the work a flood can cause is spread evenly rather than arriving in
//! bursts. Within the plain and cookie budgets each source IP (an IPv6 /64)
//! gets a fair share of each 100 ms window's worth: the window's worth
//! divided by the number of IPs that used the budget in this window or the
//! one before, and never more than a quarter of it even alone. A host with
//! thousands of ports thus takes one share, and newcomers in the same
//! window still find room. Spoofed sources can spend the plain budget but
//! not the cookie budget: a flood of forgeries makes everyone show a
//! cookie, one round trip more, and nothing worse.
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
const MIN_SHARERS: usize = 4;

/// Budget sizes, per second (see `Config`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) plain_per_sec: u32,
    pub(crate) cookie_per_sec: u32,
}

/// `Cookie` replies per source IP per window. Each costs a MAC and a
/// datagram; past this, a host's further `Init`s in the window get no
/// answer (counted in `throttled_handshakes`) and their retransmissions try
/// again. Forged `Init`s in a peer's name at 40 a second leave the peer's
/// own room.
pub(super) const COOKIES_PER_IP: u32 = 50;
/// Source IPs whose cookie replies are counted per window. More (a flood
/// from spoofed sources) are answered uncounted: refusing them would
/// refuse honest newcomers the cookie they need.
const MAX_COUNTED_IPS: usize = 4_096;

/// What an `Init` without a valid cookie gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// A key exchange now.
    Exchange,
    /// A `Cookie` reply: prove your address first.
    Cookie,
    /// Nothing: its host had its cookies for this window.
    Nothing,
}

/// The three budgets of the current window. See the module docs.
#[derive(Debug)]
pub(super) struct Admission {
    window_start: u64,
    known: Budget,
    plain: Budget,
    cookie: Budget,
    /// Cookie replies per source IP in this window.
    cookies: HashMap<SourceIp, u32>,
}

impl Admission {
    pub(super) fn new(limits: Limits, rng: &mut StdRng) -> Self {
        Self {
            window_start: 0,
            // Route-table peers get as much as strangers without a cookie.
            known: Budget::new(limits.plain_per_sec, rng),
            plain: Budget::new(limits.plain_per_sec, rng),
            cookie: Budget::new(limits.cookie_per_sec, rng),
            cookies: table(rng),
        }
    }

    /// Start a new window if `now` is past the current one.
    fn roll(&mut self, now: u64) {
        if now >= self.window_start.saturating_add(WINDOW_MS) {
            self.window_start = now;
            self.known.roll();
            self.plain.roll();
            self.cookie.roll();
            self.cookies.clear();
        }
    }

    /// An `Init` without a valid cookie from `ip`. `known`: its address is
    /// a route-table peer's or pinned; `loaded`: the half-open table is
    /// half full, so strangers must show a cookie whatever the budget.
    pub(super) fn plain(&mut self, now: u64, ip: SourceIp, known: bool, loaded: bool) -> Plain {
        self.roll(now);
        if known && self.known.take_unshared(now) {
            return Plain::Exchange;
        }
        if !loaded && self.plain.take(now, ip) {
            return Plain::Exchange;
        }
        self.cookie_for(now, ip)
    }

    /// An `Init` to be asked for a cookie (see [`COOKIES_PER_IP`]).
    pub(super) fn cookie_for(&mut self, now: u64, ip: SourceIp) -> Plain {
        self.roll(now);
        let counted = self.cookies.len() < MAX_COUNTED_IPS || self.cookies.contains_key(&ip);
        if !counted {
            return Plain::Cookie;
        }
        let sent = self.cookies.entry(ip).or_insert(0);
        if *sent >= COOKIES_PER_IP {
            return Plain::Nothing;
        }
        *sent += 1;
        Plain::Cookie
    }

    /// An `Init` with a valid cookie from `ip`: whether it gets a key
    /// exchange (else it is dropped).
    pub(super) fn cookied(&mut self, now: u64, ip: SourceIp, known: bool) -> bool {
        self.roll(now);
        (known && self.known.take_unshared(now)) || self.cookie.take(now, ip)
    }
}

/// One budget: a token bucket of key exchanges, and who took them in the
/// current window.
///
/// Tokens refill continuously and at most [`BURST_MS`] worth wait, so the
/// Diffie-Hellman work a flood can cause is spread evenly instead of
/// arriving as one window's worth at each window's start: a legitimate
/// datagram waits behind a few key exchanges at most (a burst of 37 at
/// every window start held legitimate requests up to 49 ms, p99).
#[derive(Debug)]
struct Budget {
    per_sec: u64,
    /// Tokens, in thousandths.
    milli: u64,
    /// At most this many thousandths wait.
    burst_milli: u64,
    refilled_at: u64,
    /// What one window holds: the shares are of it.
    per_window: usize,
    /// Key exchanges per source IP in this window.
    by_ip: HashMap<SourceIp, u32>,
    /// How many IPs took some in the window before.
    ips_before: usize,
}

/// Tokens that may wait, in ms of the budget's rate.
const BURST_MS: u64 = 10;

impl Budget {
    fn new(per_sec: u32, rng: &mut StdRng) -> Self {
        let per_sec = u64::from(per_sec).max(1);
        let burst_milli = per_sec.saturating_mul(BURST_MS).max(1_000);
        let per_window = per_sec.saturating_mul(WINDOW_MS).div_ceil(1_000);
        Self {
            per_sec,
            milli: burst_milli,
            burst_milli,
            refilled_at: 0,
            per_window: usize::try_from(per_window).unwrap_or(usize::MAX).max(1),
            by_ip: table(rng),
            ips_before: 0,
        }
    }

    fn roll(&mut self) {
        self.ips_before = self.by_ip.len();
        self.by_ip.clear();
    }

    /// Refill to `now`; whether a whole token waits.
    fn ready(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(self.per_sec))
            .min(self.burst_milli);
        self.milli >= 1_000
    }

    /// Take one for anyone, without shares.
    fn take_unshared(&mut self, now: u64) -> bool {
        if !self.ready(now) {
            return false;
        }
        self.milli -= 1_000;
        true
    }

    /// Take one for `ip`, within its share of the window.
    fn take(&mut self, now: u64, ip: SourceIp) -> bool {
        if !self.ready(now) {
            return false;
        }
        let mine = self.by_ip.get(&ip).copied().unwrap_or(0);
        let ips = self.by_ip.len() + usize::from(mine == 0);
        let sharers = ips.max(self.ips_before).max(MIN_SHARERS);
        let share = (self.per_window / sharers).max(1);
        if mine as usize >= share {
            return false;
        }
        self.milli -= 1_000;
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

    /// Key exchanges `ip` gets from `n` requests one per ms from `start`.
    fn run(
        a: &mut Admission,
        start: u64,
        n: u64,
        mut ask: impl FnMut(&mut Admission, u64) -> bool,
    ) -> usize {
        (start..start + n).filter(|t| ask(a, *t)).count()
    }

    #[test]
    fn a_burst_gets_ten_ms_worth_and_the_rate_refills() {
        let mut a = admission();
        let plain = (0..100)
            .filter(|_| a.plain(0, ip(1), false, false) == Plain::Exchange)
            .count();
        let cookied = (0..100).filter(|_| a.cookied(0, ip(2), false)).count();
        assert_eq!((plain, cookied), (5, 10));
        // One ms later, one more cookied (1,000 a second).
        assert!(a.cookied(1, ip(2), false));
        assert!(!a.cookied(1, ip(2), false));
    }

    #[test]
    fn one_ip_alone_takes_a_quarter_of_each_window() {
        let mut a = admission();
        // Asking every ms for a window: 25 of the cookie budget's 100.
        let got = run(&mut a, 0, 100, |a, t| a.cookied(t, ip(1), false));
        assert_eq!(got, 25);
        // Another IP in the same window finds the rest refilling.
        let other = run(&mut a, 100, 0, |a, t| a.cookied(t, ip(2), false));
        assert_eq!(other, 0);
        // The next window: 25 each (shares of 100 among at least 4).
        let (mut one, mut two) = (0, 0);
        for t in 100..200 {
            one += usize::from(a.cookied(t, ip(1), false));
            two += usize::from(a.cookied(t, ip(2), false));
        }
        assert_eq!((one, two), (25, 25));
        let plain = run(&mut a, 200, 100, |a, t| {
            a.plain(t, ip(1), false, false) == Plain::Exchange
        });
        assert_eq!(plain, 12);
    }

    #[test]
    fn many_ips_share_and_spoofers_cannot_touch_the_cookie_budget() {
        let mut a = admission();
        // Spoofed sources, a new one every 0.1 ms for a window, spend the
        // plain budget: its burst and its rate, one each...
        let mut plain = 0;
        for i in 0..1_000u32 {
            let src = SourceIp::V4(i.to_be_bytes());
            if a.plain(u64::from(i / 10), src, false, false) == Plain::Exchange {
                plain += 1;
            }
        }
        assert_eq!(plain, 5 + 49);
        // ...and a real initiator, asked for a cookie, still gets in.
        assert_eq!(a.plain(99, ip(7), false, false), Plain::Cookie);
        assert!(a.cookied(99, ip(7), false));
    }

    #[test]
    fn a_host_gets_fifty_cookies_a_window() {
        let mut a = admission();
        let answered = (0..200)
            .filter(|_| a.plain(0, ip(1), false, true) == Plain::Cookie)
            .count();
        assert_eq!(answered, COOKIES_PER_IP as usize);
        assert_eq!(a.plain(0, ip(2), false, true), Plain::Cookie);
        assert_eq!(a.plain(100, ip(1), false, true), Plain::Cookie);
    }

    #[test]
    fn known_addresses_go_first_and_load_asks_strangers_for_cookies() {
        let mut a = admission();
        for _ in 0..5 {
            assert_eq!(a.plain(0, ip(1), true, true), Plain::Exchange);
        }
        // The known budget's burst is spent: known peers queue with the
        // others.
        assert_eq!(a.plain(0, ip(1), true, true), Plain::Cookie);
        assert!(a.cookied(0, ip(1), true));
        assert_eq!(a.plain(0, ip(2), false, true), Plain::Cookie);
        // It refills.
        assert_eq!(a.plain(2, ip(1), true, true), Plain::Exchange);
    }
}
