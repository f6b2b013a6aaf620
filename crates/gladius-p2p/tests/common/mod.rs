//! Helpers shared by the integration tests: a recording plugin and waits
//! with deadlines (never fixed sleeps as assertions).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll, Waker};

use gladius_p2p::{
    async_trait, Config, DatagramSocket, Network, PeerInfo, PeerReason, Plugin, Received,
};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// One hook call as a plugin saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Startup,
    NodeAdded(SocketAddr),
    NodeDeleted(SocketAddr),
    Connected(SocketAddr, bool),
    Disconnected(SocketAddr),
    Rejected(SocketAddr, String),
    Message {
        from: SocketAddr,
        sender: Option<SocketAddr>,
        msg_type: String,
        body: Vec<u8>,
        writable: bool,
    },
    Close,
}

/// A plugin that records every hook call; requests of type "echo" are
/// answered with the same body.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
    pub fn messages(&self) -> Vec<(SocketAddr, String, Vec<u8>, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message {
                    from,
                    msg_type,
                    body,
                    writable,
                    ..
                } => Some((from, msg_type, body, writable)),
                _ => None,
            })
            .collect()
    }
    pub fn bodies_of_type(&self, t: &str) -> Vec<Vec<u8>> {
        self.messages()
            .into_iter()
            .filter(|m| m.1 == t)
            .map(|m| m.2)
            .collect()
    }
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
}

#[async_trait]
impl Plugin for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn startup(&self, _net: &Network) {
        self.push(Event::Startup);
    }
    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        self.push(Event::NodeAdded(addr));
    }
    async fn node_deleted(&self, _net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        self.push(Event::NodeDeleted(addr));
    }
    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        self.push(Event::Connected(peer.addr, peer.writable));
    }
    async fn peer_rejected(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        self.push(Event::Rejected(addr, reason.to_owned()));
    }
    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr, _reason: &PeerReason) {
        self.push(Event::Disconnected(addr));
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        let m = msg.message();
        if msg.is_request() && m.msg_type() == "echo" {
            let reply = gladius_p2p::Message::new("echo.reply", m.body().clone()).unwrap();
            net.reply(msg, reply).await.unwrap();
        }
        self.push(Event::Message {
            from: msg.peer(),
            sender: m.sender(),
            msg_type: m.msg_type().to_owned(),
            body: m.body().to_vec(),
            writable: msg.is_writable(),
        });
    }
    async fn close(&self, _net: &Network) {
        self.push(Event::Close);
    }
}

/// A node on 127.0.0.1 with a recorder plugin.
pub async fn node_with(config: Config) -> (Network, SocketAddr, Recorder) {
    let net = Network::new(config).unwrap();
    let rec = Recorder::default();
    net.register_plugin(rec.clone()).await.unwrap();
    let addr = net.listen("127.0.0.1:0").await.unwrap();
    (net, addr, rec)
}

/// A node listening on `socket` (a test's wrapper of a UDP socket) with a
/// recorder plugin.
pub async fn node_on(
    config: Config,
    socket: impl gladius_p2p::DatagramSocket,
) -> (Network, SocketAddr, Recorder) {
    let net = Network::new(config).unwrap();
    let rec = Recorder::default();
    net.register_plugin(rec.clone()).await.unwrap();
    let addr = net.listen_on(socket).await.unwrap();
    (net, addr, rec)
}

pub async fn node() -> (Network, SocketAddr, Recorder) {
    node_with(test_config()).await
}

/// Short timeouts so failure paths finish quickly in tests.
pub fn test_config() -> Config {
    Config::default()
        .with_keepalive_interval(Duration::from_millis(500))
        .with_idle_timeout(Duration::from_secs(3))
        .with_connect_timeout(Duration::from_secs(2))
        .with_close_timeout(Duration::from_secs(1))
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
}

/// Poll `cond` until it holds or `within` passes; panics with `what`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `net` reports `peer` connected.
pub async fn wait_connected(net: &Network, peer: SocketAddr) {
    net.wait_connected(peer, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{peer} not connected: {e}"));
}

// ----- additions for swarm.rs, faults.rs and hostile.rs ----------------------

impl Recorder {
    /// Bodies of messages of type `t` that arrived over the session from
    /// `from`, in arrival order.
    pub fn bodies_from(&self, from: SocketAddr, t: &str) -> Vec<Vec<u8>> {
        self.messages()
            .into_iter()
            .filter(|m| m.0 == from && m.1 == t)
            .map(|m| m.2)
            .collect()
    }
    /// Number of messages of type `t` that arrived from `from`.
    pub fn count_from(&self, from: SocketAddr, t: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Message { from: f, msg_type, .. } if *f == from && msg_type == t))
            .count()
    }
    /// Number of messages of type `t` from anyone.
    pub fn count_type(&self, t: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Message { msg_type, .. } if msg_type == t))
            .count()
    }
    /// Whether `e` was recorded.
    pub fn saw(&self, e: &Event) -> bool {
        self.events.lock().unwrap().iter().any(|x| x == e)
    }
}

/// Bodies that are decimal numbers, parsed.
pub fn numbers(bodies: Vec<Vec<u8>>) -> Vec<u64> {
    bodies
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap().parse().unwrap())
        .collect()
}

/// Bodies that start with a `width`-digit decimal number (the rest is
/// padding), those numbers.
pub fn prefix_numbers(bodies: Vec<Vec<u8>>, width: usize) -> Vec<u64> {
    bodies
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b[..width]).parse().unwrap())
        .collect()
}

/// A message of type `t` with a text body.
pub fn text_msg(t: &str, body: impl ToString) -> gladius_p2p::Message {
    gladius_p2p::Message::new(t, body.to_string()).unwrap()
}

/// The node's counters, now.
pub async fn counters(net: &Network) -> gladius_p2p::Counters {
    net.network_state().await.unwrap().counters
}

/// Install (once per test binary) a panic hook that stays quiet about the
/// intentional panics of test plugins (whose message contains
/// `INTENTIONAL_PANIC`) and reports every other panic as usual.
pub const INTENTIONAL_PANIC: &str = "intentional test plugin panic";

pub fn quiet_intentional_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !text.contains(INTENTIONAL_PANIC) {
                default(info);
            }
        }));
    });
}

// ----- forging bytes for hostile-input tests --------------------------------

/// A KCP segment header as an attacker would forge it (window 128, frg 0).
pub fn kcp_header(
    conv: u32,
    cmd: gladius_kcp::segment::Command,
    sn: u32,
    una: u32,
    ts: u32,
) -> gladius_kcp::segment::SegmentHeader {
    gladius_kcp::segment::SegmentHeader {
        conv,
        cmd,
        frg: 0,
        wnd: 128,
        ts,
        sn,
        una,
        len: 0,
    }
}

/// One encoded KCP segment.
pub fn kcp_seg(h: gladius_kcp::segment::SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    gladius_kcp::segment::encode(&h, payload, &mut out).expect("a short payload encodes");
    out
}

/// The wire bytes of one frame.
pub fn frame_bytes(frame: &gladius_p2p::wire::Frame) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    frame.encode(&mut b);
    b.to_vec()
}

// ----- a socket wrapper that records what it sends and can inject ----------

#[derive(Debug, Default)]
pub struct TapState {
    /// Every datagram the node sent, with its destination.
    pub sent: Vec<(Vec<u8>, SocketAddr)>,
    /// Datagrams the node will receive before anything from the real
    /// socket, with the source address they pretend to come from.
    pub inject: VecDeque<(Vec<u8>, SocketAddr)>,
    pub waker: Option<Waker>,
}

/// The test's end of a [`TapSocket`].
#[derive(Debug, Clone, Default)]
pub struct Tap(Arc<Mutex<TapState>>);

impl Tap {
    /// Datagrams sent to `to`, in order.
    pub fn sent_to(&self, to: SocketAddr) -> Vec<Vec<u8>> {
        let s = self.0.lock().unwrap();
        s.sent
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(d, _)| d.clone())
            .collect()
    }
    /// Everything sent so far.
    pub fn all_sent(&self) -> Vec<Vec<u8>> {
        let s = self.0.lock().unwrap();
        s.sent.iter().map(|(d, _)| d.clone()).collect()
    }
    /// Make the node receive `datagram` as if it came from `from`.
    pub fn inject(&self, datagram: Vec<u8>, from: SocketAddr) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.inject.push_back((datagram, from));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A real UDP socket whose sends are recorded and whose receive side
/// returns injected datagrams first.
#[derive(Debug)]
pub struct TapSocket {
    pub inner: UdpSocket,
    pub tap: Tap,
}

impl DatagramSocket for TapSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        {
            let mut s = self.tap.0.lock().unwrap();
            if let Some((d, from)) = s.inject.pop_front() {
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                return Poll::Ready(Ok(from));
            }
            // The driver's last poll before it sleeps has its real waker.
            s.waker = Some(cx.waker().clone());
        }
        self.inner.poll_recv_from(cx, buf)
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.poll_send_to(cx, buf, target);
        if let Poll::Ready(Ok(_)) = r {
            self.tap.0.lock().unwrap().sent.push((buf.to_vec(), target));
        }
        r
    }
}

/// What a [`HookSocket`] does with one datagram and the address it comes
/// from or goes to: `true` lets it through.
pub type Hook = Box<dyn Fn(&[u8], SocketAddr) -> bool + Send + Sync>;

/// A real UDP socket with a hook on each side, for the paths tests need:
/// a received datagram that `recv` refuses is lost (as a lossy path, a
/// firewall or an older node would lose it); a datagram to send that
/// `send` refuses is dropped and reported sent (as a firewall would). A
/// hook may also just look, and record what passes.
pub struct HookSocket {
    pub inner: UdpSocket,
    pub recv: Hook,
    pub send: Hook,
}

impl std::fmt::Debug for HookSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl HookSocket {
    /// Bound to an ephemeral port on 127.0.0.1, letting everything through.
    pub async fn bind() -> Self {
        Self {
            inner: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            recv: Box::new(|_, _| true),
            send: Box::new(|_, _| true),
        }
    }
    /// The same hooks on `inner` (a socket bound elsewhere) instead.
    pub fn with_inner(mut self, inner: UdpSocket) -> Self {
        self.inner = inner;
        self
    }
    /// Receive only what `keep(datagram, from)` lets through.
    pub fn on_recv(
        mut self,
        keep: impl Fn(&[u8], SocketAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.recv = Box::new(keep);
        self
    }
    /// Send only what `keep(datagram, to)` lets through.
    pub fn on_send(
        mut self,
        keep: impl Fn(&[u8], SocketAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.send = Box::new(keep);
        self
    }
}

impl DatagramSocket for HookSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        loop {
            let start = buf.filled().len();
            match self.inner.poll_recv_from(cx, buf) {
                Poll::Ready(Ok(from)) if !(self.recv)(&buf.filled()[start..], from) => {
                    buf.set_filled(start);
                }
                other => return other,
            }
        }
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if !(self.send)(buf, target) {
            return Poll::Ready(Ok(buf.len()));
        }
        self.inner.poll_send_to(cx, buf, target)
    }
}

/// A node on a [`TapSocket`] with a recorder plugin.
pub async fn tapped_node(config: Config) -> (Network, SocketAddr, Recorder, Tap) {
    let tap = Tap::default();
    let socket = TapSocket {
        inner: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        tap: tap.clone(),
    };
    let (net, addr, rec) = node_on(config, socket).await;
    (net, addr, rec, tap)
}

// ----- measuring a node under attack ------------------------------------------

/// The process's resident set size in bytes (`VmRSS`), 0 if unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// What a paced echo load measured.
#[derive(Debug, Clone, Default)]
pub struct EchoFigures {
    /// Requests sent.
    pub sent: u64,
    /// Replies received in time.
    pub answered: u64,
    /// Round trips of the answered ones, ms, sorted.
    pub rtts_ms: Vec<f64>,
}

impl EchoFigures {
    /// The `q` quantile of the round trips, ms (0 without any).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.rtts_ms.is_empty() {
            return 0.0;
        }
        let i = ((self.rtts_ms.len() - 1) as f64 * q).round() as usize;
        self.rtts_ms[i.min(self.rtts_ms.len() - 1)]
    }
    /// The figures of two loads together (e.g. quiet windows before and
    /// after an attack).
    pub fn merged(mut self, other: EchoFigures) -> EchoFigures {
        self.sent += other.sent;
        self.answered += other.answered;
        self.rtts_ms.extend(other.rtts_ms);
        self.rtts_ms.sort_by(f64::total_cmp);
        self
    }
    /// Answered / sent.
    pub fn ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.answered as f64 / self.sent as f64
    }
}

impl std::fmt::Display for EchoFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} answered ({:.1}%), rtt p50 {:.2} ms, p99 {:.2} ms",
            self.answered,
            self.sent,
            100.0 * self.ratio(),
            self.quantile(0.5),
            self.quantile(0.99)
        )
    }
}

/// A legitimate peer's traffic: `from` sends `to` an echo request every
/// `every`, each waiting up to `timeout` for its reply (the [`Recorder`]
/// answers requests of type "echo"). Runs until [`EchoLoad::finish`].
pub struct EchoLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<EchoFigures>,
}

impl EchoLoad {
    pub fn start(from: Network, to: SocketAddr, every: Duration, timeout: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut asks = Vec::new();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (net, body) = (from.clone(), i.to_string());
                    asks.push(tokio::spawn(async move {
                        let started = tokio::time::Instant::now();
                        let msg = gladius_p2p::Message::new("echo", body.clone()).unwrap();
                        match net.request(msg, to, timeout).await {
                            Ok(r) if r.message().body() == body.as_bytes() => {
                                Some(started.elapsed().as_secs_f64() * 1e3)
                            }
                            _ => None,
                        }
                    }));
                    i += 1;
                }
                let mut figures = EchoFigures::default();
                for ask in asks {
                    figures.sent += 1;
                    if let Ok(Some(rtt)) = ask.await {
                        figures.answered += 1;
                        figures.rtts_ms.push(rtt);
                    }
                }
                figures.rtts_ms.sort_by(f64::total_cmp);
                figures
            })
        };
        Self { stop, task }
    }

    /// Stop sending; wait for the last replies; the figures.
    pub async fn finish(self) -> EchoFigures {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
