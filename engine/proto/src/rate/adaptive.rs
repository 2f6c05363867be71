//! The adaptive, delay-based controller (docs/PROTOCOL.md §7): policies high, fair and low.
//!
//! It is a rate-paced form of FAST TCP's window law. From each feedback sample it takes the
//! smoothed RTT and the queuing delay `q` (this interval's smallest one-way delay minus the
//! smallest ever seen), keeps a *virtual window* `w` (bits) and paces at `x = w / (base + q̂)`:
//! - `w += γ · dt/rtt · (α − x·q)`: each flow aims to keep `α` bits of its own in the
//!   bottleneck queue, so flows that share a queue converge to rates in the ratio of their `α`
//!   (equal for fair flows, whatever their RTT); high has 1.8α, low α/8 (it yields);
//! - dividing by `base + q̂` makes the rate fall at once when the queue grows; `q̂` adds to the
//!   measured queue what this flow sent beyond its delivered rate in the last RTT (a predictor
//!   for the one-RTT feedback delay), which keeps the loop stable at long RTTs;
//! - loss is not an input: random loss does not lower the rate; rising delay does.
//!
//! `α` is [`ALPHA_TIME`] of traffic at the target rate, so one fair flow alone keeps about
//! `ALPHA_TIME · target / link` of queue (2.5 ms when the target is 1.25 × the link).
//!
//! Startup (docs/RATE.md, "Startup"):
//! - the first round is blind (no feedback yet). When the initial rate is capped at
//!   [`INITIAL_RATE_MAX_BPS`] (the target says nothing of the path: the default, "no limit"),
//!   it sends [`INITIAL_BLIND_BITS`] at that rate, then 1/[`BLIND_SLOWDOWN`] of it until the
//!   first report of a delivered rate, so a first rate far above the bottleneck fills at most
//!   that much of its queue instead of a whole RTT of excess. Half of a target the user set is
//!   sent for the whole round, as before;
//! - then the rate doubles every RTT, and is at least the highest delivered rate (which
//!   restores the pace the blind bits were delivered at: not twice it, since a blind round
//!   delivered at exactly the link's rate shows no queue, and twice the link for one more
//!   blind RTT fills a 1-BDP queue);
//! - it ends when the flow's own backlog reaches `α` or the queue passes
//!   [`STARTUP_EXIT_QUEUE`], or when the delivered rate grew by less than
//!   [`STARTUP_GROWTH`] in [`STARTUP_FLAT_ROUNDS`] rounds in a row (a bottleneck without a
//!   queue that shows). Loss does not end it (random loss is not congestion);
//! - the drain then holds the window at the rate the busy bottleneck carried × base RTT
//!   (at most what startup sent), which empties the queue startup built, and hands over to the
//!   window law; a lone flow below that rate regrows a share of the gap per RTT while its
//!   queue is empty (`regrowth_bits`);
//!
//! Yields (docs/RATE.md, "Yields"): a flow that starts into a queue other flows keep takes it
//! for propagation delay and takes more than its share (0.618 against 0.382 for two flows).
//! So a steady flow that sees a competitor arrive (its delivered rate over the RTT falls under
//! [`YIELD_DROP`] of its recent level while a queue shows) holds at half its delivered rate
//! until it reads the queue empty, and a newcomer that shares the bottleneck holds at half for
//! [`NEWCOMER_YIELD`] after its drain: the queue empties while every flow sends, and every
//! flow's base delay is the path's.
//!
//! Invariants: the rate is always within the (sanitized) limits and finite: every float that
//! reaches it is checked and clamped; no clock is read (time is the `now` argument).

use super::fixed::sanitize;
use super::{FeedbackSample, Policy, RateController, RateLimits, RateSnapshot};
use crate::time::{Duration, Instant};
use std::collections::VecDeque;

/// Most samples the predictor keeps (an RTT's worth at 2 ms feedback up to ~2 s RTT).
const MAX_HISTORY: usize = 1024;
/// A measured queue at least this long means the bottleneck is saturated (the predictor runs).
const SATURATED_QUEUE: Duration = Duration::from_micros(200);

/// Queue each fair flow aims to keep, as time at its target rate.
pub const ALPHA_TIME: Duration = Duration::from_millis(2);
/// Gain of the window law per RTT.
pub const GAIN: f64 = 0.5;
/// First rate, as a fraction of the target: the startup then doubles it every RTT.
pub const INITIAL_TARGET_FRACTION: u64 = 2;
/// The first rate never exceeds this, whatever the target (the default target is 10 Gbit/s,
/// "no limit"): the first RTT is sent blind, and a first rate far above the bottleneck fills
/// its queue and has the excess dropped (measured on the emulator: 26–40% resent when the
/// first rate was a quarter of 10 Gbit/s on a 200 Mbit/s link).
pub const INITIAL_RATE_MAX_BPS: u64 = 1_000_000_000;
/// Weight of one feedback sample in the loss average.
const LOSS_GAIN: f64 = 1.0 / 64.0;
/// The loss average never exceeds this (beyond it the delivered rate says little).
const MAX_LOSS_ESTIMATE: f64 = 0.5;
/// Only a sample whose queuing delay is at most this updates the base RTT.
const BASE_RTT_MAX_QUEUE: Duration = Duration::from_millis(5);
/// Startup also ends when the queue passes this, whatever `α` says.
pub const STARTUP_EXIT_QUEUE: Duration = Duration::from_millis(5);
/// Bits the first, blind round sends at the initial rate before any feedback reports a
/// delivered rate (2 MB). Through a bottleneck far slower than the initial rate nearly all of
/// it queues: 2 MB is 64 ms of a 1-BDP queue at 200 Mbit/s and 200 ms, where a whole blind
/// RTT at 1 Gbit/s (160 Mbit of excess against a 40 Mbit queue) had ~12k datagrams dropped
/// (traced on the emulator). Paths whose queue is smaller than this drop the rest.
pub const INITIAL_BLIND_BITS: u64 = 16_000_000;
/// After [`INITIAL_BLIND_BITS`], the blind round goes on at the initial rate divided by this
/// (125 Mbit/s from 1 Gbit/s): it keeps a path that is at least that fast busy without
/// queuing, and the first feedback restores the pace the blind bits were delivered at.
pub const BLIND_SLOWDOWN: u64 = 8;
/// Startup ends when the highest delivered rate grew by less than this factor ...
pub const STARTUP_GROWTH: f64 = 1.25;
/// ... in this many rounds (RTTs) in a row, each one not limited by the sender.
pub const STARTUP_FLAT_ROUNDS: u32 = 3;
/// With an empty queue, the steady window grows by up to this share of itself per RTT (× GAIN).
pub const PROBE_GROWTH: f64 = 0.125;
/// ... but by no more than this much traffic (as time at the current rate) per RTT: what the
/// window grows by in the RTT before the feedback shows the queue is the queue it overshoots
/// by, so a share of the window would overshoot in proportion to the RTT (measured: a 60 ms
/// queue swing every 6 RTT at 1 s RTT with 6%/RTT growth).
pub const PROBE_MAX_STEP: Duration = Duration::from_millis(8);
/// A lone flow below the link estimate regrows this share of the gap per RTT (see
/// `AdaptiveRate::regrowth_bits`) ...
const REGROWTH_SHARE: f64 = 0.25;
/// ... while what it was delivered over the last RTT (loss-adjusted) is at least this share
/// of what it sent.
const REGROWTH_DELIVERED: f64 = 0.9;
/// A sender that sent less than this share of what its rate allowed over the last RTT did not
/// keep up: its window does not grow. Half, not 0.8: at 0.8 a sender held back by the receive
/// window in the simulator's 10%-loss cells at long RTT stopped growing and lost 1–3% of goodput.
const LIMITED_SHARE: f64 = 0.5;
/// Weight of one sample in the smoothed delivered rate (at least: see `on_sample`).
const CARRIED_GAIN: f64 = 1.0 / 8.0;
/// Longest drain after startup, in RTTs.
const DRAIN_MAX_RTTS: u64 = 4;
/// Smallest RTT the law divides by (feedback of a same-host path can read 0).
const MIN_RTT: Duration = Duration::from_millis(1);
/// `α` is taken at the target rate, or at this many times the bottleneck rate startup measured
/// if that is less. 4, not 2: a flow that starts while another holds the link measures about
/// half of it, and at 2 its `α` fell below the target-based `α` of the first flow (two fair
/// flows drifted to Jain 0.92 in `engine/sim/tests/rate.rs`); at 4 both sit at the target in
/// the simulator (1.25 × the link), and on a 200 Mbit/s path with the default unlimited target
/// `α` is 1.6 Mbit, about 8 ms of queue. Flows whose startups measured different bottleneck
/// rates under an unlimited target still get different `α`: not yet covered by a test.
const ALPHA_LINK_FACTOR: f64 = 4.0;
/// How much `α` the high and low policies have, relative to fair. High's 1.8, not 2: at 2 a
/// lone high flow kept a mean queue of 10.01–10.13 ms at 1000 ms RTT and 0% loss in the
/// simulator's grid (bound 10 ms); at 1.8, 9.63–9.75 ms, and its share against fair is 1.80
/// (real sessions) and 1.98 / 1.71 (flow model), inside the 1.6–2.4x.
const HIGH_ALPHA: f64 = 1.8;
const LOW_ALPHA: f64 = 0.125;
/// A steady flow whose delivered rate over the last RTT falls under this share of its recent
/// level while a queue shows takes it for a competitor's arrival and yields. Its own probing
/// cannot do that: while a queue shows, the bottleneck delivers to a lone flow at its rate.
const YIELD_DROP: f64 = 0.75;
/// The recent level follows a rising delivered rate at once and a falling one with this time
/// constant, in RTTs (a share that shrinks over many RTTs is the window law at work, not an
/// arrival).
const YIELD_LEVEL_RTTS: f64 = 8.0;
/// While yielding, the window is this share of the delivered rate × base RTT: every flow
/// that saw the arrival holds below its share at the same time, so the queue empties and the
/// newcomer, which is sending, reads the path's real delay instead of taking the incumbents'
/// standing queue for it (docs/RATE.md, "Fairness from real sessions").
const YIELD_SHARE: f64 = 0.5;
/// A yield ends when the measured queue is under [`SATURATED_QUEUE`], or after this many RTTs
/// (and at least [`YIELD_MIN_SPAN`]: a newcomer with a longer RTT takes that long to leave its
/// startup and stop refilling the queue).
const YIELD_MAX_RTTS: u64 = 4;
const YIELD_MIN_SPAN: Duration = Duration::from_secs(3);
/// A newcomer's yield after its drain: at [`YIELD_SHARE`], about half this much of the queue
/// drains while the incumbents yield too (a standing queue of several flows' `α` is tens of
/// ms). It cannot end on an empty queue: its own base delay may include the standing queue.
const NEWCOMER_YIELD: Duration = Duration::from_millis(100);
/// A flow delivered under this share of the rate its startup measured while a queue shows
/// shares the bottleneck (alone, a saturated bottleneck delivers it at its rate; the estimate
/// is the lesser of the startup's peak and its last RTT's mean, so it does not read high).
const NEWCOMER_SHARE: f64 = 0.9;
/// ... and only if at least this share of the last RTT's samples showed a queue (a standing
/// queue, not a path's delay varying).
const NEWCOMER_STANDING_SHARE: f64 = 0.9;
/// After a yield, the next one waits this many RTTs, and at least [`YIELD_COOLDOWN_SPAN`]
/// (the yield's own dip in the delivered rate, and the shares moving while the flows settle,
/// must not start another).
const YIELD_COOLDOWN_RTTS: u64 = 8;
const YIELD_COOLDOWN_SPAN: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Exponential growth until the flow's own queue shows.
    Startup,
    /// After startup: the window holds at the bottleneck's rate × base RTT while the queue
    /// startup built drains (the window law would read that queue as a reason to shrink).
    Drain { since: Instant },
    /// The window law.
    Steady,
    /// The window holds at [`YIELD_SHARE`] of what the flow was delivered for `span`, then goes
    /// back to `restore_bits` and the window law. An incumbent that sees a competitor arrive
    /// (see [`AdaptiveRate::is_competitor_arriving`]) yields until it sees the queue empty
    /// (`until_empty`); a newcomer yields for [`NEWCOMER_YIELD`] after its drain.
    Yield { since: Instant, restore_bits: f64, span: Duration, until_empty: bool },
}

/// One feedback sample as the last RTT's history keeps it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// When it arrived.
    at: Instant,
    /// Since when its bits were sent: the sample's own time except for the first sample, whose
    /// bits were sent from the first send on (a whole blind round).
    from: Instant,
    /// Bits sent since the previous sample, and bits the rate allowed in that time.
    sent_bits: f64,
    allowed_bits: f64,
    /// The sample's carried rate, or 0 if it reported none.
    carried_bps: f64,
    /// Whether a queue showed ([`SATURATED_QUEUE`]): the bottleneck was busy, so what it
    /// carried for a lone flow was its rate.
    saturated: bool,
}

#[derive(Clone, Debug)]
pub struct AdaptiveRate {
    policy: Policy,
    limits: RateLimits,
    mode: Mode,
    rate_bps: u64,
    /// Virtual window, bits; `None` until the first sample gives an RTT.
    window_bits: Option<f64>,
    /// Smallest RTT seen minus its queuing delay.
    base_rtt: Duration,
    last_feedback: Option<Instant>,
    /// The samples of the last RTT (see [`Sample`]), for the predictor, to tell a sender that
    /// does not keep up, and for the delivered rate over the RTT.
    history: VecDeque<Sample>,
    /// When the first datagram before any feedback was sent.
    first_send: Option<Instant>,
    /// Average share of sent traffic the receiver reports lost (random loss, not congestion):
    /// the delivered rate divided by `1 - loss` is the rate the bottleneck carried.
    loss_avg: f64,
    /// Samples folded into `loss_avg` so far, up to `1 / LOSS_GAIN` (the warm-up count).
    loss_samples: u32,
    /// Loss-adjusted delivered rate, smoothed over a few samples (one 2-ms sample counts a
    /// handful of datagrams), and its highest value during startup, bits per second.
    carried_avg_bps: f64,
    startup_peak_bps: f64,
    /// The rate the blind round's first [`INITIAL_BLIND_BITS`] went out at (0: none), and what
    /// the flow sent over startup's last RTT when it ended (the drain's window is at most that
    /// rate × base RTT); see [`AdaptiveRate::sent_ceiling_bps`].
    blind_burst_bps: f64,
    exit_sent_bps: f64,
    /// The rate the drain saw the bottleneck carry (see `AdaptiveRate::regrowth_bits`).
    regrow_to_bps: f64,
    /// The bottleneck rate the last startup measured (its peak delivered rate), for `α`.
    link_estimate_bps: Option<f64>,
    /// The rate startup began at, and the bits sent before the first delivered rate was
    /// reported (the blind round); `None` once one was.
    initial_rate_bps: u64,
    blind_bits: Option<u64>,
    /// Startup's rounds: when the current one began, the highest delivered rate at its start,
    /// and how many rounds in a row grew it by less than [`STARTUP_GROWTH`].
    round_start: Option<Instant>,
    round_peak_bps: f64,
    flat_rounds: u32,
    /// IP bits the shards reported sent: in total, and since the last sample.
    sent_bits: u64,
    sent_since_sample_bits: u64,
    /// Whether any sending was reported (a controller driven without `on_send`, as in unit
    /// tests, predicts from its own rate instead).
    saw_send: bool,
    /// The recent level of the delivered rate over an RTT, and when the last yield ended
    /// (see [`YIELD_DROP`]).
    level_bps: f64,
    last_yield_end: Option<Instant>,
    /// After a blackout (`on_silence`): the rate the restart resumes at, at least, when its
    /// startup ends, and whether this startup is such a restart.
    restart_floor_bps: f64,
    restarted: bool,
    /// Until when the newcomer's yield ([`NEWCOMER_YIELD`]) may start after the drain.
    newcomer_due_until: Option<Instant>,
    /// Yields started so far, for the snapshot.
    yields: u32,
    /// The last sample's measured and predicted queue, for the snapshot.
    last_queue: Duration,
    last_predicted_queue: Duration,
}

impl AdaptiveRate {
    /// A controller for `policy` (`Fixed` is accepted and behaves as fair: use
    /// [`super::controller_for`] to get a fixed-rate one).
    pub fn new(policy: Policy, limits: RateLimits) -> Self {
        let limits = sanitize(limits);
        let rate_bps = (limits.target_bps / INITIAL_TARGET_FRACTION)
            .min(INITIAL_RATE_MAX_BPS)
            .clamp(limits.min_bps, limits.target_bps);
        AdaptiveRate {
            policy,
            limits,
            mode: Mode::Startup,
            rate_bps: rate_bps.max(1),
            window_bits: None,
            base_rtt: Duration::MAX,
            last_feedback: None,
            history: VecDeque::new(),
            first_send: None,
            loss_avg: 0.0,
            loss_samples: 0,
            carried_avg_bps: 0.0,
            startup_peak_bps: 0.0,
            blind_burst_bps: 0.0,
            exit_sent_bps: f64::INFINITY,
            regrow_to_bps: 0.0,
            link_estimate_bps: None,
            initial_rate_bps: rate_bps.max(1),
            // A first rate that is half a target the user set is the user's word on the path
            // and is sent for a whole RTT (the simulator's grid: target 1.25 × the link); one
            // capped at INITIAL_RATE_MAX_BPS (the default target, "no limit") is a guess, and
            // its blind round is bounded.
            blind_bits: (limits.target_bps / INITIAL_TARGET_FRACTION > INITIAL_RATE_MAX_BPS)
                .then_some(0),
            round_start: None,
            round_peak_bps: 0.0,
            flat_rounds: 0,
            sent_bits: 0,
            sent_since_sample_bits: 0,
            saw_send: false,
            level_bps: 0.0,
            last_yield_end: None,
            restart_floor_bps: 0.0,
            restarted: false,
            newcomer_due_until: None,
            yields: 0,
            last_queue: Duration::ZERO,
            last_predicted_queue: Duration::ZERO,
        }
    }

    /// Bits of its own this flow aims to keep queued.
    fn alpha_bits(&self) -> f64 {
        let factor = match self.policy {
            Policy::High => HIGH_ALPHA,
            Policy::Low => LOW_ALPHA,
            Policy::Fair | Policy::Fixed => 1.0,
        };
        // The target is "no limit" (10 Gbit/s) by default: α at that rate is 100 ms of queue
        // on a 200 Mbit/s link, and that is the standing queue the emulated WAN showed (the
        // simulator's target of 1.25 × the link hid it). So α is taken at no more than
        // ALPHA_LINK_FACTOR × the bottleneck rate startup measured.
        let reference = match self.link_estimate_bps {
            Some(link) => (self.limits.target_bps as f64).min(ALPHA_LINK_FACTOR * link),
            None => self.limits.target_bps as f64,
        };
        reference * ALPHA_TIME.as_secs_f64() * factor
    }

    /// Set the rate from a window and an RTT, clamped to the limits; the window is pulled back
    /// to what the clamped rate needs so it cannot wind up beyond the limits.
    fn apply(&mut self, window_bits: f64, rtt_now: Duration) {
        let rtt_s = rtt_now.max(MIN_RTT).as_secs_f64();
        let lo = self.limits.min_bps.max(1) as f64;
        let hi = self.limits.target_bps as f64;
        let w = if window_bits.is_finite() { window_bits } else { self.rate_bps as f64 * rtt_s };
        let x = (w / rtt_s).clamp(lo, hi);
        self.window_bits = Some(x * rtt_s);
        // In range [1, u64::MAX as f64] after the clamp, so the cast is exact enough.
        self.rate_bps = (x as u64).clamp(self.limits.min_bps.max(1), self.limits.target_bps);
    }

    /// The queue as it will be once what we sent in the last RTT (not yet reflected in the
    /// feedback) has reached the bottleneck: the measured queue plus our excess over the
    /// delivered rate during that RTT (a Smith predictor for the feedback delay). Only while
    /// the bottleneck is saturated (a queue shows); otherwise the measured queue.
    fn predict_queue(
        &mut self,
        now: Instant,
        rtt: Duration,
        dt: Duration,
        q: Duration,
        recv_bps: u64,
        carried_bps: f64,
    ) -> Duration {
        // What we actually sent since the last sample (a sender that does not keep up with its
        // pacing rate builds no queue with the difference).
        let sent = if self.saw_send {
            core::mem::take(&mut self.sent_since_sample_bits) as f64
        } else {
            self.rate_bps as f64 * dt.as_secs_f64()
        };
        let allowed = self.rate_bps as f64 * dt.as_secs_f64();
        if self.history.len() == MAX_HISTORY {
            self.history.pop_front();
        }
        // The first sample's bits were sent since the first send: counting them as sent at
        // `now` read a 38 Mbit blind round as 190 ms of queue to come (traced on the emulator),
        // which held the drain at half the link for an RTT.
        // (`first_send` is only set before the first feedback.)
        let from = self.first_send.take().map_or(now, |t| t.min(now));
        self.history.push_back(Sample {
            at: now,
            from,
            sent_bits: sent,
            allowed_bits: allowed,
            carried_bps,
            saturated: q >= SATURATED_QUEUE,
        });
        while self.history.front().is_some_and(|h| now.saturating_since(h.at) > rtt) {
            self.history.pop_front();
        }
        if q < SATURATED_QUEUE || recv_bps == 0 {
            return q;
        }
        let span = self.history.front().map_or(Duration::ZERO, |h| now.saturating_since(h.from));
        let sum: f64 = self.history.iter().map(|h| h.sent_bits).sum();
        // The delivered rate over the RTT: the smoothed one (one sample's rate covers a few
        // milliseconds; on a real receiver that handles datagrams in bunches it is off by
        // ±50%, and × an RTT that error swamped the measured queue: the emulator showed a
        // 100 ms queue predicted as empty).
        let delivered_bps = if self.carried_avg_bps > 0.0 {
            self.carried_avg_bps * (1.0 - self.loss_avg)
        } else {
            recv_bps as f64
        };
        // What the receiver will not see is lost on the way, not queued.
        let excess = sum * (1.0 - self.loss_avg) - delivered_bps * span.as_secs_f64();
        // Negative when we sent less than was delivered: the queue the feedback still shows
        // is draining (after startup, this is what ends the drain on time).
        let q_s = q.as_secs_f64();
        let pred_s = (q_s + excess / delivered_bps).clamp(0.0, q_s + rtt.as_secs_f64());
        if pred_s.is_finite() { Duration::from_nanos((pred_s * 1e9) as u64) } else { q }
    }

    /// The sender did not keep up with its rate over the last RTT (a busy CPU, a slow disk, or
    /// nothing left to send): what it sent is under [`LIMITED_SHARE`] of what the rate allowed.
    /// The window must not grow then: the rate it would reach was never tried on the path, and
    /// once the sender catches up it would be sent all at once.
    fn is_sender_limited(&self) -> bool {
        if !self.saw_send {
            return false;
        }
        let (sent, allowed) =
            self.history.iter().fold((0.0, 0.0), |(s, a), h| (s + h.sent_bits, a + h.allowed_bits));
        allowed > 0.0 && sent < LIMITED_SHARE * allowed
    }

    /// Fold one sample's loss fraction into the average (non-finite or out-of-range values
    /// from a confused peer are clamped, never propagated).
    fn note_loss(&mut self, loss_fraction: f64) {
        let l = if loss_fraction.is_finite() { loss_fraction.clamp(0.0, 1.0) } else { 0.0 };
        // The plain mean of the samples so far until there are 1 / LOSS_GAIN of them, then the
        // moving average: starting the average at 0 with gain 1/64 left it at half the real
        // loss after 45 samples (90 ms), and the carried rate (delivered / (1 − loss)) read
        // 720 Mbit/s on a full 1 Gbit/s link at 10% loss when startup ended on it.
        self.loss_samples = self.loss_samples.saturating_add(1);
        let gain = LOSS_GAIN.max(1.0 / f64::from(self.loss_samples));
        self.loss_avg = (self.loss_avg + gain * (l - self.loss_avg)).clamp(0.0, MAX_LOSS_ESTIMATE);
    }

    /// The rate the bottleneck carried for us: what the receiver got, plus what random loss
    /// took after the bottleneck.
    fn carried_bps(&self, recv_rate_bps: u64) -> f64 {
        recv_rate_bps as f64 / (1.0 - self.loss_avg)
    }

    /// Fold one sample into the base RTT and the smoothed delivered rate.
    fn note_base_and_delivered(
        &mut self,
        s: &FeedbackSample,
        rtt: Duration,
        q: Duration,
        dt: Duration,
    ) {
        // The smallest raw RTT sample is the base RTT. A peer that reports none falls back to
        // the smoothed RTT minus the queue, which lags a queue that grows fast (a blind
        // round's): their difference read 34 ms on a 200 ms path on the emulator and 8.1 ms on
        // a 10 ms simulated path. So then only a sample with a short queue sets the base (or
        // the first one, if none has).
        if s.rtt_min > Duration::ZERO {
            self.base_rtt = self.base_rtt.min(s.rtt_min.max(MIN_RTT));
        } else if q <= BASE_RTT_MAX_QUEUE || self.base_rtt == Duration::MAX {
            self.base_rtt = self.base_rtt.min(rtt.saturating_sub(q).max(MIN_RTT));
        }
        if s.recv_rate_bps > 0 {
            let c = self.carried_bps(s.recv_rate_bps);
            if self.carried_avg_bps > 0.0 {
                // Smoothed over CARRIED_GAIN's 8 samples, or over half an RTT if that is
                // shorter: at 10 ms RTT 8 samples (16 ms) lagged the rate startup doubles every
                // RTT, startup ended on 600 of 1000 Mbit/s and the predictor took the
                // difference for queue.
                let half_rtt = rtt.as_secs_f64() / 2.0;
                let gain = CARRIED_GAIN.max((dt.as_secs_f64() / half_rtt).min(1.0));
                self.carried_avg_bps += gain * (c - self.carried_avg_bps);
            } else {
                // The first delivered rate is the estimate (an average that starts at zero
                // would take a dozen samples to read a blind round's pace).
                self.carried_avg_bps = c;
            }
            self.blind_bits = None;
            if self.mode == Mode::Startup {
                self.startup_peak_bps = self.startup_peak_bps.max(self.carried_avg_bps);
            }
        }
    }

    fn on_sample(&mut self, now: Instant, s: &FeedbackSample) {
        let (q, recv_rate_bps) = (s.queuing_delay, s.recv_rate_bps);
        let rtt = s.rtt.max(MIN_RTT);
        let q = q.min(rtt);
        let dt = self.last_feedback.map_or(Duration::ZERO, |t| now.saturating_since(t)).min(rtt);
        self.last_feedback = Some(now);
        self.note_base_and_delivered(s, rtt, q, dt);
        // The predicted queue sets the proportional response (what the rate is divided by);
        // the measured one sets the backlog, and so the fixed point shared between flows.
        let carried_now = if recv_rate_bps > 0 { self.carried_bps(recv_rate_bps) } else { 0.0 };
        let q_pred = self.predict_queue(now, rtt, dt, q, recv_rate_bps, carried_now);
        self.last_queue = q;
        self.last_predicted_queue = q_pred;
        let rtt_now = self.base_rtt + q_pred;
        let w = self.window_bits.unwrap_or(self.rate_bps as f64 * rtt_now.as_secs_f64());
        let step = dt.as_secs_f64() / rtt.as_secs_f64();
        let alpha = self.alpha_bits();
        let backlog = self.rate_bps as f64 * q.as_secs_f64();
        let startup_done =
            self.mode == Mode::Startup && self.is_startup_done(now, rtt, q, backlog, alpha);
        match self.mode {
            Mode::Startup if startup_done => self.exit_startup(now, w, rtt_now),
            Mode::Drain { since } => {
                let elapsed = now.saturating_since(since);
                self.on_drain_sample(elapsed, rtt, w, rtt_now, q_pred, alpha);
                if self.mode == Mode::Steady {
                    self.last_yield_end = Some(now);
                    self.level_bps = 0.0;
                    let window = rtt.saturating_mul(YIELD_COOLDOWN_RTTS).max(YIELD_COOLDOWN_SPAN);
                    self.newcomer_due_until = Some(now + window);
                }
            }
            // Blind (no delivered rate reported yet): growing would be blind too.
            Mode::Startup if self.blind_bits.is_some() => {}
            Mode::Startup => {
                let growth = if self.is_sender_limited() { 1.0 } else { 2f64.powf(step) };
                // At least the highest delivered rate: after the blind round's slowdown, the
                // pace its bits were delivered at comes back at once.
                let floor = self.startup_peak_bps * rtt_now.as_secs_f64();
                self.apply((w * growth).max(floor), rtt_now);
            }
            Mode::Yield { since, restore_bits, span, until_empty } => {
                let empty = until_empty && q < SATURATED_QUEUE;
                if empty || now.saturating_since(since) > span {
                    self.mode = Mode::Steady;
                    self.last_yield_end = Some(now);
                    self.level_bps = 0.0;
                    self.apply(restore_bits.max(w), rtt_now);
                } else {
                    self.apply(w, rtt_now);
                }
            }
            Mode::Steady if self.is_newcomer_yield_due(now, q) && backlog <= alpha => {
                // A newcomer's base delay may include the queue the incumbents keep: once its
                // own backlog is down to `α` after the drain (its queue may never read empty),
                // it holds below its share for a moment while they yield, so the queue
                // really empties.
                self.newcomer_due_until = None;
                let delivered = self.delivered_over_rtt_bps().unwrap_or(self.carried_avg_bps);
                self.start_yield(now, w, delivered, NEWCOMER_YIELD, false, (alpha, rtt_now));
            }
            Mode::Steady => match self.is_competitor_arriving(now, rtt, dt, q) {
                Some(delivered) => {
                    let span = rtt.saturating_mul(YIELD_MAX_RTTS).max(YIELD_MIN_SPAN);
                    self.start_yield(now, w, delivered, span, true, (alpha, rtt_now));
                }
                None => self.on_steady_sample(now, w, step, backlog, alpha, rtt_now),
            },
        }
    }

    /// Whether the newcomer's yield is due: its drain ended lately, and it shares the
    /// bottleneck: while a queue shows, it is delivered well under the rate its startup
    /// measured (a flow alone on a saturated bottleneck is delivered at its rate). A flow alone
    /// on its path must never yield (it would only lose throughput: 1 Gbit/s at 10 ms and 10%
    /// loss fell from 812 to 753 Mbit/s with an unconditional 100 ms yield).
    ///
    /// A fall of the base RTT since the first feedback is not evidence: it was taken for the
    /// incumbents' standing queue draining, but a lone flow's first sample reads high too
    /// (the echoed datagram queued behind the flow's own blind round, and a real path's delay
    /// varies by a millisecond or more), and on the emulated WAN a lone flow yielded 0.4 s in
    /// (`engine/sim/tests/yields.rs` reproduces it with 2 ms of jitter).
    fn is_newcomer_yield_due(&self, now: Instant, q: Duration) -> bool {
        if self.newcomer_due_until.is_none_or(|t| now > t) {
            return false;
        }
        // The queue must stand through the RTT, not show in a sample or two: a path whose
        // delay varies reads a fraction of a millisecond of "queue" now and then while a lone
        // flow sends below the link (2 ms of jitter in the simulator: a yield 0.6 s in).
        if q < SATURATED_QUEUE || self.saturated_share() < NEWCOMER_STANDING_SHARE {
            return false;
        }
        // The samples that showed a queue only: the others say nothing of the bottleneck's
        // rate (the flow may have sent less than it).
        let (Some(link), Some(delivered)) = (self.link_estimate_bps, self.mean_carried_bps(true))
        else {
            return false;
        };
        delivered < NEWCOMER_SHARE * link
    }

    /// The share of the last RTT's samples with a carried rate that showed a queue.
    fn saturated_share(&self) -> f64 {
        let (sat, n) = self
            .history
            .iter()
            .filter(|h| h.carried_bps > 0.0)
            .fold((0u32, 0u32), |(s, n), h| (s + u32::from(h.saturated), n + 1));
        if n == 0 { 0.0 } else { f64::from(sat) / f64::from(n) }
    }

    /// One sample of the window law.
    fn on_steady_sample(
        &mut self,
        now: Instant,
        w: f64,
        step: f64,
        backlog: f64,
        alpha: f64,
        rtt_now: Duration,
    ) {
        let err = alpha - backlog;
        // Below `α` the window also grows in proportion to itself (up to PROBE_GROWTH per RTT
        // with an empty queue), so a large window refills the path in a few RTTs instead of by
        // `α` per RTT; the fixed point (backlog = α) and so the sharing between flows are
        // unchanged.
        let probe =
            (PROBE_GROWTH * w).min(self.rate_bps as f64 * PROBE_MAX_STEP.as_secs_f64() / GAIN);
        let probe = probe.max(self.regrowth_bits(now, w, backlog, rtt_now) / GAIN);
        let up = if err <= 0.0 {
            err
        } else if self.is_sender_limited() {
            0.0
        } else {
            err.max(probe * err / alpha)
        };
        let grown = w + GAIN * step * up;
        let bound = 2f64.powf(step);
        self.apply(grown.clamp(w / bound, w * bound), rtt_now);
    }

    /// The window a lone flow below the bottleneck's rate may add in an RTT: [`REGROWTH_SHARE`]
    /// of the gap between its window and the link estimate × base RTT, beyond what
    /// [`PROBE_MAX_STEP`] allows. Only while the queue reads empty (measured and predicted),
    /// what it sends is delivered ([`REGROWTH_DELIVERED`]: nothing queues or is dropped
    /// beyond the random loss) and it never yielded (a flow that yielded shares the link: its
    /// estimate is not its share). At a long RTT the step alone was slow: the drain at 1
    /// Gbit/s, 1 s, 10% loss hands over at ~920 Mbit/s and the law regrew ~7 Mbit/s per RTT.
    fn regrowth_bits(&self, now: Instant, w: f64, backlog: f64, rtt_now: Duration) -> f64 {
        let empty = self.yields == 0
            && backlog < self.rate_bps as f64 * SATURATED_QUEUE.as_secs_f64()
            && rtt_now < self.base_rtt.saturating_add(SATURATED_QUEUE);
        let (Some(link), Some(delivered)) = (self.link_estimate_bps, self.delivered_over_rtt_bps())
        else {
            return 0.0;
        };
        let link = link.max(self.regrow_to_bps);
        let sent = self.sent_ceiling_bps(now);
        if !empty || !sent.is_finite() || delivered < REGROWTH_DELIVERED * sent {
            return 0.0;
        }
        REGROWTH_SHARE * (link * self.base_rtt.as_secs_f64() - w).max(0.0)
    }

    /// Whether a competitor is arriving: the delivered rate over the last RTT fell under
    /// [`YIELD_DROP`] of its recent level while a queue shows and the sender kept up. Returns
    /// the delivered rate then. Updates the recent level.
    fn is_competitor_arriving(
        &mut self,
        now: Instant,
        rtt: Duration,
        dt: Duration,
        q: Duration,
    ) -> Option<f64> {
        let delivered = self.delivered_over_rtt_bps()?;
        let decay = (dt.as_secs_f64() / (YIELD_LEVEL_RTTS * rtt.as_secs_f64())).min(1.0);
        let level = self.level_bps.max(delivered);
        self.level_bps =
            if delivered >= level { delivered } else { level - decay * (level - delivered) };
        let cooldown = rtt.saturating_mul(YIELD_COOLDOWN_RTTS).max(YIELD_COOLDOWN_SPAN);
        let cooling = self.last_yield_end.is_some_and(|t| now.saturating_since(t) < cooldown);
        let arriving = q >= SATURATED_QUEUE
            && delivered < YIELD_DROP * level
            && !cooling
            && !self.is_sender_limited();
        arriving.then_some(delivered)
    }

    /// Hold the window at [`YIELD_SHARE`] of `delivered` × base RTT for `span` (or until the
    /// queue reads empty), then restore `w`, at most the window that keeps `α` queued.
    fn start_yield(
        &mut self,
        now: Instant,
        w: f64,
        delivered: f64,
        span: Duration,
        until_empty: bool,
        (alpha, rtt_now): (f64, Duration),
    ) {
        self.yields = self.yields.saturating_add(1);
        // The window to restore carries no queue: what the flow was delivered before the yield
        // (its recent level, or now) × base RTT, plus its `α`. `w` itself is the rate × (base +
        // predicted queue): right after a drain it held startup's queue (on the emulated WAN a
        // restored window sent a 486 Mbit/s burst into the 200 Mbit/s link, 2,495 drops).
        let base_s = self.base_rtt.as_secs_f64();
        let no_queue = self.level_bps.max(delivered) * base_s + alpha;
        let restore_bits = if no_queue > 0.0 { w.min(no_queue) } else { w };
        self.mode = Mode::Yield { since: now, restore_bits, span, until_empty };
        let held = YIELD_SHARE * delivered * base_s;
        self.apply(held.min(w), rtt_now);
    }

    /// Whether startup is over: the flow's own backlog reached `α` or the queue passed
    /// [`STARTUP_EXIT_QUEUE`], or the highest delivered rate grew by less than
    /// [`STARTUP_GROWTH`] in [`STARTUP_FLAT_ROUNDS`] rounds in a row (counted once a delivered
    /// rate was reported; a round the sender did not keep up in is not counted). Loss is not a
    /// reason: random loss does not end startup.
    fn is_startup_done(
        &mut self,
        now: Instant,
        rtt: Duration,
        q: Duration,
        backlog: f64,
        alpha: f64,
    ) -> bool {
        if backlog >= alpha || q >= STARTUP_EXIT_QUEUE {
            return true;
        }
        if self.blind_bits.is_some() {
            return false;
        }
        let start = *self.round_start.get_or_insert(now);
        if now.saturating_since(start) < rtt {
            return false;
        }
        if self.startup_peak_bps >= STARTUP_GROWTH * self.round_peak_bps {
            self.flat_rounds = 0;
        } else if !self.is_sender_limited() {
            self.flat_rounds += 1;
        }
        self.round_peak_bps = self.startup_peak_bps;
        self.round_start = Some(now);
        self.flat_rounds >= STARTUP_FLAT_ROUNDS
    }

    /// Leave startup for the drain: the highest rate the bottleneck carried is its rate (or
    /// our share of it); × base RTT is the window that drains the startup queue (the rate
    /// divides by base + q) and then holds the link full.
    fn exit_startup(&mut self, now: Instant, w: f64, rtt_now: Duration) {
        // The highest smoothed delivered rate, but no more than the median over the last RTT:
        // the peak of noisy samples reads high, and so does the mean when a few samples are
        // far out. Regression (emulated WAN, 200 Mbit/s / 200 ms / 5%, quiet machine): a
        // receiver that handled a backlog of datagrams at once reported a few rates of
        // Gbit/s; the mean over the RTT put the link at 2,274 Mbit/s, the rate went to
        // 2.5 Gbit/s, the 1-BDP queue stayed full for seconds and 43% of the file was resent.
        let carried = match self.median_carried_bps() {
            Some(d) => self.startup_peak_bps.min(d),
            None => self.startup_peak_bps,
        };
        let delivered = if carried > 0.0 { carried } else { self.rate_bps as f64 };
        // After a blackout the first samples measure the backlog it left, not the path
        // (traced on the emulated WAN at load 15: a startup after a stall exited on a 1.7 s
        // "queue" having measured 2.6 Mbit/s, `α` fell with that estimate and the rate crawled
        // at 0.2–0.4 Mbit/s for 47 s). So a restart resumes at no less than the halved rate
        // and does not lower the bottleneck estimate.
        let delivered = delivered.max(core::mem::take(&mut self.restart_floor_bps));
        let w_exit = (delivered * self.base_rtt.as_secs_f64()).min(w);
        self.exit_sent_bps = self.sent_ceiling_bps(now);
        if carried > 0.0 {
            let prev = self.link_estimate_bps.filter(|_| self.restarted).unwrap_or(0.0);
            self.link_estimate_bps = Some(carried.max(prev));
        }
        self.restarted = false;
        self.mode = Mode::Drain { since: now };
        self.round_start = None;
        self.round_peak_bps = 0.0;
        self.flat_rounds = 0;
        self.apply(w_exit, rtt_now);
    }

    /// One sample of the drain after startup: the window holds at the delivered rate × base
    /// RTT (the link is busy while the queue drains) and the rate divides by the predicted
    /// queue, until the queue is down to `α` or [`DRAIN_MAX_RTTS`] have passed.
    fn on_drain_sample(
        &mut self,
        elapsed: Duration,
        rtt: Duration,
        w: f64,
        rtt_now: Duration,
        q_pred: Duration,
        alpha: f64,
    ) {
        // Drain at twice the speed the window alone would: the link stays busy while the queue
        // lasts, and the predictor says when it is gone.
        let rtt_now = rtt_now + q_pred.div(2);
        // Until the predicted queue (what the feedback shows plus what is still on its way) is
        // down to `α`; a standing queue of other flows must not hold the window frozen, so at
        // most DRAIN_MAX_RTTS.
        let predicted = self.rate_bps as f64 * q_pred.as_secs_f64();
        if predicted < alpha || elapsed > rtt.saturating_mul(DRAIN_MAX_RTTS) {
            self.mode = Mode::Steady;
        }
        // The link is busy while the queue drains, so the delivered rate over the last RTT is
        // the bottleneck's: a startup estimate below it is raised to it. The mean over the
        // RTT, not the smoothed per-sample rate: a real receiver's per-sample rates are noisy
        // (±50%), and the highest smoothed one read 400–470 Mbit/s on a 200 Mbit/s emulated
        // link. Raised only: tracking it down held the window at what the flow itself sent
        // once the queue was gone (100 Mbit/s, 1000 ms, 5%: 84.86 vs 86.78 Mbit/s).
        // Only the samples that showed a queue: the bottleneck was busy while they were
        // delivered, so they carried its rate. The mean over the whole RTT still holds the
        // ramp at a long RTT (1 Gbit/s, 1 s, 10% loss: the drain ended at 805 Mbit/s and the
        // window law took ~30 s to regrow the rest).
        // At most what startup sent over its last RTT (the bottleneck carried no more of it),
        // not startup's peak delivered rate: that peak is a smoothed rate that lags the ramp (1 Gbit/s, 1 s, 10% loss: 900
        // Mbit/s, while the samples that showed a queue carried 985), and the drain handed
        // over 10% under the link, which the window law took ~20 s to regrow.
        let cap =
            if self.exit_sent_bps.is_finite() { self.exit_sent_bps } else { self.startup_peak_bps };
        let busy = self.mean_carried_bps(true).map(|d| d.min(cap));
        if let Some(d) = busy {
            // The same rate is the bottleneck's, for the regrowth after the drain (not for the
            // link estimate: the cap is loose, and the newcomer's test needs a tight one).
            self.regrow_to_bps = self.regrow_to_bps.max(d);
        }
        let w = busy
            .or_else(|| self.delivered_over_rtt_bps().map(|d| d.min(cap)))
            .map_or(w, |d| w.max(d * self.base_rtt.as_secs_f64()));
        self.apply(w, rtt_now);
    }

    /// What the flow sent over the last RTT, as a rate (`f64::INFINITY` for a controller
    /// driven without `on_send`): the bottleneck cannot carry more of this flow than it sent.
    /// While the first sample is in the window, the blind round's burst counts too (its bits
    /// were delivered at the pace they went out, above the round's average). The drain's
    /// window and the regrowth's test of "what it sends is delivered" use it.
    fn sent_ceiling_bps(&self, now: Instant) -> f64 {
        if !self.saw_send {
            return f64::INFINITY;
        }
        let from = self.history.front().map_or(self.first_send, |h| Some(h.from));
        let Some(from) = from else { return f64::INFINITY };
        let span = now.saturating_since(from);
        if span < MIN_RTT {
            return f64::INFINITY;
        }
        let sum: f64 = self.history.iter().map(|h| h.sent_bits).sum::<f64>()
            + self.sent_since_sample_bits as f64;
        let first_in_window = self.history.front().is_none_or(|h| h.from < h.at);
        let burst = if first_in_window { self.blind_burst_bps } else { 0.0 };
        (sum / span.as_secs_f64()).max(burst)
    }

    /// The mean carried rate of the samples of the last RTT that reported one (each sample
    /// covers about the same span of the receiver's clock), or `None` if none did.
    fn delivered_over_rtt_bps(&self) -> Option<f64> {
        self.mean_carried_bps(false)
    }

    /// The median carried rate of the last RTT's samples that reported one, or `None` if none
    /// did (a few samples far out, as a receiver that handled a backlog at once reports, do
    /// not move it).
    fn median_carried_bps(&self) -> Option<f64> {
        let mut rates = [0.0f64; MAX_HISTORY];
        let mut n = 0;
        for h in self.history.iter().filter(|h| h.carried_bps > 0.0) {
            if let Some(slot) = rates.get_mut(n) {
                *slot = h.carried_bps;
                n += 1;
            }
        }
        let rates = rates.get_mut(..n).filter(|r| !r.is_empty())?;
        let mid = rates.len() / 2;
        let (_, m, _) = rates.select_nth_unstable_by(mid, f64::total_cmp);
        Some(*m)
    }

    /// The mean carried rate of the last RTT's samples that reported one, of only those that
    /// showed a queue if `saturated_only`.
    fn mean_carried_bps(&self, saturated_only: bool) -> Option<f64> {
        let (sum, n) = self
            .history
            .iter()
            .filter(|h| h.carried_bps > 0.0 && (h.saturated || !saturated_only))
            .fold((0.0, 0u32), |(s, n), h| (s + h.carried_bps, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// The blind round's slowdown: once [`INITIAL_BLIND_BITS`] went out before any delivered
    /// rate was reported, the rate drops to 1/[`BLIND_SLOWDOWN`] of the initial rate.
    fn on_blind_send(&mut self, now: Instant, bits: u64) {
        let Some(sent) = self.blind_bits.as_mut() else { return };
        *sent = sent.saturating_add(bits);
        if *sent < INITIAL_BLIND_BITS || self.mode != Mode::Startup {
            return;
        }
        let span = self.first_send.map_or(Duration::ZERO, |t| now.saturating_since(t));
        if self.blind_burst_bps == 0.0 && span > Duration::ZERO {
            self.blind_burst_bps = *sent as f64 / span.as_secs_f64();
        }
        let slow = (self.initial_rate_bps / BLIND_SLOWDOWN)
            .clamp(self.limits.min_bps.max(1), self.limits.target_bps);
        if slow < self.rate_bps {
            self.rate_bps = slow;
            self.window_bits = None;
        }
    }

    /// In startup (exponential growth) rather than steady state.
    pub fn is_starting(&self) -> bool {
        self.mode == Mode::Startup
    }
}

impl RateController for AdaptiveRate {
    fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    fn on_send(&mut self, now: Instant, ip_bytes: u64) {
        let bits = ip_bytes.saturating_mul(8);
        self.saw_send = true;
        self.sent_bits = self.sent_bits.saturating_add(bits);
        self.sent_since_sample_bits = self.sent_since_sample_bits.saturating_add(bits);
        if self.last_feedback.is_none() && self.first_send.is_none() {
            self.first_send = Some(now);
        }
        self.on_blind_send(now, bits);
    }

    fn snapshot(&self) -> RateSnapshot {
        let us = |d: Duration| d.as_nanos() / 1_000;
        RateSnapshot {
            rate_bps: self.rate_bps,
            sent_bits: self.sent_bits,
            carried_bps: self.carried_avg_bps.max(0.0) as u64,
            queue_us: us(self.last_queue),
            predicted_queue_us: us(self.last_predicted_queue),
            loss: self.loss_avg,
            base_rtt_us: if self.base_rtt == Duration::MAX { 0 } else { us(self.base_rtt) },
            link_estimate_bps: self.link_estimate_bps.map_or(0, |l| l.max(0.0) as u64),
            mode: match self.mode {
                Mode::Startup => "startup",
                Mode::Drain { .. } => "drain",
                Mode::Steady => "steady",
                Mode::Yield { .. } => "yield",
            },
            yields: self.yields,
        }
    }

    fn on_feedback(&mut self, now: Instant, sample: &FeedbackSample) {
        self.note_loss(sample.loss_fraction);
        self.on_sample(now, sample);
    }

    /// A blackout: halve the rate and start probing again once feedback returns.
    fn on_silence(&mut self, _now: Instant, _silence: Duration) {
        self.rate_bps =
            (self.rate_bps / 2).clamp(self.limits.min_bps.max(1), self.limits.target_bps);
        // The window is rebuilt from the rate at the next sample, under the RTT it brings.
        self.window_bits = None;
        self.mode = Mode::Startup;
        self.startup_peak_bps = 0.0;
        self.carried_avg_bps = 0.0;
        self.round_start = None;
        self.round_peak_bps = 0.0;
        self.flat_rounds = 0;
        self.last_feedback = None;
        self.restart_floor_bps = self.rate_bps as f64;
        self.restarted = true;
    }

    /// Effective at once: the next `rate_bps` is within the new limits.
    fn set_limits(&mut self, _now: Instant, limits: RateLimits) {
        self.limits = sanitize(limits);
        self.rate_bps = self.rate_bps.clamp(self.limits.min_bps.max(1), self.limits.target_bps);
        self.window_bits = None;
    }

    fn limits(&self) -> RateLimits {
        self.limits
    }

    fn policy(&self) -> Policy {
        self.policy
    }
}
