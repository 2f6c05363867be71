//! Where the shards' bytes come from and go to: the source files (sender) and the partial
//! files under the destination (receiver), opened lazily with a bounded number of descriptors
//! per shard.
//!
//! Invariants: names from the peer are validated before anything is created
//! (`files::names`); every path is created beneath the destination with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (`files::dest`); a file is written as a
//! hidden partial and renamed into place only after its checksum verified.

use super::rx::SMALL_FILE_BYTES;
use crate::files::partial::PARTIAL_MODE;
use crate::files::space::ReserveAhead;
use haul_proto::session::DiskError;
use rustix::fs::OFlags;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Most files one shard keeps open at once.
pub(crate) const MAX_OPEN_FILES_PER_SHARD: usize = 64;
/// Most descriptors of written partials on their way from the shards to the finalizing
/// coordinator (the channel); more are closed and finalize opens those by name again.
pub(crate) const HANDOFF_FILES: usize = 64;

/// A written partial's descriptor, handed from a receiving shard to the coordinator.
pub(crate) type Handoff = crossbeam_channel::Sender<(u32, File)>;

/// Map an OS error to the protocol's disk error.
pub(crate) fn disk_error(e: &std::io::Error) -> DiskError {
    match e.raw_os_error() {
        Some(libc::EINTR) | Some(libc::EAGAIN) => DiskError::Interrupted,
        Some(libc::EIO) => DiskError::Io,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => DiskError::NoSpace,
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => DiskError::Permission,
        Some(libc::ENOENT) => DiskError::Missing,
        Some(n) => DiskError::Other(n),
        None => DiskError::Io,
    }
}

/// Map a raw errno (an io_uring completion's `-result`) to the protocol's disk error.
pub(crate) fn errno_error(errno: i32) -> DiskError {
    disk_error(&std::io::Error::from_raw_os_error(errno))
}

/// Where a shard's files are.
#[derive(Clone, Debug)]
pub(crate) enum FileSource {
    /// The sender's sources, opened read-only by path (given by the local user).
    Paths(std::sync::Arc<Vec<PathBuf>>),
    /// The receiver's partial files, opened read-write beneath the destination with openat2:
    /// the destination, each partial's relative path, each file's size (the manifest's), and
    /// which partials the shard creates itself at its first open (`rx::create_partials`
    /// leaves them to it: small, fresh, one block, in a directory this receive made).
    Beneath(
        std::sync::Arc<crate::files::DestRoot>,
        std::sync::Arc<Vec<String>>,
        std::sync::Arc<Vec<u64>>,
        std::sync::Arc<Vec<bool>>,
    ),
}

/// Largest O_DIRECT alignment (memory and offset) the shards handle; a filesystem that asks
/// for more is written buffered.
pub(crate) const MAX_DIRECT_ALIGN: u32 = 4096;

/// One open file of a shard.
#[derive(Debug)]
struct Open {
    file: File,
    /// A second, O_DIRECT descriptor of the same inode and the alignment it needs, when
    /// asked for and the filesystem allows it (receiver partials at open; sender sources at
    /// their first read, [`OpenFiles::pin_for_read`]).
    direct: Option<(File, u32)>,
    /// Sender: whether the twin was tried (opened or refused), or the kernel later refused a
    /// read through it (then it is kept open but not used).
    direct_read: DirectRead,
    /// Ring operations in flight on these descriptors: they are not closed while any are.
    pins: u32,
    /// The receiver's reservation ahead of its writes (`None` for the sender's sources).
    reserve: Option<ReserveAhead>,
}

/// A sender source's O_DIRECT twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectRead {
    /// Not tried yet (or a receiver partial, whose twin is decided at open).
    Untried,
    /// Tried: `Open::direct` says whether there is one.
    Tried,
    /// The kernel refused a read through the twin (EINVAL): buffered from now on.
    Refused,
}

/// How one end's disk I/O went: O_DIRECT where allowed, buffered otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DirectStats {
    /// Files opened whose filesystem accepted O_DIRECT.
    pub files_direct: u64,
    /// Files opened with O_DIRECT asked for and refused (or not worth it: tmpfs).
    pub files_refused: u64,
    /// Sender: reads submitted through an O_DIRECT twin.
    pub reads_direct: u64,
    /// Sender: ring reads through the buffered descriptor (resends at unaligned offsets,
    /// sources without a twin).
    pub reads_buffered: u64,
    /// Sender: sources read buffered because the page cache holds them (see
    /// [`is_better_read_cached`]).
    pub files_cached: u64,
    /// O_DIRECT reads the kernel refused with EINVAL after the twin opened; each is read
    /// again buffered, and its file reads buffered from then on.
    pub direct_fallbacks: u64,
}

/// The alignment of the receiver's O_DIRECT writes: the kernel's DIO alignment raised to
/// whole filesystem blocks and whole pages, or `None` (buffered) when that exceeds
/// [`MAX_DIRECT_ALIGN`] or the kernel allows no O_DIRECT (`dio_mem == 0`).
///
/// Regression: ext4 here reports a 512-byte DIO alignment. Writing a run's sector-aligned
/// middle directly while its unaligned neighbour in the same 4 KiB block went through the page
/// cache lost bytes (ext4 zeroes the rest of an unwritten block around a sub-block direct
/// write, and a cached copy of the page can be written back over direct data): 200 Mbit/s /
/// 200 ms / 5% on the emulated WAN ended in ChecksumMismatch, the partial holding 512-1,024
/// zero bytes inside one 4 KiB page. Whole blocks never share a page with a buffered write of
/// other data.
fn direct_alignment(dio_mem: u32, dio_offset: u32, blksize: u32) -> Option<u32> {
    if dio_mem == 0 {
        return None;
    }
    let align = dio_mem.max(dio_offset).max(blksize).max(MAX_DIRECT_ALIGN);
    let fits = |a: u32| a == 0 || align.is_multiple_of(a);
    let ok = align <= MAX_DIRECT_ALIGN && align.is_power_of_two();
    (ok && fits(dio_mem) && fits(dio_offset) && fits(blksize)).then_some(align)
}

/// Whether a sender source of `size` bytes is better read through the page cache than with
/// O_DIRECT: any of its pages are dirty or under writeback, or at least half of them are cached.
///
/// An O_DIRECT read of a range with dirty pages first writes them back and waits for the disk.
/// Regression (emulated WAN, 200 Mbit/s / 200 ms / 5%, a source written just before on ext4 on
/// a virtio disk): the sender stalled for 100–300 ms at a time, sending 3–40 Mbit/s at a
/// 210 Mbit/s rate, three times in 12 s; the same run with buffered reads had no stall. And a
/// cached page is read from memory, where O_DIRECT goes to the disk again.
fn is_better_read_cached(st: crate::files::space::PageCacheState, size: u64) -> bool {
    let pages = size.div_ceil(rustix::param::page_size() as u64).max(1);
    st.dirty > 0 || st.cached.saturating_mul(2) >= pages
}

/// Opens the O_DIRECT twin of `file` with `open` (by the name `file` was opened by, with
/// `flags` plus O_DIRECT): `None` where the filesystem refuses it (EINVAL) or wants an
/// alignment beyond [`MAX_DIRECT_ALIGN`]. Callers have already ruled out a memory filesystem
/// (tmpfs, ramfs: data in memory anyway), each with the one `fstatfs` it needs for itself.
/// The twin must be the same inode, or someone swapped the name between the opens.
fn open_direct_twin(
    file: &File,
    open: impl FnOnce(rustix::fs::OFlags) -> rustix::io::Result<std::os::fd::OwnedFd>,
    flags: rustix::fs::OFlags,
) -> Result<Option<(File, u32)>, DiskError> {
    use rustix::fs::{AtFlags, StatxFlags};
    let want = StatxFlags::DIOALIGN | StatxFlags::BASIC_STATS;
    let align = match rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, want) {
        Ok(st) if st.stx_mask & StatxFlags::DIOALIGN.bits() != 0 => {
            direct_alignment(st.stx_dio_mem_align, st.stx_dio_offset_align, st.stx_blksize)
        }
        Ok(st) => direct_alignment(MAX_DIRECT_ALIGN, MAX_DIRECT_ALIGN, st.stx_blksize),
        Err(_) => Some(MAX_DIRECT_ALIGN),
    };
    let Some(align) = align else { return Ok(None) };
    let twin = match open(flags | OFlags::DIRECT) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => return Ok(None),
        Err(e) => return Err(errno_error(e.raw_os_error())),
    };
    let (a, b) = (rustix::fs::fstat(file), rustix::fs::fstat(&twin));
    match (a, b) {
        (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) => Ok(Some((twin, align))),
        _ => Err(DiskError::Missing),
    }
}

/// A small per-shard cache of open files, by manifest index.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    source: FileSource,
    open: HashMap<u32, Open>,
    /// open/pread/pwrite/fallocate calls made, for `IoStats::disk_syscalls`.
    syscalls: u64,
    /// Try O_DIRECT for the receiver's partials.
    is_direct_wanted: bool,
    direct_stats: DirectStats,
    /// Receiver: the partials left to the shards that this shard has created.
    created: FileSet,
    /// Receiver: where written partials left to this shard go for finalize.
    handoff: Option<Handoff>,
    /// Receiver: the destination is a memory filesystem, so small files are written at
    /// once on the shard thread ([`is_write_now`](Self::is_write_now)).
    is_memory_dest: bool,
}

/// A set of manifest indices, one bit each (at most `MAX_FILES` bits: 128 KiB).
#[derive(Debug, Default)]
struct FileSet(Vec<u64>);

impl FileSet {
    fn has(&self, file: u32) -> bool {
        self.0.get(file as usize / 64).is_some_and(|w| w & (1 << (file % 64)) != 0)
    }
    fn insert(&mut self, file: u32, files: usize) {
        if self.0.is_empty() {
            self.0 = vec![0; files.div_ceil(64)];
        }
        if let Some(w) = self.0.get_mut(file as usize / 64) {
            *w |= 1 << (file % 64);
        }
    }
}

impl OpenFiles {
    pub fn new(source: FileSource) -> Self {
        let is_memory_dest = match &source {
            FileSource::Beneath(dest, ..) => crate::files::space::is_memory_fs(dest.as_fd()),
            FileSource::Paths(_) => false,
        };
        OpenFiles {
            source,
            open: HashMap::with_capacity(MAX_OPEN_FILES_PER_SHARD),
            syscalls: 0,
            is_direct_wanted: false,
            direct_stats: DirectStats::default(),
            created: FileSet::default(),
            handoff: None,
            is_memory_dest,
        }
    }

    /// Hand the descriptors of written partials left to this shard to the coordinator
    /// ([`hand_over`](Self::hand_over)).
    pub fn with_handoff(mut self, handoff: Option<Handoff>) -> Self {
        self.handoff = handoff;
        self
    }

    /// The one block of `file` has been written and hashed: if it is a partial this shard
    /// created (one block, so no other shard has it) and no operation on it is in flight, its
    /// descriptor goes to the coordinator, whose finalize then needs no `openat2` and this
    /// shard no `close`. With the channel full it is simply closed.
    pub fn hand_over(&mut self, file: u32) {
        let Some(handoff) = &self.handoff else { return };
        if !self.created.has(file) || self.open.get(&file).is_none_or(|o| o.pins > 0) {
            return;
        }
        if let Some(o) = self.open.remove(&file) {
            let _ = handoff.try_send((file, o.file));
        }
    }

    /// Receiver: whether writes of `file` are made at once with `pwrite` on the shard thread
    /// rather than through the ring: a file of at most `SMALL_FILE_BYTES` when the
    /// destination is a memory filesystem (tmpfs, ramfs). Those filesystems take no
    /// non-blocking buffered writes, so each ring write of a small file was handed to an io-wq
    /// worker: two thread wake-ups per file, about a tenth of the receiver's CPU for 10,000
    /// files of 1-64 KiB (docs/FILES.md, "Small files written at once"). Large files, and
    /// every file on a disk, keep the ring. Only a matter of cost: the bytes and the order in
    /// which writes are reported are the same either way.
    pub fn is_write_now(&self, file: u32) -> bool {
        let FileSource::Beneath(_, _, sizes, _) = &self.source else { return false };
        self.is_memory_dest && sizes.get(file as usize).is_some_and(|&s| s <= SMALL_FILE_BYTES)
    }

    /// Ask for O_DIRECT twins of the receiver's partials (files opened from now on).
    pub fn want_direct(&mut self, wanted: bool) {
        self.is_direct_wanted = wanted;
    }

    /// Which files got O_DIRECT and which were refused.
    pub fn direct_stats(&self) -> DirectStats {
        self.direct_stats
    }

    /// Disk syscalls made so far (opens, reads, writes, reservations).
    pub fn syscalls(&self) -> u64 {
        self.syscalls
    }

    fn open_one(&self, file: u32) -> Result<Open, DiskError> {
        match &self.source {
            FileSource::Paths(paths) => {
                let path = paths.get(file as usize).ok_or(DiskError::Missing)?;
                let file = File::open(path).map_err(|e| disk_error(&e))?;
                Ok(Open {
                    file,
                    direct: None,
                    direct_read: DirectRead::Untried,
                    pins: 0,
                    reserve: None,
                })
            }
            FileSource::Beneath(dest, rel, sizes, deferred) => {
                let i = file as usize;
                let rel = rel.get(i).ok_or(DiskError::Missing)?;
                let small = sizes.get(i).is_some_and(|&s| s <= SMALL_FILE_BYTES);
                // A partial left to this shard is created by its first open, exclusively: the
                // directory is one this receive made, so nothing may be there yet, and a name
                // that exists (a race with someone else) is refused, never opened.
                let create = deferred.get(i).copied().unwrap_or(false) && !self.created.has(file);
                let (flags, mode) = match create {
                    true => (OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, PARTIAL_MODE),
                    false => (OFlags::RDWR, 0),
                };
                let file = crate::files::dest::open_beneath(dest.as_fd(), rel, flags, mode)
                    .map(File::from)
                    .map_err(|e| errno_error(e.raw_os_error()))?;
                if small {
                    // Nothing to reserve (its space was checked with all the small files',
                    // and it was not sized at creation) and no O_DIRECT twin: a few buffered
                    // writes, made durable by the finalize batch's syncfs, cost less than the
                    // twin's open and stats (docs/FILES.md, "Many small files").
                    return Ok(Open {
                        file,
                        direct: None,
                        direct_read: DirectRead::Untried,
                        pins: 0,
                        reserve: None,
                    });
                }
                // The coordinator set the partial's final size at creation.
                let size = file.metadata().map_err(|e| disk_error(&e))?.len();
                let reserve = ReserveAhead::new(&file, size);
                // A reservation that is off at creation means a memory filesystem (one
                // `fstatfs` told): no O_DIRECT twin there, and none asked of `open_direct_twin`.
                let direct = match self.is_direct_wanted && reserve.is_on() {
                    true => {
                        let open = |f| crate::files::dest::open_beneath(dest.as_fd(), rel, f, 0);
                        open_direct_twin(&file, open, rustix::fs::OFlags::RDWR)?
                    }
                    false => None,
                };
                let reserve = Some(reserve);
                Ok(Open { file, direct, direct_read: DirectRead::Untried, pins: 0, reserve })
            }
        }
    }

    fn open(&mut self, file: u32) -> Result<&mut Open, DiskError> {
        if !self.open.contains_key(&file) {
            if self.open.len() >= MAX_OPEN_FILES_PER_SHARD {
                // Evict one with nothing in flight; shards move through files in order, so
                // any old one will do. There always is one: MAX_DISK_IN_FLIGHT is smaller.
                if let Some(k) = self.open.iter().find(|(_, o)| o.pins == 0).map(|(k, _)| *k) {
                    self.open.remove(&k);
                }
            }
            self.syscalls += 1;
            let f = self.open_one(file)?;
            if let FileSource::Beneath(_, _, sizes, deferred) = &self.source
                && deferred.get(file as usize).copied().unwrap_or(false)
            {
                self.created.insert(file, sizes.len());
            }
            // A sender's twin is tried at its first read (`pin_for_read`), and counted there.
            if self.is_direct_wanted && matches!(self.source, FileSource::Beneath(..)) {
                match f.direct {
                    Some(_) => self.direct_stats.files_direct += 1,
                    None => self.direct_stats.files_refused += 1,
                }
            }
            self.open.insert(file, f);
        }
        self.open.get_mut(&file).ok_or(DiskError::Missing)
    }

    /// The descriptor of `file` for one ring operation, opened if needed and kept open until
    /// [`unpin`](Self::unpin).
    pub fn pin(&mut self, file: u32) -> Result<RawFd, DiskError> {
        let o = self.open(file)?;
        o.pins += 1;
        Ok(o.file.as_raw_fd())
    }

    /// Like [`pin`](Self::pin), also giving the O_DIRECT descriptor and its alignment when
    /// the file has one.
    pub fn pin_with_direct(
        &mut self,
        file: u32,
    ) -> Result<(RawFd, Option<(RawFd, u32)>), DiskError> {
        let o = self.open(file)?;
        o.pins += 1;
        Ok((o.file.as_raw_fd(), o.direct.as_ref().map(|(f, a)| (f.as_raw_fd(), *a))))
    }

    /// Sender: the descriptor of `file` for one ring read, kept open until
    /// [`unpin`](Self::unpin), and its O_DIRECT twin with the alignment it needs when O_DIRECT
    /// is wanted, the source is larger than `SMALL_FILE_BYTES` (`size`, from the manifest),
    /// and its filesystem allows it. The twin is opened at the first such read, by the same
    /// path, and must be the same inode; small sources never pay for it.
    pub fn pin_for_read(
        &mut self,
        file: u32,
        size: u64,
    ) -> Result<(RawFd, Option<(RawFd, u32)>), DiskError> {
        let wanted = self.is_direct_wanted && size > SMALL_FILE_BYTES;
        let path = match &self.source {
            FileSource::Paths(paths) if wanted => paths.get(file as usize).cloned(),
            _ => None,
        };
        let o = self.open(file)?;
        let mut tried = None;
        let mut cached = false;
        if let (Some(path), DirectRead::Untried) = (path, o.direct_read) {
            o.direct_read = DirectRead::Tried;
            // A memory filesystem has no O_DIRECT and every page in memory: ask `cachestat`
            // nothing there, since it walks every page of the file (about 18 ms per GiB on
            // tmpfs here, 1.7% of the sender's CPU for a 1 GiB file).
            if crate::files::space::is_memory_fs(&o.file) {
                tried = Some(false);
            } else {
                cached = crate::files::space::page_cache_state(&o.file, 0)
                    .is_some_and(|st| is_better_read_cached(st, size));
                if !cached {
                    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC;
                    let open = |f| rustix::fs::open(&path, f, rustix::fs::Mode::empty());
                    o.direct = open_direct_twin(&o.file, open, flags)?;
                    tried = Some(o.direct.is_some());
                }
            }
        }
        o.pins += 1;
        let direct = match o.direct_read {
            DirectRead::Tried => o.direct.as_ref().map(|(f, a)| (f.as_raw_fd(), *a)),
            DirectRead::Untried | DirectRead::Refused => None,
        };
        let fd = o.file.as_raw_fd();
        if cached {
            self.syscalls += 1;
            self.direct_stats.files_cached += 1;
        }
        if let Some(opened) = tried {
            // fstatfs, statx, the open and two fstat; a memory filesystem stops at fstatfs.
            self.syscalls += if opened { 5 } else { 1 };
            let count = match opened {
                true => &mut self.direct_stats.files_direct,
                false => &mut self.direct_stats.files_refused,
            };
            *count += 1;
        }
        Ok((fd, direct))
    }

    /// Sender: counts one ring read, through the twin or the buffered descriptor.
    pub fn count_read(&mut self, direct: bool) {
        match direct {
            true => self.direct_stats.reads_direct += 1,
            false => self.direct_stats.reads_buffered += 1,
        }
    }

    /// The kernel refused an O_DIRECT read of `file` (EINVAL): counted, and its reads go
    /// through the buffered descriptor from now on (the twin closes with the file, once no
    /// operation uses it).
    pub fn refuse_direct_reads(&mut self, file: u32) {
        self.direct_stats.direct_fallbacks += 1;
        if let Some(o) = self.open.get_mut(&file) {
            o.direct_read = DirectRead::Refused;
        }
    }

    /// One ring operation on `file` finished.
    pub fn unpin(&mut self, file: u32) {
        if let Some(o) = self.open.get_mut(&file) {
            o.pins = o.pins.saturating_sub(1);
        }
    }

    /// Before writing `len` bytes at `offset` of `file`: reserve space ahead of the writes
    /// (one `fallocate` per `RESERVE_AHEAD_BYTES`; none on memory filesystems).
    pub fn reserve(&mut self, file: u32, offset: u64, len: usize) -> Result<(), DiskError> {
        let o = self.open(file)?;
        let Some(r) = o.reserve.as_mut() else { return Ok(()) };
        let called = r.before_write(&o.file, offset, len as u64);
        self.syscalls += u64::from(called != Ok(false));
        called.map(|_| ()).map_err(|e| errno_error(e.raw_os_error()))
    }

    /// Read at `offset` into `buf`: bytes read (fewer at end of file), or the error.
    pub fn read_at(&mut self, file: u32, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        let f = &self.open(file)?.file;
        let mut calls = 0;
        let res = loop {
            calls += 1;
            match f.read_at(buf, offset) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(disk_error(&e)),
            }
        };
        self.syscalls += calls;
        res
    }

    /// Write all of `data` at `offset`: bytes written (fewer only on error after progress).
    pub fn write_at(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<usize, DiskError> {
        self.reserve(file, offset, data.len())?;
        let f = &self.open(file)?.file;
        let (mut done, mut calls) = (0, 0);
        let res = loop {
            if done == data.len() {
                break Ok(done);
            }
            calls += 1;
            match f.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break if done > 0 { Ok(done) } else { Err(DiskError::NoSpace) },
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if done > 0 => break Ok(done),
                Err(e) => break Err(disk_error(&e)),
            }
        };
        self.syscalls += calls;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_written_at_once_only_on_a_memory_filesystem() {
        let sizes = vec![1, SMALL_FILE_BYTES, SMALL_FILE_BYTES + 1];
        for base in [std::path::Path::new("/dev/shm"), &std::env::temp_dir()] {
            let Ok(tmp) = tempfile::tempdir_in(base) else { continue };
            let dest = std::sync::Arc::new(crate::files::DestRoot::open(tmp.path()).unwrap());
            let memory = crate::files::space::is_memory_fs(dest.as_fd());
            let rel = std::sync::Arc::new(vec![String::new(); 3]);
            let source = FileSource::Beneath(
                dest,
                rel,
                std::sync::Arc::new(sizes.clone()),
                std::sync::Arc::new(vec![false; 3]),
            );
            let files = OpenFiles::new(source);
            let now: Vec<bool> = (0..4).map(|f| files.is_write_now(f)).collect();
            assert_eq!(now, [memory, memory, false, false], "{}", base.display());
        }
        let paths = FileSource::Paths(std::sync::Arc::new(vec![PathBuf::from("/dev/null")]));
        assert!(!OpenFiles::new(paths).is_write_now(0), "a sender never writes");
    }

    #[test]
    fn a_source_on_a_memory_filesystem_is_read_buffered_without_asking_the_page_cache() {
        let Ok(tmp) = tempfile::tempdir_in("/dev/shm") else { return };
        let path = tmp.path().join("big");
        std::fs::write(&path, vec![5u8; SMALL_FILE_BYTES as usize + 4096]).unwrap();
        let file = File::open(&path).unwrap();
        if !crate::files::space::is_memory_fs(&file) {
            return;
        }
        let size = file.metadata().unwrap().len();
        let mut files = OpenFiles::new(FileSource::Paths(std::sync::Arc::new(vec![path])));
        files.want_direct(true);
        let (_, direct) = files.pin_for_read(0, size).unwrap();
        assert!(direct.is_none());
        let st = files.direct_stats();
        // Refused at fstatfs: neither cachestat (files_cached) nor an O_DIRECT open.
        assert_eq!((st.files_refused, st.files_cached, st.files_direct), (1, 0, 0), "{st:?}");
        assert_eq!(files.syscalls, 1 + 1, "the open and the fstatfs");
        files.unpin(0);
        let _ = files.pin_for_read(0, size).unwrap();
        assert_eq!(files.direct_stats().files_refused, 1, "asked once per file");
    }

    #[test]
    fn a_source_the_page_cache_holds_is_read_through_it() {
        use crate::files::space::PageCacheState;
        let page = rustix::param::page_size() as u64;
        let size = 100 * page;
        let st = |cached, dirty| PageCacheState { cached, dirty };
        assert!(!is_better_read_cached(st(0, 0), size), "cold: O_DIRECT");
        assert!(!is_better_read_cached(st(49, 0), size), "under half cached: O_DIRECT");
        assert!(is_better_read_cached(st(50, 0), size), "half cached");
        assert!(is_better_read_cached(st(1, 1), size), "one dirty page waits for writeback");
        assert!(is_better_read_cached(st(1, 0), 1), "a one-page file, cached");
        assert!(!is_better_read_cached(st(0, 0), 0), "empty: nothing cached");
    }

    #[test]
    fn the_page_cache_state_of_a_file_just_written_shows_it() {
        let dir = std::env::temp_dir().join(format!("haul-cachestat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let f = File::open(&path).unwrap();
        let st = crate::files::space::page_cache_state(&f, 0);
        let _ = std::fs::remove_dir_all(&dir);
        // None only where the kernel has no cachestat (before 6.5).
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release.split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        match st {
            Some(st) => assert!(is_better_read_cached(st, 1 << 20), "{st:?}"),
            None => assert!((major, minor) < (6, 5), "kernel {release}: cachestat refused"),
        }
    }

    #[test]
    fn direct_writes_cover_whole_blocks_and_pages() {
        // ext4 on a 512-byte-sector disk: DIO alignment 512, blocks of 4 KiB.
        assert_eq!(direct_alignment(4, 512, 4096), Some(4096));
        assert_eq!(direct_alignment(512, 512, 1024), Some(4096));
        assert_eq!(direct_alignment(4096, 4096, 4096), Some(4096));
        // Blocks larger than a page (or than the stager's alignment): buffered.
        assert_eq!(direct_alignment(512, 512, 65536), None);
        assert_eq!(direct_alignment(512, 8192, 4096), None);
        // No O_DIRECT at all, or an alignment that is not a power of two.
        assert_eq!(direct_alignment(0, 0, 4096), None);
        assert_eq!(direct_alignment(512, 3072, 4096), None);
    }
}
