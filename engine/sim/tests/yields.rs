#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The adaptive controller's yields through the simulator (issue 4): a flow alone on its path
//! has no competitor to yield to, so it must never yield.
//!
//! On the emulated WAN (200 Mbit/s, 200 ms, 1%) a lone `haul send` took the newcomer's yield
//! 0.4 s in: its first base-RTT sample read high (the echoed datagram had queued behind the
//! flow's own blind round, and the path's delay varies by a millisecond or more), the base
//! RTT then fell by more than a millisecond (`NEWCOMER_EVIDENCE`), and that fall was taken for
//! a competitor's queue draining. Each run here is one session with the CLI's default target
//! (the blind round) through a bottleneck with a 1-BDP queue, with and without a per-datagram
//! jitter of a few milliseconds on the forward path, and counts the yields.

use haul_proto::rate::Policy;
use haul_proto::time::Duration;
use haul_sim::driver::Sim;
use haul_sim::scenarios::grid::{self, Cell};

/// The CLI's default target rate (`cli/src/args.rs`, DEFAULT_TARGET_RATE_BPS).
const DEFAULT_TARGET_BPS: u64 = 10_000_000_000;
/// Most simulation steps a run may take (a run of a few seconds takes far fewer).
const MAX_STEPS: u64 = 200_000_000;

/// One lone session: its yields, and the run's line for the message.
fn lone_flow_yields(rtt_ms: u64, loss_pct: u64, jitter: Duration, seed: u64) -> (u32, String) {
    let link_bps = 200_000_000;
    let cell = Cell { link_bps, rtt_ms, loss_pct, policy: Policy::Fair, bdps: 10, seed };
    let mut s = grid::scenario(&cell);
    s.rate_bps = DEFAULT_TARGET_BPS;
    s.forward.queue_bytes = link_bps / 8 * rtt_ms / 1000;
    s.forward.jitter = jitter;
    let mut sim = Sim::new(&s).expect("scenario sets up");
    let mut yields = 0;
    let mut steps = 0;
    while sim.step() {
        yields = yields.max(sim.rate_snapshot().yields);
        steps += 1;
        assert!(steps < MAX_STEPS, "run did not end");
    }
    let r = sim.finish();
    assert!(r.is_ok(), "{}", r.line());
    (yields, r.line())
}

#[test]
fn a_lone_flow_never_yields() {
    for (loss, jitter_ms, seed) in [(1, 0, 1), (1, 2, 2), (5, 2, 3), (0, 4, 4)] {
        let jitter = Duration::from_millis(jitter_ms);
        let (yields, line) = lone_flow_yields(200, loss, jitter, seed);
        assert_eq!(yields, 0, "200M/200ms/{loss}%, jitter {jitter_ms} ms: {line}");
    }
}
