//! Disk I/O through the shards' io_uring (issue 3, "Disk"): O_DIRECT where the filesystem
//! allows it, buffered otherwise, and the `--json` summary saying which each end used.
//!
//! - On ext4/xfs (a directory under /var/tmp, skipped if that is another filesystem) the
//!   receiver writes the aligned middles of its writes with O_DIRECT and the unaligned head
//!   and tail buffered; files with unaligned sizes arrive byte-identical.
//! - On tmpfs it stays buffered (O_DIRECT brings nothing there) and says so.
//! - The portable backend keeps pread/pwrite; `HAUL_DISK_IO=sync` forces it on io_uring too.
//! - A disk that fills during the data (after the set-up's space check passed) fails through
//!   the ring with an error naming the file and the space needed, and keeps the partial.
//!   That case mounts a small tmpfs (root only; skipped otherwise) and unmounts it after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_tests::{
    Receiver, TRANSFER_TIMEOUT, TempDir, assert_copied, keygen, send, stderr, stdout, write_file,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Sizes that end mid-block, so every transfer has an unaligned tail.
const SIZES: [usize; 3] = [(8 << 20) + 1234, 4097, 1 << 20];

/// A directory on a disk filesystem (ext4/xfs), removed on drop.
struct DiskDir(PathBuf);

impl DiskDir {
    fn new(label: &str) -> Option<DiskDir> {
        let base = Path::new("/var/tmp");
        let out = Command::new("stat").args(["-f", "-c", "%T"]).arg(base).output().ok()?;
        let fs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !(fs.starts_with("ext") || fs == "xfs" || fs == "btrfs") {
            println!("note: /var/tmp is {fs}, not ext4/xfs; O_DIRECT test skipped");
            return None;
        }
        let d = base.join(format!("haul-e2e-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).ok()?;
        Some(DiskDir(d))
    }
}

impl Drop for DiskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `src` files into `dest` with `--json`; returns the receiver's `io` object.
fn transfer(
    dir: &TempDir,
    dest: &Path,
    srcs: &[PathBuf],
    backend: &str,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let key = match dir.join("key") {
        k if k.exists() => k,
        _ => keygen(dir, "key"),
    };
    let flags = ["--backend", backend, "--json"];
    let recv = Receiver::start_with_env("127.0.0.1:0", &key, dest, &flags, env);
    let out = send(&recv.addr, &key, srcs, &flags);
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    assert!(r.status.success(), "recv failed: {}", stderr(&r));
    assert_copied(srcs, dest);
    let text = stdout(&r);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    v["io"].clone()
}

fn sources(dir: &TempDir) -> Vec<PathBuf> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let p = dir.join(format!("src/f{i}.bin"));
            write_file(&p, size, i as u64 + 7, 0o644);
            p
        })
        .collect()
}

#[test]
fn o_direct_on_a_disk_filesystem_delivers_identical_files_and_says_so() {
    let Some(dest) = DiskDir::new("direct") else { return };
    let dir = TempDir::new("direct");
    let srcs = sources(&dir);
    let io = transfer(&dir, &dest.0, &srcs, "auto", &[]);
    if io["disk_io"] != "io_uring" {
        println!("note: no io_uring here ({io}); O_DIRECT needs it");
        return;
    }
    assert_eq!(io["disk_mode"], "O_DIRECT", "{io}");
    assert!(io["disk_direct_ops"].as_u64().unwrap() > 0, "{io}");
    assert!(io["disk_ring_ops"].as_u64().unwrap() > 0, "{io}");
}

#[test]
fn tmpfs_stays_buffered_and_says_so() {
    let dir = TempDir::new("tmpfs-buffered");
    let dest = dir.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let srcs = sources(&dir);
    let io = transfer(&dir, &dest, &srcs, "auto", &[]);
    assert_eq!(io["disk_mode"], "buffered", "{io}");
    assert_eq!(io["disk_direct_ops"], 0, "{io}");
    if io["disk_io"] == "io_uring" && dir.path().starts_with("/dev/shm") {
        assert!(io["disk_direct_refused_files"].as_u64().unwrap() > 0, "{io}");
    }
}

#[test]
fn portable_backend_and_forced_sync_use_pread_pwrite() {
    let Some(dest) = DiskDir::new("sync") else { return };
    let dir = TempDir::new("sync");
    let srcs = sources(&dir);
    let io = transfer(&dir, &dest.0, &srcs, "portable", &[]);
    assert_eq!(io["disk_io"], "pread/pwrite", "{io}");
    assert_eq!(io["disk_mode"], "buffered", "{io}");
    for f in std::fs::read_dir(&dest.0).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let io = transfer(&dir, &dest.0, &srcs, "auto", &[("HAUL_DISK_IO", "sync")]);
    assert_eq!(io["disk_io"], "pread/pwrite", "{io}");
}

/// Size of the tmpfs in the full-during-data test.
const SMALL_FS_BYTES: u64 = 16 << 20;

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_filling_during_the_data_fails_with_the_space_needed_and_keeps_the_partial() {
    let dir = TempDir::new("fills");
    let dest = dir.join("small");
    std::fs::create_dir_all(&dest).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={SMALL_FS_BYTES}"), "tmpfs"])
        .arg(&dest)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        println!("note: cannot mount a tmpfs here (not root?); skipped");
        return;
    }
    let _fs = Tmpfs(dest.clone());
    let key = keygen(&dir, "key");
    // Fits at set-up (12 of 16 MiB); slow enough that the filler below lands mid-data.
    let src = dir.join("src/grows.bin");
    write_file(&src, 12 << 20, 3, 0o644);
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
    let addr = recv.addr.clone();
    let sender = std::thread::spawn(move || send(&addr, &key, &[src], &["--rate", "16M"]));
    // Once the partial exists (the space check passed), another writer takes the space.
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let partial = dest.join(".grows.bin.haul-partial");
    while !partial.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(partial.exists(), "the receiver created its partial");
    let filler = dest.join("filler");
    let _ = std::fs::write(&filler, vec![9u8; SMALL_FS_BYTES as usize]);
    let out = sender.join().unwrap();
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(!r.status.success(), "the receiver must not report success");
    assert!(!out.status.success(), "the sender must not report success");
    let err = format!("{}\n{}", stderr(&r), stderr(&out));
    assert!(err.contains("grows.bin"), "the error names the file: {err}");
    assert!(err.contains("space"), "the error says the disk is full: {err}");
    assert!(err.contains("MiB") || err.contains("KiB"), "the error says how much: {err}");
    assert!(partial.exists(), "the partial stays for a resume");
    assert!(!dest.join("grows.bin").exists(), "no final file");
}
