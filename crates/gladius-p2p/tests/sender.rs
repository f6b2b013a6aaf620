//! `Network::sender`: a stream of messages to one peer with no round trip
//! to the driver per message, over real UDP on loopback with real crypto.
//! Every accepted message arrives once, in order; a full budget is
//! reported and waited out; a peer that goes away closes the sender and
//! what it held is counted, not lost silently.

mod common;

use std::time::Duration;

use common::*;
use gladius_p2p::{Config, NetworkError, PeerSendError};

const LONG: Duration = Duration::from_secs(20);

/// `a` has added `b` (with `config`), and both see the session up.
async fn pair(
    config: Config,
) -> (
    (gladius_p2p::Network, std::net::SocketAddr, Recorder),
    (gladius_p2p::Network, std::net::SocketAddr, Recorder),
) {
    let a = node_with(config.clone()).await;
    let b = node_with(config).await;
    a.0.add(b.1).await.unwrap();
    a.0.wait_connected(b.1, LONG).await.unwrap();
    b.0.wait_connected(a.1, LONG).await.unwrap();
    (a, b)
}

/// A 64-byte body that starts with `i` in ten digits.
fn numbered(i: u64) -> gladius_p2p::Message {
    text_msg("s", format!("{i:010}{}", "x".repeat(54)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_a_sender_accepts_arrives_once_in_order() {
    let ((a, _, _), (b, b_addr, rec)) = pair(test_config()).await;
    let to_b = a.sender(b_addr).await.unwrap();
    assert_eq!(to_b.peer(), b_addr);
    const N: u64 = 20_000;
    for i in 0..N {
        to_b.send(numbered(i)).await.unwrap();
    }
    wait_for(LONG, "every message", || async {
        rec.count_type("s") >= N as usize
    })
    .await;
    let got = prefix_numbers(rec.bodies_of_type("s"), 10);
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(to_b.dropped(), 0);
    assert!(!to_b.is_closed());
    b.close().await.unwrap();
}

/// On a current-thread runtime the driver runs only when the test yields,
/// so `try_send` fills the budget deterministically.
#[tokio::test]
async fn a_full_budget_is_reported_and_send_waits_for_room() {
    let budget = 64 * 1024;
    let config = test_config()
        .with_max_message_size(8 * 1024)
        .with_peer_queue_bytes(budget);
    let ((a, _, _), (_b, b_addr, rec)) = pair(config).await;
    let to_b = a.sender(b_addr).await.unwrap();
    let mut accepted = 0u64;
    let refused = loop {
        match to_b.try_send(numbered(accepted)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    // Each message reserves its largest frame (64 + 529 bytes).
    assert_eq!(accepted, (budget / (64 + 529)) as u64);
    let PeerSendError::Full(back) = refused else {
        panic!("expected Full, got {refused:?}");
    };
    assert_eq!(&back.body()[..10], format!("{accepted:010}").as_bytes());
    // `send` waits for the driver to take what is queued, then accepts.
    to_b.send(back).await.unwrap();
    accepted += 1;
    for i in accepted..accepted + 500 {
        to_b.send(numbered(i)).await.unwrap();
    }
    accepted += 500;
    wait_for(LONG, "every message", || async {
        rec.count_type("s") >= accepted as usize
    })
    .await;
    let got = prefix_numbers(rec.bodies_of_type("s"), 10);
    assert_eq!(got, (0..accepted).collect::<Vec<_>>());
    assert_eq!(to_b.dropped(), 0);
}

#[tokio::test]
async fn a_peer_that_is_forgotten_closes_the_sender_and_what_it_held_is_counted() {
    let ((a, _, _), (_b, b_addr, _rec)) = pair(test_config()).await;
    let to_b = a.sender(b_addr).await.unwrap();
    let clone = to_b.clone();
    const HELD: u64 = 100;
    for i in 0..HELD {
        to_b.try_send(numbered(i)).unwrap();
    }
    // The delete is a command, which the driver takes before the pushes
    // waiting on their channel: all 100 are still held when the peer goes.
    a.delete(b_addr).await.unwrap();
    wait_for(LONG, "the sender to close", || async { to_b.is_closed() }).await;
    // Every accepted message the driver had not queued is counted.
    wait_for(LONG, "the held messages counted", || async {
        to_b.dropped() == HELD
    })
    .await;
    assert_eq!(clone.dropped(), HELD, "clones share the count");
    match to_b.try_send(numbered(HELD)) {
        Err(PeerSendError::Closed(back)) => {
            assert_eq!(&back.body()[..10], format!("{HELD:010}").as_bytes())
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(
        clone.send(numbered(0)).await,
        Err(PeerSendError::Closed(_))
    ));
    // The peer is unknown now: no new sender either.
    assert!(matches!(
        a.sender(b_addr).await,
        Err(NetworkError::UnknownPeer(p)) if p == b_addr
    ));
}

#[tokio::test]
async fn a_sender_refuses_oversized_bodies_and_dies_with_the_node() {
    let ((a, _, _), (_b, b_addr, _rec)) = pair(test_config()).await;
    let to_b = a.sender(b_addr).await.unwrap();
    let max = Config::default().max_message_size();
    let big = gladius_p2p::Message::new("s", vec![0u8; max + 1]).unwrap();
    assert!(matches!(
        to_b.try_send(big),
        Err(PeerSendError::TooLarge { size, max: m }) if size == max + 1 && m == max
    ));
    for i in 0..10 {
        to_b.try_send(numbered(i)).unwrap();
    }
    a.close().await.unwrap();
    assert!(to_b.is_closed());
    assert!(matches!(
        to_b.try_send(numbered(10)),
        Err(PeerSendError::Closed(_))
    ));
}

/// A plugin that takes messages in batches (`Plugin::new_messages`) gets
/// every message once, in order, and none through `new_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_takes_batches_gets_every_message_once_in_order() {
    use std::sync::{Arc, Mutex};

    use gladius_p2p::{async_trait, Network, Plugin, Received};

    #[derive(Default, Clone)]
    struct Batches {
        seen: Arc<Mutex<Vec<u64>>>,
        batches: Arc<Mutex<usize>>,
        one_by_one: Arc<Mutex<usize>>,
    }
    #[async_trait]
    impl Plugin for Batches {
        fn name(&self) -> &str {
            "batches"
        }
        async fn new_message(&self, _net: &Network, _msg: &Received) {
            *self.one_by_one.lock().unwrap() += 1;
        }
        async fn new_messages(&self, _net: &Network, msgs: &[Arc<Received>]) -> bool {
            *self.batches.lock().unwrap() += 1;
            let mut seen = self.seen.lock().unwrap();
            for m in msgs {
                let body = m.message().body();
                seen.push(std::str::from_utf8(&body[..10]).unwrap().parse().unwrap());
            }
            true
        }
    }

    let ((a, _, _), (b, b_addr, rec)) = pair(test_config()).await;
    let plugin = Batches::default();
    b.register_plugin(plugin.clone()).await.unwrap();
    let to_b = a.sender(b_addr).await.unwrap();
    const N: u64 = 5_020;
    for i in 0..5_000 {
        to_b.send(numbered(i)).await.unwrap();
    }
    // Spaced out, each arrives alone (a batch of one): it must still go
    // to `new_messages`.
    for i in 5_000..N {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        to_b.send(numbered(i)).await.unwrap();
    }
    wait_for(LONG, "every message", || async {
        plugin.seen.lock().unwrap().len() >= N as usize && rec.count_type("s") >= N as usize
    })
    .await;
    assert_eq!(*plugin.seen.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(*plugin.one_by_one.lock().unwrap(), 0);
    let batches = *plugin.batches.lock().unwrap();
    assert!((1..=N as usize).contains(&batches), "{batches} batches");
    // The recorder beside it (default hooks) got each message on its own.
    assert_eq!(
        prefix_numbers(rec.bodies_of_type("s"), 10),
        (0..N).collect::<Vec<_>>()
    );
}
