//! The markdown tables: one per scenario, every field of every line.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::records::{num, size_text, text, thousands, Record};

/// Fields that identify a row rather than measure something.
const KEY_FIELDS: [&str; 6] = [
    "scenario",
    "library",
    "mode",
    "placement",
    "encrypted",
    "size",
];

/// Columns shown first, in this order, for the scenarios we know.
fn preferred_columns(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "rtt" => &[
            "round_trips",
            "p50_us",
            "p90_us",
            "p99_us",
            "rtt_per_s",
            "udp_p50_us",
            "udp_p99_us",
        ],
        "throughput" => &[
            "messages",
            "msgs_per_s",
            "mb_per_s",
            "udp_msgs_per_s",
            "udp_mb_per_s",
        ],
        _ => &[],
    }
}

/// A table cell for a JSON value (arrays and objects: None, not shown).
pub fn cell(key: &str, v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "–".to_string(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::String(s) => s.replace('|', "\\|"),
        Value::Number(n) if key == "size" => size_text(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => thousands(i),
            (None, Some(x)) if x.abs() >= 1000.0 => thousands(x.round() as i64),
            (None, Some(x)) if x.abs() >= 100.0 => format!("{x:.0}"),
            (None, Some(x)) if x.abs() >= 10.0 => format!("{x:.1}"),
            (None, Some(x)) => format!("{x:.2}"),
            (None, None) => n.to_string(),
        },
        // The figure of every run of a repeated point: shown as its range.
        Value::Array(runs) if key.ends_with("_runs") => {
            let xs: Vec<f64> = runs.iter().filter_map(Value::as_f64).collect();
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if xs.is_empty() {
                return None;
            }
            let fmt = |x: f64| cell("", &serde_json::json!(x)).unwrap_or_default();
            format!("{}–{}", fmt(lo), fmt(hi))
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// Sort rank of a library: ours first, then the raw UDP baseline, then the rest.
fn library_rank(lib: &str) -> (u8, String) {
    let rank = match lib {
        "gladius" => 0,
        "raw-udp" => 1,
        _ => 2,
    };
    (rank, lib.to_string())
}

/// The markdown tables of all scenarios.
pub fn tables(records: &[Record]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in records {
        let s = text(r, "scenario");
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    // Known scenarios first, in a fixed order; the others as they came.
    let order = ["rtt", "throughput", "fanout", "scale", "loss"];
    scenarios.sort_by_key(|s| order.iter().position(|o| o == s).unwrap_or(order.len()));

    let mut md = String::new();
    for scenario in scenarios {
        let mut rows: Vec<&Record> = records
            .iter()
            .filter(|r| text(r, "scenario") == scenario)
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &Record| {
                (
                    num(r, "size").unwrap_or(0.0) as u64,
                    library_rank(text(r, "library")),
                    text(r, "mode").to_string(),
                    // One-core runs after the default placement's.
                    text(r, "placement") == crate::records::ONE_CORE,
                    r.get("encrypted").and_then(Value::as_bool).map(|e| !e),
                )
            };
            key(a).cmp(&key(b))
        });
        let keys: Vec<&str> = KEY_FIELDS[1..]
            .iter()
            .copied()
            .filter(|k| rows.iter().any(|r| r.contains_key(*k)))
            .collect();
        let mut columns: Vec<String> = preferred_columns(scenario)
            .iter()
            .filter(|c| rows.iter().any(|r| r.contains_key(**c)))
            .map(|c| c.to_string())
            .collect();
        let mut skipped = BTreeSet::new();
        for r in &rows {
            for (k, v) in r.iter() {
                if KEY_FIELDS.contains(&k.as_str()) || columns.contains(k) {
                    continue;
                }
                if matches!(v, Value::Array(_) | Value::Object(_)) && cell(k, v).is_none() {
                    skipped.insert(k.clone());
                } else {
                    columns.push(k.clone());
                }
            }
        }
        let _ = writeln!(md, "\n### {scenario}\n");
        let header: Vec<String> = keys
            .iter()
            .map(|k| k.to_string())
            .chain(columns.iter().cloned())
            .collect();
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let align: Vec<&str> = keys
            .iter()
            .map(|k| if *k == "size" { "---:" } else { "---" })
            .chain(columns.iter().map(|_| "---:"))
            .collect();
        let _ = writeln!(md, "| {} |", align.join(" | "));
        for r in rows {
            let cells: Vec<String> = header
                .iter()
                .map(|k| r.get(k).and_then(|v| cell(k, v)).unwrap_or_default())
                .collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        if !skipped.is_empty() {
            let list: Vec<String> = skipped.into_iter().collect();
            let _ = writeln!(md, "\n(not tabulated: {})", list.join(", "));
        }
    }
    md
}
