//! # `gladius-sim`: the deterministic simulator's command line
//!
//! ```text
//! gladius-sim [--nodes N] [--seed S] [--scenario NAME] [--loss P] [--plaintext] [--json] ...
//! cargo run --release -p gladius-sim -- --nodes 1000 --seed 7 --json
//! ```
//!
//! Its own binary, not a subcommand of `gladius`: the simulator runs the
//! nodes on tokio's paused clock (tokio's `test-util`), and a binary that
//! carries `test-util` takes a mutex on every read of tokio's clock. The
//! daemon should not pay that, so `gladius-sim` is also left out of the
//! workspace's default members (features unify across the packages of
//! one build). See `docs/simulation.md`.

use std::process::ExitCode;

use clap::Parser;

/// Simulate N nodes deterministically in virtual time.
///
/// Runs real nodes with the built-in plugins over a simulated WAN
/// (per-link latency 5–150 ms, optional loss) in one process with paused
/// time: each node bootstraps from one random earlier node, then the
/// scenario runs (discovery, state, broadcast, churn, partition, gossip).
/// The same --seed gives the same trace digest. Progress goes to stderr;
/// stdout gets the report, with --json as one JSON object on the last
/// line. Exits 1 if the scenario did not converge.
#[derive(Debug, Parser)]
#[command(name = "gladius-sim", version)]
struct Cli {
    #[command(flatten)]
    args: gladius_sim::SimArgs,
}

fn run(args: &gladius_sim::SimArgs) -> Result<(), String> {
    let report =
        gladius_sim::run(args, &mut |line| eprintln!("{line}")).map_err(|e| e.to_string())?;
    let object = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    if args.json {
        println!("{object}");
    } else if let serde_json::Value::Object(fields) = &object {
        for (name, value) in fields {
            println!("{name:>32}: {value}");
        }
    }
    match report.converged {
        true => Ok(()),
        false => Err("the scenario did not converge".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gladius-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`), as `gladius`
/// does.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
