//! Result lines and what the report calls their rows: look-ups, names,
//! colours and number formats.

use plotters::style::RGBColor;
use serde_json::{Map, Value};

/// One result line.
pub type Record = Map<String, Value>;

/// `placement` of rtt rows measured with every thread on one core.
pub const ONE_CORE: &str = "one core";
/// `placement` of rtt rows measured where the scheduler put the threads.
pub const DEFAULT: &str = "default";

/// A string field, or "".
pub fn text<'a>(r: &'a Record, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A numeric field.
pub fn num(r: &Record, key: &str) -> Option<f64> {
    r.get(key).and_then(Value::as_f64)
}

/// The encryption flag, if the line has one.
pub fn encrypted(r: &Record) -> Option<bool> {
    r.get("encrypted").and_then(Value::as_bool)
}

/// The variant of a library's row: its `mode`, or for the raw-UDP
/// baselines (which have none) the socket API in `udp_api`.
pub fn variant(r: &Record) -> &str {
    match text(r, "mode") {
        "" => text(r, "udp_api"),
        mode => mode,
    }
}

/// The last line (later files win) of `scenario` and `library` with body
/// size `size` that also satisfies `extra`.
pub fn find<'a>(
    records: &'a [Record],
    scenario: &str,
    library: &str,
    size: u64,
    extra: impl Fn(&Record) -> bool,
) -> Option<&'a Record> {
    records.iter().rev().find(|r| {
        text(r, "scenario") == scenario
            && text(r, "library") == library
            && num(r, "size") == Some(size as f64)
            && extra(r)
    })
}

/// Which row of a scenario: what the plots and the goals look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// gladius through its message API.
    Gladius { encrypted: bool },
    /// A raw-UDP baseline of `gladius bench`, by socket API.
    RawUdp(&'static str),
    /// A peer library (`library` field) in one of its modes.
    Peer(&'static str, &'static str),
}

/// libp2p over TCP + Noise + Yamux.
pub const LIBP2P_TCP: &str = "libp2p-tcp-noise-yamux";
/// libp2p over QUIC.
pub const LIBP2P_QUIC: &str = "libp2p-quic";
/// tokio_kcp.
pub const KCP: &str = "tokio_kcp";
/// The kernel's TCP with nothing on top.
pub const TCP: &str = "tcp";

impl Row {
    /// The line of this row with body size `size` (raw UDP: datagram size).
    pub fn find<'a>(
        self,
        records: &'a [Record],
        scenario: &str,
        size: u64,
        placement: Option<&str>,
    ) -> Option<&'a Record> {
        let placed = |r: &Record| placement.is_none_or(|p| text(r, "placement") == p);
        match self {
            Row::Gladius { encrypted: e } => find(records, scenario, "gladius", size, |r| {
                encrypted(r) == Some(e) && placed(r)
            }),
            Row::RawUdp(api) => find(records, scenario, "raw-udp", size, |r| {
                variant(r) == api && placed(r)
            }),
            Row::Peer(library, mode) => find(records, scenario, library, size, |r| {
                variant(r) == mode && placed(r)
            }),
        }
    }

    /// A field of this row's line.
    pub fn get(
        self,
        records: &[Record],
        scenario: &str,
        size: u64,
        placement: Option<&str>,
        field: &str,
    ) -> Option<f64> {
        num(self.find(records, scenario, size, placement)?, field)
    }

    /// The short name of the library, as ratios quote it.
    pub fn short(self) -> &'static str {
        match self {
            Row::Gladius { .. } => "gladius",
            Row::RawUdp(_) => "raw UDP",
            Row::Peer(LIBP2P_TCP, _) => "libp2p TCP",
            Row::Peer(LIBP2P_QUIC, _) => "libp2p QUIC",
            Row::Peer(KCP, _) => "tokio_kcp",
            Row::Peer(TCP, _) => "TCP (kernel)",
            Row::Peer(other, _) => other,
        }
    }

    /// The full name of the library, as bar labels and tables show it.
    pub fn name(self) -> String {
        match self {
            Row::Gladius { encrypted: true } => "gladius, encrypted".into(),
            Row::Gladius { encrypted: false } => "gladius, plaintext".into(),
            Row::RawUdp("blocking") => "raw UDP, blocking socket".into(),
            Row::RawUdp("tokio") => "raw UDP, tokio socket".into(),
            Row::RawUdp("gso") => "raw UDP, GSO/GRO batches".into(),
            Row::RawUdp(api) => format!("raw UDP, {api}"),
            Row::Peer(LIBP2P_TCP, _) => "libp2p TCP+Noise+Yamux".into(),
            Row::Peer(LIBP2P_QUIC, _) => "libp2p QUIC".into(),
            Row::Peer(KCP, _) => "tokio_kcp (plaintext)".into(),
            Row::Peer(TCP, _) => "TCP, kernel (plaintext)".into(),
            Row::Peer(other, _) => other.into(),
        }
    }

    /// The bar colour: one hue per library, lighter for its secondary
    /// variant (plaintext gladius, coalesced writes, request-response).
    /// gladius is the only warm hue; the rest are the colour-blind-safe
    /// Okabe–Ito blues, greens and purples, raw UDP grey.
    pub fn color(self) -> RGBColor {
        match self {
            Row::Gladius { encrypted: true } => RGBColor(213, 94, 0),
            Row::Gladius { encrypted: false } => RGBColor(240, 160, 90),
            Row::RawUdp("blocking") => RGBColor(80, 80, 80),
            Row::RawUdp("tokio") => RGBColor(140, 140, 140),
            Row::RawUdp(_) => RGBColor(195, 195, 195),
            Row::Peer(LIBP2P_TCP, "stream") => RGBColor(0, 114, 178),
            Row::Peer(LIBP2P_TCP, _) => RGBColor(120, 175, 220),
            Row::Peer(LIBP2P_QUIC, "stream") => RGBColor(0, 158, 115),
            Row::Peer(LIBP2P_QUIC, _) => RGBColor(125, 205, 175),
            Row::Peer(KCP, "stream") => RGBColor(170, 80, 150),
            Row::Peer(KCP, _) => RGBColor(220, 165, 205),
            Row::Peer(TCP, _) => RGBColor(100, 70, 40),
            Row::Peer(_, _) => RGBColor(160, 130, 0),
        }
    }

    /// Whether this is gladius (highlighted in the plots).
    pub fn is_gladius(self) -> bool {
        matches!(self, Row::Gladius { .. })
    }
}

/// The rows of a line, for naming and colouring lines that were not looked
/// up as a [`Row`] (the CDF plots).
pub fn row_of(r: &Record) -> Option<Row> {
    let known = |s: &str| -> Option<&'static str> {
        [
            "stream",
            "stream-coalesced",
            "request-response",
            "blocking",
            "tokio",
            "gso",
            LIBP2P_TCP,
            LIBP2P_QUIC,
            KCP,
            TCP,
        ]
        .into_iter()
        .find(|k| *k == s)
    };
    match text(r, "library") {
        "gladius" => Some(Row::Gladius {
            encrypted: encrypted(r)?,
        }),
        "raw-udp" => Some(Row::RawUdp(known(variant(r))?)),
        lib => Some(Row::Peer(known(lib)?, known(variant(r))?)),
    }
}

/// The readable name of a line's series: its [`Row`] name and mode, or the
/// raw fields of a library the report does not know.
pub fn series_name(r: &Record) -> String {
    match row_of(r) {
        Some(row @ Row::Peer(_, mode)) if mode != "stream" => {
            format!("{}, {mode}", row.name())
        }
        Some(row) => row.name(),
        None => {
            let mut label = text(r, "library").to_string();
            if !variant(r).is_empty() {
                label.push(' ');
                label.push_str(variant(r));
            }
            match encrypted(r) {
                Some(true) => label.push_str(" (encrypted)"),
                Some(false) => label.push_str(" (plain)"),
                None => {}
            }
            label
        }
    }
}

/// Human-readable message size: 64 B, 1 KiB, 1 MiB.
pub fn size_text(bytes: f64) -> String {
    let b = bytes.round() as u64;
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

/// Inserts thousands separators into an integer.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A figure with three significant digits at most, thousands separated:
/// 1,099, 377, 26.4, 2.49.
pub fn figure(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x.round() as i64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A rate in compact form: 679 k, 12.9 M.
pub fn compact(x: f64) -> String {
    if x >= 1e6 {
        format!("{} M", figure(x / 1e6))
    } else if x >= 1e3 {
        format!("{} k", figure(x / 1e3))
    } else {
        figure(x)
    }
}

/// An axis tick: 0, 250, 1,000, 2.5 (no trailing zeros).
pub fn tick(x: f64) -> String {
    let x = (x * 1000.0).round() / 1000.0;
    if x.fract() == 0.0 {
        thousands(x as i64)
    } else {
        format!("{x}")
    }
}

/// An axis tick of a rate: 10 k, 100 k, 1 M, 20 M.
pub fn compact_tick(x: f64) -> String {
    if x >= 1e6 {
        format!("{} M", tick(x / 1e6))
    } else if x >= 1e3 {
        format!("{} k", tick(x / 1e3))
    } else {
        tick(x)
    }
}
