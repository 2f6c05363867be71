//! # haul-control: the control plane
//!
//! - [`authz`]: the contract between the SSH gate and the token side.
//! - [`store`]: the SQLite store behind one boundary; migrations in `migrations/`
//!   (docs/STORE.md).
//! - [`token`]: transfer tokens (seal, open, claims, path confinement, the minter).
//! - [`authorize`]: the [`authz::Authorizer`] over the store and tokens.
//! - [`secret`]: the server secret file, its checks, rotation and per-purpose sub-keys.
//! - [`users`]: users and their restrictions as values (names, CIDR allow-lists, SSH keys).
//!
//! The SSH gate and the web console arrive with issues 5 and 6 (see README.md, "What works
//! today").

#![forbid(unsafe_code)]

pub mod authorize;
pub mod authz;
pub mod secret;
pub mod store;
pub mod token;
pub mod users;
