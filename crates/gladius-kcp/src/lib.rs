//! Sans-IO KCP: a reliable, ordered byte stream over unreliable datagrams,
//! wire-compatible with the reference C implementation (ikcp,
//! skywind3000/kcp), that never panics on input.
//!
//! # Model
//! A [`Kcp`] endpoint does no IO and reads no clock. The caller
//! - feeds received datagrams to [`Kcp::input`] (or [`Kcp::input_bytes`]),
//! - writes with [`Kcp::send`] and reads with [`Kcp::recv`],
//! - calls [`Kcp::update`] at the time given by [`Kcp::poll_timeout`]
//!   (`None` = idle, nothing to do until the next input or send),
//! - puts every datagram from [`Kcp::poll_transmit`] on the wire.
//!
//! Time is the caller's wrapping `u32` millisecond clock with any epoch; all
//! comparisons are wrapping differences, like ikcp's `_itimediff`.
//!
//! # Protocol
//! The wire format is ikcp's ([`segment`] documents it); the algorithms
//! (selective and cumulative ACKs, RTO estimation and backoff, fast resend,
//! zero-window probing, optional congestion control, dead-link detection)
//! follow `ikcp.c`. The endpoint is always in **stream mode**: `send` appends
//! to a byte stream cut into mss-sized segments with `frg = 0`, and received
//! segments are delivered in sequence order whatever their `frg`, so an ikcp
//! peer in message mode can talk to it as a byte stream.
//!
//! # Datagram size
//! Off by default, [`Kcp::set_max_datagram`] lets datagrams carry several
//! segments beyond the `mtu` once the peer acknowledged a probe of that
//! size: segments keep their size (`mtu - 24`), only the number per
//! datagram grows, in whole multiples of the `mtu` (3, 6, 12, 24, 46),
//! back to the `mtu` on a black hole or [`Kcp::reset_path`]. Nothing new
//! goes on the wire; a peer that cannot read the larger datagrams never
//! confirms them. The state machine and its rules are in `pmtu.rs`.
//!
//! # Hostile input
//! `input` parses the whole datagram before changing anything, rejects
//! malformed ones with an [`InputError`], ignores sequence numbers outside
//! the windows, and bounds every buffer it fills: the receive side by the
//! receive window (and optionally a byte limit on out-of-order segments,
//! [`Kcp::set_reorder_limit`]), the ACK list and the outgoing datagram
//! queue by multiples of the windows. The send queue is bounded by the caller through
//! [`Kcp::unacked_bytes`].

mod clock;
mod kcp;
mod output;
mod pmtu;
mod recv_buf;
mod rtt;
pub mod segment;
mod send_buf;
mod send_queue;

pub use crate::kcp::Kcp;

/// Tuning of one KCP endpoint. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcpConfig {
    /// Largest datagram produced, in bytes (segment header included). Default 1400.
    pub mtu: usize,
    /// Internal flush interval in ms (ikcp `interval`). Default 10.
    pub interval_ms: u32,
    /// ikcp "nodelay": minimum RTO 30 ms instead of 100 ms and RTO backoff 1.5x instead of 2x. Default true.
    pub nodelay: bool,
    /// Fast resend after this many duplicate ACKs skipping a segment (0 = off). Default 2.
    pub fast_resend: u32,
    /// Disable congestion control (window = min(snd_wnd, remote wnd)). Default true.
    pub no_congestion_control: bool,
    /// Send window in segments. Default 1024.
    pub send_window: u16,
    /// Receive window in segments. Default 1024.
    pub recv_window: u16,
    /// A segment retransmitted this many times marks the link dead. Default 20.
    pub dead_link: u32,
}

impl Default for KcpConfig {
    fn default() -> Self {
        Self {
            mtu: 1400,
            interval_ms: 10,
            nodelay: true,
            fast_resend: 2,
            no_congestion_control: true,
            send_window: 1024,
            recv_window: 1024,
            dead_link: 20,
        }
    }
}

/// Why a datagram was rejected by [`Kcp::input`] or [`segment::parse_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// Shorter than a segment header, or a segment's `len` runs past the end.
    Truncated,
    /// The conversation id does not match this endpoint's.
    WrongConv,
    /// Unknown command byte.
    BadCommand,
    /// A header field is out of range (e.g. sn far outside the window, impossible una).
    ///
    /// Reserved: such segments are currently ignored, not rejected, as ikcp does.
    Invalid,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputError::Truncated => "truncated KCP datagram",
            InputError::WrongConv => "KCP conversation id mismatch",
            InputError::BadCommand => "unknown KCP command",
            InputError::Invalid => "invalid KCP header field",
        })
    }
}

impl std::error::Error for InputError {}

/// Why [`Kcp::send`] or [`segment::encode`] refused data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Empty data.
    Empty,
    /// A segment payload longer than its `u32` length field can say.
    TooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Empty => f.write_str("empty KCP send"),
            SendError::TooLong => f.write_str("KCP segment payload longer than u32::MAX bytes"),
        }
    }
}

impl std::error::Error for SendError {}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Segments retransmitted after a timeout.
    pub timeout_retransmits: u64,
    /// Segments retransmitted by fast resend.
    pub fast_retransmits: u64,
    /// Retransmissions found to be spurious: the segment was acknowledged
    /// with the timestamp of its original transmission, so the original
    /// arrived and every retransmission of it was unnecessary.
    /// Also counted in `timeout_retransmits` or `fast_retransmits`.
    pub spurious_retransmits: u64,
    /// Datagrams produced.
    pub datagrams_out: u64,
    /// Datagrams accepted by `input`.
    pub datagrams_in: u64,
    /// PUSH segments ahead of a gap neither stored nor acknowledged: they
    /// did not fit the reorder limit ([`Kcp::set_reorder_limit`]).
    pub reorder_refused: u64,
    /// Probes for a larger datagram size that were confirmed
    /// ([`Kcp::set_max_datagram`]).
    pub mtu_probes_confirmed: u64,
    /// Probes for a larger datagram size that were lost.
    pub mtu_probes_lost: u64,
    /// Falls back to the base datagram size after larger datagrams
    /// stopped arriving (black hole).
    pub mtu_black_holes: u64,
}
