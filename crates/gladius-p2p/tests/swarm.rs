//! Swarms of nodes over real UDP on 127.0.0.1: delivery guarantees, peer
//! selection, writable semantics, lifecycle and plugin isolation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gladius_p2p::{
    async_trait, ConnectionState, Direction, Message, Network, NetworkError, Plugin, Received,
    RequestError,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// `n` nodes with recorders on 127.0.0.1.
async fn nodes(n: usize) -> Vec<(Network, SocketAddr, Recorder)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(node().await);
    }
    v
}

async fn close_all(nodes: &[(Network, SocketAddr, Recorder)]) {
    // Concurrently: a node whose peers already closed waits out its close
    // timeout for acknowledgements that never come.
    let tasks: Vec<_> = nodes
        .iter()
        .map(|(n, _, _)| {
            let n = n.clone();
            tokio::spawn(async move { n.close().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Every node gets exactly `expected[sender]` numbered messages of type
/// `t` from each sender it expects, in order 0..count, and nothing from
/// anyone else.
fn assert_exact_sequences(
    receiver: SocketAddr,
    rec: &Recorder,
    t: &str,
    expected_senders: &BTreeSet<SocketAddr>,
    count: u64,
) {
    let mut by_sender: BTreeMap<SocketAddr, Vec<u64>> = BTreeMap::new();
    for (from, msg_type, body, _) in rec.messages() {
        if msg_type == t {
            by_sender
                .entry(from)
                .or_default()
                .push(String::from_utf8(body).unwrap().parse().unwrap());
        }
    }
    let senders: BTreeSet<SocketAddr> = by_sender.keys().copied().collect();
    assert_eq!(&senders, expected_senders, "{receiver}: set of senders");
    let want: Vec<u64> = (0..count).collect();
    for (s, got) in by_sender {
        assert_eq!(
            got, want,
            "{receiver}: messages from {s} exactly once, in order"
        );
    }
    // The sender field is the authenticated advertised address (= bound address here).
    for e in rec.events() {
        if let Event::Message {
            from,
            sender,
            msg_type,
            ..
        } = e
        {
            if msg_type == t {
                assert_eq!(sender, Some(from));
            }
        }
    }
}

// 1 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_node_full_mesh_delivers_every_broadcast_once_in_order() {
    const N: usize = 10;
    const M: u64 = 20;
    let swarm = nodes(N).await;
    let addrs: Vec<SocketAddr> = swarm.iter().map(|n| n.1).collect();
    // Everyone adds everyone: every pair opens simultaneously.
    for (net, me, _) in &swarm {
        for &a in &addrs {
            if a != *me {
                net.add(a).await.unwrap();
            }
        }
    }
    for k in 0..M {
        for (net, me, _) in &swarm {
            let report = net.broadcast(text_msg("seq", k)).await.unwrap();
            let mut queued = report.queued.clone();
            queued.sort();
            let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a != me).collect();
            let mut others = others;
            others.sort();
            assert_eq!(queued, others, "broadcast queued to all 9 writable peers");
            assert!(report.failed.is_empty(), "{report:?}");
        }
    }
    let total = (N - 1) * M as usize;
    for (_, me, rec) in &swarm {
        wait_for(DEADLINE, &format!("{total} messages at {me}"), || async {
            rec.count_type("seq") >= total
        })
        .await;
    }
    for (_, me, rec) in &swarm {
        let expected: BTreeSet<SocketAddr> = addrs.iter().copied().filter(|a| a != me).collect();
        assert_exact_sequences(*me, rec, "seq", &expected, M);
        assert_eq!(rec.count_type("seq"), total, "{me}: no duplicates");
    }
    close_all(&swarm).await;
}

// 2 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_ring_with_chords() {
    const N: usize = 50;
    const CHORDS: usize = 4;
    const M: u64 = 5;
    let started = Instant::now();
    let swarm = nodes(N).await;
    let addrs: Vec<SocketAddr> = swarm.iter().map(|n| n.1).collect();
    for (i, (net, _, _)) in swarm.iter().enumerate() {
        for d in 1..=CHORDS {
            net.add(addrs[(i + d) % N]).await.unwrap();
        }
    }
    for k in 0..M {
        for (i, (net, _, _)) in swarm.iter().enumerate() {
            let report = net.broadcast(text_msg("ring", k)).await.unwrap();
            let mut queued = report.queued.clone();
            queued.sort();
            let mut want: Vec<SocketAddr> = (1..=CHORDS).map(|d| addrs[(i + d) % N]).collect();
            want.sort();
            // Peers that added us connect inbound and are not writable, so
            // broadcasts go to exactly the 4 we added.
            assert_eq!(queued, want, "node {i}: broadcast targets");
        }
    }
    let per_node = CHORDS * M as usize;
    for (i, (_, me, rec)) in swarm.iter().enumerate() {
        wait_for(
            DEADLINE,
            &format!("{per_node} messages at node {i} ({me})"),
            || async { rec.count_type("ring") >= per_node },
        )
        .await;
    }
    let delivered_at = started.elapsed();
    for (i, (_, me, rec)) in swarm.iter().enumerate() {
        let expected: BTreeSet<SocketAddr> = (1..=CHORDS).map(|d| addrs[(i + N - d) % N]).collect();
        assert_exact_sequences(*me, rec, "ring", &expected, M);
        assert_eq!(rec.count_type("ring"), per_node);
        // They came from non-writable (inbound) peers.
        assert!(rec.messages().iter().all(|m| !m.3));
    }
    println!(
        "50 nodes, {} deliveries: all delivered {:?} after start",
        N * per_node,
        delivered_at
    );
    close_all(&swarm).await;
    println!("50 nodes closed after {:?}", started.elapsed());
}

// 3 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_randomly_picks_distinct_uniform_writable_peers() {
    let (hub, _hub_addr, _) = node().await;
    let peers = nodes(10).await;
    let mut addrs: Vec<SocketAddr> = peers.iter().map(|p| p.1).collect();
    addrs.sort();
    for a in &addrs {
        hub.add(*a).await.unwrap();
    }
    for a in &addrs {
        wait_connected(&hub, *a).await;
    }
    let rec_of = |a: SocketAddr| &peers.iter().find(|p| p.1 == a).unwrap().2;

    // n = 0: nobody.
    let r = hub.broadcast_randomly(text_msg("r0", 0), 0).await.unwrap();
    assert!(r.queued.is_empty() && r.failed.is_empty(), "n=0: {r:?}");

    // n = 1: exactly one peer, several times.
    let mut ones = Vec::new();
    for i in 0..5 {
        let r = hub.broadcast_randomly(text_msg("r1", i), 1).await.unwrap();
        assert_eq!(r.queued.len(), 1, "n=1 queued to exactly one: {r:?}");
        assert!(r.failed.is_empty());
        assert!(addrs.contains(&r.queued[0]));
        ones.push(r.queued[0]);
    }

    // n = 3: three distinct peers.
    let mut threes = Vec::new();
    for i in 0..5 {
        let r = hub.broadcast_randomly(text_msg("r3", i), 3).await.unwrap();
        let set: BTreeSet<SocketAddr> = r.queued.iter().copied().collect();
        assert_eq!(r.queued.len(), 3, "n=3: {r:?}");
        assert_eq!(set.len(), 3, "n=3 distinct: {r:?}");
        assert!(set.iter().all(|a| addrs.contains(a)));
        threes.push(set);
    }

    // n = 20 > 10 writable: all of them, once each.
    let r = hub
        .broadcast_randomly(text_msg("r20", 0), 20)
        .await
        .unwrap();
    let mut q = r.queued.clone();
    q.sort();
    assert_eq!(q, addrs, "n=20 reaches all 10 once");

    // A marker to everyone: once a peer has it, every earlier message to it
    // has arrived (per-peer order), so the counts below are final.
    let r = hub.broadcast(text_msg("marker", 0)).await.unwrap();
    assert_eq!(r.queued.len(), 10);
    for a in &addrs {
        let rec = rec_of(*a);
        wait_for(DEADLINE, "marker", || async {
            rec.count_type("marker") == 1
        })
        .await;
    }
    assert_eq!(
        peers.iter().map(|p| p.2.count_type("r0")).sum::<usize>(),
        0,
        "n=0 delivered nowhere"
    );
    for i in 0..5u64 {
        let receivers: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| {
                rec_of(*a)
                    .bodies_of_type("r1")
                    .contains(&i.to_string().into_bytes())
            })
            .collect();
        assert_eq!(
            receivers,
            vec![ones[i as usize]],
            "n=1 message {i} received by exactly the reported peer"
        );
        let receivers: BTreeSet<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| {
                rec_of(*a)
                    .bodies_of_type("r3")
                    .contains(&i.to_string().into_bytes())
            })
            .collect();
        assert_eq!(
            receivers, threes[i as usize],
            "n=3 message {i} received by exactly the reported peers"
        );
    }
    for a in &addrs {
        assert_eq!(rec_of(*a).count_type("r20"), 1);
    }

    // Uniformity of n = 1 over many calls (reports only).
    const CALLS: usize = 2000;
    let mut counts: BTreeMap<SocketAddr, usize> = addrs.iter().map(|a| (*a, 0)).collect();
    for i in 0..CALLS {
        let r = hub.broadcast_randomly(text_msg("u", i), 1).await.unwrap();
        assert_eq!(r.queued.len(), 1, "{r:?}");
        *counts.get_mut(&r.queued[0]).expect("a writable peer") += 1;
    }
    let expected = CALLS as f64 / addrs.len() as f64;
    let chi2: f64 = counts
        .values()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    println!(
        "broadcast_randomly(n=1) x{CALLS}: counts {:?}, chi2 {chi2:.2}",
        counts.values().collect::<Vec<_>>()
    );
    // 9 degrees of freedom, p = 0.001.
    assert!(
        chi2 < 27.88,
        "not uniform: chi2 = {chi2:.2}, counts {counts:?}"
    );
    let last = *addrs.last().unwrap();
    assert!(
        counts[&last] > 0,
        "the highest-sorted peer is never picked: {counts:?}"
    );
    assert!(counts.values().all(|&c| c > 0), "{counts:?}");

    hub.close().await.unwrap();
    close_all(&peers).await;
}

// 4 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_inbound_peers_are_not_writable_until_promoted() {
    let (a, a_addr, ra) = node().await;
    let (b, b_addr, rb) = node().await;
    let (c, c_addr, rc) = node().await;
    // B and C connect to A; A knows neither.
    b.add(a_addr).await.unwrap();
    c.add(a_addr).await.unwrap();
    for i in 0..10 {
        assert_eq!(
            b.broadcast(text_msg("b2a", i)).await.unwrap().queued,
            vec![a_addr]
        );
        assert_eq!(
            c.broadcast(text_msg("c2a", i)).await.unwrap().queued,
            vec![a_addr]
        );
    }
    wait_for(DEADLINE, "10 messages from b and c at a", || async {
        ra.count_from(b_addr, "b2a") == 10 && ra.count_from(c_addr, "c2a") == 10
    })
    .await;
    assert_eq!(
        numbers(ra.bodies_from(b_addr, "b2a")),
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        ra.messages().iter().all(|m| !m.3),
        "unknown inbound peers' messages are flagged not writable"
    );
    assert!(ra.saw(&Event::Connected(b_addr, false)));
    assert!(ra.saw(&Event::Connected(c_addr, false)));
    let st = a.network_state().await.unwrap();
    for p in [b_addr, c_addr] {
        let p = st.peer(p).unwrap();
        assert!(!p.writable && !p.in_route_table);
        assert_eq!(p.direction, Direction::Inbound);
        assert_eq!(p.connection, ConnectionState::Connected);
    }

    // Broadcasts from A reach neither.
    for i in 0..5 {
        let r = a.broadcast(text_msg("a.bcast", i)).await.unwrap();
        assert!(r.queued.is_empty() && r.failed.is_empty(), "{r:?}");
        let r = a
            .broadcast_randomly(text_msg("a.rand", i), 5)
            .await
            .unwrap();
        assert!(r.queued.is_empty() && r.failed.is_empty(), "{r:?}");
    }
    // An explicit send does reach them; behind it, per-peer order proves
    // nothing else from A is on the way.
    let r = a
        .broadcast_to(text_msg("a.marker", 0), &[b_addr, c_addr])
        .await
        .unwrap();
    assert_eq!(r.queued.len(), 2);
    wait_for(DEADLINE, "marker at b and c", || async {
        rb.count_from(a_addr, "a.marker") == 1 && rc.count_from(a_addr, "a.marker") == 1
    })
    .await;
    for rec in [&rb, &rc] {
        let from_a: Vec<String> = rec
            .messages()
            .into_iter()
            .filter(|m| m.0 == a_addr)
            .map(|m| m.1)
            .collect();
        assert_eq!(
            from_a,
            vec!["a.marker".to_string()],
            "only the explicit send reached the peer"
        );
    }

    // Promote B with set_writable and C with add.
    a.set_writable(b_addr, true).await.unwrap();
    a.add(c_addr).await.unwrap();
    wait_for(DEADLINE, "node_added(c)", || async {
        ra.saw(&Event::NodeAdded(c_addr))
    })
    .await;
    let st = a.network_state().await.unwrap();
    assert!(st.peer(b_addr).unwrap().writable && !st.peer(b_addr).unwrap().in_route_table);
    assert!(st.peer(c_addr).unwrap().writable && st.peer(c_addr).unwrap().in_route_table);
    let mut q = a.broadcast(text_msg("a.after", 0)).await.unwrap().queued;
    q.sort();
    let mut want = vec![b_addr, c_addr];
    want.sort();
    assert_eq!(q, want);
    let r = a
        .broadcast_randomly(text_msg("a.rand.after", 0), 5)
        .await
        .unwrap();
    assert_eq!(r.queued.len(), 2);
    wait_for(DEADLINE, "post-promotion broadcasts", || async {
        [&rb, &rc].iter().all(|r| {
            r.count_from(a_addr, "a.after") == 1 && r.count_from(a_addr, "a.rand.after") == 1
        })
    })
    .await;
    // Messages from promoted peers are now flagged writable.
    b.broadcast(text_msg("b2a.after", 0)).await.unwrap();
    wait_for(DEADLINE, "b2a.after", || async {
        ra.count_from(b_addr, "b2a.after") == 1
    })
    .await;
    assert!(ra.messages().iter().any(|m| m.1 == "b2a.after" && m.3));
    // set_writable on an unknown peer is an error.
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(
        matches!(a.set_writable(nobody, true).await, Err(NetworkError::UnknownPeer(p)) if p == nobody)
    );

    for n in [&a, &b, &c] {
        n.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_unknown_inbound_keeps_strangers_out() {
    let (a, a_addr, ra) = node_with(test_config().with_refuse_unknown_inbound(true)).await;
    let (b, b_addr, _rb) = node().await;
    b.add(a_addr).await.unwrap();
    for i in 0..5 {
        b.broadcast(text_msg("b2a", i)).await.unwrap();
    }
    // B keeps retransmitting its hello and reconnecting; each attempt is refused.
    wait_for(DEADLINE, "refused sessions", || async {
        counters(&a).await.refused_sessions >= 3
    })
    .await;
    let st = a.network_state().await.unwrap();
    assert!(
        st.peer(b_addr).is_none(),
        "no state kept for a refused peer: {:?}",
        st.peers
    );
    assert!(
        ra.messages().is_empty(),
        "refused peer's messages reached plugins"
    );
    assert!(!ra
        .events()
        .iter()
        .any(|e| matches!(e, Event::Connected(..))));
    // A can still reach out to B itself.
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    wait_for(DEADLINE, "b's queued messages after a added b", || async {
        ra.count_from(b_addr, "b2a") == 5
    })
    .await;
    assert_eq!(
        numbers(ra.bodies_from(b_addr, "b2a")),
        (0..5).collect::<Vec<_>>()
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// 5 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_broadcasts_and_re_add_resumes() {
    let (a, a_addr, ra) = node().await;
    let (b, b_addr, rb) = node().await;
    a.add(b_addr).await.unwrap();
    assert_eq!(
        a.broadcast(text_msg("m", "before")).await.unwrap().queued,
        vec![b_addr]
    );
    wait_for(DEADLINE, "before", || async {
        rb.count_from(a_addr, "m") == 1
    })
    .await;

    a.delete(b_addr).await.unwrap();
    // Immediately after delete, while the session closes: not a target.
    let r = a.broadcast(text_msg("m", "during")).await.unwrap();
    assert!(r.queued.is_empty() && r.failed.is_empty(), "{r:?}");
    wait_for(DEADLINE, "node_deleted", || async {
        ra.saw(&Event::NodeDeleted(b_addr))
    })
    .await;
    wait_for(DEADLINE, "b sees a disconnect", || async {
        rb.saw(&Event::Disconnected(a_addr))
    })
    .await;
    wait_for(DEADLINE, "a forgets b", || async {
        a.network_state().await.unwrap().peer(b_addr).is_none()
    })
    .await;
    let r = a.broadcast(text_msg("m", "deleted")).await.unwrap();
    assert!(r.queued.is_empty() && r.failed.is_empty(), "{r:?}");
    // delete is idempotent and fires node_deleted once.
    a.delete(b_addr).await.unwrap();

    a.add(b_addr).await.unwrap();
    assert_eq!(
        a.broadcast(text_msg("m", "after")).await.unwrap().queued,
        vec![b_addr]
    );
    wait_for(DEADLINE, "after", || async {
        rb.count_from(a_addr, "m") >= 2
    })
    .await;
    let got: Vec<String> = rb
        .bodies_from(a_addr, "m")
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    assert_eq!(
        got,
        vec!["before", "after"],
        "nothing sent while deleted arrived"
    );
    let ev = ra.events();
    let added: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| **e == Event::NodeAdded(b_addr))
        .map(|(i, _)| i)
        .collect();
    let deleted: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| **e == Event::NodeDeleted(b_addr))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(deleted.len(), 1, "{ev:?}");
    assert_eq!(added.len(), 2, "{ev:?}");
    assert!(added[0] < deleted[0] && deleted[0] < added[1], "{ev:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// 6 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_message_arrives_intact_and_one_byte_more_is_refused() {
    use rand::{RngCore, SeedableRng};
    let (a, a_addr, _ra) = node().await;
    let (b, b_addr, rb) = node().await;
    a.add(b_addr).await.unwrap();
    let max = gladius_p2p::DEFAULT_MAX_MESSAGE_SIZE;
    let mut body = vec![0u8; max];
    rand::rngs::StdRng::seed_from_u64(16).fill_bytes(&mut body);
    let started = Instant::now();
    let r = a
        .broadcast(Message::new("big", body.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.queued, vec![b_addr]);
    wait_for(DEADLINE, "16 MiB message", || async {
        rb.count_from(a_addr, "big") == 1
    })
    .await;
    println!("16 MiB over loopback in {:?}", started.elapsed());
    let got = rb.bodies_from(a_addr, "big").pop().unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "16 MiB body differs");

    // One byte over the limit: refused locally, by every send method.
    let too_big = || Message::new("big", vec![7u8; max + 1]).unwrap();
    let is_too_large = |e: &NetworkError| matches!(e, NetworkError::MessageTooLarge { size, max: m } if *size == max + 1 && *m == max);
    assert!(is_too_large(&a.broadcast(too_big()).await.unwrap_err()));
    assert!(is_too_large(
        &a.broadcast_to(too_big(), &[b_addr]).await.unwrap_err()
    ));
    assert!(is_too_large(
        &a.broadcast_randomly(too_big(), 1).await.unwrap_err()
    ));
    match a.request(too_big(), b_addr, Duration::from_secs(1)).await {
        Err(RequestError::Network(e)) => assert!(is_too_large(&e), "{e:?}"),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // A smaller configured limit applies the same way.
    let small = Network::new(test_config().with_max_message_size(1024)).unwrap();
    small.listen("127.0.0.1:0").await.unwrap();
    small.add(b_addr).await.unwrap();
    assert!(small
        .broadcast(Message::new("ok", vec![0u8; 1024]).unwrap())
        .await
        .is_ok());
    assert!(matches!(
        small
            .broadcast(Message::new("big", vec![0u8; 1025]).unwrap())
            .await,
        Err(NetworkError::MessageTooLarge {
            size: 1025,
            max: 1024
        })
    ));
    small.close().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

// 7 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notifies_peers_and_the_handle_then_fails() {
    // B's idle timeout is long, so a prompt disconnect must come from A's close frame.
    let slow_idle = test_config()
        .with_keepalive_interval(Duration::from_secs(5))
        .with_idle_timeout(Duration::from_secs(20));
    let (a, a_addr, ra) = node().await;
    let (b, b_addr, rb) = node_with(slow_idle).await;
    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    wait_for(DEADLINE, "b sees a", || async {
        rb.saw(&Event::Connected(a_addr, false))
    })
    .await;

    a.close().await.unwrap();
    // Well before B's 20 s idle timeout, so it came from A's close frame.
    // (Exactly one way after the close: endpoint/tests/lifecycle.rs.)
    wait_for(Duration::from_secs(15), "b sees a disconnect", || async {
        rb.saw(&Event::Disconnected(a_addr))
    })
    .await;
    assert_eq!(
        ra.events().last(),
        Some(&Event::Close),
        "close is A's last hook: {:?}",
        ra.events()
    );
    assert_eq!(
        ra.events().iter().filter(|e| **e == Event::Close).count(),
        1
    );
    wait_for(DEADLINE, "b forgets a", || async {
        b.network_state().await.unwrap().peer(a_addr).is_none()
    })
    .await;

    let closed = |r: Result<(), NetworkError>| matches!(r, Err(NetworkError::Closed));
    assert!(matches!(
        a.listen("127.0.0.1:0").await,
        Err(NetworkError::Closed)
    ));
    assert!(matches!(a.add(b_addr).await, Err(NetworkError::Closed)));
    assert!(closed(a.delete(b_addr).await));
    assert!(closed(a.set_writable(b_addr, true).await));
    assert!(matches!(
        a.broadcast(text_msg("x", 0)).await,
        Err(NetworkError::Closed)
    ));
    assert!(matches!(
        a.broadcast_to(text_msg("x", 0), &[b_addr]).await,
        Err(NetworkError::Closed)
    ));
    assert!(matches!(
        a.broadcast_randomly(text_msg("x", 0), 1).await,
        Err(NetworkError::Closed)
    ));
    assert!(matches!(
        a.request(text_msg("x", 0), b_addr, Duration::from_secs(1))
            .await,
        Err(RequestError::Network(NetworkError::Closed))
    ));
    assert!(matches!(a.network_state().await, Err(NetworkError::Closed)));
    assert!(matches!(
        a.register_plugin(Recorder::default()).await,
        Err(NetworkError::Closed)
    ));
    a.close().await.unwrap(); // idempotent
    assert_eq!(ra.events().last(), Some(&Event::Close));
    b.close().await.unwrap();
}

// 8 -------------------------------------------------------------------------

struct Panicker;

#[async_trait]
impl Plugin for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }
    async fn new_message(&self, _net: &Network, _msg: &Received) {
        panic!("{INTENTIONAL_PANIC}");
    }
}

struct Sleeper {
    entered: Arc<AtomicU64>,
}

#[async_trait]
impl Plugin for Sleeper {
    fn name(&self) -> &str {
        "sleeper"
    }
    async fn new_message(&self, _net: &Network, _msg: &Received) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_hooks_in_order_and_isolated_from_each_other() {
    quiet_intentional_panics();
    const M: u64 = 100;
    let a = Network::new(test_config()).unwrap();
    let early = Recorder::default();
    let entered = Arc::new(AtomicU64::new(0));
    a.register_plugin(early.clone()).await.unwrap();
    a.register_plugin(Panicker).await.unwrap();
    a.register_plugin(Sleeper {
        entered: entered.clone(),
    })
    .await
    .unwrap();
    // Not listening yet: no startup.
    tokio::task::yield_now().await;
    assert!(early.events().is_empty());
    let a_addr = a.listen("127.0.0.1:0").await.unwrap();
    let late = Recorder::default();
    a.register_plugin(late.clone()).await.unwrap();
    let (b, b_addr, _rb) = node().await;

    a.add(b_addr).await.unwrap();
    wait_connected(&a, b_addr).await;
    for i in 0..M {
        let r = b.broadcast_to(text_msg("n", i), &[a_addr]).await.unwrap();
        assert_eq!(r.queued, vec![a_addr]);
    }
    // The sleeper needs 5 s per message; the recorders must not wait for it.
    let t0 = Instant::now();
    for rec in [&early, &late] {
        wait_for(
            Duration::from_secs(4),
            "all messages despite a slow and a panicking plugin",
            || async { rec.count_from(b_addr, "n") == M as usize },
        )
        .await;
    }
    println!("{M} messages at the recorders in {:?}", t0.elapsed());
    assert!(
        entered.load(Ordering::SeqCst) <= 1,
        "the sleeper is still on its first message"
    );
    wait_for(DEADLINE, "panics counted", || async {
        let st = a.network_state().await.unwrap();
        st.plugins
            .iter()
            .find(|p| p.name == "panicker")
            .unwrap()
            .panics
            == M
    })
    .await;
    let st = a.network_state().await.unwrap();
    let names: Vec<&str> = st.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["recorder", "panicker", "sleeper", "recorder"]);
    assert!(
        st.plugins.iter().all(|p| p.events_dropped == 0),
        "{:?}",
        st.plugins
    );
    assert!(st
        .plugins
        .iter()
        .filter(|p| p.name != "panicker")
        .all(|p| p.panics == 0));

    a.close().await.unwrap();
    for (which, rec) in [("early", &early), ("late", &late)] {
        let ev = rec.events();
        assert_eq!(
            ev.first(),
            Some(&Event::Startup),
            "{which}: startup first: {ev:?}"
        );
        assert_eq!(
            ev.last(),
            Some(&Event::Close),
            "{which}: close last: {ev:?}"
        );
        assert_eq!(ev.iter().filter(|e| **e == Event::Startup).count(), 1);
        let pos = |e: &Event| ev.iter().position(|x| x == e);
        let added = pos(&Event::NodeAdded(b_addr)).expect("node_added");
        let connected = pos(&Event::Connected(b_addr, true)).expect("peer_connected(writable)");
        assert!(
            added < connected,
            "{which}: node_added before peer_connected: {ev:?}"
        );
        let first_msg = ev
            .iter()
            .position(|e| matches!(e, Event::Message { .. }))
            .unwrap();
        assert!(connected < first_msg, "{which}: connected before messages");
        assert_eq!(
            numbers(rec.bodies_from(b_addr, "n")),
            (0..M).collect::<Vec<_>>(),
            "{which}"
        );
        // Between the last message and close, at most the disconnect.
        let last_msg = ev
            .iter()
            .rposition(|e| matches!(e, Event::Message { .. }))
            .unwrap();
        let tail = &ev[last_msg + 1..];
        assert!(
            tail == [Event::Close] || tail == [Event::Disconnected(b_addr), Event::Close],
            "{which}: tail {tail:?}"
        );
    }
    b.close().await.unwrap();
}
