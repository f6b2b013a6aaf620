//! Datagram-size probing over real UDP sockets on 127.0.0.1 (whose MTU
//! is 65,536): a bulk transfer's datagrams grow past the 1400-byte KCP
//! `mtu`, and a receiver that cannot read larger datagrams (an older
//! implementation's small buffer, emulated by dropping them on its input)
//! keeps the session at the base size. Every message arrives once, in
//! order, either way, in both modes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gladius_p2p::crypto::packet::DATA_OVERHEAD;
use gladius_p2p::{Config, PeerState, DEFAULT_MAX_DATAGRAM_SIZE};

/// The default KCP `mtu`.
const MTU: usize = 1400;
/// Messages and their size: 3 MiB, enough for the whole search.
const COUNT: u64 = 24;
const SIZE: usize = 128 * 1024;

/// A body of `SIZE` bytes starting with its 8-digit number.
fn body(i: u64) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(SIZE, b'x');
    b
}

/// Send `COUNT` numbered bulk messages from a tapped node to `receiver`
/// and wait for all of them; returns the sizes of the datagrams the
/// sender sent to it, and how the sender's `network_state` saw the
/// receiver then.
async fn bulk_to(
    config: Config,
    receiver: (gladius_p2p::Network, SocketAddr, Recorder),
) -> (Vec<usize>, PeerState) {
    let (recv_net, recv_addr, rec) = receiver;
    let (net, _addr, _rec, tap) = tapped_node(config).await;
    net.add(recv_addr).await.unwrap();
    wait_connected(&net, recv_addr).await;
    for i in 0..COUNT {
        let msg = gladius_p2p::Message::new("bulk", body(i)).unwrap();
        loop {
            let r = net.broadcast_to(msg.clone(), &[recv_addr]).await.unwrap();
            if r.all_queued() {
                break;
            }
            net.wait_for_room(recv_addr, &msg, Duration::from_secs(20))
                .await
                .unwrap();
        }
    }
    let from = {
        let state = recv_net.network_state().await.unwrap();
        state.peers.first().map(|p| p.addr).unwrap()
    };
    wait_for(Duration::from_secs(60), "every bulk message", || async {
        rec.count_from(from, "bulk") >= COUNT as usize
    })
    .await;
    let bodies = rec.bodies_from(from, "bulk");
    assert_eq!(
        prefix_numbers(bodies.clone(), 8),
        (0..COUNT).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(bodies.iter().all(|b| b.len() == SIZE));
    let sizes = tap.sent_to(recv_addr).iter().map(Vec::len).collect();
    let seen = net.network_state().await.unwrap();
    let peer = seen.peer(recv_addr).cloned().unwrap();
    net.close().await.ok();
    recv_net.close().await.ok();
    (sizes, peer)
}

async fn grows(plaintext: bool) {
    let config = test_config().with_plaintext(plaintext);
    let overhead = if plaintext { 0 } else { DATA_OVERHEAD };
    let receiver = node_with(config.clone()).await;
    let (sizes, peer) = bulk_to(config, receiver).await;
    let largest = sizes.iter().copied().max().unwrap();
    // The search climbs to 3, then 6 segments of 1400 bytes: the most the
    // default maximum (8,920 bytes) holds.
    const { assert!(6 * MTU <= DEFAULT_MAX_DATAGRAM_SIZE && 7 * MTU > DEFAULT_MAX_DATAGRAM_SIZE) };
    assert_eq!(
        largest,
        6 * MTU + overhead,
        "datagrams grew to the largest size"
    );
    // Every datagram is whole segments: a multiple of the mtu when full.
    let large = sizes.iter().filter(|&&s| s >= 3 * MTU + overhead).count();
    assert!(large > 10, "larger datagrams carried the bulk ({large})");
    // network_state tells the operator the same.
    assert_eq!(peer.datagram_size, Some(6 * MTU), "{peer:?}");
    assert!(
        peer.size_probes_confirmed >= 2,
        "3, then 6 segments: {peer:?}"
    );
    assert_eq!(peer.size_black_holes, 0);
}

async fn stays_small(plaintext: bool) {
    let config = test_config().with_plaintext(plaintext);
    let overhead = if plaintext { 0 } else { DATA_OVERHEAD };
    let max = MTU + overhead;
    let socket = HookSocket::bind().await.on_recv(move |d, _| d.len() <= max);
    let receiver = node_on(config.clone(), socket).await;
    let (sizes, peer) = bulk_to(config, receiver).await;
    let large: Vec<usize> = sizes.into_iter().filter(|&s| s > MTU + overhead).collect();
    // Three probes of 3 segments, never acknowledged, then nothing larger.
    assert_eq!(
        large,
        vec![3 * MTU + overhead; 3],
        "only the lost probes were larger"
    );
    assert_eq!(peer.datagram_size, Some(MTU), "{peer:?}");
    assert_eq!((peer.size_probes_confirmed, peer.size_probes_lost), (0, 3));
}

#[tokio::test]
async fn encrypted_bulk_datagrams_grow_on_loopback() {
    grows(false).await;
}

#[tokio::test]
async fn plaintext_bulk_datagrams_grow_on_loopback() {
    grows(true).await;
}

#[tokio::test]
async fn encrypted_receiver_with_small_buffers_keeps_the_base_size() {
    stays_small(false).await;
}

#[tokio::test]
async fn plaintext_receiver_with_small_buffers_keeps_the_base_size() {
    stays_small(true).await;
}
