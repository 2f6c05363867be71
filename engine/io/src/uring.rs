//! io_uring backend: multishot `RecvMsg` over a provided buffer ring (with GRO) and GSO
//! `SendMsg`, one `io_uring_enter` per batch; the shard's disk `Read`/`Write` ride the same
//! ring and the same enters ([`disk`], its own slots and bound).
//!
//! Role: the data plane's fast network backend. [`UringBackend::new`] sets the ring up,
//! probes features and opcodes, maps the receive pool and registers a provided buffer ring
//! whose entries are pool slots; it fails with a typed error (and the caller falls back to
//! the portable backend) when any of that is missing.
//!
//! Discipline (STYLE.md rule 9, after TigerBeetle `src/io/linux.zig`):
//! - `user_data` is an operation kind + slot index + generation ([`encode_user_data`]), never
//!   a pointer; an unknown or stale value is ignored, never dereferenced.
//! - Completions are harvested first (copied out of the CQ into a bounded queue), then
//!   handled; a completion seen while waiting for sends is queued for the next receive.
//! - A receive buffer belongs to its pool slot; the kernel holds it from the moment it is
//!   published in the buffer ring until its completion is reaped, and it is handed back to the
//!   ring only after the callback has seen its bytes.
//! - `send_batch` returns only after every one of its sends has completed, so the caller's
//!   slices outlive the kernel's use of them.
//! - Every errno in a CQE maps to a typed [`IoError`]. The multishot receive is re-armed when
//!   it ends (ENOBUFS, or a CQE without IORING_CQE_F_MORE).
//! - On drop the receive is cancelled and its completion awaited, and the buffer ring is
//!   unregistered, before the buffers are unmapped and the socket closed; buffers the kernel
//!   might still hold are leaked rather than unmapped.

use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use memmap2::{MmapMut, MmapRaw};

mod disk;
mod fixed;
pub use disk::{DiskDone, MAX_DISK_IN_FLIGHT};
pub use fixed::{FixedState, MAX_FIXED_BUFFERS};

use crate::backend::IoStats;
use crate::buf::{Backing, BufPool, SlotId};
use crate::error::{IoError, map_errno, map_io};
use crate::udp::{
    CONTROL_BYTES, MAX_GSO_CALLS, NAME_BYTES, SendPlan, UdpSocket, datagram_count, on_send_error,
    parse_gro_segment, parse_sockaddr, segment_bytes_of,
};

/// Submission queue entries.
pub const SQ_ENTRIES: u32 = 512;
/// Completion queue entries (room for every send of a batch plus every receive buffer).
pub const CQ_ENTRIES: u32 = 2048;
/// Receive buffers in the provided buffer ring (a power of two, at most 32768).
pub const RECV_BUFFERS: u16 = 64;
/// Bytes of one receive buffer: recvmsg_out header, name, control, and a full GRO payload.
pub const RECV_BUFFER_BYTES: usize = 16 + NAME_BYTES + CONTROL_BYTES + (1 << 16);
/// Buffer group id of the receive ring.
const BUF_GROUP: u16 = 7;
/// Most waits without any send completing before a batch's sends are cancelled.
// A whole batch of sends plus the receive re-arm always fits the submission queue.
const _: () = assert!(MAX_GSO_CALLS < SQ_ENTRIES as usize);
pub const MAX_SEND_WAITS: usize = 100;
/// One timed wait for send completions.
const SEND_WAIT: Duration = Duration::from_millis(100);
/// Most waits for the receive's cancellation at shutdown.
const MAX_DRAIN_WAITS: usize = 50;
/// Most EAGAIN resubmissions of one send call.
const MAX_SEND_RETRIES: u32 = 1000;

/// Kinds of operation encoded in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// The multishot receive.
    Recv = 1,
    /// One GSO send call of a batch.
    Send = 2,
    /// A cancellation request.
    Cancel = 3,
    /// A disk read or write (`uring::disk`).
    Disk = 4,
    /// The poll of the shard's wake-up eventfd ([`UringBackend::watch_waker`]).
    Wake = 5,
}

/// Packs kind, slot index and generation into a `user_data` value.
pub fn encode_user_data(kind: OpKind, index: u16, generation: u32) -> u64 {
    ((kind as u64) << 56) | ((index as u64) << 32) | generation as u64
}

/// Unpacks a `user_data` value; `None` for anything we never submitted.
pub fn decode_user_data(value: u64) -> Option<(OpKind, u16, u32)> {
    let kind = match value >> 56 {
        1 => OpKind::Recv,
        2 => OpKind::Send,
        3 => OpKind::Cancel,
        4 => OpKind::Disk,
        5 => OpKind::Wake,
        _ => return None,
    };
    if (value >> 48) & 0xff != 0 {
        return None;
    }
    Some((kind, (value >> 32) as u16, value as u32))
}

/// What the kernel's ring offers, as probed at start-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringFeatures {
    /// IORING_FEAT_NODROP: completions are never dropped on CQ overflow.
    pub is_nodrop: bool,
    /// IORING_FEAT_FAST_POLL: socket operations poll internally instead of using workers.
    pub is_fast_poll: bool,
    /// IORING_FEAT_EXT_ARG: waits can carry a timeout.
    pub is_ext_arg: bool,
    /// IORING_FEAT_SUBMIT_STABLE: SQE data may be reused once submitted.
    pub is_submit_stable: bool,
    /// Opcode SENDMSG supported.
    pub has_send_msg: bool,
    /// Opcode RECVMSG supported (multishot needs Linux 6.0).
    pub has_recv_msg: bool,
    /// Opcode PROVIDE_BUFFERS supported.
    pub has_provide_buffers: bool,
    /// A provided buffer ring was registered.
    pub has_buf_ring: bool,
    /// IORING_SETUP_COOP_TASKRUN accepted.
    pub is_coop_taskrun: bool,
    /// Opcodes READ and WRITE supported (Linux 5.6): disk I/O can go through the ring.
    pub has_read_write: bool,
    /// Opcodes READ_FIXED and WRITE_FIXED supported: disk I/O can use registered buffers.
    pub has_fixed_rw: bool,
}

/// One harvested completion.
#[derive(Debug, Clone, Copy, Default)]
struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// Bounded FIFO of harvested completions (capacity CQ_ENTRIES, allocated once).
#[derive(Debug)]
struct CompletionQueue {
    items: Box<[Completion]>,
    head: usize,
    len: usize,
}

impl CompletionQueue {
    fn new() -> CompletionQueue {
        let items = vec![Completion::default(); CQ_ENTRIES as usize].into_boxed_slice();
        CompletionQueue { items, head: 0, len: 0 }
    }
    fn free(&self) -> usize {
        self.items.len() - self.len
    }
    fn push(&mut self, c: Completion) {
        // Callers harvest at most `free()` entries, so this never overwrites.
        let at = (self.head + self.len) % self.items.len();
        self.items[at] = c;
        self.len += 1;
    }
    fn pop(&mut self) -> Option<Completion> {
        if self.len == 0 {
            return None;
        }
        let c = self.items[self.head];
        self.head = (self.head + 1) % self.items.len();
        self.len -= 1;
        Some(c)
    }
}

/// The provided buffer ring: page-aligned entries the kernel picks receive buffers from. Held
/// raw (no slice references) because the kernel reads it concurrently.
#[derive(Debug)]
struct BufRing {
    map: MmapRaw,
    tail: u16,
}

/// One `struct io_uring_buf` of the provided buffer ring; in entry 0, `resv` is the ring tail.
#[repr(C)]
struct RawBufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(
    std::mem::size_of::<RawBufEntry>() == 16
        && std::mem::size_of::<RawBufEntry>() == std::mem::size_of::<BufRingEntry>()
);

impl BufRing {
    fn new() -> Result<BufRing, IoError> {
        let bytes = (RECV_BUFFERS as usize * std::mem::size_of::<RawBufEntry>()).max(4096);
        let map = MmapMut::map_anon(bytes).map_err(|e| map_io("mmap(buffer ring)", &e))?;
        Ok(BufRing { map: MmapRaw::from(map), tail: 0 })
    }

    /// Writes one entry at the local tail; visible to the kernel after [`BufRing::publish`].
    fn add(&mut self, addr: *mut u8, len: usize, bid: u16) {
        let slot = (self.tail & (RECV_BUFFERS - 1)) as usize;
        let base = self.map.as_mut_ptr().cast::<RawBufEntry>();
        // SAFETY: `slot < RECV_BUFFERS` and the mapping holds RECV_BUFFERS entries, page
        // aligned. The entry is outside the kernel's visible range (head..published tail)
        // because each bid is added only after its completion was reaped. Fields are written
        // through raw pointers, never a reference, so entry 0's `resv` (the tail, read by the
        // kernel and stored atomically by `publish`) is not touched.
        unsafe {
            let entry = base.add(slot);
            (&raw mut (*entry).addr).write(addr as u64);
            (&raw mut (*entry).len).write(len as u32);
            (&raw mut (*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the local tail to the kernel (release store).
    fn publish(&mut self) {
        let base = self.map.as_mut_ptr().cast::<RawBufEntry>();
        // SAFETY: entry 0's `resv` is the ring tail: inside our live mapping, 2-byte aligned;
        // the kernel only reads it (acquire) and we only ever access it atomically.
        let tail = unsafe { AtomicU16::from_ptr(&raw mut (*base).resv) };
        tail.store(self.tail, Ordering::Release);
    }

    fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }
}

/// The io_uring network backend of one shard.
pub struct UringBackend {
    // Fields drop in order: the ring (cancelling anything left) before the socket closes.
    ring: IoUring,
    socket: UdpSocket,
    plan: SendPlan,
    recv_hdr: Box<libc::msghdr>,
    // Dropped by hand in `Drop` only once the kernel has let go of them (else leaked).
    buf_ring: ManuallyDrop<BufRing>,
    pool: ManuallyDrop<BufPool>,
    recv_slots: Box<[SlotId]>,
    pending: CompletionQueue,
    features: UringFeatures,
    is_recv_armed: bool,
    recv_error: Option<IoError>,
    send_generation: u32,
    stats: IoStats,
    disk: disk::DiskOps,
    fixed: fixed::FixedTable,
    /// The eventfd whose readiness ends a wait early, and whether its poll is queued.
    waker: Option<i32>,
    is_wake_armed: bool,
}

impl std::fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBackend")
            .field("socket", &self.socket)
            .field("features", &self.features)
            .field("is_recv_armed", &self.is_recv_armed)
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers held (msghdrs, buffer-ring addresses) point into memory owned by
// this value (boxes, mappings) that moves with it; the ring is used through `&mut self` only,
// so one thread at a time submits and reaps.
unsafe impl Send for UringBackend {}

impl UringBackend {
    /// Sets up the ring, probes it, and arms nothing yet. `socket` should be blocking: the ring
    /// polls internally, and a blocking socket makes it retry instead of failing with EAGAIN.
    pub fn new(socket: UdpSocket) -> Result<UringBackend, IoError> {
        let (ring, mut features) = build_ring()?;
        let mut pool = BufPool::new(RECV_BUFFERS as usize, RECV_BUFFER_BYTES)?;
        let mut buf_ring = BufRing::new()?;
        // SAFETY: the ring memory is a live, page-aligned mapping of RECV_BUFFERS entries; the
        // backend unmaps it only after unregistering it (see `Drop`), and leaks it otherwise.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.addr(),
                RECV_BUFFERS,
                BUF_GROUP,
                0,
            )
        }
        .map_err(|e| map_io("io_uring_register(PBUF_RING)", &e))?;
        features.has_buf_ring = true;
        let mut recv_slots = Vec::with_capacity(RECV_BUFFERS as usize);
        for bid in 0..RECV_BUFFERS {
            let id = pool.alloc().ok_or(IoError::Invalid("receive pool smaller than ring"))?;
            let addr = pool.slot_addr(id.index).ok_or(IoError::Invalid("slot out of range"))?;
            buf_ring.add(addr, RECV_BUFFER_BYTES, bid);
            recv_slots.push(id);
        }
        buf_ring.publish();
        // SAFETY: msghdr is a C struct of integers and raw pointers; all-zero is valid.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_BYTES as libc::socklen_t;
        recv_hdr.msg_controllen = CONTROL_BYTES;
        Ok(UringBackend {
            ring,
            socket,
            plan: SendPlan::new(),
            recv_hdr,
            buf_ring: ManuallyDrop::new(buf_ring),
            pool: ManuallyDrop::new(pool),
            recv_slots: recv_slots.into_boxed_slice(),
            pending: CompletionQueue::new(),
            features,
            is_recv_armed: false,
            recv_error: None,
            send_generation: 0,
            stats: IoStats::default(),
            disk: disk::DiskOps::new(),
            fixed: fixed::FixedTable::new(),
            waker: None,
            is_wake_armed: false,
        })
    }

    /// The probed features.
    pub fn features(&self) -> UringFeatures {
        self.features
    }

    /// The socket this backend drives.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Which memory backs the receive buffers.
    pub fn recv_pool_backing(&self) -> Backing {
        self.pool.backing()
    }

    /// Counters since construction.
    pub fn stats(&self) -> IoStats {
        let errno = match self.fixed.state {
            FixedState::Refused(errno) => errno,
            _ => 0,
        };
        IoStats {
            disk_fixed_ops: self.fixed.ops,
            disk_fixed_bytes: self.fixed.bytes,
            disk_fixed_refused: self.fixed.refused,
            disk_fixed_errno: errno,
            ..self.stats
        }
    }

    /// Sends `datagrams` to `dest` as GSO `SendMsg`s with one submit, and returns once every
    /// send has completed. Returns the number of datagrams the kernel accepted.
    pub fn send_batch(
        &mut self,
        dest: SocketAddr,
        datagrams: &[&[u8]],
        segment_bytes: usize,
    ) -> Result<usize, IoError> {
        let calls = self.plan.prepare(dest, datagrams, segment_bytes, self.socket.is_gso())?;
        self.send_generation = self.send_generation.wrapping_add(1);
        // Make room first, while none of this batch is queued: pushes below cannot then force
        // a flush, and a failure cannot leave half a batch unsubmitted.
        let sq_free = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if sq_free < calls {
            self.enter(0, None)?;
        }
        let mut pushed = 0;
        let mut first_error = None;
        for i in 0..calls {
            match self.push_send(i) {
                Ok(()) => pushed += 1,
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        // Whatever happened, every pushed send is reaped before the caller's slices are freed.
        if let Err(e) = self.reap_sends(pushed) {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(on_send_error(&mut self.socket, e)),
            None => {
                self.stats.datagrams_sent += datagrams.len() as u64;
                Ok(datagrams.len())
            }
        }
    }

    /// Waits until all `left` sends of the current batch have completed; returns the first
    /// error among them. Never returns while one is still in flight: after MAX_SEND_WAITS
    /// timed waits the sends are cancelled, and if even cancellation cannot be reaped the
    /// process aborts, because returning would let the kernel read memory the caller frees.
    fn reap_sends(&mut self, mut left: usize) -> Result<(), IoError> {
        let mut first_error = None;
        let (mut waits, mut retries, mut cancelled) = (0usize, 0u32, false);
        let mut left_before = left;
        while left > 0 {
            // Only waits in which nothing completed count towards the bound.
            if left == left_before {
                waits += 1;
            }
            left_before = left;
            if waits > MAX_SEND_WAITS && !cancelled {
                cancelled = true;
                first_error.get_or_insert(IoError::Transient {
                    op: "io_uring SendMsg",
                    errno: libc::ETIME,
                });
                self.push_cancels();
            }
            if waits > MAX_SEND_WAITS + MAX_DRAIN_WAITS {
                eprintln!(
                    "haul-io: {left} io_uring sends cannot be reaped; aborting to keep their buffers safe"
                );
                std::process::abort();
            }
            if let Err(e) = self.enter(1, Some(SEND_WAIT)) {
                first_error.get_or_insert(e);
            }
            self.harvest();
            for _ in 0..self.pending.len {
                let Some(c) = self.pending.pop() else { break };
                let (i, g) = match decode_user_data(c.user_data) {
                    Some((OpKind::Send, i, g)) => (i as usize, g),
                    Some((OpKind::Cancel, _, _)) => continue,
                    Some((OpKind::Disk, i, g)) => {
                        self.disk.on_completion(i, g, c.result);
                        continue;
                    }
                    // Receives wait for the next recv_batch, in order.
                    _ => {
                        self.pending.push(c);
                        continue;
                    }
                };
                if g != self.send_generation {
                    continue;
                }
                if c.result == -libc::EAGAIN && retries < MAX_SEND_RETRIES && !cancelled {
                    retries += 1;
                    if self.push_send(i).is_ok() {
                        continue;
                    }
                }
                left -= 1;
                if first_error.is_none() {
                    first_error = self.send_outcome(i, c.result);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The error, if any, of call `i` completing with `result`.
    fn send_outcome(&self, i: usize, result: i32) -> Option<IoError> {
        if result < 0 {
            Some(map_errno("io_uring SendMsg", -result))
        } else if result as usize != self.plan.call_bytes(i) {
            // UDP sends are all-or-nothing; a short count means our plan is wrong.
            Some(IoError::Invalid("short UDP send"))
        } else {
            None
        }
    }

    /// Queues a cancellation for every call of the current batch (already completed ones just
    /// report ENOENT).
    fn push_cancels(&mut self) {
        for i in 0..MAX_GSO_CALLS.min(self.plan.calls()) {
            let target = encode_user_data(OpKind::Send, i as u16, self.send_generation);
            let entry = opcode::AsyncCancel::new(target).build().user_data(encode_user_data(
                OpKind::Cancel,
                i as u16,
                0,
            ));
            // A full queue is flushed by push; a failed cancel leaves the wait bound to act.
            let _ = self.push(&entry);
        }
    }

    /// Queues the SendMsg SQE of prepared call `i`.
    fn push_send(&mut self, i: usize) -> Result<(), IoError> {
        if i >= MAX_GSO_CALLS {
            return Err(IoError::Invalid("send call index beyond MAX_GSO_CALLS"));
        }
        let entry = opcode::SendMsg::new(Fd(self.socket.raw_fd()), self.plan.msghdr_ptr(i))
            .build()
            .user_data(encode_user_data(OpKind::Send, i as u16, self.send_generation));
        self.push(&entry)
    }

    /// Pushes one SQE, flushing the SQ to the kernel first if it is full.
    fn push(&mut self, entry: &squeue::Entry) -> Result<(), IoError> {
        if self.ring.submission().is_full() {
            self.stats.syscalls += 1;
            self.ring.submit().map_err(|e| map_io("io_uring_enter", &e))?;
        }
        // SAFETY: every SQE we build points only at memory this backend owns (plan msghdrs,
        // recv msghdr), at caller slices that `send_batch` keeps borrowed until all its
        // completions are reaped, or at disk buffers whose callers promised (the `# Safety`
        // of `push_disk_read`/`push_disk_write`) to keep them until their completion is taken.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| IoError::Invalid("submission queue full after flush"))
    }

    /// Receives what is queued, waiting up to `timeout` for a completion, and calls
    /// `on_buffer(from, payload, segment_bytes)` once per receive buffer: `payload` holds one
    /// or more datagrams of `segment_bytes` each (the last may be shorter), writable so the
    /// caller can verify and decrypt in place. Returns the number of datagrams.
    pub fn recv_segments<F>(
        &mut self,
        timeout: Duration,
        mut on_buffer: F,
    ) -> Result<usize, IoError>
    where
        F: FnMut(SocketAddr, &mut [u8], usize),
    {
        if let Some(err) = self.recv_error.take() {
            return Err(err);
        }
        if !self.is_recv_armed {
            self.arm_recv()?;
        }
        self.harvest();
        if self.pending.len == 0 {
            self.enter(1, Some(timeout))?;
            self.harvest();
        } else if !self.ring.submission().is_empty() {
            self.enter(0, None)?;
        }
        let mut count = 0;
        let mut returned = false;
        while let Some(c) = self.pending.pop() {
            // Stale sends, cancellations, unknown values: nothing refers to them any more.
            match decode_user_data(c.user_data) {
                Some((OpKind::Recv, _, _)) => {
                    count += self.handle_recv(c, &mut on_buffer);
                    returned |= cqueue::buffer_select(c.flags).is_some();
                }
                Some((OpKind::Disk, i, g)) => self.disk.on_completion(i, g, c.result),
                Some((OpKind::Wake, _, _)) => self.on_wake(),
                _ => {}
            }
        }
        if self.waker.is_some() && !self.is_wake_armed {
            self.arm_wake()?;
        }
        if returned {
            self.buf_ring.publish();
        }
        self.stats.datagrams_received += count as u64;
        if !self.is_recv_armed {
            // Queued now, submitted by the next enter: datagrams wait in the socket meanwhile.
            self.stats.recv_rearms += 1;
            self.arm_recv()?;
        }
        match self.recv_error.take() {
            Some(err) if count == 0 => Err(err),
            other => {
                self.recv_error = other;
                Ok(count)
            }
        }
    }

    /// Handles one receive completion: deliver its datagrams, give its buffer back.
    fn handle_recv<F: FnMut(SocketAddr, &mut [u8], usize)>(
        &mut self,
        c: Completion,
        on: &mut F,
    ) -> usize {
        if !cqueue::more(c.flags) {
            self.is_recv_armed = false;
        }
        if c.result < 0 {
            // ENOBUFS: the ring ran dry; ECANCELED: shutdown. Both just need a re-arm.
            if c.result != -libc::ENOBUFS && c.result != -libc::ECANCELED {
                self.recv_error = Some(map_errno("io_uring RecvMsgMulti", -c.result));
            }
        }
        let Some(bid) = cqueue::buffer_select(c.flags) else { return 0 };
        let Some(slot) = self.recv_slots.get(bid as usize).copied() else { return 0 };
        let count = if c.result >= 0 { self.deliver(slot, c.result as usize, on) } else { 0 };
        // The completion is reaped and its bytes handled: the buffer goes back to the kernel.
        if let Some(addr) = self.pool.slot_addr(slot.index) {
            self.buf_ring.add(addr, RECV_BUFFER_BYTES, bid);
        }
        count
    }

    /// Parses the recvmsg_out layout in `slot`'s first `len` bytes and hands its payload to
    /// `on`. Truncated payloads (larger than a buffer) and unparsable names are dropped.
    fn deliver<F: FnMut(SocketAddr, &mut [u8], usize)>(
        &mut self,
        slot: SlotId,
        len: usize,
        on: &mut F,
    ) -> usize {
        let (from, gro, start, payload_len) = {
            let Ok(buf) = self.pool.slot(slot) else { return 0 };
            let Ok(out) = RecvMsgOut::parse(&buf[..len.min(buf.len())], &self.recv_hdr) else {
                return 0;
            };
            let Some(from) = parse_sockaddr(out.name_data()) else { return 0 };
            if out.is_payload_truncated() {
                return 0;
            }
            // The payload is a sub-slice of `buf`: its offset is the distance between them.
            let start = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
            (from, parse_gro_segment(out.control_data()), start, out.payload_data().len())
        };
        self.stats.recv_buffers += 1;
        let Ok(buf) = self.pool.slot_mut(slot) else { return 0 };
        let Some(payload) = buf.get_mut(start..start + payload_len) else { return 0 };
        let seg = segment_bytes_of(payload_len, gro);
        on(from, payload, seg);
        datagram_count(payload_len, seg)
    }

    /// Ends every later wait of [`Self::recv_segments`] as soon as `fd` (an eventfd the
    /// caller keeps open for this backend's life) becomes readable: a one-shot poll of it
    /// rides the ring and is queued again after each wake-up, which also reads the eventfd
    /// back to zero. A poll holds no buffer of ours, so closing the ring cancels it safely.
    pub fn watch_waker(&mut self, fd: i32) -> Result<(), IoError> {
        self.waker = Some(fd);
        if !self.is_wake_armed { self.arm_wake() } else { Ok(()) }
    }

    fn arm_wake(&mut self) -> Result<(), IoError> {
        let Some(fd) = self.waker else { return Ok(()) };
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(encode_user_data(OpKind::Wake, 0, 0));
        self.push(&entry)?;
        self.is_wake_armed = true;
        Ok(())
    }

    fn on_wake(&mut self) {
        self.is_wake_armed = false;
        if let Some(fd) = self.waker {
            crate::fallback::clear_eventfd(fd);
        }
    }

    /// Queues the multishot receive.
    fn arm_recv(&mut self) -> Result<(), IoError> {
        let hdr: *const libc::msghdr = &*self.recv_hdr;
        let entry = opcode::RecvMsgMulti::new(Fd(self.socket.raw_fd()), hdr, BUF_GROUP)
            .build()
            .user_data(encode_user_data(OpKind::Recv, 0, 0));
        self.push(&entry)?;
        self.is_recv_armed = true;
        Ok(())
    }

    /// Copies completions out of the CQ into the bounded pending queue.
    fn harvest(&mut self) {
        let room = self.pending.free();
        let mut cq = self.ring.completion();
        cq.sync();
        let mut taken = 0;
        while taken < room {
            let Some(cqe) = cq.next() else { break };
            self.pending.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
            taken += 1;
        }
    }

    /// One `io_uring_enter`: submit queued SQEs and wait for `want` completions or `timeout`.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<(), IoError> {
        self.stats.syscalls += 1;
        let result = match timeout {
            Some(t) if want > 0 => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => Ok(()),
                _ => Err(map_io("io_uring_enter", &e)),
            },
        }
    }
}

impl UringBackend {
    /// Cancels the multishot receive and waits (bounded) for its last completion; true when
    /// the kernel holds no reference to the receive buffers any more.
    fn drain_recv(&mut self) -> bool {
        if self.is_recv_armed {
            let ud = encode_user_data(OpKind::Recv, 0, 0);
            let cancel = encode_user_data(OpKind::Cancel, 0, 0);
            if self.push(&opcode::AsyncCancel::new(ud).build().user_data(cancel)).is_err() {
                return false;
            }
        }
        for _ in 0..MAX_DRAIN_WAITS {
            if !self.is_recv_armed {
                break;
            }
            if self.enter(1, Some(SEND_WAIT)).is_err() {
                return false;
            }
            self.harvest();
            while let Some(c) = self.pending.pop() {
                match decode_user_data(c.user_data) {
                    Some((OpKind::Recv, _, _)) if !cqueue::more(c.flags) => {
                        self.is_recv_armed = false;
                    }
                    Some((OpKind::Disk, i, g)) => self.disk.on_completion(i, g, c.result),
                    _ => {}
                }
            }
        }
        !self.is_recv_armed && self.ring.submitter().unregister_buf_ring(BUF_GROUP).is_ok()
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // Disk operations point into the caller's buffers: wait for them first (their owner
        // normally drained them already; this aborts rather than return under a live one).
        self.drain_disk();
        // The socket is closed and the buffers unmapped only after the kernel let go of them.
        // If it did not (it always does in practice), the buffers are leaked rather than
        // unmapped under a kernel that may still write into them; closing the ring (the
        // first field dropped after this) then cancels what is left.
        if self.drain_recv() {
            // SAFETY: the receive was reaped and the buffer ring unregistered, so no kernel
            // reference to these mappings remains; they are dropped once, here, and never
            // used again (the fields are ManuallyDrop and `self` is being dropped).
            unsafe {
                ManuallyDrop::drop(&mut self.buf_ring);
                ManuallyDrop::drop(&mut self.pool);
            }
        }
    }
}

/// Builds the ring (trying COOP_TASKRUN first) and probes its features and opcodes.
fn build_ring() -> Result<(IoUring, UringFeatures), IoError> {
    let mut features = UringFeatures::default();
    let ring =
        match IoUring::builder().setup_cqsize(CQ_ENTRIES).setup_coop_taskrun().build(SQ_ENTRIES) {
            Ok(ring) => {
                features.is_coop_taskrun = true;
                ring
            }
            Err(_) => IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)
                .map_err(|e| map_io("io_uring_setup", &e))?,
        };
    let params = ring.params();
    features.is_nodrop = params.is_feature_nodrop();
    features.is_fast_poll = params.is_feature_fast_poll();
    features.is_ext_arg = params.is_feature_ext_arg();
    features.is_submit_stable = params.is_feature_submit_stable();
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| map_io("io_uring_register(PROBE)", &e))?;
    features.has_send_msg = probe.is_supported(opcode::SendMsg::CODE);
    features.has_recv_msg = probe.is_supported(opcode::RecvMsg::CODE);
    features.has_provide_buffers = probe.is_supported(opcode::ProvideBuffers::CODE);
    features.has_read_write =
        probe.is_supported(opcode::Read::CODE) && probe.is_supported(opcode::Write::CODE);
    features.has_fixed_rw =
        probe.is_supported(opcode::ReadFixed::CODE) && probe.is_supported(opcode::WriteFixed::CODE);
    if !(features.has_send_msg && features.has_recv_msg && features.is_ext_arg) {
        return Err(IoError::Unsupported { op: "io_uring SendMsg/RecvMsg/EXT_ARG", errno: 0 });
    }
    // Multishot RecvMsg has no opcode of its own to probe: it arrived in Linux 6.0.
    if kernel_release().is_some_and(|r| r < MULTISHOT_RECVMSG_KERNEL) {
        return Err(IoError::Unsupported {
            op: "io_uring multishot RecvMsg (Linux 6.0)",
            errno: 0,
        });
    }
    Ok((ring, features))
}

/// First kernel with multishot `IORING_OP_RECVMSG`.
const MULTISHOT_RECVMSG_KERNEL: (u32, u32) = (6, 0);

/// `(major, minor)` from a kernel release string such as `6.18.44-fc-v857`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's `(major, minor)`, from `/proc/sys/kernel/osrelease`.
fn kernel_release() -> Option<(u32, u32)> {
    parse_kernel_release(std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_rejects_foreign_values() {
        for kind in [OpKind::Recv, OpKind::Send, OpKind::Cancel, OpKind::Disk] {
            for (index, generation) in [(0u16, 0u32), (65535, u32::MAX), (7, 12345)] {
                let ud = encode_user_data(kind, index, generation);
                assert_eq!(decode_user_data(ud), Some((kind, index, generation)));
            }
        }
        assert_eq!(decode_user_data(0), None);
        assert_eq!(decode_user_data(0xdead_beef_0000_0000), None);
        assert_eq!(decode_user_data(u64::MAX), None);
    }

    #[test]
    fn kernel_release_parses() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_release("6.0"), Some((6, 0)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert_eq!(parse_kernel_release(""), None);
        assert!(parse_kernel_release("5.19.1").unwrap() < MULTISHOT_RECVMSG_KERNEL);
        assert!(parse_kernel_release("6.1.0").unwrap() >= MULTISHOT_RECVMSG_KERNEL);
    }

    #[test]
    fn completion_queue_is_fifo_and_bounded() {
        let mut q = CompletionQueue::new();
        assert_eq!(q.free(), CQ_ENTRIES as usize);
        for i in 0..10 {
            q.push(Completion { user_data: i, result: 0, flags: 0 });
        }
        assert_eq!(q.pop().map(|c| c.user_data), Some(0));
        assert_eq!(q.free(), CQ_ENTRIES as usize - 9);
        while q.pop().is_some() {}
        assert_eq!(q.len, 0);
    }
}
