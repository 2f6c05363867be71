//! # haul-control: the control plane
//!
//! The SSH session gate, transfer tokens, the store and the web console arrive with issues 5 and
//! 6 (see README.md, "What works today").

#![forbid(unsafe_code)]
