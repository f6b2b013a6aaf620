//! Real `gladius` processes for the integration tests: stdout parsed as
//! JSON lines on a reader thread, every wait bounded, children killed and
//! data directories removed on drop.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
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
        let mut child = Command::new(BIN)
            .args(["node", "--listen", "127.0.0.1:0", "--data-dir", data_dir])
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
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gladius");
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
