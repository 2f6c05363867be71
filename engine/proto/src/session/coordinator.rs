//! The coordinators (docs/PROTOCOL.md §6.5): what spans shards.
//!
//! The sender's coordinator merges block hashes into file checksums and has shard 0 announce
//! each finished file; it owns the rate controller (fixed or adaptive, by policy), applies the
//! node cap if the session has one, detects a feedback blackout (no feedback for
//! [`silence_after`]) and shares the rate among shards. The
//! receiver's coordinator merges the hashes of blocks read back from disk, compares each file's
//! checksum with the sender's, has the driver finalize verified files (fsync, attributes,
//! rename), and acknowledges them. Each decides its side's [`Outcome`] once, and it never
//! changes after.

use super::*;
use crate::checksum::{FileHasher, Hash};
use crate::rate::{NodeCapShare, RateController, controller_for};
use crate::time::{Duration, Instant};
use std::collections::VecDeque;

/// Most commands queued for shards; more is our bug, reported as an abort.
const MAX_COMMANDS: usize = 1 << 16;
/// Most files announced (`FileDone`) and not yet acknowledged. Further finished files wait
/// here, in order, until acks make room: shard 0 keeps every unacknowledged `FileDone` for
/// resending, and its own bound must never be what ends a session of many small files.
pub const MAX_ANNOUNCED_UNACKED: usize = 1024;

#[derive(Debug)]
struct Common {
    shards: u8,
    commands: VecDeque<(u8, ShardCommand)>,
    outcome: Option<Outcome>,
}

impl Common {
    fn new(shards: u8) -> Self {
        Common { shards, commands: VecDeque::new(), outcome: None }
    }

    fn send(&mut self, shard: u8, cmd: ShardCommand) {
        if self.commands.len() < MAX_COMMANDS {
            self.commands.push_back((shard, cmd));
        } else if self.outcome.is_none() {
            self.abort_all(AbortReason::ResourceLimit, None, None);
        }
    }

    fn abort_all(&mut self, reason: AbortReason, disk: Option<DiskError>, file: Option<u32>) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(Outcome::Aborted { reason, by_peer: false, disk, file });
        for s in 0..self.shards {
            self.commands.push_back((s, ShardCommand::Abort { reason }));
        }
    }

    fn on_shard_abort(
        &mut self,
        reason: AbortReason,
        by_peer: bool,
        disk: Option<DiskError>,
        file: Option<u32>,
    ) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(Outcome::Aborted { reason, by_peer, disk, file });
        for s in 0..self.shards {
            let cmd = if by_peer { ShardCommand::Close } else { ShardCommand::Abort { reason } };
            self.commands.push_back((s, cmd));
        }
    }

    fn complete(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(Outcome::Complete);
        self.commands.push_back((0, ShardCommand::SendComplete));
        for s in 1..self.shards {
            self.commands.push_back((s, ShardCommand::Close));
        }
    }
}

#[derive(Debug)]
pub struct SenderCoordinator {
    c: Common,
    layout: Layout,
    hashers: Vec<FileHasher>,
    acked: Vec<bool>,
    acked_count: u32,
    /// Files announced and not yet acknowledged (at most [`MAX_ANNOUNCED_UNACKED`]).
    announced_unacked: usize,
    /// Finished files waiting for room to be announced, in the order they finished.
    held: VecDeque<u32>,
    rate: Box<dyn RateController>,
    /// The rate each shard was last given.
    shard_rate_bps: Vec<u64>,
    /// The shards that have sent their whole stream once ([`ShardEvent::FirstPassSent`]).
    first_pass_sent: Vec<bool>,
    /// Each shard's latest receive rate (IP bits/s) and when it arrived: the session's
    /// delivered rate is their sum ([`SenderCoordinator::session_recv_rate`]).
    shard_recv: Vec<(u64, Instant)>,
    node_cap: Option<NodeCapShare>,
    /// Last feedback (or the start): silence is measured from here.
    last_feedback: Instant,
    /// The RTT the last feedback carried (the initial guess before any).
    rtt: Duration,
}

/// A shard's receive rate counts in the session's for at least this long after it arrived
/// (and at most an RTT): feedback comes every few milliseconds while a shard receives.
pub const MIN_SHARD_RATE_AGE: Duration = Duration::from_millis(20);

/// Floor of the blackout threshold.
pub const MIN_SILENCE: Duration = Duration::from_millis(200);

/// No feedback for this long while sending is a blackout: `max(4 RTT, 200 ms)`.
pub fn silence_after(rtt: Duration) -> Duration {
    rtt.saturating_mul(4).max(MIN_SILENCE)
}

impl SenderCoordinator {
    pub fn new(params: &SessionParams, layout: Layout, now: Instant) -> Result<Self, SessionError> {
        params.check()?;
        let m = layout.manifest();
        let hashers = (0..m.file_count()).map(|f| FileHasher::new(m.blocks_in(f))).collect();
        let mut me = SenderCoordinator {
            c: Common::new(params.shards),
            acked: vec![false; m.file_count() as usize],
            acked_count: 0,
            announced_unacked: 0,
            held: VecDeque::new(),
            hashers,
            rate: controller_for(params.policy, params.rate),
            shard_rate_bps: vec![0; usize::from(params.shards.max(1))],
            first_pass_sent: vec![false; usize::from(params.shards.max(1))],
            shard_recv: vec![(0, Instant::ZERO); usize::from(params.shards.max(1))],
            node_cap: None,
            last_feedback: now,
            rtt: params.initial_rtt,
            layout,
        };
        me.share_rate(now);
        for f in 0..me.layout.manifest().file_count() {
            if let Some(hash) = me.hashers[f as usize].root() {
                me.announce(f, hash);
            }
        }
        if me.layout.manifest().file_count() == 0 {
            me.c.complete();
        }
        Ok(me)
    }

    /// Has shard 0 announce `file` now, or once acks make room.
    fn announce(&mut self, file: u32, hash: Hash) {
        if self.announced_unacked >= MAX_ANNOUNCED_UNACKED {
            self.held.push_back(file);
            return;
        }
        self.announced_unacked += 1;
        let size = self.layout.manifest().file(file).map_or(0, |f| f.size);
        self.c.send(0, ShardCommand::SendFileDone { file, size, hash });
    }

    /// An announced file was acknowledged: announce held ones while there is room.
    fn on_announced_acked(&mut self) {
        self.announced_unacked = self.announced_unacked.saturating_sub(1);
        while self.announced_unacked < MAX_ANNOUNCED_UNACKED
            && let Some(file) = self.held.pop_front()
        {
            if let Some(hash) = self.file_hash(file) {
                self.announce(file, hash);
            }
        }
    }

    /// Share the session's rate (capped by the node cap, if any) among the shards: equally,
    /// except that once some shards have sent their whole stream, those still sending new data
    /// share the whole rate and the others keep an equal share for their resends (which are a
    /// loss-sized trickle, so the sum they send stays near the rate).
    ///
    /// Regression (emulated WAN, 200 Mbit/s / 200 ms, two shards): one shard finished its half
    /// of the file 0.2 s (1% loss) to 0.45 s (5%) before the other, which went on at half the
    /// rate: 2–4% of the transfer's time at half the link.
    fn share_rate(&mut self, _now: Instant) {
        let mut rate = self.rate.rate_bps();
        if let Some(cap) = &self.node_cap {
            rate = cap.allowed_bps(rate);
        }
        let shards = u64::from(self.c.shards).max(1);
        let sending_new = self.first_pass_sent.iter().filter(|d| !**d).count() as u64;
        let equal = (rate / shards).max(1);
        let busy = rate.checked_div(sending_new).map_or(equal, |b| b.max(1));
        for s in 0..self.c.shards {
            let i = usize::from(s);
            let bps = if self.first_pass_sent.get(i).is_some_and(|d| *d) { equal } else { busy };
            if let Some(last) = self.shard_rate_bps.get_mut(i)
                && *last != bps
            {
                *last = bps;
                self.c.send(s, ShardCommand::SetRate { bps });
            }
        }
    }

    /// The session's receive rate after `shard` reported `recv_bps`: the sum of every shard's
    /// latest rate that is at most an RTT (and at least [`MIN_SHARD_RATE_AGE`]) old. Each shard
    /// measures only the datagrams it was sent; scaling one shard's rate by the number of shards
    /// is right only while they get equal shares of the bottleneck, and on the emulated WAN one
    /// shard's share read 190 of 200 Mbit/s, so the session's estimate read 382–467 Mbit/s
    /// (docs/WANEMU.md). 0 (no rate measured in this sample) stays 0.
    fn session_recv_rate(&mut self, now: Instant, shard: u8, recv_bps: u64, rtt: Duration) -> u64 {
        if recv_bps == 0 {
            return 0;
        }
        if let Some(slot) = self.shard_recv.get_mut(usize::from(shard)) {
            *slot = (recv_bps, now);
        } else {
            // A shard index past the session's shards is our bug; count it as one more shard's
            // worth, as the sum would if the table had room for it.
            return recv_bps.saturating_mul(self.shard_recv.len() as u64);
        }
        let fresh = rtt.max(MIN_SHARD_RATE_AGE);
        self.shard_recv
            .iter()
            .filter(|(bps, at)| *bps > 0 && now.saturating_since(*at) <= fresh)
            .fold(0u64, |sum, (bps, _)| sum.saturating_add(*bps))
    }

    pub fn handle_event(&mut self, now: Instant, shard: u8, event: ShardEvent) {
        if self.c.outcome.is_some() {
            return;
        }
        match event {
            ShardEvent::BlockHashed { file, block_in_file, hash } => {
                let Some(h) = self.hashers.get_mut(file as usize) else { return };
                match h.add(block_in_file, hash) {
                    Ok(Some(root)) => self.announce(file, root),
                    Ok(None) => {}
                    Err(_) => self.c.abort_all(AbortReason::ProtocolViolation, None, Some(file)),
                }
            }
            ShardEvent::Feedback(mut sample) => {
                self.last_feedback = now;
                self.rtt = sample.rtt;
                // A shard reports its own receive rate; the controller paces the session.
                sample.recv_rate_bps =
                    self.session_recv_rate(now, shard, sample.recv_rate_bps, sample.rtt);
                self.rate.on_feedback(now, &sample);
                self.share_rate(now);
            }
            ShardEvent::Sent { ip_bytes } => {
                self.rate.on_send(now, ip_bytes);
                // The controller may change the rate on a send (the end of the startup's
                // blind first round, rate/adaptive.rs); a no-op when it did not.
                self.share_rate(now);
                self.check_silence(now);
            }
            ShardEvent::PeerFileAck { file, verified } => {
                if !verified {
                    self.c.abort_all(AbortReason::ChecksumMismatch, None, Some(file));
                    return;
                }
                if let Some(a) = self.acked.get_mut(file as usize)
                    && !*a
                {
                    *a = true;
                    self.acked_count += 1;
                    self.on_announced_acked();
                }
                if self.acked_count == self.layout.manifest().file_count() {
                    self.c.complete();
                }
            }
            ShardEvent::Aborted { reason, by_peer, disk, file } => {
                self.c.on_shard_abort(reason, by_peer, disk, file);
            }
            ShardEvent::PeerComplete => {
                // The receiver says Complete only once every file has verified and been renamed
                // into place: it stands for every FileAck, some of which may have been lost on a
                // lossy reverse path while the receiver's linger runs out.
                self.acked.iter_mut().for_each(|a| *a = true);
                self.acked_count = self.layout.manifest().file_count();
                self.announced_unacked = 0;
                self.held.clear();
                self.c.complete();
            }
            ShardEvent::FirstPassSent => {
                if let Some(done) = self.first_pass_sent.get_mut(usize::from(shard)) {
                    *done = true;
                }
                self.share_rate(now);
            }
            ShardEvent::PeerFileDone { .. } => {}
        }
    }

    pub fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        self.c.commands.pop_front()
    }

    /// We are sending: if feedback has been silent for [`silence_after`], tell the controller
    /// (once per silence period: the clock restarts) and reshare. Also picks up node-cap
    /// changes made by other sessions.
    fn check_silence(&mut self, now: Instant) {
        let silence = now.saturating_since(self.last_feedback);
        let silent = silence >= silence_after(self.rtt);
        if silent {
            self.rate.on_silence(now, silence);
            self.last_feedback = now;
        }
        if silent || self.node_cap.is_some() {
            self.share_rate(now);
        }
    }

    /// Put this session under a node-wide cap (replacing any earlier one).
    pub fn set_node_cap(&mut self, now: Instant, share: NodeCapShare) {
        self.node_cap = Some(share);
        self.share_rate(now);
    }

    pub fn set_limits(&mut self, now: Instant, limits: RateLimits) {
        self.rate.set_limits(now, limits);
        self.share_rate(now);
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate.rate_bps()
    }

    /// The controller's state (rate, achieved sending, queue and loss estimates), for traces.
    pub fn rate_snapshot(&self) -> crate::rate::RateSnapshot {
        self.rate.snapshot()
    }

    pub fn abort(&mut self, reason: AbortReason) {
        self.c.abort_all(reason, None, None);
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.c.outcome
    }

    pub fn files_acked(&self) -> u32 {
        self.acked_count
    }

    /// `file`'s checksum, once every block of it was read.
    pub fn file_hash(&self, file: u32) -> Option<Hash> {
        self.hashers.get(file as usize).and_then(FileHasher::root)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    Receiving,
    Finalizing,
    Done,
}

#[derive(Debug)]
struct RxFile {
    hasher: FileHasher,
    peer: Option<Hash>,
    state: FileState,
}

#[derive(Debug)]
pub struct ReceiverCoordinator {
    c: Common,
    files: Vec<RxFile>,
    ops: VecDeque<FileOp>,
    done: u32,
}

impl ReceiverCoordinator {
    pub fn new(
        params: &SessionParams,
        layout: Layout,
        _now: Instant,
    ) -> Result<Self, SessionError> {
        params.check()?;
        let m = layout.manifest();
        let files = (0..m.file_count())
            .map(|f| RxFile {
                hasher: FileHasher::new(m.blocks_in(f)),
                peer: None,
                state: FileState::Receiving,
            })
            .collect();
        let mut me = ReceiverCoordinator {
            c: Common::new(params.shards),
            files,
            ops: VecDeque::new(),
            done: 0,
        };
        if me.files.is_empty() {
            me.c.complete();
        }
        Ok(me)
    }

    pub fn handle_event(&mut self, _now: Instant, _shard: u8, event: ShardEvent) {
        if self.c.outcome.is_some() {
            // After the end, keep re-acknowledging files the sender still asks about.
            if let ShardEvent::PeerFileDone { file, .. } = event
                && self.files.get(file as usize).is_some_and(|f| f.state == FileState::Done)
            {
                self.c.send(0, ShardCommand::SendFileAck { file, verified: true });
            }
            return;
        }
        match event {
            ShardEvent::BlockHashed { file, block_in_file, hash } => {
                let Some(f) = self.files.get_mut(file as usize) else { return };
                if f.hasher.add(block_in_file, hash).is_err() {
                    self.c.abort_all(AbortReason::ProtocolViolation, None, Some(file));
                    return;
                }
                self.check(file);
            }
            ShardEvent::PeerFileDone { file, hash, .. } => {
                let Some(f) = self.files.get_mut(file as usize) else { return };
                match f.state {
                    FileState::Done => {
                        self.c.send(0, ShardCommand::SendFileAck { file, verified: true });
                    }
                    FileState::Finalizing => {}
                    FileState::Receiving => {
                        f.peer = Some(hash);
                        self.check(file);
                    }
                }
            }
            ShardEvent::Aborted { reason, by_peer, disk, file } => {
                self.c.on_shard_abort(reason, by_peer, disk, file);
            }
            ShardEvent::PeerComplete
            | ShardEvent::PeerFileAck { .. }
            | ShardEvent::Feedback(_)
            | ShardEvent::Sent { .. }
            | ShardEvent::FirstPassSent => {}
        }
    }

    /// Compare a file's checksum with the sender's once both are known.
    fn check(&mut self, file: u32) {
        let Some(f) = self.files.get_mut(file as usize) else { return };
        let (Some(ours), Some(theirs)) = (f.hasher.root(), f.peer) else { return };
        if f.state != FileState::Receiving {
            return;
        }
        if ours == theirs {
            f.state = FileState::Finalizing;
            self.ops.push_back(FileOp::Finalize { file });
        } else {
            self.c.send(0, ShardCommand::SendFileAck { file, verified: false });
            self.c.abort_all(AbortReason::ChecksumMismatch, None, Some(file));
        }
    }

    pub fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        self.c.commands.pop_front()
    }

    pub fn poll_file_op(&mut self) -> Option<FileOp> {
        self.ops.pop_front()
    }

    pub fn handle_file_op_done(
        &mut self,
        _now: Instant,
        op: FileOp,
        result: Result<(), DiskError>,
    ) {
        let FileOp::Finalize { file } = op;
        let Some(f) = self.files.get_mut(file as usize) else { return };
        if f.state != FileState::Finalizing {
            return;
        }
        match result {
            Ok(()) => {
                f.state = FileState::Done;
                self.done += 1;
                self.c.send(0, ShardCommand::SendFileAck { file, verified: true });
                if self.done as usize == self.files.len() {
                    self.c.complete();
                }
            }
            Err(e) if e.is_transient() => self.ops.push_back(op),
            Err(DiskError::NoSpace) => {
                self.c.abort_all(AbortReason::DiskFull, Some(DiskError::NoSpace), Some(file));
            }
            Err(e) => self.c.abort_all(AbortReason::DiskWriteFailed, Some(e), Some(file)),
        }
    }

    pub fn abort(&mut self, reason: AbortReason) {
        self.c.abort_all(reason, None, None);
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.c.outcome
    }

    pub fn files_done(&self) -> u32 {
        self.done
    }

    /// Bytes of `file`, from its start, that are on disk and hashed: what a checkpoint may
    /// record.
    pub fn file_progress(&self, file: u32, manifest: &Manifest) -> u64 {
        let Some(f) = self.files.get(file as usize) else { return 0 };
        let size = manifest.file(file).map_or(0, |e| e.size);
        f.hasher.merged_blocks().saturating_mul(manifest.block_size()).min(size)
    }

    /// `file`'s checksum as read back from disk, once every block of it was.
    pub fn file_hash(&self, file: u32) -> Option<Hash> {
        self.files.get(file as usize).and_then(|f| f.hasher.root())
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use crate::rate::{FeedbackSample, NodeCap, Policy};
    use std::sync::Arc;

    fn coordinator(policy: Policy) -> SenderCoordinator {
        let mut p = SessionParams::new(1, crate::crypto::SuiteId::Aes128CfbCmac);
        p.shards = 2;
        p.policy = policy;
        p.rate = RateLimits { min_bps: 0, target_bps: 400_000_000 };
        let files = vec![FileEntry { name: "f".into(), size: 1 << 20, mode: 0o644, mtime_ns: 0 }];
        let m = Manifest::new(files, 16).unwrap();
        let layout = Layout::new(Arc::new(m), 2).unwrap();
        SenderCoordinator::new(&p, layout, Instant::ZERO).unwrap()
    }

    fn last_shard_rate(c: &mut SenderCoordinator) -> Option<u64> {
        let mut last = None;
        while let Some((_, cmd)) = c.poll_command() {
            if let ShardCommand::SetRate { bps } = cmd {
                last = Some(bps);
            }
        }
        last
    }

    #[test]
    fn policy_selects_the_controller_and_rate_is_shared_per_shard() {
        let mut fixed = coordinator(Policy::Fixed);
        assert_eq!(last_shard_rate(&mut fixed), Some(200_000_000));
        let mut fair = coordinator(Policy::Fair);
        assert_eq!(fair.rate_bps(), 200_000_000, "adaptive starts at half the target");
        assert_eq!(last_shard_rate(&mut fair), Some(100_000_000));
    }

    /// The rate each shard was given last, by shard.
    fn shard_rates(c: &mut SenderCoordinator) -> [Option<u64>; 2] {
        let mut rates = [None; 2];
        while let Some((s, cmd)) = c.poll_command() {
            if let ShardCommand::SetRate { bps } = cmd {
                rates[usize::from(s)] = Some(bps);
            }
        }
        rates
    }

    #[test]
    fn a_shard_that_sent_its_stream_leaves_its_share_to_the_one_still_sending() {
        let mut c = coordinator(Policy::Fixed);
        assert_eq!(shard_rates(&mut c), [Some(200_000_000); 2], "an equal share each");
        c.handle_event(Instant::ZERO, 1, ShardEvent::FirstPassSent);
        let rates = shard_rates(&mut c);
        assert_eq!(rates, [Some(400_000_000), None], "shard 0 gets the whole rate");
        // Shard 1 keeps its equal share for its resends (no new command: unchanged).
        c.handle_event(Instant::ZERO, 0, ShardEvent::FirstPassSent);
        assert_eq!(shard_rates(&mut c), [Some(200_000_000), None], "all sent: equal again");
        // A shard past the session's (our bug) changes nothing and does not panic.
        c.handle_event(Instant::ZERO, 9, ShardEvent::FirstPassSent);
        assert_eq!(shard_rates(&mut c), [None, None]);
    }

    #[test]
    fn silent_feedback_is_a_blackout_and_halves_the_rate() {
        let mut c = coordinator(Policy::Fair);
        let fb = FeedbackSample {
            rtt: Duration::from_millis(50),
            rtt_min: Duration::from_millis(50),
            queuing_delay: Duration::ZERO,
            recv_rate_bps: 0,
            loss_fraction: 0.0,
        };
        c.handle_event(Instant::ZERO, 0, ShardEvent::Feedback(fb));
        let before = c.rate_bps();
        // 150 ms of sending without feedback: under max(4 RTT, 200 ms), nothing happens.
        c.handle_event(Instant::from_nanos(150_000_000), 0, ShardEvent::Sent { ip_bytes: 1500 });
        assert_eq!(c.rate_bps(), before);
        c.handle_event(Instant::from_nanos(201_000_000), 0, ShardEvent::Sent { ip_bytes: 1500 });
        assert_eq!(c.rate_bps(), before / 2);
    }

    fn feedback(recv_rate_bps: u64) -> ShardEvent {
        ShardEvent::Feedback(FeedbackSample {
            rtt: Duration::from_millis(200),
            rtt_min: Duration::from_millis(200),
            queuing_delay: Duration::ZERO,
            recv_rate_bps,
            loss_fraction: 0.0,
        })
    }

    #[test]
    fn the_sessions_receive_rate_is_the_sum_of_the_shards_not_one_scaled() {
        // Seen on the emulated WAN: one of two shards got 190 of a 200 Mbit/s bottleneck; its
        // rate times two read 380 Mbit/s, and the startup took that for the link.
        let mut c = coordinator(Policy::Fair);
        let ms = |n: u64| Instant::from_nanos(n * 1_000_000);
        // (at ms, shard, its rate, RTT ms, the session's rate expected), in order.
        let steps: [(u64, u8, u64, u64, u64, &str); 7] = [
            (1, 0, 190_000_000, 200, 190_000_000, "one shard so far"),
            (2, 1, 10_000_000, 200, 200_000_000, "the sum, not 2 x 190"),
            (3, 0, 180_000_000, 200, 190_000_000, "a newer sample replaces its shard's"),
            (4, 1, 0, 200, 0, "no rate in this sample stays no rate"),
            (250, 0, 150_000_000, 200, 150_000_000, "a shard silent for over an RTT expires"),
            (260, 1, 40_000_000, 1, 190_000_000, "not within MIN_SHARD_RATE_AGE"),
            (261, 9, 1_000, 1, 2_000, "a shard past the session's (our bug): no panic"),
        ];
        for (at, shard, bps, rtt_ms, want, why) in steps {
            let got = c.session_recv_rate(ms(at), shard, bps, Duration::from_millis(rtt_ms));
            assert_eq!(got, want, "{why}");
        }

        // What the controller is fed: its delivered-rate estimate stays at the bottleneck.
        let mut c = coordinator(Policy::Fair);
        // The busier shard sends more datagrams, so it also reports more often.
        for i in 0..50u64 {
            let (shard, bps) = if i % 5 == 4 { (1, 10_000_000) } else { (0, 190_000_000) };
            c.handle_event(ms(5 * i + 1), shard, feedback(bps));
        }
        let carried = c.rate_snapshot().carried_bps;
        assert!(
            (150_000_000..=210_000_000).contains(&carried),
            "carried {carried} bit/s: the sum of the shards is 200 Mbit/s"
        );
    }

    #[test]
    fn node_cap_bounds_what_the_shards_are_given() {
        let cap = NodeCap::new(120_000_000);
        let mut a = coordinator(Policy::Fixed);
        let mut b = coordinator(Policy::Fixed);
        a.set_node_cap(Instant::ZERO, cap.join().unwrap());
        b.set_node_cap(Instant::ZERO, cap.join().unwrap());
        a.handle_event(Instant::ZERO, 0, ShardEvent::Sent { ip_bytes: 1 });
        assert_eq!(last_shard_rate(&mut a), Some(30_000_000));
        assert_eq!(last_shard_rate(&mut b), Some(30_000_000));
    }
}

#[cfg(test)]
mod announce_tests {
    use super::*;
    use crate::checksum::hash_block;
    use std::sync::Arc;

    fn announced(c: &mut SenderCoordinator) -> Vec<u32> {
        let mut files = Vec::new();
        while let Some((_, cmd)) = c.poll_command() {
            if let ShardCommand::SendFileDone { file, .. } = cmd {
                files.push(file);
            }
        }
        files
    }

    #[test]
    fn finished_files_beyond_the_unacked_bound_wait_for_acks_in_order() {
        let n = MAX_ANNOUNCED_UNACKED as u32 + 10;
        let p = SessionParams::new(1, crate::crypto::SuiteId::Aes128CfbCmac);
        let files = (0..n)
            .map(|i| FileEntry { name: format!("f{i}"), size: 100, mode: 0o644, mtime_ns: 0 })
            .collect();
        let m = Manifest::new(files, 16).unwrap();
        let layout = Layout::new(Arc::new(m), 1).unwrap();
        let mut c = SenderCoordinator::new(&p, layout, Instant::ZERO).unwrap();
        let hash = hash_block(&[7; 100], 0, 1 << 16, 1);
        for file in 0..n {
            c.handle_event(
                Instant::ZERO,
                0,
                ShardEvent::BlockHashed { file, block_in_file: 0, hash },
            );
        }
        let first = announced(&mut c);
        assert_eq!(first, (0..MAX_ANNOUNCED_UNACKED as u32).collect::<Vec<_>>());
        for file in 0..3 {
            c.handle_event(Instant::ZERO, 0, ShardEvent::PeerFileAck { file, verified: true });
        }
        let next = MAX_ANNOUNCED_UNACKED as u32;
        assert_eq!(announced(&mut c), vec![next, next + 1, next + 2]);
        // A repeated ack makes no room twice.
        c.handle_event(Instant::ZERO, 0, ShardEvent::PeerFileAck { file: 0, verified: true });
        assert!(announced(&mut c).is_empty());
        for file in 3..n {
            c.handle_event(Instant::ZERO, 0, ShardEvent::PeerFileAck { file, verified: true });
        }
        assert_eq!(c.outcome(), Some(Outcome::Complete));
    }

    #[test]
    fn the_receivers_complete_stands_for_file_acks_lost_on_the_way() {
        // Seed 121 of the sweep: 19% reverse loss ate a FileAck, the FileDone resend had backed
        // off past the receiver's linger, and the sender idled out although the receiver was done.
        let p = SessionParams::new(1, crate::crypto::SuiteId::Aes128CfbCmac);
        let files = (0..3)
            .map(|i| FileEntry { name: format!("f{i}"), size: 100, mode: 0o644, mtime_ns: 0 })
            .collect();
        let layout = Layout::new(Arc::new(Manifest::new(files, 16).unwrap()), 1).unwrap();
        let mut c = SenderCoordinator::new(&p, layout, Instant::ZERO).unwrap();
        c.handle_event(Instant::ZERO, 0, ShardEvent::PeerFileAck { file: 0, verified: true });
        assert_eq!(c.outcome(), None);
        c.handle_event(Instant::ZERO, 0, ShardEvent::PeerComplete);
        assert_eq!(c.outcome(), Some(Outcome::Complete));
        assert!(
            std::iter::from_fn(|| c.poll_command())
                .any(|(_, cmd)| matches!(cmd, ShardCommand::SendComplete)),
            "the sender answers Complete so the receiver stops lingering"
        );
    }
}
