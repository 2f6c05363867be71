//! The sender's walk: manifest entries from the paths the operator gave.
//!
//! Each argument contributes names relative to its own basename: a file `dir/a.bin` is
//! `a.bin`; a directory `src/tree` gives `tree/...` for every regular file beneath it, in a
//! depth-first pre-order sorted by name bytes. Top-level arguments are followed if they are
//! symlinks (the operator named them); inside trees, symlinks are skipped with a note, and so are
//! special files (devices, FIFOs, sockets) and names the receiver would refuse (not UTF-8,
//! control characters, too long or too deep).
//!
//! Invariants: at most `max_files` entries (default the protocol's MAX_FILES) or an error;
//! every entry's name is a valid [`SafeName`]; no two entries share a name (two arguments with
//! the same basename are an error naming both); errors name the path.

use super::error::{FileError, Op};
use super::names::{MAX_COMPONENTS, SafeName};
use haul_proto::session::FileEntry;
use haul_proto::session::layout::MAX_FILES;
use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most notes a walk keeps; beyond it they are only counted ([`Walk::notes_omitted`]).
pub const MAX_WALK_NOTES: usize = 10_000;

/// One file to send: its manifest entry and where it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    pub entry: FileEntry,
    pub path: PathBuf,
}

/// Something the walk left out, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkNote {
    /// A symlink inside a tree (not followed).
    Symlink(PathBuf),
    /// A device, FIFO or socket.
    Special(PathBuf),
    /// A name the receiver would refuse, with why.
    Unnameable { path: PathBuf, why: String },
}

/// The result of a walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub files: Vec<SourceEntry>,
    pub notes: Vec<WalkNote>,
    /// Notes left out past [`MAX_WALK_NOTES`].
    pub notes_omitted: u64,
}

impl Walk {
    fn note(&mut self, note: WalkNote) {
        if self.notes.len() < MAX_WALK_NOTES {
            self.notes.push(note);
        } else {
            self.notes_omitted += 1;
        }
    }
}

/// Walks `paths` with the protocol's file limit.
pub fn walk(paths: &[PathBuf]) -> Result<Walk, FileError> {
    walk_with_limit(paths, MAX_FILES)
}

/// Walks `paths`, failing if they hold more than `max_files` files.
pub fn walk_with_limit(paths: &[PathBuf], max_files: usize) -> Result<Walk, FileError> {
    let mut walk = Walk::default();
    let mut bases: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| path_error(path, Op::Stat, e))?;
        let base = base_name(path)?;
        if let Some(first) = bases.insert(base.clone(), path.clone()) {
            return Err(FileError::DuplicateName { name: base, first, second: path.clone() });
        }
        if meta.is_dir() {
            walk_tree(path, &base, &mut walk, max_files)?;
        } else if meta.is_file() {
            push_file(&mut walk, path, base, &meta, max_files)?;
        } else {
            walk.note(WalkNote::Special(path.clone()));
        }
    }
    Ok(walk)
}

/// A path still to visit: its path, relative name, depth, and its metadata (not following a
/// symlink) when the directory listing already gave it.
type Pending = (PathBuf, String, usize, Option<Metadata>);

fn walk_tree(root: &Path, base: &str, walk: &mut Walk, max_files: usize) -> Result<(), FileError> {
    // Popped in sorted pre-order because children are pushed in reverse order.
    let mut stack: Vec<Pending> = vec![(root.to_path_buf(), base.to_owned(), 1usize, None)];
    let mut first = true;
    while let Some((path, name, depth, meta)) = stack.pop() {
        let meta = match meta {
            Some(meta) => meta,
            None => fs::symlink_metadata(&path).map_err(|e| path_error(&path, Op::Stat, e))?,
        };
        let kind = meta.file_type();
        if kind.is_symlink() && !first {
            walk.note(WalkNote::Symlink(path));
        } else if kind.is_file() {
            push_file(walk, &path, name, &meta, max_files)?;
        } else if kind.is_dir() || first {
            if depth >= MAX_COMPONENTS {
                let why = format!("more than {MAX_COMPONENTS} levels deep");
                walk.note(WalkNote::Unnameable { path, why });
                continue;
            }
            push_children(&path, &name, depth, &mut stack, walk, max_files)?;
        } else {
            walk.note(WalkNote::Special(path));
        }
        first = false;
    }
    Ok(())
}

fn push_children(
    dir: &Path,
    name: &str,
    depth: usize,
    stack: &mut Vec<Pending>,
    walk: &mut Walk,
    max_files: usize,
) -> Result<(), FileError> {
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| path_error(dir, Op::ReadDir, e))? {
        let entry = entry.map_err(|e| path_error(dir, Op::ReadDir, e))?;
        // A directory with more entries than a session may carry files cannot be sent whole.
        if children.len() >= max_files {
            return Err(FileError::TooManyFiles { max: max_files });
        }
        children.push((entry.file_name(), entry));
    }
    // Each name is taken once: a sort keyed by `DirEntry::file_name` built two `OsString`s per
    // comparison (about 1,400 per directory of 100 files). Names in one directory are
    // unique, so an unstable sort gives the same order.
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (child, entry) in children.into_iter().rev() {
        let path = entry.path();
        let Some(c) = child.to_str() else {
            walk.note(WalkNote::Unnameable { path, why: "not UTF-8".into() });
            continue;
        };
        // Relative to the directory's own descriptor (`statx` at the directory's fd), not by
        // the whole path: one lookup per file instead of one per component (the 10,000-file
        // tree of benches/smallfiles: 29-39 → 26 ms, docs/FILES.md "The sender's walk").
        let meta = entry.metadata().map_err(|e| path_error(&path, Op::Stat, e))?;
        let mut relative = String::with_capacity(name.len() + 1 + c.len());
        relative.push_str(name);
        relative.push('/');
        relative.push_str(c);
        stack.push((path, relative, depth + 1, Some(meta)));
    }
    Ok(())
}

fn push_file(
    walk: &mut Walk,
    path: &Path,
    name: String,
    meta: &Metadata,
    max_files: usize,
) -> Result<(), FileError> {
    if let Err(why) = SafeName::parse(&name) {
        walk.note(WalkNote::Unnameable { path: path.to_owned(), why: why.to_string() });
        return Ok(());
    }
    if walk.files.len() >= max_files {
        return Err(FileError::TooManyFiles { max: max_files });
    }
    let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
    let entry = FileEntry { name, size: meta.len(), mode: meta.mode() & 0o7777, mtime_ns };
    walk.files.push(SourceEntry { entry, path: path.to_owned() });
    Ok(())
}

/// The name an argument is sent under: its last component ("." and ".." resolved first).
fn base_name(path: &Path) -> Result<String, FileError> {
    let owned;
    let file_name = match path.file_name() {
        Some(n) => n,
        None => {
            owned = fs::canonicalize(path).map_err(|e| path_error(path, Op::Stat, e))?;
            owned.file_name().ok_or_else(|| FileError::Unsendable {
                path: path.to_owned(),
                why: "it has no name to send it under (the root directory)".into(),
            })?
        }
    };
    let name = file_name.to_str().ok_or_else(|| FileError::Unsendable {
        path: path.to_owned(),
        why: "its name is not UTF-8".into(),
    })?;
    SafeName::parse(name)
        .map_err(|why| FileError::Unsendable { path: path.to_owned(), why: why.to_string() })?;
    Ok(name.to_owned())
}

fn path_error(path: &Path, op: Op, e: std::io::Error) -> FileError {
    FileError::io(path.display().to_string(), op, e)
}
