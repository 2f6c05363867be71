//! The `haul` binary. Thin: all logic lives in the libraries.

#![forbid(unsafe_code)]

fn main() {}
