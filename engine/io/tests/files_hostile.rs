//! Hostile sender (issue 3, acceptance "Hostile sender"): names `../x`, `/etc/x`, `a/../../x`,
//! and paths through symlinks planted in DEST write nothing outside DEST and get a clear
//! refusal. Each case drives the receiver's whole file path: validate, create the partial,
//! write, finalize.

// Test helpers outside #[test] fns may unwrap too: a panic there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::{
    DestRoot, Fault, FileError, FinalAttrs, PartialFile, PartialOptions, SafeName,
};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// What the receiver does with one file from the peer.
fn receive(dest: &DestRoot, name: &str, data: &[u8], overwrite: bool) -> Result<(), FileError> {
    let name = SafeName::parse(name)
        .map_err(|reason| FileError::BadName { name: name.to_owned(), reason })?;
    let partial = PartialFile::create(dest, &name, data.len() as u64, PartialOptions::default())?;
    partial.write_at(data, 0)?;
    let attrs =
        FinalAttrs { mode: 0o644, mtime_ns: 1_600_000_000_000_000_000, ..Default::default() };
    partial.finalize(&attrs, overwrite)?;
    Ok(())
}

/// Every path under `dir`, sorted, as strings relative to it (symlinks not followed).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    dest_path: std::path::PathBuf,
    outside: std::path::PathBuf,
    dest: DestRoot,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dest_path = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir(&dest_path).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside file").unwrap();
    let dest = DestRoot::open(&dest_path).unwrap();
    Setup { _tmp: tmp, dest_path, outside, dest }
}

fn assert_outside_untouched(s: &Setup) {
    assert_eq!(listing(&s.outside), ["keep"]);
    assert_eq!(fs::read(s.outside.join("keep")).unwrap(), b"outside file");
}

#[test]
fn traversal_names_are_refused_by_validation() {
    let s = setup();
    for name in ["../x", "/etc/x", "a/../../x", "../outside/keep", "a/./b", "", "a\0b", "a//b"] {
        let err = receive(&s.dest, name, b"evil", true).unwrap_err();
        assert!(matches!(err, FileError::BadName { .. }), "{name:?}: {err}");
        assert_eq!(err.fault(), Fault::Peer);
        assert!(err.to_string().contains("refused file name"), "{err}");
    }
    assert_outside_untouched(&s);
    assert!(listing(&s.dest_path).is_empty(), "{:?}", listing(&s.dest_path));
}

#[test]
fn symlinked_directory_in_dest_is_refused() {
    let s = setup();
    symlink(&s.outside, s.dest_path.join("link")).unwrap();
    fs::create_dir(s.dest_path.join("a")).unwrap();
    symlink(&s.outside, s.dest_path.join("a/deep")).unwrap();
    symlink("../..", s.dest_path.join("a/up")).unwrap();
    for (name, component) in
        [("link/x", "link"), ("link/keep", "link"), ("a/deep/b/x", "a/deep"), ("a/up/x", "a/up")]
    {
        let err = receive(&s.dest, name, b"evil", true).unwrap_err();
        match &err {
            FileError::SymlinkRefused { file, component: c } => {
                assert_eq!((file.as_str(), c.as_str()), (name, component));
            }
            other => panic!("{name}: expected SymlinkRefused, got {other}"),
        }
        assert_eq!(err.fault(), Fault::Peer);
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
    assert_outside_untouched(&s);
}

#[test]
fn symlink_inside_dest_is_refused_too() {
    // Even a link that stays inside DEST is refused: no symlink component is ever followed.
    let s = setup();
    fs::create_dir(s.dest_path.join("real")).unwrap();
    symlink("real", s.dest_path.join("alias")).unwrap();
    let err = receive(&s.dest, "alias/x", b"data", false).unwrap_err();
    assert!(matches!(err, FileError::SymlinkRefused { .. }), "{err}");
    assert!(listing(&s.dest_path.join("real")).is_empty());
}

#[test]
fn symlink_at_partial_name_is_refused() {
    let s = setup();
    symlink(s.outside.join("keep"), s.dest_path.join(".f.haul-partial")).unwrap();
    let err = receive(&s.dest, "f", b"evil", true).unwrap_err();
    assert!(matches!(err, FileError::SymlinkRefused { .. }), "{err}");
    assert_outside_untouched(&s);
}

#[test]
fn symlink_at_final_name_is_replaced_not_followed() {
    let s = setup();
    symlink(s.outside.join("keep"), s.dest_path.join("f")).unwrap();
    // Overwrite never: refused, nothing changes.
    let err = receive(&s.dest, "f", b"new", false).unwrap_err();
    assert!(matches!(err, FileError::Exists { .. }), "{err}");
    assert_outside_untouched(&s);
    // Overwrite always: the link itself is replaced by the file; its target is untouched.
    receive(&s.dest, "f", b"new", true).unwrap();
    let meta = fs::symlink_metadata(s.dest_path.join("f")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(fs::read(s.dest_path.join("f")).unwrap(), b"new");
    assert_outside_untouched(&s);
}

#[test]
fn file_in_place_of_a_directory_is_a_clear_error() {
    let s = setup();
    fs::write(s.dest_path.join("plain"), b"x").unwrap();
    let err = receive(&s.dest, "plain/x", b"data", false).unwrap_err();
    match err {
        FileError::NotADirectory { file, component } => {
            assert_eq!((file.as_str(), component.as_str()), ("plain/x", "plain"));
        }
        other => panic!("expected NotADirectory, got {other}"),
    }
}

#[test]
fn nested_names_create_their_directories_beneath_dest() {
    let s = setup();
    receive(&s.dest, "a/b/c/file.bin", b"hello", false).unwrap();
    assert_eq!(fs::read(s.dest_path.join("a/b/c/file.bin")).unwrap(), b"hello");
    assert_eq!(listing(&s.dest_path), ["a", "a/b", "a/b/c", "a/b/c/file.bin"]);
}
