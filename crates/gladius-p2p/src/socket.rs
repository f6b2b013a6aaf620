//! The datagram socket seam: the driver talks to a [`DatagramSocket`], which
//! is a real UDP socket in production and an in-memory, fault-injecting link
//! ([`MemoryNetwork`]) in tests.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};
use tokio::sync::mpsc;

/// A datagram socket as the driver needs it. Implementations must be
/// non-blocking: `Poll::Pending` registers the waker.
pub trait DatagramSocket: Send + Sync + fmt::Debug + 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Receive one datagram into `buf`, returning its source.
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>>;
    /// Send one datagram to `target`.
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>>;

    /// How many datagrams one [`poll_send_segments`](Self::poll_send_segments)
    /// call may carry. 1 (the default) means no segmentation offload: the
    /// driver then sends every datagram on its own.
    fn max_send_segments(&self) -> usize {
        1
    }

    /// Send `buf` to `target` as consecutive datagrams of `segment_size`
    /// bytes each (the last may be shorter), in one call: UDP generic
    /// segmentation offload (GSO) on Linux. The driver never passes more
    /// than [`max_send_segments`](Self::max_send_segments) segments. The
    /// default handles the single-datagram case only.
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        segment_size: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        if buf.len() > segment_size {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this socket sends one datagram per call",
            )));
        }
        self.poll_send_to(cx, buf, target).map_ok(|_| ())
    }

    /// Receive one or more datagrams from one source into `buf`: returns the
    /// source and the stride, the size of every datagram in the filled part
    /// but the last, which may be shorter. With UDP generic receive offload
    /// (GRO) the kernel hands over a run of datagrams of one flow at once,
    /// up to 64 KiB, so `buf` should have room for 64 KiB (the driver's
    /// has). The default receives one datagram per call.
    fn poll_recv_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<(SocketAddr, usize)>> {
        let before = buf.filled().len();
        self.poll_recv_from(cx, buf)
            .map_ok(|from| (from, buf.filled().len() - before))
    }
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        tokio::net::UdpSocket::poll_recv_from(self, cx, buf)
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        tokio::net::UdpSocket::poll_send_to(self, cx, buf, target)
    }
}

/// A UDP socket that moves datagrams in batches: several datagrams to one
/// peer leave in one `sendmsg` (GSO) and arrive in one `recvmsg` (GRO) where
/// the kernel offers it (Linux), through [`quinn_udp`]. Elsewhere, or when
/// the kernel refuses, it sends and receives one datagram per call.
///
/// This is what [`Network::listen`](crate::Network::listen) binds. Datagrams
/// leave with the don't-fragment bit set (as QUIC's do), so the KCP `mtu`
/// plus the encryption overhead must fit the path MTU; the default (1400)
/// fits Ethernet's 1500.
///
/// The socket is registered with the runtime for reading only. A UDP
/// socket is writable nearly always, and a registration for writing hears
/// of it after every datagram sent (the kernel frees the buffer and wakes
/// the poller): one more `epoll_wait` return per send, on the path of
/// every round trip. Only a send that finds the buffer full registers,
/// for as long as it waits, a duplicate of the socket for writing.
#[derive(Debug)]
pub struct BatchUdpSocket {
    io: AsyncFd<std::net::UdpSocket>,
    state: quinn_udp::UdpSocketState,
    /// While a send waits for room in the socket's buffer: the duplicate
    /// registered for writing. `waiting` says whether there is one, so
    /// that a send takes the lock only after a full buffer.
    room: Mutex<Option<AsyncFd<OwnedFd>>>,
    waiting: AtomicBool,
}

/// Most datagrams handed to the kernel in one GSO send (Linux accepts 64).
const MAX_GSO_SEGMENTS: usize = 64;

impl BatchUdpSocket {
    /// Wrap a bound, non-blocking tokio socket, turning on the kernel's
    /// offloads where it has them.
    pub fn new(io: tokio::net::UdpSocket) -> io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new((&io).into())?;
        Self::with_state(io, state)
    }

    fn with_state(io: tokio::net::UdpSocket, state: quinn_udp::UdpSocketState) -> io::Result<Self> {
        tracing::debug!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP offloads"
        );
        let io = register(io.into_std()?, Interest::READABLE)?;
        Ok(Self {
            io,
            state,
            room: Mutex::new(None),
            waiting: AtomicBool::new(false),
        })
    }

    /// Wait for room in the socket's send buffer: `Ready` when a send may
    /// go through again.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        let fd = match room.take() {
            Some(fd) => fd,
            None => {
                let dup = self.io.get_ref().as_fd().try_clone_to_owned()?;
                register(dup, Interest::WRITABLE)?
            }
        };
        let ready = match fd.poll_write_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
        *room = Some(fd);
        self.waiting.store(true, Ordering::Relaxed);
        ready
    }

    /// A send went through: stop listening for room.
    fn room_found(&self) {
        if self.waiting.swap(false, Ordering::Relaxed) {
            self.room
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
    }
}

impl DatagramSocket for BatchUdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        loop {
            let mut guard = std::task::ready!(self.io.poll_read_ready(cx))?;
            let received = guard.try_io(|io| io.get_ref().recv_from(buf.initialize_unfilled()));
            if let Ok(received) = received {
                return Poll::Ready(received.map(|(len, from)| {
                    buf.advance(len);
                    from
                }));
            }
        }
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        // One segment as long as the datagram: no segmentation.
        self.poll_send_segments(cx, buf, buf.len(), target)
            .map_ok(|()| buf.len())
    }
    fn max_send_segments(&self) -> usize {
        self.state.max_gso_segments().min(MAX_GSO_SEGMENTS)
    }
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        segment_size: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let transmit = quinn_udp::Transmit {
            destination: target,
            ecn: None,
            contents: buf,
            segment_size: (buf.len() > segment_size).then_some(segment_size),
            src_ip: None,
        };
        loop {
            match self.state.try_send(self.io.get_ref().into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.poll_room(cx))?;
                }
                other => {
                    self.room_found();
                    return Poll::Ready(other);
                }
            }
        }
    }
    fn poll_recv_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<(SocketAddr, usize)>> {
        loop {
            let mut guard = std::task::ready!(self.io.poll_read_ready(cx))?;
            let mut meta = [quinn_udp::RecvMeta::default()];
            let received = guard.try_io(|io| {
                let mut bufs = [io::IoSliceMut::new(buf.initialize_unfilled())];
                self.state.recv(io.get_ref().into(), &mut bufs, &mut meta)
            });
            match received {
                Ok(Ok(_)) => {
                    let [meta] = meta;
                    buf.advance(meta.len);
                    return Poll::Ready(Ok((meta.addr, meta.stride.max(1))));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

/// Register `fd` with the runtime for `interest` only.
///
/// tokio 1.54 deprecates `AsyncFd::with_interest` for `unsafe`
/// `register_with_interest` (tokio#8587): the descriptor must stay open
/// and the same while registered, which a type could break by changing
/// what `as_raw_fd` returns. The two types registered here, std's
/// `UdpSocket` and `OwnedFd`, own one descriptor for life, and this crate
/// forbids `unsafe`.
#[allow(deprecated)]
fn register<T: AsRawFd>(fd: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(fd, interest)
}

/// Bind a UDP socket as [`bind_udp`] does, with the kernel's offloads if
/// they can be turned on (a [`BatchUdpSocket`]), else the plain socket.
pub(crate) fn bind_batch_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> io::Result<Arc<dyn DatagramSocket>> {
    let io = bind_udp(addr, buffer_bytes)?;
    match quinn_udp::UdpSocketState::new((&io).into()) {
        Ok(state) => Ok(Arc::new(BatchUdpSocket::with_state(io, state)?)),
        Err(e) => {
            tracing::debug!("UDP offloads unavailable, one datagram per call: {e}");
            Ok(Arc::new(io))
        }
    }
}

/// Bind a UDP socket with send and receive buffers of `buffer_bytes`
/// requested (the kernel caps them at `net.core.{r,w}mem_max`; the effective
/// sizes are logged).
pub(crate) fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A large window of KCP segments arrives in bursts; kernel-default
    // buffers (about 208 KiB) overflow and turn into loss.
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::debug!("could not set SO_RCVBUF: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::debug!("could not set SO_SNDBUF: {e}");
    }
    tracing::debug!(
        rcvbuf = socket.recv_buffer_size().ok(),
        sndbuf = socket.send_buffer_size().ok(),
        "socket buffers"
    );
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Faults applied by a [`MemoryNetwork`] to every datagram, drawn from its
/// seeded RNG so a run is reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFaults {
    /// Probability a datagram is dropped (0.0..=1.0).
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by an extra `reorder_delay`, so
    /// later ones overtake it.
    pub reorder: f64,
    /// Extra delay of reordered datagrams.
    pub reorder_delay: Duration,
    /// Base one-way delay of every datagram.
    pub delay: Duration,
}

/// Datagrams one in-memory socket can hold before it drops, like a full
/// kernel receive buffer.
const MEMORY_INBOX: usize = 8192;

type Inbox = mpsc::Sender<(Bytes, SocketAddr)>;

#[derive(Debug)]
struct Hub {
    inboxes: HashMap<SocketAddr, Inbox>,
    faults: LinkFaults,
    rng: StdRng,
}

/// An in-memory datagram network for tests: sockets bound on it exchange
/// datagrams through channels, with seeded loss, duplication, reordering and
/// delay. Delays use tokio's clock, so `tokio::time::pause` makes runs
/// deterministic in virtual time.
#[derive(Debug, Clone)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemoryNetwork {
    /// A network whose fault RNG starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                inboxes: HashMap::new(),
                faults: LinkFaults::default(),
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// Change the faults applied from now on.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    /// A socket bound to `addr` on this network.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let mut hub = self.lock();
        if hub.inboxes.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "address in use"));
        }
        let (tx, rx) = mpsc::channel(MEMORY_INBOX);
        hub.inboxes.insert(addr, tx);
        Ok(MemorySocket {
            addr,
            network: self.clone(),
            inbox: Mutex::new(rx),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let mut hub = self.lock();
        let Some(inbox) = hub.inboxes.get(&to).cloned() else {
            return; // nobody there: lost, as on a real network
        };
        let faults = hub.faults;
        if hub.rng.gen_bool(faults.loss.clamp(0.0, 1.0)) {
            return;
        }
        let copies = if hub.rng.gen_bool(faults.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        let mut delay = faults.delay;
        if hub.rng.gen_bool(faults.reorder.clamp(0.0, 1.0)) {
            delay += faults.reorder_delay;
        }
        drop(hub);
        let data = Bytes::copy_from_slice(data);
        for _ in 0..copies {
            if delay.is_zero() {
                let _ = inbox.try_send((data.clone(), from));
            } else {
                let inbox = inbox.clone();
                let data = data.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = inbox.try_send((data, from));
                });
            }
        }
    }
}

/// A socket on a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemorySocket {
    addr: SocketAddr,
    network: MemoryNetwork,
    inbox: Mutex<mpsc::Receiver<(Bytes, SocketAddr)>>,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.network.lock().inboxes.remove(&self.addr);
    }
}

impl DatagramSocket for MemorySocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        match inbox.poll_recv(cx) {
            Poll::Ready(Some((data, from))) => {
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                Poll::Ready(Ok(from))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.network.send(self.addr, target, buf);
        Poll::Ready(Ok(buf.len()))
    }
}
