//! The two scenarios over any byte stream: length-prefixed frames
//! (`u32` big-endian length, then the body), the same for every library.
//!
//! A frame of length 0 ends a scenario. Every endpoint reads through a
//! 64 KiB `BufReader`, so small frames do not cost two reads each.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// A bidirectional byte stream (a libp2p substream, or a KCP stream
/// behind a tokio→futures adapter).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A boxed [`Duplex`]: one code path for all libraries.
pub type BoxedStream = Box<dyn Duplex>;

/// Read buffer of every endpoint, and write buffer of the coalescing sender.
const BUFFER: usize = 64 * 1024;

/// One message as it goes on the wire: 4-byte length, then `size` bytes.
fn frame(size: usize) -> Result<Vec<u8>> {
    let len = u32::try_from(size).context("message larger than 4 GiB")?;
    let mut buf = Vec::with_capacity(4 + size);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.resize(4 + size, 0xA5);
    Ok(buf)
}

/// Reads one frame into `body`; returns its length (0 = end of scenario).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>) -> Result<usize> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .context("reading frame length")?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 * 1024 * 1024 {
        bail!("frame of {len} bytes: stream out of sync");
    }
    if body.len() < len {
        body.resize(len, 0);
    }
    r.read_exact(&mut body[..len])
        .await
        .context("reading frame body")?;
    Ok(len)
}

/// Runs `round` `warmup` times unmeasured, then `count` times measured.
/// Returns each measured round's duration and the wall time of the
/// measured part. Every `rtt` client (streams, hand-off,
/// request-response) measures through this.
pub async fn measure_rounds(
    warmup: usize,
    count: usize,
    mut round: impl AsyncFnMut() -> Result<()>,
) -> Result<(Vec<Duration>, Duration)> {
    let mut samples = Vec::with_capacity(count);
    let mut measured_start = Instant::now();
    for i in 0..warmup + count {
        if i == warmup {
            measured_start = Instant::now();
        }
        let t = Instant::now();
        round().await?;
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    Ok((samples, measured_start.elapsed()))
}

/// One request on `stream` (one `write_all` + `flush`) and its echo read
/// into `body`; checks the echo's length.
async fn stream_round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
    body: &mut Vec<u8>,
) -> Result<()> {
    stream.write_all(msg).await.context("sending request")?;
    stream.flush().await.context("flushing request")?;
    let n = read_frame(stream, body).await?;
    let size = msg.len() - 4;
    if n != size {
        bail!("reply of {n} bytes to a request of {size}");
    }
    Ok(())
}

/// Tells the server the run is over (a zero-length frame).
async fn send_end<S: AsyncWrite + Unpin>(stream: &mut S) -> Result<()> {
    stream.write_all(&frame(0)?).await.context("sending end")?;
    stream.flush().await.context("flushing end")
}

/// Client side of `rtt`: `warmup` unmeasured round trips, then `count`
/// measured ones. Each request is one `write_all` + `flush`; the server
/// echoes it. Returns the samples and the wall time of the measured part.
pub async fn rtt_client(
    stream: &mut BoxedStream,
    size: usize,
    warmup: usize,
    count: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let mut stream = BufReader::with_capacity(BUFFER, stream);
    let msg = frame(size)?;
    let mut body = Vec::with_capacity(size);
    let out = measure_rounds(warmup, count, async || {
        stream_round_trip(&mut stream, &msg, &mut body).await
    })
    .await?;
    send_end(&mut stream).await?;
    Ok(out)
}

/// Client side of `rtt` with a hand-off (`--handoff`): a spawned task owns
/// the stream and does each round trip; the measuring loop hands it every
/// request over a bounded channel and waits for the outcome on a
/// oneshot, as a `gladius` caller hands its request to the node's driver.
/// The samples include both hand-offs.
pub async fn rtt_client_handoff(
    stream: &mut BoxedStream,
    size: usize,
    warmup: usize,
    count: usize,
) -> Result<(Vec<Duration>, Duration)> {
    type Job = (Vec<u8>, tokio::sync::oneshot::Sender<Result<()>>);
    // The stream moves into the task and comes back when it ends.
    let owned = std::mem::replace(stream, Box::new(futures::io::Cursor::new(Vec::new())));
    let (jobs, mut rx) = tokio::sync::mpsc::channel::<Job>(16);
    let worker = tokio::spawn(async move {
        let mut stream = BufReader::with_capacity(BUFFER, owned);
        let mut body = Vec::with_capacity(size);
        while let Some((msg, reply)) = rx.recv().await {
            let _ = reply.send(stream_round_trip(&mut stream, &msg, &mut body).await);
        }
        stream.into_inner()
    });
    let msg = frame(size)?;
    let out = measure_rounds(warmup, count, async || {
        let (reply, answer) = tokio::sync::oneshot::channel();
        jobs.send((msg.clone(), reply))
            .await
            .map_err(|_| anyhow::anyhow!("stream task ended"))?;
        answer.await.context("stream task ended")?
    })
    .await?;
    drop(jobs);
    *stream = worker.await.context("stream task")?;
    send_end(stream).await?;
    Ok(out)
}

/// Server side of `rtt`: echoes every frame until the end frame.
pub async fn rtt_server(stream: &mut BoxedStream) -> Result<()> {
    let mut stream = BufReader::with_capacity(BUFFER, stream);
    let mut body = Vec::new();
    let mut reply = Vec::new();
    loop {
        let n = read_frame(&mut stream, &mut body).await?;
        if n == 0 {
            return Ok(());
        }
        reply.clear();
        reply.extend_from_slice(&(n as u32).to_be_bytes());
        reply.extend_from_slice(&body[..n]);
        stream.write_all(&reply).await.context("sending reply")?;
        stream.flush().await.context("flushing reply")?;
    }
}

/// What the sender of `throughput` reports.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// When the first message was handed to the library.
    pub start: Instant,
}

/// What the receiver of `throughput` reports.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Messages received.
    pub messages: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// When the last byte of the last message was read (None: no message).
    pub last: Option<Instant>,
}

/// Sender side of `throughput`: sends `size`-byte messages for `duration`,
/// then the end frame, then waits for the receiver's 8-byte count.
///
/// Without `coalesce`, every message is its own `write_all` + `flush`.
/// With it, messages go through a 64 KiB `BufWriter` that is flushed only at
/// the end (it writes through whenever it is full).
pub async fn throughput_sender(
    stream: &mut BoxedStream,
    size: usize,
    duration: Duration,
    coalesce: bool,
) -> Result<Sent> {
    let msg = frame(size)?;
    let mut messages = 0u64;
    let start = Instant::now();
    let mut reader = if coalesce {
        let mut w = BufWriter::with_capacity(BUFFER, stream);
        while start.elapsed() < duration {
            w.write_all(&msg).await.context("sending message")?;
            messages += 1;
        }
        w.write_all(&frame(0)?).await.context("sending end")?;
        w.flush().await.context("flushing")?;
        BufReader::new(w.into_inner())
    } else {
        while start.elapsed() < duration {
            stream.write_all(&msg).await.context("sending message")?;
            stream.flush().await.context("flushing message")?;
            messages += 1;
        }
        stream.write_all(&frame(0)?).await.context("sending end")?;
        stream.flush().await.context("flushing end")?;
        BufReader::new(stream)
    };
    let mut count = [0u8; 8];
    reader
        .read_exact(&mut count)
        .await
        .context("reading the receiver's count")?;
    let received = u64::from_be_bytes(count);
    if received != messages {
        bail!("sent {messages} messages, receiver counted {received}");
    }
    Ok(Sent { start })
}

/// Receiver side of `throughput`: counts messages until the end frame, then
/// answers with the count.
pub async fn throughput_receiver(stream: &mut BoxedStream) -> Result<Received> {
    let mut stream = BufReader::with_capacity(BUFFER, stream);
    let mut body = Vec::new();
    let mut received = Received {
        messages: 0,
        bytes: 0,
        last: None,
    };
    loop {
        let n = read_frame(&mut stream, &mut body).await?;
        if n == 0 {
            break;
        }
        received.messages += 1;
        received.bytes += n as u64;
        received.last = Some(Instant::now());
    }
    stream
        .write_all(&received.messages.to_be_bytes())
        .await
        .context("sending count")?;
    stream.flush().await.context("flushing count")?;
    Ok(received)
}
