//! Registered (fixed) buffers for disk I/O (`uring::fixed`, docs/DATAPLANE.md "Disk"):
//! - on the ring itself, reads and writes inside a registered region use `ReadFixed`/
//!   `WriteFixed` (counted in `IoStats::disk_fixed_ops`) and round-trip the bytes; a buffer
//!   outside every region uses the plain opcodes;
//! - whole transfers (1 and 3 shards, all threads on one core; tmpfs and, where the
//!   filesystem allows it, O_DIRECT destinations) use registered buffers at both ends for
//!   the sender's reads and the receiver's staging writes, and deliver identical files;
//! - when the kernel refuses the registration (a child process without CAP_IPC_LOCK and with
//!   RLIMIT_MEMLOCK at 768 KiB), the transfer still completes, through the ring with the
//!   plain opcodes, and the refusal is counted with its errno.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Driving the ring directly and setting rlimits/capabilities in the child need `unsafe`;
// every buffer below outlives its operations (each test drains the ring before freeing).
#![allow(unsafe_code)]

mod transfers;

use haul_io::backend::IoStats;
use haul_io::udp::{UdpOptions, UdpSocket};
use haul_io::uring::{FixedState, UringBackend};
use std::os::fd::AsRawFd;
use std::time::Duration;
use transfers::{dir_in, pin_to_one_core, shm};

/// Set in the child process of the refusal test.
const CHILD_ENV: &str = "HAUL_TEST_REGBUF_CHILD";
/// RLIMIT_MEMLOCK in that child: room for the rings themselves (without CAP_IPC_LOCK their
/// queues count too, about 70 KiB each, four here and one being freed), below one 1 MiB
/// staging buffer or read slot.
const CHILD_MEMLOCK_BYTES: u64 = 768 << 10;
/// Bytes per transferred file: several blocks per shard.
const FILE_BYTES: usize = 12 << 20;

fn ring() -> Option<UringBackend> {
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
    match UringBackend::new(socket) {
        Ok(r) if r.has_disk_ops() && r.features().has_fixed_rw => Some(r),
        _ => {
            println!("note: no io_uring with Read/Write and their fixed forms here; skipped");
            None
        }
    }
}

/// Pushes one operation and waits for its completion; returns its result.
fn one_op(ring: &mut UringBackend, push: impl FnOnce(&mut UringBackend)) -> i32 {
    push(ring);
    for _ in 0..1000 {
        if let Some(d) = ring.poll_disk_done() {
            return d.result;
        }
        ring.wait_disk(Duration::from_millis(100)).unwrap();
    }
    panic!("no disk completion within 100 s");
}

#[test]
fn fixed_ops_round_trip_and_buffers_outside_regions_use_plain_ops() {
    let Some(mut ring) = ring() else { return };
    let dir = dir_in(&std::env::temp_dir(), "regbuf-ring");
    let path = dir.join("f");
    std::fs::write(&path, b"").unwrap();
    let file = std::fs::File::options().read(true).write(true).open(&path).unwrap();
    let fd = file.as_raw_fd();
    let mut src: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 131 % 251) as u8).collect();
    let mut back = vec![0u8; 1 << 20];
    let plain = vec![9u8; 4096];
    // SAFETY: both vectors live until after `release_fixed` below and are never resized.
    let registered = unsafe {
        ring.register_fixed(src.as_mut_ptr(), src.len())
            && ring.register_fixed(back.as_mut_ptr(), back.len())
    };
    assert_eq!(ring.fixed_state(), FixedState::Registered, "registration refused here");
    assert!(registered);
    let len = src.len() as u32;
    // SAFETY: `src`, `back`, `plain` and `file` outlive each operation (awaited in `one_op`).
    let w =
        one_op(&mut ring, |r| unsafe { r.push_disk_write(fd, src.as_ptr(), len, 0, 1) }.unwrap());
    assert_eq!(w, len as i32);
    let rd = one_op(&mut ring, |r| {
        unsafe { r.push_disk_read(fd, back[4096..].as_mut_ptr(), 8192, 4096, 2) }.unwrap();
    });
    assert_eq!(rd, 8192);
    assert_eq!(back[4096..12288], src[4096..12288]);
    assert_eq!(ring.stats().disk_fixed_ops, 2, "both operations used their registered buffer");
    assert_eq!(ring.stats().disk_fixed_bytes, 2 << 20);
    let p = one_op(&mut ring, |r| {
        unsafe { r.push_disk_write(fd, plain.as_ptr(), 4096, 0, 3) }.unwrap()
    });
    assert_eq!(p, 4096);
    assert_eq!(ring.stats().disk_fixed_ops, 2, "a buffer outside every region is plain");
    assert_eq!(ring.disk_ops_submitted(), 3);
    let mut want = src.clone();
    want[..4096].copy_from_slice(&plain);
    assert!(std::fs::read(&path).unwrap() == want);
    ring.release_fixed();
    assert_eq!(ring.fixed_state(), FixedState::Unused);
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_fixed_used(io: &IoStats, end: &str) {
    assert_eq!(
        io.disk_fixed_refused, 0,
        "{end}: registration refused (errno {})",
        io.disk_fixed_errno
    );
    assert!(io.disk_fixed_ops > 0, "{end}: no registered-buffer operation: {io:?}");
    assert!(io.disk_fixed_ops <= io.disk_ring_ops, "{end}: {io:?}");
    assert!(io.disk_fixed_bytes >= 1 << 20, "{end}: {io:?}");
}

#[test]
fn transfers_use_registered_buffers_with_one_and_several_shards_on_one_core() {
    if ring().is_none() || std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // Threads inherit the affinity: every shard of both ends shares CPU 0.
    let t = std::thread::spawn(|| {
        pin_to_one_core();
        for (shards, base, tag) in
            [(1u8, shm(), "shm1"), (3, shm(), "shm3"), (2, std::env::temp_dir(), "tmp2")]
        {
            let (src, dst) = (
                dir_in(&std::env::temp_dir(), &format!("regbuf-{tag}-src")),
                dir_in(&base, &format!("regbuf-{tag}-dst")),
            );
            let (sent, received) =
                transfers::transfer(shards, &src, &dst, u64::from(shards), FILE_BYTES);
            assert_fixed_used(&sent.io, &format!("sender, {shards} shards"));
            assert_fixed_used(&received.io, &format!("receiver, {shards} shards"));
            println!(
                "{tag}: {shards} shards: sender {} of {} disk ops fixed, receiver {} of {} ({} O_DIRECT)",
                sent.io.disk_fixed_ops,
                sent.io.disk_ring_ops,
                received.io.disk_fixed_ops,
                received.io.disk_ring_ops,
                received.io.disk_direct_ops
            );
            let _ = std::fs::remove_dir_all(&src);
            let _ = std::fs::remove_dir_all(&dst);
        }
    });
    t.join().expect("transfers on one core");
}

/// The child's side: registration is refused, the transfer completes anyway.
fn refused_registration_in_child() {
    let src = dir_in(&std::env::temp_dir(), "regbuf-child-src");
    let dst = dir_in(&shm(), "regbuf-child-dst");
    let (sent, received) = transfers::transfer(2, &src, &dst, 99, FILE_BYTES);
    for (io, end) in [(&sent.io, "sender"), (&received.io, "receiver")] {
        assert!(io.disk_fixed_refused > 0, "{end}: registration was not refused: {io:?}");
        assert_eq!(io.disk_fixed_errno, libc::ENOMEM, "{end}: {io:?}");
        assert_eq!(io.disk_fixed_ops, 0, "{end}: {io:?}");
        assert!(io.disk_ring_ops > 0, "{end}: the ring still carries the disk I/O: {io:?}");
    }
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

#[test]
fn refused_registration_falls_back_to_plain_ring_io() {
    if ring().is_none() {
        return;
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        refused_registration_in_child();
        return;
    }
    use std::os::unix::process::CommandExt;
    let name = "refused_registration_falls_back_to_plain_ring_io";
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD_ENV, "1");
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, setrlimit).
    unsafe {
        cmd.pre_exec(|| {
            // Root keeps CAP_IPC_LOCK through exec unless the bounding set loses it; the
            // capability would exempt the ring from RLIMIT_MEMLOCK. (Not root: nothing to drop.)
            let _ = libc::prctl(libc::PR_CAPBSET_DROP, 14, 0, 0, 0);
            let lim = libc::rlimit { rlim_cur: CHILD_MEMLOCK_BYTES, rlim_max: CHILD_MEMLOCK_BYTES };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
    assert!(
        stderr.contains("refused to register") && stderr.contains("ulimit -l"),
        "the refusal is said with its remedy:\n{stderr}"
    );
    println!("child stderr: {stderr}");
}
