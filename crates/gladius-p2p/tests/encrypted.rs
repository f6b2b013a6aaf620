//! Encrypted mode (the default) over real UDP on 127.0.0.1: handshakes and
//! identities, key pinning, refusals between the two modes, attacks on a
//! live sealed session, what is (not) visible on the wire, handshake floods
//! and restarts with the same identity.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gladius_kcp::segment::Command;
use gladius_p2p::crypto::packet::{random_index, InitPacket, DATA_OVERHEAD};
use gladius_p2p::crypto::{Cipher, COOKIE_LEN};
use gladius_p2p::wire::{Frame, Message, PROTOCOL_VERSION};
use gladius_p2p::{async_trait, ConnectionState, Counters, Identity, Network, PeerInfo, Plugin};
use rand::{Rng, RngCore, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(20);

// ----- a plugin that keeps every PeerInfo ----------------------------------

#[derive(Clone, Default)]
struct InfoKeeper(Arc<Mutex<Vec<PeerInfo>>>);

impl InfoKeeper {
    fn of(&self, addr: SocketAddr) -> Vec<PeerInfo> {
        let v = self.0.lock().unwrap();
        v.iter().filter(|p| p.addr == addr).cloned().collect()
    }
}

#[async_trait]
impl Plugin for InfoKeeper {
    fn name(&self) -> &str {
        "info-keeper"
    }
    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        self.0.lock().unwrap().push(peer.clone());
    }
}

// ----- helpers --------------------------------------------------------------

/// `a` adds `b`; once both are connected, `n` numbered messages go each
/// way, and each side gets the other's once, in order.
async fn connect_and_exchange(
    (a, a_addr, ra): (&Network, SocketAddr, &Recorder),
    (b, b_addr, rb): (&Network, SocketAddr, &Recorder),
    n: u64,
) {
    a.add(b_addr).await.unwrap();
    wait_connected(a, b_addr).await;
    wait_connected(b, a_addr).await;
    send_numbered(a, b_addr, "seq", n).await;
    send_numbered(b, a_addr, "seq", n).await;
    expect_numbered(rb, a_addr, "seq", n).await;
    expect_numbered(ra, b_addr, "seq", n).await;
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
        "{what}: exactly one count per offending datagram"
    );
}

async fn wait_counter(net: &Network, what: &str, f: impl Fn(&Counters) -> u64, at_least: u64) {
    wait_for(DEADLINE, &format!("{what} to reach {at_least}"), || async {
        f(&counters(net).await) >= at_least
    })
    .await;
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Send `n` numbered messages of type `t` to `to`, one by one.
async fn send_numbered(net: &Network, to: SocketAddr, t: &str, n: u64) {
    for i in 0..n {
        let r = net.broadcast_to(text_msg(t, i), &[to]).await.unwrap();
        assert_eq!(r.queued, vec![to], "message {i} queued");
    }
}

/// Wait until `rec` has exactly `0..n` of type `t` from `from`, in order.
async fn expect_numbered(rec: &Recorder, from: SocketAddr, t: &str, n: u64) {
    wait_for(
        DEADLINE,
        &format!("{n} {t} messages from {from}"),
        || async { rec.count_from(from, t) >= n as usize },
    )
    .await;
    let want: Vec<u64> = (0..n).collect();
    assert_eq!(numbers(rec.bodies_from(from, t)), want, "{t} from {from}");
}

/// A stream of numbered messages that runs until `stop` is set (and at
/// least `min` were sent); returns how many were sent.
fn stream(net: Network, to: SocketAddr, stop: Arc<AtomicBool>, min: u64) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while i < min || (!stop.load(Ordering::Relaxed) && i < 20_000) {
            let r = net
                .broadcast_to(text_msg("stream", i), &[to])
                .await
                .unwrap();
            assert_eq!(r.queued, vec![to]);
            i += 1;
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        i
    })
}

fn rejected_of(rec: &Recorder, addr: SocketAddr) -> Vec<String> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Rejected(a, reason) if a == addr => Some(reason),
            _ => None,
        })
        .collect()
}

fn connected_count(rec: &Recorder, addr: SocketAddr) -> usize {
    rec.events()
        .iter()
        .filter(|e| matches!(e, Event::Connected(a, _) if *a == addr))
        .count()
}

/// A well-formed `Init` with a fresh index and random ephemeral bytes (the
/// responder only needs to parse it to spend work on it).
fn forged_init(rng: &mut impl RngCore) -> Vec<u8> {
    let mut e = [0u8; 32];
    rng.fill_bytes(&mut e);
    InitPacket {
        sender_index: random_index(),
        noise: &e,
        cookie: [0; COOKIE_LEN],
        cipher: gladius_p2p::crypto::Cipher::ChaChaPoly,
    }
    .encode()
    .to_vec()
}

const DATA: u8 = 0xE4;
const FINISH: u8 = 0xE3;

/// The `Init`s among `datagrams`, of either suite (`0xE1`, `0xE7`).
fn inits(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .filter(|d| matches!(d.first(), Some(0xE1 | 0xE7)))
        .cloned()
        .collect()
}

fn of_type(datagrams: &[Vec<u8>], t: u8) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .filter(|d| d.first() == Some(&t))
        .cloned()
        .collect()
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

// ----- 1. the happy path ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_encrypted_nodes_authenticate_and_exchange_in_order() {
    const N: u64 = 200;
    let a_payload = b"signed-by-A: app key proof".to_vec();
    let b_payload = b"B's handshake bytes".to_vec();
    let (a, a_addr, ra) = node_with(test_config().with_handshake_payload(a_payload.clone())).await;
    let (b, b_addr, rb) = node_with(test_config().with_handshake_payload(b_payload.clone())).await;
    let (ia, ib) = (InfoKeeper::default(), InfoKeeper::default());
    a.register_plugin(ia.clone()).await.unwrap();
    b.register_plugin(ib.clone()).await.unwrap();

    connect_and_exchange((&a, a_addr, &ra), (&b, b_addr, &rb), N).await;

    let (sa, sb) = (
        a.network_state().await.unwrap(),
        b.network_state().await.unwrap(),
    );
    assert!(sa.encrypted && sb.encrypted, "encryption is the default");
    let (ka, kb) = (sa.public_key.unwrap(), sb.public_key.unwrap());
    assert_ne!(ka, kb);
    assert_eq!(
        sa.peer(b_addr).unwrap().public_key,
        Some(kb),
        "A knows B's key"
    );
    assert_eq!(
        sb.peer(a_addr).unwrap().public_key,
        Some(ka),
        "B knows A's key"
    );

    wait_for(DEADLINE, "peer_connected on both sides", || async {
        !ia.of(b_addr).is_empty() && !ib.of(a_addr).is_empty()
    })
    .await;
    let (info_b, info_a) = (&ib.of(a_addr)[0], &ia.of(b_addr)[0]);
    assert_eq!(
        &info_b.handshake_payload[..],
        &a_payload[..],
        "A's payload at B"
    );
    assert_eq!(
        &info_a.handshake_payload[..],
        &b_payload[..],
        "B's payload at A"
    );
    assert_eq!(info_b.public_key, Some(ka));
    assert_eq!(info_a.public_key, Some(kb));
    assert_eq!(info_b.advertised, a_addr);

    for (s, who) in [(&sa, "a"), (&sb, "b")] {
        let c = &s.counters;
        assert_eq!(
            c.decrypt_failures + c.replayed_datagrams + c.malformed_datagrams + c.bad_handshakes,
            0,
            "{who}: a clean run counts nothing: {c:?}"
        );
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// ----- 1b. cipher suites ------------------------------------------------------

/// The suite of the session with `peer`, as `network_state` shows it.
async fn cipher_with(net: &Network, peer: SocketAddr) -> Option<Cipher> {
    net.network_state().await.unwrap().peer(peer)?.cipher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiator_chooses_the_suite_and_either_responder_answers_it() {
    const N: u64 = 200;
    for (a_cipher, b_cipher) in [
        (Cipher::AesGcm, Cipher::AesGcm),
        (Cipher::AesGcm, Cipher::ChaChaPoly),
        (Cipher::ChaChaPoly, Cipher::AesGcm),
    ] {
        let (a, a_addr, ra, tap) = tapped_node(test_config().with_cipher(a_cipher)).await;
        let (b, b_addr, rb) = node_with(test_config().with_cipher(b_cipher)).await;
        connect_and_exchange((&a, a_addr, &ra), (&b, b_addr, &rb), N).await;
        // A initiated: its suite, on both sides, and its Init's type says so.
        assert_eq!(cipher_with(&a, b_addr).await, Some(a_cipher));
        assert_eq!(cipher_with(&b, a_addr).await, Some(a_cipher));
        let init_type = match a_cipher {
            Cipher::AesGcm => 0xE7,
            _ => 0xE1,
        };
        let firsts: Vec<u8> = tap.sent_to(b_addr).iter().map(|d| d[0]).collect();
        assert!(firsts.contains(&init_type), "{a_cipher}: {firsts:x?}");
        assert!(
            !firsts.contains(&(0xE1 ^ 0xE7 ^ init_type)),
            "{a_cipher}: one suite"
        );
        let c = counters(&b).await;
        assert_eq!(
            c.decrypt_failures + c.malformed_datagrams + c.bad_handshakes,
            0,
            "{c:?}"
        );
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_aes_gcm_suite_is_reached_with_chachapoly() {
    const N: u64 = 200;
    // An older node: 0xE7 is garbage to it, lost on its input, and it
    // initiates with ChaCha20-Poly1305 (the only suite it knows).
    let old_key = Identity::generate();
    let old_node = |socket: HookSocket| {
        let config = test_config()
            .with_cipher(Cipher::ChaChaPoly)
            .with_identity(old_key.clone());
        async move {
            let net = Network::new(config).unwrap();
            let rec = Recorder::default();
            net.register_plugin(rec.clone()).await.unwrap();
            let socket = socket.on_recv(|d, _| d.first() != Some(&0xE7));
            let addr = net.listen_on(socket).await.unwrap();
            (net, addr, rec)
        }
    };
    let (old, old_addr, old_rec) = old_node(HookSocket::bind().await).await;
    let (new, new_addr, new_rec, tap) =
        tapped_node(test_config().with_cipher(Cipher::AesGcm)).await;
    let started = Instant::now();
    new.add(old_addr).await.unwrap();
    wait_connected(&new, old_addr).await;
    wait_connected(&old, new_addr).await;
    // Two AES-GCM Inits went unanswered (200 ms apart), then the fallback.
    assert!(started.elapsed() >= Duration::from_millis(600));
    let firsts: Vec<u8> = tap.sent_to(old_addr).iter().map(|d| d[0]).collect();
    let inits: Vec<u8> = firsts
        .iter()
        .copied()
        .filter(|t| matches!(t, 0xE1 | 0xE7))
        .collect();
    assert_eq!(inits.get(..3), Some(&[0xE7, 0xE7, 0xE1][..]), "{inits:x?}");
    assert_eq!(cipher_with(&new, old_addr).await, Some(Cipher::ChaChaPoly));
    assert_eq!(cipher_with(&old, new_addr).await, Some(Cipher::ChaChaPoly));
    send_numbered(&new, old_addr, "seq", N).await;
    send_numbered(&old, new_addr, "seq", N).await;
    expect_numbered(&old_rec, new_addr, "seq", N).await;
    expect_numbered(&new_rec, old_addr, "seq", N).await;

    // The old node restarts (same key, same port). The new node remembers
    // the suite it ran with it: its reconnect is ChaCha20-Poly1305 from
    // the first Init, with no AES-GCM tries to wait out.
    let sent_before = tap.sent_to(old_addr).len();
    old.close().await.unwrap();
    let socket = loop {
        match UdpSocket::bind(old_addr).await {
            Ok(inner) => break HookSocket::bind().await.with_inner(inner),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let (old, _, old_rec) = old_node(socket).await;
    wait_for(DEADLINE, "the new node reconnects", || async {
        counters(&new).await.handshakes_completed >= 2
    })
    .await;
    wait_connected(&new, old_addr).await;
    let again: Vec<u8> = crate::inits(&tap.sent_to(old_addr)[sent_before..])
        .iter()
        .map(|d| d[0])
        .collect();
    assert!(
        !again.is_empty() && again.iter().all(|&t| t == 0xE1),
        "{again:x?}"
    );
    send_numbered(&new, old_addr, "seq", N).await;
    expect_numbered(&old_rec, new_addr, "seq", N).await;
    new.close().await.unwrap();
    old.close().await.unwrap();
}

// ----- 2. key pinning ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_keys_connect_only_to_the_right_node() {
    // The right key.
    let (a, a_addr, _ra) = node().await;
    let (b, b_addr, rb) = node().await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    a.add_pinned(b_addr, b_key).await.unwrap();
    wait_connected(&a, b_addr).await;
    send_numbered(&a, b_addr, "pinned", 5).await;
    expect_numbered(&rb, a_addr, "pinned", 5).await;
    assert_eq!(counters(&a).await.pin_mismatches, 0);

    // A wrong key (someone else's): the initiator refuses after message 2.
    let (c, _c_addr, rc) = node().await;
    let (d, d_addr, rd) = node().await;
    let wrong = Identity::generate().public_key();
    c.add_pinned(d_addr, wrong).await.unwrap();
    let r = c.broadcast(text_msg("never", "x")).await.unwrap();
    assert_eq!(r.queued, vec![d_addr], "queued while connecting");
    wait_counter(&c, "pin_mismatches (initiator)", |x| x.pin_mismatches, 2).await;
    wait_for(DEADLINE, "peer_rejected at the initiator", || async {
        !rejected_of(&rc, d_addr).is_empty()
    })
    .await;
    let sc = c.network_state().await.unwrap();
    let peer = sc.peer(d_addr).unwrap();
    assert!(peer.last_error.is_some(), "last_error set: {peer:?}");
    assert_ne!(peer.connection, ConnectionState::Connected);
    assert_eq!(peer.public_key, None, "no key was accepted");
    assert_eq!(connected_count(&rc, d_addr), 0);
    assert!(
        rd.messages().is_empty(),
        "nothing delivered to the wrong node"
    );
    assert!(rd
        .events()
        .iter()
        .all(|e| !matches!(e, Event::Connected(..))));
    println!("initiator pin refusal: {:?}", rejected_of(&rc, d_addr)[0]);

    // The responder pins the initiator's address to a wrong key.
    let (e, e_addr, re) = node().await;
    let (f, f_addr, rf) =
        node_with(test_config().with_known_peer(e_addr, Identity::generate().public_key())).await;
    e.add(f_addr).await.unwrap();
    e.broadcast(text_msg("never", "y")).await.unwrap();
    wait_counter(&f, "pin_mismatches (responder)", |x| x.pin_mismatches, 1).await;
    wait_counter(&e, "rejected_by_peer", |x| x.rejected_by_peer, 1).await;
    wait_for(
        DEADLINE,
        "peer_rejected at the refused initiator",
        || async { !rejected_of(&re, f_addr).is_empty() },
    )
    .await;
    let se = e.network_state().await.unwrap();
    assert!(se.peer(f_addr).unwrap().last_error.is_some());
    assert_eq!(connected_count(&re, f_addr), 0);
    assert_eq!(connected_count(&rf, e_addr), 0);
    assert!(rf.messages().is_empty(), "nothing delivered");
    // The responder's plugin hears of it a moment after its counter moved.
    wait_for(DEADLINE, "the responder reports it too", || async {
        !rejected_of(&rf, e_addr).is_empty()
    })
    .await;
    println!(
        "responder pin refusal at the initiator: {:?}",
        rejected_of(&re, f_addr)[0]
    );

    for n in [a, b, c, d, e, f] {
        n.close().await.unwrap();
    }
}

// ----- 3. plaintext vs encrypted ----------------------------------------------

/// `init` adds `resp`; the two run different modes.
async fn mode_mismatch(init_plaintext: bool) {
    let (i, i_addr, ri) = node_with(test_config().with_plaintext(init_plaintext)).await;
    let (r, r_addr, rr) = node_with(test_config().with_plaintext(!init_plaintext)).await;
    i.add(r_addr).await.unwrap();
    i.broadcast(text_msg("never", "z")).await.unwrap();
    // How fast (one round trip, exactly) is checked in virtual time by
    // the endpoint's tests (endpoint/tests/modes.rs); here, over real
    // sockets, that it happens and says why.
    wait_for(DEADLINE, "peer_rejected at the initiator", || async {
        !rejected_of(&ri, r_addr).is_empty()
    })
    .await;
    let reason = rejected_of(&ri, r_addr)[0].clone();
    let want = if init_plaintext {
        "requires encryption"
    } else {
        "plaintext only"
    };
    assert!(reason.contains(want), "clear reason: {reason}");
    wait_counter(&r, "encryption_mismatches", |c| c.encryption_mismatches, 1).await;
    wait_counter(&i, "rejected_by_peer", |c| c.rejected_by_peer, 1).await;
    let si = i.network_state().await.unwrap();
    assert_eq!(
        si.peer(r_addr).unwrap().last_error.as_deref(),
        Some(&*reason)
    );
    // It keeps retrying (the peer is in the route table) and keeps being
    // refused; nothing is ever delivered.
    wait_counter(&i, "a second refusal", |c| c.rejected_by_peer, 2).await;
    assert!(rr.messages().is_empty() && ri.messages().is_empty());
    assert_eq!(
        connected_count(&ri, r_addr) + connected_count(&rr, i_addr),
        0
    );
    assert_eq!(counters(&i).await.handshake_timeouts, 0);
    i.close().await.unwrap();
    r.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_node_adding_a_plaintext_node_is_refused() {
    mode_mismatch(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_node_adding_an_encrypted_node_is_refused() {
    mode_mismatch(true).await;
}

// ----- 4. attacks on a live session -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_encrypted_pair_survives_forged_replayed_and_corrupted_datagrams() {
    let (a, a_addr, ra, a_tap) = tapped_node(test_config()).await;
    let (b, b_addr, rb, b_tap) = tapped_node(test_config()).await;
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    wait_connected(&b, a_addr).await;
    // Some traffic to capture, paced so that the driver does not batch it
    // all into a few datagrams: one Data datagram (at least) per message.
    for i in 0..20 {
        let r = a
            .broadcast_to(text_msg("warmup", i), &[b_addr])
            .await
            .unwrap();
        assert_eq!(r.queued, vec![b_addr], "message {i} queued");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    send_numbered(&b, a_addr, "warmup", 20).await;
    expect_numbered(&rb, a_addr, "warmup", 20).await;
    expect_numbered(&ra, b_addr, "warmup", 20).await;

    let captured = a_tap.sent_to(b_addr);
    // Every captured datagram has been handled by B (only A has sent to B
    // so far), so their counters are all in B's replay window.
    let n = captured.len() as u64;
    wait_counter(
        &b,
        "b handled all captured datagrams",
        |c| c.datagrams_in,
        n,
    )
    .await;
    let data = of_type(&captured, DATA);
    assert!(data.len() >= 10, "captured {} Data datagrams", data.len());
    let inits = inits(&captured);
    let finishes = of_type(&captured, FINISH);
    assert!(!inits.is_empty() && !finishes.is_empty());
    // The KCP conv is the initiator's (A's) index; Data to B carries B's.
    let live_conv = u32_at(inits.last().unwrap(), 4);
    let b_index = u32_at(&data[0], 4);
    assert!(data.iter().all(|d| u32_at(d, 4) == b_index));

    let base_b = counters(&b).await;
    let base_a = counters(&a).await;
    assert_eq!(
        base_b.decrypt_failures + base_b.replayed_datagrams + base_b.malformed_datagrams,
        0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let s_ab = stream(a.clone(), b_addr, stop.clone(), 200);
    let s_ba = stream(b.clone(), a_addr, stop.clone(), 200);

    let mut rng = rand::rngs::StdRng::seed_from_u64(0xE4);
    let pick = |rng: &mut rand::rngs::StdRng| data[rng.gen_range(0..data.len())].clone();
    let mut want = base_b.clone();

    // (a) One bit flipped in the ciphertext or tag, counter moved to one
    //     never used: authentication fails.
    for _ in 0..20 {
        let mut d = pick(&mut rng);
        let bit = rng.gen_range(16 * 8..d.len() * 8);
        d[bit / 8] ^= 1 << (bit % 8);
        d[15] ^= 0x40; // counter's top byte
        b_tap.inject(d, a_addr);
    }
    // The counter itself flipped: another nonce, authentication fails.
    for _ in 0..10 {
        let mut d = pick(&mut rng);
        d[8 + rng.gen_range(4..8)] ^= 1 << rng.gen_range(0..8);
        b_tap.inject(d, a_addr);
    }
    want.decrypt_failures += 30;
    expect_counter(
        &b,
        "decrypt_failures (bit flips)",
        |c| c.decrypt_failures,
        want.decrypt_failures,
    )
    .await;

    // (b) A bit flipped under a counter B already accepted: the replay
    //     window answers before authentication is even tried.
    for _ in 0..20 {
        let mut d = pick(&mut rng);
        let bit = rng.gen_range(16 * 8..d.len() * 8);
        d[bit / 8] ^= 1 << (bit % 8);
        b_tap.inject(d, a_addr);
    }
    want.replayed_datagrams += 20;
    expect_counter(
        &b,
        "replayed (flipped, old counter)",
        |c| c.replayed_datagrams,
        want.replayed_datagrams,
    )
    .await;

    // (c) Exact replays.
    for d in data.iter().cycle().take(50) {
        b_tap.inject(d.clone(), a_addr);
    }
    want.replayed_datagrams += 50;
    expect_counter(
        &b,
        "replayed_datagrams",
        |c| c.replayed_datagrams,
        want.replayed_datagrams,
    )
    .await;

    // (d) Truncations: shorter than a Data packet is malformed; a cut tag
    //     under an accepted counter is caught by the replay window.
    let long = data.iter().max_by_key(|d| d.len()).unwrap().clone();
    for len in 0..DATA_OVERHEAD {
        b_tap.inject(long[..len].to_vec(), a_addr);
    }
    want.malformed_datagrams += DATA_OVERHEAD as u64;
    for len in [DATA_OVERHEAD, DATA_OVERHEAD + 1, long.len() - 1] {
        b_tap.inject(long[..len].to_vec(), a_addr);
    }
    want.replayed_datagrams += 3;
    expect_counter(
        &b,
        "malformed (truncated)",
        |c| c.malformed_datagrams,
        want.malformed_datagrams,
    )
    .await;
    expect_counter(
        &b,
        "replayed (truncated)",
        |c| c.replayed_datagrams,
        want.replayed_datagrams,
    )
    .await;
    // ... and cut ones under a fresh counter fail authentication.
    for len in [DATA_OVERHEAD, DATA_OVERHEAD + 5, long.len() - 1] {
        let mut d = long[..len].to_vec();
        d[15] ^= 0x20;
        b_tap.inject(d, a_addr);
    }
    want.decrypt_failures += 3;
    expect_counter(
        &b,
        "decrypt_failures (truncated)",
        |c| c.decrypt_failures,
        want.decrypt_failures,
    )
    .await;

    // (e) Random bytes behind a valid Data header with B's index.
    for _ in 0..50 {
        let mut d = vec![DATA, 0, 0, 0];
        d.extend_from_slice(&b_index.to_le_bytes());
        let counter: u64 = (1 << 60) + rng.gen_range(0..1u64 << 40);
        d.extend_from_slice(&counter.to_le_bytes());
        let mut body = vec![0u8; rng.gen_range(16..1400)];
        rng.fill_bytes(&mut body);
        d.extend_from_slice(&body);
        b_tap.inject(d, a_addr);
    }
    want.decrypt_failures += 50;
    expect_counter(
        &b,
        "decrypt_failures (random)",
        |c| c.decrypt_failures,
        want.decrypt_failures,
    )
    .await;
    // The same under another index: not this channel's.
    for _ in 0..10 {
        let mut d = pick(&mut rng);
        let other = loop {
            let i = random_index();
            if i != b_index {
                break i;
            }
        };
        d[4..8].copy_from_slice(&other.to_le_bytes());
        b_tap.inject(d, a_addr);
    }
    want.unknown_session_datagrams += 10;
    expect_counter(
        &b,
        "unknown (wrong index)",
        |c| c.unknown_session_datagrams,
        want.unknown_session_datagrams,
    )
    .await;

    // (f) Bare KCP on the live conv, in A's name: never reaches KCP.
    for k in 0..10u32 {
        // Far-past-ts ACKs of everything.
        let ack = kcp_header(
            live_conv,
            Command::Ack,
            k,
            u32::MAX,
            0x8000_0000u32.wrapping_add(k),
        );
        b_tap.inject(kcp_seg(ack, &[]), a_addr);
        let mut m = Message::new("stream", "forged").unwrap();
        m.set_sender(a_addr);
        let push = kcp_header(live_conv, Command::Push, k + 1, 0, 7);
        b_tap.inject(kcp_seg(push, &frame_bytes(&Frame::Message(m))), a_addr);
    }
    let ask = kcp_header(live_conv, Command::WindowAsk, 0, 0, 0);
    b_tap.inject(kcp_seg(ask, &[]), a_addr);
    want.unknown_session_datagrams += 21;
    expect_counter(
        &b,
        "unknown (bare KCP)",
        |c| c.unknown_session_datagrams,
        want.unknown_session_datagrams,
    )
    .await;
    // A bare session opener in A's name is refused with a Reject, which A
    // ignores: an established channel is not torn down by the clear Reject.
    let hello = frame_bytes(&Frame::Hello {
        version: PROTOCOL_VERSION,
        instance: 42,
        advertised: a_addr,
    });
    b_tap.inject(
        kcp_seg(kcp_header(live_conv, Command::Push, 0, 0, 0), &hello),
        a_addr,
    );
    want.encryption_mismatches += 1;
    expect_counter(
        &b,
        "encryption_mismatches",
        |c| c.encryption_mismatches,
        want.encryption_mismatches,
    )
    .await;
    wait_counter(
        &a,
        "a ignores the clear Reject",
        |c| c.unknown_session_datagrams,
        base_a.unknown_session_datagrams + 1,
    )
    .await;

    // (g) Old handshake messages: a replayed Finish fits no handshake; a
    //     replayed Init makes B answer, and A drops the Response.
    b_tap.inject(finishes[0].clone(), a_addr);
    want.bad_handshakes += 1;
    expect_counter(
        &b,
        "bad_handshakes (Finish)",
        |c| c.bad_handshakes,
        want.bad_handshakes,
    )
    .await;
    b_tap.inject(inits[0].clone(), a_addr);
    wait_for(DEADLINE, "b answers the replayed Init", || async {
        b.network_state().await.unwrap().half_open_handshakes == 1
    })
    .await;
    wait_counter(
        &a,
        "a drops the unasked Response",
        |c| c.bad_handshakes,
        base_a.bad_handshakes + 1,
    )
    .await;
    b_tap.inject(finishes[0].clone(), a_addr);
    want.bad_handshakes += 1;
    expect_counter(
        &b,
        "bad_handshakes (Finish vs new Response)",
        |c| c.bad_handshakes,
        want.bad_handshakes,
    )
    .await;

    // (h) The same from a third party's own address. A sealed datagram is
    //     matched to its channel by index wherever it comes from (roaming,
    //     docs/nat.md), so the channel's checks answer: replays and
    //     forgeries are counted as such, and none of them moves A's path.
    let atk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let atk_addr = atk.local_addr().unwrap();
    let replayed = data.len().min(20) as u64;
    for d in data.iter().take(20) {
        atk.send_to(d, b_addr).await.unwrap();
        let mut flipped = d.clone();
        flipped[15] ^= 0x40;
        atk.send_to(&flipped, b_addr).await.unwrap();
    }
    for _ in 0..20 {
        let mut d = vec![DATA, 0, 0, 0];
        d.extend_from_slice(&b_index.to_le_bytes());
        let mut rest = vec![0u8; rng.gen_range(24..600)];
        rng.fill_bytes(&mut rest);
        d.extend_from_slice(&rest);
        atk.send_to(&d, b_addr).await.unwrap();
    }
    let ack = kcp_header(live_conv, Command::Ack, 0, u32::MAX, 1);
    atk.send_to(&kcp_seg(ack, &[]), b_addr).await.unwrap();
    want.unknown_session_datagrams += 1;
    want.replayed_datagrams += replayed;
    want.decrypt_failures += replayed + 20;
    for len in 1..DATA_OVERHEAD {
        atk.send_to(&long[..len], b_addr).await.unwrap();
    }
    want.malformed_datagrams += DATA_OVERHEAD as u64 - 1;
    expect_counter(
        &b,
        "unknown (third party)",
        |c| c.unknown_session_datagrams,
        want.unknown_session_datagrams,
    )
    .await;
    expect_counter(
        &b,
        "malformed (third party)",
        |c| c.malformed_datagrams,
        want.malformed_datagrams,
    )
    .await;
    expect_counter(
        &b,
        "replayed (third party)",
        |c| c.replayed_datagrams,
        want.replayed_datagrams,
    )
    .await;
    expect_counter(
        &b,
        "decrypt_failures (third party)",
        |c| c.decrypt_failures,
        want.decrypt_failures,
    )
    .await;
    let state = b.network_state().await.unwrap();
    assert_eq!(state.counters.path_changes, 0, "nothing moved A's path");
    assert_eq!(state.peer(a_addr).and_then(|p| p.active_path), Some(a_addr));
    assert!(state.peer(atk_addr).is_none(), "{:?}", state.peers);

    // The stream went on through all of it: everything, in order, once.
    stop.store(true, Ordering::Relaxed);
    let (n_ab, n_ba) = (s_ab.await.unwrap(), s_ba.await.unwrap());
    expect_numbered(&rb, a_addr, "stream", n_ab).await;
    expect_numbered(&ra, b_addr, "stream", n_ba).await;
    println!("streamed {n_ab} a->b and {n_ba} b->a during the attack");
    let types: Vec<String> = rb.messages().into_iter().map(|m| m.1).collect();
    assert!(
        rb.messages()
            .iter()
            .all(|m| m.0 == a_addr && (m.1 == "stream" || m.1 == "warmup")),
        "nothing forged reached B's plugin: {types:?}"
    );
    assert!(rb.bodies_of_type("stream").iter().all(|b| b != b"forged"));
    assert!(!rb.saw(&Event::Disconnected(a_addr)) && !ra.saw(&Event::Disconnected(b_addr)));
    assert_eq!(
        connected_count(&rb, a_addr),
        1,
        "the session was never replaced"
    );
    assert!(rb
        .events()
        .iter()
        .all(|e| !matches!(e, Event::Connected(x, _) if *x == atk_addr)));

    let after = counters(&b).await;
    println!("b counters after the attack: {after:?}");
    assert_eq!(after.decrypt_failures, want.decrypt_failures);
    assert_eq!(after.replayed_datagrams, want.replayed_datagrams);
    assert_eq!(after.malformed_datagrams, want.malformed_datagrams);
    assert_eq!(
        after.unknown_session_datagrams,
        want.unknown_session_datagrams
    );
    assert_eq!(
        after.protocol_errors + after.dead_sessions + after.checksum_failures + after.wrong_sender,
        0
    );
    let ca = counters(&a).await;
    assert_eq!(
        ca.decrypt_failures + ca.replayed_datagrams + ca.malformed_datagrams,
        0,
        "{ca:?}"
    );
    assert_eq!(
        b.network_state()
            .await
            .unwrap()
            .peer(a_addr)
            .unwrap()
            .connection,
        ConnectionState::Connected
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// ----- 5. nothing readable on the wire ----------------------------------------

async fn capture_secret(
    plaintext: bool,
    cipher: Cipher,
) -> (Vec<Vec<u8>>, Vec<u8>, String, SocketAddr) {
    const TYPE: &str = "secret.type.MARKER-7f3a";
    let mut random = vec![0u8; 64];
    rand::thread_rng().fill_bytes(&mut random);
    let mut body = random.clone();
    body.extend_from_slice(b"SECRET-BODY-MARKER");
    let config = test_config().with_plaintext(plaintext).with_cipher(cipher);
    let (a, a_addr, _ra, tap) = tapped_node(config.clone()).await;
    let (b, b_addr, rb) = node_with(config).await;
    a.add(b_addr).await.unwrap();
    for _ in 0..10 {
        let m = Message::new(TYPE, body.clone()).unwrap();
        a.broadcast(m).await.unwrap();
    }
    wait_for(DEADLINE, "the secret messages arrive", || async {
        rb.count_from(a_addr, TYPE) == 10
    })
    .await;
    assert!(rb.bodies_from(a_addr, TYPE).iter().all(|b| *b == body));
    a.close().await.unwrap();
    b.close().await.unwrap();
    (tap.all_sent(), random, TYPE.to_owned(), a_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_on_the_wire() {
    for cipher in [Cipher::ChaChaPoly, Cipher::AesGcm] {
        let (wire, random, t, a_addr) = capture_secret(false, cipher).await;
        let needles: [(&str, Vec<u8>); 4] = [
            ("marker", b"SECRET-BODY-MARKER".to_vec()),
            ("random body bytes", random),
            ("message type", t.into_bytes()),
            ("advertised address", a_addr.to_string().into_bytes()),
        ];
        assert!(!inits(&wire).is_empty(), "{cipher}: captured an Init");
        for t in [FINISH, DATA] {
            assert!(
                !of_type(&wire, t).is_empty(),
                "{cipher}: captured a {t:#x} datagram"
            );
        }
        for d in &wire {
            assert!(
                (0xE1..=0xE7).contains(&d[0]),
                "{cipher}: every datagram is encrypted-mode"
            );
            for (what, needle) in &needles {
                assert!(!contains(d, needle), "{cipher}: {what} visible on the wire");
            }
        }
    }

    // Control: the same search finds it all in plaintext mode.
    let (wire, random, t, a_addr) = capture_secret(true, Cipher::ChaChaPoly).await;
    let found = |needle: &[u8]| wire.iter().any(|d| contains(d, needle));
    assert!(
        found(b"SECRET-BODY-MARKER"),
        "control: marker found in plaintext"
    );
    assert!(found(&random), "control: body found in plaintext");
    assert!(found(t.as_bytes()), "control: type found in plaintext");
    assert!(
        found(a_addr.to_string().as_bytes()),
        "control: address found"
    );
}

// ----- 6. handshake floods ----------------------------------------------------

/// Samples B's half-open table until stopped; the largest value seen.
fn sampler(net: Network, stop: Arc<AtomicBool>, max: Arc<AtomicUsize>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let s = net.network_state().await.unwrap();
            max.fetch_max(s.half_open_handshakes, Ordering::Relaxed);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples
    })
}

/// C, on `ip`, adds B and both send `n` numbered messages.
async fn legit_exchange(
    b: &Network,
    b_addr: SocketAddr,
    rb: &Recorder,
    n: u64,
    ip: &str,
) -> (Network, Recorder) {
    let c = Network::new(test_config()).unwrap();
    let rc = Recorder::default();
    c.register_plugin(rc.clone()).await.unwrap();
    let c_addr = c.listen(format!("{ip}:0")).await.unwrap();
    c.add(b_addr).await.unwrap();
    send_numbered(&c, b_addr, "legit", n).await;
    expect_numbered(rb, c_addr, "legit", n).await;
    send_numbered(b, c_addr, "legit", n).await;
    expect_numbered(&rc, b_addr, "legit", n).await;
    (c, rc)
}

/// The driver under a real flood over a socket. The exact counts (one key
/// exchange per half-open slot lifetime of 5 s, a cookie for every other
/// Init) are checked in virtual time in endpoint/tests/hostile.rs; here
/// the bounds follow the wall clock, and only loosen on a slow machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_flood_from_one_address_holds_one_slot() {
    const FLOOD: u64 = 10_000;
    let (b, b_addr, rb) = node().await;
    let atk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let samp = sampler(b.clone(), stop_sampling.clone(), max_seen.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let c_done = Arc::new(AtomicBool::new(false));
    let flood_start = Instant::now();
    let flood = {
        let (sent, c_done) = (sent.clone(), c_done.clone());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(6);
            // At least FLOOD Inits, for at least 600 ms (several throttle
            // intervals) and until the legitimate exchange is done.
            loop {
                let n = sent.load(Ordering::Relaxed);
                let more = n < FLOOD
                    || flood_start.elapsed() < Duration::from_millis(600)
                    || !c_done.load(Ordering::Relaxed);
                if !more || n >= 50 * FLOOD {
                    break;
                }
                for _ in 0..100 {
                    atk.send_to(&forged_init(&mut rng), b_addr).await.unwrap();
                }
                sent.fetch_add(100, Ordering::Relaxed);
                if n < FLOOD {
                    // The first FLOOD as fast as the socket takes them.
                    tokio::task::yield_now().await;
                } else {
                    // Then at a rate the node surely keeps up with on a
                    // loaded machine, so the legitimate peer's datagrams
                    // are not simply lost in a full socket buffer.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    // The flood alone first, over several throttle intervals.
    wait_for(DEADLINE, "the flood sent, for a while", || async {
        sent.load(Ordering::Relaxed) >= FLOOD && flood_start.elapsed() >= Duration::from_millis(350)
    })
    .await;
    let c = counters(&b).await;
    let elapsed_ms = flood_start.elapsed().as_millis() as u64;
    let alone = max_seen.load(Ordering::Relaxed);
    assert!(
        alone <= 1,
        "one flooding address holds at most one slot: {alone}"
    );
    // Every Init B read got a key exchange, a cookie or was counted: one
    // key exchange per slot lifetime (5 s), a cookie (smaller than the
    // Init) for 50 of the rest per 100 ms, which nothing but the flooding
    // address would ever answer.
    let answered = c.datagrams_in - c.cookies_sent - c.throttled_handshakes - c.bad_handshakes;
    println!(
        "alone: {} Inits read in {elapsed_ms} ms, {answered} key exchanges, {} cookies",
        c.datagrams_in, c.cookies_sent
    );
    assert_eq!(c.malformed_datagrams, 0);
    assert!(c.cookies_sent > 0);
    assert!(
        (1..=elapsed_ms / 5_000 + 1).contains(&answered),
        "one key exchange per slot lifetime: {answered} in {elapsed_ms} ms"
    );

    // A legitimate peer, during the flood.
    let started = Instant::now();
    let (c, _rc) = legit_exchange(&b, b_addr, &rb, 100, "127.0.0.1").await;
    println!(
        "legitimate exchange during the flood took {:?}",
        started.elapsed()
    );
    c_done.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = samp.await.unwrap();
    let s = b.network_state().await.unwrap();
    let max = max_seen.load(Ordering::Relaxed).max(s.half_open_handshakes);
    println!(
        "flood of {} Inits: {samples} samples, max half-open {max}, cookies {}, bad {}",
        sent.load(Ordering::Relaxed),
        s.counters.cookies_sent,
        s.counters.bad_handshakes,
    );
    // The attacker's slot and the legitimate peer's, never more.
    assert!(max <= 2, "half-open table: {max}");
    c.close().await.unwrap();
    b.close().await.unwrap();
}

/// The driver under a real flood from 20 sockets (also in virtual time in
/// endpoint/tests/hostile.rs, with the slot holders' cookies and the
/// key-exchange budget's exact split of a burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inits_from_many_addresses_meet_cookies_and_a_bounded_table() {
    const MAX: usize = 8;
    let (b, b_addr, rb) = node_with(test_config().with_max_half_open(MAX)).await;
    let mut socks = Vec::new();
    for _ in 0..20 {
        socks.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let samp = sampler(b.clone(), stop_sampling.clone(), max_seen.clone());
    let c_done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let flood = {
        let (c_done, rounds) = (c_done.clone(), rounds.clone());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(20);
            let start = Instant::now();
            // For at least 400 ms (slot holders renew theirs every 100 ms)
            // and until the legitimate exchange is done.
            while (!c_done.load(Ordering::Relaxed) || start.elapsed() < Duration::from_millis(400))
                && rounds.load(Ordering::Relaxed) < 20_000
            {
                for s in &socks {
                    s.send_to(&forged_init(&mut rng), b_addr).await.unwrap();
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    wait_counter(&b, "cookies_sent", |c| c.cookies_sent, 1).await;
    let started = Instant::now();
    // From another host: the flooding one has had its cookies for each
    // 100 ms within a few ms of it (50 per source IP).
    let (c, _rc) = legit_exchange(&b, b_addr, &rb, 20, "127.0.0.3").await;
    println!(
        "legitimate exchange under cookies took {:?}",
        started.elapsed()
    );
    c_done.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = samp.await.unwrap();
    let s = b.network_state().await.unwrap();
    let max = max_seen.load(Ordering::Relaxed).max(s.half_open_handshakes);
    println!(
        "{} rounds from 20 addresses: {samples} samples, max half-open {max}, cookies {}, throttled {}",
        rounds.load(Ordering::Relaxed),
        s.counters.cookies_sent,
        s.counters.throttled_handshakes,
    );
    assert!(max <= MAX, "half-open table bounded: {max}");
    assert!(max >= MAX / 2, "the table got past half: {max}");
    assert!(s.counters.cookies_sent > 0);
    c.close().await.unwrap();
    b.close().await.unwrap();
}

// ----- 7. restart with the same identity --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_with_the_same_identity_is_reconnected() {
    let identity = Identity::generate();
    let key = identity.public_key();
    let (a, a_addr, ra) = node().await;
    let ia = InfoKeeper::default();
    a.register_plugin(ia.clone()).await.unwrap();
    let (b, b_addr, rb) = node_with(test_config().with_identity(identity.clone())).await;
    assert_eq!(b.network_state().await.unwrap().public_key, Some(key));
    a.add_pinned(b_addr, key).await.unwrap();
    wait_connected(&a, b_addr).await;
    send_numbered(&a, b_addr, "before", 10).await;
    expect_numbered(&rb, a_addr, "before", 10).await;

    b.close().await.unwrap();
    drop(b);
    wait_for(DEADLINE, "a sees b go", || async {
        ra.saw(&Event::Disconnected(b_addr))
    })
    .await;

    // The same identity on the same address (the old socket may take a
    // moment to be released).
    let b2 = Network::new(test_config().with_identity(identity.clone())).unwrap();
    let rb2 = Recorder::default();
    b2.register_plugin(rb2.clone()).await.unwrap();
    wait_for(DEADLINE, "b's address free again", || {
        let b2 = b2.clone();
        async move { b2.listen(b_addr).await.is_ok() }
    })
    .await;

    wait_for(DEADLINE, "a reconnects to the restarted b", || async {
        connected_count(&ra, b_addr) >= 2
    })
    .await;
    wait_connected(&a, b_addr).await;
    let sa = a.network_state().await.unwrap();
    assert_eq!(sa.peer(b_addr).unwrap().public_key, Some(key), "same key");
    wait_for(DEADLINE, "second peer_connected info", || async {
        ia.of(b_addr).len() >= 2
    })
    .await;
    assert!(ia.of(b_addr).iter().all(|p| p.public_key == Some(key)));
    assert_eq!(counters(&a).await.pin_mismatches, 0);

    send_numbered(&a, b_addr, "after", 10).await;
    expect_numbered(&rb2, a_addr, "after", 10).await;
    send_numbered(&b2, a_addr, "back", 10).await;
    expect_numbered(&ra, b_addr, "back", 10).await;
    a.close().await.unwrap();
    b2.close().await.unwrap();
}

// ----- 8. a forged simultaneous open does not strand a route-table peer ------
// In virtual time, with the exact moment the handshake starts again:
// endpoint/tests/handshake.rs.

/// A known peer's key is not replaced by a second `add_pinned` (someone
/// else's word must not re-pin it); deleting the peer first allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_or_proven_key_is_not_silently_replaced() {
    let (a, _, _) = node().await;
    let (b, b_addr, _) = node().await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    let other = Identity::generate().public_key();
    a.add_pinned(b_addr, b_key).await.unwrap();
    wait_connected(&a, b_addr).await;
    let err = a.add_pinned(b_addr, other).await.unwrap_err();
    assert!(
        matches!(err, gladius_p2p::NetworkError::KeyConflict { existing, .. } if existing == b_key),
        "{err:?}"
    );
    // The same key again is fine (idempotent).
    a.add_pinned(b_addr, b_key).await.unwrap();
    let st = a.network_state().await.unwrap();
    assert_eq!(st.peer(b_addr).unwrap().pinned_key, Some(b_key));
    // After a delete the peer may be pinned to another key.
    a.delete(b_addr).await.unwrap();
    a.add_pinned(b_addr, other).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A plugin (or the application) can change what our handshakes carry at
/// run time; peers that connect afterwards see the new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_payload_can_be_set_at_run_time() {
    let (a, _, _) = node().await;
    let err = a.set_handshake_payload(vec![0u8; 1025]).await.unwrap_err();
    assert!(
        matches!(
            err,
            gladius_p2p::NetworkError::HandshakePayloadTooLarge(1025)
        ),
        "{err:?}"
    );
    a.set_handshake_payload(&b"signed-binding"[..])
        .await
        .unwrap();
    let b = Network::new(test_config()).unwrap();
    let keeper = InfoKeeper::default();
    b.register_plugin(keeper.clone()).await.unwrap();
    b.listen("127.0.0.1:0").await.unwrap();
    let a_addr = a.network_state().await.unwrap().local_addr.unwrap();
    b.add(a_addr).await.unwrap();
    wait_for(Duration::from_secs(10), "b connected to a", || async {
        !keeper.of(a_addr).is_empty()
    })
    .await;
    let info = keeper.of(a_addr).remove(0);
    assert_eq!(&info.handshake_payload[..], b"signed-binding");
    a.close().await.unwrap();
    b.close().await.unwrap();
}
