//! The forwarder: one thread per direction moving packets from one TUN to the other.
//!
//! Role: read packets from the source TUN, ask the [`Link`] model for each one's fate, hold
//! delivered ones in a time-ordered FIFO, and write every packet whose release time has come
//! to the far TUN, in batches. Work happens in passes (read what arrived, release what is
//! due). Between passes it sleeps in `ppoll` with a nanosecond timeout up to the next release,
//! woken early by an arrival when the link is idle; while traffic flows, passes are at least
//! [`RELEASE_QUANTUM_NS`] apart, so a busy link costs one wake-up per quantum rather than one
//! per packet. It spins (without reading) for the last [`SPIN_NS`] before a deadline. It asks
//! for SCHED_FIFO so that its wake-ups are not queued behind the benchmark's own processes;
//! when refused it warns and runs anyway.
//!
//! Invariants: a packet is never written before its release time, and at most one quantum
//! plus the wake-up latency after it; the FIFO is in release
//! order (the model never reorders), so its head is the next deadline; every limit is a
//! constant here (batch sizes, pool size, the longest sleep), and buffers come from a pool
//! that grows to at most [`POOL_PACKETS_MAX`] and is reused, so the steady state does not
//! allocate.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::link::{Link, Verdict};
use super::stats::{DirectionStats, DropCause};
use crate::tun::Tun;

/// Largest packet we read: the interface MTU is 1500; anything longer is truncated.
pub const PACKET_BYTES_MAX: usize = 2048;
/// Packets read per wake-up before releasing again.
pub const READ_BATCH_MAX: usize = 64;
/// Packets released per pass before reading again.
pub const RELEASE_BATCH_MAX: usize = 256;
/// Packets the emulator holds per direction (queue plus delay line). 65,536 full-size packets
/// are 96 MiB, more than 1 Gbit/s over a 500 ms one-way delay.
pub const POOL_PACKETS_MAX: usize = 65_536;
/// Below this distance to the next pass, spin instead of sleeping.
pub const SPIN_NS: u64 = 10_000;
/// While traffic flows, passes (read what arrived, release what is due) are at least this far
/// apart: at 500 Mbit/s, about 4 full-size packets per pass instead of one wake-up per packet.
/// One wake-up per packet costs a real-time thread nearly a whole core at 40,000 packets/s,
/// and the kernel's real-time throttling then stops it for 50 ms in every second
/// (sched_rt_runtime_us = 950000). The price: a packet may be read and released up to this
/// much late; the `error` statistics include it.
pub const RELEASE_QUANTUM_NS: u64 = 100_000;
/// The longest sleep, so that a stop request is seen promptly.
pub const SLEEP_NS_MAX: u64 = 20_000_000;
/// Pause after a failed read (the interface went away under us), so that a descriptor that
/// polls as always-ready can never turn this real-time thread into a busy loop.
pub const READ_ERROR_BACKOFF_NS: u64 = 10_000_000;
/// SCHED_FIFO priority: above normal tasks, below the kernel's own threaded IRQs (50).
pub const FIFO_PRIORITY: libc::c_int = 10;

/// A packet in the delay line.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    slot: u32,
    len: u16,
    arrival_ns: u64,
    release_ns: u64,
}

/// Fixed-size packet buffers, handed out and returned by index.
#[derive(Debug, Default)]
struct Pool {
    buffers: Vec<Box<[u8]>>,
    free: Vec<u32>,
}

impl Pool {
    fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        if self.buffers.len() >= POOL_PACKETS_MAX {
            return None;
        }
        self.buffers.push(vec![0; PACKET_BYTES_MAX].into_boxed_slice());
        Some((self.buffers.len() - 1) as u32)
    }

    fn give_back(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

/// One direction's forwarding state.
#[derive(Debug)]
pub(crate) struct Forwarder {
    pub(crate) label: &'static str,
    pub(crate) src: Arc<Tun>,
    pub(crate) dst: Arc<Tun>,
    pub(crate) link: Link,
    pub(crate) epoch: Instant,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) is_realtime: bool,
}

/// The running loop's private state.
struct Running {
    fwd: Forwarder,
    pool: Pool,
    line: VecDeque<InFlight>,
    scratch: Box<[u8]>,
    stats: DirectionStats,
    /// When a pass last released a packet.
    last_release_ns: u64,
}

impl Forwarder {
    /// Runs until the stop flag is set; returns what this direction saw.
    pub(crate) fn run(self) -> DirectionStats {
        if self.is_realtime {
            set_realtime(self.label);
        }
        let mut run = Running {
            fwd: self,
            pool: Pool::default(),
            line: VecDeque::new(),
            scratch: vec![0; PACKET_BYTES_MAX].into_boxed_slice(),
            stats: DirectionStats::default(),
            last_release_ns: 0,
        };
        while !run.fwd.stop.load(Ordering::Relaxed) {
            let pass_ns = run.now_ns();
            run.release_due();
            match run.read_batch() {
                Ok(read) if read == READ_BATCH_MAX => {}
                Ok(read) => run.wait(pass_ns, read > 0),
                Err(()) => std::thread::sleep(Duration::from_nanos(READ_ERROR_BACKOFF_NS)),
            }
        }
        run.stats.flushed_at_exit = run.line.len() as u64;
        run.stats
    }
}

impl Running {
    fn now_ns(&self) -> u64 {
        self.fwd.epoch.elapsed().as_nanos() as u64
    }

    /// Writes every packet whose release time has passed (up to a batch).
    fn release_due(&mut self) {
        let now = self.now_ns();
        let delay_ns = self.fwd.link.params().delay_ns;
        for _ in 0..RELEASE_BATCH_MAX {
            let Some(head) = self.line.front().copied() else { break };
            if head.release_ns > now {
                break;
            }
            self.line.pop_front();
            let packet = &self.pool.buffers[head.slot as usize][..head.len as usize];
            let written_ns = self.now_ns();
            match self.fwd.dst.write_packet(packet) {
                Ok(()) => {
                    self.stats.delivered_packets += 1;
                    self.stats.delivered_bytes += head.len as u64;
                    self.stats.error_ns.record(written_ns - head.release_ns.min(written_ns));
                    let sojourn = written_ns.saturating_sub(head.arrival_ns);
                    self.stats.sojourn_excess_ns.record(sojourn.saturating_sub(delay_ns));
                }
                Err(_) => self.stats.on_drop(DropCause::Write),
            }
            self.pool.give_back(head.slot);
            self.last_release_ns = now;
        }
    }

    /// Reads up to a batch of packets; returns how many were read, or `Err` after a read
    /// error (counted in the stats).
    fn read_batch(&mut self) -> Result<usize, ()> {
        let mut read = 0;
        while read < READ_BATCH_MAX {
            let slot = self.pool.take();
            let buf = match slot {
                Some(s) => &mut self.pool.buffers[s as usize][..],
                None => &mut self.scratch[..],
            };
            let outcome = self.fwd.src.read_packet(buf);
            let len = match outcome {
                Ok(Some(len)) if len > 0 => Some(len),
                _ => None,
            };
            let Some(len) = len else {
                // Nothing queued, an empty read, or an error (the interface went away): put
                // the slot back and let the caller wait or back off.
                if let Some(s) = slot {
                    self.pool.give_back(s);
                }
                if outcome.is_err() {
                    self.stats.read_errors += 1;
                    return Err(());
                }
                break;
            };
            read += 1;
            self.on_packet(slot, len);
        }
        Ok(read)
    }

    fn on_packet(&mut self, slot: Option<u32>, len: usize) {
        let arrival_ns = self.now_ns();
        self.stats.packets_in += 1;
        self.stats.bytes_in += len as u64;
        let Some(slot) = slot else {
            self.stats.on_drop(DropCause::Pool);
            return;
        };
        match self.fwd.link.on_packet(arrival_ns, len) {
            Verdict::Deliver { release_ns } => {
                let len = len.min(PACKET_BYTES_MAX) as u16;
                self.line.push_back(InFlight { slot, len, arrival_ns, release_ns });
            }
            Verdict::DropQueue => {
                self.stats.on_drop(DropCause::Queue);
                self.pool.give_back(slot);
            }
            Verdict::DropLoss => {
                self.stats.on_drop(DropCause::Loss);
                self.pool.give_back(slot);
            }
        }
    }

    /// Sleeps until the next pass is due. A pass is due at the head packet's release time, or
    /// as soon as the source is readable; but while traffic flows (the last pass read or
    /// released packets), passes are at least [`RELEASE_QUANTUM_NS`] apart and the source is
    /// not watched in between, so packets are read and released in batches instead of one
    /// wake-up each. Spins for the last [`SPIN_NS`] before a deadline.
    fn wait(&mut self, pass_ns: u64, is_reading: bool) {
        let quantum_end = |since: u64| since.saturating_add(RELEASE_QUANTUM_NS);
        let release_at =
            self.line.front().map(|head| head.release_ns.max(quantum_end(self.last_release_ns)));
        let read_at = is_reading.then(|| quantum_end(pass_ns));
        let target = match (release_at, read_at) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (r, w) => r.or(w),
        };
        let now = self.now_ns();
        let left = match target {
            Some(t) if t <= now => return,
            Some(t) if t - now <= SPIN_NS => {
                while self.now_ns() < t {
                    std::hint::spin_loop();
                }
                return;
            }
            Some(t) => (t - now - SPIN_NS).min(SLEEP_NS_MAX),
            None => SLEEP_NS_MAX,
        };
        let timeout = libc::timespec {
            tv_sec: (left / 1_000_000_000) as libc::time_t,
            tv_nsec: (left % 1_000_000_000) as libc::c_long,
        };
        let events = if is_reading { 0 } else { libc::POLLIN };
        let mut pfd = libc::pollfd { fd: self.fwd.src.as_raw_fd(), events, revents: 0 };
        // SAFETY: `pfd` and `timeout` are live locals for the whole call, nfds is 1 to match
        // the one pollfd, and a null sigmask keeps the thread's mask. The descriptor is open:
        // `src` is held by this thread's Arc.
        let _ = unsafe { libc::ppoll(&mut pfd, 1, &timeout, std::ptr::null()) };
    }
}

/// Asks for SCHED_FIFO and a 1 ns timer slack for the calling thread; warns when refused.
fn set_realtime(label: &str) {
    let param = libc::sched_param { sched_priority: FIFO_PRIORITY };
    // SAFETY: pid 0 means the calling thread; `param` is a live, initialized sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        eprintln!("haul-wanemu: warning: {label}: SCHED_FIFO refused ({err}); running as normal");
    }
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and touches no memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}
