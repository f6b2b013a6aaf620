//! The output buffer's life: kept while a session has something in flight
//! (so a busy session does not allocate a block per flush), let go once it
//! is idle and drained (so an idle session holds none).

use gladius_kcp::{Kcp, KcpConfig};

/// Deliver everything `from` has to send to `to`; the datagrams handed over.
fn pump(from: &mut Kcp, to: &mut Kcp, now: u32) -> usize {
    from.flush(now);
    let mut n = 0;
    while let Some(d) = from.poll_transmit() {
        to.input(now, &d)
            .expect("a datagram from our own peer parses");
        n += 1;
    }
    n
}

#[test]
fn the_output_buffer_is_held_while_busy_and_let_go_when_idle() {
    let config = KcpConfig::default();
    let (mut a, mut b) = (Kcp::new(7, &config, 0), Kcp::new(7, &config, 0));
    assert_eq!(a.output_buffer_bytes(), 0, "a new session holds no block");
    for round in 0..5u32 {
        let now = round * 10;
        a.send(b"request").expect("short message");
        assert!(pump(&mut a, &mut b, now) > 0);
        // Unacknowledged: the block stays for the next flush.
        assert!(a.output_buffer_bytes() > 0, "round {round}");
        assert_eq!(b.recv().as_deref(), Some(&b"request"[..]));
        b.send(b"reply").expect("short message");
        assert!(pump(&mut b, &mut a, now + 1) > 0);
        assert_eq!(a.recv().as_deref(), Some(&b"reply"[..]));
    }
    // `a` owes the last reply's ACK; sending it leaves `a` idle. `b` hears
    // it and is idle too once it has flushed.
    assert!(pump(&mut a, &mut b, 60) > 0);
    assert_eq!(pump(&mut b, &mut a, 61), 0);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(a.output_buffer_bytes(), 0, "idle and drained: no block");
    assert_eq!(b.output_buffer_bytes(), 0, "idle and drained: no block");
}
