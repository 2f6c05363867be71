//! Turns the PATHS of `haul send` into manifest entries and source paths, with
//! `haul_io::files::walk` (which owns the rules: names relative to each argument's basename,
//! symlinks inside trees and special files skipped, duplicates refused), and tells the operator
//! what the walk left out.

use anyhow::{Context, Result, bail};
use haul_io::files::{WalkNote, walk};
use haul_proto::session::FileEntry;
use std::path::PathBuf;

/// The manifest entries of `paths` and, in the same order, their source paths.
pub fn collect(paths: &[PathBuf]) -> Result<(Vec<FileEntry>, Vec<PathBuf>)> {
    let w = walk(paths).context("reading the paths to send")?;
    for note in &w.notes {
        match note {
            WalkNote::Symlink(p) => eprintln!("haul: note: skipped symlink {}", p.display()),
            WalkNote::Special(p) => eprintln!("haul: note: skipped special file {}", p.display()),
            WalkNote::Unnameable { path, why } => {
                eprintln!("haul: note: skipped {} ({why})", path.display())
            }
        }
    }
    if w.notes_omitted > 0 {
        eprintln!("haul: note: {} more paths skipped", w.notes_omitted);
    }
    if w.files.is_empty() {
        bail!("nothing to send: the paths hold no regular file");
    }
    Ok(w.files.into_iter().map(|s| (s.entry, s.path)).unzip())
}

/// What `--preserve-owner` / `--preserve-xattrs` send for each source, in order: its uid and
/// gid, and its extended attributes (POSIX ACLs among them). Empty when neither was asked.
pub fn attrs_of(
    sources: &[PathBuf],
    owner: bool,
    xattrs: bool,
) -> Result<Vec<haul_proto::setup::FileAttrs>> {
    use std::os::unix::fs::MetadataExt;
    if !owner && !xattrs {
        return Ok(Vec::new());
    }
    sources
        .iter()
        .map(|path| {
            let mut a = haul_proto::setup::FileAttrs::default();
            if owner {
                let meta = std::fs::symlink_metadata(path)
                    .with_context(|| format!("reading the owner of {}", path.display()))?;
                a.owner = Some((meta.uid(), meta.gid()));
            }
            if xattrs {
                let got = haul_io::files::read_xattrs(path)?;
                for name in &got.left_out {
                    eprintln!("haul: note: {}: extended attribute {name} not sent", path.display());
                }
                a.xattrs = got.xattrs;
            }
            Ok(a)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_tree_becomes_relative_names_and_empty_input_is_refused() {
        let root = std::env::temp_dir().join(format!("haul-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("t/sub")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("t/b"), b"12").unwrap();
        std::fs::write(root.join("t/sub/a"), b"1").unwrap();
        std::fs::write(root.join("single"), b"123").unwrap();
        let (files, sources) = collect(&[root.join("t"), root.join("single")]).unwrap();
        let mut names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["single", "t/b", "t/sub/a"]);
        assert_eq!(files.len(), sources.len());
        for f in &files {
            haul_proto::setup::check_name(&f.name).unwrap();
        }
        assert!(collect(&[root.join("empty")]).is_err(), "nothing to send");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
