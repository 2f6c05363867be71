//! The receiver shard. STUB: signatures are the contract.
#![allow(clippy::todo, unused_variables)]

use super::*;
use crate::crypto::Suite;
use crate::time::Instant;

pub use super::sender::RxDatagram;

#[derive(Debug)]
pub struct ReceiverShard {
    _p: (),
}

impl ReceiverShard {
    pub fn new(
        params: &SessionParams,
        layout: Layout,
        shard: u8,
        tx: Box<dyn Suite>,
        rx: Box<dyn Suite>,
        now: Instant,
    ) -> Result<Self, SessionError> {
        todo!()
    }
    /// Fill up to `lens.len()` datagrams (at most `crypto::MAX_BATCH`) into `out`, datagram i at
    /// `out[i * stride..]`, sealed; `lens[i]` gets its length. Returns how many. Zero means
    /// nothing to send until `poll_timeout` or new input.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        stride: usize,
        lens: &mut [usize],
    ) -> usize {
        todo!()
    }
    /// Handle received datagrams (any bytes); sets each one's `outcome`.
    pub fn handle_datagrams(&mut self, now: Instant, batch: &mut [RxDatagram<'_>]) {
        todo!()
    }
    pub fn poll_disk(&mut self) -> Option<DiskRead> {
        todo!()
    }
    /// The buffer for read slot `slot` (exactly the requested length).
    pub fn disk_buffer_mut(&mut self, slot: u8) -> &mut [u8] {
        todo!()
    }
    /// Read in slot `slot` finished: bytes read, or the error.
    pub fn handle_disk(&mut self, now: Instant, slot: u8, result: Result<usize, DiskError>) {
        todo!()
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        todo!()
    }
    pub fn handle_command(&mut self, now: Instant, cmd: ShardCommand) {
        todo!()
    }
    pub fn stats(&self) -> &ShardStats {
        todo!()
    }
    /// True once the shard has nothing more to do (closed or aborted).
    pub fn is_closed(&self) -> bool {
        todo!()
    }
}

impl ReceiverShard {
    /// A write from a `RxOutcome::Write` finished: `result` is bytes written or the error.
    /// A short or failed write leaves the rest missing; it is NAKed and sent again.
    pub fn handle_write_done(
        &mut self,
        now: Instant,
        file: u32,
        offset: u64,
        len: u32,
        result: Result<usize, DiskError>,
    ) {
        todo!()
    }
}
