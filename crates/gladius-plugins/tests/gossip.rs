//! The gossip plugin on real nodes: UDP on loopback, encrypted sessions,
//! discovery with a route table of 3 so that messages must cross several
//! hops; hostile frames (forged, replayed, oversized) sent by a raw node
//! over a real session; and the plugin's timers on tokio's virtual clock.

mod discovery_support;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use discovery_support::{close_all, discovery_node, node_config, wait_for, Inbox};
use gladius_p2p::{LinkFaults, MemoryNetwork, Message, Network};
use gladius_plugins::discovery::{DiscoveryConfig, DiscoveryHandle};
use gladius_plugins::gossip::wire::{Data, Frame, Topic, MESSAGE_TYPE};
use gladius_plugins::gossip::{
    Gossip, GossipConfig, GossipHandle, GossipKey, GossipMessage, MessageId, Subscription,
};

const NODES: usize = 30;
const TABLE: usize = 3;

struct Node {
    net: Network,
    addr: SocketAddr,
    discovery: DiscoveryHandle,
    gossip: GossipHandle,
}

async fn gossip_node(table_size: usize, seed: Option<SocketAddr>, config: GossipConfig) -> Node {
    let mut dc = DiscoveryConfig::default();
    dc.table_size = table_size;
    dc.interval = Duration::from_millis(300);
    let (net, addr, discovery) = discovery_node(node_config(), dc).await;
    let (plugin, gossip) = Gossip::new(GossipKey::generate(), config);
    net.register_plugin(plugin).await.unwrap();
    if let Some(seed) = seed {
        net.add(seed).await.unwrap();
    }
    Node {
        net,
        addr,
        discovery,
        gossip,
    }
}

/// Everything a subscription has received so far.
fn drain(sub: &mut Subscription, into: &mut Vec<GossipMessage>) {
    while let Some(m) = sub.try_recv() {
        into.push(m);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_with_tables_of_three_get_every_message_once_over_several_hops() {
    thirty_nodes(GossipConfig::default()).await;
}

/// The same with shortcuts on: copies off the tree (wire kinds 6 and 7)
/// cross real sessions, and still every node gets every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shortcuts_every_message_still_arrives_once() {
    let shortcuts = thirty_nodes(GossipConfig::default().with_shortcuts(8, 2)).await;
    assert!(shortcuts > 0, "no shortcut was sent");
}

/// Thirty nodes, eight messages from several origins: each arrives once at
/// every other node, over several hops. Returns the shortcuts sent.
async fn thirty_nodes(config: GossipConfig) -> u64 {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..NODES {
        // A chain of seeds: discovery has to find the rest.
        let seed = i.checked_sub(1).map(|j| nodes[j].addr);
        nodes.push(gossip_node(TABLE, seed, config.clone()).await);
    }
    let mut subs = Vec::new();
    for n in &nodes {
        subs.push(n.gossip.subscribe("news").await.unwrap());
    }
    wait_for(Duration::from_secs(30), "every table full", || {
        let full = nodes
            .iter()
            .all(|n| n.discovery.live_peers().len() >= TABLE);
        async move { full }
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "every node has tree neighbours",
        || {
            let ok = nodes
                .iter()
                .all(|n| n.gossip.topics().first().is_some_and(|t| t.eager > 0));
            async move { ok }
        },
    )
    .await;

    // Messages from several origins, one after the other.
    let mut published: Vec<(usize, MessageId)> = Vec::new();
    let mut got: Vec<Vec<GossipMessage>> = vec![Vec::new(); NODES];
    for (k, origin) in [0, NODES - 1, NODES / 2, 7, 0, 21, 13, 3]
        .into_iter()
        .enumerate()
    {
        let body = format!("message {k}");
        let id = nodes[origin].gossip.publish("news", body).await.unwrap();
        published.push((origin, id));
        let what = format!("message {k} reached all {} other nodes", NODES - 1);
        wait_for(Duration::from_secs(20), &what, || {
            for (sub, into) in subs.iter_mut().zip(got.iter_mut()) {
                drain(sub, into);
            }
            let everyone = (0..NODES)
                .filter(|&i| i != origin)
                .all(|i| got[i].iter().any(|m| m.id == id));
            async move { everyone }
        })
        .await;
    }
    // Give stray copies time to show up, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (sub, into) in subs.iter_mut().zip(got.iter_mut()) {
        drain(sub, into);
    }
    let mut max_hops = 0;
    let mut farthest: HashMap<MessageId, u16> = HashMap::new();
    for (i, msgs) in got.iter().enumerate() {
        let mut per_id: HashMap<MessageId, usize> = HashMap::new();
        for m in msgs {
            *per_id.entry(m.id).or_default() += 1;
            max_hops = max_hops.max(m.hops);
            let far = farthest.entry(m.id).or_default();
            *far = (*far).max(m.hops);
        }
        for &(origin, id) in &published {
            let expected = usize::from(origin != i);
            assert_eq!(per_id.get(&id).copied().unwrap_or(0), expected, "node {i}");
        }
        assert_eq!(msgs.len(), published.iter().filter(|p| p.0 != i).count());
    }
    // Every message was relayed (no origin reaches 29 nodes directly),
    // and some crossed three links or more.
    for (origin, id) in &published {
        let far = farthest.get(id).copied().unwrap_or(0);
        assert!(
            far >= 2,
            "the message from {origin} went at most {far} hops"
        );
    }
    assert!(max_hops >= 3, "messages crossed at most {max_hops} hops");
    let mut shortcuts = 0;
    for n in &nodes {
        let s = n.gossip.stats();
        assert_eq!(
            (
                s.protocol.forged,
                s.protocol.malformed,
                s.subscriber_overflow
            ),
            (0, 0, 0)
        );
        shortcuts += s.protocol.shortcuts_sent;
    }
    close_all(nodes.into_iter().map(|n| n.net)).await;
    shortcuts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_oversized_gossip_is_rejected() {
    let victim = gossip_node(8, None, GossipConfig::default()).await;
    let mut sub = victim.gossip.subscribe("news").await.unwrap();
    // A raw node (no gossip plugin) that speaks the wire format by hand.
    let (raw, _, _) = discovery_node(node_config(), DiscoveryConfig::default()).await;
    raw.add(victim.addr).await.unwrap();
    let send = |frame: Bytes| {
        let raw = raw.clone();
        let to = victim.addr;
        async move {
            let msg = Message::new(MESSAGE_TYPE, frame).unwrap();
            let report = raw.broadcast_to(msg, &[to]).await.unwrap();
            assert!(report.all_queued());
        }
    };
    let topic = Topic::new("news").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = GossipKey::generate();
    let good = Data::signed(&key, topic.clone(), now, 1, Bytes::from_static(b"genuine"));
    let mut forged = good.clone();
    forged.body = Bytes::from_static(b"forgery");
    let oversized = Data::signed(&key, topic, now, 2, Bytes::from(vec![0; 70_000]));

    send(Frame::Data(forged).encode()).await;
    send(Frame::Data(oversized).encode()).await;
    send(Frame::Data(good.clone()).encode()).await;
    send(Frame::Data(good.clone()).encode()).await; // a replay
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&m.body[..], m.origin, m.hops),
        (&b"genuine"[..], key.origin(), 1)
    );
    wait_for(Duration::from_secs(10), "all four frames counted", || {
        let p = victim.gossip.stats().protocol;
        async move { p.forged == 1 && p.oversized == 1 && p.duplicates == 1 }
    })
    .await;
    assert_eq!(victim.gossip.stats().protocol.delivered, 1);
    assert!(sub.try_recv().is_none(), "nothing else delivered");
    close_all([victim.net, raw]).await;
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(start_paused = true)]
async fn an_announced_message_is_grafted_after_the_graft_timeout_in_virtual_time() {
    const DELAY: Duration = Duration::from_millis(10);
    let link = MemoryNetwork::new(7);
    link.set_faults(LinkFaults {
        delay: DELAY,
        ..LinkFaults::default()
    });
    let config = GossipConfig::default();
    let net = Network::new(node_config()).unwrap();
    let (plugin, gossip) = Gossip::new(GossipKey::generate(), config.clone());
    net.register_plugin(plugin).await.unwrap();
    let addr = net
        .listen_on(link.bind("10.0.0.1:9000".parse().unwrap()).unwrap())
        .await
        .unwrap();
    let mut sub = gossip.subscribe("news").await.unwrap();
    // A raw node that records what the gossip node sends it.
    let raw = Network::new(node_config()).unwrap();
    let inbox = Inbox::default();
    raw.register_plugin(inbox.clone()).await.unwrap();
    raw.listen_on(link.bind("10.0.0.2:9000".parse().unwrap()).unwrap())
        .await
        .unwrap();
    raw.add(addr).await.unwrap();
    let frames = |inbox: &Inbox| -> Vec<Frame> {
        inbox
            .of_type(MESSAGE_TYPE)
            .into_iter()
            .filter_map(|(_, body)| Frame::decode(&Bytes::from(body), 1 << 20, 255).ok())
            .collect()
    };
    wait_for(
        Duration::from_secs(10),
        "the gossip node's subscription",
        || {
            let subscribed = frames(&inbox)
                .iter()
                .any(|f| matches!(f, Frame::Subscribe { .. }));
            async move { subscribed }
        },
    )
    .await;

    let key = GossipKey::generate();
    let topic = Topic::new("news").unwrap();
    let data = Data::signed(
        &key,
        topic.clone(),
        unix_ms(),
        1,
        Bytes::from_static(b"late"),
    );
    let id = data.id();
    let ihave = Frame::IHave {
        topic,
        ids: vec![(id, 0)],
    };
    let send = |frame: Frame| {
        let raw = raw.clone();
        async move {
            let msg = Message::new(MESSAGE_TYPE, frame.encode()).unwrap();
            assert!(raw.broadcast_to(msg, &[addr]).await.unwrap().all_queued());
        }
    };
    let t0 = tokio::time::Instant::now();
    send(ihave).await;
    wait_for(Duration::from_secs(10), "a graft for the id", || {
        let grafted = frames(&inbox)
            .iter()
            .any(|f| matches!(f, Frame::Graft { ids, .. } if ids.contains(&id)));
        async move { grafted }
    })
    .await;
    // The announcement's trip, the graft timeout, the graft's trip; the
    // transport's own ticks add a few virtual milliseconds at most.
    let expected = DELAY + config.graft_timeout + DELAY;
    let took = t0.elapsed();
    assert!(
        took >= expected && took <= expected + Duration::from_millis(40),
        "graft after {took:?}, expected about {expected:?}"
    );
    send(Frame::Data(data)).await;
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.id, m.hops, &m.body[..]), (id, 1, &b"late"[..]));
    assert_eq!(gossip.stats().protocol.grafts_sent, 1);

    // Dropping the last subscription leaves the topic at its next message.
    drop(sub);
    let topic = Topic::new("news").unwrap();
    let next = Data::signed(&key, topic, unix_ms(), 2, Bytes::from_static(b"x"));
    send(Frame::Data(next)).await;
    wait_for(Duration::from_secs(10), "an unsubscribe", || {
        let left = frames(&inbox)
            .iter()
            .any(|f| matches!(f, Frame::Unsubscribe { .. }));
        async move { left }
    })
    .await;
    assert!(gossip.topics().is_empty());
    close_all([net, raw]).await;
}
