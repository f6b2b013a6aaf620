//! # gladius-sim
//!
//! A deterministic simulator for gladius-p2p. It runs real nodes — the
//! real [`Network`](gladius_p2p::Network) driver, endpoint and the built-in
//! plugins (discovery, latency audit, signed state) unchanged — in one
//! current-thread tokio runtime with paused time, each on a [`SimSocket`]
//! of a [`SimNetwork`]: per-link latency from a distribution, loss,
//! duplication, reordering, uplink bandwidth, partitions, crashes and
//! restarts, all drawn from one seed. Virtual time jumps from one timer or
//! delivery to the next, so a minute of a 10,000-node network costs what
//! its work costs, not a minute.
//!
//! The same seed gives the same run: every delivered datagram and
//! lifecycle event is folded into a trace digest
//! ([`SimNetwork::trace_digest`], `trace_digest` in the [`Report`]).
//!
//! ```no_run
//! use gladius_sim::{run, Scenario, SimArgs};
//!
//! let report = run(&SimArgs::new(Scenario::Discovery, 50, 7), &mut |line| eprintln!("{line}"))?;
//! assert!(report.converged);
//! println!("{}", report.trace_digest);
//! # Ok::<(), gladius_sim::SimError>(())
//! ```
//!
//! See `docs/simulation.md` for the design, why it runs the tokio driver
//! rather than an event loop over the sans-IO endpoint, and measurements.

mod network;
mod node;
mod scenario;
mod trace;

pub use network::{LatencyModel, LinkConfig, NetStats, SimNetwork, SimSocket, INBOX_LEN};
pub use node::{node_addr, NodeSpec, SimNode, StartError, PORT, PROBE_TYPE};
pub use scenario::{run, GossipArgs, Report, Scenario, SimArgs, SimError};
