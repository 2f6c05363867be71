//! The receiver's side of the destination: checking it, creating the partial files and
//! finalizing verified ones.
//!
//! Names from the peer are untrusted (docs/FILES.md): each is validated before anything is
//! created, and only created beneath the destination.

use super::store::{RxPaths, received_mode};
use super::{Overwrite, RecvOptions, TransferError};
use haul_proto::session::{DiskError, Manifest};
use std::path::{Component, Path, PathBuf};

fn file_err(name: &str, message: impl Into<String>) -> TransferError {
    TransferError::File { file: name.to_string(), message: message.into() }
}

/// A relative name from the peer, checked: no absolute path, no `..`, no `.`, no empty
/// component, no NUL, bounded lengths.
pub(crate) fn check_name(name: &str) -> Result<PathBuf, TransferError> {
    if name.is_empty() || name.len() > 4096 || name.contains('\0') {
        return Err(file_err(name, "refused: empty, too long or NUL in the name"));
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) if part.len() <= 255 => out.push(part),
            _ => return Err(file_err(name, "refused: the name would leave the destination")),
        }
    }
    if name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(file_err(name, "refused: empty, '.' or '..' component"));
    }
    Ok(out)
}

fn partial_of(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    final_path.with_file_name(format!(".{name}.haul-partial"))
}

pub(crate) fn prepare(
    dest: &Path,
    manifest: &Manifest,
    options: &RecvOptions,
) -> Result<Vec<u64>, TransferError> {
    let meta = std::fs::metadata(dest).map_err(|e| {
        file_err(&dest.display().to_string(), format!("destination is not usable: {e}"))
    })?;
    if !meta.is_dir() {
        return Err(file_err(&dest.display().to_string(), "destination is not a directory"));
    }
    let mut resume = Vec::with_capacity(manifest.files().len());
    for entry in manifest.files() {
        let rel = check_name(&entry.name)?;
        let fin = dest.join(&rel);
        if let Ok(existing) = std::fs::symlink_metadata(&fin) {
            let keep = match options.overwrite {
                Overwrite::Never => true,
                Overwrite::Always => false,
                Overwrite::IfDifferent => {
                    existing.len() == entry.size && mtime_ns(&existing) == entry.mtime_ns
                }
                Overwrite::IfOlder => mtime_ns(&existing) >= entry.mtime_ns,
            };
            if keep && options.overwrite == Overwrite::Never {
                return Err(file_err(&entry.name, "exists (use --overwrite to replace it)"));
            }
        }
        resume.push(0);
    }
    Ok(resume)
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())
}

pub(crate) fn create_partials(
    dest: &Path,
    manifest: &Manifest,
    resume: &[u64],
) -> Result<RxPaths, TransferError> {
    let mut finals = Vec::with_capacity(manifest.files().len());
    let mut partials = Vec::with_capacity(manifest.files().len());
    for (i, entry) in manifest.files().iter().enumerate() {
        let rel = check_name(&entry.name)?;
        let fin = dest.join(&rel);
        if let Some(parent) = fin.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| file_err(&entry.name, format!("cannot create its directory: {e}")))?;
        }
        let part = partial_of(&fin);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(resume.get(i).copied().unwrap_or(0) == 0)
            .read(true)
            .write(true)
            .open(&part)
            .map_err(|e| file_err(&entry.name, format!("cannot create: {e}")))?;
        f.set_len(entry.size).map_err(|e| file_err(&entry.name, format!("cannot size: {e}")))?;
        finals.push(fin);
        partials.push(part);
    }
    Ok(RxPaths { finals, partials: std::sync::Arc::new(partials) })
}

pub(crate) fn finalize(
    paths: &RxPaths,
    manifest: &Manifest,
    file: u32,
    options: &RecvOptions,
) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt;
    let i = file as usize;
    let (Some(part), Some(fin), Some(entry)) =
        (paths.partials.get(i), paths.finals.get(i), manifest.file(file))
    else {
        return Err(DiskError::Missing);
    };
    let de = |e: std::io::Error| super::store::disk_error(&e);
    let f = std::fs::OpenOptions::new().write(true).open(part).map_err(de)?;
    f.sync_data().map_err(de)?;
    f.set_permissions(std::fs::Permissions::from_mode(received_mode(entry, options.keep_setid)))
        .map_err(de)?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(entry.mtime_ns).unwrap_or(0));
    f.set_times(std::fs::FileTimes::new().set_modified(mtime).set_accessed(mtime)).map_err(de)?;
    std::fs::rename(part, fin).map_err(de)?;
    Ok(())
}
