//! Segment codec: round trips and rejection of every malformed form.

use gladius_kcp::segment::{encode, parse_datagram, Command, SegmentHeader, HEADER_LEN};
use gladius_kcp::{InputError, Kcp, KcpConfig};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Push),
        Just(Command::Ack),
        Just(Command::WindowAsk),
        Just(Command::WindowTell),
    ]
}

fn segment() -> impl Strategy<Value = (SegmentHeader, Vec<u8>)> {
    (
        any::<u32>(),
        command(),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(conv, cmd, frg, wnd, ts, sn, una, payload)| {
            let header = SegmentHeader {
                conv,
                cmd,
                frg,
                wnd,
                ts,
                sn,
                una,
                len: payload.len() as u32,
            };
            (header, payload)
        })
}

fn header(cmd: Command, len: u32) -> SegmentHeader {
    SegmentHeader {
        conv: 9,
        cmd,
        frg: 0,
        wnd: 128,
        ts: 1,
        sn: 0,
        una: 0,
        len,
    }
}

proptest! {
    #[test]
    fn datagram_round_trips(segments in proptest::collection::vec(segment(), 1..8)) {
        let mut wire = Vec::new();
        for (h, p) in &segments {
            encode(h, p, &mut wire).expect("a short payload encodes");
        }
        let parsed: Vec<(SegmentHeader, Vec<u8>)> = parse_datagram(&wire)
            .map(|r| r.map(|(h, p)| (h, p.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(parsed, segments);
    }

    #[test]
    fn header_round_trips((h, _) in segment()) {
        prop_assert_eq!(SegmentHeader::decode(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn any_cut_of_a_datagram_is_truncated(
        segments in proptest::collection::vec(segment(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        let mut boundaries = vec![];
        for (h, p) in &segments {
            encode(h, p, &mut wire).expect("a short payload encodes");
            boundaries.push(wire.len());
        }
        let cut = cut.index(wire.len()); // strictly shorter than the datagram
        let result: Result<Vec<_>, _> = parse_datagram(&wire[..cut]).collect();
        if boundaries.contains(&cut) {
            // Cutting between segments leaves a valid, shorter datagram.
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result.err(), Some(InputError::Truncated));
        }
    }

    #[test]
    fn parser_never_panics_and_stops_after_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut saw_error = false;
        let mut consumed = 0usize;
        for r in parse_datagram(&bytes) {
            prop_assert!(!saw_error, "item after an error");
            match r {
                Ok((_, payload)) => consumed += HEADER_LEN + payload.len(),
                Err(_) => saw_error = true,
            }
        }
        prop_assert!(saw_error || consumed == bytes.len());
    }
}

#[test]
fn short_datagrams_are_truncated() {
    let full = header(Command::Ack, 0).to_bytes();
    for n in 0..HEADER_LEN {
        let r: Result<Vec<_>, _> = parse_datagram(&full[..n]).collect();
        assert_eq!(r.err(), Some(InputError::Truncated), "len {n}");
        let mut kcp = Kcp::new(9, &KcpConfig::default(), 0);
        assert_eq!(kcp.input(0, &full[..n]), Err(InputError::Truncated));
    }
}

#[test]
fn len_past_the_end_is_truncated() {
    for len in [1, 100, u32::MAX] {
        let wire = header(Command::Push, len).to_bytes();
        let r: Result<Vec<_>, _> = parse_datagram(&wire).collect();
        assert_eq!(r.err(), Some(InputError::Truncated));
    }
    // Second segment lies about its length.
    let mut wire = Vec::new();
    encode(&header(Command::Push, 0), b"ok", &mut wire).expect("a short payload encodes");
    wire.extend_from_slice(&header(Command::Push, 3).to_bytes());
    wire.extend_from_slice(b"ab");
    let r: Result<Vec<_>, _> = parse_datagram(&wire).collect();
    assert_eq!(r.err(), Some(InputError::Truncated));
}

#[test]
fn unknown_commands_are_rejected() {
    for cmd in (0..=255u8).filter(|c| !(81..=84).contains(c)) {
        let mut wire = header(Command::Ack, 0).to_bytes();
        wire[4] = cmd;
        let r: Result<Vec<_>, _> = parse_datagram(&wire).collect();
        assert_eq!(r.err(), Some(InputError::BadCommand), "cmd {cmd}");
        assert_eq!(Command::from_byte(cmd), None);
    }
    for cmd in 81..=84u8 {
        assert_eq!(Command::from_byte(cmd).map(Command::to_byte), Some(cmd));
    }
}

#[test]
fn wrong_conv_is_rejected_even_in_a_later_segment() {
    let mut kcp = Kcp::new(9, &KcpConfig::default(), 0);
    let mut wire = Vec::new();
    encode(&header(Command::Push, 0), b"data", &mut wire).expect("a short payload encodes");
    assert_eq!(Kcp::peek_conv(&wire), Some(9));
    let other = SegmentHeader {
        conv: 10,
        ..header(Command::Push, 0)
    };
    encode(&other, b"more", &mut wire).expect("a short payload encodes");
    assert_eq!(kcp.input(0, &wire), Err(InputError::WrongConv));
    let mut alone = Vec::new();
    encode(&other, b"x", &mut alone).expect("a short payload encodes");
    assert_eq!(kcp.input(0, &alone), Err(InputError::WrongConv));
}

#[test]
fn a_rejected_datagram_changes_nothing() {
    // A valid PUSH followed by a malformed segment: the PUSH must not be
    // delivered, acknowledged or counted.
    let mut kcp = Kcp::new(9, &KcpConfig::default(), 0);
    let mut wire = Vec::new();
    encode(&header(Command::Push, 0), b"data", &mut wire).expect("a short payload encodes");
    let mut bad = header(Command::Ack, 0).to_bytes();
    bad[4] = 99;
    wire.extend_from_slice(&bad);
    assert_eq!(kcp.input(0, &wire), Err(InputError::BadCommand));
    assert_eq!(kcp.recv(), None);
    assert_eq!(kcp.poll_timeout(), None, "no ACK may be pending");
    assert_eq!(kcp.stats().datagrams_in, 0);
    kcp.update(10);
    assert_eq!(kcp.poll_transmit(), None);

    // The same PUSH alone is accepted, delivered and acknowledged.
    let mut good = Vec::new();
    encode(&header(Command::Push, 0), b"data", &mut good).expect("a short payload encodes");
    assert_eq!(kcp.input(20, &good), Ok(()));
    assert_eq!(kcp.recv().as_deref(), Some(&b"data"[..]));
    kcp.update(30);
    let ack = kcp.poll_transmit().expect("an ACK");
    let segs: Vec<_> = parse_datagram(&ack).collect::<Result<_, _>>().unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].0.cmd, Command::Ack);
    assert_eq!(segs[0].0.una, 1);
    assert_eq!(segs[0].0.ts, 1, "the ACK echoes the PUSH's ts");
}

#[test]
fn message_mode_fragments_are_delivered_as_a_stream() {
    // An ikcp peer in message mode sends one message as frg 2, 1, 0.
    let mut kcp = Kcp::new(9, &KcpConfig::default(), 0);
    let mut wire = Vec::new();
    for (sn, (frg, part)) in [(2u8, &b"hel"[..]), (1, b"lo "), (0, b"world")]
        .into_iter()
        .enumerate()
    {
        let h = SegmentHeader {
            frg,
            sn: sn as u32,
            ..header(Command::Push, 0)
        };
        encode(&h, part, &mut wire).expect("a short payload encodes");
    }
    kcp.input(0, &wire).unwrap();
    let mut got = Vec::new();
    while let Some(c) = kcp.recv() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, b"hello world");
}

#[test]
fn zero_copy_input_slices_the_datagram() {
    let mut kcp = Kcp::new(9, &KcpConfig::default(), 0);
    let mut wire = Vec::new();
    encode(&header(Command::Push, 0), b"payload", &mut wire).expect("a short payload encodes");
    let wire = bytes::Bytes::from(wire);
    kcp.input_bytes(0, wire.clone()).unwrap();
    let chunk = kcp.recv().unwrap();
    assert_eq!(&chunk[..], b"payload");
    assert_eq!(chunk.as_ptr(), wire[HEADER_LEN..].as_ptr());
}
