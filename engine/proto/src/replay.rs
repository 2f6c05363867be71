//! Anti-replay window, one per shard per direction (docs/PROTOCOL.md §5).
//!
//! `check` is pure; `commit` is called only after the datagram's tag has verified, so a forged
//! datagram can never move the window. STUB: filled in by the wire work.

#![allow(clippy::todo)]

use thiserror::Error;

/// Width of the window in sequence numbers: at least the worst reordering we tolerate.
pub const REPLAY_WINDOW: u64 = 16_384;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// Seen before.
    #[error("duplicate sequence number")]
    Duplicate,
    /// Older than the window: cannot tell, so refuse.
    #[error("sequence number older than the replay window")]
    Stale,
}

/// A sliding bitmap over the highest sequence number seen.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    _priv: (),
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    pub fn new() -> Self {
        todo!()
    }
    /// Would `seq` be accepted? Changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        let _ = seq;
        todo!()
    }
    /// Record `seq` as seen (after its tag verified). Returns the same verdict as `check`; a
    /// rejected `seq` changes nothing.
    pub fn commit(&mut self, seq: u64) -> Result<(), ReplayError> {
        let _ = seq;
        todo!()
    }
}
