//! Finalize: mode, mtime, setuid/setgid, owner, xattrs, the rename policies, and O_DIRECT
//! reporting. Also a small-tree round trip through walk → partial → finalize.

// Test helpers outside #[test] fns may unwrap too: a panic there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::{
    DestRoot, FileError, FinalAttrs, IoMode, PartialFile, PartialOptions, SafeName, walk,
};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

const MTIME_NS: i64 = 1_234_567_890_123_456_789;

fn dest() -> (tempfile::TempDir, DestRoot) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = DestRoot::open(tmp.path()).unwrap();
    (tmp, dest)
}

fn write_file(dest: &DestRoot, name: &str, data: &[u8]) -> PartialFile {
    let name = SafeName::parse(name).unwrap();
    let p = PartialFile::create(dest, &name, data.len() as u64, PartialOptions::default()).unwrap();
    p.write_at(data, 0).unwrap();
    p
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn finalize_sets_mode_and_mtime_and_drops_setuid() {
    let (tmp, dest) = dest();
    let p = write_file(&dest, "dir/tool", b"#!/bin/sh\n");
    assert!(tmp.path().join("dir/.tool.haul-partial").exists());
    let attrs = FinalAttrs { mode: 0o106755, mtime_ns: MTIME_NS, ..Default::default() };
    let done = p.finalize(&attrs, false).unwrap();
    assert_eq!(done.mode, 0o755);
    let meta = fs::metadata(tmp.path().join("dir/tool")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.mtime(), MTIME_NS / 1_000_000_000);
    assert_eq!(meta.mtime_nsec(), MTIME_NS % 1_000_000_000);
    assert_eq!(meta.atime(), meta.mtime());
    assert!(!tmp.path().join("dir/.tool.haul-partial").exists());
    assert_eq!(fs::read(tmp.path().join("dir/tool")).unwrap(), b"#!/bin/sh\n");
}

#[test]
fn keep_setid_is_honoured_only_for_root() {
    let (tmp, dest) = dest();
    let p = write_file(&dest, "suid", b"x");
    let attrs = FinalAttrs { mode: 0o6750, mtime_ns: 0, keep_setid: true, ..Default::default() };
    let done = p.finalize(&attrs, false).unwrap();
    let expected = if is_root() { 0o6750 } else { 0o750 };
    assert_eq!(done.mode, expected);
    let mode = fs::metadata(tmp.path().join("suid")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, expected);
}

#[test]
fn owner_and_xattrs_only_when_asked_and_permitted() {
    let (tmp, dest) = dest();
    let p = write_file(&dest, "owned", b"data");
    let attrs = FinalAttrs {
        mode: 0o640,
        mtime_ns: MTIME_NS,
        owner: Some((4321, 8765)),
        xattrs: vec![("user.haul.test".into(), b"value".to_vec())],
        ..Default::default()
    };
    let done = p.finalize(&attrs, false).unwrap();
    let meta = fs::metadata(tmp.path().join("owned")).unwrap();
    if is_root() {
        assert!(!done.owner_skipped);
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    } else {
        assert!(done.owner_skipped);
    }
    // chown ran before chmod, so the mode is the one asked for.
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    if done.xattrs_skipped.is_empty() {
        let fd = fs::File::open(tmp.path().join("owned")).unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::fs::fgetxattr(&fd, "user.haul.test", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"value");
    } else {
        println!("note: user xattrs not supported on this filesystem: {:?}", done.xattrs_skipped);
    }
    // Nothing asked: nothing changed beyond mode and times.
    let p = write_file(&dest, "plain", b"data");
    let done = p.finalize(&FinalAttrs { mode: 0o600, ..Default::default() }, false).unwrap();
    assert!(!done.owner_skipped && done.xattrs_skipped.is_empty());
}

#[test]
fn rename_never_replaces_unless_allowed() {
    let (tmp, dest) = dest();
    fs::write(tmp.path().join("f"), b"old").unwrap();
    let attrs = FinalAttrs { mode: 0o644, ..Default::default() };
    let err = write_file(&dest, "f", b"new").finalize(&attrs, false).unwrap_err();
    match &err {
        FileError::Exists { file } => assert_eq!(file, "f"),
        other => panic!("expected Exists, got {other}"),
    }
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"old");
    // The partial survives the refusal (nothing is lost).
    assert_eq!(fs::read(tmp.path().join(".f.haul-partial")).unwrap(), b"new");
    write_file(&dest, "f", b"new").finalize(&attrs, true).unwrap();
    assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"new");
    assert!(!tmp.path().join(".f.haul-partial").exists());
}

#[test]
fn writes_outside_the_size_are_refused() {
    let (_tmp, dest) = dest();
    let p = write_file(&dest, "sized", &[1; 100]);
    assert!(matches!(p.write_at(&[0; 2], 99), Err(FileError::OutOfRange { .. })));
    assert!(matches!(p.write_at(&[0; 1], u64::MAX), Err(FileError::OutOfRange { .. })));
    let mut buf = [0; 200];
    assert!(matches!(p.read_at(&mut buf, 0), Err(FileError::OutOfRange { .. })));
}

#[test]
fn direct_io_is_used_or_reported_and_data_reads_back() {
    let (tmp, dest) = dest();
    let name = SafeName::parse("direct.bin").unwrap();
    let size = (1 << 20) + 100;
    let options = PartialOptions { direct_io: true, fresh: true, ..Default::default() };
    let p = PartialFile::create(&dest, &name, size, options).unwrap();
    println!("io mode on {}: {:?}", tmp.path().display(), p.io_mode());
    match p.io_mode() {
        IoMode::Direct(a) => {
            assert!(a.mem_bytes.is_power_of_two() && a.offset_bytes.is_power_of_two());
            assert!(p.direct_fd().is_some());
        }
        IoMode::Buffered { direct_refused } => {
            assert!(direct_refused);
            assert!(p.direct_fd().is_none());
        }
    }
    // A 4 KiB-aligned buffer (goes direct when on) and an unaligned tail (always buffered).
    let mut aligned = vec![0u8; (1 << 20) + 4096];
    let off = aligned.as_ptr().align_offset(4096);
    let block = &mut aligned[off..off + (1 << 20)];
    block.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
    p.write_at(block, 0).unwrap();
    p.write_at(&[9; 100], 1 << 20).unwrap();
    p.sync_data().unwrap();
    let mut back = vec![0; size as usize];
    assert_eq!(p.read_at(&mut back, 0).unwrap(), size as usize);
    assert_eq!(&back[..1 << 20], &*block);
    assert_eq!(&back[1 << 20..], &[9; 100]);
}

#[test]
fn small_tree_round_trip_preserves_bytes_modes_and_mtimes() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("tree");
    for i in 0..120u32 {
        let dir = root.join(format!("d{}", i % 7)).join(format!("e{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i:03}.bin"));
        let len = 1024 + (i as usize * 523) % (63 * 1024);
        fs::write(&path, vec![(i % 256) as u8; len]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600 + (i % 64))).unwrap();
        let mtime = UNIX_EPOCH + Duration::new(1_600_000_000 + u64::from(i), i * 1000);
        fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    }
    let walked = walk(&[root]).unwrap();
    assert_eq!(walked.files.len(), 120);
    let (dst, dest) = dest();
    for f in &walked.files {
        let name = SafeName::parse(&f.entry.name).unwrap();
        let data = fs::read(&f.path).unwrap();
        let p = PartialFile::create(&dest, &name, f.entry.size, PartialOptions::default()).unwrap();
        p.write_at(&data, 0).unwrap();
        let attrs =
            FinalAttrs { mode: f.entry.mode, mtime_ns: f.entry.mtime_ns, ..Default::default() };
        p.finalize(&attrs, false).unwrap();
    }
    for f in &walked.files {
        let got = dst.path().join(&f.entry.name);
        assert_same_file(&f.path, &got);
    }
}

fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap(), "{}", b.display());
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    assert_eq!(ma.permissions().mode() & 0o7777, mb.permissions().mode() & 0o7777);
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()));
}

#[test]
fn batch_finalize_renames_all_and_reports_refusals_per_file() {
    use haul_io::files::FinalizeBatch;
    let (tmp, dest) = dest();
    fs::create_dir(tmp.path().join("d")).unwrap();
    fs::write(tmp.path().join("d/f07"), b"already here").unwrap();
    let mut batch = FinalizeBatch::new();
    for i in 0..40u32 {
        let p = write_file(&dest, &format!("d/f{i:02}"), format!("file {i}").as_bytes());
        let attrs =
            FinalAttrs { mode: 0o4640, mtime_ns: MTIME_NS + i64::from(i), ..Default::default() };
        batch.push(p, &attrs, false).unwrap();
    }
    assert_eq!(batch.len(), 40);
    assert!(!batch.is_full());
    let outcomes = batch.commit().unwrap();
    assert_eq!(outcomes.len(), 40);
    for (i, (name, outcome)) in outcomes.iter().enumerate() {
        assert_eq!(name.as_str(), format!("d/f{i:02}"));
        let path = tmp.path().join(name.as_str());
        if i == 7 {
            assert!(matches!(outcome, Err(FileError::Exists { .. })), "{outcome:?}");
            assert_eq!(fs::read(&path).unwrap(), b"already here");
            assert!(tmp.path().join("d/.f07.haul-partial").exists());
            continue;
        }
        assert_eq!(outcome.as_ref().unwrap().mode, 0o640);
        assert_eq!(fs::read(&path).unwrap(), format!("file {i}").as_bytes());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        let ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        assert_eq!(ns, MTIME_NS + i as i64);
    }
}

/// A batch of a few files (a large file finishing alone) is synced per file, not with
/// `syncfs`: the same outcome, refusals per file included.
#[test]
fn a_small_batch_finalizes_per_file_with_the_same_outcome() {
    use haul_io::files::{FinalizeBatch, PER_FILE_SYNC_MAX};
    let (tmp, dest) = dest();
    fs::create_dir_all(tmp.path().join("a/b")).unwrap();
    fs::write(tmp.path().join("a/taken"), b"already here").unwrap();
    let names = ["a/one", "a/b/two", "a/taken"];
    assert!(names.len() <= PER_FILE_SYNC_MAX);
    let mut batch = FinalizeBatch::new();
    for (i, name) in names.iter().enumerate() {
        let p = write_file(&dest, name, name.as_bytes());
        let attrs = FinalAttrs { mode: 0o600, mtime_ns: MTIME_NS + i as i64, ..Default::default() };
        batch.push(p, &attrs, false).unwrap();
    }
    let outcomes = batch.commit().unwrap();
    for (i, (name, outcome)) in outcomes.iter().enumerate() {
        let path = tmp.path().join(name.as_str());
        if name.as_str() == "a/taken" {
            assert!(matches!(outcome, Err(FileError::Exists { .. })), "{outcome:?}");
            assert_eq!(fs::read(&path).unwrap(), b"already here");
            continue;
        }
        assert_eq!(outcome.as_ref().unwrap().mode, 0o600, "{name}");
        assert_eq!(fs::read(&path).unwrap(), name.as_str().as_bytes());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), MTIME_NS + i as i64);
    }
    assert!(!tmp.path().join("a/.one.haul-partial").exists(), "renamed, not left as a partial");
}

#[test]
fn longest_names_get_hashed_partials_and_still_checkpoint_and_finalize() {
    use haul_io::files::{CheckpointWriter, FileIdentity};
    let (tmp, dest) = dest();
    let long = "n".repeat(255);
    let name = SafeName::parse(&format!("d/{long}")).unwrap();
    let p = PartialFile::create(&dest, &name, 4, PartialOptions::default()).unwrap();
    assert!(p.partial_name().starts_with(".haul-") && p.partial_name().len() < 255);
    p.write_at(b"data", 0).unwrap();
    let id = FileIdentity { size: 4, mtime_ns: 0, head_hash: None };
    let mut w = CheckpointWriter::new(&p, id, &[]).unwrap();
    w.record_written(0..4).unwrap();
    w.commit().unwrap();
    assert!(tmp.path().join("d").join(format!("{}.ckpt", p.partial_name())).exists());
    p.finalize(&FinalAttrs { mode: 0o644, ..Default::default() }, false).unwrap();
    assert_eq!(fs::read(tmp.path().join("d").join(&long)).unwrap(), b"data");
    assert_eq!(fs::read_dir(tmp.path().join("d")).unwrap().count(), 1, "partial and ckpt gone");
}
