//! Three nodes: discovery, a signed "content I serve" field, a JSON broadcast, a JSON lookup.

use std::{net::SocketAddr, time::Duration};

use gladius_p2p::{Config, Filter, Network};
use gladius_plugins::discovery::{Discovery, DiscoveryConfig};
use gladius_plugins::signed_state::{EthKey, SignedState, SignedStateConfig, SignedStateHandle};
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;
const WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)] // the signed "content I serve" field
struct Serving(SocketAddr, Vec<String>);

/// A node with discovery and signed state that answers "lookup" requests for its files.
async fn start(files: &'static [(&str, u64)]) -> Result<(Network, SocketAddr, SignedStateHandle)> {
    let net = Network::new(Config::default())?;
    net.register_plugin(Discovery::new(DiscoveryConfig::default()).0)
        .await?;
    let (plugin, state) = SignedState::new(EthKey::generate(), SignedStateConfig::default());
    net.register_plugin(plugin).await?;
    let addr = net.listen("127.0.0.1:0").await?;
    let serving = Serving(addr, files.iter().map(|f| f.0.to_owned()).collect());
    state.set("serving", serde_json::to_vec(&serving)?).await?;
    let mut lookups = net.subscribe(Filter::type_prefix("lookup")).await?;
    let server = net.downgrade();
    tokio::spawn(async move {
        while let Some(req) = lookups.next().await {
            let file: String = req.json().unwrap_or_default();
            let size = files.iter().find(|f| f.0 == file).map(|f| f.1);
            let _ = server.reply_json(&req, "lookup", &size).await;
        }
    });
    Ok((net, addr, state))
}

async fn run() -> Result<()> {
    let (a, a_addr, _) = start(&[("a.mp4", 700)]).await?;
    let (b, ..) = start(&[("c.mp4", 42)]).await?;
    let (c, _, c_state) = start(&[]).await?;
    let mut wants = a.subscribe(Filter::type_prefix("want")).await?;
    let mut serving = c_state.changes();
    b.add(a_addr).await?;
    c.add(a_addr).await?; // only the seed: discovery introduces b and c
    c.wait_peers(2, WAIT).await?;
    c.broadcast_json("want", &["c.mp4"]).await?;
    let wanted: Vec<String> = wants.next().await.ok_or("closed")?.json()?;
    println!("a heard that c wants {wanted:?}");
    let holder = loop {
        let entry = serving.next().await.ok_or("closed")?;
        let Serving(addr, files) = serde_json::from_slice(&entry.value)?;
        if files.iter().any(|f| f == "c.mp4") {
            break addr;
        }
    };
    let size: Option<u64> = c.request_json("lookup", "c.mp4", holder, WAIT).await?;
    println!("c.mp4: {} bytes at {holder}", size.ok_or("not found")?);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(60), run()).await?
}
