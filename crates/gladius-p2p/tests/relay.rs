//! Relays over real UDP on 127.0.0.1. A and B cannot reach each other:
//! each listens on a filtering socket that drops whatever arrives from the
//! other's address (and refuses to send to it). R, which both reach,
//! relays: A adds B by key through R, and they exchange messages over an
//! end-to-end encrypted session whose sealed datagrams ride the A–R and
//! R–B sessions.

mod common;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use common::*;
use gladius_p2p::{ConnectionState, DatagramSocket, Network, PathKind};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// Addresses a [`FilteringSocket`] neither receives from nor sends to,
/// and how many datagrams it dropped.
#[derive(Debug, Clone, Default)]
struct Block {
    addrs: Arc<Mutex<HashSet<SocketAddr>>>,
    dropped: Arc<AtomicU64>,
}

impl Block {
    fn add(&self, addr: SocketAddr) {
        self.addrs.lock().unwrap().insert(addr);
    }
    fn has(&self, addr: &SocketAddr) -> bool {
        self.addrs.lock().unwrap().contains(addr)
    }
}

/// A real UDP socket behind a firewall of blocked addresses.
#[derive(Debug)]
struct FilteringSocket {
    inner: UdpSocket,
    block: Block,
}

impl DatagramSocket for FilteringSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        loop {
            let from = ready!(self.inner.poll_recv_from(cx, buf))?;
            if !self.block.has(&from) {
                return Poll::Ready(Ok(from));
            }
            self.block.dropped.fetch_add(1, Ordering::Relaxed);
            buf.clear();
        }
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if self.block.has(&target) {
            self.block.dropped.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Ok(buf.len()));
        }
        self.inner.poll_send_to(cx, buf, target)
    }
}

async fn filtered_node() -> (Network, SocketAddr, Recorder, Block) {
    let net = Network::new(test_config()).unwrap();
    let rec = Recorder::default();
    net.register_plugin(rec.clone()).await.unwrap();
    let block = Block::default();
    let addr = net
        .listen_on(FilteringSocket {
            inner: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            block: block.clone(),
        })
        .await
        .unwrap();
    (net, addr, rec, block)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_cannot_reach_each_other_talk_through_a_relay() {
    const N: usize = 200;
    let (r, r_addr, _) = node_with(test_config().with_relay(true)).await;
    let (a, a_addr, a_rec, a_block) = filtered_node().await;
    let (b, b_addr, b_rec, b_block) = filtered_node().await;
    a_block.add(b_addr);
    b_block.add(a_addr);
    // A dialling B directly gets nowhere.
    a.add(b_addr).await.unwrap();
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_for(Duration::from_secs(10), "r has both", || async {
        let s = r.network_state().await.unwrap();
        [a_addr, b_addr].iter().all(|p| {
            s.peer(*p)
                .is_some_and(|p| p.connection == ConnectionState::Connected)
        })
    })
    .await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    let a_key = a.network_state().await.unwrap().public_key.unwrap();
    a.delete(b_addr).await.unwrap();

    let via = a.add_via_relay(b_key, r_addr).await.unwrap();
    wait_connected(&a, via).await;
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:04}").into_bytes()).collect();
    for body in &expected {
        let report = a
            .broadcast_to(text_msg("seq", String::from_utf8_lossy(body)), &[via])
            .await
            .unwrap();
        assert!(report.all_queued(), "{report:?}");
    }
    wait_for(Duration::from_secs(30), "every message at b", || async {
        b_rec.count_type("seq") >= N
    })
    .await;
    assert_eq!(
        b_rec.bodies_of_type("seq"),
        expected,
        "exactly once, in order"
    );

    // B answers A under the name it knows A by: A's key via R.
    let sb = b.network_state().await.unwrap();
    let a_at_b = sb
        .peers
        .iter()
        .find(|p| p.public_key == Some(a_key))
        .expect("a at b")
        .clone();
    assert_eq!(a_at_b.path, PathKind::Relayed);
    assert_eq!(a_at_b.relay, Some(r_addr));
    assert_eq!(a_at_b.direct_addr, None);
    let report = b
        .broadcast_to(text_msg("back", "through the relay"), &[a_at_b.addr])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "b's answer at a", || async {
        a_rec.count_type("back") == 1
    })
    .await;

    let sa = a.network_state().await.unwrap();
    let b_at_a = sa.peer(via).expect("b at a");
    assert_eq!(b_at_a.path, PathKind::Relayed);
    assert_eq!(b_at_a.relay, Some(r_addr));
    assert_eq!(b_at_a.public_key, Some(b_key));
    assert_eq!(b_at_a.connection, ConnectionState::Connected);
    let sr = r.network_state().await.unwrap();
    assert!(sr.counters.relay_forwarded > 0, "{:?}", sr.counters);
    assert_eq!(sr.counters.relay_refused, 0);
    assert!(sa.counters.relayed_out > 0 && sb.counters.relayed_in > 0);
    // The direct attempt was blocked, so the relay carried everything.
    assert!(a_block.dropped.load(Ordering::Relaxed) > 0);
    for n in [a, b, r] {
        n.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_key_with_no_hint_finds_the_peer_through_the_relay() {
    let (r, r_addr, _) = node_with(test_config().with_relay(true)).await;
    let (a, a_addr, _a_rec, a_block) = filtered_node().await;
    let (b, b_addr, b_rec, b_block) = filtered_node().await;
    a_block.add(b_addr);
    b_block.add(a_addr);
    a.add(r_addr).await.unwrap();
    b.add(r_addr).await.unwrap();
    wait_connected(&a, r_addr).await;
    wait_connected(&b, r_addr).await;
    wait_for(Duration::from_secs(10), "r has b", || async {
        let s = r.network_state().await.unwrap();
        s.peer(b_addr)
            .is_some_and(|p| p.connection == ConnectionState::Connected)
    })
    .await;
    let b_key = b.network_state().await.unwrap().public_key.unwrap();
    // B looks public to R (it is, on loopback), so A dials it directly
    // first; A's firewall drops that, and A goes through R.
    let dialled = a.add_key(b_key, []).await.unwrap();
    assert_eq!(dialled, b_addr);
    wait_for(Duration::from_secs(20), "b connected through r", || async {
        let s = a.network_state().await.unwrap();
        s.peers.iter().any(|p| {
            p.public_key == Some(b_key)
                && p.path == PathKind::Relayed
                && p.connection == ConnectionState::Connected
        })
    })
    .await;
    let sa = a.network_state().await.unwrap();
    let b_at_a = sa
        .peers
        .iter()
        .find(|p| p.public_key == Some(b_key))
        .unwrap();
    assert_eq!(b_at_a.relay, Some(r_addr));
    assert_eq!(sa.counters.relay_fallbacks, 1);
    assert_eq!(sa.counters.lookups_found, 1);
    let report = a
        .broadcast_to(text_msg("hi", "by key"), &[b_at_a.addr])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "a's message at b", || async {
        b_rec.count_type("hi") == 1
    })
    .await;
    // A key nobody has is a clear error.
    let unknown = gladius_p2p::Identity::generate().public_key();
    let e = a.add_key(unknown, []).await.unwrap_err();
    assert!(matches!(e, gladius_p2p::NetworkError::NoPath(_)), "{e}");
    for n in [a, b, r] {
        n.close().await.unwrap();
    }
}
