//! Property tests of the controllers: random operation sequences keep every invariant
//! (docs/PROTOCOL.md §7.6). Bounded: a few hundred cases of at most a few hundred operations.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Feedback { rtt_us: u64, q_us: u64, recv_bps: u64, loss: f64 },
    Send(u64),
    Silence(u64),
    Limits { min_bps: u64, target_bps: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..2_000_000_000).prop_map(Op::Advance),
        (
            prop_oneof![Just(0u64), 0u64..2_000_000, Just(u64::MAX / 2_000)],
            prop_oneof![Just(0u64), 0u64..500_000, Just(u64::MAX / 2_000)],
            prop_oneof![Just(0u64), any::<u64>()],
            prop_oneof![Just(0.0), Just(f64::NAN), Just(f64::INFINITY), -1.0f64..2.0],
        )
            .prop_map(|(rtt_us, q_us, recv_bps, loss)| Op::Feedback {
                rtt_us,
                q_us,
                recv_bps,
                loss
            }),
        any::<u64>().prop_map(Op::Send),
        (0u64..10_000_000).prop_map(Op::Silence),
        (
            prop_oneof![Just(0u64), any::<u64>()],
            prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()]
        )
            .prop_map(|(min_bps, target_bps)| Op::Limits { min_bps, target_bps }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Fixed), Just(Policy::High), Just(Policy::Fair), Just(Policy::Low)]
}

fn within(c: &dyn RateController) -> bool {
    let l = c.limits();
    let r = c.rate_bps();
    r >= l.min_bps && r <= l.target_bps && r >= 1
}

fn fb(rtt_ms: u64, q_us: u64, recv_bps: u64) -> FeedbackSample {
    FeedbackSample {
        rtt: Duration::from_millis(rtt_ms),
        rtt_min: Duration::ZERO,
        queuing_delay: Duration::from_micros(q_us),
        recv_rate_bps: recv_bps,
        loss_fraction: 0.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_rate_within_limits(
        p in policy(),
        min_bps in 0u64..1_000_000_000,
        target_bps in prop_oneof![Just(0u64), 1u64..100_000_000_000, Just(u64::MAX)],
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        let mut c = controller_for(p, RateLimits { min_bps, target_bps });
        let mut now = Instant::ZERO;
        prop_assert!(within(c.as_ref()));
        for o in ops {
            match o {
                Op::Advance(ns) => now += Duration::from_nanos(ns),
                Op::Feedback { rtt_us, q_us, recv_bps, loss } => {
                    let s = FeedbackSample {
                        rtt: Duration::from_micros(rtt_us),
                        rtt_min: Duration::from_micros(rtt_us / 2),
                        queuing_delay: Duration::from_micros(q_us),
                        recv_rate_bps: recv_bps,
                        loss_fraction: loss,
                    };
                    c.on_feedback(now, &s);
                }
                Op::Send(b) => c.on_send(now, b),
                Op::Silence(us) => c.on_silence(now, Duration::from_micros(us)),
                Op::Limits { min_bps, target_bps } => {
                    c.set_limits(now, RateLimits { min_bps, target_bps });
                }
            }
            prop_assert!(within(c.as_ref()), "rate {} limits {:?}", c.rate_bps(), c.limits());
        }
    }

    /// After any history, a new limit holds at once (well within 2 RTT): the very next rate is
    /// inside it, and stays inside across the next 2 RTT of feedback.
    #[test]
    fn a_live_limit_change_takes_effect_within_two_rtt(
        p in policy(),
        rtt_ms in 1u64..1_000,
        warm in 0usize..200,
        new_target in 1_000_000u64..10_000_000_000,
        new_min_frac in 0u64..100,
    ) {
        let mut c = controller_for(p, RateLimits { min_bps: 0, target_bps: 10_000_000_000 });
        let mut now = Instant::ZERO;
        let step = Duration::from_millis(2);
        for i in 0..warm {
            now += step;
            c.on_feedback(now, &fb(rtt_ms, (i as u64 * 37) % 3_000, 1_000_000_000));
        }
        let new = RateLimits { min_bps: new_target / 100 * new_min_frac, target_bps: new_target };
        c.set_limits(now, new);
        prop_assert!(c.rate_bps() <= new.target_bps && c.rate_bps() >= new.min_bps);
        let end = now + Duration::from_millis(2 * rtt_ms);
        while now < end {
            now += step;
            c.on_feedback(now, &fb(rtt_ms, 0, new.target_bps));
            prop_assert!(c.rate_bps() <= new.target_bps && c.rate_bps() >= new.min_bps);
        }
    }

    /// A blackout (silence, then feedback showing an empty queue again) is followed by a
    /// return to the rate the path allows: back above 90% of the target within 8 RTT.
    #[test]
    fn it_recovers_after_a_blackout(
        p in prop_oneof![Just(Policy::High), Just(Policy::Fair), Just(Policy::Low)],
        rtt_ms in 5u64..1_000,
        silences in 1usize..6,
    ) {
        let target = 1_000_000_000;
        let mut c = controller_for(p, RateLimits { min_bps: 1_000_000, target_bps: target });
        let mut now = Instant::ZERO;
        for _ in 0..silences {
            now += Duration::from_millis(4 * rtt_ms);
            c.on_silence(now, Duration::from_millis(4 * rtt_ms));
        }
        prop_assert!(c.rate_bps() < target);
        let end = now + Duration::from_millis(8 * rtt_ms);
        let step = Duration::from_millis(2);
        while now < end {
            now += step;
            c.on_feedback(now, &fb(rtt_ms, 0, c.rate_bps()));
        }
        prop_assert!(c.rate_bps() >= target / 10 * 9, "rate {} after recovery", c.rate_bps());
    }
}

#[test]
fn random_loss_alone_does_not_lower_the_rate() {
    let mut c = AdaptiveRate::new(Policy::Fair, RateLimits { min_bps: 0, target_bps: 1 << 30 });
    let mut now = Instant::ZERO;
    let mut last = 0;
    for _ in 0..2_000 {
        now += Duration::from_millis(2);
        let mut s = fb(100, 0, c.rate_bps());
        s.loss_fraction = 0.1;
        c.on_feedback(now, &s);
        assert!(c.rate_bps() >= last);
        last = c.rate_bps();
    }
    assert_eq!(last, 1 << 30);
}

#[test]
fn rising_delay_lowers_the_rate() {
    let mut c = AdaptiveRate::new(Policy::Fair, RateLimits { min_bps: 0, target_bps: 1 << 30 });
    let mut now = Instant::ZERO;
    for _ in 0..200 {
        now += Duration::from_millis(2);
        c.on_feedback(now, &fb(50, 0, c.rate_bps()));
    }
    let before = c.rate_bps();
    for _ in 0..100 {
        now += Duration::from_millis(2);
        c.on_feedback(now, &fb(50, 20_000, before / 2));
    }
    assert!(c.rate_bps() < before / 2, "{} vs {before}", c.rate_bps());
    assert!(!c.is_starting());
}

/// The emulated-WAN regression: a busy sender that sends under half what its rate allows, with
/// an empty queue, must not wind the rate up (it would burst once the sender caught up).
#[test]
fn a_sender_that_does_not_keep_up_does_not_wind_the_rate_up() {
    let limits = RateLimits { min_bps: 0, target_bps: 10_000_000_000 };
    let mut c = AdaptiveRate::new(Policy::Fair, limits);
    let mut now = Instant::ZERO;
    let step = Duration::from_millis(2);
    // The sender manages 100 Mbit/s whatever it is asked for.
    let sent_per_step = 100_000_000 / 8 * step.as_nanos() / 1_000_000_000;
    for _ in 0..50 {
        now += step;
        c.on_send(now, sent_per_step);
        c.on_feedback(now, &fb(100, 0, 100_000_000));
    }
    let settled = c.rate_bps();
    for _ in 0..2_000 {
        now += step;
        c.on_send(now, sent_per_step);
        c.on_feedback(now, &fb(100, 0, 100_000_000));
    }
    assert!(c.rate_bps() <= settled, "{} grew from {settled}", c.rate_bps());
    assert!(settled <= super::adaptive::INITIAL_RATE_MAX_BPS, "{settled}");
}

/// The emulated-WAN stall: after a blackout the first samples read the backlog the stall left
/// (seconds of "queue", a few Mbit/s delivered). The restart must resume at the halved rate
/// and keep its bottleneck estimate, not crawl at what those samples showed.
#[test]
fn a_restart_after_a_blackout_does_not_crawl_at_the_backlog_s_rate() {
    let limits = RateLimits { min_bps: 0, target_bps: 10_000_000_000 };
    let mut c = AdaptiveRate::new(Policy::Fair, limits);
    let mut now = Instant::ZERO;
    let step = Duration::from_millis(2);
    // What a 200 Mbit/s bottleneck delivers and the queue it shows (10 ms when overrun).
    let path = |rate: u64| (rate.min(200_000_000), if rate > 200_000_000 { 10_000 } else { 0 });
    // 200 Mbit/s path, 200 ms RTT: settle.
    for _ in 0..3_000 {
        now += step;
        let (r, q) = path(c.rate_bps());
        c.on_send(now, r / 8 * 2 / 1_000);
        c.on_feedback(now, &fb(200, q, r));
    }
    let estimate = c.snapshot().link_estimate_bps;
    assert!(estimate > 150_000_000, "estimate {estimate}");
    c.on_silence(now, Duration::from_secs(1));
    let halved = c.rate_bps();
    // The stall's backlog: 1.7 s of queue, 2.6 Mbit/s delivered.
    for _ in 0..20 {
        now += step;
        c.on_send(now, halved / 8 * 2 / 1_000);
        c.on_feedback(now, &fb(200, 1_700_000, 2_600_000));
    }
    assert!(!c.is_starting());
    assert!(c.snapshot().link_estimate_bps >= estimate, "{:?}", c.snapshot());
    // Once the backlog is gone, the rate is back near the path's within a few RTT.
    for _ in 0..1_000 {
        now += step;
        let (r, q) = path(c.rate_bps());
        c.on_send(now, r / 8 * 2 / 1_000);
        c.on_feedback(now, &fb(200, q, r));
    }
    assert!(c.rate_bps() >= 150_000_000, "{:?}", c.snapshot());
}

/// Regression (emulated WAN, 200 Mbit/s / 200 ms / 5%, quiet machine): a receiver that handled
/// a backlog of datagrams at once reported a few rates of Gbit/s among its first samples; the
/// mean over the RTT put the link at 2,274 Mbit/s, and the rate went to 2.5 Gbit/s. The
/// estimate startup leaves is the median's, within 20% of the path.
#[test]
fn a_few_wild_delivered_rates_at_startup_do_not_become_the_link_estimate() {
    // A 300 Mbit/s path and a target whose half (the first rate) is under it, so startup
    // grows over several samples before the queue ends it.
    let limits = RateLimits { min_bps: 0, target_bps: 400_000_000 };
    let mut c = AdaptiveRate::new(Policy::Fair, limits);
    let mut now = Instant::ZERO;
    let step = Duration::from_millis(2);
    let (mut k, mut delivered_max) = (0u64, 0u64);
    while c.is_starting() && k < 5_000 {
        k += 1;
        now += step;
        let r = c.rate_bps().min(300_000_000);
        delivered_max = delivered_max.max(r);
        // The queue a rate above the path builds, and one sample in eight read 8x high.
        let q = if c.rate_bps() > 300_000_000 { 6_000 } else { 0 };
        let reported = if k % 8 == 0 { 2_300_000_000 } else { r };
        c.on_send(now, c.rate_bps() / 8 * 2 / 1_000);
        c.on_feedback(now, &fb(200, q, reported));
    }
    assert!(!c.is_starting(), "startup never ended: {:?}", c.snapshot());
    assert!(k >= 8, "startup ran {k} samples: too few to see an outlier");
    let estimate = c.snapshot().link_estimate_bps;
    assert!(
        estimate as f64 <= 1.2 * delivered_max as f64,
        "link estimate {estimate} bit/s, the path delivered at most {delivered_max}: {:?}",
        c.snapshot()
    );
}
