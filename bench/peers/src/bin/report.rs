//! # report: SVG plots and markdown tables from benchmark JSON lines
//!
//! Reads any number of JSON-lines files (the `peers` results and the output
//! of `gladius bench --json` alike: one JSON object per line, with at least
//! `scenario`; usually `library`, `mode`, `size`, `encrypted` and figures)
//! and writes into `--out DIR`:
//!
//! - `throughput_mb.svg`, `throughput_msgs.svg`: MB/s and messages/s by
//!   message size (log-log), one line per library/mode/encryption;
//! - `rtt_cdf_64.svg`, `rtt_cdf_1024.svg`: latency distribution of the 64 B
//!   and 1 KiB round trips, from the 99 values of `quantiles_us`;
//! - `tables.md`: one markdown table per scenario, rows = library, mode,
//!   encryption, size; columns = every scalar figure found, and the range
//!   (min–max) of arrays named `*_runs` (the figure of every run of a
//!   repeated point). Unknown scenarios and fields are tabulated the same
//!   generic way; other arrays and objects are listed as not tabulated.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin report -- bench/results/*.jsonl --out bench/results
//! ```
//!
//! Lines that are not JSON objects are reported on stderr and skipped. A
//! plot without data is not written (said on stderr).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use serde_json::{Map, Value};

/// One result line.
type Record = Map<String, Value>;

/// Fields that identify a row rather than measure something.
const KEY_FIELDS: [&str; 5] = ["scenario", "library", "mode", "encrypted", "size"];

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

/// Parsed command line.
#[derive(Debug)]
struct Args {
    /// Input JSON-lines files.
    inputs: Vec<PathBuf>,
    /// Output directory.
    out: PathBuf,
}

/// Usage text.
const USAGE: &str = "usage: report FILE.jsonl... --out DIR";

/// Parses `std::env::args`.
fn parse_args() -> Result<Args> {
    let mut inputs = Vec::new();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().context("--out needs a value")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => inputs.push(PathBuf::from(arg)),
        }
    }
    let Some(out) = out else {
        bail!("--out DIR is required\n{USAGE}");
    };
    if inputs.is_empty() {
        bail!("no input files\n{USAGE}");
    }
    Ok(Args { inputs, out })
}

/// Reads all JSON objects of a JSON-lines file, skipping bad lines.
fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) if obj.get("scenario").is_some_and(Value::is_string) => {
                records.push(obj)
            }
            Ok(_) => eprintln!(
                "{}:{}: not an object with a \"scenario\", skipped",
                path.display(),
                i + 1
            ),
            Err(e) => eprintln!("{}:{}: {e}, skipped", path.display(), i + 1),
        }
    }
    Ok(records)
}

/// A string field, or "".
fn text<'a>(r: &'a Record, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A numeric field.
fn num(r: &Record, key: &str) -> Option<f64> {
    r.get(key).and_then(Value::as_f64)
}

/// The legend label of a record's series: library, mode, encryption.
fn series_label(r: &Record) -> String {
    let mut label = text(r, "library").to_string();
    if label.is_empty() {
        label.push('?');
    }
    // Raw-UDP baselines tell their socket API (blocking, tokio, gso) apart
    // in `udp_api`; they would otherwise share one series.
    let mode = match text(r, "mode") {
        "" => text(r, "udp_api"),
        mode => mode,
    };
    if !mode.is_empty() {
        let _ = write!(label, " {mode}");
    }
    match r.get("encrypted").and_then(Value::as_bool) {
        Some(true) => label.push_str(" (encrypted)"),
        Some(false) => label.push_str(" (plain)"),
        None => {}
    }
    label
}

/// Human-readable message size: 64 B, 1 KiB, 1 MiB.
fn size_text(bytes: f64) -> String {
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
fn thousands(n: i64) -> String {
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

/// A table cell for a JSON value (arrays and objects: None, not shown).
fn cell(key: &str, v: &Value) -> Option<String> {
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
fn tables(records: &[Record]) -> String {
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

    let mut md = String::from(
        "<!-- generated by bench/peers `report`; sizes in bytes (KiB/MiB = 2^10/2^20), \
         MB = 10^6 bytes, latencies in µs -->\n",
    );
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

/// One line of a plot: label and (x, y) points sorted by x.
type Series = (String, Vec<(f64, f64)>);

/// Groups records into series of (x, y) points; a later record of the same
/// series and x replaces an earlier one.
fn group(records: &[&Record], point: impl Fn(&Record) -> Option<(f64, f64)>) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for r in records {
        let Some((x, y)) = point(r) else { continue };
        if !(x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite()) {
            continue;
        }
        let label = series_label(r);
        let idx = match series.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                series.push((label, Vec::new()));
                series.len() - 1
            }
        };
        let points = &mut series[idx].1;
        points.retain(|(px, _)| *px != x);
        points.push((x, y));
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series.sort_by_key(|(label, _)| library_rank(label.split(' ').next().unwrap_or("")));
    series
}

/// The smallest and largest x and y of all series.
fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let mut b: Option<((f64, f64), (f64, f64))> = None;
    for &(x, y) in points {
        b = Some(match b {
            None => ((x, x), (y, y)),
            Some(((x0, x1), (y0, y1))) => ((x0.min(x), x1.max(x)), (y0.min(y), y1.max(y))),
        });
    }
    b
}

/// Colour of the i-th series.
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Canvas size of every plot, and the width of the legend column on its right.
const CANVAS: (u32, u32) = (1200, 600);
/// Width of the legend column.
const LEGEND_WIDTH: u32 = 330;

/// Line width of a series: plaintext ones are thinner.
fn line_width(label: &str) -> u32 {
    if label.ends_with("(plain)") {
        1
    } else {
        2
    }
}

/// Draws the series as lines (with points when there are few).
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                c.stroke_width(line_width(label)),
            ))
            .map_err(|e| anyhow::anyhow!("drawing {label}: {e}"))?;
        if points.len() <= 12 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| anyhow::anyhow!("drawing {label}: {e}"))?;
        }
    }
    Ok(())
}

/// Draws the legend into its own column, so it never hides data.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
) -> Result<()> {
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, (label, _)) in series.iter().enumerate() {
        let y = 60 + 22 * i as i32;
        let c = color(i);
        area.draw(&PathElement::new(
            vec![(5, y), (35, y)],
            c.stroke_width(line_width(label) + 1),
        ))
        .map_err(|e| anyhow::anyhow!("legend: {e}"))?;
        area.draw(&Text::new(label.clone(), (42, y - 7), font.clone()))
            .map_err(|e| anyhow::anyhow!("legend: {e}"))?;
    }
    Ok(())
}

/// A log-log plot of a throughput figure by message size.
fn plot_throughput(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<bool> {
    let Some(((x0, x1), (y0, y1))) = bounds(series) else {
        return Ok(false);
    };
    let sizes: BTreeSet<u64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x as u64))
        .collect();
    let root = SVGBackend::new(path, CANVAS).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (plot, legend) = root.split_horizontally(CANVAS.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0 / 1.6..x1 * 1.6)
                .log_scale()
                .with_key_points(sizes.iter().map(|s| *s as f64).collect()),
            (y0 / 2.0..y1 * 2.0).log_scale(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .y_desc(y_desc)
        .x_label_formatter(&|x| size_text(*x))
        .y_label_formatter(&|y| {
            if *y >= 1000.0 {
                thousands(y.round() as i64)
            } else {
                format!("{y}")
            }
        })
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    draw_lines(&mut chart, series)?;
    draw_legend(&legend, series)?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

/// A latency distribution (CDF) plot from the `quantiles_us` of rtt records.
fn plot_cdf(path: &Path, size: u64, series: &[Series]) -> Result<bool> {
    let Some(((x0, x1), _)) = bounds(series) else {
        return Ok(false);
    };
    let root = SVGBackend::new(path, CANVAS).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (plot, legend) = root.split_horizontally(CANVAS.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!(
                "Round-trip latency distribution, {} bodies",
                size_text(size as f64)
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x0 / 1.3..x1 * 1.3)
                .log_scale()
                .with_key_points(one_two_five(x0 / 1.3, x1 * 1.3)),
            0.0..100.0,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("round-trip time (µs, log scale)")
        .y_desc("percentile")
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    draw_lines(&mut chart, series)?;
    draw_legend(&legend, series)?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

/// Axis ticks 1, 2, 5, 10, 20, 50, ... between `lo` and `hi`.
fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.max(1e-3).log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// The CDF points (latency µs, percentile) of one rtt record.
fn cdf_points(r: &Record) -> Vec<(f64, f64)> {
    r.get("quantiles_us")
        .and_then(Value::as_array)
        .map(|q| {
            q.iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_f64().map(|us| (us, (i + 1) as f64)))
                .filter(|(us, _)| *us > 0.0 && us.is_finite())
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut records = Vec::new();
    for path in &args.inputs {
        records.extend(read_records(path)?);
    }
    if records.is_empty() {
        bail!("no results in the input files");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let throughput: Vec<&Record> = records
        .iter()
        .filter(|r| text(r, "scenario") == "throughput")
        .collect();
    let plots: [(&str, &str, &str, &str); 2] = [
        (
            "throughput_mb.svg",
            "Throughput as received (MB/s, 1 MB = 10^6 bytes)",
            "MB/s",
            "mb_per_s",
        ),
        (
            "throughput_msgs.svg",
            "Throughput as received (messages/s)",
            "messages/s",
            "msgs_per_s",
        ),
    ];
    for (file, title, y_desc, field) in plots {
        let series = group(&throughput, |r| Some((num(r, "size")?, num(r, field)?)));
        let path = args.out.join(file);
        if plot_throughput(&path, title, y_desc, &series)? {
            eprintln!("wrote {}", path.display());
        } else {
            eprintln!("no throughput data: {file} not written");
        }
    }

    for size in [64u64, 1024] {
        let mut series: Vec<Series> = Vec::new();
        for r in &records {
            if text(r, "scenario") != "rtt" || num(r, "size") != Some(size as f64) {
                continue;
            }
            let points = cdf_points(r);
            if points.is_empty() {
                continue;
            }
            let label = series_label(r);
            series.retain(|(l, _)| *l != label);
            series.push((label, points));
        }
        series.sort_by_key(|(label, _)| library_rank(label.split(' ').next().unwrap_or("")));
        let file = format!("rtt_cdf_{size}.svg");
        let path = args.out.join(&file);
        if plot_cdf(&path, size, &series)? {
            eprintln!("wrote {}", path.display());
        } else {
            eprintln!("no rtt quantiles for {size} B: {file} not written");
        }
    }

    let path = args.out.join("tables.md");
    std::fs::write(&path, tables(&records))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Record {
        match serde_json::from_str(json) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn sizes_and_numbers_read_well() {
        assert_eq!(size_text(64.0), "64 B");
        assert_eq!(size_text(1024.0), "1 KiB");
        assert_eq!(size_text(1048576.0), "1 MiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(
            cell("x", &serde_json::json!(12.345)).as_deref(),
            Some("12.3")
        );
    }

    #[test]
    fn unknown_scenarios_and_fields_are_tabulated() {
        let records = vec![
            record(
                r#"{"scenario":"rtt","library":"gladius","size":64,"encrypted":true,"p50_us":12.5,"quantiles_us":[1,2]}"#,
            ),
            record(r#"{"scenario":"scale","library":"gladius","nodes":16,"converge_ms":250.0}"#),
        ];
        let md = tables(&records);
        assert!(md.contains("### rtt"));
        assert!(md.contains("### scale"));
        assert!(md.contains("| gladius | 16 | 250 |"));
        assert!(md.contains("(not tabulated: quantiles_us)"));
        let repeated = vec![record(
            r#"{"scenario":"rtt","library":"x","p50_us":20.5,"p50_us_runs":[20.5,61.0,21.0]}"#,
        )];
        assert!(tables(&repeated).contains("| x | 20.5 | 20.5–61.0 |"));
    }

    #[test]
    fn cdf_ticks_are_one_two_five() {
        assert_eq!(one_two_five(15.0, 450.0), vec![20.0, 50.0, 100.0, 200.0]);
    }

    #[test]
    fn series_keep_the_last_point_per_size() {
        let a = record(r#"{"scenario":"throughput","library":"x","size":64,"mb_per_s":1.0}"#);
        let b = record(r#"{"scenario":"throughput","library":"x","size":64,"mb_per_s":2.0}"#);
        let series = group(&[&a, &b], |r| Some((num(r, "size")?, num(r, "mb_per_s")?)));
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].1, vec![(64.0, 2.0)]);
    }
}
