//! Every API method over real UDP sockets on loopback.

mod common;

use std::time::Duration;

use common::*;
use gladius_p2p::{Message, NetworkError, RequestError, SendFailure};

fn msg(t: &str, body: &str) -> Message {
    Message::new(t, body.to_owned()).unwrap()
}

#[tokio::test]
async fn two_nodes_exchange_messages_in_order() {
    let (a, a_addr, _ra) = node().await;
    let (b, b_addr, rb) = node().await;
    a.add(b_addr).await.unwrap();
    for i in 0..200 {
        let report = a.broadcast(msg("seq", &i.to_string())).await.unwrap();
        assert_eq!(report.queued, vec![b_addr]);
    }
    wait_for(Duration::from_secs(10), "200 messages at b", || async {
        rb.bodies_of_type("seq").len() >= 200
    })
    .await;
    let got: Vec<String> = rb
        .bodies_of_type("seq")
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every message once, in order");
    // Sender is the authenticated advertised address; b did not add a, so
    // a is not writable at b.
    let first = rb.events().into_iter().find_map(|e| match e {
        Event::Message {
            sender, writable, ..
        } => Some((sender, writable)),
        _ => None,
    });
    assert_eq!(first, Some((Some(a_addr), false)));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn request_gets_reply_and_times_out_without_one() {
    let (a, _, _) = node().await;
    let (b, b_addr, _) = node().await;
    a.add(b_addr).await.unwrap();
    let reply = a
        .request(msg("echo", "ping?"), b_addr, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.message().msg_type(), "echo.reply");
    assert_eq!(&reply.message().body()[..], b"ping?");
    assert_eq!(reply.peer(), b_addr);
    // Nobody answers type "silent": the request times out.
    let err = a
        .request(msg("silent", "x"), b_addr, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout(_)), "{err:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A request handler answers in the driver: its reply reaches the
/// requester and the request never reaches the plugins; a handler that
/// declines (`None`) or panics passes the request on to the plugins (the
/// recorder answers "echo"), the panic counted; once removed, it answers
/// nothing more.
#[tokio::test]
async fn request_handler_answers_in_the_driver_or_passes_on() {
    quiet_intentional_panics();
    let (a, _, _) = node().await;
    let (b, b_addr, rb) = node().await;
    let handler = b
        .handle_requests(gladius_p2p::Filter::type_prefix("echo"), |req| {
            match &req.message().body()[..] {
                b"decline" => None,
                b"panic" => panic!("{INTENTIONAL_PANIC}"),
                body => Some(msg("handled", std::str::from_utf8(body).unwrap())),
            }
        })
        .await
        .unwrap();
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    let ask = |body: &'static str| {
        let a = a.clone();
        async move {
            a.request(msg("echo", body), b_addr, Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    let reply = ask("hi").await;
    assert_eq!(reply.message().msg_type(), "handled");
    assert_eq!(&reply.message().body()[..], b"hi");
    assert_eq!(reply.peer(), b_addr);
    assert!(rb.bodies_of_type("echo").is_empty(), "a plugin saw it");
    // Declined, then panicking: the plugin answers.
    assert_eq!(ask("decline").await.message().msg_type(), "echo.reply");
    assert_eq!(ask("panic").await.message().msg_type(), "echo.reply");
    assert_eq!(counters(&b).await.handler_panics, 1);
    assert_eq!(
        rb.bodies_of_type("echo"),
        vec![b"decline".to_vec(), b"panic".to_vec()]
    );
    // Plain messages never reach a handler.
    a.broadcast_to(msg("echo", "plain"), &[b_addr])
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), "the plain message at b", || async {
        rb.bodies_of_type("echo").len() == 3
    })
    .await;
    assert!(b.remove_request_handler(handler).await.unwrap());
    assert!(!b.remove_request_handler(handler).await.unwrap());
    assert_eq!(ask("hi").await.message().msg_type(), "echo.reply");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Messages sent back to back, each awaited, share datagrams: the driver
/// takes the next command before flushing. Also a request/reply round trip
/// costs one datagram each way (the ACK rides with the answer).
#[tokio::test]
async fn small_messages_sent_back_to_back_share_datagrams() {
    let (a, _a_addr, _ra) = node().await;
    let (_b, b_addr, rb) = node().await;
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = counters(&a).await.datagrams_out;
    let n = 1000;
    for i in 0..n {
        let report = a
            .broadcast_to(msg("burst", &i.to_string()), &[b_addr])
            .await
            .unwrap();
        assert_eq!(report.queued, vec![b_addr]);
    }
    wait_for(Duration::from_secs(10), "the burst at b", || async {
        rb.bodies_of_type("burst").len() >= n
    })
    .await;
    let sent = counters(&a).await.datagrams_out - before;
    let got: Vec<String> = rb
        .bodies_of_type("burst")
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every message once, in order");
    // ~60 B frames: a full 1400 B datagram holds about 20. Allow plenty of
    // slack for partial flushes; one datagram per message fails this.
    assert!(sent < n as u64 / 4, "{sent} datagrams for {n} messages");
}

/// A sender whose queue to a peer is full waits for room instead of
/// polling: every message still arrives once and in order, the queue did
/// fill (so the wait was exercised), and a full queue to a peer that no
/// longer acknowledges makes the wait time out rather than hang.
#[tokio::test]
async fn wait_for_room_turns_queue_full_into_a_wait() {
    let small = || {
        test_config()
            .with_max_message_size(16 * 1024)
            .with_peer_queue_bytes(48 * 1024)
    };
    let (a, _a_addr, _ra) = node_with(small()).await;
    let (b, b_addr, rb) = node_with(small()).await;
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;

    let n = 200u64;
    let (mut full, mut i) = (0, 0);
    while i < n {
        let m = Message::new("big", format!("{i:016}").repeat(1000)).unwrap();
        let report = a.broadcast_to(m.clone(), &[b_addr]).await.unwrap();
        if report.all_queued() {
            i += 1;
            continue;
        }
        assert_eq!(report.failed, vec![(b_addr, SendFailure::QueueFull)]);
        full += 1;
        a.wait_for_room(b_addr, &m, Duration::from_secs(10))
            .await
            .expect("room opens as b acknowledges");
    }
    assert!(full > 0, "200 messages of 16 KB never filled a 48 KB queue");
    // One sender: after a wait the room is there, so no message meets a
    // full queue twice (a wait that returned early would spin here).
    assert!(full <= n, "{full} QueueFull reports for {n} messages");
    wait_for(Duration::from_secs(20), "all big messages at b", || async {
        rb.bodies_of_type("big").len() as u64 >= n
    })
    .await;
    let got = prefix_numbers(rb.bodies_of_type("big"), 16);
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "each once, in order");

    // A peer that is gone: fill the queue, then the wait times out.
    b.close().await.unwrap();
    let m = Message::new("big", vec![0u8; 16 * 1024]).unwrap();
    loop {
        let report = a.broadcast_to(m.clone(), &[b_addr]).await.unwrap();
        if !report.all_queued() {
            break;
        }
    }
    let waited = a
        .wait_for_room(b_addr, &m, Duration::from_millis(300))
        .await;
    assert!(
        matches!(
            waited,
            Err(NetworkError::Timeout(_)) | Err(NetworkError::UnknownPeer(_))
        ),
        "{waited:?}"
    );
    let unknown: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(matches!(
        a.wait_for_room(unknown, &m, Duration::from_secs(1)).await,
        Err(NetworkError::UnknownPeer(_))
    ));
}

/// Nodes bound on IPv6 loopback (the batched socket sets other options for
/// IPv6) exchange messages, small and large, once and in order.
#[tokio::test]
async fn ipv6_nodes_exchange_messages() {
    let node6 = || async {
        let net = gladius_p2p::Network::new(test_config()).unwrap();
        let rec = Recorder::default();
        net.register_plugin(rec.clone()).await.unwrap();
        match net.listen("[::1]:0").await {
            Ok(addr) => Some((net, addr, rec)),
            Err(e) => {
                eprintln!("no IPv6 loopback here, skipping: {e}");
                None
            }
        }
    };
    let (Some((a, _a_addr, _ra)), Some((_b, b_addr, rb))) = (node6().await, node6().await) else {
        return;
    };
    assert!(b_addr.is_ipv6());
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    let n = 50;
    for i in 0..n {
        // Every fifth message spans several datagrams (a GSO batch).
        let body = if i % 5 == 0 {
            format!("{i:08}").repeat(2000)
        } else {
            format!("{i:08}")
        };
        let report = a.broadcast_to(msg("v6", &body), &[b_addr]).await.unwrap();
        assert!(report.all_queued());
    }
    wait_for(Duration::from_secs(10), "all v6 messages", || async {
        rb.bodies_of_type("v6").len() >= n
    })
    .await;
    let got = prefix_numbers(rb.bodies_of_type("v6"), 8);
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
}
