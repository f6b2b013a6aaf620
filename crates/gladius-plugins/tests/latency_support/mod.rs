//! Test helpers for the latency plugin: a delaying, droppable UDP relay and
//! nodes on 127.0.0.1.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub use super::support::wait_for;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gladius_p2p::{Config, Network};
use gladius_plugins::latency::{LatencyAudit, LatencyConfig, LatencyHandle};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A transparent UDP relay in front of one node.
///
/// The probing node talks to `addr` (the relay's front socket); the relay
/// forwards every datagram from its own back socket to the real peer and
/// every datagram the peer sends to the back socket back to whoever last
/// wrote to the front. Each datagram is delayed by `one_way` in **each**
/// direction (a spawned task sleeps, then sends), so the round trip gains
/// `2 × one_way`. The relay can be told to drop everything.
pub struct Relay {
    pub addr: SocketAddr,
    pub target: SocketAddr,
    dropping: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    pub async fn start(target: SocketAddr, one_way: Duration) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let dropping = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();

        let forward = {
            let (front, back, dropping, client) = (
                front.clone(),
                back.clone(),
                dropping.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else {
                        continue;
                    };
                    *client.lock().unwrap() = Some(from);
                    if dropping.load(Ordering::Relaxed) {
                        continue;
                    }
                    send_later(back.clone(), buf[..n].to_vec(), target, one_way);
                }
            })
        };
        let backward = {
            let (front, back, dropping, client) = (
                front.clone(),
                back.clone(),
                dropping.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, from)) = back.recv_from(&mut buf).await else {
                        continue;
                    };
                    if from != target || dropping.load(Ordering::Relaxed) {
                        continue;
                    }
                    let Some(to) = *client.lock().unwrap() else {
                        continue;
                    };
                    send_later(front.clone(), buf[..n].to_vec(), to, one_way);
                }
            })
        };
        Relay {
            addr,
            target,
            dropping,
            tasks: vec![forward, backward],
        }
    }

    /// Drop (true) or forward (false) everything from now on.
    pub fn set_dropping(&self, drop: bool) {
        self.dropping.store(drop, Ordering::Relaxed);
    }
}

fn send_later(socket: Arc<UdpSocket>, data: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        // try_send_to keeps the order of undelayed datagrams.
        let _ = socket.try_send_to(&data, to);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&data, to).await;
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A default (encrypted) node on 127.0.0.1 running the latency plugin.
pub async fn latency_node(cfg: LatencyConfig) -> (Network, SocketAddr, LatencyHandle) {
    let net = Network::new(Config::default()).unwrap();
    let (audit, handle) = LatencyAudit::new(cfg).unwrap();
    net.register_plugin(audit).await.unwrap();
    let addr = net.listen("127.0.0.1:0").await.unwrap();
    (net, addr, handle)
}

/// A node that only answers pings.
pub async fn responder() -> (Network, SocketAddr, LatencyHandle) {
    latency_node(LatencyConfig::default().with_probe(false)).await
}

/// Whether `peer` is in `net`'s route table.
pub async fn in_route_table(net: &Network, peer: SocketAddr) -> bool {
    net.network_state()
        .await
        .unwrap()
        .peer(peer)
        .is_some_and(|p| p.in_route_table)
}

/// Whether `peer` is writable at `net` (a dead peer the application added
/// is demoted: not writable, still in the route table).
pub async fn is_writable(net: &Network, peer: SocketAddr) -> bool {
    net.network_state()
        .await
        .unwrap()
        .peer(peer)
        .is_some_and(|p| p.writable)
}

/// Socket tests run one at a time so that timing assertions do not compete
/// with each other for the two cores.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
