//! Two (or more) terminals chat over gladius-p2p.
//!
//! ```text
//! terminal 1: cargo run --example chat -- 127.0.0.1:7001 127.0.0.1:7002
//! terminal 2: cargo run --example chat -- 127.0.0.1:7002 127.0.0.1:7001
//! ```
//! The first argument is the address to listen on; the rest are peers to
//! add. Type a line and press enter to send it to every peer.

use std::net::SocketAddr;

use gladius_p2p::{async_trait, Config, Message, Network, PeerInfo, Plugin, Received};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Prints every chat message.
struct Printer;

#[async_trait]
impl Plugin for Printer {
    fn name(&self) -> &str {
        "printer"
    }
    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        match peer.public_key {
            Some(key) => println!("* connected to {} (key {key})", peer.addr),
            None => println!("* connected to {} (plaintext)", peer.addr),
        }
    }
    async fn peer_rejected(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        println!("* {addr} refused: {reason}");
    }
    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr) {
        println!("* {addr} left");
    }
    async fn new_message(&self, _net: &Network, msg: &Received) {
        let m = msg.message();
        if m.msg_type() == "chat" {
            println!("<{}> {}", msg.peer(), String::from_utf8_lossy(m.body()));
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let node = Network::new(Config::default())?;
    node.register_plugin(Printer).await?;
    let addr = node.listen(listen.as_str()).await?;
    println!("* listening on {addr}; type to chat, Ctrl-D to quit");
    for peer in args {
        node.add(peer.as_str()).await?;
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let report = node.broadcast(Message::new("chat", line)?).await?;
        if report.queued.is_empty() {
            println!("* nobody to send to yet");
        }
        for (peer, why) in report.failed {
            println!("* not sent to {peer}: {why}");
        }
    }
    node.close().await?;
    Ok(())
}
