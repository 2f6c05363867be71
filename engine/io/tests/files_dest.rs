//! Bad destinations (issue 3, acceptance "Bad destinations"): missing, missing parent, not a
//! directory, read-only, and full. The mount cases share one test so they run serially in this
//! binary; each mount is undone by a guard even when an assertion fails, and the test is skipped
//! with a printed reason where mounting is not permitted.

// Test helpers outside #[test] fns may unwrap too: a panic there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::{
    DestRoot, Fault, FileError, PartialFile, PartialOptions, SafeName, check_space,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test; unmounted and removed on drop.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn new(path: PathBuf, options: &str) -> Result<TmpfsMount, String> {
        fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "haul-test"])
            .arg(&path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = fs::remove_dir(&path);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(TmpfsMount { path })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = fs::remove_dir(&self.path);
    }
}

#[test]
fn missing_destination_and_missing_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    match DestRoot::open(&missing).unwrap_err() {
        FileError::DestMissing { path } => assert_eq!(path, missing),
        other => panic!("expected DestMissing, got {other}"),
    }
    let deeper = tmp.path().join("no-parent/dest");
    let err = DestRoot::open(&deeper).unwrap_err();
    match &err {
        FileError::DestParentMissing { path, parent } => {
            assert_eq!((path, parent), (&deeper, &tmp.path().join("no-parent")));
        }
        other => panic!("expected DestParentMissing, got {other}"),
    }
    assert_eq!(err.fault(), Fault::Operator);
    assert!(err.to_string().contains("nor does its parent directory"), "{err}");
}

#[test]
fn destination_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(DestRoot::open(&file).unwrap_err(), FileError::DestNotDir { .. }));
    let below = file.join("sub");
    assert!(matches!(DestRoot::open(&below).unwrap_err(), FileError::DestNotDir { .. }));
}

#[test]
fn mounted_read_only_and_full_destinations() {
    let base = std::env::temp_dir().join(format!("haul-files-mounts-{}", std::process::id()));
    let ro = match TmpfsMount::new(base.join("ro"), "ro,size=1m") {
        Ok(m) => m,
        Err(why) => {
            println!("SKIPPED: cannot mount tmpfs here ({why})");
            let _ = fs::remove_dir_all(&base);
            return;
        }
    };
    read_only_destination(&ro.path);
    let small = TmpfsMount::new(base.join("small"), "size=1m").unwrap();
    full_destination(&small.path);
    drop((ro, small));
    let _ = fs::remove_dir(&base);
}

fn read_only_destination(path: &Path) {
    let err = DestRoot::open(path).unwrap_err();
    match &err {
        FileError::DestReadOnly { path: p } => assert_eq!(p, path),
        other => panic!("expected DestReadOnly, got {other}"),
    }
    assert!(err.to_string().contains("read-only filesystem"), "{err}");
}

fn full_destination(path: &Path) {
    let dest = DestRoot::open(path).unwrap();
    let name = SafeName::parse("big.bin").unwrap();
    let size = 4u64 << 20;

    let err = check_space(&dest, "big.bin", size).unwrap_err();
    assert!(matches!(err, FileError::DiskFull { .. }), "{err}");

    let err = PartialFile::create(&dest, &name, size, PartialOptions::default()).unwrap_err();
    match &err {
        FileError::DiskFull { file, needed, available, fs } => {
            assert_eq!(file, "big.bin");
            assert!(*needed > *available, "{err}");
            assert!(*needed <= size && *available <= 1 << 20, "{err}");
            assert_eq!(fs, path);
        }
        other => panic!("expected DiskFull, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("not enough space for big.bin: need "), "{msg}");
    assert!(msg.contains("available on"), "{msg}");
    assert_eq!(err.fault(), Fault::Operator);
    // The partial stays for resume.
    assert!(path.join(".big.bin.haul-partial").exists());

    // A file that fits still works on the same filesystem; O_DIRECT on tmpfs is either used
    // or reported as refused.
    let small = SafeName::parse("small.bin").unwrap();
    let options = PartialOptions { direct_io: true, fresh: false, ..Default::default() };
    let partial = PartialFile::create(&dest, &small, 64 << 10, options).unwrap();
    println!("tmpfs io mode: {:?}", partial.io_mode());
    partial.write_at(&vec![7; 64 << 10], 0).unwrap();
    partial.sync_data().unwrap();
}
