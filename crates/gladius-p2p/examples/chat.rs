//! Two (or more) terminals chat over gladius-p2p.
//!
//! ```text
//! terminal 1: cargo run --example chat -- 127.0.0.1:7001 127.0.0.1:7002
//! terminal 2: cargo run --example chat -- 127.0.0.1:7002 127.0.0.1:7001
//! ```
//! The first argument is the address to listen on; the rest are peers to
//! add. Type a line and press enter to send it to every peer.
//!
//! No plugin: the application reads a message stream, a peer-event stream
//! and its standard input in one `select!` loop.

use gladius_p2p::{Config, Filter, Identity, Message, Network, PeerEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    // A stable identity per listening address: a restarted chat is the
    // same peer to the others.
    let key_file =
        std::env::temp_dir().join(format!("gladius-chat-{}.key", listen.replace(':', "_")));
    let identity = Identity::load_or_generate(&key_file)?;
    let node = Network::new(Config::default().with_identity(identity))?;
    let mut chat = node.subscribe(Filter::type_prefix("chat")).await?;
    let mut events = node.events().await?;
    let addr = node.listen(listen.as_str()).await?;
    println!("* listening on {addr}; type to chat, Ctrl-D to quit");
    for peer in args {
        node.add(peer.as_str()).await?;
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            Some(msg) = chat.next() => {
                println!("<{}> {}", msg.peer(), String::from_utf8_lossy(msg.message().body()));
            }
            Some(event) = events.next() => match event {
                PeerEvent::Connected(peer) => match peer.public_key {
                    Some(key) => println!("* connected to {} (key {key})", peer.addr),
                    None => println!("* connected to {} (plaintext)", peer.addr),
                },
                PeerEvent::Rejected { addr, reason } => println!("* {addr} refused: {reason}"),
                PeerEvent::Disconnected(addr, why) => println!("* {addr} left ({why})"),
                _ => {}
            },
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let report = node.broadcast(Message::new("chat", line)?).await?;
                if report.queued.is_empty() {
                    println!("* nobody to send to yet");
                }
                for (peer, why) in report.failed {
                    println!("* not sent to {peer}: {why}");
                }
            }
        }
    }
    node.close().await?;
    Ok(())
}
