//! Tests across the crypto module: full handshakes in memory, channels under
//! attack (forgery, corruption, truncation, replay, reordering), loss and
//! retransmission, cookies, and the test vectors of `docs/wire-format.md` §7.9.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;

use super::packet::{
    self, CookiePacket, DataPacket, InitPacket, Packet, RejectPacket, ResponsePacket,
};
use super::*;

/// The normative description of encrypted mode; its vectors are checked
/// below so the document and the code cannot drift apart.
const ENCRYPTION_MD: &str = include_str!("../../../../docs/wire-format.md");

/// Tests and their helpers report failures as errors instead of panicking.
type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn addr(s: &str) -> TestResult<SocketAddr> {
    Ok(s.parse()?)
}

fn payload(a: &str, app: &'static [u8]) -> TestResult<HandshakePayload> {
    Ok(HandshakePayload::new(addr(a)?, Bytes::from_static(app)))
}

fn seq_key(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn init_of(datagram: &[u8]) -> TestResult<InitPacket<'_>> {
    match packet::parse(datagram)? {
        Packet::Init(p) => Ok(p),
        other => Err(format!("not an Init: {other:?}").into()),
    }
}

fn response_of(datagram: &[u8]) -> TestResult<ResponsePacket<'_>> {
    match packet::parse(datagram)? {
        Packet::Response(p) => Ok(p),
        other => Err(format!("not a Response: {other:?}").into()),
    }
}

fn finish_of(datagram: &[u8]) -> TestResult<packet::FinishPacket<'_>> {
    match packet::parse(datagram)? {
        Packet::Finish(p) => Ok(p),
        other => Err(format!("not a Finish: {other:?}").into()),
    }
}

struct Pair {
    a: Established,
    b: Established,
}

/// A ChaCha20-Poly1305 initiator as `a` under `index`, advertising `addr`
/// (empty app payload), started at `now`: its machine and its `Init`.
fn initiator(a: &Identity, index: u32, addr: &str, now: u64) -> TestResult<(Initiator, Bytes)> {
    Ok(Initiator::new(
        a,
        index,
        &payload(addr, b"")?,
        Cipher::ChaChaPoly,
        now,
    )?)
}

/// A complete handshake between fresh identities `a` (initiator) and `b`.
fn handshake(a: &Identity, b: &Identity) -> TestResult<Pair> {
    handshake_with(a, b, Cipher::ChaChaPoly)
}

/// [`handshake`] of suite `cipher`.
fn handshake_with(a: &Identity, b: &Identity, cipher: Cipher) -> TestResult<Pair> {
    let (mut ini, init) =
        Initiator::new(a, 0x0a0a_0a0a, &payload("127.0.0.1:7001", b"")?, cipher, 0)?;
    let (mut res, response) = Responder::new(
        b,
        0x0b0b_0b0b,
        &init_of(&init)?,
        &payload("127.0.0.1:7002", b"app")?,
        0,
    )?;
    let a_est = ini.handle_response(&response_of(&response)?, 1)?;
    let finish = a_est.finish.clone().ok_or("no Finish to send")?;
    let b_est = res.handle_finish(&finish_of(&finish)?)?;
    assert_eq!(ini.poll_timeout(), None);
    assert_eq!(res.poll_timeout(), None);
    Ok(Pair { a: a_est, b: b_est })
}

fn seal(ch: &mut SecureChannel, msg: &[u8]) -> TestResult<Vec<u8>> {
    let mut out = Vec::new();
    ch.seal(msg, &mut out)?;
    Ok(out)
}

fn open(ch: &mut SecureChannel, datagram: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let mut out = vec![0xAA; 3];
    let r = ch.open(datagram, &mut out);
    if r.is_err() {
        assert!(out.is_empty(), "plaintext leaked on error");
    }
    r.map(|()| out)
}

/// Both directions still work.
fn assert_working(p: &mut Pair) -> TestResult {
    let d = seal(&mut p.a.channel, b"ping")?;
    assert_eq!(open(&mut p.b.channel, &d)?, b"ping");
    let d = seal(&mut p.b.channel, b"pong")?;
    assert_eq!(open(&mut p.a.channel, &d)?, b"pong");
    Ok(())
}

#[test]
fn full_handshake_and_both_directions() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let mut p = handshake(&a, &b)?;
    assert_eq!(p.a.remote_static, b.public_key());
    assert_eq!(p.b.remote_static, a.public_key());
    assert_eq!(p.a.channel.remote_static(), b.public_key());
    assert_eq!(p.b.channel.remote_static(), a.public_key());
    assert_eq!(p.a.remote_payload, payload("127.0.0.1:7002", b"app")?);
    assert_eq!(p.b.remote_payload, payload("127.0.0.1:7001", b"")?);
    assert!(p.b.finish.is_none());
    assert_eq!(p.a.channel.local_index(), p.b.channel.remote_index());
    assert_eq!(p.b.channel.local_index(), p.a.channel.remote_index());
    for i in 0..100u32 {
        let msg = vec![i as u8; i as usize * 13];
        let d = seal(&mut p.a.channel, &msg)?;
        assert_eq!(d.len(), msg.len() + packet::DATA_OVERHEAD);
        assert_eq!(classify(&d), Kind::Encrypted(PacketType::Data));
        assert_eq!(open(&mut p.b.channel, &d)?, msg);
        let d = seal(&mut p.b.channel, &msg)?;
        assert_eq!(open(&mut p.a.channel, &d)?, msg);
    }
    assert_eq!(p.a.channel.sent(), 100);
    assert_eq!(p.b.channel.highest_received(), Some(99));
    // An empty datagram seals and opens too.
    let d = seal(&mut p.a.channel, b"")?;
    assert_eq!(open(&mut p.b.channel, &d)?, b"");
    // A datagram to ourselves (our own direction's key) does not open.
    let d = seal(&mut p.a.channel, b"x")?;
    let mut own = d.clone();
    own[4..8].copy_from_slice(&p.a.channel.local_index().to_le_bytes());
    assert_eq!(open(&mut p.a.channel, &own), Err(ChannelError::Decrypt));
    Ok(())
}

#[test]
fn pinned_keys() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let mallory = Identity::generate();

    // Pinned to the right key: completes.
    let (ini, init) = initiator(&a, 1, "127.0.0.1:1", 0)?;
    let mut ini = ini.expect_remote(b.public_key());
    let (res, response) =
        Responder::new(&b, 2, &init_of(&init)?, &payload("127.0.0.1:2", b"")?, 0)?;
    let mut res = res.expect_remote(a.public_key());
    let est = ini.handle_response(&response_of(&response)?, 0)?;
    assert_eq!(est.remote_static, b.public_key());
    res.handle_finish(&finish_of(&est.finish.ok_or("no Finish to send")?)?)?;

    // The initiator pinned b but mallory answers: refused before message 3.
    let (ini, init) = initiator(&a, 1, "127.0.0.1:1", 0)?;
    let mut ini = ini.expect_remote(b.public_key());
    let (_res, response) = Responder::new(
        &mallory,
        2,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        0,
    )?;
    let err = ini
        .handle_response(&response_of(&response)?, 0)
        .unwrap_err();
    assert_eq!(
        err,
        HandshakeError::PinnedKeyMismatch {
            expected: b.public_key(),
            actual: mallory.public_key()
        }
    );
    assert_eq!(ini.poll_timeout(), None, "failed handshakes stop");
    assert!(!ini.is_expired(10_000));
    assert_eq!(
        ini.handle_response(&response_of(&response)?, 0)
            .unwrap_err(),
        HandshakeError::WrongState
    );

    // Without a pin, the wrong key is detectable by the caller.
    let (mut ini, init) = initiator(&a, 1, "127.0.0.1:1", 0)?;
    let (mut res, response) = Responder::new(
        &mallory,
        2,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        0,
    )?;
    let est = ini.handle_response(&response_of(&response)?, 0)?;
    assert_ne!(est.remote_static, b.public_key());
    assert_eq!(est.remote_static, mallory.public_key());

    let finish = est.finish.ok_or("no Finish to send")?;
    assert!(res.handle_finish(&finish_of(&finish)?).is_ok());
    Ok(())
}

#[test]
fn responder_pin_mismatch() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let other = Identity::generate();
    let (mut ini, init) = initiator(&a, 1, "127.0.0.1:1", 0)?;
    let (res, response) =
        Responder::new(&b, 2, &init_of(&init)?, &payload("127.0.0.1:2", b"")?, 0)?;
    let mut res = res.expect_remote(other.public_key());
    let est = ini.handle_response(&response_of(&response)?, 0)?;
    let err = res
        .handle_finish(&finish_of(&est.finish.ok_or("no Finish to send")?)?)
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::PinnedKeyMismatch { actual, .. } if actual == a.public_key())
    );
    assert_eq!(res.poll_timeout(), None);
    Ok(())
}

#[test]
fn version_and_payload_errors() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let (mut ini, init) = initiator(&a, 1, "127.0.0.1:1", 0)?;
    let mut future = payload("127.0.0.1:2", b"")?;
    future.version = 2;
    let (_res, response) = Responder::new(&b, 2, &init_of(&init)?, &future, 0)?;
    assert_eq!(
        ini.handle_response(&response_of(&response)?, 0)
            .unwrap_err(),
        HandshakeError::Version {
            expected: HANDSHAKE_VERSION,
            got: 2
        }
    );
    assert_eq!(ini.poll_timeout(), None);

    // Our own payload is validated up front.
    let big = HandshakePayload::new(
        addr("127.0.0.1:1")?,
        Bytes::from(vec![0; MAX_APP_PAYLOAD + 1]),
    );
    assert_eq!(
        Initiator::new(&a, 1, &big, Cipher::ChaChaPoly, 0).unwrap_err(),
        HandshakeError::Payload(PayloadError::AppTooLong(MAX_APP_PAYLOAD + 1))
    );
    // Reserved indices are refused.
    assert_eq!(
        Initiator::new(
            &a,
            0x0000_0051,
            &payload("127.0.0.1:1", b"")?,
            Cipher::ChaChaPoly,
            0
        )
        .unwrap_err(),
        HandshakeError::InvalidIndex(0x51)
    );
    Ok(())
}

#[test]
fn payload_codec() -> TestResult {
    for (a, app) in [
        ("127.0.0.1:7001", &b""[..]),
        ("[::1]:9", &b"x"[..]),
        ("[fe80::1%2]:65535", &[7u8; MAX_APP_PAYLOAD][..]),
    ] {
        let p = HandshakePayload::new(addr(a)?, Bytes::copy_from_slice(app));
        let enc = p.encode()?;
        assert_eq!(HandshakePayload::decode(&enc)?, p);
        for cut in 0..enc.len() {
            assert!(HandshakePayload::decode(&enc[..cut]).is_err());
        }
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            HandshakePayload::decode(&long),
            Err(PayloadError::TrailingBytes)
        );
    }
    let p = payload("127.0.0.1:7001", b"ab")?;
    assert_eq!(p.encode()?, b"\x01\x0e127.0.0.1:7001\x02\x00ab".to_vec());
    // Non-canonical and bad addresses.
    for text in ["127.000.0.1:1", "localhost:1", "1.2.3.4", "::1:5"] {
        let mut enc = vec![1, text.len() as u8];
        enc.extend_from_slice(text.as_bytes());
        enc.extend_from_slice(&[0, 0]);
        assert_eq!(
            HandshakePayload::decode(&enc),
            Err(PayloadError::BadAddress),
            "{text}"
        );
    }
    let mut enc = vec![1, 9];
    enc.extend_from_slice(b"1.2.3.4:5");
    enc.extend_from_slice(&1025u16.to_le_bytes());
    assert_eq!(
        HandshakePayload::decode(&enc),
        Err(PayloadError::AppTooLong(1025))
    );
    Ok(())
}

#[test]
fn forged_and_corrupted_handshake_messages_do_not_break_it() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let (mut ini, init) = initiator(&a, 0x1001, "127.0.0.1:1", 0)?;
    let (mut res, response) = Responder::new(
        &b,
        0x2002,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        0,
    )?;

    // Every single-bit flip of the noise part of the Response fails to
    // authenticate and leaves the initiator able to complete.
    for i in 12..response.len() {
        let mut bad = response.to_vec();
        bad[i] ^= 0x10;
        assert_eq!(
            ini.handle_response(&response_of(&bad)?, 0).unwrap_err(),
            HandshakeError::Decrypt,
            "byte {i}"
        );
    }
    // Wrong index.
    let mut wrong = response.to_vec();
    wrong[8..12].copy_from_slice(&0x7777u32.to_le_bytes());
    assert!(matches!(
        ini.handle_response(&response_of(&wrong)?, 0),
        Err(HandshakeError::WrongIndex { .. })
    ));
    let est = ini.handle_response(&response_of(&response)?, 0)?;
    let finish = est.finish.clone().ok_or("no Finish to send")?;

    for i in 8..finish.len() {
        let mut bad = finish.to_vec();
        bad[i] ^= 0x01;
        assert_eq!(
            res.handle_finish(&finish_of(&bad)?).unwrap_err(),
            HandshakeError::Decrypt,
            "byte {i}"
        );
    }
    let est_b = res.handle_finish(&finish_of(&finish)?)?;
    let mut p = Pair { a: est, b: est_b };
    assert_working(&mut p)?;
    // Completed: further messages are refused.
    assert_eq!(
        res.handle_finish(&finish_of(&finish)?).unwrap_err(),
        HandshakeError::WrongState
    );
    Ok(())
}

#[test]
fn data_attacks_are_rejected_and_channel_keeps_working() -> TestResult {
    let mut p = handshake(&Identity::generate(), &Identity::generate())?;
    let good = seal(&mut p.a.channel, b"the kcp datagram")?;

    // Bit flips anywhere.
    for i in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            let err = open(&mut p.b.channel, &bad).unwrap_err();
            match i {
                0..=3 => assert!(
                    matches!(err, ChannelError::Packet(_) | ChannelError::NotData),
                    "{i}: {err:?}"
                ),
                4..=7 => assert!(
                    matches!(
                        err,
                        ChannelError::WrongIndex { .. } | ChannelError::Packet(_)
                    ),
                    "{i}: {err:?}"
                ),
                _ => assert_eq!(err, ChannelError::Decrypt, "byte {i}"),
            }
        }
    }
    // Truncations.
    for cut in 0..good.len() {
        let err = open(&mut p.b.channel, &good[..cut]).unwrap_err();
        assert!(
            matches!(err, ChannelError::Packet(_) | ChannelError::Decrypt),
            "{cut}: {err:?}"
        );
    }
    // An extended datagram does not authenticate either.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(open(&mut p.b.channel, &long), Err(ChannelError::Decrypt));
    // Random ciphertext under a valid header.
    for n in [16usize, 17, 100, 1400] {
        let mut random = vec![0xE4, 0, 0, 0];
        random.extend_from_slice(&p.b.channel.local_index().to_le_bytes());
        random.extend_from_slice(&rand::random::<u64>().to_le_bytes());
        random.extend((0..n).map(|_| rand::random::<u8>()));
        assert_eq!(open(&mut p.b.channel, &random), Err(ChannelError::Decrypt));
    }
    // Handshake packets are not Data.
    let reject = RejectPacket {
        reason: RejectReason::Refused,
    }
    .encode();
    assert_eq!(open(&mut p.b.channel, &reject), Err(ChannelError::NotData));
    // None of that moved the window: the genuine datagram opens once.
    assert_eq!(p.b.channel.highest_received(), None);
    assert_eq!(open(&mut p.b.channel, &good)?, b"the kcp datagram");
    assert_eq!(
        open(&mut p.b.channel, &good),
        Err(ChannelError::Replayed(0))
    );
    assert_working(&mut p)?;
    Ok(())
}

#[test]
fn reordering_inside_window_and_too_old() -> TestResult {
    let mut p = handshake(&Identity::generate(), &Identity::generate())?;
    let sealed: Vec<Vec<u8>> = (0..ReplayWindow::WINDOW + 51)
        .map(|i| seal(&mut p.a.channel, &i.to_le_bytes()))
        .collect::<TestResult<_>>()?;
    // Deliver 0..50 in reverse: all accepted.
    for i in (0..50).rev() {
        assert_eq!(
            open(&mut p.b.channel, &sealed[i])?,
            (i as u64).to_le_bytes()
        );
    }
    // Duplicates of them rejected.
    for d in &sealed[..50] {
        assert!(matches!(
            open(&mut p.b.channel, d),
            Err(ChannelError::Replayed(_))
        ));
    }
    // Jump to the newest; 50 is now exactly too old (newest - 50 >= WINDOW).
    let last = sealed.len() - 1;
    assert!(open(&mut p.b.channel, &sealed[last]).is_ok());
    assert_eq!(
        open(&mut p.b.channel, &sealed[50]),
        Err(ChannelError::TooOld(50))
    );
    // Inside the window, still accepted out of order.
    assert!(open(&mut p.b.channel, &sealed[last - 1]).is_ok());
    assert!(open(
        &mut p.b.channel,
        &sealed[last - ReplayWindow::WINDOW as usize + 1]
    )
    .is_ok());
    assert_working(&mut p)?;
    Ok(())
}

#[test]
fn send_limit_needs_rekey() -> TestResult {
    let mut p = handshake(&Identity::generate(), &Identity::generate())?;
    assert_eq!(p.a.channel.send_limit(), DEFAULT_SEND_LIMIT);
    p.a.channel.set_send_limit(3);
    let mut out = Vec::new();
    for _ in 0..3 {
        p.a.channel.seal(b"x", &mut out)?;
    }
    assert_eq!(
        p.a.channel.seal(b"x", &mut out),
        Err(ChannelError::NeedsRekey)
    );
    assert!(out.is_empty());
    assert_eq!(p.a.channel.sent(), 3);
    p.a.channel.set_send_limit(u64::MAX);
    assert_eq!(p.a.channel.send_limit(), DEFAULT_SEND_LIMIT);
    // Too large.
    let huge = vec![0u8; 65_535];
    assert_eq!(
        p.a.channel.seal(&huge, &mut out),
        Err(ChannelError::TooLarge(65_535))
    );
    let max = vec![0u8; 65_535 - 16];
    p.a.channel.seal(&max, &mut out)?;
    assert_eq!(open(&mut p.b.channel, &out)?.len(), max.len());
    Ok(())
}

#[test]
fn seal_append_adds_a_datagram_after_the_bytes_already_there() -> TestResult {
    let mut p = handshake(&Identity::generate(), &Identity::generate())?;
    let mut batch = b"earlier datagram".to_vec();
    p.a.channel.seal_append(b"first", &mut batch)?;
    let first_end = batch.len();
    p.a.channel.seal_append(b"second", &mut batch)?;
    assert_eq!(&batch[..16], b"earlier datagram");
    assert_eq!(open(&mut p.b.channel, &batch[16..first_end])?, b"first");
    assert_eq!(open(&mut p.b.channel, &batch[first_end..])?, b"second");
    // A refused seal leaves the batch and the counter as they were.
    p.a.channel.set_send_limit(2);
    let before = batch.clone();
    assert_eq!(
        p.a.channel.seal_append(b"third", &mut batch),
        Err(ChannelError::NeedsRekey)
    );
    assert_eq!(batch, before);
    assert_eq!(p.a.channel.sent(), 2);
    Ok(())
}

#[test]
fn an_aes_gcm_session_seals_and_opens_both_ways_and_refuses_chachapoly_data() -> TestResult {
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut aes = handshake_with(&a, &b, Cipher::AesGcm)?;
    assert_eq!(aes.a.channel.cipher(), Cipher::AesGcm);
    assert_eq!(aes.b.channel.cipher(), Cipher::AesGcm);
    for len in [0usize, 1, 64, 1400, 8920, 65_535 - 16] {
        let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let d = seal(&mut aes.a.channel, &msg)?;
        assert_eq!(open(&mut aes.b.channel, &d)?, msg);
        let d = seal(&mut aes.b.channel, &msg)?;
        assert_eq!(open(&mut aes.a.channel, &d)?, msg);
    }
    // A ChaCha20-Poly1305 session between the same keys and indices seals
    // under other keys: its datagrams fail to open here, and change nothing.
    let mut chacha = handshake(&a, &b)?;
    assert_eq!(chacha.a.channel.cipher(), Cipher::ChaChaPoly);
    // (A counter the AES-GCM side has not seen yet.)
    let mut foreign = Vec::new();
    for _ in 0..10 {
        foreign = seal(&mut chacha.a.channel, b"hello")?;
    }
    let sent = aes.a.channel.sent();
    assert_eq!(
        open(&mut aes.b.channel, &foreign),
        Err(ChannelError::Decrypt)
    );
    let d = seal(&mut aes.a.channel, b"still")?;
    assert_eq!(open(&mut aes.b.channel, &d)?, b"still");
    assert_eq!(aes.a.channel.sent(), sent + 1);
    Ok(())
}

#[test]
fn an_unanswered_aes_gcm_init_falls_back_to_chachapoly() -> TestResult {
    let (a, b) = (Identity::generate(), Identity::generate());
    let (mut ini, first) =
        Initiator::new(&a, 0x1001, &payload("127.0.0.1:1", b"")?, Cipher::AesGcm, 0)?;
    assert_eq!(first.first(), Some(&0xE7));
    assert_eq!(init_of(&first)?.cipher, Cipher::AesGcm);
    // The second send is the same AES-GCM Init.
    assert_eq!(ini.handle_timeout(200), Some(first.clone()));
    assert_eq!(ini.cipher(), Cipher::AesGcm);
    // After AES_GCM_UNANSWERED_LIMIT unanswered sends: a ChaCha20-Poly1305
    // Init under the same index, with a new ephemeral key.
    assert_eq!(AES_GCM_UNANSWERED_LIMIT, 2);
    let fallback = ini.handle_timeout(600).ok_or("fallback Init")?;
    assert_eq!(ini.cipher(), Cipher::ChaChaPoly);
    let parsed = init_of(&fallback)?;
    assert_eq!(parsed.cipher, Cipher::ChaChaPoly);
    assert_eq!(parsed.sender_index, 0x1001);
    assert_ne!(parsed.noise, init_of(&first)?.noise);
    assert_eq!(ini.attempts(), 3);
    // It keeps being the one retransmitted, and a responder that answers
    // it (an old node answers only 0xE1) completes a ChaCha20-Poly1305
    // session.
    assert_eq!(ini.handle_timeout(1400), Some(fallback.clone()));
    let (mut res, response) = Responder::new(
        &b,
        0x2002,
        &init_of(&fallback)?,
        &payload("127.0.0.1:2", b"")?,
        1450,
    )?;
    let mut est_i = ini.handle_response(&response_of(&response)?, 1460)?;
    let mut est_r = res.handle_finish(&finish_of(&est_i.finish.clone().ok_or("Finish")?)?)?;
    assert_eq!(est_i.channel.cipher(), Cipher::ChaChaPoly);
    assert_eq!(est_r.channel.cipher(), Cipher::ChaChaPoly);
    let d = seal(&mut est_i.channel, b"hello")?;
    assert_eq!(open(&mut est_r.channel, &d)?, b"hello");
    // The total timeout still counts from the first Init.
    let (mut late, _) =
        Initiator::new(&a, 0x1003, &payload("127.0.0.1:1", b"")?, Cipher::AesGcm, 0)?;
    let mut now = 0;
    while let Some(t) = late.poll_timeout() {
        if late.is_expired(t) {
            break;
        }
        now = t;
        late.handle_timeout(t);
    }
    assert!(now < HandshakeConfig::default().timeout_ms);
    assert_eq!(late.cipher(), Cipher::ChaChaPoly);
    Ok(())
}

#[test]
fn an_aes_gcm_init_that_was_answered_never_falls_back() -> TestResult {
    let (mut ini, first) = Initiator::new(
        &Identity::generate(),
        0x1001,
        &payload("127.0.0.1:1", b"")?,
        Cipher::AesGcm,
        0,
    )?;
    // The responder asked for a cookie: it speaks AES-GCM.
    let with_cookie = ini.with_cookie([9; COOKIE_LEN], 100);
    assert_eq!(init_of(&with_cookie)?.cipher, Cipher::AesGcm);
    assert_eq!(init_of(&with_cookie)?.noise, init_of(&first)?.noise);
    let mut now = 100;
    while let Some(t) = ini.poll_timeout() {
        if ini.is_expired(t) {
            break;
        }
        now = t;
        if let Some(again) = ini.handle_timeout(t) {
            assert_eq!(again, with_cookie);
        }
    }
    assert!(now > 600);
    assert_eq!(ini.cipher(), Cipher::AesGcm);
    Ok(())
}

#[test]
fn lost_init_and_response_are_retransmitted() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let (mut ini, _lost_init) = initiator(&a, 0x1001, "127.0.0.1:1", 1000)?;
    assert_eq!(ini.poll_timeout(), Some(1200));
    assert_eq!(ini.handle_timeout(1199), None);
    let init = ini.handle_timeout(1200).ok_or("retransmit")?;
    assert_eq!(ini.poll_timeout(), Some(1600));
    assert_eq!(ini.attempts(), 2);
    let (mut res, _lost_response) = Responder::new(
        &b,
        0x2002,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        1250,
    )?;
    // The initiator retransmits again; the responder answers the duplicate
    // Init with the same Response instead of starting over.
    let init2 = ini.handle_timeout(1600).ok_or("retransmit")?;
    assert_eq!(init2, init);
    let response = res
        .answer_duplicate_init(&init_of(&init2)?)
        .ok_or("same response")?;
    // ... which is also what its own timer sends.
    assert_eq!(res.poll_timeout(), Some(1450));
    assert_eq!(res.handle_timeout(1450), Some(response.clone()));
    let est_a = ini.handle_response(&response_of(&response)?, 1700)?;
    assert_eq!(ini.poll_timeout(), None);
    assert_eq!(ini.handle_timeout(100_000), None);
    let est_b = res.handle_finish(&finish_of(
        est_a.finish.as_ref().ok_or("no Finish to send")?,
    )?)?;
    assert_eq!(res.answer_duplicate_init(&init_of(&init2)?), None);
    let mut p = Pair { a: est_a, b: est_b };
    assert_working(&mut p)?;
    Ok(())
}

#[test]
fn lost_finish_is_repaired_by_duplicate_response() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let (mut ini, init) = initiator(&a, 0x1001, "127.0.0.1:1", 0)?;
    let (mut res, response) = Responder::new(
        &b,
        0x2002,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        0,
    )?;
    let mut est_a = ini.handle_response(&response_of(&response)?, 10)?;
    let finish = est_a.finish.clone().ok_or("no Finish to send")?;
    // Finish lost. The initiator already sends Data, which the responder
    // cannot open yet (it has no channel; the driver drops it).
    let _early = seal(&mut est_a.channel, b"early")?;
    // The responder retransmits its Response; the initiator's channel
    // answers with the very same Finish.
    let again = res.handle_timeout(200).ok_or("retransmit")?;
    assert_eq!(again, response);
    assert_eq!(
        est_a.channel.answer_duplicate_response(&again),
        Some(finish.clone())
    );
    // A different (forged) Response is not answered.
    let mut forged = again.to_vec();
    forged[20] ^= 1;
    assert_eq!(est_a.channel.answer_duplicate_response(&forged), None);
    let mut est_b = res.handle_finish(&finish_of(&finish)?)?;
    // After the first Data from the responder, duplicates are not answered.
    let d = seal(&mut est_b.channel, b"hi")?;
    assert_eq!(open(&mut est_a.channel, &d)?, b"hi");
    assert_eq!(est_a.channel.answer_duplicate_response(&again), None);
    // Early data was lost; later data flows.
    let mut p = Pair { a: est_a, b: est_b };
    assert_working(&mut p)?;
    Ok(())
}

#[test]
fn handshake_expires() -> TestResult {
    let a = Identity::generate();
    let (mut ini, _) = initiator(&a, 0x1001, "127.0.0.1:1", 0)?;
    let mut sent_at = vec![0];
    let mut now = 0;
    while let Some(t) = ini.poll_timeout() {
        if ini.is_expired(t) {
            now = t;
            break;
        }
        assert!(ini.handle_timeout(t).is_some());
        sent_at.push(t);
    }
    assert!(ini.is_expired(now));
    assert_eq!(now, 5_000);
    assert_eq!(sent_at, vec![0, 200, 600, 1400, 3000, 4600]);
    assert_eq!(ini.handle_timeout(now), None);

    // With a small attempt budget, attempts run out first.
    #[allow(clippy::field_reassign_with_default)] // non_exhaustive: no literal
    let config = {
        let mut c = HandshakeConfig::default();
        c.max_attempts = 2;
        c
    };
    let (ini, _) = initiator(&a, 0x1001, "127.0.0.1:1", 0)?;
    let mut ini = ini.with_config(config);
    assert!(ini.handle_timeout(200).is_some());
    assert_eq!(ini.poll_timeout(), Some(600));
    assert!(!ini.is_expired(599));
    assert!(ini.is_expired(600));
    assert_eq!(ini.handle_timeout(600), None);

    // Responders expire too.
    let (_, init) = initiator(&a, 0x1001, "127.0.0.1:1", 0)?;
    let (res, _) = Responder::new(
        &Identity::generate(),
        0x2002,
        &init_of(&init)?,
        &payload("127.0.0.1:2", b"")?,
        0,
    )?;
    assert!(!res.is_expired(4_999));
    assert!(res.is_expired(5_000));
    Ok(())
}

#[test]
fn cookie_flow() -> TestResult {
    let a = Identity::generate();
    let b = Identity::generate();
    let a_addr = addr("192.0.2.7:7001")?;
    let mut jar = CookieJar::new();
    let (mut ini, init) = initiator(&a, 0x1001, "192.0.2.7:7001", 0)?;
    let first = init_of(&init)?;
    assert_eq!(first.cookie, [0; COOKIE_LEN]);
    // Under load: the Init's cookie does not verify; answer with a Cookie.
    assert!(!jar.verify(a_addr, &first.cookie, 10));
    let cookie = CookiePacket {
        receiver_index: first.sender_index,
        cookie: jar.cookie(a_addr, 10),
    }
    .encode();
    let Packet::Cookie(c) = packet::parse(&cookie)? else {
        return Err("not a Cookie".into());
    };
    assert_eq!(c.receiver_index, ini.local_index());
    let init2 = ini.with_cookie(c.cookie, 20);
    let second = init_of(&init2)?;
    assert_eq!(second.noise, first.noise, "same ephemeral key");
    assert!(jar.verify(a_addr, &second.cookie, 30));
    // Retransmissions carry the cookie, on a fresh timer.
    assert_eq!(ini.poll_timeout(), Some(220));
    assert_eq!(ini.handle_timeout(220), Some(init2.clone()));
    let (_res, response) = Responder::new(&b, 0x2002, &second, &payload("127.0.0.1:2", b"")?, 30)?;
    assert!(ini.handle_response(&response_of(&response)?, 40).is_ok());
    Ok(())
}

#[test]
fn reject_and_cookie_packets_round_trip() {
    let r = RejectPacket {
        reason: RejectReason::PlaintextOnly,
    };
    assert_eq!(r.encode().as_ref(), &[0xE6, 0, 0, 0, 2]);
    assert_eq!(packet::parse(&r.encode()), Ok(Packet::Reject(r)));
}

// ---------------------------------------------------------------------------
// Test vectors

/// The fixed inputs of the vectors (documented in docs/wire-format.md §7.9).
struct VectorInputs;

impl VectorInputs {
    const INITIATOR_INDEX: u32 = 0x1122_3344;
    const RESPONDER_INDEX: u32 = 0x5566_7788;
    const NOW: u64 = 0;
}

/// The handshake and `Data` vectors of one suite: the initiator (for the
/// cookie vector), then `Init`, `Response`, `Finish` and `Data` each way.
fn suite_vectors(cipher: Cipher) -> TestResult<(Initiator, [Vec<u8>; 5])> {
    let initiator = Identity::from_private_bytes(seq_key(0x00));
    let responder = Identity::from_private_bytes(seq_key(0x20));
    let (ie, re) = (seq_key(0x40), seq_key(0x60));
    let (mut ini, init) = Initiator::new_inner(
        &initiator,
        VectorInputs::INITIATOR_INDEX,
        &payload("127.0.0.1:7001", b"")?,
        cipher,
        VectorInputs::NOW,
        Some(&ie),
    )?;
    let (mut res, response) = Responder::new_inner(
        &responder,
        VectorInputs::RESPONDER_INDEX,
        &init_of(&init)?,
        &payload("127.0.0.1:7002", b"gladius")?,
        VectorInputs::NOW,
        Some(&re),
    )?;
    let mut est_i = ini.handle_response(&response_of(&response)?, VectorInputs::NOW)?;
    let finish = est_i.finish.clone().ok_or("no Finish to send")?;
    let mut est_r = res.handle_finish(&finish_of(&finish)?)?;
    assert_eq!(est_r.remote_static, initiator.public_key());
    assert_eq!(est_i.remote_static, responder.public_key());
    let data_i = seal(&mut est_i.channel, b"hello")?;
    assert_eq!(open(&mut est_r.channel, &data_i)?, b"hello");
    let data_r = seal(&mut est_r.channel, b"hello")?;
    assert_eq!(open(&mut est_i.channel, &data_r)?, b"hello");
    assert_eq!(est_i.channel.cipher(), cipher);
    assert_eq!(est_r.channel.cipher(), cipher);
    Ok((
        ini,
        [
            init.to_vec(),
            response.to_vec(),
            finish.to_vec(),
            data_i,
            data_r,
        ],
    ))
}

/// Compute every vector: (name, bytes).
fn compute_vectors() -> TestResult<Vec<(&'static str, Vec<u8>)>> {
    let initiator = Identity::from_private_bytes(seq_key(0x00));
    let responder = Identity::from_private_bytes(seq_key(0x20));
    let (mut ini, [init, response, finish, data_i, data_r]) = suite_vectors(Cipher::ChaChaPoly)?;
    let (_, [aes_init, aes_response, aes_finish, aes_data_i, aes_data_r]) =
        suite_vectors(Cipher::AesGcm)?;
    let mut jar = CookieJar::with_secret(seq_key(0x80), VectorInputs::NOW);
    let cookie = jar.cookie(addr("127.0.0.1:7001")?, VectorInputs::NOW);
    let cookie_packet = CookiePacket {
        receiver_index: VectorInputs::INITIATOR_INDEX,
        cookie,
    }
    .encode();
    let init_cookie = ini.with_cookie(cookie, VectorInputs::NOW);
    let reject = RejectPacket {
        reason: RejectReason::RequiresEncryption,
    }
    .encode();
    Ok(vec![
        (
            "initiator-public-key",
            initiator.public_key().as_bytes().to_vec(),
        ),
        (
            "responder-public-key",
            responder.public_key().as_bytes().to_vec(),
        ),
        ("init", init),
        ("response", response),
        ("finish", finish),
        ("data-initiator-to-responder", data_i),
        ("data-responder-to-initiator", data_r),
        ("cookie", cookie_packet.to_vec()),
        ("init-with-cookie", init_cookie.to_vec()),
        ("reject", reject.to_vec()),
        ("aesgcm-init", aes_init),
        ("aesgcm-response", aes_response),
        ("aesgcm-finish", aes_finish),
        ("aesgcm-data-initiator-to-responder", aes_data_i),
        ("aesgcm-data-responder-to-initiator", aes_data_r),
    ])
}

/// Every `sealed-vector: NAME` line of the document with the bytes of the ```hex
/// block that follows it.
fn doc_vectors(md: &str) -> TestResult<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("sealed-vector:") else {
            continue;
        };
        let name = name.trim().trim_matches('`').to_owned();
        let mut hex = String::new();
        let mut in_block = false;
        for l in lines.by_ref() {
            if !in_block {
                if l.trim() == "```hex" {
                    in_block = true;
                } else {
                    assert!(
                        l.trim().is_empty(),
                        "vector {name}: text before the hex block"
                    );
                }
                continue;
            }
            if l.trim() == "```" {
                break;
            }
            hex.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        assert!(in_block, "vector {name}: no ```hex block");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        assert!(
            out.insert(name.clone(), bytes).is_none(),
            "duplicate {name}"
        );
    }
    Ok(out)
}

fn hex_block(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(super::to_hex)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vectors_match_docs() -> TestResult {
    let doc = doc_vectors(ENCRYPTION_MD)?;
    let computed = compute_vectors()?;
    for (name, bytes) in &computed {
        let expected = doc
            .get(*name)
            .ok_or_else(|| format!("vector {name} missing from docs/wire-format.md"))?;
        assert_eq!(
            super::to_hex(expected),
            super::to_hex(bytes),
            "vector {name} differs (run `cargo test -p gladius-p2p --lib print_vectors -- --ignored --nocapture`)"
        );
    }
    assert_eq!(doc.len(), computed.len(), "extra vectors in the document");
    // The documented bytes also parse as what they claim to be.
    for (name, bytes) in &doc {
        if name.ends_with("public-key") {
            continue;
        }
        assert!(packet::parse(bytes).is_ok(), "{name}");
        assert!(matches!(classify(bytes), Kind::Encrypted(_)), "{name}");
    }
    Ok(())
}

/// Prints the vectors in the document's format.
#[test]
#[ignore]
fn print_vectors() -> TestResult {
    for (name, bytes) in compute_vectors()? {
        println!(
            "sealed-vector: {name}\n\n```hex\n{}\n```\n",
            hex_block(&bytes)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Robustness

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        thread_local! {
            static PAIR: std::cell::RefCell<Result<Pair, String>> = std::cell::RefCell::new(
                handshake(&Identity::generate(), &Identity::generate()).map_err(|e| e.to_string()),
            );
        }
        PAIR.with(|p| {
            let mut p = p.borrow_mut();
            let p = p.as_mut().map_err(|e| TestCaseError::fail(e.clone()))?;
            let mut out = Vec::new();
            prop_assert!(p.b.channel.open(&bytes, &mut out).is_err());
            prop_assert!(out.is_empty());
            // The same bytes under a valid Data header and our index.
            let mut framed = Vec::new();
            DataPacket {
                receiver_index: p.b.channel.local_index(),
                counter: u64::from_le_bytes(std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0))),
                ciphertext: &bytes,
            }
            .encode_into(&mut framed);
            prop_assert!(p.b.channel.open(&framed, &mut out).is_err());
            prop_assert!(out.is_empty());
            Ok(())
        })?;
    }

    #[test]
    fn handshake_entry_points_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let id = Identity::from_private_bytes([9; 32]);
        let ours = payload("127.0.0.1:1", b"").map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(Packet::Init(init)) = packet::parse(&bytes) {
            let _ = Responder::new(&id, 1, &init, &ours, 0);
        }
        let (mut ini, _) = Initiator::new(&id, 1, &ours, Cipher::ChaChaPoly, 0)?;
        let forged = ResponsePacket { sender_index: 2, receiver_index: 1, noise: &bytes };
        prop_assert!(ini.handle_response(&forged, 0).is_err());
        prop_assert!(ini.poll_timeout().is_some(), "a forged response must not end the handshake");
    }
}

/// Rough costs; run with
/// `cargo test --release -p gladius-p2p --lib crypto::tests::bench_costs -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_costs() -> TestResult {
    use std::time::Instant;
    let a = Identity::generate();
    let b = Identity::generate();
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(handshake(&a, &b)?);
    }
    let per = start.elapsed() / n;
    println!("full handshake (both sides, in memory): {per:?}");

    let mut p = handshake(&a, &b)?;
    let msg = vec![0x5au8; 1400];
    let mut sealed = Vec::with_capacity(1500);
    let mut opened = Vec::with_capacity(1500);
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        p.a.channel.seal(&msg, &mut sealed)?;
        p.b.channel.open(&sealed, &mut opened)?;
    }
    let per = start.elapsed() / n;
    println!("seal + open of 1400 bytes: {per:?}");
    Ok(())
}
