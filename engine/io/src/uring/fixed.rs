//! Registered ("fixed") buffers for the shard's disk I/O: the shard's buffer arenas (the
//! receiver's staging buffers, the read slots) are registered with the ring once, and disk
//! reads and writes that fall inside one use `ReadFixed`/`WriteFixed` with its index, so the
//! kernel skips mapping and pinning the user pages of every operation.
//!
//! Role: a sparse table of [`MAX_FIXED_BUFFERS`] entries is registered with the ring the first
//! time a region is offered; each region then takes one entry
//! (`io_uring_register(IORING_REGISTER_BUFFERS_UPDATE)`): one syscall per region, at
//! start-up or at a region's first use, never per operation (counted in `IoStats::syscalls`).
//! [`UringBackend::push_disk_read`] and `push_disk_write` look the operation's buffer up and
//! pick the fixed opcode when it lies wholly inside a registered region, the plain one
//! otherwise.
//!
//! Invariants:
//! - Registration pins the region's pages and counts them against RLIMIT_MEMLOCK (unless the
//!   process has CAP_IPC_LOCK). If the kernel refuses (ENOMEM over the limit, or a kernel
//!   without sparse tables), nothing else changes: the table is marked refused with its
//!   errno, every later operation uses plain `Read`/`Write`, and the refusal is counted in
//!   `IoStats` (`disk_fixed_refused`, `disk_fixed_errno`) and said once on stderr with the
//!   remedy from [`checks::memlock_remedy`](crate::checks::memlock_remedy).
//! - A registered region stays allocated, at the same address, until
//!   [`UringBackend::release_fixed`] or the ring's drop (the `# Safety` contract of
//!   [`UringBackend::register_fixed`]); `release_fixed` clears the table, so no later
//!   operation can name a region whose memory was freed.
//! - At most [`MAX_FIXED_BUFFERS`] regions; a region offered when the table is full is simply
//!   not registered (its operations use the plain opcodes).

use super::UringBackend;
use std::sync::atomic::{AtomicBool, Ordering};

/// Entries of a ring's registered-buffer table: a sender's 16 read slots, a receiver's 8
/// staging buffers and its verification read slots, with room to spare.
pub const MAX_FIXED_BUFFERS: usize = 32;

/// Whether the ring's disk buffers are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FixedState {
    /// No region offered yet.
    #[default]
    Unused,
    /// The table exists; regions are registered as they are offered.
    Registered,
    /// The kernel refused (errno); disk I/O uses the plain opcodes.
    Refused(i32),
}

/// One registered region: `[addr, addr + len)`.
#[derive(Debug, Clone, Copy, Default)]
struct Region {
    addr: usize,
    len: usize,
}

/// The ring's registered-buffer table, as we mirror it.
#[derive(Debug)]
pub(super) struct FixedTable {
    regions: [Region; MAX_FIXED_BUFFERS],
    used: usize,
    pub(super) state: FixedState,
    /// Bytes registered.
    pub(super) bytes: u64,
    /// Disk operations submitted with a fixed opcode.
    pub(super) ops: u64,
    /// Registrations the kernel refused.
    pub(super) refused: u64,
}

impl FixedTable {
    pub(super) fn new() -> FixedTable {
        FixedTable {
            regions: [Region::default(); MAX_FIXED_BUFFERS],
            used: 0,
            state: FixedState::Unused,
            bytes: 0,
            ops: 0,
            refused: 0,
        }
    }

    /// The index of the region holding all of `[addr, addr + len)`.
    pub(super) fn index_of(&self, addr: usize, len: usize) -> Option<u16> {
        if self.state != FixedState::Registered || len == 0 {
            return None;
        }
        let end = addr.checked_add(len)?;
        let i = self.regions[..self.used]
            .iter()
            .position(|r| addr >= r.addr && end <= r.addr + r.len)?;
        u16::try_from(i).ok()
    }

    fn is_full(&self) -> bool {
        self.used >= MAX_FIXED_BUFFERS
    }
}

/// The refusal is said once per process, not once per shard.
static REFUSAL_SAID: AtomicBool = AtomicBool::new(false);

impl UringBackend {
    /// Registers `[ptr, ptr + len)` with the ring for fixed disk I/O, once: a region already
    /// registered, a full table or a refused registration change nothing. Returns whether the
    /// region is registered now. The first call sets up the table; a refusal (memlock, an old
    /// kernel) marks it refused for good and is reported (see the module doc).
    ///
    /// # Safety
    /// The region must be one live allocation of `len` bytes that stays allocated, at the same
    /// address, until [`release_fixed`](Self::release_fixed) is called or the backend dropped.
    pub unsafe fn register_fixed(&mut self, ptr: *mut u8, len: usize) -> bool {
        let addr = ptr as usize;
        if self.fixed.index_of(addr, len).is_some() {
            return true;
        }
        if !self.features.has_fixed_rw || len == 0 || self.fixed.is_full() {
            return false;
        }
        if let FixedState::Refused(_) = self.fixed.state {
            return false;
        }
        if self.fixed.state == FixedState::Unused {
            self.stats.syscalls += 1;
            if let Err(e) = self.ring.submitter().register_buffers_sparse(MAX_FIXED_BUFFERS as u32)
            {
                self.on_fixed_refused(&e, len);
                return false;
            }
            self.fixed.state = FixedState::Registered;
        }
        let iov = libc::iovec { iov_base: ptr.cast(), iov_len: len };
        let at = self.fixed.used as u32;
        self.stats.syscalls += 1;
        // SAFETY: the caller guarantees the region is live and stays so until
        // `release_fixed` or drop; the kernel pins its pages, and `at` is a free entry of the
        // sparse table registered above.
        match unsafe { self.ring.submitter().register_buffers_update(at, &[iov], None) } {
            Ok(()) => {
                self.fixed.regions[self.fixed.used] = Region { addr, len };
                self.fixed.used += 1;
                self.fixed.bytes += len as u64;
                true
            }
            Err(e) => {
                self.on_fixed_refused(&e, len);
                false
            }
        }
    }

    /// Marks the table refused, counts it and says so once, with the remedy.
    fn on_fixed_refused(&mut self, e: &std::io::Error, len: usize) {
        let errno = e.raw_os_error().unwrap_or(0);
        self.fixed.state = FixedState::Refused(errno);
        self.fixed.refused += 1;
        if REFUSAL_SAID.swap(true, Ordering::Relaxed) {
            return;
        }
        // What this shard would register in all: its regions so far and this one, at most a
        // full table of regions this size.
        let wanted = self.fixed.bytes + (len * (MAX_FIXED_BUFFERS - self.fixed.used)) as u64;
        let limit = crate::checks::memlock_soft_limit()
            .map_or_else(|| "unlimited".to_string(), |b| format!("{b} bytes"));
        eprintln!(
            "haul-io: io_uring refused to register {len} bytes of disk buffers ({e}; \
             RLIMIT_MEMLOCK is {limit}); disk I/O uses unregistered buffers (plain Read/Write). \
             fix: {}",
            crate::checks::memlock_remedy(wanted)
        );
    }

    /// Forgets every registered region and unregisters the table: called once the shard's
    /// buffers have no operation in flight (`drain_disk`) and before they are freed.
    pub fn release_fixed(&mut self) {
        if self.fixed.state == FixedState::Registered {
            // An error leaves the table to the ring's drop; no entry is used after this.
            self.stats.syscalls += 1;
            let _ = self.ring.submitter().unregister_buffers();
            self.fixed.state = FixedState::Unused;
        }
        self.fixed.used = 0;
    }

    /// Whether the disk buffers are registered, and the errno if the kernel refused.
    pub fn fixed_state(&self) -> FixedState {
        self.fixed.state
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_fixed_only_wholly_inside_a_registered_region() {
        let mut t = FixedTable::new();
        t.regions[0] = Region { addr: 4096, len: 8192 };
        t.regions[1] = Region { addr: 65536, len: 4096 };
        t.used = 2;
        assert_eq!(t.index_of(4096, 10), None, "not registered yet");
        t.state = FixedState::Registered;
        assert_eq!(t.index_of(4096, 8192), Some(0));
        assert_eq!(t.index_of(8000, 100), Some(0));
        assert_eq!(t.index_of(12000, 300), None, "runs past the end");
        assert_eq!(t.index_of(4000, 200), None, "starts before");
        assert_eq!(t.index_of(65536, 4096), Some(1));
        assert_eq!(t.index_of(65536, 0), None, "empty");
        assert_eq!(t.index_of(usize::MAX - 1, 4), None, "no overflow");
        t.state = FixedState::Refused(libc::ENOMEM);
        assert_eq!(t.index_of(4096, 10), None, "refused: plain opcodes");
    }
}
