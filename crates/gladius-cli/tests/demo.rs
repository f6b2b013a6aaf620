//! `gladius demo`, run as a real process: a small swarm converges and the
//! `--json` line says so; an impossible deadline fails naming the phase.

mod common;

use std::time::Duration;

use common::{run_to_end, Run};

use serde_json::Value;

/// No run may take longer than this, whatever the demo does.
const HARD_TIMEOUT: Duration = Duration::from_secs(45);

fn gladius(args: &[&str]) -> Run {
    run_to_end(args, HARD_TIMEOUT)
}

/// The last stdout line, parsed.
fn last_json(run: &Run) -> Value {
    let line = run.stdout.lines().last().unwrap_or_else(|| {
        panic!("no stdout; stderr:\n{}", run.stderr);
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

fn assert_converged(args: &[&str], encrypted: bool) {
    let run = gladius(args);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    let v = last_json(&run);
    assert_eq!(v["nodes"], 8);
    assert_eq!(v["encrypted"], encrypted);
    assert_eq!(v["discovery_converged"], true, "{v}");
    assert_eq!(v["state_converged"], true, "{v}");
    assert_eq!(v["broadcast_expected"], 7, "{v}");
    assert_eq!(v["broadcast_delivered"], 7, "{v}");
    assert!(
        v["discovery_ms"].is_number() && v["state_ms"].is_number(),
        "{v}"
    );
    assert_eq!(v["sample_entry"]["verified"], true, "{v}");
    // With --json stdout is that one line; the report went to stderr.
    assert_eq!(run.stdout.lines().count(), 1, "stdout:\n{}", run.stdout);
    assert!(run.stderr.contains("Summary"), "stderr:\n{}", run.stderr);
}

#[test]
fn eight_encrypted_nodes_converge() {
    assert_converged(&["demo", "--nodes", "8", "--json", "--timeout", "40"], true);
}

#[test]
fn eight_plaintext_nodes_converge() {
    assert_converged(
        &[
            "demo",
            "--nodes",
            "8",
            "--insecure",
            "--json",
            "--timeout",
            "40",
        ],
        false,
    );
}

#[test]
fn a_zero_timeout_fails_naming_discovery() {
    let run = gladius(&["demo", "--nodes", "4", "--timeout", "0", "--json"]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("discovery did not converge"),
        "stderr:\n{}",
        run.stderr
    );
    let v = last_json(&run);
    assert_eq!(v["ok"], false);
    assert_eq!(v["discovery_converged"], false);
    assert_eq!(v["state_converged"], false);
    assert!(v["error"].as_str().unwrap().contains("discovery"), "{v}");
}

#[test]
fn one_node_is_refused() {
    let run = gladius(&["demo", "--nodes", "1"]);
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("--nodes"), "stderr:\n{}", run.stderr);
}
