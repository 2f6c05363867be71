//! The rate-control scenarios of issue 4 (docs/RATE.md has the tables they print).
//!
//! - [`grid`]: the utilization grid: real sessions (sender and receiver shards, real crypto)
//!   over one bottleneck per link rate × RTT × loss cell, with the adaptive fair controller.
//! - [`flows`]: several flows sharing one bottleneck: each flow's real `haul-proto` rate
//!   controller is fed feedback built the way the sender shard builds it, from a packet-level
//!   FIFO link; a TCP-like (Reno) flow can share it. [`fairness`] runs the fairness, policy
//!   and node-cap scenarios on it.
//! - [`sessions`]: fairness from real sessions: several complete sessions whose senders share
//!   one bottleneck queue (no model of the controller's inputs: the shards build them).
//!
//! Everything is deterministic from the seed; nothing reads the wall clock.

pub mod fairness;
pub mod flows;
pub mod grid;
pub mod sessions;
