//! The API for applications that are not plugins, over real UDP on
//! loopback with real crypto: plugin removal (also from inside a hook), the
//! receive and event streams, event-driven waits, typed JSON messages, and
//! peers named by strings everywhere.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use gladius_p2p::{
    async_trait, Filter, Network, NetworkError, PeerEvent, PeerReason, Plugin, PluginId, Received,
    Subscription,
};

const LONG: Duration = Duration::from_secs(10);

/// `a` has added `b`, and both see the session up.
async fn connected_pair() -> (
    (Network, SocketAddr, Recorder),
    (Network, SocketAddr, Recorder),
) {
    let a = node().await;
    let b = node().await;
    a.0.add(b.1).await.unwrap();
    a.0.wait_connected(b.1, LONG).await.unwrap();
    b.0.wait_connected(a.1, LONG).await.unwrap();
    (a, b)
}

async fn plugin_names(net: &Network) -> Vec<String> {
    let state = net.network_state().await.unwrap();
    state.plugins.into_iter().map(|p| p.name).collect()
}

fn messages_after_close(events: &[Event]) -> usize {
    let close = events.iter().position(|e| *e == Event::Close);
    close.map_or(0, |at| events.len() - at - 1)
}

#[tokio::test]
async fn removed_plugin_gets_close_then_nothing_and_others_carry_on() {
    let ((a, _, _), (b, _, rb)) = connected_pair().await;
    let removed = Recorder::default();
    let id = b.register_plugin(removed.clone()).await.unwrap();
    assert_eq!(plugin_names(&b).await, ["recorder", "recorder"]);

    a.broadcast(text_msg("seq", "before")).await.unwrap();
    wait_for(LONG, "both plugins see `before`", || async {
        removed.count_type("seq") == 1 && rb.count_type("seq") == 1
    })
    .await;

    assert!(b.remove_plugin(id).await.unwrap());
    assert!(
        !b.remove_plugin(id).await.unwrap(),
        "removing twice is a no-op"
    );
    assert_eq!(plugin_names(&b).await, ["recorder"]);
    wait_for(LONG, "close on the removed plugin", || async {
        removed.saw(&Event::Close)
    })
    .await;

    for i in 0..50 {
        a.broadcast(text_msg("seq", i)).await.unwrap();
    }
    wait_for(LONG, "the remaining plugin gets all 50", || async {
        rb.count_type("seq") == 51
    })
    .await;
    let events = removed.events();
    assert_eq!(removed.count_type("seq"), 1, "only `before`");
    assert_eq!(events.last(), Some(&Event::Close), "close is the last hook");
    assert_eq!(messages_after_close(&events), 0);
    assert!(!rb.saw(&Event::Close), "the other plugin is untouched");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Removes itself when it gets a message of type "leave".
#[derive(Clone, Default)]
struct Leaver {
    id: Arc<OnceLock<PluginId>>,
    seen: Arc<Mutex<Vec<String>>>,
    removal: Arc<Mutex<Option<Result<bool, String>>>>,
}

#[async_trait]
impl Plugin for Leaver {
    fn name(&self) -> &str {
        "leaver"
    }
    async fn new_message(&self, net: &Network, msg: &Received) {
        let t = msg.message().msg_type().to_owned();
        self.seen.lock().unwrap().push(t.clone());
        if t == "leave" {
            let id = *self.id.get().unwrap();
            let r = net.remove_plugin(id).await.map_err(|e| e.to_string());
            *self.removal.lock().unwrap() = Some(r);
        }
    }
    async fn close(&self, _net: &Network) {
        self.seen.lock().unwrap().push("close".into());
    }
}

#[tokio::test]
async fn a_plugin_removes_itself_from_its_own_hook_without_deadlock() {
    let ((a, _, _), (b, _, rb)) = connected_pair().await;
    let leaver = Leaver::default();
    let id = b.register_plugin(leaver.clone()).await.unwrap();
    leaver.id.set(id).unwrap();

    a.broadcast(text_msg("stay", 0)).await.unwrap();
    a.broadcast(text_msg("leave", 0)).await.unwrap();
    for i in 0..20 {
        a.broadcast(text_msg("stay", i)).await.unwrap();
    }
    wait_for(LONG, "the leaver closed", || async {
        leaver.seen.lock().unwrap().last().map(String::as_str) == Some("close")
    })
    .await;
    wait_for(LONG, "the recorder gets all 21 `stay`", || async {
        rb.count_type("stay") == 21
    })
    .await;
    assert_eq!(*leaver.removal.lock().unwrap(), Some(Ok(true)));
    assert_eq!(*leaver.seen.lock().unwrap(), ["stay", "leave", "close"]);
    assert_eq!(plugin_names(&b).await, ["recorder"]);
    // The node still works after a hook removed its plugin.
    assert!(a
        .broadcast(text_msg("stay", 99))
        .await
        .unwrap()
        .all_queued());
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Blocks in its first `new_message` until the gate opens.
#[derive(Clone)]
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Plugin for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    async fn new_message(&self, _net: &Network, msg: &Received) {
        let body = String::from_utf8_lossy(msg.message().body()).into_owned();
        self.seen.lock().unwrap().push(body);
        let _ = self.gate.acquire().await;
    }
    async fn close(&self, _net: &Network) {
        self.seen.lock().unwrap().push("close".into());
    }
}

#[tokio::test]
async fn removal_does_not_wait_for_a_busy_hook_and_discards_what_was_queued() {
    let ((a, _, _), (b, _, rb)) = connected_pair().await;
    let gated = Gated {
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        seen: Arc::default(),
    };
    let id = b.register_plugin(gated.clone()).await.unwrap();
    for i in 0..10 {
        a.broadcast(text_msg("seq", i)).await.unwrap();
    }
    // The recorder, registered first, gets each message just before the
    // gated plugin's queue does: once it has all ten, nine wait there.
    wait_for(LONG, "all ten handed to both plugins", || async {
        rb.count_type("seq") == 10 && gated.seen.lock().unwrap().len() == 1
    })
    .await;
    let removal = tokio::time::timeout(LONG, b.remove_plugin(id)).await;
    assert!(removal.expect("removal waits for no hook").unwrap());
    gated.gate.add_permits(1);
    wait_for(LONG, "close after the hook in progress", || async {
        gated.seen.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*gated.seen.lock().unwrap(), ["0", "close"]);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A stalled plugin holds at most `PLUGIN_QUEUE_BYTES` of queued bodies:
/// 1 MiB messages past it are dropped for it and counted, not queued by
/// the thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_plugin_queues_at_most_its_byte_budget() {
    let ((a, _, _), (b, _, rb)) = connected_pair().await;
    let gated = Gated {
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        seen: Arc::default(),
    };
    b.register_plugin(gated.clone()).await.unwrap();
    const MIB: usize = 1 << 20;
    let fit = gladius_p2p::PLUGIN_QUEUE_BYTES / MIB;
    let n = fit + 16;
    for _ in 0..n {
        // The sender's own queue is bounded too: retry until queued.
        let m = gladius_p2p::Message::new("big", vec![b'x'; MIB]).unwrap();
        while !a.broadcast(m.clone()).await.unwrap().all_queued() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for(
        Duration::from_secs(60),
        "every message handed over",
        || async { rb.count_type("big") == n },
    )
    .await;
    let state = b.network_state().await.unwrap();
    let dropped = state
        .plugins
        .iter()
        .find(|p| p.name == "gated")
        .unwrap()
        .events_dropped;
    // One in the hook, `fit` queued, the rest dropped.
    assert_eq!(dropped as usize, n - 1 - fit);
    gated.gate.add_permits(n);
    wait_for(LONG, "the queued ones delivered", || async {
        gated.seen.lock().unwrap().len() == 1 + fit
    })
    .await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn subscribe_delivers_every_matching_message_once_in_order() {
    let ((a, a_addr, _), (b, _, _)) = connected_pair().await;
    let mut inbox = b.subscribe(Filter::type_prefix("seq")).await.unwrap();
    assert!(plugin_names(&b).await.contains(&"subscribe:seq".to_owned()));
    const N: u64 = 500;
    for i in 0..N {
        a.broadcast(text_msg("seq.n", i)).await.unwrap();
        if i % 50 == 0 {
            a.broadcast(text_msg("other", i)).await.unwrap();
        }
    }
    a.broadcast(text_msg("seq.end", "end")).await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = tokio::time::timeout(LONG, inbox.next()).await.unwrap() {
        assert_eq!(msg.peer(), a_addr);
        if msg.message().msg_type() == "seq.end" {
            break;
        }
        assert_eq!(msg.message().msg_type(), "seq.n", "the filter holds");
        got.push(msg.message().body().to_vec());
    }
    assert_eq!(numbers(got), (0..N).collect::<Vec<_>>(), "once, in order");
    assert_eq!(inbox.dropped(), 0);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_stalled_subscriber_holds_its_bound_and_counts_the_rest() {
    let ((a, _, _), (b, _, _)) = connected_pair().await;
    const CAP: usize = 16;
    const N: u64 = 200;
    let mut inbox = b.subscribe_bounded(Filter::All, CAP).await.unwrap();
    for i in 0..N {
        a.broadcast(text_msg("seq", i)).await.unwrap();
    }
    let dropped = N - CAP as u64;
    wait_for(LONG, "every message forwarded or dropped", || async {
        inbox.dropped() == dropped
    })
    .await;
    let mut got = Vec::new();
    while let Some(msg) = inbox.try_next() {
        got.push(msg.message().body().to_vec());
    }
    assert_eq!(numbers(got), (0..CAP as u64).collect::<Vec<_>>());
    let state = b.network_state().await.unwrap();
    let plugin = state
        .plugins
        .iter()
        .find(|p| p.name == "subscribe")
        .unwrap();
    assert_eq!(
        plugin.events_dropped, dropped,
        "drops show in network_state"
    );

    // Reading again makes room: later messages arrive.
    a.broadcast(text_msg("seq", N)).await.unwrap();
    let next = tokio::time::timeout(LONG, inbox.next()).await.unwrap();
    assert_eq!(next.unwrap().message().body(), N.to_string().as_bytes());

    drop(inbox);
    wait_for(LONG, "dropping the stream removes its plugin", || async {
        plugin_names(&b).await == ["recorder"]
    })
    .await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn subscription_ends_when_the_node_closes() {
    let (b, _, _) = node().await;
    let mut inbox = b.subscribe(Filter::All).await.unwrap();
    b.close().await.unwrap();
    let end = tokio::time::timeout(LONG, inbox.next()).await.unwrap();
    assert!(end.is_none());
}

async fn next<T>(stream: &mut Subscription<T>) -> T {
    tokio::time::timeout(LONG, stream.next())
        .await
        .expect("an item in time")
        .expect("stream open")
}

#[tokio::test]
async fn events_stream_reports_added_connected_deleted_disconnected_rejected() {
    let (a, _, _) = node().await;
    let (b, b_addr, _) = node().await;
    let mut events = a.events().await.unwrap();
    a.add(b_addr).await.unwrap();
    assert!(matches!(next(&mut events).await, PeerEvent::Added(x) if x == b_addr));
    match next(&mut events).await {
        PeerEvent::Connected(info) => {
            assert_eq!(info.addr, b_addr);
            assert!(info.writable);
            assert!(info.public_key.is_some(), "encrypted: the key is proven");
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    a.delete(b_addr).await.unwrap();
    let mut after_delete = [next(&mut events).await, next(&mut events).await];
    after_delete.sort_by_key(|e| matches!(e, PeerEvent::Disconnected(..)));
    assert!(matches!(
        &after_delete[0],
        PeerEvent::Deleted(x, PeerReason::DeletedByUser) if *x == b_addr
    ));
    assert!(matches!(
        &after_delete[1],
        PeerEvent::Disconnected(x, PeerReason::ClosedLocally) if *x == b_addr
    ));

    // A plaintext node refuses an encrypted one: a typed rejection.
    let (p, p_addr, _) = node_with(test_config().with_plaintext(true)).await;
    a.add(p_addr).await.unwrap();
    loop {
        match next(&mut events).await {
            PeerEvent::Rejected { addr, reason } => {
                assert_eq!(addr, p_addr);
                assert!(!reason.is_empty());
                break;
            }
            PeerEvent::Added(x) | PeerEvent::Disconnected(x, _) => assert_eq!(x, p_addr),
            other => panic!("unexpected {other:?}"),
        }
    }
    for n in [a, b, p] {
        n.close().await.unwrap();
    }
}

#[tokio::test]
async fn wait_connected_and_wait_peers_succeed_or_time_out_typed() {
    let (a, _, _) = node().await;
    let (b, b_addr, _) = node().await;
    let (c, c_addr, _) = node().await;
    // Started before the peers are added: woken by events, not polling.
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.wait_peers(2, LONG).await }
    });
    a.add(b_addr).await.unwrap();
    a.add(c_addr.to_string()).await.unwrap();
    let mut ready = waiting.await.unwrap().unwrap();
    ready.sort();
    let mut want = vec![b_addr, c_addr];
    want.sort();
    assert_eq!(ready, want);
    // Already connected: at once.
    a.wait_connected(b_addr, Duration::from_millis(1))
        .await
        .unwrap();
    a.wait_connected(c_addr.to_string(), LONG).await.unwrap();

    let short = Duration::from_millis(200);
    let nobody = a.wait_connected("127.0.0.1:1", short).await;
    assert!(matches!(nobody, Err(NetworkError::Timeout(d)) if d == short));
    let too_many = a.wait_peers(3, short).await;
    assert!(matches!(too_many, Err(NetworkError::Timeout(_))));
    // b never added a: a is connected at b but not writable there.
    assert!(matches!(
        b.wait_peers(1, short).await,
        Err(NetworkError::Timeout(_))
    ));
    for n in [a, b, c] {
        n.close().await.unwrap();
    }
}

#[cfg(feature = "json")]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Offer {
    file: String,
    bytes: u64,
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_messages_round_trip_and_typed_requests_get_typed_replies() {
    use gladius_p2p::{JsonError, Message, RequestError};

    let ((a, _, _), (b, b_addr, _)) = connected_pair().await;
    let mut inbox = b.subscribe(Filter::type_prefix("content.")).await.unwrap();
    let offer = Offer {
        file: "a.mp4".into(),
        bytes: 1 << 20,
    };
    a.broadcast_json("content.offer", &offer).await.unwrap();
    let got = tokio::time::timeout(LONG, inbox.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.json::<Offer>().unwrap(), offer);
    assert!(matches!(got.json::<u32>(), Err(JsonError::Decode(_))));

    // b serves lookups: the size of a named file.
    let server = b.clone();
    let serving = tokio::spawn(async move {
        while let Some(req) = inbox.next().await {
            if !req.is_request() {
                continue;
            }
            let name: String = req.json().unwrap();
            let found = (name == "a.mp4").then_some(1u64 << 20);
            server
                .reply_json(&req, "content.size", &found)
                .await
                .unwrap();
        }
    });
    let t = LONG;
    let size: Option<u64> = a
        .request_json("content.lookup", "a.mp4", b_addr, t)
        .await
        .unwrap();
    assert_eq!(size, Some(1 << 20));
    let none: Option<u64> = a
        .request_json("content.lookup", "b.mp4", b_addr.to_string(), t)
        .await
        .unwrap();
    assert_eq!(none, None);
    let wrong_shape = a
        .request_json::<_, Offer>("content.lookup", "a.mp4", b_addr, t)
        .await;
    assert!(matches!(
        wrong_shape,
        Err(RequestError::Json(JsonError::Decode(_)))
    ));
    assert!(matches!(Message::json("", &1), Err(JsonError::Message(_))));
    a.close().await.unwrap();
    b.close().await.unwrap();
    serving.await.unwrap();
}

#[tokio::test]
async fn peers_can_be_named_by_strings_everywhere() {
    let (a, _, _) = node().await;
    let (b, b_addr, rb) = node().await;
    let b_name = b_addr.to_string();
    a.add(b_name.as_str()).await.unwrap();
    a.wait_connected(b_name.as_str(), LONG).await.unwrap();

    let reply = a
        .request(text_msg("echo", "ping"), b_name.as_str(), LONG)
        .await
        .unwrap();
    assert_eq!(reply.message().body(), "ping");
    let msg = text_msg("x", 0);
    a.wait_for_room(b_name.as_str(), &msg, LONG).await.unwrap();

    a.set_writable(b_name.as_str(), false).await.unwrap();
    let state = a.network_state().await.unwrap();
    assert!(!state.peer(b_addr).unwrap().writable);
    assert!(a.broadcast(msg).await.unwrap().queued.is_empty());
    a.set_writable(b_name.clone(), true).await.unwrap();

    a.delete(b_name.as_str()).await.unwrap();
    let state = a.network_state().await.unwrap();
    assert!(state.peer(b_addr).is_none_or(|p| !p.in_route_table));
    assert!(matches!(
        a.set_writable("not an address", true).await,
        Err(NetworkError::Resolve { .. })
    ));
    assert_eq!(rb.count_type("echo"), 1);
    a.close().await.unwrap();
    b.close().await.unwrap();
}
