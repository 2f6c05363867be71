//! Disk reads and writes on a shard's io_uring (`uring::disk`): data written and read back
//! through the ring round-trips with several operations in flight; the in-flight bound holds;
//! and a write to a full filesystem comes back short or as ENOSPC, never as success (the
//! shard's stager finishes a short write synchronously and reports `DiskError::NoSpace`); and
//! disk operations in steady state allocate nothing (a counting allocator).
//!
//! The full-filesystem test mounts a 1 MiB tmpfs (root only; skipped otherwise) under a fresh
//! directory and unmounts it when done; it is the only test here touching global state.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Driving the ring's disk operations directly needs their `unsafe` contract: every buffer
// below outlives its operation, because each test drains the ring before freeing it.
#![allow(unsafe_code)]

use haul_io::alloc::{CountingAlloc, measure_thread};
use haul_io::udp::{UdpOptions, UdpSocket};
use haul_io::uring::{DiskDone, MAX_DISK_IN_FLIGHT, UringBackend};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// Bytes of one operation in the round-trip test.
const CHUNK: usize = 256 << 10;
/// Operations in the round-trip test (more than fit in flight at once).
const CHUNKS: usize = 48;

fn ring() -> Option<UringBackend> {
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
    match UringBackend::new(socket) {
        Ok(r) if r.has_disk_ops() => Some(r),
        _ => {
            println!("note: no io_uring with Read/Write here; skipped");
            None
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("haul-disk-ring-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits for every pushed operation and returns the completions in the order taken.
fn collect(ring: &mut UringBackend, want: usize) -> Vec<DiskDone> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        while let Some(d) = ring.poll_disk_done() {
            out.push(d);
        }
        if out.len() >= want {
            break;
        }
        ring.wait_disk(Duration::from_millis(100)).unwrap();
    }
    out
}

#[test]
fn ring_writes_and_reads_round_trip_with_many_in_flight() {
    let Some(mut ring) = ring() else { return };
    let dir = temp_dir("rt");
    let path = dir.join("f");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let data: Vec<u8> = (0..CHUNK * CHUNKS).map(|i| (i * 31 % 251) as u8).collect();
    let fd = file.as_raw_fd();
    let mut next = 0;
    let mut done = Vec::new();
    while done.len() < CHUNKS {
        while next < CHUNKS && ring.disk_has_room() {
            let at = next * CHUNK;
            // SAFETY: `data` and `file` outlive the ring's use (collected below).
            unsafe {
                ring.push_disk_write(fd, data[at..].as_ptr(), CHUNK as u32, at as u64, next as u64)
            }
            .unwrap();
            next += 1;
        }
        assert!(ring.disk_busy() <= MAX_DISK_IN_FLIGHT);
        done.extend(collect(&mut ring, 1));
    }
    assert!(done.iter().all(|d| d.result == CHUNK as i32), "{done:?}");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // Read it back through the ring into a fresh buffer.
    let mut back = vec![0u8; data.len()];
    let mut next = 0;
    let mut reads = 0;
    while reads < CHUNKS {
        while next < CHUNKS && ring.disk_has_room() {
            let at = next * CHUNK;
            // SAFETY: `back` and `file` outlive the ring's use (collected below).
            unsafe { ring.push_disk_read(fd, back[at..].as_mut_ptr(), CHUNK as u32, at as u64, 0) }
                .unwrap();
            next += 1;
        }
        let got = collect(&mut ring, 1);
        assert!(got.iter().all(|d| d.result == CHUNK as i32), "{got:?}");
        reads += got.len();
    }
    assert_eq!(back, data);
    assert!(ring.disk_ops_submitted() >= 2 * CHUNKS as u64);
    assert_eq!(ring.drain_disk(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ring_refuses_more_than_its_in_flight_bound() {
    let Some(mut ring) = ring() else { return };
    let dir = temp_dir("bound");
    let file = std::fs::File::create(dir.join("f")).unwrap();
    let buf = vec![7u8; 4096];
    for i in 0..MAX_DISK_IN_FLIGHT {
        // SAFETY: `buf` and `file` outlive the ring's use (drained below).
        unsafe { ring.push_disk_write(file.as_raw_fd(), buf.as_ptr(), 4096, 4096 * i as u64, 0) }
            .unwrap();
    }
    assert!(!ring.disk_has_room());
    // SAFETY: refused before anything is queued.
    let over = unsafe { ring.push_disk_write(file.as_raw_fd(), buf.as_ptr(), 4096, 0, 0) };
    assert!(over.is_err(), "the bound holds");
    assert_eq!(collect(&mut ring, MAX_DISK_IN_FLIGHT).len(), MAX_DISK_IN_FLIGHT);
    assert!(ring.disk_has_room());
    let _ = std::fs::remove_dir_all(&dir);
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Option<Tmpfs> {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status();
        st.ok().filter(|s| s.success()).map(|_| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn ring_write_to_a_full_filesystem_is_short_or_enospc() {
    let dir = temp_dir("full");
    let Some(fs) = Tmpfs::mount(&dir, 1 << 20) else {
        println!("note: cannot mount a tmpfs here (not root?); skipped");
        return;
    };
    let Some(mut ring) = ring() else { return };
    let file = std::fs::File::create(fs.0.join("f")).unwrap();
    let buf = vec![1u8; 512 << 10];
    for i in 0..4u64 {
        // SAFETY: `buf` and `file` outlive the ring's use (collected below).
        unsafe {
            ring.push_disk_write(
                file.as_raw_fd(),
                buf.as_ptr(),
                buf.len() as u32,
                i * (512 << 10),
                i,
            )
        }
        .unwrap();
    }
    let done = collect(&mut ring, 4);
    assert_eq!(done.len(), 4, "every write completes: {done:?}");
    let written: i64 = done.iter().map(|d| i64::from(d.result.max(0))).sum();
    assert!(written <= 1 << 20, "no more than the filesystem holds: {done:?}");
    assert!(
        done.iter().any(|d| d.result == -libc::ENOSPC || (0..512 << 10).contains(&d.result)),
        "the overflow is reported as ENOSPC or a short write: {done:?}"
    );
    drop(file);
    drop(ring);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ring_disk_operations_allocate_nothing_in_steady_state() {
    let Some(mut ring) = ring() else { return };
    let dir = temp_dir("alloc");
    let file = std::fs::File::create(dir.join("f")).unwrap();
    let buf = vec![5u8; 64 << 10];
    let cycle = |ring: &mut UringBackend, round: u64| {
        for i in 0..MAX_DISK_IN_FLIGHT as u64 {
            let at = (i * buf.len() as u64) % (8 << 20);
            // SAFETY: `buf` and `file` outlive the ring's use (every completion is taken below).
            unsafe {
                ring.push_disk_write(file.as_raw_fd(), buf.as_ptr(), buf.len() as u32, at, round)
            }
            .unwrap();
        }
        let mut taken = 0;
        while taken < MAX_DISK_IN_FLIGHT {
            ring.wait_disk(Duration::from_millis(100)).unwrap();
            while let Some(d) = ring.poll_disk_done() {
                assert_eq!(d.result, buf.len() as i32);
                taken += 1;
            }
        }
    };
    for round in 0..4 {
        cycle(&mut ring, round);
    }
    let ((), stats) = measure_thread(|| {
        for round in 0..200 {
            cycle(&mut ring, round);
        }
    });
    assert_eq!(stats.allocations, 0, "allocations per disk operation: {stats:?}");
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}
