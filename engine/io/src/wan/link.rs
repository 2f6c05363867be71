//! The link model: what one direction of the emulated WAN does to each packet (sans-IO).
//!
//! Role: given a packet's arrival time and IP length, decide whether it is tail-dropped by the
//! bottleneck queue, lost at random, or delivered, and when. No clock, no I/O: the forwarder
//! (`super::forward`) feeds it times from the monotonic clock and acts on the verdicts, and
//! unit tests feed it made-up times.
//!
//! The model, in order:
//! 1. **Queue** (bytes, FIFO, tail drop): the backlog at arrival is the bytes not yet
//!    serialized, `(link_free - arrival) × rate`. A packet that would push the backlog over
//!    `queue_bytes` is dropped; a packet arriving at an empty queue is always accepted.
//! 2. **Rate** (bits/s at the IP layer): the packet occupies the link for `len × 8 / rate`
//!    after the previous one leaves; `rate_bps == 0` means no rate limit.
//! 3. **Random loss**: after serialization, so a lost packet has used link capacity (a lossy
//!    line behind the bottleneck; goodput is then at most `(1 - loss) × rate`).
//! 4. **Delay and jitter**: release at `depart + delay + j`, `j` uniform in
//!    `[-jitter, +jitter]`, never before `depart`, and never before the previous release
//!    (no reordering).
//!
//! Invariants: release times are non-decreasing; a delivered packet's release is at least
//! `arrival + len × 8 / rate` and at least `arrival + delay - jitter`; arithmetic is done in
//! u128 where products could overflow u64.

/// A limit per direction: the largest queue we accept (1 GiB), so a typo cannot ask the
/// emulator to hold more than it can buffer.
pub const QUEUE_BYTES_MAX: u64 = 1 << 30;

/// The smallest queue the default (1 BDP) may give: 64 KiB, so that a link with near-zero
/// delay still holds a few packets instead of dropping everything but one.
pub const QUEUE_BYTES_FLOOR: u64 = 64 * 1024;

const NS_PER_S: u128 = 1_000_000_000;

/// One direction's parameters, resolved (the queue is a number here, not a default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Bits per second at the IP layer; 0 means unlimited.
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay_ns: u64,
    /// Half-width of the uniform jitter added to the delay.
    pub jitter_ns: u64,
    /// Probability that a packet is lost, in [0, 1].
    pub loss: f64,
    /// Bottleneck queue size (tail drop).
    pub queue_bytes: u64,
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it to the other side at `release_ns`.
    Deliver {
        /// When to release it (same clock as the arrival time).
        release_ns: u64,
    },
    /// Tail-dropped: the queue was full.
    DropQueue,
    /// Lost at random on the line.
    DropLoss,
}

/// SplitMix64: small, fast, seedable; good enough to draw loss and jitter.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`; the same seed gives the same sequence.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One direction of the link, with its state (when the line is next free, last release).
#[derive(Clone, Debug)]
pub struct Link {
    params: LinkParams,
    loss_threshold: u64,
    link_free_ns: u64,
    last_release_ns: u64,
    rng: SplitMix64,
}

impl Link {
    /// A link with `params`, drawing loss and jitter from `seed`.
    pub fn new(params: LinkParams, seed: u64) -> Link {
        let loss = params.loss.clamp(0.0, 1.0);
        // Compare a uniform u64 against loss × 2^64; 1.0 saturates to u64::MAX, which drops
        // all but one packet in 2^64: close enough to "all".
        let loss_threshold = (loss * 18_446_744_073_709_551_616.0) as u64;
        Link {
            params,
            loss_threshold,
            link_free_ns: 0,
            last_release_ns: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The parameters this link applies.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Bytes waiting to be serialized at `now_ns` (0 when the line is idle).
    pub fn backlog_bytes(&self, now_ns: u64) -> u64 {
        let wait_ns = self.link_free_ns.saturating_sub(now_ns) as u128;
        (wait_ns * self.params.rate_bps as u128 / (8 * NS_PER_S)) as u64
    }

    /// Decides the fate of a packet of `len_bytes` (IP length) arriving at `arrival_ns`.
    /// Arrival times must be non-decreasing.
    pub fn on_packet(&mut self, arrival_ns: u64, len_bytes: usize) -> Verdict {
        let len = len_bytes as u64;
        let depart_ns = if self.params.rate_bps == 0 {
            arrival_ns
        } else {
            let backlog = self.backlog_bytes(arrival_ns);
            if backlog > 0 && backlog.saturating_add(len) > self.params.queue_bytes {
                return Verdict::DropQueue;
            }
            let start_ns = self.link_free_ns.max(arrival_ns);
            let bits = len as u128 * 8;
            let rate = self.params.rate_bps as u128;
            let serialize_ns = (bits * NS_PER_S).div_ceil(rate) as u64;
            self.link_free_ns = start_ns.saturating_add(serialize_ns);
            self.link_free_ns
        };
        if self.loss_threshold > 0 && self.rng.next_u64() < self.loss_threshold {
            return Verdict::DropLoss;
        }
        let mut release_ns = depart_ns.saturating_add(self.params.delay_ns);
        if self.params.jitter_ns > 0 {
            let span = 2 * self.params.jitter_ns as u128 + 1;
            let draw = (self.rng.next_u64() as u128 % span) as u64;
            // release + draw - jitter, kept at or after the departure.
            release_ns = release_ns.saturating_add(draw).saturating_sub(self.params.jitter_ns);
            release_ns = release_ns.max(depart_ns);
        }
        release_ns = release_ns.max(self.last_release_ns);
        self.last_release_ns = release_ns;
        Verdict::Deliver { release_ns }
    }
}

/// One bandwidth-delay product in bytes: `rate × rtt / 8`, floored at [`QUEUE_BYTES_FLOOR`]
/// and capped at [`QUEUE_BYTES_MAX`]. Unlimited rate gives the floor.
pub fn bdp_bytes(rate_bps: u64, rtt_ns: u64) -> u64 {
    let bdp = rate_bps as u128 * rtt_ns as u128 / (8 * NS_PER_S);
    (bdp.min(QUEUE_BYTES_MAX as u128) as u64).max(QUEUE_BYTES_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate_bps: u64, delay_ns: u64, queue_bytes: u64) -> LinkParams {
        LinkParams { rate_bps, delay_ns, jitter_ns: 0, loss: 0.0, queue_bytes }
    }

    #[test]
    fn idle_link_delivers_after_serialization_plus_delay() {
        // 8 Mbit/s: 1000 bytes take 1 ms on the line.
        let mut link = Link::new(params(8_000_000, 5_000_000, 10_000), 1);
        assert_eq!(link.on_packet(0, 1000), Verdict::Deliver { release_ns: 6_000_000 });
    }

    #[test]
    fn back_to_back_packets_are_spaced_by_serialization() {
        let mut link = Link::new(params(8_000_000, 0, 100_000), 1);
        let releases: Vec<_> = (0..4).map(|_| link.on_packet(0, 1000)).collect();
        let want: Vec<_> =
            (1..=4).map(|i| Verdict::Deliver { release_ns: i * 1_000_000 }).collect();
        assert_eq!(releases, want);
    }

    #[test]
    fn full_queue_tail_drops_and_drains_with_time() {
        // Queue of 3000 bytes: the first packet goes on the line, backlog counts what is left.
        let mut link = Link::new(params(8_000_000, 0, 3000), 1);
        let mut drops = 0;
        for _ in 0..10 {
            if link.on_packet(0, 1000) == Verdict::DropQueue {
                drops += 1;
            }
        }
        // Accepted while backlog + 1000 <= 3000: backlog 0 (accepted), 1000, 2000, then full.
        assert_eq!(drops, 7);
        // Two ms later two packets have left: room again.
        assert!(matches!(link.on_packet(2_000_000, 1000), Verdict::Deliver { .. }));
    }

    #[test]
    fn delivered_bytes_never_exceed_the_rate() {
        // Offer 2x the rate for 1 s of arrivals; count what is released within the second.
        let rate = 10_000_000u64;
        let mut link = Link::new(params(rate, 0, 20_000), 7);
        let mut delivered = 0u64;
        let gap_ns = 1_000_000_000 * 1000 * 8 / (2 * rate);
        for i in 0..(2 * rate / 8000) {
            if let Verdict::Deliver { release_ns } = link.on_packet(i * gap_ns, 1000)
                && release_ns <= 1_000_000_000
            {
                delivered += 1000;
            }
        }
        assert!(delivered <= rate / 8 + 1000, "delivered {delivered}");
        assert!(delivered >= rate / 8 * 95 / 100, "delivered {delivered}");
    }

    #[test]
    fn loss_rate_matches_probability() {
        let mut link = Link::new(LinkParams { loss: 0.1, ..params(0, 0, 0) }, 42);
        let lost = (0..100_000).filter(|i| link.on_packet(*i, 100) == Verdict::DropLoss).count();
        assert!((9_000..=11_000).contains(&lost), "lost {lost}");
    }

    #[test]
    fn jitter_is_bounded_and_never_reorders() {
        let p = LinkParams { jitter_ns: 1_000_000, ..params(0, 10_000_000, 0) };
        let mut link = Link::new(p, 3);
        let mut last = 0;
        for i in 0..10_000u64 {
            let arrival = i * 100_000;
            let Verdict::Deliver { release_ns } = link.on_packet(arrival, 100) else {
                panic!("no loss configured");
            };
            assert!(release_ns >= last, "reordered");
            assert!(release_ns >= arrival + 9_000_000);
            assert!(release_ns <= arrival + 11_000_000 + 1_000_000);
            last = release_ns;
        }
    }

    #[test]
    fn bdp_is_floored_and_capped() {
        assert_eq!(bdp_bytes(200_000_000, 20_000_000), 500_000);
        assert_eq!(bdp_bytes(0, 20_000_000), QUEUE_BYTES_FLOOR);
        assert_eq!(bdp_bytes(u64::MAX, u64::MAX), QUEUE_BYTES_MAX);
    }
}
