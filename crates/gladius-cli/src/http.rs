//! `gladius node --api HOST:PORT`: the HTTP API (JSON), the event stream
//! (`/api/events`, Server-Sent Events), Prometheus metrics (`/metrics`) and
//! the status page at `/`. Every command endpoint runs a [`Cmd`] through
//! [`Ctx::execute`], the same operation layer as the stdin commands.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::events::Item;
use crate::history::{self, History};
use crate::node::{parse_cmd, Cmd, Ctx, ErrorKind, OpError, OpResult};
use crate::{counter_help, metrics};

/// The status page: plain HTML and vanilla JS, no external resources. The
/// counters' explanations are filled in from [`counter_help`], so the page
/// and `/metrics` say the same.
static STATUS_PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("status.html").replace("/*COUNTER_HELP*/{}", &counter_help::as_json().to_string())
});

/// A comment line on an idle event stream this often, so that proxies and
/// clients can tell a quiet node from a dead connection.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// Bind the API's TCP listener; also returns its `http://HOST:PORT` URL
/// (with port 0 resolved to the bound port).
pub(crate) async fn bind(addr: &str) -> Result<(TcpListener, String), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on --api {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--api {addr}: {e}"))?;
    Ok((listener, format!("http://{local}")))
}

/// What the handlers share: the operations, and the charts' history.
#[derive(Clone)]
struct Api {
    ctx: Ctx,
    history: Arc<Mutex<History>>,
}

impl FromRef<Api> for Ctx {
    fn from_ref(api: &Api) -> Ctx {
        api.ctx.clone()
    }
}

/// Serve the API (and sample the history) until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, ctx: Ctx) {
    let api = Api {
        ctx,
        history: Arc::default(),
    };
    tokio::select! {
        r = axum::serve(listener, router(api.clone())) => {
            if let Err(e) = r {
                tracing::warn!("HTTP API stopped: {e}");
            }
        }
        () = sample_history(api) => {}
    }
}

/// Add a point to the history every [`history::SAMPLE_INTERVAL`].
async fn sample_history(api: Api) {
    let mut tick = tokio::time::interval(history::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(net) = api.ctx.net().network_state().await else {
            return; // the node is closing
        };
        let latency = api.ctx.latency().snapshot();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        lock(&api.history).push(now_ms, &net, &latency);
    }
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/api/state", get(state))
        .route("/api/peers", get(peers).post(add_peer))
        .route("/api/peers/{addr}", delete(delete_peer))
        .route("/api/signed-state", get(signed_state).post(set_field))
        .route("/api/broadcast", axum::routing::post(broadcast))
        .route("/api/request", axum::routing::post(request))
        .route("/api/reply", axum::routing::post(reply))
        .route("/api/events", get(events))
        .route("/api/history", get(history))
        .route("/metrics", get(metrics))
        .merge(crate::gossip_cmd::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .with_state(api)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"ok": false, "error": message});
    (status, Json(body)).into_response()
}

/// `{"ok":true,…fields}` with 200, or `{"ok":false,"error":…}` with the
/// status code of the error's kind.
pub(crate) fn respond(result: OpResult) -> Response {
    match result {
        Ok(fields) => {
            let mut body = Map::new();
            body.insert("ok".into(), true.into());
            body.extend(fields);
            (StatusCode::OK, Json(Value::Object(body))).into_response()
        }
        Err(e) => {
            let status = match e.kind {
                ErrorKind::BadInput => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.message)
        }
    }
}

/// A JSON object body, as the command `cmd` (its fields as on stdin).
fn body_cmd(body: &[u8], cmd: &str) -> Result<Cmd, OpError> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(OpError::bad("the body must be a JSON object")),
        Err(e) => return Err(OpError::bad(format!("invalid JSON: {e}"))),
    };
    if obj.contains_key("cmd") {
        return Err(OpError::bad("`cmd` is given by the endpoint, not the body"));
    }
    obj.insert("cmd".into(), cmd.into());
    parse_cmd(obj)
}

async fn run(ctx: &Ctx, cmd: Result<Cmd, OpError>) -> Response {
    match cmd {
        Ok(cmd) => respond(ctx.execute(cmd).await),
        Err(e) => respond(Err(e)),
    }
}

async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STATUS_PAGE.as_str(),
    )
        .into_response()
}

async fn state(State(ctx): State<Ctx>) -> Response {
    run(&ctx, Ok(Cmd::State {})).await
}

/// The `peers` of the network state.
async fn peers(State(ctx): State<Ctx>) -> Response {
    respond(ctx.execute(Cmd::State {}).await.map(|mut fields| {
        let peers = fields
            .get_mut("network")
            .and_then(|n| n.get_mut("peers"))
            .map(Value::take)
            .unwrap_or_default();
        let mut out = Map::new();
        out.insert("peers".into(), peers);
        out
    }))
}

async fn signed_state(State(ctx): State<Ctx>) -> Response {
    run(&ctx, Ok(Cmd::SignedState {})).await
}

async fn add_peer(State(ctx): State<Ctx>, body: Bytes) -> Response {
    run(&ctx, body_cmd(&body, "add")).await
}

/// Deleting a peer the node does not know is a 404 (nothing was there;
/// the stdin `delete` answers `ok` with `"known":false` instead).
async fn delete_peer(State(ctx): State<Ctx>, Path(addr): Path<String>) -> Response {
    respond(
        ctx.execute(Cmd::Delete { addr })
            .await
            .and_then(|fields| match fields.get("known") {
                Some(Value::Bool(false)) => Err(OpError::not_found(format!(
                    "unknown peer {}",
                    fields.get("addr").and_then(Value::as_str).unwrap_or("?")
                ))),
                _ => Ok(fields),
            }),
    )
}

async fn set_field(State(ctx): State<Ctx>, body: Bytes) -> Response {
    run(&ctx, body_cmd(&body, "set")).await
}

/// `peers` makes it `broadcast_to`, `n` makes it `broadcast_randomly`.
async fn broadcast(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let which = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(obj)) if obj.contains_key("peers") => "broadcast_to",
        Ok(Value::Object(obj)) if obj.contains_key("n") => "broadcast_randomly",
        _ => "broadcast",
    };
    run(&ctx, body_cmd(&body, which)).await
}

async fn request(State(ctx): State<Ctx>, body: Bytes) -> Response {
    run(&ctx, body_cmd(&body, "request")).await
}

/// Answer a request seen (with its `token`) on `/api/events` or stdout.
async fn reply(State(ctx): State<Ctx>, body: Bytes) -> Response {
    run(&ctx, body_cmd(&body, "reply")).await
}

/// `GET /api/events[?types=a,b]`: every event written to stdout from now
/// on (or those named in `types`) as Server-Sent Events: `data:` is the
/// JSON line. A client that falls more than
/// [`STREAM_QUEUE`](crate::events::STREAM_QUEUE) events behind gets
/// `event: end` with `{"event":"end","reason":"too_slow","missed":N,…}`
/// and the stream closes.
async fn events(State(ctx): State<Ctx>, Query(query): Query<HashMap<String, String>>) -> Response {
    if let Some(k) = query.keys().find(|k| k.as_str() != "types") {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown query parameter `{k}` (only `types`)"),
        );
    }
    let types = match query.get("types") {
        None => None,
        Some(t) => {
            let names: Vec<String> = t
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`types` names no event (e.g. types=message,peer_connected)",
                );
            }
            Some(names)
        }
    };
    let stream = ctx.events().subscribe(types).map(|item| {
        Ok::<_, Infallible>(match item {
            Item::Event(ev) => SseEvent::default().data(ev.json.as_str()),
            Item::End(end) => SseEvent::default()
                .event("end")
                .data(end.to_json().to_string()),
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(STREAM_KEEPALIVE))
        .into_response()
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(ctx): State<Ctx>) -> Response {
    let network = match ctx.net().network_state().await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let snapshot = metrics::Snapshot {
        network,
        latency: ctx.latency().snapshot(),
        signed_entries: ctx.signed().len(),
        signed_stats: ctx.signed().stats(),
        replies: ctx.reply_counters(),
        stream_clients: ctx.events().stream_clients(),
        rss_bytes: metrics::rss_bytes(),
    };
    (
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics::render(&snapshot),
    )
        .into_response()
}

/// `GET /api/history`: the last minutes' rates and RTTs (see
/// [`History::to_json`]).
async fn history(State(api): State<Api>) -> Response {
    let mut body = Map::new();
    body.insert("ok".into(), true.into());
    if let Value::Object(h) = lock(&api.history).to_json() {
        body.extend(h);
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(Value::Object(body)),
    )
        .into_response()
}
