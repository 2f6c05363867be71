//! # haul-control: the control plane
//!
//! - [`authz`]: the contract between the SSH gate and the token side.
//! - [`store`]: the SQLite store behind one boundary; migrations in `migrations/`.
//!
//! The SSH gate, transfer tokens and the web console arrive with issues 5 and 6 (see
//! README.md, "What works today").

#![forbid(unsafe_code)]

pub mod authz;
pub mod store;
