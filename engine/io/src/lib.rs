//! # haul-io: the data plane
//!
//! Per-core shards: one pinned thread and one io_uring each, UDP with GSO/GRO, disk I/O, and
//! hugepage-backed registered buffers, driving `haul-proto` sessions. This is the only crate
//! with `unsafe`; every block says which invariant makes it sound (STYLE.md rule 8).

#![allow(unsafe_code)]

pub mod alloc;
pub mod cpu;
pub mod tun;
pub mod wan;
