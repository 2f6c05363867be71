//! Overwrite policy: what the receiver does when a file's final name already exists.
//!
//! [`decide`] is a pure function of the policy, the stat of what exists
//! ([`DestRoot::stat_existing`](super::dest::DestRoot::stat_existing)), the sender's size and
//! mtime, and, for `IfDifferent` when size and mtime agree, whether the whole-file checksums
//! agree ([`hash_existing`] gives the receiver's side).
//!
//! Invariants:
//! - Something that is not a regular file (a directory, a symlink, a device) is never
//!   replaced, whatever the policy.
//! - `Write { replace: false }` is renamed with RENAME_NOREPLACE, so a file that appears after
//!   the decision is still not clobbered.

use super::dest::{DestRoot, ExistingFile, open_beneath};
use super::error::{FileError, Op};
use super::names::SafeName;
use super::partial::read_full_at;
use rustix::fs::OFlags;
use std::fs::File;

/// Read buffer of [`hash_existing`].
const HASH_CHUNK_BYTES: usize = 1 << 20;

/// What the receiver does when the final name exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse, naming the file (the default).
    #[default]
    Never,
    /// Replace.
    Always,
    /// Replace if size, mtime or whole-file checksum differ.
    IfDifferent,
    /// Replace if the existing file's mtime is older than the source's.
    IfOlder,
}

/// The sender's view of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub size: u64,
    pub mtime_ns: i64,
}

/// Whether the whole-file checksums of the existing file and the source agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumCompare {
    /// Not computed (yet).
    #[default]
    Unknown,
    Equal,
    Different,
}

/// Why a file is not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// IfDifferent: size, mtime and checksum are equal.
    Identical,
    /// IfOlder: the existing file is as new as the source or newer.
    NotOlder,
}

/// The decision for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Transfer it; `replace` says whether the rename may replace an existing file.
    Write { replace: bool },
    /// Leave the existing file and do not transfer.
    Skip(SkipReason),
    /// Refused: the policy is never, or what exists is not a regular file.
    Refuse,
    /// IfDifferent with equal size and mtime: compare whole-file checksums, then decide again.
    NeedChecksum,
}

/// The pure overwrite decision.
pub fn decide(
    policy: Overwrite,
    existing: Option<&ExistingFile>,
    source: &SourceFile,
    checksums: ChecksumCompare,
) -> Decision {
    let Some(existing) = existing else { return Decision::Write { replace: false } };
    if !existing.is_regular {
        return Decision::Refuse;
    }
    match policy {
        Overwrite::Never => Decision::Refuse,
        Overwrite::Always => Decision::Write { replace: true },
        Overwrite::IfOlder if existing.mtime_ns < source.mtime_ns => {
            Decision::Write { replace: true }
        }
        Overwrite::IfOlder => Decision::Skip(SkipReason::NotOlder),
        Overwrite::IfDifferent => {
            if existing.size != source.size || existing.mtime_ns != source.mtime_ns {
                return Decision::Write { replace: true };
            }
            match checksums {
                ChecksumCompare::Unknown => Decision::NeedChecksum,
                ChecksumCompare::Equal => Decision::Skip(SkipReason::Identical),
                ChecksumCompare::Different => Decision::Write { replace: true },
            }
        }
    }
}

impl Decision {
    /// The error a refusal means for `name`.
    pub fn refusal(self, name: &SafeName, existing: Option<&ExistingFile>) -> Option<FileError> {
        match (self, existing) {
            (Decision::Refuse, Some(e)) if !e.is_regular => {
                Some(FileError::ExistsNotRegular { file: name.to_string() })
            }
            (Decision::Refuse, _) => Some(FileError::Exists { file: name.to_string() }),
            _ => None,
        }
    }
}

/// BLAKE3 of the existing file at `name` (the whole-file checksum of docs/PROTOCOL.md §8, the
/// value `b3sum` prints), opened beneath the destination without following symlinks.
pub fn hash_existing(dest: &DestRoot, name: &SafeName) -> Result<[u8; 32], FileError> {
    let file_name = name.as_str();
    let parent = dest
        .find_parent(name)?
        .ok_or_else(|| FileError::io(file_name, Op::Open, std::io::ErrorKind::NotFound))?;
    let fd = open_beneath(parent.as_fd(), name.file_name(), OFlags::RDONLY, 0)
        .map_err(|e| super::dest::classify_beneath(name, name.file_name(), Op::Open, e))?;
    let file = File::from(fd);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; HASH_CHUNK_BYTES];
    let mut offset = 0;
    loop {
        let n = read_full_at(&file, &mut buf, offset)
            .map_err(|e| FileError::io(file_name, Op::Read, e))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        if n < buf.len() {
            return Ok(*hasher.finalize().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: SourceFile = SourceFile { size: 100, mtime_ns: 1_000 };

    fn existing(size: u64, mtime_ns: i64) -> ExistingFile {
        ExistingFile { is_regular: true, size, mtime_ns }
    }

    #[test]
    fn absent_file_is_always_written_without_replacing() {
        for p in [Overwrite::Never, Overwrite::Always, Overwrite::IfDifferent, Overwrite::IfOlder] {
            assert_eq!(
                decide(p, None, &SRC, ChecksumCompare::Unknown),
                Decision::Write { replace: false }
            );
        }
    }

    #[test]
    fn policies_decide_as_documented() {
        use ChecksumCompare::*;
        let same = existing(100, 1_000);
        let older = existing(100, 999);
        let newer = existing(100, 1_001);
        let bigger = existing(101, 1_000);
        assert_eq!(decide(Overwrite::Never, Some(&same), &SRC, Unknown), Decision::Refuse);
        assert_eq!(
            decide(Overwrite::Always, Some(&newer), &SRC, Unknown),
            Decision::Write { replace: true }
        );
        assert_eq!(
            decide(Overwrite::IfOlder, Some(&older), &SRC, Unknown),
            Decision::Write { replace: true }
        );
        assert_eq!(
            decide(Overwrite::IfOlder, Some(&same), &SRC, Unknown),
            Decision::Skip(SkipReason::NotOlder)
        );
        assert_eq!(
            decide(Overwrite::IfOlder, Some(&newer), &SRC, Unknown),
            Decision::Skip(SkipReason::NotOlder)
        );
        assert_eq!(
            decide(Overwrite::IfDifferent, Some(&bigger), &SRC, Unknown),
            Decision::Write { replace: true }
        );
        assert_eq!(
            decide(Overwrite::IfDifferent, Some(&older), &SRC, Unknown),
            Decision::Write { replace: true }
        );
        assert_eq!(
            decide(Overwrite::IfDifferent, Some(&same), &SRC, Unknown),
            Decision::NeedChecksum
        );
        assert_eq!(
            decide(Overwrite::IfDifferent, Some(&same), &SRC, Equal),
            Decision::Skip(SkipReason::Identical)
        );
        assert_eq!(
            decide(Overwrite::IfDifferent, Some(&same), &SRC, Different),
            Decision::Write { replace: true }
        );
    }

    #[test]
    fn non_regular_is_never_replaced() {
        let dir = ExistingFile { is_regular: false, size: 4096, mtime_ns: 0 };
        let name = SafeName::parse("d").unwrap();
        for p in [Overwrite::Never, Overwrite::Always, Overwrite::IfDifferent, Overwrite::IfOlder] {
            let d = decide(p, Some(&dir), &SRC, ChecksumCompare::Different);
            assert_eq!(d, Decision::Refuse);
            assert!(matches!(
                d.refusal(&name, Some(&dir)),
                Some(FileError::ExistsNotRegular { .. })
            ));
        }
        let d = decide(Overwrite::Never, Some(&existing(1, 1)), &SRC, ChecksumCompare::Unknown);
        assert!(matches!(d.refusal(&name, Some(&existing(1, 1))), Some(FileError::Exists { .. })));
        assert!(Decision::Write { replace: true }.refusal(&name, None).is_none());
    }
}
