//! The batched UDP socket on real loopback sockets: a run of datagrams sent
//! in one call arrives as that many datagrams, each intact, whether the
//! receiver takes them one by one (a plain socket) or as one run (GRO).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::{BatchUdpSocket, DatagramSocket};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// Ten datagrams of 1000 bytes and a short last one of 300, each filled
/// with its own index.
fn run_of_datagrams() -> (Vec<u8>, Vec<Vec<u8>>) {
    let sizes = [vec![1000; 10], vec![300]].concat();
    let datagrams: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![i as u8; n])
        .collect();
    (datagrams.concat(), datagrams)
}

async fn batch_socket() -> BatchUdpSocket {
    BatchUdpSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap()
}

async fn send_run(from: &BatchUdpSocket, to: SocketAddr, buf: &[u8]) {
    let segments = from.max_send_segments();
    assert!(segments >= 1);
    if segments >= 11 {
        poll_fn(|cx| from.poll_send_segments(cx, buf, 1000, to))
            .await
            .unwrap();
    } else {
        // No GSO here: one call per datagram, as the driver does.
        for chunk in buf.chunks(1000) {
            poll_fn(|cx| from.poll_send_segments(cx, chunk, 1000, to))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_run_sent_in_one_call_reaches_a_plain_socket_as_separate_datagrams() {
    let sender = batch_socket().await;
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (buf, want) = run_of_datagrams();
    send_run(&sender, receiver.local_addr().unwrap(), &buf).await;
    let mut got = Vec::new();
    let mut rb = vec![0u8; 65_536];
    for _ in 0..want.len() {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut rb))
            .await
            .expect("datagram arrives")
            .unwrap();
        assert_eq!(from, sender.local_addr().unwrap());
        got.push(rb[..n].to_vec());
    }
    assert_eq!(got, want, "every datagram once, whole, in order");
}

#[tokio::test]
async fn a_run_received_in_batches_splits_back_into_the_datagrams_sent() {
    let sender = batch_socket().await;
    let receiver = batch_socket().await;
    let (buf, want) = run_of_datagrams();
    send_run(&sender, receiver.local_addr().unwrap(), &buf).await;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut storage = vec![0u8; 65_536];
    while got.len() < want.len() {
        let mut rb = ReadBuf::new(&mut storage);
        let (from, stride) = tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| receiver.poll_recv_segments(cx, &mut rb)),
        )
        .await
        .expect("datagrams arrive")
        .unwrap();
        assert_eq!(from, sender.local_addr().unwrap());
        assert!(stride > 0);
        got.extend(rb.filled().chunks(stride).map(<[u8]>::to_vec));
    }
    assert_eq!(got, want, "every datagram once, whole, in order");
}
