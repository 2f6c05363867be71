//! The receiver's partial file: created hidden next to the final name, sized, space-checked, written
//! positionally, and renamed into place only once finished.
//!
//! Naming (docs/FILES.md, "Partial files"): `<dir>/.<name>.haul-partial`, or, when that would
//! not fit in NAME_MAX with the checkpoint's suffixes, `<dir>/.haul-<32 hex of BLAKE3(name)>
//! .haul-partial`. Created `0o600` through openat2 beneath the destination.
//!
//! Invariants:
//! - Writes and reads never go past the size given at creation ([`FileError::OutOfRange`]).
//! - ENOSPC, at creation (the unallocated bytes do not fit the free space) or at a write,
//!   becomes [`FileError::DiskFull`] naming the file and the bytes needed vs available; the
//!   partial file is kept for resume.
//! - [`PartialFile::finalize`] makes data and attributes durable (fsync) before the rename, and
//!   the rename durable (fsync of the directory) before it returns.
//! - setuid/setgid survive only if the caller asked (`keep_setid`) and the process is root.
//! - O_DIRECT is used only when asked for and accepted by the filesystem; otherwise buffered,
//!   and [`PartialFile::io_mode`] says which.

use super::dest::{DestRoot, ParentDir, classify_beneath, open_beneath};
use super::error::{FileError, Op};
use super::names::{NAME_MAX, SafeName};
use super::space::free_space;
use rustix::fs::{AtFlags, FileType, OFlags, RenameFlags, StatxFlags, Timestamps};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

/// Suffix of a partial file.
pub const PARTIAL_SUFFIX: &str = ".haul-partial";
/// Suffix a checkpoint adds to the partial's name.
pub const CKPT_SUFFIX: &str = ".ckpt";
/// Suffix of a checkpoint being written.
pub const TMP_SUFFIX: &str = ".tmp";
/// Mode of a partial file while it is being written.
pub const PARTIAL_MODE: u32 = 0o600;
/// Most extended attributes one finalize sets.
pub const MAX_XATTRS: usize = 256;
/// Largest extended attribute value accepted (Linux XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE_BYTES: usize = 65_536;
/// Alignment assumed for O_DIRECT when the kernel cannot tell (statx DIOALIGN, Linux 6.1+).
pub const DEFAULT_DIRECT_ALIGN: u32 = 4096;

/// The hidden partial name of a final component.
pub fn partial_name(file_name: &str) -> String {
    let longest = 1 + file_name.len() + PARTIAL_SUFFIX.len() + CKPT_SUFFIX.len() + TMP_SUFFIX.len();
    if longest <= NAME_MAX {
        return format!(".{file_name}{PARTIAL_SUFFIX}");
    }
    let hash = blake3::hash(file_name.as_bytes()).to_hex();
    format!(".haul-{}{PARTIAL_SUFFIX}", &hash.as_str()[..32])
}

/// Alignment O_DIRECT needs, in bytes: buffer address and length, and file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alignment {
    pub mem_bytes: u32,
    pub offset_bytes: u32,
}

/// How the data of a partial file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// O_DIRECT for aligned writes (the rest go through the page cache).
    Direct(Alignment),
    /// Through the page cache. `direct_refused` is true when O_DIRECT was asked for and the
    /// filesystem refused it (tmpfs on older kernels, some FUSE filesystems).
    Buffered { direct_refused: bool },
}

/// How the space of a partial file is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prealloc {
    /// The size was set (sparse) and the unallocated bytes were checked against free space;
    /// the writer reserves as it goes, a chunk ahead of its writes
    /// ([`ReserveAhead`](super::space::ReserveAhead)). No whole-file `fallocate`: on tmpfs it
    /// cost 20-25% of the receiver's CPU, and it allocated a sparse source's holes.
    Ahead,
    /// Nothing checked or reserved: only the size was set (the caller checked many small
    /// files at once, or the file was reopened for a checkpoint or finalize).
    SizeOnly,
}

/// How to open a partial file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialOptions {
    /// Try O_DIRECT.
    pub direct_io: bool,
    /// Discard what an earlier attempt left (start over) instead of keeping it for resume.
    pub fresh: bool,
    /// Reserve no space: the caller checked free space for many small files at once, and a
    /// write that finds the disk full still says so ([`FileError::DiskFull`]).
    pub skip_prealloc: bool,
    /// The parent directory was created by this process for this transfer
    /// ([`DirCache::parent_new`](super::dest::DirCache::parent_new)): it holds no checkpoint
    /// of an earlier attempt, so a `fresh` create need not try to remove one.
    pub in_new_dir: bool,
}

/// Attributes to give the file at finalize.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalAttrs {
    /// Permission bits from the sender (only `& 0o7777` is used).
    pub mode: u32,
    /// Modification time, ns since the epoch; also used as the access time.
    pub mtime_ns: i64,
    /// Keep setuid/setgid (honoured only when the process is root).
    pub keep_setid: bool,
    /// Owner and group to set, if asked (applied only when permitted).
    pub owner: Option<(u32, u32)>,
    /// Extended attributes to set, if asked (name, value).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// What finalize did beyond the rename.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finalized {
    /// The mode that was set.
    pub mode: u32,
    /// Owner was asked for and not permitted: skipped.
    pub owner_skipped: bool,
    /// Extended attributes the filesystem or our privileges refused, by name.
    pub xattrs_skipped: Vec<String>,
}

/// The mode a finished file gets: `mode & 0o7777`, without setuid/setgid unless the caller
/// asked to keep them and the process is root.
pub fn final_mode(mode: u32, keep_setid: bool, is_root: bool) -> u32 {
    let mode = mode & 0o7777;
    if keep_setid && is_root { mode } else { mode & !0o6000 }
}

/// One file being received.
#[derive(Debug)]
pub struct PartialFile {
    name: SafeName,
    parent: ParentDir,
    partial: String,
    file: File,
    direct: Option<File>,
    size: u64,
    mode: IoMode,
    prealloc: Prealloc,
    dest_path: std::path::PathBuf,
    /// The filesystem the file is on (`st_dev`, read when it was opened): a finalize batch
    /// syncs each filesystem once without a `fstat` per file.
    dev: u64,
    /// The caller knows this partial has no checkpoint ([`Self::mark_no_checkpoint`]): the
    /// rename skips removing one (an `unlinkat` that would fail with ENOENT).
    is_checkpoint_absent: bool,
}

impl PartialFile {
    /// Creates (or, unless `fresh`, reopens for resume) the partial file of `name`, creating
    /// its parent directories, and reserves `size` bytes.
    pub fn create(
        dest: &DestRoot,
        name: &SafeName,
        size: u64,
        options: PartialOptions,
    ) -> Result<PartialFile, FileError> {
        let parent = dest.create_parent(name)?;
        Self::create_in(dest, parent, name, size, options)
    }

    /// [`create`](Self::create) in `parent`, the directory of `name` already opened beneath
    /// `dest` (callers creating many files in one directory open it once).
    pub fn create_in(
        dest: &DestRoot,
        parent: ParentDir,
        name: &SafeName,
        size: u64,
        options: PartialOptions,
    ) -> Result<PartialFile, FileError> {
        let partial = partial_name(name.file_name());
        let mut flags = OFlags::RDWR | OFlags::CREATE;
        if options.fresh {
            // The checkpoint goes first: it must never describe bytes we are about to discard.
            // A directory we just made holds none.
            if !options.in_new_dir {
                remove_leaf(&parent, &format!("{partial}{CKPT_SUFFIX}"), name)?;
            }
            flags |= OFlags::TRUNC;
        }
        let fd = open_beneath(parent.as_fd(), &partial, flags, PARTIAL_MODE)
            .map_err(|e| classify_beneath(name, &partial, Op::Create, e))?;
        let (mut partial_file, len) = Self::adopt(dest, parent, partial, fd, name, size)?;
        let (direct, mode) = open_direct(
            &partial_file.parent,
            &partial_file.partial,
            &partial_file.file,
            name,
            options.direct_io,
        )?;
        (partial_file.direct, partial_file.mode) = (direct, mode);
        partial_file.prealloc = if options.skip_prealloc {
            if len > size {
                partial_file.file.set_len(size).map_err(|e| partial_file.write_error(e))?;
            }
            Prealloc::SizeOnly
        } else {
            partial_file.preallocate(len)?
        };
        Ok(partial_file)
    }

    /// Opens the existing partial file of `name` in `parent` (buffered, nothing created,
    /// nothing reserved): for checkpoints and finalize once the data is written.
    /// [`FileError::Io`] with ENOENT if it is gone.
    pub fn open_in(
        dest: &DestRoot,
        parent: ParentDir,
        name: &SafeName,
        size: u64,
    ) -> Result<PartialFile, FileError> {
        let partial = partial_name(name.file_name());
        let fd = open_beneath(parent.as_fd(), &partial, OFlags::RDWR, 0)
            .map_err(|e| classify_beneath(name, &partial, Op::Open, e))?;
        let (mut partial_file, _) = Self::adopt(dest, parent, partial, fd, name, size)?;
        partial_file.prealloc = Prealloc::SizeOnly;
        Ok(partial_file)
    }

    /// [`open_in`](Self::open_in) for a partial whose descriptor the caller already has (the
    /// receiving shard opened it beneath `dest`, by the same name in `parent`, and handed it
    /// on): checked like a fresh open (a regular file with one link), without the `openat2`.
    pub fn adopt_open(
        dest: &DestRoot,
        parent: ParentDir,
        name: &SafeName,
        size: u64,
        fd: std::os::fd::OwnedFd,
    ) -> Result<PartialFile, FileError> {
        let partial = partial_name(name.file_name());
        let (mut partial_file, _) = Self::adopt(dest, parent, partial, fd, name, size)?;
        partial_file.prealloc = Prealloc::SizeOnly;
        Ok(partial_file)
    }

    /// Wraps a freshly opened partial after checking it is a regular file with one link;
    /// returns it (buffered, no direct fd) and its current length.
    fn adopt(
        dest: &DestRoot,
        parent: ParentDir,
        partial: String,
        fd: std::os::fd::OwnedFd,
        name: &SafeName,
        size: u64,
    ) -> Result<(PartialFile, u64), FileError> {
        let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(name.as_str(), Op::Stat, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
            return Err(FileError::PartialNotRegular { file: name.to_string() });
        }
        let partial_file = PartialFile {
            name: name.clone(),
            parent,
            partial,
            file: File::from(fd),
            direct: None,
            size,
            mode: IoMode::Buffered { direct_refused: false },
            prealloc: Prealloc::SizeOnly,
            dest_path: dest.path().to_owned(),
            dev: st.st_dev,
            is_checkpoint_absent: false,
        };
        Ok((partial_file, st.st_size as u64))
    }

    /// The file's validated name.
    pub fn name(&self) -> &SafeName {
        &self.name
    }

    /// The filesystem the file is on (`st_dev`).
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Tells the file that it has no checkpoint: the caller removed any earlier attempt's when
    /// it created the partial fresh and has written none since. Finalizing then makes no
    /// attempt to remove one. Wrongly set, a stale checkpoint would outlive its file (harmless
    /// to the file, which is in place; a later transfer of the same name starts fresh or
    /// checks the checkpoint's identity).
    pub fn mark_no_checkpoint(&mut self) {
        self.is_checkpoint_absent = true;
    }

    /// The partial file's own name in its directory.
    pub fn partial_name(&self) -> &str {
        &self.partial
    }

    /// The size the file will have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Direct or buffered, and the alignment direct writes need.
    pub fn io_mode(&self) -> IoMode {
        self.mode
    }

    /// How the space was reserved.
    pub fn prealloc(&self) -> Prealloc {
        self.prealloc
    }

    /// The buffered fd (for an io_uring backend that registers files).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The O_DIRECT fd, when direct mode is on.
    pub fn direct_fd(&self) -> Option<BorrowedFd<'_>> {
        self.direct.as_ref().map(|f| f.as_fd())
    }

    /// The directory holding the partial and final names.
    pub fn parent(&self) -> &ParentDir {
        &self.parent
    }

    /// Writes all of `buf` at `offset` (EINTR retried, short writes continued). Aligned
    /// writes use O_DIRECT when it is on; others go through the page cache.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), FileError> {
        self.check_range(offset, buf.len())?;
        let file = match (&self.direct, self.mode) {
            (Some(direct), IoMode::Direct(align)) if is_aligned(buf, offset, align) => direct,
            _ => &self.file,
        };
        file.write_all_at(buf, offset).map_err(|e| self.write_error(e))
    }

    /// Reads up to `buf.len()` bytes at `offset`, stopping early only at end of file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, FileError> {
        self.check_range(offset, buf.len())?;
        read_full_at(&self.file, buf, offset)
            .map_err(|e| FileError::io(self.name.as_str(), Op::Read, e))
    }

    /// fdatasync: written data is durable when this returns.
    pub fn sync_data(&self) -> Result<(), FileError> {
        self.file.sync_data().map_err(|e| FileError::io(self.name.as_str(), Op::Sync, e))
    }

    /// Removes the checkpoint, then the partial file (starting over or giving up).
    pub fn discard(self) -> Result<(), FileError> {
        remove_leaf(&self.parent, &format!("{}{CKPT_SUFFIX}", self.partial), &self.name)?;
        remove_leaf(&self.parent, &self.partial, &self.name)
    }

    /// Sets attributes, makes everything durable and renames the partial into place
    /// (`RENAME_NOREPLACE` unless `overwrite`), removes the checkpoint and fsyncs the
    /// directory. For many small files, [`FinalizeBatch`](super::batch::FinalizeBatch) does
    /// the same with two filesystem syncs per batch instead of two fsyncs per file.
    pub fn finalize(self, attrs: &FinalAttrs, overwrite: bool) -> Result<Finalized, FileError> {
        let done = self.apply_attrs(attrs)?;
        // One fsync makes the data and the attributes durable before the rename.
        self.file.sync_all().map_err(|e| FileError::io(self.name.as_str(), Op::Sync, e))?;
        self.rename_into_place(overwrite)?;
        rustix::fs::fsync(self.parent.as_fd())
            .map_err(|e| FileError::io(self.name.as_str(), Op::SyncDir, e))?;
        Ok(done)
    }

    /// Owner (if asked), mode, xattrs (if asked) and times, in that order; nothing synced.
    pub(crate) fn apply_attrs(&self, attrs: &FinalAttrs) -> Result<Finalized, FileError> {
        let file = self.name.as_str();
        let fd = self.file.as_fd();
        let is_root = is_root();
        let mut done = Finalized::default();
        if let Some((uid, gid)) = attrs.owner {
            let owner = Some(rustix::process::Uid::from_raw(uid));
            let group = Some(rustix::process::Gid::from_raw(gid));
            match rustix::fs::fchown(fd, owner, group) {
                Ok(()) => {}
                Err(Errno::PERM) => done.owner_skipped = true,
                Err(e) => return Err(FileError::io(file, Op::SetOwner, e)),
            }
        }
        // After chown, which clears setuid/setgid.
        done.mode = final_mode(attrs.mode, attrs.keep_setid, is_root);
        rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(done.mode))
            .map_err(|e| FileError::io(file, Op::SetMode, e))?;
        done.xattrs_skipped = set_xattrs(fd, file, &attrs.xattrs)?;
        let t = timespec_of_ns(attrs.mtime_ns);
        let times = Timestamps { last_access: t, last_modification: t };
        rustix::fs::futimens(fd, &times).map_err(|e| FileError::io(file, Op::SetTimes, e))?;
        Ok(done)
    }

    /// fsync: data and attributes durable.
    pub(crate) fn sync_all(&self) -> Result<(), FileError> {
        self.file.sync_all().map_err(|e| FileError::io(self.name.as_str(), Op::Sync, e))
    }

    /// fsync of the directory the file is renamed in: the rename durable.
    pub(crate) fn sync_parent(&self) -> Result<(), FileError> {
        rustix::fs::fsync(self.parent.as_fd())
            .map_err(|e| FileError::io(self.name.as_str(), Op::SyncDir, e))
    }

    /// Renames the partial to the final name and removes the checkpoint; no sync.
    pub(crate) fn rename_into_place(&self, overwrite: bool) -> Result<(), FileError> {
        rename_into_place(&self.parent, &self.partial, &self.name, overwrite)?;
        if self.is_checkpoint_absent {
            return Ok(());
        }
        remove_leaf(&self.parent, &format!("{}{CKPT_SUFFIX}", self.partial), &self.name)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), FileError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            end => Err(FileError::OutOfRange {
                file: self.name.to_string(),
                start: offset,
                end: end.unwrap_or(u64::MAX),
                size: self.size,
            }),
        }
    }

    /// Sets the size (a sparse file: nothing allocated) and checks that the bytes not yet
    /// allocated fit the free space now, so a too-big file is refused before any data moves.
    fn preallocate(&self, current_len: u64) -> Result<Prealloc, FileError> {
        let file = self.name.as_str();
        if current_len != self.size {
            self.file.set_len(self.size).map_err(|e| FileError::io(file, Op::Preallocate, e))?;
        }
        let available = free_space(&self.file, file)?.available_bytes;
        if self.unallocated_bytes() > available {
            return Err(self.disk_full());
        }
        Ok(Prealloc::Ahead)
    }

    /// Bytes of the file not yet allocated on disk (what writing it whole still needs).
    pub fn unallocated_bytes(&self) -> u64 {
        let allocated = rustix::fs::fstat(&self.file).map_or(0, |st| (st.st_blocks as u64) * 512);
        self.size.saturating_sub(allocated)
    }

    fn write_error(&self, e: std::io::Error) -> FileError {
        if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error()) {
            return self.disk_full();
        }
        FileError::io(self.name.as_str(), Op::Write, e)
    }

    /// [`FileError::DiskFull`] for this file now: the bytes not yet allocated and the free
    /// space (for a disk that filled during the writes).
    pub fn disk_full(&self) -> FileError {
        let available = free_space(&self.file, self.name.as_str()).map_or(0, |s| s.available_bytes);
        FileError::DiskFull {
            file: self.name.to_string(),
            needed: self.unallocated_bytes(),
            available,
            fs: self.dest_path.clone(),
        }
    }
}

/// Unlinks `leaf` in `parent` if it exists.
fn remove_leaf(parent: &ParentDir, leaf: &str, name: &SafeName) -> Result<(), FileError> {
    match rustix::fs::unlinkat(parent.as_fd(), leaf, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(FileError::io(name.as_str(), Op::Unlink, e)),
    }
}

/// Reads until `buf` is full or end of file; EINTR retried. Returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn is_aligned(buf: &[u8], offset: u64, align: Alignment) -> bool {
    let mem = u64::from(align.mem_bytes.max(1));
    let off = u64::from(align.offset_bytes.max(1));
    (buf.as_ptr() as u64).is_multiple_of(mem)
        && (buf.len() as u64).is_multiple_of(off)
        && offset.is_multiple_of(off)
}

/// Opens a second, O_DIRECT descriptor when asked and allowed.
fn open_direct(
    parent: &ParentDir,
    partial: &str,
    file: &File,
    name: &SafeName,
    wanted: bool,
) -> Result<(Option<File>, IoMode), FileError> {
    if !wanted {
        return Ok((None, IoMode::Buffered { direct_refused: false }));
    }
    let align = match rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(st) if st.stx_mask & StatxFlags::DIOALIGN.bits() != 0 => {
            if st.stx_dio_mem_align == 0 {
                return Ok((None, IoMode::Buffered { direct_refused: true }));
            }
            Alignment { mem_bytes: st.stx_dio_mem_align, offset_bytes: st.stx_dio_offset_align }
        }
        _ => Alignment { mem_bytes: DEFAULT_DIRECT_ALIGN, offset_bytes: DEFAULT_DIRECT_ALIGN },
    };
    match open_beneath(parent.as_fd(), partial, OFlags::RDWR | OFlags::DIRECT, 0) {
        Ok(fd) => {
            // The name was opened twice: both fds must be the same inode, or someone swapped
            // the partial between the opens.
            let (a, b) = (rustix::fs::fstat(file), rustix::fs::fstat(&fd));
            match (a, b) {
                (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) => {
                    Ok((Some(File::from(fd)), IoMode::Direct(align)))
                }
                _ => Err(FileError::PartialNotRegular { file: name.to_string() }),
            }
        }
        Err(Errno::INVAL | Errno::OPNOTSUPP) => {
            Ok((None, IoMode::Buffered { direct_refused: true }))
        }
        Err(e) => Err(classify_beneath(name, partial, Op::Open, e)),
    }
}

fn set_xattrs(
    fd: BorrowedFd<'_>,
    file: &str,
    xattrs: &[(String, Vec<u8>)],
) -> Result<Vec<String>, FileError> {
    let mut skipped = Vec::new();
    for (i, (name, value)) in xattrs.iter().enumerate() {
        if i >= MAX_XATTRS || value.len() > MAX_XATTR_VALUE_BYTES || name.contains('\0') {
            skipped.push(name.clone());
            continue;
        }
        match rustix::fs::fsetxattr(fd, name.as_str(), value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS | Errno::INVAL | Errno::RANGE) => {
                skipped.push(name.clone())
            }
            Err(e) => return Err(FileError::io(file, Op::SetXattr, e)),
        }
    }
    Ok(skipped)
}

fn rename_into_place(
    parent: &ParentDir,
    partial: &str,
    name: &SafeName,
    overwrite: bool,
) -> Result<(), FileError> {
    let dir = parent.as_fd();
    let leaf = name.file_name();
    let flags = if overwrite { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
    match rustix::fs::renameat_with(dir, partial, dir, leaf, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(FileError::Exists { file: name.to_string() }),
        // A filesystem without RENAME_NOREPLACE: link(2) fails on an existing name, so
        // link + unlink keeps the no-replace guarantee.
        Err(Errno::INVAL) if !overwrite => {
            match rustix::fs::linkat(dir, partial, dir, leaf, AtFlags::empty()) {
                Ok(()) => rustix::fs::unlinkat(dir, partial, AtFlags::empty())
                    .map_err(|e| FileError::io(name.as_str(), Op::Unlink, e)),
                Err(Errno::EXIST) => Err(FileError::Exists { file: name.to_string() }),
                Err(e) => Err(FileError::io(name.as_str(), Op::Rename, e)),
            }
        }
        Err(e) => Err(FileError::io(name.as_str(), Op::Rename, e)),
    }
}

/// True when the process runs as root; asked once (the effective uid of a receiver does not
/// change during a transfer, and one `geteuid` per finalized file shows in small-file runs).
fn is_root() -> bool {
    static IS_ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IS_ROOT.get_or_init(|| rustix::process::geteuid().is_root())
}

/// Splits nanoseconds since the epoch (possibly negative) into a timespec.
pub fn timespec_of_ns(ns: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_are_hidden_and_fit() {
        assert_eq!(partial_name("big.bin"), ".big.bin.haul-partial");
        let long = "n".repeat(NAME_MAX);
        let p = partial_name(&long);
        assert!(p.starts_with(".haul-") && p.ends_with(PARTIAL_SUFFIX), "{p}");
        assert!(p.len() + CKPT_SUFFIX.len() + TMP_SUFFIX.len() <= NAME_MAX);
        assert_ne!(partial_name(&"m".repeat(NAME_MAX)), p);
    }

    #[test]
    fn setid_dropped_unless_root_asked() {
        assert_eq!(final_mode(0o104755, false, true), 0o755);
        assert_eq!(final_mode(0o6755, true, false), 0o755);
        assert_eq!(final_mode(0o6755, true, true), 0o6755);
        assert_eq!(final_mode(0o1777, false, false), 0o1777);
    }

    #[test]
    fn checkpoint_removal_is_skipped_only_when_known_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DestRoot::open(tmp.path()).unwrap();
        let ckpt = |n: &str| tmp.path().join(format!(".{n}.haul-partial{CKPT_SUFFIX}"));
        let fresh = PartialOptions { fresh: true, skip_prealloc: true, ..Default::default() };
        for (n, known_absent) in [("a", false), ("b", true)] {
            std::fs::write(ckpt(n), b"stale").unwrap();
            let name = SafeName::parse(n).unwrap();
            // In a directory that existed, a fresh create removes a stale checkpoint...
            let mut p = PartialFile::create(&dest, &name, 1, fresh).unwrap();
            assert!(!ckpt(n).exists());
            // ...and the rename removes one unless told there is none.
            std::fs::write(ckpt(n), b"stale").unwrap();
            if known_absent {
                p.mark_no_checkpoint();
            }
            p.rename_into_place(false).unwrap();
            assert!(tmp.path().join(n).exists());
            assert_eq!(ckpt(n).exists(), known_absent);
        }
        // A fresh create in a directory made for this transfer does not look for one.
        std::fs::write(ckpt("c"), b"stale").unwrap();
        let in_new_dir = PartialOptions { in_new_dir: true, ..fresh };
        PartialFile::create(&dest, &SafeName::parse("c").unwrap(), 1, in_new_dir).unwrap();
        assert!(ckpt("c").exists());
    }

    #[test]
    fn timespec_handles_negative_times() {
        let t = timespec_of_ns(-1);
        assert_eq!((t.tv_sec, t.tv_nsec), (-1, 999_999_999));
        let t = timespec_of_ns(1_500_000_000);
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
    }
}
