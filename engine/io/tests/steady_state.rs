//! Steady state allocates nothing: 100,000 datagrams sent and received through each backend
//! after warm-up, counted by a test-only global allocator.
//!
//! The allocator counts only on threads that switched counting on, so the test harness's own
//! threads cannot disturb the figure. (The crate-wide `CountingAlloc` from `alloc.rs` had not
//! landed when this was written; this minimal one lives inside the test file.)

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(unsafe_code)] // The test-only GlobalAlloc below; engine/io is the crate allowed unsafe.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use common::{check, fill, is_available, loopback, pattern};
use haul_io::backend::{BackendBuilder, BackendKind};

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

fn start_counting() {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
}

/// Stops counting and returns the allocations seen on this thread since `start_counting`.
fn stop_counting() -> u64 {
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SIZE: usize = 1200;
const BATCH: usize = 64;
const WARMUP_BATCHES: u64 = 20;
const MEASURED_DATAGRAMS: u64 = 100_000;
/// Receive calls allowed per batch before the batch's stragglers are given up on.
const MAX_RECV_CALLS_PER_BATCH: usize = 200;

/// Sends and receives `total` datagrams in one thread; returns (received intact, corrupt).
fn pump(kind: BackendKind, total: u64, counting: bool) -> (u64, u64, u64, u64) {
    let (mut rx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("rx");
    let (mut tx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("tx");
    let dest = rx.local_addr();
    let pat = pattern(SIZE);
    let mut bufs = vec![vec![0u8; SIZE]; BATCH];
    let (mut intact, mut corrupt, mut seq) = (0u64, 0u64, 0u64);
    let mut batches = 0u64;
    let mut measured_intact = 0u64;
    let mut syscalls_before = 0;
    while measured_intact < total {
        if batches == WARMUP_BATCHES && counting {
            syscalls_before = tx.stats().syscalls + rx.stats().syscalls;
            start_counting();
        }
        for (k, buf) in bufs.iter_mut().enumerate() {
            fill(buf, seq + k as u64, &pat);
        }
        let slices: [&[u8]; BATCH] = std::array::from_fn(|k| bufs[k].as_slice());
        tx.send_batch(dest, &slices, SIZE).expect("send_batch");
        seq += BATCH as u64;
        let mut got = 0;
        for _ in 0..MAX_RECV_CALLS_PER_BATCH {
            rx.recv_batch(Duration::from_millis(100), |_, d| match check(d, SIZE, &pat) {
                Some(_) => got += 1,
                None => corrupt += 1,
            })
            .expect("recv_batch");
            if got >= BATCH {
                break;
            }
        }
        intact += got as u64;
        batches += 1;
        if batches > WARMUP_BATCHES {
            measured_intact += got as u64;
        }
        assert!(batches < 10 * (total / BATCH as u64 + WARMUP_BATCHES), "no progress");
    }
    let allocations = stop_counting();
    let syscalls = tx.stats().syscalls + rx.stats().syscalls - syscalls_before;
    (intact, corrupt, allocations, syscalls * 1000 / measured_intact.max(1))
}

#[test]
fn steady_state_allocates_nothing_on_either_backend() {
    for kind in [BackendKind::Uring, BackendKind::Portable].into_iter().filter(|k| is_available(*k))
    {
        let (intact, corrupt, allocations, per_k) = pump(kind, MEASURED_DATAGRAMS, true);
        println!(
            "{}: {intact} datagrams intact, {allocations} allocations, {per_k} syscalls per \
             1,000 datagrams (send + receive)",
            kind.name()
        );
        assert_eq!(corrupt, 0);
        // Batches of 64: a handful of syscalls per batch, never one per datagram.
        assert!(per_k < 200, "{}: {per_k} syscalls per 1,000 datagrams", kind.name());
        assert_eq!(allocations, 0, "{}: steady state allocated", kind.name());
    }
}

#[test]
fn counting_allocator_sees_allocations() {
    // Guards against a counter that can never fail.
    start_counting();
    let v = std::hint::black_box(vec![1u8; 100]);
    let allocations = stop_counting();
    drop(v);
    assert!(allocations >= 1);
}
