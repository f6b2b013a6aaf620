//! The datagram socket seam: the driver talks to a [`DatagramSocket`], which
//! is a real UDP socket in production and an in-memory, fault-injecting link
//! ([`MemoryNetwork`]) in tests.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::ReadBuf;
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

    /// Receive into several buffers in one call where the socket can
    /// (Linux `recvmmsg`): each buffer gets what one
    /// [`poll_recv_segments`](Self::poll_recv_segments) call would, and
    /// `arrivals[i]` says what `bufs[i]` got. Returns how many buffers were
    /// filled, from the first: at least one, at most the shorter of the two
    /// slices. The default fills the first buffer only.
    ///
    /// A socket that fills fewer buffers than it was given has found
    /// nothing more queued, so it may answer the next call `Pending`
    /// without asking the kernel again until more arrives.
    /// [`BatchUdpSocket`] does: a reader that drains the socket saves the
    /// receive that would only have said "nothing more".
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        arrivals: &mut [Arrival],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(arrival)) = (bufs.first_mut(), arrivals.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut rb = ReadBuf::new(buf);
        let (from, stride) = std::task::ready!(self.poll_recv_segments(cx, &mut rb))?;
        *arrival = Arrival {
            from,
            len: rb.filled().len(),
            stride,
        };
        Poll::Ready(Ok(1))
    }
}

/// What one receive put in one buffer
/// ([`DatagramSocket::poll_recv_batch`]): `len` bytes from `from`, one
/// datagram every `stride` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The source of every datagram in the buffer.
    pub from: SocketAddr,
    /// Bytes received.
    pub len: usize,
    /// Size of every datagram but the last (at least 1).
    pub stride: usize,
}

impl Default for Arrival {
    fn default() -> Self {
        Self {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 1,
        }
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

#[cfg(unix)]
mod batch;
#[cfg(unix)]
pub use batch::BatchUdpSocket;

/// Bind a UDP socket as [`bind_udp`] does, with the kernel's offloads if
/// they can be turned on (a [`BatchUdpSocket`]), else the plain socket.
#[cfg(unix)]
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

/// Bind a UDP socket as [`bind_udp`] does: the plain socket, one datagram
/// per call (the batched socket is Unix-only).
#[cfg(not(unix))]
pub(crate) fn bind_batch_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> io::Result<Arc<dyn DatagramSocket>> {
    Ok(Arc::new(bind_udp(addr, buffer_bytes)?))
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
