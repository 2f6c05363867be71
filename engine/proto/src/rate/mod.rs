//! Rate control: the trait the session drives, the fixed-rate controller, the adaptive
//! delay-based controller (policies high, fair, low) and the node-wide cap.
//!
//! The sender's shard calls `on_send` for every datagram it transmits and `on_feedback` for every
//! authenticated feedback datagram; it paces by [`RateController::rate_bps`]. Controllers are
//! sans-IO like the rest of the core: time is an argument.
//!
//! Rates are in bits per second of *IP-layer* traffic (docs/PROTOCOL.md §7): the session adds
//! the IP and UDP header bytes to every datagram it reports, so a rate means the same thing on
//! the simulator's link, the emulator's link and a real NIC.

mod adaptive;
mod fixed;
mod nodecap;
#[cfg(test)]
mod proptests;

pub use adaptive::{ALPHA_TIME, AdaptiveRate, GAIN, STARTUP_EXIT_QUEUE};
pub use fixed::FixedRate;
pub use nodecap::{MAX_CAP_SESSIONS, NodeCap, NodeCapError, NodeCapShare};

/// The controller a session with `policy` uses: fixed rate, or the adaptive controller.
pub fn controller_for(policy: Policy, limits: RateLimits) -> Box<dyn RateController> {
    match policy {
        Policy::Fixed => Box::new(FixedRate::new(limits)),
        p => Box::new(AdaptiveRate::new(p, limits)),
    }
}

use crate::time::{Duration, Instant};

/// Transfer policy (DESIGN.md step 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Policy {
    /// Send at the target rate regardless of congestion (still bounded by the receiver window).
    Fixed = 0,
    /// About twice a fair flow's share.
    High = 1,
    /// One fair share of the bottleneck.
    #[default]
    Fair = 2,
    /// Background: takes only what is idle.
    Low = 3,
}

impl Policy {
    pub const fn name(self) -> &'static str {
        match self {
            Policy::Fixed => "fixed",
            Policy::High => "high",
            Policy::Fair => "fair",
            Policy::Low => "low",
        }
    }
    pub fn from_name(s: &str) -> Option<Policy> {
        [Policy::Fixed, Policy::High, Policy::Fair, Policy::Low].into_iter().find(|p| p.name() == s)
    }
}

/// Minimum and target (maximum) rate, bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub min_bps: u64,
    pub target_bps: u64,
}

/// One feedback sample, as the sender's shard distils it from a `Feedback` datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedbackSample {
    /// Round-trip time measured from the echoed timestamp (smoothed).
    pub rtt: Duration,
    /// The smallest single RTT sample so far, unsmoothed (`Duration::ZERO`: none yet): the
    /// base RTT. The smoothed RTT minus this interval's queue is not: while a queue builds the
    /// smoothed RTT lags the queue, and that difference read 8.1 ms on a 10 ms path.
    pub rtt_min: Duration,
    /// One-way delay minus the smallest one-way delay seen so far: the queuing delay estimate.
    pub queuing_delay: Duration,
    /// IP-layer bits per second the receiver accepted over the interval this sample covers.
    pub recv_rate_bps: u64,
    /// Fraction of the data the receiver saw in the interval that it reported lost (NAKed ÷
    /// (NAKed + accepted)), 0.0–1.0.
    pub loss_fraction: f64,
}

/// What a controller is doing now, for traces (`HAUL_RATE_TRACE`, docs/RATE.md) and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateSnapshot {
    /// The pacing rate it asks for.
    pub rate_bps: u64,
    /// IP-layer bits the shards reported sent since the controller was made: differences of
    /// this over time are the pacing rate actually achieved.
    pub sent_bits: u64,
    /// Loss-adjusted delivered rate, smoothed (0 before the first sample).
    pub carried_bps: u64,
    /// The queuing delay the last feedback measured, and what the predictor made of it.
    pub queue_us: u64,
    pub predicted_queue_us: u64,
    /// Average share of sent traffic reported lost.
    pub loss: f64,
    /// Base RTT estimate (0 before the first sample).
    pub base_rtt_us: u64,
    /// The bottleneck rate the last startup measured (0: none yet), which `α` is taken at
    /// when it is under the target (see `AdaptiveRate`).
    pub link_estimate_bps: u64,
    /// "fixed", "startup", "drain", "steady", "yield" or "limited" (the sender did not keep
    /// up).
    pub mode: &'static str,
    /// Yields so far (the adaptive controller's; docs/RATE.md, "Yields"): a flow alone on
    /// its path has no one to yield to.
    pub yields: u32,
}

pub trait RateController: Send + core::fmt::Debug {
    /// What it is doing now (rate, achieved sending, estimates).
    fn snapshot(&self) -> RateSnapshot {
        RateSnapshot { rate_bps: self.rate_bps(), mode: "fixed", ..RateSnapshot::default() }
    }
    /// The pacing rate to use now, bits per second (IP layer). Always within the limits.
    fn rate_bps(&self) -> u64;
    /// A datagram of `ip_bytes` was just sent.
    fn on_send(&mut self, now: Instant, ip_bytes: u64);
    /// Feedback arrived.
    fn on_feedback(&mut self, now: Instant, sample: &FeedbackSample);
    /// No feedback for `silence` (a blackout); controllers back off.
    fn on_silence(&mut self, now: Instant, silence: Duration);
    /// New limits, effective immediately.
    fn set_limits(&mut self, now: Instant, limits: RateLimits);
    fn limits(&self) -> RateLimits;
    fn policy(&self) -> Policy;
}
