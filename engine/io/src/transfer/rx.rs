//! The receiver's side of the destination, on top of [`crate::files`]: checking it and
//! planning each file (name, overwrite policy, resume), creating the partial files, recording
//! checkpoints as blocks are verified, and finalizing verified files.
//!
//! Names from the peer are untrusted (docs/FILES.md): each is validated before anything is
//! created, and everything is created beneath the destination with openat2
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a hostile sender cannot write outside it.

use super::{Overwrite, RecvOptions, TransferError};
use crate::files::{
    self, Action, CheckpointWriter, DestRoot, FileError, FileIdentity, FinalAttrs, PartialFile,
    PartialOptions, SafeName, SourceHints, plan_file,
};
use haul_proto::session::{DiskError, Manifest};
use std::path::Path;
use std::sync::Arc;

/// In a resume vector: the receiver keeps its existing file; the file is not transferred.
pub const SKIP_FILE: u64 = u64::MAX;

fn file_error(e: &FileError) -> TransferError {
    TransferError::File { file: String::new(), message: e.to_string() }
}

pub(crate) fn prepare(
    dest: &Path,
    manifest: &Manifest,
    options: &RecvOptions,
) -> Result<Vec<u64>, TransferError> {
    let root = DestRoot::open(dest).map_err(|e| file_error(&e))?;
    let block = manifest.block_size();
    manifest
        .files()
        .iter()
        .map(|entry| {
            let plan =
                plan_file(&root, entry, options.overwrite, options.resume, SourceHints::default())
                    .map_err(|e| file_error(&e))?;
            Ok(match plan.action {
                Action::Skip(_) => SKIP_FILE,
                Action::Write { .. } => plan.resume.kept_prefix(block),
            })
        })
        .collect()
}

/// The partial files of one receive, and what the coordinator needs to checkpoint and
/// finalize them.
#[derive(Debug)]
pub(crate) struct RxFiles {
    pub dest: Arc<DestRoot>,
    names: Vec<SafeName>,
    /// Each partial's path relative to the destination (for the shards' own opens).
    pub partials: Arc<Vec<String>>,
    replace: Vec<bool>,
    checkpoints: Vec<Option<CheckpointWriter>>,
    recorded: Vec<u64>,
}

fn partial_rel(name: &SafeName) -> String {
    let partial = files::partial::partial_name(name.file_name());
    match name.as_str().rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{partial}"),
        None => partial,
    }
}

pub(crate) fn create_partials(
    dest: &Path,
    manifest: &Manifest,
    options: &RecvOptions,
    resume: &[u64],
) -> Result<RxFiles, TransferError> {
    let root = DestRoot::open(dest).map_err(|e| file_error(&e))?;
    let n = manifest.files().len();
    let mut rx = RxFiles {
        dest: Arc::new(root),
        names: Vec::with_capacity(n),
        partials: Arc::new(Vec::new()),
        replace: Vec::with_capacity(n),
        checkpoints: (0..n).map(|_| None).collect(),
        recorded: resume.to_vec(),
    };
    let mut partials = Vec::with_capacity(n);
    for (i, entry) in manifest.files().iter().enumerate() {
        let name = SafeName::parse(&entry.name).map_err(|reason| {
            file_error(&FileError::BadName { name: entry.name.clone(), reason })
        })?;
        let kept = resume.get(i).copied().unwrap_or(0);
        let opts = PartialOptions { direct_io: false, fresh: kept == 0 };
        // Created (and space reserved) now, then closed: the shards open what they need.
        PartialFile::create(&rx.dest, &name, entry.size, opts).map_err(|e| file_error(&e))?;
        partials.push(partial_rel(&name));
        rx.replace.push(options.overwrite != Overwrite::Never);
        rx.names.push(name);
    }
    rx.partials = Arc::new(partials);
    Ok(rx)
}

impl RxFiles {
    /// `prefix` bytes of `file` are on disk and verified by block: record them, and write a
    /// checkpoint (data synced first) once a checkpoint interval has passed.
    pub fn record_progress(&mut self, manifest: &Manifest, file: u32, prefix: u64) {
        let i = file as usize;
        let (Some(entry), Some(done)) = (manifest.file(file), self.recorded.get(i).copied()) else {
            return;
        };
        if prefix <= done {
            return;
        }
        if self.checkpoints[i].is_none() {
            let opts = PartialOptions { direct_io: false, fresh: false };
            let Ok(partial) = PartialFile::create(&self.dest, &self.names[i], entry.size, opts)
            else {
                return;
            };
            let identity =
                FileIdentity { size: entry.size, mtime_ns: entry.mtime_ns, head_hash: None };
            // A failed checkpoint only weakens resume; the transfer itself goes on.
            let kept = [core::ops::Range { start: 0, end: done }];
            self.checkpoints[i] = CheckpointWriter::new(&partial, identity, &kept).ok();
        }
        if let Some(w) = self.checkpoints[i].as_mut()
            && w.record_written(done..prefix).is_ok()
        {
            self.recorded[i] = prefix;
            let _ = w.maybe_commit();
        }
    }

    /// fsync, set attributes, rename into place.
    pub fn finalize(
        &mut self,
        manifest: &Manifest,
        file: u32,
        options: &RecvOptions,
    ) -> Result<(), (DiskError, String)> {
        let i = file as usize;
        let (Some(entry), Some(name)) = (manifest.file(file), self.names.get(i)) else {
            return Err((DiskError::Missing, format!("file {file} is not in the manifest")));
        };
        self.checkpoints[i] = None;
        let fail = |e: FileError| {
            let disk = match &e {
                FileError::DiskFull { .. } => DiskError::NoSpace,
                FileError::DestReadOnly { .. } | FileError::DestNoPermission { .. } => {
                    DiskError::Permission
                }
                _ => DiskError::Io,
            };
            (disk, e.to_string())
        };
        let opts = PartialOptions { direct_io: false, fresh: false };
        let partial = PartialFile::create(&self.dest, name, entry.size, opts).map_err(fail)?;
        let attrs = FinalAttrs {
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            keep_setid: options.keep_setid,
            owner: None,
            xattrs: Vec::new(),
        };
        partial.finalize(&attrs, self.replace[i]).map_err(fail)?;
        Ok(())
    }
}

/// Drop the files the receiver skips (`SKIP_FILE`) from a manifest; both ends call this after
/// set-up so they agree on the files actually sent. Returns the new manifest, its resume
/// vector and, for each of its files, the index it had in the original manifest.
pub fn drop_skipped(
    manifest: &Manifest,
    resume: &[u64],
) -> Result<(Manifest, Vec<u64>, Vec<u32>), TransferError> {
    let mut files = Vec::new();
    let mut kept_resume = Vec::new();
    let mut index = Vec::new();
    for (i, entry) in manifest.files().iter().enumerate() {
        let r = resume.get(i).copied().unwrap_or(0);
        if r != SKIP_FILE {
            files.push(entry.clone());
            kept_resume.push(r);
            index.push(i as u32);
        }
    }
    let m = Manifest::new(files, manifest.block_size_log2())
        .map_err(haul_proto::session::SessionError::from)?;
    Ok((m, kept_resume, index))
}
