//! # haul-proto: the sans-IO protocol core
//!
//! This crate is Haul's transfer protocol with every side effect removed: no sockets, no clock,
//! no files, no OS randomness, no `unsafe` (STYLE.md rules 1, 2, 8). A driver (the data plane
//! in `haul-io`, or the simulator in `haul-sim`) feeds it datagrams, disk completions and the
//! time, and polls it for datagrams to send, disk operations to perform and the next deadline.
//!
//! The map (docs/ARCHITECTURE.md has the long form):
//! - [`time`]: our own `Instant`/`Duration` over nanoseconds.
//! - [`wire`]: the header and packet bodies (docs/PROTOCOL.md §2).
//! - [`crypto`]: the key schedule and the cipher suites, serial and batched (§3, §4).
//! - [`replay`]: the per-shard anti-replay window (§5).
//! - [`rangeset`]: interval sets; memory grows with holes, not file size.
//! - [`session`]: the sharded sender and receiver state machines and their coordinators (§6).
//! - [`pmtu`]: path-MTU probing, the search for the largest datagram the path carries.
//! - [`rate`]: the rate-control trait and controllers (§7).
//! - [`checksum`]: the whole-file BLAKE3 checksum, assembled from per-block subtrees (§8).

#![forbid(unsafe_code)]

pub mod checksum;
pub mod crypto;
pub mod pmtu;
pub mod rangeset;
pub mod rate;
pub mod replay;
pub mod rng;
pub mod session;
pub mod setup;
pub mod time;
pub mod wire;
