//! The simulated network: hosts bound at addresses, links with a one-way
//! latency, loss, duplication, reordering and uplink bandwidth, partitions,
//! and crashed hosts whose sockets go silent. Every datagram in flight waits
//! in one heap ordered by (delivery time, sequence number); one task, the
//! [`SimNetwork::run_deliveries`] loop, hands them to the receiving sockets
//! in that order. Nodes talk to it through [`SimSocket`], a
//! [`DatagramSocket`].
//!
//! Time is tokio's (paused in a simulation), counted in microseconds since
//! the network was created. Every random draw comes from one seeded RNG, in
//! the order the (deterministically scheduled) nodes send, and the trace of
//! deliveries and lifecycle events is folded into a [`TraceDigest`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use gladius_p2p::DatagramSocket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::ReadBuf;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::trace::{Lifecycle, TraceDigest};

/// Datagrams one simulated socket holds before it drops more, like a full
/// kernel receive buffer (the driver reads them in bursts of 64).
pub const INBOX_LEN: usize = 4096;

/// How one-way link latencies are drawn. Each (unordered) pair of hosts
/// gets one latency, fixed for the run and the same in both directions,
/// derived from the seed and the two addresses (so it costs no memory and
/// does not depend on who sends first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyModel {
    /// Uniform between `min` and `max`.
    Uniform {
        /// Shortest one-way latency.
        min: Duration,
        /// Longest one-way latency.
        max: Duration,
    },
    /// Log-uniform between `min` and `max`: as many links under 20 ms as
    /// between 40 and 150 ms with the default bounds, the shape of the
    /// wide-area internet seen from one host (close peers are common, the
    /// other side of the planet is far).
    LogUniform {
        /// Shortest one-way latency.
        min: Duration,
        /// Longest one-way latency.
        max: Duration,
    },
}

impl Default for LatencyModel {
    /// WAN-like: log-uniform from 5 to 150 ms one way.
    fn default() -> Self {
        LatencyModel::LogUniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(150),
        }
    }
}

impl LatencyModel {
    /// The latency for a uniform draw `u` in `0.0..1.0`, in microseconds.
    fn sample_us(&self, u: f64) -> u64 {
        match *self {
            LatencyModel::Uniform { min, max } => {
                let (lo, hi) = (micros(min) as f64, micros(max.max(min)) as f64);
                (lo + u * (hi - lo)) as u64
            }
            LatencyModel::LogUniform { min, max } => {
                let lo = (micros(min).max(1) as f64).ln();
                let hi = (micros(max.max(min)).max(1) as f64).ln();
                (lo + u * (hi - lo)).exp() as u64
            }
        }
    }
}

/// Faults and limits of every link. Defaults: WAN-like latency, no loss,
/// no duplication, no reordering, unlimited bandwidth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way latency per pair of hosts.
    pub latency: LatencyModel,
    /// Probability a datagram is lost (0.0..=1.0).
    pub loss: f64,
    /// Probability a datagram arrives twice (the copy 1 ms later).
    pub duplicate: f64,
    /// Probability a datagram is held back by up to `reorder_delay` more,
    /// so later ones overtake it.
    pub reorder: f64,
    /// Longest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Every host's uplink in bytes per second: datagrams leave one after
    /// another at this rate. `None`: unlimited.
    pub uplink_bytes_per_s: Option<u64>,
    /// Most time a datagram may wait in a host's uplink queue; past it the
    /// datagram is dropped (a full router queue).
    pub max_queue_delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: LatencyModel::default(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(50),
            uplink_bytes_per_s: None,
            max_queue_delay: Duration::from_millis(200),
        }
    }
}

/// What the network carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network by live sockets.
    pub sent: u64,
    /// Datagrams delivered into a socket's inbox.
    pub delivered: u64,
    /// Bytes of the delivered datagrams.
    pub delivered_bytes: u64,
    /// Datagrams lost to the loss probability.
    pub lost: u64,
    /// Datagrams dropped by a full uplink queue.
    pub queue_drops: u64,
    /// Datagrams dropped because the hosts were in different partitions
    /// when they arrived.
    pub partitioned: u64,
    /// Datagrams to nobody: no host at the address, or a crashed one.
    pub unreachable: u64,
    /// Datagrams dropped by a full inbox.
    pub inbox_drops: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
}

#[derive(Debug)]
struct Host {
    /// Bumped at every crash and restart: sockets of an older generation
    /// are silent.
    generation: u64,
    alive: bool,
    inbox: VecDeque<(Bytes, SocketAddr)>,
    waker: Option<Waker>,
    /// Partition group; datagrams cross only within a group.
    group: u32,
    /// When the uplink is free again, in µs.
    uplink_free_at: u64,
}

/// One datagram in flight, ordered by (delivery time, sequence).
#[derive(Debug)]
struct InFlight {
    at: u64,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
struct Hub {
    seed: u64,
    links: LinkConfig,
    rng: StdRng,
    epoch: Instant,
    /// Looked up by address only, never iterated: its order cannot leak
    /// into the run.
    hosts: HashMap<SocketAddr, Host>,
    heap: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    stats: NetStats,
    trace: TraceDigest,
}

/// A simulated network. Cheap to clone; every clone is the same network.
/// Create it inside the (paused) runtime and spawn
/// [`run_deliveries`](Self::run_deliveries) once.
#[derive(Debug, Clone)]
pub struct SimNetwork {
    hub: Arc<Mutex<Hub>>,
    /// Wakes the delivery loop when a datagram may be due before the one it
    /// sleeps for.
    wake: Arc<Notify>,
}

impl SimNetwork {
    /// A network whose every random draw derives from `seed`.
    pub fn new(seed: u64, links: LinkConfig) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                seed,
                links,
                rng: StdRng::seed_from_u64(seed),
                epoch: Instant::now(),
                hosts: HashMap::new(),
                heap: BinaryHeap::new(),
                seq: 0,
                stats: NetStats::default(),
                trace: TraceDigest::new(),
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the link faults from now on (datagrams in flight keep theirs).
    pub fn set_links(&self, links: LinkConfig) {
        self.lock().links = links;
    }

    /// The link faults in force.
    pub fn links(&self) -> LinkConfig {
        self.lock().links
    }

    /// A socket at `addr`. An address whose host crashed may be bound
    /// again (a restart); a live one is in use.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<SimSocket> {
        let mut hub = self.lock();
        let now = hub.now_us();
        let generation = match hub.hosts.get_mut(&addr) {
            Some(host) if host.alive => {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "address in use"));
            }
            Some(host) => {
                host.generation += 1;
                host.alive = true;
                host.inbox.clear();
                host.waker = None;
                host.generation
            }
            None => {
                hub.hosts.insert(
                    addr,
                    Host {
                        generation: 0,
                        alive: true,
                        inbox: VecDeque::new(),
                        waker: None,
                        group: 0,
                        uplink_free_at: 0,
                    },
                );
                0
            }
        };
        hub.trace.lifecycle(now, Lifecycle::Bind, addr);
        Ok(SimSocket {
            addr,
            generation,
            network: self.clone(),
        })
    }

    /// Crash the host at `addr`: from now on its socket neither sends nor
    /// receives, and what was in its inbox is gone. The node itself must
    /// be dropped by the caller; it can no longer reach anyone, so its
    /// graceful close goes nowhere.
    pub fn crash(&self, addr: SocketAddr) {
        let mut hub = self.lock();
        let now = hub.now_us();
        if let Some(host) = hub.hosts.get_mut(&addr) {
            host.alive = false;
            host.generation += 1;
            host.inbox.clear();
            host.waker = None;
        }
        hub.trace.lifecycle(now, Lifecycle::Crash, addr);
    }

    /// Put the hosts in `groups[i]` in partition group `i`: datagrams between
    /// groups are dropped on arrival (those in flight too) until
    /// [`heal`](Self::heal). Hosts not named stay in their group.
    pub fn partition(&self, groups: &[Vec<SocketAddr>]) {
        let mut hub = self.lock();
        let now = hub.now_us();
        for (i, group) in groups.iter().enumerate() {
            for addr in group {
                if let Some(host) = hub.hosts.get_mut(addr) {
                    host.group = u32::try_from(i).unwrap_or(u32::MAX);
                }
            }
        }
        hub.trace
            .lifecycle_n(now, Lifecycle::Partition, groups.len());
    }

    /// End every partition: all hosts in one group again.
    pub fn heal(&self) {
        let mut hub = self.lock();
        let now = hub.now_us();
        for host in hub.hosts.values_mut() {
            host.group = 0;
        }
        hub.trace.lifecycle_n(now, Lifecycle::Heal, 0);
    }

    /// The counters so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// The digest of the trace so far, as hex: every delivered datagram
    /// (time, source, destination, length) and every bind, crash, partition
    /// and heal, in order.
    pub fn trace_digest(&self) -> String {
        self.lock().trace.hex()
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.lock().now_us())
    }

    /// The one-way latency between `a` and `b`.
    pub fn latency(&self, a: SocketAddr, b: SocketAddr) -> Duration {
        Duration::from_micros(self.lock().link_latency_us(a, b))
    }

    /// The delivery loop: sleeps until the earliest datagram in flight is
    /// due, hands every due datagram to its socket, repeats. Spawn it once;
    /// it runs until the runtime stops.
    pub async fn run_deliveries(self) {
        loop {
            let next = {
                let mut hub = self.lock();
                let now = hub.now_us();
                hub.deliver_due(now);
                hub.heap
                    .peek()
                    .map(|Reverse(d)| hub.epoch + Duration::from_micros(d.at))
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        biased;
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    fn send(&self, from: SocketAddr, generation: u64, to: SocketAddr, data: &[u8]) {
        let mut hub = self.lock();
        let Some(host) = hub.hosts.get(&from) else {
            return;
        };
        if !host.alive || host.generation != generation {
            return; // a crashed host's socket is silent
        }
        let earliest = hub.heap.peek().map(|Reverse(d)| d.at);
        if let Some(at) = hub.enqueue(from, to, data) {
            if earliest.is_none_or(|e| at < e) {
                self.wake.notify_one();
            }
        }
    }

    fn poll_recv(
        &self,
        addr: SocketAddr,
        generation: u64,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<SocketAddr> {
        let mut hub = self.lock();
        let Some(host) = hub.hosts.get_mut(&addr) else {
            return Poll::Pending;
        };
        if !host.alive || host.generation != generation {
            return Poll::Pending; // silent forever
        }
        match host.inbox.pop_front() {
            Some((data, from)) => {
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                Poll::Ready(from)
            }
            None => {
                host.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn unbind(&self, addr: SocketAddr, generation: u64) {
        let mut hub = self.lock();
        if let Some(host) = hub.hosts.get_mut(&addr) {
            if host.alive && host.generation == generation {
                // A node that closed: its address is free for a restart.
                host.alive = false;
                host.generation += 1;
                host.inbox.clear();
                host.waker = None;
            }
        }
    }
}

impl Hub {
    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    /// The fixed latency of the pair, from a hash of the seed and the two
    /// addresses in a canonical order.
    fn link_latency_us(&self, a: SocketAddr, b: SocketAddr) -> u64 {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let h = mix(mix(self.seed ^ addr_bits(lo)) ^ addr_bits(hi));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        self.links.latency.sample_us(u)
    }

    /// Decide the fate of one datagram; returns its delivery time if it
    /// goes in flight.
    fn enqueue(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<u64> {
        self.stats.sent += 1;
        let now = self.now_us();
        let links = self.links;
        // Every draw happens for every datagram, so one fault's probability
        // does not shift the others' random stream.
        let lost = self.rng.gen_bool(links.loss.clamp(0.0, 1.0));
        let duplicated = self.rng.gen_bool(links.duplicate.clamp(0.0, 1.0));
        let reordered = self.rng.gen_bool(links.reorder.clamp(0.0, 1.0));
        let held = self.rng.gen_range(0..=micros(links.reorder_delay));
        let latency = self.link_latency_us(from, to);
        let host = self.hosts.get_mut(&from)?;
        let mut departs = now;
        if let Some(rate) = links.uplink_bytes_per_s.filter(|r| *r > 0) {
            let start = host.uplink_free_at.max(now);
            if start - now > micros(links.max_queue_delay) {
                self.stats.queue_drops += 1;
                return None;
            }
            let wire = (data.len() as u64).saturating_mul(1_000_000) / rate;
            host.uplink_free_at = start + wire;
            departs = start + wire;
        }
        if lost {
            self.stats.lost += 1;
            return None;
        }
        let mut at = departs + latency;
        if reordered {
            at += held;
        }
        let data = Bytes::copy_from_slice(data);
        if duplicated {
            self.stats.duplicated += 1;
            self.push(at + 1000, from, to, data.clone());
        }
        self.push(at, from, to, data);
        Some(at)
    }

    fn push(&mut self, at: u64, from: SocketAddr, to: SocketAddr, data: Bytes) {
        self.seq += 1;
        self.heap.push(Reverse(InFlight {
            at,
            seq: self.seq,
            from,
            to,
            data,
        }));
    }

    fn deliver_due(&mut self, now: u64) {
        while self.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.heap.pop() else {
                break;
            };
            let from_group = self.hosts.get(&d.from).map(|h| h.group);
            let Some(host) = self.hosts.get_mut(&d.to).filter(|h| h.alive) else {
                self.stats.unreachable += 1;
                continue;
            };
            if from_group != Some(host.group) {
                self.stats.partitioned += 1;
                continue;
            }
            if host.inbox.len() >= INBOX_LEN {
                self.stats.inbox_drops += 1;
                continue;
            }
            let len = d.data.len();
            host.inbox.push_back((d.data, d.from));
            if let Some(waker) = host.waker.take() {
                waker.wake();
            }
            self.stats.delivered += 1;
            self.stats.delivered_bytes += len as u64;
            self.trace.datagram(d.at, d.from, d.to, len);
        }
    }
}

/// A socket on a [`SimNetwork`]. Dropping it (the node closed) frees the
/// address for a restart.
#[derive(Debug)]
pub struct SimSocket {
    addr: SocketAddr,
    generation: u64,
    network: SimNetwork,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.network.unbind(self.addr, self.generation);
    }
}

impl DatagramSocket for SimSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        self.network
            .poll_recv(self.addr, self.generation, cx, buf)
            .map(Ok)
    }
    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.network.send(self.addr, self.generation, target, buf);
        Poll::Ready(Ok(buf.len()))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// SplitMix64's finaliser: a cheap, well-spread 64-bit hash.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn addr_bits(addr: SocketAddr) -> u64 {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64)
        }
    };
    (ip << 16) | u64::from(addr.port())
}
