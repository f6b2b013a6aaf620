//! A fixed one-way workload for profilers: two nodes on loopback, each on
//! its own thread with a current-thread runtime, `COUNT` messages of `SIZE` bytes from one to the
//! other, awaited one by one through `broadcast_to` (or, with `sender`,
//! streamed through a `PeerSender`: no round trip to the driver per message).
//!
//! ```text
//! cargo build --release --example profile_oneway
//! valgrind --tool=callgrind target/release/examples/profile_oneway [COUNT] [SIZE] [plain|sender|plain-sender|rtt|plain-rtt|rtt-plugin|plain-rtt-plugin]
//! ```
//! With `rtt`, the messages go as `COUNT` sequential requests that the
//! receiver answers in its driver with a request handler
//! (`Network::handle_requests`, the round trip of `gladius bench rtt`);
//! with `rtt-plugin`, its plugin answers them with `reply`.
//! Instruction counts per message are stable on a noisy machine; wall-clock
//! figures belong to `gladius bench`.
//!
//! Environment knobs (both nodes; `gladius bench` reads the same ones):
//! `GLADIUS_BENCH_CIPHER=chachapoly|aesgcm` sets `Config::with_cipher`;
//! `GLADIUS_BENCH_MAX_DATAGRAM=N` sets `Config::with_max_datagram_size`
//! (`0`: datagram-size probing off); `GLADIUS_BENCH_KCP_MTU=N` and
//! `GLADIUS_BENCH_KCP_WINDOW=N` set the KCP mtu and both windows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gladius_p2p::{async_trait, Config, Message, Network, Plugin, Received};
use tokio::sync::Notify;

struct Count {
    received: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
}

#[async_trait]
impl Plugin for Count {
    fn name(&self) -> &str {
        "count"
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        if msg.is_request() {
            let answer = Message::new("pong", msg.message().body().clone()).expect("valid");
            net.reply(msg, answer).await.ok();
            return;
        }
        if msg.message().is_type("data")
            && self.received.fetch_add(1, Ordering::Relaxed) + 1 == self.target
        {
            self.done.notify_one();
        }
    }
    async fn new_messages(&self, _net: &Network, msgs: &[Arc<Received>]) -> bool {
        if msgs.iter().any(|m| m.is_request()) {
            return false;
        }
        let data = msgs.iter().filter(|m| m.message().is_type("data")).count() as u64;
        let before = self.received.fetch_add(data, Ordering::Relaxed);
        if before < self.target && before + data >= self.target {
            self.done.notify_one();
        }
        true
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let mode = args.get(3).map_or("", String::as_str);
    let plaintext = mode.starts_with("plain");
    let round_trips = mode.contains("rtt");
    let by_plugin = mode.ends_with("plugin");
    // `GLADIUS_BENCH_KCP_MTU` sets both nodes' KCP mtu (the datagram size).
    let mtu: Option<usize> = std::env::var("GLADIUS_BENCH_KCP_MTU")
        .ok()
        .and_then(|v| v.parse().ok());
    let config = move || {
        let mut c = Config::default().with_plaintext(plaintext);
        // `GLADIUS_BENCH_CIPHER=chachapoly|aesgcm`: the suite.
        if let Some(cipher) = std::env::var("GLADIUS_BENCH_CIPHER")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c = c.with_cipher(cipher);
        }
        // `GLADIUS_BENCH_MAX_DATAGRAM=0`: datagram-size probing off.
        if let Some(max) = std::env::var("GLADIUS_BENCH_MAX_DATAGRAM")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c = c.with_max_datagram_size(max);
        }
        match mtu {
            Some(mtu) => c.with_kcp(gladius_p2p::KcpPreset::Custom(gladius_p2p::KcpConfig {
                mtu,
                send_window: bench_window(),
                recv_window: bench_window(),
                ..gladius_p2p::KcpConfig::default()
            })),
            None => c,
        }
    };
    let a = Network::new(config()).expect("config");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    // The receiver runs on its own thread and runtime, like another process.
    let (b_tx, b_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (received2, done2) = (received.clone(), done.clone());
    let receiver = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let b = Network::new(config()).expect("config");
            b.register_plugin(Count {
                received: received2,
                target: count,
                done: done2,
            })
            .await
            .expect("register");
            if !by_plugin {
                b.handle_requests(gladius_p2p::Filter::type_prefix("ping"), |req| {
                    Message::new("pong", req.message().body().clone()).ok()
                })
                .await
                .expect("handler");
            }
            let addr = b.listen("127.0.0.1:0").await.expect("listen");
            b_tx.send(addr).expect("main waits");
            stop_rx.await.ok();
            b.close().await.ok();
        });
    });
    a.listen("127.0.0.1:0").await.expect("listen");
    let b_addr = b_rx.recv().expect("receiver address");
    a.add(b_addr).await.expect("add");
    a.request(
        Message::new("ping", "x").expect("valid"),
        b_addr,
        Duration::from_secs(30),
    )
    .await
    .ok();
    let body = bytes::Bytes::from(vec![7u8; size]);
    let mode_name = if plaintext { "plaintext" } else { "encrypted" };
    if round_trips {
        let secs = request_loop(&a, b_addr, &body, count).await;
        println!(
            "{count} round trips x {size} B {mode_name}: {:.1} us each",
            secs * 1e6 / count as f64
        );
    } else {
        let (secs, full) = stream(&a, b_addr, &body, count, &done).await;
        println!(
            "{count} x {size} B {mode_name}: {:.0} msg/s, {:.1} MB/s, {full} queue-full retries",
            count as f64 / secs,
            count as f64 * size as f64 / secs / 1e6
        );
        let state = a.network_state().await.expect("state");
        if let Some(p) = state.peers.first() {
            println!(
                "sender: {} datagrams out, {} retransmits, {} messages out",
                state.counters.datagrams_out, p.retransmits, p.messages_out
            );
        }
    }
    a.close().await.ok();
    let _ = stop_tx.send(());
    receiver.join().expect("receiver thread");
}

/// `count` sequential requests; seconds taken.
async fn request_loop(a: &Network, b: SocketAddr, body: &bytes::Bytes, count: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..count {
        let msg = Message::new("ping", body.clone()).expect("valid");
        a.request(msg, b, Duration::from_secs(30))
            .await
            .expect("reply");
    }
    start.elapsed().as_secs_f64()
}

/// `count` messages one way, each awaited, until all arrived; seconds taken
/// and how many sends met a full queue (and waited for room).
async fn stream(
    a: &Network,
    b: SocketAddr,
    body: &bytes::Bytes,
    count: u64,
    done: &Notify,
) -> (f64, u64) {
    let start = Instant::now();
    let (mut sent, mut full) = (0, 0);
    if std::env::args()
        .nth(3)
        .is_some_and(|m| m.contains("sender"))
    {
        let to = a.sender(b).await.expect("sender");
        for _ in 0..count {
            let msg = Message::new("data", body.clone()).expect("valid");
            if let Err(gladius_p2p::PeerSendError::Full(msg)) = to.try_send(msg) {
                full += 1;
                to.send(msg).await.expect("send");
            }
        }
        sent = count;
        assert_eq!(to.dropped(), 0, "nothing dropped");
    }
    while sent < count {
        let msg = Message::new("data", body.clone()).expect("valid");
        let report = a.broadcast_to(msg.clone(), &[b]).await.expect("send");
        if report.all_queued() {
            sent += 1;
        } else {
            full += 1;
            a.wait_for_room(b, &msg, Duration::from_secs(30))
                .await
                .expect("room");
        }
    }
    tokio::time::timeout(Duration::from_secs(600), done.notified())
        .await
        .expect("all delivered");
    (start.elapsed().as_secs_f64(), full)
}

/// `GLADIUS_BENCH_KCP_WINDOW`: both KCP windows in segments (default 1024).
fn bench_window() -> u16 {
    std::env::var("GLADIUS_BENCH_KCP_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
