//! Turns the PATHS of `haul send` into manifest entries (name, size, mode, mtime) and source
//! paths. A minimal private walker until `haul_io::files::walk` lands; then this file goes.
//!
//! Invariants: names are relative, `/`-separated, and pass `haul_proto::setup::check_name`;
//! symlinks and special files are skipped with a note (never followed); at most `MAX_FILES`
//! entries and `MAX_DEPTH` directory levels; entries are sorted by name, duplicates refused.

use anyhow::{Context, Result, bail};
use haul_proto::session::FileEntry;
use haul_proto::session::layout::MAX_FILES;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 256;

/// The manifest entries of `paths` and, in the same order, their source paths.
pub fn collect(paths: &[PathBuf]) -> Result<(Vec<FileEntry>, Vec<PathBuf>)> {
    let mut out: Vec<(FileEntry, PathBuf)> = Vec::new();
    for p in paths {
        let meta = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
        let base = base_name(p)?;
        if meta.is_dir() {
            walk_dir(p, &base, 0, &mut out)?;
        } else if meta.is_file() {
            out.push((entry(base, &meta), p.clone()));
        } else {
            bail!("{} is not a regular file or a directory", p.display());
        }
        if out.len() > MAX_FILES {
            bail!("more than {MAX_FILES} files in one transfer");
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    if let Some(w) = out.windows(2).find(|w| w[0].0.name == w[1].0.name) {
        bail!(
            "two sources would arrive as {:?}: {} and {}",
            w[0].0.name,
            w[0].1.display(),
            w[1].1.display()
        );
    }
    if out.is_empty() {
        bail!("nothing to send: the paths hold no regular file");
    }
    Ok(out.into_iter().unzip())
}

fn base_name(p: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?;
    let name = abs.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    match name {
        Some(n) => Ok(n),
        None => bail!("{}: cannot send a path without a UTF-8 file name", p.display()),
    }
}

fn entry(name: String, meta: &std::fs::Metadata) -> FileEntry {
    let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
    FileEntry { name, size: meta.len(), mode: meta.mode() & 0o7777, mtime_ns }
}

fn walk_dir(
    dir: &Path,
    name: &str,
    depth: usize,
    out: &mut Vec<(FileEntry, PathBuf)>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: deeper than {MAX_DEPTH} directory levels", dir.display());
    }
    for item in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let item = item.with_context(|| format!("reading {}", dir.display()))?;
        let path = item.path();
        let Some(leaf) = item.file_name().to_str().map(str::to_owned) else {
            eprintln!("haul: note: skipping {} (name is not UTF-8)", path.display());
            continue;
        };
        let child = format!("{name}/{leaf}");
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("{}", path.display()))?;
        if meta.is_dir() {
            walk_dir(&path, &child, depth + 1, out)?;
        } else if meta.is_file() {
            out.push((entry(child, &meta), path));
            if out.len() > MAX_FILES {
                bail!("more than {MAX_FILES} files in one transfer");
            }
        } else {
            eprintln!("haul: note: skipping {} (not a regular file or directory)", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_tree_becomes_sorted_relative_names() {
        let root = std::env::temp_dir().join(format!("haul-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("t/sub")).unwrap();
        std::fs::write(root.join("t/b"), b"12").unwrap();
        std::fs::write(root.join("t/sub/a"), b"1").unwrap();
        std::fs::write(root.join("single"), b"123").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("t/link")).unwrap();
        let (files, sources) = collect(&[root.join("t"), root.join("single")]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["single", "t/b", "t/sub/a"]);
        assert_eq!(files[0].size, 3);
        assert_eq!(sources[2], root.join("t/sub/a"));
        for f in &files {
            haul_proto::setup::check_name(&f.name).unwrap();
        }
        assert!(collect(&[root.join("single"), root.join("single")]).is_err(), "duplicate");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
