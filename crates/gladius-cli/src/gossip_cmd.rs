//! The daemon's gossip: the plugin on the node, the `subscribe`,
//! `unsubscribe` and `publish` commands (stdin and HTTP), and a `gossip`
//! event on stdout for every message delivered.
//!
//! ```text
//! {"cmd":"subscribe","topic":"t"}              -> result {"topic":"t","subscribed":true}
//! {"cmd":"unsubscribe","topic":"t"}            -> result {"topic":"t","was_subscribed":true}
//! {"cmd":"publish","topic":"t","body":"…"}     -> result {"topic":"t","message_id":"<hex>"}   (or body_b64)
//! {"event":"gossip","topic":"t","origin":"<key hex>","id":"<hex>","body":"…"|"body_b64":"…","hops":H}
//! POST /api/topics/{t}/subscribe, POST /api/topics/{t}/unsubscribe,
//! POST /api/topics/{t}/publish {"body":"…"}, GET /api/topics
//! ```
//!
//! The node's gossip key (Ed25519) lives in `gossip.key` in the data
//! directory, created on first start.
//!
//! The publish answer names the message's id `message_id`, not `id`:
//! answers already use `id` to echo the command's own `id`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes as BodyBytes;
use axum::extract::{FromRef, Path as UrlPath, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use gladius_p2p::Network;
use gladius_plugins::gossip::{Gossip, GossipConfig, GossipHandle, GossipKey, GossipMessage};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::events::EventSink;
use crate::node::{bytes_arg, parse_cmd, put_bytes, Cmd, Ctx, OpError, OpResult};

/// File name of the gossip key in the data directory.
pub(crate) const GOSSIP_KEY_FILE: &str = "gossip.key";

/// The gossip commands (part of the stdin command set, see [`Cmd`]).
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum GossipCmd {
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        topic: String,
        body: Option<String>,
        body_b64: Option<String>,
    },
    Topics {},
}

/// The names of [`GossipCmd`]'s commands.
const COMMANDS: [&str; 4] = ["subscribe", "unsubscribe", "publish", "topics"];

/// A gossip command, or `Err(obj)` back when `cmd` names another command.
pub(crate) fn parse(
    obj: Map<String, Value>,
) -> Result<Result<GossipCmd, OpError>, Map<String, Value>> {
    let ours = obj
        .get("cmd")
        .and_then(Value::as_str)
        .is_some_and(|c| COMMANDS.contains(&c));
    if !ours {
        return Err(obj);
    }
    Ok(serde_json::from_value::<GossipCmd>(Value::Object(obj))
        .map_err(|e| OpError::bad(format!("bad command: {e}"))))
}

/// The daemon's gossip: the handle and one forwarding task per topic.
#[derive(Clone)]
pub(crate) struct GossipCtx {
    handle: GossipHandle,
    out: EventSink,
    forwarders: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
}

/// Register the gossip plugin on `net` with `config` (the `[gossip]`
/// section), publishing with the key in `dir`.
pub(crate) async fn register(
    net: &Network,
    dir: &Path,
    config: GossipConfig,
    out: EventSink,
) -> Result<GossipCtx, String> {
    let path = dir.join(GOSSIP_KEY_FILE);
    let key = GossipKey::load_or_generate(&path).map_err(|e| format!("gossip key: {e}"))?;
    let (plugin, handle) = Gossip::new(key, config);
    net.register_plugin(plugin)
        .await
        .map_err(|e| format!("cannot register a plugin: {e}"))?;
    Ok(GossipCtx {
        handle,
        out,
        forwarders: Arc::new(Mutex::new(HashMap::new())),
    })
}

/// A delivery as a stdout event.
fn event(m: &GossipMessage) -> Value {
    let mut ev = Map::new();
    ev.insert("event".into(), "gossip".into());
    ev.insert("topic".into(), m.topic.as_str().into());
    ev.insert("origin".into(), m.origin.to_string().into());
    ev.insert("id".into(), m.id.to_string().into());
    put_bytes(&mut ev, "body", &m.body);
    ev.insert("hops".into(), m.hops.into());
    Value::Object(ev)
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl GossipCtx {
    fn forwarders(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.forwarders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topics with their tree neighbour counts, and the counters.
    pub(crate) fn snapshot(&self) -> Value {
        json!({
            "origin": self.handle.origin().to_string(),
            "topics": self.handle.topics(),
            "stats": self.handle.stats(),
        })
    }

    /// Run one gossip command.
    pub(crate) async fn execute(&self, cmd: GossipCmd) -> OpResult {
        let bad = |e: gladius_plugins::gossip::GossipError| OpError::bad(e.to_string());
        match cmd {
            GossipCmd::Subscribe { topic } => {
                if self.forwarders().contains_key(&topic) {
                    return Ok(fields(json!({"topic": topic, "subscribed": false})));
                }
                let mut sub = self.handle.subscribe(&topic).await.map_err(bad)?;
                let out = self.out.clone();
                let task = tokio::spawn(async move {
                    // Ends when the topic is left or the node closes.
                    while let Some(m) = sub.recv().await {
                        out.emit(event(&m)).await;
                    }
                });
                if let Some(old) = self.forwarders().insert(topic.clone(), task) {
                    old.abort();
                }
                Ok(fields(json!({"topic": topic, "subscribed": true})))
            }
            GossipCmd::Unsubscribe { topic } => {
                let was = self.handle.unsubscribe(&topic).await.map_err(bad)?;
                if let Some(task) = self.forwarders().remove(&topic) {
                    task.abort();
                }
                Ok(fields(json!({"topic": topic, "was_subscribed": was})))
            }
            GossipCmd::Publish {
                topic,
                body,
                body_b64,
            } => {
                let body = bytes_arg("body", body, body_b64).map_err(OpError::bad)?;
                let id = self.handle.publish(&topic, body).await.map_err(bad)?;
                Ok(fields(
                    json!({"topic": topic, "message_id": id.to_string()}),
                ))
            }
            GossipCmd::Topics {} => Ok(fields(self.snapshot())),
        }
    }
}

/// The HTTP routes, merged into the API's router (any state the
/// operations can be taken from).
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Ctx: FromRef<S>,
{
    Router::new()
        .route("/api/topics", get(topics))
        .route("/api/topics/{topic}/subscribe", post(subscribe))
        .route("/api/topics/{topic}/unsubscribe", post(unsubscribe))
        .route("/api/topics/{topic}/publish", post(publish))
}

async fn run(ctx: &Ctx, cmd: GossipCmd) -> Response {
    crate::http::respond(ctx.execute(Cmd::Gossip(cmd)).await)
}

async fn topics(State(ctx): State<Ctx>) -> Response {
    run(&ctx, GossipCmd::Topics {}).await
}

async fn subscribe(State(ctx): State<Ctx>, UrlPath(topic): UrlPath<String>) -> Response {
    run(&ctx, GossipCmd::Subscribe { topic }).await
}

async fn unsubscribe(State(ctx): State<Ctx>, UrlPath(topic): UrlPath<String>) -> Response {
    run(&ctx, GossipCmd::Unsubscribe { topic }).await
}

/// The body is `{"body":"…"}` or `{"body_b64":"…"}`.
async fn publish(
    State(ctx): State<Ctx>,
    UrlPath(topic): UrlPath<String>,
    body: BodyBytes,
) -> Response {
    let cmd = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut obj)) => {
            if obj.contains_key("cmd") || obj.contains_key("topic") {
                Err(OpError::bad("`cmd` and `topic` are given by the URL"))
            } else {
                obj.insert("cmd".into(), "publish".into());
                obj.insert("topic".into(), topic.into());
                parse_cmd(obj)
            }
        }
        Ok(_) => Err(OpError::bad("the body must be a JSON object")),
        Err(e) => Err(OpError::bad(format!("invalid JSON: {e}"))),
    };
    match cmd {
        Ok(cmd) => crate::http::respond(ctx.execute(cmd).await),
        Err(e) => crate::http::respond(Err(e)),
    }
}
