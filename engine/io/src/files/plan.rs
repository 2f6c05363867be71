//! The receiver's plan for one manifest entry, before any data flows: validate the name, apply
//! the overwrite policy to what exists, and decide what an interrupted attempt left to keep.
//!
//! This is the composition the transfer runtime's `prepare_receive` needs, kept here so that
//! the order of the checks is written once: name first (a hostile name never reaches the
//! filesystem), then the existing file, then the leftovers.
//!
//! Invariant: an `Err` names the file and means "do not receive it"; a plan never creates
//! anything (it only opens and stats beneath the destination).

use super::checkpoint::{FileIdentity, Hash, ResumeLevel, ResumePlan, StartOver, load_leftover_in};
use super::dest::{DestRoot, DirCache, stat_existing_in};
use super::error::FileError;
use super::names::SafeName;
use super::policy::hash_existing;
use super::policy::{ChecksumCompare, Decision, Overwrite, SkipReason, SourceFile, decide};
use haul_proto::session::FileEntry;

/// What to do with one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Receive it; `replace` says whether the final rename may replace an existing file.
    Write { replace: bool },
    /// Leave the existing file; nothing is sent.
    Skip(SkipReason),
}

/// The plan for one manifest entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePlan {
    pub name: SafeName,
    pub action: Action,
    /// What to keep from an earlier attempt (`StartOver` when skipping).
    pub resume: ResumePlan,
}

/// What the receiver knows of the source beyond the manifest entry, if anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceHints {
    /// BLAKE3 of the source's first MiB ([`FileIdentity::head_hash`]).
    pub head_hash: Option<Hash>,
    /// The source's whole-file checksum, for `IfDifferent` when size and mtime agree. Without
    /// it such a file is received again (replacing identical bytes is harmless; skipping a
    /// different file is not).
    pub checksum: Option<Hash>,
}

/// Plans `entry` beneath `dest`.
pub fn plan_file(
    dest: &DestRoot,
    entry: &FileEntry,
    overwrite: Overwrite,
    level: ResumeLevel,
    hints: SourceHints,
) -> Result<FilePlan, FileError> {
    plan_file_cached(dest, &mut DirCache::default(), entry, overwrite, level, hints)
}

/// [`plan_file`] reusing the directories `dirs` already opened (for a manifest of many files).
pub fn plan_file_cached(
    dest: &DestRoot,
    dirs: &mut DirCache,
    entry: &FileEntry,
    overwrite: Overwrite,
    level: ResumeLevel,
    hints: SourceHints,
) -> Result<FilePlan, FileError> {
    let name = SafeName::parse(&entry.name)
        .map_err(|reason| FileError::BadName { name: entry.name.clone(), reason })?;
    let parent = dirs.parent(dest, &name, false)?;
    let existing = match &parent {
        Some(p) => stat_existing_in(p, &name)?,
        None => None,
    };
    let source = SourceFile { size: entry.size, mtime_ns: entry.mtime_ns };
    let mut decision = decide(overwrite, existing.as_ref(), &source, ChecksumCompare::Unknown);
    if decision == Decision::NeedChecksum {
        let compare = match hints.checksum {
            Some(theirs) if hash_existing(dest, &name)? == theirs => ChecksumCompare::Equal,
            _ => ChecksumCompare::Different,
        };
        decision = decide(overwrite, existing.as_ref(), &source, compare);
    }
    let action = match decision {
        Decision::Write { replace } => Action::Write { replace },
        Decision::Skip(why) => Action::Skip(why),
        Decision::Refuse | Decision::NeedChecksum => {
            return Err(decision
                .refusal(&name, existing.as_ref())
                .unwrap_or_else(|| FileError::Exists { file: name.to_string() }));
        }
    };
    let resume = match action {
        Action::Skip(_) => ResumePlan::StartOver(StartOver::LevelNone),
        Action::Write { .. } => {
            let identity = FileIdentity {
                size: entry.size,
                mtime_ns: entry.mtime_ns,
                head_hash: hints.head_hash,
            };
            ResumePlan::decide(level, &load_leftover_in(parent.as_ref(), &name)?, &identity)
        }
    };
    Ok(FilePlan { name, action, resume })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::checkpoint::CheckpointWriter;
    use crate::files::partial::{PartialFile, PartialOptions};

    fn entry(name: &str, size: u64, mtime_ns: i64) -> FileEntry {
        FileEntry { name: name.into(), size, mode: 0o644, mtime_ns }
    }

    #[test]
    fn plans_names_policies_and_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DestRoot::open(tmp.path()).unwrap();
        let hints = SourceHints::default();
        let level = ResumeLevel::Attributes;

        let err = plan_file(&dest, &entry("../x", 1, 0), Overwrite::Always, level, hints);
        assert!(matches!(err, Err(FileError::BadName { .. })));

        let fresh = plan_file(&dest, &entry("new", 10, 5), Overwrite::Never, level, hints).unwrap();
        assert_eq!(fresh.action, Action::Write { replace: false });
        assert_eq!(fresh.resume, ResumePlan::StartOver(StartOver::NoCheckpoint));

        std::fs::write(tmp.path().join("old"), b"0123456789").unwrap();
        let old = entry("old", 10, 5);
        let err = plan_file(&dest, &old, Overwrite::Never, level, hints).unwrap_err();
        assert!(matches!(err, FileError::Exists { .. }), "{err}");
        let plan = plan_file(&dest, &old, Overwrite::IfOlder, level, hints).unwrap();
        assert_eq!(plan.action, Action::Skip(SkipReason::NotOlder));

        // Same size and mtime: the checksum decides; without one the file is received again.
        let f = std::fs::File::options().write(true).open(tmp.path().join("old")).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(5)).unwrap();
        let plan = plan_file(&dest, &old, Overwrite::IfDifferent, level, hints).unwrap();
        assert_eq!(plan.action, Action::Write { replace: true });
        let same = SourceHints { checksum: Some(*blake3::hash(b"0123456789").as_bytes()), ..hints };
        let plan = plan_file(&dest, &old, Overwrite::IfDifferent, level, same).unwrap();
        assert_eq!(plan.action, Action::Skip(SkipReason::Identical));

        // A checkpointed partial is kept.
        let name = SafeName::parse("part").unwrap();
        let p = PartialFile::create(&dest, &name, 1000, PartialOptions::default()).unwrap();
        p.write_at(&[1; 500], 0).unwrap();
        let id = FileIdentity { size: 1000, mtime_ns: 9, head_hash: None };
        let mut w = CheckpointWriter::new(&p, id, &[]).unwrap();
        w.record_written(0..500).unwrap();
        w.commit().unwrap();
        let plan =
            plan_file(&dest, &entry("part", 1000, 9), Overwrite::Never, level, hints).unwrap();
        assert_eq!(
            plan.resume,
            ResumePlan::Keep { ranges: vec![std::ops::Range { start: 0, end: 500 }], verify: None }
        );
        assert_eq!(plan.resume.kept_prefix(100), 500);
    }
}
