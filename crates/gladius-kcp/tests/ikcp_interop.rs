//! Interop with the reference C ikcp over real UDP on loopback.
//!
//! The peer is `tests/ikcp_peer.py`, which needs the PyPI package
//! `kcp==0.1.6` (bundles the reference ikcp.c). Without it the tests fail
//! under CI (`CI` set) and are skipped loudly otherwise.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gladius_kcp::{Kcp, KcpConfig};
use rand::{Rng, SeedableRng};

const CONV: u32 = 0x0bad_cafe;
/// Hard limit for one test, child process included.
const DEADLINE: Duration = Duration::from_secs(30);
const TOTAL: usize = 200 * 1024;

/// Kills the peer however the test ends.
struct PeerGuard(Child);

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_kcp_available() -> bool {
    Command::new("python3")
        .args(["-c", "import kcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Spawns the peer, or returns None when the test must be skipped.
fn spawn_peer(args: &[&str]) -> Option<(PeerGuard, u16)> {
    if !python_kcp_available() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "python3 cannot `import kcp`: .ci/run must `pip install kcp==0.1.6` \
                 for the ikcp interop test"
            );
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED ikcp interop test: python3 cannot `import kcp` \
             (pip install kcp==0.1.6) !!!!!!!!\n"
        );
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ikcp_peer.py");
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3 ikcp_peer.py");
    let stdout = child.stdout.take().expect("peer stdout");
    let guard = PeerGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("peer did not print its port within 10 s");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected peer output {line:?}"));
    Some((guard, port))
}

/// Our endpoint on a real UDP socket with a real millisecond clock.
struct Endpoint {
    kcp: Kcp,
    socket: UdpSocket,
    start: Instant,
    epoch: u32,
    buf: Vec<u8>,
    /// Fraction of datagrams dropped in each direction (simulated loss).
    loss: f64,
    rng: rand::rngs::StdRng,
}

impl Endpoint {
    fn new(peer_port: u16, loss: f64) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", peer_port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        // Start the clock just before u32 wrap-around to cross it.
        let epoch = u32::MAX - 2_000;
        Self {
            kcp: Kcp::new(CONV, &KcpConfig::default(), epoch),
            socket,
            start: Instant::now(),
            epoch,
            buf: vec![0; 65_536],
            loss,
            rng: rand::rngs::StdRng::seed_from_u64(77),
        }
    }

    fn now(&self) -> u32 {
        self.epoch
            .wrapping_add(self.start.elapsed().as_millis() as u32)
    }

    /// One round: receive what arrived, run due timers, transmit.
    fn pump(&mut self) {
        loop {
            match self.socket.recv(&mut self.buf) {
                Ok(_) if self.rng.gen_bool(self.loss) => {}
                Ok(n) => {
                    let now = self.now();
                    self.kcp
                        .input(now, &self.buf[..n])
                        .expect("ikcp sent a datagram we reject");
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP port unreachable before the peer is up, etc.
                Err(_) => break,
            }
        }
        let now = self.now();
        if self
            .kcp
            .poll_timeout()
            .is_some_and(|t| (now.wrapping_sub(t) as i32) >= 0)
        {
            self.kcp.update(now);
        }
        while let Some(d) = self.kcp.poll_transmit() {
            assert!(d.len() <= 1400);
            if !self.rng.gen_bool(self.loss) {
                let _ = self.socket.send(&d);
            }
        }
    }
}

#[test]
fn echo_through_reference_ikcp() {
    echo(0.0);
}

#[test]
fn echo_through_reference_ikcp_with_ten_percent_loss() {
    echo(0.1);
}

fn echo(loss: f64) {
    let Some((_peer, port)) = spawn_peer(&[&CONV.to_string(), "echo"]) else {
        return;
    };
    let deadline = Instant::now() + DEADLINE;
    let mut ep = Endpoint::new(port, loss);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let sent: Vec<u8> = (0..TOTAL).map(|_| rng.gen()).collect();
    let mut offset = 0;
    let mut echoed = Vec::with_capacity(TOTAL);
    let mut writes = 0;
    while echoed.len() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "echo timed out: sent {offset}, echoed {} of {TOTAL}",
            echoed.len()
        );
        // Varied writes, keeping the queue bounded as a real caller would.
        while offset < TOTAL && ep.kcp.unacked_bytes() < 64 * 1024 {
            let n = rng.gen_range(1..=5000).min(TOTAL - offset);
            ep.kcp.send(&sent[offset..offset + n]).unwrap();
            offset += n;
            writes += 1;
        }
        ep.pump();
        while let Some(chunk) = ep.kcp.recv() {
            echoed.extend_from_slice(&chunk);
        }
        assert!(!ep.kcp.is_dead());
    }
    assert_eq!(echoed.len(), TOTAL);
    assert!(echoed == sent, "echo differs from what was sent");
    eprintln!(
        "ikcp echo (loss {loss}): {TOTAL} bytes in {writes} writes, {:?}, srtt {:?}, {:?}",
        ep.start.elapsed(),
        ep.kcp.srtt_ms(),
        ep.kcp.stats()
    );
    // Let the last ACKs go out; everything we sent was acknowledged.
    while ep.kcp.poll_timeout().is_some() && Instant::now() < deadline {
        ep.pump();
    }
    assert_eq!(ep.kcp.unacked_bytes(), 0);
}

#[test]
fn stream_from_reference_ikcp_in_message_mode() {
    let total = TOTAL.to_string();
    let Some((_peer, port)) = spawn_peer(&[&CONV.to_string(), "source", &total]) else {
        return;
    };
    let deadline = Instant::now() + DEADLINE;
    let mut ep = Endpoint::new(port, 0.0);
    ep.kcp.send(b"go").unwrap();
    let mut got = Vec::with_capacity(TOTAL);
    while got.len() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "source timed out: got {} of {TOTAL}",
            got.len()
        );
        ep.pump();
        while let Some(chunk) = ep.kcp.recv() {
            got.extend_from_slice(&chunk);
        }
    }
    let expected: Vec<u8> = (0..TOTAL).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    assert_eq!(got.len(), TOTAL);
    assert!(got == expected, "stream from ikcp differs");
    eprintln!(
        "ikcp source: {TOTAL} bytes in {:?}, {:?}",
        ep.start.elapsed(),
        ep.kcp.stats()
    );
}
