//! Helpers for the signed-state tests: nodes on 127.0.0.1 with the plugin,
//! waits with deadlines.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub use super::support::{close_all, wait_for};

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
