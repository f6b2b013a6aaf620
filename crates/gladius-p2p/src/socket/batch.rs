//! The batched UDP socket (GSO/GRO through `quinn-udp`), on Unix: it
//! registers with tokio's reactor for reading only (see
//! [`BatchUdpSocket`]), which needs a raw file descriptor.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};

use super::{Arrival, DatagramSocket};

/// A UDP socket that moves datagrams in batches: several datagrams to one
/// peer leave in one `sendmsg` (GSO) and arrive in one `recvmsg` (GRO) where
/// the kernel offers it (Linux), through [`quinn_udp`]. Elsewhere, or when
/// the kernel refuses, it sends and receives one datagram per call.
///
/// This is what [`Network::listen`](crate::Network::listen) binds. Datagrams
/// leave with the don't-fragment bit set (as QUIC's do), so the KCP `mtu`
/// plus the encryption overhead must fit the path MTU; the default (1400)
/// fits Ethernet's 1500. Unix only (it registers its file descriptor with
/// tokio's reactor itself); elsewhere `listen` binds tokio's plain
/// `UdpSocket`, one datagram per call.
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

/// Most buffers filled by one receive.
const MAX_RECV_BATCH: usize = 8;

/// Whether a batched receive that fills fewer buffers than it was given
/// proves the socket empty at that moment. On Linux `quinn_udp` receives
/// with `recvmmsg` on a non-blocking socket, which stops only at the last
/// buffer, at an error or when nothing is queued (an error still pending is
/// reported by the next receive; the one that set it woke the reactor).
/// Elsewhere it may receive one datagram per call whatever is queued.
const RECVMMSG_STOPS_WHEN_EMPTY: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl BatchUdpSocket {
    /// Wrap a bound, non-blocking tokio socket, turning on the kernel's
    /// offloads where it has them.
    pub fn new(io: tokio::net::UdpSocket) -> io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new((&io).into())?;
        Self::with_state(io, state)
    }

    pub(super) fn with_state(
        io: tokio::net::UdpSocket,
        state: quinn_udp::UdpSocketState,
    ) -> io::Result<Self> {
        tracing::debug!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP offloads"
        );
        drop_unused_control_messages(&io);
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
            // One datagram leaves through `sendto`: `quinn_udp` would add
            // an IP_TOS control message (ECN, unused here) that the kernel
            // parses on every send.
            let sent = if transmit.segment_size.is_none() {
                self.io.get_ref().send_to(buf, target).map(|_| ())
            } else {
                self.state.try_send(self.io.get_ref().into(), &transmit)
            };
            match sent {
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
        let mut arrival = [Arrival::default()];
        let filled = {
            let mut bufs = [io::IoSliceMut::new(buf.initialize_unfilled())];
            std::task::ready!(self.poll_recv_batch(cx, &mut bufs, &mut arrival))?
        };
        let [arrival] = arrival;
        if filled == 1 {
            buf.advance(arrival.len);
        }
        Poll::Ready(Ok((arrival.from, arrival.stride)))
    }
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        arrivals: &mut [Arrival],
    ) -> Poll<io::Result<usize>> {
        let slots = bufs.len().min(arrivals.len()).min(MAX_RECV_BATCH);
        if slots == 0 {
            return Poll::Ready(Ok(0));
        }
        loop {
            let mut guard = std::task::ready!(self.io.poll_read_ready(cx))?;
            let mut meta = [quinn_udp::RecvMeta::default(); MAX_RECV_BATCH];
            let received = guard.try_io(|io| {
                self.state
                    .recv(io.get_ref().into(), &mut bufs[..slots], &mut meta[..slots])
            });
            match received {
                Ok(Ok(filled)) => {
                    // `recvmmsg` fills at most the buffers it was given.
                    let filled = filled.min(slots);
                    for (arrival, meta) in arrivals.iter_mut().zip(meta.iter().take(filled)) {
                        *arrival = Arrival {
                            from: meta.addr,
                            len: meta.len,
                            stride: meta.stride.max(1),
                        };
                    }
                    if filled < slots && RECVMMSG_STOPS_WHEN_EMPTY {
                        // Nothing more was queued when the kernel looked.
                        // Whatever arrives later is a new edge for the
                        // reactor, and the guard clears only the readiness
                        // it saw, so nothing waits unread.
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(filled));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

/// Stop the kernel from attaching to every datagram received the control
/// messages `quinn_udp` turns on and this socket never reads: the TOS byte
/// or traffic class (ECN) and the destination address (`IP_PKTINFO`). Each
/// one costs every receive: together 0.24 µs of a 19 µs round trip with
/// both ends on one core, measured. GRO's stays. Failing to turn one off
/// (an IPv4 option on an IPv6 socket) only leaves it on.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn drop_unused_control_messages(io: &tokio::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = io.as_fd();
    let _ = setsockopt(&fd, sockopt::IpRecvTos, &false);
    let _ = setsockopt(&fd, sockopt::Ipv4PacketInfo, &false);
    let _ = setsockopt(&fd, sockopt::Ipv6RecvTClass, &false);
    let _ = setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &false);
}

/// Elsewhere the control messages stay as `quinn_udp` set them.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn drop_unused_control_messages(_io: &tokio::net::UdpSocket) {}

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
