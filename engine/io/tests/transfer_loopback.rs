//! The transfer runtime end to end in one process over loopback: real sockets, real files,
//! real threads. Byte-identical files for 1, 2 and 4 shards (several shards on these 2 cores),
//! both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::backend::BackendKind;
use haul_io::transfer::{
    Keys, RecvJob, RecvOptions, SendJob, bind_shards, prepare_receive, run_receiver, run_sender,
};
use haul_proto::crypto::{SessionSecret, SuiteId};
use haul_proto::rate::RateLimits;
use haul_proto::session::{FileEntry, Manifest, Outcome, Role, SessionParams};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tempdir(tag: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("haul-io-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_file(path: &Path, size: usize, seed: u64) {
    let mut rng = haul_proto::rng::Rng::new(seed);
    let mut v = vec![0u8; size];
    rng.fill_bytes(&mut v);
    std::fs::write(path, v).unwrap();
}

fn transfer(shards: u8, backend: BackendKind, sizes: &[usize], tag: &str) {
    transfer_blocks(shards, backend, sizes, 20, tag);
}

fn transfer_blocks(shards: u8, backend: BackendKind, sizes: &[usize], block_log2: u8, tag: &str) {
    let src = tempdir(&format!("{tag}-src"));
    let dst = tempdir(&format!("{tag}-dst"));
    let mut files = Vec::new();
    let mut sources = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let p = src.join(format!("f{i}"));
        write_file(&p, size, i as u64 + 1);
        files.push(FileEntry {
            name: format!("dir/f{i}"),
            size: size as u64,
            mode: 0o640,
            mtime_ns: 1_600_000_000_000_000_000,
        });
        sources.push(p);
    }
    let manifest = Arc::new(Manifest::new(files, block_log2).unwrap());
    let mut params = SessionParams::new(42, SuiteId::Aes128CfbCmac);
    params.shards = shards;
    params.rate = RateLimits { min_bps: 0, target_bps: 2_000_000_000 };
    params.idle_timeout = haul_proto::time::Duration::from_secs(20);
    let secret = [7u8; 32];
    let keys = |role| Keys {
        secret: SessionSecret(secret),
        client_random: [1; 32],
        server_random: [2; 32],
        role,
    };
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rsock = bind_shards(lo, shards, Some(backend)).unwrap();
    let ssock = bind_shards(lo, shards, Some(backend)).unwrap();
    let peers = rsock.local_addrs();
    let options = RecvOptions::default();
    let resume = prepare_receive(&dst, &manifest, &options).unwrap();
    let rjob = RecvJob {
        params: params.clone(),
        keys: keys(Role::Server),
        manifest: manifest.clone(),
        dest: dst.clone(),
        options,
        sockets: rsock,
        resume: resume.clone(),
        pin_cores: false,
    };
    let receiver = std::thread::spawn(move || run_receiver(rjob, None));
    let sjob = SendJob {
        params,
        keys: keys(Role::Client),
        manifest: manifest.clone(),
        sources: sources.clone(),
        sockets: ssock,
        peers,
        resume,
        pin_cores: false,
    };
    let sent = run_sender(sjob, None).unwrap();
    let received = receiver.join().unwrap().unwrap();
    assert_eq!(sent.outcome, Outcome::Complete, "sender {tag}");
    assert_eq!(received.outcome, Outcome::Complete, "receiver {tag}");
    for (i, s) in sources.iter().enumerate() {
        let got = std::fs::read(dst.join(format!("dir/f{i}"))).unwrap();
        let want = std::fs::read(s).unwrap();
        assert!(got == want, "file {i} differs ({tag})");
        assert_eq!(received.files[i].blake3, *blake3::hash(&want).as_bytes());
    }
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

#[test]
fn one_two_and_four_shards_deliver_identical_files() {
    for shards in [1u8, 2, 4] {
        transfer(shards, BackendKind::Uring, &[0, 1, 3 << 20, 100_000], &format!("uring{shards}"));
    }
}

#[test]
fn portable_backend_delivers_identical_files() {
    transfer(2, BackendKind::Portable, &[5 << 20, 777], "portable");
}

/// The receiver leaves a small fresh file's partial to the one shard that writes it (created
/// at its first open, O_EXCL) only when the file is one block: with 4 KiB blocks, files of
/// 1-64 KiB span both shards and must be created up front, or the second shard's exclusive
/// create would fail. Files in the new directory and a large one alongside.
#[test]
fn small_files_spanning_shards_arrive_identical() {
    let sizes: Vec<usize> = (0..40).map(|i| 1 + i * 1637).chain([2 << 20, 4096, 0]).collect();
    transfer_blocks(2, BackendKind::Uring, &sizes, 12, "span2");
    transfer_blocks(2, BackendKind::Uring, &sizes, 20, "whole2");
}
