//! The receiver's side of the destination, on top of [`crate::files`]: checking it and
//! planning each file (name, overwrite policy, resume), creating the partial files, recording
//! checkpoints as blocks are verified, and finalizing verified files.
//!
//! Names from the peer are untrusted (docs/FILES.md): each is validated before anything is
//! created, and everything is created beneath the destination with openat2
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a hostile sender cannot write outside it.

use super::{Overwrite, RecvOptions, TransferError};
use crate::files::{
    self, Action, CheckpointWriter, DestRoot, DirCache, FileError, FileIdentity, FinalAttrs,
    FinalizeBatch, ParentDir, PartialFile, PartialOptions, SafeName, SourceHints, plan_file_cached,
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
    let mut dirs = DirCache::default();
    manifest
        .files()
        .iter()
        .map(|entry| {
            let (o, r, h) = (options.overwrite, options.resume, SourceHints::default());
            let plan =
                plan_file_cached(&root, &mut dirs, entry, o, r, h).map_err(|e| file_error(&e))?;
            Ok(match plan.action {
                Action::Skip(_) => SKIP_FILE,
                Action::Write { .. } => plan.resume.kept_prefix(block),
            })
        })
        .collect()
}

/// Files at most this size are created without reserving space (one `fallocate` each is a
/// large share of a tiny file's cost); their total is checked against free space once.
pub(crate) const SMALL_FILE_BYTES: u64 = 1 << 20;
/// Most files finalized with one pair of filesystem syncs; each holds a descriptor until the
/// commit, so this stays well under the usual 1024-descriptor limit.
pub(crate) const FINALIZE_BATCH_FILES: usize = 256;
/// Most handed-over partial descriptors the coordinator holds until their files finalize
/// (a round's worth: the shards hand over as they hash, before the coordinator has read
/// those events). With a finalize batch, the handoff channel (`store::HANDOFF_FILES`) and
/// 64 per shard, 4 shards stay under 850 descriptors, below the usual limit of 1024.
const MAX_HANDED_FILES: usize = 256;

/// A cached directory of `name`, created if missing, and whether this receive created it.
fn parent_of(
    dirs: &mut DirCache,
    dest: &DestRoot,
    name: &SafeName,
) -> Result<(ParentDir, bool), FileError> {
    dirs.parent_new(dest, name, true)?.ok_or_else(|| FileError::Escape { file: name.to_string() })
}

/// The partial files of one receive, and what the coordinator needs to checkpoint and
/// finalize them.
#[derive(Debug)]
pub(crate) struct RxFiles {
    pub dest: Arc<DestRoot>,
    names: Vec<SafeName>,
    /// Each partial's path relative to the destination (for the shards' own opens).
    pub partials: Arc<Vec<String>>,
    /// Per file: its partial is not created here but by the one shard that writes it, at
    /// its first open ([`is_left_to_shard`]).
    pub deferred: Arc<Vec<bool>>,
    replace: Vec<bool>,
    checkpoints: Vec<Option<CheckpointWriter>>,
    /// Per file: a checkpoint may exist (kept from an earlier attempt, or one was begun in
    /// this one). A file created fresh and never checkpointed has none to remove at finalize.
    may_have_checkpoint: Vec<bool>,
    recorded: Vec<u64>,
    dirs: DirCache,
    /// Descriptors of written partials the shards handed over (`OpenFiles::hand_over`), and
    /// those taken from the channel and not finalized yet (at most [`MAX_HANDED_FILES`]).
    handoffs: Option<crossbeam_channel::Receiver<(u32, std::fs::File)>>,
    handed: std::collections::HashMap<u32, std::fs::File>,
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
        deferred: Arc::new(Vec::new()),
        replace: Vec::with_capacity(n),
        checkpoints: (0..n).map(|_| None).collect(),
        may_have_checkpoint: (0..n).map(|i| resume.get(i).is_some_and(|&k| k > 0)).collect(),
        recorded: resume.to_vec(),
        dirs: DirCache::default(),
        handoffs: None,
        handed: std::collections::HashMap::new(),
    };
    let mut names = Vec::with_capacity(n);
    for entry in manifest.files() {
        names.push(SafeName::parse(&entry.name).map_err(|reason| {
            file_error(&FileError::BadName { name: entry.name.clone(), reason })
        })?);
    }
    let (mut needed, available) = check_small_files_fit(&rx.dest, manifest, &names, resume)?;
    let mut partials = Vec::with_capacity(n);
    let mut deferred = Vec::with_capacity(n);
    for ((i, entry), name) in manifest.files().iter().enumerate().zip(names) {
        let kept = resume.get(i).copied().unwrap_or(0);
        // Created (sized, its space checked) now, then closed: the shards open what they
        // need and reserve space a chunk ahead of their writes (`files::space::ReserveAhead`).
        let (parent, in_new_dir) =
            parent_of(&mut rx.dirs, &rx.dest, &name).map_err(|e| file_error(&e))?;
        let left = is_left_to_shard(entry.size, manifest.block_size(), kept, in_new_dir);
        partials.push(partial_rel(&name));
        deferred.push(left);
        rx.replace.push(options.overwrite != Overwrite::Never);
        if left {
            rx.names.push(name);
            continue;
        }
        let opts = PartialOptions {
            direct_io: false,
            fresh: kept == 0,
            skip_prealloc: entry.size <= SMALL_FILE_BYTES,
            in_new_dir,
        };
        let partial = PartialFile::create_in(&rx.dest, parent, &name, entry.size, opts)
            .map_err(|e| file_error(&e))?;
        // All the large files together must fit too, not only each one alone: nothing is
        // reserved up front any more, so this is what makes a full disk an early error.
        if !opts.skip_prealloc {
            needed = needed.saturating_add(partial.unallocated_bytes());
            if needed > available {
                return Err(file_error(&FileError::DiskFull {
                    file: name.to_string(),
                    needed,
                    available,
                    fs: rx.dest.path().to_owned(),
                }));
            }
        }
        rx.names.push(name);
    }
    rx.partials = Arc::new(partials);
    rx.deferred = Arc::new(deferred);
    Ok(rx)
}

/// Whether a file's partial is left to the shard that writes it (created by that shard's
/// first open, `O_CREAT | O_EXCL`, instead of here): a fresh (`kept == 0`), non-empty file
/// of at most [`SMALL_FILE_BYTES`] and one block (so exactly one shard writes it and opens it
/// first), in a directory this receive created (nothing of an earlier attempt can be there,
/// so there is no stale partial or checkpoint to replace). It saves a create, `fstat` and
/// `close` per small file, and the coordinator no longer creates 10,000 files one by one
/// before the shards start (docs/FILES.md, "Many small files").
fn is_left_to_shard(size: u64, block_size: u64, kept: u64, in_new_dir: bool) -> bool {
    kept == 0 && in_new_dir && size > 0 && size <= SMALL_FILE_BYTES && size <= block_size
}

/// The small files are not preallocated one by one: check once that all of them fit, naming
/// the first that does not. Returns their bytes and the space available.
fn check_small_files_fit(
    dest: &DestRoot,
    manifest: &Manifest,
    names: &[SafeName],
    resume: &[u64],
) -> Result<(u64, u64), TransferError> {
    let space = dest.space().map_err(|e| file_error(&e))?;
    let mut needed = 0u64;
    for ((i, entry), name) in manifest.files().iter().enumerate().zip(names) {
        if entry.size > SMALL_FILE_BYTES {
            continue;
        }
        needed = needed.saturating_add(entry.size - resume.get(i).copied().unwrap_or(0));
        if needed > space.available_bytes {
            return Err(file_error(&FileError::DiskFull {
                file: name.to_string(),
                needed,
                available: space.available_bytes,
                fs: dest.path().to_owned(),
            }));
        }
    }
    Ok((needed, space.available_bytes))
}

/// Why finalizing failed, as the protocol and the operator see it.
fn finalize_failure(e: &FileError) -> (DiskError, String) {
    let disk = match e {
        FileError::DiskFull { .. } => DiskError::NoSpace,
        FileError::DestReadOnly { .. } | FileError::DestNoPermission { .. } => {
            DiskError::Permission
        }
        _ => DiskError::Io,
    };
    (disk, e.to_string())
}

impl RxFiles {
    /// Reopens the partial of file `i` (a manifest index the caller checked) of `size` bytes.
    fn open_partial(&mut self, i: usize, size: u64) -> Option<Result<PartialFile, FileError>> {
        let name = self.names.get(i)?;
        Some(
            parent_of(&mut self.dirs, &self.dest, name)
                .and_then(|(parent, _)| PartialFile::open_in(&self.dest, parent, name, size)),
        )
    }

    /// Finalize takes the partials' descriptors the shards hand over from `handoffs`.
    pub fn take_handoffs(&mut self, handoffs: crossbeam_channel::Receiver<(u32, std::fs::File)>) {
        self.handoffs = Some(handoffs);
    }

    /// Moves handed-over descriptors from the channel into `handed`, so the channel has room
    /// for the next (called for every shard event and before each finalize). The descriptors
    /// of files whose events come in later rounds wait here; when it is full, the rest wait
    /// in the channel (and the shards close theirs).
    pub fn take_handed(&mut self) {
        let Some(rx) = &self.handoffs else { return };
        while self.handed.len() < MAX_HANDED_FILES
            && let Ok((file, fd)) = rx.try_recv()
        {
            self.handed.insert(file, fd);
        }
    }

    /// The partial of file `i` for finalize: the descriptor its shard handed over when it has
    /// one (checked as a fresh open is), else opened by name.
    fn partial_for_finalize(
        &mut self,
        i: usize,
        size: u64,
    ) -> Option<Result<PartialFile, FileError>> {
        self.take_handed();
        let Some(fd) = self.handed.remove(&(i as u32)) else { return self.open_partial(i, size) };
        let name = self.names.get(i)?;
        Some(parent_of(&mut self.dirs, &self.dest, name).and_then(|(parent, _)| {
            PartialFile::adopt_open(&self.dest, parent, name, size, fd.into())
        }))
    }

    /// The full-disk message for `file` (a write found no space): names the file, the bytes
    /// it still needs and the space available.
    pub fn disk_full_message(&mut self, manifest: &Manifest, file: u32) -> Option<String> {
        let size = manifest.file(file)?.size;
        let partial = self.open_partial(file as usize, size)?.ok()?;
        Some(partial.disk_full().to_string())
    }

    /// `prefix` bytes of `file` are on disk and verified by block: record them, and write a
    /// checkpoint (data synced first) once a checkpoint interval has passed. A file verified
    /// whole gets no checkpoint: its finalize follows at once and makes it durable.
    pub fn record_progress(&mut self, manifest: &Manifest, file: u32, prefix: u64) {
        let i = file as usize;
        let (Some(entry), Some(done)) = (manifest.file(file), self.recorded.get(i).copied()) else {
            return;
        };
        if prefix <= done || (prefix >= entry.size && self.checkpoints[i].is_none()) {
            return;
        }
        if self.checkpoints[i].is_none() {
            let Some(Ok(partial)) = self.open_partial(i, entry.size) else { return };
            let identity =
                FileIdentity { size: entry.size, mtime_ns: entry.mtime_ns, head_hash: None };
            // A failed checkpoint only weakens resume; the transfer itself goes on.
            let kept = [core::ops::Range { start: 0, end: done }];
            self.may_have_checkpoint[i] = true;
            self.checkpoints[i] = CheckpointWriter::new(&partial, identity, &kept).ok();
        }
        if let Some(w) = self.checkpoints[i].as_mut()
            && w.record_written(done..prefix).is_ok()
        {
            self.recorded[i] = prefix;
            let _ = w.maybe_commit();
        }
    }

    /// Set `file`'s attributes and add it to `batch`, which syncs and renames it at its commit
    /// ([`FinalizeBatch`]: data and attributes durable before the rename).
    pub fn stage_finalize(
        &mut self,
        manifest: &Manifest,
        file: u32,
        options: &RecvOptions,
        batch: &mut FinalizeBatch,
    ) -> Result<(), (DiskError, String)> {
        let i = file as usize;
        let Some(entry) = manifest.file(file) else {
            return Err((DiskError::Missing, format!("file {file} is not in the manifest")));
        };
        self.checkpoints[i] = None;
        let Some(partial) = self.partial_for_finalize(i, entry.size) else {
            return Err((DiskError::Missing, format!("file {file} has no partial file")));
        };
        let mut partial = partial.map_err(|e| finalize_failure(&e))?;
        if !self.may_have_checkpoint.get(i).copied().unwrap_or(true) {
            partial.mark_no_checkpoint();
        }
        let sent = options.file_attrs.get(i);
        let attrs = FinalAttrs {
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            keep_setid: options.keep_setid,
            owner: sent.and_then(|a| a.owner).filter(|_| options.preserve_owner),
            xattrs: match sent {
                Some(a) if options.preserve_xattrs => a.xattrs.clone(),
                _ => Vec::new(),
            },
        };
        let replace = self.replace.get(i).copied().unwrap_or(false);
        batch.push(partial, &attrs, replace).map_err(|e| finalize_failure(&e))
    }
}

/// Commits `batch`: per staged file, in staging order, `Ok` once it is in place and durable,
/// with `true` if an owner or an extended attribute asked for could not be applied. A failed
/// sync fails every file of the batch with the same error.
pub(crate) fn commit_finalize(batch: FinalizeBatch) -> Vec<Result<bool, (DiskError, String)>> {
    let n = batch.len();
    match batch.commit() {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|(_, r)| {
                r.map(|done| done.owner_skipped || !done.xattrs_skipped.is_empty())
                    .map_err(|e| finalize_failure(&e))
            })
            .collect(),
        Err(e) => {
            let f = finalize_failure(&e);
            (0..n).map(|_| Err(f.clone())).collect()
        }
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
