//! `gladius node --api HOST:PORT`: the HTTP API (JSON) and the status page
//! at `/`. Every endpoint runs a [`Cmd`] through [`Ctx::execute`], the same
//! operation layer as the stdin commands.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::node::{parse_cmd, Cmd, Ctx, ErrorKind, OpError, OpResult};

/// The status page: plain HTML and vanilla JS, no external resources.
const STATUS_PAGE: &str = include_str!("status.html");

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

/// Serve the API until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, ctx: Ctx) {
    if let Err(e) = axum::serve(listener, router(ctx)).await {
        tracing::warn!("HTTP API stopped: {e}");
    }
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/api/state", get(state))
        .route("/api/peers", get(peers).post(add_peer))
        .route("/api/peers/{addr}", delete(delete_peer))
        .route("/api/signed-state", get(signed_state).post(set_field))
        .route("/api/broadcast", axum::routing::post(broadcast))
        .route("/api/request", axum::routing::post(request))
        .merge(crate::gossip_cmd::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .with_state(ctx)
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
        STATUS_PAGE,
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
