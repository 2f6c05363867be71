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

/// The 200 Mbit/s link of every run here.
const LINK_BPS: u64 = 200_000_000;

/// How a lone session's feedback reaches the sender.
#[derive(Clone, Copy)]
struct Path {
    rtt_ms: u64,
    loss_pct: u64,
    /// Per-datagram jitter on the forward path.
    jitter: Duration,
    /// Arrivals rounded up to a multiple of this (GRO-like batches of receive timestamps).
    coalesce: Duration,
    /// Sender and receiver shards (one file: one shard has all of it, and each shard's
    /// receive rate is scaled by the shard count, so the per-sample rates read high).
    shards: u8,
}

/// What a lone session's controller did.
struct Lone {
    yields: u32,
    /// The highest link estimate it held.
    link_estimate_bps: u64,
    line: String,
}

/// One lone session with the CLI's default target through a 1-BDP queue.
fn lone_flow(p: Path, seed: u64) -> Lone {
    let cell = Cell {
        link_bps: LINK_BPS,
        rtt_ms: p.rtt_ms,
        loss_pct: p.loss_pct,
        policy: Policy::Fair,
        bdps: 10,
        seed,
    };
    let mut s = grid::scenario(&cell);
    s.rate_bps = DEFAULT_TARGET_BPS;
    s.forward.queue_bytes = LINK_BPS / 8 * p.rtt_ms / 1000;
    s.forward.jitter = p.jitter;
    s.forward.coalesce = p.coalesce;
    s.shards = p.shards;
    let mut sim = Sim::new(&s).expect("scenario sets up");
    let (mut yields, mut link_estimate_bps) = (0, 0);
    let mut steps = 0;
    while sim.step() {
        let snap = sim.rate_snapshot();
        yields = yields.max(snap.yields);
        link_estimate_bps = link_estimate_bps.max(snap.link_estimate_bps);
        steps += 1;
        assert!(steps < MAX_STEPS, "run did not end");
    }
    let r = sim.finish();
    assert!(r.is_ok(), "{}", r.line());
    Lone { yields, link_estimate_bps, line: r.line() }
}

/// One lone session: its yields, and the run's line for the message.
fn lone_flow_yields(rtt_ms: u64, loss_pct: u64, jitter: Duration, seed: u64) -> (u32, String) {
    let path = Path { rtt_ms, loss_pct, jitter, coalesce: Duration::ZERO, shards: 1 };
    let l = lone_flow(path, seed);
    (l.yields, l.line)
}

#[test]
fn a_lone_flow_never_yields() {
    for (loss, jitter_ms, seed) in [(1, 0, 1), (1, 2, 2), (5, 2, 3), (0, 4, 4)] {
        let jitter = Duration::from_millis(jitter_ms);
        let (yields, line) = lone_flow_yields(200, loss, jitter, seed);
        assert_eq!(yields, 0, "200M/200ms/{loss}%, jitter {jitter_ms} ms: {line}");
    }
}

/// A lone session at 200M/200ms with bursty feedback (see the tests below).
fn bursty_lone_flow(loss: u64, seed: u64) {
    let path = Path {
        rtt_ms: 200,
        loss_pct: loss,
        jitter: Duration::ZERO,
        coalesce: Duration::from_millis(1),
        shards: 2,
    };
    let l = lone_flow(path, seed);
    let msg = format!(
        "200M/200ms/{loss}%, 2 shards, 1 ms batches: {} yields, link estimate {} bit/s: {}",
        l.yields, l.link_estimate_bps, l.line
    );
    eprintln!("{msg}");
    assert!(l.link_estimate_bps as f64 <= 1.15 * LINK_BPS as f64, "{msg}");
    assert_eq!(l.yields, 0, "{msg}");
}

/// Bursty feedback: datagrams reach the receiver in GRO-like batches (arrivals rounded up to
/// 1 ms) and the session has two shards but one file, so one shard carries everything (the
/// emulated WAN under load read ~400 Mbit/s on the 200 Mbit/s link when the session scaled one
/// shard's receive rate by the shard count; main's 3ae2900 sums the shards' rates instead).
/// The link estimate must stay near the link and the flow must not take the newcomer's yield.
#[test]
fn a_lone_flow_with_bursty_feedback_keeps_its_link_estimate_and_never_yields() {
    bursty_lone_flow(1, 5);
    bursty_lone_flow(5, 6);
}
