//! The driver reads its socket before its command channel when it wakes,
//! but a socket that never runs dry must not starve the commands: they get
//! a turn between any two receive bursts. Deterministic: the socket is a
//! fake that always has a junk datagram ready until a fixed number has been
//! read (a real socket under a flood is covered in `hostile.rs`).

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use gladius_p2p::DatagramSocket;
use tokio::io::ReadBuf;

/// Junk datagrams the fake socket has ready, back to back. Reading them
/// all takes seconds; a command answered only after that would fail.
const FLOOD: u64 = 5_000_000;

/// A socket with `FLOOD` datagrams of junk queued; sends vanish.
#[derive(Debug)]
struct NeverDry {
    read: Arc<AtomicU64>,
}

impl DatagramSocket for NeverDry {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
    }
    fn poll_recv_from(
        &self,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        if self.read.fetch_add(1, Ordering::Relaxed) >= FLOOD {
            // Dry from now on; nothing will wake the reader again.
            return Poll::Pending;
        }
        buf.put_slice(&[0xEE; 8]);
        Poll::Ready(Ok(SocketAddr::from(([127, 0, 0, 2], 4000))))
    }
    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        buf: &[u8],
        _target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
}

// Two workers: the flooded driver never yields while junk is ready, and
// the test's own task runs on the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_while_the_socket_never_runs_dry() {
    let read = Arc::new(AtomicU64::new(0));
    let (net, _addr, _rec) = node_on(
        test_config(),
        NeverDry {
            read: Arc::clone(&read),
        },
    )
    .await;
    let mut datagrams_in = 0;
    for i in 0..20 {
        let state = tokio::time::timeout(Duration::from_secs(20), net.network_state())
            .await
            .expect("the command was answered")
            .expect("the node is up");
        assert!(state.peers.is_empty());
        datagrams_in = state.counters.datagrams_in;
        let so_far = read.load(Ordering::Relaxed);
        assert!(
            so_far < FLOOD,
            "command {i} was answered only once the flood ended ({so_far} datagrams read)"
        );
    }
    assert!(datagrams_in > 0, "the junk was read and counted");
}
