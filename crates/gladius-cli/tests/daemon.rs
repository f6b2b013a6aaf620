//! `gladius` end to end: real processes on loopback, driven through their
//! stdin and read from their stdout.

mod common;

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Node, TempDir, BIN, WAIT};
use gladius_plugins::signed_state::{recover_personal, EthAddress, EthSignature};
use serde_json::{json, Value};

/// A, B and C, with A connected (writable both ways) to B and C.
fn three_nodes(extra: &[&str]) -> (Node, Node, Node) {
    let b = Node::start("B", extra);
    let c = Node::start("C", extra);
    let mut a = Node::start("A", extra);
    for peer in [&b.addr, &c.addr] {
        a.ok(json!({"cmd": "add", "addr": peer}));
    }
    a.wait_writable(&[&b.addr, &c.addr]);
    (a, b, c)
}

fn queued(answer: &Value) -> Vec<String> {
    answer["queued"]
        .as_array()
        .unwrap_or_else(|| panic!("no `queued` in {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!("gladius {}", env!("CARGO_PKG_VERSION"))
    );
    for cmd in [&["--help"][..], &["node", "--help"], &["keygen", "--help"]] {
        let out = Command::new(BIN).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(String::from_utf8(out.stdout).unwrap().contains("Usage"));
    }
}

/// `gladius sim` moved to its own binary (so this one carries no tokio
/// test clock): the old command fails and names the new one, and the
/// simulator is not in the help.
#[test]
fn sim_names_the_binary_it_moved_to() {
    let out = Command::new(BIN)
        .args(["sim", "--nodes", "3", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("gladius-sim"), "{err}");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(!help.contains("sim"), "{help}");
}

#[test]
fn keygen_then_node_reuse_the_identity() {
    let dir = TempDir::new();
    let data = dir.join("id");
    let data = data.to_str().unwrap();
    let keygen = || {
        let out = Command::new(BIN)
            .args(["keygen", "--data-dir", data])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let first = keygen();
    assert_eq!(first["created"], true);
    assert_eq!(first["public_key"].as_str().unwrap().len(), 64);
    #[cfg(unix)]
    for file in ["identity.key", "eth.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("id").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let again = keygen();
    assert_eq!(again["created"], false);
    assert_eq!(again["public_key"], first["public_key"]);
    assert_eq!(again["eth_address"], first["eth_address"]);

    let mut node = Node::start_in("N", data, &[]);
    assert_eq!(node.public_key, first["public_key"]);
    assert_eq!(node.eth_address, first["eth_address"].as_str().unwrap());
    node.ok(json!({"cmd": "close"}));
    assert!(node.wait_exit().success());
    // And the node, run again, is still the same node.
    let node = Node::start_in("N2", data, &[]);
    assert_eq!(node.public_key, first["public_key"]);
}

#[test]
fn broadcast_random_request_and_delete() {
    let (mut a, mut b, mut c) = three_nodes(&[]);

    // A plain line is a chat broadcast; it reaches both.
    a.send_line("hello everyone");
    for n in [&mut b, &mut c] {
        let m = n.wait_message("chat");
        assert_eq!(m["body"], "hello everyone");
        assert_eq!(m["from"], a.addr.as_str());
    }

    // broadcast_randomly n=1 reaches exactly one: per peer, messages arrive
    // in send order, so once the marker (sent to all afterwards) is in, no
    // `rand` message can still come.
    let r = a.ok(json!({"cmd": "broadcast_randomly", "n": 1, "type": "rand", "body": "r1"}));
    let chosen = queued(&r);
    assert_eq!(chosen.len(), 1, "{r}");
    let m = a.ok(json!({"cmd": "broadcast", "type": "marker", "body": "m1"}));
    assert_eq!(queued(&m).len(), 2, "{m}");
    let mut got = Vec::new();
    for n in [&mut b, &mut c] {
        n.wait_message("marker");
        if n.wait_for_within("rand", Duration::ZERO, |v| v["type"] == "rand")
            .is_some()
        {
            got.push(n.addr.clone());
        }
    }
    assert_eq!(got, chosen, "exactly the chosen peer got it");

    // Request/answer: B answers `echo` requests.
    let reply = a.cmd(json!({"cmd": "request", "to": b.addr, "type": "echo",
                             "body": "ping", "timeout_ms": 5000}));
    assert_eq!(reply["event"], "reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["from"], b.addr.as_str());
    assert_eq!(reply["body"], "ping");

    // broadcast_to reaches just the named peer.
    let r = a.ok(json!({"cmd": "broadcast_to", "peers": [c.addr], "type": "only_c", "body": "x"}));
    assert_eq!(queued(&r), vec![c.addr.clone()]);
    c.wait_message("only_c");

    // Delete B: no more deliveries to it, even after discovery and
    // reconnection attempts had time to act.
    a.ok(json!({"cmd": "delete", "addr": b.addr}));
    let baddr = b.addr.clone();
    a.wait_for("node_deleted B", |v| {
        v["event"] == "node_deleted" && v["addr"] == baddr.as_str()
    });
    std::thread::sleep(Duration::from_secs(2));
    let r = a.ok(json!({"cmd": "broadcast", "type": "after", "body": "a1"}));
    assert!(!queued(&r).contains(&b.addr), "{r}");
    c.wait_message("after");
    a.ok(json!({"cmd": "broadcast", "type": "after2", "body": "a2"}));
    c.wait_message("after2");
    let late = b.wait_for_within("no `after`", Duration::from_secs(1), |v| {
        v["event"] == "message" && v["type"].as_str().is_some_and(|t| t.starts_with("after"))
    });
    assert!(late.is_none(), "B still got {late:?}");
}

#[test]
fn signed_fields_converge_and_verify() {
    let b = Node::start("B", &[]);
    let c = Node::start("C", &[]);
    let mut a = Node::start("A", &["--peer", &b.addr, "--peer", &c.addr]);
    let (mut b, mut c) = (b, c);
    let signers: Vec<String> = [&a, &b, &c].iter().map(|n| n.eth_address.clone()).collect();
    for (n, name) in [(&mut a, "alice"), (&mut b, "bob"), (&mut c, "carol")] {
        let r = n.ok(json!({"cmd": "set", "field": "name", "value": name}));
        assert_eq!(r["entry"]["value"], name);
        assert_eq!(r["entry"]["signer"], n.eth_address.as_str());
    }
    for n in [&mut a, &mut b, &mut c] {
        let deadline = std::time::Instant::now() + common::WAIT;
        let entries = loop {
            let s = n.ok(json!({"cmd": "signed_state"}));
            let entries = s["entries"].as_array().unwrap().clone();
            if entries.len() == 3 {
                break entries;
            }
            assert!(std::time::Instant::now() < deadline, "{}: {s}", n.name);
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut seen = Vec::new();
        for e in &entries {
            let message = e["message"].as_str().unwrap();
            let sig = EthSignature::from_hex(e["signature"].as_str().unwrap()).unwrap();
            let recovered = recover_personal(message.as_bytes(), &sig).unwrap();
            let signer = EthAddress::from_str(e["signer"].as_str().unwrap()).unwrap();
            assert_eq!(recovered, signer, "{e}");
            assert_eq!(e["field"], "name");
            let value_hex = format!("0x{}", hex(e["value"].as_str().unwrap().as_bytes()));
            assert!(message.contains(&value_hex), "{e}");
            assert!(e["timestamp"].as_u64().is_some());
            seen.push(e["signer"].as_str().unwrap().to_owned());
        }
        seen.sort();
        let mut want = signers.clone();
        want.sort();
        assert_eq!(seen, want, "{}", n.name);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bad_input_gets_errors_and_the_node_carries_on() {
    let mut n = Node::start("N", &[]);
    let bad = [
        "{not json",
        "{}",
        r#"{"cmd": 5}"#,
        r#"{"cmd": "launch_rockets"}"#,
        r#"{"cmd": "add"}"#,
        r#"{"cmd": "add", "addr": 7}"#,
        r#"{"cmd": "add", "addr": "not an address"}"#,
        r#"{"cmd": "delete", "addr": "nowhere"}"#,
        r#"{"cmd": "broadcast"}"#,
        r#"{"cmd": "broadcast", "body": "x", "bdoy": "typo"}"#,
        r#"{"cmd": "broadcast", "type": "", "body": "x"}"#,
        r#"{"cmd": "broadcast", "body_b64": "!!"}"#,
        r#"{"cmd": "broadcast_randomly", "n": -1, "body": "x"}"#,
        r#"{"cmd": "broadcast_to", "peers": ["bad"], "body": "x"}"#,
        r#"{"cmd": "set", "field": "", "value": "x"}"#,
        r#"{"cmd": "request", "to": "127.0.0.1:9", "type": "echo", "body": "x", "timeout_ms": 200}"#,
    ];
    for line in bad {
        n.send_line(line);
        let answer = n.wait_for(line, |v| v["event"] != "message");
        assert_eq!(answer["ok"], false, "{line} -> {answer}");
        assert!(
            !answer["error"].as_str().unwrap_or("").is_empty(),
            "{line} -> {answer}"
        );
    }
    // Lines that look like JSON are commands, never chat; errors name the
    // mistake.
    for (line, says) in [
        (r#"{"cmd":"broadcast","body":"cut sh"#, "invalid JSON"),
        ("[1, 2]", "JSON object"),
        (r#""quoted""#, "JSON object"),
        ("42", "JSON object"),
        ("null", "JSON object"),
        (r#"{"cmd": "add", "addr": "127.0.0.1"}"#, "missing port"),
        (
            r#"{"cmd": "add", "addr": "127.0.0.300:7000"}"#,
            "invalid IP address",
        ),
        (
            r#"{"cmd": "add", "addr": "127.0.0.1:99999"}"#,
            "invalid port",
        ),
        (
            r#"{"cmd": "set", "field": "my name", "value": "x"}"#,
            "printable ASCII",
        ),
        (r#"{"cmd": "add", "public_key": "zz"}"#, "bad `public_key`"),
        (
            r#"{"cmd": "add", "addr": "127.0.0.1:7000", "addrs": ["127.0.0.1:7001"]}"#,
            "`addrs` goes with `public_key`",
        ),
    ] {
        n.send_line(line);
        let answer = n.wait_for(line, |v| v["event"] == "result");
        assert_eq!(answer["ok"], false, "{line} -> {answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(error.contains(says), "{line} -> {answer}");
    }
    // `request`'s type defaults (to chat) as for every other body.
    let r = n.cmd(json!({"cmd": "request", "to": "127.0.0.1:9", "body": "x", "timeout_ms": 200}));
    assert!(!r["error"].as_str().unwrap_or("").contains("type"), "{r}");

    // Ids are echoed on errors too.
    let a = n.cmd(json!({"cmd": "nope"}));
    assert_eq!(a["ok"], false);
    assert!(a["error"].as_str().unwrap().contains("nope"), "{a}");

    // Still alive and answering.
    let s = n.ok(json!({"cmd": "state"}));
    assert_eq!(s["event"], "state");
    assert_eq!(s["network"]["local_addr"], n.addr.as_str());
    assert!(s["latency"].is_object(), "{s}");

    // End of stdin does not stop the node; SIGTERM does, cleanly.
    n.close_stdin();
    std::thread::sleep(Duration::from_millis(500));
    assert!(n.is_running(), "stopped at end of stdin");
    #[cfg(unix)]
    {
        let kill = Command::new("kill")
            .args(["-TERM", &n.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        assert!(n.wait_exit().success());
    }
}

#[test]
fn insecure_nodes_talk_and_binary_bodies_survive() {
    let mut b = Node::start("B", &["--insecure"]);
    let mut a = Node::start("A", &["--insecure", "--peer", &b.addr]);
    assert_eq!(a.public_key, Value::Null);
    a.wait_writable(&[&b.addr]);
    let r = a.ok(json!({"cmd": "broadcast", "type": "bin", "body_b64": "AP8="}));
    assert_eq!(queued(&r), vec![b.addr.clone()]);
    let m = b.wait_message("bin");
    assert_eq!(m["body_b64"], "AP8=");
    assert_eq!(m["from"], a.addr.as_str());
    // B did not add A: its messages arrive flagged as from a non-writable peer
    // (unless discovery promoted A in the meantime).
    assert!(m["writable"].is_boolean());
    a.ok(json!({"cmd": "close"}));
    assert!(a.wait_exit().success());
}

/// B's driving program (this test, on B's stdin) answers A's requests of a
/// type the daemon does not know; tokens are single-use, unknown ones are
/// refused, and an unanswered request times out on the requester.
#[test]
fn the_driving_program_answers_requests() {
    let mut b = Node::start("B", &[]);
    let mut a = Node::start("A", &["--peer", &b.addr]);
    a.wait_writable(&[&b.addr]);
    // B proved its signer in its handshake. The daemon learns it in its
    // plugin's `peer_connected` hook, which may run just after the state
    // says "connected": wait for it, then check it is B's.
    let deadline = Instant::now() + WAIT;
    let s = loop {
        let s = a.ok(json!({"cmd": "state"}));
        if !s["network"]["peers"][0]["signer"].is_null() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        s["network"]["peers"][0]["signer"],
        b.eth_address.as_str(),
        "{s}"
    );

    // A asks; B's program sees the request with a token and replies.
    a.send_line(
        &json!({"cmd": "request", "id": "q1", "to": b.addr, "type": "lookup",
                "body": "who has x?", "timeout_ms": 10000})
        .to_string(),
    );
    let req = b.wait_message("lookup");
    assert_eq!(req["request"], true, "{req}");
    assert_eq!(req["body"], "who has x?");
    let token = req["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token: {req}"));
    let r = b.ok(json!({"cmd": "reply", "to": token, "body_b64": "AP8="}));
    assert_eq!(r["to"], a.addr.as_str(), "{r}");
    let reply = a.wait_for("the reply", |v| v["id"] == "q1");
    assert_eq!(reply["event"], "reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["from"], b.addr.as_str());
    assert_eq!(
        reply["type"], "lookup",
        "the type defaults to the request's"
    );
    assert_eq!(reply["body_b64"], "AP8=");

    // A token answers once; made-up and malformed ones are refused.
    for to in [json!(token), json!(token + 1000), json!("nope")] {
        let r = b.cmd(json!({"cmd": "reply", "to": to, "body": "again"}));
        assert_eq!(r["ok"], false, "{to}: {r}");
        assert!(r["error"].as_str().unwrap().contains("token"), "{r}");
    }

    // Unanswered: the requester times out as for any silent peer; a late
    // reply still goes out (the token is valid) and changes nothing for A.
    let r = a.cmd(json!({"cmd": "request", "to": b.addr, "type": "slow",
                         "body": "?", "timeout_ms": 300}));
    assert_eq!(r["ok"], false, "{r}");
    let req = b.wait_message("slow");
    let token = req["token"].to_string();
    b.ok(json!({"cmd": "reply", "to": token, "type": "slow", "body": "late"}));

    // The echo service still answers by itself, without a token.
    let r = a.ok(json!({"cmd": "request", "to": b.addr, "type": "echo", "body": "e"}));
    assert_eq!(r["body"], "e");
    let echo = b.wait_message("echo");
    assert!(echo.get("token").is_none(), "{echo}");

    let s = b.ok(json!({"cmd": "state"}));
    assert_eq!(s["replies"]["issued"], 2, "{s}");
    assert_eq!(s["replies"]["answered"], 2, "{s}");
    assert_eq!(s["replies"]["pending"], 0, "{s}");
}

/// `--config`: the documented example loads, flags override it, and a
/// misspelt key stops the node with an error naming it.
#[test]
fn config_file_with_flags_over_it() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gladius.example.toml"
    );
    // The example's listen, api and data_dir are overridden, its peers kept.
    let mut n = Node::start("N", &["--config", example, "--api", "127.0.0.1:0"]);
    let s = n.ok(json!({"cmd": "state"}));
    let peers: Vec<&str> = s["network"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["addr"].as_str().unwrap())
        .collect();
    assert!(peers.contains(&"127.0.0.1:7002"), "example peers: {s}");
    let api = n.api.clone().expect("`api` from the file");
    assert!(
        !api.ends_with(":8080"),
        "--api overrides `api`: {}",
        api.url
    );

    let dir = TempDir::new();
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\ninsecure = true\n[latency]\ninterval_ms = 700\ntimeout_ms = 700\n",
    )
    .unwrap();
    let mut n = Node::start("M", &["--config", file.to_str().unwrap()]);
    assert_ne!(n.addr, "127.0.0.1:1", "--listen overrides `listen`");
    assert_eq!(n.public_key, Value::Null, "`insecure` from the file");
    let s = n.ok(json!({"cmd": "state"}));
    // Durations are milliseconds, their keys say so.
    assert_eq!(s["latency"]["config"]["interval_ms"], 700, "{s}");

    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[discovery]\ntable_sise = 3\n",
    )
    .unwrap();
    let run = common::run_to_end(&["node", "--config", file.to_str().unwrap()], common::WAIT);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("`table_sise`"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// The README's `answer.py`, run as written: a Python program drives its
/// own `gladius node` and answers another node's `lookup` requests.
#[cfg(unix)]
#[test]
fn the_readme_script_answers_requests() {
    use std::os::unix::process::CommandExt;
    let python_ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_ok {
        assert!(std::env::var_os("CI").is_none(), "python3 is needed on CI");
        eprintln!("\n*** SKIPPED the_readme_script_answers_requests: no python3 ***\n");
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```python\n# answer.py")
        .expect("answer.py in the README")
        + 10;
    let script = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = TempDir::new();
    let path = dir.join("answer.py");
    std::fs::write(&path, script).unwrap();

    let mut a = Node::start("A", &[]);
    // `gladius` on PATH, as the README assumes.
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path_var = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let data = dir.join("data");
    /// Kills the script and its node (its process group) however the
    /// test ends.
    struct Group(std::process::Child);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
    let script = Command::new("python3")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--peer", &a.addr])
        .arg("--data-dir")
        .arg(&data)
        .env("PATH", path_var)
        .stdin(std::process::Stdio::null())
        .process_group(0) // so that its node goes with it
        .spawn()
        .unwrap();
    let script = Group(script);
    let connected = a.wait_for("the script's node", |v| v["event"] == "peer_connected");
    let peer = connected["addr"].as_str().unwrap().to_owned();
    let r = a.cmd(json!({"cmd": "request", "to": peer, "type": "lookup", "body": "alice"}));
    let r2 = a.cmd(json!({"cmd": "request", "to": peer, "type": "lookup", "body": "carol"}));
    drop(script);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["body"], "127.0.0.1:7001", "{r}");
    assert_eq!(r2["body"], "", "{r2}");
}

/// A driving program that stops reading stdout while 1 MiB messages
/// arrive: the daemon drops (and counts) what it cannot queue within its
/// byte budgets instead of growing, and says so once stdout is read again.
#[test]
fn an_unread_stdout_keeps_memory_bounded_and_reports_drops() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new();
    let mut child = Command::new(common::BIN)
        .args(["node", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("a"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gladius");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let listening: Value = serde_json::from_str(&line).unwrap();
    let a_addr = listening["addr"].as_str().unwrap().to_owned();

    let mut b = Node::start("B", &["--peer", &a_addr]);
    b.wait_writable(&[&a_addr]);
    // From here on, nobody reads A's stdout.
    let body = "x".repeat(1 << 20);
    let sent = 150;
    let mut max_rss = 0;
    for _ in 0..sent {
        b.ok(json!({"cmd": "broadcast_to", "peers": [a_addr], "type": "big", "body": body}));
        max_rss = max_rss.max(common::rss_bytes(child.id()));
    }
    // Let A take in what is still in flight.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        max_rss = max_rss.max(common::rss_bytes(child.id()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{sent} MiB sent to an unread daemon: max RSS {} MiB",
        max_rss >> 20
    );
    assert!(max_rss < 128 << 20, "RSS {} MiB", max_rss >> 20);

    // Read again: the messages that fitted, then the drop is told.
    let (mut messages, mut dropped) = (0u64, None);
    let deadline = Instant::now() + WAIT;
    while dropped.is_none() && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("message") => messages += 1,
            Some("dropped") => dropped = Some(v),
            _ => {}
        }
    }
    let dropped = dropped.expect("a `dropped` event once stdout is read");
    let events = dropped["events"].as_u64().unwrap();
    eprintln!("read {messages} messages, then {dropped}");
    assert!(
        events >= 1 && dropped["bytes"].as_u64().unwrap() >= events << 20,
        "{dropped}"
    );
    assert!(messages + events <= sent, "{messages} + {events}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `add` by static key: with an address to try, the session completes only
/// with that key, and the peer is listed under it; a wrong key at the same
/// address never becomes a writable peer.
#[test]
fn add_by_public_key_connects_only_to_that_key() {
    let b = Node::start("B", &[]);
    let c = Node::start("C", &[]);
    let mut a = Node::start("A", &[]);
    let key_b = b.public_key.as_str().expect("B has a key").to_owned();
    let added = a.ok(json!({"cmd": "add", "public_key": key_b, "addr": b.addr}));
    assert_eq!(added["public_key"], key_b.as_str(), "{added}");
    assert_eq!(added["addr"], b.addr.as_str(), "{added}");
    a.wait_writable(&[&b.addr]);
    let state = a.ok(json!({"cmd": "state"}));
    let peers = state["network"]["peers"].as_array().expect("peers");
    let listed = peers
        .iter()
        .find(|p| p["public_key"] == key_b.as_str())
        .unwrap_or_else(|| panic!("B's key not among A's peers: {state}"));
    assert_eq!(listed["writable"], true, "{listed}");

    // C's address with B's key: C cannot prove it, so it never becomes a
    // writable peer of A's under that key.
    let key_c = c.public_key.as_str().expect("C has a key").to_owned();
    let _ = a.cmd(json!({"cmd": "add", "public_key": key_b, "addrs": [c.addr]}));
    std::thread::sleep(Duration::from_millis(1500));
    let state = a.ok(json!({"cmd": "state"}));
    let peers = state["network"]["peers"].as_array().expect("peers");
    assert!(
        !peers
            .iter()
            .any(|p| p["public_key"] == key_c.as_str() && p["writable"] == true),
        "C became writable though A asked for B's key: {state}"
    );
}
