//! The coordinators. STUB: signatures are the contract.
#![allow(clippy::todo, unused_variables)]

use super::*;
use crate::time::Instant;

/// The sending side's coordinator: merges block hashes into file checksums, tells shard 0 to
/// announce finished files, owns the rate controller and shares the rate among shards, and
/// decides the session's outcome.
#[derive(Debug)]
pub struct SenderCoordinator {
    _p: (),
}

impl SenderCoordinator {
    pub fn new(params: &SessionParams, layout: Layout, now: Instant) -> Result<Self, SessionError> {
        todo!()
    }
    pub fn handle_event(&mut self, now: Instant, shard: u8, event: ShardEvent) {
        todo!()
    }
    pub fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        todo!()
    }
    /// Change the rate limits during the transfer.
    pub fn set_limits(&mut self, now: Instant, limits: RateLimits) {
        todo!()
    }
    pub fn rate_bps(&self) -> u64 {
        todo!()
    }
    /// Abort the session locally.
    pub fn abort(&mut self, reason: AbortReason) {
        todo!()
    }
    /// The outcome, once known (then stays).
    pub fn outcome(&self) -> Option<Outcome> {
        todo!()
    }
}

/// The receiving side's coordinator: merges block hashes, checks each file's checksum against
/// the sender's, asks the driver to finalize verified files, acknowledges them, and decides the
/// session's outcome.
#[derive(Debug)]
pub struct ReceiverCoordinator {
    _p: (),
}

impl ReceiverCoordinator {
    pub fn new(params: &SessionParams, layout: Layout, now: Instant) -> Result<Self, SessionError> {
        todo!()
    }
    pub fn handle_event(&mut self, now: Instant, shard: u8, event: ShardEvent) {
        todo!()
    }
    pub fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        todo!()
    }
    pub fn poll_file_op(&mut self) -> Option<FileOp> {
        todo!()
    }
    pub fn handle_file_op_done(&mut self, now: Instant, op: FileOp, result: Result<(), DiskError>) {
        todo!()
    }
    pub fn abort(&mut self, reason: AbortReason) {
        todo!()
    }
    pub fn outcome(&self) -> Option<Outcome> {
        todo!()
    }
    /// Files verified and finalized so far.
    pub fn files_done(&self) -> u32 {
        todo!()
    }
}
