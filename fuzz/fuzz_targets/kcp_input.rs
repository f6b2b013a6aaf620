//! Fuzz gladius-kcp's datagram parser and a live endpoint's input path.
//!
//! The input is split into datagrams; a small control byte before each one
//! chooses the conversation id (so most datagrams get past the conv check),
//! how far the clock advances, and whether to send, update, flush, or read.

#![no_main]

use gladius_kcp::segment::parse_datagram;
use gladius_kcp::{Kcp, KcpConfig};
use libfuzzer_sys::fuzz_target;

const CONV: u32 = 0x5eed_0001;

fuzz_target!(|data: &[u8]| {
    // The parser on the raw input: never panics, payloads stay in bounds.
    let mut consumed = 0usize;
    for segment in parse_datagram(data) {
        match segment {
            Ok((_, payload)) => consumed += 24 + payload.len(),
            Err(_) => break,
        }
    }
    assert!(consumed <= data.len());

    let config = KcpConfig {
        recv_window: 32,
        send_window: 32,
        ..KcpConfig::default()
    };
    let mut now = u32::MAX - 100; // cross the clock wrap early
    let mut kcp = Kcp::new(CONV, &config, now);
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        // Datagram length: next byte (0..=255), then that many bytes.
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let take = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;

        let mut datagram = datagram.to_vec();
        if control & 1 == 1 && datagram.len() >= 4 {
            datagram[..4].copy_from_slice(&CONV.to_le_bytes());
        }
        now = now.wrapping_add(u32::from(control >> 4) * 7);
        let _ = kcp.input(now, &datagram);
        if control & 2 == 2 {
            let _ = kcp.send(&datagram);
        }
        if control & 4 == 4 {
            kcp.update(now);
        } else if control & 8 == 8 {
            kcp.flush(now);
        }
        while kcp.recv().is_some() {}
        while let Some(out) = kcp.poll_transmit() {
            assert!(out.len() <= config.mtu);
            assert!(
                parse_datagram(&out).all(|s| s.is_ok()),
                "we emitted a malformed datagram"
            );
        }
        if let Some(t) = kcp.poll_timeout() {
            // The next wake-up is never absurdly far away.
            let ahead = t.wrapping_sub(now) as i32;
            assert!(ahead <= 130_000, "poll_timeout {ahead} ms ahead");
        }
        let _ = (
            kcp.unacked_bytes(),
            kcp.is_dead(),
            kcp.srtt_ms(),
            kcp.stats(),
        );
    }
});
