//! Setting up one connection + one long-lived stream per library, on
//! loopback, as the libraries' docs recommend for speed.
//!
//! - rust-libp2p: `SwarmBuilder` with TCP (`TCP_NODELAY` on, the default,
//!   set explicitly) + Noise + Yamux, or QUIC; one stream of a custom
//!   protocol through `libp2p-stream`. `libp2p-yamux` exposes no window setting
//!   any more (yamux 0.14: stream receive windows grow by themselves (auto
//!   tuning) up to a 1 GiB connection window), so the defaults are used.
//! - plain TCP (`tcp`, bulk only): a tokio `TcpStream`, `TCP_NODELAY` on,
//!   no encryption, no multiplexing: the kernel's stream, the pace the
//!   encrypted libraries' bulk transfers are measured against.
//! - tokio_kcp: `KcpNoDelayConfig::fastest()` (nodelay, 10 ms interval, fast
//!   resend 2, no congestion control), flush on write and on ACK input,
//!   stream mode, 1024-segment windows, and 4 MiB UDP socket buffers (as
//!   gladius uses by default: kernel-default buffers overflow under a window
//!   of KCP segments and turn into loss). KCP refuses a single send of 128
//!   segments or more ("user's send buffer is too big"), so writes are
//!   handed to it in pieces of at most 64 KiB.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use libp2p::core::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity::Keypair, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio_kcp::{KcpConfig, KcpListener, KcpNoDelayConfig, KcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::framing::BoxedStream;

/// The protocol name of the benchmark stream.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/peers-bench/1.0.0");

/// Which library, and which of its transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// rust-libp2p over TCP, Noise XX, Yamux.
    Libp2pTcp,
    /// rust-libp2p over QUIC (TLS 1.3 inside QUIC).
    Libp2pQuic,
    /// tokio_kcp, plaintext KCP over UDP.
    Kcp,
    /// The kernel's TCP, plaintext, no multiplexing (bulk reference).
    Tcp,
}

impl Transport {
    /// The `library` field of the results.
    pub fn library(self) -> &'static str {
        match self {
            Transport::Libp2pTcp => "libp2p-tcp-noise-yamux",
            Transport::Libp2pQuic => "libp2p-quic",
            Transport::Kcp => "tokio_kcp",
            Transport::Tcp => "tcp",
        }
    }

    /// The `encrypted` field of the results.
    pub fn encrypted(self) -> bool {
        !matches!(self, Transport::Kcp | Transport::Tcp)
    }
}

/// Where the client finds the server.
#[derive(Debug, Clone)]
pub enum Addr {
    /// A libp2p listener.
    Libp2p(PeerId, Multiaddr),
    /// A KCP or TCP listener.
    Socket(SocketAddr),
}

/// A stream plus whatever must stay alive for it to work (the swarm task,
/// the KCP listener). Dropping it closes everything.
pub struct Endpoint {
    /// The benchmark stream.
    pub stream: BoxedStream,
    _guard: Box<dyn Any>,
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// UDP socket buffers of the KCP endpoints (the kernel caps them at
/// `net.core.{r,w}mem_max`).
const KCP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Largest write handed to KCP at once (it refuses 128 segments or more).
const KCP_MAX_WRITE: usize = 64 * 1024;

/// A stream whose writes are passed on in pieces of at most `max` bytes
/// (`write_all` loops over the partial writes).
struct CapWrites<S> {
    inner: S,
    max: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for CapWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CapWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.max);
        Pin::new(&mut self.inner).poll_write(cx, &buf[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A KCP stream as a futures-io [`BoxedStream`].
fn boxed_kcp(stream: KcpStream) -> BoxedStream {
    Box::new(CapWrites {
        inner: stream.compat(),
        max: KCP_MAX_WRITE,
    })
}

/// A loopback UDP socket with [`KCP_SOCKET_BUFFER`] buffers.
fn kcp_socket() -> Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol as IpProtocol, Socket, Type};
    let addr: SocketAddr = "127.0.0.1:0".parse().context("loopback address")?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(IpProtocol::UDP))?;
    socket.set_recv_buffer_size(KCP_SOCKET_BUFFER)?;
    socket.set_send_buffer_size(KCP_SOCKET_BUFFER)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(tokio::net::UdpSocket::from_std(socket.into())?)
}

/// The KCP configuration used on both sides.
fn kcp_config() -> KcpConfig {
    KcpConfig {
        nodelay: KcpNoDelayConfig::fastest(),
        wnd_size: (1024, 1024),
        flush_write: true,
        flush_acks_input: true,
        stream: true,
        ..KcpConfig::default()
    }
}

/// Builds a swarm for `transport` on the current tokio runtime.
pub fn build_swarm<B: NetworkBehaviour>(
    transport: Transport,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    Ok(match transport {
        Transport::Libp2pTcp => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(behaviour)
            .map_err(|e| anyhow!("behaviour: {e}"))?
            .with_swarm_config(idle)
            .build(),
        Transport::Libp2pQuic => builder
            .with_quic()
            .with_behaviour(behaviour)
            .map_err(|e| anyhow!("behaviour: {e}"))?
            .with_swarm_config(idle)
            .build(),
        Transport::Kcp | Transport::Tcp => bail!("{transport:?} is not a libp2p transport"),
    })
}

/// The loopback listen address of a libp2p transport.
fn listen_addr(transport: Transport) -> Result<Multiaddr> {
    let text = match transport {
        Transport::Libp2pQuic => "/ip4/127.0.0.1/udp/0/quic-v1",
        _ => "/ip4/127.0.0.1/tcp/0",
    };
    text.parse().context("listen address")
}

/// Starts listening and sends the address to the client through `addr_tx`.
/// Returns the swarm once it listens.
pub async fn libp2p_listen<B: NetworkBehaviour>(
    mut swarm: Swarm<B>,
    transport: Transport,
    addr_tx: &mpsc::Sender<Addr>,
) -> Result<Swarm<B>> {
    swarm.listen_on(listen_addr(transport)?)?;
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            addr_tx
                .send(Addr::Libp2p(*swarm.local_peer_id(), address))
                .map_err(|_| anyhow!("client gone"))?;
            return Ok(swarm);
        }
    }
}

/// Dials the server and waits until the connection is established.
pub async fn libp2p_dial<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: &Addr) -> Result<PeerId> {
    let Addr::Libp2p(peer, multiaddr) = addr else {
        bail!("not a libp2p address: {addr:?}");
    };
    swarm.dial(multiaddr.clone().with(Protocol::P2p(*peer)))?;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == *peer => {
                return Ok(*peer)
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial failed: {error}"),
            _ => {}
        }
    }
}

/// Drives a swarm in a task of the current runtime until aborted.
fn spawn_swarm<B>(mut swarm: Swarm<B>) -> AbortOnDrop
where
    B: NetworkBehaviour + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    }))
}

/// Server side: listens on loopback, announces the address, accepts one
/// stream.
pub async fn listen(transport: Transport, addr_tx: mpsc::Sender<Addr>) -> Result<Endpoint> {
    if transport == Transport::Tcp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx
            .send(Addr::Socket(listener.local_addr()?))
            .map_err(|_| anyhow!("client gone"))?;
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        return Ok(Endpoint {
            stream: Box::new(stream.compat()),
            _guard: Box::new(listener),
        });
    }
    if transport == Transport::Kcp {
        let mut listener = KcpListener::from_socket(kcp_config(), kcp_socket()?).await?;
        addr_tx
            .send(Addr::Socket(listener.local_addr()?))
            .map_err(|_| anyhow!("client gone"))?;
        let (stream, _) = listener.accept().await?;
        return Ok(Endpoint {
            stream: boxed_kcp(stream),
            _guard: Box::new(listener),
        });
    }
    let swarm = build_swarm(transport, |_| libp2p_stream::Behaviour::new())?;
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .map_err(|e| anyhow!("{e}"))?;
    let swarm = libp2p_listen(swarm, transport, &addr_tx).await?;
    let guard = spawn_swarm(swarm);
    let (_, stream) = incoming.next().await.context("no inbound stream")?;
    Ok(Endpoint {
        stream: Box::new(stream),
        _guard: Box::new(guard),
    })
}

/// Client side: connects to `addr` and opens one stream.
pub async fn connect(transport: Transport, addr: &Addr) -> Result<Endpoint> {
    if transport == Transport::Tcp {
        let Addr::Socket(socket) = addr else {
            bail!("not a socket address: {addr:?}");
        };
        let stream = tokio::net::TcpStream::connect(socket).await?;
        stream.set_nodelay(true)?;
        return Ok(Endpoint {
            stream: Box::new(stream.compat()),
            _guard: Box::new(()),
        });
    }
    if transport == Transport::Kcp {
        let Addr::Socket(socket) = addr else {
            bail!("not a socket address: {addr:?}");
        };
        let stream = KcpStream::connect_with_socket(&kcp_config(), kcp_socket()?, *socket).await?;
        return Ok(Endpoint {
            stream: boxed_kcp(stream),
            _guard: Box::new(()),
        });
    }
    let mut swarm = build_swarm(transport, |_| libp2p_stream::Behaviour::new())?;
    let mut control = swarm.behaviour().new_control();
    let peer = libp2p_dial(&mut swarm, addr).await?;
    let guard = spawn_swarm(swarm);
    let stream = control.open_stream(peer, PROTOCOL).await?;
    Ok(Endpoint {
        stream: Box::new(stream),
        _guard: Box::new(guard),
    })
}
