//! # haul-control: the control plane
//!
//! - [`authz`]: the contract between the SSH gate and the token side.
//! - [`store`]: the SQLite store behind one boundary; migrations in `migrations/`
//!   (docs/STORE.md).
//! - [`token`]: transfer tokens (seal, open, claims, path confinement, the minter).
//! - [`authorize`]: the [`authz::Authorizer`] over the store and tokens.
//! - [`secret`]: the server secret file, its checks, rotation and per-purpose sub-keys.
//! - [`users`]: users and their restrictions as values (names, CIDR allow-lists, SSH keys).
//! - [`gate`]: the SSH gate (russh): what it accepts, its limits, the gate's side of a transfer.
//! - [`hostkey`]: the server's host key (created on first start) and the shipped client key.
//! - [`session`]: SSH mode of the set-up channel: the Ask, the key exchange, shared helpers.
//! - [`client`]: `haul get`/`put`/`cp`: the SSH client, host key checks, the client's side.
//! - [`url`]: the `haul://` URL.
//! - [`serve`]: `haul serve`: the appliance's start-up.
//! - [`testhook`]: the secret-exposure hook of the no-secrets-in-logs test.
//! - [`web`]: the web console (HTTPS, accounts, sessions, admin console, packages, JSON API;
//!   docs/WEB.md says what is still to come).

#![forbid(unsafe_code)]

pub mod authorize;
pub mod authz;
pub mod client;
pub mod gate;
pub mod hostkey;
pub mod notify;
pub mod secret;
pub mod serve;
pub mod session;
pub mod store;
pub mod testhook;
pub mod token;
pub mod url;
pub mod users;
pub mod web;
