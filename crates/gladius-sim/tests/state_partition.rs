//! Signed state across a partition, in virtual time: 100 real nodes (the
//! driver, discovery, the latency audit, signed state) converge on every
//! node's field; cut in two halves, each half converges on its own new
//! fields and none leaks across; healed, everyone holds everything. The
//! deadlines are virtual, so a loaded machine makes the test slower, never
//! wrong. (The real-socket test in gladius-plugins runs a smaller network.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use gladius_sim::{node_addr, LinkConfig, NodeSpec, SimNetwork, SimNode};

const N: usize = 100;
const HALF: usize = N / 2;

/// Wait (virtual time) until `done` holds; panics after `within`.
async fn until(net: &SimNetwork, within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = net.elapsed();
    while !done() {
        assert!(
            net.elapsed() - start < within,
            "{what}: not within {within:?} of virtual time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{what}: {:.2} s virtual",
        (net.elapsed() - start).as_secs_f64()
    );
}

/// Every node in `group` holds `count` entries and they share one root.
fn converged(nodes: &[SimNode], group: std::ops::Range<usize>, count: usize) -> bool {
    let g = &nodes[group];
    let roots: BTreeSet<String> = g.iter().map(|n| n.state.root()).collect();
    roots.len() == 1 && g.iter().all(|n| n.state.len() == count)
}

#[tokio::test(start_paused = true)]
async fn hundred_nodes_converge_stay_apart_while_partitioned_and_converge_after_the_heal() {
    let net = SimNetwork::new(17, LinkConfig::default());
    tokio::spawn(net.clone().run_deliveries());
    let mut nodes = Vec::with_capacity(N);
    for index in 0..N {
        let spec = NodeSpec {
            seed: 17,
            index,
            incarnation: 0,
            plaintext: false,
            table_size: 12,
        };
        let node = SimNode::start(&net, spec).await.expect("node starts");
        if index > 0 {
            node.net.add(node_addr(index - 1)).await.expect("add");
        }
        nodes.push(node);
    }
    for (i, n) in nodes.iter().enumerate() {
        n.state.set("name", format!("node-{i}")).await.expect("set");
    }
    until(&net, Duration::from_secs(60), "initial", || {
        converged(&nodes, 0..N, N)
    })
    .await;
    for n in &nodes {
        for (j, other) in nodes.iter().enumerate() {
            let v = n.state.get_value(&other.state.address(), "name");
            assert_eq!(v.as_deref(), Some(format!("node-{j}").as_bytes()));
        }
    }

    // Cut the network in two; every node publishes a field of its epoch.
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    net.partition(&[addrs[..HALF].to_vec(), addrs[HALF..].to_vec()]);
    for (i, n) in nodes.iter().enumerate() {
        n.state
            .set("epoch", format!("partitioned-{i}"))
            .await
            .expect("set");
    }
    until(&net, Duration::from_secs(60), "partition, half A", || {
        converged(&nodes, 0..HALF, N + HALF)
    })
    .await;
    until(&net, Duration::from_secs(60), "partition, half B", || {
        converged(&nodes, HALF..N, N + HALF)
    })
    .await;
    // Another 10 s apart: still nothing crosses.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (i, n) in nodes.iter().enumerate() {
        let other = if i < HALF { HALF..N } else { 0..HALF };
        for j in other {
            assert!(
                n.state.get(&nodes[j].state.address(), "epoch").is_none(),
                "partition leaked {j} -> {i}"
            );
        }
    }
    assert_ne!(nodes[0].state.root(), nodes[N - 1].state.root());

    // Heal: discovery's retries reconnect the halves; state follows.
    net.heal();
    until(&net, Duration::from_secs(120), "after the heal", || {
        converged(&nodes, 0..N, 2 * N)
    })
    .await;
    for n in &nodes {
        for (j, other) in nodes.iter().enumerate() {
            let v = n.state.get_value(&other.state.address(), "epoch");
            assert_eq!(v.as_deref(), Some(format!("partitioned-{j}").as_bytes()));
        }
        let st = n.state.stats();
        assert_eq!(
            st.rejections.total() - st.rejections.stale,
            0,
            "{:?}",
            st.rejections
        );
        assert_eq!(st.malformed_messages, 0);
    }
    println!(
        "{} datagrams, digest {}",
        net.stats().delivered,
        net.trace_digest()
    );
}
