//! Two nodes on the in-memory link (`MemoryNetwork`) under loss, duplication,
//! reordering and restarts, in tokio's virtual time (`start_paused`): every
//! message must arrive exactly once, in order, byte for byte.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gladius_p2p::{ConnectionState, LinkFaults, MemoryNetwork, Message, Network};
use rand::{Rng, SeedableRng};

/// Virtual time: generous, it costs nothing when things work.
const DEADLINE: Duration = Duration::from_secs(120);
const MESSAGES: usize = 1000;
const MAX_BODY: usize = 20 * 1024;

async fn mem_node(net: &MemoryNetwork, addr: &str) -> (Network, SocketAddr, Recorder) {
    let node = Network::new(test_config()).unwrap();
    let rec = Recorder::default();
    node.register_plugin(rec.clone()).await.unwrap();
    let addr = node
        .listen_on(net.bind(addr.parse().unwrap()).unwrap())
        .await
        .unwrap();
    (node, addr, rec)
}

/// `MESSAGES` bodies of sizes 1 B ..= 20 KiB (log-uniform, both extremes
/// included), contents random, reproducible from `seed`.
fn bodies(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => MAX_BODY,
                _ => {
                    let x: f64 = rng.gen_range(0.0..(MAX_BODY as f64).ln());
                    (x.exp() as usize).clamp(1, MAX_BODY)
                }
            };
            let mut b = vec![0u8; len];
            rng.fill(&mut b[..]);
            b
        })
        .collect()
}

/// A adds B (and B promotes A, or both add at once with `simultaneous`),
/// then each sends `MESSAGES` varied messages to the other under `faults`;
/// both must receive the other's exactly once, in order, intact.
async fn exchange(seed: u64, faults: LinkFaults, simultaneous: bool) {
    exchange_n(seed, faults, simultaneous, MESSAGES).await;
}

async fn exchange_n(seed: u64, faults: LinkFaults, simultaneous: bool, messages: usize) {
    let link = MemoryNetwork::new(seed);
    link.set_faults(faults);
    let (a, a_addr, ra) = mem_node(&link, "10.0.0.1:1000").await;
    let (b, b_addr, rb) = mem_node(&link, "10.0.0.2:2000").await;
    if simultaneous {
        a.add(b_addr).await.unwrap();
        b.add(a_addr).await.unwrap();
    } else {
        a.add(b_addr).await.unwrap();
        wait_connected(&a, b_addr).await;
        b.add(a_addr).await.unwrap(); // promotes the inbound session
    }
    let a_bodies = bodies(seed * 2 + 1, messages);
    let b_bodies = bodies(seed * 2 + 2, messages);
    let t0 = tokio::time::Instant::now();
    for i in 0..messages {
        let r = a
            .broadcast(Message::new("data", a_bodies[i].clone()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.queued, vec![b_addr], "a: message {i}: {r:?}");
        let r = b
            .broadcast(Message::new("data", b_bodies[i].clone()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.queued, vec![a_addr], "b: message {i}: {r:?}");
    }
    wait_for(DEADLINE, "all messages both ways", || async {
        ra.count_from(b_addr, "data") >= messages && rb.count_from(a_addr, "data") >= messages
    })
    .await;
    let virtual_elapsed = t0.elapsed();
    // Let late duplicates and retransmissions land before checking for extras.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (who, rec, from, want) in [("a", &ra, b_addr, &b_bodies), ("b", &rb, a_addr, &a_bodies)] {
        let got = rec.bodies_from(from, "data");
        assert_eq!(got.len(), messages, "{who}: exactly {messages} messages");
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                g == w,
                "{who}: message {i} differs (len {} vs {})",
                g.len(),
                w.len()
            );
        }
        let others = rec.messages().len() - messages;
        assert_eq!(others, 0, "{who}: unexpected extra messages");
    }
    let sa = a.network_state().await.unwrap();
    let sb = b.network_state().await.unwrap();
    println!(
        "seed {seed} {faults:?} simultaneous={simultaneous}: {messages} each way in {virtual_elapsed:?} virtual; \
         a counters {:?}; b counters {:?}",
        sa.counters, sb.counters
    );
    assert_eq!(
        sa.peer(b_addr).unwrap().connection,
        ConnectionState::Connected
    );
    assert_eq!(
        sb.peer(a_addr).unwrap().connection,
        ConnectionState::Connected
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

fn loss(p: f64) -> LinkFaults {
    LinkFaults {
        loss: p,
        ..LinkFaults::default()
    }
}

#[tokio::test(start_paused = true)]
async fn no_loss() {
    exchange(1, loss(0.0), false).await;
}

#[tokio::test(start_paused = true)]
async fn five_percent_loss() {
    exchange(2, loss(0.05), false).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_loss() {
    exchange(3, loss(0.20), false).await;
}

#[tokio::test(start_paused = true)]
async fn reordering() {
    let faults = LinkFaults {
        reorder: 0.25,
        reorder_delay: Duration::from_millis(40),
        delay: Duration::from_millis(5),
        ..LinkFaults::default()
    };
    exchange(4, faults, false).await;
}

#[tokio::test(start_paused = true)]
async fn duplication() {
    let faults = LinkFaults {
        duplicate: 0.3,
        delay: Duration::from_millis(2),
        ..LinkFaults::default()
    };
    exchange(5, faults, false).await;
}

#[tokio::test(start_paused = true)]
async fn everything_at_once() {
    let faults = LinkFaults {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        reorder_delay: Duration::from_millis(30),
        delay: Duration::from_millis(3),
    };
    exchange(6, faults, false).await;
}

/// Both nodes add each other at once (simultaneous open, resolved by the
/// lower conv) on a lossy, duplicating but order-preserving link.
#[tokio::test(start_paused = true)]
async fn simultaneous_open_under_loss_and_duplication() {
    let faults = LinkFaults {
        loss: 0.2,
        duplicate: 0.1,
        delay: Duration::from_millis(3),
        ..LinkFaults::default()
    };
    for seed in 20..30 {
        exchange_n(seed, faults, true, 200).await;
    }
}

/// The same with reordering: a late copy of the losing side's hello can
/// reach the peer after the winning session is established there. The
/// hello's instance id marks it as stale (wire-format §2 item 4), so it must
/// not replace the winning session (which would lose the frames in flight).
#[tokio::test(start_paused = true)]
async fn simultaneous_open_under_reordering() {
    let faults = LinkFaults {
        loss: 0.2,
        duplicate: 0.1,
        reorder: 0.2,
        reorder_delay: Duration::from_millis(30),
        delay: Duration::from_millis(3),
    };
    for seed in 100..160 {
        exchange_n(seed, faults, true, 200).await;
    }
}

/// Bind `addr` on `link` once the previous holder released it.
async fn rebind(link: &MemoryNetwork, addr: SocketAddr) -> gladius_p2p::MemorySocket {
    let mut socket = None;
    wait_for(DEADLINE, "address released", || {
        let r = link.bind(addr);
        let ok = r.is_ok();
        socket = r.ok();
        async move { ok }
    })
    .await;
    socket.unwrap()
}

/// A peer in A's route table closes; a new node comes up on its address;
/// A reconnects (with backoff) and messages flow again, including those A
/// queued while the peer was away.
#[tokio::test(start_paused = true)]
async fn reconnects_to_a_restarted_peer() {
    let link = MemoryNetwork::new(7);
    let (a, _a_addr, ra) = mem_node(&link, "10.0.0.1:1000").await;
    let (b, b_addr, rb) = mem_node(&link, "10.0.0.2:2000").await;
    a.add(b_addr).await.unwrap();
    for i in 0..10 {
        a.broadcast(text_msg("one", i)).await.unwrap();
    }
    wait_for(DEADLINE, "first node gets 10", || async {
        rb.count_type("one") == 10
    })
    .await;

    b.close().await.unwrap();
    wait_for(DEADLINE, "a sees b go", || async {
        ra.saw(&Event::Disconnected(b_addr))
    })
    .await;
    // A keeps B in its route table and queues for it while it is away.
    let st = a.network_state().await.unwrap();
    let p = st.peer(b_addr).unwrap();
    assert!(p.in_route_table && p.writable);
    assert_ne!(p.connection, ConnectionState::Connected);
    for i in 0..10 {
        let r = a.broadcast(text_msg("away", i)).await.unwrap();
        assert_eq!(r.queued, vec![b_addr]);
    }
    // Let A fail a few connection attempts against nobody.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let socket = rebind(&link, b_addr).await;
    let b2 = Network::new(test_config()).unwrap();
    let rb2 = Recorder::default();
    b2.register_plugin(rb2.clone()).await.unwrap();
    b2.listen_on(socket).await.unwrap();
    wait_connected(&a, b_addr).await;
    for i in 0..10 {
        a.broadcast(text_msg("two", i)).await.unwrap();
    }
    wait_for(DEADLINE, "second node gets 10", || async {
        rb2.count_type("two") == 10
    })
    .await;
    assert_eq!(
        numbers(rb2.bodies_of_type("two")),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(rb2.bodies_of_type("away")),
        (0..10).collect::<Vec<_>>(),
        "messages queued while the peer was away arrive after the reconnect"
    );
    let kinds: Vec<String> = rb2.messages().into_iter().map(|m| m.1).collect();
    let first_two = kinds.iter().position(|k| k == "two").unwrap();
    assert!(
        kinds[..first_two].iter().all(|k| k == "away"),
        "queued ones first: {kinds:?}"
    );
    assert!(
        ra.events()
            .iter()
            .filter(|e| **e == Event::Connected(b_addr, true))
            .count()
            >= 2
    );
    let c = a.network_state().await.unwrap().counters;
    assert!(
        c.dead_sessions + c.handshake_timeouts >= 1,
        "failed attempts were counted"
    );
    a.close().await.unwrap();
    b2.close().await.unwrap();
}

/// Like above, but the first peer vanishes without a word (a partition,
/// then a crash): A notices by timeout and reconnects to the new node.
#[tokio::test(start_paused = true)]
async fn reconnects_after_a_silent_peer_death() {
    let link = MemoryNetwork::new(8);
    let (a, _a_addr, ra) = mem_node(&link, "10.0.0.1:1000").await;
    let (b, b_addr, rb) = mem_node(&link, "10.0.0.2:2000").await;
    a.add(b_addr).await.unwrap();
    a.broadcast(text_msg("one", 0)).await.unwrap();
    wait_for(DEADLINE, "first node gets it", || async {
        rb.count_type("one") == 1
    })
    .await;

    link.set_faults(loss(1.0));
    b.close().await.unwrap(); // its close frame is lost
    wait_for(DEADLINE, "a declares b dead", || async {
        ra.saw(&Event::Disconnected(b_addr))
    })
    .await;
    assert!(a.network_state().await.unwrap().counters.dead_sessions >= 1);
    link.set_faults(loss(0.0));

    let socket = rebind(&link, b_addr).await;
    let b2 = Network::new(test_config()).unwrap();
    let rb2 = Recorder::default();
    b2.register_plugin(rb2.clone()).await.unwrap();
    b2.listen_on(socket).await.unwrap();
    wait_connected(&a, b_addr).await;
    for i in 0..10 {
        a.broadcast(text_msg("two", i)).await.unwrap();
    }
    wait_for(DEADLINE, "second node gets 10", || async {
        rb2.count_type("two") == 10
    })
    .await;
    assert_eq!(
        numbers(rb2.bodies_of_type("two")),
        (0..10).collect::<Vec<_>>()
    );
    a.close().await.unwrap();
    b2.close().await.unwrap();
}
