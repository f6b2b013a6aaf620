//! Fuzz the encrypted-mode entry points: the packet parser and classifier,
//! a live `SecureChannel::open`, and the handshake steps that take packets
//! from the network (`Responder::new`, `Initiator::handle_response`,
//! `Responder::handle_finish`). None may panic; nothing forged may open.
//!
//! Input layout: the first byte picks the target; the rest is the datagram
//! (or, framed under a valid header, the noise message / ciphertext).

#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;

use gladius_p2p::crypto::packet::{
    self, DataPacket, FinishPacket, InitPacket, Packet, ResponsePacket,
};
use gladius_p2p::crypto::{
    classify, Cipher, Established, HandshakePayload, Identity, Initiator, Kind, Responder,
};
use libfuzzer_sys::fuzz_target;

fn payload(port: u16) -> HandshakePayload {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    HandshakePayload::new(addr, Default::default())
}

fn identity(seed: u8) -> Identity {
    Identity::from_private_bytes([seed; 32])
}

/// An established pair (initiator, responder), made with the public API.
fn pair() -> (Established, Established) {
    let (mut ini, init) = Initiator::new(
        &identity(1),
        0x0101_0101,
        &payload(1),
        Cipher::ChaChaPoly,
        0,
    )
    .unwrap();
    let Ok(Packet::Init(init)) = packet::parse(&init) else {
        unreachable!()
    };
    let (mut res, response) =
        Responder::new(&identity(2), 0x0202_0202, &init, &payload(2), 0).unwrap();
    let Ok(Packet::Response(response)) = packet::parse(&response) else {
        unreachable!()
    };
    let a = ini.handle_response(&response, 0).unwrap();
    let finish = a.finish.clone().unwrap();
    let Ok(Packet::Finish(finish)) = packet::parse(&finish) else {
        unreachable!()
    };
    let b = res.handle_finish(&finish).unwrap();
    (a, b)
}

thread_local! {
    static PAIR: RefCell<(Established, Established)> = RefCell::new(pair());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };

    // Parser and classifier agree, and never panic.
    let kind = classify(input);
    if let Ok(p) = packet::parse(input) {
        assert!(
            matches!(kind, Kind::Encrypted(_)),
            "{p:?} classified {kind:?}"
        );
    }

    match mode % 4 {
        0 => PAIR.with(|pair| {
            let (a, b) = &mut *pair.borrow_mut();
            let mut out = Vec::new();
            // Raw bytes: a forgery, never opens.
            assert!(b.channel.open(input, &mut out).is_err());
            assert!(out.is_empty());
            // The same bytes as ciphertext under a valid header.
            let counter = input
                .first_chunk::<8>()
                .map(|c| u64::from_le_bytes(*c))
                .unwrap_or(0);
            let mut framed = Vec::new();
            DataPacket {
                receiver_index: b.channel.local_index(),
                counter,
                ciphertext: input,
            }
            .encode_into(&mut framed);
            assert!(b.channel.open(&framed, &mut out).is_err());
            assert!(out.is_empty());
            // The genuine path: seal and open round-trips, once.
            let mut sealed = Vec::new();
            if a.channel.seal(input, &mut sealed).is_ok() {
                b.channel.open(&sealed, &mut out).unwrap();
                assert_eq!(out, input);
                assert!(b.channel.open(&sealed, &mut out).is_err());
            }
        }),
        1 => {
            // Responder::new on a parsed Init, and on the input as noise 1.
            let id = identity(3);
            if let Ok(Packet::Init(init)) = packet::parse(input) {
                let _ = Responder::new(&id, 7, &init, &payload(3), 0);
            }
            let init = InitPacket {
                sender_index: 9,
                noise: input,
                cookie: [0; 16],
                cipher: if input.len() % 2 == 0 {
                    Cipher::AesGcm
                } else {
                    Cipher::ChaChaPoly
                },
            };
            let _ = Responder::new(&id, 7, &init, &payload(3), 0);
        }
        2 => {
            // A pending initiator fed forged Responses keeps waiting.
            let (mut ini, _) =
                Initiator::new(&identity(4), 7, &payload(4), Cipher::AesGcm, 0).unwrap();
            if let Ok(Packet::Response(r)) = packet::parse(input) {
                let _ = ini.handle_response(&r, 0);
            }
            let forged = ResponsePacket {
                sender_index: 9,
                receiver_index: 7,
                noise: input,
            };
            assert!(ini.handle_response(&forged, 0).is_err());
        }
        _ => {
            // A pending responder fed forged Finishes keeps waiting.
            let (_, init) =
                Initiator::new(&identity(5), 9, &payload(5), Cipher::AesGcm, 0).unwrap();
            let Ok(Packet::Init(init)) = packet::parse(&init) else {
                unreachable!()
            };
            let (mut res, _) = Responder::new(&identity(6), 7, &init, &payload(6), 0).unwrap();
            if let Ok(Packet::Finish(f)) = packet::parse(input) {
                let _ = res.handle_finish(&f);
            }
            let forged = FinishPacket {
                receiver_index: 7,
                noise: input,
            };
            assert!(res.handle_finish(&forged).is_err());
            assert!(res.poll_timeout().is_some());
        }
    }
});
