//! Kill and resume (issue 3, "Kill and resume"): `kill -9` the receiver while data flows,
//! during verification and during the rename, and the sender while data flows; each time a
//! second transfer into the same DEST completes with the right checksum and sends again no
//! more than the unfinished part plus one checkpoint interval.
//!
//! The phases are observed, not timed. "While data flows": the kill comes once the receiver
//! has written its first checkpoint. Verification and rename: the receiver runs with the test
//! hook `HAUL_TEST_PAUSE=verify|rename:MARKER` (haul_io::files::pause, docs/FILES.md), which
//! stops it at that phase and creates MARKER; the kill comes once MARKER exists. What the
//! checkpoint covers is read back from it (the files library's decoder) to bound what the
//! resumed run may send.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests: a failure is a test failure")]

use haul_io::files::checkpoint::{Checkpoint, checkpoint_interval_bytes};
use haul_tests::{Receiver, TempDir, haul_bin, keygen, send, stderr, stdout, tree, write_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file: big enough for many checkpoint intervals (1% of it each).
const SIZE: usize = 256 << 20;
/// The first run's rate, so that it is still running when its first checkpoint appears.
const SLOW_RATE: &str = "300M";
/// Deadline for a checkpoint (or a pause marker) to appear (nominally a few seconds).
const CKPT_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for the resumed transfer and for a receiver's idle timeout (30 s) to end it.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

fn ckpt_path(dest: &Path) -> PathBuf {
    dest.join(".big.bin.haul-partial.ckpt")
}

/// Bytes from offset 0 the checkpoint says are on disk and synced.
fn synced_prefix(dest: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(ckpt_path(dest)) else { return 0 };
    let ck = Checkpoint::decode(&bytes).expect("a checkpoint the receiver wrote decodes");
    ck.ranges.first().filter(|r| r.start == 0).map_or(0, |r| r.end)
}

fn wait_for_checkpoint(dest: &Path) {
    let deadline = Instant::now() + CKPT_DEADLINE;
    while synced_prefix(dest) == 0 {
        assert!(Instant::now() < deadline, "no checkpoint within {CKPT_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_marker(marker: &Path) {
    let deadline = Instant::now() + CKPT_DEADLINE;
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the receiver did not pause within {CKPT_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start a slow sender without waiting for it.
fn spawn_sender(addr: &str, key: &Path, src: &Path) -> std::process::Child {
    spawn_sender_at(addr, key, src, &["--rate", SLOW_RATE, "--policy", "fixed"])
}

/// Start a sender with `flags` without waiting for it.
fn spawn_sender_at(addr: &str, key: &Path, src: &Path, flags: &[&str]) -> std::process::Child {
    Command::new(haul_bin())
        .args(["send", "--to", addr, "--key-file"])
        .arg(key)
        .args(flags)
        .arg(src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning haul send")
}

/// The resumed run: completes, same BLAKE3, and sends at most the unfinished part plus one
/// checkpoint interval (plus a block, the unit the receiver keeps).
fn resume_and_check(dir: &TempDir, key: &Path, src: &Path, dest: &Path, what: &str) {
    let prefix = synced_prefix(dest);
    assert!(prefix > 0, "{what}: the first run left a checkpoint");
    let recv = Receiver::start("127.0.0.1:0", key, dest, &[]);
    let out = send(&recv.addr, key, &[src.to_path_buf()], &["--json"]);
    let r = recv.finish(RUN_DEADLINE);
    assert!(out.status.success(), "{what}: resumed send: {}", stderr(&out));
    assert!(r.status.success(), "{what}: resumed recv: {}", stderr(&r));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let sent = v["bytes"].as_u64().unwrap();
    let size = SIZE as u64;
    let bound = size - prefix + checkpoint_interval_bytes(size) + (1 << 20);
    assert!(sent <= bound, "{what}: resent {sent} bytes, more than {bound} (kept {prefix})");
    assert_eq!(tree(dest), tree(&dir.join("src")), "{what}: byte-identical, no leftovers");
}

#[test]
fn receiver_killed_during_data_resumes() {
    let dir = TempDir::new("kill-recv");
    let src = dir.join("src/big.bin");
    write_file(&src, SIZE, 42, 0o644);
    let key = keygen(&dir, "key");
    let dest = dir.join("dest");
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
    let mut sender = spawn_sender(&recv.addr, &key, &src);
    wait_for_checkpoint(&dest);
    let killed = recv.kill();
    assert!(!killed.status.success());
    let _ = sender.kill();
    let _ = sender.wait();
    resume_and_check(&dir, &key, &src, &dest, "receiver killed");
}

#[test]
fn sender_killed_during_data_resumes() {
    let dir = TempDir::new("kill-send");
    let src = dir.join("src/big.bin");
    write_file(&src, SIZE, 43, 0o644);
    let key = keygen(&dir, "key");
    let dest = dir.join("dest");
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
    let mut sender = spawn_sender(&recv.addr, &key, &src);
    wait_for_checkpoint(&dest);
    sender.kill().unwrap();
    let _ = sender.wait();
    // The receiver notices the silence (idle timeout), fails, and keeps the partial.
    let r = recv.finish(RUN_DEADLINE);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(!dest.join("big.bin").exists(), "no final file from a cut transfer");
    resume_and_check(&dir, &key, &src, &dest, "sender killed");
}

/// Kill -9 the receiver paused by the test hook at `phase`, and the sender; then resume.
fn receiver_killed_at(phase: &str, seed: u64) {
    let dir = TempDir::new(&format!("kill-{phase}"));
    let src = dir.join("src/big.bin");
    write_file(&src, SIZE, seed, 0o644);
    let key = keygen(&dir, "key");
    let dest = dir.join("dest");
    let marker = dir.join("paused");
    let hook = format!("{phase}:{}", marker.display());
    let env = [("HAUL_TEST_PAUSE", hook.as_str())];
    let recv = Receiver::start_with_env("127.0.0.1:0", &key, &dest, &[], &env);
    let mut sender = spawn_sender_at(&recv.addr, &key, &src, &[]);
    wait_for_marker(&marker);
    let killed = recv.kill();
    assert!(!killed.status.success());
    let _ = sender.kill();
    let _ = sender.wait();
    assert!(!dest.join("big.bin").exists(), "{phase}: nothing renamed before the pause");
    assert!(
        dest.join(".big.bin.haul-partial").exists(),
        "{phase}: the partial stays for the resume"
    );
    resume_and_check(&dir, &key, &src, &dest, &format!("receiver killed during {phase}"));
}

#[test]
fn receiver_killed_during_verification_resumes() {
    receiver_killed_at("verify", 44);
}

#[test]
fn receiver_killed_during_rename_resumes() {
    receiver_killed_at("rename", 45);
}
