//! NAT traversal over real UDP on 127.0.0.1. Observed addresses: two
//! observers of a node bound to loopback report no NAT and its address.
//! Roaming: node A sits behind a user-space
//! NAT (two sockets of this test forwarding datagrams), which "rebinds"
//! mid-stream: it replaces its outside socket by a new one, on a new port,
//! and forgets the old mapping (datagrams to the old port are lost, as
//! after a router's conntrack flush). B must move A's path to the new port
//! on A's first authenticated datagram from it, with no new handshake, and
//! every message must arrive exactly once, in order.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gladius_p2p::{NatType, PathChange, PeerEvent};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A one-client NAT: what arrives on `inside` goes to `server` from the
/// current outside socket; what the server sends to the current outside
/// socket goes back to the client. A rebind swaps the outside socket.
struct Nat {
    inside: SocketAddr,
    rebind: mpsc::Sender<oneshot::Sender<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Nat {
    async fn start(server: SocketAddr) -> (Nat, SocketAddr) {
        let inside = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut outside = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let first = outside.local_addr().unwrap();
        let inside_addr = inside.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<SocketAddr>>(1);
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = inside.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { continue };
                        client = Some(from);
                        let _ = outside.send_to(&up[..n], server).await;
                    }
                    r = outside.recv_from(&mut down) => {
                        let Ok((n, from)) = r else { continue };
                        if let (true, Some(c)) = (from == server, client) {
                            let _ = inside.send_to(&down[..n], c).await;
                        }
                    }
                    reply = rx.recv() => {
                        let Some(reply) = reply else { return };
                        // The old mapping is gone: its socket closes.
                        outside = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        let _ = reply.send(outside.local_addr().unwrap());
                    }
                }
            }
        });
        (
            Nat {
                inside: inside_addr,
                rebind: tx,
                task,
            },
            first,
        )
    }

    /// Move to a new outside port; returns it.
    async fn rebind(&self) -> SocketAddr {
        let (tx, rx) = oneshot::channel();
        self.rebind.send(tx).await.unwrap();
        rx.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_rebinding_mid_stream_moves_the_path_without_a_handshake_or_a_loss() {
    const N: usize = 400;
    let (b, b_addr, b_rec) = node().await;
    let mut b_events = b.events().await.unwrap();
    let (nat, first) = Nat::start(b_addr).await;
    let (a, _a_addr, a_rec) = node().await;
    a.add(nat.inside).await.unwrap();
    wait_connected(&a, nat.inside).await;
    wait_for(
        Duration::from_secs(10),
        "b sees a at the NAT's port",
        || async {
            b.network_state()
                .await
                .unwrap()
                .peer(first)
                .is_some_and(|p| p.connection == gladius_p2p::ConnectionState::Connected)
        },
    )
    .await;

    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:04}").into_bytes()).collect();
    let mut second = None;
    for (i, body) in expected.iter().enumerate() {
        if i == N / 2 {
            // Mid-stream: once B has some of the first half; the rest of
            // it is in flight or not yet acknowledged.
            wait_for(Duration::from_secs(10), "the stream under way", || async {
                b_rec.count_type("seq") >= 1
            })
            .await;
            second = Some(nat.rebind().await);
        }
        let report = a
            .broadcast(text_msg("seq", String::from_utf8_lossy(body)))
            .await
            .unwrap();
        assert!(report.all_queued(), "{report:?}");
    }
    let second = second.expect("rebound");
    assert_ne!(first, second);
    wait_for(Duration::from_secs(30), "every message at b", || async {
        b_rec.count_type("seq") >= N
    })
    .await;
    assert_eq!(
        b_rec.bodies_of_type("seq"),
        expected,
        "exactly once, in order"
    );

    // B writes to the new port now: its reply reaches A through the NAT.
    let report = b
        .broadcast_to(text_msg("back", "after the rebind"), &[second])
        .await
        .unwrap();
    assert!(report.all_queued(), "{report:?}");
    wait_for(Duration::from_secs(10), "b's message at a", || async {
        a_rec.count_type("back") == 1
    })
    .await;

    let sb = b.network_state().await.unwrap();
    let sa = a.network_state().await.unwrap();
    assert_eq!(sb.counters.handshakes_completed, 1, "no new handshake at b");
    assert_eq!(sa.counters.handshakes_completed, 1, "no new handshake at a");
    assert_eq!(sb.counters.path_changes, 1, "{:?}", sb.counters);
    let peer = sb.peer(second).expect("a under its new path");
    assert_eq!(peer.active_path, Some(second));
    assert_eq!(peer.public_key, sa.public_key);
    let change = loop {
        match b_events.next().await.expect("event stream") {
            PeerEvent::PathChanged(c) => break c,
            _ => continue,
        }
    };
    assert_eq!(
        change,
        PathChange {
            public_key: sa.public_key.expect("encrypted"),
            old: Some(first),
            new: second,
        }
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
    nat.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_observers_on_loopback_see_no_nat_and_the_bound_address() {
    let (a, a_addr, _) = node().await;
    let (b, b_addr, _) = node().await;
    let (c, c_addr, _) = node().await;
    a.add(b_addr).await.unwrap();
    a.add(c_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    wait_connected(&a, c_addr).await;
    wait_for(Duration::from_secs(10), "two observations at a", || async {
        a.network_state()
            .await
            .unwrap()
            .counters
            .observations_received
            >= 2
    })
    .await;
    let state = a.network_state().await.unwrap();
    assert_eq!(state.nat, NatType::None, "{state:?}");
    assert_eq!(state.reflexive_addrs, vec![a_addr]);
    // B and C have one observer each: too few to tell. (A's report may
    // reach B after A has heard from both: wait for it.)
    wait_for(Duration::from_secs(10), "one observation at b", || async {
        b.network_state()
            .await
            .unwrap()
            .counters
            .observations_received
            >= 1
    })
    .await;
    let sb = b.network_state().await.unwrap();
    assert_eq!(sb.nat, NatType::Unknown);
    assert_eq!(sb.reflexive_addrs, vec![b_addr]);
    for n in [a, b, c] {
        n.close().await.unwrap();
    }
}
