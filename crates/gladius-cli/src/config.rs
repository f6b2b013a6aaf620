//! `gladius node --config FILE`: the node's settings in TOML, merged with
//! the command line (a flag given overrides the file's value).
//!
//! Every key is optional and documented in `docs/gladius.example.toml`,
//! which shows every key with its default; a key this version does not know
//! is an error naming it (a misspelt setting must not be silently ignored).
//! Durations are integers with their unit in the name (`interval_ms`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gladius_p2p::Cipher;
use gladius_plugins::discovery::DiscoveryConfig;
use gladius_plugins::gossip::GossipConfig;
use gladius_plugins::latency::LatencyConfig;
use gladius_plugins::signed_state::SignedStateConfig;
use serde::Deserialize;

use crate::NodeArgs;

/// The file, as written. Absent keys keep their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    data_dir: Option<PathBuf>,
    api: Option<String>,
    #[serde(default)]
    insecure: bool,
    admission: Option<Admission>,
    #[serde(default)]
    relay: bool,
    #[serde(default)]
    cipher: CipherSetting,
    socket_buffer_bytes: Option<usize>,
    #[serde(default)]
    discovery: DiscoverySection,
    #[serde(default)]
    latency: LatencySection,
    #[serde(default)]
    signed_state: SignedStateSection,
    #[serde(default)]
    gossip: GossipSection,
}

/// Which peers the daemon's discovery makes writable (`--admission`,
/// `admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Admission {
    /// Every peer that connects is promoted to writable (the default).
    Open,
    /// Only peers the user added, and peers writable peers tell of; a peer
    /// that connects on its own stays readable, not writable.
    Known,
}

/// `cipher`: the suite the node starts its handshakes with (it answers
/// either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CipherSetting {
    /// AES-256-GCM where the CPU has AES instructions, else
    /// ChaCha20-Poly1305 ([`Cipher::preferred`]).
    #[default]
    Auto,
    /// Always AES-256-GCM (falling back for peers that lack it).
    AesGcm,
    /// Always ChaCha20-Poly1305.
    ChaChaPoly,
}

impl CipherSetting {
    /// The suite to configure.
    pub(crate) fn cipher(self) -> Cipher {
        match self {
            Self::Auto => Cipher::preferred(),
            Self::AesGcm => Cipher::AesGcm,
            Self::ChaChaPoly => Cipher::ChaChaPoly,
        }
    }
}

/// `[discovery]`: the fields of [`DiscoveryConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverySection {
    table_size: Option<usize>,
    interval_ms: Option<u64>,
    fanout: Option<usize>,
    max_entries: Option<usize>,
    max_pending: Option<usize>,
    connect_deadline_ms: Option<u64>,
    disconnect_grace_ms: Option<u64>,
    tombstone_ttl_ms: Option<u64>,
    retry_min_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    promote_inbound: Option<bool>,
}

/// `[latency]`: the fields of [`LatencyConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencySection {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    suspect_after: Option<u32>,
    dead_after: Option<u32>,
    delete_on_dead: Option<bool>,
    probe: Option<bool>,
    window: Option<usize>,
}

/// `[signed_state]`: the fields of [`SignedStateConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedStateSection {
    fanout: Option<usize>,
    sync_interval_ms: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    max_entries: Option<usize>,
    max_field_len: Option<usize>,
    max_value_len: Option<usize>,
}

/// `[gossip]`: the operator's fields of [`GossipConfig`] (the rest, such
/// as the RNG seed and the flooding baseline, are for measurements and
/// keep their defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GossipSection {
    graft_timeout_ms: Option<u64>,
    graft_retry_ms: Option<u64>,
    join_lazy: Option<bool>,
    origin_fanout: Option<usize>,
    shortcut_pushes: Option<usize>,
    shortcut_depth: Option<u16>,
    message_ttl_ms: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    max_seen: Option<usize>,
    cache_ttl_ms: Option<u64>,
    max_cache_bytes: Option<usize>,
    max_body_len: Option<usize>,
    max_pending_grafts: Option<usize>,
    max_announcers: Option<usize>,
    max_ids_per_frame: Option<usize>,
    peer_rate: Option<u32>,
    peer_burst: Option<u32>,
    max_topics: Option<usize>,
    max_topics_per_peer: Option<usize>,
    max_distrusted: Option<usize>,
    subscriber_queue: Option<usize>,
}

impl GossipSection {
    /// The defaults with this section's keys over them. A value the
    /// plugin cannot run with is an error naming the key, not a silent
    /// clamp.
    fn resolve(self) -> Result<GossipConfig, String> {
        let ms = Duration::from_millis;
        let at_least = |key: &str, v: Option<u64>, min: u64| match v {
            Some(v) if v < min => Err(format!("[gossip] {key} must be at least {min}, got {v}")),
            _ => Ok(()),
        };
        at_least("graft_timeout_ms", self.graft_timeout_ms, 1)?;
        at_least("graft_retry_ms", self.graft_retry_ms, 1)?;
        at_least("shortcut_depth", self.shortcut_depth.map(u64::from), 1)?;
        at_least("message_ttl_ms", self.message_ttl_ms, 1000)?;
        at_least("max_seen", self.max_seen.map(|n| n as u64), 16)?;
        for (key, v) in [
            ("max_pending_grafts", self.max_pending_grafts),
            ("max_announcers", self.max_announcers),
            ("max_ids_per_frame", self.max_ids_per_frame),
            ("max_topics", self.max_topics),
            ("max_topics_per_peer", self.max_topics_per_peer),
            ("max_distrusted", self.max_distrusted),
            ("subscriber_queue", self.subscriber_queue),
        ] {
            at_least(key, v.map(|n| n as u64), 1)?;
        }
        for (key, v) in [
            ("peer_rate", self.peer_rate),
            ("peer_burst", self.peer_burst),
        ] {
            at_least(key, v.map(u64::from), 1)?;
        }
        if let Some(n) = self.max_ids_per_frame {
            let max = gladius_plugins::gossip::wire::MAX_IDS_PER_FRAME;
            if n > max {
                return Err(format!(
                    "[gossip] max_ids_per_frame must be at most {max}, got {n}"
                ));
            }
        }
        let mut g = GossipConfig::default();
        set(&mut g.graft_timeout, self.graft_timeout_ms.map(ms));
        set(&mut g.graft_retry, self.graft_retry_ms.map(ms));
        set(&mut g.join_lazy, self.join_lazy);
        set(&mut g.origin_fanout, self.origin_fanout);
        set(&mut g.shortcut_pushes, self.shortcut_pushes);
        set(&mut g.shortcut_depth, self.shortcut_depth);
        set(&mut g.message_ttl, self.message_ttl_ms.map(ms));
        set(&mut g.max_clock_skew, self.max_clock_skew_ms.map(ms));
        set(&mut g.max_seen, self.max_seen);
        set(&mut g.cache_ttl, self.cache_ttl_ms.map(ms));
        set(&mut g.max_cache_bytes, self.max_cache_bytes);
        set(&mut g.max_body_len, self.max_body_len);
        set(&mut g.max_pending_grafts, self.max_pending_grafts);
        set(&mut g.max_announcers, self.max_announcers);
        set(&mut g.max_ids_per_frame, self.max_ids_per_frame);
        set(&mut g.peer_rate, self.peer_rate);
        set(&mut g.peer_burst, self.peer_burst);
        set(&mut g.max_topics, self.max_topics);
        set(&mut g.max_topics_per_peer, self.max_topics_per_peer);
        set(&mut g.max_distrusted, self.max_distrusted);
        set(&mut g.subscriber_queue, self.subscriber_queue);
        Ok(g)
    }
}

/// What `gladius node` runs with: the file, then the flags over it.
#[derive(Debug)]
pub(crate) struct NodeSettings {
    pub(crate) listen: String,
    pub(crate) peers: Vec<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) api: Option<String>,
    /// `--api-no-auth` (command line only: too dangerous for a file).
    pub(crate) api_no_auth: bool,
    pub(crate) insecure: bool,
    /// `--relay` / `relay`: relay for peers behind NATs.
    pub(crate) relay: bool,
    /// `cipher`: the suite of the handshakes this node starts.
    pub(crate) cipher: CipherSetting,
    /// `socket_buffer_bytes`: the UDP buffers requested (`None`: the
    /// library's default).
    pub(crate) socket_buffer_bytes: Option<usize>,
    /// `--relay-faults` (test builds only).
    #[cfg(feature = "relay-faults")]
    pub(crate) relay_faults: Option<(u64, u64)>,
    pub(crate) discovery: DiscoveryConfig,
    pub(crate) latency: LatencyConfig,
    pub(crate) signed_state: SignedStateConfig,
    pub(crate) gossip: GossipConfig,
}

/// Read and parse a configuration file.
pub(crate) fn load(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("--config {}: {e}", path.display()))
}

/// Parse a configuration file's text (unknown keys are errors).
pub(crate) fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl NodeSettings {
    /// The settings from the file (if any) with the flags over it.
    pub(crate) fn resolve(args: NodeArgs) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        let ms = Duration::from_millis;
        let listen = args
            .listen
            .or(file.listen)
            .ok_or("no address to listen on: give --listen HOST:PORT or `listen` in --config")?;

        let mut discovery = DiscoveryConfig::default();
        let d = file.discovery;
        set(&mut discovery.table_size, args.table_size.or(d.table_size));
        set(&mut discovery.interval, d.interval_ms.map(ms));
        set(&mut discovery.fanout, d.fanout);
        set(&mut discovery.max_entries, d.max_entries);
        set(&mut discovery.max_pending, d.max_pending);
        set(
            &mut discovery.connect_deadline,
            d.connect_deadline_ms.map(ms),
        );
        set(
            &mut discovery.disconnect_grace,
            d.disconnect_grace_ms.map(ms),
        );
        set(&mut discovery.tombstone_ttl, d.tombstone_ttl_ms.map(ms));
        set(&mut discovery.retry_min, d.retry_min_ms.map(ms));
        set(&mut discovery.retry_max, d.retry_max_ms.map(ms));
        set(&mut discovery.promote_inbound, d.promote_inbound);
        // The policy, when given, decides over the [discovery] key.
        set(
            &mut discovery.promote_inbound,
            args.admission
                .or(file.admission)
                .map(|a| a == Admission::Open),
        );

        let mut latency = LatencyConfig::default();
        let l = file.latency;
        set(&mut latency.interval, l.interval_ms.map(ms));
        set(&mut latency.timeout, l.timeout_ms.map(ms));
        set(&mut latency.suspect_after, l.suspect_after);
        set(&mut latency.dead_after, l.dead_after);
        set(&mut latency.delete_on_dead, l.delete_on_dead);
        set(&mut latency.probe, l.probe);
        set(&mut latency.window, l.window);

        let mut signed_state = SignedStateConfig::default();
        let s = file.signed_state;
        set(&mut signed_state.fanout, s.fanout);
        set(&mut signed_state.sync_interval, s.sync_interval_ms.map(ms));
        set(
            &mut signed_state.max_clock_skew,
            s.max_clock_skew_ms.map(ms),
        );
        set(&mut signed_state.max_entries, s.max_entries);
        set(&mut signed_state.max_field_len, s.max_field_len);
        set(&mut signed_state.max_value_len, s.max_value_len);

        let gossip = file.gossip.resolve()?;

        Ok(NodeSettings {
            listen,
            peers: if args.peers.is_empty() {
                file.peers
            } else {
                args.peers
            },
            data_dir: args.data_dir.or(file.data_dir),
            api: args.api.or(file.api),
            api_no_auth: args.api_no_auth,
            insecure: args.insecure || file.insecure,
            relay: args.relay || file.relay,
            cipher: file.cipher,
            socket_buffer_bytes: file.socket_buffer_bytes,
            #[cfg(feature = "relay-faults")]
            relay_faults: args.relay_faults,
            discovery,
            latency,
            signed_state,
            gossip,
        })
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/gladius.example.toml");

    fn args(config: Option<&str>) -> NodeArgs {
        NodeArgs {
            listen: None,
            peers: Vec::new(),
            data_dir: None,
            insecure: false,
            api: None,
            api_no_auth: false,
            config: config.map(PathBuf::from),
            table_size: None,
            admission: None,
            relay: false,
            #[cfg(feature = "relay-faults")]
            relay_faults: None,
        }
    }

    /// The example sets every key to its default: it parses, and running
    /// with it is running with the defaults.
    #[test]
    fn the_example_file_is_complete_and_shows_the_defaults() {
        let file = parse(EXAMPLE).expect("the example parses");
        assert!(file.listen.is_some() && !file.peers.is_empty() && file.api.is_some());
        assert_eq!(file.admission, Some(Admission::Open), "the default policy");
        let d = &file.discovery;
        let all_set = [
            d.table_size.is_some(),
            d.interval_ms.is_some(),
            d.fanout.is_some(),
            d.max_entries.is_some(),
            d.max_pending.is_some(),
            d.connect_deadline_ms.is_some(),
            d.disconnect_grace_ms.is_some(),
            d.tombstone_ttl_ms.is_some(),
            d.retry_min_ms.is_some(),
            d.retry_max_ms.is_some(),
            d.promote_inbound.is_some(),
        ];
        assert!(all_set.iter().all(|s| *s), "[discovery] lacks a key");
        let dir = std::env::temp_dir().join(format!("gladius-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("example.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let s = NodeSettings::resolve(args(path.to_str())).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.discovery, DiscoveryConfig::default());
        assert_eq!(s.latency, LatencyConfig::default());
        assert_eq!(s.gossip, GossipConfig::default());
        let g = &file.gossip;
        let all_set = [
            g.graft_timeout_ms.is_some(),
            g.graft_retry_ms.is_some(),
            g.join_lazy.is_some(),
            g.origin_fanout.is_some(),
            g.shortcut_pushes.is_some(),
            g.shortcut_depth.is_some(),
            g.message_ttl_ms.is_some(),
            g.max_clock_skew_ms.is_some(),
            g.max_seen.is_some(),
            g.cache_ttl_ms.is_some(),
            g.max_cache_bytes.is_some(),
            g.max_body_len.is_some(),
            g.max_pending_grafts.is_some(),
            g.max_announcers.is_some(),
            g.max_ids_per_frame.is_some(),
            g.peer_rate.is_some(),
            g.peer_burst.is_some(),
            g.max_topics.is_some(),
            g.max_topics_per_peer.is_some(),
            g.max_distrusted.is_some(),
            g.subscriber_queue.is_some(),
        ];
        assert!(all_set.iter().all(|s| *s), "[gossip] lacks a key");
        let (got, want) = (&s.signed_state, SignedStateConfig::default());
        assert_eq!(
            (
                got.fanout,
                got.sync_interval,
                got.max_clock_skew,
                got.max_entries
            ),
            (
                want.fanout,
                want.sync_interval,
                want.max_clock_skew,
                want.max_entries
            )
        );
        assert_eq!(
            (got.max_field_len, got.max_value_len),
            (want.max_field_len, want.max_value_len)
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        for (text, key) in [
            ("lisen = \"127.0.0.1:1\"", "lisen"),
            ("[discovery]\ntable_sise = 3", "table_sise"),
            ("[latency]\ninterval = 3", "interval"),
            ("[gossip]\nshortcut_dept = 1", "shortcut_dept"),
            ("[gosip]\nx = 1", "gosip"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = parse("listen = 7").unwrap_err();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("gladius-config-o-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\npeers = [\"127.0.0.1:2\"]\napi = \"127.0.0.1:3\"\n\
             [discovery]\ntable_size = 5\n[latency]\ninterval_ms = 2000\ntimeout_ms = 500\n",
        )
        .unwrap();
        let mut a = args(path.to_str());
        let s = NodeSettings::resolve(args(path.to_str())).unwrap();
        assert_eq!(
            (s.listen.as_str(), s.api.as_deref()),
            ("127.0.0.1:1", Some("127.0.0.1:3"))
        );
        assert_eq!(s.peers, vec!["127.0.0.1:2"]);
        assert_eq!(s.discovery.table_size, 5);
        assert_eq!(s.latency.interval, Duration::from_secs(2));
        a.listen = Some("127.0.0.1:9".into());
        a.peers = vec!["127.0.0.1:8".into()];
        a.table_size = Some(7);
        let s = NodeSettings::resolve(a).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.listen, "127.0.0.1:9");
        assert_eq!(s.peers, vec!["127.0.0.1:8"]);
        assert_eq!(s.discovery.table_size, 7);
        assert_eq!(s.latency.interval, Duration::from_secs(2), "file kept");
        assert!(s.discovery.promote_inbound, "open by default");
        let mut a = args(None);
        a.listen = Some("127.0.0.1:0".into());
        a.admission = Some(Admission::Known);
        let s = NodeSettings::resolve(a).unwrap();
        assert!(!s.discovery.promote_inbound, "--admission known");
        assert!(
            NodeSettings::resolve(args(None)).is_err(),
            "no listen at all"
        );
    }

    #[test]
    fn the_gossip_section_reaches_the_plugin_and_refuses_what_it_cannot_run() {
        let file = parse(
            "[gossip]\norigin_fanout = 8\nshortcut_pushes = 2\nshortcut_depth = 3\n\
             graft_timeout_ms = 400\npeer_rate = 10\n",
        )
        .unwrap();
        let g = file.gossip.resolve().unwrap();
        assert_eq!(
            (g.origin_fanout, g.shortcut_pushes, g.shortcut_depth),
            (8, 2, 3)
        );
        assert_eq!(g.graft_timeout, Duration::from_millis(400));
        assert_eq!(g.peer_rate, 10);
        assert_eq!(
            g.max_seen,
            GossipConfig::default().max_seen,
            "unset keys keep defaults"
        );
        for (text, key) in [
            ("shortcut_depth = 0", "shortcut_depth"),
            ("message_ttl_ms = 10", "message_ttl_ms"),
            ("max_ids_per_frame = 256", "max_ids_per_frame"),
            ("subscriber_queue = 0", "subscriber_queue"),
            ("peer_burst = 0", "peer_burst"),
        ] {
            let e = parse(&format!("[gossip]\n{text}\n"))
                .unwrap()
                .gossip
                .resolve()
                .unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_cipher_key_picks_the_suite_and_refuses_unknown_names() {
        assert_eq!(parse(EXAMPLE).unwrap().cipher, CipherSetting::Auto);
        assert_eq!(parse("").unwrap().cipher, CipherSetting::Auto);
        assert_eq!(CipherSetting::Auto.cipher(), Cipher::preferred());
        for (text, cipher) in [
            ("aesgcm", Cipher::AesGcm),
            ("chachapoly", Cipher::ChaChaPoly),
        ] {
            let file = parse(&format!("cipher = \"{text}\"")).unwrap();
            assert_eq!(file.cipher.cipher(), cipher);
        }
        let e = parse("cipher = \"aes\"").unwrap_err();
        assert!(e.contains("cipher") && e.contains("aesgcm"), "{e}");
    }

    #[test]
    fn the_socket_buffer_key_is_optional_and_takes_bytes() {
        assert_eq!(parse("").unwrap().socket_buffer_bytes, None);
        // The example shows the library's default.
        assert_eq!(parse(EXAMPLE).unwrap().socket_buffer_bytes, Some(4 << 20));
        let file = parse("socket_buffer_bytes = 65536").unwrap();
        assert_eq!(file.socket_buffer_bytes, Some(65_536));
        assert!(parse("socket_buffer_bytes = -1").is_err());
    }
}
