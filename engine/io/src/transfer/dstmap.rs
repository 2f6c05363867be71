//! The receiver's mapped writes: on a memory filesystem (tmpfs, ramfs) the pages of a large
//! partial file are the file itself, so a receiver shard maps the partial `MAP_SHARED` in
//! windows and copies each verified payload straight into its place, instead of copying it
//! into a staging arena and handing a `write` to an io-wq worker that copies it again
//! (docs/DATAPLANE.md, "Mapped writes").
//!
//! Invariants:
//! - At most [`MAX_WINDOWS`] windows of at most [`WINDOW_BYTES`] are mapped per shard, so the
//!   mapped pages a shard adds to the process's RSS are bounded whatever the file's size.
//!   Windows are unmapped when replaced and when the shard ends (`Drop`).
//! - A window's range is allocated with `fallocate` before it is mapped: a full filesystem is
//!   an `ENOSPC` there (`DiskError::NoSpace`, the full-disk message naming the file), never a
//!   SIGBUS on a store. The range is then populated writable (`MADV_POPULATE_WRITE`), so the
//!   copies take no page faults.
//! - A window lies inside the file's size, which the coordinator set at creation and nothing
//!   of ours changes while the shards run.
//! - Only new data moves the windows forward: a payload behind every window of its file (a
//!   resend filling a hole) goes the ordinary way (`Stager`), so resends never thrash them.
//! - Written bytes are reported to the proto shard as runs of contiguous bytes (at most
//!   [`RUN_BYTES`]), from the mapping, in the order they were written, so blocks written front
//!   to back are still hashed from their writes while hot. A run is reported before its
//!   window can be unmapped.
//! - Durability is the page cache's, as for the write calls it replaces: on a memory
//!   filesystem the mapped stores are the file, and they survive a kill -9 of the receiver.

use super::store::OpenFiles;
use haul_proto::session::{DiskError, ReceiverShard};
use haul_proto::time::Instant as ProtoInstant;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// Files at least this large are written through a map; smaller ones keep the staging arenas,
/// where a few writes cost less than mapping, populating and unmapping a window.
pub(crate) const MAP_MIN_FILE_BYTES: u64 = 4 << 20;
/// Bytes of one mapped window (a multiple of the page size): one block at the default block
/// size. Blocks are striped over the shards (`g mod N`), so a window of one block is mapped,
/// populated and unmapped by the one shard that writes it; a window of several blocks made
/// every shard populate and unmap every page (measured: 2 µs per page).
pub(crate) const WINDOW_BYTES: u64 = 1 << 20;
/// Windows one shard keeps mapped: the one new data goes to, and those before it (late
/// datagrams and early resends still land there).
pub(crate) const MAX_WINDOWS: usize = 4;
/// Longest run of contiguous bytes reported to the proto shard at once: small enough that the
/// block hash reads it from the cache it was just written through.
const RUN_BYTES: usize = 256 << 10;
/// Environment variable: `off` writes every file through the staging arenas (for A/B runs).
pub const DISK_MAP_ENV: &str = "HAUL_DISK_MAP";
/// `madvise` advice (Linux 5.14, `asm-generic/mman-common.h`): fault every page in writable.
const MADV_POPULATE_WRITE: libc::c_int = 23;

const _: () = assert!(WINDOW_BYTES.is_multiple_of(4096) && RUN_BYTES as u64 <= WINDOW_BYTES);

/// True unless `HAUL_DISK_MAP=off`.
pub(crate) fn is_map_wanted() -> bool {
    !std::env::var(DISK_MAP_ENV).is_ok_and(|v| v.trim() == "off")
}

/// One mapped range of one partial file.
#[derive(Debug)]
struct Window {
    file: u32,
    /// File offset of the first mapped byte (a multiple of [`WINDOW_BYTES`]).
    start: u64,
    len: usize,
    ptr: NonNull<u8>,
    /// When it was mapped, in windows mapped by this shard (the oldest is replaced first).
    born: u64,
}

impl Window {
    fn covers(&self, file: u32, offset: u64, end: u64) -> bool {
        self.file == file && offset >= self.start && end <= self.start + self.len as u64
    }
}

/// Bytes written into a window and not yet reported to the proto shard.
#[derive(Debug, Clone, Copy)]
struct Run {
    window: usize,
    offset: u64,
    len: usize,
}

/// Why a window could not be mapped.
enum MapFailure {
    /// The filesystem is full: the write fails with this error.
    Full(DiskError),
    /// Anything else: the payload takes the ordinary write path, which reports the real error.
    Fallback,
}

/// One receiver shard's mapped windows.
#[derive(Debug, Default)]
pub(crate) struct DestMaps {
    windows: [Option<Window>; MAX_WINDOWS],
    mapped: u64,
    /// A window could not be mapped (no memory, a shrunk file): this shard stops trying.
    is_off: bool,
    run: Option<Run>,
    /// Payload bytes written through a map.
    bytes: u64,
    /// The last file asked about and its size if it is mapped (a hash look-up per payload
    /// cost 3%). Not its descriptor: the file cache may close and reuse that.
    last: Option<(u32, Option<u64>)>,
}

impl DestMaps {
    /// Payload bytes written through a map so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one verified payload into its place in a map of its file when that file is
    /// mapped (`OpenFiles::map_target`) and the payload is not behind the file's windows.
    /// False: the caller writes it the ordinary way.
    pub(crate) fn write(
        &mut self,
        files: &mut OpenFiles,
        shard: &mut ReceiverShard,
        now: ProtoInstant,
        (file, offset, data): (u32, u64, &[u8]),
    ) -> bool {
        if self.is_off {
            return false;
        }
        let target = match self.last {
            Some((f, t)) if f == file => t,
            _ => {
                let Ok(t) = files.map_target(file) else { return false };
                let t = t.map(|(_, size)| size);
                self.last = Some((file, t));
                t
            }
        };
        let Some(size) = target else { return false };
        let end = offset.saturating_add(data.len() as u64);
        if end > size || data.is_empty() {
            return false;
        }
        let w = match self
            .windows
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.covers(file, offset, end)))
        {
            Some(w) => w,
            None if self.is_ahead(file, offset) => {
                match self.map_window(files, shard, now, (file, size), offset) {
                    Ok(w) => w,
                    Err(MapFailure::Full(e)) => {
                        shard.handle_write_done_data(now, file, offset, data, Err(e));
                        return true;
                    }
                    Err(MapFailure::Fallback) => {
                        self.is_off = true;
                        return false;
                    }
                }
            }
            None => return false,
        };
        let Some(win) = self.windows[w].as_ref() else { return false };
        if !win.covers(file, offset, end) {
            // Straddles the window's end (a block size that does not divide the window).
            return false;
        }
        let at = (offset - win.start) as usize;
        // SAFETY: the window maps `len` bytes of the file, readable and writable, and stays
        // mapped until `unmap` (which reports the run first); `at + data.len() <= len` was
        // checked by `covers`; `data` is in a receive buffer, never inside a mapping.
        unsafe { win.ptr.as_ptr().add(at).copy_from_nonoverlapping(data.as_ptr(), data.len()) };
        self.bytes += data.len() as u64;
        match &mut self.run {
            Some(r)
                if r.window == w
                    && r.offset + r.len as u64 == offset
                    && r.len + data.len() <= RUN_BYTES =>
            {
                r.len += data.len();
            }
            _ => {
                self.flush(shard, now);
                self.run = Some(Run { window: w, offset, len: data.len() });
            }
        }
        true
    }

    /// True when `offset` of `file` is at or past the start of every window of that file:
    /// new data, for which a window is worth mapping.
    fn is_ahead(&self, file: u32, offset: u64) -> bool {
        self.windows.iter().flatten().filter(|w| w.file == file).all(|w| offset >= w.start)
    }

    /// Reports the run written so far to the proto shard (from the mapping).
    pub(crate) fn flush(&mut self, shard: &mut ReceiverShard, now: ProtoInstant) {
        let Some(r) = self.run.take() else { return };
        let Some(win) = self.windows[r.window].as_ref() else { return };
        let at = (r.offset - win.start) as usize;
        // SAFETY: the run lies inside the window (it grew only by payloads `covers` placed in
        // it), which is mapped until `unmap`, and `unmap` reports the run before unmapping.
        // Nothing writes the mapping while the slice lives (this shard is the only writer of
        // its windows, and the proto shard only reads the slice during the call).
        let data = unsafe { std::slice::from_raw_parts(win.ptr.as_ptr().add(at), r.len) };
        shard.handle_write_done_data(now, win.file, r.offset, data, Ok(r.len));
    }

    /// Maps the window of `file` holding `offset` in place of an empty or the oldest window.
    fn map_window(
        &mut self,
        files: &mut OpenFiles,
        shard: &mut ReceiverShard,
        now: ProtoInstant,
        (file, size): (u32, u64),
        offset: u64,
    ) -> Result<usize, MapFailure> {
        let Ok(Some((fd, _))) = files.map_target(file) else { return Err(MapFailure::Fallback) };
        let slot = match self.windows.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                let oldest = self.windows.iter().flatten().map(|w| w.born).min().unwrap_or(0);
                let s =
                    self.windows.iter().position(|w| w.as_ref().is_some_and(|w| w.born == oldest));
                let s = s.unwrap_or(0);
                self.unmap(shard, now, s);
                s
            }
        };
        let start = offset / WINDOW_BYTES * WINDOW_BYTES;
        let len = (size - start).min(WINDOW_BYTES) as usize;
        let (ptr, calls) = map_range(fd, start, len);
        files.count_syscalls(calls);
        let ptr = ptr?;
        self.mapped += 1;
        self.windows[slot] = Some(Window { file, start, len, ptr, born: self.mapped });
        Ok(slot)
    }

    /// Unmaps window `slot`, reporting the run written into it first.
    fn unmap(&mut self, shard: &mut ReceiverShard, now: ProtoInstant, slot: usize) {
        if self.run.is_some_and(|r| r.window == slot) {
            self.flush(shard, now);
        }
        if let Some(w) = self.windows[slot].take() {
            // SAFETY: `ptr`/`len` are exactly what `mmap` returned for this window, and no
            // slice of it outlives this call (runs are reported before it).
            unsafe { libc::munmap(w.ptr.as_ptr().cast(), w.len) };
        }
    }
}

impl Drop for DestMaps {
    fn drop(&mut self) {
        for w in self.windows.iter_mut().filter_map(Option::take) {
            // SAFETY: as in `unmap`; a run still pending is lost with the shard (its bytes are
            // in the file; the proto shard that would have taken them is gone).
            unsafe { libc::munmap(w.ptr.as_ptr().cast(), w.len) };
        }
    }
}

/// Allocates, maps and populates `len` bytes of the file at `start` (a page multiple):
/// the mapping, and the syscalls made.
fn map_range(fd: RawFd, start: u64, len: usize) -> (Result<NonNull<u8>, MapFailure>, u64) {
    let (Ok(off), Ok(flen)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        return (Err(MapFailure::Fallback), 0);
    };
    // SAFETY: a plain syscall on a descriptor the caller keeps open for the call.
    if unsafe { libc::fallocate(fd, 0, off, flen) } != 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e == libc::ENOSPC || e == libc::EDQUOT {
            return (Err(MapFailure::Full(DiskError::NoSpace)), 1);
        }
        // ramfs has no fallocate (and no size limit); other refusals: the stores allocate.
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new mapping chosen by the kernel (no address given), of a range inside the
    // file's size; it aliases no Rust object.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, off) };
    let Some(ptr) = NonNull::new(p.cast::<u8>()).filter(|_| p != libc::MAP_FAILED) else {
        return (Err(MapFailure::Fallback), 2);
    };
    // SAFETY: `ptr`/`len` is the mapping just made.
    if unsafe { libc::madvise(p, len, MADV_POPULATE_WRITE) } != 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // EINVAL: a kernel before 5.14; the stores fault the pages in instead. Anything else
        // (EFAULT: a store would raise SIGBUS, the file shrank under us): do not use it.
        if e != libc::EINVAL {
            // SAFETY: the mapping just made, not yet handed out.
            unsafe { libc::munmap(p, len) };
            return (Err(MapFailure::Fallback), 4);
        }
    }
    (Ok(ptr), 3)
}
