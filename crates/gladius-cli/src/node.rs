//! `gladius node`: the node, its stdout writer, the stdin command loop and
//! the `cli` plugin that turns hooks into events. See the crate docs for
//! the reference.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gladius_p2p::{
    async_trait, Config, Message, Network, NetworkError, PathChange, PeerInfo, PeerReason, Plugin,
    PublicKey, Received, RequestError, SendFailure,
};
use gladius_plugins::discovery::{Discovery, DiscoveryHandle};
use gladius_plugins::latency::{LatencyAudit, LatencyHandle};
use gladius_plugins::signed_state::{
    EntryRecord, Rejection, SetError, SignedState, SignedStateHandle,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use crate::config::NodeSettings;
use crate::data_lock::DataDirLock;
use crate::events::{EventSink, StdoutQueue};
use crate::replies::{PendingReplies, ReplyCounters};
use crate::signers::{self, Signers};
use crate::{addr, b64, NodeArgs};

/// Message types of the built-in plugins, not reported as `message` events.
const BUILTIN_PREFIXES: [&str; 4] = ["discovery.", "latency.", "signed_state.", "gossip."];
/// Requests of this type are answered with the same body.
const ECHO_TYPE: &str = "echo";
/// `request` timeout when `timeout_ms` is not given.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for stdout to take the last lines.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests waiting for the driving program's `reply`, shared by the
/// `cli` plugin (which files them) and the commands (which answer them).
type Pending = Arc<Mutex<PendingReplies<Received>>>;
/// Peers' signers, learned by the `cli` plugin, shown by `state`.
type SharedSigners = Arc<Mutex<Signers>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Put `bytes` into `obj` as `key` (UTF-8) or `key_b64` (anything else).
pub(crate) fn put_bytes(obj: &mut Map<String, Value>, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => obj.insert(key.into(), text.into()),
        Err(_) => obj.insert(format!("{key}_b64"), b64::encode(bytes).into()),
    };
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The `cli` plugin: node hooks become events; `echo` requests are
/// answered, other requests wait for the program's `reply`.
struct Events {
    out: EventSink,
    /// Becomes true once `listening` is written, so it is always first.
    ready: watch::Receiver<bool>,
    pending: Pending,
    signers: SharedSigners,
}

impl Events {
    async fn emit(&self, v: Value) {
        let mut ready = self.ready.clone();
        // An error means the node is going away; emitting is moot then.
        if ready.wait_for(|r| *r).await.is_ok() {
            self.out.emit(v).await;
        }
    }
}

#[async_trait]
impl Plugin for Events {
    fn name(&self) -> &str {
        "cli"
    }

    async fn node_added(&self, _net: &Network, addr: SocketAddr) {
        self.emit(json!({"event": "node_added", "addr": addr}))
            .await;
    }

    async fn node_deleted(&self, _net: &Network, addr: SocketAddr, reason: &PeerReason) {
        self.emit(json!({"event": "node_deleted", "addr": addr, "reason": reason.to_string()}))
            .await;
    }

    async fn peer_connected(&self, _net: &Network, peer: &PeerInfo) {
        let signer = signers::signer_of(peer);
        if let (Some(key), Some(signer)) = (peer.public_key, &signer) {
            lock(&self.signers).insert(key.to_string(), signer.clone());
        }
        self.emit(json!({
            "event": "peer_connected",
            "addr": peer.addr,
            "public_key": peer.public_key.map(|k| k.to_string()),
            "signer": signer,
            "writable": peer.writable,
        }))
        .await;
    }

    async fn connect_failed(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        self.emit(json!({"event": "connect_failed", "addr": addr, "reason": reason}))
            .await;
    }

    async fn peer_rejected(&self, _net: &Network, addr: SocketAddr, reason: &str) {
        // A refusal (other encryption mode, pinned key) is a failed connect
        // too, and the one a user most needs to see.
        let reason = format!("rejected: {reason}");
        self.emit(json!({"event": "connect_failed", "addr": addr, "reason": reason}))
            .await;
    }

    async fn peer_disconnected(&self, _net: &Network, addr: SocketAddr, reason: &PeerReason) {
        let reason = reason.to_string();
        self.emit(json!({"event": "peer_disconnected", "addr": addr, "reason": reason}))
            .await;
    }

    async fn path_changed(&self, _net: &Network, change: &PathChange) {
        self.emit(json!({
            "event": "path_changed",
            "public_key": change.public_key.to_string(),
            "old": change.old,
            "new": change.new,
        }))
        .await;
    }

    async fn punch_failed(&self, _net: &Network, addr: SocketAddr, public_key: &PublicKey) {
        self.emit(json!({
            "event": "punch_failed",
            "addr": addr,
            "public_key": public_key.to_string(),
        }))
        .await;
    }

    async fn messages_abandoned(&self, _net: &Network, addr: SocketAddr, count: u64) {
        self.emit(json!({"event": "abandoned", "addr": addr, "messages": count}))
            .await;
    }

    async fn new_message(&self, net: &Network, msg: &Received) {
        let m = msg.message();
        if BUILTIN_PREFIXES.iter().any(|p| m.msg_type().starts_with(p)) {
            return;
        }
        let mut token = None;
        if m.msg_type() == ECHO_TYPE && msg.is_request() {
            if let Ok(answer) = Message::new(ECHO_TYPE, m.body().clone()) {
                if let Err(e) = net.reply(msg, answer).await {
                    tracing::debug!("echo reply to {} failed: {e}", msg.peer());
                }
            }
        } else if msg.is_request() {
            let now = Instant::now();
            token = Some(lock(&self.pending).insert(msg.clone(), m.body().len(), now));
        }
        let mut ev = object(json!({
            "event": "message",
            "from": m.sender().unwrap_or(msg.peer()),
            "type": m.msg_type(),
            "writable": msg.is_writable(),
            "request": msg.is_request(),
        }));
        if let Some(token) = token {
            ev.insert("token".into(), token.into());
        }
        put_bytes(&mut ev, "body", m.body());
        self.emit(Value::Object(ev)).await;
    }
}

/// Commands, as read from stdin (after `id` is taken out).
///
/// A new command is a variant here (its fields are the JSON fields;
/// unknown ones are refused), its arm in [`Ctx::execute`] (the one place
/// commands are carried out, for stdin and HTTP alike) and, when its
/// answer is not a `result` event, a line in [`Cmd::event`]. An HTTP
/// endpoint for it is one route in `http.rs` calling `body_cmd`.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Cmd {
    Broadcast {
        #[serde(rename = "type", default = "chat_type")]
        msg_type: String,
        body: Option<String>,
        body_b64: Option<String>,
    },
    BroadcastTo {
        peers: Vec<String>,
        #[serde(rename = "type", default = "chat_type")]
        msg_type: String,
        body: Option<String>,
        body_b64: Option<String>,
    },
    BroadcastRandomly {
        n: usize,
        #[serde(rename = "type", default = "chat_type")]
        msg_type: String,
        body: Option<String>,
        body_b64: Option<String>,
    },
    /// By address (`addr`), or by static key (`public_key`, with `addr` /
    /// `addrs` as paths to try, if any): see [`Ctx::add_key`].
    Add {
        addr: Option<String>,
        public_key: Option<String>,
        #[serde(default)]
        addrs: Vec<String>,
    },
    Delete {
        addr: String,
    },
    Request {
        to: String,
        #[serde(rename = "type", default = "chat_type")]
        msg_type: String,
        body: Option<String>,
        body_b64: Option<String>,
        timeout_ms: Option<u64>,
    },
    /// Answer a request shown with a `token`.
    Reply {
        to: ReplyTo,
        /// Defaults to the request's type.
        #[serde(rename = "type")]
        msg_type: Option<String>,
        body: Option<String>,
        body_b64: Option<String>,
    },
    State {},
    Set {
        field: String,
        value: Option<String>,
        value_b64: Option<String>,
    },
    SignedState {},
    Close {},
    /// `subscribe`, `unsubscribe`, `publish`, `topics`: parsed by
    /// `gossip_cmd::parse` (see [`parse_cmd`]).
    #[serde(skip)]
    Gossip(crate::gossip_cmd::GossipCmd),
}

/// The token of a request `message` event, as a number or a string of
/// digits.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ReplyTo {
    Number(u64),
    Text(String),
}

impl ReplyTo {
    fn token(&self) -> Result<u64, OpError> {
        match self {
            ReplyTo::Number(n) => Ok(*n),
            ReplyTo::Text(t) => t.trim().parse().map_err(|_| {
                OpError::bad(format!(
                    "`to` must be the `token` of a request message event, not `{t}`"
                ))
            }),
        }
    }
}

fn chat_type() -> String {
    "chat".into()
}

/// The bytes given as `name` (text) or `name_b64` (base64): exactly one.
pub(crate) fn bytes_arg(
    name: &str,
    text: Option<String>,
    b64: Option<String>,
) -> Result<Bytes, String> {
    match (text, b64) {
        (Some(t), None) => Ok(Bytes::from(t)),
        (None, Some(b)) => b64::decode(&b)
            .map(Bytes::from)
            .ok_or_else(|| format!("`{name}_b64` is not valid base64")),
        (Some(_), Some(_)) => Err(format!("give `{name}` or `{name}_b64`, not both")),
        (None, None) => Err(format!("missing field `{name}` (or `{name}_b64`)")),
    }
}

fn message(
    msg_type: String,
    body: Option<String>,
    b64: Option<String>,
) -> Result<Message, OpError> {
    let body = bytes_arg("body", body, b64).map_err(OpError::bad)?;
    Message::new(msg_type, body).map_err(|e| OpError::bad(format!("bad message: {e}")))
}

fn entry_json(r: &EntryRecord) -> Value {
    let mut e = object(json!({
        "signer": r.signer.to_checksum(),
        "field": r.field,
        "timestamp": r.timestamp_ms,
        "message": r.message,
        "signature": r.signature,
    }));
    put_bytes(&mut e, "value", &r.value);
    Value::Object(e)
}

/// Whether a stdin line was meant as JSON (and so is a command, or an
/// error when it is not a valid one) rather than chat text: it opens an
/// object, array or string, or it is a whole JSON value (`42`, `true`,
/// `null`). "2 cats" is chat; `{"cmd":"broadcast"` (cut short) is an
/// error, not a chat broadcast of half a command.
fn looks_like_json(line: &str) -> bool {
    line.starts_with(['{', '[', '"']) || serde_json::from_str::<Value>(line).is_ok()
}

/// What the command loop and the HTTP API work with: both run commands
/// through [`Ctx::execute`].
#[derive(Clone)]
pub(crate) struct Ctx {
    net: Network,
    out: EventSink,
    latency: LatencyHandle,
    signed: SignedStateHandle,
    pending: Pending,
    signers: SharedSigners,
    /// `[signed_state] max_field_len`, for the error naming it.
    max_field_len: usize,
    gossip: crate::gossip_cmd::GossipCtx,
    /// Discovery's records: where a key added without an address may be.
    discovery: DiscoveryHandle,
}

/// What kind of failure an operation had (the HTTP API maps it to a status
/// code; stdin answers only carry the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Invalid JSON, a missing or mistyped field, a bad address or body.
    BadInput,
    /// An unknown peer.
    NotFound,
    /// A request got no reply in time.
    Timeout,
    /// Anything else (the node is closing, a queue is full, …).
    Internal,
}

/// A failed operation.
#[derive(Debug)]
pub(crate) struct OpError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl OpError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        OpError {
            kind: ErrorKind::BadInput,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        OpError {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        OpError {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// A core error, classified by what caused it.
    fn net(e: &NetworkError) -> Self {
        let kind = match e {
            NetworkError::Resolve { .. }
            | NetworkError::SelfAddress(_)
            | NetworkError::MessageTooLarge { .. }
            | NetworkError::HandshakePayloadTooLarge(_) => ErrorKind::BadInput,
            NetworkError::UnknownPeer(_) => ErrorKind::NotFound,
            NetworkError::Timeout(_) => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        };
        OpError {
            kind,
            message: e.to_string(),
        }
    }

    fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// The fields of a successful answer.
pub(crate) type OpResult = Result<Map<String, Value>, OpError>;

/// A command from its JSON object (`cmd` names it; `id` already taken out).
pub(crate) fn parse_cmd(obj: Map<String, Value>) -> Result<Cmd, OpError> {
    let obj = match crate::gossip_cmd::parse(obj) {
        Ok(gossip) => return gossip.map(Cmd::Gossip),
        Err(other) => other,
    };
    serde_json::from_value::<Cmd>(Value::Object(obj))
        .map_err(|e| OpError::bad(format!("bad command: {e}")))
}

/// An answer: `event`, `cmd`, `id`, `ok` and either `error` or the fields.
fn answer(event: &str, cmd: Option<&str>, id: Option<&Value>, result: OpResult) -> Value {
    let mut a = Map::new();
    a.insert("event".into(), event.into());
    if let Some(cmd) = cmd {
        a.insert("cmd".into(), cmd.into());
    }
    if let Some(id) = id {
        a.insert("id".into(), id.clone());
    }
    match result {
        Ok(fields) => {
            a.insert("ok".into(), true.into());
            a.extend(fields);
        }
        Err(error) => {
            a.insert("ok".into(), false.into());
            a.insert("error".into(), error.message.into());
        }
    }
    Value::Object(a)
}

impl Cmd {
    /// The event that answers this command on stdout.
    fn event(&self) -> &'static str {
        match self {
            Cmd::Request { .. } => "reply",
            Cmd::State {} => "state",
            Cmd::SignedState {} => "signed_state",
            _ => "result",
        }
    }
}

impl Ctx {
    async fn emit(&self, v: Value) {
        self.out.emit(v).await;
    }

    /// The event sink (for the HTTP event stream).
    pub(crate) fn events(&self) -> &EventSink {
        &self.out
    }

    /// The network handle.
    pub(crate) fn net(&self) -> &Network {
        &self.net
    }

    /// The latency audit's handle.
    pub(crate) fn latency(&self) -> &LatencyHandle {
        &self.latency
    }

    /// The signed-state handle.
    pub(crate) fn signed(&self) -> &SignedStateHandle {
        &self.signed
    }

    /// Give each peer of a `network_state()` JSON its `signer` (`null`
    /// when it proved none).
    fn add_signers(&self, network: &mut Value) {
        let signers = lock(&self.signers);
        let peers = network.get_mut("peers").and_then(Value::as_array_mut);
        for peer in peers.into_iter().flatten() {
            let signer = peer
                .get("public_key")
                .and_then(Value::as_str)
                .and_then(|k| signers.get(k).cloned());
            if let Value::Object(p) = peer {
                p.insert("signer".into(), signer.into());
            }
        }
    }

    /// What happened to requests waiting for `reply`.
    pub(crate) fn reply_counters(&self) -> ReplyCounters {
        lock(&self.pending).counters(Instant::now())
    }

    /// Handle one stdin line; true when the node should stop.
    async fn handle_line(&self, line: &str) -> bool {
        let line = line.trim();
        if line.is_empty() {
            return false;
        }
        if !looks_like_json(line) {
            let result = self
                .send(Targets::All, message(chat_type(), Some(line.into()), None))
                .await;
            self.emit(answer("result", Some("broadcast"), None, result))
                .await;
            return false;
        }
        let mut obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => {
                let err = Err(OpError::bad(
                    "a command must be a JSON object; to send this line as chat, use \
                     {\"cmd\":\"broadcast\",\"body\":…}",
                ));
                self.emit(answer("result", None, None, err)).await;
                return false;
            }
            Err(e) => {
                let err = Err(OpError::bad(format!("invalid JSON: {e}")));
                self.emit(answer("result", None, None, err)).await;
                return false;
            }
        };
        let id = obj.remove("id");
        let name = obj.get("cmd").and_then(Value::as_str).map(str::to_owned);
        let cmd = match parse_cmd(obj) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.emit(answer("result", name.as_deref(), id.as_ref(), Err(e)))
                    .await;
                return false;
            }
        };
        let event = cmd.event();
        match cmd {
            Cmd::Close {} => {
                self.emit(answer(event, name.as_deref(), id.as_ref(), Ok(Map::new())))
                    .await;
                return true;
            }
            // Started in order, answered whenever the reply comes.
            Cmd::Request { .. } => {
                let ctx = self.clone();
                tokio::spawn(async move {
                    let r = ctx.execute(cmd).await;
                    ctx.emit(answer(event, name.as_deref(), id.as_ref(), r))
                        .await;
                });
            }
            cmd => {
                let r = self.execute(cmd).await;
                self.emit(answer(event, name.as_deref(), id.as_ref(), r))
                    .await;
            }
        }
        false
    }

    /// Run one command and return the fields of its answer. The one place
    /// where commands are carried out, for stdin and HTTP alike; `close`
    /// only answers here (stopping is the caller's business).
    pub(crate) async fn execute(&self, cmd: Cmd) -> OpResult {
        match cmd {
            Cmd::Broadcast {
                msg_type,
                body,
                body_b64,
            } => {
                self.send(Targets::All, message(msg_type, body, body_b64))
                    .await
            }
            Cmd::BroadcastTo {
                peers,
                msg_type,
                body,
                body_b64,
            } => {
                let mut addrs = Vec::with_capacity(peers.len());
                for p in &peers {
                    addrs.push(addr::resolve(p).await.map_err(OpError::bad)?);
                }
                self.send(Targets::These(addrs), message(msg_type, body, body_b64))
                    .await
            }
            Cmd::BroadcastRandomly {
                n,
                msg_type,
                body,
                body_b64,
            } => {
                self.send(Targets::Random(n), message(msg_type, body, body_b64))
                    .await
            }
            Cmd::Add {
                addr,
                public_key: None,
                addrs,
            } => match (addr, addrs.is_empty()) {
                (Some(addr), true) => self.add(&addr).await,
                (None, _) => Err(OpError::bad(
                    "`add` needs `addr` (\"host:port\") or `public_key` (64 hex digits)",
                )),
                (Some(_), false) => Err(OpError::bad(
                    "`addrs` goes with `public_key`; to add by address give `addr` alone",
                )),
            },
            Cmd::Add {
                addr,
                public_key: Some(key),
                addrs,
            } => self.add_key(&key, addr.into_iter().chain(addrs)).await,
            Cmd::Delete { addr } => {
                let a = addr::resolve(&addr).await.map_err(OpError::bad)?;
                // Whether there was anything to delete (delete itself is
                // idempotent).
                let known = self
                    .net
                    .network_state()
                    .await
                    .map_err(|e| OpError::net(&e))?
                    .peer(a)
                    .is_some();
                self.net.delete(a).await.map_err(|e| OpError::net(&e))?;
                Ok(object(json!({ "addr": a, "known": known })))
            }
            Cmd::Request {
                to,
                msg_type,
                body,
                body_b64,
                timeout_ms,
            } => {
                let msg = message(msg_type, body, body_b64)?;
                let peer = addr::resolve(&to).await.map_err(OpError::bad)?;
                let timeout = timeout_ms.map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis);
                let got = self
                    .net
                    .request(msg, peer, timeout)
                    .await
                    .map_err(|e| request_error(&e, peer))?;
                let m = got.message();
                let mut fields = object(json!({
                    "from": m.sender().unwrap_or(got.peer()),
                    "type": m.msg_type(),
                }));
                put_bytes(&mut fields, "body", m.body());
                Ok(fields)
            }
            Cmd::Reply {
                to,
                msg_type,
                body,
                body_b64,
            } => {
                let token = to.token()?;
                let body = bytes_arg("body", body, body_b64).map_err(OpError::bad)?;
                let request = lock(&self.pending)
                    .take(token, Instant::now())
                    .map_err(|e| OpError::not_found(e.to_string()))?;
                let msg_type = msg_type.unwrap_or_else(|| request.message().msg_type().into());
                let msg = Message::new(msg_type, body)
                    .map_err(|e| OpError::bad(format!("bad message: {e}")))?;
                let report = self
                    .net
                    .reply(&request, msg)
                    .await
                    .map_err(|e| OpError::net(&e))?;
                let mut fields = object(json!(report));
                fields.insert("to".into(), request.peer().to_string().into());
                Ok(fields)
            }
            Cmd::State {} => {
                let state = self
                    .net
                    .network_state()
                    .await
                    .map_err(|e| OpError::net(&e))?;
                let mut network = json!(state);
                self.add_signers(&mut network);
                let mut fields = json!({
                    "network": network,
                    "latency": self.latency.snapshot(),
                    "eth_address": self.signed.address().to_checksum(),
                    "replies": self.reply_counters(),
                    "gossip": self.gossip.snapshot(),
                });
                crate::durations::to_ms(&mut fields);
                Ok(object(fields))
            }
            Cmd::Set {
                field,
                value,
                value_b64,
            } => {
                let v = bytes_arg("value", value, value_b64).map_err(OpError::bad)?;
                match self.signed.set(&field, v).await {
                    Ok(rec) => Ok(object(json!({ "entry": entry_json(&rec) }))),
                    Err(SetError::Rejected(Rejection::InvalidField)) => Err(OpError::bad(format!(
                        "invalid field name `{field}`: 1 to {} bytes of printable ASCII \
                         (`!` to `~`: letters, digits, punctuation; no spaces)",
                        self.max_field_len
                    ))),
                    Err(e @ SetError::Rejected(_)) => Err(OpError::bad(e.to_string())),
                    Err(e) => Err(OpError::internal(e.to_string())),
                }
            }
            Cmd::SignedState {} => {
                let entries: Vec<Value> = self.signed.entries().iter().map(entry_json).collect();
                Ok(object(json!({ "entries": entries })))
            }
            Cmd::Close {} => Ok(Map::new()),
            Cmd::Gossip(cmd) => self.gossip.execute(cmd).await,
        }
    }

    /// `add`, with a typo named before the core tries to resolve it.
    async fn add(&self, peer: &str) -> OpResult {
        if let Some(why) = addr::problem(peer) {
            return Err(OpError::bad(addr::explain(peer, &why)));
        }
        match self.net.add(peer.trim()).await {
            Ok(a) => Ok(object(json!({ "addr": a }))),
            Err(e) => Err(OpError::net(&e).context(&format!("cannot add `{peer}`"))),
        }
    }

    /// Add a peer by its static key (encrypted mode): `hints` are
    /// addresses to dial; with none, the addresses discovery's records
    /// give for the key (the address it is known at and the reflexive
    /// addresses it reported), and then whatever the library finds itself
    /// (see `Network::add_key`). Answers with the key and the address
    /// dialled.
    async fn add_key(&self, key: &str, hints: impl Iterator<Item = String>) -> OpResult {
        let parsed: PublicKey = key
            .trim()
            .parse()
            .map_err(|e| OpError::bad(format!("bad `public_key` `{key}`: {e}")))?;
        let mut addrs = Vec::new();
        for h in hints {
            if let Some(why) = addr::problem(&h) {
                return Err(OpError::bad(addr::explain(&h, &why)));
            }
            addrs.push(addr::resolve(&h).await.map_err(OpError::bad)?);
        }
        if addrs.is_empty() {
            addrs = self.discovery.addrs_of(&parsed);
        }
        match self.net.add_key(parsed, addrs).await {
            Ok(a) => Ok(object(
                json!({ "addr": a, "public_key": parsed.to_string() }),
            )),
            Err(e) => Err(OpError::net(&e).context(&format!("cannot add key `{parsed}`"))),
        }
    }

    async fn send(&self, targets: Targets, msg: Result<Message, OpError>) -> OpResult {
        let msg = msg?;
        let report = match targets {
            Targets::All => self.net.broadcast(msg).await,
            Targets::These(peers) => self.net.broadcast_to(msg, &peers).await,
            Targets::Random(n) => self.net.broadcast_randomly(msg, n).await,
        }
        .map_err(|e| OpError::net(&e))?;
        Ok(object(json!(report)))
    }
}

/// A request failure: no reply in time is a timeout, a peer that is neither
/// connected nor in the route table is not found.
fn request_error(e: &RequestError, peer: SocketAddr) -> OpError {
    match e {
        RequestError::Timeout(_) => OpError {
            kind: ErrorKind::Timeout,
            message: e.to_string(),
        },
        RequestError::NotSent(SendFailure::NotConnected) => {
            OpError::not_found(format!("unknown peer {peer}: {e}"))
        }
        RequestError::Network(n) => OpError::net(n),
        _ => OpError::internal(e.to_string()),
    }
}

enum Targets {
    All,
    These(Vec<SocketAddr>),
    Random(usize),
}

/// Write events to stdout, one JSON object per line, until told to stop.
async fn write_stdout(queue: StdoutQueue) {
    crate::events::write_lines(queue, tokio::io::stdout()).await;
}

/// Read stdin lines on a plain thread (a blocking read must not hold the
/// runtime's shutdown); invalid UTF-8 is replaced, not fatal.
fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("reading stdin: {e}");
                    break;
                }
            }
        }
    });
    rx
}

async fn command_loop(ctx: &Ctx, mut lines: mpsc::Receiver<String>) {
    while let Some(line) = lines.recv().await {
        if ctx.handle_line(&line).await {
            return;
        }
    }
    tracing::info!("end of stdin; running until close, SIGINT or SIGTERM");
    std::future::pending::<()>().await;
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => "SIGINT",
            () = term => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "ctrl-c"
    }
}

/// Run `gladius node` until `close` or a signal.
pub(crate) async fn run(args: NodeArgs) -> Result<(), String> {
    let args = NodeSettings::resolve(args)?;
    let dir = crate::data_dir(args.data_dir.as_deref())?;
    // Held until the process ends: one node per identity.
    let _lock = DataDirLock::acquire(&dir)?;
    let keys = crate::load_keys(dir)?;
    let keys_dir = keys.dir.clone();
    let public_key = (!args.insecure).then(|| keys.identity.public_key().to_string());
    if args.relay && args.insecure {
        return Err("--relay needs encryption: relayed sessions are sealed end to end, which --insecure turns off".into());
    }
    let mut config = Config::default()
        .with_plaintext(args.insecure)
        .with_relay(args.relay)
        .with_cipher(args.cipher.cipher());
    if let Some(bytes) = args.socket_buffer_bytes {
        config = config.with_socket_buffer_bytes(bytes);
    }
    #[cfg(feature = "relay-faults")]
    if let Some((corrupt, drop)) = args.relay_faults {
        config = config.with_relay_faults(corrupt, drop);
    }
    if !args.insecure {
        let proof = signers::handshake_payload(&keys.eth, &keys.identity.public_key())?;
        config = config.with_handshake_payload(proof);
    }
    let config = config.with_identity(keys.identity);
    let net = Network::new(config).map_err(|e| format!("bad configuration: {e}"))?;

    let (out, out_rx) = EventSink::new();
    let writer = tokio::spawn(write_stdout(out_rx));
    let (ready_tx, ready) = watch::channel(false);
    let pending = Pending::default();
    let signers = SharedSigners::default();
    let failed = |e: gladius_p2p::NetworkError| format!("cannot register a plugin: {e}");
    net.register_plugin(Events {
        out: out.clone(),
        ready,
        pending: pending.clone(),
        signers: signers.clone(),
    })
    .await
    .map_err(failed)?;
    let (discovery, discovery_handle) = Discovery::new(args.discovery);
    net.register_plugin(discovery).await.map_err(failed)?;
    let (latency_plugin, latency) =
        LatencyAudit::new(args.latency).map_err(|e| format!("[latency]: {e}"))?;
    net.register_plugin(latency_plugin).await.map_err(failed)?;
    let eth_address = keys.eth.address().to_checksum();
    let max_field_len = args.signed_state.max_field_len;
    let (signed_plugin, signed) = SignedState::new(keys.eth, args.signed_state);
    net.register_plugin(signed_plugin).await.map_err(failed)?;
    let gossip = crate::gossip_cmd::register(&net, &keys.dir, args.gossip, out.clone()).await?;

    let addr = net
        .listen(args.listen.as_str())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let api = match &args.api {
        Some(api) => Some(crate::http::bind(api, &keys_dir, args.api_no_auth).await?),
        None => None,
    };
    let mut listening = object(json!({
        "event": "listening",
        "addr": addr,
        "public_key": public_key,
        "eth_address": eth_address,
    }));
    if let Some(bound) = &api {
        listening.extend(bound.listening_fields());
    }
    out.emit(Value::Object(listening)).await;
    let _ = ready_tx.send(true);

    let ctx = Ctx {
        net: net.clone(),
        out: out.clone(),
        latency,
        signed,
        pending,
        signers,
        max_field_len,
        gossip,
        discovery: discovery_handle,
    };
    let server = api.map(|bound| tokio::spawn(crate::http::serve(bound, ctx.clone())));
    for peer in &args.peers {
        let mut a = answer("result", Some("add"), None, ctx.add(peer).await);
        // Tells these answers from those to the program's own `add`s.
        a["source"] = "--peer".into();
        ctx.emit(a).await;
    }

    let why = tokio::select! {
        () = command_loop(&ctx, spawn_stdin_reader()) => "close",
        why = shutdown_signal() => why,
    };
    tracing::info!("shutting down ({why})");
    if let Some(server) = server {
        server.abort();
    }
    let closed = net.close().await;
    drop(ctx);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
        out.finish().await;
        let _ = writer.await;
    })
    .await;
    closed.map_err(|e| format!("closing: {e}"))
}
