//! Shard threads: one per shard, each driving one proto shard over its own socket and files.
//!
//! Loop, per iteration: take commands from the coordinator; receive what the socket has
//! (waiting at most until the shard's next deadline, or a disk completion); hand finished
//! disk operations back; let timers fire; start disk reads; send what the shard has to send,
//! in sealed batches; pass events up. Disk reads and writes go through the shard's own ring
//! when it has one (`transfer::disk`). Nothing here allocates per datagram: the batch arrays,
//! the send area and the write staging buffers are allocated once.

use super::disk::{DiskIo, Stager, issue_reads, lend_read_memory};
use super::store::OpenFiles;
use crate::backend::{Backend, IoStats};
use crate::buf::Backing;
use crossbeam_channel::{Receiver, Sender};
use haul_proto::crypto::MAX_BATCH;
use haul_proto::session::{
    ReceiverShard, RxDatagram, RxOutcome, SenderShard, ShardCommand, ShardEvent, ShardStats,
};
use haul_proto::time::Instant as ProtoInstant;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a shard waits for the socket before looking at its timers and commands again.
/// A command that ends a shard's part (Complete, Close, Abort) wakes it at once through its
/// [`ShardWaker`]; any other command waits for the shard's next look, at most this long.
/// An idle shard wakes 200 times a second for it.
const MAX_WAIT: Duration = Duration::from_millis(5);

/// An eventfd that ends a shard's wait at once: the coordinator writes it after a command
/// that ends the shard's part, so the end of a transfer (the receiver's Complete and Close,
/// then the sender's, one after the other) no longer waits up to [`MAX_WAIT`] for each
/// (docs/FILES.md). Other commands do not write it: they are frequent (rates, file acks) and
/// a shard that is busy sees them within one loop anyway.
#[derive(Debug)]
pub(crate) struct ShardWaker(std::os::fd::OwnedFd);

impl ShardWaker {
    /// A nonblocking eventfd; `None` when the kernel refuses one (the shard then sees its
    /// commands within [`MAX_WAIT`], as before).
    pub fn new() -> Option<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created above and is owned by nothing else.
        Some(ShardWaker(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    /// Ends the shard's current or next wait. EAGAIN (the counter full) means a wake-up is
    /// pending already.
    pub fn wake(&self) {
        let one = 1u64;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.0);
        // SAFETY: writes exactly the 8 bytes of a local u64, the size an eventfd takes.
        let _ = unsafe { libc::write(fd, (&raw const one).cast(), std::mem::size_of::<u64>()) };
    }

    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}

/// Lets `w`'s waker end the shard's waits; without one (or if the ring refuses its poll) the
/// shard sees commands within [`MAX_WAIT`].
fn watch_waker(w: &mut Wiring) {
    if let Some(waker) = &w.waker {
        let _ = w.backend.watch_waker(waker.raw_fd());
    }
}

/// What a shard thread reports when it ends.
#[derive(Debug, Default, Clone)]
pub(crate) struct ShardEnd {
    pub stats: ShardStats,
    pub io: IoStats,
    /// Sender: the datagram size the shard ended at and its path-MTU probing counters.
    /// Receiver: the largest probe it acknowledged (the data size if none) and the count.
    pub pmtu: Option<(u16, haul_proto::pmtu::PmtuStats)>,
}

/// The monotonic clock shared by one side's threads, as proto instants.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }
    pub fn now(&self) -> ProtoInstant {
        // Start at one second so "zero" never means "now".
        let ns = self.0.elapsed().as_nanos().min(u128::from(u64::MAX / 2)) as u64;
        ProtoInstant::from_nanos(ns + 1_000_000_000)
    }
    /// How long from now until `t` (zero if past), capped at `MAX_WAIT`.
    pub fn wait_until(&self, t: Option<ProtoInstant>) -> Duration {
        let now = self.now();
        match t {
            Some(t) => Duration::from_nanos(t.saturating_since(now).as_nanos()).min(MAX_WAIT),
            None => MAX_WAIT,
        }
    }
}

/// Shared counters one shard publishes for progress displays.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub resent: AtomicU64,
}

/// The things every shard thread has.
pub(crate) struct Wiring {
    pub index: u8,
    pub backend: Backend,
    pub peer: Option<SocketAddr>,
    /// When set, a peer is learnt only from a datagram from this address (SSH mode: the
    /// address the SSH connection came from), so a token holder cannot aim the data at a
    /// third party.
    pub peer_ip: Option<std::net::IpAddr>,
    pub datagram_size: usize,
    pub commands: Receiver<ShardCommand>,
    pub events: Sender<(u8, ShardEvent)>,
    pub clock: Clock,
    pub counters: Arc<Counters>,
    pub files: OpenFiles,
    /// Set by the coordinator when the side is over, so a shard never waits forever.
    pub stop: Arc<AtomicBool>,
    /// Written by the coordinator after a command that ends the shard's part. Declared after
    /// `backend`, so the backend (whose ring may poll it) drops first.
    pub waker: Option<Arc<ShardWaker>>,
}

/// The send area: `MAX_BATCH` datagram slots at a stride that is not a multiple of 4 KiB.
struct SendArea {
    buf: Vec<u8>,
    stride: usize,
    lens: [usize; MAX_BATCH],
}

impl SendArea {
    fn new(datagram_size: usize) -> Self {
        let stride = crate::buf::stride_for(datagram_size);
        SendArea { buf: vec![0; stride * MAX_BATCH], stride, lens: [0; MAX_BATCH] }
    }

    fn send(
        &self,
        backend: &mut Backend,
        peer: SocketAddr,
        n: usize,
        seg: usize,
    ) -> Result<(), crate::error::IoError> {
        let mut slices: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        for (i, s) in slices.iter_mut().enumerate().take(n) {
            *s = &self.buf[i * self.stride..i * self.stride + self.lens[i]];
        }
        backend.send_batch(peer, &slices[..n], seg).map(|_| ())
    }

    /// The longest of the first `n` datagrams: the GSO segment size of a sender batch (the
    /// data size, or a probe's, which goes in a batch of its own).
    fn longest(&self, n: usize) -> usize {
        self.lens[..n].iter().copied().max().unwrap_or(0)
    }
}

/// The backend's counters plus the shard's disk syscalls and ring disk operations.
fn io_stats(w: &Wiring) -> IoStats {
    let disk_ring_ops = match &w.backend {
        crate::backend::Backend::Uring(b) => b.disk_ops_submitted(),
        crate::backend::Backend::Portable(_) => 0,
    };
    let net_buffers_backing = Some(w.backend.recv_pool_backing());
    IoStats {
        disk_syscalls: w.files.syscalls(),
        disk_ring_ops,
        net_buffers_backing,
        ..w.backend.stats()
    }
}

/// Hand the shard's queued events to the coordinator. Called after every batch of received
/// datagrams as well as once per loop: one wake can bring more datagrams than the shard's
/// bounded event queue holds (a burst of small files' FileDone/FileAck or block hashes once
/// overflowed it and aborted the session with `ResourceLimit`).
fn forward_events(
    events: &Sender<(u8, ShardEvent)>,
    index: u8,
    mut next: impl FnMut() -> Option<ShardEvent>,
) {
    while let Some(ev) = next() {
        // The coordinator outlives the shards; a closed channel means the side is over.
        let _ = events.send((index, ev));
    }
}

/// A receiving shard's events: a block hashed may be a small file written whole, whose
/// descriptor goes to the coordinator before the event does (`OpenFiles::hand_over`).
fn forward_rx_events(
    events: &Sender<(u8, ShardEvent)>,
    index: u8,
    files: &mut OpenFiles,
    shard: &mut ReceiverShard,
) {
    forward_events(events, index, || {
        let ev = shard.poll_event();
        if let Some(ShardEvent::BlockHashed { file, .. }) = &ev {
            files.hand_over(*file);
        }
        ev
    });
}

/// Adopt the peer address from the first authenticated datagram (no reflection: we send only
/// to where an authenticated datagram came from, docs/PROTOCOL.md §6.2).
fn learn_peer(
    peer: &mut Option<SocketAddr>,
    peer_ip: Option<std::net::IpAddr>,
    from: SocketAddr,
    outcome: &RxOutcome,
) {
    if peer_ip.is_some_and(|ip| ip != from.ip()) {
        return;
    }
    let authenticated = match outcome {
        RxOutcome::Consumed | RxOutcome::Write { .. } => true,
        RxOutcome::Rejected(r) => matches!(
            r,
            haul_proto::session::Reject::Duplicate
                | haul_proto::session::Reject::Busy
                | haul_proto::session::Reject::BadBody
        ),
        RxOutcome::Pending => false,
    };
    if authenticated && peer.is_none() {
        *peer = Some(from);
    }
}

/// Path-MTU probing never probes above the route's MTU to `peer` (the local interface's).
fn set_path_ceiling(shard: &mut SenderShard, w: &Wiring, peer: SocketAddr) {
    if shard.pmtu().state() == haul_proto::pmtu::PmtuState::Disabled {
        return;
    }
    if let Some(mtu) = crate::udp::route_mtu(peer) {
        let max = crate::udp::udp_payload_for_mtu(peer, mtu);
        shard.set_path_ceiling(w.clock.now(), u16::try_from(max).unwrap_or(u16::MAX));
    }
}

pub(crate) fn run_sender_shard(mut w: Wiring, mut shard: SenderShard) -> ShardEnd {
    let mut area = SendArea::new(w.datagram_size);
    let disk = DiskIo::new(&w.backend);
    let read_backing = lend_read_memory(&mut shard);
    w.files.want_direct(disk.is_direct_wanted());
    watch_waker(&mut w);
    let mut ceiling_known = false;
    let mut last_resent = 0;
    let mut failed = false;
    while !shard.is_closed() && !w.stop.load(Ordering::Relaxed) {
        let now = w.clock.now();
        while let Ok(cmd) = w.commands.try_recv() {
            shard.handle_command(now, cmd);
        }
        let wait = w.clock.wait_until(shard.poll_timeout());
        let mut peer = w.peer;
        let res = w.backend.recv_segments(wait, |from, payload, seg| {
            for chunk in payload.chunks_mut(seg.max(1) * MAX_BATCH) {
                let mut batch: arrayvec::ArrayVec<RxDatagram<'_>, MAX_BATCH> =
                    chunk.chunks_mut(seg.max(1)).map(RxDatagram::new).collect();
                shard.handle_datagrams(w.clock.now(), &mut batch);
                for d in &batch {
                    learn_peer(&mut peer, w.peer_ip, from, &d.outcome);
                }
                forward_events(&w.events, w.index, || shard.poll_event());
            }
        });
        w.peer = peer;
        if res.is_err() {
            failed = true;
        }
        let now = w.clock.now();
        disk.take_done(&mut w.backend, &mut w.files, &mut shard, None, now);
        shard.handle_timeout(now);
        issue_reads(&mut w.backend, disk.mode, &mut w.files, &mut shard, now);
        // No peer yet (it is learnt from the first authenticated datagram): send nothing, so
        // no data is spent into the void and none goes anywhere but to the proven peer.
        while let Some(peer) = w.peer {
            if !ceiling_known {
                ceiling_known = true;
                set_path_ceiling(&mut shard, &w, peer);
            }
            let (buf, lens) = (&mut area.buf, &mut area.lens);
            let n = shard.poll_transmit(w.clock.now(), buf, area.stride, lens);
            if n == 0 {
                break;
            }
            let seg = area.longest(n);
            match area.send(&mut w.backend, peer, n, seg) {
                Ok(()) => {}
                // The kernel refused a datagram as larger than the interface takes: a probe
                // (or data after the route's MTU shrank). Probing lowers its ceiling at once,
                // to the route's MTU as it reads now.
                Err(crate::error::IoError::TooLarge { .. }) => {
                    shard.handle_too_large(w.clock.now(), seg);
                    set_path_ceiling(&mut shard, &w, peer);
                }
                Err(_) => failed = true,
            }
            // A short batch means the pacer (or the data) ran dry: wait for the next whole
            // pacing batch instead of sending the few tokens that trickle in during this send,
            // which made batches of ~7 datagrams, 150 syscalls per 1,000 datagrams and small
            // GRO buffers at the receiver.
            if n < MAX_BATCH {
                break;
            }
        }
        forward_events(&w.events, w.index, || shard.poll_event());
        let st = shard.stats();
        w.counters.bytes.store(st.data_bytes_sent, Ordering::Relaxed);
        if st.data_bytes_resent != last_resent {
            last_resent = st.data_bytes_resent;
            w.counters.resent.store(last_resent, Ordering::Relaxed);
        }
        if failed {
            // A socket error is the network's fault; the protocol recovers from loss, so keep
            // going, but do not spin.
            failed = false;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // No kernel operation may refer to the shard's read buffers once it is dropped.
    disk.drain(&mut w.backend, &mut w.files, &mut shard, None, w.clock.now());
    let pmtu = Some((shard.pmtu().datagram_size(), *shard.pmtu().stats()));
    let base = io_stats(&w);
    let direct = w.files.direct_stats();
    let io = IoStats {
        disk_direct_ops: direct.reads_direct,
        disk_buffered_reads: direct.reads_buffered,
        disk_direct_fallbacks: direct.direct_fallbacks,
        disk_direct_refused_files: direct.files_refused,
        disk_direct_cached_files: direct.files_cached,
        disk_buffers_backing: Some(read_backing),
        ..base
    };
    ShardEnd { stats: *shard.stats(), io, pmtu }
}

pub(crate) fn run_receiver_shard(mut w: Wiring, mut shard: ReceiverShard) -> ShardEnd {
    let mut area = SendArea::new(w.datagram_size);
    let disk = DiskIo::new(&w.backend);
    let mut staging = Stager::new(disk.mode);
    let read_backing = lend_read_memory(&mut shard);
    w.files.want_direct(disk.is_direct_wanted());
    watch_waker(&mut w);
    while !shard.is_closed() && !w.stop.load(Ordering::Relaxed) {
        let now = w.clock.now();
        while let Ok(cmd) = w.commands.try_recv() {
            shard.handle_command(now, cmd);
        }
        disk.make_room(&mut w.backend, &mut w.files, &mut shard, &mut staging, now);
        let wait = w.clock.wait_until(shard.poll_timeout());
        let mut peer = w.peer;
        let (files, clock) = (&mut w.files, w.clock);
        let (events, index) = (&w.events, w.index);
        let _ = w.backend.recv_segments(wait, |from, payload, seg| {
            for chunk in payload.chunks_mut(seg.max(1) * MAX_BATCH) {
                let now = clock.now();
                let mut batch: arrayvec::ArrayVec<RxDatagram<'_>, MAX_BATCH> =
                    chunk.chunks_mut(seg.max(1)).map(RxDatagram::new).collect();
                shard.handle_datagrams(now, &mut batch);
                for d in &batch {
                    learn_peer(&mut peer, w.peer_ip, from, &d.outcome);
                    if let RxOutcome::Write { file, offset, payload } = &d.outcome {
                        let data = &d.buf[payload.clone()];
                        staging.add(files, &mut shard, now, (*file, *offset, data));
                    }
                }
                forward_rx_events(events, index, files, &mut shard);
            }
        });
        w.peer = peer;
        let now = w.clock.now();
        staging.submit(&mut w.backend, &mut w.files, &mut shard, now);
        disk.take_done(&mut w.backend, &mut w.files, &mut shard, Some(&mut staging), now);
        staging.report_in_order(&mut shard, now);
        shard.handle_timeout(now);
        issue_reads(&mut w.backend, disk.mode, &mut w.files, &mut shard, now);
        loop {
            let n = shard.poll_transmit(w.clock.now(), &mut area.buf, area.stride, &mut area.lens);
            if n == 0 {
                break;
            }
            // Until the peer has authenticated itself we know no address to answer.
            if let Some(peer) = w.peer {
                let _ = area.send(&mut w.backend, peer, n, w.datagram_size);
            }
        }
        forward_rx_events(&w.events, w.index, &mut w.files, &mut shard);
        let st = shard.stats();
        w.counters.bytes.store(st.data_bytes_received, Ordering::Relaxed);
    }
    // No kernel operation may refer to the shard's or the stager's buffers once dropped.
    let now = w.clock.now();
    staging.submit(&mut w.backend, &mut w.files, &mut shard, now);
    disk.drain(&mut w.backend, &mut w.files, &mut shard, Some(&mut staging), now);
    let direct = w.files.direct_stats();
    let io = IoStats {
        disk_direct_ops: staging.direct_ops(),
        disk_direct_refused_files: direct.files_refused,
        disk_buffers_backing: Backing::weaker(Some(staging.backing()), Some(read_backing)),
        ..io_stats(&w)
    };
    ShardEnd { stats: *shard.stats(), io, pmtu: Some(shard.pmtu_seen()) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::backend::{BackendBuilder, BackendKind};

    /// Far longer than any wait a waker should leave: a wait that only its timeout ends makes
    /// the test fail (`DEADLINE`), it does not measure anything.
    const LONG_WAIT: Duration = Duration::from_secs(120);
    const DEADLINE: Duration = Duration::from_secs(60);

    /// A wait that only the waker can end (nothing is sent to the socket) returns once it
    /// wakes, twice in a row: the ring's poll is queued again and the eventfd read back.
    #[test]
    fn a_waker_ends_a_shards_wait_on_either_backend() {
        for kind in [BackendKind::Portable, BackendKind::Uring] {
            let addr = "127.0.0.1:0".parse().unwrap();
            let Ok((mut backend, _)) = BackendBuilder::new(addr).force(kind).build() else {
                println!("note: {kind:?} is unavailable here; skipped");
                continue;
            };
            let waker = Arc::new(ShardWaker::new().expect("eventfd"));
            backend.watch_waker(waker.raw_fd()).unwrap();
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            let keep = waker.clone();
            let thread = std::thread::spawn(move || {
                // The waker's descriptor stays open while the backend uses it.
                let _keep = keep;
                for round in 0..2 {
                    ready_tx.send(round).unwrap();
                    let n = backend.recv_segments(LONG_WAIT, |_, _, _| {}).unwrap();
                    done_tx.send(n).unwrap();
                }
            });
            for round in 0..2 {
                assert_eq!(ready_rx.recv_timeout(DEADLINE).unwrap(), round);
                waker.wake();
                let n = done_rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                    panic!("{kind:?}: round {round}: the wake did not end the wait")
                });
                assert_eq!(n, 0, "{kind:?}: nothing was sent to the socket");
            }
            thread.join().unwrap();
        }
    }
}
