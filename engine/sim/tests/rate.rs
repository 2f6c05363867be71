//! Rate control through the simulator (issue 4): small, fast versions of the tables that
//! `haul-sim grid | fairness | policies | nodecap` print. Each asserts behaviour, never wall time.

use haul_proto::rate::Policy;
use haul_proto::time::Duration;
use haul_sim::net::LinkConfig;
use haul_sim::run_scenario;
use haul_sim::scenario::{FileKind, FileSpec, Scenario};
use haul_sim::scenarios::fairness;
use haul_sim::scenarios::grid::{self, Cell};

/// One small grid cell: a real session with the fair controller finds a 100 Mbit/s link at
/// 20 ms RTT, 1% loss, without a standing queue and without redundant resends.
#[test]
fn grid_smoke_cell_fills_the_link_with_a_short_queue() {
    let c = Cell {
        link_bps: 100_000_000,
        rtt_ms: 20,
        loss_pct: 1,
        policy: Policy::Fair,
        bdps: 50,
        seed: 3,
    };
    let r = grid::run_cell(&c);
    assert!(r.ok, "{:?}", r.failure);
    assert!(r.goodput_bps >= 0.85 * r.target_bps / grid::TARGET_SHARE, "{}", grid::row(&r));
    assert!(r.queue_mean <= Duration::from_millis(10), "{}", grid::row(&r));
    assert!(r.redundant_pct <= 1.0, "{}", grid::row(&r));
}

/// Regression (issue 4): a NAK holds at most 64 holes; with more holes than that per round
/// trip, listing the lowest 64 every time starved the rest and capped recovery. 100 Mbit/s,
/// 200 ms, 10% loss is ~160 holes per RTT.
#[test]
fn more_holes_per_rtt_than_one_nak_holds_are_all_recovered_promptly() {
    let mut s = Scenario::clean(7);
    let mut link = LinkConfig::clean(100_000_000, Duration::from_millis(100));
    link.loss = 0.10;
    s.forward = link;
    s.rate_bps = 95_000_000;
    s.window_bytes = 40 << 20;
    s.block_size_log2 = 20;
    s.files = vec![FileSpec { size: 24 << 20, kind: FileKind::Virtual }];
    let r = run_scenario(&s);
    assert!(r.is_ok(), "{}", r.line());
    // 24 MiB at 95 Mbit/s with 10% resent is ~2.4 s of sending; stalls cost whole seconds.
    assert!(r.sim_time < Duration::from_millis(4_000), "{}", r.line());
}

#[test]
fn two_fair_flows_converge_and_low_yields() {
    let (lines, ok) = fairness::fair_flows(2, 1);
    assert!(ok, "{}", lines.join("\n"));
    let (lines, ok) = fairness::policies(1);
    assert!(ok, "{}", lines.join("\n"));
}

#[test]
fn three_sessions_stay_within_the_node_cap() {
    let (lines, ok) = fairness::node_cap(1);
    assert!(ok, "{}", lines.join("\n"));
}
