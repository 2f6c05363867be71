//! Resume grants through the gate, against the release binary (issue 5, "Resume after
//! interruption"): `kill -9` the `haul get` or `haul put` client while data flows. The gate
//! notices the closed SSH connection at once: it cancels that transfer's data plane, frees its
//! UDP sockets and records the use as interrupted (logged), so the rerun of the same
//! single-use URL is accepted on its first try (no waiting out `in-use` or a data-plane
//! timeout). The rerun resumes, completes byte-identical and sends no more than the unfinished
//! part plus one checkpoint interval. A second, concurrent use is refused `in-use`; a download
//! rerun that claims less than the recorded resume grant (an empty destination) is refused
//! `resume-below-grant`; once complete, the URL is `already-used`.
//!
//! The phases are observed, not timed: the kill comes once the receiver's checkpoint covers
//! half the file; the rerun comes once the server logged the interruption.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gate_common::{Appliance, haul};
use haul_io::files::checkpoint::{Checkpoint, checkpoint_interval_bytes};
use haul_tests::{TempDir, haul_bin, stderr, stdout, write_file};

/// The file: many checkpoint intervals (1% each), and more than the resume grant's slack.
const SIZE: usize = 256 << 20;
/// The killed run's rate, so that it is still running at half the file.
const SLOW_RATE: &str = "200M";
/// How much of the file the receiver's checkpoint must cover before the kill.
const KILL_AFTER_BYTES: u64 = (SIZE as u64) / 2;
/// Deadline for a checkpoint to cover KILL_AFTER_BYTES (nominally about 5 s).
const CKPT_DEADLINE: Duration = Duration::from_secs(120);
/// Deadline for the server to log the interruption (nominally well under a second).
const NOTICE_DEADLINE: Duration = Duration::from_secs(20);
/// The log line of a transfer cancelled because its client went away.
const INTERRUPTED: &str = "transfer interrupted: the client's SSH channel closed";

/// Bytes from offset 0 that the checkpoint for `name` in `dir` says are on disk and synced.
fn synced_prefix(dir: &Path, name: &str) -> u64 {
    let Ok(bytes) = std::fs::read(dir.join(format!(".{name}.haul-partial.ckpt"))) else {
        return 0;
    };
    let ck = Checkpoint::decode(&bytes).expect("a checkpoint the receiver wrote decodes");
    ck.ranges.first().filter(|r| r.start == 0).map_or(0, |r| r.end)
}

fn wait_for_prefix(dir: &Path, name: &str, client: &mut Child) {
    let deadline = Instant::now() + CKPT_DEADLINE;
    while synced_prefix(dir, name) < KILL_AFTER_BYTES {
        assert!(client.try_wait().unwrap().is_none(), "the client ended before half the file");
        assert!(Instant::now() < deadline, "no checkpoint of half the file in {CKPT_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server logged `needle` at least `count` times (or the deadline passes: fail).
fn wait_for_log(app: &Appliance, needle: &str, count: usize) {
    let deadline = Instant::now() + NOTICE_DEADLINE;
    while app.log_text().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "the gate did not notice the killed client within {NOTICE_DEADLINE:?} \
             (it must not wait for a data-plane timeout): {}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_haul(args: &[&str]) -> Child {
    Command::new(haul_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning haul")
}

fn assert_refused(out: &std::process::Output, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(code), "want {code}: {}", stderr(out));
}

/// The rerun's `--json` summary: it succeeded and moved at most the unfinished part plus one
/// checkpoint interval (plus a block, the unit the receiver keeps).
fn assert_resumed_within_bound(out: &std::process::Output, prefix: u64, what: &str) {
    assert!(out.status.success(), "{what}: the rerun is accepted at once: {}", stderr(out));
    let v: serde_json::Value = serde_json::from_str(stdout(out).trim()).unwrap();
    let moved = v["bytes"].as_u64().unwrap();
    let size = SIZE as u64;
    let bound = size - prefix + checkpoint_interval_bytes(size) + (1 << 20);
    assert!(moved <= bound, "{what}: moved {moved} bytes, more than {bound} (kept {prefix})");
}

fn dir_in(work: &TempDir, name: &str) -> PathBuf {
    let d = work.join(name);
    std::fs::create_dir(&d).unwrap();
    d
}

#[test]
fn killed_get_resumes_from_its_grant_and_a_concurrent_use_is_refused() {
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("resume-get");
    let big = app.storage("alice").join("big.bin");
    write_file(&big, SIZE, 21, 0o644);
    let url = app.mint("alice", "download", "/big.bin", &["--single-use"]);
    let dest = dir_in(&work, "dest");
    let slow = format!("{url}&rate={SLOW_RATE}");
    let mut first = spawn_haul(&["get", &slow, dest.to_str().unwrap()]);
    wait_for_prefix(&dest, "big.bin", &mut first);
    // A second use while the first runs.
    let other = dir_in(&work, "other");
    assert_refused(&haul(&["get", &url, other.to_str().unwrap()], &[]), "in-use");
    first.kill().unwrap();
    let _ = first.wait();
    assert!(!dest.join("big.bin").exists(), "killed before the end");
    wait_for_log(&app, INTERRUPTED, 1);
    assert_eq!(app.udp_sockets(), 0, "the cancelled transfer's UDP sockets are closed");
    // The grant recorded what was delivered: starting over in an empty directory is refused.
    let empty = dir_in(&work, "empty");
    assert_refused(&haul(&["get", &url, empty.to_str().unwrap()], &[]), "resume-below-grant");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing written there");
    // The same URL into the destination with the partial: accepted, resumed, complete.
    let prefix = synced_prefix(&dest, "big.bin");
    let out = haul(&["get", &url, dest.to_str().unwrap(), "--json"], &[]);
    assert_resumed_within_bound(&out, prefix, "get");
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), std::fs::read(&big).unwrap());
    assert_refused(&haul(&["get", &url, other.to_str().unwrap()], &[]), "already-used");
}

#[test]
fn killed_put_resumes_from_the_gates_partial() {
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("resume-put");
    let src = work.join("big.bin");
    write_file(&src, SIZE, 22, 0o644);
    let url = app.mint("alice", "upload", "/", &["--single-use"]);
    let slow = format!("{url}&rate={SLOW_RATE}");
    let mut first = spawn_haul(&["put", &slow, src.to_str().unwrap()]);
    let storage = app.storage("alice");
    wait_for_prefix(&storage, "big.bin", &mut first);
    first.kill().unwrap();
    let _ = first.wait();
    wait_for_log(&app, INTERRUPTED, 1);
    assert_eq!(app.udp_sockets(), 0, "the cancelled transfer's UDP sockets are closed");
    assert!(!storage.join("big.bin").exists(), "no final file from a cut upload");
    let prefix = synced_prefix(&storage, "big.bin");
    let out = haul(&["put", &url, src.to_str().unwrap(), "--json"], &[]);
    assert_resumed_within_bound(&out, prefix, "put");
    assert_eq!(std::fs::read(storage.join("big.bin")).unwrap(), std::fs::read(&src).unwrap());
    assert_refused(&haul(&["put", &url, src.to_str().unwrap()], &[]), "already-used");
}
