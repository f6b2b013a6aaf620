//! A live pair of nodes over real UDP keeps delivering every message, in
//! order, while a third party throws junk, forged KCP and forged frames at
//! one of them; every discarded datagram or message is counted.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use gladius_kcp::segment::{self, Command, HEADER_LEN};
use gladius_p2p::wire::{peek_hello, Frame, Message, PROTOCOL_VERSION};
use gladius_p2p::{ConnectionState, Counters, DatagramSocket, Network};
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

const DEADLINE: Duration = Duration::from_secs(30);
const STREAM: u64 = 600;

/// A real UDP socket that remembers the conversation ids of what it sends,
/// so the test can forge segments of the live session.
#[derive(Debug)]
struct Sniffing {
    inner: UdpSocket,
    convs: Arc<Mutex<BTreeSet<u32>>>,
}

impl DatagramSocket for Sniffing {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        self.inner.poll_recv_from(cx, buf)
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if let Some(conv) = buf.get(..4) {
            let conv = u32::from_le_bytes(conv.try_into().unwrap());
            self.convs.lock().unwrap().insert(conv);
        }
        self.inner.poll_send_to(cx, buf, target)
    }
}

fn message_frame(sender: SocketAddr, t: &str, body: &str) -> Vec<u8> {
    let mut m = Message::new(t, body.to_owned()).unwrap();
    m.set_sender(sender);
    frame_bytes(&Frame::Message(m))
}

struct Attacker {
    sock: UdpSocket,
    addr: SocketAddr,
    target: SocketAddr,
}

impl Attacker {
    async fn send(&self, d: &[u8]) {
        self.sock.send_to(d, self.target).await.unwrap();
    }
    /// Receive datagrams from the target until one holds a PUSH sn 0 with a
    /// hello on `conv`; returns that segment's ts.
    async fn await_hello(&self, conv: u32) -> u32 {
        let mut buf = vec![0u8; 65536];
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                let (n, from) = self.sock.recv_from(&mut buf).await.unwrap();
                if from != self.target {
                    continue;
                }
                for s in segment::parse_datagram(&buf[..n]) {
                    let (h, payload) = s.expect("the node sends well-formed datagrams");
                    if h.conv == conv
                        && h.cmd == Command::Push
                        && h.sn == 0
                        && peek_hello(payload).is_some()
                    {
                        return h.ts;
                    }
                }
            }
        })
        .await;
        found.expect("the node answered the attacker's hello")
    }
}

/// Wait until `f(counters)` reaches `want`, then check it is exactly `want`.
async fn expect_counter(net: &Network, what: &str, f: impl Fn(&Counters) -> u64, want: u64) {
    wait_for(DEADLINE, &format!("{what} to reach {want}"), || async {
        f(&counters(net).await) >= want
    })
    .await;
    let got = f(&counters(net).await);
    assert_eq!(
        got, want,
        "{what}: exactly one count per offending datagram or message"
    );
}

/// Plaintext mode on purpose: here KCP itself faces the attacker (the
/// encrypted mode's tests are in tests/encrypted.rs).
fn plaintext() -> gladius_p2p::Config {
    test_config().with_plaintext(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pair_survives_hostile_datagrams_and_counts_them() {
    // A on a sniffing socket, so the test learns the live conv.
    let convs = Arc::new(Mutex::new(BTreeSet::new()));
    let a = Network::new(plaintext()).unwrap();
    let ra = Recorder::default();
    a.register_plugin(ra.clone()).await.unwrap();
    let a_addr = a
        .listen_on(Sniffing {
            inner: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            convs: convs.clone(),
        })
        .await
        .unwrap();
    let (b, b_addr, rb) = node_with(plaintext()).await;
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    wait_connected(&b, a_addr).await;
    b.set_writable(a_addr, true).await.unwrap();
    let live_conv = {
        let c = convs.lock().unwrap();
        assert_eq!(c.len(), 1, "one session, one conv: {c:?}");
        *c.iter().next().unwrap()
    };

    // The stream both ways, running through the whole attack.
    let streams: Vec<_> = [(a.clone(), b_addr), (b.clone(), a_addr)]
        .into_iter()
        .map(|(net, to)| {
            tokio::spawn(async move {
                for i in 0..STREAM {
                    let r = net.broadcast(text_msg("stream", i)).await.unwrap();
                    assert_eq!(r.queued, vec![to]);
                    if i % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let atk = Attacker {
        addr: sock.local_addr().unwrap(),
        sock,
        target: b_addr,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xbad);
    let base = counters(&b).await;
    assert_eq!(
        base.malformed_datagrams
            + base.unknown_session_datagrams
            + base.wrong_sender
            + base.checksum_failures,
        0
    );

    // 1. Empty and too-short-for-a-header datagrams: malformed.
    atk.send(&[]).await;
    for n in 1..HEADER_LEN {
        let mut d = vec![0u8; n];
        rng.fill_bytes(&mut d);
        atk.send(&d).await;
    }
    let mut malformed = HEADER_LEN as u64; // 1 empty + 23 short
    expect_counter(
        &b,
        "malformed (short)",
        |c| c.malformed_datagrams,
        malformed,
    )
    .await;

    // 2. Valid-looking headers that lie about their length, on random
    //    convs and on the live conv: malformed.
    for conv in [rng.gen(), live_conv] {
        // len runs past the end.
        let mut d = kcp_header(conv, Command::Push, 0, 0, 0).to_bytes().to_vec();
        d[20..24].copy_from_slice(&1000u32.to_le_bytes());
        d.extend_from_slice(b"ten bytes!");
        atk.send(&d).await;
        // len u32::MAX.
        let mut d = kcp_header(conv, Command::Push, 1, 0, 0).to_bytes().to_vec();
        d[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        atk.send(&d).await;
        // len shorter than the payload: the rest is not a whole segment.
        let mut d = kcp_header(conv, Command::Push, 2, 0, 0).to_bytes().to_vec();
        d[20..24].copy_from_slice(&3u32.to_le_bytes());
        d.extend_from_slice(b"three and then some");
        atk.send(&d).await;
        // A valid segment followed by an unknown command.
        let mut d = kcp_seg(kcp_header(conv, Command::Ack, 0, 0, 0), &[]);
        let mut bad = kcp_header(conv, Command::Ack, 0, 0, 0).to_bytes();
        bad[4] = 99;
        d.extend_from_slice(&bad);
        atk.send(&d).await;
        malformed += 4;
    }
    expect_counter(
        &b,
        "malformed (lying len)",
        |c| c.malformed_datagrams,
        malformed,
    )
    .await;

    // 3. Well-formed KCP for no session: unknown.
    let mut unknown = 0;
    let not_hello = kcp_seg(
        kcp_header(rng.gen(), Command::Push, 0, 0, 0),
        b"\x05\x00\x00\x00\x02hello? no",
    );
    atk.send(&not_hello).await;
    let mut bad_magic = frame_bytes(&Frame::Hello {
        version: PROTOCOL_VERSION,
        instance: 1,
        advertised: atk.addr,
    });
    bad_magic[5] = b'X';
    atk.send(&kcp_seg(
        kcp_header(rng.gen(), Command::Push, 0, 0, 0),
        &bad_magic,
    ))
    .await;
    let mut bad_version = frame_bytes(&Frame::Hello {
        version: PROTOCOL_VERSION,
        instance: 1,
        advertised: atk.addr,
    });
    bad_version[9] = PROTOCOL_VERSION + 1;
    atk.send(&kcp_seg(
        kcp_header(rng.gen(), Command::Push, 0, 0, 0),
        &bad_version,
    ))
    .await;
    // A hello at sn 1 does not open a session either.
    let hello = frame_bytes(&Frame::Hello {
        version: PROTOCOL_VERSION,
        instance: 1,
        advertised: atk.addr,
    });
    atk.send(&kcp_seg(
        kcp_header(rng.gen(), Command::Push, 1, 0, 0),
        &hello,
    ))
    .await;
    // Forged ACKs with far-past timestamps.
    atk.send(&kcp_seg(kcp_header(rng.gen(), Command::Ack, 0, 0, 0), &[]))
        .await;
    atk.send(&kcp_seg(
        kcp_header(rng.gen(), Command::Ack, 5, 100, 1),
        &[],
    ))
    .await;
    unknown += 6;
    // Spoofed segments of the live session, from the wrong address: data,
    // a close frame, ACKs of everything with far-past ts, window probes.
    for sn in 0..20u32 {
        let payload = message_frame(a_addr, "stream", "spoofed");
        atk.send(&kcp_seg(
            kcp_header(live_conv, Command::Push, sn + 1, 1_000_000, 7),
            &payload,
        ))
        .await;
    }
    let close = frame_bytes(&Frame::Close(gladius_p2p::wire::CloseReason::Shutdown));
    atk.send(&kcp_seg(
        kcp_header(live_conv, Command::Push, 3, 0, 0),
        &close,
    ))
    .await;
    for sn in 0..20u32 {
        atk.send(&kcp_seg(
            kcp_header(
                live_conv,
                Command::Ack,
                sn,
                u32::MAX,
                0x8000_0000u32.wrapping_add(sn),
            ),
            &[],
        ))
        .await;
    }
    atk.send(&kcp_seg(
        kcp_header(live_conv, Command::WindowAsk, 0, 0, 0),
        &[],
    ))
    .await;
    atk.send(&kcp_seg(
        kcp_header(live_conv, Command::WindowTell, 0, 0, 0),
        &[],
    ))
    .await;
    unknown += 20 + 1 + 20 + 2;
    expect_counter(
        &b,
        "unknown-session datagrams",
        |c| c.unknown_session_datagrams,
        unknown,
    )
    .await;
    assert_eq!(counters(&b).await.malformed_datagrams, malformed);

    // 4. The attacker opens a session of its own — on the live conv, from
    //    its own address — and sends forged frames on it.
    let atk_conv = live_conv;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 0, 0, 0),
        &hello,
    ))
    .await;
    let b_hello_ts = atk.await_hello(atk_conv).await;
    // Acknowledge B's hello (una 1 on everything from now on).
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Ack, 0, 1, b_hello_ts),
        &[],
    ))
    .await;
    wait_for(DEADLINE, "b accepts the attacker's session", || async {
        rb.saw(&Event::Connected(atk.addr, false))
    })
    .await;
    // Impersonate A: wrong sender.
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 1, 1, 10),
        &message_frame(a_addr, "stream", "forged"),
    ))
    .await;
    expect_counter(&b, "wrong_sender", |c| c.wrong_sender, 1).await;
    // Corrupt checksum.
    let mut corrupt = message_frame(atk.addr, "atk", "corrupt");
    *corrupt.last_mut().unwrap() ^= 0xff;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 2, 1, 20),
        &corrupt,
    ))
    .await;
    // A body byte flipped under a stale checksum.
    let mut flipped = message_frame(atk.addr, "atk", "flipped");
    let at = flipped.len() - 6;
    flipped[at] ^= 1;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 3, 1, 30),
        &flipped,
    ))
    .await;
    expect_counter(&b, "checksum_failures", |c| c.checksum_failures, 2).await;
    // The session goes on: a proper message arrives.
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 4, 1, 40),
        &message_frame(atk.addr, "atk", "ok1"),
    ))
    .await;
    wait_for(DEADLINE, "attacker's valid message", || async {
        rb.count_from(atk.addr, "atk") == 1
    })
    .await;
    // Forged ACKs on its own session: far-past ts, never-sent sn, huge una.
    atk.send(&kcp_seg(
        kcp_header(
            atk_conv,
            Command::Ack,
            0,
            1,
            b_hello_ts.wrapping_sub(0x7fff_ffff),
        ),
        &[],
    ))
    .await;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Ack, 1_000_000, u32::MAX, 1),
        &[],
    ))
    .await;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::WindowAsk, 0, 1, 50),
        &[],
    ))
    .await;
    // Duplicates and out-of-window sequence numbers.
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 4, 1, 40),
        &message_frame(atk.addr, "atk", "ok1"),
    ))
    .await;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 4_000_000, 1, 40),
        &message_frame(atk.addr, "atk", "far"),
    ))
    .await;
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 5, 1, 60),
        &message_frame(atk.addr, "atk", "ok2"),
    ))
    .await;
    wait_for(DEADLINE, "attacker's second valid message", || async {
        rb.count_from(atk.addr, "atk") == 2
    })
    .await;

    // 5. Flood: 10,000 random datagrams up to 1500 bytes, half of them on
    //    the conv shared by the live session and the attacker's session.
    const FLOOD: u64 = 10_000;
    let before = counters(&b).await;
    let mut sent = 0;
    while sent < FLOOD {
        for _ in 0..200 {
            let len = rng.gen_range(0..=1500);
            let mut d = vec![0u8; len];
            rng.fill_bytes(&mut d);
            if len >= 4 && rng.gen_bool(0.5) {
                d[..4].copy_from_slice(&atk_conv.to_le_bytes());
            }
            atk.send(&d).await;
            sent += 1;
        }
        // Pace by the node's progress (at most two batches in the socket
        // buffer), so the kernel has no reason to drop any.
        let floor = before.malformed_datagrams + sent.saturating_sub(200);
        wait_for(DEADLINE, "node keeps up with the flood", || async {
            counters(&b).await.malformed_datagrams >= floor
        })
        .await;
    }
    // A sentinel behind the flood (a socket delivers in order): once it is
    // counted, every flood datagram has been handled.
    let sentinel_conv = loop {
        let c: u32 = rng.gen();
        if c != atk_conv {
            break c;
        }
    };
    atk.send(&kcp_seg(
        kcp_header(sentinel_conv, Command::Ack, 0, 0, 0),
        &[],
    ))
    .await;
    wait_for(DEADLINE, "sentinel", || async {
        counters(&b).await.unknown_session_datagrams > before.unknown_session_datagrams
    })
    .await;
    let after = counters(&b).await;
    let flood_malformed = after.malformed_datagrams - before.malformed_datagrams;
    let flood_unknown = after.unknown_session_datagrams - before.unknown_session_datagrams - 1;
    println!("flood of {FLOOD}: {flood_malformed} malformed, {flood_unknown} unknown");
    assert_eq!(
        flood_malformed + flood_unknown,
        FLOOD,
        "every flood datagram counted exactly once"
    );
    assert_eq!(after.checksum_failures, 2);
    assert_eq!(after.wrong_sender, 1);

    // The attacker's session survived the junk aimed at its conv.
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 6, 1, 70),
        &message_frame(atk.addr, "atk", "ok3"),
    ))
    .await;
    wait_for(DEADLINE, "attacker's third valid message", || async {
        rb.count_from(atk.addr, "atk") == 3
    })
    .await;
    assert_eq!(
        rb.bodies_from(atk.addr, "atk"),
        vec![b"ok1".to_vec(), b"ok2".to_vec(), b"ok3".to_vec()],
        "only the valid attacker messages, once each"
    );

    // 6. A frame that breaks the protocol closes the attacker's session only.
    atk.send(&kcp_seg(
        kcp_header(atk_conv, Command::Push, 7, 1, 80),
        &[1, 0, 0, 0, 99],
    ))
    .await;
    expect_counter(&b, "protocol_errors", |c| c.protocol_errors, 1).await;
    wait_for(DEADLINE, "attacker disconnected", || async {
        rb.saw(&Event::Disconnected(atk.addr))
    })
    .await;

    // The live pair delivered everything, in order, exactly once, and
    // nothing forged in A's name reached a plugin.
    for s in streams {
        s.await.unwrap();
    }
    wait_for(DEADLINE, "the whole stream both ways", || async {
        rb.count_from(a_addr, "stream") >= STREAM as usize
            && ra.count_from(b_addr, "stream") >= STREAM as usize
    })
    .await;
    let want: Vec<u64> = (0..STREAM).collect();
    assert_eq!(numbers(rb.bodies_from(a_addr, "stream")), want, "a -> b");
    assert_eq!(numbers(ra.bodies_from(b_addr, "stream")), want, "b -> a");
    assert!(rb
        .messages()
        .iter()
        .all(|m| m.0 == a_addr || m.0 == atk.addr));
    assert!(rb.events().iter().all(|e| !matches!(e, Event::Message { sender: Some(s), from, .. } if *from == atk.addr && *s != atk.addr)));
    assert!(!rb.saw(&Event::Disconnected(a_addr)) && !ra.saw(&Event::Disconnected(b_addr)));

    let sb = b.network_state().await.unwrap();
    assert_eq!(
        sb.peer(a_addr).unwrap().connection,
        ConnectionState::Connected
    );
    wait_for(DEADLINE, "attacker forgotten", || async {
        b.network_state()
            .await
            .unwrap()
            .peers
            .iter()
            .map(|p| p.addr)
            .collect::<Vec<_>>()
            == vec![a_addr]
    })
    .await;
    let c = counters(&b).await;
    println!("b counters after the attack: {c:?}");
    assert_eq!(c.dead_sessions, 0);
    assert_eq!(c.refused_sessions, 0);
    let ca = counters(&a).await;
    assert_eq!(
        ca.malformed_datagrams
            + ca.unknown_session_datagrams
            + ca.protocol_errors
            + ca.dead_sessions,
        0,
        "a saw none of it: {ca:?}"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}
