//! The receiver shard (docs/PROTOCOL.md §6.4): authenticates data, hands payload to the driver
//! to write, tracks what is on disk, reports losses (NAK), delay and rate (Feedback) and its
//! flow-control window (Window), and reads back each completed block to hash it.
//!
//! Invariants:
//! - A position counts as received only once its write completed; a failed or short write
//!   leaves it missing, so the protocol itself recovers (NAK and resend).
//! - A hole is reported lost only after data beyond it has been waiting `reorder_delay`, so
//!   reordering is not taken for loss.
//! - Data beyond the advertised limit is refused: the sender cannot overrun us.
//! - Memory grows with the number of holes, not the file size.
//! - A block is hashed from the bytes handed to its writes only when every one of them was
//!   written front to back through `handle_write_done_data` (what is on disk is exactly
//!   those bytes); any other block is read back from disk and hashed.

use super::shared::{Checked, Endpoint, Life, Phase, ReadStep, body_of, read_step};
use super::*;
use crate::checksum::{BlockHasher, hash_block};
use crate::crypto::{MAX_BATCH, Suite};
use crate::rangeset::RangeSet;
use crate::time::{Duration, Instant};
use crate::wire::{Body, FileStatus, MAX_NAK_RANGES, PacketType, encode_nak};
use arrayvec::ArrayVec;
use std::collections::VecDeque;

pub use super::sender::RxDatagram;

/// Most high-water checkpoints kept for the reorder test.
const MAX_CHECKPOINTS: usize = 512;
/// Most completed blocks waiting to be read back and hashed.
const MAX_VERIFY_QUEUE: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Free,
    /// Needs (the rest of) its read issued.
    Queued,
    Reading,
}

#[derive(Debug)]
struct VerifyRead {
    state: ReadState,
    block_start: u64,
    file: u32,
    block_in_file: u64,
    file_offset: u64,
    len: u32,
    filled: u32,
    buf: Box<dyn SlotMemory>,
}

/// The block being hashed from the bytes written to it, front to back (no read-back).
#[derive(Debug)]
struct WriteHash {
    block_start: u64,
    /// Stream position of the next byte the hasher expects.
    next: u64,
    hasher: BlockHasher,
}

/// A control datagram waiting to be sent.
#[derive(Debug)]
enum Ctl {
    Body(Body<'static>),
    /// A NAK of the ranges in `naks_buf`.
    Nak,
}

#[derive(Debug)]
pub struct ReceiverShard {
    ep: Endpoint,
    layout: Layout,
    stream_end: u64,
    window_bytes: u64,
    received: RangeSet,
    pending: RangeSet,
    pending_bytes: u64,
    cum_ack: u64,
    limit: u64,
    highest: u64,
    /// End of the slice's last data byte: once `highest` reaches it, nothing more can arrive
    /// past a hole, so every hole is NAKed without the reordering wait (the tail).
    last_data_end: u64,
    /// (highest position, when first reached), oldest first.
    checkpoints: VecDeque<(u64, Instant)>,
    reorder_delay: Duration,
    feedback_interval: Duration,
    next_feedback: Instant,
    /// Feedback accumulated over the current interval.
    fb: crate::wire::Feedback,
    fb_echo_at: Instant,
    fb_dirty: bool,
    /// Feedback intervals in a row with nothing new.
    quiet_intervals: u32,
    verified: RangeSet,
    verify_queue: VecDeque<u64>,
    /// The block hashed from its writes, if one is in progress.
    write_hash: Option<WriteHash>,
    /// Blocks kept from an interrupted transfer, still to be read back and hashed.
    resumed: RangeSet,
    reads: Vec<VerifyRead>,
    control: VecDeque<Ctl>,
    life: Life,
    idle_timeout: Duration,
    naks_buf: Vec<(u64, u64)>,
    /// Where the next NAK starts listing holes (issue 4): a NAK holds at most
    /// `MAX_NAK_RANGES` holes, and always listing the lowest ones starved every hole above
    /// them while those were being resent (the sender ignores a NAK of a range it resent
    /// within a round trip), capping recovery at 64 holes per RTT. The cursor rotates
    /// through all holes instead.
    nak_cursor: u64,
    /// The newest probe to acknowledge: (id, datagram length). One at a time, so probes
    /// (authenticated, at most one outstanding by design) can never queue up acks.
    probe_ack: Option<(u32, u16)>,
    /// The largest probe this end acknowledges: the receiver's own ceiling
    /// (`SessionParams::datagram_size_max`, at least the data size). A larger probe is
    /// dropped unanswered, so the sender's search takes it for too big.
    probe_max: u16,
    /// Probes acknowledged and the largest of them: the size the sender's search reached, as
    /// this end saw it (reported in its stats).
    probes_acked: crate::pmtu::PmtuStats,
    largest_probe_acked: u16,
}

fn receiver_accepts(t: PacketType) -> bool {
    matches!(
        t,
        PacketType::Data
            | PacketType::FileDone
            | PacketType::Complete
            | PacketType::Abort
            | PacketType::Keepalive
            | PacketType::Probe
    )
}

impl ReceiverShard {
    pub fn new(
        params: &SessionParams,
        layout: Layout,
        shard: u8,
        tx: Box<dyn Suite>,
        rx: Box<dyn Suite>,
        now: Instant,
    ) -> Result<Self, SessionError> {
        params.check()?;
        if shard >= layout.shards() || layout.shards() != params.shards {
            return Err(SessionError::BadShard(shard));
        }
        let stream_end = layout.stream_end(shard);
        let block = layout.block_size() as usize;
        let reads = (0..2)
            .map(|_| VerifyRead {
                state: ReadState::Free,
                block_start: 0,
                file: 0,
                block_in_file: 0,
                file_offset: 0,
                len: 0,
                filled: 0,
                buf: Box::new(vec![0u8; block]),
            })
            .collect();
        let last_data_end = stream_end
            .checked_sub(layout.block_size())
            .and_then(|s| Some(s + layout.spot(shard, s)?.block_len))
            .unwrap_or(stream_end);
        let mut me = ReceiverShard {
            ep: Endpoint::new(params.session_id, shard, tx, rx, now),
            stream_end,
            last_data_end,
            window_bytes: params.window_bytes,
            received: RangeSet::new(),
            pending: RangeSet::new(),
            pending_bytes: 0,
            cum_ack: 0,
            limit: params.window_bytes.min(stream_end),
            highest: 0,
            checkpoints: VecDeque::with_capacity(MAX_CHECKPOINTS),
            reorder_delay: params.reorder_delay,
            feedback_interval: params.feedback_interval,
            next_feedback: now + params.feedback_interval,
            fb: crate::wire::Feedback::default(),
            fb_echo_at: now,
            fb_dirty: true,
            quiet_intervals: 0,
            verified: RangeSet::new(),
            verify_queue: VecDeque::new(),
            write_hash: None,
            resumed: RangeSet::new(),
            reads,
            control: VecDeque::new(),
            life: Life::new(),
            idle_timeout: params.idle_timeout,
            naks_buf: Vec::with_capacity(MAX_NAK_RANGES),
            nak_cursor: 0,
            probe_ack: None,
            probe_max: params.datagram_size_max.max(params.datagram_size),
            probes_acked: crate::pmtu::PmtuStats::default(),
            largest_probe_acked: params.datagram_size,
            layout,
        };
        me.advance_cum_ack();
        Ok(me)
    }

    pub fn stats(&self) -> &ShardStats {
        &self.ep.stats
    }

    /// The largest probe this shard acknowledged (the data size if none) and the count of
    /// acknowledgements (`probes_acked`; the other counters are the sender's).
    pub fn pmtu_seen(&self) -> (u16, crate::pmtu::PmtuStats) {
        (self.largest_probe_acked, self.probes_acked)
    }

    /// The shard's internal state in one line, for failure reports (never on the data path).
    pub fn debug_state(&self) -> String {
        format!(
            "phase={:?} cum_ack={} limit={} highest={} end={} received={:?} pending={:?} verify_q={}",
            self.life.phase,
            self.cum_ack,
            self.limit,
            self.highest,
            self.stream_end,
            self.received.iter().take(8).collect::<Vec<_>>(),
            self.pending.iter().take(8).collect::<Vec<_>>(),
            self.verify_queue.len()
        )
    }

    pub fn is_closed(&self) -> bool {
        self.life.phase.is_closed()
    }

    /// Every position of the slice is on disk.
    pub fn is_slice_complete(&self) -> bool {
        self.cum_ack >= self.stream_end
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.life.pop()
    }

    pub fn handle_command(&mut self, now: Instant, cmd: ShardCommand) {
        match cmd {
            ShardCommand::SendFileAck { file, verified } => {
                let status =
                    if verified { FileStatus::Verified } else { FileStatus::ChecksumMismatch };
                self.control.push_back(Ctl::Body(Body::FileAck { file, status }));
            }
            ShardCommand::SendComplete => {
                // Say Complete until the peer answers, for a bounded time (the linger).
                self.life.phase.linger(now);
                self.control.push_back(Ctl::Body(Body::Complete));
            }
            ShardCommand::Abort { reason } => {
                self.life.phase.abort(reason);
            }
            ShardCommand::Close => self.life.phase.close_if_active(),
            ShardCommand::SetRate { .. } | ShardCommand::SendFileDone { .. } => {}
        }
    }
}

// ---- receive ----

impl ReceiverShard {
    pub fn handle_datagrams(&mut self, now: Instant, batch: &mut [RxDatagram<'_>]) {
        if self.life.phase.is_closed() {
            for d in batch.iter_mut() {
                d.outcome = RxOutcome::Rejected(Reject::WrongSession);
            }
            return;
        }
        for chunk in batch.chunks_mut(MAX_BATCH) {
            let mut passed: ArrayVec<Checked, MAX_BATCH> = ArrayVec::new();
            let bufs = chunk.iter_mut().map(|d| (&mut *d.buf, &mut d.outcome));
            self.ep.authenticate(now, bufs, receiver_accepts, &mut passed);
            for c in passed {
                let d = &mut chunk[c.index];
                let body_start = crate::wire::HEADER_LEN;
                let outcome = match Body::decode(c.header.ptype, body_of(d.buf)) {
                    Ok(Body::Data { file, offset, payload }) => {
                        let skip = crate::wire::DATA_PREFIX_LEN + body_start;
                        self.on_data(now, &c, (file, offset, payload), skip)
                    }
                    Ok(Body::Probe { id, .. }) => self.on_probe(id, d.buf.len()),
                    Ok(body) => self.on_control(body),
                    Err(_) => RxOutcome::Rejected(Reject::BadBody),
                };
                if let RxOutcome::Rejected(r) = outcome {
                    self.ep.stats.rejects.add(r);
                }
                d.outcome = outcome;
            }
        }
    }

    fn on_data(
        &mut self,
        now: Instant,
        c: &Checked,
        (file, offset, payload): (u32, u64, &[u8]),
        payload_at: usize,
    ) -> RxOutcome {
        let len = payload.len() as u64;
        let Some((shard, pos)) = self.layout.position_of(file, offset) else {
            return RxOutcome::Rejected(Reject::BadBody);
        };
        let Some(spot) = self.layout.spot(shard, pos) else {
            return RxOutcome::Rejected(Reject::BadBody);
        };
        let end = pos + len;
        let data_end = self.layout.block_start(pos) + spot.block_len;
        if shard != self.ep.shard || end > data_end || end > self.limit {
            return RxOutcome::Rejected(Reject::BadBody);
        }
        self.note_arrival(now, c.header.timestamp_us, len);
        // The part not already on disk or on its way there.
        let Some(fresh) = self.first_missing(pos..end) else {
            self.ep.stats.data_bytes_duplicate += len;
            self.fb_dirty = true;
            return RxOutcome::Rejected(Reject::Duplicate);
        };
        let fresh_len = fresh.end - fresh.start;
        if self.pending_bytes + fresh_len > MAX_PENDING_WRITE_BYTES {
            return RxOutcome::Rejected(Reject::Busy);
        }
        // First data of a block: the short block's tail gap is known, mark it.
        let block_start = self.layout.block_start(pos);
        self.received.insert(data_end..(block_start + self.layout.block_size()));
        self.pending.insert(fresh.clone());
        self.pending_bytes += fresh_len;
        self.ep.stats.data_bytes_received += fresh_len;
        self.note_highest(now, end);
        let skip = (fresh.start - pos) as usize;
        RxOutcome::Write {
            file,
            offset: offset + skip as u64,
            payload: payload_at + skip..payload_at + skip + fresh_len as usize,
        }
    }

    fn first_missing(&self, range: core::ops::Range<u64>) -> Option<core::ops::Range<u64>> {
        let mut cursor = range.start;
        while cursor < range.end {
            let after_rx = self.received.run_end(cursor);
            let after = self.pending.run_end(after_rx);
            if after == cursor {
                let mut end = range.end;
                if let Some(next) = self.received.gaps(cursor..range.end).next() {
                    end = end.min(next.end);
                }
                if let Some(next) = self.pending.gaps(cursor..end).next() {
                    end = end.min(next.end);
                }
                return Some(cursor..end);
            }
            cursor = after;
        }
        None
    }

    fn note_arrival(&mut self, now: Instant, ts_us: u32, len: u64) {
        let owd = now.as_wire_us().wrapping_sub(ts_us);
        if self.fb.datagrams == 0 || (owd.wrapping_sub(self.fb.owd_us_min) as i32) < 0 {
            self.fb.owd_us_min = owd;
        }
        self.fb.owd_us_last = owd;
        self.fb.datagrams = self.fb.datagrams.saturating_add(1);
        self.fb.recv_bytes = self.fb.recv_bytes.wrapping_add(len);
        self.fb.ts_echo_us = ts_us;
        self.fb_echo_at = now;
        self.fb_dirty = true;
    }

    fn note_highest(&mut self, now: Instant, end: u64) {
        if end <= self.highest {
            return;
        }
        self.highest = end;
        let spacing = self.reorder_delay.div(8);
        match self.checkpoints.back_mut() {
            Some((p, t)) if now.saturating_since(*t) < spacing => *p = end,
            _ => {
                if self.checkpoints.len() >= MAX_CHECKPOINTS {
                    self.checkpoints.pop_front();
                }
                self.checkpoints.push_back((end, now));
            }
        }
    }

    /// A path-MTU probe arrived whole at `len` bytes: acknowledge it with a small ProbeAck
    /// (crate::pmtu) if it is within this end's ceiling; a larger one is dropped unanswered,
    /// as the path would drop it (`haul recv --datagram-size N` caps both ends).
    fn on_probe(&mut self, id: u32, len: usize) -> RxOutcome {
        match u16::try_from(len) {
            Ok(size) if size > self.probe_max => RxOutcome::Consumed,
            Ok(size) => {
                self.probe_ack = Some((id, size));
                self.probes_acked.probes_acked += 1;
                self.largest_probe_acked = self.largest_probe_acked.max(size);
                RxOutcome::Consumed
            }
            Err(_) => RxOutcome::Rejected(Reject::BadBody),
        }
    }

    fn on_control(&mut self, body: Body<'_>) -> RxOutcome {
        match body {
            Body::FileDone { file, size, hash } => {
                if self.layout.manifest().file(file).is_none_or(|f| f.size != size) {
                    return RxOutcome::Rejected(Reject::BadBody);
                }
                // Regression (10,000 small files on a loaded machine aborted with
                // ResourceLimit): the sender keeps up to MAX_ANNOUNCED_UNACKED files announced
                // and resends each FileDone until acknowledged, so one burst of them could
                // fill the event queue. The sender resends it, so drop it when full.
                if self.life.is_full() {
                    return RxOutcome::Consumed;
                }
                self.life.push(ShardEvent::PeerFileDone { file, size, hash });
            }
            Body::Complete => {
                self.life.push(ShardEvent::PeerComplete);
                if matches!(self.life.phase, Phase::Lingering { .. }) {
                    self.life.phase.close();
                }
            }
            Body::Abort { reason } => self.life.peer_aborted(reason),
            Body::Keepalive => {}
            _ => return RxOutcome::Rejected(Reject::Reflected),
        }
        RxOutcome::Consumed
    }

    /// A write from a `RxOutcome::Write` finished: `result` is bytes written or the error.
    /// A short or failed write leaves the rest missing; it is NAKed and sent again.
    pub fn handle_write_done(
        &mut self,
        _now: Instant,
        file: u32,
        offset: u64,
        len: u32,
        result: Result<usize, DiskError>,
    ) {
        let Some((shard, pos)) = self.layout.position_of(file, offset) else { return };
        if shard != self.ep.shard {
            return;
        }
        let range = pos..pos + u64::from(len);
        let removed = self.pending.remove(range.clone());
        self.pending_bytes = self.pending_bytes.saturating_sub(removed);
        match result {
            Ok(n) => {
                let n = (n as u64).min(u64::from(len));
                self.received.insert(pos..pos + n);
                self.after_write(pos..pos + n.max(1));
            }
            Err(e) if e.is_transient() => {}
            Err(DiskError::NoSpace) => {
                self.life.fail(AbortReason::DiskFull, Some(DiskError::NoSpace), Some(file))
            }
            Err(e) => self.life.fail(AbortReason::DiskWriteFailed, Some(e), Some(file)),
        }
    }

    /// [`Self::handle_write_done`] with the bytes that were handed to the write (`data`, the
    /// payload range of one or more contiguous `RxOutcome::Write`s). A block written front to
    /// back is hashed from these bytes while they are hot instead of being read back from
    /// disk, which cost a copy and a page-cache walk per byte (about 11% of a receiver's CPU
    /// on tmpfs). Blocks written out of order are read back as before.
    pub fn handle_write_done_data(
        &mut self,
        now: Instant,
        file: u32,
        offset: u64,
        data: &[u8],
        result: Result<usize, DiskError>,
    ) {
        if let (Ok(n), Some((shard, pos))) = (&result, self.layout.position_of(file, offset))
            && shard == self.ep.shard
        {
            self.feed_write_hash(pos, &data[..(*n).min(data.len())]);
        }
        self.handle_write_done(now, file, offset, data.len() as u32, result);
    }

    /// Feed written bytes at stream position `pos` to the block hashed from its writes: a
    /// write at a block's start begins one; a write at its expected position continues it;
    /// any other write to that block ends it (the block is read back instead).
    fn feed_write_hash(&mut self, mut pos: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let start = self.layout.block_start(pos);
            let Some(spot) = self.layout.spot(self.ep.shard, start) else { return };
            let take = (start + spot.block_len).saturating_sub(pos).min(data.len() as u64);
            if take == 0 {
                return;
            }
            let piece = &data[..take as usize];
            match &mut self.write_hash {
                Some(h) if h.block_start == start => {
                    if h.next == pos {
                        h.hasher.update(piece);
                        h.next += take;
                    } else {
                        self.write_hash = None;
                    }
                }
                _ if pos == start && !self.verified.contains(start) => {
                    let blocks = self.layout.manifest().blocks_in(spot.file);
                    let mut hasher =
                        BlockHasher::new(spot.block_in_file, self.layout.block_size(), blocks);
                    hasher.update(piece);
                    self.write_hash =
                        Some(WriteHash { block_start: start, next: pos + take, hasher });
                }
                _ => {}
            }
            pos += take;
            data = &data[take as usize..];
        }
    }

    /// A write of `range` completed: advance the cumulative ack, and hash every block the
    /// write completed. A driver may coalesce contiguous payloads into one write that spans
    /// blocks (one shard's consecutive blocks are contiguous in its stream), so every block
    /// the range touches is checked, not only the first.
    fn after_write(&mut self, range: core::ops::Range<u64>) {
        self.advance_cum_ack();
        let block = self.layout.block_size();
        let mut start = self.layout.block_start(range.start);
        while start < range.end {
            self.check_block_complete(start);
            start += block;
        }
    }

    fn check_block_complete(&mut self, start: u64) {
        let Some(spot) = self.layout.spot(self.ep.shard, start) else { return };
        if self.verified.contains(start)
            || !self.received.contains_range(start..start + spot.block_len)
        {
            return;
        }
        self.verified.insert(start..start + self.layout.block_size());
        if let Some(h) = self.write_hash.take_if(|h| h.block_start == start)
            && h.next == start + spot.block_len
        {
            let hash = h.hasher.finalize();
            let (file, block_in_file) = (spot.file, spot.block_in_file);
            self.life.push(ShardEvent::BlockHashed { file, block_in_file, hash });
            return;
        }
        if self.verify_queue.len() >= MAX_VERIFY_QUEUE {
            self.life.fail(AbortReason::ResourceLimit, None, None);
            return;
        }
        self.verify_queue.push_back(start);
    }

    /// Mark the prefixes kept from an interrupted transfer as received (call before any
    /// datagram). They are still read back and hashed like every other block.
    pub fn with_resume(&mut self, prefixes: &[u64]) {
        let ranges: Vec<_> = self.layout.resumed_ranges(self.ep.shard, prefixes).collect();
        for r in ranges {
            self.received.insert(r.clone());
            self.verified.insert(r.clone());
            self.resumed.insert(r);
        }
        self.advance_cum_ack();
    }

    fn advance_cum_ack(&mut self) {
        loop {
            let end = self.received.run_end(self.cum_ack);
            let next = self.layout.skip_gap(self.ep.shard, end);
            if next == self.cum_ack {
                break;
            }
            self.cum_ack = next;
        }
        self.limit =
            self.limit.max(self.cum_ack.saturating_add(self.window_bytes).min(self.stream_end));
    }
}

// ---- verification reads ----

impl ReceiverShard {
    pub fn poll_disk(&mut self) -> Option<DiskRead> {
        if !self.life.phase.is_active() {
            return None;
        }
        let i = match self.reads.iter().position(|r| r.state == ReadState::Queued) {
            Some(i) => i,
            None => {
                let i = self.reads.iter().position(|r| r.state == ReadState::Free)?;
                let start = match self.verify_queue.pop_front() {
                    Some(start) => start,
                    None => self.resumed.pop_front(self.layout.block_size())?.start,
                };
                let spot = self.layout.spot(self.ep.shard, start)?;
                let r = &mut self.reads[i];
                r.block_start = start;
                r.file = spot.file;
                r.block_in_file = spot.block_in_file;
                r.file_offset = spot.file_offset(self.layout.block_size());
                r.len = spot.block_len as u32;
                r.filled = 0;
                i
            }
        };
        let r = &mut self.reads[i];
        r.state = ReadState::Reading;
        Some(DiskRead {
            slot: i as u8,
            file: r.file,
            offset: r.file_offset + u64::from(r.filled),
            len: r.len - r.filled,
        })
    }

    pub fn disk_buffer_mut(&mut self, slot: u8) -> &mut [u8] {
        match self.reads.get_mut(usize::from(slot)) {
            Some(r) if r.state == ReadState::Reading => {
                &mut r.buf.bytes_mut()[r.filled as usize..r.len as usize]
            }
            _ => &mut [],
        }
    }

    /// The whole buffer of verification read slot `slot` (empty for no such slot), for a
    /// driver that registers it with its I/O ring once. Slots are allocated at creation and
    /// never resized, so its address holds for the shard's life.
    pub fn disk_slot_region(&mut self, slot: u8) -> &mut [u8] {
        match self.reads.get_mut(usize::from(slot)) {
            Some(r) => r.buf.bytes_mut(),
            None => &mut [],
        }
    }

    /// Lends the verification read slots the driver's memory (see [`SlotMemory`]) in place
    /// of their own, before any read: how many slots took it.
    pub fn use_read_memory(
        &mut self,
        bufs: impl IntoIterator<Item = Box<dyn SlotMemory>>,
    ) -> usize {
        let all_free = self.reads.iter().all(|r| r.state == ReadState::Free);
        let block = self.layout.block_size() as usize;
        lend_read_memory(self.reads.iter_mut().map(|r| &mut r.buf), all_free, block, bufs)
    }

    /// Verification read slots and the bytes of each (a block).
    pub fn read_slots(&self) -> (usize, usize) {
        (self.reads.len(), self.layout.block_size() as usize)
    }

    pub fn handle_disk(&mut self, _now: Instant, slot: u8, result: Result<usize, DiskError>) {
        let Some(r) = self.reads.get_mut(usize::from(slot)) else { return };
        if r.state != ReadState::Reading {
            return;
        }
        match read_step(&mut r.filled, r.len, result) {
            ReadStep::Again => r.state = ReadState::Queued,
            ReadStep::Failed(e) => {
                let file = r.file;
                self.life.fail(AbortReason::DiskReadFailed, Some(e), Some(file));
            }
            ReadStep::Done => {
                r.state = ReadState::Free;
                let blocks = self.layout.manifest().blocks_in(r.file);
                let data = &r.buf.bytes()[..r.len as usize];
                let hash = hash_block(data, r.block_in_file, self.layout.block_size(), blocks);
                let (file, block_in_file) = (r.file, r.block_in_file);
                self.life.push(ShardEvent::BlockHashed { file, block_in_file, hash });
            }
        }
    }
}

// ---- transmit and timers ----

impl ReceiverShard {
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        stride: usize,
        lens: &mut [usize],
    ) -> usize {
        if self.life.phase.is_closed() {
            return 0;
        }
        if now >= self.next_feedback {
            self.queue_feedback(now);
        }
        let max = lens.len().min(out.len() / stride.max(1)).min(MAX_BATCH);
        let mut n = 0;
        for chunk in out.chunks_mut(stride.max(1)).take(max) {
            let Some(ctl) = self.next_control(now) else { break };
            let sealed = match ctl {
                Ctl::Body(body) => self.ep.seal_control(now, &body, chunk),
                Ctl::Nak => {
                    let ranges = &self.naks_buf;
                    self.ep.seal_with(now, PacketType::Nak, chunk, |o| encode_nak(ranges, o))
                }
            };
            match sealed {
                Ok(len) if len > 0 => {
                    lens[n] = len;
                    n += 1;
                }
                Ok(_) => break,
                Err(reason) => {
                    self.life.fail(reason, None, None);
                    break;
                }
            }
            if self.life.phase.is_closed() {
                break;
            }
        }
        n
    }

    fn next_control(&mut self, now: Instant) -> Option<Ctl> {
        match self.life.phase {
            Phase::Aborting(reason) => {
                self.life.phase.close();
                return Some(Ctl::Body(Body::Abort { reason: reason as u16 }));
            }
            Phase::Closed => return None,
            Phase::Active | Phase::Completing | Phase::Lingering { .. } => {}
        }
        if let Some(ctl) = self.control.pop_front() {
            return Some(ctl);
        }
        if let Some((id, size)) = self.probe_ack.take() {
            return Some(Ctl::Body(Body::ProbeAck { id, size }));
        }
        if let Phase::Lingering { since, last } = self.life.phase
            && now.saturating_since(last) >= self.complete_every()
        {
            self.life.phase = Phase::Lingering { since, last: now };
            return Some(Ctl::Body(Body::Complete));
        }
        if now.saturating_since(self.ep.last_sent) >= self.idle_timeout.div(4) {
            return Some(Ctl::Body(Body::Keepalive));
        }
        None
    }

    /// Queue this interval's Window, Feedback and NAKs.
    /// While the slice is incomplete but nothing new arrives, the window is still repeated
    /// every this many intervals: a lost Window must not leave the sender waiting forever.
    const WINDOW_REPEAT_INTERVALS: u32 = 8;

    fn queue_feedback(&mut self, now: Instant) {
        self.next_feedback = now + self.feedback_interval;
        let active = self.fb_dirty || self.cum_ack < self.highest;
        self.quiet_intervals = if active { 0 } else { self.quiet_intervals.saturating_add(1) };
        let repeat = self.cum_ack < self.stream_end
            && self.quiet_intervals.is_multiple_of(Self::WINDOW_REPEAT_INTERVALS);
        if !active && !repeat {
            return;
        }
        self.fb_dirty = false;
        let w = crate::wire::Window { cum_ack: self.cum_ack, limit: self.limit };
        self.control.push_back(Ctl::Body(Body::Window(w)));
        if self.fb.datagrams > 0 {
            // Feedback only describes intervals with data: an empty one would read as a
            // receive rate of zero.
            let mut fb = self.fb;
            fb.echo_delay_us =
                now.saturating_since(self.fb_echo_at).as_micros().min(u64::from(u32::MAX)) as u32;
            self.control.push_back(Ctl::Body(Body::Feedback(fb)));
            self.fb.datagrams = 0;
        }
        self.queue_naks(now);
    }

    /// NAK the holes below the newest position that has waited `reorder_delay`.
    fn queue_naks(&mut self, now: Instant) {
        let Some(cutoff) = now.as_nanos().checked_sub(self.reorder_delay.as_nanos()) else {
            return;
        };
        let eligible = if self.highest >= self.last_data_end {
            self.highest
        } else {
            self.checkpoints
                .iter()
                .take_while(|(_, t)| t.as_nanos() <= cutoff)
                .last()
                .map_or(0, |(p, _)| *p)
        };
        if eligible <= self.cum_ack {
            return;
        }
        self.naks_buf.clear();
        let from = if self.nak_cursor > self.cum_ack && self.nak_cursor < eligible {
            self.nak_cursor
        } else {
            self.cum_ack
        };
        self.collect_holes(from..eligible);
        if from > self.cum_ack {
            self.collect_holes(self.cum_ack..from);
        }
        // Full: the next NAK goes on after the last hole listed; otherwise it starts over.
        self.nak_cursor = match self.naks_buf.last() {
            Some(&(_, end)) if self.naks_buf.len() == MAX_NAK_RANGES => end,
            _ => self.cum_ack,
        };
        if self.naks_buf.is_empty() {
            return;
        }
        self.ep.stats.naks_sent += 1;
        self.control.push_back(Ctl::Nak);
    }
}

impl ReceiverShard {
    /// Append the holes (not received, not pending a write) in `range` to `naks_buf`, up to
    /// `MAX_NAK_RANGES` in all.
    fn collect_holes(&mut self, range: core::ops::Range<u64>) {
        for gap in self.received.gaps(range) {
            for hole in self.pending.gaps(gap) {
                if self.naks_buf.len() == MAX_NAK_RANGES {
                    return;
                }
                self.naks_buf.push((hole.start, hole.end));
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.life.phase {
            Phase::Closed | Phase::Aborting(_) | Phase::Completing => return,
            Phase::Lingering { since, .. } => {
                if now.saturating_since(since) >= self.linger() {
                    // The peer never answered our Complete: we are done anyway.
                    self.life.phase.close();
                }
                return;
            }
            Phase::Active => {}
        }
        if let Some(reason) = self.ep.idle_check(now, self.idle_timeout) {
            self.life.fail(reason, None, None);
        }
    }

    fn complete_every(&self) -> Duration {
        self.feedback_interval.max(Duration::from_millis(20))
    }

    fn linger(&self) -> Duration {
        self.idle_timeout.div(8).max(Duration::from_millis(200))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.life.phase {
            Phase::Closed => return None,
            Phase::Aborting(_) => return Some(Instant::ZERO),
            Phase::Lingering { since, last } => {
                return Some((last + self.complete_every()).min(since + self.linger()));
            }
            Phase::Active | Phase::Completing => {}
        }
        if !self.control.is_empty() {
            return Some(Instant::ZERO);
        }
        let mut t = self.ep.last_heard + self.idle_timeout;
        t = t.min(self.ep.last_sent + self.idle_timeout.div(4));
        if self.fb_dirty || self.cum_ack < self.highest || self.cum_ack < self.stream_end {
            t = t.min(self.next_feedback);
        }
        Some(t)
    }
}
