//! The KCP endpoint: ikcp's state machine (`ikcp_input`, `ikcp_flush`,
//! `ikcp_update`, `ikcp_check`) in stream mode, sans IO.
//!
//! Deviations from ikcp, all on the side of not trusting the peer:
//! - a datagram is validated whole before any state changes;
//! - `una` beyond what we sent, and ACKs outside `[snd_una, snd_nxt)`, are
//!   ignored (ikcp would release unsent or unrelated segments);
//! - RTT samples are taken only from ACKs of in-flight segments whose echoed
//!   timestamp is not older than the oldest in-flight transmission and not
//!   more than 60 s old;
//! - per-segment backoff is capped at 60 s, the ACK list and the outgoing
//!   datagram queue are bounded;
//! - when the peer's window reopens after being 0, unacknowledged segments
//!   are resent at the next flush instead of waiting for backed-off timers;
//! - spurious retransmissions are detected and answered (Eifel, below);
//! - while the peer has been silent since a segment was sent, its timeout
//!   does not resend it: only the oldest unacknowledged segment is resent,
//!   as a probe, and the other timers follow the probe's (below).
//!
//! # Spurious retransmissions (Eifel detection and response)
//! Every ACK echoes the `ts` of the copy of the segment it acknowledges. If a
//! retransmitted segment is acknowledged with the `ts` of its *original*
//! transmission, the original arrived and the retransmission was spurious
//! (RFC 3522, with KCP's `ts` as the timestamp option; no wire change). An
//! ACK of a retransmitted copy means a real loss and is not evidence. All
//! the retransmissions of such a segment are counted in
//! [`KcpStats::spurious_retransmits`], and once per datagram that reveals
//! any, the endpoint responds (RFC 4015's idea):
//! - the RTO estimate is reinitialised to cover the late ACK's RTT, and an
//!   RTO floor of twice that RTT is set that fades with time, not with the
//!   number of ACKs (see `rtt.rs`);
//! - every segment still in flight gets its timer re-armed with at least
//!   that RTO from its latest transmission, so the segments sent in the
//!   same burst are not retransmitted spuriously too. Backoff is per
//!   segment in KCP, and the acknowledged segment takes its own with it;
//!   the shared estimate was never backed off, so nothing else to undo;
//! - if a fast resend was spurious (ACKs reordered, not a loss), the skip
//!   counters of all segments in flight are reset and the fast-resend
//!   threshold rises by one, up to `FAST_RESEND_EXTRA_MAX` above the
//!   configured one; a fast resend that proves needed lowers it by one;
//! - with congestion control on, the window is restored to what it was
//!   before the timeout or fast-resend reactions since the last proven
//!   loss.
//!
//! ACKs that echo no known earlier copy, or an RTT above 60 s, are not
//! taken as evidence.
//!
//! # Timeouts while the peer is silent
//! Detection comes one RTT late: when a whole window goes out at once and
//! the ACKs are late (the peer, or our own caller, is busy), every segment
//! of the window times out, and with ikcp's per-segment timers each one is
//! resent, several times, before the first ACK arrives to reveal it. So a
//! timed-out segment is resent only if something arrived from the peer
//! since its latest transmission, or if it is the oldest unacknowledged one.
//! Otherwise nothing says it is lost rather than late, and its timer is
//! moved to the oldest segment's: that one probes the path for the window,
//! with its own backoff, like TCP's single retransmission on a timeout.
//! Once the peer is heard from again the deferral ends: if the datagram
//! proves a real loss (an ACK of a retransmitted copy) the deferred
//! segments are resent at the next flush, otherwise they get one more RTO
//! from then for their ACKs to arrive, and act as in ikcp after that (ACKs
//! of later segments also fast-resend the lost ones). A whole
//! window that was really lost is thus resent about one RTT later than ikcp
//! would; a dead link is still detected by the probe's retransmissions.

use bytes::Bytes;

use crate::clock::diff;
use crate::output::Packer;
use crate::pmtu::{Outcome, PathMtu};
use crate::recv_buf::ReceiveBuffer;
use crate::rtt::{RttEstimator, RTO_MAX};
use crate::segment::{Command, SegmentHeader, SegmentRanges, HEADER_LEN};
use crate::send_buf::{AckVerdict, SendBuffer};
use crate::send_queue::SendQueue;
use crate::{InputError, KcpConfig, KcpStats, SendError};

/// Smallest accepted MTU (ikcp `ikcp_setmtu` refuses below 50).
const MIN_MTU: usize = 50;
/// Largest accepted MTU: a UDP datagram cannot be bigger.
const MAX_MTU: usize = 65_535;
/// ikcp clamps the interval to 10..=5000; we allow down to 1 ms.
const MAX_INTERVAL: u32 = 5_000;
/// Minimum RTO with and without nodelay (ikcp `IKCP_RTO_NDL`, `IKCP_RTO_MIN`).
const MIN_RTO_NODELAY: u32 = 30;
const MIN_RTO_NORMAL: u32 = 100;
/// Remote window assumed until the peer tells us (ikcp `IKCP_WND_RCV`).
const INITIAL_REMOTE_WINDOW: u16 = 128;
/// First window probe after this long with a zero remote window, growing
/// 1.5x per probe up to the limit (ikcp `IKCP_PROBE_INIT`, `IKCP_PROBE_LIMIT`).
const PROBE_INIT: u32 = 7_000;
const PROBE_LIMIT: u32 = 120_000;
/// A segment is fast-retransmitted at most while sent this few times
/// (ikcp `IKCP_FASTACK_LIMIT`).
const FASTACK_LIMIT: u32 = 5;
/// The fast-resend threshold rises by at most this much above the configured
/// one after spurious fast resends.
const FAST_RESEND_EXTRA_MAX: u32 = 8;
/// Congestion control's slow-start threshold floor and start (ikcp).
const THRESH_MIN: u32 = 2;
const THRESH_INIT: u32 = 2;
/// ikcp resynchronises its flush clock when it is off by this much.
const FLUSH_RESYNC: i32 = 10_000;

/// One KCP conversation endpoint (stream mode). See the crate docs.
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    /// The base datagram size; segments are at most `mtu - 24` bytes.
    mtu: usize,
    mss: usize,
    interval: u32,
    nodelay: bool,
    fast_resend: u32,
    no_congestion_control: bool,
    send_window: u32,
    dead_link: u32,
    dead: bool,

    /// The latest time seen from the caller (ikcp `current`).
    current: u32,
    /// When the next periodic flush is due (ikcp `ts_flush`).
    ts_flush: u32,

    /// Peer's free receive window from its latest segment (ikcp `rmt_wnd`).
    remote_window: u16,
    /// We must send a WASK / WINS at the next flush (ikcp `probe` bits).
    probe_ask: bool,
    probe_tell: bool,
    /// Zero-window probing schedule (ikcp `ts_probe`, `probe_wait`).
    ts_probe: u32,
    probe_wait: u32,

    /// Congestion control (ikcp `cwnd`, `ssthresh`, `incr`); only limits
    /// sending when `no_congestion_control` is false.
    cwnd: u32,
    ssthresh: u32,
    incr: u64,
    /// (cwnd, ssthresh, incr) before the first loss reaction since the last
    /// proven loss, restored if a retransmission turns out spurious (Eifel
    /// response).
    cc_before_loss: Option<(u32, u32, u64)>,
    /// Added to `fast_resend` after spurious fast resends (reordering).
    fast_resend_extra: u32,
    /// When the latest datagram from the peer was accepted, if ever.
    heard_at: Option<u32>,
    /// Some segment may have a deferred timeout (saves a walk per input).
    any_deferred: bool,

    rtt: RttEstimator,
    /// Bytes accepted by `send` that have no sequence number yet. Stream mode:
    /// they are cut into mss-sized segments when the window lets them go.
    send_queue: SendQueue,
    send_buf: SendBuffer,
    recv: ReceiveBuffer,
    /// Bytes the out-of-order segments held may cost at most (`None`:
    /// only the receive window bounds them).
    reorder_limit: Option<usize>,
    /// (sn, ts) of PUSH segments to acknowledge at the next flush.
    acks: Vec<(u32, u32)>,
    max_acks: usize,
    out: Packer,
    /// How many segments one datagram may carry (datagram-size probing).
    pmtu: PathMtu,
    stats: KcpStats,
}

impl Kcp {
    /// New endpoint for conversation `conv`; `now` is the caller's ms clock.
    ///
    /// Out-of-range settings are clamped: `mtu` to 50..=65535, `interval_ms`
    /// to 1..=5000, windows to at least 1.
    pub fn new(conv: u32, config: &KcpConfig, now: u32) -> Self {
        let mtu = config.mtu.clamp(MIN_MTU, MAX_MTU);
        let interval = config.interval_ms.clamp(1, MAX_INTERVAL);
        let send_window = config.send_window.max(1);
        let recv_window = config.recv_window.max(1);
        let min_rto = if config.nodelay {
            MIN_RTO_NODELAY
        } else {
            MIN_RTO_NORMAL
        };
        let window_sum = usize::from(send_window) + usize::from(recv_window);
        Self {
            conv,
            mtu,
            mss: mtu - HEADER_LEN,
            interval,
            nodelay: config.nodelay,
            fast_resend: config.fast_resend,
            no_congestion_control: config.no_congestion_control,
            send_window: u32::from(send_window),
            dead_link: config.dead_link,
            dead: false,
            current: now,
            ts_flush: now,
            remote_window: INITIAL_REMOTE_WINDOW,
            probe_ask: false,
            probe_tell: false,
            ts_probe: 0,
            probe_wait: 0,
            cwnd: 1,
            ssthresh: THRESH_INIT,
            incr: 0,
            cc_before_loss: None,
            fast_resend_extra: 0,
            heard_at: None,
            any_deferred: false,
            rtt: RttEstimator::new(min_rto, interval),
            send_queue: SendQueue::default(),
            send_buf: SendBuffer::default(),
            recv: ReceiveBuffer::new(recv_window),
            reorder_limit: None,
            acks: Vec::new(),
            // A flush's worth of ACKs is at most what the window admits plus
            // duplicates; beyond a generous bound, dropping an ACK only
            // causes a retransmission.
            max_acks: 4 * usize::from(recv_window) + 64,
            out: Packer::new(mtu, 2 * window_sum + 16),
            pmtu: PathMtu::default(),
            stats: KcpStats::default(),
        }
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// Let datagrams grow up to `max` bytes where the path and the peer
    /// carry them (datagram-size probing, off by default; see the crate
    /// docs): whole multiples of the `mtu`, each carrying several
    /// segments of the unchanged size. `max` at or below the `mtu` turns
    /// probing off and returns to the `mtu`. Clamped to 65535.
    pub fn set_max_datagram(&mut self, max: usize) {
        let k = (max.min(MAX_MTU) / self.mtu).clamp(1, usize::from(u16::MAX));
        self.pmtu.set_max(u16::try_from(k).unwrap_or(u16::MAX));
        self.apply_datagram_limit();
    }

    /// The path to the peer changed (the peer roamed): datagrams return to
    /// the `mtu` and the search for a larger size starts again.
    pub fn reset_path(&mut self) {
        self.pmtu.reset();
        self.apply_datagram_limit();
    }

    /// The largest datagram the endpoint produces now: the `mtu`, or the
    /// larger size probing confirmed (a probe may be larger).
    pub fn datagram_limit(&self) -> usize {
        self.mtu.saturating_mul(usize::from(self.pmtu.confirmed()))
    }

    fn apply_datagram_limit(&mut self) {
        self.out.set_limit(self.datagram_limit());
    }

    fn count_pmtu(stats: &mut KcpStats, outcome: Option<Outcome>) -> bool {
        match outcome {
            Some(Outcome::Confirmed(_)) => {
                stats.mtu_probes_confirmed = stats.mtu_probes_confirmed.saturating_add(1);
            }
            Some(Outcome::Lost(_)) => {
                stats.mtu_probes_lost = stats.mtu_probes_lost.saturating_add(1);
            }
            Some(Outcome::BlackHole(_)) => {
                stats.mtu_black_holes = stats.mtu_black_holes.saturating_add(1);
                return true;
            }
            None => {}
        }
        false
    }

    /// Read the conversation id of a datagram without trusting anything else.
    pub fn peek_conv(datagram: &[u8]) -> Option<u32> {
        datagram
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Append bytes to the outgoing stream.
    ///
    /// Never refuses for lack of space: bound the queue with
    /// [`unacked_bytes`](Self::unacked_bytes).
    pub fn send(&mut self, data: &[u8]) -> Result<(), SendError> {
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        self.send_queue.push_slice(data);
        Ok(())
    }

    /// Like [`send`](Self::send), but a write of at least one segment's
    /// worth is kept as it is, not copied: the segments cut from it are
    /// slices of `data` (which stays allocated until they are all
    /// acknowledged). A shorter one is copied, like `send` (cheaper than
    /// sharing it).
    pub fn send_bytes(&mut self, data: &Bytes) -> Result<(), SendError> {
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        if data.len() < self.mss {
            self.send_queue.push_slice(data);
        } else {
            self.send_queue.push_bytes(data.clone(), self.mss);
        }
        Ok(())
    }

    /// Feed one received datagram (copied only if it carries data we keep).
    ///
    /// A malformed datagram is rejected whole and changes nothing. Segments
    /// that are well-formed but meaningless (sn outside the receive window,
    /// ACK or una for data we never sent) are ignored and the call succeeds;
    /// [`InputError::Invalid`] is currently never returned.
    pub fn input(&mut self, now: u32, datagram: &[u8]) -> Result<(), InputError> {
        self.input_inner(now, datagram, None)
    }

    /// Like [`input`](Self::input), but received chunks are zero-copy
    /// slices of `datagram`.
    pub fn input_bytes(&mut self, now: u32, datagram: Bytes) -> Result<(), InputError> {
        self.input_inner(now, &datagram, Some(&datagram))
    }

    /// Next in-order chunk of the incoming stream.
    pub fn recv(&mut self) -> Option<Bytes> {
        let (chunk, reopened) = self.recv.pop()?;
        if reopened {
            // Tell the peer at once that the window it saw closed is open
            // again, instead of letting it wait for its next probe.
            self.probe_tell = true;
        }
        Some(chunk)
    }

    /// Run timers and flush if the flush interval elapsed (ikcp `ikcp_update`).
    pub fn update(&mut self, now: u32) {
        self.current = now;
        let mut slap = diff(now, self.ts_flush);
        if !(-FLUSH_RESYNC..FLUSH_RESYNC).contains(&slap) {
            // The caller's clock jumped (or we were idle a long time).
            self.ts_flush = now;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if diff(now, self.ts_flush) >= 0 {
                self.ts_flush = now.wrapping_add(self.interval);
            }
            self.flush_inner();
        }
    }

    /// Flush pending ACKs and sendable segments now (ikcp `ikcp_flush`).
    pub fn flush(&mut self, now: u32) {
        self.current = now;
        self.flush_inner();
    }

    /// Next datagram to put on the wire. Once none is left and nothing is
    /// in flight or owed, the output buffer is let go.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let datagram = self.out.pop();
        if datagram.is_none() && self.is_idle() {
            self.out.release();
        }
        datagram
    }

    /// When `update` must next be called; `None` when idle.
    ///
    /// Idle means nothing unacknowledged or queued, no ACK or window probe
    /// to send. Otherwise this is the earliest of the next flush tick (for
    /// pending ACKs, probes and data the window admits), the earliest
    /// retransmission time and the next zero-window probe, never earlier
    /// than the next flush tick. A time in the past means "now". Call it
    /// again after every `send`, `input`, `recv` and `update`.
    pub fn poll_timeout(&self) -> Option<u32> {
        if self.is_idle() {
            return None;
        }
        let now = self.current;
        let until = |t: u32| diff(t, now).max(0) as u32;
        // ts_flush is at most one interval ahead unless it went stale
        // (long idle, clock wrap): then the next tick is now.
        let tick = diff(self.ts_flush, now).clamp(0, self.interval as i32) as u32;

        let mut wait = u32::MAX;
        if !self.acks.is_empty() || self.probe_ask || self.probe_tell {
            wait = 0;
        }
        if !self.send_queue.is_empty() {
            if self.remote_window == 0 {
                wait = wait.min(if self.probe_wait == 0 {
                    0
                } else {
                    until(self.ts_probe)
                });
            } else if self.window_has_room() {
                wait = 0;
            }
        }
        let resend = self.fast_resend_threshold();
        for seg in self.send_buf.iter() {
            if seg.fastack >= resend && seg.xmit <= FASTACK_LIMIT {
                wait = 0;
            }
            wait = wait.min(until(seg.resend_at));
        }
        if wait == u32::MAX {
            // Not idle but nothing scheduled (cannot happen): poll next tick.
            wait = 0;
        }
        Some(now.wrapping_add(tick.max(wait)))
    }

    /// Bytes accepted by `send` not yet acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.send_queue.len().saturating_add(self.send_buf.bytes())
    }

    /// Whether the peer has acknowledged any segment of ours: proof that it
    /// receives at the address we send to (as far as a protocol without
    /// authentication can tell).
    pub fn peer_acknowledged(&self) -> bool {
        self.send_buf.una() != 0
    }

    /// Whether a segment exceeded the dead-link retransmission limit.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Smoothed RTT in ms, once measured.
    pub fn srtt_ms(&self) -> Option<u32> {
        self.rtt.srtt()
    }

    /// Bound the out-of-order segments this endpoint holds (received ahead
    /// of a gap, waiting for it to fill) to `limit` bytes, counted as each
    /// segment's payload plus 64 bytes; `None` (the default): only the
    /// receive window bounds them. May change between inputs; lowering it
    /// below what is held drops nothing (those segments were acknowledged),
    /// it only stops new ones.
    ///
    /// The window advertised to the peer shrinks to what the limit can
    /// hold (full-size segments, plus the next expected one), so a sender
    /// that keeps to it is never refused. A segment ahead of the next
    /// expected one that does not fit anyway (the limit was lowered, or the
    /// sender ignores the window) is neither stored nor acknowledged, and
    /// counted in [`KcpStats::reorder_refused`]: the sender retransmits it.
    /// The next expected segment is always accepted, so the stream still
    /// moves with a limit of 0 (one segment per round trip).
    pub fn set_reorder_limit(&mut self, limit: Option<usize>) {
        self.reorder_limit = limit;
    }

    /// What the out-of-order segments held cost, in bytes (see
    /// [`set_reorder_limit`](Self::set_reorder_limit)).
    pub fn reorder_bytes(&self) -> usize {
        self.recv.held()
    }

    /// Bytes of output buffer held: a block while there is anything to send
    /// or to be acknowledged, none once idle and drained.
    pub fn output_buffer_bytes(&self) -> usize {
        self.out.held()
    }

    /// The peer's free receive window in segments, as last advertised
    /// (128 until the peer has sent anything, like ikcp).
    pub fn remote_window(&self) -> u16 {
        self.remote_window
    }

    /// Counters.
    pub fn stats(&self) -> KcpStats {
        KcpStats {
            datagrams_out: self.out.produced(),
            ..self.stats
        }
    }

    fn is_idle(&self) -> bool {
        self.acks.is_empty()
            && !self.probe_ask
            && !self.probe_tell
            && self.send_queue.is_empty()
            && self.send_buf.is_empty()
    }

    /// The number of segments allowed in flight (ikcp's flush `cwnd`).
    fn effective_window(&self) -> u32 {
        let window = self.send_window.min(u32::from(self.remote_window));
        if self.no_congestion_control {
            window
        } else {
            window.min(self.cwnd)
        }
    }

    fn window_has_room(&self) -> bool {
        let limit = self.send_buf.una().wrapping_add(self.effective_window());
        diff(self.send_buf.nxt(), limit) < 0
    }

    fn fast_resend_threshold(&self) -> u32 {
        if self.fast_resend > 0 {
            self.fast_resend.saturating_add(self.fast_resend_extra)
        } else {
            u32::MAX
        }
    }

    fn input_inner(
        &mut self,
        now: u32,
        datagram: &[u8],
        owned: Option<&Bytes>,
    ) -> Result<(), InputError> {
        // Validate everything before touching any state.
        if Self::peek_conv(datagram).is_some_and(|c| c != self.conv) {
            return Err(InputError::WrongConv);
        }
        for segment in SegmentRanges::new(datagram) {
            let (header, _) = segment?;
            if header.conv != self.conv {
                return Err(InputError::WrongConv);
            }
        }

        if diff(now, self.current) > 0 {
            self.current = now;
        }
        self.heard_at = Some(now);
        let prev_una = self.send_buf.una();
        // A genuine ACK echoes the ts of a transmission of a segment that was
        // in flight when this datagram arrived: not older than the oldest
        // first transmission still unacked.
        let oldest_sent = self.send_buf.oldest_first_sent();
        let mut shared = owned.cloned();
        let mut max_ack: Option<u32> = None;

        // Eifel detection, before any una or ACK releases the segments it
        // needs to look at (an ACK's own una usually covers its sn).
        let mut spurious: Option<Spurious> = None;
        let mut real_loss = false;
        for (header, _) in SegmentRanges::new(datagram).flatten() {
            if header.cmd != Command::Ack {
                continue;
            }
            match self.send_buf.judge_ack(header.sn, header.ts) {
                Some(AckVerdict::Spurious {
                    fast,
                    echoed_ts,
                    retransmits,
                }) => {
                    self.stats.spurious_retransmits = self
                        .stats
                        .spurious_retransmits
                        .saturating_add(u64::from(retransmits));
                    let rtt = diff(now, echoed_ts);
                    let s = spurious.get_or_insert(Spurious::default());
                    s.fast |= fast;
                    if rtt >= 0 && rtt as u32 <= RTO_MAX {
                        s.rtt = Some(s.rtt.unwrap_or(0).max(rtt as u32));
                    }
                }
                Some(AckVerdict::RetransmitNeeded { fast }) => {
                    if fast {
                        self.fast_resend_extra = self.fast_resend_extra.saturating_sub(1);
                    }
                    real_loss = true;
                }
                Some(AckVerdict::Plain) | None => {}
            }
        }

        for (header, range) in SegmentRanges::new(datagram).flatten() {
            if self.remote_window == 0 && header.wnd > 0 {
                self.on_window_reopened(now);
            }
            self.remote_window = header.wnd;
            self.send_buf.ack_below(header.una);
            match header.cmd {
                Command::Ack => {
                    let sent_by_us =
                        diff(header.sn, prev_una) >= 0 && diff(header.sn, self.send_buf.nxt()) < 0;
                    if !sent_by_us {
                        continue;
                    }
                    let rtt = diff(now, header.ts);
                    let plausible = oldest_sent.is_some_and(|oldest| diff(header.ts, oldest) >= 0);
                    if rtt >= 0 && plausible {
                        self.rtt.on_sample(rtt as u32);
                    }
                    self.send_buf.ack(header.sn);
                    max_ack = Some(match max_ack {
                        Some(m) if diff(header.sn, m) <= 0 => m,
                        _ => header.sn,
                    });
                }
                Command::Push => {
                    if !self.recv.acks(header.sn) {
                        continue;
                    }
                    let ahead = diff(header.sn, self.recv.nxt());
                    let limit = self.reorder_limit.map(|l| (l, self.holdable(l)));
                    if !self.recv.fits(header.sn, range.len(), limit) {
                        // Not stored, so not acknowledged: the sender
                        // retransmits it, and by then it may fit or be next.
                        self.stats.reorder_refused = self.stats.reorder_refused.saturating_add(1);
                        continue;
                    }
                    if self.acks.len() < self.max_acks {
                        self.acks.push((header.sn, header.ts));
                    }
                    if ahead > 0 && self.reorder_limit.is_some() {
                        // Held under a byte limit: its own copy, so that it
                        // keeps exactly what it is counted as (a slice
                        // would keep the whole datagram).
                        if let Some(payload) = datagram.get(range) {
                            self.recv.insert(header.sn, Bytes::copy_from_slice(payload));
                        }
                    } else if ahead >= 0 {
                        let shared = shared.get_or_insert_with(|| Bytes::copy_from_slice(datagram));
                        if range.end <= shared.len() {
                            self.recv.insert(header.sn, shared.slice(range));
                        }
                    }
                }
                Command::WindowAsk => self.probe_tell = true,
                Command::WindowTell => {}
            }
        }

        if let Some(spurious) = spurious {
            self.on_spurious(now, spurious);
        }
        if real_loss {
            // The window reductions since were for real.
            self.cc_before_loss = None;
        }
        // The peer is heard from: timeouts deferred while it was silent end.
        // If a resend proved a real loss, they were probably losses too;
        // otherwise their ACKs get one more RTO from now.
        if std::mem::take(&mut self.any_deferred) {
            for (_, seg) in self.send_buf.iter_mut().filter(|(_, s)| s.deferred) {
                seg.deferred = false;
                let due = if real_loss {
                    now
                } else {
                    now.wrapping_add(seg.rto)
                };
                if diff(due, seg.resend_at) < 0 {
                    seg.resend_at = due;
                }
            }
        }
        if let Some(max_ack) = max_ack {
            self.send_buf.fast_ack(max_ack);
        }
        if diff(self.send_buf.una(), prev_una) > 0 {
            self.grow_congestion_window();
        }
        // The probe's last segment left only in the probe (a resend would
        // have failed it): acknowledged means the whole probe arrived.
        if let Some(probe) = self.pmtu.probe() {
            if !self.send_buf.holds(probe.sn) {
                let outcome = self.pmtu.on_probe_acked();
                Self::count_pmtu(&mut self.stats, outcome);
                self.apply_datagram_limit();
            }
        }
        self.stats.datagrams_in = self.stats.datagrams_in.saturating_add(1);
        Ok(())
    }

    /// Eifel response to the spurious retransmissions one datagram revealed
    /// (see the module docs).
    fn on_spurious(&mut self, now: u32, spurious: Spurious) {
        if let Some(rtt) = spurious.rtt {
            self.rtt.on_spurious(rtt, now);
        }
        let rto = self.rtt.rto(now);
        for (_, seg) in self.send_buf.iter_mut() {
            if seg.xmit == 0 {
                continue;
            }
            seg.rto = seg.rto.max(rto);
            let due = seg.ts.wrapping_add(seg.rto);
            if diff(due, seg.resend_at) > 0 {
                seg.resend_at = due;
            }
            if spurious.fast {
                seg.fastack = 0;
            }
        }
        if spurious.fast && self.fast_resend > 0 {
            self.fast_resend_extra = (self.fast_resend_extra + 1).min(FAST_RESEND_EXTRA_MAX);
        }
        if let Some((cwnd, ssthresh, incr)) = self.cc_before_loss.take() {
            self.cwnd = self.cwnd.max(cwnd);
            self.ssthresh = self.ssthresh.max(ssthresh);
            self.incr = self.incr.max(incr);
        }
    }

    /// The peer's window went from 0 to open. Not in ikcp: every segment
    /// still unacknowledged was either lost or dropped by the peer for being
    /// outside its full window (the peer acknowledges everything it stores),
    /// so resend them all at the next flush, with the backoff they collected
    /// while the window was closed undone. Without this a reader that stalled
    /// for a while resumes only as fast as the backed-off timers allow.
    fn on_window_reopened(&mut self, now: u32) {
        let rto = self.rtt.rto(now);
        for (_, seg) in self.send_buf.iter_mut() {
            if seg.xmit > 0 {
                seg.rto = rto;
                seg.resend_at = now;
            }
        }
    }

    /// Congestion window growth on new cumulative ACKs (end of ikcp_input).
    fn grow_congestion_window(&mut self) {
        let remote = u32::from(self.remote_window);
        if self.cwnd >= remote {
            return;
        }
        let mss = self.mss as u64;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr = self.incr.saturating_add(mss);
        } else {
            self.incr = self.incr.max(mss);
            self.incr = self.incr.saturating_add(mss * mss / self.incr + mss / 16);
            if (u64::from(self.cwnd) + 1) * mss <= self.incr {
                let cwnd = self.incr.div_ceil(mss);
                self.cwnd = u32::try_from(cwnd).unwrap_or(u32::MAX);
            }
        }
        if self.cwnd > remote {
            self.cwnd = remote;
            self.incr = u64::from(remote) * mss;
        }
    }

    /// The window to advertise: the free receive window, and under a
    /// reorder limit no more than the segments it can hold at full size
    /// plus the next expected one, so a sender that keeps to the window
    /// never sends what would be refused (never 0 for the limit's sake: at
    /// worst one segment per round trip).
    fn advertised_window(&self) -> u16 {
        let free = self.recv.window_free();
        match self.reorder_limit {
            None => free,
            Some(limit) => free.min(u16::try_from(self.holdable(limit)).unwrap_or(u16::MAX)),
        }
    }

    /// The window a reorder limit allows: the next expected segment and
    /// as many full-size segments after it as `limit` bytes hold. Segments
    /// beyond it are refused even when they would fit, so that what is
    /// held is always the nearest: held far-ahead segments would leave no
    /// room for the ones that fill the gap, and the stream would move one
    /// segment per round trip while the sender's retransmissions age.
    fn holdable(&self, limit: usize) -> u32 {
        let ahead = limit / crate::recv_buf::cost(self.mss);
        u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1)
    }

    fn flush_inner(&mut self) {
        let current = self.current;
        let base = SegmentHeader {
            conv: self.conv,
            cmd: Command::Ack,
            frg: 0,
            wnd: self.advertised_window(),
            ts: 0,
            sn: 0,
            una: self.recv.nxt(),
            len: 0,
        };

        for &(sn, ts) in &self.acks {
            self.out.push(&SegmentHeader { sn, ts, ..base }, &[]);
        }
        self.acks.clear();

        self.schedule_window_probe();
        if self.probe_ask {
            let probe = SegmentHeader {
                cmd: Command::WindowAsk,
                ..base
            };
            self.out.push(&probe, &[]);
        }
        if self.probe_tell {
            let tell = SegmentHeader {
                cmd: Command::WindowTell,
                ..base
            };
            self.out.push(&tell, &[]);
        }
        self.probe_ask = false;
        self.probe_tell = false;

        // Give queued bytes sequence numbers while the window allows.
        let window = self.effective_window();
        while !self.send_queue.is_empty() && self.window_has_room() {
            let segment = self.send_queue.take(self.mss);
            self.send_buf.push(segment);
        }

        let resend = self.fast_resend_threshold();
        // A probe for a larger datagram size, if one is due: the first new
        // segment starts a datagram filled to that size, provided enough
        // new segments follow to fill it whole.
        let mut probe_k = self.pmtu.wants_probe(current);
        let nxt = self.send_buf.nxt();
        let mtu = self.mtu;
        let mut limit_changed = false;
        // Without nodelay, ikcp delays the first retransmission by rto/8.
        let rx_rto = self.rtt.rto(current);
        let first_rto_slack = if self.nodelay { 0 } else { rx_rto >> 3 };
        let mut fast_retransmitted = false;
        let mut lost = false;
        let heard_at = self.heard_at;
        // The timer of the oldest held segment, once handled (the first one
        // the loop sees): silent timeouts of the others follow it.
        let mut probe_at: Option<u32> = None;
        // Segments the peer's window no longer covers (it shrank, e.g. to
        // a reorder limit) wait rather than retransmit: the peer would
        // refuse them, and each refusal would age them towards dead link.
        // The oldest one is always covered.
        let covered_end = self
            .send_buf
            .una()
            .wrapping_add(u32::from(self.remote_window.max(1)));

        for (sn, seg) in self.send_buf.iter_mut() {
            let expired = seg.xmit > 0 && diff(current, seg.resend_at) >= 0;
            // Nothing arrived from the peer since this copy left.
            let silent = heard_at.is_none_or(|h| diff(h, seg.ts) < 0);
            let mut timeout = false;
            let send = if seg.xmit == 0 {
                if let Some(k) = probe_k.take() {
                    if nxt.wrapping_sub(sn) > u32::from(k) {
                        // The probe is segments sn..sn+k, all new and
                        // full: exactly k * mtu bytes. Its last segment
                        // is the witness: a receiver that truncates the
                        // datagram (a small buffer) may still take the
                        // first ones, never the last.
                        self.out.start_probe(mtu.saturating_mul(usize::from(k)));
                        self.pmtu.sent_probe(sn.wrapping_add(u32::from(k) - 1), k);
                    }
                }
                seg.xmit = 1;
                seg.rto = rx_rto;
                seg.first_sent = current;
                seg.resend_at = current.wrapping_add(seg.rto).wrapping_add(first_rto_slack);
                true
            } else if let (true, true, Some(at)) = (expired, silent, probe_at) {
                // Late or lost, nobody can tell yet: leave it to the probe.
                seg.resend_at = at;
                seg.deferred = true;
                self.any_deferred = true;
                false
            } else if expired && diff(sn, covered_end) >= 0 {
                seg.resend_at = current.wrapping_add(seg.rto);
                false
            } else if expired {
                seg.xmit = seg.xmit.saturating_add(1);
                self.stats.timeout_retransmits = self.stats.timeout_retransmits.saturating_add(1);
                // Backoff: 1.5x with nodelay, else 2x (ikcp), capped so that
                // timers stay far inside the i32 range of `diff`.
                let step = if self.nodelay {
                    seg.rto / 2
                } else {
                    seg.rto.max(rx_rto)
                };
                seg.rto = seg.rto.saturating_add(step).min(RTO_MAX);
                seg.resend_at = current.wrapping_add(seg.rto);
                lost = true;
                timeout = true;
                true
            } else if seg.fastack >= resend && seg.xmit <= FASTACK_LIMIT {
                seg.xmit = seg.xmit.saturating_add(1);
                seg.fastack = 0;
                seg.resend_at = current.wrapping_add(seg.rto);
                // xmit was just bumped: 2 means this is the first resend.
                if seg.xmit == 2 {
                    seg.fast_resent = true;
                }
                self.stats.fast_retransmits = self.stats.fast_retransmits.saturating_add(1);
                fast_retransmitted = true;
                true
            } else {
                false
            };
            if probe_at.is_none() {
                probe_at = Some(seg.resend_at);
            }
            if send && seg.xmit > 1 {
                if self.pmtu.probe().is_some_and(|p| p.sn == sn) {
                    let outcome = self.pmtu.on_probe_lost(current);
                    Self::count_pmtu(&mut self.stats, outcome);
                }
                let outcome = self.pmtu.on_retransmit(seg.xmit, timeout, current);
                if Self::count_pmtu(&mut self.stats, outcome) {
                    // Back to base-size datagrams from this one on.
                    self.out.set_limit(mtu);
                    limit_changed = true;
                }
            }
            if send {
                seg.deferred = false;
                seg.ts = current;
                let header = SegmentHeader {
                    cmd: Command::Push,
                    ts: current,
                    sn,
                    ..base
                };
                self.out.push(&header, &seg.data);
                if seg.xmit >= self.dead_link {
                    self.dead = true;
                }
            }
        }
        self.out.finish();
        if limit_changed {
            self.apply_datagram_limit();
        }

        self.shrink_congestion_window(window, resend, fast_retransmitted, lost);
    }

    /// ikcp's zero-window probing: while the peer's window is 0, ask it
    /// after 7 s, then every 1.5x longer up to 120 s.
    fn schedule_window_probe(&mut self) {
        if self.remote_window != 0 {
            self.ts_probe = 0;
            self.probe_wait = 0;
            return;
        }
        if self.probe_wait == 0 {
            self.probe_wait = PROBE_INIT;
            self.ts_probe = self.current.wrapping_add(self.probe_wait);
        } else if diff(self.current, self.ts_probe) >= 0 {
            self.probe_wait = self.probe_wait.max(PROBE_INIT);
            self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
            self.ts_probe = self.current.wrapping_add(self.probe_wait);
            self.probe_ask = true;
        }
    }

    /// Congestion window reaction to losses (end of ikcp_flush).
    fn shrink_congestion_window(&mut self, window: u32, resend: u32, fast: bool, lost: bool) {
        let mss = self.mss as u64;
        if (fast || lost) && self.cc_before_loss.is_none() {
            self.cc_before_loss = Some((self.cwnd, self.ssthresh, self.incr));
        }
        if fast {
            let inflight = self.send_buf.nxt().wrapping_sub(self.send_buf.una());
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.saturating_add(resend);
            self.incr = u64::from(self.cwnd) * mss;
        }
        if lost {
            self.ssthresh = (window / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = mss;
        }
    }
}

/// What one datagram's ACKs revealed about spurious retransmissions.
#[derive(Debug, Default, Clone, Copy)]
struct Spurious {
    /// Longest RTT of an acknowledged earlier copy, if believable.
    rtt: Option<u32>,
    /// One of the spurious retransmissions was a fast resend.
    fast: bool,
}
