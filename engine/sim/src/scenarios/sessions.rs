//! Fairness from real sessions: several complete haul sessions (sender and receiver shards,
//! real crypto, NAKs, resends, simulated disks) whose senders share one bottleneck queue.
//!
//! Each session is a [`Sim`] with its own forward link that adds only the session's
//! propagation delay and random loss (at a rate far above the bottleneck's), and a reverse
//! link of its own; all senders' datagrams first pass one [`SharedLink`] (the bottleneck's
//! FIFO queue and serializer). The driver always steps the session whose clock is earliest on
//! the shared clock, so the bottleneck sees datagrams in time order; sessions start at their
//! own times and all stop at the end of the run. Every [`SAMPLE`] it records each session's
//! file bytes received (each byte once): the rates, Jain's index and utilization below come
//! from those, as goodput (utilization is over link × payload fraction).
//!
//! Invariants: deterministic from the seed; at most [`MAX_SESSIONS`] sessions; the samples
//! are bounded by the run's length over [`SAMPLE`] (at most [`MAX_SAMPLES`]).

use crate::driver::{SharedLink, Sim};
use crate::net::{Link, LinkConfig};
use crate::report::RunReport;
use crate::scenario::{FileKind, FileSpec, Scenario};
use crate::scenarios::flows::jain;
use crate::scenarios::grid::{payload_fraction, set_up_long_run};
use haul_proto::rate::Policy;
use haul_proto::time::{Duration, Instant};

/// Most sessions one run holds.
pub const MAX_SESSIONS: usize = 8;
/// How often the received bytes are sampled.
pub const SAMPLE: Duration = Duration::from_millis(100);
/// Most samples one run keeps (10 simulated minutes).
pub const MAX_SAMPLES: usize = 6_000;
/// Rate of each session's own forward link: only its delay and loss matter.
const OWN_LINK_BPS: u64 = 100_000_000_000;

/// One session of a run.
#[derive(Clone, Copy, Debug)]
pub struct SessionSpec {
    pub policy: Policy,
    /// The sender's target rate (`u64::MAX` or the default 10 Gbit/s: no limit).
    pub target_bps: u64,
    pub rtt: Duration,
    pub start: Duration,
}

/// Several sessions through one bottleneck.
#[derive(Clone, Debug)]
pub struct SessionsScenario {
    pub seed: u64,
    pub link_bps: u64,
    /// Random loss on every session's own links, both directions.
    pub loss: f64,
    pub queue_bytes: u64,
    pub sessions: Vec<SessionSpec>,
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug)]
pub struct SessionsResult {
    pub link_bps: u64,
    pub sessions: Vec<SessionSpec>,
    /// Per sample (every [`SAMPLE`] from 0): each session's file bytes received so far.
    pub samples: Vec<Vec<u64>>,
    /// Each session's own report (failures, resends); `stopped` is set for those still running
    /// at the end.
    pub reports: Vec<RunReport>,
    /// The bottleneck rate each sender's last startup measured (its `α` follows it when that
    /// is under the target), bits per second, 0 if none.
    pub link_estimates_bps: Vec<u64>,
    /// Each sender's base-RTT estimate at its end, 0 if none: a session that took a standing
    /// queue for propagation delay shows it here.
    pub base_rtts: Vec<Duration>,
    /// Queuing delay at the shared bottleneck over the whole run.
    pub queue_mean: Duration,
    pub queue_p99: Duration,
}

impl SessionsResult {
    /// Each session's goodput over `[from, to)`, bits per second.
    pub fn rates_bps(&self, from: Duration, to: Duration) -> Vec<f64> {
        let step = SAMPLE.as_nanos();
        let last = self.samples.len().saturating_sub(1);
        let a = ((from.as_nanos() / step) as usize).min(last);
        let b = ((to.as_nanos() / step) as usize).min(last);
        let secs = (b.saturating_sub(a)) as f64 * SAMPLE.as_secs_f64();
        (0..self.sessions.len())
            .map(|i| {
                let at = |k: usize| self.samples.get(k).and_then(|s| s.get(i)).copied();
                let bytes = at(b).unwrap_or(0).saturating_sub(at(a).unwrap_or(0));
                if secs > 0.0 { bytes as f64 * 8.0 / secs } else { 0.0 }
            })
            .collect()
    }

    /// Jain's index over the sessions started by `from`, and their combined goodput as a
    /// share of link × payload fraction, over `[from, from + window)`.
    pub fn jain_and_utilization(&self, from: Duration, window: Duration) -> (f64, f64) {
        let rates = self.rates_bps(from, from + window);
        let active: Vec<f64> = rates
            .iter()
            .zip(&self.sessions)
            .filter(|(_, s)| s.start <= from)
            .map(|(x, _)| *x)
            .collect();
        let util = active.iter().sum::<f64>() / (self.link_bps as f64 * payload_fraction());
        (jain(&active), util)
    }

    /// Whether every session ran without a failure.
    pub fn is_ok(&self) -> bool {
        self.reports.iter().all(|r| r.failures.is_empty())
    }
}

/// The scenario one session runs: a virtual file larger than the run can move, so it stops
/// at the end of the run still sending.
fn session_scenario(sc: &SessionsScenario, i: usize, s: &SessionSpec) -> Scenario {
    let mut out = Scenario::clean(sc.seed.wrapping_mul(31).wrapping_add(i as u64));
    let one_way = s.rtt.div(2);
    let mut fwd = LinkConfig::clean(OWN_LINK_BPS, one_way);
    fwd.loss = sc.loss;
    let mut rev = LinkConfig::clean(sc.link_bps, one_way);
    rev.loss = sc.loss;
    out.forward = fwd;
    out.reverse = rev;
    let bdp = sc.link_bps / 8 * (s.rtt.as_millis()) / 1000;
    let run_bytes = sc.link_bps / 8 * (sc.duration.as_millis() / 1000 + 1);
    out.files = vec![FileSpec { size: run_bytes.saturating_mul(2), kind: FileKind::Virtual }];
    out.block_size_log2 = 20;
    out.window_bytes = (16 * bdp).max(4 << 20);
    out.rate_bps = s.target_bps;
    out.policy = s.policy;
    set_up_long_run(&mut out, sc.duration + Duration::from_secs(1));
    out.stop_at = Some(sc.duration.saturating_sub(s.start));
    out
}

/// A session running on the shared clock.
struct Running {
    index: usize,
    start: Duration,
    sim: Sim,
}

impl Running {
    /// Its clock on the shared clock.
    fn global(&self) -> Instant {
        Instant::ZERO + self.start + self.sim.now().saturating_since(Instant::ZERO)
    }
}

/// Run the sessions to the end of the run.
pub fn run(sc: &SessionsScenario) -> SessionsResult {
    let specs: Vec<SessionSpec> = sc.sessions.iter().take(MAX_SESSIONS).copied().collect();
    let mut cfg = LinkConfig::clean(sc.link_bps, Duration::ZERO);
    cfg.queue_bytes = sc.queue_bytes;
    let shared: SharedLink = std::rc::Rc::new(std::cell::RefCell::new(Link::new(cfg, sc.seed)));
    let mut pending: Vec<usize> = (0..specs.len()).collect();
    pending.sort_by_key(|&i| std::cmp::Reverse(specs[i].start));
    let mut running: Vec<Running> = Vec::new();
    let mut reports: Vec<Option<RunReport>> = (0..specs.len()).map(|_| None).collect();
    let mut received = vec![0u64; specs.len()];
    let mut estimates = vec![0u64; specs.len()];
    let mut base_rtts = vec![Duration::ZERO; specs.len()];
    let mut samples: Vec<Vec<u64>> = Vec::new();
    let end = Instant::ZERO + sc.duration;
    loop {
        let earliest = running.iter().enumerate().min_by_key(|(_, r)| r.global());
        let t = earliest.map_or(end, |(_, r)| r.global());
        // A session due to start before the earliest running one's next step starts now.
        if let Some(&i) = pending.last()
            && Instant::ZERO + specs[i].start <= t
        {
            pending.pop();
            match Sim::new(&session_scenario(sc, i, &specs[i])) {
                Ok(mut sim) => {
                    sim.share_bottleneck(shared.clone(), specs[i].start);
                    running.push(Running { index: i, start: specs[i].start, sim });
                }
                Err(f) => {
                    let mut r = RunReport::default();
                    r.failures.push(f);
                    reports[i] = Some(r);
                }
            }
            continue;
        }
        while samples.len() < MAX_SAMPLES
            && Instant::ZERO + SAMPLE.saturating_mul(samples.len() as u64) <= t
        {
            samples.push(received.clone());
        }
        let Some((k, _)) = earliest else { break };
        let r = &mut running[k];
        let more = r.sim.step();
        received[r.index] = r.sim.received_bytes();
        if !more {
            let done = running.swap_remove(k);
            let snap = done.sim.rate_snapshot();
            estimates[done.index] = snap.link_estimate_bps;
            base_rtts[done.index] = Duration::from_micros(snap.base_rtt_us);
            reports[done.index] = Some(done.sim.finish());
        }
    }
    let q = shared.borrow().queue_delay().clone();
    SessionsResult {
        link_bps: sc.link_bps,
        sessions: specs,
        samples,
        reports: reports.into_iter().map(Option::unwrap_or_default).collect(),
        link_estimates_bps: estimates,
        base_rtts,
        queue_mean: q.mean(),
        queue_p99: q.percentile(99.0),
    }
}

// ---- the fairness and policy checks, from real sessions ----

/// The bottleneck of the tables: as the multi-flow model's (100 Mbit/s, 2.5 MB queue).
pub const TABLE_LINK_BPS: u64 = 100_000_000;
const TABLE_QUEUE_BYTES: u64 = TABLE_LINK_BPS / 8 / 5;
/// Target rate of "no limit": the CLI's default.
pub const UNLIMITED_BPS: u64 = 10_000_000_000;

fn session(policy: Policy, target_bps: u64, rtt_ms: u64, start_s: u64) -> SessionSpec {
    SessionSpec {
        policy,
        target_bps,
        rtt: Duration::from_millis(rtt_ms),
        start: Duration::from_secs(start_s),
    }
}

fn table_run(seed: u64, sessions: Vec<SessionSpec>, duration: Duration) -> SessionsResult {
    run(&SessionsScenario {
        seed,
        link_bps: TABLE_LINK_BPS,
        loss: 0.0,
        queue_bytes: TABLE_QUEUE_BYTES,
        sessions,
        duration,
    })
}

fn mbps_list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{:.1}", x / 1e6)).collect::<Vec<_>>().join("/")
}

fn target_name(bps: u64) -> String {
    if bps >= UNLIMITED_BPS { "unlimited".into() } else { format!("{} Mbit/s", bps / 1_000_000) }
}

/// `n` fair sessions, RTTs alternating 20 and 200 ms, starts `gap_s` apart, each with target
/// `target_bps`; 20 s after the last start. Pass: Jain ≥ 0.95 at ≥ 90% utilization within
/// 10 s of the last start, to the end, and no session failed.
pub fn fair_sessions(n: usize, target_bps: u64, gap_s: u64, seed: u64) -> (Vec<String>, bool) {
    let sessions: Vec<SessionSpec> = (0..n)
        .map(|i| {
            session(Policy::Fair, target_bps, if i % 2 == 0 { 20 } else { 200 }, gap_s * i as u64)
        })
        .collect();
    let last = Duration::from_secs(gap_s * (n as u64).saturating_sub(1));
    let end = last + Duration::from_secs(20);
    let r = table_run(seed, sessions, end);
    let tail_from = end.saturating_sub(Duration::from_secs(10));
    let tail = r.rates_bps(tail_from, end);
    let (j, util) = r.jain_and_utilization(tail_from, Duration::from_secs(10));
    let rtts: Vec<String> = r.sessions.iter().map(|s| format!("{}ms", s.rtt.as_millis())).collect();
    let mut lines = vec![format!(
        "{n} fair sessions (RTT {}, target {}), starts {gap_s} s apart, 100 Mbit/s: startups measured {} Mbit/s; last 10 s goodput {} Mbit/s, Jain {j:.3}, combined {:.1}% of link x payload, queue mean {:.2} ms p99 {:.2} ms",
        rtts.join("/"),
        target_name(target_bps),
        mbps_list(&r.link_estimates_bps.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        mbps_list(&tail),
        util * 100.0,
        r.queue_mean.as_secs_f64() * 1e3,
        r.queue_p99.as_secs_f64() * 1e3,
    )];
    let at = |t: Duration| r.jain_and_utilization(t, super::fairness::WINDOW);
    let settled = super::fairness::settled_after(&at, last, end, &mut lines);
    let pass = r.is_ok() && settled.is_some_and(|s| s <= Duration::from_secs(10));
    lines.push(format!(
        "  Jain >= 0.95 at >= 90% from {} after the last start: {}{}",
        settled.map_or("never".into(), |s| format!("{:.0} s", s.as_secs_f64())),
        if pass { "PASS" } else { "FAIL" },
        failures(&r),
    ));
    (lines, pass)
}

/// Sessions that failed, for a table line.
fn failures(r: &SessionsResult) -> String {
    let bad: Vec<String> = r
        .reports
        .iter()
        .enumerate()
        .filter_map(|(i, x)| x.failures.first().map(|f| format!("session {i}: {f}")))
        .collect();
    if bad.is_empty() { String::new() } else { format!(" ({})", bad.join("; ")) }
}

/// High against fair (1.6–2.4× fair's share) and low against fair (≤ 20%), 50 ms each, the
/// second session starting 2 s after the first, measured over the last 10 s of 20.
pub fn policies(seed: u64) -> (Vec<String>, bool) {
    let t = TABLE_LINK_BPS / 4 * 5;
    let cases = [
        ("high vs fair (high starts 2 s later)", Policy::Fair, Policy::High),
        ("low vs fair (low starts 2 s later)", Policy::Fair, Policy::Low),
    ];
    let mut lines = Vec::new();
    let mut pass = true;
    for (what, first, second) in cases {
        let end = Duration::from_secs(20);
        let r = table_run(seed, vec![session(first, t, 50, 0), session(second, t, 50, 2)], end);
        let x = r.rates_bps(Duration::from_secs(10), end);
        let (fair, other) = (x[0], x[1]);
        let (figure, ok) = if second == Policy::High {
            let ratio = other / fair.max(1.0);
            (format!("high/fair {ratio:.2} (1.6-2.4)"), (1.6..=2.4).contains(&ratio))
        } else {
            let share = other / (fair + other).max(1.0);
            (format!("low's share {:.1}% (<= 20%)", share * 100.0), share <= 0.20)
        };
        let ok = ok && r.is_ok();
        pass &= ok;
        lines.push(format!(
            "{what}, real sessions, 50 ms: {} Mbit/s goodput, {figure}: {}{}",
            mbps_list(&x),
            if ok { "PASS" } else { "FAIL" },
            failures(&r),
        ));
    }
    (lines, pass)
}
