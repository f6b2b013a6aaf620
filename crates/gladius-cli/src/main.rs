//! # `gladius`: a gladius-p2p node you drive with JSON lines
//!
//! ```text
//! gladius demo [--nodes N] [--insecure] [--timeout SECS] [--json]
//! gladius keygen [--data-dir DIR]
//! gladius node [--config FILE] --listen HOST:PORT [--peer HOST:PORT]... [--data-dir DIR]
//!              [--insecure] [--api HOST:PORT] [--table-size N] [--admission open|known]
//!              [--relay]
//! gladius bench [--scenario NAME]... [--mode both|encrypted|plaintext] [--quick] [--json]
//! gladius --version | gladius help [COMMAND]
//! ```
//!
//! `gladius node` runs one node with the three built-in plugins (discovery,
//! latency audit, signed state) and a persistent identity. **stdout carries
//! only JSON lines** (one object per line); logs go to **stderr**
//! (`RUST_LOG`, default `warn`; colour only on a terminal). **stdin takes
//! JSON lines** of commands; a line that looks like JSON (starts with `{`,
//! `[` or `"`, or is a whole JSON value) but is not a valid command is an
//! error, and any other line is broadcast as a `chat` message.
//!
//! ## Identity (`--data-dir`)
//!
//! Default directory: `$XDG_DATA_HOME/gladius`, else
//! `$HOME/.local/share/gladius`; several nodes on one machine need one
//! directory each (the directory is the node's identity). It holds two files, both mode 0600, created
//! on first use and reused afterwards:
//!
//! * `identity.key` — the node's static X25519 (Noise) key; its public half
//!   is `public_key`;
//! * `eth.key` — the secp256k1 key signing the signed-state fields; its
//!   address is `eth_address`.
//!
//! One node per identity: `gladius node` holds an OS lock on `lock` in the
//! directory while it runs (released when the process ends, crash
//! included); a second node on the same directory exits 1 with
//! `data dir … is in use by pid N` on stderr.
//!
//! `gladius keygen` prints
//! `{"event":"identity","data_dir":…,"public_key":…,"eth_address":…,"created":true|false}`.
//!
//! ## Events (stdout)
//!
//! | event | fields |
//! |---|---|
//! | `listening` | `addr`, `public_key` (hex; `null` with `--insecure`), `eth_address` — always the first line |
//! | `message` | `from` (the sender's advertised `HOST:PORT`), `type`, `body` (UTF-8) or `body_b64` (standard base64, when not UTF-8), `writable`, `request`, and `token` for a request the program may answer with `reply` |
//! | `node_added` / `node_deleted` | `addr` — route table changes, by you or by a plugin; `node_deleted` has `reason` (`deleted_by_user`, `deleted_by_plugin (discovery)`, …) |
//! | `peer_connected` | `addr`, `public_key`, `signer` (the Ethereum address the peer proved in its handshake, see `signers.rs`), `writable` — a session is up |
//! | `peer_disconnected` | `addr`, `reason` (`closed_by_peer`, `idle_timeout`, `key_changed`, …) |
//! | `path_changed` | `public_key`, `old`, `new` — a peer roamed: an authenticated datagram of its session came from a new address (its NAT rebound), and the session goes on there without a new handshake; also a relayed peer whose hole punch succeeded (`old` is its relay path, in `100::/64`; see `docs/nat.md`) |
//! | `punch_failed` | `addr` (the peer's relay path), `public_key` — hole punching with a relayed peer gave up; it stays relayed |
//! | `abandoned` | `addr`, `messages` — messages queued to a peer forgotten before a session came up |
//! | `connect_failed` | `addr`, `reason` — a peer in the route table did not answer (the node keeps retrying with backoff), or a handshake was refused (`reason` starts `rejected:`) |
//! | `result` | answer to `broadcast*`, `add`, `delete`, `set`, `close` and to lines that are not valid commands; `--peer` start-up answers carry `"source":"--peer"` |
//! | `reply` | answer to `request` |
//! | `state` / `signed_state` | answers to `state` / `signed_state` |
//!
//! Every answer carries `"ok":true`, or `"ok":false,"error":"…"`, plus the
//! command's `id` when it had one (any JSON value) and `cmd` (its name).
//!
//! Messages of the built-in plugins' own types (`discovery.*`, `latency.*`,
//! `signed_state.*`, `gossip.*`) are **not** reported as `message` events: they are
//! protocol chatter, visible through `state` and `signed_state` instead.
//!
//! ## Commands (stdin)
//!
//! Message bodies are given as `body` (a string) or `body_b64` (base64);
//! `type` defaults to `chat`.
//!
//! | command | answer |
//! |---|---|
//! | `{"cmd":"broadcast","type":"chat","body":"hi"}` | `result` with `queued` (peers) and `failed` (`[peer, "queue_full" or "not_connected"]` pairs) |
//! | `{"cmd":"broadcast_to","peers":["HOST:PORT"],"type":…,"body":…}` | same |
//! | `{"cmd":"broadcast_randomly","n":2,"type":…,"body":…}` | same |
//! | `{"cmd":"add","addr":"HOST:PORT"}` | `result` with the resolved `addr` |
//! | `{"cmd":"add","public_key":"<hex>"}` (optionally with `"addr"` or `"addrs":[…]` as paths to try) | `result` with `public_key` and the `addr` dialled: the peer is known by its key and may roam (encrypted mode; see `docs/nat.md`) |
//! | `{"cmd":"delete","addr":"HOST:PORT"}` | `result` |
//! | `{"cmd":"request","to":"HOST:PORT","type":"echo","body":"ping","timeout_ms":1000}` | `reply` with `from`, `type`, `body`/`body_b64` |
//! | `{"cmd":"reply","to":TOKEN,"type":…,"body":…}` | `result` with `to` (the requester) and `queued`/`failed`; answers the request whose `message` event carried `"token":TOKEN` (`type` defaults to the request's) |
//! | `{"cmd":"state"}` | `state` with `network` (the full `network_state()`: peers with address, key, paths, `path` (`direct` or `relayed`), `direct_addr`, `relay`, writable, RTT, counters; `reflexive_addrs` and `nat`, see `docs/nat.md`) and `latency` (the latency audit's snapshot); durations in milliseconds (`*_ms` keys) |
//! | `{"cmd":"set","field":"name","value":"alice"}` | `result` with the signed `entry` |
//! | `{"cmd":"signed_state"}` | `signed_state` with `entries`: `signer`, `field`, `value` (or `value_b64`), `timestamp` (Unix ms), `message` (exactly the text that was `personal_sign`ed), `signature` |
//! | `{"cmd":"close"}` | `result`, then a graceful shutdown and exit 0 (a few `peer_disconnected` lines may follow) |
//!
//! Commands run one at a time, in order (so two broadcasts reach each peer
//! in the order they were typed); `request` is started in order and its
//! `reply` arrives whenever the answer does (or at `timeout_ms`, default
//! 5000). Bad input — invalid JSON, an unknown command, a missing or
//! mistyped field, a bad address — gets an `ok:false` answer and the node
//! carries on. End of stdin does not stop the node; `close`, SIGINT and
//! SIGTERM shut it down gracefully.
//!
//! **Gossip** (publish/subscribe across the whole network, see
//! `docs/gossip.md`): `{"cmd":"subscribe","topic":"t"}`,
//! `{"cmd":"unsubscribe","topic":"t"}`, `{"cmd":"publish","topic":"t","body":"…"}`
//! (or `body_b64`; the `result` carries the message's id as `message_id`,
//! since `id` echoes the command's) and
//! `{"cmd":"topics"}`; every message delivered on a subscribed topic is an
//! event `{"event":"gossip","topic":"t","origin":"<key hex>","id":"<hex>","body":"…"|"body_b64":"…","hops":H}`.
//! The gossip key is `gossip.key` (Ed25519, 0600) in the data directory.
//! HTTP: `POST /api/topics/{t}/subscribe`, `…/unsubscribe`,
//! `…/publish` (body `{"body":"…"}`), `GET /api/topics`.
//!
//! **Echo service:** a *request* of type `echo` is answered by the node
//! with the same type and body, so `request` can be tried against any
//! `gladius node`. Requests of any other type wait for the program's
//! `reply` (at most 60 s and 1024 of them; see `replies.rs`); unanswered,
//! they time out on the requester.
//!
//! ## Configuration file (`--config FILE`)
//!
//! TOML with `listen`, `peers`, `data_dir`, `api`, `insecure`, `admission` and the
//! sections `[discovery]`, `[latency]`, `[signed_state]`; flags override
//! it; unknown keys are errors. `docs/gladius.example.toml` shows every key.
//!
//! ## HTTP (`--api HOST:PORT`)
//!
//! The commands as JSON endpoints (`POST /api/reply` answers a request
//! seen on the event stream), `GET /api/events` (Server-Sent Events
//! of every stdout event, `?types=` to filter), `GET /api/history` (the
//! last minutes' rates and RTTs), `GET /metrics` (Prometheus text format)
//! and the status page at `/`. Requests need the bearer token the
//! `listening` event prints (`api_token`; `status_url` opens the status
//! page with it); Host, Origin and content type are checked and sizes,
//! connections and read times limited (docs/security.md). See the README.
//!
//! ## Run the demo
//!
//! ```text
//! gladius demo [--nodes N] [--insecure] [--timeout SECS] [--json]
//! ```
//!
//! `gladius demo` starts N nodes (default 16; encrypted, plaintext with
//! `--insecure`) in one process on 127.0.0.1 with the built-in plugins at
//! 200 ms intervals (pings slower past 16 nodes); every node but node 0
//! adds only node 0. With progress bars on stderr (when it is a terminal)
//! it waits, in turn, for discovery to fill every route table (N-1 live
//! peers, or the discovery table size if smaller), for every node to have
//! 3 RTT samples of every live peer (and prints node 0's RTT table: min,
//! p50, EWMA, p99), for every node's signed
//! `name` = `node-<i>` to reach every node with identical state roots (and
//! prints one entry's signed text and signature, to check with any
//! Ethereum library's `personal_sign` recovery), and for one broadcast
//! from node 0 to reach every peer. Then it prints a summary (time per
//! phase, deliveries, counters), closes every node gracefully and exits 0;
//! if a phase has not converged `--timeout` seconds (default 60) after the
//! start, it exits 1 naming that phase. With `--json` the report goes to
//! stderr and stdout gets a single line, one JSON object:
//! `{"nodes":16,"encrypted":true,"discovery_converged":true,
//! "latency_measured":true,"state_converged":true,"broadcast_delivered":15,
//! "broadcast_expected":15,"discovery_ms":…,"latency_ms":…,"state_ms":…,
//! "broadcast_ms":…,"total_ms":…,"root":…,"sample_entry":{…},
//! "counters":{…},"ok":true}` (on failure also `"error"`, phases not
//! reached are `false`/`null`). 16 nodes take well under a second, also
//! with `cargo run -- demo` (the workspace optimizes dependencies, the
//! cryptography above all, even in dev builds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gladius_p2p::Identity;
use gladius_plugins::signed_state::EthKey;

mod addr;
mod api_guard;
mod b64;
mod bench;
mod config;
mod counter_help;
mod data_lock;
mod demo;
mod durations;
mod events;
mod gossip_cmd;
mod history;
mod http;
mod metrics;
mod node;
mod replies;
mod signers;

/// A gladius-p2p node driven by JSON lines on stdin/stdout.
#[derive(Debug, Parser)]
#[command(
    name = "gladius",
    version,
    about = "A gladius-p2p node driven by JSON lines on stdin/stdout",
    long_about = "A gladius-p2p node driven by JSON lines on stdin/stdout.\n\n\
                  Encrypted KCP over UDP, with the discovery, latency audit and signed state \
                  plugins. Logs go to stderr (RUST_LOG, default warn); stdout carries only \
                  JSON lines. See the README section \"The gladius daemon\" for the command and \
                  event reference."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the node identity in the data directory (or show the existing one).
    ///
    /// Writes `identity.key` (the Noise static key) and `eth.key` (the
    /// Ethereum key for signed state), both mode 0600, unless they already
    /// exist, then prints one JSON line with the public key and the Ethereum
    /// address.
    Keygen {
        /// Where the identity lives [default: $XDG_DATA_HOME/gladius or
        /// ~/.local/share/gladius].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a node: JSON-line commands on stdin, JSON-line events on stdout.
    ///
    /// Runs one node with discovery, latency audit and signed state and the
    /// identity from the data directory (created on first run). Every line
    /// on stdout is one JSON object, the first being
    /// {"event":"listening",...}. Lines on stdin are JSON commands
    /// ({"cmd":"broadcast"|"broadcast_to"|"broadcast_randomly"|"add"|"delete"|
    /// "request"|"reply"|"state"|"set"|"signed_state"|"close",...}); a line
    /// that looks like JSON but is not a valid command is an error, any other
    /// line is broadcast as a "chat" message. Requests of
    /// type "echo" are answered with the same body; other requests arrive
    /// as "message" events with a "token" for {"cmd":"reply","to":TOKEN}.
    /// Settings may come from --config FILE (TOML), flags overriding it.
    /// Stops on {"cmd":"close"}, SIGINT or SIGTERM, not at the end of stdin.
    /// One node per data directory: a second exits 1 ("data dir ... is in
    /// use by pid N"). --admission decides which peers become writable.
    Node(NodeArgs),
    /// Start a local swarm in one process and show discovery, latency audit,
    /// signed state and a broadcast converging.
    ///
    /// Starts N nodes on 127.0.0.1 with the built-in plugins, each adding
    /// only node 0, waits (with progress bars on stderr) for every route
    /// table to fill, every peer to be measured, every node's signed `name`
    /// to reach every node and one broadcast from node 0 to reach every
    /// peer, prints a summary and exits 0; exits 1 naming the phase that
    /// did not converge before --timeout. With --json the last stdout line
    /// is one JSON object.
    Demo(demo::DemoArgs),
    /// Measure gladius against raw UDP on this machine: round trips,
    /// throughput, fan-out, many nodes, loss.
    ///
    /// Runs the scenarios rtt (request/reply round trips, 64 B and 1 KiB),
    /// throughput (one-way stream, 64 B to 1 MiB bodies), fanout (1 KiB to
    /// 8, 32, 128 peers), scale (100, 500, 1000 nodes with 8 sessions each:
    /// memory, idle CPU) and loss (1%, 5%, 20% random loss on an in-process
    /// link), each encrypted and plaintext, and a raw-UDP baseline
    /// (blocking and tokio sockets) in the same run. Node pairs run on two
    /// threads with one current-thread runtime each. Progress goes to
    /// stderr; stdout gets tables, or with --json one JSON object per
    /// result line. The full run takes a few minutes, --quick well under
    /// one. Exits 1 if a check failed (e.g. a message lost).
    Bench(bench::BenchArgs),
    /// Moved: the simulator is its own binary, `gladius-sim` (so this one
    /// does not carry tokio's test clock). Says so and exits 1.
    #[command(hide = true)]
    Sim {
        /// Whatever followed `sim`, ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Options of `gladius node`. Each overrides the `--config` file's key of
/// the same name.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// UDP address to listen on (port 0 picks a free port; the `listening`
    /// event tells which). Required here or as `listen` in --config.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// A peer to add at start-up (repeatable); discovery learns the rest.
    /// Replaces the --config file's `peers`.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub(crate) peers: Vec<String>,
    /// Where the identity lives [default: $XDG_DATA_HOME/gladius or
    /// ~/.local/share/gladius].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Plaintext mode: no encryption (standard KCP datagrams). Only talks to
    /// other plaintext nodes.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Serve the HTTP API and the status page on this TCP address (port 0
    /// picks a free port; the `listening` event's `api` field tells which).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) api: Option<String>,
    /// UNSAFE: serve the API without its bearer token, so any local
    /// program (and any web page that gets past the Host/Origin checks)
    /// may drive the node. Only allowed when --api is a loopback address.
    #[arg(long)]
    pub(crate) api_no_auth: bool,
    /// Read settings from this TOML file (see docs/gladius.example.toml);
    /// flags given override it. Unknown keys are an error.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Route-table size discovery grows the table to [default: 64]; small
    /// values build multi-hop topologies for gossip.
    #[arg(long, value_name = "N", visible_alias = "max-peers")]
    pub(crate) table_size: Option<usize>,
    /// Which peers become writable (reached by broadcasts): `open`, every
    /// peer that connects; `known`, only peers you add (--peer, `add`) and
    /// peers your writable peers tell of; a peer that connects on its own
    /// may still send (its messages carry "writable":false) [default: open].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub(crate) admission: Option<crate::config::Admission>,
    /// Relay for peers that cannot reach each other directly (behind
    /// NATs): forward their end-to-end sealed datagrams, at most 64 pairs
    /// and 1 MiB/s per pair (see docs/nat.md). Encrypted mode only.
    #[arg(long)]
    pub(crate) relay: bool,
    /// Test builds only (feature `relay-faults`): as a relay, corrupt every
    /// Cth and drop every Dth sealed datagram forwarded.
    #[cfg(feature = "relay-faults")]
    #[arg(long, value_name = "C,D", hide = true, value_parser = parse_relay_faults)]
    pub(crate) relay_faults: Option<(u64, u64)>,
}

/// `C,D` of `--relay-faults`.
#[cfg(feature = "relay-faults")]
fn parse_relay_faults(s: &str) -> Result<(u64, u64), String> {
    let (c, d) = s.split_once(',').ok_or("expected C,D")?;
    let n = |x: &str| x.trim().parse::<u64>().map_err(|e| format!("{x}: {e}"));
    Ok((n(c)?, n(d)?))
}

/// File name of the Noise static key in the data directory.
pub(crate) const IDENTITY_FILE: &str = "identity.key";
/// File name of the Ethereum key in the data directory.
pub(crate) const ETH_KEY_FILE: &str = "eth.key";

/// The default data directory, from `XDG_DATA_HOME` or `HOME`.
fn default_data_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("gladius"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(home).join(".local/share/gladius"));
    }
    Err("no data directory: set --data-dir, XDG_DATA_HOME or HOME".into())
}

/// The keys of a data directory, created when missing.
pub(crate) struct Keys {
    pub(crate) dir: PathBuf,
    pub(crate) identity: Identity,
    pub(crate) eth: EthKey,
    pub(crate) created: bool,
}

/// The data directory (`--data-dir` or the default), created when missing.
pub(crate) fn data_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => default_data_dir()?,
    };
    create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The keys of the data directory `dir` (see [`data_dir`]), created when
/// missing.
pub(crate) fn load_keys(dir: PathBuf) -> Result<Keys, String> {
    let id_path = dir.join(IDENTITY_FILE);
    let eth_path = dir.join(ETH_KEY_FILE);
    let created = !id_path.exists() || !eth_path.exists();
    let identity = Identity::load_or_generate(&id_path)
        .map_err(|e| format!("identity {}: {e}", id_path.display()))?;
    let eth = EthKey::load_or_generate(&eth_path)
        .map_err(|e| format!("ethereum key {}: {e}", eth_path.display()))?;
    Ok(Keys {
        dir,
        identity,
        eth,
        created,
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn keygen(data_dir: Option<&Path>) -> Result<(), String> {
    let keys = load_keys(crate::data_dir(data_dir)?)?;
    let line = serde_json::json!({
        "event": "identity",
        "data_dir": keys.dir.display().to_string(),
        "public_key": keys.identity.public_key().to_string(),
        "eth_address": keys.eth.address().to_checksum(),
        "created": keys.created,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Keygen { data_dir } => keygen(data_dir.as_deref()),
        Command::Node(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => {
                let result = rt.block_on(node::run(args));
                // Nothing left worth waiting for (e.g. a blocked stdout).
                rt.shutdown_background();
                result
            }
            Err(e) => Err(format!("cannot start the runtime: {e}")),
        },
        Command::Demo(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => {
                let result = rt.block_on(demo::run(args));
                rt.shutdown_background();
                result
            }
            Err(e) => Err(format!("cannot start the runtime: {e}")),
        },
        Command::Bench(args) => bench::run(args),
        Command::Sim { .. } => Err("the simulator is its own binary now: \
                                    `gladius-sim --help` (from a checkout: \
                                    `cargo run --release -p gladius-sim -- --help`)"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gladius: {e}");
            ExitCode::FAILURE
        }
    }
}
