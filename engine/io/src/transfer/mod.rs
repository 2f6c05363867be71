//! The transfer runtime: per-core shard threads and a coordinator thread driving `haul-proto`
//! sessions over real sockets and files (docs/DATAPLANE.md, "Shards").
//!
//! A side of a transfer is one coordinator thread plus N shard threads. A shard thread owns one
//! [`Backend`] (its UDP socket and ring), one proto shard (`SenderShard` or `ReceiverShard`),
//! its read buffers and its write staging buffer; it shares nothing on the data path. Shards
//! and the coordinator talk over bounded crossbeam channels carrying the proto's
//! `ShardEvent`/`ShardCommand`.
//!
//! This module is the seam between set-up (key file today, SSH gate later) and data: callers
//! agree on [`SessionParams`], keys and the manifest however they like, bind the shard sockets
//! with [`bind_shards`] (so the ports can be told to the peer), then call [`run_sender`] or
//! [`run_receiver`].

mod disk;
mod rx;
mod shard;
mod store;

use crate::backend::{Backend, BackendBuilder, BackendChoice, BackendKind, IoStats};
use crossbeam_channel::{Receiver, Sender, bounded};
use haul_proto::crypto::KeySchedule;
use haul_proto::crypto::SessionSecret;
use haul_proto::rate::RateSnapshot;
use haul_proto::session::{
    AbortReason, FileOp, Layout, ReceiverCoordinator, ReceiverShard, SenderCoordinator,
    SenderShard, ShardCommand, ShardEvent, shard_suites,
};
use haul_proto::session::{Manifest, Outcome, RejectCounts, Role, SessionParams};
use shard::{Clock, Counters, ShardEnd, Wiring};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use thiserror::Error;

/// The bound sockets of one side's shards, one per shard, in shard order.
#[derive(Debug)]
pub struct ShardSockets {
    pub(crate) backends: Vec<Backend>,
    pub(crate) choice: BackendChoice,
}

/// Key material agreed on the set-up channel.
#[derive(Debug)]
pub struct Keys {
    pub secret: SessionSecret,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// Which end of the set-up channel this process is.
    pub role: Role,
}

/// What the receiver does when a file's final name exists, and how much of an interrupted
/// transfer it trusts: the file layer's own types.
pub use crate::files::{Overwrite, ResumeLevel};

#[derive(Clone, Debug, Default)]
pub struct RecvOptions {
    pub overwrite: Overwrite,
    pub resume: ResumeLevel,
    /// Apply the owner and group the sender sent (only when permitted: root or CAP_CHOWN;
    /// otherwise skipped and counted).
    pub preserve_owner: bool,
    /// Apply the extended attributes (POSIX ACLs among them) the sender sent; those the
    /// filesystem or our privileges refuse are skipped and counted.
    pub preserve_xattrs: bool,
    /// Keep setuid/setgid bits (only honoured for root).
    pub keep_setid: bool,
    /// Empty, or per file (manifest order) the owner and xattrs the sender sent.
    pub file_attrs: Vec<haul_proto::setup::FileAttrs>,
}

/// The sending side of one transfer.
#[derive(Debug)]
pub struct SendJob {
    pub params: SessionParams,
    pub keys: Keys,
    pub manifest: Arc<Manifest>,
    /// The source path of every manifest file, in manifest order.
    pub sources: Vec<PathBuf>,
    pub sockets: ShardSockets,
    /// The receiver's shard addresses, in shard order. Empty: each shard sends nothing until
    /// an authenticated datagram from the receiver tells it where to (SSH-mode downloads).
    pub peers: Vec<SocketAddr>,
    /// Per file: bytes of its prefix the receiver already has (a multiple of the block size).
    pub resume: Vec<u64>,
    /// Pin shard threads to cores.
    pub pin_cores: bool,
}

/// The receiving side of one transfer.
#[derive(Debug)]
pub struct RecvJob {
    pub params: SessionParams,
    pub keys: Keys,
    pub manifest: Arc<Manifest>,
    /// The destination directory; every file is created beneath it.
    pub dest: PathBuf,
    pub options: RecvOptions,
    pub sockets: ShardSockets,
    /// From [`prepare_receive`]: per file, the prefix already on disk and kept.
    pub resume: Vec<u64>,
    pub pin_cores: bool,
}

/// A snapshot for progress displays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bps: u64,
    pub resent_bytes: u64,
    pub elapsed: std::time::Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the file as verified by the receiver.
    pub blake3: [u8; 32],
}

/// What one side saw of a transfer.
#[derive(Clone, Debug)]
pub struct TransferReport {
    pub outcome: Outcome,
    pub files: Vec<FileSummary>,
    /// File bytes moved in this session (not counting a resumed prefix).
    pub bytes: u64,
    pub elapsed: std::time::Duration,
    pub resent_bytes: u64,
    pub rejects: RejectCounts,
    pub io: IoStats,
    pub backend: BackendKind,
    /// User + system CPU seconds of this process during the transfer.
    pub cpu_seconds: f64,
    /// A human message with more about an abort (the file and the cause), when there is one.
    pub detail: Option<String>,
    /// Receiver: files whose owner or some extended attribute, asked for and allowed, could
    /// not be applied (no privilege, or the filesystem refused it).
    pub attrs_skipped: u64,
    /// Sender: the datagram size (UDP payload bytes) the shards ended at, the smallest of
    /// them; path-MTU probing moves it (docs/DATAPLANE.md "Path MTU"). Receiver: the largest
    /// probe each shard acknowledged (the offered size if none), the smallest of them: the
    /// size the sender's search reached, as this end saw it.
    pub datagram_size: Option<u16>,
    /// Path-MTU probing counters, all shards (a receiver counts only `probes_acked`).
    pub pmtu: haul_proto::pmtu::PmtuStats,
    /// Sender: when (wall clock) the coordinator heard of the first datagram sent, within a
    /// millisecond of it. With the receiver's [`last_verified_at`](Self::last_verified_at)
    /// it gives goodput as issue 4 defines it (first datagram sent to verified rename) where
    /// both ends share a clock (benches/wan: two namespaces of one host).
    pub first_data_at: Option<std::time::SystemTime>,
    /// Receiver: when (wall clock) the last file was verified and renamed into place.
    pub last_verified_at: Option<std::time::SystemTime>,
}

#[derive(Debug, Error)]
pub enum TransferError {
    #[error("network: {0}")]
    Io(#[from] crate::error::IoError),
    #[error("{0}")]
    Setup(String),
    #[error("session: {0}")]
    Session(#[from] haul_proto::session::SessionError),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("a shard thread failed: {0}")]
    Thread(String),
}

/// Capacity of each shard's command channel and of the shared event channel.
const CHANNEL_CAPACITY: usize = 4096;
/// How often the coordinator reports progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a side may keep going after its outcome is known before its shards are stopped
/// (the receiver's shard 0 lingers to say Complete).
const WIND_DOWN: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the coordinator looks whether its shards have ended, once the outcome is known
/// (until then it wakes for each event or every [`PROGRESS_EVERY`]). Measured: waiting a
/// whole progress interval there cost each end up to 100 ms after the last file was in place,
/// a tenth of a 10,000-small-file transfer (docs/FILES.md, "Where the small-files time goes").
const WIND_DOWN_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Bind one UDP socket per shard on `ip` (port 0: the kernel picks), with the chosen backend.
pub fn bind_shards(
    ip: IpAddr,
    shards: u8,
    force: Option<BackendKind>,
) -> Result<ShardSockets, TransferError> {
    if shards == 0 || shards > haul_proto::session::layout::MAX_SHARDS {
        return Err(TransferError::Setup(format!("shard count {shards} is outside 1..=64")));
    }
    let mut backends = Vec::with_capacity(usize::from(shards));
    let mut choice = None;
    for _ in 0..shards {
        let mut b = BackendBuilder::new(SocketAddr::new(ip, 0));
        if let Some(kind) = force {
            b = b.force(kind);
        }
        let (backend, c) = b.build()?;
        choice.get_or_insert(c);
        backends.push(backend);
    }
    let choice = choice.ok_or_else(|| TransferError::Setup("no shard sockets".into()))?;
    Ok(ShardSockets { backends, choice })
}

/// Bind one UDP socket per shard on `ip`, each on a free port of `ports` (one fixed port or a
/// range, for firewalled deployments). The scan starts after where the previous call in this
/// process stopped, so concurrent transfers spread over the range; each port is tried once.
pub fn bind_shards_in(
    ip: IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    shards: u8,
    force: Option<BackendKind>,
) -> Result<ShardSockets, TransferError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let (lo, hi) = (usize::from(*ports.start()), usize::from(*ports.end()));
    if shards == 0 || lo == 0 || hi < lo || hi - lo + 1 < usize::from(shards) {
        return Err(TransferError::Setup(format!(
            "{shards} shards cannot bind in ports {lo}-{hi} (give a range with a port per shard)"
        )));
    }
    let len = hi - lo + 1;
    let start = NEXT.fetch_add(usize::from(shards), Ordering::Relaxed) % len;
    let (mut backends, mut choice, mut last) = (Vec::new(), None, None);
    for i in 0..len {
        if backends.len() == usize::from(shards) {
            break;
        }
        // In range by construction: lo + (x % len) <= hi <= u16::MAX.
        let port = (lo + (start + i) % len) as u16;
        let mut b = BackendBuilder::new(SocketAddr::new(ip, port));
        if let Some(kind) = force {
            b = b.force(kind);
        }
        match b.build() {
            Ok((backend, c)) => {
                choice.get_or_insert(c);
                backends.push(backend);
            }
            Err(e) => last = Some(e),
        }
    }
    match choice {
        Some(choice) if backends.len() == usize::from(shards) => {
            Ok(ShardSockets { backends, choice })
        }
        _ => Err(TransferError::Setup(format!(
            "no {shards} free UDP ports in {lo}-{hi} on {ip}{}",
            last.map(|e| format!(" (last error: {e})")).unwrap_or_default()
        ))),
    }
}

impl ShardSockets {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.backends.iter().map(Backend::local_addr).collect()
    }
    pub fn choice(&self) -> &BackendChoice {
        &self.choice
    }
}

/// Check the destination and decide, per file, what an earlier interrupted transfer left that
/// can be kept (per the options' resume level and overwrite policy). Errors name the file.
pub use rx::{SKIP_FILE, drop_skipped};

pub fn prepare_receive(
    dest: &std::path::Path,
    manifest: &Manifest,
    options: &RecvOptions,
) -> Result<Vec<u64>, TransferError> {
    rx::prepare(dest, manifest, options)
}

fn check_counts(
    params: &SessionParams,
    sockets: &ShardSockets,
    n_files: usize,
    n_paths: usize,
) -> Result<(), TransferError> {
    params.check()?;
    if sockets.backends.len() != usize::from(params.shards) {
        return Err(TransferError::Setup(format!(
            "{} shard sockets for {} shards",
            sockets.backends.len(),
            params.shards
        )));
    }
    if n_paths != n_files {
        return Err(TransferError::Setup(format!("{n_paths} paths for {n_files} files")));
    }
    Ok(())
}

/// Everything the coordinator loop needs from the shard threads.
struct Threads {
    handles: Vec<std::thread::JoinHandle<ShardEnd>>,
    commands: Vec<Sender<ShardCommand>>,
    events: Receiver<(u8, ShardEvent)>,
    counters: Vec<Arc<Counters>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Option<Arc<shard::ShardWaker>>>,
}

impl Threads {
    fn command(&self, shard: u8, cmd: ShardCommand) {
        let ends = matches!(
            cmd,
            ShardCommand::SendComplete | ShardCommand::Close | ShardCommand::Abort { .. }
        );
        if let Some(tx) = self.commands.get(usize::from(shard)) {
            // A shard that already ended has nothing to do with it.
            let _ = tx.send(cmd);
        }
        // After the send, so the woken shard finds the command.
        if let (true, Some(Some(w))) = (ends, self.wakers.get(usize::from(shard))) {
            w.wake();
        }
    }

    fn progress(&self, total: u64, started: std::time::Instant) -> Progress {
        let load = |f: fn(&Counters) -> &std::sync::atomic::AtomicU64| {
            self.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum::<u64>()
        };
        let bytes_done = load(|c| &c.bytes);
        let elapsed = started.elapsed();
        let rate_bps = (bytes_done as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9)) as u64;
        Progress {
            bytes_done,
            bytes_total: total,
            rate_bps,
            resent_bytes: load(|c| &c.resent),
            elapsed,
        }
    }

    fn all_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    fn join(self) -> Result<Vec<ShardEnd>, TransferError> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .map(|h| h.join().map_err(|_| TransferError::Thread("a shard thread panicked".into())))
            .collect()
    }
}

/// Spawn one thread per shard, each with the open-file cache `files` makes; `make` builds each
/// shard's proto state and runs its loop.
fn spawn_shards<F>(
    sockets: ShardSockets,
    peers: &[Option<SocketAddr>],
    peer_ip: Option<IpAddr>,
    datagram_size: usize,
    files: &dyn Fn() -> store::OpenFiles,
    pin_cores: bool,
    make: F,
) -> Result<Threads, TransferError>
where
    F: Fn(Wiring) -> Box<dyn FnOnce() -> ShardEnd + Send>,
{
    let (ev_tx, ev_rx) = bounded(CHANNEL_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Clock::new();
    let cores = if pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { vec![] };
    let mut t = Threads {
        handles: vec![],
        commands: vec![],
        events: ev_rx,
        counters: vec![],
        stop,
        wakers: vec![],
    };
    for (i, backend) in sockets.backends.into_iter().enumerate() {
        let (cmd_tx, cmd_rx) = bounded(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters::default());
        let waker = shard::ShardWaker::new().map(Arc::new);
        let wiring = Wiring {
            index: i as u8,
            backend,
            peer: peers.get(i).copied().flatten(),
            peer_ip,
            datagram_size,
            commands: cmd_rx,
            events: ev_tx.clone(),
            clock,
            counters: counters.clone(),
            files: files(),
            stop: t.stop.clone(),
            waker: waker.clone(),
        };
        let run = make(wiring);
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("haul-shard-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                run()
            })
            .map_err(|e| TransferError::Thread(e.to_string()))?;
        t.handles.push(handle);
        t.commands.push(cmd_tx);
        t.counters.push(counters);
        t.wakers.push(waker);
    }
    Ok(t)
}

fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer we own; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage returned 0, so it initialized the struct.
    let ru = unsafe { ru.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn sum_ends(ends: &[ShardEnd]) -> (haul_proto::session::ShardStats, IoStats) {
    let mut st = haul_proto::session::ShardStats::default();
    let mut io = IoStats::default();
    for e in ends {
        st.datagrams_sent += e.stats.datagrams_sent;
        st.datagrams_received += e.stats.datagrams_received;
        st.data_bytes_sent += e.stats.data_bytes_sent;
        st.data_bytes_resent += e.stats.data_bytes_resent;
        st.data_bytes_received += e.stats.data_bytes_received;
        st.data_bytes_duplicate += e.stats.data_bytes_duplicate;
        st.rejects.merge(&e.stats.rejects);
        io.merge(&e.io);
    }
    (st, io)
}

fn key_schedule(params: &SessionParams, keys: &Keys) -> KeySchedule {
    KeySchedule::new(
        &keys.secret,
        &keys.client_random,
        &keys.server_random,
        params.suite,
        params.session_id,
    )
}

/// One side's coordinator, as the shared driver loop sees it.
trait Side {
    fn handle_event(&mut self, now: haul_proto::time::Instant, shard: u8, ev: ShardEvent);
    fn poll_command(&mut self) -> Option<(u8, ShardCommand)>;
    fn outcome(&self) -> Option<Outcome>;
    fn abort(&mut self, reason: AbortReason);
    /// After each round of events: the receiver finalizes files and writes checkpoints here.
    fn after_events(&mut self, _now: haul_proto::time::Instant) {}
    fn file_hash(&self, file: u32) -> Option<[u8; 32]>;
    /// The rate controller's state, on the sending side (for `HAUL_RATE_TRACE`).
    fn rate_snapshot(&self) -> Option<RateSnapshot> {
        None
    }
}

impl Side for SenderCoordinator {
    fn handle_event(&mut self, now: haul_proto::time::Instant, shard: u8, ev: ShardEvent) {
        SenderCoordinator::handle_event(self, now, shard, ev);
    }
    fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        SenderCoordinator::poll_command(self)
    }
    fn outcome(&self) -> Option<Outcome> {
        SenderCoordinator::outcome(self)
    }
    fn abort(&mut self, reason: AbortReason) {
        SenderCoordinator::abort(self, reason);
    }
    fn file_hash(&self, file: u32) -> Option<[u8; 32]> {
        SenderCoordinator::file_hash(self, file)
    }
    fn rate_snapshot(&self) -> Option<RateSnapshot> {
        Some(SenderCoordinator::rate_snapshot(self))
    }
}

/// The receiver's coordinator with the files it finalizes and checkpoints.
struct ReceiverSide {
    coord: ReceiverCoordinator,
    files: rx::RxFiles,
    manifest: Arc<Manifest>,
    options: RecvOptions,
    /// Files with new verified blocks since the last checkpoint look.
    touched: Vec<u32>,
    /// The first finalize failure, with its message, for the report.
    failure: Option<String>,
    /// Files whose owner or some extended attribute asked for could not be applied.
    attrs_skipped: u64,
    /// When the last file was renamed into place.
    last_verified_at: Option<std::time::SystemTime>,
}

impl ReceiverSide {
    /// Finalize every verified file in batches of at most [`rx::FINALIZE_BATCH_FILES`]: one
    /// filesystem sync before the batch's renames and one after (files::FinalizeBatch), then
    /// each file is acknowledged. Durability is per file as with a lone finalize.
    fn finalize_ready(&mut self, now: haul_proto::time::Instant) {
        let mut more = true;
        while more {
            let mut batch = crate::files::FinalizeBatch::new();
            let mut staged = Vec::new();
            more = false;
            while let Some(op) = self.coord.poll_file_op() {
                crate::files::pause::pause_if_armed(crate::files::pause::PausePhase::Verify);
                let FileOp::Finalize { file } = op;
                match self.files.stage_finalize(&self.manifest, file, &self.options, &mut batch) {
                    Ok(()) => staged.push(op),
                    Err(failure) => self.finish_op(now, op, Err(failure)),
                }
                if staged.len() >= rx::FINALIZE_BATCH_FILES {
                    more = true;
                    break;
                }
            }
            if staged.is_empty() {
                return;
            }
            for (op, res) in staged.into_iter().zip(rx::commit_finalize(batch)) {
                self.attrs_skipped += u64::from(res == Ok(true));
                self.finish_op(now, op, res.map(|_| ()));
            }
        }
    }

    fn finish_op(
        &mut self,
        now: haul_proto::time::Instant,
        op: FileOp,
        res: Result<(), (haul_proto::session::DiskError, String)>,
    ) {
        if res.is_ok() {
            self.last_verified_at = Some(std::time::SystemTime::now());
        }
        let res = res.map_err(|(disk, message)| {
            self.failure.get_or_insert(message);
            disk
        });
        self.coord.handle_file_op_done(now, op, res);
    }
}

impl Side for ReceiverSide {
    fn handle_event(&mut self, now: haul_proto::time::Instant, shard: u8, ev: ShardEvent) {
        if let ShardEvent::BlockHashed { file, .. } = &ev
            && self.touched.last() != Some(file)
        {
            self.touched.push(*file);
        }
        self.files.take_handed();
        self.coord.handle_event(now, shard, ev);
    }
    fn poll_command(&mut self) -> Option<(u8, ShardCommand)> {
        self.coord.poll_command()
    }
    fn outcome(&self) -> Option<Outcome> {
        self.coord.outcome()
    }
    fn abort(&mut self, reason: AbortReason) {
        self.coord.abort(reason);
    }
    fn after_events(&mut self, now: haul_proto::time::Instant) {
        self.touched.sort_unstable();
        self.touched.dedup();
        for file in std::mem::take(&mut self.touched) {
            let prefix = self.coord.file_progress(file, &self.manifest);
            self.files.record_progress(&self.manifest, file, prefix);
        }
        self.finalize_ready(now);
    }
    fn file_hash(&self, file: u32) -> Option<[u8; 32]> {
        self.coord.file_hash(file)
    }
}

/// Drive one side's coordinator until its outcome is known and its shards have ended; also
/// says when the first `Sent` event came (the sender's first datagram).
fn drive(
    side: &mut dyn Side,
    threads: Threads,
    total: u64,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &CancelHandle,
) -> Result<(Vec<ShardEnd>, Option<std::time::SystemTime>), TransferError> {
    let started = std::time::Instant::now();
    let clock = Clock::new();
    let mut last_progress = started;
    let mut ended_at = None;
    let mut first_sent = None;
    let mut trace = RateTrace::from_env(started);
    loop {
        // Once the outcome is known the shards end without a word (no event): look for their
        // end often, or the process sits out a whole progress interval after its transfer.
        let wait = if ended_at.is_some() { WIND_DOWN_POLL } else { PROGRESS_EVERY };
        if let Ok((s, ev)) = threads.events.recv_timeout(wait) {
            if first_sent.is_none() && matches!(ev, ShardEvent::Sent { .. }) {
                first_sent = Some(std::time::SystemTime::now());
            }
            side.handle_event(clock.now(), s, ev);
            while let Ok((s, ev)) = threads.events.try_recv() {
                if first_sent.is_none() && matches!(ev, ShardEvent::Sent { .. }) {
                    first_sent = Some(std::time::SystemTime::now());
                }
                side.handle_event(clock.now(), s, ev);
            }
        }
        side.after_events(clock.now());
        while let Some((s, cmd)) = side.poll_command() {
            threads.command(s, cmd);
        }
        if let (Some(t), Some(snap)) = (trace.as_mut(), side.rate_snapshot()) {
            t.poll(&snap);
        }
        if let (Some(p), true) = (progress, last_progress.elapsed() >= PROGRESS_EVERY) {
            p(&threads.progress(total, started));
            last_progress = std::time::Instant::now();
        }
        if cancel.is_cancelled() && side.outcome().is_none() {
            side.abort(AbortReason::Cancelled);
        }
        if side.outcome().is_some() {
            let t = *ended_at.get_or_insert_with(std::time::Instant::now);
            if threads.all_finished() || t.elapsed() > WIND_DOWN {
                break;
            }
        } else if threads.all_finished() {
            side.abort(AbortReason::Cancelled);
        }
    }
    Ok((threads.join()?, first_sent))
}

/// How often `HAUL_RATE_TRACE` prints a line.
const TRACE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// `HAUL_RATE_TRACE=1`: every [`TRACE_EVERY`] the sender prints one `rate-trace` line to stderr
/// with the controller's rate, the rate the shards actually sent at over the interval, the
/// carried (delivered, loss-adjusted) rate, the measured and predicted queue, the loss estimate,
/// the bottleneck rate startup estimated (`α` is taken at no more than 4× it) and the mode (docs/RATE.md, "Tracing the real data plane").
struct RateTrace {
    started: std::time::Instant,
    last: std::time::Instant,
    last_sent_bits: u64,
}

impl RateTrace {
    fn from_env(started: std::time::Instant) -> Option<RateTrace> {
        std::env::var_os("HAUL_RATE_TRACE")
            .filter(|v| !v.is_empty() && v != "0")
            .map(|_| RateTrace { started, last: started, last_sent_bits: 0 })
    }

    fn poll(&mut self, s: &RateSnapshot) {
        let dt = self.last.elapsed();
        if dt < TRACE_EVERY {
            return;
        }
        let sent = s.sent_bits.saturating_sub(self.last_sent_bits);
        self.last_sent_bits = s.sent_bits;
        self.last = std::time::Instant::now();
        let mbit = |bps: f64| bps / 1e6;
        eprintln!(
            "rate-trace t_ms={} rate_mbit={:.1} sent_mbit={:.1} carried_mbit={:.1} q_ms={:.2} \
             qpred_ms={:.2} loss={:.4} base_rtt_ms={:.1} link_mbit={:.1} mode={}",
            self.started.elapsed().as_millis(),
            mbit(s.rate_bps as f64),
            mbit(sent as f64 / dt.as_secs_f64()),
            mbit(s.carried_bps as f64),
            s.queue_us as f64 / 1e3,
            s.predicted_queue_us as f64 / 1e3,
            s.loss,
            s.base_rtt_us as f64 / 1e3,
            mbit(s.link_estimate_bps as f64),
            s.mode
        );
    }
}

fn report(
    side: &dyn Side,
    manifest: &Manifest,
    ends: &[ShardEnd],
    backend: BackendKind,
    started: std::time::Instant,
    cpu0: f64,
    sending: bool,
) -> TransferReport {
    let (st, io) = sum_ends(ends);
    let files = (0..manifest.file_count())
        .map(|f| FileSummary {
            name: manifest.file(f).map(|e| e.name.clone()).unwrap_or_default(),
            size: manifest.file(f).map_or(0, |e| e.size),
            blake3: side.file_hash(f).unwrap_or([0; 32]),
        })
        .collect();
    let outcome = side.outcome().unwrap_or(Outcome::Aborted {
        reason: AbortReason::Cancelled,
        by_peer: false,
        disk: None,
        file: None,
    });
    TransferReport {
        outcome,
        files,
        bytes: if sending { st.data_bytes_sent } else { st.data_bytes_received },
        elapsed: started.elapsed(),
        resent_bytes: if sending { st.data_bytes_resent } else { st.data_bytes_duplicate },
        rejects: st.rejects,
        io,
        backend,
        cpu_seconds: cpu_seconds() - cpu0,
        detail: None,
        attrs_skipped: 0,
        datagram_size: ends.iter().filter_map(|e| e.pmtu.map(|p| p.0)).min(),
        pmtu: pmtu_sum(ends),
        first_data_at: None,
        last_verified_at: None,
    }
}

fn pmtu_sum(ends: &[ShardEnd]) -> haul_proto::pmtu::PmtuStats {
    let mut sum = haul_proto::pmtu::PmtuStats::default();
    for (_, p) in ends.iter().filter_map(|e| e.pmtu) {
        sum.probes_sent += p.probes_sent;
        sum.probes_acked += p.probes_acked;
        sum.probes_lost += p.probes_lost;
        sum.black_holes += p.black_holes;
        sum.too_large += p.too_large;
    }
    sum
}

fn check_resume(resume: &[u64], n_files: usize) -> Result<(), TransferError> {
    if resume.len() != n_files || resume.contains(&SKIP_FILE) {
        return Err(TransferError::Setup(
            "resume vector must have one entry per file and no skipped file (drop_skipped)".into(),
        ));
    }
    Ok(())
}

/// Run the sending side to its end.
pub fn run_sender(
    job: SendJob,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    run_sender_from(job, None, progress)
}

/// Run the sending side, its shards learning their peer only from datagrams whose source is
/// `peer_ip` (SSH-mode downloads: the SSH client's address; with `job.peers` empty).
pub fn run_sender_from(
    job: SendJob,
    peer_ip: Option<IpAddr>,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    run_sender_cancellable(job, peer_ip, progress, &CancelHandle::default())
}

/// A way to stop a running side from outside, e.g. when the set-up channel of its transfer
/// closes (the gate: a killed client). The side aborts with `Cancelled` within one progress
/// interval, its shards end and their sockets are closed; the call returns the report.
#[derive(Clone, Debug, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// [`run_sender_from`] that `cancel` can stop.
pub fn run_sender_cancellable(
    job: SendJob,
    peer_ip: Option<IpAddr>,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &CancelHandle,
) -> Result<TransferReport, TransferError> {
    let SendJob { params, keys, manifest, sources, sockets, peers, resume, pin_cores } = job;
    check_counts(&params, &sockets, manifest.files().len(), sources.len())?;
    check_resume(&resume, manifest.files().len())?;
    let layout = Layout::new(manifest.clone(), params.shards)
        .map_err(haul_proto::session::SessionError::from)?;
    let ks = key_schedule(&params, &keys);
    let (started, cpu0, backend) = (std::time::Instant::now(), cpu_seconds(), sockets.choice.kind);
    let now = Clock::new().now();
    let mut coord = SenderCoordinator::new(&params, layout.clone(), now)?;
    let mut shards = Vec::new();
    for s in 0..params.shards {
        let (tx, rx) = shard_suites(&ks, keys.role, s);
        let mut shard = SenderShard::new(&params, layout.clone(), s, tx, rx, now)?;
        shard.with_resume(&resume);
        shards.push(Some(shard));
    }
    let shards = std::sync::Mutex::new(shards);
    let peers: Vec<Option<SocketAddr>> = peers.into_iter().map(Some).collect();
    let sources = Arc::new(sources);
    let source = store::FileSource::Paths(sources.clone());
    // Send slots hold the largest datagram probing may try.
    let slot_bytes = params.datagram_size.max(params.datagram_size_max);
    let threads = spawn_shards(
        sockets,
        &peers,
        peer_ip,
        usize::from(slot_bytes),
        &|| store::OpenFiles::new(source.clone()),
        pin_cores,
        |w| {
            let shard = shards.lock().ok().and_then(|mut v| v[usize::from(w.index)].take());
            Box::new(move || {
                shard.map_or_else(ShardEnd::default, |s| shard::run_sender_shard(w, s))
            })
        },
    )?;
    let total = manifest.total_bytes().saturating_sub(resume.iter().sum());
    let (ends, first_data_at) = drive(&mut coord, threads, total, progress, cancel)?;
    let mut r = report(&coord, &manifest, &ends, backend, started, cpu0, true);
    r.first_data_at = first_data_at;
    if let Outcome::Aborted {
        reason: AbortReason::DiskReadFailed,
        by_peer: false,
        disk: Some(haul_proto::session::DiskError::Missing),
        file: Some(f),
    } = r.outcome
    {
        r.detail = source_changed_message(&sources, &manifest, f);
    }
    Ok(r)
}

/// What became of source `file` that could not be read to its end: it shrank below its
/// size when the transfer started (a read found its end early), or it is gone.
fn source_changed_message(sources: &[PathBuf], manifest: &Manifest, file: u32) -> Option<String> {
    let path = sources.get(file as usize)?;
    let size = manifest.file(file)?.size;
    Some(match std::fs::metadata(path) {
        Ok(m) if m.len() < size => format!(
            "source {} shrank during the transfer: {} bytes, was {size}",
            path.display(),
            m.len()
        ),
        Ok(_) => format!("source {} changed during the transfer", path.display()),
        Err(e) => format!("source {} vanished during the transfer: {e}", path.display()),
    })
}

/// Run the receiving side to its end. Its shards answer only once the sender's first
/// authenticated datagram told them where it is.
pub fn run_receiver(
    job: RecvJob,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    run_receiver_to(job, &[], None, progress)
}

/// Run the receiving side, its shards speaking first to `peers` (the sender's shard
/// addresses, in shard order): SSH-mode downloads, where the client receives and the gate's
/// sender waits for an authenticated datagram before it sends anything (no reflection). With
/// `peer_ip`, a shard without a peer learns one only from datagrams from that address.
pub fn run_receiver_to(
    job: RecvJob,
    peers: &[SocketAddr],
    peer_ip: Option<IpAddr>,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    run_receiver_cancellable(job, peers, peer_ip, progress, &CancelHandle::default())
}

/// [`run_receiver_to`] that `cancel` can stop.
pub fn run_receiver_cancellable(
    job: RecvJob,
    peers: &[SocketAddr],
    peer_ip: Option<IpAddr>,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &CancelHandle,
) -> Result<TransferReport, TransferError> {
    let peers: Vec<Option<SocketAddr>> = peers.iter().copied().map(Some).collect();
    let RecvJob { params, keys, manifest, dest, options, sockets, resume, pin_cores } = job;
    check_counts(&params, &sockets, manifest.files().len(), manifest.files().len())?;
    check_resume(&resume, manifest.files().len())?;
    let layout = Layout::new(manifest.clone(), params.shards)
        .map_err(haul_proto::session::SessionError::from)?;
    let mut files = rx::create_partials(&dest, &manifest, &options, &resume)?;
    let (handoff, handed) = bounded(store::HANDOFF_FILES);
    files.take_handoffs(handed);
    let ks = key_schedule(&params, &keys);
    let (started, cpu0, backend) = (std::time::Instant::now(), cpu_seconds(), sockets.choice.kind);
    let now = Clock::new().now();
    let coord = ReceiverCoordinator::new(&params, layout.clone(), now)?;
    let mut shards = Vec::new();
    for s in 0..params.shards {
        let (tx, rx) = shard_suites(&ks, keys.role, s);
        let mut shard = ReceiverShard::new(&params, layout.clone(), s, tx, rx, now)?;
        shard.with_resume(&resume);
        shards.push(Some(shard));
    }
    let shards = std::sync::Mutex::new(shards);
    let sizes = Arc::new(manifest.files().iter().map(|f| f.size).collect());
    let (dest, partials, deferred) =
        (files.dest.clone(), files.partials.clone(), files.deferred.clone());
    let source = store::FileSource::Beneath(dest, partials, sizes, deferred);
    let threads = spawn_shards(
        sockets,
        &peers,
        peer_ip,
        usize::from(params.datagram_size),
        &|| store::OpenFiles::new(source.clone()).with_handoff(Some(handoff.clone())),
        pin_cores,
        |w| {
            let shard = shards.lock().ok().and_then(|mut v| v[usize::from(w.index)].take());
            Box::new(move || {
                shard.map_or_else(ShardEnd::default, |s| shard::run_receiver_shard(w, s))
            })
        },
    )?;
    let total = manifest.total_bytes().saturating_sub(resume.iter().sum());
    let mut side = ReceiverSide {
        coord,
        files,
        manifest: manifest.clone(),
        options,
        touched: Vec::new(),
        failure: None,
        attrs_skipped: 0,
        last_verified_at: None,
    };
    let (ends, _) = drive(&mut side, threads, total, progress, cancel)?;
    let mut r = report(&side, &manifest, &ends, backend, started, cpu0, false);
    r.last_verified_at = side.last_verified_at;
    if let (Outcome::Aborted { .. }, Some(msg)) = (r.outcome, side.failure.take()) {
        r.detail = Some(msg);
    }
    // A write that found the disk full: say how much the file still needs.
    if let Outcome::Aborted {
        disk: Some(haul_proto::session::DiskError::NoSpace),
        file: Some(f),
        ..
    } = r.outcome
        && r.detail.is_none()
    {
        r.detail = side.files.disk_full_message(&manifest, f);
    }
    r.attrs_skipped = side.attrs_skipped;
    Ok(r)
}
