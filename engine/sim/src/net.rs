//! The network model: one bottleneck link per direction.
//!
//! A datagram entering a [`Link`] at time `t` costs `len + ip_overhead` bytes of IP-layer
//! traffic. It joins a FIFO queue in front of a serializer running at `rate_bps`; if the bytes
//! waiting (not yet serialized) plus its own would exceed `queue_bytes`, it is tail-dropped. Once
//! serialized it travels for `delay` (one-way propagation), plus a random jitter, plus, for a
//! `reorder` fraction of datagrams, an extra `reorder_delay`. On the wire it may be lost
//! (independently with probability `loss`, and in bursts by a Gilbert–Elliott chain), duplicated
//! (a second copy arrives a little later) or corrupted (random bits flipped). Anything larger
//! than the link's MTU is dropped and counted, silently, as a router without ICMP would: with
//! path-MTU probing off the protocol must never send it (the driver fails the run), with it on
//! that is how a probe too large is lost. `mtu_change` makes the MTU shrink or grow mid-run (a
//! black hole appearing on the path).
//!
//! Invariants: every random choice comes from the link's own seeded [`Rng`], so a link's fate
//! sequence depends only on its seed and on the datagrams offered to it; the queue never holds
//! more than `queue_bytes`; arrival times never precede the send time plus the propagation delay.

use haul_proto::rng::Rng;
use haul_proto::time::{Duration, Instant};

/// The IP-layer MTU the simulated path has.
pub const MTU: usize = 1500;
/// Most bits one corruption flips.
pub const MAX_CORRUPT_BITS: u64 = 4;
/// Most extra delay a duplicate copy gets after the original.
pub const MAX_DUPLICATE_LAG: Duration = Duration::from_millis(1);

/// Burst loss as a two-state Markov chain, stepped once per datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Chance to move from the good state to the bad state, per datagram.
    pub p_good_to_bad: f64,
    /// Chance to move back, per datagram (1 / mean burst length).
    pub p_bad_to_good: f64,
    /// Loss probability while in the bad state.
    pub loss_in_bad: f64,
}

/// One direction's link, as a scenario configures it.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Bytes the bottleneck queue holds before it tail-drops.
    pub queue_bytes: u64,
    /// Independent random loss probability.
    pub loss: f64,
    pub burst: Option<GilbertElliott>,
    /// Fraction of datagrams that get `reorder_delay` extra.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Fraction of datagrams delivered twice.
    pub duplicate: f64,
    /// Fraction of datagrams with random bits flipped.
    pub corrupt: f64,
    /// Uniform extra delay in `[0, jitter)` per datagram.
    pub jitter: Duration,
    /// Arrivals are rounded up to a multiple of this (receive interrupt coalescing), so that
    /// datagrams reach the shard in batches. Zero delivers each at its own instant.
    pub coalesce: Duration,
    /// The IP-layer MTU of the path (largest IP datagram it carries).
    pub mtu: usize,
    /// From this time on (since the start of the run), the MTU is this instead.
    pub mtu_change: Option<(Duration, usize)>,
}

impl LinkConfig {
    /// A clean link: no loss, no reordering, no faults.
    pub fn clean(rate_bps: u64, delay: Duration) -> LinkConfig {
        let bdp = rate_bps.saturating_mul(delay.as_nanos()) / 8 / 1_000_000_000;
        LinkConfig {
            rate_bps,
            delay,
            queue_bytes: bdp.max(256 << 10),
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
            jitter: Duration::ZERO,
            coalesce: Duration::ZERO,
            mtu: MTU,
            mtu_change: None,
        }
    }

    /// The MTU in force at `now`.
    pub fn mtu_at(&self, now: Instant) -> usize {
        match self.mtu_change {
            Some((at, mtu)) if now >= Instant::ZERO + at => mtu,
            _ => self.mtu,
        }
    }
}

/// Why a link dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Oversize,
    QueueFull,
    Random,
    Burst,
}

/// One copy of a datagram on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub at: Instant,
    /// This copy must have bits flipped (see [`Link::corrupt`]).
    pub corrupt: bool,
}

/// What became of one datagram offered to the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Dropped(DropReason),
    /// Delivered once, or twice when `second` is set.
    Delivered {
        first: Arrival,
        second: Option<Arrival>,
    },
}

/// Width of the queuing-delay histogram's fine buckets, and how many there are (to 100 ms).
const QD_FINE_NS: u64 = 10_000;
const QD_FINE: usize = 10_000;
/// Coarse buckets of 1 ms beyond, to 10 s; longer waits land in the last one.
const QD_COARSE_NS: u64 = 1_000_000;
const QD_COARSE: usize = 9_900;

/// Queuing delay met by every datagram the link accepted (the wait before its serialization
/// starts): mean and percentiles, from a fixed-size histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDelayStats {
    count: u64,
    sum_ns: u128,
    buckets: Vec<u64>,
}

impl QueueDelayStats {
    fn record(&mut self, wait: Duration) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; QD_FINE + QD_COARSE];
        }
        let ns = wait.as_nanos();
        let i = if ns < QD_FINE_NS * QD_FINE as u64 {
            (ns / QD_FINE_NS) as usize
        } else {
            (QD_FINE + ((ns - QD_FINE_NS * QD_FINE as u64) / QD_COARSE_NS) as usize)
                .min(QD_FINE + QD_COARSE - 1)
        };
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> Duration {
        Duration::from_nanos((self.sum_ns / u128::from(self.count.max(1))) as u64)
    }

    /// The upper edge of the bucket holding the `p`-th percentile (0–100).
    pub fn percentile(&self, p: f64) -> Duration {
        let want = ((self.count as f64) * p / 100.0).ceil() as u64;
        let mut seen = 0;
        for (i, &b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= want.max(1) {
                let edge = if i < QD_FINE {
                    (i as u64 + 1) * QD_FINE_NS
                } else {
                    QD_FINE_NS * QD_FINE as u64 + (i - QD_FINE + 1) as u64 * QD_COARSE_NS
                };
                return Duration::from_nanos(edge);
            }
        }
        Duration::ZERO
    }
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub offered: u64,
    pub ip_bytes: u64,
    pub oversize: u64,
    pub queue_drops: u64,
    pub random_losses: u64,
    pub burst_losses: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
}

#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    rng: Rng,
    /// When the serializer finishes the last queued datagram.
    busy_until: Instant,
    in_bad_state: bool,
    stats: LinkStats,
    queue_delay: QueueDelayStats,
}

impl Link {
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        Link {
            cfg,
            rng: Rng::new(seed),
            busy_until: Instant::ZERO,
            in_bad_state: false,
            stats: LinkStats::default(),
            queue_delay: QueueDelayStats::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    pub fn queue_delay(&self) -> &QueueDelayStats {
        &self.queue_delay
    }

    /// Time to serialize `bytes` at the link rate.
    fn serialization(&self, bytes: u64) -> Duration {
        let rate = self.cfg.rate_bps.max(1);
        Duration::from_nanos(bytes.saturating_mul(8_000_000_000) / rate)
    }

    /// Bytes queued but not yet serialized at `now`.
    pub fn queued_bytes(&self, now: Instant) -> u64 {
        let wait = self.busy_until.saturating_since(now).as_nanos();
        (u128::from(wait) * u128::from(self.cfg.rate_bps) / 8_000_000_000) as u64
    }

    /// Offer a datagram of `len` UDP payload bytes (plus `ip_overhead`) at `now`.
    pub fn send(&mut self, now: Instant, len: usize, ip_overhead: usize) -> Fate {
        self.stats.offered += 1;
        let ip_len = len + ip_overhead;
        if ip_len > self.cfg.mtu_at(now) {
            self.stats.oversize += 1;
            return Fate::Dropped(DropReason::Oversize);
        }
        let ip_len = ip_len as u64;
        if self.queued_bytes(now) + ip_len > self.cfg.queue_bytes {
            self.stats.queue_drops += 1;
            return Fate::Dropped(DropReason::QueueFull);
        }
        self.stats.ip_bytes += ip_len;
        self.queue_delay.record(self.busy_until.saturating_since(now));
        let start = self.busy_until.max(now);
        self.busy_until = start + self.serialization(ip_len);
        if let Some(d) = self.wire_loss() {
            return Fate::Dropped(d);
        }
        let first = self.arrival(self.busy_until);
        let second = self.rng.chance(self.cfg.duplicate).then(|| {
            self.stats.duplicated += 1;
            let lag = Duration::from_nanos(self.rng.below(MAX_DUPLICATE_LAG.as_nanos()));
            self.arrival(self.busy_until + lag)
        });
        Fate::Delivered { first, second }
    }

    /// Step the burst chain and draw the random loss.
    fn wire_loss(&mut self) -> Option<DropReason> {
        if let Some(ge) = self.cfg.burst {
            let flip = if self.in_bad_state { ge.p_bad_to_good } else { ge.p_good_to_bad };
            if self.rng.chance(flip) {
                self.in_bad_state = !self.in_bad_state;
            }
            if self.in_bad_state && self.rng.chance(ge.loss_in_bad) {
                self.stats.burst_losses += 1;
                return Some(DropReason::Burst);
            }
        }
        if self.rng.chance(self.cfg.loss) {
            self.stats.random_losses += 1;
            return Some(DropReason::Random);
        }
        None
    }

    /// One copy's arrival time and corruption, for a copy leaving the serializer at `sent`.
    fn arrival(&mut self, sent: Instant) -> Arrival {
        let mut at = sent + self.cfg.delay;
        if self.cfg.jitter > Duration::ZERO {
            at += Duration::from_nanos(self.rng.below(self.cfg.jitter.as_nanos()));
        }
        if self.rng.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            at += self.cfg.reorder_delay;
        }
        let q = self.cfg.coalesce.as_nanos();
        if q > 0 {
            at = Instant::from_nanos(at.as_nanos().div_ceil(q).saturating_mul(q));
        }
        let corrupt = self.rng.chance(self.cfg.corrupt);
        if corrupt {
            self.stats.corrupted += 1;
        }
        Arrival { at, corrupt }
    }

    /// Flip between 1 and [`MAX_CORRUPT_BITS`] random bits of `buf` (the corruption of an
    /// [`Arrival`] with `corrupt` set). Always changes a non-empty buffer.
    pub fn corrupt(&mut self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let bits = 1 + self.rng.below(MAX_CORRUPT_BITS);
        let mut flipped = Vec::with_capacity(bits as usize);
        for _ in 0..bits {
            let bit = self.rng.below(buf.len() as u64 * 8);
            // Flipping the same bit twice would undo it: keep the flips distinct.
            if !flipped.contains(&bit) {
                flipped.push(bit);
                buf[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn serialization_and_propagation_add_up() {
        // 12 Mbit/s: a 1500-byte IP packet takes 1 ms to serialize.
        let mut l = Link::new(LinkConfig::clean(12_000_000, MS.saturating_mul(10)), 1);
        let t0 = Instant::from_nanos(5_000_000);
        let Fate::Delivered { first, second: None } = l.send(t0, 1472, 28) else {
            panic!("clean link must deliver once")
        };
        assert_eq!(first.at, t0 + MS.saturating_mul(11));
        // A second datagram at the same instant waits behind the first.
        let Fate::Delivered { first, .. } = l.send(t0, 1472, 28) else { panic!() };
        assert_eq!(first.at, t0 + MS.saturating_mul(12));
        assert_eq!(l.stats().ip_bytes, 3000);
    }

    #[test]
    fn queue_tail_drops_at_its_byte_limit() {
        let mut cfg = LinkConfig::clean(12_000_000, MS);
        cfg.queue_bytes = 4500;
        let mut l = Link::new(cfg, 1);
        let t = Instant::ZERO;
        for _ in 0..3 {
            assert!(matches!(l.send(t, 1472, 28), Fate::Delivered { .. }));
        }
        assert_eq!(l.send(t, 1472, 28), Fate::Dropped(DropReason::QueueFull));
        // After one serialization time, one slot is free again.
        assert!(matches!(l.send(t + MS, 1472, 28), Fate::Delivered { .. }));
        assert_eq!(l.stats().queue_drops, 1);
    }

    #[test]
    fn oversize_datagrams_are_dropped() {
        let mut l = Link::new(LinkConfig::clean(1_000_000_000, MS), 1);
        assert_eq!(l.send(Instant::ZERO, 1473, 28), Fate::Dropped(DropReason::Oversize));
    }

    #[test]
    fn loss_rate_is_close_to_configured_and_seeded() {
        let mut cfg = LinkConfig::clean(10_000_000_000, MS);
        cfg.loss = 0.1;
        let run = |seed| {
            let mut l = Link::new(cfg.clone(), seed);
            (0..20_000u64)
                .map(|i| l.send(Instant::from_nanos(i * 10_000), 100, 28))
                .collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3), "same seed, same fates");
        let lost = a.iter().filter(|f| matches!(f, Fate::Dropped(DropReason::Random))).count();
        assert!((1_700..2_300).contains(&lost), "lost {lost} of 20000 at 10%");
    }

    #[test]
    fn burst_losses_come_in_runs() {
        let mut cfg = LinkConfig::clean(10_000_000_000, MS);
        cfg.burst =
            Some(GilbertElliott { p_good_to_bad: 0.01, p_bad_to_good: 0.1, loss_in_bad: 1.0 });
        let mut l = Link::new(cfg, 4);
        let fates: Vec<bool> = (0..20_000u64)
            .map(|i| matches!(l.send(Instant::from_nanos(i * 10_000), 100, 28), Fate::Dropped(_)))
            .collect();
        let lost = fates.iter().filter(|&&b| b).count();
        let runs = fates.windows(2).filter(|w| !w[0] && w[1]).count();
        assert!(lost > 0 && runs > 0);
        // Mean burst length is about 1 / p_bad_to_good = 10.
        assert!(lost / runs >= 5, "{lost} losses in {runs} bursts");
    }

    #[test]
    fn faults_duplicate_reorder_and_corrupt() {
        let mut cfg = LinkConfig::clean(10_000_000_000, MS);
        cfg.duplicate = 0.5;
        cfg.reorder = 0.5;
        cfg.reorder_delay = MS.saturating_mul(3);
        cfg.corrupt = 0.5;
        let mut l = Link::new(cfg, 5);
        let mut min_at = Instant::FAR_FUTURE;
        for i in 0..1000u64 {
            let now = Instant::from_nanos(i * 1000);
            if let Fate::Delivered { first, .. } = l.send(now, 100, 28) {
                assert!(first.at >= now + MS);
                min_at = min_at.min(first.at);
            }
        }
        let s = *l.stats();
        assert!(s.duplicated > 300 && s.reordered > 300 && s.corrupted > 300, "{s:?}");
        let mut buf = [0u8; 64];
        l.corrupt(&mut buf);
        assert_ne!(buf, [0u8; 64]);
    }

    #[test]
    fn coalescing_rounds_arrivals_up() {
        let mut cfg = LinkConfig::clean(10_000_000_000, MS);
        cfg.coalesce = Duration::from_micros(100);
        let mut l = Link::new(cfg, 1);
        let Fate::Delivered { first, .. } = l.send(Instant::from_nanos(1), 100, 28) else {
            panic!()
        };
        assert_eq!(first.at.as_nanos() % 100_000, 0);
        assert!(first.at >= Instant::from_nanos(1) + MS);
    }
}
