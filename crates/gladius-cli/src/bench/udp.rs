//! Raw-UDP baselines: the same work as the gladius scenarios with no
//! protocol at all, on 127.0.0.1. Each comes in two flavours: blocking std
//! sockets on two threads (the physical limit of the machine) and tokio
//! sockets, each on its own thread with its own current-thread runtime (the
//! layout the gladius nodes run in).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gladius_p2p::DatagramSocket as _;

use super::node::{now_ns, runtime};

/// Socket buffers of the baselines: the same as a gladius node's default.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// A receiver that hears nothing for this long decides the sender is done.
const QUIET: Duration = Duration::from_millis(300);

/// Which socket API a baseline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// Blocking std sockets.
    Blocking,
    /// tokio sockets on current-thread runtimes.
    Tokio,
    /// tokio sockets with UDP segmentation offload (GSO/GRO, through
    /// gladius' `BatchUdpSocket`): up to 64 datagrams per send call. One-way
    /// only: the batched-I/O limit that gladius' own batching competes with.
    Gso,
}

impl Api {
    /// Its name in the output.
    pub(super) fn name(self) -> &'static str {
        match self {
            Api::Blocking => "blocking",
            Api::Tokio => "tokio",
            Api::Gso => "gso",
        }
    }
}

/// A std UDP socket on 127.0.0.1 with [`SOCKET_BUFFER`] buffers.
fn bind() -> Result<UdpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("udp socket: {e}"))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    socket
        .bind(&addr.into())
        .map_err(|e| format!("udp bind: {e}"))?;
    Ok(socket.into())
}

fn tokio_socket(socket: UdpSocket) -> Result<tokio::net::UdpSocket, String> {
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    tokio::net::UdpSocket::from_std(socket).map_err(|e| format!("tokio socket: {e}"))
}

fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T, String>>, String> {
    std::thread::Builder::new()
        .name("bench-udp".into())
        .spawn(f)
        .map_err(|e| format!("cannot spawn a thread: {e}"))
}

fn join<T>(h: std::thread::JoinHandle<Result<T, String>>) -> Result<T, String> {
    h.join()
        .map_err(|_| "a baseline thread panicked".to_string())?
}

/// Ping-pong: `warmup + rounds` sequential round trips of `size`-byte
/// datagrams echoed by a second thread; returns the last `rounds` round-trip
/// times in ns.
pub(super) fn ping_pong(
    api: Api,
    size: usize,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<u64>, String> {
    if api == Api::Gso {
        return Err("the GSO baseline is one-way only".into());
    }
    let total = warmup + rounds;
    let echo_socket = bind()?;
    let echo_addr = echo_socket.local_addr().map_err(|e| e.to_string())?;
    let client_socket = bind()?;
    let echo = spawn(move || match api {
        Api::Blocking => {
            let mut buf = vec![0u8; 65_536];
            echo_socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            for _ in 0..total {
                let (n, from) = echo_socket
                    .recv_from(&mut buf)
                    .map_err(|e| format!("echo recv: {e}"))?;
                echo_socket
                    .send_to(&buf[..n], from)
                    .map_err(|e| format!("echo send: {e}"))?;
            }
            Ok(())
        }
        Api::Tokio | Api::Gso => runtime()?.block_on(async move {
            let s = tokio_socket(echo_socket)?;
            let mut buf = vec![0u8; 65_536];
            for _ in 0..total {
                let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
                    .await
                    .map_err(|_| "echo recv timed out".to_string())?
                    .map_err(|e| format!("echo recv: {e}"))?;
                s.send_to(&buf[..n], from)
                    .await
                    .map_err(|e| format!("echo send: {e}"))?;
            }
            Ok(())
        }),
    })?;
    let client = spawn(move || {
        let body = vec![7u8; size];
        let mut buf = vec![0u8; 65_536];
        let mut samples = Vec::with_capacity(rounds);
        match api {
            Api::Blocking => {
                client_socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                for i in 0..total {
                    let t = Instant::now();
                    client_socket
                        .send_to(&body, echo_addr)
                        .map_err(|e| format!("send: {e}"))?;
                    client_socket
                        .recv_from(&mut buf)
                        .map_err(|e| format!("recv: {e}"))?;
                    if i >= warmup {
                        samples.push(t.elapsed().as_nanos() as u64);
                    }
                }
                Ok(samples)
            }
            Api::Tokio | Api::Gso => runtime()?.block_on(async move {
                let s = tokio_socket(client_socket)?;
                for i in 0..total {
                    let t = Instant::now();
                    s.send_to(&body, echo_addr)
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                    tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
                        .await
                        .map_err(|_| "recv timed out (datagram lost?)".to_string())?
                        .map_err(|e| format!("recv: {e}"))?;
                    if i >= warmup {
                        samples.push(t.elapsed().as_nanos() as u64);
                    }
                }
                Ok(samples)
            }),
        }
    })?;
    let samples = join(client)?;
    join(echo)?;
    Ok(samples)
}

/// What a one-way baseline receiver counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    /// Datagrams sent.
    pub(super) sent: u64,
    /// Datagrams received (the rest overflowed a buffer: UDP drops).
    pub(super) received: u64,
    /// Seconds from the first send to the last datagram received.
    pub(super) secs: f64,
}

impl Received {
    /// Datagrams received per second.
    pub(super) fn msgs_per_s(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }
    /// Share of datagrams lost, in percent.
    pub(super) fn lost_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received.min(self.sent)) as f64 * 100.0 / self.sent as f64
        }
    }
}

/// Receive on `sockets` until `expected` datagrams arrived or all went
/// quiet for [`QUIET`]; count into `count` and stamp `last_ns`.
fn receive(
    api: Api,
    sockets: Vec<UdpSocket>,
    expected: u64,
    count: Arc<AtomicU64>,
    last_ns: Arc<AtomicU64>,
) -> Result<(), String> {
    match api {
        Api::Blocking => {
            // Blocking receivers: one thread per socket (only used with one
            // socket per scenario for the blocking API, see fanout).
            let mut handles = Vec::new();
            for s in sockets {
                let count = count.clone();
                let last_ns = last_ns.clone();
                handles.push(spawn(move || {
                    s.set_read_timeout(Some(QUIET)).map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; 65_536];
                    while count.load(Ordering::Relaxed) < expected {
                        match s.recv_from(&mut buf) {
                            Ok(_) => {
                                last_ns.store(now_ns(), Ordering::Relaxed);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => break, // quiet: the sender is done
                        }
                    }
                    Ok(())
                })?);
            }
            handles.into_iter().try_for_each(join)
        }
        Api::Gso => runtime()?.block_on(async move {
            // One receiver (throughput): runs of datagrams per call (GRO).
            let mut storage = vec![0u8; 65_536];
            for s in sockets {
                let s = gladius_p2p::BatchUdpSocket::new(tokio_socket(s)?)
                    .map_err(|e| format!("batch socket: {e}"))?;
                while count.load(Ordering::Relaxed) < expected {
                    let mut rb = tokio::io::ReadBuf::new(&mut storage);
                    let recv = std::future::poll_fn(|cx| s.poll_recv_segments(cx, &mut rb));
                    match tokio::time::timeout(QUIET, recv).await {
                        Ok(Ok((_, stride))) => {
                            let datagrams = rb.filled().len().div_ceil(stride.max(1)).max(1);
                            last_ns.store(now_ns(), Ordering::Relaxed);
                            count.fetch_add(datagrams as u64, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }
            Ok(())
        }),
        Api::Tokio => {
            // One receiver: a current-thread runtime, like one gladius
            // node; many (fan-out): a multi-thread one, like the gladius
            // fan-out receivers.
            let rt = if sockets.len() == 1 {
                runtime()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
            };
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for s in sockets {
                    let s = tokio_socket(s)?;
                    let count = count.clone();
                    let last_ns = last_ns.clone();
                    tasks.spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while count.load(Ordering::Relaxed) < expected {
                            match tokio::time::timeout(QUIET, s.recv_from(&mut buf)).await {
                                Ok(Ok(_)) => {
                                    last_ns.store(now_ns(), Ordering::Relaxed);
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => break,
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
                Ok(())
            })
        }
    }
}

/// One-way stream: one thread sends `count` datagrams of `size` bytes to
/// each of `receivers` sockets (1 for throughput, N for fan-out) as fast as
/// it can; the receivers count what arrives ("as received").
pub(super) fn one_way(
    api: Api,
    size: usize,
    count: u64,
    receivers: usize,
) -> Result<Received, String> {
    let sockets = (0..receivers)
        .map(|_| bind())
        .collect::<Result<Vec<_>, _>>()?;
    let targets = sockets
        .iter()
        .map(|s| s.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let expected = count * receivers as u64;
    let got = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    // Blocking fan-out to many receivers would need one thread each; the
    // receivers of a fan-out always run on tokio (like the gladius ones).
    let recv_api = if receivers > 1 && api != Api::Tokio {
        Api::Tokio
    } else {
        api
    };
    let receiver = {
        let (got, last_ns) = (got.clone(), last_ns.clone());
        spawn(move || receive(recv_api, sockets, expected, got, last_ns))?
    };
    std::thread::sleep(Duration::from_millis(20)); // let the receivers block
    let sender_socket = bind()?;
    let sender = spawn(move || {
        let body = vec![7u8; size];
        let start = now_ns();
        match api {
            Api::Blocking => {
                for _ in 0..count {
                    for t in &targets {
                        // A full buffer is loss, as on a real link.
                        let _ = sender_socket.send_to(&body, t);
                    }
                }
            }
            Api::Tokio => runtime()?.block_on(async move {
                let s = tokio_socket(sender_socket)?;
                for _ in 0..count {
                    for t in &targets {
                        let _ = s.send_to(&body, t).await;
                    }
                }
                Ok::<(), String>(())
            })?,
            Api::Gso => runtime()?.block_on(async move {
                let s = gladius_p2p::BatchUdpSocket::new(tokio_socket(sender_socket)?)
                    .map_err(|e| format!("batch socket: {e}"))?;
                let per_call = s.max_send_segments().min(65_000 / size.max(1)).max(1);
                let run = body.repeat(per_call);
                for t in &targets {
                    let mut left = count;
                    while left > 0 {
                        let n = per_call.min(usize::try_from(left).unwrap_or(per_call));
                        let send = |cx: &mut std::task::Context<'_>| {
                            s.poll_send_segments(cx, &run[..n * size], size, *t)
                        };
                        // A full buffer is loss, as on a real link.
                        let _ = std::future::poll_fn(send).await;
                        left -= n as u64;
                    }
                }
                Ok::<(), String>(())
            })?,
        }
        Ok(start)
    })?;
    let start = join(sender)?;
    join(receiver)?;
    let received = got.load(Ordering::Relaxed);
    let last = last_ns.load(Ordering::Relaxed);
    Ok(Received {
        sent: expected,
        received,
        secs: last.saturating_sub(start) as f64 / 1e9,
    })
}
