//! Free space of the destination filesystem, and the "need N bytes" check.
//!
//! [`free_space`] reads `fstatvfs` on any open fd of the filesystem; [`check_space`] turns a
//! shortfall into [`FileError::DiskFull`], whose message reads like
//! "not enough space for big.bin: need 1.0 GiB, 512 MiB available on /mnt/x".
//!
//! Invariant: available space is what an unprivileged writer may use (`f_bavail`), the figure
//! `df` shows; root may have a little more (reserved blocks), never less.

use super::dest::DestRoot;
use super::error::{FileError, Op};
use std::os::fd::{AsFd, AsRawFd};

/// Space on one filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still allocate.
    pub available_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

/// Free space of the filesystem holding `fd`. `file` names the file for the error message.
pub fn free_space(fd: impl AsFd, file: &str) -> Result<FsSpace, FileError> {
    let st = rustix::fs::fstatvfs(fd).map_err(|e| FileError::io(file, Op::Statvfs, e))?;
    let unit = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    Ok(FsSpace {
        available_bytes: st.f_bavail.saturating_mul(unit),
        total_bytes: st.f_blocks.saturating_mul(unit),
    })
}

/// Checks that the destination has room for `needed` more bytes of `file`.
pub fn check_space(dest: &DestRoot, file: &str, needed: u64) -> Result<(), FileError> {
    let space = free_space(dest.as_fd(), file)?;
    if space.available_bytes >= needed {
        return Ok(());
    }
    Err(FileError::DiskFull {
        file: file.to_owned(),
        needed,
        available: space.available_bytes,
        fs: dest.path().to_owned(),
    })
}

/// How far ahead of a writer's frontier [`ReserveAhead`] allocates: one `fallocate` per this
/// many bytes written, instead of one for the whole file before the first byte.
pub const RESERVE_AHEAD_BYTES: u64 = 64 << 20;
/// `statfs` magic of tmpfs and ramfs: memory filesystems, where `fallocate` only zeroes pages
/// the writes would fill anyway (20-25% of receiver CPU when done for the whole file).
const MEMORY_FS_MAGIC: [i64; 2] = [0x0102_1994, 0x8584_58f6];

/// True when `fd` is on tmpfs or ramfs (or its filesystem cannot be told).
// `f_type`'s width differs between architectures (i64 on x86-64, u32 on some others).
#[allow(clippy::unnecessary_cast)]
pub fn is_memory_fs(fd: impl AsFd) -> bool {
    rustix::fs::fstatfs(fd).map(|st| MEMORY_FS_MAGIC.contains(&(st.f_type as i64))).unwrap_or(true)
}

/// What `cachestat(2)` (Linux 6.5) says of a file's pages in the page cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCacheState {
    /// Pages of the file in the page cache.
    pub cached: u64,
    /// Of those, dirty or under writeback.
    pub dirty: u64,
}

/// The page cache's view of the first `len` bytes of `fd` (0: the whole file), or `None` where
/// the kernel has no `cachestat` (older than 6.5, or a seccomp filter) or refuses it.
pub fn page_cache_state(fd: impl AsFd, len: u64) -> Option<PageCacheState> {
    // The generic syscall table's number (all architectures share numbers from 424 on);
    // libc 0.2 does not name it for x86_64 glibc.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
    const SYS_CACHESTAT: Option<libc::c_long> = Some(451);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
    const SYS_CACHESTAT: Option<libc::c_long> = None;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let nr = SYS_CACHESTAT?;
    let range = Range { off: 0, len };
    let mut st = Stat::default();
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: `range` and `st` are live, properly aligned `#[repr(C)]` structs laid out as
    // the kernel's `struct cachestat_range` and `struct cachestat`; the kernel reads the first
    // and writes only the second; `raw` is a descriptor borrowed for the call.
    let rc = unsafe {
        libc::syscall(nr, raw, &range as *const Range, &mut st as *mut Stat, 0 as libc::c_uint)
    };
    (rc == 0).then(|| PageCacheState {
        cached: st.nr_cache,
        dirty: st.nr_dirty.saturating_add(st.nr_writeback),
    })
}

/// Space reservation that runs just ahead of the writes to one file: `fallocate` (mode 0,
/// inside the file's size, so the size never changes) of the next [`RESERVE_AHEAD_BYTES`]
/// when a write passes the reserved frontier. On memory filesystems, and where `fallocate`
/// is unsupported, it does nothing.
///
/// Invariants: nothing beyond `size` is allocated, and nothing more than
/// [`RESERVE_AHEAD_BYTES`] past the end of the furthest write; a range before the frontier
/// the writes skipped (a resumed prefix) is not touched. ENOSPC is returned to the caller
/// (the disk is full now); any other failure only turns the reservation off.
#[derive(Debug, Clone, Copy)]
pub struct ReserveAhead {
    size: u64,
    reserved_to: u64,
    is_on: bool,
}

impl ReserveAhead {
    /// A reservation for a file of `size` bytes open as `fd`.
    pub fn new(fd: impl AsFd, size: u64) -> ReserveAhead {
        ReserveAhead { size, reserved_to: 0, is_on: !is_memory_fs(fd) }
    }

    /// True when this reservation calls `fallocate` at all.
    pub fn is_on(&self) -> bool {
        self.is_on
    }

    /// Before writing `len` bytes at `offset`: reserve ahead if the write passes the
    /// frontier. `Ok(true)` when it called `fallocate`; `Err` only for ENOSPC/EDQUOT.
    pub fn before_write(
        &mut self,
        fd: impl AsFd,
        offset: u64,
        len: u64,
    ) -> Result<bool, rustix::io::Errno> {
        let end = offset.saturating_add(len).min(self.size);
        if !self.is_on || end <= self.reserved_to {
            return Ok(false);
        }
        let from = self.reserved_to.max(offset & !4095);
        let to = end.saturating_add(RESERVE_AHEAD_BYTES).min(self.size);
        if to <= from {
            return Ok(false);
        }
        match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), from, to - from) {
            Ok(()) => {
                self.reserved_to = to;
                Ok(true)
            }
            Err(e @ (rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)) => Err(e),
            Err(_) => {
                // Unsupported or refused: writes still allocate as they go.
                self.is_on = false;
                Ok(true)
            }
        }
    }
}

/// A byte count for people: "512 MiB", "1.0 GiB", "3 B". Below 10 units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn disk_full_message_names_file_and_sizes() {
        let e = FileError::DiskFull {
            file: "big.bin".into(),
            needed: 1 << 30,
            available: 512 << 20,
            fs: "/mnt/x".into(),
        };
        assert_eq!(
            e.to_string(),
            "not enough space for big.bin: need 1.0 GiB, 512 MiB available on /mnt/x"
        );
    }
}
