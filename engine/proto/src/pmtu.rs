//! Path-MTU probing: the sans-IO search for the largest datagram the path carries, in the
//! spirit of DPLPMTUD (RFC 8899). docs/DATAPLANE.md "Path MTU" describes it for operators;
//! docs/protocol/02-wire.md §2.2 has the Probe and ProbeAck packets.
//!
//! The sender starts at the *base* size, which fits a 1500-byte MTU on IPv4 and IPv6 and is
//! never probed. It probes larger sizes with padded probe datagrams that carry no file data
//! (sent with DF set by the driver); a probe the peer acknowledges raises the size data
//! datagrams use from then on. A size whose probe is lost [`MAX_PROBES`] times in a row is too
//! big. The search is a binary search over `(low, high)`: `low` is the largest size confirmed,
//! `high` the smallest size known to fail (or one past the ceiling). The first probe of a
//! search tries the ceiling itself, because the local interface MTU is usually the path's.
//!
//! Invariants:
//! - `base <= size <= max(base, ceiling)`, and `size` is always a size the peer acknowledged
//!   (or the base). `low <= size < high` while searching.
//! - At most one probe is outstanding, and probes are at least [`PROBE_GAP_MIN`] apart (and a
//!   round trip): probing costs at most one ceiling-sized datagram per round trip.
//! - Black hole: while `size > base`, data sent with no evidence of delivery since for
//!   [`BLACK_HOLE_RTTS`] round trips (at least [`BLACK_HOLE_MIN`]) drops `size` to the base at
//!   once and searches again later, below the size that failed. Evidence is the session's to
//!   give ([`Pmtu::on_delivery`]): datagrams larger than the base arrived. A sender that stops
//!   sending (flow control, a slow disk at the receiver) never looks like a black hole.
//! - The kernel refusing a datagram as too large (EMSGSIZE) lowers the ceiling at once.
//! - Nothing here reads a clock or a socket: time is an argument, outputs are polled.

use crate::time::{Duration, Instant};

/// Lost probes in a row at one size that make it too big (RFC 8899 MAX_PROBES).
pub const MAX_PROBES: u8 = 3;
/// The search stops when the unknown range `(low, high)` is at most this many bytes wide.
pub const SEARCH_RESOLUTION: u16 = 16;
/// A probe not acknowledged after this long, or two round trips if longer, is lost.
pub const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Least time between two probes.
pub const PROBE_GAP_MIN: Duration = Duration::from_millis(5);
/// Round trips without an acknowledgement of data sent that reveal a black hole.
pub const BLACK_HOLE_RTTS: u64 = 8;
/// Least time without an acknowledgement that reveals a black hole.
pub const BLACK_HOLE_MIN: Duration = Duration::from_millis(500);
/// After a black hole, wait this long before searching again.
pub const BLACK_HOLE_HOLDOFF: Duration = Duration::from_secs(1);
/// After a search completes below the ceiling, search above it again after this long
/// (RFC 8899 PMTU_RAISE_TIMER).
pub const RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// The largest datagram the search ever tries (a 9000-byte jumbo frame on IPv4: 9000 − 28).
pub const MAX_PROBE_SIZE: u16 = 8972;

/// The largest datagram a sender probes towards a peer: a 9000-byte jumbo frame less the IP
/// and UDP headers (28 bytes on IPv4, 48 on IPv6). Drivers lower it to the route's MTU once
/// they know the peer.
pub fn sender_ceiling(peer_is_v6: bool) -> u16 {
    if peer_is_v6 { MAX_PROBE_SIZE - 20 } else { MAX_PROBE_SIZE }
}

/// Where the search stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmtuState {
    /// No probing: the size is fixed (an explicit size, or nothing above the base to try).
    Disabled,
    /// Probing sizes in `(low, high)`.
    Searching,
    /// The search ended; the size stays until a black hole or the raise timer.
    Complete,
    /// A black hole dropped the size to the base; the search resumes after a hold-off.
    BlackHole,
}

/// A probe to send now: a datagram of exactly `size` bytes carrying `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub id: u32,
    pub size: u16,
}

/// Probing counters (reported in a transfer's stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PmtuStats {
    pub probes_sent: u64,
    pub probes_acked: u64,
    pub probes_lost: u64,
    pub black_holes: u64,
    /// Datagrams the kernel refused as too large for the local interface.
    pub too_large: u64,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    id: u32,
    size: u16,
    sent_at: Instant,
}

/// The probing state machine of one sender shard.
#[derive(Clone, Debug)]
pub struct Pmtu {
    state: PmtuState,
    base: u16,
    ceiling: u16,
    size: u16,
    low: u16,
    /// Smallest size known to fail; `ceiling + 1` when none is known.
    high: u16,
    /// The next probe tries the ceiling (the first of a search).
    try_ceiling: bool,
    outstanding: Option<Outstanding>,
    /// Lost probes in a row at the current candidate.
    losses: u8,
    next_id: u32,
    next_probe_at: Instant,
    srtt: Duration,
    /// When data was first sent after the last evidence of delivery.
    unacked_since: Option<Instant>,
    stats: PmtuStats,
}

impl Pmtu {
    /// Probing from `base` up to `max` (clamped to [`MAX_PROBE_SIZE`]); disabled when there
    /// is nothing above the base to try.
    pub fn new(base: u16, max: u16, now: Instant) -> Self {
        let ceiling = max.min(MAX_PROBE_SIZE).max(base);
        let mut me = Pmtu {
            state: PmtuState::Disabled,
            base,
            ceiling,
            size: base,
            low: base,
            high: ceiling.saturating_add(1),
            try_ceiling: true,
            outstanding: None,
            losses: 0,
            next_id: 0,
            next_probe_at: now,
            srtt: PROBE_TIMEOUT_MIN.div(2),
            unacked_since: None,
            stats: PmtuStats::default(),
        };
        me.start_search(now, ceiling);
        me
    }

    /// The size data datagrams use now.
    pub fn datagram_size(&self) -> u16 {
        self.size
    }

    /// The size probing starts from and falls back to.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// The largest size this search may ever try: buffers sized for it hold any probe.
    pub fn ceiling(&self) -> u16 {
        self.ceiling
    }

    pub fn state(&self) -> PmtuState {
        self.state
    }

    pub fn stats(&self) -> &PmtuStats {
        &self.stats
    }

    /// The sender's smoothed round-trip time (sets the probe and black-hole timers).
    pub fn set_rtt(&mut self, srtt: Duration) {
        self.srtt = srtt;
    }

    /// The driver learnt the local limit (interface or route MTU minus IP and UDP headers):
    /// never probe above it. Lowering it below the current size drops the size at once.
    pub fn set_ceiling(&mut self, now: Instant, max: u16) {
        let ceiling = max.min(MAX_PROBE_SIZE).max(self.base);
        if ceiling >= self.ceiling {
            return;
        }
        self.ceiling = ceiling;
        self.high = self.high.min(ceiling.saturating_add(1));
        self.size = self.size.min(ceiling);
        self.low = self.low.min(self.size);
        if self.outstanding.is_some_and(|o| o.size > ceiling) {
            self.outstanding = None;
            self.losses = 0;
            self.next_probe_at = now;
        }
        self.check_done(now);
    }

    /// The kernel refused a datagram of `size` bytes (EMSGSIZE): nothing that large leaves
    /// this host, so the ceiling drops below it at once. When it was data at the current size
    /// (the interface shrank under the transfer, not a probe above it), every size above the
    /// base is unconfirmed now: fall back to the base and search again below the refused
    /// size, ceiling first (the driver lowers the ceiling to the route's new MTU, so one
    /// probe usually settles it), rather than shrinking one refused datagram at a time.
    pub fn handle_too_large(&mut self, now: Instant, size: u16) {
        if self.state == PmtuState::Disabled || size <= self.base {
            return;
        }
        self.stats.too_large += 1;
        let data_refused = size <= self.size;
        self.set_ceiling(now, size - 1);
        if data_refused {
            self.size = self.base;
            self.unacked_since = None;
            self.start_search(now, self.ceiling);
        }
    }

    /// Whether [`Pmtu::poll_probe`] would return a probe now.
    pub fn is_probe_due(&self, now: Instant) -> bool {
        self.state == PmtuState::Searching
            && self.outstanding.is_none()
            && now >= self.next_probe_at
            && self.candidate().is_some()
    }

    /// A probe is due: returns it and counts it sent.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeRequest> {
        if !self.is_probe_due(now) {
            return None;
        }
        let size = self.candidate()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.outstanding = Some(Outstanding { id, size, sent_at: now });
        self.stats.probes_sent += 1;
        Some(ProbeRequest { id, size })
    }

    /// The peer acknowledged probe `id`, which arrived `size` bytes long. A late ack (after
    /// its probe timed out) still proves its size; an ack for a probe never sent is ignored.
    /// Returns true when the size went up.
    pub fn handle_probe_ack(&mut self, now: Instant, id: u32, size: u16) -> bool {
        if self.state == PmtuState::Disabled || id >= self.next_id {
            return false;
        }
        if self.outstanding.is_some_and(|o| o.id == id) {
            self.outstanding = None;
            self.losses = 0;
            self.next_probe_at = now + self.probe_gap();
        }
        self.stats.probes_acked += 1;
        if self.state != PmtuState::Searching || size <= self.low || size >= self.high {
            return false;
        }
        self.low = size;
        self.size = size;
        self.try_ceiling = false;
        self.check_done(now);
        true
    }

    /// Data datagrams went out at the current size.
    pub fn on_data_sent(&mut self, now: Instant) {
        if self.unacked_since.is_none() {
            self.unacked_since = Some(now);
        }
    }

    /// The peer shows that datagrams larger than the base size arrive (or that data sent at
    /// the current size was delivered): the path carries the current size. Data sent after
    /// this starts the black-hole timer again.
    pub fn on_delivery(&mut self) {
        self.unacked_since = None;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(o) = self.outstanding
            && now >= o.sent_at + self.probe_timeout()
        {
            self.outstanding = None;
            self.stats.probes_lost += 1;
            self.losses += 1;
            self.next_probe_at = now;
            if self.losses >= MAX_PROBES {
                self.losses = 0;
                self.high = self.high.min(o.size);
                self.try_ceiling = false;
                self.check_done(now);
            }
        }
        if self.size > self.base
            && let Some(since) = self.unacked_since
            && now >= since + self.black_hole_timeout()
        {
            self.on_black_hole(now);
        }
        match self.state {
            PmtuState::BlackHole if now >= self.next_probe_at => {
                self.start_search(now, self.high.saturating_sub(1));
            }
            PmtuState::Complete if now >= self.next_probe_at && self.size < self.ceiling => {
                self.start_search(now, self.ceiling);
            }
            _ => {}
        }
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        if let Some(o) = self.outstanding {
            at(o.sent_at + self.probe_timeout());
        }
        match self.state {
            PmtuState::Searching if self.outstanding.is_none() => at(self.next_probe_at),
            PmtuState::BlackHole => at(self.next_probe_at),
            PmtuState::Complete if self.size < self.ceiling => at(self.next_probe_at),
            _ => {}
        }
        if self.size > self.base
            && let Some(since) = self.unacked_since
        {
            at(since + self.black_hole_timeout());
        }
        t
    }

    fn probe_timeout(&self) -> Duration {
        self.srtt.saturating_mul(2).max(PROBE_TIMEOUT_MIN)
    }

    fn probe_gap(&self) -> Duration {
        self.srtt.max(PROBE_GAP_MIN)
    }

    fn black_hole_timeout(&self) -> Duration {
        self.srtt.saturating_mul(BLACK_HOLE_RTTS).max(BLACK_HOLE_MIN)
    }

    /// The size the next probe tries, if any is left to try.
    fn candidate(&self) -> Option<u16> {
        if self.high <= self.low.saturating_add(1) {
            return None;
        }
        if self.try_ceiling {
            return Some(self.high - 1);
        }
        Some(self.low + (self.high - self.low) / 2)
    }

    /// (Re)start a search of sizes up to `top`, from the current size.
    fn start_search(&mut self, now: Instant, top: u16) {
        self.low = self.size;
        self.high = top.min(self.ceiling).saturating_add(1).max(self.low.saturating_add(1));
        self.try_ceiling = true;
        self.losses = 0;
        self.outstanding = None;
        self.next_probe_at = now;
        self.state = PmtuState::Searching;
        self.check_done(now);
        if self.state == PmtuState::Complete && self.size == self.base && self.ceiling == self.base
        {
            self.state = PmtuState::Disabled;
        }
    }

    fn check_done(&mut self, now: Instant) {
        if self.state == PmtuState::Searching
            && self.high.saturating_sub(self.low) <= SEARCH_RESOLUTION.max(1)
        {
            self.state = PmtuState::Complete;
            self.outstanding = None;
            self.next_probe_at = now + RAISE_INTERVAL;
        }
    }

    fn on_black_hole(&mut self, now: Instant) {
        self.stats.black_holes += 1;
        // The size that stopped working is the new upper bound of the next search.
        self.high = self.size;
        self.size = self.base;
        self.low = self.base;
        self.outstanding = None;
        self.losses = 0;
        self.unacked_since = None;
        self.state = PmtuState::BlackHole;
        self.next_probe_at = now + BLACK_HOLE_HOLDOFF;
    }
}

#[cfg(test)]
mod tests;
