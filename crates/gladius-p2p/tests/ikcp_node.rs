//! A real node (plaintext mode) talks to a peer built on the reference C
//! ikcp, over real UDP: the datagrams are standard KCP segments and the
//! frames follow docs/wire-format.md.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use gladius_p2p::Message;

fn python_kcp_available() -> bool {
    Command::new("python3")
        .args(["-c", "import kcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_interoperates_with_reference_ikcp_peer() {
    if !python_kcp_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the reference ikcp binding: python3 -m pip install kcp==0.1.6"
        );
        eprintln!("SKIPPED node_interoperates_with_reference_ikcp_peer: python3 -m pip install kcp==0.1.6");
        return;
    }
    // ikcp speaks plaintext KCP: the explicit opt-out of encryption.
    let (node, node_addr, rec) = node_with(test_config().with_plaintext(true)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ikcp_node.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(node_addr.ip().to_string())
        .arg(node_addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("peer ready in time")
        .expect("a READY line");
    let port: u16 = ready
        .strip_prefix("READY ")
        .expect("READY <port>")
        .parse()
        .unwrap();
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // The ikcp peer's hello and first message reach our plugins, sender
    // checked, flagged non-writable (it is not in our route table).
    wait_for(
        Duration::from_secs(10),
        "interop.hello from the ikcp peer",
        || async { !rec.bodies_of_type("interop.hello").is_empty() },
    )
    .await;
    let first = rec
        .messages()
        .into_iter()
        .find(|m| m.1 == "interop.hello")
        .unwrap();
    assert_eq!(first.0, peer);
    assert_eq!(first.2, b"from the reference ikcp");
    assert!(!first.3, "unknown inbound peer is not writable");

    // 50 pings out (explicitly addressed), 50 pongs back, in order.
    for i in 0..50 {
        let report = node
            .broadcast_to(
                Message::new("interop.ping", format!("n{i}")).unwrap(),
                &[peer],
            )
            .await
            .unwrap();
        assert_eq!(report.queued, vec![peer]);
    }
    wait_for(Duration::from_secs(15), "50 pongs", || async {
        rec.bodies_of_type("interop.pong").len() >= 50
    })
    .await;
    let pongs: Vec<String> = rec
        .bodies_of_type("interop.pong")
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    assert_eq!(pongs, (0..50).map(|i| format!("n{i}")).collect::<Vec<_>>());

    // The peer saw our hello with our advertised address and every ping
    // with a valid checksum.
    let mut seen = Vec::new();
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    assert!(seen.contains(&format!("HELLO {node_addr}")), "{seen:?}");
    assert!(!seen.iter().any(|l| l == "BADCRC"), "{seen:?}");
    assert_eq!(seen.iter().filter(|l| l.starts_with("PING ")).count(), 50);
    let state = node.network_state().await.unwrap();
    assert_eq!(state.counters.checksum_failures, 0);
    assert_eq!(state.counters.malformed_datagrams, 0);

    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    node.close().await.unwrap();
}
