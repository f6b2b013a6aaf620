//! A plugin that counts `ping` messages and answers `count` requests with
//! the number seen so far.
//!
//! ```text
//! cargo run --example custom_plugin
//! ```
//! Runs two nodes in one process: one pings the other three times, then
//! asks for the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gladius_p2p::{async_trait, Config, Message, Network, Plugin, Received};

/// Counts pings; answers "count" requests.
#[derive(Default)]
struct PingCounter {
    pings: AtomicU64,
}

#[async_trait]
impl Plugin for PingCounter {
    fn name(&self) -> &str {
        "ping-counter"
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        match msg.message().msg_type() {
            "ping" => {
                self.pings.fetch_add(1, Ordering::Relaxed);
            }
            "count" if msg.is_request() => {
                let n = self.pings.load(Ordering::Relaxed);
                if let Ok(answer) = Message::new("count.reply", n.to_string()) {
                    if let Err(e) = net.reply(msg, answer).await {
                        eprintln!("reply failed: {e}");
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter_node = Network::new(Config::default())?;
    counter_node.register_plugin(PingCounter::default()).await?;
    let counter_addr = counter_node.listen("127.0.0.1:0").await?;

    let pinger = Network::new(Config::default())?;
    pinger.listen("127.0.0.1:0").await?;
    pinger.add(counter_addr).await?;
    for _ in 0..3 {
        pinger.broadcast(Message::new("ping", "")?).await?;
    }
    // Requests travel on the same ordered session, after the pings.
    let reply = pinger
        .request(
            Message::new("count", "")?,
            counter_addr,
            Duration::from_secs(5),
        )
        .await?;
    let count = String::from_utf8_lossy(reply.message().body()).into_owned();
    println!("the counter saw {count} pings");
    assert_eq!(count, "3");
    pinger.close().await?;
    counter_node.close().await?;
    Ok(())
}
