//! Shared machinery for the gladius side of the scenarios: a receiving
//! plugin that counts (and echoes requests), nodes on their own OS thread
//! with their own current-thread runtime (as two processes would be), and a
//! sender that never drops a message.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gladius_p2p::{
    async_trait, Config, ConnectionState, Filter, MemoryNetwork, Message, Network, Plugin,
    Received, SendFailure,
};
use tokio::sync::oneshot;

/// Message type of every benchmark message.
pub(super) const BENCH_TYPE: &str = "bench";

/// Nanoseconds since the process-wide benchmark epoch (shared by every
/// thread, so a timestamp taken on one node's thread can be compared with
/// one taken on another's).
pub(super) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The node configuration of a benchmark: the defaults, in the chosen mode,
/// with a short close timeout so tearing down does not dominate the run.
pub(super) fn config(encrypted: bool) -> Config {
    let mut config = Config::default()
        .with_plaintext(!encrypted)
        .with_close_timeout(Duration::from_millis(500));
    // Hidden knob: `GLADIUS_BENCH_CIPHER=chachapoly` (or `aesgcm`) sets
    // the suite both nodes initiate with instead of the CPU's preference.
    if let Some(cipher) = std::env::var("GLADIUS_BENCH_CIPHER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.with_cipher(cipher);
    }
    // Hidden knob: `GLADIUS_BENCH_MAX_DATAGRAM=0` turns datagram-size
    // probing off (the A/B of what larger datagrams buy).
    if let Some(max) = std::env::var("GLADIUS_BENCH_MAX_DATAGRAM")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.with_max_datagram_size(max);
    }
    // Hidden knob for measuring what larger datagrams buy: both nodes of a
    // run configure this KCP mtu (`GLADIUS_BENCH_KCP_MTU=16000`).
    match std::env::var("GLADIUS_BENCH_KCP_MTU")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(mtu) => config.with_kcp(gladius_p2p::KcpPreset::Custom(gladius_p2p::KcpConfig {
            mtu,
            send_window: bench_window(),
            recv_window: bench_window(),
            ..gladius_p2p::KcpConfig::default()
        })),
        None => config,
    }
}

/// Where a node's socket lives.
#[derive(Debug, Clone)]
pub(super) enum Link {
    /// A real UDP socket on 127.0.0.1, port chosen by the kernel.
    Udp,
    /// A socket at this address on an in-process (possibly lossy) network.
    Memory(MemoryNetwork, SocketAddr),
}

impl Link {
    async fn listen(&self, net: &Network) -> Result<SocketAddr, String> {
        match self {
            Link::Udp => net.listen("127.0.0.1:0").await,
            Link::Memory(m, addr) => {
                let socket = m.bind(*addr).map_err(|e| format!("bind {addr}: {e}"))?;
                net.listen_on(socket).await
            }
        }
        .map_err(|e| format!("listen: {e}"))
    }
}

/// What a [`Sink`] saw; shared between the receiving node(s) and the
/// measuring side.
#[derive(Debug, Default)]
pub(super) struct SinkStats {
    /// Messages received (requests excluded).
    pub(super) messages: AtomicU64,
    /// Body bytes received.
    pub(super) bytes: AtomicU64,
    /// [`now_ns`] of the last message received.
    pub(super) last_ns: AtomicU64,
    /// Per sequence number (the first 8 body bytes) the delivery latency
    /// (now minus the send timestamp in bytes 8..16), when tracking.
    pub(super) tracked: Option<Mutex<Tracked>>,
}

/// Sequence-numbered deliveries of the loss scenario.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// Delivery latency in ns per sequence number; `u64::MAX` = not yet.
    pub(super) latency_ns: Vec<u64>,
    /// Messages whose sequence number had already arrived.
    pub(super) duplicates: u64,
    /// Messages too short to carry a sequence number and timestamp.
    pub(super) malformed: u64,
}

impl SinkStats {
    /// Stats that also track sequence numbers and latency per message.
    pub(super) fn tracking() -> Self {
        Self {
            tracked: Some(Mutex::new(Tracked::default())),
            ..Self::default()
        }
    }

    fn record(&self, body: &Bytes) {
        let now = now_ns();
        if let Some(tracked) = &self.tracked {
            let mut t = tracked.lock().unwrap_or_else(PoisonError::into_inner);
            match (body.get(0..8), body.get(8..16)) {
                (Some(seq), Some(ts)) => {
                    let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default()) as usize;
                    let sent = u64::from_le_bytes(ts.try_into().unwrap_or_default());
                    if t.latency_ns.len() <= seq {
                        t.latency_ns.resize(seq + 1, u64::MAX);
                    }
                    if t.latency_ns[seq] == u64::MAX {
                        t.latency_ns[seq] = now.saturating_sub(sent);
                    } else {
                        t.duplicates += 1;
                    }
                }
                _ => t.malformed += 1,
            }
        }
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.last_ns.store(now, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Release);
    }

    /// Messages received so far.
    pub(super) fn received(&self) -> u64 {
        self.messages.load(Ordering::Acquire)
    }

    /// Wait (polling) until `target` messages arrived; fails when nothing
    /// new arrived for `stall`.
    pub(super) async fn wait_for(&self, target: u64, stall: Duration) -> Result<(), String> {
        let mut seen = self.received();
        let mut since = Instant::now();
        while seen < target {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = self.received();
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() > stall {
                return Err(format!(
                    "only {seen} of {target} messages arrived (none for {stall:?})"
                ));
            }
        }
        Ok(())
    }
}

/// The receiving plugin: counts every message in its [`SinkStats`] and
/// answers requests with their own body. On a [`Server`] the requests are
/// answered by its request handler ([`answer_in_driver`]) before they
/// reach the plugin; the plugin's answer is the fallback.
#[derive(Debug)]
pub(super) struct Sink {
    /// Where it counts.
    pub(super) stats: Arc<SinkStats>,
}

#[async_trait]
impl Plugin for Sink {
    fn name(&self) -> &str {
        "bench.sink"
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        if msg.is_request() {
            if let Ok(reply) = Message::new(BENCH_TYPE, msg.message().body().clone()) {
                let _ = net.reply(msg, reply).await;
            }
            return;
        }
        self.stats.record(msg.message().body());
    }
    /// A run of plain messages is counted in one call; one with a request
    /// in it goes message by message (the request is answered above).
    async fn new_messages(&self, _net: &Network, msgs: &[Arc<Received>]) -> bool {
        if msgs.iter().any(|m| m.is_request()) {
            return false;
        }
        for m in msgs {
            self.stats.record(m.message().body());
        }
        true
    }
}

/// Answer the benchmark's requests with their own body inside the node's
/// driver (`Network::handle_requests`), the short request/reply path an
/// application would use: no plugin task between the request and its reply.
pub(super) async fn answer_in_driver(net: &Network) -> Result<(), String> {
    net.handle_requests(Filter::type_prefix(BENCH_TYPE), |req| {
        Message::new(BENCH_TYPE, req.message().body().clone()).ok()
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// A current-thread runtime for one node's thread.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// A receiving node running a [`Sink`] on its own thread.
#[derive(Debug)]
pub(super) struct Server {
    /// The address it listens on.
    pub(super) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Server {
    /// Start the node on its own thread and wait until it listens.
    pub(super) fn start(config: Config, link: Link, stats: Arc<SinkStats>) -> Result<Self, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || -> Result<u64, String> {
                let rt = runtime()?;
                rt.block_on(async move {
                    let started = async {
                        let net = Network::new(config).map_err(|e| e.to_string())?;
                        net.register_plugin(Sink { stats })
                            .await
                            .map_err(|e| e.to_string())?;
                        answer_in_driver(&net).await?;
                        let addr = link.listen(&net).await?;
                        Ok::<_, String>((net, addr))
                    }
                    .await;
                    let net = match started {
                        Ok((net, addr)) => {
                            let _ = ready_tx.send(Ok(addr));
                            net
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    let _ = stop_rx.await;
                    let dropped = plugin_drops(&net).await;
                    let _ = net.close().await;
                    Ok(dropped)
                })
            })
            .map_err(|e| format!("cannot spawn a thread: {e}"))?;
        let addr = ready_rx
            .recv()
            .map_err(|_| "the server thread died".to_string())??;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Close the node; returns how many events its plugins dropped (queue
    /// full), which must be 0 for a valid run.
    pub(super) fn stop(mut self) -> Result<u64, String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<u64, String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| "the server thread panicked".to_string())?,
            None => Ok(0),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Events the node's plugins dropped because their queue was full.
pub(super) async fn plugin_drops(net: &Network) -> u64 {
    net.network_state()
        .await
        .map(|s| s.plugins.iter().map(|p| p.events_dropped).sum())
        .unwrap_or(0)
}

/// Run `body` with a fresh listening node on a new thread with its own
/// current-thread runtime; the node is closed afterwards.
pub(super) fn client<F, Fut, R>(config: Config, link: Link, body: F) -> Result<R, String>
where
    F: FnOnce(Network) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, String>>,
    R: Send + 'static,
{
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let rt = runtime()?;
            rt.block_on(async move {
                let net = Network::new(config).map_err(|e| e.to_string())?;
                link.listen(&net).await?;
                let result = body(net.clone()).await;
                let _ = net.close().await;
                result
            })
        })
        .map_err(|e| format!("cannot spawn a thread: {e}"))?
        .join()
        .map_err(|_| "the client thread panicked".to_string())?
}

/// Add `peers` and wait until `net` has a connected session to each.
pub(super) async fn connect(
    net: &Network,
    peers: &[SocketAddr],
    timeout: Duration,
) -> Result<(), String> {
    for &p in peers {
        net.add(p).await.map_err(|e| format!("add {p}: {e}"))?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let state = net.network_state().await.map_err(|e| e.to_string())?;
        let up = peers
            .iter()
            .filter(|&&p| {
                state
                    .peer(p)
                    .is_some_and(|s| s.connection == ConnectionState::Connected)
            })
            .count();
        if up == peers.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {up} of {} sessions up after {timeout:?}",
                peers.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Queue `msg` to every peer of `peers` (all of them must end up queued):
/// a peer whose queue is full gets it again once `wait_for_room` says it
/// has room. Returns how many retries that took.
pub(super) async fn send_reliably(
    net: &Network,
    body: Bytes,
    peers: &[SocketAddr],
) -> Result<u64, String> {
    let mut retries = 0;
    let mut targets = peers.to_vec();
    loop {
        let msg = Message::new(BENCH_TYPE, body.clone()).map_err(|e| e.to_string())?;
        let report = net
            .broadcast_to(msg.clone(), &targets)
            .await
            .map_err(|e| format!("send: {e}"))?;
        if report.failed.is_empty() {
            return Ok(retries);
        }
        if let Some((p, f)) = report
            .failed
            .iter()
            .find(|(_, f)| *f != SendFailure::QueueFull)
        {
            return Err(format!("send to {p} failed: {f}"));
        }
        targets = report.failed.iter().map(|(p, _)| *p).collect();
        retries += 1;
        for p in &targets {
            net.wait_for_room(*p, &msg, Duration::from_secs(30))
                .await
                .map_err(|e| format!("waiting for room at {p}: {e}"))?;
        }
    }
}

/// `GLADIUS_BENCH_KCP_WINDOW`: both KCP windows in segments (default 1024).
fn bench_window() -> u16 {
    std::env::var("GLADIUS_BENCH_KCP_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
