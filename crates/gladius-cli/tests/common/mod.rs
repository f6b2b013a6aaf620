//! Real `gladius` processes for the integration tests: stdout parsed as
//! JSON lines on a reader thread, every wait bounded, children killed and
//! data directories removed on drop.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_gladius");
/// Bound for any single wait (a 2-core CI machine building debug code).
pub const WAIT: Duration = Duration::from_secs(30);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("gladius-cli-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node's HTTP API, from its `listening` event. Derefs to its
/// `http://HOST:PORT` URL.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    /// `api_token` (absent with `--api-no-auth`).
    pub token: Option<String>,
    /// `status_url`: the status page with the token in its fragment.
    pub status_url: Option<String>,
}

impl std::ops::Deref for Api {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// One running `gladius node`.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// Events read but not yet consumed by a wait.
    backlog: VecDeque<Value>,
    next_id: u64,
    pub addr: String,
    pub public_key: Value,
    pub eth_address: String,
    /// The HTTP API, when started with `--api`.
    pub api: Option<Api>,
    pub name: String,
    _dir: Option<TempDir>,
}

impl Node {
    /// `gladius node --listen 127.0.0.1:0 --data-dir <fresh dir> <extra>`.
    pub fn start(name: &str, extra: &[&str]) -> Node {
        let dir = TempDir::new();
        let data = dir.join("data");
        let mut node = Node::start_in(name, data.to_str().unwrap(), extra);
        node._dir = Some(dir);
        node
    }

    /// As [`start`](Self::start) with a given data directory.
    pub fn start_in(name: &str, data_dir: &str, extra: &[&str]) -> Node {
        Node::start_at(name, "127.0.0.1:0", data_dir, extra)
    }

    /// As [`start_in`](Self::start_in) listening on `listen`.
    pub fn start_at(name: &str, listen: &str, data_dir: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args(["node", "--listen", listen, "--data-dir", data_dir])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gladius");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // stdout must carry nothing but JSON objects.
                let v = match serde_json::from_str::<Value>(&line) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"event": "__not_json__", "line": line}),
                };
                if std::env::var_os("GLADIUS_TEST_TRACE").is_some() {
                    eprintln!("[{tag}] {v}");
                }
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut node = Node {
            child,
            stdin,
            lines,
            backlog: VecDeque::new(),
            next_id: 0,
            addr: String::new(),
            public_key: Value::Null,
            eth_address: String::new(),
            api: None,
            name: name.to_owned(),
            _dir: None,
        };
        let first = node.next_event("the listening event");
        assert_eq!(first["event"], "listening", "first line: {first}");
        node.addr = first["addr"].as_str().unwrap().to_owned();
        node.public_key = first["public_key"].clone();
        node.eth_address = first["eth_address"].as_str().unwrap().to_owned();
        node.api = first["api"].as_str().map(|url| Api {
            url: url.to_owned(),
            token: first["api_token"].as_str().map(str::to_owned),
            status_url: first["status_url"].as_str().map(str::to_owned),
        });
        node
    }

    fn next_event(&mut self, what: &str) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        match self.lines.recv_timeout(WAIT) {
            Ok(v) => {
                assert_ne!(
                    v["event"], "__not_json__",
                    "{}: stdout not JSON: {v}",
                    self.name
                );
                v
            }
            Err(e) => panic!("{}: waiting for {what}: {e}", self.name),
        }
    }

    /// The first event (read or to come) matching `pred`, within `timeout`;
    /// the others stay queued for later waits.
    pub fn wait_for_within(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    assert_ne!(
                        v["event"], "__not_json__",
                        "{}: stdout not JSON: {v}",
                        self.name
                    );
                    if pred(&v) {
                        return Some(v);
                    }
                    self.backlog.push_back(v);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(e) => panic!("{}: stdout ended waiting for {what}: {e}", self.name),
            }
        }
    }

    /// As [`wait_for_within`](Self::wait_for_within) with [`WAIT`]; panics
    /// on timeout.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.wait_for_within(what, WAIT, pred) {
            Some(v) => v,
            None => panic!(
                "{}: timed out waiting for {what}; unconsumed: {:?}",
                self.name, self.backlog
            ),
        }
    }

    /// The next `message` event of `msg_type`.
    pub fn wait_message(&mut self, msg_type: &str) -> Value {
        let t = msg_type.to_owned();
        self.wait_for(&format!("a `{msg_type}` message"), move |v| {
            v["event"] == "message" && v["type"] == t.as_str()
        })
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Send a command with a fresh `id` and wait for its answer.
    pub fn cmd(&mut self, mut cmd: Value) -> Value {
        self.next_id += 1;
        let id = format!("{}-{}", self.name, self.next_id);
        cmd["id"] = id.clone().into();
        self.send_line(&cmd.to_string());
        self.wait_for(&format!("the answer to {cmd}"), move |v| {
            v["id"] == id.as_str() && v["event"] != "message"
        })
    }

    /// As [`cmd`](Self::cmd), asserting `ok:true`.
    pub fn ok(&mut self, cmd: Value) -> Value {
        let a = self.cmd(cmd.clone());
        assert_eq!(a["ok"], true, "{}: {cmd} failed: {a}", self.name);
        a
    }

    /// Wait until every one of `peers` is a connected, writable peer.
    pub fn wait_writable(&mut self, peers: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.ok(json!({"cmd": "state"}));
            let listed = state["network"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = peers.iter().all(|p| {
                listed.iter().any(|s| {
                    s["addr"] == *p && s["writable"] == true && s["connection"] == "connected"
                })
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: peers {peers:?} not writable and connected: {state}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Close stdin (end of input; the node must keep running).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process's resident set size (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{}: did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback UDP port nothing listens on (free when this returns; a
/// test binds it soon after or uses it as a dead address).
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("local address").port()
}

/// A finished `gladius` run: exit code and everything it printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `gladius args…` to completion with stdin closed, reading stdout and
/// stderr on threads (so neither pipe can fill and stall it); kills it and
/// panics if it runs longer than `limit`.
pub fn run_to_end(args: &[&str], limit: Duration) -> Run {
    run_with_input(args, &[], None, limit)
}

/// As [`run_to_end`] with extra environment variables and, when `input`
/// is given, these lines on stdin (then stdin closed).
pub fn run_with_input(
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
    limit: Duration,
) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gladius");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gladius") {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gladius {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A node serving the API on a free port.
pub fn api_node(name: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--api", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let node = Node::start(name, &args);
    let api = node.api.as_ref().expect("`api` in the listening event");
    assert!(api.token.is_some(), "`api_token` in the listening event");
    assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    assert!(!api.ends_with(":0"), "port 0 not resolved: {api}");
    node
}

/// One HTTP/1.1 request (`Connection: close`, with the API's token); the
/// status and the body.
pub fn http_raw(api: &Api, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let auth = api
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let host = api.strip_prefix("http://").expect("http:// URL");
    let extra = format!("Host: {host}\r\n{auth}Content-Type: application/json\r\n");
    http_with(api, method, path, &extra, body)
}

/// One HTTP/1.1 request with exactly the header lines `headers` (each
/// ending in CRLF) besides `Connection` and `Content-Length`.
pub fn http_with(
    api: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&str>,
) -> (u16, String) {
    let host = api.strip_prefix("http://").expect("http:// URL");
    let mut stream = TcpStream::connect(host).expect("connect to the API");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this client reads only Content-Length bodies: {head}"
    );
    (status, body.to_owned())
}

/// A JSON request; the status and the JSON answer (always an object with
/// `ok`, matching the status).
pub fn http(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http_raw(api, method, path, body.as_deref());
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    assert_eq!(v["ok"], status == 200, "{method} {path} -> {status} {v}");
    if status != 200 {
        assert!(
            !v["error"].as_str().unwrap_or("").is_empty(),
            "{method} {path} -> {v}"
        );
    }
    (status, v)
}

/// As [`http`], asserting 200.
pub fn ok(api: &Api, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = http(api, method, path, body.clone());
    assert_eq!(status, 200, "{method} {path} {body:?} -> {v}");
    v
}

/// The resident set size of process `pid` (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}
