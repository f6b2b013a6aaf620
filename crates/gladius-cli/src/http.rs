//! `gladius node --api HOST:PORT`: the HTTP API (JSON), the event stream
//! (`/api/events`, Server-Sent Events), Prometheus metrics (`/metrics`) and
//! the status page at `/`. Every command endpoint runs a [`Cmd`] through
//! [`Ctx::execute`], the same operation layer as the stdin commands.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{self, FromRef, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api_guard::{self, Guard, Refusal};
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

/// The API's listener, bound, with the checks its requests pass.
pub(crate) struct Bound {
    listener: TcpListener,
    guard: Guard,
    url: String,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("url", &self.url).finish()
    }
}

impl Bound {
    /// The `listening` event's fields: `api` (`http://HOST:PORT`, port 0
    /// resolved), and unless `--api-no-auth`, `api_token` and
    /// `status_url` (the status page with the token in its fragment).
    pub(crate) fn listening_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("api".into(), self.url.as_str().into());
        if let Some(token) = self.guard.token() {
            fields.insert("api_token".into(), token.into());
            fields.insert(
                "status_url".into(),
                format!("{}/#token={token}", self.url).into(),
            );
        }
        fields
    }
}

/// Bind the API's TCP listener on `addr`, with the token of data
/// directory `data_dir` (`no_auth`: none, allowed on loopback only).
pub(crate) async fn bind(addr: &str, data_dir: &Path, no_auth: bool) -> Result<Bound, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on --api {addr}: {e}"))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("--api {addr}: {e}"))?;
    let token = if no_auth {
        if !local.ip().is_loopback() {
            return Err(format!(
                "--api-no-auth is only allowed on a loopback --api address, not {local}"
            ));
        }
        tracing::warn!("--api-no-auth: any local program or web page may drive this node");
        None
    } else {
        Some(api_guard::load_or_create_token(data_dir)?)
    };
    Ok(Bound {
        listener,
        guard: Guard::new(local, token),
        url: format!("http://{local}"),
    })
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

/// Connections refused because [`api_guard::MAX_CONNECTIONS`] were open.
static REFUSED_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Serve the API (and sample the history) until the task is aborted.
pub(crate) async fn serve(bound: Bound, ctx: Ctx) {
    let api = Api {
        ctx,
        history: Arc::default(),
    };
    let app = router(api.clone(), Arc::new(bound.guard));
    tokio::select! {
        () = accept_loop(bound.listener, app) => {}
        () = sample_history(api) => {}
    }
}

/// Accept connections, at most [`api_guard::MAX_CONNECTIONS`] at once
/// (more are closed at once and counted), each given
/// [`api_guard::HEADER_TIMEOUT`] to send each request's head.
async fn accept_loop(listener: TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(api_guard::MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::warn!("HTTP API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let n = REFUSED_CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    "HTTP API: {n} connections refused (limit {})",
                    api_guard::MAX_CONNECTIONS
                );
            }
            continue; // dropping `stream` closes it
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(api_guard::HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("HTTP API connection: {e}");
            }
        });
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

/// Every request passes the [`Guard`], then its body is read within
/// [`api_guard::BODY_TIMEOUT`] and [`api_guard::MAX_BODY`] bytes.
async fn guarded(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Err(r) = guard.check(req.method(), req.uri().path(), req.headers()) {
        return refuse(&r);
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, api_guard::MAX_BODY);
    let body = match tokio::time::timeout(api_guard::BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is over {} bytes", api_guard::MAX_BODY),
            )
        }
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn refuse(r: &Refusal) -> Response {
    let mut resp = error(r.status, &r.message);
    if r.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

fn router(api: Api, guard: Arc<Guard>) -> Router {
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
        .layer(axum::middleware::from_fn_with_state(guard, guarded))
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

/// Why a body is not a command: a bad command, or a refused size.
enum BodyError {
    Op(OpError),
    Refused(Refusal),
}

/// A JSON object body, as the command `cmd` (its fields as on stdin).
fn body_cmd(body: &[u8], cmd: &str) -> Result<Cmd, BodyError> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            return Err(BodyError::Op(OpError::bad(
                "the body must be a JSON object",
            )))
        }
        Err(e) => return Err(BodyError::Op(OpError::bad(format!("invalid JSON: {e}")))),
    };
    api_guard::check_lists(&obj).map_err(BodyError::Refused)?;
    if obj.contains_key("cmd") {
        return Err(BodyError::Op(OpError::bad(
            "`cmd` is given by the endpoint, not the body",
        )));
    }
    obj.insert("cmd".into(), cmd.into());
    parse_cmd(obj).map_err(BodyError::Op)
}

async fn run(ctx: &Ctx, cmd: Result<Cmd, BodyError>) -> Response {
    match cmd {
        Ok(cmd) => respond(ctx.execute(cmd).await),
        Err(BodyError::Op(e)) => respond(Err(e)),
        Err(BodyError::Refused(r)) => refuse(&r),
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
async fn delete_peer(
    State(ctx): State<Ctx>,
    extract::Path(addr): extract::Path<String>,
) -> Response {
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
        api_connections_refused: REFUSED_CONNECTIONS.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any body, for any endpoint's command, is a command or an
        /// error: never a panic, and never a list past the limit.
        #[test]
        fn arbitrary_bodies_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            which in 0..7usize,
        ) {
            let cmd = ["add", "set", "broadcast", "broadcast_to", "broadcast_randomly", "request", "reply"][which];
            let _ = body_cmd(&body, cmd);
        }

        /// JSON objects with fields of any type and lists of any length.
        #[test]
        fn arbitrary_json_commands_never_panic(
            peers in 0..2000usize,
            n in any::<i64>(),
            text in ".{0,32}",
            which in 0..7usize,
        ) {
            let cmd = ["add", "set", "broadcast", "broadcast_to", "broadcast_randomly", "request", "reply"][which];
            let body = serde_json::json!({
                "peers": vec![text.clone(); peers],
                "n": n, "addr": text, "to": n, "field": "f", "body": "b", "type": "t",
            });
            let r = body_cmd(body.to_string().as_bytes(), cmd);
            if peers > api_guard::MAX_LIST {
                prop_assert!(matches!(r, Err(BodyError::Refused(_))));
            }
        }
    }
}
