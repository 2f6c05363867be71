//! The adaptive controller's startup and drain through the simulator (issue 4), with the CLI's
//! default target (10 Gbit/s, "no limit") rather than the grid's 1.25 × the link: the startup
//! has to find the bottleneck on its own, as `haul send` does on the emulated WAN.
//!
//! Each run sends a file of a few tens of BDPs (the startup, the drain, some steady state and
//! the tail) through a bottleneck with a 1-BDP queue, as a grid cell does. It asserts that the peak queue stays under one BDP (no overshoot that fills the queue), that
//! the queue tail-dropped at most a small share of the datagrams (the resends of queue drops
//! are what made the emulated-WAN tail long), and that the link was filled after the startup.
//! Random loss must not end the startup early: the 5% cell asserts the same utilization as 0%.

use haul_proto::rate::Policy;
use haul_proto::time::Duration;
use haul_sim::run_scenario;
use haul_sim::scenarios::grid::{self, Cell};

/// The CLI's default target rate (`cli/src/args.rs`, DEFAULT_TARGET_RATE_BPS).
const DEFAULT_TARGET_BPS: u64 = 10_000_000_000;
/// Highest share of the datagrams sent that the bottleneck may tail-drop.
const MAX_DROP_SHARE: f64 = 0.002;

struct Startup {
    peak_queue: Duration,
    queue_drops: u64,
    transmitted: u64,
    /// Goodput (file bytes over the time to the verified rename) as a share of the link ×
    /// payload fraction × (1 − loss): the startup, the drain and the tail all count.
    utilization: f64,
}

/// One transfer of `bdps` bandwidth-delay products at `link_bps`, `rtt_ms`, `loss_pct` with the
/// default target.
fn run(link_bps: u64, rtt_ms: u64, loss_pct: u64, bdps: u64, seed: u64) -> Startup {
    let cell = Cell { link_bps, rtt_ms, loss_pct, policy: Policy::Fair, bdps, seed };
    let mut s = grid::scenario(&cell);
    s.rate_bps = DEFAULT_TARGET_BPS;
    // One BDP of the round trip, as haul-wanemu's default queue (the simulator's own default
    // is one BDP of the one-way delay).
    s.forward.queue_bytes = link_bps / 8 * rtt_ms / 1000;
    let r = run_scenario(&s);
    assert!(r.is_ok(), "{}", r.line());
    let secs = r.renamed_at.unwrap_or(r.sim_time).as_secs_f64();
    let wanted = link_bps as f64 * grid::payload_fraction() * (1.0 - loss_pct as f64 / 100.0);
    Startup {
        peak_queue: r.queue_delay.percentile(100.0),
        queue_drops: r.queue_drops,
        transmitted: r.queue_delay.count() + r.queue_drops,
        utilization: s.total_bytes() as f64 * 8.0 / secs / wanted,
    }
}

fn check(name: &str, s: &Startup, rtt: Duration, min_utilization: f64) {
    let line = format!(
        "{name}: peak queue {:?} (BDP {:?}), queue drops {} of {} datagrams, utilization {:.3}",
        s.peak_queue, rtt, s.queue_drops, s.transmitted, s.utilization
    );
    eprintln!("{line}");
    assert!(s.peak_queue < rtt, "peak queue reached one BDP: {line}");
    assert!((s.queue_drops as f64) <= MAX_DROP_SHARE * s.transmitted as f64, "queue drops: {line}");
    assert!(s.utilization >= min_utilization, "link not filled: {line}");
}

#[test]
fn startup_at_200m_200ms_stays_under_one_bdp_of_queue_at_0_1_and_5_pct_loss() {
    let rtt = Duration::from_millis(200);
    for loss in [0, 1, 5] {
        let s = run(200_000_000, 200, loss, 20, 11);
        check(&format!("200M/200ms/{loss}%"), &s, rtt, 0.85);
    }
}

#[test]
fn startup_at_1g_1000ms_stays_under_one_bdp_of_queue() {
    let s = run(1_000_000_000, 1000, 0, 3, 12);
    check("1G/1000ms/0%", &s, Duration::from_millis(1000), 0.5);
}
