//! The `gladius-sim` binary, run as a real process: a small discovery run
//! converges, prints its report as JSON on the last stdout line and exits
//! 0; the same seed gives the same trace digest, another seed another one;
//! a run that cannot converge (every datagram lost) exits 1.

use std::process::{Command, Output};

use serde_json::Value;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gladius-sim"))
        .args(args)
        .output()
        .expect("gladius-sim runs")
}

fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no stdout; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

#[test]
fn a_run_reports_json_and_repeats_from_its_seed() {
    let args = ["--nodes", "30", "--seed", "3", "--plaintext", "--json"];
    let first = sim(&args);
    assert_eq!(first.status.code(), Some(0));
    let a = report(&first);
    assert_eq!(a["nodes"], 30);
    assert_eq!(a["converged"], true, "{a}");
    assert_eq!(a["components"], 1, "{a}");
    let digest = a["trace_digest"].as_str().expect("a digest").to_owned();
    assert_eq!(digest.len(), 64, "{a}");

    let again = report(&sim(&args));
    assert_eq!(again["trace_digest"], digest.as_str());

    let other = report(&sim(&[
        "--nodes",
        "30",
        "--seed",
        "4",
        "--plaintext",
        "--json",
    ]));
    assert_ne!(other["trace_digest"], digest.as_str());
}

#[test]
fn a_run_that_cannot_converge_exits_1() {
    let out = sim(&[
        "--nodes",
        "10",
        "--seed",
        "1",
        "--plaintext",
        "--loss",
        "1.0",
        "--max-phase-secs",
        "5",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report(&out)["converged"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not converge"), "{err}");
}
