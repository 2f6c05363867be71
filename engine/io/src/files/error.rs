//! The one error type of the file layer, [`FileError`].
//!
//! Every variant names the file (relative name from the manifest, or the path given by the
//! operator), the operation and the cause, and [`FileError::fault`] says whose fault it is, so
//! the runtime can tell the peer "refused" apart from "our disk is full".
//!
//! Invariant: nothing in `files` panics on any input; every OS error ends up here.

use super::names::NameError;
use super::space::human_bytes;
use std::fmt;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Which operation failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    Create,
    Mkdir,
    Stat,
    Statvfs,
    Preallocate,
    Read,
    Write,
    Sync,
    SetMode,
    SetOwner,
    SetTimes,
    SetXattr,
    GetXattr,
    Rename,
    SyncDir,
    Unlink,
    ReadDir,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::Mkdir => "mkdir",
            Op::Stat => "stat",
            Op::Statvfs => "statvfs",
            Op::Preallocate => "preallocate",
            Op::Read => "read",
            Op::Write => "write",
            Op::Sync => "fsync",
            Op::SetMode => "chmod",
            Op::SetOwner => "chown",
            Op::SetTimes => "set times",
            Op::SetXattr => "set xattr",
            Op::GetXattr => "read xattr",
            Op::Rename => "rename",
            Op::SyncDir => "fsync directory",
            Op::Unlink => "unlink",
            Op::ReadDir => "read directory",
        })
    }
}

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent something we refuse (a hostile or malformed name).
    Peer,
    /// The operator's setup: destination missing, read-only, full, not permitted, or a path
    /// given on the command line that cannot be sent.
    Operator,
    /// The system: an I/O error or a missing kernel feature.
    System,
    /// The caller of this library passed something out of range (a bug in our code).
    Caller,
}

/// An error of the file layer. Display strings are meant for the operator as they are.
#[derive(Debug, Error)]
pub enum FileError {
    /// The peer's name fails validation (peer's fault).
    #[error("refused file name {name:?} from the peer: {reason}")]
    BadName { name: String, reason: NameError },
    /// The destination directory does not exist.
    #[error("destination {path:?} does not exist")]
    DestMissing { path: PathBuf },
    /// The destination's parent directory does not exist either.
    #[error("destination {path:?} does not exist, nor does its parent directory {parent:?}")]
    DestParentMissing { path: PathBuf, parent: PathBuf },
    /// The destination (or a component of its path) is not a directory.
    #[error("destination {path:?} is not a directory")]
    DestNotDir { path: PathBuf },
    /// The destination is on a read-only filesystem.
    #[error("destination {path:?} is on a read-only filesystem")]
    DestReadOnly { path: PathBuf },
    /// This process may not create files in the destination.
    #[error("destination {path:?}: no permission to create files there ({source})")]
    DestNoPermission { path: PathBuf, source: io::Error },
    /// The kernel lacks openat2 (Linux 5.6+); we refuse rather than open files unsafely.
    #[error(
        "openat2 is not available on this kernel (Linux 5.6 or later is needed); refusing to \
         create files without RESOLVE_BENEATH protection"
    )]
    NoOpenat2,
    /// A component of the name is a symbolic link in the destination: refused, never followed.
    #[error("refused {file:?}: {component:?} in the destination is a symbolic link")]
    SymlinkRefused { file: String, component: String },
    /// Resolution would leave the destination.
    #[error("refused {file:?}: it resolves outside the destination")]
    Escape { file: String },
    /// A directory component of the name exists and is not a directory.
    #[error("cannot create {file:?}: {component:?} exists and is not a directory")]
    NotADirectory { file: String, component: String },
    /// The final name exists and the overwrite policy says never.
    #[error("{file:?} already exists in the destination (overwrite policy: never)")]
    Exists { file: String },
    /// The final name exists and is not a regular file, so it is never replaced.
    #[error("{file:?} exists in the destination and is not a regular file; not replacing it")]
    ExistsNotRegular { file: String },
    /// Something other than our regular file sits at the partial file's name.
    #[error(
        "partial file for {file:?} is not a plain regular file (kind or link count); not using it"
    )]
    PartialNotRegular { file: String },
    /// Not enough space on the destination filesystem. The partial file is kept for resume.
    #[error(
        "not enough space for {file}: need {}, {} available on {}",
        human_bytes(*needed),
        human_bytes(*available),
        fs.display()
    )]
    DiskFull { file: String, needed: u64, available: u64, fs: PathBuf },
    /// A write or read outside the file's declared size (caller's fault).
    #[error("{file:?}: range {start}..{end} is outside the file's size {size}")]
    OutOfRange { file: String, start: u64, end: u64, size: u64 },
    /// Too many files for one session (sender side, operator's input).
    #[error("too many files: more than {max} under the given paths")]
    TooManyFiles { max: usize },
    /// Two arguments yield the same relative name (sender side).
    #[error("{name:?} is named twice (from {first:?} and {second:?})")]
    DuplicateName { name: String, first: PathBuf, second: PathBuf },
    /// A path given to send cannot be named in a manifest (e.g. "/").
    #[error("cannot send {path:?}: {why}")]
    Unsendable { path: PathBuf, why: String },
    /// A finalize batch was full (caller's fault: commit it first).
    #[error("{file:?}: the finalize batch already holds {max} files")]
    BatchFull { file: String, max: usize },
    /// An OS call failed.
    #[error("{file}: {op} failed: {source}")]
    Io { file: String, op: Op, source: io::Error },
}

impl FileError {
    /// Whose fault this error is.
    pub fn fault(&self) -> Fault {
        match self {
            FileError::BadName { .. }
            | FileError::SymlinkRefused { .. }
            | FileError::Escape { .. }
            | FileError::NotADirectory { .. } => Fault::Peer,
            FileError::DestMissing { .. }
            | FileError::DestParentMissing { .. }
            | FileError::DestNotDir { .. }
            | FileError::DestReadOnly { .. }
            | FileError::DestNoPermission { .. }
            | FileError::Exists { .. }
            | FileError::ExistsNotRegular { .. }
            | FileError::PartialNotRegular { .. }
            | FileError::DiskFull { .. }
            | FileError::TooManyFiles { .. }
            | FileError::DuplicateName { .. }
            | FileError::Unsendable { .. } => Fault::Operator,
            FileError::NoOpenat2 | FileError::Io { .. } => Fault::System,
            FileError::OutOfRange { .. } | FileError::BatchFull { .. } => Fault::Caller,
        }
    }

    /// Builds an [`FileError::Io`].
    pub(crate) fn io(file: impl Into<String>, op: Op, source: impl Into<io::Error>) -> FileError {
        FileError::Io { file: file.into(), op, source: source.into() }
    }
}
