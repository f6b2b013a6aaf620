//! `gladius node --api`: the HTTP API driven over plain TCP, and the status
//! page rendered by headless Chromium, against real processes on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{api_node, http, http_raw, http_with, ok, Api, Node, TempDir, WAIT};
use serde_json::{json, Value};

/// Poll `GET /api/peers` until every one of `peers` is connected and
/// writable.
fn wait_writable_http(api: &Api, peers: &[&str]) {
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

    // Add B by address and C by key over HTTP; the node reports it on
    // stdout as usual.
    for (peer, by_key) in [(&b.addr, false), (&c.addr, true)] {
        let body = if by_key {
            json!({"public_key": c.public_key, "addr": peer})
        } else {
            json!({"addr": peer})
        };
        let r = ok(&api, "POST", "/api/peers", Some(body));
        assert_eq!(r["addr"], peer.as_str());
        if by_key {
            assert_eq!(r["public_key"], c.public_key, "{r}");
        }
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
    let (status, page) = http_raw(a.api.as_ref().unwrap(), "GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for id in [
        "id=\"peers\"",
        "id=\"signed-state\"",
        "id=\"counters\"",
        "/api/state",
        "/api/signed-state",
        "/api/history",
        "id=\"chart-messages\"",
        "id=\"chart-bytes\"",
        "id=\"topics\"",
        "id=\"gossip-counters\"",
    ] {
        assert!(page.contains(id), "page lacks {id}");
    }
    // The counters' explanations are filled in.
    assert!(!page.contains("/*COUNTER_HELP*/"), "help not filled in");
    for help in [
        "\"decrypt_failures\":{\"error\":true",
        "\"pings_missed\":{\"error\":true",
    ] {
        assert!(page.contains(help), "page lacks {help}");
    }
    // Works offline: nothing is loaded from elsewhere (the SVG namespace
    // is a name, not a resource).
    let page = page.replace("\"http://www.w3.org/2000/svg\"", "\"svg\"");
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
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

/// The `<tr class="peer" data-addr="addr" …>…</tr>` of a DOM.
fn peer_row<'a>(dom: &'a str, addr: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr class=\"peer\" data-addr=\"{addr}\""))?;
    let len = dom[start..].find("</tr>")?;
    Some(&dom[start..start + len])
}

/// The polylines' `data-points` inside `html` (each a run of points drawn).
fn drawn_points(html: &str, class: &str) -> usize {
    let open = format!("<polyline class=\"{class}\"");
    html.match_indices(&open)
        .filter_map(|(i, _)| {
            let tag = &html[i..i + html[i..].find('>')?];
            let start = tag.find("data-points=\"")? + "data-points=\"".len();
            tag[start..start + tag[start..].find('"')?]
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// The `<svg … id="id" …>…</svg>` of a DOM.
fn svg_by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = dom[..at].rfind("<svg").unwrap();
    let len = dom[start..].find("</svg>").unwrap();
    &dom[start..start + len]
}

#[test]
fn status_page_in_headless_chromium() {
    let Some(bin) = chromium() else { return };
    let dir = TempDir::new();
    // Keep a peer that stops answering in the table, to see its stale RTT.
    let config = dir.join("a.toml");
    std::fs::write(&config, "[latency]\ndelete_on_dead = false\n").unwrap();
    let mut b = Node::start("B", &[]);
    let mut c = Node::start("C", &[]);
    let mut a = api_node(
        "A",
        &[
            "--config",
            config.to_str().unwrap(),
            "--peer",
            &b.addr,
            "--peer",
            &c.addr,
        ],
    );
    a.wait_writable(&[&b.addr, &c.addr]);
    // Two gossip topics: B shares one of them (a tree neighbour), C none.
    a.ok(json!({"cmd": "subscribe", "topic": "news"}));
    a.ok(json!({"cmd": "subscribe", "topic": "quiet&calm"}));
    b.ok(json!({"cmd": "subscribe", "topic": "news"}));
    let api = a.api.clone().unwrap();
    let url = api
        .status_url
        .clone()
        .expect("`status_url` in the listening event");
    // Traffic for the charts, and a garbage datagram for an error counter.
    for i in 0..20 {
        a.ok(json!({"cmd": "broadcast", "type": "t", "body": format!("m{i}")}));
    }
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"\x01garbage", &a.addr)
        .unwrap();
    // A few points of history with both peers' RTT.
    let deadline = Instant::now() + WAIT;
    loop {
        let h = ok(&api, "GET", "/api/history", None);
        let rtt = &h["rtt_ms"];
        if h["t"].as_array().unwrap().len() >= 3
            && rtt.get(&b.addr).is_some()
            && rtt.get(&c.addr).is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "history: {h}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let signer_known = |dom: &str, n: &Node| {
        peer_row(dom, &n.addr)
            .is_some_and(|r| r.contains(&format!("data-signer=\"{}\"", n.eth_address)))
    };
    let topic_row = |dom: &str, topic: &str| -> Option<String> {
        let at = dom.find(&format!("class=\"topic\" data-topic=\"{topic}\""))?;
        Some(dom[at..at + dom[at..].find("</tr>")?].to_owned())
    };
    let dom = dom_until(bin, &url, |dom| {
        signer_known(dom, &b)
            && signer_known(dom, &c)
            && topic_row(dom, "news").is_some_and(|r| r.contains("data-eager=\"1\""))
    });
    // The topics with their tree (eager) and lazy neighbour counts.
    let news = topic_row(&dom, "news").unwrap_or_else(|| panic!("no topic row: {dom}"));
    assert!(news.contains("data-lazy=\"0\""), "{news}");
    assert!(news.contains("<td class=\"eager num\">1</td>"), "{news}");
    let quiet = topic_row(&dom, "quiet&amp;calm")
        .unwrap_or_else(|| panic!("the second topic is missing: {dom}"));
    assert!(quiet.contains("data-eager=\"0\""), "{quiet}");
    assert!(dom.contains("id=\"topic-count\">(2)<"), "{dom}");
    let peers = rows(&dom, "peer", "addr");
    assert!(
        peers.contains(&b.addr) && peers.contains(&c.addr),
        "peers {peers:?} in {dom}"
    );
    assert!(dom.contains("id=\"status\" class=\"ok\""), "{dom}");
    assert!(dom.contains(&a.addr), "own address missing: {dom}");
    assert!(dom.contains(&a.eth_address), "eth address missing: {dom}");
    assert!(rows(&dom, "entry", "field").is_empty(), "{dom}");
    // Each peer: its key, its signer address, an RTT and an RTT chart.
    for n in [&b, &c] {
        let row = peer_row(&dom, &n.addr).unwrap();
        let key = n.public_key.as_str().unwrap();
        assert!(row.contains(&format!("data-key=\"{key}\"")), "{row}");
        assert!(signer_known(&dom, n), "{row}");
        assert!(row.contains("data-connection=\"connected\""), "{row}");
        assert!(row.contains("<td class=\"rtt num\">"), "fresh RTT: {row}");
        assert!(row.contains(" ms</td>"), "an RTT value: {row}");
        assert!(drawn_points(row, "in") >= 2, "RTT chart: {row}");
    }
    // The rate charts are drawn with the history's points, in and out.
    let points = ok(&api, "GET", "/api/history", None)["t"]
        .as_array()
        .unwrap()
        .len();
    for id in ["chart-messages", "chart-bytes"] {
        let svg = svg_by_id(&dom, id);
        for class in ["in", "out"] {
            let drawn = drawn_points(svg, class);
            assert!(
                drawn >= 3 && drawn <= points + 5,
                "{id} {class}: {drawn} of {points}: {svg}"
            );
        }
    }
    // One time format: every absolute time is `YYYY-MM-DD HH:MM:SS`.
    let updated = dom.split("id=\"updated\">").nth(1).unwrap();
    let updated = &updated[..updated.find('<').unwrap()];
    assert!(
        updated.len() == 19 && updated.as_bytes()[4] == b'-' && updated.as_bytes()[10] == b' ',
        "{updated}"
    );
    // The non-zero error counter explains itself, in a tooltip and a line.
    assert!(
        dom.contains("tr class=\"counter\""),
        "counters missing: {dom}"
    );
    let garbage = ["malformed_datagrams", "unknown_session_datagrams"]
        .iter()
        .find_map(|name| {
            let at = dom.find(&format!("data-name=\"{name}\""))?;
            let row = &dom[at..at + dom[at..].find("</tr>")?];
            row.contains("data-problem=\"true\"").then_some(row)
        })
        .unwrap_or_else(|| panic!("the garbage datagram is not shown as a problem: {dom}"));
    assert!(garbage.contains("class=\"explain\""), "{garbage}");
    assert!(garbage.contains("title=\""), "{garbage}");
    // Zero counters are not flagged.
    let at = dom.find("data-name=\"checksum_failures\"").unwrap();
    assert!(!dom[at..at + dom[at..].find("</tr>").unwrap()].contains("data-problem"));

    // Changes show up in a later render: a new peer (over HTTP) and a new
    // signed field (over stdin); a peer that left shows its RTT greyed.
    let d = Node::start("D", &[]);
    ok(&api, "POST", "/api/peers", Some(json!({"addr": d.addr})));
    a.ok(json!({"cmd": "set", "field": "motto", "value": "<b>hello</b> & bye"}));
    c.ok(json!({"cmd": "close"}));
    let dom = dom_until(bin, &url, |dom| {
        rows(dom, "peer", "addr").contains(&d.addr)
            && rows(dom, "entry", "field").contains(&"motto".to_owned())
            && peer_row(dom, &c.addr).is_some_and(|r| !r.contains("data-connection=\"connected\""))
    });
    assert!(rows(&dom, "peer", "addr").contains(&d.addr), "{dom}");
    assert_eq!(rows(&dom, "entry", "field"), vec!["motto"], "{dom}");
    assert_eq!(rows(&dom, "entry", "signer"), vec![a.eth_address.clone()]);
    // Values are shown as text, not markup.
    assert!(dom.contains("&lt;b&gt;hello&lt;/b&gt; &amp; bye"), "{dom}");
    let gone = peer_row(&dom, &c.addr).expect("C stays listed");
    assert!(
        gone.contains("class=\"rtt num stale\""),
        "stale RTT not greyed: {gone}"
    );
    assert!(
        gone.contains(" ms</td>"),
        "the last RTT still shown: {gone}"
    );
}

/// A Server-Sent Events client on a raw socket: an HTTP/1.0 request (so
/// the body is the stream itself, not chunked), then one event per blank
/// line, `event:` and `data:` fields per the SSE specification.
struct Sse {
    reader: std::io::BufReader<TcpStream>,
}

impl Sse {
    /// `GET path`; panics unless the answer is a 200 `text/event-stream`.
    fn open(api: &Api, path: &str, recv_buffer: Option<usize>) -> Sse {
        use std::io::BufRead;
        let host = api.strip_prefix("http://").expect("http:// URL");
        let addr: std::net::SocketAddr = host.parse().unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let token = api.token.as_deref().unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        Sse { reader }
    }

    /// The next event as (`event` field or "message", JSON of `data`);
    /// `None` when the server closed the stream. Comments (keep-alives)
    /// are skipped.
    fn next(&mut self) -> Option<(String, Value)> {
        use std::io::BufRead;
        let (mut name, mut data) = (String::from("message"), String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("read the stream") == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let v = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
                return Some((name, v));
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

#[test]
fn event_stream_carries_stdout_events_filtered_and_ends_slow_clients() {
    let mut a = api_node("A", &[]);
    let api = a.api.clone().unwrap();
    let mut all = Sse::open(&api, "/api/events", None);
    let mut only = Sse::open(&api, "/api/events?types=message,peer_connected", None);
    let mut slow = Sse::open(&api, "/api/events", Some(4096));
    for bad in ["/api/events?types=", "/api/events?typo=message"] {
        let (status, v) = http(&api, "GET", bad, None);
        assert_eq!(status, 400, "{bad}: {v}");
    }

    // B connects to A and talks to it: A's stdout events, in order, on
    // the unfiltered stream; only messages and connections on the other.
    let mut b = Node::start("B", &["--peer", &a.addr]);
    b.wait_writable(&[&a.addr]);
    for i in 0..3 {
        b.ok(
            json!({"cmd": "broadcast_to", "peers": [a.addr], "type": "t", "body": format!("m{i}")}),
        );
    }
    let mut stdout = Vec::new();
    while stdout.len() < 3 {
        let v = a.wait_for("a `t` message", |v| {
            v["event"] == "message" || v["event"] == "node_added" || v["event"] == "peer_connected"
        });
        if v["event"] == "message" {
            stdout.push(v["body"].clone());
        }
    }
    let mut streamed = Vec::new();
    let mut names = Vec::new();
    while streamed.len() < 3 {
        let (name, v) = all.next().expect("stream open");
        assert_eq!(name, "message", "{v}");
        names.push(v["event"].as_str().unwrap().to_owned());
        if v["event"] == "message" {
            assert_eq!(v["from"], b.addr.as_str());
            streamed.push(v["body"].clone());
        }
    }
    assert_eq!(streamed, stdout, "same messages, same order as stdout");
    assert!(names.contains(&"peer_connected".to_owned()), "{names:?}");
    // A request from B, answered over HTTP with the token from the stream.
    b.send_line(
        &json!({"cmd": "request", "id": "q", "to": a.addr, "type": "lookup", "body": "k"})
            .to_string(),
    );
    let request = loop {
        let (_, v) = all.next().expect("stream open");
        if v["event"] == "message" && v["type"] == "lookup" {
            break v;
        }
    };
    assert_eq!(request["request"], true, "{request}");
    let r = ok(
        &api,
        "POST",
        "/api/reply",
        Some(json!({"to": request["token"], "body": "v"})),
    );
    assert_eq!(r["to"], b.addr.as_str(), "{r}");
    let answer = b.wait_for("the reply", |v| v["id"] == "q");
    assert_eq!(
        (&answer["ok"], &answer["body"]),
        (&json!(true), &json!("v")),
        "{answer}"
    );
    let (status, v) = http(
        &api,
        "POST",
        "/api/reply",
        Some(json!({"to": request["token"], "body": "v"})),
    );
    assert_eq!(status, 404, "a token answers once: {v}");
    let mut filtered = Vec::new();
    while filtered.iter().filter(|e| *e == "message").count() < 4 {
        let (_, v) = only.next().expect("stream open");
        filtered.push(v["event"].as_str().unwrap().to_owned());
    }
    assert!(
        filtered
            .iter()
            .all(|e| e == "message" || e == "peer_connected"),
        "{filtered:?}"
    );

    // The slow client has not read a byte. Big events fill its socket,
    // then its queue: it gets a clear end and the stream closes; a client
    // that keeps up (here: one whose filter passes none of them) carries on.
    let mut quiet = Sse::open(&api, "/api/events?types=result", None);
    // Enough to fill the node's socket send buffer (up to the kernel's
    // TCP autotuning limit), the server's write buffer and the client's
    // 256-event queue, with room to spare.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(32 << 20);
    let body = "x".repeat(64 * 1024);
    let flood = (256 + (wmem_max + (8 << 20)) / body.len()).max(600);
    for i in 0..flood {
        let r =
            b.cmd(json!({"cmd": "broadcast_to", "peers": [a.addr], "type": "big", "body": body}));
        if r["failed"].as_array().is_some_and(|f| !f.is_empty()) || i % 50 == 49 {
            a.wait_for("big messages", |v| {
                v["event"] == "message" && v["type"] == "big"
            });
        }
    }
    let mut seen = 0;
    let end = loop {
        match slow.next() {
            Some((name, v)) if name == "end" => break v,
            Some(_) => seen += 1,
            None => panic!("closed without an end event after {seen} events"),
        }
    };
    assert_eq!(end["event"], "end");
    assert_eq!(end["reason"], "too_slow", "{end}");
    assert!(end["missed"].as_u64().unwrap() > 0, "{end}");
    assert!(slow.next().is_none(), "the stream closes after the end");
    // A still streams to the clients that keep up.
    a.ok(json!({"cmd": "set", "field": "f", "value": "after"}));
    let (name, v) = quiet.next().expect("stream open");
    assert_eq!(
        (name.as_str(), &v["event"]),
        ("message", &json!("result")),
        "{v}"
    );
    assert_eq!(v["entry"]["value"], "after", "{v}");
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A strict parser of the text exposition format (0.0.4): `# HELP` and
/// `# TYPE` before a family's samples, each family once and contiguous,
/// metric and label names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label values quoted
/// with `\\`, `\"` and `\n` escapes, values Go floats. Returns the samples
/// and each family's type.
fn parse_exposition(text: &str) -> (Vec<Sample>, std::collections::HashMap<String, String>) {
    use std::collections::HashMap;
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let mut current: Option<String> = None;
    let mut finished: Vec<String> = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "{line}");
            assert!(!help.trim().is_empty(), "empty help: {line}");
            assert!(
                helps.insert(name.into(), help.into()).is_none(),
                "HELP twice: {line}"
            );
            if let Some(c) = current.replace(name.into()) {
                finished.push(c);
            }
            assert!(
                !finished.contains(&name.to_owned()),
                "family not contiguous: {name}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert_eq!(
                current.as_deref(),
                Some(name),
                "TYPE after its HELP: {line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line: {line:?}"
        );
        // name{labels} value
        let name_end = line.find(['{', ' ']).expect("a sample");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample outside its family: {line}"
        );
        assert!(types.contains_key(name), "no TYPE for {name}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (key, r) = rest.split_once("=\"").expect("label=\"value\"");
                assert!(valid_name(key) && !key.starts_with("__"), "{line}");
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => panic!("bad escape \\{c}: {line}"),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                rest = &r[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest.strip_prefix(' ').expect("space before the value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    (samples, types)
}

#[test]
fn metrics_are_prometheus_text_matching_the_state() {
    let b = Node::start("B", &[]);
    let mut a = api_node("A", &["--peer", &b.addr]);
    let api = a.api.clone().unwrap();
    a.wait_writable(&[&b.addr]);
    a.ok(json!({"cmd": "broadcast", "type": "t", "body": "hello"}));
    a.ok(json!({"cmd": "set", "field": "name", "value": "a"}));
    // Wait for a latency sample of B.
    let deadline = Instant::now() + WAIT;
    while ok(&api, "GET", "/api/state", None)["latency"]["peers"][0]["p50_ms"].is_null() {
        assert!(Instant::now() < deadline, "no RTT sample");
        std::thread::sleep(Duration::from_millis(200));
    }

    let before = ok(&api, "GET", "/api/state", None);
    let (status, text) = http_raw(&api, "GET", "/metrics", None);
    let after = ok(&api, "GET", "/api/state", None);
    assert_eq!(status, 200, "{text}");
    let (samples, types) = parse_exposition(&text);
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}\n{text}");
        found[0].value
    };
    let between = |v: f64, path: &dyn Fn(&Value) -> &Value, what: &str| {
        let (lo, hi) = (path(&before).as_f64(), path(&after).as_f64());
        let (lo, hi) = (lo.unwrap_or_else(|| panic!("{what} in state")), hi.unwrap());
        assert!(lo <= v && v <= hi, "{what}: {lo} <= {v} <= {hi}");
    };
    assert!(
        samples.iter().all(|s| s.name.starts_with("gladius_")),
        "{text}"
    );
    for (name, kind) in &types {
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
    }

    // Every counter of network_state().
    let counters = before["network"]["counters"].as_object().unwrap();
    assert!(counters.len() >= 20, "{counters:?}");
    for name in counters.keys() {
        let v = one(&format!("gladius_{name}_total"), &[]);
        between(v, &|s| &s["network"]["counters"][name], name);
    }
    assert!(one("gladius_datagrams_in_total", &[]) > 0.0);

    // Per peer: labelled with address and key, values from the state.
    let key = b.public_key.as_str().unwrap();
    let peer = [("peer", b.addr.as_str()), ("key", key)];
    let idx = before["network"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["addr"] == b.addr.as_str())
        .unwrap();
    for (metric, field) in [
        ("gladius_peer_received_bytes_total", "bytes_in"),
        ("gladius_peer_sent_bytes_total", "bytes_out"),
        ("gladius_peer_received_messages_total", "messages_in"),
        ("gladius_peer_sent_messages_total", "messages_out"),
    ] {
        between(
            one(metric, &peer),
            &|s| &s["network"]["peers"][idx][field],
            field,
        );
    }
    assert!(one("gladius_peer_sent_messages_total", &peer) >= 1.0);
    assert_eq!(one("gladius_peer_connected", &peer), 1.0);
    let rtt = one("gladius_peer_rtt_seconds", &peer);
    assert!((0.0..5.0).contains(&rtt), "{rtt}");
    let p50 = one("gladius_latency_rtt_p50_seconds", &peer);
    assert!(p50 > 0.0 && p50 < 5.0, "{p50}");

    // Plugin queue drops, one series per plugin.
    for p in before["network"]["plugins"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let v = one("gladius_plugin_events_dropped_total", &[("plugin", name)]);
        assert!(v >= p["events_dropped"].as_f64().unwrap(), "{name}");
    }
    assert!(one("gladius_signed_state_entries", &[]) >= 1.0);
    let pings = one("gladius_latency_pings_sent_total", &[]);
    between(
        pings,
        &|s| &s["latency"]["counters"]["pings_sent"],
        "pings_sent",
    );
    let rss = one("gladius_process_resident_memory_bytes", &[]);
    assert!(rss > 1e6 && rss < 4e9, "{rss}");
}

/// The same node started twice in one data directory: the same token,
/// kept in a file only its owner may read.
#[test]
fn the_api_token_is_private_and_survives_restarts() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let first = Node::start_in("A", data, &["--api", "127.0.0.1:0"]);
    let token = first.api.clone().unwrap().token.expect("api_token");
    assert_eq!(token.len(), 64, "{token}");
    let status_url = first.api.clone().unwrap().status_url.unwrap();
    assert!(
        status_url.ends_with(&format!("/#token={token}")),
        "{status_url}"
    );
    drop(first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("data/api_token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let again = Node::start_in("A", data, &["--api", "127.0.0.1:0"]);
    assert_eq!(
        again.api.clone().unwrap().token.as_deref(),
        Some(token.as_str())
    );

    // No token only on loopback, and then no token is printed.
    let open = api_node_no_auth();
    assert!(open.api.as_ref().unwrap().token.is_none());
    ok(open.api.as_ref().unwrap(), "GET", "/api/state", None);
    let run = common::run_to_end(
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.join("other").to_str().unwrap(),
            "--api",
            "0.0.0.0:0",
            "--api-no-auth",
        ],
        WAIT,
    );
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--api-no-auth"), "{}", run.stderr);
}

fn api_node_no_auth() -> Node {
    Node::start("open", &["--api", "127.0.0.1:0", "--api-no-auth"])
}

/// What a web page (or a DNS-rebound name) can send is refused before
/// anything runs: no token 401, foreign Host or Origin 403, a non-JSON
/// POST 415, and the node does not act on any of them.
#[test]
fn requests_without_token_from_foreign_origins_or_not_json_are_refused() {
    let mut b = Node::start("B", &[]);
    let mut a = api_node("A", &["--peer", &b.addr]);
    a.wait_writable(&[&b.addr]);
    let api = a.api.clone().unwrap();
    let host = api.strip_prefix("http://").unwrap().to_owned();
    let token = api.token.clone().unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let json = "Content-Type: application/json\r\n";
    let news = r#"{"type":"news","body":"forged"}"#;

    let refused = |headers: String, method: &str, path: &str, want: u16| {
        let body = (method == "POST").then_some(news);
        let (status, text) = http_with(&api, method, path, &headers, body);
        assert_eq!(status, want, "{method} {path} with {headers:?}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ok"], false, "{v}");
    };
    // No token, a wrong one, or a cookie instead.
    for path in ["/api/state", "/api/peers", "/api/events", "/metrics"] {
        refused(format!("Host: {host}\r\n"), "GET", path, 401);
    }
    refused(
        format!(
            "Host: {host}\r\nAuthorization: Bearer {}\r\n",
            "0".repeat(64)
        ),
        "GET",
        "/api/state",
        401,
    );
    refused(
        format!("Host: {host}\r\nCookie: token={token}\r\n"),
        "GET",
        "/api/state",
        401,
    );
    refused(
        format!("Host: {host}\r\n{json}"),
        "POST",
        "/api/broadcast",
        401,
    );
    // DNS rebinding: the right token cannot even be tried from a page
    // whose Host is another name; a foreign Origin is refused as well.
    refused(
        format!("Host: evil.example\r\n{auth}"),
        "GET",
        "/api/state",
        403,
    );
    refused(
        format!(
            "Host: evil.example:{}\r\n",
            &host[host.rfind(':').unwrap() + 1..]
        ),
        "GET",
        "/",
        403,
    );
    refused(
        format!("Host: {host}\r\n{auth}Origin: http://evil.example\r\n{json}"),
        "POST",
        "/api/broadcast",
        403,
    );
    refused(
        format!("Host: {host}\r\n{auth}Origin: null\r\n{json}"),
        "POST",
        "/api/broadcast",
        403,
    );
    // Cross-origin "simple" bodies: text/plain, forms, none.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        refused(
            format!("Host: {host}\r\n{auth}Content-Type: {ct}\r\n"),
            "POST",
            "/api/broadcast",
            415,
        );
        refused(
            format!("Host: {host}\r\n{auth}Content-Type: {ct}\r\n"),
            "POST",
            "/api/signed-state",
            415,
        );
    }
    refused(
        format!("Host: {host}\r\n{auth}"),
        "POST",
        "/api/broadcast",
        415,
    );

    // Nothing was broadcast nor signed: B's first `news` is the one sent
    // now, properly, and A has no signed field.
    let (status, _) = http_with(
        &api,
        "POST",
        "/api/broadcast",
        &format!("Host: {host}\r\n{auth}{json}"),
        Some(r#"{"type":"news","body":"real"}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(b.wait_message("news")["body"], "real");
    let s = ok(&api, "GET", "/api/signed-state", None);
    assert!(s["entries"].as_array().unwrap().is_empty(), "{s}");
    // The same origin (the status page) and `localhost` are fine.
    let port = &host[host.rfind(':').unwrap() + 1..];
    let (status, _) = http_with(
        &api,
        "GET",
        "/api/state",
        &format!("Host: localhost:{port}\r\n{auth}Origin: http://{host}\r\n"),
        None,
    );
    assert_eq!(status, 200);
}

/// One POST listing 100,000 addresses is refused whole: no entries, no
/// handshakes, no memory.
#[test]
fn an_oversized_list_is_refused_not_executed() {
    let a = api_node("A", &[]);
    let api = a.api.clone().unwrap();
    let rss_before = a.rss_bytes();
    let peers: Vec<String> = (0..100_000)
        .map(|i| format!("127.{}.{}.{}:9", i >> 16 & 255, i >> 8 & 255, i & 255))
        .collect();
    let body = json!({"peers": peers, "type": "t", "body": "x"});
    let (status, v) = http(&api, "POST", "/api/broadcast", Some(body));
    assert!(status == 413 || status == 400, "{status} {v}");
    // Just over the limit is refused too; just under is carried out.
    let (status, v) = http(
        &api,
        "POST",
        "/api/broadcast",
        Some(json!({"peers": peers[..1025], "type": "t", "body": "x"})),
    );
    assert_eq!(status, 413, "{v}");
    let s = ok(&api, "GET", "/api/peers", None);
    assert!(s["peers"].as_array().unwrap().is_empty(), "{s}");
    let rss_after = a.rss_bytes();
    assert!(
        rss_after < rss_before + (32 << 20),
        "RSS {rss_before} -> {rss_after}"
    );
}

/// Open `n` TCP connections to the API that send `prefix` and then hold.
fn hold(api: &str, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let host = api.strip_prefix("http://").unwrap();
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(host).expect("connect");
            s.write_all(prefix).unwrap();
            s
        })
        .collect()
}

/// When every connection of `conns` has been closed by the server (a read
/// gives EOF or an error); panics after `limit`.
fn all_closed_within(conns: &mut [TcpStream], limit: Duration) -> Duration {
    let start = Instant::now();
    for s in conns.iter_mut() {
        let left = limit
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) if start.elapsed() < limit => break,
                Ok(0) | Err(_) => panic!("a connection was still open after {limit:?}"),
                Ok(_) => {} // a 408 answer, then the close
            }
        }
    }
    start.elapsed()
}

/// Slowloris: connections that never finish their head (or body) are
/// closed within the read timeouts, while a legitimate request goes
/// through; past the connection cap, extra connections are closed at
/// once and the API answers again once the idle ones are gone.
#[test]
fn slow_and_excess_connections_are_closed_and_the_api_keeps_answering() {
    let a = api_node("A", &[]);
    let api = a.api.clone().unwrap();
    let host = api.strip_prefix("http://").unwrap().to_owned();

    // 100 slow heads and 5 slow bodies: a request still goes through.
    let head = format!("GET /api/state HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let mut slow = hold(&api, 100, head.as_bytes());
    let token = api.token.clone().unwrap();
    let body = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.extend(hold(&api, 5, body.as_bytes()));
    std::thread::sleep(Duration::from_millis(500));
    ok(&api, "GET", "/api/state", None);
    // Header timeout 5 s, body timeout 10 s: all gone well within 20 s.
    let took = all_closed_within(&mut slow, Duration::from_secs(20));
    eprintln!("slow connections closed after {took:?}");

    // Cap + 100 idle connections: the extra ones are closed at once.
    let cap = 128;
    let mut idle = hold(&api, cap + 100, b"");
    std::thread::sleep(Duration::from_millis(500));
    let mut closed_at_once = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 16];
        let open = matches!(s.read(&mut buf), Err(e)
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        if !open {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 100,
        "only {closed_at_once} of the extra connections closed at once"
    );
    let took = all_closed_within(&mut idle, Duration::from_secs(20));
    eprintln!("idle connections closed after {took:?}");
    drop(idle);
    ok(&api, "GET", "/api/state", None);
    // Every refusal is counted.
    let (status, text) = http_raw(&api, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let (samples, _) = parse_exposition(&text);
    let refused = samples
        .iter()
        .find(|s| s.name == "gladius_api_connections_refused_total")
        .map(|s| s.value)
        .expect("refused connections in /metrics");
    assert!(refused >= 100.0, "{refused}");
}
