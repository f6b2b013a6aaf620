//! A deterministic two-endpoint simulator with virtual time, shared by the
//! integration tests: lossy, delaying, reordering, duplicating links driven
//! by a seeded RNG, and a length-prefixed message workload.

#![allow(dead_code)] // each test file uses a different part

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use gladius_kcp::{Kcp, KcpConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(crate) const CONV: u32 = 0x1122_3344;

/// Signed wrapping distance, like the crate's own clock arithmetic.
pub(crate) fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// How a one-way link misbehaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkConfig {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) delay_min: u32,
    /// Delay is uniform in `delay_min..=delay_max`: a wide range reorders.
    pub(crate) delay_max: u32,
}

impl LinkConfig {
    pub(crate) fn clean(delay: u32) -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: delay,
            delay_max: delay,
        }
    }
    pub(crate) fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::clean(20)
        }
    }
}

/// Datagrams in flight on one direction, ordered by delivery time
/// (the relative delivery time is used so the clock can wrap).
#[derive(Debug, Default)]
pub(crate) struct Link {
    pub(crate) config: Option<LinkConfig>,
    /// (delivery offset from start, tie-breaker, datagram)
    in_flight: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    seq: u64,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    /// Datagrams longer than this vanish (a path MTU, or a black hole).
    pub(crate) max_size: Option<usize>,
    /// Datagrams dropped for `max_size`.
    pub(crate) too_big: u64,
    /// The longest datagram offered to the link.
    pub(crate) largest: usize,
}

impl Link {
    fn new(config: LinkConfig) -> Self {
        Self {
            config: Some(config),
            ..Self::default()
        }
    }

    fn send(&mut self, elapsed: u64, datagram: &[u8], rng: &mut StdRng) {
        let c = self.config.unwrap_or(LinkConfig::clean(0));
        self.sent += 1;
        self.largest = self.largest.max(datagram.len());
        if self.max_size.is_some_and(|m| datagram.len() > m) {
            self.too_big += 1;
            return;
        }
        if rng.gen_bool(c.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.gen_bool(c.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = rng.gen_range(c.delay_min..=c.delay_max);
            self.seq += 1;
            self.in_flight.push(Reverse((
                elapsed + u64::from(delay),
                self.seq,
                datagram.to_vec(),
            )));
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop_due(&mut self, elapsed: u64) -> Option<Vec<u8>> {
        if self.next_due()? <= elapsed {
            self.in_flight.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

/// Two endpoints `a` and `b` joined by links `ab` and `ba`.
pub(crate) struct Sim {
    pub(crate) rng: StdRng,
    /// Virtual clock as the endpoints see it (starts near u32::MAX to wrap).
    pub(crate) now: u32,
    /// Milliseconds since the start (never wraps).
    pub(crate) elapsed: u64,
    pub(crate) a: Kcp,
    pub(crate) b: Kcp,
    pub(crate) ab: Link,
    pub(crate) ba: Link,
    pub(crate) updates: u64,
    /// Largest datagram `a` may send (checked on every one).
    pub(crate) a_max: usize,
}

impl Sim {
    pub(crate) fn new(seed: u64, config: &KcpConfig, ab: LinkConfig, ba: LinkConfig) -> Self {
        // Start 30 s before the u32 clock wraps so every test crosses it.
        let now = u32::MAX - 30_000;
        Self {
            rng: StdRng::seed_from_u64(seed),
            now,
            elapsed: 0,
            a: Kcp::new(CONV, config, now),
            b: Kcp::new(CONV, config, now),
            ab: Link::new(ab),
            ba: Link::new(ba),
            updates: 0,
            a_max: config.mtu.max(1400),
        }
    }

    /// Deliver due datagrams, run due timers, move new datagrams onto links.
    pub(crate) fn step_io(&mut self) {
        while let Some(d) = self.ab.pop_due(self.elapsed) {
            self.b.input(self.now, &d).expect("valid datagram a->b");
        }
        while let Some(d) = self.ba.pop_due(self.elapsed) {
            self.a.input(self.now, &d).expect("valid datagram b->a");
        }
        for kcp in [&mut self.a, &mut self.b] {
            if kcp.poll_timeout().is_some_and(|t| diff(self.now, t) >= 0) {
                kcp.update(self.now);
                self.updates += 1;
            }
        }
        while let Some(d) = self.a.poll_transmit() {
            assert!(d.len() <= self.a_max, "{} bytes from a", d.len());
            self.ab.send(self.elapsed, &d, &mut self.rng);
        }
        while let Some(d) = self.b.poll_transmit() {
            self.ba.send(self.elapsed, &d, &mut self.rng);
        }
    }

    /// Advance the clock to the next event (at least 1 ms, at most `cap`).
    /// Returns false if nothing at all is scheduled.
    pub(crate) fn advance(&mut self, cap: u32) -> bool {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        for kcp in [&self.a, &self.b] {
            if let Some(t) = kcp.poll_timeout() {
                let ahead = diff(t, self.now).max(0) as u64;
                consider(self.elapsed + ahead);
            }
        }
        if let Some(t) = self.ab.next_due() {
            consider(t);
        }
        if let Some(t) = self.ba.next_due() {
            consider(t);
        }
        let Some(next) = next else { return false };
        let step = next
            .saturating_sub(self.elapsed)
            .clamp(1, u64::from(cap.max(1)));
        self.elapsed += step;
        self.now = self.now.wrapping_add(step as u32);
        true
    }

    pub(crate) fn idle(&self) -> bool {
        self.a.poll_timeout().is_none()
            && self.b.poll_timeout().is_none()
            && self.ab.next_due().is_none()
            && self.ba.next_due().is_none()
    }
}

/// `count` messages of 1..=max_len random bytes, each framed with a u32 LE
/// length prefix, as one expected stream.
pub(crate) fn make_messages(rng: &mut StdRng, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let len = rng.gen_range(1..=max_len);
            let mut m = Vec::with_capacity(4 + len);
            m.extend_from_slice(&(len as u32).to_le_bytes());
            m.extend((0..len).map(|_| rng.gen::<u8>()));
            m
        })
        .collect()
}

/// Splits a received byte stream back into length-prefixed messages.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    buf: Vec<u8>,
    pub(crate) messages: Vec<Vec<u8>>,
    pub(crate) bytes: usize,
}

impl Deframer {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len();
        self.buf.extend_from_slice(chunk);
        loop {
            if self.buf.len() < 4 {
                return;
            }
            let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
            if self.buf.len() < 4 + len {
                return;
            }
            self.messages.push(self.buf.drain(..4 + len).collect());
        }
    }
}

/// Outcome of [`transfer`].
#[derive(Debug)]
pub(crate) struct TransferReport {
    pub(crate) virtual_ms: u64,
    pub(crate) updates: u64,
}

/// Stream `messages` from `a` to `b` (keeping at most `max_unacked` bytes
/// queued in `a`), check they arrive exactly once, in order and identical,
/// then run until both endpoints are idle. Panics past `limit_ms`.
/// `hook` runs every step (to inject forged traffic).
pub(crate) fn transfer(
    sim: &mut Sim,
    messages: &[Vec<u8>],
    max_unacked: usize,
    limit_ms: u64,
    mut hook: impl FnMut(&mut Sim),
) -> TransferReport {
    let mut next = 0;
    let mut got = Deframer::default();
    loop {
        while next < messages.len() && sim.a.unacked_bytes() < max_unacked {
            sim.a.send(&messages[next]).unwrap();
            next += 1;
        }
        hook(sim);
        sim.step_io();
        while let Some(chunk) = sim.b.recv() {
            assert!(!chunk.is_empty());
            got.push(&chunk);
        }
        assert!(!sim.a.is_dead(), "sender declared the link dead");
        let done = next == messages.len() && got.messages.len() == messages.len();
        if done && sim.idle() {
            break;
        }
        assert!(
            sim.elapsed < limit_ms,
            "transfer not finished after {} virtual ms: {} of {} messages, {} bytes",
            sim.elapsed,
            got.messages.len(),
            messages.len(),
            got.bytes
        );
        if next < messages.len() && sim.a.unacked_bytes() < max_unacked {
            // The last ACKs just made room: queue more before waiting.
            continue;
        }
        if !sim.advance(1_000) {
            panic!(
                "nothing scheduled but transfer incomplete: sent {next}/{}, got {} ({} bytes), a {:?}, b {:?}, a unacked {}",
                messages.len(),
                got.messages.len(),
                got.bytes,
                sim.a.stats(),
                sim.b.stats(),
                sim.a.unacked_bytes()
            );
        }
    }
    assert_eq!(got.messages.len(), messages.len());
    for (i, (g, m)) in got.messages.iter().zip(messages).enumerate() {
        assert!(g == m, "message {i} differs");
    }
    assert!(got.bytes == messages.iter().map(Vec::len).sum::<usize>());
    assert_eq!(sim.a.unacked_bytes(), 0);
    assert_eq!(sim.a.poll_timeout(), None);
    assert_eq!(sim.b.poll_timeout(), None);
    TransferReport {
        virtual_ms: sim.elapsed,
        updates: sim.updates,
    }
}
