//! Memory (issue 2, acceptance "Memory"): the sender's and the receiver's peak heap, for a
//! 1 GiB and a 1 TiB virtual file, over the same simulated time with the worst loss pattern for
//! bookkeeping (every other datagram lost, both ways: one hole per datagram in flight). Memory
//! must follow the window, not the file: the two sizes agree within 10%, and each side stays
//! under 64 MiB. The figures are printed (`cargo test -p haul-sim --test memory -- --nocapture`).
//!
//! This binary registers haul-io's counting allocator and routes `with_side` through its
//! per-account scope, so the simulator's own buffers (datagrams on the links, the disks) are
//! not charged to either side. One test only: the accounts are process-wide.

use haul_io::alloc::{CountingAlloc, account_bytes, reset_account_peaks, with_account};
use haul_proto::time::Duration;
use haul_sim::net::GilbertElliott;
use haul_sim::scenario::{FileKind, FileSpec};
use haul_sim::side::set_side_hook;
use haul_sim::{RunReport, Scenario, Side, run_scenario};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// Each side's peak must stay under this.
const LIMIT_BYTES: i64 = 64 << 20;

fn account(side: Side) -> usize {
    side as usize
}

/// Peak heap of each side (bytes above what it held before) over one run.
fn peaks(size: u64) -> ([i64; 2], RunReport) {
    let mut s = Scenario::clean(77);
    s.shards = 2;
    // A window the span fills several times over, so the bookkeeping reaches its steady state.
    s.block_size_log2 = 18;
    s.window_bytes = 1 << 20;
    s.rate_bps = 180_000_000;
    s.files = vec![FileSpec { size, kind: FileKind::Virtual }];
    // p = 1 both ways: the chain flips every datagram, and the bad state always loses.
    let alternate = GilbertElliott { p_good_to_bad: 1.0, p_bad_to_good: 1.0, loss_in_bad: 1.0 };
    for l in [&mut s.forward, &mut s.reverse] {
        l.rate_bps = 200_000_000;
        l.burst = Some(alternate);
    }
    s.stop_at = Some(Duration::from_millis(250));
    let before = Side::BOTH.map(|side| account_bytes(account(side)).0);
    reset_account_peaks();
    let r = run_scenario(&s);
    let after = Side::BOTH.map(|side| account_bytes(account(side)).1);
    ([after[0] - before[0], after[1] - before[1]], r)
}

#[test]
fn peak_heap_follows_the_window_not_the_file_size() {
    assert!(set_side_hook(|side, f| with_account(account(side), f)));
    let (gib, r1) = peaks(1 << 30);
    let (tib, r2) = peaks(1 << 40);
    for (name, p, r) in [("1 GiB", gib, &r1), ("1 TiB", tib, &r2)] {
        assert!(r.is_ok() && r.stopped, "{}", r.line());
        println!(
            "memory: {name} virtual file, {:?} simulated, alternate loss: sender peak {} KiB, \
             receiver peak {} KiB ({} file bytes resent)",
            r.sim_time,
            p[0] >> 10,
            p[1] >> 10,
            r.resent_bytes
        );
        assert!(r.resent_bytes > 0, "the loss pattern must bite");
    }
    for i in 0..2 {
        let (a, b) = (gib[i], tib[i]);
        assert!(a > 0 && b > 0, "nothing charged: is with_side wired? {gib:?} {tib:?}");
        assert!(a < LIMIT_BYTES && b < LIMIT_BYTES, "{gib:?} {tib:?}");
        assert!((a - b).abs() * 10 <= a.max(b), "1 GiB {a} vs 1 TiB {b} differ by more than 10%");
    }
}
