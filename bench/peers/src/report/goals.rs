//! Issue 18's goals, each computed from the result files: gladius's figure,
//! the reference's, their ratio and whether the goal is met.

use std::fmt::Write as _;

use crate::records::{
    figure, size_text, Record, Row, DEFAULT, KCP, LIBP2P_QUIC, LIBP2P_TCP, ONE_CORE,
};

/// Which plot panel a goal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// One-way bulk transfer of messages of this size, MB/s.
    Bulk(u64),
    /// One-way small messages of this size, messages/s.
    Small(u64),
    /// 64 B round trips in this placement, p50.
    Rtt(&'static str),
}

/// Met, missed, or not computable from the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The ratio reaches the target.
    Met,
    /// It does not.
    Missed,
    /// A figure is missing from the files.
    NoData,
    /// Context, not a goal.
    Info,
}

impl Verdict {
    /// The word the tables and plots show.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::NoData => "no data",
            Verdict::Info => "context",
        }
    }
}

/// One goal (or one context ratio) of issue 18.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The panel it is drawn under.
    pub topic: Topic,
    /// What is compared, e.g. "1 MiB, MB/s".
    pub what: String,
    /// gladius's figure.
    pub gladius: Option<f64>,
    /// What it is compared with.
    pub reference_row: Row,
    /// Its name in the text ("libp2p TCP+Noise+Yamux, one frame per message").
    pub reference_name: String,
    /// The reference's figure.
    pub reference: Option<f64>,
    /// gladius / reference must be at least this (higher is better) or at
    /// most this (lower is better); None: context only.
    pub target: Option<f64>,
    /// Whether a higher ratio is better.
    pub higher_is_better: bool,
}

impl Goal {
    /// gladius's figure over the reference's.
    pub fn ratio(&self) -> Option<f64> {
        match (self.gladius, self.reference) {
            (Some(g), Some(r)) if r > 0.0 => Some(g / r),
            _ => None,
        }
    }

    /// Met or missed (or no data, or context).
    pub fn verdict(&self) -> Verdict {
        let (Some(ratio), Some(target)) = (self.ratio(), self.target) else {
            return if self.target.is_none() && self.ratio().is_some() {
                Verdict::Info
            } else {
                Verdict::NoData
            };
        };
        // Compared at the two decimals shown, so that a ratio printed as
        // the target counts as reaching it.
        let ratio = (ratio * 100.0).round() / 100.0;
        let met = if self.higher_is_better {
            ratio >= target
        } else {
            ratio <= target
        };
        if met {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    /// "≥ 1.5×" / "≤ 2×".
    pub fn target_text(&self) -> String {
        match self.target {
            Some(t) => format!("{} {}×", if self.higher_is_better { "≥" } else { "≤" }, t),
            None => "–".into(),
        }
    }

    /// "0.34× libp2p TCP+Noise+Yamux (goal ≥ 1×)".
    pub fn line(&self) -> String {
        let ratio = self
            .ratio()
            .map_or("no data".into(), |r| format!("{r:.2}×"));
        match self.target {
            Some(_) => format!(
                "{ratio} {} (goal {})",
                self.reference_name,
                self.target_text()
            ),
            None => format!("{ratio} {}", self.reference_name),
        }
    }
}

/// One goal's parameters, before its figures are looked up.
struct Spec {
    topic: Topic,
    gladius: Row,
    reference: Row,
    reference_name: &'static str,
    target: Option<f64>,
}

/// Issue 18's goals, and the context ratios it asks to report beside them.
pub fn goals(records: &[Record]) -> Vec<Goal> {
    let enc = Row::Gladius { encrypted: true };
    let mut specs = Vec::new();
    for size in [1 << 20, 64 << 10] {
        specs.push(Spec {
            topic: Topic::Bulk(size),
            gladius: enc,
            reference: Row::Peer(LIBP2P_TCP, "stream"),
            reference_name: "libp2p TCP+Noise+Yamux",
            target: Some(1.0),
        });
        specs.push(Spec {
            topic: Topic::Bulk(size),
            gladius: enc,
            reference: Row::Peer(LIBP2P_QUIC, "stream"),
            reference_name: "libp2p QUIC",
            target: Some(1.5),
        });
    }
    specs.push(Spec {
        topic: Topic::Small(64),
        gladius: enc,
        reference: Row::RawUdp("blocking"),
        reference_name: "raw UDP, one datagram per call",
        target: Some(4.0),
    });
    for (lib, name) in [
        (LIBP2P_TCP, "libp2p TCP+Noise+Yamux, coalesced"),
        (LIBP2P_QUIC, "libp2p QUIC, coalesced"),
        (KCP, "tokio_kcp, coalesced"),
    ] {
        specs.push(Spec {
            topic: Topic::Small(64),
            gladius: enc,
            reference: Row::Peer(lib, "stream-coalesced"),
            reference_name: name,
            target: None,
        });
    }
    for placement in [ONE_CORE, DEFAULT] {
        specs.push(Spec {
            topic: Topic::Rtt(placement),
            gladius: enc,
            reference: Row::RawUdp("blocking"),
            reference_name: "raw UDP ping-pong (blocking)",
            target: Some(2.0),
        });
        specs.push(Spec {
            topic: Topic::Rtt(placement),
            gladius: enc,
            reference: Row::Peer(KCP, "stream"),
            reference_name: "tokio_kcp stream",
            target: Some(1.0),
        });
    }
    specs
        .into_iter()
        .map(|s| {
            let (scenario, size, placement, field, what, higher) = match s.topic {
                Topic::Bulk(size) => (
                    "throughput",
                    size,
                    None,
                    "mb_per_s",
                    format!("bulk {}, MB/s", size_text(size as f64)),
                    true,
                ),
                Topic::Small(size) => (
                    "throughput",
                    size,
                    None,
                    "msgs_per_s",
                    format!("small {}, msgs/s", size_text(size as f64)),
                    true,
                ),
                Topic::Rtt(p) => (
                    "rtt",
                    64,
                    Some(p),
                    "p50_us",
                    format!("round trip 64 B, p50 µs, {p}"),
                    false,
                ),
            };
            Goal {
                topic: s.topic,
                what,
                gladius: s.gladius.get(records, scenario, size, placement, field),
                reference_row: s.reference,
                reference_name: s.reference_name.into(),
                reference: s.reference.get(records, scenario, size, placement, field),
                target: s.target,
                higher_is_better: higher,
            }
        })
        .collect()
}

/// The markdown table of the goals, for the lead to paste.
pub fn markdown(goals: &[Goal]) -> String {
    let mut md = String::from(
        "<!-- generated by bench/peers `report`; sizes in bytes (KiB/MiB = 2^10/2^20), \
         MB = 10^6 bytes, latencies in µs -->\n\
         \n### Issue 18 goals (computed from these files; gladius encrypted)\n\n\
         | goal | gladius | compared with | their figure | ratio | target | |\n\
         |---|---:|---|---:|---:|---:|---|\n",
    );
    for g in goals {
        let fig = |x: Option<f64>| x.map_or("–".into(), figure);
        let ratio = g.ratio().map_or("–".into(), |r| format!("{r:.2}×"));
        let verdict = match g.verdict() {
            v @ (Verdict::Met | Verdict::Missed) => format!("**{}**", v.word()),
            v => v.word().into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            g.what,
            fig(g.gladius),
            g.reference_name,
            fig(g.reference),
            ratio,
            g.target_text(),
            verdict
        );
    }
    md.push_str(
        "\nRound trips are judged on the one-core run (`taskset -c 0`, the `--pinned` files); \
         the default placement is shown too. The peers' bulk and small-message figures are \
         their one-frame-per-message (`stream`) rows unless named coalesced.\n",
    );
    md
}
