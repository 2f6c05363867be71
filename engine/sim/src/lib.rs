//! # haul-sim: the deterministic simulator
//!
//! Drives real `haul-proto` sender and receiver sessions over a simulated network and disk,
//! from a seed. The same seed replays the same run, bit for bit.

#![forbid(unsafe_code)]
