//! The destination directory, and every lookup or creation beneath it.
//!
//! [`DestRoot::open`] opens the operator's destination and says plainly what is wrong with it
//! (missing, missing parent, not a directory, read-only, not writable, no openat2). After that,
//! every path below it is resolved with
//! `openat2(dirfd, component, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`,
//! one component at a time, so that a hostile sender cannot make us write outside the
//! destination, including through a symbolic link planted in it (the scp CVE-2019-6111 class).
//!
//! Invariants:
//! - No file or directory is created or opened beneath the root except through [`open_beneath`]
//!   or `mkdirat` on a single validated component relative to a directory fd that itself came
//!   from [`open_beneath`].
//! - If the kernel lacks openat2 we refuse ([`FileError::NoOpenat2`]); there is no fallback.
//! - The operator's own destination path may contain symlinks (it is trusted); names from the
//!   peer may not.

use super::error::{FileError, Op};
use super::names::SafeName;
use super::space::{FsSpace, free_space};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatVfsMountFlags};
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The resolve flags every open beneath the destination uses.
pub const RESOLVE: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);
/// Mode for directories we create (the process umask still applies).
pub const DIR_MODE: u32 = 0o755;
/// openat2 with RESOLVE_BENEATH answers EAGAIN when a rename raced the lookup; retries allowed.
pub const MAX_OPENAT2_RETRIES: u32 = 8;

static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `openat2(dir, leaf, flags, mode, RESOLVE)` with bounded EAGAIN retries.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    leaf: &str,
    flags: OFlags,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a trailing symlink, with ELOOP even
    // for O_DIRECTORY (O_NOFOLLOW would turn that into a less telling ENOTDIR).
    let flags = flags | OFlags::CLOEXEC;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, leaf, flags, Mode::from_raw_mode(mode), RESOLVE) {
            Err(Errno::AGAIN | Errno::INTR) if tries < MAX_OPENAT2_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// The destination directory, opened once; everything beneath is resolved from its fd.
#[derive(Debug)]
pub struct DestRoot {
    dir: OwnedFd,
    path: PathBuf,
}

/// An open directory beneath the destination that holds one file's final and partial names.
/// Handles share one descriptor (closed with the last), so handing one to each of 10,000
/// files in a directory costs no `dup` and no `close` each.
#[derive(Debug)]
pub struct ParentDir {
    fd: std::sync::Arc<OwnedFd>,
}

impl ParentDir {
    /// The directory's fd (for `*at` calls and `fsync`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second handle on the same directory (the same descriptor: no system call). Never
    /// fails today; `file` names the file an error would be about, should that change.
    pub fn try_clone(&self, _file: &str) -> Result<ParentDir, FileError> {
        Ok(ParentDir { fd: self.fd.clone() })
    }
}

/// Most directories a [`DirCache`] keeps open.
pub const MAX_CACHED_DIRS: usize = 64;

/// Directories beneath the destination opened once and reused for every file in them (a
/// tree of many small files otherwise walks the same components for every file). Each entry
/// was opened through [`open_beneath`] like any other; at most [`MAX_CACHED_DIRS`] are kept,
/// and at most as many directories found missing (a lookup that does not create), so a new
/// tree of 10,000 files costs one failed lookup per directory, not one per file.
#[derive(Debug, Default)]
pub struct DirCache {
    /// Each directory, and whether this cache's own `mkdirat` made it (so it holds nothing
    /// but what this process put there).
    dirs: std::collections::HashMap<String, (ParentDir, bool)>,
    missing: std::collections::HashSet<String>,
}

impl DirCache {
    /// The directory holding `name`, as a handle of its own: created if missing when
    /// `create`, else `None` when a component does not exist.
    pub fn parent(
        &mut self,
        dest: &DestRoot,
        name: &SafeName,
        create: bool,
    ) -> Result<Option<ParentDir>, FileError> {
        Ok(self.parent_new(dest, name, create)?.map(|(p, _)| p))
    }

    /// [`parent`](Self::parent), and whether the directory was created by this cache (true
    /// only for a directory whose own `mkdirat` succeeded here, never for one that existed).
    pub fn parent_new(
        &mut self,
        dest: &DestRoot,
        name: &SafeName,
        create: bool,
    ) -> Result<Option<(ParentDir, bool)>, FileError> {
        let dir = name.as_str().rsplit_once('/').map_or("", |(d, _)| d);
        if let Some((p, is_new)) = self.dirs.get(dir) {
            return Ok(Some((p.try_clone(name.as_str())?, *is_new)));
        }
        if !create && self.missing.contains(dir) {
            return Ok(None);
        }
        let Some((p, is_new)) = dest.walk_parent_new(name, create)? else {
            if self.missing.len() >= MAX_CACHED_DIRS {
                self.missing.clear();
            }
            self.missing.insert(dir.to_owned());
            return Ok(None);
        };
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        self.missing.remove(dir);
        self.dirs.insert(dir.to_owned(), (p.try_clone(name.as_str())?, is_new));
        Ok(Some((p, is_new)))
    }
}

/// What sits at a final name already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingFile {
    pub is_regular: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

impl DestRoot {
    /// Opens the destination directory and checks that files can be created in it.
    pub fn open(path: &Path) -> Result<DestRoot, FileError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| classify_dest_open(path, e))?;
        let root = DestRoot { dir, path: path.to_owned() };
        root.probe_writable()?;
        Ok(root)
    }

    /// The path the operator gave.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory's fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Free space of the destination filesystem.
    pub fn space(&self) -> Result<FsSpace, FileError> {
        free_space(self.dir.as_fd(), &self.path.display().to_string())
    }

    /// Opens the directory that holds `name`, creating missing components (mode
    /// [`DIR_MODE`] & !umask) one at a time, each resolved beneath the previous one.
    pub fn create_parent(&self, name: &SafeName) -> Result<ParentDir, FileError> {
        self.walk_parent(name, true)?.ok_or_else(|| FileError::Escape { file: name.to_string() })
    }

    /// Opens the directory that holds `name` without creating anything; `None` if a component
    /// does not exist.
    pub fn find_parent(&self, name: &SafeName) -> Result<Option<ParentDir>, FileError> {
        self.walk_parent(name, false)
    }

    /// Stats the final name of `name` without following a symlink; `None` if absent.
    pub fn stat_existing(&self, name: &SafeName) -> Result<Option<ExistingFile>, FileError> {
        let Some(parent) = self.find_parent(name)? else { return Ok(None) };
        stat_existing_in(&parent, name)
    }
    fn walk_parent(&self, name: &SafeName, create: bool) -> Result<Option<ParentDir>, FileError> {
        Ok(self.walk_parent_new(name, create)?.map(|(p, _)| p))
    }

    /// [`walk_parent`](Self::walk_parent), and whether the last component was made by our
    /// own `mkdirat` just now (`EEXIST` counts as not new: someone else made it).
    fn walk_parent_new(
        &self,
        name: &SafeName,
        create: bool,
    ) -> Result<Option<(ParentDir, bool)>, FileError> {
        let mut cur: Option<OwnedFd> = None;
        let mut walked = String::new();
        let mut is_new = false;
        for component in name.dir_components() {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(component);
            let base = cur.as_ref().map_or(self.dir.as_fd(), |fd| fd.as_fd());
            let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
            is_new = false;
            let next = match open_beneath(base, component, dir_flags, 0) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(base, component, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) => is_new = true,
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(FileError::io(walked, Op::Mkdir, e)),
                    }
                    open_beneath(base, component, dir_flags, 0)
                }
                other => other,
            };
            match next {
                Ok(fd) => cur = Some(fd),
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(e) => return Err(classify_beneath(name, &walked, Op::Open, e)),
            }
        }
        let fd = match cur {
            Some(fd) => fd,
            None => self.dir.try_clone().map_err(|e| FileError::io(name.as_str(), Op::Open, e))?,
        };
        Ok(Some((ParentDir { fd: std::sync::Arc::new(fd) }, is_new)))
    }

    /// Creates and removes a probe file: proves openat2 works and that we may write here.
    fn probe_writable(&self) -> Result<(), FileError> {
        let st = rustix::fs::fstatvfs(&self.dir)
            .map_err(|e| FileError::io(self.path.display().to_string(), Op::Statvfs, e))?;
        if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return Err(FileError::DestReadOnly { path: self.path.clone() });
        }
        let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let probe = format!(".haul-probe.{}.{n}", std::process::id());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        match open_beneath(self.dir.as_fd(), &probe, flags, 0o600) {
            Ok(fd) => {
                drop(fd);
                rustix::fs::unlinkat(&self.dir, probe.as_str(), AtFlags::empty()).map_err(|e| {
                    FileError::io(self.path.join(&probe).display().to_string(), Op::Unlink, e)
                })
            }
            Err(Errno::NOSYS) => Err(FileError::NoOpenat2),
            Err(Errno::ROFS) => Err(FileError::DestReadOnly { path: self.path.clone() }),
            Err(e @ (Errno::ACCESS | Errno::PERM)) => {
                Err(FileError::DestNoPermission { path: self.path.clone(), source: e.into() })
            }
            Err(e) => Err(FileError::io(self.path.display().to_string(), Op::Create, e)),
        }
    }
}

/// Maps an error of `openat2` beneath the root to what it means for `name`.
pub(crate) fn classify_beneath(name: &SafeName, component: &str, op: Op, e: Errno) -> FileError {
    let file = name.to_string();
    match e {
        Errno::LOOP => FileError::SymlinkRefused { file, component: component.to_owned() },
        Errno::XDEV => FileError::Escape { file },
        Errno::NOTDIR => FileError::NotADirectory { file, component: component.to_owned() },
        Errno::NOSYS => FileError::NoOpenat2,
        e => FileError::io(file, op, e),
    }
}

fn classify_dest_open(path: &Path, e: Errno) -> FileError {
    match e {
        Errno::NOENT => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) if !parent.exists() => {
                FileError::DestParentMissing { path: path.to_owned(), parent: parent.to_owned() }
            }
            _ => FileError::DestMissing { path: path.to_owned() },
        },
        Errno::NOTDIR => FileError::DestNotDir { path: path.to_owned() },
        Errno::ACCESS | Errno::PERM => {
            FileError::DestNoPermission { path: path.to_owned(), source: e.into() }
        }
        e => FileError::io(path.display().to_string(), Op::Open, e),
    }
}

/// Stats the final name of `name` in `parent`, its directory, without following a symlink.
pub fn stat_existing_in(
    parent: &ParentDir,
    name: &SafeName,
) -> Result<Option<ExistingFile>, FileError> {
    match rustix::fs::statat(parent.as_fd(), name.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(ExistingFile {
            is_regular: FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
        })),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(FileError::io(name.as_str(), Op::Stat, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_cache_knows_new_and_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("old")).unwrap();
        let dest = DestRoot::open(tmp.path()).unwrap();
        let mut dirs = DirCache::default();
        let name = |s: &str| SafeName::parse(s).unwrap();

        // Looked up without creating: missing, and remembered as missing (no second walk).
        assert!(dirs.parent_new(&dest, &name("new/a"), false).unwrap().is_none());
        std::fs::create_dir(tmp.path().join("new")).unwrap();
        assert!(dirs.parent_new(&dest, &name("new/b"), false).unwrap().is_none());
        std::fs::remove_dir(tmp.path().join("new")).unwrap();

        // Created here: new, for every file in it; one that existed is not.
        let (_, is_new) = dirs.parent_new(&dest, &name("new/a"), true).unwrap().unwrap();
        assert!(is_new);
        let (_, is_new) = dirs.parent_new(&dest, &name("new/b"), true).unwrap().unwrap();
        assert!(is_new);
        let (_, is_new) = dirs.parent_new(&dest, &name("old/a"), true).unwrap().unwrap();
        assert!(!is_new);
        let (_, is_new) = dirs.parent_new(&dest, &name("top"), true).unwrap().unwrap();
        assert!(!is_new, "the destination itself is never new");
        // Found after creation even by a lookup that does not create.
        assert!(dirs.parent(&dest, &name("new/c"), false).unwrap().is_some());
    }
}
