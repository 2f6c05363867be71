//! Sharded transfer sessions (docs/PROTOCOL.md §6).
//!
//! A transfer is a *coordinator* plus N *shards*, on each side. A shard owns one slice of the
//! blocks (see [`layout`]), its own sequence space, keys and replay window, and speaks to its
//! peer shard over UDP. The coordinator owns what spans shards: the per-file checksums, file
//! completion, the rate, and the session's end. Shards and coordinators talk only through the
//! message enums here ([`ShardEvent`] up, [`ShardCommand`] down), so the data plane can put
//! each shard on its own core and the simulator can run them all in one thread.
//!
//! Every object is sans-IO: `handle_*` takes inputs (datagrams, disk completions, messages,
//! `now`), `poll_*` yields outputs (datagrams, disk operations, messages, the next deadline).
//!
//! Disk is a peer: a shard asks for reads (`poll_disk`), the driver reads into the shard's own
//! buffer (`disk_buffer_mut`) and reports the result (`handle_disk`). A receiver shard hands
//! decrypted payload back as a [`RxOutcome::Write`]; the driver writes it from the datagram
//! buffer and reports the result (`handle_write_done`). Failed or short writes are recovered by
//! the protocol itself: the unwritten range is simply missing, so it is NAKed and sent again.

pub mod coordinator;
pub mod fuzz;
pub mod layout;
pub mod receiver;
pub mod sender;
mod shared;
#[cfg(test)]
mod tests;

pub use coordinator::{ReceiverCoordinator, SenderCoordinator};
pub use layout::{FileEntry, Layout, LayoutError, Manifest};
pub use receiver::ReceiverShard;
pub use sender::{RxDatagram, SenderShard};

use crate::crypto::{Direction, KeySchedule, SuiteId};
use crate::rate::{FeedbackSample, Policy, RateLimits};
use crate::time::Duration;
use thiserror::Error;

/// Highest per-shard sequence counter: the top 8 bits of a sequence number name the shard, the
/// low 56 count. A shard aborts with [`AbortReason::SequenceExhausted`] before reaching this.
pub const SEQ_COUNTER_MAX: u64 = (1 << 56) - 1;
/// Most disk reads one shard has in flight: its read slots, one block buffer each. Small
/// files leave one short block per slot and every slot drains in one send batch, so with 4
/// slots a sender went back to its socket after 3 files; 16 let 10,000 files of 1-64 KiB
/// through about 1.5x faster on loopback (benches/RESULTS.md, small files).
pub const MAX_DISK_READS: usize = 16;
/// Memory for one read slot. The shards allocate their own (`Vec<u8>`); a driver may lend
/// its own instead before any read starts (`SenderShard::use_read_memory`,
/// `ReceiverShard::use_read_memory`): engine/io lends 4 KiB-aligned slices of a
/// hugepage-backed region, so its reads can be O_DIRECT and registered with its ring. The
/// memory must not move while the slot lives (a driver registers its address once).
pub trait SlotMemory: Send + std::fmt::Debug {
    /// The slot's bytes.
    fn bytes(&self) -> &[u8];
    /// The slot's bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl SlotMemory for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Puts `bufs` in place of the read slots' memory, in slot order, while every slot is free:
/// how many were taken (none once a read started; a buffer shorter than `block` is not
/// taken, and that slot keeps its own).
fn lend_read_memory<'a>(
    slots: impl Iterator<Item = &'a mut Box<dyn SlotMemory>>,
    all_free: bool,
    block: usize,
    bufs: impl IntoIterator<Item = Box<dyn SlotMemory>>,
) -> usize {
    if !all_free {
        return 0;
    }
    let mut taken = 0;
    for (slot, buf) in slots.zip(bufs) {
        if buf.bytes().len() >= block {
            *slot = buf;
            taken += 1;
        }
    }
    taken
}

/// Most payload bytes the receiver lets wait on disk writes before it drops new data (which is
/// then NAKed): bounds the driver's buffers held for writes.
pub const MAX_PENDING_WRITE_BYTES: u64 = 64 << 20;

/// Which end of the set-up channel this process is; fixes the key directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Everything both ends agree on before the first datagram (over the set-up channel).
#[derive(Clone, Debug)]
pub struct SessionParams {
    pub session_id: u64,
    pub shards: u8,
    pub suite: SuiteId,
    /// UDP payload bytes per datagram (1472 suits IPv4 on a 1500-byte MTU, 1452 IPv6).
    pub datagram_size: u16,
    /// The sender probes sizes above `datagram_size` up to this one (path-MTU probing,
    /// [`crate::pmtu`]); at most `datagram_size` turns probing off. The receiver
    /// acknowledges probes up to this size only (at least `datagram_size`): a receiver that
    /// takes probes sets it to its own ceiling, [`crate::pmtu::MAX_PROBE_SIZE`] when it has
    /// none.
    pub datagram_size_max: u16,
    /// IP + UDP header bytes per datagram (28 IPv4, 48 IPv6): rates count them.
    pub ip_overhead: u16,
    /// Receiver's flow-control window per shard, bytes of stream beyond the cumulative ack.
    pub window_bytes: u64,
    pub rate: RateLimits,
    pub policy: Policy,
    /// No authenticated datagram from the peer for this long ends the session.
    pub idle_timeout: Duration,
    /// How long the receiver waits before it takes a hole for a loss, not a reordering.
    pub reorder_delay: Duration,
    /// How often the receiver sends feedback, window and NAKs.
    pub feedback_interval: Duration,
    /// The sender's first guess of the round-trip time, before any sample.
    pub initial_rtt: Duration,
}

impl SessionParams {
    /// Defaults for a 1500-byte IPv4 path.
    pub fn new(session_id: u64, suite: SuiteId) -> Self {
        SessionParams {
            session_id,
            shards: 1,
            suite,
            datagram_size: 1472,
            datagram_size_max: 1472,
            ip_overhead: 28,
            window_bytes: 256 << 20,
            rate: RateLimits { min_bps: 0, target_bps: 1_000_000_000 },
            policy: Policy::Fair,
            idle_timeout: Duration::from_secs(30),
            reorder_delay: Duration::from_millis(4),
            feedback_interval: Duration::from_millis(2),
            initial_rtt: Duration::from_millis(100),
        }
    }

    /// File bytes carried by one full data datagram.
    pub fn payload_per_datagram(&self) -> usize {
        usize::from(self.datagram_size).saturating_sub(shared::DATA_OVERHEAD)
    }

    pub fn check(&self) -> Result<(), SessionError> {
        if self.payload_per_datagram() < 64
            || self.datagram_size > 9216
            || self.datagram_size_max > 9216
        {
            return Err(SessionError::BadDatagramSize(self.datagram_size));
        }
        if self.shards == 0 || self.shards > layout::MAX_SHARDS {
            return Err(SessionError::Layout(LayoutError::BadShardCount(self.shards)));
        }
        Ok(())
    }
}

/// The (transmit, receive) key directions of this end: a client always transmits
/// client-to-server, whichever way the file goes.
pub fn shard_directions(role: Role) -> (Direction, Direction) {
    match role {
        Role::Client => (Direction::ClientToServer, Direction::ServerToClient),
        Role::Server => (Direction::ServerToClient, Direction::ClientToServer),
    }
}

/// Build one shard's (tx, rx) suites.
pub fn shard_suites(
    keys: &KeySchedule,
    role: Role,
    shard: u8,
) -> (Box<dyn crate::crypto::Suite>, Box<dyn crate::crypto::Suite>) {
    let (tx, rx) = shard_directions(role);
    let tx = crate::crypto::new_suite(&keys.direction_keys(tx, shard));
    let rx = crate::crypto::new_suite(&keys.direction_keys(rx, shard));
    (tx, rx)
}

/// Why a session ended early. Carried on the wire as a `u16` in `Abort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum AbortReason {
    Cancelled = 1,
    IdleTimeout = 2,
    DiskReadFailed = 3,
    DiskWriteFailed = 4,
    DiskFull = 5,
    ChecksumMismatch = 6,
    SequenceExhausted = 7,
    ProtocolViolation = 8,
    ResourceLimit = 9,
    /// A code this build does not know, from a newer peer.
    Unknown = 0xffff,
}

impl AbortReason {
    pub fn from_u16(v: u16) -> AbortReason {
        use AbortReason::*;
        [
            Cancelled,
            IdleTimeout,
            DiskReadFailed,
            DiskWriteFailed,
            DiskFull,
            ChecksumMismatch,
            SequenceExhausted,
            ProtocolViolation,
            ResourceLimit,
        ]
        .into_iter()
        .find(|r| *r as u16 == v)
        .unwrap_or(Unknown)
    }
}

/// A disk failure as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum DiskError {
    /// EINTR/EAGAIN: try again. Never fatal.
    #[error("interrupted")]
    Interrupted,
    /// EIO.
    #[error("I/O error")]
    Io,
    /// ENOSPC/EDQUOT.
    #[error("no space left on device")]
    NoSpace,
    /// EROFS/EACCES/EPERM.
    #[error("permission denied or read-only")]
    Permission,
    /// ENOENT or the file changed size under us.
    #[error("file missing or changed")]
    Missing,
    /// Any other errno.
    #[error("os error {0}")]
    Other(i32),
}

impl DiskError {
    pub fn is_transient(self) -> bool {
        matches!(self, DiskError::Interrupted)
    }
}

/// How a session ended, as a driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file verified (and, on the receiver, finalized).
    Complete,
    /// Ended early, by us or by the peer. `disk` names the disk error behind a disk abort.
    Aborted { reason: AbortReason, by_peer: bool, disk: Option<DiskError>, file: Option<u32> },
}

/// A disk read a shard wants: `len` bytes of `file` at `offset` into read slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskRead {
    pub slot: u8,
    pub file: u32,
    pub offset: u64,
    pub len: u32,
}

/// What the receiver shard made of one datagram.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RxOutcome {
    /// Not yet handled.
    #[default]
    Pending,
    /// Accepted; nothing to write.
    Consumed,
    /// Accepted data: write `buf[payload]` to `file` at `offset`, then call
    /// `handle_write_done(file, offset, len, result)`.
    Write { file: u32, offset: u64, payload: core::ops::Range<usize> },
    /// Dropped, and counted.
    Rejected(Reject),
}

/// Why a datagram was dropped. Each is counted in [`RejectCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Header does not decode.
    Malformed,
    /// Another session's id.
    WrongSession,
    /// Another shard's datagram, or a shard this session lacks.
    WrongShard,
    /// A packet type only this end sends: our own datagram reflected back.
    Reflected,
    /// Sequence number seen before.
    Replayed,
    /// Sequence number older than the replay window.
    Stale,
    /// Tag did not verify: forged or corrupted.
    BadTag,
    /// Authenticated but its body is malformed or out of range: a peer bug. Counted, dropped.
    BadBody,
    /// Data we cannot take now (write backlog full); it will be NAKed.
    Busy,
    /// Data already received.
    Duplicate,
}

/// Rejected datagrams by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts {
    pub malformed: u64,
    pub wrong_session: u64,
    pub wrong_shard: u64,
    pub reflected: u64,
    pub replayed: u64,
    pub stale: u64,
    pub bad_tag: u64,
    pub bad_body: u64,
    pub busy: u64,
    pub duplicate: u64,
}

impl RejectCounts {
    pub fn add(&mut self, r: Reject) {
        let c = match r {
            Reject::Malformed => &mut self.malformed,
            Reject::WrongSession => &mut self.wrong_session,
            Reject::WrongShard => &mut self.wrong_shard,
            Reject::Reflected => &mut self.reflected,
            Reject::Replayed => &mut self.replayed,
            Reject::Stale => &mut self.stale,
            Reject::BadTag => &mut self.bad_tag,
            Reject::BadBody => &mut self.bad_body,
            Reject::Busy => &mut self.busy,
            Reject::Duplicate => &mut self.duplicate,
        };
        *c += 1;
    }
    /// Datagrams dropped before authentication or by it: what an attacker can cause.
    pub fn hostile(&self) -> u64 {
        self.malformed
            + self.wrong_session
            + self.wrong_shard
            + self.reflected
            + self.replayed
            + self.stale
            + self.bad_tag
    }
    pub fn merge(&mut self, o: &RejectCounts) {
        self.malformed += o.malformed;
        self.wrong_session += o.wrong_session;
        self.wrong_shard += o.wrong_shard;
        self.reflected += o.reflected;
        self.replayed += o.replayed;
        self.stale += o.stale;
        self.bad_tag += o.bad_tag;
        self.bad_body += o.bad_body;
        self.busy += o.busy;
        self.duplicate += o.duplicate;
    }
}

/// Traffic counters of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// File bytes sent in data datagrams, first transmissions.
    pub data_bytes_sent: u64,
    /// File bytes sent again.
    pub data_bytes_resent: u64,
    /// File bytes the receiver accepted and handed to the disk.
    pub data_bytes_received: u64,
    /// File bytes accepted by the receiver that it already had.
    pub data_bytes_duplicate: u64,
    pub naks_sent: u64,
    pub naks_received: u64,
    pub rejects: RejectCounts,
}

/// Shard → coordinator.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardEvent {
    /// A block was hashed (sender: on its first read; receiver: after it was written).
    BlockHashed { file: u32, block_in_file: u64, hash: crate::checksum::BlockHash },
    /// Sender: a feedback sample for the rate controller.
    Feedback(FeedbackSample),
    /// Sender: IP-layer bytes sent since the last such event.
    Sent { ip_bytes: u64 },
    /// Sender: every byte of the shard's stream has been sent once; what is left is resends.
    /// Once per shard. Its share of the rate goes to the shards still sending new data.
    FirstPassSent,
    /// Receiver: the peer says `file` is whole, with this size and checksum.
    PeerFileDone { file: u32, size: u64, hash: crate::checksum::Hash },
    /// Sender: the peer verified `file` (or found a mismatch).
    PeerFileAck { file: u32, verified: bool },
    /// The peer sent `Complete`.
    PeerComplete,
    /// The shard's session ended early (locally or by the peer).
    Aborted { reason: AbortReason, by_peer: bool, disk: Option<DiskError>, file: Option<u32> },
}

/// Coordinator → shard.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardCommand {
    /// Pace at this many bits per second (IP layer).
    SetRate { bps: u64 },
    /// Sender, shard 0: tell the peer `file` is whole; resend until acknowledged.
    SendFileDone { file: u32, size: u64, hash: crate::checksum::Hash },
    /// Receiver, shard 0: acknowledge `file`.
    SendFileAck { file: u32, verified: bool },
    /// Send `Complete` (and keep answering the peer's `Complete` with it).
    SendComplete,
    /// Abort with this reason: send `Abort` to the peer and stop.
    Abort { reason: AbortReason },
    /// The session is over; go quiet.
    Close,
}

/// Receiver coordinator → driver: file-level disk work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// `file` is verified: fsync it, set its mode and times, rename it into place. Report with
    /// `handle_file_op_done`.
    Finalize { file: u32 },
}

/// Errors building a session from its parameters (the caller's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("datagram size {0} is too small or too large")]
    BadDatagramSize(u16),
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("shard {0} is outside the session's shard count")]
    BadShard(u8),
}
