//! Disk reads and writes on the shard's own io_uring, beside its network operations.
//!
//! Role: a shard queues positional `Read`/`Write` SQEs (`ReadFixed`/`WriteFixed` when the
//! buffer lies in a region registered with the ring, `uring::fixed`) for its files on the same ring that
//! carries its sockets' sends and receives; their completions are harvested by the same
//! `io_uring_enter` calls (and routed here from the backend's completion loop), so disk I/O
//! costs no syscall of its own and never blocks the shard thread.
//!
//! Invariants (STYLE.md rule 9):
//! - At most [`MAX_DISK_IN_FLIGHT`] disk operations are queued or in flight, plus their
//!   completions not yet taken by [`UringBackend::poll_disk_done`]: one slot each, allocated
//!   once. A slot is freed only when its completion is taken.
//! - `user_data` is `OpKind::Disk` + slot index + generation; a stale or unknown completion
//!   is ignored.
//! - The caller's buffer and file descriptor stay valid until the operation's completion has
//!   been taken (the `# Safety` contract of the push functions); [`UringBackend::drain_disk`]
//!   waits for every one, and the backend's `Drop` does too, aborting the process rather than
//!   returning while the kernel might still use a buffer.
//! - A completion carries the kernel's result as is: bytes moved (possibly short), or
//!   `-errno`. Mapping it is the caller's business (`transfer::store::disk_error`).

use super::{OpKind, UringBackend, decode_user_data, encode_user_data};
use crate::error::IoError;
use io_uring::opcode;
use io_uring::types::Fd;
use std::os::fd::RawFd;
use std::time::Duration;

/// Most disk operations a shard has queued, in flight or completed-but-not-taken at once.
pub const MAX_DISK_IN_FLIGHT: usize = 32;
/// One timed wait for disk completions while draining.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
/// Most waits without progress while draining before the process aborts (a disk that does
/// not answer for this many waits would otherwise let freed buffers be written to).
const MAX_DRAIN_WAITS: usize = 600;

/// One finished disk operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskDone {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// Bytes read or written (may be fewer than asked), or `-errno`.
    pub result: i32,
}

#[derive(Debug, Clone, Copy, Default)]
enum SlotState {
    #[default]
    Free,
    InFlight,
    Done(i32),
}

#[derive(Debug, Clone, Copy, Default)]
struct DiskSlot {
    state: SlotState,
    generation: u32,
    tag: u64,
    /// Submission order, so completions are taken oldest first.
    seq: u64,
}

/// The disk slots of one ring.
#[derive(Debug)]
pub(super) struct DiskOps {
    slots: [DiskSlot; MAX_DISK_IN_FLIGHT],
    busy: usize,
    next_seq: u64,
    /// Operations submitted through the ring so far.
    pub submitted: u64,
}

impl DiskOps {
    pub(super) fn new() -> DiskOps {
        DiskOps {
            slots: [DiskSlot::default(); MAX_DISK_IN_FLIGHT],
            busy: 0,
            next_seq: 0,
            submitted: 0,
        }
    }

    /// Takes a free slot for `tag`; its `user_data`.
    fn claim(&mut self, tag: u64) -> Option<(usize, u64)> {
        let i = self.slots.iter().position(|s| matches!(s.state, SlotState::Free))?;
        let s = &mut self.slots[i];
        s.generation = s.generation.wrapping_add(1);
        s.state = SlotState::InFlight;
        s.tag = tag;
        s.seq = self.next_seq;
        self.next_seq += 1;
        self.busy += 1;
        Some((i, encode_user_data(OpKind::Disk, i as u16, s.generation)))
    }

    /// Gives back a slot whose SQE could not be queued.
    fn unclaim(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = SlotState::Free;
            self.busy -= 1;
        }
    }

    /// Records the completion of slot `index`, generation `generation`.
    pub(super) fn on_completion(&mut self, index: u16, generation: u32, result: i32) {
        if let Some(s) = self.slots.get_mut(usize::from(index))
            && s.generation == generation
            && matches!(s.state, SlotState::InFlight)
        {
            s.state = SlotState::Done(result);
        }
    }

    /// The oldest completed operation, freeing its slot.
    fn take_done(&mut self) -> Option<DiskDone> {
        let (i, s) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Done(_)))
            .min_by_key(|(_, s)| s.seq)?;
        let SlotState::Done(result) = s.state else { return None };
        let done = DiskDone { tag: s.tag, result };
        self.slots[i].state = SlotState::Free;
        self.busy -= 1;
        Some(done)
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s.state, SlotState::InFlight)).count()
    }
}

impl UringBackend {
    /// True when the ring offers positional Read and Write (Linux 5.6+).
    pub fn has_disk_ops(&self) -> bool {
        self.features.has_read_write
    }

    /// True when one more disk operation may be pushed.
    pub fn disk_has_room(&self) -> bool {
        self.disk.busy < MAX_DISK_IN_FLIGHT
    }

    /// Disk operations queued or in flight whose completion has not been taken.
    pub fn disk_busy(&self) -> usize {
        self.disk.busy
    }

    /// Disk operations submitted through the ring since construction.
    pub fn disk_ops_submitted(&self) -> u64 {
        self.disk.submitted
    }

    /// Queues a read of `len` bytes at `offset` of `fd` into `buf`; its completion comes
    /// back from [`poll_disk_done`](Self::poll_disk_done) with `tag`. The SQE goes to the
    /// kernel with the ring's next `io_uring_enter` (or [`submit_disk`](Self::submit_disk)).
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes, and `fd` must stay open, until this
    /// operation's completion has been taken by `poll_disk_done` (or `drain_disk` returned).
    pub unsafe fn push_disk_read(
        &mut self,
        fd: RawFd,
        buf: *mut u8,
        len: u32,
        offset: u64,
        tag: u64,
    ) -> Result<(), IoError> {
        let (i, ud) = self.disk.claim(tag).ok_or(IoError::Invalid("disk slots full"))?;
        let fixed = self.fixed.index_of(buf as usize, len as usize);
        let entry = match fixed {
            Some(index) => opcode::ReadFixed::new(Fd(fd), buf, len, index).offset(offset).build(),
            None => opcode::Read::new(Fd(fd), buf, len).offset(offset).build(),
        };
        self.push_disk_entry(i, &entry.user_data(ud), fixed.is_some())
    }

    /// Queues a write of `len` bytes of `buf` at `offset` of `fd`; as
    /// [`push_disk_read`](Self::push_disk_read).
    ///
    /// # Safety
    /// `buf` must be valid for reads of `len` bytes and unchanged, and `fd` must stay open,
    /// until this operation's completion has been taken (or `drain_disk` returned).
    pub unsafe fn push_disk_write(
        &mut self,
        fd: RawFd,
        buf: *const u8,
        len: u32,
        offset: u64,
        tag: u64,
    ) -> Result<(), IoError> {
        let (i, ud) = self.disk.claim(tag).ok_or(IoError::Invalid("disk slots full"))?;
        let fixed = self.fixed.index_of(buf as usize, len as usize);
        let entry = match fixed {
            Some(index) => opcode::WriteFixed::new(Fd(fd), buf, len, index).offset(offset).build(),
            None => opcode::Write::new(Fd(fd), buf, len).offset(offset).build(),
        };
        self.push_disk_entry(i, &entry.user_data(ud), fixed.is_some())
    }

    fn push_disk_entry(
        &mut self,
        i: usize,
        entry: &io_uring::squeue::Entry,
        is_fixed: bool,
    ) -> Result<(), IoError> {
        match self.push(entry) {
            Ok(()) => {
                self.disk.submitted += 1;
                self.fixed.ops += u64::from(is_fixed);
                Ok(())
            }
            Err(e) => {
                self.disk.unclaim(i);
                Err(e)
            }
        }
    }

    /// Hands queued SQEs to the kernel without waiting (one `io_uring_enter`, only if any
    /// are queued).
    pub fn submit_disk(&mut self) -> Result<(), IoError> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.enter(0, None)
    }

    /// The oldest finished disk operation not yet taken.
    pub fn poll_disk_done(&mut self) -> Option<DiskDone> {
        self.disk.take_done()
    }

    /// Submits what is queued and waits up to `timeout` for at least one disk completion
    /// (returns at once if one is waiting). Network completions harvested meanwhile stay
    /// queued, in order, for the next receive.
    pub fn wait_disk(&mut self, timeout: Duration) -> Result<(), IoError> {
        self.harvest_disk();
        if self.disk.slots.iter().any(|s| matches!(s.state, SlotState::Done(_))) {
            return Ok(());
        }
        if self.disk.in_flight() == 0 {
            return self.submit_disk();
        }
        self.enter(1, Some(timeout))?;
        self.harvest_disk();
        Ok(())
    }

    /// Moves disk completions out of the CQ into their slots; other completions keep their
    /// order in the pending queue.
    fn harvest_disk(&mut self) {
        self.harvest();
        for _ in 0..self.pending.len {
            let Some(c) = self.pending.pop() else { break };
            match decode_user_data(c.user_data) {
                Some((OpKind::Disk, i, g)) => self.disk.on_completion(i, g, c.result),
                _ => self.pending.push(c),
            }
        }
    }

    /// Waits until no disk operation is in flight; completions stay to be taken. Returns the
    /// number still in flight (0 unless the ring failed). Aborts the process if the kernel
    /// holds an operation for [`MAX_DRAIN_WAITS`] waits without finishing any, because
    /// returning would let the caller free a buffer the kernel may still use.
    pub fn drain_disk(&mut self) -> usize {
        let mut idle_waits = 0;
        while self.disk.in_flight() > 0 {
            let before = self.disk.in_flight();
            if self.wait_disk(DRAIN_WAIT).is_err() {
                idle_waits += 1;
            }
            if self.disk.in_flight() == before {
                idle_waits += 1;
            }
            if idle_waits > MAX_DRAIN_WAITS {
                eprintln!(
                    "haul-io: {before} io_uring disk operations cannot be reaped; aborting to keep their buffers safe"
                );
                std::process::abort();
            }
        }
        0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_completions_come_oldest_first() {
        let mut ops = DiskOps::new();
        let mut uds = Vec::new();
        for tag in 0..MAX_DISK_IN_FLIGHT as u64 {
            uds.push(ops.claim(tag).unwrap());
        }
        assert!(ops.claim(99).is_none(), "no slot beyond MAX_DISK_IN_FLIGHT");
        // Complete in reverse; they are taken in submission order.
        for &(_, ud) in uds.iter().rev() {
            let (kind, i, g) = decode_user_data(ud).unwrap();
            assert_eq!(kind, OpKind::Disk);
            ops.on_completion(i, g, 7);
        }
        assert_eq!(ops.take_done(), Some(DiskDone { tag: 0, result: 7 }));
        assert_eq!(ops.take_done(), Some(DiskDone { tag: 1, result: 7 }));
        // A stale generation is ignored.
        let (i, ud) = ops.claim(50).unwrap();
        let (_, _, g) = decode_user_data(ud).unwrap();
        ops.on_completion(i as u16, g.wrapping_sub(1), -5);
        assert_eq!(ops.in_flight(), 1);
        ops.on_completion(i as u16, g, -libc::ENOSPC);
        assert_eq!(ops.in_flight(), 0);
    }
}
