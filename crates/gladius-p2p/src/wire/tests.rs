//! Tests of the wire codec: the documented test vectors, round trips,
//! stream reassembly, rejection of every malformed form, and robustness
//! against arbitrary input.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// The normative format description; its vectors are checked below so the
/// document and the code cannot drift apart.
const WIRE_FORMAT_MD: &str = include_str!("../../../../docs/wire-format.md");

const MAX: usize = 16 * 1024 * 1024;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn msg(sender: Option<&str>, ty: &str, body: &[u8]) -> Message {
    let mut m = Message::new(ty, Bytes::copy_from_slice(body)).expect("valid message");
    if let Some(s) = sender {
        m.set_sender(addr(s));
    }
    m
}

fn encode_message(m: &Message) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    assert_eq!(out.len(), m.encoded_len());
    out.freeze()
}

fn encode_frame(f: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    f.encode(&mut out);
    assert_eq!(out.len(), f.encoded_len());
    out.freeze()
}

/// A message laid out from raw parts with a correct checksum, to exercise
/// contents `Message::new` would refuse to build.
fn raw_message(sender: &[u8], ty: &[u8], body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(sender.len() as u8);
    out.put_slice(sender);
    out.put_u8(ty.len() as u8);
    out.put_slice(ty);
    out.put_u32_le(body.len() as u32);
    out.put_slice(body);
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    out.freeze()
}

/// A frame laid out from a kind byte and raw payload.
fn raw_frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u32_le(payload.len() as u32 + 1);
    out.put_u8(kind);
    out.put_slice(payload);
    out.freeze()
}

/// Decode one frame through a `FrameDecoder`, requiring it to use up the
/// input.
fn decode_stream_one(bytes: &[u8]) -> Result<Option<Frame>, WireError> {
    let mut d = FrameDecoder::new(MAX);
    d.push(bytes);
    let f = d.next_frame();
    if let Ok(Some(_)) = f {
        assert_eq!(d.buffered(), 0);
    }
    f
}

// ---------------------------------------------------------------------------
// Test vectors from docs/wire-format.md

/// One vector parsed from the markdown.
#[derive(Debug)]
struct Vector {
    name: String,
    fields: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Vector {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn req(&self, key: &str) -> &str {
        self.field(key)
            .unwrap_or_else(|| panic!("vector {}: missing field {key}", self.name))
    }

    fn message(&self) -> Message {
        let sender = self.field("sender").filter(|s| *s != "none");
        msg(
            sender,
            self.req("type"),
            self.field("body").unwrap_or("").as_bytes(),
        )
    }

    /// What the vector describes: a frame, or a bare message.
    fn described(&self) -> Described {
        let id = || self.req("id").parse::<u64>().expect("id");
        let frame = match self.req("kind") {
            "bare-message" => return Described::Message(self.message()),
            "hello" => Frame::Hello {
                version: self.req("version").parse().expect("version"),
                instance: u64::from_str_radix(self.req("instance").trim_start_matches("0x"), 16)
                    .expect("instance (hex)"),
                advertised: addr(self.req("advertised")),
            },
            "message" => Frame::Message(self.message()),
            "request" => Frame::Request {
                id: id(),
                message: self.message(),
            },
            "reply" => Frame::Reply {
                id: id(),
                message: self.message(),
            },
            "ping" => Frame::Ping,
            "close" => Frame::Close(match self.req("reason") {
                "shutdown" => CloseReason::Shutdown,
                "deleted" => CloseReason::Deleted,
                "protocol-error" => CloseReason::ProtocolError,
                n => CloseReason::Other(n.parse().expect("reason code")),
            }),
            other => panic!("vector {}: unknown kind {other}", self.name),
        };
        Described::Frame(frame)
    }
}

#[derive(Debug)]
enum Described {
    Frame(Frame),
    Message(Message),
}

/// The lines of the next fenced block of the given info string.
fn fenced_block<'a>(lines: &mut impl Iterator<Item = &'a str>, info: &str) -> Vec<&'a str> {
    let open = format!("```{info}");
    for line in lines.by_ref() {
        if line.trim() == open {
            return lines.by_ref().take_while(|l| l.trim() != "```").collect();
        }
        assert!(
            !line.starts_with("vector:"),
            "vector without a ```{info} block"
        );
    }
    panic!("missing ```{info} block");
}

fn parse_hex(lines: &[&str]) -> Vec<u8> {
    let digits: String = lines
        .iter()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Every `vector: NAME` in the markdown with its ```text fields and ```hex
/// bytes.
fn parse_vectors(md: &str) -> Vec<Vector> {
    let mut vectors = Vec::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("vector:") else {
            continue;
        };
        let fields = fenced_block(&mut lines, "text")
            .into_iter()
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad field line {l:?}"));
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let bytes = parse_hex(&fenced_block(&mut lines, "hex"));
        vectors.push(Vector {
            name: name.trim().to_owned(),
            fields,
            bytes,
        });
    }
    vectors
}

#[test]
fn crc32c_check_value() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert!(WIRE_FORMAT_MD.contains("0xE3069283"));
}

#[test]
fn doc_vectors_encode_and_decode_exactly() {
    let vectors = parse_vectors(WIRE_FORMAT_MD);
    for required in [
        "hello",
        "message",
        "message-empty-body",
        "request",
        "reply",
        "ping",
        "close",
    ] {
        assert!(
            vectors.iter().any(|v| v.name == required),
            "doc lacks vector {required}"
        );
    }
    for v in &vectors {
        let bytes = Bytes::from(v.bytes.clone());
        match v.described() {
            Described::Frame(frame) => {
                assert_eq!(
                    hex(&encode_frame(&frame)),
                    hex(&v.bytes),
                    "vector {}: encoding differs from the doc",
                    v.name
                );
                assert_eq!(
                    Frame::decode(&bytes),
                    Ok(frame.clone()),
                    "vector {}",
                    v.name
                );
                assert_eq!(
                    decode_stream_one(&v.bytes),
                    Ok(Some(frame)),
                    "vector {}",
                    v.name
                );
            }
            Described::Message(m) => {
                assert_eq!(hex(&encode_message(&m)), hex(&v.bytes), "vector {}", v.name);
                assert_eq!(Message::decode(&bytes), Ok(m), "vector {}", v.name);
            }
        }
    }
    assert!(vectors.len() >= 7);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Strategies

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
        // Scope ids are part of the text form (`%n`); flow info is not, so
        // it stays 0.
        (any::<[u8; 16]>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, scope)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
        }),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((
            std::net::Ipv4Addr::from(ip).to_ipv6_mapped(),
            port
        ))),
    ]
}

fn arb_type() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._/-]{0,31}",
        "[a-z]{200,255}",
        proptest::collection::vec(any::<char>(), 1..64)
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .prop_filter("type fits 255 bytes", |s| s.len() <= MAX_TYPE_LEN),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_type(),
        proptest::collection::vec(any::<u8>(), 0..4096),
        proptest::option::of(arb_addr()),
    )
        .prop_map(|(ty, body, sender)| {
            let mut m = Message::new(ty, body).expect("strategy yields valid messages");
            if let Some(s) = sender {
                m.set_sender(s);
            }
            m
        })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (arb_addr(), any::<u64>()).prop_map(|(advertised, instance)| Frame::Hello {
            version: PROTOCOL_VERSION,
            instance,
            advertised
        }),
        arb_message().prop_map(Frame::Message),
        (any::<u64>(), arb_message()).prop_map(|(id, message)| Frame::Request { id, message }),
        (any::<u64>(), arb_message()).prop_map(|(id, message)| Frame::Reply { id, message }),
        Just(Frame::Ping),
        any::<u8>().prop_map(|c| Frame::Close(CloseReason::from_code(c))),
    ]
}

/// The body of `m` lies inside `buf` (was sliced, not copied).
fn body_is_slice_of(m: &Message, buf: &[u8]) -> bool {
    let body = m.body().as_ptr_range();
    let buf = buf.as_ptr_range();
    m.body().is_empty() || (buf.start <= body.start && body.end <= buf.end)
}

fn message_of(f: &Frame) -> Option<&Message> {
    match f {
        Frame::Message(m) | Frame::Request { message: m, .. } | Frame::Reply { message: m, .. } => {
            Some(m)
        }
        _ => None,
    }
}

proptest! {
    #[test]
    fn message_round_trip(m in arb_message()) {
        let bytes = encode_message(&m);
        let decoded = Message::decode(&bytes).expect("decodes");
        prop_assert!(body_is_slice_of(&decoded, &bytes));
        prop_assert_eq!(decoded.checksum(), m.checksum());
        prop_assert_eq!(&decoded, &m);
        // Canonical: re-encoding gives the same bytes.
        prop_assert_eq!(encode_message(&decoded), bytes);
    }

    #[test]
    fn frame_round_trip(f in arb_frame()) {
        let bytes = encode_frame(&f);
        prop_assert_eq!(Frame::decode(&bytes), Ok(f.clone()));
        let mut d = FrameDecoder::new(4096);
        d.push(&bytes);
        let out = d.next_frame().expect("decodes").expect("complete");
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(d.next_frame(), Ok(None));
        prop_assert_eq!(&out, &f);
        if let Ok(decoded) = Frame::decode(&bytes) {
            if let Some(m) = message_of(&decoded) {
                prop_assert!(body_is_slice_of(m, &bytes));
            }
        }
        if let Frame::Hello { version, instance, advertised } = f {
            prop_assert_eq!(peek_hello(&bytes), Some(HelloFields { version, instance, advertised }));
        } else {
            prop_assert_eq!(peek_hello(&bytes), None);
        }
    }

    #[test]
    fn stream_split_anywhere_yields_all_frames_in_order(
        frames in proptest::collection::vec(arb_frame(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(4096);
        let mut out = Vec::new();
        for w in cuts.windows(2) {
            d.push(&stream[w[0]..w[1]]);
            while let Some(f) = d.next_frame().expect("valid stream") {
                out.push(f);
            }
        }
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn a_dropped_partial_frame_is_skipped_and_the_next_decodes(
        frames in proptest::collection::vec(arb_frame(), 3..8),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        chunk in 1usize..64,
    ) {
        // Frame `victim` is dropped after `at` of its bytes arrived (at
        // least its length prefix); the stream goes on in small chunks.
        let victim = pick.index(frames.len());
        let mut stream = BytesMut::new();
        let mut start = 0;
        for (i, f) in frames.iter().enumerate() {
            if i == victim {
                start = stream.len();
            }
            f.encode(&mut stream);
        }
        let len = frames[victim].encoded_len();
        let cut = start + 4 + at.index(len - 4);
        let mut d = FrameDecoder::new(4096);
        let mut out = Vec::new();
        let feed = |d: &mut FrameDecoder, bytes: &[u8], out: &mut Vec<Frame>| {
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().expect("valid stream") {
                    out.push(f);
                }
            }
        };
        feed(&mut d, &stream[..cut], &mut out);
        let held = d.buffered();
        let freed = d.drop_partial();
        prop_assert_eq!(freed, held);
        prop_assert!(freed >= 4 && freed < len);
        prop_assert_eq!(d.buffered(), 0);
        feed(&mut d, &stream[cut..], &mut out);
        prop_assert_eq!(d.buffered(), 0);
        let mut want = frames.clone();
        want.remove(victim);
        prop_assert_eq!(out, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..4096,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let bytes = Bytes::from(data.clone());
        let _ = Message::decode(&bytes);
        let _ = Frame::decode(&bytes);
        let _ = peek_hello(&data);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(max);
        'feed: for w in cuts.windows(2) {
            d.push(&data[w[0]..w[1]]);
            loop {
                match d.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Plausible-looking garbage: valid frames with bytes overwritten, which
    /// reaches deeper into the decoders than uniform noise.
    #[test]
    fn corrupted_frames_never_panic(
        f in arb_frame(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_frame(&f).to_vec();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Frame::decode(&Bytes::from(bytes.clone()));
        let _ = peek_hello(&bytes);
        let mut d = FrameDecoder::new(4096);
        d.push(&bytes);
        let _ = d.next_frame();
    }
}

// ---------------------------------------------------------------------------
// Messages: construction and malformed input

#[test]
fn new_validates_type() {
    assert_eq!(Message::new("", Bytes::new()), Err(MessageError::EmptyType));
    assert_eq!(
        Message::new("a".repeat(256), Bytes::new()),
        Err(MessageError::TypeTooLong(256))
    );
    assert!(Message::new("a".repeat(255), Bytes::new()).is_ok());
    assert!(Message::new("é", Bytes::new()).is_ok());
}

#[test]
fn set_sender_recomputes_checksum() {
    let mut m = msg(None, "chat", b"hello");
    let before = m.checksum();
    assert_eq!(
        before,
        crc32c::crc32c(&encode_message(&m)[..m.encoded_len() - 4])
    );
    m.set_sender(addr("127.0.0.1:7001"));
    assert_ne!(m.checksum(), before);
    let bytes = encode_message(&m);
    assert_eq!(m.checksum(), crc32c::crc32c(&bytes[..bytes.len() - 4]));
    assert_eq!(
        Message::decode(&bytes).map(|d| d.sender()),
        Ok(Some(addr("127.0.0.1:7001")))
    );
}

#[test]
fn message_without_sender_decodes() {
    let m = msg(None, "chat", b"hello");
    let decoded = Message::decode(&encode_message(&m)).expect("codec accepts sender_len 0");
    assert_eq!(decoded.sender(), None);
    assert_eq!(decoded, m);
}

#[test]
fn message_truncated_at_every_byte() {
    let bytes = encode_message(&msg(Some("[::1]:7001"), "chat", b"hello"));
    for cut in 0..bytes.len() {
        assert_eq!(
            Message::decode(&bytes.slice(..cut)),
            Err(WireError::Truncated),
            "cut at {cut}"
        );
    }
}

#[test]
fn message_trailing_bytes() {
    let mut bytes = encode_message(&msg(Some("127.0.0.1:7001"), "chat", b"hello")).to_vec();
    bytes.push(0);
    assert_eq!(
        Message::decode(&Bytes::from(bytes)),
        Err(WireError::TrailingBytes)
    );
}

#[test]
fn message_bad_types() {
    let s = b"127.0.0.1:7001";
    assert_eq!(
        Message::decode(&raw_message(s, b"", b"x")),
        Err(WireError::BadType)
    );
    assert_eq!(
        Message::decode(&raw_message(s, b"ch\xffat", b"x")),
        Err(WireError::BadType)
    );
    assert_eq!(
        Message::decode(&raw_message(s, b"\xc3", b"x")),
        Err(WireError::BadType)
    );
    // A 256-byte type cannot be expressed: its length byte wraps to 0, so the
    // type reads as empty and the following bytes no longer line up.
    let long = raw_message(s, &[b'a'; 256], b"x");
    assert!(Message::decode(&long).is_err());
    // The largest expressible type is fine.
    assert!(Message::decode(&raw_message(s, &[b'a'; 255], b"x")).is_ok());
}

#[test]
fn message_bad_addresses() {
    for bad in [
        &b"not an address"[..],
        b"127.0.0.1",
        b"127.0.0.1:",
        b"127.0.0.1:65536",
        b"127.0.0.1:07001", // parses, but is not the canonical spelling
        b" 127.0.0.1:7001",
        b"[::1]",
        b"::1:7001",
        b"[0:0:0:0:0:0:0:1]:7001", // canonical is [::1]:7001
        b"localhost:7001",
        b"\xff\xfe",
    ] {
        assert_eq!(
            Message::decode(&raw_message(bad, b"chat", b"x")),
            Err(WireError::BadAddress),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(Message::decode(&raw_message(b"[fe80::1%3]:7001", b"chat", b"x")).is_ok());
}

#[test]
fn message_any_bit_flip_is_rejected() {
    let bytes = encode_message(&msg(Some("127.0.0.1:7001"), "chat", b"hello, world"));
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.to_vec();
            b[i] ^= 1 << bit;
            assert!(
                Message::decode(&Bytes::from(b)).is_err(),
                "flip byte {i} bit {bit} accepted"
            );
        }
    }
}

#[test]
fn checksum_mismatch_reports_both_values() {
    let mut b = encode_message(&msg(Some("127.0.0.1:7001"), "chat", b"hello")).to_vec();
    let n = b.len();
    b[n - 6] ^= 0x01; // inside the body
    match Message::decode(&Bytes::from(b)) {
        Err(WireError::ChecksumMismatch { carried, computed }) => assert_ne!(carried, computed),
        other => panic!("expected checksum mismatch, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Frames: malformed input

fn sample_frames() -> Vec<Frame> {
    let m = msg(Some("127.0.0.1:7001"), "chat", b"hello");
    vec![
        Frame::Hello {
            version: PROTOCOL_VERSION,
            instance: 0x0102_0304_0506_0708,
            advertised: addr("[::1]:7001"),
        },
        Frame::Message(m.clone()),
        Frame::Request {
            id: 7,
            message: m.clone(),
        },
        Frame::Reply {
            id: u64::MAX,
            message: m,
        },
        Frame::Ping,
        Frame::Close(CloseReason::Deleted),
        Frame::Close(CloseReason::Other(200)),
    ]
}

#[test]
fn frame_truncated_at_every_byte() {
    for f in sample_frames() {
        let bytes = encode_frame(&f);
        for cut in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes.slice(..cut)),
                Err(WireError::Truncated),
                "{f:?} cut at {cut}"
            );
            assert_eq!(
                decode_stream_one(&bytes[..cut]),
                Ok(None),
                "{f:?} cut at {cut}"
            );
            assert_eq!(peek_hello(&bytes[..cut]), None);
        }
    }
}

#[test]
fn frame_payload_shorter_than_its_kind_needs() {
    let m = encode_message(&msg(Some("127.0.0.1:7001"), "chat", b"hello"));
    let mut hello = HELLO_MAGIC.to_vec();
    hello.push(PROTOCOL_VERSION);
    hello.extend_from_slice(&42u64.to_le_bytes());
    hello.push(14);
    hello.extend_from_slice(b"127.0.0.1:7001");
    let mut request = 9u64.to_le_bytes().to_vec();
    request.extend_from_slice(&m);
    for (kind, full) in [
        (1, hello),
        (2, m.to_vec()),
        (3, request.clone()),
        (4, request),
        (6, vec![0]),
    ] {
        for cut in 0..full.len() {
            let bytes = raw_frame(kind, &full[..cut]);
            assert_eq!(
                Frame::decode(&bytes),
                Err(WireError::Truncated),
                "kind {kind} cut {cut}"
            );
            assert_eq!(
                decode_stream_one(&bytes),
                Err(WireError::Truncated),
                "kind {kind} cut {cut}"
            );
        }
        assert!(
            Frame::decode(&raw_frame(kind, &full)).is_ok(),
            "kind {kind}"
        );
    }
    // A zero length leaves no room for the kind byte.
    assert_eq!(decode_stream_one(&[0, 0, 0, 0]), Err(WireError::Truncated));
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[0, 0, 0, 0])),
        Err(WireError::Truncated)
    );
}

#[test]
fn frame_trailing_bytes() {
    for f in sample_frames() {
        let mut bytes = encode_frame(&f).to_vec();
        // One more byte inside the frame, counted by `len`.
        bytes.push(0);
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) + 1;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            Frame::decode(&Bytes::from(bytes.clone())),
            Err(WireError::TrailingBytes),
            "{f:?}"
        );
        assert_eq!(
            decode_stream_one(&bytes),
            Err(WireError::TrailingBytes),
            "{f:?}"
        );
        // A byte after the frame is not part of it: `Frame::decode` wants the
        // whole buffer to be one frame, the stream decoder keeps it.
        let mut after = encode_frame(&f).to_vec();
        after.push(5);
        assert_eq!(
            Frame::decode(&Bytes::from(after.clone())),
            Err(WireError::TrailingBytes)
        );
        let mut d = FrameDecoder::new(MAX);
        d.push(&after);
        assert_eq!(d.next_frame(), Ok(Some(f)));
        assert_eq!(d.buffered(), 1);
    }
}

#[test]
fn unknown_frame_kinds() {
    for kind in [0u8, 7, 8, 0x80, 255] {
        assert_eq!(
            decode_stream_one(&raw_frame(kind, b"")),
            Err(WireError::UnknownFrameKind(kind))
        );
        assert_eq!(
            Frame::decode(&raw_frame(kind, b"abc")),
            Err(WireError::UnknownFrameKind(kind))
        );
    }
}

#[test]
fn close_reason_codes() {
    for (code, reason) in [
        (0, CloseReason::Shutdown),
        (1, CloseReason::Deleted),
        (2, CloseReason::ProtocolError),
        (3, CloseReason::Other(3)),
        (255, CloseReason::Other(255)),
    ] {
        assert_eq!(
            decode_stream_one(&raw_frame(6, &[code])),
            Ok(Some(Frame::Close(reason)))
        );
        assert_eq!(reason.code(), code);
        assert_eq!(CloseReason::from_code(code), reason);
    }
}

#[test]
fn max_len_formula() {
    assert_eq!(Frame::max_len(0), 529);
    assert_eq!(Frame::max_len(MAX), MAX + 529);
    assert_eq!(Frame::max_len(usize::MAX), usize::MAX);
    // The largest frames a node can actually build fit within the limit.
    let longest_addr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";
    for body in [0usize, 1, 1000] {
        let mut m = Message::new("t".repeat(255), vec![0u8; body]).expect("valid");
        m.set_sender(addr(longest_addr));
        let f = Frame::Request { id: 1, message: m };
        assert!(f.encoded_len() - 4 <= Frame::max_len(body));
        let mut d = FrameDecoder::new(body);
        d.push(&encode_frame(&f));
        assert_eq!(d.next_frame(), Ok(Some(f)));
        // The largest hello is within the limit of any decoder.
        assert!(
            encode_frame(&Frame::Hello {
                version: 1,
                instance: u64::MAX,
                advertised: addr(longest_addr)
            })
            .len()
                - 4
                <= 529
        );
    }
}

#[test]
fn oversized_length_rejected_before_the_body_arrives() {
    let max = Frame::max_len(100);
    for len in [max as u32 + 1, 1 << 24, u32::MAX] {
        let mut d = FrameDecoder::new(100);
        d.push(&len.to_le_bytes()[..3]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&len.to_le_bytes()[3..]);
        assert_eq!(
            d.next_frame(),
            Err(WireError::FrameTooLarge {
                len: len as usize,
                max
            })
        );
    }
    // Exactly the limit is fine: the decoder waits for the rest.
    let mut d = FrameDecoder::new(100);
    d.push(&(max as u32).to_le_bytes());
    assert_eq!(d.next_frame(), Ok(None));
    // A body just over the configured size is refused once its frame is.
    let m = Message::new("chat", vec![0u8; 101]).expect("valid");
    let mut d = FrameDecoder::new(100);
    let bytes = encode_frame(&Frame::Message(m.clone()));
    d.push(&bytes);
    assert!(
        d.next_frame().is_ok(),
        "len {} is within max_len {max}",
        bytes.len() - 4
    );
    let mut d = FrameDecoder::new(0);
    d.push(&encode_frame(&Frame::Request {
        id: 0,
        message: Message::new("t".repeat(255), vec![0u8; 600]).expect("valid"),
    }));
    assert!(matches!(
        d.next_frame(),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn decoder_bodies_are_slices_of_the_stream_buffer() {
    // Two frames pushed in one chunk share the decoder's buffer. If the
    // bodies are sliced out of it rather than copied, they lie exactly as
    // far apart in memory as in the stream.
    let first = msg(Some("127.0.0.1:7001"), "chat", &[1u8; 1000]);
    let second = msg(Some("127.0.0.1:7001"), "chat", &[2u8; 1000]);
    let mut stream = BytesMut::new();
    Frame::Request {
        id: 1,
        message: first.clone(),
    }
    .encode(&mut stream);
    Frame::Message(second.clone()).encode(&mut stream);
    let mut d = FrameDecoder::new(MAX);
    d.push(&stream);
    let Ok(Some(Frame::Request { message: a, .. })) = d.next_frame() else {
        panic!("request expected")
    };
    let Ok(Some(Frame::Message(b))) = d.next_frame() else {
        panic!("message expected")
    };
    assert_eq!((&a, &b), (&first, &second));
    let in_stream = |body: &[u8]| {
        stream
            .windows(body.len())
            .position(|w| w == body)
            .expect("body in stream")
    };
    let distance_in_stream = in_stream(b.body()) - in_stream(a.body());
    let distance_in_memory = b.body().as_ptr() as usize - a.body().as_ptr() as usize;
    assert_eq!(distance_in_memory, distance_in_stream);
    // And a single frame decoded from `Bytes` keeps pointing into it.
    let bytes = stream.freeze();
    let one = bytes.slice(
        ..Frame::Request {
            id: 1,
            message: first,
        }
        .encoded_len(),
    );
    let Ok(Frame::Request { message, .. }) = Frame::decode(&one) else {
        panic!("request expected")
    };
    assert!(body_is_slice_of(&message, &one));
}

// ---------------------------------------------------------------------------
// Hello

fn raw_hello(magic: &[u8], version: u8, address: &[u8]) -> Bytes {
    let mut payload = magic.to_vec();
    payload.push(version);
    payload.extend_from_slice(&7u64.to_le_bytes());
    payload.push(address.len() as u8);
    payload.extend_from_slice(address);
    raw_frame(1, &payload)
}

#[test]
fn bad_hello() {
    let a = b"127.0.0.1:7001";
    assert!(decode_stream_one(&raw_hello(b"GLAD", PROTOCOL_VERSION, a)).is_ok());
    for (magic, version) in [
        (&b"GLAX"[..], PROTOCOL_VERSION),
        (b"glad", PROTOCOL_VERSION),
        (b"GLAD", 0),
        (b"GLAD", 2),
    ] {
        let bytes = raw_hello(magic, version, a);
        assert_eq!(decode_stream_one(&bytes), Err(WireError::BadHello));
        assert_eq!(peek_hello(&bytes), None);
    }
    for bad in [&b""[..], b"127.0.0.1", b"127.0.0.1:07001", b"\xff:1"] {
        let bytes = raw_hello(b"GLAD", PROTOCOL_VERSION, bad);
        assert_eq!(decode_stream_one(&bytes), Err(WireError::BadAddress));
        assert_eq!(peek_hello(&bytes), None);
    }
}

#[test]
fn peek_hello_needs_a_complete_valid_hello_first() {
    let hello = encode_frame(&Frame::Hello {
        version: PROTOCOL_VERSION,
        instance: 99,
        advertised: addr("10.0.0.1:9000"),
    });
    let want = Some(HelloFields {
        version: PROTOCOL_VERSION,
        instance: 99,
        advertised: addr("10.0.0.1:9000"),
    });
    assert_eq!(peek_hello(&hello), want);
    // Bytes after it (further frames in the same segment) are fine.
    let mut more = hello.to_vec();
    more.extend_from_slice(&encode_frame(&Frame::Ping));
    more.extend_from_slice(&[0xff; 3]);
    assert_eq!(peek_hello(&more), want);
    // Anything else first is not.
    let mut ping_first = encode_frame(&Frame::Ping).to_vec();
    ping_first.extend_from_slice(&hello);
    assert_eq!(peek_hello(&ping_first), None);
    assert_eq!(
        peek_hello(&encode_frame(&Frame::Message(msg(
            Some("10.0.0.1:9000"),
            "GLAD",
            b""
        )))),
        None
    );
    assert_eq!(peek_hello(&[]), None);
    assert_eq!(peek_hello(&[0xff, 0xff, 0xff, 0xff, 1]), None);
    // A hello whose `len` counts an extra byte has trailing bytes.
    let mut padded = hello.to_vec();
    padded.push(0);
    padded[0] += 1;
    assert_eq!(peek_hello(&padded), None);
}

/// The decoder reuses the last sender's parsed address while the text
/// repeats; a different sender (or none) in between must still come out
/// as sent, and the cached one must not outlive a change.
#[test]
fn a_stream_of_senders_decodes_each_sender_as_sent() {
    let senders = [
        Some("127.0.0.1:7001"),
        Some("127.0.0.1:7001"),
        Some("[::1]:7001"),
        None,
        Some("127.0.0.1:7001"),
        Some("127.0.0.1:7002"),
        Some("127.0.0.1:7002"),
    ];
    let mut stream = BytesMut::new();
    for (i, s) in senders.iter().enumerate() {
        Frame::Message(msg(*s, "t", &[i as u8])).encode(&mut stream);
        Frame::Request {
            id: i as u64,
            message: msg(*s, "r", &[i as u8]),
        }
        .encode(&mut stream);
    }
    let mut d = FrameDecoder::new(4096);
    d.push(&stream);
    for s in senders {
        for _ in 0..2 {
            let m = match d.next_frame().expect("decodes").expect("complete") {
                Frame::Message(m) | Frame::Request { message: m, .. } => m,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(m.sender(), s.map(addr));
        }
    }
    assert_eq!(d.next_frame(), Ok(None));
}

#[test]
fn type_tests_agree_with_the_type_text() {
    let m = Message::new("gladius.punch", "x").unwrap();
    for t in [
        "gladius.punch",
        "gladius.punc",
        "gladius.punchy",
        "",
        "other",
    ] {
        assert_eq!(m.is_type(t), m.msg_type() == t, "{t}");
        assert_eq!(m.type_starts_with(t), m.msg_type().starts_with(t), "{t}");
    }
    // Decoded from the wire, where the type is a slice of the frame.
    let mut buf = BytesMut::new();
    let mut sent = Message::new("κ.type", "body").unwrap();
    sent.set_sender("127.0.0.1:1".parse().unwrap());
    Frame::Message(sent).encode(&mut buf);
    let mut d = FrameDecoder::new(1024);
    d.push(&buf);
    let Ok(Some(Frame::Message(got))) = d.next_frame() else {
        panic!("a message frame")
    };
    assert!(got.is_type("κ.type") && got.type_starts_with("κ.") && !got.is_type("κ"));
}

#[test]
fn the_checksum_is_the_crc_of_the_encoding_for_short_and_long_heads() {
    // Heads on both sides of the short buffer's length, up to the longest
    // type with the longest sender text.
    for type_len in [1usize, 60, 70, 80, 128, 255] {
        for sender in [
            None,
            Some("127.0.0.1:7001"),
            Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        ] {
            let m = msg(sender, &"t".repeat(type_len), b"body");
            let bytes = encode_message(&m);
            assert_eq!(
                m.checksum(),
                crc32c::crc32c(&bytes[..bytes.len() - 4]),
                "type {type_len}, sender {sender:?}"
            );
        }
    }
}
