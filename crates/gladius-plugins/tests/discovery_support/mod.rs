//! Helpers for the discovery tests: nodes with short timeouts, a recording
//! plugin for the hand-driven liar, and waits with deadlines (never fixed
//! sleeps as assertions).

#![allow(dead_code, unreachable_pub, missing_docs)]

pub use super::support::{close_all, wait_for};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gladius_p2p::{async_trait, Config, Network, Plugin, Received};
use gladius_plugins::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle};

/// Short transport timeouts so failure paths finish quickly.
pub fn node_config() -> Config {
    Config::default()
        .with_keepalive_interval(Duration::from_millis(1000))
        .with_idle_timeout(Duration::from_secs(4))
        .with_connect_timeout(Duration::from_secs(2))
        .with_close_timeout(Duration::from_millis(500))
        .with_reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
}

/// A listening node on 127.0.0.1 running discovery.
pub async fn discovery_node(
    config: Config,
    dc: DiscoveryConfig,
) -> (Network, SocketAddr, DiscoveryHandle) {
    let net = Network::new(config).unwrap();
    let (plugin, handle) = Discovery::new(dc);
    net.register_plugin(plugin).await.unwrap();
    let addr = net.listen("127.0.0.1:0").await.unwrap();
    (net, addr, handle)
}

/// One recorded message: session address, type, body.
pub type Recorded = (SocketAddr, String, Vec<u8>);

/// A plugin recording every message.
#[derive(Clone, Default, Debug)]
pub struct Inbox {
    pub messages: Arc<Mutex<Vec<Recorded>>>,
}

impl Inbox {
    pub fn of_type(&self, t: &str) -> Vec<(SocketAddr, Vec<u8>)> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.1 == t)
            .map(|m| (m.0, m.2.clone()))
            .collect()
    }
}

#[async_trait]
impl Plugin for Inbox {
    fn name(&self) -> &str {
        "inbox"
    }
    async fn new_message(&self, _net: &Network, msg: &Received) {
        self.messages.lock().unwrap().push((
            msg.peer(),
            msg.message().msg_type().to_owned(),
            msg.message().body().to_vec(),
        ));
    }
}
