//! One side of a simulated transfer: its coordinator, its shards and its disk.
//!
//! The sender and receiver objects of `haul-proto` have the same shard interface; the enums here
//! let the driver treat both sides alike and keep the receiver-only calls (`handle_write_done`,
//! file operations) explicit.
//!
//! Invariant: every call into a coordinator or a shard happens inside
//! [`with_side`](crate::side::with_side) for this endpoint's side (the driver does the wrapping),
//! so heap used by the protocol objects is charged to the right side.

use crate::disk::Disk;
use crate::side::Side;
use haul_proto::rangeset::RangeSet;
use haul_proto::session::sender::RxDatagram;
use haul_proto::session::{
    DiskError, DiskRead, FileOp, Outcome, ReceiverCoordinator, ReceiverShard, SenderCoordinator,
    SenderShard, ShardCommand, ShardEvent, ShardStats,
};
use haul_proto::time::Instant;

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful per simulated endpoint, held in a Vec for the run: boxing buys nothing"
)]
pub enum AnyShard {
    Sender(SenderShard),
    Receiver(ReceiverShard),
}

macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            AnyShard::Sender($x) => $e,
            AnyShard::Receiver($x) => $e,
        }
    };
}

impl AnyShard {
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        stride: usize,
        lens: &mut [usize],
    ) -> usize {
        each!(self, s => s.poll_transmit(now, out, stride, lens))
    }
    pub fn handle_datagrams(&mut self, now: Instant, batch: &mut [RxDatagram<'_>]) {
        each!(self, s => s.handle_datagrams(now, batch))
    }
    pub fn poll_disk(&mut self) -> Option<DiskRead> {
        each!(self, s => s.poll_disk())
    }
    pub fn disk_buffer_mut(&mut self, slot: u8) -> &mut [u8] {
        each!(self, s => s.disk_buffer_mut(slot))
    }
    pub fn handle_disk(&mut self, now: Instant, slot: u8, result: Result<usize, DiskError>) {
        each!(self, s => s.handle_disk(now, slot, result))
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        each!(self, s => s.handle_timeout(now))
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        each!(self, s => s.poll_timeout())
    }
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        each!(self, s => s.poll_event())
    }
    pub fn handle_command(&mut self, now: Instant, cmd: ShardCommand) {
        each!(self, s => s.handle_command(now, cmd))
    }
    pub fn stats(&self) -> &ShardStats {
        each!(self, s => s.stats())
    }
    /// The shard's internal state, for failure reports.
    pub fn debug_state(&self) -> String {
        match self {
            AnyShard::Sender(s) => s.debug_state(),
            AnyShard::Receiver(r) => r.debug_state(),
        }
    }

    pub fn is_closed(&self) -> bool {
        each!(self, s => s.is_closed())
    }
}

#[derive(Debug)]
pub enum AnyCoord {
    Sender(SenderCoordinator),
    Receiver(ReceiverCoordinator),
}

impl AnyCoord {
    pub fn handle_event(&mut self, now: Instant, shard: u8, ev: ShardEvent) {
        match self {
            AnyCoord::Sender(c) => c.handle_event(now, shard, ev),
            AnyCoord::Receiver(c) => c.handle_event(now, shard, ev),
        }
    }
    pub fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        match self {
            AnyCoord::Sender(c) => c.poll_command(),
            AnyCoord::Receiver(c) => c.poll_command(),
        }
    }
    pub fn poll_file_op(&mut self) -> Option<FileOp> {
        match self {
            AnyCoord::Sender(_) => None,
            AnyCoord::Receiver(c) => c.poll_file_op(),
        }
    }
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            AnyCoord::Sender(c) => c.outcome(),
            AnyCoord::Receiver(c) => c.outcome(),
        }
    }
}

/// One side: coordinator, shards, disk, and the sequence numbers each shard has sent.
#[derive(Debug)]
pub struct Endpoint {
    pub side: Side,
    pub coord: AnyCoord,
    pub shards: Vec<AnyShard>,
    pub disk: Disk,
    /// Sequence numbers transmitted, per shard (they rise, so this stays a handful of ranges).
    pub sent_seqs: Vec<RangeSet>,
}

impl Endpoint {
    pub fn is_closed(&self) -> bool {
        self.shards.iter().all(AnyShard::is_closed)
    }
    /// Earliest shard deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.shards.iter().filter_map(AnyShard::poll_timeout).min()
    }
}
