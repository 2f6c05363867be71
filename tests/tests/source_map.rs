//! The sender reads large sources through a memory map (issue 3, sender CPU per GiB;
//! engine/io `transfer::disk::SourceMaps`, guarded by `haul_io::mapped`).
//!
//! - With `HAUL_SOURCE_MAP=tmpfs`, a large source on tmpfs is sent from its map
//!   (`io.disk_mapped_bytes` in `--json`), a small one beside it through reads, and both
//!   arrive byte-identical with 1 and 2 shards; by default (the map is off: it did not pay,
//!   docs/DATAPLANE.md) and with the portable backend nothing is mapped.
//! - A sparse source is not mapped (a shared map of a tmpfs hole would allocate its pages).
//! - A source truncated while it is being sent ends the transfer with an error naming the
//!   file ("shrank during the transfer"), an exit code and no crash (no signal), and the
//!   receiver keeps its partial for a resume. The truncation comes once the receiver has
//!   written its first checkpoint (observed, not timed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::checkpoint::Checkpoint;
use haul_tests::{
    Receiver, TRANSFER_TIMEOUT, TempDir, assert_copied, haul_bin, keygen, stderr, stdout, wait,
    write_file,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A source the sender maps (at least its 4 MiB threshold, and not a whole number of blocks).
const LARGE: usize = (24 << 20) + 4321;
/// A source it reads.
const SMALL: usize = 300_000;
/// Turns the sender's maps on for sources on tmpfs (`TempDir` is under /dev/shm).
const MAP: (&str, &str) = ("HAUL_SOURCE_MAP", "tmpfs");

/// Sends `srcs` into `dest` with `--json` and the sender's `env`; returns the sender's
/// summary after checking both ends succeeded and the files arrived identical.
fn transfer(
    dir: &TempDir,
    srcs: &[PathBuf],
    flags: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let key = match dir.join("key") {
        k if k.exists() => k,
        _ => keygen(dir, "key"),
    };
    let dest = dir.join("dst");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, flags);
    let mut cmd = Command::new(haul_bin());
    cmd.args(["send", "--to", &recv.addr, "--key-file"]).arg(&key).args(flags).arg("--json");
    // Only what the test asks for: not a HAUL_SOURCE_MAP the test run inherited.
    cmd.args(srcs).env_remove(MAP.0).envs(env.iter().copied());
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let out = wait(child.unwrap(), TRANSFER_TIMEOUT, "haul send");
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    assert!(r.status.success(), "recv failed: {}", stderr(&r));
    assert_copied(srcs, &dest);
    serde_json::from_str(stdout(&out).trim()).expect("one JSON line")
}

fn mapped_bytes(v: &serde_json::Value) -> u64 {
    v["io"]["disk_mapped_bytes"].as_u64().expect("io.disk_mapped_bytes")
}

#[test]
fn a_large_tmpfs_source_is_sent_from_its_map() {
    let dir = TempDir::new("srcmap");
    let (large, small) = (dir.join("src/large.bin"), dir.join("src/small.bin"));
    write_file(&large, LARGE, 71, 0o644);
    write_file(&small, SMALL, 72, 0o644);
    let srcs = [large, small];
    for shards in ["1", "2"] {
        let v = transfer(&dir, &srcs, &["--shards", shards], &[MAP]);
        let mapped = mapped_bytes(&v);
        // Every byte of the large file, once (lossless loopback: no resend); none of the small.
        assert!(mapped >= LARGE as u64, "{shards} shards: mapped {mapped}: {v}");
        assert!(mapped < (LARGE + SMALL) as u64, "{shards} shards: the small file is read: {v}");
    }
    let v = transfer(&dir, &srcs, &[], &[]);
    assert_eq!(mapped_bytes(&v), 0, "off by default: {v}");
    let v = transfer(&dir, &srcs, &["--backend", "portable"], &[MAP]);
    assert_eq!(mapped_bytes(&v), 0, "the portable backend keeps pread: {v}");
}

#[test]
fn a_sparse_source_is_read_not_mapped() {
    let dir = TempDir::new("srcmap-sparse");
    let src = dir.join("src/sparse.bin");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data in the middle", 9 << 20).unwrap();
    drop(f);
    let v = transfer(&dir, &[src], &[], &[MAP]);
    assert_eq!(mapped_bytes(&v), 0, "{v}");
}

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
    const SIZE: usize = 256 << 20;
    let dir = TempDir::new("srcmap-trunc");
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
        .arg(&src)
        .env(MAP.0, MAP.1)
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
