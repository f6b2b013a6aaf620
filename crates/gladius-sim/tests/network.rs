//! The simulated network on its own: latency, partitions, crashes and
//! restarts, over bare sockets in paused time.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::DatagramSocket;
use gladius_sim::{node_addr, LinkConfig, SimNetwork, SimSocket};
use tokio::io::ReadBuf;
use tokio::time::{timeout, Instant};

async fn send(socket: &SimSocket, to: SocketAddr, data: &[u8]) {
    poll_fn(|cx| socket.poll_send_to(cx, data, to))
        .await
        .unwrap();
}

/// The next datagram within `within`, if any.
async fn recv(socket: &SimSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 64];
    let got = timeout(within, async {
        let mut read = ReadBuf::new(&mut buf);
        let from = poll_fn(|cx| socket.poll_recv_from(cx, &mut read))
            .await
            .unwrap();
        (read.filled().to_vec(), from)
    })
    .await;
    got.ok()
}

fn network(seed: u64) -> SimNetwork {
    let net = SimNetwork::new(seed, LinkConfig::default());
    tokio::spawn(net.clone().run_deliveries());
    net
}

#[tokio::test(start_paused = true)]
async fn datagrams_take_the_links_fixed_symmetric_latency() {
    let net = network(1);
    let (a, b, c) = (node_addr(0), node_addr(1), node_addr(2));
    let (sa, sb, _sc) = (
        net.bind(a).unwrap(),
        net.bind(b).unwrap(),
        net.bind(c).unwrap(),
    );
    let ab = net.latency(a, b);
    assert_eq!(ab, net.latency(b, a));
    for pair in [(a, b), (a, c), (b, c)] {
        let l = net.latency(pair.0, pair.1);
        assert!(
            (Duration::from_millis(5)..=Duration::from_millis(150)).contains(&l),
            "{l:?}"
        );
    }
    let start = Instant::now();
    send(&sa, b, b"one").await;
    send(&sa, b, b"two").await;
    assert_eq!(
        recv(&sb, Duration::from_secs(1)).await,
        Some((b"one".to_vec(), a))
    );
    assert_eq!(
        recv(&sb, Duration::from_secs(1)).await,
        Some((b"two".to_vec(), a))
    );
    let took = start.elapsed();
    // Tokio's timer rounds up to the next millisecond.
    assert!(
        took >= ab && took <= ab + Duration::from_millis(1),
        "{took:?} vs {ab:?}"
    );
    assert_eq!(net.stats().delivered, 2);
}

#[tokio::test(start_paused = true)]
async fn partitions_drop_until_healed() {
    let net = network(2);
    let (a, b) = (node_addr(0), node_addr(1));
    let (sa, sb) = (net.bind(a).unwrap(), net.bind(b).unwrap());
    net.partition(&[vec![a], vec![b]]);
    send(&sa, b, b"cut").await;
    assert_eq!(recv(&sb, Duration::from_secs(1)).await, None);
    assert_eq!(net.stats().partitioned, 1);
    net.heal();
    send(&sa, b, b"healed").await;
    assert_eq!(
        recv(&sb, Duration::from_secs(1)).await,
        Some((b"healed".to_vec(), a))
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_host_is_silent_and_its_address_can_restart() {
    let net = network(3);
    let (a, b) = (node_addr(0), node_addr(1));
    let (sa, sb) = (net.bind(a).unwrap(), net.bind(b).unwrap());
    assert!(net.bind(a).is_err(), "a live address is in use");
    send(&sa, b, b"in flight").await;
    net.crash(b);
    assert_eq!(recv(&sb, Duration::from_secs(1)).await, None);
    send(&sb, a, b"from the dead").await;
    assert_eq!(recv(&sa, Duration::from_secs(1)).await, None);
    let restarted = net.bind(b).unwrap();
    send(&sa, b, b"again").await;
    assert_eq!(
        recv(&restarted, Duration::from_secs(1)).await,
        Some((b"again".to_vec(), a))
    );
    assert_eq!(
        recv(&sb, Duration::from_millis(10)).await,
        None,
        "the old socket stays silent"
    );
}

#[tokio::test(start_paused = true)]
async fn every_datagram_is_lost_at_loss_one() {
    let net = network(4);
    net.set_links(LinkConfig {
        loss: 1.0,
        ..LinkConfig::default()
    });
    let (a, b) = (node_addr(0), node_addr(1));
    let (sa, sb) = (net.bind(a).unwrap(), net.bind(b).unwrap());
    for _ in 0..10 {
        send(&sa, b, b"x").await;
    }
    assert_eq!(recv(&sb, Duration::from_secs(1)).await, None);
    assert_eq!(net.stats().lost, 10);
}
