//! A source that shrinks while it is being sent (issue 3). The sender reads its sources
//! through its shard's io_uring, or with pread under the portable backend; a read that finds
//! the end of the file early fails the transfer for that file.
//!
//! The transfer ends with an error naming the file ("shrank during the transfer"), an exit
//! code and no crash (no signal), and the receiver keeps its partial for a resume. The
//! truncation comes once the receiver has written its first checkpoint (observed, not timed).
//! Until commit fce48b8 this case lived in `source_map.rs`, beside the sender's memory map of
//! its sources, since removed (docs/DATAPLANE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::checkpoint::Checkpoint;
use haul_tests::{Receiver, TempDir, haul_bin, keygen, stderr, wait, write_file};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes from offset 0 the receiver's checkpoint says are written and synced.
fn synced_prefix(dest: &Path, name: &str) -> u64 {
    let Ok(bytes) = std::fs::read(dest.join(format!(".{name}.haul-partial.ckpt"))) else {
        return 0;
    };
    let ck = Checkpoint::decode(&bytes).expect("a checkpoint the receiver wrote decodes");
    ck.ranges.first().filter(|r| r.start == 0).map_or(0, |r| r.end)
}

#[test]
fn a_source_truncated_mid_transfer_fails_naming_it_and_the_partial_stays() {
    truncated_mid_transfer("src-trunc", &[]);
}

#[test]
fn a_source_truncated_under_the_portable_backend_fails_the_same_way() {
    truncated_mid_transfer("src-trunc-portable", &["--backend", "portable"]);
}

/// Sends a 256 MiB source with the sender's `flags`, truncates it to 1 MiB once the receiver
/// has checkpointed, and checks both ends' outcome.
fn truncated_mid_transfer(tag: &str, flags: &[&str]) {
    const SIZE: usize = 256 << 20;
    let dir = TempDir::new(tag);
    let src = dir.join("src/big.bin");
    write_file(&src, SIZE, 73, 0o644);
    let key = keygen(&dir, "key");
    let dest = dir.join("dst");
    std::fs::create_dir_all(&dest).unwrap();
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
    let sender = Command::new(haul_bin())
        .args(["send", "--to", &recv.addr, "--key-file"])
        .arg(&key)
        .args(["--rate", "300M", "--policy", "fixed"])
        .args(flags)
        .arg(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while synced_prefix(&dest, "big.bin") == 0 {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    let out = wait(sender, Duration::from_secs(120), "haul send");
    let r = recv.finish(Duration::from_secs(120));
    let err = stderr(&out);
    // An error and an exit code, not a signal.
    assert!(out.status.code().is_some_and(|c| c != 0), "sender: {:?} {err}", out.status);
    assert!(err.contains("shrank during the transfer"), "{err}");
    assert!(err.contains(&src.display().to_string()), "names the file: {err}");
    assert!(!r.status.success(), "the receiver does not complete: {}", stderr(&r));
    assert!(r.status.code().is_some(), "the receiver exits, not killed: {:?}", r.status);
    assert!(dest.join(".big.bin.haul-partial").exists(), "the partial stays for the resume");
    assert!(!dest.join("big.bin").exists(), "nothing is renamed into place");
}
