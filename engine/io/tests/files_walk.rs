//! The sender's walk: single files, lists, trees (sorted, relative to each argument's
//! basename), symlinks and special files skipped with a note, the file cap, clear errors.

// Test helpers outside #[test] fns may unwrap too: a panic there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::{FileError, WalkNote, walk, walk_with_limit};
use rustix::fs::{CWD, FileType, Mode};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::PathBuf;

fn tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proj");
    fs::create_dir_all(root.join("b/deep")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("z.txt"), b"zz").unwrap();
    fs::write(root.join("a/one"), b"1").unwrap();
    fs::write(root.join("b/deep/two"), b"22").unwrap();
    fs::write(root.join("b/three"), b"333").unwrap();
    fs::set_permissions(root.join("b/three"), fs::Permissions::from_mode(0o4750)).unwrap();
    symlink("/etc/passwd", root.join("a/link")).unwrap();
    symlink("../b", root.join("a/dirlink")).unwrap();
    rustix::fs::mknodat(CWD, root.join("b/fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .unwrap();
    (tmp, root)
}

#[test]
fn tree_is_sorted_relative_and_skips_links_and_specials() {
    let (_tmp, root) = tree();
    let w = walk(std::slice::from_ref(&root)).unwrap();
    let names: Vec<&str> = w.files.iter().map(|f| f.entry.name.as_str()).collect();
    assert_eq!(names, ["proj/a/one", "proj/b/deep/two", "proj/b/three", "proj/z.txt"]);
    let three = &w.files[2];
    assert_eq!(three.path, root.join("b/three"));
    let meta = fs::metadata(&three.path).unwrap();
    assert_eq!(three.entry.size, 3);
    assert_eq!(three.entry.mode, 0o4750);
    assert_eq!(three.entry.mtime_ns, meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
    let mut notes = w.notes.clone();
    notes.sort_by_key(|n| format!("{n:?}"));
    assert_eq!(
        notes,
        [
            WalkNote::Special(root.join("b/fifo")),
            WalkNote::Symlink(root.join("a/dirlink")),
            WalkNote::Symlink(root.join("a/link")),
        ]
    );
}

#[test]
fn single_files_and_lists_use_basenames() {
    let (_tmp, root) = tree();
    let w = walk(&[root.join("b/three"), root.join("a"), root.join("z.txt")]).unwrap();
    let names: Vec<&str> = w.files.iter().map(|f| f.entry.name.as_str()).collect();
    assert_eq!(names, ["three", "a/one", "z.txt"]);
    // A top-level symlink is followed: the operator named it.
    let w = walk(&[root.join("a/dirlink")]).unwrap();
    let names: Vec<&str> = w.files.iter().map(|f| f.entry.name.as_str()).collect();
    assert_eq!(names, ["dirlink/deep/two", "dirlink/three"]);
    // "." is named after the directory it is.
    let w = walk(&[root.join("a/.")]).unwrap();
    assert_eq!(w.files[0].entry.name, "a/one");
}

#[test]
fn errors_name_the_path() {
    let (_tmp, root) = tree();
    let missing = root.join("nope");
    let err = walk(std::slice::from_ref(&missing)).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    let err = walk(&[root.join("a/one"), root.join("b/../a/one")]).unwrap_err();
    assert!(matches!(err, FileError::DuplicateName { .. }), "{err}");
    assert!(matches!(walk(&[PathBuf::from("/")]), Err(FileError::Unsendable { .. })));
}

#[test]
fn file_count_is_capped() {
    let (_tmp, root) = tree();
    assert_eq!(walk_with_limit(std::slice::from_ref(&root), 4).unwrap().files.len(), 4);
    let err = walk_with_limit(&[root], 3).unwrap_err();
    assert!(matches!(err, FileError::TooManyFiles { max: 3 }), "{err}");
}

#[test]
fn unnameable_entries_are_noted() {
    let (_tmp, root) = tree();
    fs::write(root.join("a/bad\u{1b}[31mname"), b"x").unwrap();
    let w = walk(&[root.join("a")]).unwrap();
    assert_eq!(w.files.len(), 1);
    assert!(
        w.notes
            .iter()
            .any(|n| matches!(n, WalkNote::Unnameable { why, .. } if why.contains("control"))),
        "{:?}",
        w.notes
    );
}
