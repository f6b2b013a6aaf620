//! `gladius node --api`: the HTTP API driven over plain TCP, and the status
//! page rendered by headless Chromium, against real processes on loopback.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{api_node, http, http_raw, ok, Node, TempDir, WAIT};
use serde_json::{json, Value};

/// Poll `GET /api/peers` until every one of `peers` is connected and
/// writable.
fn wait_writable_http(api: &str, peers: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = ok(api, "GET", "/api/peers", None);
        let listed = v["peers"].as_array().unwrap();
        let ready = peers.iter().all(|p| {
            listed
                .iter()
                .any(|s| s["addr"] == *p && s["writable"] == true && s["connection"] == "connected")
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "not connected to {peers:?}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_endpoint_does_what_the_stdin_command_does() {
    let mut b = Node::start("B", &[]);
    let mut c = Node::start("C", &[]);
    let mut a = api_node("A", &[]);
    let api = a.api.clone().unwrap();

    // Add B and C over HTTP; the node reports it on stdout as usual.
    for peer in [&b.addr, &c.addr] {
        let r = ok(&api, "POST", "/api/peers", Some(json!({"addr": peer})));
        assert_eq!(r["addr"], peer.as_str());
        let p = peer.clone();
        a.wait_for("node_added", move |v| {
            v["event"] == "node_added" && v["addr"] == p.as_str()
        });
    }
    wait_writable_http(&api, &[&b.addr, &c.addr]);

    // State: what `state` answers.
    let s = ok(&api, "GET", "/api/state", None);
    assert_eq!(s["network"]["local_addr"], a.addr.as_str());
    assert_eq!(s["network"]["public_key"], a.public_key);
    assert_eq!(s["eth_address"], a.eth_address.as_str());
    assert!(s["latency"]["peers"].is_array(), "{s}");
    assert!(s["network"]["counters"].is_object(), "{s}");

    // Broadcast to all, to some, to n at random.
    let r = ok(
        &api,
        "POST",
        "/api/broadcast",
        Some(json!({"type": "news", "body": "to all"})),
    );
    assert_eq!(r["queued"].as_array().unwrap().len(), 2, "{r}");
    for n in [&mut b, &mut c] {
        let m = n.wait_message("news");
        assert_eq!(m["body"], "to all");
        assert_eq!(m["from"], a.addr.as_str());
    }
    let r = ok(
        &api,
        "POST",
        "/api/broadcast",
        Some(json!({"peers": [c.addr], "type": "only_c", "body_b64": "AP8="})),
    );
    assert_eq!(r["queued"], json!([c.addr]));
    assert_eq!(c.wait_message("only_c")["body_b64"], "AP8=");
    let r = ok(
        &api,
        "POST",
        "/api/broadcast",
        Some(json!({"n": 1, "body": "lucky"})),
    );
    assert_eq!(r["queued"].as_array().unwrap().len(), 1, "{r}");

    // Request: waits for and returns the reply.
    let r = ok(
        &api,
        "POST",
        "/api/request",
        Some(json!({"to": b.addr, "type": "echo", "body": "ping", "timeout_ms": 10000})),
    );
    assert_eq!(r["from"], b.addr.as_str());
    assert_eq!(r["type"], "echo");
    assert_eq!(r["body"], "ping");

    // Signed state: set over HTTP, read over HTTP and stdin alike.
    let r = ok(
        &api,
        "POST",
        "/api/signed-state",
        Some(json!({"field": "name", "value": "alice"})),
    );
    assert_eq!(r["entry"]["signer"], a.eth_address.as_str());
    assert_eq!(r["entry"]["value"], "alice");
    let s = ok(&api, "GET", "/api/signed-state", None);
    let me = a.eth_address.clone();
    let mine = |e: &&Value| e["signer"] == me.as_str() && e["field"] == "name";
    let entries = s["entries"].as_array().unwrap();
    assert_eq!(entries.iter().find(mine).unwrap()["value"], "alice", "{s}");
    let s = a.ok(json!({"cmd": "signed_state"}));
    assert!(s["entries"].as_array().unwrap().iter().any(|e| mine(&e)));

    // Delete B: 200, and the route table change is reported.
    let r = ok(&api, "DELETE", &format!("/api/peers/{}", b.addr), None);
    assert_eq!(r["addr"], b.addr.as_str());
    assert_eq!(r["known"], true);
    let baddr = b.addr.clone();
    a.wait_for("node_deleted B", move |v| {
        v["event"] == "node_deleted" && v["addr"] == baddr.as_str()
    });
    // A peer the node never knew: 404 over HTTP; stdin `delete` stays an
    // idempotent success that says so.
    let (status, v) = http(&api, "DELETE", "/api/peers/127.0.0.1:9", None);
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown peer"), "{v}");
    let r = a.ok(json!({"cmd": "delete", "addr": "127.0.0.1:9"}));
    assert_eq!(r["known"], false, "{r}");
}

#[test]
fn bad_requests_get_json_errors_with_status_codes() {
    let b = Node::start("B", &[]);
    let mut a = api_node("A", &["--peer", &b.addr]);
    let api = a.api.clone().unwrap();
    a.wait_writable(&[&b.addr]);

    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        // Bad JSON, not an object, missing, mistyped or unknown fields.
        ("POST", "/api/peers", Some("{not json"), 400),
        ("POST", "/api/peers", Some("[1, 2]"), 400),
        ("POST", "/api/peers", Some(""), 400),
        ("POST", "/api/peers", Some("{}"), 400),
        ("POST", "/api/peers", Some(r#"{"addr": 7}"#), 400),
        (
            "POST",
            "/api/peers",
            Some(r#"{"addr": "x:1", "cmd": "close"}"#),
            400,
        ),
        ("POST", "/api/broadcast", Some("{oops"), 400),
        ("POST", "/api/broadcast", Some("{}"), 400),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"body": "x", "bdoy": "typo"}"#),
            400,
        ),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"type": "", "body": "x"}"#),
            400,
        ),
        ("POST", "/api/broadcast", Some(r#"{"body_b64": "!!"}"#), 400),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"n": -1, "body": "x"}"#),
            400,
        ),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"n": 1, "peers": [], "body": "x"}"#),
            400,
        ),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"peers": ["bad"], "body": "x"}"#),
            400,
        ),
        (
            "POST",
            "/api/signed-state",
            Some(r#"{"field": "", "value": "x"}"#),
            400,
        ),
        ("POST", "/api/signed-state", Some(r#"{"field": "f"}"#), 400),
        (
            "POST",
            "/api/request",
            Some(r#"{"to": "b", "type": "echo", "body": "x"}"#),
            400,
        ),
        (
            "POST",
            "/api/request",
            Some(r#"{"type": "echo", "body": "x"}"#),
            400,
        ),
        // Bad addresses.
        (
            "POST",
            "/api/peers",
            Some(r#"{"addr": "not an address"}"#),
            400,
        ),
        ("DELETE", "/api/peers/not-an-address", None, 400),
        // Unknown routes and methods.
        ("GET", "/api/nothing", None, 404),
        ("GET", "/api", None, 404),
        ("DELETE", "/api/peers", None, 405),
        ("PUT", "/api/state", None, 405),
    ];
    for &(method, path, body, want) in cases {
        let (status, text) = http_raw(&api, method, path, body);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} {body:?}: not JSON ({e}): {text}"));
        assert_eq!(status, want, "{method} {path} {body:?} -> {v}");
        assert_eq!(v["ok"], false, "{method} {path} {body:?} -> {v}");
        assert!(
            !v["error"].as_str().unwrap_or("").is_empty(),
            "{method} {path} {body:?} -> {v}"
        );
    }

    // B answers only `echo`: anything else times out -> 504, on time.
    let started = Instant::now();
    let (status, v) = http(
        &api,
        "POST",
        "/api/request",
        Some(json!({"to": b.addr, "type": "silence", "body": "x", "timeout_ms": 300})),
    );
    assert_eq!(status, 504, "{v}");
    assert!(started.elapsed() < Duration::from_secs(10), "{v}");

    // The node carried on, on both interfaces.
    ok(&api, "GET", "/api/state", None);
    let s = a.ok(json!({"cmd": "state"}));
    assert_eq!(s["network"]["local_addr"], a.addr.as_str());
}

#[test]
fn status_page_is_self_contained() {
    let a = api_node("A", &[]);
    let (status, page) = http_raw(a.api.as_deref().unwrap(), "GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for id in [
        "id=\"peers\"",
        "id=\"signed-state\"",
        "id=\"counters\"",
        "/api/state",
        "/api/signed-state",
    ] {
        assert!(page.contains(id), "page lacks {id}");
    }
    // Works offline: nothing is loaded from elsewhere.
    for external in ["http://", "https://", "src=", "<link", "@import"] {
        assert!(!page.contains(external), "page refers to {external}");
    }
}

/// The Chromium binary, or `None` (after saying so) when the test must be
/// skipped; on CI (`CI` set) a missing browser is a failure.
fn chromium() -> Option<&'static str> {
    for bin in ["chromium", "chromium-browser"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(bin);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "chromium is not installed: .ci/run must install it \
             (apt-get install -y chromium) for the status page test"
        );
    }
    eprintln!(
        "\n*** SKIPPED status_page_in_headless_chromium: no `chromium` on PATH \
         (apt-get install -y chromium) ***\n"
    );
    None
}

/// The DOM of `url` after Chromium ran its scripts for a few (virtual)
/// seconds. Chromium is killed if it takes longer than a minute.
fn dump_dom(bin: &str, url: &str) -> String {
    let profile = TempDir::new();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The `data-<attr>` values of the `<tr class="<class>" …>` rows of a DOM.
fn rows(dom: &str, class: &str, attr: &str) -> Vec<String> {
    let open = format!("<tr class=\"{class}\"");
    let key = format!("data-{attr}=\"");
    dom.match_indices(&open)
        .filter_map(|(i, _)| {
            let tag = &dom[i..i + dom[i..].find('>')?];
            let start = tag.find(&key)? + key.len();
            Some(tag[start..start + tag[start..].find('"')?].to_owned())
        })
        .collect()
}

/// Load the page until `pred` holds for its DOM (the node's state can take
/// a moment to get there); the last DOM otherwise.
fn dom_until(bin: &str, url: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let dom = dump_dom(bin, url);
        if pred(&dom) || Instant::now() > deadline {
            return dom;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn status_page_in_headless_chromium() {
    let Some(bin) = chromium() else { return };
    let b = Node::start("B", &[]);
    let c = Node::start("C", &[]);
    let mut a = api_node("A", &["--peer", &b.addr, "--peer", &c.addr]);
    a.wait_writable(&[&b.addr, &c.addr]);
    let url = format!("{}/", a.api.as_deref().unwrap());

    let dom = dom_until(bin, &url, |dom| {
        let peers = rows(dom, "peer", "addr");
        peers.contains(&b.addr) && peers.contains(&c.addr)
    });
    let peers = rows(&dom, "peer", "addr");
    assert!(
        peers.contains(&b.addr) && peers.contains(&c.addr),
        "peers {peers:?} in {dom}"
    );
    assert!(dom.contains("id=\"status\" class=\"ok\""), "{dom}");
    assert!(dom.contains(&a.addr), "own address missing: {dom}");
    assert!(dom.contains(&a.eth_address), "eth address missing: {dom}");
    assert!(dom.contains("data-connection=\"connected\""), "{dom}");
    assert!(
        dom.contains("tr class=\"counter\""),
        "counters missing: {dom}"
    );
    assert!(rows(&dom, "entry", "field").is_empty(), "{dom}");

    // Changes show up in a later render: a new peer (over HTTP) and a new
    // signed field (over stdin).
    let d = Node::start("D", &[]);
    ok(
        a.api.as_deref().unwrap(),
        "POST",
        "/api/peers",
        Some(json!({"addr": d.addr})),
    );
    a.ok(json!({"cmd": "set", "field": "motto", "value": "<b>hello</b> & bye"}));
    let dom = dom_until(bin, &url, |dom| {
        rows(dom, "peer", "addr").contains(&d.addr)
            && rows(dom, "entry", "field").contains(&"motto".to_owned())
    });
    assert!(rows(&dom, "peer", "addr").contains(&d.addr), "{dom}");
    assert_eq!(rows(&dom, "entry", "field"), vec!["motto"], "{dom}");
    assert_eq!(rows(&dom, "entry", "signer"), vec![a.eth_address.clone()]);
    // Values are shown as text, not markup.
    assert!(dom.contains("&lt;b&gt;hello&lt;/b&gt; &amp; bye"), "{dom}");
}
