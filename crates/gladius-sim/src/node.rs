//! One simulated node: a real [`Network`] with the real built-in plugins
//! (discovery, latency audit, signed state) plus a message counter,
//! listening on a [`SimSocket`]. Every seed it uses — protocol choices,
//! plugin choices, its identity and its Ethereum key — derives from the
//! run's seed, the node's index and its incarnation (restarts count up).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gladius_p2p::{async_trait, Cipher, Config, Identity, Network, NetworkError, Plugin, Received};
use gladius_plugins::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle};
use gladius_plugins::latency::{LatencyAudit, LatencyConfig, LatencyHandle};
use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig, SignedStateHandle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::network::{mix, SimNetwork};

/// Message type the broadcast scenario sends and the `Counter` plugin counts.
pub const PROBE_TYPE: &str = "sim.probe";

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// The address of node `index`: `10.x.y.z:7000`, one address per node.
pub fn node_addr(index: usize) -> SocketAddr {
    let i = u32::try_from(index).unwrap_or(u32::MAX) + 1;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)), PORT))
}

/// How a node is built.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec {
    /// The run's seed.
    pub seed: u64,
    /// The node's index (its address is [`node_addr`]).
    pub index: usize,
    /// 0 for the first start, +1 at every restart with a new key.
    pub incarnation: u32,
    /// Plaintext mode (no Noise, no AEAD).
    pub plaintext: bool,
    /// Discovery's route-table target size.
    pub table_size: usize,
}

impl NodeSpec {
    fn seed_for(&self, what: u64) -> u64 {
        mix(mix(mix(self.seed ^ what) ^ self.index as u64) ^ u64::from(self.incarnation))
    }
}

/// A running simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// The node's address.
    pub addr: SocketAddr,
    /// The node's handle.
    pub net: Network,
    /// Discovery's view.
    pub discovery: DiscoveryHandle,
    /// The latency audit's view.
    pub latency: LatencyHandle,
    /// Signed state.
    pub state: SignedStateHandle,
    /// `sim.probe` messages this node received.
    pub probes: Arc<AtomicU64>,
    /// The spec it was built from.
    pub spec: NodeSpec,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The node's configuration was refused.
    #[error("config: {0}")]
    Config(String),
    /// Binding or listening failed.
    #[error("listen: {0}")]
    Listen(String),
    /// The node stopped while starting.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

impl SimNode {
    /// Build the node, register its plugins and listen on `sim`.
    pub async fn start(sim: &SimNetwork, spec: NodeSpec) -> Result<SimNode, StartError> {
        let addr = node_addr(spec.index);
        let mut keys = StdRng::seed_from_u64(spec.seed_for(1));
        let identity = Identity::from_private_bytes(keys.gen());
        let eth = loop {
            // Almost every 32-byte string is a valid secp256k1 key.
            if let Ok(k) = EthKey::from_bytes(&keys.gen()) {
                break k;
            }
        };
        let config = Config::default()
            .with_rng_seed(spec.seed_for(2))
            .with_identity(identity)
            .with_plaintext(spec.plaintext)
            // One suite on every machine, whatever its CPU prefers.
            .with_cipher(Cipher::AesGcm);
        let net = Network::new(config).map_err(|e| StartError::Config(e.to_string()))?;
        let mut discovery_config = DiscoveryConfig::default().with_rng_seed(spec.seed_for(3));
        discovery_config.table_size = spec.table_size;
        let (discovery, discovery_handle) = Discovery::new(discovery_config);
        let (latency, latency_handle) =
            LatencyAudit::new(LatencyConfig::default().with_rng_seed(spec.seed_for(4)))
                .map_err(|e| StartError::Config(e.to_string()))?;
        let (state, state_handle) = SignedState::new(
            eth,
            SignedStateConfig::default()
                .with_rng_seed(spec.seed_for(5))
                .with_max_entries(1_000_000),
        );
        let probes = Arc::new(AtomicU64::new(0));
        net.register_plugin(discovery).await?;
        net.register_plugin(latency).await?;
        net.register_plugin(state).await?;
        net.register_plugin(Counter {
            probes: probes.clone(),
        })
        .await?;
        let socket = sim
            .bind(addr)
            .map_err(|e| StartError::Listen(e.to_string()))?;
        net.listen_on(socket).await?;
        Ok(SimNode {
            addr,
            net,
            discovery: discovery_handle,
            latency: latency_handle,
            state: state_handle,
            probes,
            spec,
        })
    }

    /// Route-table peers with a session up now.
    pub fn live_peers(&self) -> Vec<SocketAddr> {
        self.discovery.live_peers()
    }
}

/// Counts the `sim.probe` messages of the broadcast scenario.
#[derive(Debug)]
struct Counter {
    probes: Arc<AtomicU64>,
}

#[async_trait]
impl Plugin for Counter {
    fn name(&self) -> &str {
        "sim.counter"
    }
    async fn new_message(&self, _net: &Network, msg: &Received) {
        if msg.message().msg_type() == PROBE_TYPE {
            self.probes.fetch_add(1, Ordering::Relaxed);
        }
    }
}
