//! All three built-in plugins on one swarm, each registered with one line:
//! discovery grows every table from a single seed, the latency audit
//! measures every peer it finds, and signed state converges over the links
//! discovery made.

use std::collections::BTreeMap;
use std::time::Duration;

use gladius_p2p::{Config, Network};
use gladius_plugins::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle};
use gladius_plugins::latency::{LatencyAudit, LatencyConfig, LatencyHandle};
use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig, SignedStateHandle};
use tokio::time::Instant;

const NODES: usize = 16;
const DEADLINE: Duration = Duration::from_secs(30);

struct Node {
    net: Network,
    discovery: DiscoveryHandle,
    latency: LatencyHandle,
    state: SignedStateHandle,
}

async fn start(seed: Option<std::net::SocketAddr>) -> (Node, std::net::SocketAddr) {
    let net = Network::new(
        Config::default()
            .with_keepalive_interval(Duration::from_millis(500))
            .with_idle_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let mut discovery_config = DiscoveryConfig::default();
    discovery_config.interval = Duration::from_millis(200);
    let (discovery, discovery_handle) = Discovery::new(discovery_config);
    let latency_config = LatencyConfig::default()
        .with_interval(Duration::from_millis(200))
        .with_timeout(Duration::from_millis(200));
    let (latency, latency_handle) = LatencyAudit::new(latency_config).unwrap();
    let state_config = SignedStateConfig::default().with_sync_interval(Duration::from_millis(200));
    let (state, state_handle) = SignedState::new(EthKey::generate(), state_config);
    // One line each.
    net.register_plugin(discovery).await.unwrap();
    net.register_plugin(latency).await.unwrap();
    net.register_plugin(state).await.unwrap();
    let addr = net.listen("127.0.0.1:0").await.unwrap();
    if let Some(seed) = seed {
        net.add(seed).await.unwrap();
    }
    let node = Node {
        net,
        discovery: discovery_handle,
        latency: latency_handle,
        state: state_handle,
    };
    (node, addr)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_latency_and_signed_state_work_together() {
    let (first, seed) = start(None).await;
    let mut nodes = vec![first];
    for _ in 1..NODES {
        nodes.push(start(Some(seed)).await.0);
    }

    let discovered = wait_until("every node knows every other", || {
        nodes
            .iter()
            .all(|n| n.discovery.live_peers().len() >= NODES - 1)
    })
    .await;
    // The route tables agree with what discovery says.
    for n in &nodes {
        let state = n.net.network_state().await.unwrap();
        let writable = state
            .peers
            .iter()
            .filter(|p| p.in_route_table && p.writable)
            .count();
        assert!(writable >= NODES - 1, "route table has {writable} peers");
    }
    let measured = wait_until("every node measured every peer", || {
        nodes
            .iter()
            .all(|n| n.latency.closest(NODES).len() >= NODES - 1)
    })
    .await;
    for n in &nodes {
        let closest = n.latency.closest(3);
        assert_eq!(closest.len(), 3);
        assert!(
            closest.windows(2).all(|w| w[0].1 <= w[1].1),
            "closest is sorted"
        );
    }

    for (i, n) in nodes.iter().enumerate() {
        n.state.set("name", format!("node-{i}")).await.unwrap();
    }
    let converged = wait_until("signed state identical everywhere", || {
        let roots: Vec<String> = nodes.iter().map(|n| n.state.root()).collect();
        nodes.iter().all(|n| n.state.entries().len() == NODES)
            && roots.windows(2).all(|w| w[0] == w[1])
    })
    .await;
    // Every node holds every node's signed name, exactly once.
    let names: BTreeMap<String, String> = nodes[0]
        .state
        .entries()
        .into_iter()
        .map(|e| {
            (
                e.signer.to_string(),
                String::from_utf8(e.value.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(names.len(), NODES);
    println!(
        "together: {NODES} nodes, discovery full in {discovered:?}, all peers measured {measured:?} later, \
         signed state converged {converged:?} after the sets"
    );
    for n in nodes {
        n.net.close().await.unwrap();
    }
}
