//! Memory maps of file ranges, guarded against SIGBUS.
//!
//! [`Mapping`] maps a byte range of a file, read-only (a sender's source) or read-write (a
//! receiver's destination), `MAP_SHARED`. Touching a page of a file mapping that lies past
//! the file's end raises SIGBUS, which by default kills the process: a source truncated by
//! someone else during a transfer would crash `haul` instead of failing the transfer. Every
//! live mapping is therefore registered in a fixed table, and a process-wide SIGBUS handler
//! (installed at the first mapping) looks the faulting address up there:
//! - inside a registered mapping, it maps anonymous zero pages over the rest of that mapping
//!   (`mmap(MAP_FIXED | MAP_ANONYMOUS)`, async-signal-safe on Linux), sets the mapping's
//!   fault flag and returns: the access is repeated and reads zeros (a write goes to a private
//!   page that no file sees). The owner checks [`Mapping::is_faulted`] after each use of the
//!   bytes and turns it into an error for that file;
//! - anywhere else, the handler found at installation (Rust's stack-overflow handler, or the
//!   default action) gets the signal as if ours were not there.
//!
//! Invariants:
//! - At most [`MAX_GUARDED`] mappings exist at once in the process; one more is refused
//!   (`MapError::TooMany`), never mapped unguarded.
//! - A mapping is registered before any of its bytes can be touched and unregistered before it
//!   is unmapped, so the handler never zero-fills an address that is no longer ours.
//! - The handler only loads atomics and makes one `mmap` call: no allocation, no lock.
//! - Bytes read through a mapping are the file's as the kernel's page cache has them at that
//!   moment; another process writing the file changes them (as it would change what `pread`
//!   returns). Callers hash and seal what they read, so a change shows up as a checksum
//!   mismatch at the peer, never as memory unsafety in this process.

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};
use std::fs::File;
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Most mappings guarded at once in the process (a sender maps a handful of large files per
/// shard; the table is scanned by the signal handler, so it stays small).
pub const MAX_GUARDED: usize = 256;

/// What went wrong making or using a mapping, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Our bug: a caller asked for an empty mapping or a range outside it.
    #[error("invalid mapping request (our bug): {0}")]
    Invalid(&'static str),
    /// Our limit: [`MAX_GUARDED`] mappings are already live.
    #[error("too many memory maps at once (limit {MAX_GUARDED}; the caller falls back to reads)")]
    TooMany,
    /// The host or the file: the kernel refused the map (ENODEV: a filesystem without mmap,
    /// ENOMEM: address space or map count, EACCES: the descriptor's mode).
    #[error("mmap of the file failed (host/file): {0}")]
    Map(std::io::Error),
    /// The host: installing the SIGBUS handler failed.
    #[error("installing the SIGBUS guard failed (host): errno {0}")]
    Handler(i32),
}

/// One guarded mapping's entry in the table the signal handler reads.
struct Guard {
    /// Taken by a live mapping.
    claimed: AtomicBool,
    /// Page-aligned first address; 0 while the entry is not live.
    start: AtomicUsize,
    /// Page-aligned end address.
    end: AtomicUsize,
    /// The zero pages put over a fault are writable (a read-write mapping).
    writable: AtomicBool,
    /// A SIGBUS inside this mapping was turned into zero pages.
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to build the static table
const GUARD_INIT: Guard = Guard {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    writable: AtomicBool::new(false),
    faulted: AtomicBool::new(false),
};

static GUARDS: [Guard; MAX_GUARDED] = [GUARD_INIT; MAX_GUARDED];

/// The SIGBUS disposition found when ours was installed (set once, before the handler runs).
static PREVIOUS: OnceLock<Result<Previous, i32>> = OnceLock::new();

/// The previous SIGBUS action, kept to hand it every signal that is not ours.
struct Previous(libc::sigaction);

// SAFETY: a `sigaction` is plain data (a handler address, a mask, flags); it is written once
// before our handler is installed and only read afterwards.
unsafe impl Sync for Previous {}
// SAFETY: as above: plain data.
unsafe impl Send for Previous {}

/// The system page size (4 KiB when it cannot be read).
fn page_bytes() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf takes a name constant and returns a number; no pointers.
    let p = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Installs the SIGBUS handler once per process; later calls return the first outcome.
fn install_handler() -> Result<(), MapError> {
    page_bytes();
    let outcome = PREVIOUS.get_or_init(|| {
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags).
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sigemptyset initialises the mask we own.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: as above, a valid all-zero value to be overwritten with the old action.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to sigaction values we own; `on_sigbus` has the
        // SA_SIGINFO signature. The previous action is stored (by this very initialiser)
        // before any SIGBUS can reach `on_sigbus` through a mapping: mappings are registered
        // only after this returns.
        let rc = unsafe { libc::sigaction(libc::SIGBUS, &new, &mut old) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Previous(old))
    });
    match outcome {
        Ok(_) => Ok(()),
        Err(errno) => Err(MapError::Handler(*errno)),
    }
}

/// The SIGBUS handler: zero-fills a fault inside a guarded mapping, forwards anything else.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t; si_addr is the faulting
    // address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = page_bytes();
    for g in &GUARDS {
        let start = g.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let end = g.end.load(Ordering::Acquire);
        if addr >= end {
            continue;
        }
        let from = addr & !(page - 1);
        let prot = if g.writable.load(Ordering::Relaxed) {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
        // SAFETY: [from, end) lies inside a live mapping of ours (registered, not yet
        // unregistered: its owner unregisters before unmapping), so replacing its pages
        // with anonymous zero pages touches no other object. mmap is async-signal-safe.
        let p = unsafe { libc::mmap(from as *mut libc::c_void, end - from, prot, flags, -1, 0) };
        if p != libc::MAP_FAILED {
            g.faulted.store(true, Ordering::Release);
            return;
        }
        break;
    }
    forward(sig, info, ctx);
}

/// Hands a SIGBUS that is not ours to the action found at installation: its handler, or the
/// default action (restored, so the repeated access terminates the process as it would have
/// without us).
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = match PREVIOUS.get() {
        Some(Ok(p)) => p.0,
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
        _ => unsafe { std::mem::zeroed() },
    };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction is SIG_DFL; sigaction is async-signal-safe. Returning
        // repeats the faulting access, which now gets the default action.
        unsafe {
            let dfl: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its address is a
        // three-argument handler; we pass it the arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous action is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Takes a free table entry for [start, end).
fn register(start: usize, end: usize, writable: bool) -> Result<usize, MapError> {
    for (i, g) in GUARDS.iter().enumerate() {
        if g.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            g.faulted.store(false, Ordering::Relaxed);
            g.writable.store(writable, Ordering::Relaxed);
            g.end.store(end, Ordering::Release);
            g.start.store(start, Ordering::Release);
            return Ok(i);
        }
    }
    Err(MapError::TooMany)
}

/// A guarded, shared memory map of a range of a file (see the module doc).
pub struct Mapping {
    map: MmapRaw,
    /// The entry in [`GUARDS`].
    guard: usize,
    writable: bool,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.map.len())
            .field("writable", &self.writable)
            .field("faulted", &self.is_faulted())
            .finish()
    }
}

/// Advice for a range of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAdvice {
    /// Read ahead aggressively, drop behind.
    Sequential,
    /// Start reading the range in now.
    WillNeed,
    /// Map the range's pages now, one call instead of a fault per page
    /// (`MADV_POPULATE_READ`, Linux 5.14; ignored where unsupported).
    PopulateRead,
    /// Unmap the range's pages from this process (they stay in the page cache, and a later
    /// access maps them again): how a sender keeps its RSS bounded behind what was sent.
    DropPages,
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset`, read-only. The file must be open for reading.
    pub fn read_only(file: &File, offset: u64, len: usize) -> Result<Mapping, MapError> {
        Self::map(file, offset, len, false)
    }

    /// Maps `len` bytes of `file` from `offset`, readable and writable (stores reach the
    /// file). The file must be open for reading and writing and at least `offset + len` long
    /// before the bytes are touched (a page past the end raises SIGBUS, which becomes
    /// [`Mapping::is_faulted`]).
    pub fn read_write(file: &File, offset: u64, len: usize) -> Result<Mapping, MapError> {
        Self::map(file, offset, len, true)
    }

    fn map(file: &File, offset: u64, len: usize, writable: bool) -> Result<Mapping, MapError> {
        if len == 0 {
            return Err(MapError::Invalid("empty mapping"));
        }
        install_handler()?;
        let mut opts = MmapOptions::new();
        opts.offset(offset).len(len);
        let map = if writable { opts.map_raw(file) } else { opts.map_raw_read_only(file) }
            .map_err(MapError::Map)?;
        let page = page_bytes();
        let start = map.as_ptr() as usize & !(page - 1);
        let end = (map.as_ptr() as usize + len).next_multiple_of(page);
        // Registered before any byte can be touched (the map was made without MAP_POPULATE).
        let guard = register(start, end, writable)?;
        Ok(Mapping { map, guard, writable })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: an empty mapping is refused.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The mapped bytes. Reading them may fault pages in; past the file's end they read as
    /// zeros and [`Mapping::is_faulted`] becomes true.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the pointer and length describe a live shared mapping of ours, readable,
        // kept until `self` drops; the borrow ties the slice to `self`. Another process may
        // change the file's bytes meanwhile: callers treat them as data to hash and seal
        // (module doc), and a truncation becomes zeros through the SIGBUS guard.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// The mapped bytes, to write (`None` for a read-only mapping).
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        // SAFETY: a live, writable shared mapping of ours, borrowed mutably through `self`,
        // so no other reference of ours to it exists while the slice lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.map.len()) })
    }

    /// Whether a SIGBUS hit this mapping (the file shrank below a page that was touched): its
    /// bytes from that page on are zeros, not the file's, and must not be used.
    pub fn is_faulted(&self) -> bool {
        GUARDS[self.guard].faulted.load(Ordering::Acquire)
    }

    /// Advises the kernel about `range` (relative to the mapping). Advice is a hint: a
    /// refusal changes no byte, so errors are reported for the caller to count or ignore.
    pub fn advise(&self, range: Range<usize>, advice: MapAdvice) -> Result<(), MapError> {
        if range.start > range.end || range.end > self.map.len() {
            return Err(MapError::Invalid("advice range outside the mapping"));
        }
        if range.is_empty() {
            return Ok(());
        }
        let (off, len) = (range.start, range.len());
        let res = match advice {
            MapAdvice::Sequential => self.map.advise_range(Advice::Sequential, off, len),
            MapAdvice::WillNeed => self.map.advise_range(Advice::WillNeed, off, len),
            MapAdvice::PopulateRead => self.populate_read(off, len),
            // SAFETY: MADV_DONTNEED on a shared file mapping only unmaps pages: the next
            // access maps the file's (page cache's) bytes again, so no reference of ours
            // sees changed contents. Pages zero-filled after a SIGBUS are private and come
            // back as zeros, as they were.
            MapAdvice::DropPages => unsafe {
                self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, off, len)
            },
        };
        res.map_err(MapError::Map)
    }

    /// `MADV_POPULATE_READ` over [off, off + len); EINVAL (an older kernel) is not an error.
    fn populate_read(&self, off: usize, len: usize) -> std::io::Result<()> {
        let page = page_bytes();
        let addr = self.map.as_ptr() as usize + off;
        let from = addr & !(page - 1);
        // SAFETY: [from, addr + len) lies inside our live mapping (rounded down to its first
        // page, which the mapping covers); the advice only faults pages in. A page past
        // the file's end fails the call with EFAULT instead of raising SIGBUS.
        let rc = unsafe {
            libc::madvise(from as *mut libc::c_void, addr + len - from, libc::MADV_POPULATE_READ)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) => Ok(()),
            _ => Err(err),
        }
    }

    /// Writes the dirty pages of `range` back to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self, range: Range<usize>) -> Result<(), MapError> {
        if range.start > range.end || range.end > self.map.len() {
            return Err(MapError::Invalid("flush range outside the mapping"));
        }
        self.map.flush_range(range.start, range.len()).map_err(MapError::Map)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregistered before `map` drops (and unmaps): fields drop after this body.
        let g = &GUARDS[self.guard];
        g.start.store(0, Ordering::Release);
        g.end.store(0, Ordering::Release);
        g.faulted.store(false, Ordering::Relaxed);
        g.claimed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn maps_any_range_read_only() {
        let data = pattern(5 * 4096 + 123);
        let f = file_with(&data);
        for (off, len) in [(0, data.len()), (1, 10), (4095, 4098), (8192, 4096), (12_345, 8000)] {
            let m = Mapping::read_only(&f, off as u64, len).unwrap();
            assert_eq!(m.len(), len);
            assert_eq!(m.bytes(), &data[off..off + len]);
            assert!(!m.is_faulted());
            for advice in [
                MapAdvice::Sequential,
                MapAdvice::WillNeed,
                MapAdvice::PopulateRead,
                MapAdvice::DropPages,
            ] {
                m.advise(0..len, advice).unwrap();
            }
            // Dropped pages come back from the file.
            assert_eq!(m.bytes(), &data[off..off + len]);
        }
        assert!(matches!(Mapping::read_only(&f, 0, 0), Err(MapError::Invalid(_))));
        let m = Mapping::read_only(&f, 0, 10).unwrap();
        assert!(matches!(m.advise(5..11, MapAdvice::WillNeed), Err(MapError::Invalid(_))));
    }

    #[test]
    fn a_read_only_mapping_is_not_writable() {
        let f = file_with(&pattern(4096));
        let mut m = Mapping::read_only(&f, 0, 4096).unwrap();
        assert!(m.bytes_mut().is_none());
    }

    #[test]
    fn writes_through_a_read_write_mapping_reach_the_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(3 * 4096).unwrap();
        let mut m = Mapping::read_write(&f, 100, 8000).unwrap();
        m.bytes_mut().unwrap().copy_from_slice(&pattern(8000));
        m.flush(0..8000).unwrap();
        drop(m);
        let mut back = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(&back[100..8100], &pattern(8000)[..]);
        assert!(back[..100].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_truncated_source_reads_zeros_and_is_flagged_not_a_crash() {
        let data = pattern(64 * 4096);
        let f = file_with(&data);
        let m = Mapping::read_only(&f, 0, data.len()).unwrap();
        assert_eq!(&m.bytes()[..4096], &data[..4096]);
        f.set_len(10 * 4096).unwrap();
        // The pages still in the file read as before; past the end they read as zeros.
        assert_eq!(&m.bytes()[..10 * 4096], &data[..10 * 4096]);
        assert!(!m.is_faulted());
        let tail = &m.bytes()[20 * 4096..];
        assert!(tail.iter().all(|&b| b == 0));
        assert!(m.is_faulted());
        // Other mappings are not flagged by it.
        let g = file_with(&data);
        let other = Mapping::read_only(&g, 0, data.len()).unwrap();
        assert_eq!(other.bytes(), &data[..]);
        assert!(!other.is_faulted());
    }

    #[test]
    fn a_truncated_destination_takes_writes_and_is_flagged() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8 * 4096).unwrap();
        let mut m = Mapping::read_write(&f, 0, 8 * 4096).unwrap();
        f.set_len(4096).unwrap();
        m.bytes_mut().unwrap()[6 * 4096] = 1;
        assert!(m.is_faulted());
        assert_eq!(f.metadata().unwrap().len(), 4096);
    }

    #[test]
    fn a_freed_table_entry_is_reused_unflagged() {
        let data = pattern(8 * 4096);
        for _ in 0..(MAX_GUARDED + 8) {
            let f = file_with(&data);
            let m = Mapping::read_only(&f, 0, data.len()).unwrap();
            f.set_len(4096).unwrap();
            assert_eq!(m.bytes()[5 * 4096], 0);
            assert!(m.is_faulted());
        }
        let f = file_with(&data);
        let m = Mapping::read_only(&f, 0, data.len()).unwrap();
        assert!(!m.is_faulted());
    }

    /// Child half of `a_sigbus_outside_every_mapping_still_terminates`: only does something
    /// when the parent asks for it through the environment.
    #[test]
    fn sigbus_child_touches_an_unguarded_truncated_map() {
        if std::env::var_os("HAUL_MAPPED_SIGBUS_CHILD").is_none() {
            return;
        }
        let data = pattern(4 * 4096);
        let f = file_with(&data);
        let _guarded = Mapping::read_only(&f, 0, data.len()).unwrap();
        // A raw mapping the guard does not know.
        let raw = MmapOptions::new().len(data.len()).map_raw_read_only(&f).unwrap();
        f.set_len(0).unwrap();
        // SAFETY: a live mapping of ours; reading it past the file's end raises SIGBUS,
        // which is the point of this child.
        let b = unsafe { std::ptr::read_volatile(raw.as_ptr().add(2 * 4096)) };
        println!("survived {b}");
    }

    #[test]
    fn a_sigbus_outside_every_mapping_still_terminates() {
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "mapped::tests::sigbus_child_touches_an_unguarded_truncated_map"])
            .args(["--nocapture", "--test-threads=1"])
            .env("HAUL_MAPPED_SIGBUS_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    }
}
