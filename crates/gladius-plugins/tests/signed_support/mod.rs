//! Helpers for the signed-state tests: nodes on 127.0.0.1 with the plugin,
//! waits with deadlines.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use gladius_p2p::{Config, Network};
use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig, SignedStateHandle};

/// Short timeouts so failure paths finish quickly in tests.
pub fn net_config() -> Config {
    Config::default()
        .with_keepalive_interval(Duration::from_millis(500))
        .with_idle_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(3))
        .with_close_timeout(Duration::from_millis(500))
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
}

pub struct Node {
    pub net: Network,
    pub addr: SocketAddr,
    pub state: SignedStateHandle,
}

pub async fn node(config: SignedStateConfig) -> Node {
    node_with_key(EthKey::generate(), config).await
}

pub async fn node_with_key(key: EthKey, config: SignedStateConfig) -> Node {
    let net = Network::new(net_config()).unwrap();
    let (plugin, state) = SignedState::new(key, config);
    net.register_plugin(plugin).await.unwrap();
    let addr = net.listen("127.0.0.1:0").await.unwrap();
    Node { net, addr, state }
}

pub async fn close_all(nets: Vec<Network>) {
    let tasks: Vec<_> = nets
        .into_iter()
        .map(|n| tokio::spawn(async move { n.close().await }))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Poll `cond` every 20 ms until it holds or `within` passes; panics with `what`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
