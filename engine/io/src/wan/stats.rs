//! Per-direction counters and latency histograms of the WAN emulator.
//!
//! Role: what the emulator reports at exit about itself: packets in, delivered, dropped (by
//! cause), and two latency distributions in nanoseconds:
//! - `error`: actual write time minus the model's release time, i.e. how late the emulator
//!   itself was (timer wake-up, batching, CPU steal); never negative, since nothing is
//!   released early;
//! - `sojourn_excess`: time in the emulator minus the configured one-way delay, i.e. queueing
//!   plus serialization plus jitter plus the error above (negative values, possible only with
//!   jitter, count as 0).
//!
//! The histogram is log-linear (64 sub-buckets per power of two, relative error under 1.6%),
//! fixed size, allocated once; recording never allocates.

use std::fmt;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets: 64 exact values, then 64 per power of two up to 2^63.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// A log-linear histogram of u64 values.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").field("total", &self.total).field("max", &self.max).finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max: 0 }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (SUB + shift as u64 * SUB + sub) as usize
}

/// The largest value that falls in bucket `idx`.
fn bucket_high(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < SUB {
        return idx;
    }
    let shift = (idx - SUB) / SUB;
    let sub = (idx - SUB) % SUB;
    let low = (SUB + sub) << shift;
    low + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest recorded value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` in [0, 1], rounded up to its bucket's top (never below the
    /// true quantile); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (idx, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(idx).min(self.max);
            }
        }
        self.max
    }
}

/// Why a packet did not make it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// Tail drop at the bottleneck queue.
    Queue,
    /// Random loss.
    Loss,
    /// The emulator's packet pool was exhausted (its own limit; a sign the configured queue
    /// plus delay line is larger than it can hold).
    Pool,
    /// The write to the far TUN was refused.
    Write,
}

/// What one direction saw, from its start to its stop.
#[derive(Clone, Debug, Default)]
pub struct DirectionStats {
    /// Packets the sending side's kernel dropped because the source TUN's ring was full (the
    /// forwarder did not read for a while): lost before the emulator saw them, and not in
    /// `packets_in`. Read from the interface's `tx_dropped` at stop.
    pub drops_tun_ring: u64,
    /// Packets read from the source TUN.
    pub packets_in: u64,
    /// Their IP bytes.
    pub bytes_in: u64,
    /// Packets written to the far TUN.
    pub delivered_packets: u64,
    /// Their IP bytes.
    pub delivered_bytes: u64,
    /// Tail drops at the queue.
    pub drops_queue: u64,
    /// Random losses.
    pub drops_loss: u64,
    /// Drops because the packet pool was full.
    pub drops_pool: u64,
    /// Writes the far TUN refused.
    pub write_errors: u64,
    /// Reads from the source TUN that failed (the interface went away).
    pub read_errors: u64,
    /// Packets still in the delay line when the emulator stopped (discarded).
    pub flushed_at_exit: u64,
    /// Lateness of each release against the model, ns.
    pub error_ns: Histogram,
    /// Time in the emulator minus the configured delay, ns.
    pub sojourn_excess_ns: Histogram,
}

impl DirectionStats {
    /// Counts a drop.
    pub fn on_drop(&mut self, cause: DropCause) {
        match cause {
            DropCause::Queue => self.drops_queue += 1,
            DropCause::Loss => self.drops_loss += 1,
            DropCause::Pool => self.drops_pool += 1,
            DropCause::Write => self.write_errors += 1,
        }
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "drops_tun_ring={} packets_in={} bytes_in={} delivered={} delivered_bytes={} drops_queue={} \
             drops_loss={} drops_pool={} write_errors={} read_errors={} flushed_at_exit={} \
             error_us_p50={:.1} error_us_p99={:.1} error_us_max={:.1} \
             sojourn_minus_delay_us_p50={:.1} sojourn_minus_delay_us_p99={:.1}",
            self.drops_tun_ring,
            self.packets_in,
            self.bytes_in,
            self.delivered_packets,
            self.delivered_bytes,
            self.drops_queue,
            self.drops_loss,
            self.drops_pool,
            self.write_errors,
            self.read_errors,
            self.flushed_at_exit,
            us(self.error_ns.quantile(0.5)),
            us(self.error_ns.quantile(0.99)),
            us(self.error_ns.max()),
            us(self.sojourn_excess_ns.quantile(0.5)),
            us(self.sojourn_excess_ns.quantile(0.99)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for v in (0..5000u64).chain([u64::MAX, u64::MAX / 3, 1 << 40, (1 << 40) - 1]) {
            let idx = bucket_of(v);
            assert!(idx < BUCKETS);
            assert!(bucket_high(idx) >= v, "v {v}");
            if idx > 0 {
                assert!(bucket_high(idx - 1) < v, "v {v}");
            }
        }
    }

    #[test]
    fn quantiles_are_close_and_never_below() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((5_000_000..=5_000_000 * 102 / 100).contains(&p50), "p50 {p50}");
        assert!((9_900_000..=9_900_000 * 102 / 100).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
