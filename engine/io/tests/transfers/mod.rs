//! Shared set-up of the whole-transfer tests (`transfer_loopback`, `registered_buffers`,
//! `disk_buffers`): one in-process transfer over loopback ([`run_transfer`]: any files, shard
//! count, backend and block size; [`transfer`]: one random file on io_uring shards), random
//! source files, temporary directories, pinning to one core.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use haul_io::backend::BackendKind;
use haul_io::transfer::{
    Keys, RecvJob, RecvOptions, SendJob, TransferReport, bind_shards, prepare_receive,
    run_receiver, run_sender,
};
use haul_proto::crypto::{SessionSecret, SuiteId};
use haul_proto::rate::RateLimits;
use haul_proto::session::{FileEntry, Manifest, Outcome, Role, SessionParams};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fresh directory `haul-<tag>-<pid>` under `base`.
pub fn dir_in(base: &Path, tag: &str) -> PathBuf {
    let d = base.join(format!("haul-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// /dev/shm (tmpfs), or the temporary directory where it is missing.
pub fn shm() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// How a transfer runs: shards, backend and block size.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub shards: u8,
    pub backend: BackendKind,
    /// log2 of the block size (20: 1 MiB blocks).
    pub block_log2: u8,
}

impl Setup {
    /// `shards` io_uring shards, 1 MiB blocks.
    pub fn uring(shards: u8) -> Setup {
        Setup { shards, backend: BackendKind::Uring, block_log2: 20 }
    }
}

/// One file of a transfer: where the sender reads it and what the manifest says of it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub entry: FileEntry,
}

/// Writes `size` pseudo-random bytes (from `seed`) to `path` and returns them.
pub fn write_random(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = haul_proto::rng::Rng::new(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

/// One transfer of one file of `bytes` random bytes with `shards` shards from `src_dir` to
/// `dst_dir`; checks the copy and returns (sender, receiver) reports. The source is left in
/// the page cache as written.
pub fn transfer(
    shards: u8,
    src_dir: &Path,
    dst_dir: &Path,
    seed: u64,
    bytes: usize,
) -> (TransferReport, TransferReport) {
    transfer_with(shards, src_dir, dst_dir, seed, bytes, false)
}

/// [`transfer`], with the source written to disk and dropped from the page cache first if
/// `cold` (as a file that has not been read lately is).
pub fn transfer_with(
    shards: u8,
    src_dir: &Path,
    dst_dir: &Path,
    seed: u64,
    bytes: usize,
    cold: bool,
) -> (TransferReport, TransferReport) {
    let src = src_dir.join("f");
    let data = write_random(&src, bytes, seed);
    if cold {
        evict(&src);
    }
    let entry = FileEntry { name: "f".into(), size: bytes as u64, mode: 0o600, mtime_ns: 0 };
    let reports = run_transfer(Setup::uring(shards), &[Source { path: src, entry }], dst_dir);
    assert!(std::fs::read(dst_dir.join("f")).unwrap() == data, "the copy differs");
    reports
}

/// One in-process transfer of `sources` into `dst_dir` over loopback, both ends as `setup`
/// says; asserts both ends complete and returns (sender, receiver) reports. The caller
/// checks the copies.
pub fn run_transfer(
    setup: Setup,
    sources: &[Source],
    dst_dir: &Path,
) -> (TransferReport, TransferReport) {
    let entries = sources.iter().map(|s| s.entry.clone()).collect();
    let manifest = Arc::new(Manifest::new(entries, setup.block_log2).unwrap());
    let mut params = SessionParams::new(7, SuiteId::Aes128CfbCmac);
    params.shards = setup.shards;
    params.rate = RateLimits { min_bps: 0, target_bps: 2_000_000_000 };
    params.idle_timeout = haul_proto::time::Duration::from_secs(20);
    let keys = |role| Keys {
        secret: SessionSecret([3u8; 32]),
        client_random: [4; 32],
        server_random: [5; 32],
        role,
    };
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rsock = bind_shards(lo, setup.shards, Some(setup.backend)).unwrap();
    let ssock = bind_shards(lo, setup.shards, Some(setup.backend)).unwrap();
    let peers = rsock.local_addrs();
    let options = RecvOptions::default();
    let resume = prepare_receive(dst_dir, &manifest, &options).unwrap();
    let rjob = RecvJob {
        params: params.clone(),
        keys: keys(Role::Server),
        manifest: manifest.clone(),
        dest: dst_dir.to_path_buf(),
        options,
        sockets: rsock,
        resume: resume.clone(),
        pin_cores: false,
    };
    let receiver = std::thread::spawn(move || run_receiver(rjob, None));
    let sjob = SendJob {
        params,
        keys: keys(Role::Client),
        manifest,
        sources: sources.iter().map(|s| s.path.clone()).collect(),
        sockets: ssock,
        peers,
        resume,
        pin_cores: false,
    };
    let sent = run_sender(sjob, None).unwrap();
    let received = receiver.join().unwrap().unwrap();
    let what = format!("{setup:?} into {}", dst_dir.display());
    assert_eq!(sent.outcome, Outcome::Complete, "sender, {what}");
    assert_eq!(received.outcome, Outcome::Complete, "receiver, {what}");
    (sent, received)
}

/// Writes `path`'s dirty pages to disk and drops its pages from the page cache.
#[allow(unsafe_code)] // one libc call, below; the includers need no crate-wide allow
pub fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: posix_fadvise reads only its integer arguments; the descriptor is open.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED)");
}

/// Pins the calling thread (and the threads it spawns from now on) to CPU 0.
#[allow(unsafe_code)] // one libc call, below; the includers need no crate-wide allow
pub fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity");
    }
}
