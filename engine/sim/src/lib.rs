//! # haul-sim: the deterministic simulator
//!
//! Drives real `haul-proto` sender and receiver sessions (a coordinator and 1–4 shards per side)
//! over a simulated network and disk, from a seed. The same seed replays the same run, bit for
//! bit: every random choice comes from `haul_proto::rng::Rng` seeded from the scenario, the
//! virtual clock jumps from event to event, and nothing reads the wall clock.
//!
//! The map (docs/SIMULATOR.md has the long form):
//! - [`scenario`]: what a run is made of, drawn from a seed or built by hand.
//! - [`net`]: the bottleneck link per direction, with loss, bursts, reordering, duplication,
//!   corruption and jitter.
//! - [`attacker`]: forged, junk, tampered, replayed and reflected datagrams of every type.
//! - [`disk`]: per-side disk with latency, bounded concurrency, transient and fatal faults,
//!   stored and virtual files.
//! - [`driver`]: wires the session to all of the above and runs the clock.
//! - [`checks`]: what must hold at the end of a run; [`report`]: the figures and the verdict.
//! - [`run`]: one run behind `catch_unwind`, and the parallel seed sweep.
//! - [`side`]: the side-accounting hook for a counting allocator.
//! - [`scenarios`]: the rate-control tables (utilization grid, fairness, policies, node cap).

#![forbid(unsafe_code)]

pub mod attacker;
pub mod checks;
pub mod disk;
pub mod driver;
pub mod endpoint;
pub mod net;
pub mod report;
pub mod run;
pub mod scenario;
pub mod scenarios;
pub mod side;

pub use report::{Failure, RunReport};
pub use run::{run_scenario, run_seed, sweep};
pub use scenario::Scenario;
pub use side::{Side, current_side, with_side};
