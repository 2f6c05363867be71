//! Fairness, policy and node-cap scenarios on the multi-flow model ([`super::flows`]), with the
//! issue's acceptance checks. Each function returns the table lines and whether it passed.
//!
//! Common set-up: a 100 Mbit/s bottleneck with a queue of one BDP at 200 ms (2.5 MB, so the
//! TCP-like flow is not starved by a shallow buffer), haul flows with a target of 1.25 × the
//! link, seeds fixed.

use super::flows::{FlowKind, FlowSpec, MultiResult, MultiScenario, jain, run};
use haul_proto::rate::Policy;
use haul_proto::time::Duration;

pub const LINK_BPS: u64 = 100_000_000;
/// Window for "over time" figures.
pub const WINDOW: Duration = Duration::from_secs(1);

fn haul(policy: Policy, rtt_ms: u64, start_s: u64) -> FlowSpec {
    FlowSpec {
        kind: FlowKind::Haul { policy, target_bps: LINK_BPS / 4 * 5 },
        rtt: Duration::from_millis(rtt_ms),
        start: Duration::from_secs(start_s),
        capped: false,
    }
}

fn tcp(rtt_ms: u64, start_s: u64) -> FlowSpec {
    FlowSpec {
        kind: FlowKind::Tcp,
        rtt: Duration::from_millis(rtt_ms),
        start: Duration::from_secs(start_s),
        capped: false,
    }
}

fn scenario(seed: u64, flows: Vec<FlowSpec>, duration: Duration) -> MultiScenario {
    MultiScenario {
        seed,
        link_bps: LINK_BPS,
        loss: 0.0,
        queue_bytes: LINK_BPS / 8 / 5,
        flows,
        duration,
        node_cap_bps: None,
    }
}

fn mbps(x: f64) -> String {
    format!("{:.1}", x / 1e6)
}

fn name(f: &FlowSpec) -> String {
    match f.kind {
        FlowKind::Haul { policy, .. } => format!("{}/{}ms", policy.name(), f.rtt.as_millis()),
        FlowKind::Tcp => format!("tcp-reno/{}ms", f.rtt.as_millis()),
    }
}

/// Per-second Jain index and utilization from `from` on; the first second (after `from`)
/// from which both stay at or above the thresholds for the rest of the run.
fn over_time(
    r: &MultiResult,
    from: Duration,
    end: Duration,
    lines: &mut Vec<String>,
) -> Option<Duration> {
    let at = |t: Duration| {
        let rates = r.rates_bps(t, t + WINDOW);
        let active: Vec<f64> =
            rates.iter().zip(&r.flows).filter(|(_, f)| f.start <= t).map(|(x, _)| *x).collect();
        (jain(&active), active.iter().sum::<f64>() / r.link_bps as f64)
    };
    settled_after(&at, from, end, lines)
}

/// Jain's index and utilization (`at(t)`: over the [`WINDOW`] from `t`) every second from
/// `from` on, as one line of every other second; the first second (after `from`) from which
/// Jain ≥ 0.95 and utilization ≥ 90% hold for the rest of the run.
pub fn settled_after(
    at: &dyn Fn(Duration) -> (f64, f64),
    from: Duration,
    end: Duration,
    lines: &mut Vec<String>,
) -> Option<Duration> {
    let mut t = from;
    let mut settled: Option<Duration> = None;
    let mut row = String::from("  t-last_start(s) jain/util:");
    while t + WINDOW <= end {
        let (j, util) = at(t);
        let good = j >= 0.95 && util >= 0.90;
        if good {
            settled.get_or_insert(t);
        } else {
            settled = None;
        }
        let s = t.saturating_sub(from).as_secs_f64();
        if (s as u64).is_multiple_of(2) {
            row.push_str(&format!(" {s:.0}:{j:.2}/{:.0}%", util * 100.0));
        }
        t = t + WINDOW;
    }
    lines.push(row);
    settled.map(|s| s.saturating_sub(from))
}

/// `n` fair flows, RTTs alternating 20 and 200 ms, starts 5 s apart.
pub fn fair_flows(n: usize, seed: u64) -> (Vec<String>, bool) {
    let flows: Vec<FlowSpec> = (0..n)
        .map(|i| haul(Policy::Fair, if i % 2 == 0 { 20 } else { 200 }, 5 * i as u64))
        .collect();
    let last = Duration::from_secs(5 * (n as u64 - 1));
    let end = last + Duration::from_secs(30);
    let r = run(&scenario(seed, flows.clone(), end));
    let tail = r.rates_bps(end.saturating_sub(Duration::from_secs(10)), end);
    let j = jain(&tail);
    let util = tail.iter().sum::<f64>() / LINK_BPS as f64;
    let mut lines = vec![format!(
        "{n} fair flows ({}), starts 5 s apart, 100 Mbit/s: last 10 s rates {} Mbit/s, Jain {j:.3}, combined {:.1}%, queue mean {:.2} ms p99 {:.2} ms",
        flows.iter().map(name).collect::<Vec<_>>().join(", "),
        tail.iter().map(|x| mbps(*x)).collect::<Vec<_>>().join("/"),
        util * 100.0,
        r.queue_mean.as_secs_f64() * 1e3,
        r.queue_p99.as_secs_f64() * 1e3,
    )];
    let settled = over_time(&r, last, end, &mut lines);
    let pass = settled.is_some_and(|s| s <= Duration::from_secs(10));
    lines.push(format!(
        "  Jain >= 0.95 at >= 90% from {} after the last start: {}",
        settled.map_or("never".into(), |s| format!("{:.0} s", s.as_secs_f64())),
        if pass { "PASS" } else { "FAIL" }
    ));
    (lines, pass)
}

/// Two flows over the last 20 s of a 40 s run; returns the lines, rates and the queue.
fn pair(a: FlowSpec, b: FlowSpec, seed: u64) -> (Vec<f64>, MultiResult) {
    let end = Duration::from_secs(40);
    let r = run(&scenario(seed, vec![a, b], end));
    (r.rates_bps(Duration::from_secs(20), end), r)
}

/// High against fair: high takes 1.6–2.4× fair's share. Both start orders are run: a flow
/// that starts into a standing queue mistakes it for propagation delay and gains.
pub fn high_vs_fair(seed: u64) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut pass = true;
    for (what, fair, high) in [
        ("high starts 2 s later", haul(Policy::Fair, 50, 0), haul(Policy::High, 50, 2)),
        ("fair starts 2 s later", haul(Policy::Fair, 50, 2), haul(Policy::High, 50, 0)),
    ] {
        let (x, _) = pair(fair, high, seed);
        let ratio = x[1] / x[0].max(1.0);
        let ok = (1.6..=2.4).contains(&ratio);
        pass &= ok;
        lines.push(format!(
            "high vs fair (50 ms, {what}): fair {} high {} Mbit/s, high/fair {ratio:.2} (1.6-2.4): {}",
            mbps(x[0]),
            mbps(x[1]),
            if ok { "PASS" } else { "FAIL" }
        ));
    }
    (lines, pass)
}

/// Low alone (≥ 90% of the link), against fair and against TCP (≤ 20%), and fair against TCP
/// (reported).
pub fn policies(seed: u64) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let end = Duration::from_secs(30);
    let alone = run(&scenario(seed, vec![haul(Policy::Low, 50, 0)], end));
    let x = alone.rates_bps(Duration::from_secs(10), end)[0];
    let p1 = x >= 0.9 * LINK_BPS as f64;
    lines.push(format!(
        "low alone (50 ms): {} Mbit/s = {:.1}% of the link (>= 90%): {}, queue mean {:.2} ms",
        mbps(x),
        x * 100.0 / LINK_BPS as f64,
        if p1 { "PASS" } else { "FAIL" },
        alone.queue_mean.as_secs_f64() * 1e3
    ));
    let mut pass = p1;
    let cases = [
        ("low vs fair (fair first)", haul(Policy::Fair, 50, 0), haul(Policy::Low, 50, 2)),
        ("low vs fair (low first)", haul(Policy::Low, 50, 0), haul(Policy::Fair, 50, 2)),
        ("low vs tcp-reno (tcp first)", tcp(50, 0), haul(Policy::Low, 50, 2)),
        ("low vs tcp-reno (low first)", haul(Policy::Low, 50, 0), tcp(50, 2)),
    ];
    for (what, a, b) in cases {
        let (x, _) = pair(a, b, seed);
        let low = if matches!(a.kind, FlowKind::Haul { policy: Policy::Low, .. }) { 0 } else { 1 };
        let share = x[low] / (x[0] + x[1]).max(1.0);
        let ok = share <= 0.20;
        pass &= ok;
        lines.push(format!(
            "{what}: {} {} / {} {} Mbit/s, low's share {:.1}% (<= 20%): {}",
            name(&a),
            mbps(x[0]),
            name(&b),
            mbps(x[1]),
            share * 100.0,
            if ok { "PASS" } else { "FAIL" }
        ));
    }
    let (x, r) = pair(haul(Policy::Fair, 50, 0), tcp(50, 2), seed);
    lines.push(format!(
        "fair vs tcp-reno (reported): fair {} tcp {} Mbit/s, fair's share {:.1}%, queue mean {:.1} ms",
        mbps(x[0]), mbps(x[1]), x[0] * 100.0 / (x[0] + x[1]).max(1.0), r.queue_mean.as_secs_f64() * 1e3
    ));
    (lines, pass)
}

/// Three fair sessions (RTT 20, 50, 200 ms) under one 60 Mbit/s node cap on the 100 Mbit/s
/// link: every second after the first 5 s, their sum stays within 2% of the cap (and below it).
pub fn node_cap(seed: u64) -> (Vec<String>, bool) {
    let cap = 60_000_000u64;
    let mut flows =
        vec![haul(Policy::Fair, 20, 0), haul(Policy::Fair, 50, 1), haul(Policy::Fair, 200, 2)];
    for f in &mut flows {
        f.capped = true;
    }
    let end = Duration::from_secs(30);
    let mut sc = scenario(seed, flows, end);
    sc.node_cap_bps = Some(cap);
    let r = run(&sc);
    let mut worst: f64 = 0.0;
    let mut t = Duration::from_secs(5);
    while t + WINDOW <= end {
        let sum: f64 = r.rates_bps(t, t + WINDOW).iter().sum();
        worst = worst.max((sum - cap as f64).abs() / cap as f64);
        t = t + WINDOW;
    }
    let x = r.rates_bps(Duration::from_secs(5), end);
    let pass = worst <= 0.02;
    (
        vec![format!(
            "node cap 60 Mbit/s, 3 fair sessions (20/50/200 ms) on 100 Mbit/s: {} Mbit/s, sum {}; worst 1-s deviation from the cap {:.2}% (<= 2%): {}",
            x.iter().map(|v| mbps(*v)).collect::<Vec<_>>().join("/"),
            mbps(x.iter().sum()),
            worst * 100.0,
            if pass { "PASS" } else { "FAIL" }
        )],
        pass,
    )
}
