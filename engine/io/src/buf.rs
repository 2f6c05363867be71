//! Buffer pool: one contiguous anonymous mapping cut into fixed-size slots.
//!
//! Role: every datagram buffer of a shard lives here, allocated once at start-up (STYLE.md rule
//! 7: no allocation per datagram). The region is backed by reserved huge pages (MAP_HUGETLB)
//! when `/proc/meminfo` shows free ones, otherwise by a normal anonymous mapping advised
//! `MADV_HUGEPAGE` so transparent huge pages can back it; [`BufPool::backing`] reports which.
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

use memmap2::{Advice, MmapMut, MmapOptions, MmapRaw};

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

/// Which memory backs a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved huge pages (MAP_HUGETLB, `vm.nr_hugepages`).
    HugeTlb,
    /// Normal anonymous memory advised MADV_HUGEPAGE (transparent huge pages).
    Thp,
    /// Normal anonymous memory; THP advice was refused.
    Normal,
}

impl Backing {
    /// Short lowercase name for reports: `hugetlb`, `thp` or `normal`.
    pub fn name(self) -> &'static str {
        match self {
            Backing::HugeTlb => "hugetlb",
            Backing::Thp => "thp",
            Backing::Normal => "normal",
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
    Ok((MmapRaw::from(map), backing))
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
    fn geometry_limits_are_enforced() {
        assert!(BufPool::new(0, 100).is_err());
        assert!(BufPool::new(MAX_SLOTS + 1, 100).is_err());
        assert!(BufPool::new(1, 0).is_err());
        assert!(BufPool::new(1, MAX_SLOT_BYTES + 1).is_err());
    }
}
