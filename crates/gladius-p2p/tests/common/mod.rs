//! Helpers shared by the integration tests: a recording plugin and waits
//! with deadlines (never fixed sleeps as assertions).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gladius_p2p::{async_trait, Config, Network, PeerInfo, PeerReason, Plugin, Received};

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
    gladius_kcp::segment::encode(&h, payload, &mut out);
    out
}

/// The wire bytes of one frame.
pub fn frame_bytes(frame: &gladius_p2p::wire::Frame) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    frame.encode(&mut b);
    b.to_vec()
}
