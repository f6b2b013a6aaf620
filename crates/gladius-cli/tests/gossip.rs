//! Gossip through real `gladius node` processes: a chain of nodes with
//! `--max-peers 1` (each knows only the one before it, so discovery has
//! nothing to learn and messages cross every link of the chain); the
//! stdin commands, the `gossip` events and the HTTP endpoints.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{api_node, http, ok, Node};
use serde_json::{json, Value};

const NODES: usize = 6;

fn gossip_event(v: &Value, id: &str) -> bool {
    v["event"] == "gossip" && v["id"] == id
}

#[test]
fn a_message_published_on_one_daemon_reaches_every_subscriber_once_over_several_hops() {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..NODES {
        let mut args = vec!["--max-peers".to_owned(), "1".to_owned()];
        if let Some(prev) = nodes.last() {
            args.extend(["--peer".to_owned(), prev.addr.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut node = Node::start(&format!("n{i}"), &args);
        let a = node.ok(json!({"cmd": "subscribe", "topic": "news"}));
        assert_eq!(
            (a["topic"].as_str(), &a["subscribed"]),
            (Some("news"), &json!(true))
        );
        nodes.push(node);
    }
    // Subscribing twice is harmless: one stream of events per topic.
    let again = nodes[1].ok(json!({"cmd": "subscribe", "topic": "news"}));
    assert_eq!(again["subscribed"], false);
    // Every node has a tree neighbour before anything is published.
    for n in nodes.iter_mut() {
        let deadline = std::time::Instant::now() + common::WAIT;
        loop {
            let t = n.ok(json!({"cmd": "topics"}));
            if t["topics"][0]["eager"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: no tree: {t}",
                n.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let a = nodes[0].ok(json!({"cmd": "publish", "topic": "news", "body": "hello"}));
    let id = a["message_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64, "{a}");
    let binary =
        nodes[NODES - 1].ok(json!({"cmd": "publish", "topic": "news", "body_b64": "AP8="}));
    let bin_id = binary["message_id"].as_str().unwrap().to_owned();

    let mut hops = HashMap::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != 0 {
            let ev = n.wait_for("the text message", |v| gossip_event(v, &id));
            assert_eq!(ev["topic"], "news");
            assert_eq!(ev["body"], "hello");
            assert_eq!(ev["origin"].as_str().map(str::len), Some(64));
            hops.insert(i, ev["hops"].as_u64().unwrap());
        }
        if i != NODES - 1 {
            let ev = n.wait_for("the binary message", |v| gossip_event(v, &bin_id));
            assert_eq!(ev["body_b64"], "AP8=");
            assert!(ev.get("body").is_none());
        }
    }
    // Node i is i links down the chain from the origin.
    for (i, h) in &hops {
        assert_eq!(*h, *i as u64, "hops to node {i}: {hops:?}");
    }
    // Exactly once: no second event for either id.
    for n in nodes.iter_mut() {
        let dup = n.wait_for_within("a duplicate", Duration::from_millis(300), |v| {
            gossip_event(v, &id) || gossip_event(v, &bin_id)
        });
        assert!(dup.is_none(), "{}: delivered twice: {dup:?}", n.name);
    }
    // The origin key is the publisher's, as `topics` reports it.
    let origin = nodes[0].ok(json!({"cmd": "topics"}))["origin"].clone();
    let ev_origin = {
        let b = nodes[1].ok(json!({"cmd": "publish", "topic": "news", "body": "x"}));
        let bid = b["message_id"].as_str().unwrap().to_owned();
        nodes[0].wait_for("from n1", |v| gossip_event(v, &bid))["origin"].clone()
    };
    let n1_origin = nodes[1].ok(json!({"cmd": "topics"}))["origin"].clone();
    assert_eq!(ev_origin, n1_origin);
    assert_ne!(origin, n1_origin);

    // Unsubscribed: no more events.
    nodes[2].ok(json!({"cmd": "unsubscribe", "topic": "news"}));
    let late = nodes[0].ok(json!({"cmd": "publish", "topic": "news", "body": "late"}));
    let late_id = late["message_id"].as_str().unwrap().to_owned();
    nodes[1].wait_for("the late message", |v| gossip_event(v, &late_id));
    let got = nodes[2].wait_for_within("nothing", Duration::from_millis(500), |v| {
        gossip_event(v, &late_id)
    });
    assert!(got.is_none());

    // Bad input is answered, not fatal.
    let bad = nodes[0].cmd(json!({"cmd": "publish", "topic": "", "body": "x"}));
    assert_eq!(bad["ok"], false, "{bad}");
    let bad = nodes[0].cmd(json!({"cmd": "publish", "topic": "t"}));
    assert_eq!(bad["ok"], false, "{bad}");
    // An oversized body is refused at the origin, not published.
    let big = "x".repeat(70_000);
    let bad = nodes[0].cmd(json!({"cmd": "publish", "topic": "news", "body": big}));
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("over the limit")),
        "{bad}"
    );
    let after = nodes[0].ok(json!({"cmd": "topics"}));
    assert_eq!(after["stats"]["published"], 2, "{after}");
}

#[test]
fn the_http_api_subscribes_and_publishes() {
    let mut a = api_node("a", &[]);
    let mut b = Node::start("b", &["--peer", &a.addr.clone()]);
    b.ok(json!({"cmd": "subscribe", "topic": "room"}));
    let api = a.api.clone().unwrap();
    let s = ok(&api, "POST", "/api/topics/room/subscribe", None);
    assert_eq!(s["subscribed"], true);
    // Wait for the two to see each other in the topic.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let t = ok(&api, "GET", "/api/topics", None);
        if t["topics"][0]["eager"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(t["topics"][0]["topic"], "room");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = ok(
        &api,
        "POST",
        "/api/topics/room/publish",
        Some(json!({"body": "hi b"})),
    );
    let id = p["message_id"].as_str().unwrap().to_owned();
    let ev = b.wait_for("the message", |v| gossip_event(v, &id));
    assert_eq!(
        (ev["body"].as_str(), ev["hops"].as_u64()),
        (Some("hi b"), Some(1))
    );
    // b answers on stdin; a's subscription (made over HTTP) emits on stdout.
    let back = b.ok(json!({"cmd": "publish", "topic": "room", "body": "hi a"}));
    let back_id = back["message_id"].as_str().unwrap().to_owned();
    a.wait_for("the answer", |v| gossip_event(v, &back_id));
    let (status, _) = http(
        &api,
        "POST",
        "/api/topics/room/publish",
        Some(json!({"nobody": 1})),
    );
    assert_eq!(status, 400);
    let state = a.ok(json!({"cmd": "state"}));
    assert_eq!(state["gossip"]["topics"][0]["topic"], "room");
}

/// `[gossip]` in `--config` reaches the plugin: three daemons in a
/// triangle with shortcuts on. The first message prunes one link of the
/// triangle to lazy; an origin at either end of it then also pushes its
/// messages over that lazy link as shortcuts, which the defaults (0) never
/// do. Every message still reaches every other node exactly once.
#[test]
fn shortcuts_set_in_the_config_file_are_used_and_every_message_arrives_once() {
    let dir = common::TempDir::new();
    let file = dir.join("gossip.toml");
    std::fs::write(&file, "[gossip]\norigin_fanout = 2\nshortcut_pushes = 1\n").unwrap();
    let config = file.to_str().unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut args = vec!["--config".to_owned(), config.to_owned()];
        for prev in &nodes {
            args.extend(["--peer".to_owned(), prev.addr.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut node = Node::start(&format!("s{i}"), &args);
        node.ok(json!({"cmd": "subscribe", "topic": "t"}));
        nodes.push(node);
    }
    for n in nodes.iter_mut() {
        let deadline = std::time::Instant::now() + common::WAIT;
        loop {
            let t = n.ok(json!({"cmd": "topics"}));
            let info = &t["topics"][0];
            let neighbours =
                info["eager"].as_u64().unwrap_or(0) + info["lazy"].as_u64().unwrap_or(0);
            if neighbours == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not both neighbours: {t}",
                n.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut ids = Vec::new();
    for round in 0..4 {
        for origin in 0..3 {
            let body = format!("m{round}-{origin}");
            let a = nodes[origin].ok(json!({"cmd": "publish", "topic": "t", "body": body}));
            let id = a["message_id"].as_str().unwrap().to_owned();
            for (i, n) in nodes.iter_mut().enumerate() {
                if i != origin {
                    let ev = n.wait_for("the message", |v| gossip_event(v, &id));
                    assert_eq!(ev["body"].as_str(), Some(body.as_str()));
                }
            }
            ids.push(id);
        }
    }
    let mut shortcuts = 0;
    for n in nodes.iter_mut() {
        let dup = n.wait_for_within("a duplicate", Duration::from_millis(300), |v| {
            ids.iter().any(|id| gossip_event(v, id))
        });
        assert!(dup.is_none(), "{}: delivered twice: {dup:?}", n.name);
        let t = n.ok(json!({"cmd": "topics"}));
        shortcuts += t["stats"]["shortcuts_sent"].as_u64().expect("the counter");
    }
    assert!(
        shortcuts > 0,
        "no shortcut sent: the [gossip] section was not used"
    );
}
