//! Buffer pool: one contiguous anonymous mapping cut into fixed-size slots; and the disk
//! buffers ([`disk_buffers`]): 4 KiB-aligned slices of one such mapping.
//!
//! Role: every datagram buffer of a shard lives here, allocated once at start-up (STYLE.md rule
//! 7: no allocation per datagram), and so do a shard's disk buffers (the receiver's staging
//! arenas, the read slots the proto shards borrow). A region is backed by reserved huge pages
//! (MAP_HUGETLB) when `/proc/meminfo` shows enough free ones, otherwise by a normal anonymous
//! mapping advised `MADV_HUGEPAGE` so transparent huge pages can back it;
//! [`BufPool::backing`] and [`disk_buffers`] report which.
//!
//! Invariants:
//! - The slot stride is an odd multiple of 64 bytes, so it is never a multiple of 4096: slots
//!   that are in flight together do not alias in the L1 cache's 4 KiB sets (30 datagrams 8192
//!   bytes apart cut AES throughput 3x in a measurement of ours).
//! - Ownership is structural: user code holds a [`SlotId`] (index + generation), never a
//!   pointer. A slot is either free or lent out exactly once; releasing bumps its generation,
//!   so a stale `SlotId` is rejected instead of touching a reused buffer.
//! - The mapping never moves or shrinks while the pool lives, so addresses handed to the
//!   kernel (registered buffers, provided buffer rings) stay valid for the pool's lifetime.
//! - The mapping is held raw (`MmapRaw`): Rust references are only ever made to one lent slot
//!   at a time, never to the whole region, because the kernel may be writing other slots
//!   concurrently. Whoever lends a slot to the kernel must not touch it through [`BufPool::slot`]
//!   or [`BufPool::slot_mut`] until the kernel's completion for it has been reaped.
//! - Disk buffers start on [`DISK_BUF_ALIGN`] boundaries (O_DIRECT needs aligned memory), so
//!   unlike the pool's slots they are multiples of 4 KiB apart. The CPU never works through
//!   several of them in lockstep: one `memmove` reads one read slot into datagrams, BLAKE3
//!   hashes one piece, the receive callback copies into one arena; the lockstep reads (the
//!   batched AES and CMAC over up to 64 datagrams) are over the datagram slots, which keep
//!   the odd stride.
//! - Each [`DiskBuf`] is a disjoint slice owned by one holder (it is not `Clone`), so a
//!   `&mut` to its bytes is the only reference to them; the region lives while any slice does.

use memmap2::{Advice, MmapMut, MmapOptions, MmapRaw};
use std::sync::Arc;

/// Cache line size the stride is padded to.
const CACHE_LINE_BYTES: usize = 64;
/// Size of one reserved huge page (x86-64 and aarch64 default), as a shift.
const HUGE_PAGE_SHIFT: u8 = 21;
/// Size of one huge page in bytes.
const HUGE_PAGE_BYTES: usize = 1 << HUGE_PAGE_SHIFT;
/// Upper bound on slots in one pool: slot indexes must fit io_uring's 16-bit buffer ids.
pub const MAX_SLOTS: usize = 1 << 15;
/// Upper bound on one slot's size (a GRO-coalesced receive plus headers fits well below it).
pub const MAX_SLOT_BYTES: usize = 1 << 20;
/// Alignment of every disk buffer: the largest O_DIRECT memory alignment the shards handle
/// (`transfer::store::MAX_DIRECT_ALIGN`).
pub const DISK_BUF_ALIGN: usize = 4096;
/// Most disk buffers cut from one region (a sender's 16 read slots, a receiver's 8 arenas).
pub const MAX_DISK_BUFS: usize = 64;
/// Largest disk buffer (a block of the layout is at most this).
pub const MAX_DISK_BUF_BYTES: usize = 64 << 20;

/// Which memory backs a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved huge pages (MAP_HUGETLB, `vm.nr_hugepages`).
    HugeTlb,
    /// Normal anonymous memory advised MADV_HUGEPAGE (transparent huge pages).
    Thp,
    /// Normal anonymous memory; THP advice was refused.
    Normal,
    /// Heap memory: the anonymous mapping itself failed (disk buffers only; the network
    /// pool fails instead).
    Heap,
}

impl Backing {
    /// Short lowercase name for reports: `hugetlb`, `thp` or `normal`.
    pub fn name(self) -> &'static str {
        match self {
            Backing::HugeTlb => "hugetlb",
            Backing::Thp => "thp",
            Backing::Normal => "normal",
            Backing::Heap => "heap",
        }
    }
}

impl Backing {
    /// Order from least to most: heap, normal, thp, hugetlb.
    fn rank(self) -> u8 {
        match self {
            Backing::Heap => 0,
            Backing::Normal => 1,
            Backing::Thp => 2,
            Backing::HugeTlb => 3,
        }
    }

    /// The lesser of two backings (of several regions reported as one): `None` is no region.
    pub fn weaker(a: Option<Backing>, b: Option<Backing>) -> Option<Backing> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if x.rank() <= y.rank() { x } else { y }),
            (x, y) => x.or(y),
        }
    }
}

/// Errors building or using a pool.
#[derive(Debug, thiserror::Error)]
pub enum BufError {
    /// Our bug: asked for zero slots, zero-sized slots, or more than the limits.
    #[error("invalid pool geometry (our bug): {0}")]
    Geometry(&'static str),
    /// The host: the anonymous mapping failed (address space or memory limits).
    #[error("mapping {bytes} bytes failed (host memory limits): {source}")]
    Map { bytes: usize, source: std::io::Error },
    /// Our bug: a slot id that is stale, out of range or not lent out.
    #[error("slot {index} gen {generation} is not lent out (our bug)")]
    NotLent { index: u32, generation: u32 },
}

/// A lent-out slot: index plus the generation it was lent under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId {
    /// Position of the slot in the pool.
    pub index: u32,
    /// Generation at lending time; bumped on every release.
    pub generation: u32,
}

/// The pool: one mapping, fixed slots, a free list with a fixed capacity.
#[derive(Debug)]
pub struct BufPool {
    map: MmapRaw,
    backing: Backing,
    slot_bytes: usize,
    stride_bytes: usize,
    slot_count: usize,
    generations: Vec<u32>,
    lent: Vec<bool>,
    free: Vec<u32>,
}

/// Stride for `slot_bytes`: rounded up to a cache line, then made an odd multiple of 64.
pub fn stride_for(slot_bytes: usize) -> usize {
    let lines = slot_bytes.div_ceil(CACHE_LINE_BYTES).max(1);
    let odd_lines = if lines.is_multiple_of(2) { lines + 1 } else { lines };
    odd_lines * CACHE_LINE_BYTES
}

/// Free reserved huge pages, parsed from the text of `/proc/meminfo`.
pub fn parse_hugepages_free(meminfo: &str) -> u64 {
    meminfo_value(meminfo, "HugePages_Free:").unwrap_or(0)
}

/// A numeric field of `/proc/meminfo` (first number after `key`).
pub fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

impl BufPool {
    /// Maps a pool of `slot_count` slots of `slot_bytes` each, choosing the best backing.
    pub fn new(slot_count: usize, slot_bytes: usize) -> Result<BufPool, BufError> {
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(BufError::Geometry("slot count must be 1..=MAX_SLOTS"));
        }
        if slot_bytes == 0 || slot_bytes > MAX_SLOT_BYTES {
            return Err(BufError::Geometry("slot size must be 1..=MAX_SLOT_BYTES"));
        }
        let stride_bytes = stride_for(slot_bytes);
        let total = (stride_bytes * slot_count).next_multiple_of(HUGE_PAGE_BYTES);
        let free_huge = std::fs::read_to_string("/proc/meminfo")
            .map(|text| parse_hugepages_free(&text))
            .unwrap_or(0);
        let (map, backing) = map_region(total, free_huge)?;
        Ok(BufPool {
            map,
            backing,
            slot_bytes,
            stride_bytes,
            slot_count,
            generations: vec![0; slot_count],
            lent: vec![false; slot_count],
            // Pop from the end: lower indexes are lent first.
            free: (0..slot_count as u32).rev().collect(),
        })
    }

    /// Which memory backs the pool.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Usable bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Distance in bytes between the starts of consecutive slots.
    pub fn stride_bytes(&self) -> usize {
        self.stride_bytes
    }

    /// Number of slots in the pool.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Number of slots currently free.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Lends out a free slot, or `None` when every slot is lent.
    pub fn alloc(&mut self) -> Option<SlotId> {
        let index = self.free.pop()?;
        self.lent[index as usize] = true;
        Some(SlotId { index, generation: self.generations[index as usize] })
    }

    /// Returns a lent slot; its generation moves on so the old id goes stale.
    pub fn release(&mut self, id: SlotId) -> Result<(), BufError> {
        self.check(id)?;
        let i = id.index as usize;
        self.lent[i] = false;
        self.generations[i] = self.generations[i].wrapping_add(1);
        // Cannot exceed capacity: a slot is pushed only after being popped.
        self.free.push(id.index);
        Ok(())
    }

    /// Whether `id` names a slot that is currently lent under that generation.
    pub fn is_lent(&self, id: SlotId) -> bool {
        self.check(id).is_ok()
    }

    /// The bytes of a lent slot.
    pub fn slot(&self, id: SlotId) -> Result<&[u8], BufError> {
        self.check(id)?;
        let ptr = self.start_ptr(id.index);
        // SAFETY: `check` proved the index in range, so `slot_bytes` from `ptr` lie inside the
        // live mapping (stride >= slot_bytes); the slot is lent to our caller, who (module
        // invariant) does not read it while the kernel owns it; `&self` keeps the mapping alive
        // and forbids `slot_mut` for the borrow's duration.
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.slot_bytes) })
    }

    /// The bytes of a lent slot, writable.
    pub fn slot_mut(&mut self, id: SlotId) -> Result<&mut [u8], BufError> {
        self.check(id)?;
        let ptr = self.start_ptr(id.index);
        // SAFETY: as in `slot`; `&mut self` additionally guarantees no other Rust reference
        // into the pool exists while this one lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, self.slot_bytes) })
    }

    /// Address of slot `index` (lent or not), for handing to the kernel; `None` if out of range.
    /// No reference is created, so this is sound while the kernel owns other slots.
    pub(crate) fn slot_addr(&self, index: u32) -> Option<*mut u8> {
        ((index as usize) < self.slot_count).then(|| self.start_ptr(index))
    }

    /// Start of slot `index`; callers check the range first.
    fn start_ptr(&self, index: u32) -> *mut u8 {
        let start = index as usize * self.stride_bytes;
        // `wrapping_add` never dereferences; every caller has checked `index < slot_count`,
        // so the result is inside the mapping.
        self.map.as_mut_ptr().wrapping_add(start)
    }

    fn check(&self, id: SlotId) -> Result<(), BufError> {
        let i = id.index as usize;
        let ok = i < self.slot_count && self.lent[i] && self.generations[i] == id.generation;
        if ok {
            Ok(())
        } else {
            Err(BufError::NotLent { index: id.index, generation: id.generation })
        }
    }
}

/// Maps `total` bytes: hugetlb if enough reserved pages are free, else THP-advised memory.
fn map_region(total: usize, free_huge_pages: u64) -> Result<(MmapRaw, Backing), BufError> {
    let needed = (total / HUGE_PAGE_BYTES) as u64;
    // If the reserved pages raced away or the size is unsupported, fall through to THP.
    if free_huge_pages >= needed
        && let Ok(map) = MmapOptions::new().len(total).huge(Some(HUGE_PAGE_SHIFT)).map_anon()
    {
        // Faulted in now, as below.
        let _ = map.advise(Advice::PopulateWrite);
        return Ok((MmapRaw::from(map), Backing::HugeTlb));
    }
    let map: MmapMut = MmapOptions::new()
        .len(total)
        .map_anon()
        .map_err(|source| BufError::Map { bytes: total, source })?;
    let backing = match map.advise(Advice::HugePage) {
        Ok(()) => Backing::Thp,
        Err(_) => Backing::Normal,
    };
    // Fault the whole region in now (Linux 5.14; older kernels refuse, and then pages come
    // as they are touched), so the shard's memory does not grow while it runs. Regression
    // (`benches/loopback/run.sh`, memory item): the sender's peak RSS was 22 MiB for a 1 GiB
    // file and 28 MiB (+27.6%, over the 10% the issue allows) for a 16 GiB one: in the longer
    // run khugepaged (which scans every 10 s here) had time to collapse the advised regions'
    // partly touched 2 MiB ranges into whole huge pages.
    let _ = map.advise(Advice::PopulateWrite);
    Ok((MmapRaw::from(map), backing))
}

/// One anonymous mapping of a shard's disk buffers, shared by its [`DiskBuf`] slices.
#[derive(Debug)]
struct Region {
    map: MmapRaw,
}

#[derive(Debug)]
enum DiskMemory {
    /// `len` bytes at `start` of a region.
    Mapped { region: Arc<Region>, start: usize, len: usize },
    /// The fallback when the region could not be mapped.
    Heap(Box<[u8]>),
}

/// One disk buffer: a [`DISK_BUF_ALIGN`]-aligned slice of a hugepage-backed (or THP-advised)
/// region, or heap memory when mapping failed. It never moves while it lives, so its address
/// can be registered with a ring.
#[derive(Debug)]
pub struct DiskBuf(DiskMemory);

impl DiskBuf {
    /// A heap buffer of `bytes` (not aligned): the stand-in when no region can be had.
    pub fn heap(bytes: usize) -> DiskBuf {
        DiskBuf(DiskMemory::Heap(vec![0; bytes].into()))
    }
}

impl std::ops::Deref for DiskBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            DiskMemory::Mapped { region, start, len } => {
                let ptr = region.map.as_ptr().wrapping_add(*start);
                // SAFETY: `disk_buffers` cut `[start, start + len)` inside the live mapping
                // (the `Arc` keeps it mapped) and gave it to this one `DiskBuf` alone; `&self`
                // forbids a `&mut` to the same bytes for the borrow's duration.
                unsafe { std::slice::from_raw_parts(ptr, *len) }
            }
            DiskMemory::Heap(b) => b,
        }
    }
}

impl std::ops::DerefMut for DiskBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            DiskMemory::Mapped { region, start, len } => {
                let ptr = region.map.as_mut_ptr().wrapping_add(*start);
                // SAFETY: as in `deref`; `&mut self` makes this the only reference to these
                // bytes (no other `DiskBuf` covers them).
                unsafe { std::slice::from_raw_parts_mut(ptr, *len) }
            }
            DiskMemory::Heap(b) => b,
        }
    }
}

impl haul_proto::session::SlotMemory for DiskBuf {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// `count` disk buffers of `bytes` each, every one starting on a [`DISK_BUF_ALIGN`]
/// boundary, cut from one region backed as [`BufPool`]'s is (hugetlb when enough reserved
/// huge pages are free, else THP-advised). If the region cannot be mapped, heap buffers
/// (`Backing::Heap`, not aligned) stand in, so a host without the memory for a mapping still
/// transfers (as before hugepage-backed disk buffers). The limits ([`MAX_DISK_BUFS`],
/// [`MAX_DISK_BUF_BYTES`]) are our own callers' business: beyond them this is our bug.
pub fn disk_buffers(count: usize, bytes: usize) -> Result<(Vec<DiskBuf>, Backing), BufError> {
    if count == 0 || count > MAX_DISK_BUFS {
        return Err(BufError::Geometry("disk buffer count must be 1..=MAX_DISK_BUFS"));
    }
    if bytes == 0 || bytes > MAX_DISK_BUF_BYTES {
        return Err(BufError::Geometry("disk buffer size must be 1..=MAX_DISK_BUF_BYTES"));
    }
    let stride = bytes.next_multiple_of(DISK_BUF_ALIGN);
    let total = (stride * count).next_multiple_of(HUGE_PAGE_BYTES);
    let free_huge = std::fs::read_to_string("/proc/meminfo")
        .map(|text| parse_hugepages_free(&text))
        .unwrap_or(0);
    let Ok((map, backing)) = map_region(total, free_huge) else {
        let heap = (0..count).map(|_| DiskBuf::heap(bytes)).collect();
        return Ok((heap, Backing::Heap));
    };
    let region = Arc::new(Region { map });
    let bufs = (0..count)
        .map(|i| {
            DiskBuf(DiskMemory::Mapped { region: region.clone(), start: i * stride, len: bytes })
        })
        .collect();
    Ok((bufs, backing))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stride_is_never_a_multiple_of_4k() {
        for slot in [1usize, 63, 64, 1200, 1472, 4096, 8000, 8192, 65536, 65536 + 200] {
            let stride = stride_for(slot);
            assert!(stride >= slot);
            assert_eq!(stride % 64, 0);
            assert_ne!(stride % 4096, 0, "slot {slot} stride {stride}");
            assert_eq!((stride / 64) % 2, 1);
        }
        assert_eq!(stride_for(8192), 8192 + 64);
    }

    #[test]
    fn hugepages_free_parses() {
        let text = "MemTotal: 100 kB\nHugePages_Total:      16\nHugePages_Free:       12\n";
        assert_eq!(parse_hugepages_free(text), 12);
        assert_eq!(parse_hugepages_free("garbage"), 0);
        assert_eq!(parse_hugepages_free("HugePages_Free: x"), 0);
    }

    #[test]
    fn slots_are_lent_once_and_stale_ids_rejected() {
        let mut pool = BufPool::new(4, 1500).unwrap();
        assert!(!pool.stride_bytes().is_multiple_of(4096));
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_ne!(a.index, b.index);
        pool.slot_mut(a).unwrap()[0] = 7;
        assert_eq!(pool.slot(a).unwrap()[0], 7);
        assert_eq!(pool.slot(a).unwrap().len(), 1500);
        pool.release(a).unwrap();
        assert!(pool.slot(a).is_err(), "stale id must be rejected");
        assert!(pool.release(a).is_err(), "double release must be rejected");
        let c = pool.alloc().unwrap();
        assert!(pool.alloc().is_some() && pool.alloc().is_some());
        assert!(pool.alloc().is_none(), "pool of 4 must run dry");
        if c.index == a.index {
            assert_ne!(c.generation, a.generation);
        }
        assert!(pool.release(SlotId { index: 99, generation: 0 }).is_err());
    }

    #[test]
    fn backing_follows_reserved_huge_pages() {
        // 2 slots of 1 MiB: one 2 MiB huge page plus a bit, so two pages are needed.
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let free_before = parse_hugepages_free(&meminfo);
        let mut pool = BufPool::new(2, 1 << 20).unwrap();
        println!("huge pages free {free_before}: backing {}", pool.backing().name());
        if free_before >= 2 {
            assert_eq!(pool.backing(), Backing::HugeTlb);
        } else {
            assert_ne!(pool.backing(), Backing::HugeTlb);
        }
        let id = pool.alloc().unwrap();
        pool.slot_mut(id).unwrap().fill(0xab);
        assert!(pool.slot(id).unwrap().iter().all(|b| *b == 0xab));
    }

    #[test]
    fn disk_buffers_are_aligned_disjoint_and_follow_reserved_huge_pages() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let free_before = parse_hugepages_free(&meminfo);
        let (mut bufs, backing) = disk_buffers(3, (1 << 20) + 100).unwrap();
        println!("huge pages free {free_before}: disk buffers {}", backing.name());
        // 3 x (1 MiB + 4 KiB) needs two huge pages.
        if free_before >= 2 {
            assert_eq!(backing, Backing::HugeTlb);
        } else {
            assert!(matches!(backing, Backing::Thp | Backing::Normal), "{backing:?}");
        }
        for (i, b) in bufs.iter_mut().enumerate() {
            assert_eq!(b.len(), (1 << 20) + 100);
            assert_eq!(b.as_ptr() as usize % DISK_BUF_ALIGN, 0);
            b.fill(i as u8 + 1);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8 + 1), "buffer {i} was overwritten");
        }
        assert!(disk_buffers(0, 10).is_err());
        assert!(disk_buffers(MAX_DISK_BUFS + 1, 10).is_err());
        assert!(disk_buffers(1, MAX_DISK_BUF_BYTES + 1).is_err());
    }

    #[test]
    fn geometry_limits_are_enforced() {
        assert!(BufPool::new(0, 100).is_err());
        assert!(BufPool::new(MAX_SLOTS + 1, 100).is_err());
        assert!(BufPool::new(1, 0).is_err());
        assert!(BufPool::new(1, MAX_SLOT_BYTES + 1).is_err());
    }
}
