//! # haul-io: the data plane
//!
//! Per-core shards: one pinned thread and one io_uring each, UDP with GSO/GRO, disk I/O, and
//! hugepage-backed registered buffers, driving `haul-proto` sessions. This is the only crate
//! with `unsafe`; every block says which invariant makes it sound (STYLE.md rule 8).
//!
//! The network and buffer layer (see `docs/DATAPLANE.md`): [`buf`] (the slot pool), [`udp`]
//! (sockets, GSO/GRO messages), [`uring`] and [`fallback`] (the two backends), [`backend`]
//! (choosing one, `HAUL_IO_BACKEND`), [`checks`] (start-up findings) and [`error`].

#![allow(unsafe_code)]

pub mod alloc;
pub mod backend;
pub mod buf;
pub mod checks;
pub mod cpu;
pub mod error;
pub mod fallback;
pub mod files;
pub mod secmem;
pub mod transfer;
pub mod tun;
pub mod udp;
pub mod uring;
pub mod wan;
