//! The fixed-rate controller: always the target rate.

use super::{FeedbackSample, Policy, RateController, RateLimits};
use crate::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct FixedRate {
    limits: RateLimits,
}

impl FixedRate {
    pub fn new(limits: RateLimits) -> Self {
        FixedRate { limits: sanitize(limits) }
    }
}

/// Limits from a peer, a URL or a config are untrusted: a zero target becomes 1 bit/s (so time
/// computations stay finite) and a minimum above the target is lowered to it.
pub(crate) fn sanitize(limits: RateLimits) -> RateLimits {
    let target_bps = limits.target_bps.max(1);
    RateLimits { min_bps: limits.min_bps.min(target_bps), target_bps }
}

impl RateController for FixedRate {
    fn rate_bps(&self) -> u64 {
        self.limits.target_bps
    }
    fn on_send(&mut self, _now: Instant, _ip_bytes: u64) {}
    fn on_feedback(&mut self, _now: Instant, _sample: &FeedbackSample) {}
    fn on_silence(&mut self, _now: Instant, _silence: Duration) {}
    fn set_limits(&mut self, _now: Instant, limits: RateLimits) {
        self.limits = sanitize(limits);
    }
    fn limits(&self) -> RateLimits {
        self.limits
    }
    fn policy(&self) -> Policy {
        Policy::Fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_target_is_sanitized() {
        let c = FixedRate::new(RateLimits { min_bps: 10, target_bps: 0 });
        assert_eq!(c.rate_bps(), 1);
        assert_eq!(c.limits().min_bps, 1);
    }
}
