//! # report: plots and markdown tables from benchmark JSON lines
//!
//! Reads any number of JSON-lines files (the `peers` results and the output
//! of `gladius bench --json` alike: one JSON object per line, with at least
//! `scenario`; usually `library`, `mode`, `size`, `encrypted` and figures)
//! and writes into `--out DIR`, each figure as SVG and as PNG:
//!
//! - `bulk.svg`/`.png`: MB/s of 1 MiB and 64 KiB messages, gladius against
//!   libp2p TCP+Noise+Yamux and QUIC, tokio_kcp, kernel TCP and raw UDP;
//! - `small.svg`/`.png`: messages/s of 64 B and 1 KiB messages (log scale),
//!   with raw UDP one datagram per call and in GSO batches, and the peers'
//!   streams per message and coalesced;
//! - `rtt.svg`/`.png`: p50 of 64 B round trips, both ends on one core
//!   (`--pinned` files) and in the default placement;
//! - `rtt_cdf_64.svg`/`.png`, `rtt_cdf_1024.svg`/`.png`: latency
//!   distribution of the default placement's round trips (`quantiles_us`);
//! - `tables.md`: issue 18's goals, each met or missed with the ratio
//!   computed from the files, then one markdown table per scenario (rows =
//!   library, mode, placement, encryption, size; columns = every scalar
//!   figure found, and the range (min–max) of arrays named `*_runs`).
//!   Unknown scenarios and fields are tabulated the same generic way.
//!
//! Every bar is labelled beside it (no legend to cut off), gladius's rows are
//! highlighted, and the goal ratios are written beside its bar and under
//! each panel.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml --bin report -- \
//!     bench/results/gladius.jsonl bench/results/peers.jsonl \
//!     --pinned bench/results/gladius-rtt-pinned.jsonl --pinned bench/results/peers-rtt-pinned.jsonl \
//!     --out bench/results
//! ```
//!
//! `--pinned FILE` marks a file's round trips as measured with every thread
//! on one core (`taskset -c 0`); a file given without it whose name contains
//! `pinned` is taken as one too (said on stderr), so `bench/results/*.jsonl`
//! works. Lines that are not JSON objects are reported on stderr and
//! skipped. A plot without data is not written (said on stderr). The PNGs
//! use the system's sans-serif font (DejaVu Sans or Liberation Sans).

mod draw;
mod figures;
mod goals;
mod records;
mod tables;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use records::{text, Record, DEFAULT, ONE_CORE};

/// Parsed command line.
#[derive(Debug)]
struct Args {
    /// Input JSON-lines files, and whether each is a one-core run.
    inputs: Vec<(PathBuf, bool)>,
    /// Output directory.
    out: PathBuf,
}

/// Usage text.
const USAGE: &str = "usage: report FILE.jsonl... [--pinned FILE.jsonl]... --out DIR";

/// Parses the arguments (without the program name).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut inputs = Vec::new();
    let mut out = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().context("--out needs a value")?)),
            "--pinned" => {
                inputs.push((
                    PathBuf::from(args.next().context("--pinned needs a file")?),
                    true,
                ));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {
                let path = PathBuf::from(arg);
                let pinned = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("pinned"));
                if pinned {
                    eprintln!(
                        "{}: taken as a one-core (pinned) run from its name",
                        path.display()
                    );
                }
                inputs.push((path, pinned));
            }
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

/// Parses JSON lines, skipping (and reporting) bad ones. Round trips get a
/// `placement` field: one core if `pinned`, else the default.
fn parse_records(name: &str, text_: &str, pinned: bool) -> Vec<Record> {
    let mut records = Vec::new();
    for (i, line) in text_.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut obj)) if obj.get("scenario").is_some_and(Value::is_string) => {
                if text(&obj, "scenario") == "rtt" && !obj.contains_key("placement") {
                    let placement = if pinned { ONE_CORE } else { DEFAULT };
                    obj.insert("placement".into(), placement.into());
                }
                records.push(obj)
            }
            Ok(_) => eprintln!(
                "{name}:{}: not an object with a \"scenario\", skipped",
                i + 1
            ),
            Err(e) => eprintln!("{name}:{}: {e}, skipped", i + 1),
        }
    }
    records
}

/// Reads one JSON-lines file.
fn read_records(path: &Path, pinned: bool) -> Result<Vec<Record>> {
    let text_ =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_records(&path.display().to_string(), &text_, pinned))
}

/// Writes every figure (SVG and PNG) and `tables.md` into `out`.
fn write_report(records: &[Record], out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let goals = goals::goals(records);
    let figures = [
        ("bulk", figures::bulk(records, &goals)),
        ("small", figures::small(records, &goals)),
        ("rtt", figures::rtt(records, &goals)),
    ];
    for (name, figure) in figures {
        match draw::bar_figure_svg(&figure)? {
            Some(svg) => draw::write_both(out, name, &svg)?,
            None => eprintln!("no data for {name}: not written"),
        }
    }
    for size in [64u64, 1024] {
        let title = format!(
            "Round-trip latency distribution, {} bodies, default placement",
            records::size_text(size as f64)
        );
        let name = format!("rtt_cdf_{size}");
        match draw::cdf_svg(&title, &figures::cdf_curves(records, size))? {
            Some(svg) => draw::write_both(out, &name, &svg)?,
            None => eprintln!("no rtt quantiles for {size} B: {name} not written"),
        }
    }
    let path = out.join("tables.md");
    let md = format!("{}{}", goals::markdown(&goals), tables::tables(records));
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let mut records = Vec::new();
    for (path, pinned) in &args.inputs {
        records.extend(read_records(path, *pinned)?);
    }
    if records.is_empty() {
        bail!("no results in the input files");
    }
    write_report(&records, &args.out)
}

#[cfg(test)]
mod tests;
