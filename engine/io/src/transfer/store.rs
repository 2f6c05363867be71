//! Where the shards' bytes come from and go to: the source files (sender) and the partial
//! files under the destination (receiver), opened lazily with a bounded number of descriptors
//! per shard.
//!
//! Invariants: names from the peer are validated before anything is created
//! (`files::names`); every path is created beneath the destination with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (`files::dest`); a file is written as a
//! hidden partial and renamed into place only after its checksum verified.

use haul_proto::session::DiskError;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Most files one shard keeps open at once.
pub(crate) const MAX_OPEN_FILES_PER_SHARD: usize = 64;

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

/// Where a shard's files are.
#[derive(Clone, Debug)]
pub(crate) enum FileSource {
    /// The sender's sources, opened read-only by path (given by the local user).
    Paths(std::sync::Arc<Vec<PathBuf>>),
    /// The receiver's partial files, opened read-write beneath the destination with openat2.
    Beneath(std::sync::Arc<crate::files::DestRoot>, std::sync::Arc<Vec<String>>),
}

/// A small per-shard cache of open files, by manifest index.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    source: FileSource,
    open: HashMap<u32, File>,
    /// open/pread/pwrite calls made, for `IoStats::disk_syscalls`.
    syscalls: u64,
}

impl OpenFiles {
    pub fn new(source: FileSource) -> Self {
        OpenFiles { source, open: HashMap::with_capacity(MAX_OPEN_FILES_PER_SHARD), syscalls: 0 }
    }

    /// Disk syscalls made so far (opens, reads, writes).
    pub fn syscalls(&self) -> u64 {
        self.syscalls
    }

    fn open_one(&self, file: u32) -> Result<File, DiskError> {
        match &self.source {
            FileSource::Paths(paths) => {
                let path = paths.get(file as usize).ok_or(DiskError::Missing)?;
                File::open(path).map_err(|e| disk_error(&e))
            }
            FileSource::Beneath(dest, rel) => {
                let rel = rel.get(file as usize).ok_or(DiskError::Missing)?;
                let flags = rustix::fs::OFlags::RDWR;
                crate::files::dest::open_beneath(dest.as_fd(), rel, flags, 0)
                    .map(File::from)
                    .map_err(|e| disk_error(&std::io::Error::from_raw_os_error(e.raw_os_error())))
            }
        }
    }

    fn file(&mut self, file: u32) -> Result<&File, DiskError> {
        if !self.open.contains_key(&file) {
            if self.open.len() >= MAX_OPEN_FILES_PER_SHARD {
                // Evict one; shards move through files in order, so any old one will do.
                if let Some(&k) = self.open.keys().next() {
                    self.open.remove(&k);
                }
            }
            self.syscalls += 1;
            let f = self.open_one(file)?;
            self.open.insert(file, f);
        }
        self.open.get(&file).ok_or(DiskError::Missing)
    }

    /// Read at `offset` into `buf`: bytes read (fewer at end of file), or the error.
    pub fn read_at(&mut self, file: u32, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        self.file(file)?;
        let f = self.open.get(&file).ok_or(DiskError::Missing)?;
        loop {
            self.syscalls += 1;
            match f.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(disk_error(&e)),
            }
        }
    }

    /// Write all of `data` at `offset`: bytes written (fewer only on error after progress).
    pub fn write_at(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<usize, DiskError> {
        self.file(file)?;
        let f = self.open.get(&file).ok_or(DiskError::Missing)?;
        let mut done = 0;
        while done < data.len() {
            self.syscalls += 1;
            match f.write_at(&data[done..], offset + done as u64) {
                Ok(0) => return if done > 0 { Ok(done) } else { Err(DiskError::NoSpace) },
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if done > 0 => {
                    let _ = e;
                    return Ok(done);
                }
                Err(e) => return Err(disk_error(&e)),
            }
        }
        Ok(done)
    }
}
