//! The batched UDP socket on real loopback sockets: a run of datagrams sent
//! in one call arrives as that many datagrams, each intact, whether the
//! receiver takes them one by one (a plain socket) or as one run (GRO); a
//! receive into several buffers gets datagrams once each, in order, and one
//! that finds the socket empty leaves nothing unread.

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::task::Context;
use std::time::Duration;

use gladius_p2p::{Arrival, BatchUdpSocket, DatagramSocket};
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

/// Receive into `bufs` (as many buffers as given), waiting up to 5 s;
/// returns the datagrams received, split at their strides, with their
/// sources.
async fn recv_batch(receiver: &BatchUdpSocket, bufs: &mut [Vec<u8>]) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut arrivals = vec![Arrival::default(); bufs.len()];
    let filled = tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            receiver.poll_recv_batch(cx, &mut slices, &mut arrivals)
        }),
    )
    .await
    .expect("a datagram arrives")
    .unwrap();
    assert!((1..=bufs.len()).contains(&filled), "filled {filled}");
    let mut got = Vec::new();
    for (buf, a) in bufs.iter().zip(&arrivals[..filled]) {
        for d in buf[..a.len].chunks(a.stride) {
            got.push((a.from, d.to_vec()));
        }
    }
    got
}

fn buffers(n: usize) -> Vec<Vec<u8>> {
    vec![vec![0u8; 65_536]; n]
}

#[tokio::test]
async fn a_batched_receive_fills_several_buffers_and_misses_nothing_sent_after_it_found_the_socket_empty(
) {
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sender.local_addr().unwrap();
    let receiver = batch_socket().await;
    let to = receiver.local_addr().unwrap();
    // Three datagrams of different sizes (nothing to coalesce).
    for (i, n) in [100usize, 200, 300].into_iter().enumerate() {
        sender.send_to(&vec![i as u8; n], to).await.unwrap();
    }
    let mut bufs = buffers(2);
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(recv_batch(&receiver, &mut bufs).await);
    }
    let want: Vec<_> = [100usize, 200, 300]
        .into_iter()
        .enumerate()
        .map(|(i, n)| (me, vec![i as u8; n]))
        .collect();
    assert_eq!(got, want, "every datagram once, whole, in order");

    // The last receive found the socket empty (it filled fewer buffers
    // than it had): the next one waits, without the kernel's help...
    let mut arrivals = [Arrival::default(); 2];
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut slices = bufs
        .iter_mut()
        .map(|b| IoSliceMut::new(b))
        .collect::<Vec<_>>();
    assert!(receiver
        .poll_recv_batch(&mut cx, &mut slices, &mut arrivals)
        .is_pending());
    drop(slices);
    // ...and a datagram sent now still arrives.
    sender.send_to(b"later", to).await.unwrap();
    assert_eq!(
        recv_batch(&receiver, &mut bufs).await,
        vec![(me, b"later".to_vec())]
    );
}

/// Bursts of 1 to 7 datagrams, each burst read by two-buffer receives
/// before the next is sent, and a final stretch of back-to-back sends: a
/// receive that finds the socket empty must never leave a datagram waiting
/// unread (the test would time out), and every datagram arrives once.
#[tokio::test]
async fn batched_receives_never_strand_a_datagram() {
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let receiver = batch_socket().await;
    let to = receiver.local_addr().unwrap();
    let mut bufs = buffers(2);
    let mut next = 0u32;
    let mut received = Vec::new();
    for burst in 0..400usize {
        let n = 1 + burst % 7;
        for _ in 0..n {
            sender.send_to(&next.to_le_bytes(), to).await.unwrap();
            next += 1;
        }
        while received.len() < next as usize {
            for (_, d) in recv_batch(&receiver, &mut bufs).await {
                received.push(u32::from_le_bytes(d.try_into().unwrap()));
            }
        }
    }
    let reader = async {
        let mut bufs = buffers(2);
        let mut got = Vec::new();
        while got.len() < 2000 {
            for (_, d) in recv_batch(&receiver, &mut bufs).await {
                got.push(u32::from_le_bytes(d.try_into().unwrap()));
            }
        }
        got
    };
    let writer = async {
        for i in 0..2000u32 {
            sender.send_to(&(next + i).to_le_bytes(), to).await.unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let (got, ()) = tokio::join!(reader, writer);
    received.extend(got);
    let want: Vec<u32> = (0..next + 2000).collect();
    assert_eq!(received, want, "every datagram once, in order");
}
