//! A counting global allocator, for measuring heap use (issue 2 "Memory": peak heap of sender
//! and receiver for 1 GiB and 1 TiB virtual files) and for proving that a data path does not
//! allocate per datagram.
//!
//! [`CountingAlloc`] wraps [`System`] and counts, process-wide, allocations, deallocations,
//! reallocations, bytes currently allocated and the peak of that. Register it in a binary or an
//! integration test:
//!
//! ```text
//! #[global_allocator]
//! static ALLOC: haul_io::alloc::CountingAlloc = haul_io::alloc::CountingAlloc::new();
//! ```
//!
//! [`measure_thread`] counts only what one closure allocates on the calling thread, so a
//! measurement is not disturbed by other threads (such as parallel tests).
//!
//! Invariants:
//! - The allocator never allocates and never panics: counters are atomics (Relaxed: they are
//!   statistics, not synchronisation) and thread-local cells with `const` initialisers and no
//!   destructor, which need no allocation and no registration to access.
//! - `bytes_peak` is exact across threads: every allocation max-es the running total that its
//!   own `fetch_add` returned into the peak, so the highest total ever reached is recorded.
//!   Only a [`CountingAlloc::reset_peak`] racing with other threads' allocations can start the
//!   new measurement from a slightly stale total.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A global allocator that counts what passes through it, then delegates to [`System`].
#[derive(Debug)]
pub struct CountingAlloc {
    allocations: AtomicU64,
    deallocations: AtomicU64,
    reallocations: AtomicU64,
    bytes_current: AtomicUsize,
    bytes_peak: AtomicUsize,
}

/// A snapshot of a [`CountingAlloc`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Successful `alloc`/`alloc_zeroed` calls since start-up.
    pub allocations: u64,
    /// `dealloc` calls since start-up.
    pub deallocations: u64,
    /// Successful `realloc` calls since start-up (counted apart from allocations).
    pub reallocations: u64,
    /// Bytes allocated and not yet freed.
    pub bytes_current: usize,
    /// Highest `bytes_current` since start-up or the last [`CountingAlloc::reset_peak`].
    pub bytes_peak: usize,
}

/// What one thread allocated inside [`measure_thread`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadAllocStats {
    /// Allocations (and reallocations) made by this thread.
    pub allocations: u64,
    /// Deallocations made by this thread.
    pub deallocations: u64,
    /// Bytes allocated minus bytes freed by this thread; negative if it freed older memory.
    pub bytes_net: i64,
    /// Highest `bytes_net` reached.
    pub bytes_net_peak: i64,
}

thread_local! {
    static THREAD_ACTIVE: Cell<bool> = const { Cell::new(false) };
    static THREAD_STATS: Cell<ThreadAllocStats> = const {
        Cell::new(ThreadAllocStats {
            allocations: 0,
            deallocations: 0,
            bytes_net: 0,
            bytes_net_peak: 0,
        })
    };
}

/// Runs `f` and returns what it allocated on this thread, as counted by a registered
/// [`CountingAlloc`]. Without one registered, the stats stay zero. Not reentrant: a nested call
/// measures its own closure, and the outer call then sees only what followed it.
pub fn measure_thread<R>(f: impl FnOnce() -> R) -> (R, ThreadAllocStats) {
    THREAD_STATS.with(|s| s.set(ThreadAllocStats::default()));
    THREAD_ACTIVE.with(|a| a.set(true));
    let out = f();
    THREAD_ACTIVE.with(|a| a.set(false));
    (out, THREAD_STATS.with(Cell::get))
}

/// How many accounts [`with_account`] can charge (account 0 means "none").
pub const ACCOUNTS: usize = 4;

thread_local! {
    static ACCOUNT: Cell<usize> = const { Cell::new(0) };
}

static ACCOUNT_CURRENT: [AtomicI64; ACCOUNTS] = [const { AtomicI64::new(0) }; ACCOUNTS];
static ACCOUNT_PEAK: [AtomicI64; ACCOUNTS] = [const { AtomicI64::new(0) }; ACCOUNTS];

/// Runs `f` with this thread's allocations and frees charged to `account` (1..ACCOUNTS), so a
/// simulator that runs both ends of a transfer on one thread can tell their heaps apart. A
/// block freed under another account than it was allocated under moves between them; callers
/// keep each side's objects inside that side's calls.
pub fn with_account<R>(account: usize, f: impl FnOnce() -> R) -> R {
    let before = ACCOUNT.with(|a| a.replace(account.min(ACCOUNTS - 1)));
    let out = f();
    ACCOUNT.with(|a| a.set(before));
    out
}

/// (current, peak) bytes charged to `account` since the last [`reset_account_peaks`].
pub fn account_bytes(account: usize) -> (i64, i64) {
    let i = account.min(ACCOUNTS - 1);
    (ACCOUNT_CURRENT[i].load(Relaxed), ACCOUNT_PEAK[i].load(Relaxed))
}

/// Start new peak measurements for every account from their current bytes.
pub fn reset_account_peaks() {
    for i in 0..ACCOUNTS {
        ACCOUNT_PEAK[i].store(ACCOUNT_CURRENT[i].load(Relaxed), Relaxed);
    }
}

fn record_account(allocated: usize, freed: usize) {
    let account = ACCOUNT.try_with(Cell::get).unwrap_or(0);
    if account == 0 {
        return;
    }
    let delta = allocated as i64 - freed as i64;
    let now = ACCOUNT_CURRENT[account].fetch_add(delta, Relaxed) + delta;
    ACCOUNT_PEAK[account].fetch_max(now, Relaxed);
}

/// Records one event in this thread's stats if [`measure_thread`] is active here.
/// `try_with` so that an allocation during thread teardown is simply not counted.
fn record_thread(allocated: usize, freed: usize) {
    record_account(allocated, freed);
    let active = THREAD_ACTIVE.try_with(Cell::get).unwrap_or(false);
    if !active {
        return;
    }
    let _ = THREAD_STATS.try_with(|cell| {
        let mut s = cell.get();
        if allocated > 0 {
            s.allocations += 1;
        }
        if freed > 0 && allocated == 0 {
            s.deallocations += 1;
        }
        s.bytes_net = s.bytes_net.saturating_add(allocated as i64).saturating_sub(freed as i64);
        s.bytes_net_peak = s.bytes_net_peak.max(s.bytes_net);
        cell.set(s);
    });
}

impl CountingAlloc {
    /// A counter at zero; `const` so it can initialise a `static`.
    pub const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            reallocations: AtomicU64::new(0),
            bytes_current: AtomicUsize::new(0),
            bytes_peak: AtomicUsize::new(0),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> AllocStats {
        AllocStats {
            allocations: self.allocations.load(Relaxed),
            deallocations: self.deallocations.load(Relaxed),
            reallocations: self.reallocations.load(Relaxed),
            bytes_current: self.bytes_current.load(Relaxed),
            bytes_peak: self.bytes_peak.load(Relaxed),
        }
    }

    /// Starts a new peak measurement from the bytes allocated now.
    pub fn reset_peak(&self) {
        self.bytes_peak.store(self.bytes_current.load(Relaxed), Relaxed);
    }

    fn on_grow(&self, bytes: usize) {
        let now = self.bytes_current.fetch_add(bytes, Relaxed) + bytes;
        self.bytes_peak.fetch_max(now, Relaxed);
    }

    fn on_shrink(&self, bytes: usize) {
        self.bytes_current.fetch_sub(bytes, Relaxed);
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method delegates to `System` with the caller's layout and pointer unchanged, so
// `System`'s guarantees (alignment, size, ownership) carry over; the counting around it touches
// only atomics and allocation-free thread-locals, and never allocates or unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size), which is
        // `System::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.allocations.fetch_add(1, Relaxed);
            self.on_grow(layout.size());
            record_thread(layout.size(), 0);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`: same contract as `System::alloc_zeroed`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.allocations.fetch_add(1, Relaxed);
            self.on_grow(layout.size());
            record_thread(layout.size(), 0);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (hence from `System`,
        // to which we delegate every allocation) with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.deallocations.fetch_add(1, Relaxed);
        self.on_shrink(layout.size());
        record_thread(0, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr`/`layout` describe a live block of ours (hence of
        // `System`) and that `new_size` is valid for `layout.align()`.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            self.reallocations.fetch_add(1, Relaxed);
            let old_size = layout.size();
            if new_size >= old_size {
                self.on_grow(new_size - old_size);
            } else {
                self.on_shrink(old_size - new_size);
            }
            record_thread(new_size, old_size);
        }
        new_ptr
    }
}
