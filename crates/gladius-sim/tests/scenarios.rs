//! Small simulations that must converge, and the determinism of the
//! trace digest. Each runs in a few seconds in a debug build.

use gladius_sim::{run, Report, Scenario, SimArgs};

fn quiet(args: &SimArgs) -> Report {
    match run(args, &mut |_| {}) {
        Ok(report) => report,
        Err(e) => panic!("simulation failed: {e}"),
    }
}

fn args(scenario: Scenario, nodes: usize, seed: u64) -> SimArgs {
    let mut args = SimArgs::new(scenario, nodes, seed);
    args.max_phase_secs = 120;
    args
}

#[test]
fn same_seed_same_digest_encrypted() {
    // Real Noise: ephemeral keys come from the OS, yet datagram sizes and
    // timing, hence the digest, repeat.
    let a = quiet(&args(Scenario::Discovery, 24, 11));
    let b = quiet(&args(Scenario::Discovery, 24, 11));
    assert!(a.converged && b.converged);
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(
        (a.messages, a.bytes, a.sim_ms),
        (b.messages, b.bytes, b.sim_ms)
    );
    let c = quiet(&args(Scenario::Discovery, 24, 12));
    assert_ne!(a.trace_digest, c.trace_digest, "another seed, another run");
}

#[test]
fn same_seed_same_digest_with_faults_and_churn() {
    let mut churn = args(Scenario::Churn, 30, 5);
    churn.loss = 0.02;
    churn.plaintext = true;
    let a = quiet(&churn);
    let b = quiet(&churn);
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.figures, b.figures);
}

#[test]
fn discovery_of_fifty_nodes_fills_every_table() {
    let report = quiet(&args(Scenario::Discovery, 50, 1));
    assert!(report.converged);
    assert_eq!(report.figures["min_table"], 40);
    assert_eq!(report.figures["isolated"], 0);
    assert_eq!(report.figures["components"], 1);
}

#[test]
fn signed_state_reaches_every_node() {
    let report = quiet(&args(Scenario::State, 30, 2));
    assert!(report.converged, "{report:?}");
    assert!(report.figures["state_ms"].is_u64());
    assert!(report.figures["idle_bytes_per_node_per_s"].as_f64() > Some(0.0));
}

#[test]
fn signed_state_from_a_few_writers_reaches_every_node() {
    let mut a = args(Scenario::State, 30, 4);
    a.state_writers = Some(5);
    let report = quiet(&a);
    assert!(report.converged, "{report:?}");
    assert_eq!(report.figures["state_writers"], 5);
    assert!(report.figures["state_ms"].is_u64());
}

#[test]
fn broadcast_reaches_every_route_table_peer() {
    let report = quiet(&args(Scenario::Broadcast, 30, 3));
    assert!(report.converged, "{report:?}");
    assert_eq!(
        report.figures["probes_delivered"],
        report.figures["probes_expected"]
    );
}

#[test]
fn partition_with_loss_heals() {
    let mut partition = args(Scenario::Partition, 40, 4);
    partition.loss = 0.02;
    partition.partition_secs = 20;
    partition.plaintext = true;
    partition.table_size = 12;
    let report = quiet(&partition);
    assert!(
        report.figures["components_partitioned"].as_u64() >= Some(2),
        "{report:?}"
    );
    assert!(report.converged, "{report:?}");
    assert_eq!(report.figures["components"], 1);
    assert!(report.figures["datagrams_partitioned"].as_u64() > Some(0));
}

#[test]
fn crashed_nodes_are_dropped_and_restarted_ones_taken_back() {
    let mut churn = args(Scenario::Churn, 40, 6);
    churn.table_size = 12;
    let report = quiet(&churn);
    assert_eq!(report.figures["crashed"], 4);
    assert!(report.figures["dropped_dead_ms"].is_u64(), "{report:?}");
    assert!(report.converged, "{report:?}");
}
