//! Who may use the HTTP API, and how much one request may ask for.
//!
//! A web page the operator visits can send requests to `127.0.0.1` (or,
//! by DNS rebinding, read the answers). So every request is checked
//! before a handler runs:
//!
//! - `Host` must name the bound address (an IP literal with the bound
//!   port, or `localhost` when bound to loopback): a rebound domain name
//!   such as `evil.example` is refused (403);
//! - `Origin`, when present, must be `http://` + such a host (403);
//! - `/api/*` and `/metrics` need `Authorization: Bearer <token>` (401),
//!   the token kept in the data directory ([`TOKEN_FILE`], mode 0600, the
//!   same across restarts) and printed in the `listening` event; the
//!   status page takes it from its URL's fragment, never from a cookie;
//! - a `POST` must say `Content-Type: application/json` (415), which no
//!   cross-origin form or "simple" request can do without a CORS
//!   preflight this server never grants;
//! - lists in a body hold at most [`MAX_LIST`] items (413).
//!
//! `--api-no-auth` drops the token (loopback binds only); the other checks
//! stay.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use axum::http::{header, HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

/// File in the data directory holding the API's bearer token.
pub(crate) const TOKEN_FILE: &str = "api_token";
/// Connections served at once; more are closed on accept. Well under the
/// usual 1,024-descriptor limit, so the node's own sockets never starve.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// Time a connection has to send a request's complete head (also an idle
/// keep-alive connection's lifetime between requests).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request has to send its complete body.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (2 MiB).
pub(crate) const MAX_BODY: usize = 2 << 20;
/// Most items in one list of a request body (e.g. `peers` of a broadcast).
pub(crate) const MAX_LIST: usize = 1024;

/// Why a request is refused, as its status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The checks every request passes: bound address and token.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    bound: SocketAddr,
    token: Option<String>,
}

impl Guard {
    /// Checks for an API bound to `bound`, with `token` required (`None`:
    /// `--api-no-auth`).
    pub(crate) fn new(bound: SocketAddr, token: Option<String>) -> Self {
        Guard { bound, token }
    }

    /// The token requests must carry, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether `host` (a `Host` header value, or an origin without its
    /// scheme) names this server.
    fn host_ok(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host) else {
            return false;
        };
        if port != self.bound.port() {
            return false;
        }
        let bound = self.bound.ip();
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                bound.is_unspecified() || ip == bound || (bound.is_loopback() && ip.is_loopback())
            }
            // Names: only `localhost`, and only on loopback or any-address
            // binds (any other name may be rebound by its owner).
            Err(_) => {
                name.eq_ignore_ascii_case("localhost")
                    && (bound.is_loopback() || bound.is_unspecified())
            }
        }
    }

    /// Check a request's head: `Ok` lets it through.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or(""));
        match text(header::HOST) {
            Some(h) if self.host_ok(h) => {}
            Some(h) => {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("Host `{h}` is not this server (DNS rebinding?)"),
                ))
            }
            None => return Err(Refusal::new(StatusCode::FORBIDDEN, "no Host header")),
        }
        if let Some(origin) = text(header::ORIGIN) {
            let ok = origin
                .strip_prefix("http://")
                .is_some_and(|h| self.host_ok(h));
            if !ok {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("requests from origin `{origin}` are not allowed"),
                ));
            }
        }
        let protected = path.starts_with("/api/") || path == "/api" || path == "/metrics";
        if let (Some(token), true) = (&self.token, protected) {
            let given = text(header::AUTHORIZATION)
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong `Authorization: Bearer <api_token>` \
                     (the token is in the `listening` event)",
                ));
            }
        }
        if method == Method::POST || method == Method::PUT || method == Method::PATCH {
            let json = text(header::CONTENT_TYPE).is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
            if !json {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the body must be JSON, sent with `Content-Type: application/json`",
                ));
            }
        }
        Ok(())
    }
}

/// `host[:port]` or `[v6][:port]` as (host, port); port 80 when absent.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (name, rest) = match s.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?,
        None => match s.split_once(':') {
            Some((n, _)) => (n, &s[n.len()..]),
            None => (s, ""),
        },
    };
    let port = match rest {
        "" => 80,
        p => p.strip_prefix(':')?.parse().ok()?,
    };
    (!name.is_empty()).then_some((name, port))
}

/// Constant-time equality (the token must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuse a body whose lists are longer than [`MAX_LIST`].
pub(crate) fn check_lists(obj: &Map<String, Value>) -> Result<(), Refusal> {
    for (key, v) in obj {
        if let Value::Array(items) = v {
            if items.len() > MAX_LIST {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "`{key}` lists {} items; at most {MAX_LIST} per request",
                        items.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The API token of data directory `dir`: read from [`TOKEN_FILE`], or
/// created (32 random bytes, hex, mode 0600) on first use.
pub(crate) fn load_or_create_token(dir: &Path) -> Result<String, String> {
    let path = dir.join(TOKEN_FILE);
    let shown = path.display();
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => {
            restrict(&path).map_err(|e| format!("{shown}: {e}"))?;
            return Ok(t.trim().to_owned());
        }
        Ok(_) => return Err(format!("{shown}: too short to be a token; delete it")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let mut token = String::with_capacity(64);
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot create {shown}: {e}"))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    Ok(token)
}

/// Make the token file readable by its owner only.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8080".parse().unwrap(), Some("t".repeat(64)))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn status(method: Method, path: &str, pairs: &[(&str, &str)]) -> Option<u16> {
        guard()
            .check(&method, path, &headers(pairs))
            .err()
            .map(|r| r.status.as_u16())
    }

    #[test]
    fn hosts_naming_the_bound_address_only() {
        let g = guard();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "127.0.0.2:8080",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:8081",
            "127.0.0.1",
            "10.0.0.1:8080",
            "localhost.evil.example:8080",
            "",
            ":8080",
            "[::1]:x",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
        let any = Guard::new("0.0.0.0:80".parse().unwrap(), None);
        assert!(any.host_ok("192.168.1.5") && any.host_ok("[::1]:80"));
        assert!(!any.host_ok("evil.example"));
    }

    #[test]
    fn each_check_has_its_status() {
        let auth = format!("Bearer {}", "t".repeat(64));
        let host = ("host", "127.0.0.1:8080");
        let json = ("content-type", "application/json; charset=utf-8");
        let a = ("authorization", auth.as_str());
        assert_eq!(status(Method::GET, "/", &[host]), None);
        assert_eq!(status(Method::GET, "/api/state", &[host, a]), None);
        assert_eq!(
            status(Method::POST, "/api/broadcast", &[host, a, json]),
            None
        );
        assert_eq!(status(Method::GET, "/api/state", &[host]), Some(401));
        assert_eq!(status(Method::GET, "/metrics", &[host]), Some(401));
        let wrong = ("authorization", "Bearer tttt");
        assert_eq!(status(Method::GET, "/api/state", &[host, wrong]), Some(401));
        let text = ("content-type", "text/plain");
        assert_eq!(
            status(Method::POST, "/api/broadcast", &[host, a, text]),
            Some(415)
        );
        assert_eq!(
            status(Method::POST, "/api/broadcast", &[host, a]),
            Some(415)
        );
        let evil = ("host", "evil.example");
        assert_eq!(status(Method::GET, "/", &[evil]), Some(403));
        assert_eq!(status(Method::GET, "/api/state", &[evil, a]), Some(403));
        let origin = ("origin", "http://evil.example");
        assert_eq!(
            status(Method::GET, "/api/state", &[host, a, origin]),
            Some(403)
        );
        let null = ("origin", "null");
        assert_eq!(
            status(Method::POST, "/api/broadcast", &[host, a, json, null]),
            Some(403)
        );
        let same = ("origin", "http://127.0.0.1:8080");
        assert_eq!(
            status(Method::POST, "/api/broadcast", &[host, a, json, same]),
            None
        );
        assert_eq!(status(Method::GET, "/api/state", &[]), Some(403));
    }

    #[test]
    fn long_lists_are_refused() {
        let mut obj = Map::new();
        obj.insert("peers".into(), Value::Array(vec![Value::Null; MAX_LIST]));
        assert!(check_lists(&obj).is_ok());
        obj.insert(
            "peers".into(),
            Value::Array(vec![Value::Null; MAX_LIST + 1]),
        );
        assert_eq!(check_lists(&obj).unwrap_err().status, 413);
    }

    #[test]
    fn the_token_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("gladius-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = load_or_create_token(&dir).unwrap();
        assert_eq!(t.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create_token(&dir).unwrap(), t);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        /// Arbitrary header values, methods and paths never panic the
        /// checks, and nothing passes without the token.
        #[test]
        fn arbitrary_heads_never_panic(
            host in proptest::collection::vec(any::<u8>(), 0..40),
            origin in proptest::collection::vec(any::<u8>(), 0..40),
            auth in proptest::collection::vec(any::<u8>(), 0..80),
            ct in proptest::collection::vec(any::<u8>(), 0..40),
            path in "/[a-z/]{0,12}",
            post in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            for (name, v) in [(header::HOST, host), (header::ORIGIN, origin),
                              (header::AUTHORIZATION, auth), (header::CONTENT_TYPE, ct)] {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    h.insert(name, v);
                }
            }
            let method = if post { Method::POST } else { Method::GET };
            let r = guard().check(&method, &path, &h);
            if r.is_ok() && path.starts_with("/api/") {
                let a = h.get(header::AUTHORIZATION).unwrap().to_str().unwrap();
                prop_assert!(a.contains(&"t".repeat(64)));
            }
        }
    }
}
