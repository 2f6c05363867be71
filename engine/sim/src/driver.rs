//! The driver: wires both sides of a real `haul-proto` session to the simulated network and
//! disks, and runs the virtual clock.
//!
//! Each step pumps both sides until they are quiet (shard events to the coordinator, commands
//! back, disk requests to the disk, datagrams onto the links), then jumps the clock to the next
//! thing that happens: a datagram arrival, a disk completion, an attacker injection or a shard
//! deadline. Everything is single-threaded and seeded, so a seed replays its run exactly.
//!
//! Invariants checked while running (each breach is a [`Failure`] and ends the run):
//! - no (direction, shard, sequence number) is transmitted twice, and every sequence number's
//!   top 8 bits name its shard;
//! - no datagram exceeds the MTU;
//! - every attacker datagram, handed to its shard alone, is `Rejected` and leaves the shard's
//!   state, deadline and traffic counters unchanged; every corrupted datagram is `Rejected`; no intact legit
//!   datagram is rejected as forged, malformed or replayed (unless the link duplicated it);
//! - the step and simulated-time bounds are never reached.
//!
//! Limits: [`MAX_PUMP_ROUNDS`] rounds per pump, [`MAX_TRANSMIT_CALLS`] `poll_transmit` calls per
//! shard per round, [`MAX_IN_FLIGHT`] datagrams on the links.

use crate::attacker::{Attacker, Injection, header_shard_seq};
use crate::checks;
use crate::disk::{Disk, DiskOp, SimFile, stored_content};
use crate::endpoint::{AnyCoord, AnyShard, Endpoint};
use crate::net::{Arrival, Fate, Link};
use crate::report::{Failure, RunReport};
use crate::scenario::{FileKind, Scenario};
use crate::side::{Side, with_side};
use haul_proto::crypto::{KeySchedule, MAX_BATCH, SessionSecret};
use haul_proto::rangeset::RangeSet;
use haul_proto::rate::RateLimits;
use haul_proto::rng::Rng;
use haul_proto::session::sender::RxDatagram;
use haul_proto::session::{
    FileEntry, FileOp, Layout, Manifest, ReceiverCoordinator, ReceiverShard, Reject, Role,
    RxOutcome, SenderCoordinator, SenderShard, SessionParams, shard_suites,
};
use haul_proto::time::{Duration, Instant};
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Most rounds of pumping both sides at one instant.
pub const MAX_PUMP_ROUNDS: u32 = 64;
/// Most `poll_transmit` calls per shard per round.
pub const MAX_TRANSMIT_CALLS: u32 = 64;
/// Most datagrams travelling on both links at once.
pub const MAX_IN_FLIGHT: usize = 1 << 20;
/// Most shard events or commands moved per pump round per side.
pub const MAX_MESSAGES: u32 = 1 << 16;
/// Most consecutive steps at one instant before the run counts as a livelock: a deadline that
/// `handle_timeout` does not move.
pub const MAX_STEPS_AT_ONE_INSTANT: u32 = 10_000;

/// A datagram on its way.
#[derive(Debug)]
struct InFlight {
    bytes: Vec<u8>,
    /// Bits were flipped on the wire.
    corrupt: bool,
    /// The link delivers another copy of it.
    twin: bool,
}

#[derive(Debug)]
struct Arrive {
    at: Instant,
    order: u64,
    to: Side,
    shard: u8,
    dgram: InFlight,
}

impl PartialEq for Arrive {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Arrive {}
impl PartialOrd for Arrive {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Arrive {
    /// Reversed: the heap pops the earliest arrival, ties in send order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct Sim {
    sc: Scenario,
    params: SessionParams,
    now: Instant,
    steps: u64,
    ends: [Endpoint; 2],
    /// `links[i]` carries what side `i` sends.
    links: [Link; 2],
    arrivals: BinaryHeap<Arrive>,
    order: u64,
    attacker: Option<Attacker>,
    tx_buf: Vec<u8>,
    report: RunReport,
    /// Diagnostic trace (`HAUL_SIM_TRACE_MS`): its interval and the next time it prints.
    trace: Option<(Duration, Instant)>,
    /// Steps taken without the clock moving (a livelock past [`MAX_STEPS_AT_ONE_INSTANT`]).
    same_instant: u32,
    /// A forward bottleneck shared with other sessions ([`Sim::share_bottleneck`]) and this
    /// session's start on its clock.
    bottleneck: Option<(SharedLink, Duration)>,
}

/// A link several sessions' senders share (its queue and serializer), on a clock of its own
/// that starts with the first session: see [`Sim::share_bottleneck`].
pub type SharedLink = std::rc::Rc<std::cell::RefCell<Link>>;

impl Sim {
    /// Build both sides of the session the scenario describes.
    pub fn new(sc: &Scenario) -> Result<Sim, Failure> {
        let mut rng = Rng::new(sc.seed ^ 0x5eed_5e55_1011_0f0f);
        let session_id = rng.next_u64();
        let mut params = SessionParams::new(session_id, sc.suite);
        params.shards = sc.shards;
        params.window_bytes = sc.window_bytes;
        params.rate = RateLimits { min_bps: 0, target_bps: sc.rate_bps };
        params.policy = sc.policy;
        params.idle_timeout = sc.idle_timeout;
        params.initial_rtt = (sc.forward.delay + sc.reverse.delay).max(Duration::from_millis(1));
        params.datagram_size_max = sc.pmtu_max.max(params.datagram_size);
        params.check().map_err(|e| Failure::Setup(e.to_string()))?;
        let layout = build_layout(sc)?;
        let mut secret = [0u8; 32];
        let (mut client_random, mut server_random) = ([0u8; 32], [0u8; 32]);
        rng.fill_bytes(&mut secret);
        rng.fill_bytes(&mut client_random);
        rng.fill_bytes(&mut server_random);
        let keys = (SessionSecret(secret), client_random, server_random);
        let disk = build_disk(sc, Side::Sender, rng.next_u64());
        let sender = build_endpoint(sc, &params, &layout, &keys, Side::Sender, disk)?;
        let disk = build_disk(sc, Side::Receiver, rng.next_u64());
        let mut rparams = params.clone();
        if sc.receiver_pmtu_max != 0 {
            rparams.datagram_size_max = sc.receiver_pmtu_max.max(params.datagram_size);
        }
        let receiver = build_endpoint(sc, &rparams, &layout, &keys, Side::Receiver, disk)?;
        let links = [
            Link::new(sc.forward.clone(), rng.next_u64()),
            Link::new(sc.reverse.clone(), rng.next_u64()),
        ];
        let dsize = usize::from(params.datagram_size);
        let stride = usize::from(params.datagram_size_max);
        let attacker =
            sc.attacker.map(|a| Attacker::new(a, session_id, sc.shards, dsize, rng.next_u64()));
        let mut report = RunReport::new(sc.seed, sc.suite, sc.shards, sc.sender_role);
        report.files = sc.files.len();
        report.bytes = sc.total_bytes();
        Ok(Sim {
            sc: sc.clone(),
            params,
            now: Instant::ZERO,
            steps: 0,
            ends: [sender, receiver],
            links,
            arrivals: BinaryHeap::new(),
            order: 0,
            attacker,
            tx_buf: vec![0u8; MAX_BATCH * stride],
            report,
            trace: trace_interval().map(|d| (d, Instant::ZERO)),
            same_instant: 0,
            bottleneck: None,
        })
    }

    fn fail(&mut self, f: Failure) {
        if self.report.failures.is_empty() {
            self.report.failures.push(f);
        }
    }

    /// Run to the end and check the result.
    pub fn run(mut self) -> RunReport {
        while self.step() {}
        self.finish()
    }

    /// Send what is ready at the current time, then move the clock to the next event and
    /// handle it. False once the run is over (done, stopped or failed): then call
    /// [`Sim::finish`]. Datagrams go onto the links only in the first half, at the current
    /// time, so a driver that always steps the session whose clock is earliest offers a shared
    /// link its datagrams in time order.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        if self.steps > self.sc.max_steps {
            self.fail(Failure::StepBound(self.sc.max_steps));
        }
        self.pump();
        self.note_rename();
        if !self.report.failures.is_empty() || self.is_over() {
            return false;
        }
        if self.sc.stop_at.is_some_and(|t| self.now >= Instant::ZERO + t) {
            self.report.stopped = true;
            return false;
        }
        let Some(next) = self.next_time() else {
            self.fail(Failure::Stalled);
            return false;
        };
        if next > Instant::ZERO + self.sc.max_time {
            self.fail(Failure::TimeBound(self.sc.max_time));
            return false;
        }
        self.same_instant = if next <= self.now { self.same_instant + 1 } else { 0 };
        if self.same_instant > MAX_STEPS_AT_ONE_INSTANT {
            self.fail(self.livelock());
            return false;
        }
        self.now = self.now.max(next);
        self.print_trace();
        self.fire_due();
        true
    }

    /// The session's clock (it starts at zero when the session starts).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The sender's rate controller now (rate, estimates, mode).
    pub fn rate_snapshot(&self) -> haul_proto::rate::RateSnapshot {
        match &self.ends[Side::Sender.index()].coord {
            AnyCoord::Sender(c) => c.rate_snapshot(),
            AnyCoord::Receiver(_) => haul_proto::rate::RateSnapshot::default(),
        }
    }

    /// File bytes the receiver has accepted so far, counting each byte once.
    pub fn received_bytes(&self) -> u64 {
        self.ends[Side::Receiver.index()]
            .shards
            .iter()
            .map(|s| s.stats().data_bytes_received.saturating_sub(s.stats().data_bytes_duplicate))
            .sum()
    }

    /// Send this session's data through `link` (shared with other sessions) before its own
    /// forward link, which then adds only its propagation delay and random loss (give it a
    /// rate far above the shared link's). `start` is when this session starts on the shared
    /// link's clock. The run's queue figures are then the shared link's.
    pub fn share_bottleneck(&mut self, link: SharedLink, start: Duration) {
        self.bottleneck = Some((link, start));
    }

    /// Offer one datagram of `side` to its link (through the shared bottleneck first, if any).
    fn offer(&mut self, side: Side, len: usize) -> Fate {
        let overhead = usize::from(self.params.ip_overhead);
        let Some((shared, start)) = self.bottleneck.as_ref().filter(|_| side == Side::Sender)
        else {
            return self.links[side.index()].send(self.now, len, overhead);
        };
        let origin = Instant::ZERO + *start;
        match shared.borrow_mut().send(self.now + *start, len, overhead) {
            Fate::Delivered { first, .. } => {
                let left = Instant::ZERO + first.at.saturating_since(origin);
                self.links[side.index()].send(left.max(self.now), len, overhead)
            }
            dropped => dropped,
        }
    }

    /// One trace line to stderr when the interval has passed: the sender's controller (rate,
    /// achieved sending, delivered rate, queue measured and predicted, loss, base RTT, mode),
    /// file bytes sent, resent, received and duplicated, NAKs, and the forward queue. For
    /// diagnosis only: reads state, changes nothing, so a traced run is the same run.
    fn print_trace(&mut self) {
        let Some((every, due)) = self.trace else { return };
        if self.now < due {
            return;
        }
        self.trace = Some((every, self.now + every));
        let sum = |side: Side, f: fn(&haul_proto::session::ShardStats) -> u64| -> u64 {
            self.ends[side.index()].shards.iter().map(|s| f(s.stats())).sum()
        };
        let snap = self.rate_snapshot();
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        eprintln!(
            "trace t={:.3}s rate={:.1}M sent_bits={:.1}M carried={:.1}M q={:.2}ms qpred={:.2}ms \
             loss={:.4} base={:.2}ms mode={} sent={:.2}MiB resent={:.2}MiB recv={:.2}MiB \
             dup={:.3}MiB naks={}/{} fwdq={}B",
            self.now.saturating_since(Instant::ZERO).as_secs_f64(),
            snap.rate_bps as f64 / 1e6,
            snap.sent_bits as f64 / 1e6,
            snap.carried_bps as f64 / 1e6,
            snap.queue_us as f64 / 1e3,
            snap.predicted_queue_us as f64 / 1e3,
            snap.loss,
            snap.base_rtt_us as f64 / 1e3,
            snap.mode,
            mib(sum(Side::Sender, |s| s.data_bytes_sent)),
            mib(sum(Side::Sender, |s| s.data_bytes_resent)),
            mib(sum(Side::Receiver, |s| s.data_bytes_received)),
            mib(sum(Side::Receiver, |s| s.data_bytes_duplicate)),
            sum(Side::Receiver, |s| s.naks_sent),
            sum(Side::Sender, |s| s.naks_received),
            self.links[0].queued_bytes(self.now),
        );
    }

    /// Name the deadline that keeps the clock from moving.
    fn livelock(&self) -> Failure {
        let now = self.now;
        for e in &self.ends {
            for (i, s) in e.shards.iter().enumerate() {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    return Failure::Livelock {
                        what: format!(
                            "{} shard {i} deadline {:?} stays due after handle_timeout",
                            e.side.name(),
                            s.poll_timeout()
                        ),
                    };
                }
            }
        }
        Failure::Livelock { what: "an event stays due without effect".into() }
    }

    /// Stamp the moment the receiver completes: its last file verified and renamed.
    fn note_rename(&mut self) {
        let receiver = &self.ends[Side::Receiver.index()];
        if self.report.renamed_at.is_none()
            && receiver.coord.outcome() == Some(haul_proto::session::Outcome::Complete)
        {
            self.report.renamed_at = Some(self.now.saturating_since(Instant::ZERO));
        }
    }

    fn is_over(&self) -> bool {
        let [s, r] = [&self.ends[0], &self.ends[1]];
        match (s.coord.outcome(), r.coord.outcome()) {
            (Some(a), Some(b)) => {
                (s.is_closed() && r.is_closed())
                    || (a == haul_proto::session::Outcome::Complete && a == b)
            }
            _ => false,
        }
    }

    /// The earliest future event of any kind.
    fn next_time(&self) -> Option<Instant> {
        let mut t = self.arrivals.peek().map(|a| a.at);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for e in &self.ends {
            consider(e.disk.next_completion());
            consider(e.next_timeout());
        }
        consider(self.attacker.as_ref().and_then(Attacker::next_injection));
        t
    }

    /// Pump both sides until neither makes progress.
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut progress = false;
            for side in Side::BOTH {
                progress |= self.pump_messages(side);
                progress |= self.pump_disk_requests(side);
                progress |= self.pump_transmit(side);
            }
            if !progress || !self.report.failures.is_empty() {
                return;
            }
            self.steps += 1;
        }
    }

    /// Shard events up to the coordinator, its commands down to the shards.
    fn pump_messages(&mut self, side: Side) -> bool {
        let now = self.now;
        let e = &mut self.ends[side.index()];
        let mut moved = 0u32;
        let mut bad_shard = None;
        with_side(side, || {
            for (i, shard) in e.shards.iter_mut().enumerate() {
                while moved < MAX_MESSAGES
                    && let Some(ev) = shard.poll_event()
                {
                    e.coord.handle_event(now, i as u8, ev);
                    moved += 1;
                }
            }
            while moved < MAX_MESSAGES
                && let Some((i, cmd)) = e.coord.poll_command()
            {
                moved += 1;
                match e.shards.get_mut(usize::from(i)) {
                    Some(shard) => shard.handle_command(now, cmd),
                    None => bad_shard = Some(i),
                }
            }
        });
        if let Some(i) = bad_shard {
            self.fail(Failure::BadRequest {
                side: side.name(),
                what: format!("command for shard {i}"),
            });
        }
        moved > 0
    }

    /// Disk reads from the shards and file operations from the coordinator, to the disk.
    fn pump_disk_requests(&mut self, side: Side) -> bool {
        let now = self.now;
        let e = &mut self.ends[side.index()];
        let mut ops = Vec::new();
        with_side(side, || {
            while let Some(FileOp::Finalize { file }) = e.coord.poll_file_op() {
                ops.push(DiskOp::Finalize { file });
            }
            for (i, shard) in e.shards.iter_mut().enumerate() {
                while let Some(r) = shard.poll_disk() {
                    ops.push(DiskOp::Read {
                        shard: i as u8,
                        slot: r.slot,
                        file: r.file,
                        offset: r.offset,
                        len: r.len,
                    });
                }
            }
        });
        let progress = !ops.is_empty();
        for op in ops {
            if let DiskOp::Finalize { file } = op
                && let Err(what) = checks::finalize_allowed(&self.ends[side.index()].disk, file)
            {
                self.fail(Failure::FileCheck { file, what });
            }
            if let Err(err) = self.ends[side.index()].disk.submit(now, op) {
                self.fail(Failure::BadRequest { side: side.name(), what: err.to_string() });
            }
        }
        progress
    }

    /// Datagrams from every shard of `side` onto its link.
    fn pump_transmit(&mut self, side: Side) -> bool {
        let stride = usize::from(self.params.datagram_size_max);
        let mut lens = [0usize; MAX_BATCH];
        let mut progress = false;
        for shard in 0..self.ends[side.index()].shards.len() {
            for _ in 0..MAX_TRANSMIT_CALLS {
                let now = self.now;
                let (e, buf) = (&mut self.ends[side.index()], &mut self.tx_buf);
                let n =
                    with_side(side, || e.shards[shard].poll_transmit(now, buf, stride, &mut lens));
                if n == 0 {
                    break;
                }
                progress = true;
                for (k, &len) in lens.iter().enumerate().take(n.min(MAX_BATCH)) {
                    if len > stride {
                        self.fail(Failure::Oversize { side: side.name(), len });
                        return progress;
                    }
                    let d = self.tx_buf[k * stride..k * stride + len].to_vec();
                    self.transmit(side, shard as u8, d);
                }
            }
        }
        progress
    }

    /// Check one outgoing datagram's sequence number and put it on the link.
    fn transmit(&mut self, side: Side, shard: u8, d: Vec<u8>) {
        let Some((hs, seq)) = header_shard_seq(&d) else {
            self.fail(Failure::Oversize { side: side.name(), len: d.len() });
            return;
        };
        if hs != shard || seq >> 56 != u64::from(shard) {
            self.fail(Failure::SeqWrongShard { side: side.name(), shard, seq });
        }
        self.report.transmitted += 1;
        let seqs = &mut self.ends[side.index()].sent_seqs[usize::from(shard)];
        if seqs.insert(seq..seq + 1) == 0 {
            self.fail(Failure::SeqReused { side: side.name(), shard, seq });
        }
        if let Some(a) = self.attacker.as_mut() {
            a.observe_sent(side, &d);
        }
        let fate = self.offer(side, d.len());
        let Fate::Delivered { first, second } = fate else {
            // With probing on, a datagram too large for the path is a probe (or data just
            // after a black hole appeared): lost, as on a real path. With it off, a bug.
            let probing = self.params.datagram_size_max > self.params.datagram_size;
            if fate == Fate::Dropped(crate::net::DropReason::Oversize) && !probing {
                self.fail(Failure::Oversize { side: side.name(), len: d.len() });
            }
            return;
        };
        if self.arrivals.len() >= MAX_IN_FLIGHT {
            let what = "too many datagrams in flight".into();
            self.fail(Failure::BadRequest { side: side.name(), what });
            return;
        }
        let twin = second.is_some();
        let copy = second.map(|a| (a, d.clone()));
        self.schedule(side, shard, first, d, twin);
        if let Some((a, bytes)) = copy {
            self.schedule(side, shard, a, bytes, twin);
        }
    }

    /// Put one copy of a datagram `side` sent on its way to the peer's shard `shard`.
    fn schedule(&mut self, side: Side, shard: u8, a: Arrival, mut bytes: Vec<u8>, twin: bool) {
        if a.corrupt {
            self.links[side.index()].corrupt(&mut bytes);
        }
        self.order += 1;
        let dgram = InFlight { bytes, corrupt: a.corrupt, twin };
        self.arrivals.push(Arrive { at: a.at, order: self.order, to: side.peer(), shard, dgram });
    }

    /// Everything due at `now`: arrivals, disk completions, an injection, shard deadlines.
    fn fire_due(&mut self) {
        let mut due: Vec<Arrive> = Vec::new();
        while self.arrivals.peek().is_some_and(|a| a.at <= self.now) {
            due.extend(self.arrivals.pop());
        }
        // Consecutive arrivals for the same shard go in one batch.
        let mut batch: Vec<InFlight> = Vec::new();
        let mut target = None;
        for a in due {
            if target != Some((a.to, a.shard)) || batch.len() >= MAX_BATCH {
                if let Some((to, shard)) = target {
                    self.deliver(to, shard, std::mem::take(&mut batch));
                }
                target = Some((a.to, a.shard));
            }
            batch.push(a.dgram);
        }
        if let Some((to, shard)) = target {
            self.deliver(to, shard, batch);
        }
        for side in Side::BOTH {
            self.complete_disk_ops(side);
        }
        let inj = self.attacker.as_mut().and_then(|a| a.poll_injection(self.now));
        if let Some(inj) = inj {
            self.inject(inj);
        }
        let now = self.now;
        for e in &mut self.ends {
            with_side(e.side, || {
                for s in &mut e.shards {
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
            });
        }
    }

    /// Hand a batch of legit (possibly corrupted) datagrams to a shard and act on the outcomes.
    fn deliver(&mut self, to: Side, shard: u8, mut dgrams: Vec<InFlight>) {
        let now = self.now;
        let originals: Vec<Option<Vec<u8>>> = dgrams
            .iter()
            .map(|d| self.attacker.as_ref().filter(|_| !d.corrupt).map(|_| d.bytes.clone()))
            .collect();
        let e = &mut self.ends[to.index()];
        let Some(sh) = e.shards.get_mut(usize::from(shard)) else { return };
        let mut batch: Vec<RxDatagram<'_>> = dgrams
            .iter_mut()
            .map(|d| RxDatagram { buf: &mut d.bytes, outcome: RxOutcome::Pending })
            .collect();
        let closed = sh.is_closed();
        with_side(to, || sh.handle_datagrams(now, &mut batch));
        let outcomes: Vec<RxOutcome> = batch.into_iter().map(|b| b.outcome).collect();
        for ((d, outcome), original) in dgrams.iter().zip(outcomes).zip(originals) {
            self.judge(to, shard, d, outcome, original, closed);
            if !self.report.failures.is_empty() {
                return;
            }
        }
    }

    /// Check one legit datagram's outcome; start the write it asks for. A shard that was
    /// already `closed` may reject anything: its session is gone.
    fn judge(
        &mut self,
        to: Side,
        shard: u8,
        d: &InFlight,
        outcome: RxOutcome,
        original: Option<Vec<u8>>,
        closed: bool,
    ) {
        let side = to.name();
        match outcome {
            RxOutcome::Pending => self.fail(Failure::OutcomePending { side, shard }),
            RxOutcome::Rejected(_) if d.corrupt => self.report.corrupted_rejected += 1,
            RxOutcome::Rejected(Reject::Replayed) if d.twin => {}
            RxOutcome::Rejected(
                reason @ (Reject::Malformed
                | Reject::WrongSession
                | Reject::WrongShard
                | Reject::Reflected
                | Reject::Replayed
                | Reject::BadTag),
            ) if !closed => self.fail(Failure::LegitRejected { side, shard, reason }),
            RxOutcome::Rejected(_) => {}
            accepted if d.corrupt => {
                self.fail(Failure::AcceptedCorrupt {
                    side,
                    shard,
                    outcome: format!("{accepted:?}"),
                });
            }
            accepted => {
                if let (Some(a), Some(orig)) = (self.attacker.as_mut(), original) {
                    a.observe_accepted(to, shard, &orig);
                }
                if let RxOutcome::Write { file, offset, payload } = accepted {
                    self.start_write(to, shard, file, offset, d.bytes.get(payload));
                }
            }
        }
    }

    fn start_write(&mut self, to: Side, shard: u8, file: u32, offset: u64, data: Option<&[u8]>) {
        let Some(data) = data.filter(|_| to == Side::Receiver) else {
            let what =
                format!("write outcome on the {} or payload outside the datagram", to.name());
            self.fail(Failure::BadRequest { side: to.name(), what });
            return;
        };
        let op = DiskOp::Write { shard, file, offset, data: data.to_vec() };
        if let Err(err) = self.ends[to.index()].disk.submit(self.now, op) {
            self.fail(Failure::BadRequest { side: to.name(), what: err.to_string() });
        }
    }

    /// Report finished disk operations to their shard or coordinator.
    fn complete_disk_ops(&mut self, side: Side) {
        let now = self.now;
        let e = &mut self.ends[side.index()];
        let Endpoint { coord, shards, disk, .. } = e;
        while let Some(c) = disk.poll_completion(now) {
            with_side(side, || match c.op {
                DiskOp::Read { shard, slot, file, offset, .. } => {
                    let Some(sh) = shards.get_mut(usize::from(shard)) else { return };
                    let result = c.result.map(|n| {
                        let buf = sh.disk_buffer_mut(slot);
                        let n = n.min(buf.len());
                        disk.read_into(file, offset, &mut buf[..n])
                    });
                    sh.handle_disk(now, slot, result);
                }
                DiskOp::Write { shard, file, offset, ref data } => {
                    if let Some(AnyShard::Receiver(r)) = shards.get_mut(usize::from(shard)) {
                        r.handle_write_done(now, file, offset, data.len() as u32, c.result);
                    }
                }
                DiskOp::Finalize { file } => {
                    if let AnyCoord::Receiver(rc) = coord {
                        rc.handle_file_op_done(
                            now,
                            FileOp::Finalize { file },
                            c.result.map(|_| ()),
                        );
                    }
                }
            });
        }
    }

    /// Hand one attacker datagram to its target shard, alone; it must be rejected and must not
    /// change the shard's state (its own account of it, its deadline, its traffic counters).
    fn inject(&mut self, inj: Injection) {
        let now = self.now;
        let e = &mut self.ends[inj.target.index()];
        let Some(sh) = e.shards.get_mut(usize::from(inj.shard)) else { return };
        let before = checks::state_fingerprint(sh);
        let mut buf = inj.bytes;
        let mut one = [RxDatagram { buf: &mut buf, outcome: RxOutcome::Pending }];
        with_side(inj.target, || sh.handle_datagrams(now, &mut one));
        let outcome = std::mem::take(&mut one[0].outcome);
        let after = checks::state_fingerprint(sh);
        let (kind, side, shard) = (inj.kind.name(), inj.target.name(), inj.shard);
        if !matches!(outcome, RxOutcome::Rejected(_)) {
            self.fail(Failure::AcceptedJunk { kind, side, shard, outcome: format!("{outcome:?}") });
        } else if before != after {
            self.fail(Failure::AttackChangedState { kind, side, shard });
        } else {
            self.report.attacks_rejected += 1;
        }
    }

    /// Gather figures and run the end-of-run checks.
    pub fn finish(mut self) -> RunReport {
        self.report.sim_time = self.now.saturating_since(Instant::ZERO);
        self.report.steps = self.steps;
        for e in &self.ends {
            self.report.outcomes[e.side.index()] = e.coord.outcome();
            for s in &e.shards {
                self.report.rejects.merge(&s.stats().rejects);
                if e.side == Side::Sender {
                    self.report.resent_bytes += s.stats().data_bytes_resent;
                    if let crate::endpoint::AnyShard::Sender(s) = s {
                        self.report.note_pmtu(s.pmtu());
                    }
                } else {
                    self.report.duplicate_bytes += s.stats().data_bytes_duplicate;
                }
            }
            if let Some(err) = e.disk.fatal_fired() {
                self.report.fatal.get_or_insert((e.side, err));
            }
        }
        if let Some(a) = &self.attacker {
            self.report.attacks = *a.stats();
        }
        let forward = match &self.bottleneck {
            Some((shared, _)) => {
                let l = shared.borrow();
                (l.queue_delay().clone(), l.stats().queue_drops)
            }
            None => {
                let l = &self.links[Side::Sender.index()];
                (l.queue_delay().clone(), l.stats().queue_drops)
            }
        };
        (self.report.queue_delay, self.report.queue_drops) = forward;
        if self.report.failures.is_empty() && !self.report.stopped {
            let failures = checks::end_of_run(&self.ends, self.report.fatal);
            self.report.failures.extend(failures);
        }
        if !self.report.failures.is_empty() {
            self.report.diagnostics = self.diagnostics();
        }
        self.report
    }

    /// The state of both sides, for a failed run's report.
    fn diagnostics(&self) -> Vec<String> {
        let mut out = vec![format!(
            "now={:?} steps={} in_flight={}",
            self.now,
            self.steps,
            self.arrivals.len()
        )];
        for e in &self.ends {
            out.push(format!(
                "{}: outcome={} closed={} next_timeout={:?} disk={:?} disk_idle={}",
                e.side.name(),
                crate::report::outcome_name(e.coord.outcome()),
                e.is_closed(),
                e.next_timeout(),
                e.disk.stats(),
                e.disk.is_idle(),
            ));
            for (i, s) in e.shards.iter().enumerate() {
                out.push(format!(
                    "  shard {i}: closed={} timeout={:?} {:?}\n    {}",
                    s.is_closed(),
                    s.poll_timeout(),
                    s.stats(),
                    s.debug_state()
                ));
            }
            if e.side == Side::Receiver {
                for (i, f) in e.disk.files().iter().enumerate() {
                    let holes: Vec<_> = f.written().iter().take(4).collect();
                    out.push(format!(
                        "  file {i}: {} of {} bytes written, first ranges {holes:?}",
                        f.written().covered(),
                        f.size()
                    ));
                }
                out.push(format!("  finalized: {:?}", e.disk.finalized()));
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            out.push(format!("link {i}: {:?}", l.stats()));
        }
        out
    }
}

/// The trace interval `HAUL_SIM_TRACE_MS` asks for (simulated milliseconds), if any. Read from
/// the environment because it changes what is printed, never what is simulated.
fn trace_interval() -> Option<Duration> {
    let ms: u64 = std::env::var("HAUL_SIM_TRACE_MS").ok()?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn build_layout(sc: &Scenario) -> Result<Layout, Failure> {
    let files = sc
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| FileEntry { name: format!("f{i}"), size: f.size, mode: 0o644, mtime_ns: 0 })
        .collect();
    let manifest =
        Manifest::new(files, sc.block_size_log2).map_err(|e| Failure::Setup(e.to_string()))?;
    Layout::new(Arc::new(manifest), sc.shards).map_err(|e| Failure::Setup(e.to_string()))
}

/// The seed of file `i`'s content (stored or virtual).
pub fn file_seed(scenario_seed: u64, i: usize) -> u64 {
    scenario_seed.wrapping_mul(0x100_0000_01b3) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn build_disk(sc: &Scenario, side: Side, seed: u64) -> Disk {
    let files = sc
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| match (f.kind, side) {
            (FileKind::Virtual, _) => SimFile::Virtual {
                seed: file_seed(sc.seed, i),
                size: f.size,
                written: RangeSet::new(),
                mismatched_bytes: 0,
            },
            (FileKind::Stored, Side::Sender) => SimFile::Stored {
                data: stored_content(file_seed(sc.seed, i), f.size),
                written: RangeSet::new(),
            },
            (FileKind::Stored, Side::Receiver) => {
                SimFile::Stored { data: vec![0; f.size as usize], written: RangeSet::new() }
            }
        })
        .collect();
    let fatal = sc.fatal.filter(|f| f.side == side).map(|f| f.fault);
    Disk::new(sc.disks[side.index()].clone(), files, fatal, seed)
}

/// One side's coordinator and shards, each built inside `with_side`.
fn build_endpoint(
    sc: &Scenario,
    params: &SessionParams,
    layout: &Layout,
    keys: &(SessionSecret, [u8; 32], [u8; 32]),
    side: Side,
    disk: Disk,
) -> Result<Endpoint, Failure> {
    let role = match (side, sc.sender_role) {
        (Side::Sender, r) => r,
        (Side::Receiver, Role::Client) => Role::Server,
        (Side::Receiver, Role::Server) => Role::Client,
    };
    let sending = side == Side::Sender;
    let setup = |e: haul_proto::session::SessionError| Failure::Setup(e.to_string());
    with_side(side, || {
        let ks = KeySchedule::new(&keys.0, &keys.1, &keys.2, sc.suite, params.session_id);
        let now = Instant::ZERO;
        let coord = if sending {
            AnyCoord::Sender(SenderCoordinator::new(params, layout.clone(), now).map_err(setup)?)
        } else {
            AnyCoord::Receiver(
                ReceiverCoordinator::new(params, layout.clone(), now).map_err(setup)?,
            )
        };
        let mut shards = Vec::with_capacity(usize::from(sc.shards));
        for i in 0..sc.shards {
            let (tx, rx) = shard_suites(&ks, role, i);
            let shard = if sending {
                AnyShard::Sender(
                    SenderShard::new(params, layout.clone(), i, tx, rx, now).map_err(setup)?,
                )
            } else {
                AnyShard::Receiver(
                    ReceiverShard::new(params, layout.clone(), i, tx, rx, now).map_err(setup)?,
                )
            };
            shards.push(shard);
        }
        let sent_seqs = vec![RangeSet::new(); usize::from(sc.shards)];
        Ok(Endpoint { side, coord, shards, disk, sent_seqs })
    })
}
