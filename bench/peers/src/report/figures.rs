//! The three questions as figures (bulk, small messages, round trips), and
//! the latency CDFs, built from the result lines.

use crate::draw::{Bar, Curve, Figure, Line, Panel};
use crate::goals::{Goal, Topic};
use crate::records::{
    compact, compact_tick, figure, num, row_of, series_name, size_text, text, thousands, tick,
    Record, Row, DEFAULT, KCP, LIBP2P_QUIC, LIBP2P_TCP, ONE_CORE, TCP,
};

/// gladius, both modes.
const GLADIUS: [Row; 2] = [
    Row::Gladius { encrypted: true },
    Row::Gladius { encrypted: false },
];

/// A bar per row that has the figure, labelled `label(row)`.
fn bars(
    records: &[Record],
    rows: &[Row],
    scenario: &str,
    size: impl Fn(Row) -> u64,
    placement: Option<&str>,
    field: &str,
    label: impl Fn(Row) -> String,
) -> Vec<Bar> {
    rows.iter()
        .filter_map(|&row| {
            let value = row.get(records, scenario, size(row), placement, field)?;
            (value > 0.0 && value.is_finite()).then(|| Bar {
                label: label(row),
                value,
                color: row.color(),
                gladius: row.is_gladius(),
                note: String::new(),
            })
        })
        .collect()
}

/// The goal lines of one panel, and the ratios written beside gladius's
/// encrypted bar (the goals', not the context ones).
fn annotate(panel: &mut Panel, goals: &[Goal], topic: Topic) {
    let mine: Vec<&Goal> = goals.iter().filter(|g| g.topic == topic).collect();
    panel.lines = mine
        .iter()
        .map(|g| Line {
            verdict: g.verdict(),
            text: g.line(),
        })
        .collect();
    let beside: Vec<String> = mine
        .iter()
        .filter(|g| g.target.is_some())
        .filter_map(|g| Some(format!("{:.2}× {}", g.ratio()?, g.reference_row.short())))
        .collect();
    if let Some(bar) = panel
        .bars
        .iter_mut()
        .find(|b| b.label == Row::Gladius { encrypted: true }.name())
    {
        bar.note = beside.join(" · ");
    }
}

/// Bulk: 64 KiB and 1 MiB messages, MB/s.
pub fn bulk(records: &[Record], goals: &[Goal]) -> Figure {
    let rows = [
        GLADIUS[0],
        GLADIUS[1],
        Row::Peer(LIBP2P_TCP, "stream"),
        Row::Peer(LIBP2P_QUIC, "stream"),
        Row::Peer(KCP, "stream"),
        Row::Peer(TCP, "stream"),
        Row::RawUdp("blocking"),
    ];
    let panels = [1u64 << 20, 64 << 10]
        .into_iter()
        .map(|size| {
            // Raw UDP has no messages: its line is 1200 B datagrams, one per
            // call, which is what a bulk transfer over raw UDP would send.
            let udp_size = |row: Row| {
                if matches!(row, Row::RawUdp(_)) {
                    1200
                } else {
                    size
                }
            };
            let label = |row: Row| match row {
                Row::RawUdp(_) => "raw UDP, 1200 B datagrams, one per call".to_string(),
                row => row.name(),
            };
            let mut panel = Panel {
                title: format!("{} messages", size_text(size as f64)),
                bars: bars(
                    records,
                    &rows,
                    "throughput",
                    udp_size,
                    None,
                    "mb_per_s",
                    label,
                ),
                lines: Vec::new(),
            };
            annotate(&mut panel, goals, Topic::Bulk(size));
            panel
        })
        .filter(|p| !p.bars.is_empty())
        .collect();
    let mut notes = vec![
        "One-way, as received (MB = 10^6 bytes); gladius one run per point, the peers the best of their runs. The peers write and flush one frame per message, as gladius sends one message per call; their coalesced rows (within a few % at these sizes) are in tables.md.".to_string(),
    ];
    if let Some(gso) = Row::RawUdp("gso").get(records, "throughput", 1200, None, "mb_per_s") {
        notes.push(format!(
            "Off the scale: raw UDP with GSO/GRO batches of 1200 B datagrams, {} MB/s (the machine's batched-I/O limit).",
            thousands(gso.round() as i64)
        ));
    }
    Figure {
        title: "Bulk transfer: how fast do large messages go?".into(),
        subtitle: "MB/s, higher is better · gladius (orange) against libp2p TCP+Noise+Yamux and QUIC (encrypted), tokio_kcp and kernel TCP (plaintext)".into(),
        log: false,
        value_text: |v| format!("{} MB/s", figure(v)),
        tick_text: tick,
        panels,
        notes,
    }
}

/// Small messages: 64 B and 1 KiB, messages/s, log scale.
pub fn small(records: &[Record], goals: &[Goal]) -> Figure {
    let mut rows = GLADIUS.to_vec();
    rows.extend([
        Row::RawUdp("blocking"),
        Row::RawUdp("tokio"),
        Row::RawUdp("gso"),
    ]);
    for lib in [LIBP2P_TCP, LIBP2P_QUIC, KCP] {
        rows.push(Row::Peer(lib, "stream"));
        rows.push(Row::Peer(lib, "stream-coalesced"));
    }
    let panels = [64u64, 1024]
        .into_iter()
        .map(|size| {
            let udp = if size <= 64 { 64 } else { 1200 };
            let udp_size = |row: Row| {
                if matches!(row, Row::RawUdp(_)) {
                    udp
                } else {
                    size
                }
            };
            let label = |row: Row| match row {
                Row::RawUdp("gso") => format!("raw UDP, {udp} B, GSO/GRO batches"),
                Row::RawUdp(api) => format!("raw UDP, {udp} B, one per call ({api})"),
                Row::Peer(_, "stream-coalesced") => format!("{}, coalesced", row.name()),
                Row::Peer(_, _) => format!("{}, frame per message", row.name()),
                row => row.name(),
            };
            let mut panel = Panel {
                title: format!("{} messages", size_text(size as f64)),
                bars: bars(
                    records,
                    &rows,
                    "throughput",
                    udp_size,
                    None,
                    "msgs_per_s",
                    label,
                ),
                lines: Vec::new(),
            };
            annotate(&mut panel, goals, Topic::Small(size));
            if size != 64 {
                // No goal at 1 KiB: the ratio to one datagram per call, for context.
                let g = GLADIUS[0].get(records, "throughput", size, None, "msgs_per_s");
                let u = Row::RawUdp("blocking").get(records, "throughput", udp, None, "msgs_per_s");
                if let (Some(g), Some(u)) = (g, u) {
                    if let Some(bar) = panel.bars.iter_mut().find(|b| b.label == GLADIUS[0].name())
                    {
                        bar.note = format!("{:.2}× raw UDP {udp} B", g / u);
                    }
                }
            }
            panel
        })
        .filter(|p| !p.bars.is_empty())
        .collect();
    Figure {
        title: "Small messages: how many per second?".into(),
        subtitle: "messages (or datagrams) per second, log scale, higher is better · gladius through its message API, every message accounted for".into(),
        log: true,
        value_text: compact,
        tick_text: compact_tick,
        panels,
        notes: vec![
            "Coalesced: the peer's stream behind a 64 KiB write buffer flushed only at the end (no per-message framing or flush).".into(),
            "Raw UDP beside 1 KiB messages sends 1200 B datagrams; GSO/GRO batches up to 64 datagrams per socket call.".into(),
        ],
    }
}

/// Round trips: 64 B request and reply, p50, one core and default placement.
pub fn rtt(records: &[Record], goals: &[Goal]) -> Figure {
    let mut rows = GLADIUS.to_vec();
    rows.extend([
        Row::RawUdp("blocking"),
        Row::RawUdp("tokio"),
        Row::Peer(LIBP2P_TCP, "stream"),
        Row::Peer(LIBP2P_QUIC, "stream"),
        Row::Peer(KCP, "stream"),
    ]);
    let label = |row: Row| match row {
        Row::RawUdp(api) => format!("raw UDP ping-pong ({api})"),
        Row::Peer(_, _) => format!("{}, stream", row.name()),
        row => row.name(),
    };
    let panels = [
        (
            ONE_CORE,
            "Both ends on one core (taskset -c 0): the goals are judged here",
        ),
        (
            DEFAULT,
            "Default placement (the scheduler's choice; wake-ups may cross cores)",
        ),
    ]
    .into_iter()
    .map(|(placement, title)| {
        let mut panel = Panel {
            title: title.into(),
            bars: bars(
                records,
                &rows,
                "rtt",
                |_| 64,
                Some(placement),
                "p50_us",
                label,
            ),
            lines: Vec::new(),
        };
        annotate(&mut panel, goals, Topic::Rtt(placement));
        panel
    })
    .filter(|p| !p.bars.is_empty())
    .collect();
    // libp2p's request-response is 5-10x slower than everything else here;
    // on the same axis it would squeeze the bars that the goals compare.
    let mut off_scale = Vec::new();
    for (placement, name) in [(ONE_CORE, "one core"), (DEFAULT, "default placement")] {
        let figs: Vec<String> = [LIBP2P_TCP, LIBP2P_QUIC]
            .into_iter()
            .filter_map(|lib| {
                let v = Row::Peer(lib, "request-response").get(
                    records,
                    "rtt",
                    64,
                    Some(placement),
                    "p50_us",
                )?;
                Some(format!(
                    "{} {}\u{a0}µs",
                    Row::Peer(lib, "").short(),
                    figure(v)
                ))
            })
            .collect();
        if !figs.is_empty() {
            off_scale.push(format!("{name}: {}", figs.join(", ")));
        }
    }
    let mut notes = vec![
        "gladius encrypted; libp2p encrypted (Noise, TLS 1.3); tokio_kcp and raw UDP plaintext. Every bar is the lowest p50 of its point's runs (--repeat of both benches; every run's p50 is in tables.md). Distributions: rtt_cdf_64 and rtt_cdf_1024.".to_string(),
    ];
    if !off_scale.is_empty() {
        notes.push(format!(
            "Not drawn: libp2p request-response (a substream per request), p50 {}.",
            off_scale.join("; ")
        ));
    }
    Figure {
        title: "Round trips: how long does a 64 B request and its reply take?".into(),
        subtitle: "median (p50) round trip, µs, lower is better · gladius: Network::request answered by a request handler (Network::handle_requests, as in gladius bench)".into(),
        log: false,
        value_text: |v| format!("{} µs", figure(v)),
        tick_text: tick,
        panels,
        notes,
    }
}

/// The CDF curves of the default-placement rtt lines of one body size.
pub fn cdf_curves(records: &[Record], size: u64) -> Vec<Curve> {
    let mut curves: Vec<(u8, Curve)> = Vec::new();
    for r in records {
        if text(r, "scenario") != "rtt"
            || num(r, "size") != Some(size as f64)
            || text(r, "placement") == ONE_CORE
        {
            continue;
        }
        let points: Vec<(f64, f64)> = r
            .get("quantiles_us")
            .and_then(|q| q.as_array())
            .map(|q| {
                q.iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_f64().map(|us| (us, (i + 1) as f64)))
                    .filter(|(us, _)| *us > 0.0 && us.is_finite())
                    .collect()
            })
            .unwrap_or_default();
        if points.is_empty() {
            continue;
        }
        let row = row_of(r);
        let color = row.map_or(plotters::style::RGBColor(160, 130, 0), Row::color);
        let rank = match row {
            Some(Row::Gladius { .. }) => 0,
            Some(Row::RawUdp(_)) => 1,
            _ => 2,
        };
        let name = series_name(r);
        curves.retain(|(_, c)| c.0 != name);
        curves.push((rank, (name, color, points)));
    }
    curves.sort_by_key(|(rank, _)| *rank);
    curves.into_iter().map(|(_, c)| c).collect()
}
