//! Finalizing many small files at once.
//!
//! [`PartialFile::finalize`] costs two flushes per file (the file, then its directory): right
//! for large files, ruinous for 10,000 files of 10 KiB on a real disk (about 750 files/s on the
//! ext4 dev box). A [`FinalizeBatch`] sets each file's attributes as it is added, then, at
//! [`FinalizeBatch::commit`], syncs each filesystem involved once (`syncfs`), renames every file
//! into place, and syncs once more so the renames are durable. A batch of at most
//! [`PER_FILE_SYNC_MAX`] files (a large file finishing alone) is synced per file instead
//! (`fsync` of each file, then of each one's directory): `syncfs` also waits for every other
//! dirty byte on the filesystem. On the emulated WAN (benches/wan) the source, written just
//! before on the same filesystem, was still dirty when the 250 MB copy finished, and the
//! finalize's `syncfs` wrote it out too, adding about 0.3 s to a 11 s transfer.
//!
//! Invariants: the same as `finalize`'s, per file: data and attributes are durable before the
//! rename (the first `syncfs` precedes every rename), and the renames are durable when `commit`
//! returns. At most [`MAX_FINALIZE_BATCH`] files wait in one batch.

use super::error::{FileError, Op};
use super::names::SafeName;
use super::partial::{FinalAttrs, Finalized, PartialFile};

/// One file's outcome in a committed batch: its name and what finalize did, or why not.
pub type BatchOutcome = (SafeName, Result<Finalized, FileError>);

/// Most files one batch holds.
pub const MAX_FINALIZE_BATCH: usize = 1024;
/// A batch of at most this many files is synced file by file, not with `syncfs`.
pub const PER_FILE_SYNC_MAX: usize = 4;

/// Files whose attributes are set and which wait for one shared sync and their rename.
#[derive(Debug, Default)]
pub struct FinalizeBatch {
    ready: Vec<(PartialFile, bool, Finalized)>,
}

impl FinalizeBatch {
    pub fn new() -> FinalizeBatch {
        FinalizeBatch { ready: Vec::new() }
    }

    /// Files waiting.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// True when the next [`push`](Self::push) would be refused: commit first.
    pub fn is_full(&self) -> bool {
        self.ready.len() >= MAX_FINALIZE_BATCH
    }

    /// Sets `file`'s attributes now and adds it to the batch (renamed with
    /// `RENAME_NOREPLACE` unless `overwrite`).
    pub fn push(
        &mut self,
        file: PartialFile,
        attrs: &FinalAttrs,
        overwrite: bool,
    ) -> Result<(), FileError> {
        if self.is_full() {
            return Err(FileError::BatchFull {
                file: file.name().to_string(),
                max: MAX_FINALIZE_BATCH,
            });
        }
        let done = file.apply_attrs(attrs)?;
        self.ready.push((file, overwrite, done));
        Ok(())
    }

    /// Syncs, renames every file, syncs again. An error of a sync fails the whole batch (the
    /// partials stay for resume); a refused rename fails only its file, reported in the list,
    /// in push order.
    pub fn commit(self) -> Result<Vec<BatchOutcome>, FileError> {
        let per_file = self.ready.len() <= PER_FILE_SYNC_MAX;
        if per_file {
            self.ready.iter().try_for_each(|(file, _, _)| file.sync_all())?;
        } else {
            self.sync_filesystems()?;
        }
        super::pause::pause_if_armed(super::pause::PausePhase::Rename);
        let mut outcomes = Vec::with_capacity(self.ready.len());
        for (file, overwrite, done) in &self.ready {
            let outcome = file.rename_into_place(*overwrite).map(|()| done.clone());
            outcomes.push((file.name().clone(), outcome));
        }
        if per_file {
            self.ready.iter().try_for_each(|(file, _, _)| file.sync_parent())?;
        } else {
            self.sync_filesystems()?;
        }
        Ok(outcomes)
    }

    /// `syncfs` once per distinct filesystem among the batch's files (each file's `st_dev`
    /// was read when it was opened: no `fstat` per file here).
    fn sync_filesystems(&self) -> Result<(), FileError> {
        let mut synced: Vec<u64> = Vec::new();
        for (file, _, _) in &self.ready {
            if synced.contains(&file.dev()) {
                continue;
            }
            let name = file.name().as_str();
            rustix::fs::syncfs(file.as_fd()).map_err(|e| FileError::io(name, Op::Sync, e))?;
            synced.push(file.dev());
        }
        Ok(())
    }
}
