//! Rate control through the simulator (issue 4): small, fast versions of the tables that
//! `haul-sim grid | fairness | policies | nodecap` print. Each asserts behaviour, never wall time.

use haul_proto::rate::Policy;
use haul_proto::time::Duration;
use haul_sim::net::LinkConfig;
use haul_sim::run_scenario;
use haul_sim::scenario::{FileKind, FileSpec, Scenario};
use haul_sim::scenarios::grid::{self, Cell};
use haul_sim::scenarios::{fairness, sessions};

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

/// Fairness from real sessions (issue 4): two fair sessions, 20 and 200 ms RTT, the second
/// starting 5 s after the first, share one 100 Mbit/s bottleneck queue; Jain ≥ 0.95 at ≥ 90%
/// of the link within 10 s of the second start, and both sessions run without a failure.
#[test]
fn two_real_fair_sessions_share_a_bottleneck_fairly() {
    let (lines, ok) = sessions::fair_sessions(2, sessions::TABLE_LINK_BPS / 4 * 5, 5, 1);
    assert!(ok, "{}", lines.join("\n"));
}

/// With an unlimited target (the CLI's default), `α` follows the bottleneck rate each
/// session's startup measured. The bounded blind first round fills the shared queue mostly
/// with the new session's datagrams, so a session that starts while another holds the link
/// still measures about the link. Its first samples include the other session's standing
/// queue: the regression was that it took that queue for propagation delay and settled at
/// 0.618 of the link against 0.382 (Jain 0.942). The incumbent now yields when it sees the
/// newcomer arrive and the newcomer yields after its drain, the queue empties, and the late
/// starter's base RTT is the path's.
#[test]
fn a_session_started_into_a_standing_queue_learns_the_real_base_rtt() {
    let sc = sessions::SessionsScenario {
        seed: 1,
        link_bps: sessions::TABLE_LINK_BPS,
        loss: 0.0,
        queue_bytes: sessions::TABLE_LINK_BPS / 8 / 5,
        sessions: vec![
            sessions::SessionSpec {
                policy: Policy::Fair,
                target_bps: sessions::UNLIMITED_BPS,
                rtt: Duration::from_millis(20),
                start: Duration::ZERO,
            },
            sessions::SessionSpec {
                policy: Policy::Fair,
                target_bps: sessions::UNLIMITED_BPS,
                rtt: Duration::from_millis(200),
                start: Duration::from_secs(5),
            },
        ],
        duration: Duration::from_secs(25),
    };
    let r = sessions::run(&sc);
    assert!(r.is_ok(), "{:?}", r.reports.iter().map(|x| x.line()).collect::<Vec<_>>());
    let [a, b] = [r.link_estimates_bps[0] as f64, r.link_estimates_bps[1] as f64];
    let link = sc.link_bps as f64;
    for e in [a, b] {
        assert!((e - link).abs() / link < 0.2, "estimate {e} for a {link} bit/s link");
    }
    // The path's RTT is 200 ms plus a datagram's serialization; the first flow's standing
    // queue (its `α` at 4 x the link, 8 ms) must not be in the estimate.
    let base = r.base_rtts[1];
    assert!(
        base >= Duration::from_millis(200) && base < Duration::from_millis(202),
        "late starter's base RTT {base:?}"
    );
    // Every 1-s window from 10 s after the second start to the end.
    for s in 15..24 {
        let (j, util) = r.jain_and_utilization(Duration::from_secs(s), Duration::from_secs(1));
        assert!(j >= 0.95 && util >= 0.90, "at {s} s: Jain {j:.3}, utilization {util:.3}");
    }
}

/// Four fair sessions with the unlimited target (20/200/20/200 ms, 5 s apart): every late
/// starter reads its base RTT through an emptied queue, so the shares converge (Jain 0.80 when
/// each newcomer took the standing queue for propagation delay).
#[test]
fn four_unlimited_sessions_share_a_bottleneck_fairly() {
    let (lines, ok) = sessions::fair_sessions(4, sessions::UNLIMITED_BPS, 5, 1);
    assert!(ok, "{}", lines.join("\n"));
}
