//! `gladius bench --quick --json` as a real process: a smoke run that only
//! checks the output is complete and well formed. No timing assertions:
//! benchmarks never run as timed tests.

mod common;

use std::time::Duration;

use common::run_to_end;

use serde_json::Value;

/// No run may take longer than this, whatever the benchmark does.
const HARD_TIMEOUT: Duration = Duration::from_secs(120);

/// A run of a few seconds: 50 plaintext round trips of each size.
const QUICK_RTT_PLAINTEXT: [&str; 7] = [
    "--quick",
    "--scenario",
    "rtt",
    "--mode",
    "plaintext",
    "--rounds",
    "50",
];

/// Run `gladius bench` with `args`; returns (exit code, stdout, stderr).
fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    let all: Vec<&str> = std::iter::once("bench")
        .chain(args.iter().copied())
        .collect();
    let run = run_to_end(&all, HARD_TIMEOUT);
    (run.code, run.stdout, run.stderr)
}

/// `line[key]` as a finite, positive number.
fn positive(line: &Value, key: &str) -> f64 {
    let x = line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {line}"));
    assert!(x.is_finite() && x > 0.0, "{key} = {x} in {line}");
    x
}

/// Keys every line of a kind must have with positive numbers.
fn required(scenario: &str, library: &str) -> &'static [&'static str] {
    match (scenario, library) {
        ("rtt", "raw-udp") => &[
            "size",
            "round_trips",
            "p50_us",
            "p90_us",
            "p99_us",
            "rtt_per_s",
        ],
        ("rtt", _) => &[
            "size",
            "round_trips",
            "p50_us",
            "p90_us",
            "p99_us",
            "rtt_per_s",
            "udp_p50_us",
            "udp_p99_us",
            "udp_rtt_per_s",
            "udp_tokio_p50_us",
            "ratio_p50",
        ],
        ("throughput", "raw-udp") => &["size", "messages", "msgs_per_s", "mb_per_s"],
        ("throughput", _) => &[
            "size",
            "messages",
            "msgs_per_s",
            "mb_per_s",
            "udp_mb_per_s",
            "udp_msgs_per_s",
            "udp_size",
            "ratio_mb",
            "ratio_msgs",
            "udp_gso_mb_per_s",
            "ratio_mb_gso",
        ],
        ("fanout", "raw-udp") => &["size", "peers", "deliveries_per_s", "mb_per_s"],
        ("fanout", _) => &[
            "size",
            "peers",
            "deliveries_per_s",
            "mb_per_s",
            "udp_deliveries_per_s",
            "ratio",
        ],
        // Per-node and per-session memory are differences and may be 0 for
        // a handful of nodes (the allocator reuses freed memory): checked
        // separately.
        ("scale", _) => &["nodes", "sessions", "connect_ms", "rss_bytes"],
        ("loss", _) => &[
            "loss_percent",
            "size",
            "msgs_per_s",
            "mb_per_s",
            "p50_delivery_us",
            "p99_delivery_us",
            "delivered",
            "sent",
        ],
        other => panic!("unexpected line kind {other:?}"),
    }
}

#[test]
fn quick_json_run_is_complete_and_well_formed() {
    // Exactly what the issue asks to work from a fresh clone (about 20 s in
    // the test build).
    let (code, stdout, stderr) = bench(&["--quick", "--json"]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}\nstdout:\n{stdout}");
    let mut seen = std::collections::BTreeSet::new();
    for line in stdout.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let scenario = v["scenario"].as_str().expect("scenario").to_owned();
        let library = v["library"].as_str().expect("library").to_owned();
        assert!(library == "gladius" || library == "raw-udp", "{line}");
        assert!(v["encrypted"].is_boolean(), "encrypted missing: {line}");
        for key in required(&scenario, &library) {
            positive(&v, key);
        }
        if scenario == "rtt" {
            let q = v["quantiles_us"].as_array().expect("quantiles_us");
            assert_eq!(q.len(), 99, "{line}");
        }
        if scenario == "scale" {
            for key in [
                "idle_cpu_percent",
                "rss_per_node_bytes",
                "rss_per_session_bytes",
            ] {
                let x = v[key].as_f64().unwrap_or_else(|| panic!("{key}: {line}"));
                assert!(x.is_finite() && x >= 0.0, "{line}");
            }
        }
        if scenario == "loss" {
            assert_eq!(v["delivered"], v["sent"], "{line}");
            assert_eq!(v["duplicates"], 0, "{line}");
        }
        seen.insert((
            scenario,
            library,
            v["encrypted"].as_bool().unwrap_or_default(),
        ));
    }
    for scenario in ["rtt", "throughput", "fanout", "scale", "loss"] {
        for encrypted in [true, false] {
            assert!(
                seen.contains(&(scenario.to_owned(), "gladius".to_owned(), encrypted)),
                "no {scenario} line with encrypted={encrypted}; stdout:\n{stdout}"
            );
        }
    }
    for scenario in ["rtt", "throughput", "fanout"] {
        assert!(
            seen.contains(&(scenario.to_owned(), "raw-udp".to_owned(), false)),
            "no raw-udp {scenario} line"
        );
    }
    // The human side goes to stderr: a legend per scenario, what is being
    // measured, and one verdict per scenario.
    for scenario in ["rtt", "throughput", "fanout", "scale", "loss"] {
        let verdicts = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("verdict: {scenario}: ")))
            .count();
        assert_eq!(verdicts, 1, "{scenario} verdict in stderr:\n{stderr}");
    }
    for legend in ["ratio_p50 = ", "ratio_mb_gso = ", "ratio = "] {
        assert!(
            stderr.contains(legend),
            "legend {legend:?} in stderr:\n{stderr}"
        );
    }
    assert!(stderr.contains("bench: [5/5] loss"), "{stderr}");
}

#[test]
fn tables_come_with_a_legend_and_a_verdict() {
    let (code, stdout, stderr) = bench(&QUICK_RTT_PLAINTEXT);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let legend = stdout
        .find("ratio_p50 = gladius p50 / raw UDP p50")
        .expect("legend");
    let table = stdout.find("rtt / gladius").expect("table");
    let verdict = stdout
        .find("verdict: rtt: a gladius round trip takes plaintext ")
        .expect("verdict");
    assert!(legend < table && table < verdict, "{stdout}");
    assert!(stdout[verdict..].contains("(lower is better)"), "{stdout}");
    assert!(
        stderr.contains("bench:   rtt 64 B gladius plaintext ..."),
        "{stderr}"
    );
    assert!(stderr.contains("round trips/s"), "{stderr}");
}

#[test]
fn selected_scenario_and_mode_only() {
    let mut args = vec!["--json"];
    args.extend(QUICK_RTT_PLAINTEXT);
    let (code, stdout, stderr) = bench(&args);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // Two sizes: two raw-udp lines (blocking, tokio) and one gladius each.
    assert_eq!(lines.len(), 6, "{stdout}");
    for v in &lines {
        assert_eq!(v["scenario"], "rtt");
        if v["library"] == "gladius" {
            assert_eq!(v["encrypted"], false);
            assert_eq!(v["round_trips"], 50);
        }
    }
}
