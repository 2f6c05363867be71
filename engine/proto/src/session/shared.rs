//! Machinery both shard kinds share: sequence numbers, sealing control datagrams, the
//! pre-authentication checks and the authenticate-then-commit receive step.
//!
//! Invariant (docs/PROTOCOL.md §5): a datagram changes no state until (1) its header decoded,
//! (2) its session id, shard and type fit, (3) the replay window has not seen its sequence
//! number, (4) its tag verified. Only then does the replay window move, and only then is the
//! body decoded and handled.

use super::{AbortReason, Reject, RxOutcome, ShardStats};
use crate::crypto::{Job, MAX_BATCH, Suite, TAG_LEN};
use crate::replay::{ReplayError, ReplayWindow};
use crate::time::{Duration, Instant};
use crate::wire::{Body, DATA_PREFIX_LEN, HEADER_LEN, Header, PacketType};
use arrayvec::ArrayVec;

/// Bytes of a data datagram that are not file payload.
pub(crate) const DATA_OVERHEAD: usize = HEADER_LEN + DATA_PREFIX_LEN + TAG_LEN;
/// Largest control body we ever build (a full NAK: 2 + 64 × 16).
pub(crate) const MAX_CONTROL_BODY: usize = 2 + crate::wire::MAX_NAK_RANGES * 16;

/// One end of one shard's datagram channel.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub session_id: u64,
    pub shard: u8,
    tx: Box<dyn Suite>,
    rx: Box<dyn Suite>,
    next_counter: u64,
    replay: ReplayWindow,
    pub stats: ShardStats,
    /// Last time an authenticated datagram arrived from the peer.
    pub last_heard: Instant,
    /// Last time we sent anything.
    pub last_sent: Instant,
}

/// A datagram that passed the pre-authentication checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked {
    pub index: usize,
    pub header: Header,
}

impl Endpoint {
    pub fn new(
        session_id: u64,
        shard: u8,
        tx: Box<dyn Suite>,
        rx: Box<dyn Suite>,
        now: Instant,
    ) -> Self {
        Endpoint {
            session_id,
            shard,
            tx,
            rx,
            next_counter: 0,
            replay: ReplayWindow::new(),
            stats: ShardStats::default(),
            last_heard: now,
            last_sent: now,
        }
    }

    /// The next sequence number (§5: top 8 bits = shard), or `SequenceExhausted`.
    pub fn next_seq(&mut self) -> Result<u64, AbortReason> {
        if self.next_counter > super::SEQ_COUNTER_MAX {
            return Err(AbortReason::SequenceExhausted);
        }
        let seq = (u64::from(self.shard) << 56) | self.next_counter;
        self.next_counter += 1;
        Ok(seq)
    }

    /// Write a header for a new datagram of `ptype` into `out`, returning its sequence number.
    pub fn begin(
        &mut self,
        now: Instant,
        ptype: PacketType,
        out: &mut [u8],
    ) -> Result<u64, AbortReason> {
        let seq = self.next_seq()?;
        let header = Header {
            ptype,
            shard: self.shard,
            session_id: self.session_id,
            seq,
            timestamp_us: now.as_wire_us(),
        };
        header.encode(out);
        Ok(seq)
    }

    /// Build and seal one control datagram with `body` into `out`; returns its length, or 0 if
    /// `out` is too small (caller bug).
    pub fn seal_control(
        &mut self,
        now: Instant,
        body: &Body<'_>,
        out: &mut [u8],
    ) -> Result<usize, AbortReason> {
        self.seal_with(now, body.packet_type(), out, |o| body.encode(o))
    }

    /// Build and seal one control datagram of `ptype` whose body `encode` writes.
    pub fn seal_with(
        &mut self,
        now: Instant,
        ptype: PacketType,
        out: &mut [u8],
        encode: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, AbortReason> {
        if out.len() < HEADER_LEN + MAX_CONTROL_BODY + TAG_LEN {
            return Ok(0);
        }
        let seq = self.begin(now, ptype, out)?;
        let end = out.len() - TAG_LEN;
        let Some(body_len) = encode(&mut out[HEADER_LEN..end]) else {
            return Ok(0);
        };
        let len = HEADER_LEN + body_len + TAG_LEN;
        self.tx.seal(seq, HEADER_LEN, &mut out[..len]);
        self.sent(now);
        Ok(len)
    }

    pub fn seal_batch(&mut self, jobs: &mut [Job<'_>]) {
        self.tx.seal_batch(jobs);
    }

    pub fn sent(&mut self, now: Instant) {
        self.stats.datagrams_sent += 1;
        self.last_sent = now;
    }

    /// The pre-authentication checks on one datagram.
    pub fn precheck(&self, buf: &[u8], accepts: fn(PacketType) -> bool) -> Result<Header, Reject> {
        let header = Header::decode(buf).map_err(|_| Reject::Malformed)?;
        if header.session_id != self.session_id {
            return Err(Reject::WrongSession);
        }
        if header.shard != self.shard || (header.seq >> 56) as u8 != self.shard {
            return Err(Reject::WrongShard);
        }
        if !accepts(header.ptype) {
            return Err(Reject::Reflected);
        }
        self.replay.check(header.seq).map_err(replay_reject)?;
        Ok(header)
    }

    /// Authenticate a batch: precheck every datagram, open the survivors in one batch call,
    /// then commit their sequence numbers. Rejected ones get their outcome set and counted.
    /// Returns the datagrams that passed, in order, with their plaintext bodies in place.
    pub fn authenticate<'b>(
        &mut self,
        now: Instant,
        bufs: impl Iterator<Item = (&'b mut [u8], &'b mut RxOutcome)>,
        accepts: fn(PacketType) -> bool,
        passed: &mut ArrayVec<Checked, MAX_BATCH>,
    ) {
        let mut jobs: ArrayVec<Job<'_>, MAX_BATCH> = ArrayVec::new();
        let mut outcomes: ArrayVec<&'b mut RxOutcome, MAX_BATCH> = ArrayVec::new();
        let mut headers: ArrayVec<(usize, Header), MAX_BATCH> = ArrayVec::new();
        for (index, (buf, outcome)) in bufs.enumerate().take(MAX_BATCH) {
            self.stats.datagrams_received += 1;
            match self.precheck(buf, accepts) {
                Ok(header) => {
                    headers.push((index, header));
                    jobs.push(Job::new(header.seq, HEADER_LEN, buf));
                }
                Err(r) => {
                    self.stats.rejects.add(r);
                    *outcome = RxOutcome::Rejected(r);
                }
            }
            outcomes.push(outcome);
        }
        self.rx.open_batch(&mut jobs);
        for (job, (index, header)) in jobs.iter().zip(headers) {
            let verdict = if !job.ok {
                Err(Reject::BadTag)
            } else {
                self.replay.commit(header.seq).map_err(replay_reject)
            };
            match verdict {
                Ok(()) => {
                    self.last_heard = now;
                    passed.push(Checked { index, header });
                }
                Err(r) => {
                    self.stats.rejects.add(r);
                    *outcomes[index] = RxOutcome::Rejected(r);
                }
            }
        }
    }

    /// `Some(IdleTimeout)` once the peer has been silent for `idle` (at the deadline itself, so a
    /// deadline reported by `poll_timeout` is always acted on by `handle_timeout`).
    pub fn idle_check(&self, now: Instant, idle: Duration) -> Option<AbortReason> {
        (now.saturating_since(self.last_heard) >= idle).then_some(AbortReason::IdleTimeout)
    }
}

fn replay_reject(e: ReplayError) -> Reject {
    match e {
        ReplayError::Duplicate => Reject::Replayed,
        ReplayError::Stale => Reject::Stale,
    }
}

/// The body bytes of an authenticated datagram.
pub(crate) fn body_of(buf: &[u8]) -> &[u8] {
    buf.get(HEADER_LEN..buf.len().saturating_sub(TAG_LEN)).unwrap_or(&[])
}

/// A token bucket that paces in batches of about `PACE_BATCH` of traffic (DESIGN.md:
/// "Pacing is by batch sized from the current rate, not a fixed burst").
///
/// The shard wakes when the bucket holds one batch; the bucket holds up to `PACE_CREDIT`, so a
/// wake-up that comes late (a busy core: measured on the emulated WAN under load, the sender
/// reached 107 of 190 Mbit/s when the bucket held one batch only) sends what it missed, up to
/// one more batch, instead of losing it. Credit never grows beyond that: no bursts.
#[derive(Clone, Debug)]
pub(crate) struct Pacer {
    rate_bps: u64,
    tokens_bits: u64,
    last: Instant,
}

/// How much traffic one pacing batch is worth.
pub(crate) const PACE_BATCH: Duration = Duration::from_micros(1_000);
/// Most credit the bucket keeps, as time at the current rate (two batches).
pub(crate) const PACE_CREDIT: Duration = Duration::from_micros(2_000);
/// Smallest batch, in datagram-sized units, so slow rates still send whole datagrams.
const PACE_MIN_DATAGRAMS: u64 = 2;

impl Pacer {
    pub fn new(rate_bps: u64, now: Instant) -> Self {
        Pacer { rate_bps: rate_bps.max(1), tokens_bits: 0, last: now }
    }

    pub fn set_rate(&mut self, rate_bps: u64) {
        self.rate_bps = rate_bps.max(1);
    }

    /// `span` of traffic at the current rate, at least a couple of datagrams.
    fn bits_in(&self, span: Duration, datagram_bits: u64) -> u64 {
        let bits = (u128::from(self.rate_bps) * u128::from(span.as_nanos()) / 1_000_000_000) as u64;
        bits.max(PACE_MIN_DATAGRAMS * datagram_bits)
    }

    pub fn refill(&mut self, now: Instant, datagram_bits: u64) {
        let elapsed = now.saturating_since(self.last).as_nanos();
        let add = (u128::from(self.rate_bps) * u128::from(elapsed) / 1_000_000_000) as u64;
        // Only advance `last` by whole tokens' worth so slow rates accumulate.
        if add > 0 {
            self.last = now;
        }
        let depth = self.bits_in(PACE_CREDIT, datagram_bits);
        self.tokens_bits = self.tokens_bits.saturating_add(add).min(depth);
    }

    pub fn try_take(&mut self, bits: u64) -> bool {
        if self.tokens_bits >= bits {
            self.tokens_bits -= bits;
            true
        } else {
            false
        }
    }

    /// When the bucket will hold a whole pacing batch again.
    pub fn next_batch_at(&self, datagram_bits: u64) -> Instant {
        let want = self.bits_in(PACE_BATCH, datagram_bits).saturating_sub(self.tokens_bits);
        let ns = (u128::from(want) * 1_000_000_000).div_ceil(u128::from(self.rate_bps));
        self.last + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }
}

/// What a disk read's completion means for the slot that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// Every requested byte is in the buffer.
    Done,
    /// A short or interrupted read: ask again for the rest.
    Again,
    /// The file ended early or the disk failed: the shard aborts with `DiskReadFailed`.
    Failed(super::DiskError),
}

/// Apply a read completion to a slot that has `filled` of `len` bytes (the rule both shard
/// kinds share: short reads continue, `EINTR` retries, end of file is `Missing`).
pub(crate) fn read_step(
    filled: &mut u32,
    len: u32,
    result: Result<usize, super::DiskError>,
) -> ReadStep {
    let want = len - *filled;
    match result {
        Ok(0) if want > 0 => ReadStep::Failed(super::DiskError::Missing),
        Ok(n) => {
            *filled += (n as u32).min(want);
            if *filled < len { ReadStep::Again } else { ReadStep::Done }
        }
        Err(e) if e.is_transient() => ReadStep::Again,
        Err(e) => ReadStep::Failed(e),
    }
}

/// Most events a shard queues for its coordinator; more is a coordinator that stopped
/// listening, which ends the shard with `ResourceLimit`.
pub(crate) const MAX_EVENTS: usize = 1024;

/// A shard's phase and the events it owes its coordinator: the part of a shard's state that
/// is the same for both kinds.
#[derive(Debug)]
pub(crate) struct Life {
    pub phase: Phase,
    events: std::collections::VecDeque<super::ShardEvent>,
}

impl Life {
    pub fn new() -> Self {
        Life { phase: Phase::Active, events: std::collections::VecDeque::with_capacity(64) }
    }

    pub fn pop(&mut self) -> Option<super::ShardEvent> {
        self.events.pop_front()
    }

    /// True when the next [`push`](Self::push) would fail the shard.
    pub fn is_full(&self) -> bool {
        self.events.len() >= MAX_EVENTS
    }

    /// Queue an event for the coordinator (bounded).
    pub fn push(&mut self, ev: super::ShardEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(ev);
        } else {
            self.fail(AbortReason::ResourceLimit, None, None);
        }
    }

    /// End the shard locally; the reason is reported once, and sent to the peer once.
    pub fn fail(&mut self, reason: AbortReason, disk: Option<super::DiskError>, file: Option<u32>) {
        if self.phase.abort(reason) {
            let ev = super::ShardEvent::Aborted { reason, by_peer: false, disk, file };
            self.events.push_back(ev);
        }
    }

    /// The peer sent `Abort(code)`.
    pub fn peer_aborted(&mut self, code: u16) {
        let reason = AbortReason::from_u16(code);
        if self.phase.peer_aborted() {
            let ev = super::ShardEvent::Aborted { reason, by_peer: true, disk: None, file: None };
            self.events.push_back(ev);
        }
    }
}

/// A shard's life (docs/PROTOCOL.md §6.6). The transitions are the methods below; nothing else
/// assigns a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Moving data.
    Active,
    /// Send one `Complete`, then close (sender, after every file was acknowledged).
    Completing,
    /// Say `Complete` periodically until the peer answers or the linger ends (receiver shard 0).
    Lingering {
        since: Instant,
        last: Instant,
    },
    /// Send one `Abort(reason)`, then close.
    Aborting(AbortReason),
    Closed,
}

impl Phase {
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Active)
    }

    pub fn is_closed(self) -> bool {
        matches!(self, Phase::Closed)
    }

    fn is_ending_badly(self) -> bool {
        matches!(self, Phase::Closed | Phase::Aborting(_))
    }

    /// A local failure or an abort command. True if this is news (the caller reports it).
    pub fn abort(&mut self, reason: AbortReason) -> bool {
        if self.is_ending_badly() {
            return false;
        }
        *self = Phase::Aborting(reason);
        true
    }

    /// The peer aborted: nothing more to say. True if this is news.
    pub fn peer_aborted(&mut self) -> bool {
        if self.is_ending_badly() {
            return false;
        }
        *self = Phase::Closed;
        true
    }

    pub fn complete(&mut self) {
        if self.is_active() {
            *self = Phase::Completing;
        }
    }

    pub fn linger(&mut self, now: Instant) {
        if self.is_active() {
            *self = Phase::Lingering { since: now, last: now };
        }
    }

    /// The coordinator closes a shard that has nothing more to say.
    pub fn close_if_active(&mut self) {
        if self.is_active() {
            *self = Phase::Closed;
        }
    }

    pub fn close(&mut self) {
        *self = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transition table of §6.6: every (phase, input) pair and where it leads.
    #[test]
    fn phase_transition_table() {
        let t0 = Instant::from_nanos(5);
        let r = AbortReason::DiskFull;
        let phases = [
            Phase::Active,
            Phase::Completing,
            Phase::Lingering { since: t0, last: t0 },
            Phase::Aborting(AbortReason::Cancelled),
            Phase::Closed,
        ];
        // (abort, peer_aborted, complete, linger, close_if_active) from each phase.
        let want: [[Phase; 5]; 5] = [
            [Phase::Aborting(r), Phase::Closed, Phase::Completing, phases[2], Phase::Closed],
            [Phase::Aborting(r), Phase::Closed, phases[1], phases[1], phases[1]],
            [Phase::Aborting(r), Phase::Closed, phases[2], phases[2], phases[2]],
            [phases[3], phases[3], phases[3], phases[3], phases[3]],
            [Phase::Closed; 5],
        ];
        for (from, row) in phases.iter().zip(want) {
            let ops: [fn(&mut Phase); 5] = [
                |p| {
                    p.abort(AbortReason::DiskFull);
                },
                |p| {
                    p.peer_aborted();
                },
                Phase::complete,
                |p| p.linger(Instant::from_nanos(5)),
                Phase::close_if_active,
            ];
            for (op, to) in ops.iter().zip(row) {
                let mut p = *from;
                op(&mut p);
                assert_eq!(p, to, "from {from:?}");
            }
        }
        // An abort is news only once.
        let mut p = Phase::Active;
        assert!(p.abort(r));
        assert!(!p.abort(r));
        assert!(!p.peer_aborted());
    }
}
