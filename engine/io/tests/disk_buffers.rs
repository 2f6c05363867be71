//! The shards' disk buffers and the sender's O_DIRECT reads (docs/DATAPLANE.md, "Disk
//! buffers" and "Disk"):
//! - by default (no reserved huge pages, this machine's default) the receiver's staging
//!   arenas and both ends' read slots are THP-advised mappings, reported as `thp`;
//! - with `vm.nr_hugepages` raised for the test (global state: the tests here run one at a
//!   time and the old value is put back, also on failure; skipped, with the reason printed,
//!   where the kernel cannot reserve the pages or we are not root) they are `hugetlb`, and
//!   the file arrives identical;
//! - a source on an ext4 loop device, not in the page cache, with 1 and 3 shards pinned to one
//!   core, is read with O_DIRECT: every first-pass read goes through the O_DIRECT twin (the
//!   counters), none is refused, and the copy of a file whose size is not a multiple of 4 KiB
//!   is identical; the same source still in the page cache (just written: dirty or cached) is
//!   read buffered, and counted as such.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// `transfers::pin_to_one_core` calls sched_setaffinity.
#![allow(unsafe_code)]

mod transfers;

use haul_io::buf::Backing;
use haul_io::transfer::TransferReport;
use haul_io::udp::{UdpOptions, UdpSocket};
use haul_io::uring::UringBackend;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use transfers::{dir_in, pin_to_one_core, shm, transfer, transfer_with};

/// The tests change or depend on global state (huge page reservation, a mount): one at a time.
static GLOBAL: Mutex<()> = Mutex::new(());
/// Huge pages reserved for the hugetlb test: both ends of a one-shard transfer need about 20
/// (receive pools, 16 read slots, 8 arenas), with room to spare.
const HUGE_PAGES: u64 = 64;
/// The source of the O_DIRECT test: several blocks per shard and a tail that is not a
/// multiple of 4 KiB.
const ODD_FILE_BYTES: usize = (12 << 20) + 1234;
/// The sender reads a first-pass block in pieces of 256 KiB (`READ_PIECE`, engine/proto's
/// sender): one read per piece.
const READ_PIECE_BYTES: usize = 256 << 10;
/// The ext4 image's size (sparse).
const IMAGE_BYTES: u64 = 96 << 20;

fn ring_ok() -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
    match UringBackend::new(socket) {
        Ok(r) if r.has_disk_ops() => true,
        _ => {
            println!("note: no io_uring with Read/Write here; skipped");
            false
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    haul_io::buf::meminfo_value(&text, key).unwrap_or(0)
}

/// One transfer from tmpfs to tmpfs; the backings both ends report.
fn tmpfs_transfer(tag: &str, seed: u64) -> (TransferReport, TransferReport) {
    let (src, dst) =
        (dir_in(&shm(), &format!("dbuf-{tag}-src")), dir_in(&shm(), &format!("dbuf-{tag}-dst")));
    let reports = transfer(1, &src, &dst, seed, 12 << 20);
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
    for (io, end) in [(&reports.0.io, "sender"), (&reports.1.io, "receiver")] {
        println!(
            "{tag}: {end}: disk buffers {:?}, network buffers {:?}",
            io.disk_buffers_backing, io.net_buffers_backing
        );
    }
    reports
}

#[test]
fn disk_buffers_are_thp_backed_by_default() {
    let _g = lock();
    if !ring_ok() {
        return;
    }
    if meminfo("HugePages_Free:") > 0 {
        println!(
            "note: reserved huge pages are free on this host; the default path is not thp here; skipped"
        );
        return;
    }
    let (sent, received) = tmpfs_transfer("thp", 1);
    let thp = Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
    let want = if thp { Backing::Thp } else { Backing::Normal };
    assert_eq!(sent.io.disk_buffers_backing, Some(want), "sender: {:?}", sent.io);
    assert_eq!(received.io.disk_buffers_backing, Some(want), "receiver: {:?}", received.io);
}

/// A test directory outside the loop mount (in /dev/shm), removed when the test ends, passed or
/// not.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vm.nr_hugepages` raised by [`HUGE_PAGES`]; the old value is written back on drop.
struct HugePageReservation {
    old: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePageReservation {
    /// Reserves the pages, or says why it cannot (then nothing is left changed).
    fn new() -> Result<HugePageReservation, String> {
        if !is_root() {
            return Err("not root: cannot raise vm.nr_hugepages".into());
        }
        let old: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?;
        let free_before = meminfo("HugePages_Free:");
        let r = HugePageReservation { old };
        std::fs::write(NR_HUGEPAGES, format!("{}", old + HUGE_PAGES))
            .map_err(|e| format!("writing {NR_HUGEPAGES}: {e}"))?;
        let free = meminfo("HugePages_Free:");
        if free < free_before + HUGE_PAGES {
            // `r` drops here and puts the old value back.
            return Err(format!(
                "the kernel reserved only {} of {HUGE_PAGES} huge pages (fragmented memory?)",
                free.saturating_sub(free_before)
            ));
        }
        Ok(r)
    }
}

impl Drop for HugePageReservation {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, format!("{}", self.old));
    }
}

#[test]
fn disk_buffers_are_hugetlb_backed_when_huge_pages_are_reserved() {
    let _g = lock();
    if !ring_ok() {
        return;
    }
    let reservation = match HugePageReservation::new() {
        Ok(r) => r,
        Err(why) => {
            println!("note: {why}; skipped");
            return;
        }
    };
    let (sent, received) = tmpfs_transfer("hugetlb", 2);
    drop(reservation);
    assert_eq!(sent.io.disk_buffers_backing, Some(Backing::HugeTlb), "sender: {:?}", sent.io);
    assert_eq!(
        received.io.disk_buffers_backing,
        Some(Backing::HugeTlb),
        "receiver: {:?}",
        received.io
    );
    assert_eq!(sent.io.net_buffers_backing, Some(Backing::HugeTlb), "sender: {:?}", sent.io);
}

/// An ext4 filesystem on a loop device, mounted for the test; unmounted (the loop device
/// detaches with it) and its image removed on drop.
struct Ext4Loop {
    image: PathBuf,
    mount: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Ext4Loop {
    fn new(tag: &str) -> Result<Ext4Loop, String> {
        if !is_root() {
            return Err("not root: cannot mount a loop device".into());
        }
        let base = std::env::temp_dir();
        let image = base.join(format!("haul-{tag}-{}.img", std::process::id()));
        let mount = dir_in(&base, &format!("{tag}-mnt"));
        // From here on, dropping `fs` (an error below) cleans up what was made.
        let fs = Ext4Loop { image, mount };
        let f = std::fs::File::create(&fs.image).map_err(|e| e.to_string())?;
        f.set_len(IMAGE_BYTES).map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&fs.image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&fs.image)
            .arg(&fs.mount))?;
        Ok(fs)
    }
}

impl Drop for Ext4Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).output();
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn sources_on_ext4_are_read_with_o_direct_with_one_and_three_shards_on_one_core() {
    let _g = lock();
    if !ring_ok() {
        return;
    }
    let fs = match Ext4Loop::new("dbuf-ext4") {
        Ok(fs) => fs,
        Err(why) => {
            println!("note: {why}; skipped");
            return;
        }
    };
    let mount = fs.mount.clone();
    let t = std::thread::spawn(move || {
        pin_to_one_core();
        for shards in [1u8, 3] {
            let src = dir_in(&mount, &format!("src{shards}"));
            let dst = dir_in(&shm(), &format!("dbuf-ext4-dst{shards}"));
            let seed = 10 + u64::from(shards);
            let (sent, _) = transfer_with(shards, &src, &dst, seed, ODD_FILE_BYTES, true);
            let io = &sent.io;
            println!(
                "{shards} shards: sender reads {} O_DIRECT, {} buffered, resent {} bytes: {io:?}",
                io.disk_direct_ops, io.disk_buffered_reads, sent.resent_bytes
            );
            let first_pass = ODD_FILE_BYTES.div_ceil(READ_PIECE_BYTES) as u64;
            assert!(io.disk_direct_ops >= first_pass, "{shards} shards: {io:?}");
            assert_eq!(io.disk_direct_fallbacks, 0, "{shards} shards: {io:?}");
            assert_eq!(io.disk_direct_refused_files, 0, "{shards} shards: {io:?}");
            assert_eq!(io.disk_direct_cached_files, 0, "{shards} shards: {io:?}");
            if sent.resent_bytes == 0 {
                assert_eq!(io.disk_buffered_reads, 0, "{shards} shards: {io:?}");
            }
            let _ = std::fs::remove_dir_all(&src);
            let _ = std::fs::remove_dir_all(&dst);
        }
        // Just written, in the page cache: read through it (an O_DIRECT read of dirty pages
        // waits for their writeback).
        let src = dir_in(&mount, "src-hot");
        let dst = dir_in(&shm(), "dbuf-ext4-dst-hot");
        let _dst_removed = RemoveOnDrop(dst.clone());
        let (sent, _) = transfer_with(2, &src, &dst, 20, ODD_FILE_BYTES, false);
        let io = &sent.io;
        println!("hot source: {io:?}");
        assert_eq!(io.disk_direct_ops, 0, "hot: {io:?}");
        assert!(io.disk_direct_cached_files >= 1, "hot: {io:?}");
        assert_eq!(io.disk_direct_fallbacks, 0, "hot: {io:?}");
    });
    let res = t.join();
    drop(fs);
    res.expect("transfers from ext4 on one core");
}
