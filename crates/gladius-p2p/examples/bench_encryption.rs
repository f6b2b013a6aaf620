//! What encryption costs: round-trip time and one-way throughput between two
//! nodes on loopback, plaintext versus encrypted, with a raw-UDP ping-pong
//! baseline measured in the same run.
//!
//! ```text
//! cargo run --release --example bench_encryption [-- --quick]
//! ```
//! Prints one line per measurement. Figures depend on the machine; compare
//! the ratios of one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gladius_p2p::{async_trait, Config, Message, Network, Plugin, Received, SendFailure};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// Answers requests with their own body; counts one-way messages.
struct Echo {
    received: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
}

#[async_trait]
impl Plugin for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        if msg.is_request() {
            let reply = Message::new("pong", msg.message().body().clone()).expect("valid type");
            let _ = net.reply(msg, reply).await;
            return;
        }
        self.bytes
            .fetch_add(msg.message().body().len() as u64, Ordering::Relaxed);
        if self.received.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn pair(
    plaintext: bool,
    target: u64,
) -> (
    Network,
    Network,
    std::net::SocketAddr,
    Arc<AtomicU64>,
    Arc<Notify>,
) {
    let config = || Config::default().with_plaintext(plaintext);
    let a = Network::new(config()).expect("config");
    let b = Network::new(config()).expect("config");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    b.register_plugin(Echo {
        received: received.clone(),
        bytes: Arc::new(AtomicU64::new(0)),
        target,
        done: done.clone(),
    })
    .await
    .expect("register");
    a.listen("127.0.0.1:0").await.expect("listen");
    let b_addr = b.listen("127.0.0.1:0").await.expect("listen");
    a.add(b_addr).await.expect("add");
    // Wait for the session (the first request completes the handshake).
    let hello = Message::new("ping", "x").expect("valid");
    a.request(hello, b_addr, Duration::from_secs(10))
        .await
        .expect("session up");
    (a, b, b_addr, received, done)
}

async fn rtt(plaintext: bool, size: usize, rounds: usize) -> Vec<Duration> {
    let (a, b, b_addr, _, _) = pair(plaintext, u64::MAX).await;
    let body = vec![7u8; size];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let msg = Message::new("ping", body.clone()).expect("valid");
        let t = Instant::now();
        a.request(msg, b_addr, Duration::from_secs(5))
            .await
            .expect("reply");
        samples.push(t.elapsed());
    }
    a.close().await.ok();
    b.close().await.ok();
    samples.sort();
    samples
}

async fn throughput(plaintext: bool, size: usize, count: u64) -> (f64, f64) {
    let (a, b, b_addr, received, done) = pair(plaintext, count).await;
    let body = bytes::Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let msg = Message::new("data", body.clone()).expect("valid");
        let report = a.broadcast_to(msg, &[b_addr]).await.expect("send");
        if report
            .failed
            .iter()
            .any(|(_, f)| *f == SendFailure::QueueFull)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        sent += 1;
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .expect("all delivered");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(received.load(Ordering::Relaxed), count);
    a.close().await.ok();
    b.close().await.ok();
    (count as f64 / secs, count as f64 * size as f64 / secs / 1e6)
}

async fn udp_ping_pong(size: usize, rounds: usize) -> Vec<Duration> {
    let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let b_addr = b.local_addr().expect("addr");
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        for _ in 0..rounds {
            let (n, from) = b.recv_from(&mut buf).await.expect("recv");
            b.send_to(&buf[..n], from).await.expect("send");
        }
    });
    let body = vec![7u8; size];
    let mut buf = vec![0u8; 65536];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        a.send_to(&body, b_addr).await.expect("send");
        a.recv_from(&mut buf).await.expect("recv");
        samples.push(t.elapsed());
    }
    echo.await.expect("echo task");
    samples.sort();
    samples
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, count) = if quick { (500, 5_000) } else { (5_000, 50_000) };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let udp = udp_ping_pong(64, rounds).await;
    println!(
        "rtt      64 B  raw UDP     p50 {:>7.1} us  p99 {:>7.1} us",
        us(percentile(&udp, 0.5)),
        us(percentile(&udp, 0.99))
    );
    for size in [64, 1024] {
        let mut p50s = Vec::new();
        for plaintext in [true, false] {
            let s = rtt(plaintext, size, rounds).await;
            let p50 = percentile(&s, 0.5);
            p50s.push(p50);
            println!(
                "rtt   {size:>5} B  {:<10}  p50 {:>7.1} us  p99 {:>7.1} us",
                mode(plaintext),
                us(p50),
                us(percentile(&s, 0.99))
            );
        }
        println!(
            "rtt   {size:>5} B  encrypted/plaintext p50 ratio {:.2}",
            us(p50s[1]) / us(p50s[0])
        );
    }
    for size in [64, 1024, 65536] {
        let n = if size >= 65536 { count / 20 } else { count };
        let mut rates = Vec::new();
        for plaintext in [true, false] {
            let (msgs, mb) = throughput(plaintext, size, n).await;
            rates.push(mb);
            println!(
                "one-way {size:>5} B  {:<10}  {msgs:>9.0} msg/s  {mb:>8.1} MB/s",
                mode(plaintext)
            );
        }
        println!(
            "one-way {size:>5} B  encrypted/plaintext throughput ratio {:.2}",
            rates[1] / rates[0]
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mode(plaintext: bool) -> &'static str {
    if plaintext {
        "plaintext"
    } else {
        "encrypted"
    }
}
