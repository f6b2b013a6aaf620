//! `rtt` through `libp2p-request-response`: the library's request/response
//! API, which opens a new substream per request (that is its design).

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use libp2p::request_response::{self, Event, Message, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm};

use crate::transports::{build_swarm, libp2p_dial, libp2p_listen, Addr, Transport};

/// The protocol name of the request/response benchmark.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/peers-bench-rr/1.0.0");

/// Requests and responses are raw bytes behind a 4-byte length.
#[derive(Debug, Clone, Default)]
pub struct BytesCodec;

/// Reads one length-prefixed body.
async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 16 * 1024 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one length-prefixed body in a single write.
async fn write_body<T: AsyncWrite + Unpin + Send>(io: &mut T, body: Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "body too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    io.write_all(&buf).await?;
    io.flush().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_body(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_body(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_body(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_body(io, res).await
    }
}

/// The request/response behaviour of both sides.
type Behaviour = request_response::Behaviour<BytesCodec>;

/// A swarm with the request/response behaviour.
fn swarm(transport: Transport) -> Result<Swarm<Behaviour>> {
    build_swarm(transport, |_| {
        Behaviour::new(
            [(PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        )
    })
}

/// Server: answers every request with its own body until `done` resolves
/// (the client has finished).
pub async fn server(
    transport: Transport,
    addr_tx: mpsc::Sender<Addr>,
    done: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut swarm = libp2p_listen(swarm(transport)?, transport, &addr_tx).await?;
    tokio::pin!(done);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(Event::Message {
                    message: Message::Request { request, channel, .. },
                    ..
                }) = event
                {
                    if swarm.behaviour_mut().send_response(channel, request).is_err() {
                        bail!("response channel closed");
                    }
                }
            }
            () = &mut done => return Ok(()),
        }
    }
}

/// Client: `warmup` + `count` sequential requests of `size` bytes.
/// Returns the measured samples and the wall time of the measured part.
pub async fn client(
    transport: Transport,
    addr: &Addr,
    size: usize,
    warmup: usize,
    count: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let mut swarm = swarm(transport)?;
    let peer = libp2p_dial(&mut swarm, addr).await?;
    let body = vec![0xA5u8; size];
    crate::framing::measure_rounds(warmup, count, async || {
        let id = swarm.behaviour_mut().send_request(&peer, body.clone());
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => {
                    if response.len() != size {
                        bail!("response of {} bytes to {size}", response.len());
                    }
                    return Ok(());
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(error).context("request failed");
                }
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    bail!("connection closed: {cause:?}")
                }
                _ => {}
            }
        }
    })
    .await
}
