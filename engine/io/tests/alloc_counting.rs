//! `CountingAlloc` registered as the global allocator of this test binary: allocations are
//! counted, the peak moves and resets, and `measure_thread` is exact on its own thread.

use haul_io::alloc::{CountingAlloc, measure_thread};
use std::hint::black_box;
use std::sync::{Mutex, MutexGuard};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

const BIG: usize = 8 << 20;

/// The process-wide counters see every thread: tests of this binary take turns, so that one
/// test's big Vec never shows up in another's figures.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Assertions allow 1 MiB of slack for the test harness's own allocations.
#[test]
fn process_counters_track_a_vec() {
    let _turn = serial();
    let before = ALLOC.snapshot();
    let v: Vec<u8> = black_box(Vec::with_capacity(BIG));
    let during = ALLOC.snapshot();
    assert!(during.allocations > before.allocations, "{before:?} -> {during:?}");
    assert!(during.bytes_current >= BIG, "{during:?}");
    assert!(during.bytes_peak >= during.bytes_current, "{during:?}");
    assert!(during.bytes_peak >= before.bytes_current + BIG - (1 << 20), "{during:?}");

    drop(v);
    let after = ALLOC.snapshot();
    assert!(after.deallocations > during.deallocations, "{during:?} -> {after:?}");
    assert!(after.bytes_current + BIG <= during.bytes_current + (1 << 20), "{after:?}");
    assert!(after.bytes_peak >= during.bytes_peak, "peak never falls on its own");

    ALLOC.reset_peak();
    let reset = ALLOC.snapshot();
    assert!(reset.bytes_peak < BIG, "reset_peak restarts from current bytes: {reset:?}");

    let mut grow: Vec<u8> = Vec::with_capacity(16);
    grow.reserve_exact(BIG);
    black_box(&grow);
    let grown = ALLOC.snapshot();
    assert!(grown.reallocations > reset.reallocations, "{reset:?} -> {grown:?}");
    assert!(grown.bytes_peak >= BIG, "{grown:?}");
}

#[test]
fn measure_thread_counts_exactly_this_threads_allocations() {
    let _turn = serial();
    let ((), stats) = measure_thread(|| {
        let v: Vec<u8> = black_box(Vec::with_capacity(1000));
        drop(v);
    });
    assert_eq!(stats.allocations, 1, "{stats:?}");
    assert_eq!(stats.deallocations, 1, "{stats:?}");
    assert_eq!(stats.bytes_net, 0, "{stats:?}");
    assert_eq!(stats.bytes_net_peak, 1000, "{stats:?}");
}

#[test]
fn measure_thread_sees_no_allocation_in_allocation_free_code() {
    let _turn = serial();
    let mut buf = black_box(vec![0u8; 4096]);
    let (sum, stats) = measure_thread(|| {
        buf.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        buf.iter().map(|&b| u64::from(b)).sum::<u64>()
    });
    assert_eq!(sum, 4096);
    assert_eq!(stats, Default::default(), "the closure allocated: {stats:?}");
}

#[test]
fn measure_thread_ignores_other_threads() {
    let _turn = serial();
    let (handle, stats) = measure_thread(|| {
        // The spawn itself allocates here; what the new thread allocates must not be counted.
        std::thread::spawn(|| black_box(vec![0u8; BIG]).len())
    });
    assert_eq!(handle.join().ok(), Some(BIG));
    assert!(stats.bytes_net_peak < BIG as i64, "counted another thread's Vec: {stats:?}");
}

#[test]
fn accounts_charge_each_side_separately() {
    let _turn = serial();
    use haul_io::alloc::{account_bytes, reset_account_peaks, with_account};
    reset_account_peaks();
    let (a0, _) = account_bytes(1);
    let (b0, _) = account_bytes(2);
    let kept = with_account(1, || vec![0u8; 1 << 20]);
    with_account(2, || {
        let tmp = vec![0u8; 3 << 20];
        drop(tmp);
    });
    let (a, a_peak) = account_bytes(1);
    let (b, b_peak) = account_bytes(2);
    assert!(a - a0 >= 1 << 20, "account 1 holds its megabyte");
    assert!(a_peak - a0 >= 1 << 20);
    assert_eq!(b - b0, 0, "account 2 freed what it allocated");
    assert!(b_peak - b0 >= 3 << 20, "account 2's peak saw its 3 MiB");
    drop(kept);
}
