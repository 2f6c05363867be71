//! A shard's disk I/O: source reads (sender), verification reads and data writes (receiver),
//! submitted on the shard's own io_uring when it has one, with pread/pwrite on the shard
//! thread otherwise (the portable backend, a ring without Read/Write, or `HAUL_DISK_IO=sync`).
//!
//! Reads go straight into the proto shard's read-slot buffers. Writes go from [`Stager`]
//! buffers, into which the receive callback copies contiguous payloads. A buffer is one run
//! (one file, contiguous bytes) placed in one of a few large arenas: a large file's run
//! fills an arena, while the runs of many small files share one, one after the other (each
//! small file is then one write, not one per datagram).
//!
//! Invariants:
//! - At most `MAX_DISK_IN_FLIGHT` ring operations at once (the ring's own bound), at most
//!   [`STAGING_RUNS`] runs staged and [`STAGING_BUFFERS`] arenas of [`STAGING_BYTES`];
//!   everything is allocated at start-up, nothing per datagram or per operation.
//! - Runs never overlap in memory: a new run starts (aligned) after the end of every run
//!   still live in its arena, and only the run being filled grows, up to the arena's end.
//! - A buffer the kernel may be using is not touched: the proto shard hands out only the part
//!   of a read slot still to be filled (`disk_buffer_mut`), keeps the slot's read in flight
//!   until its completion is handed back, and meanwhile uses only the part already filled; a staging buffer stays in flight until
//!   its completion is taken; a file descriptor stays open (pinned) until its operations end.
//!   [`DiskIo::drain`] waits for everything before the shard and its buffers are dropped.
//! - Writes are reported to the proto shard in the order they were staged, whatever order the
//!   kernel completes them in, so blocks can still be hashed from their writes.
//! - A short write is finished synchronously; every errno maps to a typed `DiskError`
//!   (ENOSPC/EDQUOT to `NoSpace`, which names the file and the space needed upstream).

use super::store::{MAX_DIRECT_ALIGN, OpenFiles, errno_error};
use crate::backend::Backend;
use crate::buf::{Backing, DiskBuf, disk_buffers};
use crate::uring::{DiskDone, UringBackend};
use haul_proto::session::{DiskError, DiskRead, ReceiverShard, SenderShard, SlotMemory};
use haul_proto::time::Instant as ProtoInstant;
use std::time::Duration;

/// Environment variable choosing how a shard does disk I/O: `sync` (pread/pwrite on the shard
/// thread), `buffered` (through the ring, never O_DIRECT), or anything else (through the ring
/// when the backend is io_uring, with O_DIRECT for the receiver's aligned writes where the
/// filesystem allows it).
pub const DISK_IO_ENV: &str = "HAUL_DISK_IO";
/// Environment variable: `heap` keeps the disk buffers (staging arenas, read slots) on the
/// heap, as before they came from hugepage-backed regions (`buf::disk_buffers`): for A/B
/// measurements, and a way out should a host misbehave with them.
pub const DISK_BUFFERS_ENV: &str = "HAUL_DISK_BUFFERS";
/// Write arenas of one receiver shard.
pub(crate) const STAGING_BUFFERS: usize = 8;
/// Bytes of one write arena: contiguous payloads coalesce into one write.
pub(crate) const STAGING_BYTES: usize = 1 << 20;
/// Runs (writes) staged at once, over all arenas: an arena holds about 30 runs of 1-64 KiB
/// files, so this many keep about four arenas in use with small files before a payload has
/// to be written synchronously.
pub(crate) const STAGING_RUNS: usize = 128;
/// Free write arenas wanted before a receive: one receive hands over at most
/// `RECV_BUFFERS` GRO buffers of 64 KiB (4 MiB), so with this many free, payloads that
/// arrive in order never run out of buffers.
const MIN_FREE_STAGING: usize = 5;
/// One wait for write completions when too few buffers are free.
const STAGING_WAIT: Duration = Duration::from_millis(5);
/// Longest a receiver shard waits for free write buffers before receiving anyway (payloads
/// then take the synchronous path). A time, not a count of waits: every network completion
/// ends a wait too.
const MAX_STAGING_WAIT: Duration = Duration::from_millis(100);
/// Tag bit of a write (else a read); low 8 bits: read slot or staging buffer; bits 8..40:
/// the file; bits 40..42: which part of a staged write (see [`split`]).
const TAG_WRITE: u64 = 1 << 63;
/// Parts of one staged write: unaligned head (buffered), aligned middle (O_DIRECT when the
/// file has it), unaligned tail (buffered).
const PARTS: usize = 3;
/// The part tag of a sender's read through the O_DIRECT twin (a buffered read is part 0).
const PART_DIRECT_READ: usize = 1;

const _: () = assert!(STAGING_RUNS <= 256 && MIN_FREE_STAGING < STAGING_BUFFERS);
const _: () = assert!(STAGING_BUFFERS <= 256 && STAGING_BUFFERS <= STAGING_RUNS);
const _: () = assert!(STAGING_BYTES <= u32::MAX as usize);

fn tag(file: u32, index: u8, is_write: bool, part: usize) -> u64 {
    let kind = if is_write { TAG_WRITE } else { 0 };
    kind | ((part as u64 & 3) << 40) | (u64::from(file) << 8) | u64::from(index)
}

fn untag(tag: u64) -> (u32, u8, bool, usize) {
    ((tag >> 8) as u32, tag as u8, tag & TAG_WRITE != 0, ((tag >> 40) & 3) as usize)
}

/// The parts of a write of `len` bytes at file offset `offset`, as byte ranges relative to
/// its start: `[head, middle, tail]`, where the middle is the largest span whose offset and
/// length are multiples of `align` (0: no O_DIRECT, everything is the head).
fn split(offset: u64, len: usize, align: u32) -> [std::ops::Range<usize>; PARTS] {
    if align == 0 {
        return [0..len, len..len, len..len];
    }
    let a = u64::from(align);
    let end = offset + len as u64;
    let mid_start = offset.next_multiple_of(a).min(end);
    let mid_end = (end / a * a).max(mid_start);
    let (m0, m1) = ((mid_start - offset) as usize, (mid_end - offset) as usize);
    [0..m0, m0..m1, m1..len]
}

/// The result of a ring completion as the proto shard wants it.
fn ring_result(result: i32) -> Result<usize, DiskError> {
    if result >= 0 { Ok(result as usize) } else { Err(errno_error(-result)) }
}

/// How this shard does disk I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// Read/Write SQEs on the shard's ring.
    Ring,
    /// pread/pwrite on the shard thread.
    Sync,
}

impl DiskMode {
    /// The mode for `backend`, as `HAUL_DISK_IO` allows.
    pub(crate) fn for_backend(backend: &Backend) -> DiskMode {
        let forced_sync = std::env::var(DISK_IO_ENV).is_ok_and(|v| v.trim() == "sync");
        match backend {
            Backend::Uring(b) if b.has_disk_ops() && !forced_sync => DiskMode::Ring,
            _ => DiskMode::Sync,
        }
    }
}

/// The proto shards' read interface (both kinds have the same one).
pub(crate) trait ReadClient {
    fn poll_read(&mut self) -> Option<DiskRead>;
    fn read_buffer(&mut self, slot: u8) -> &mut [u8];
    /// The whole read slot, to register with the ring once (`uring::fixed`).
    fn read_slot_region(&mut self, slot: u8) -> &mut [u8];
    fn on_read(&mut self, now: ProtoInstant, slot: u8, res: Result<usize, DiskError>);
    /// Read slots and the bytes of each.
    fn read_slots(&self) -> (usize, usize);
    /// Lends the read slots the driver's memory before any read: how many took it.
    fn use_read_memory(&mut self, bufs: Vec<DiskBuf>) -> usize;
    /// The size of `file` when its reads may go through an O_DIRECT twin (a sender's
    /// source), `None` to read buffered (the receiver's verification reads).
    fn direct_read_size(&self, file: u32) -> Option<u64>;
}

/// Both proto shard kinds have the same inherent read methods.
macro_rules! read_client {
    ($shard:ty, $direct:expr) => {
        impl ReadClient for $shard {
            fn poll_read(&mut self) -> Option<DiskRead> {
                self.poll_disk()
            }
            fn read_buffer(&mut self, slot: u8) -> &mut [u8] {
                self.disk_buffer_mut(slot)
            }
            fn read_slot_region(&mut self, slot: u8) -> &mut [u8] {
                self.disk_slot_region(slot)
            }
            fn on_read(&mut self, now: ProtoInstant, slot: u8, res: Result<usize, DiskError>) {
                self.handle_disk(now, slot, res);
            }
            fn read_slots(&self) -> (usize, usize) {
                <$shard>::read_slots(self)
            }
            fn use_read_memory(&mut self, bufs: Vec<DiskBuf>) -> usize {
                let bufs = bufs.into_iter().map(|b| Box::new(b) as Box<dyn SlotMemory>);
                <$shard>::use_read_memory(self, bufs)
            }
            fn direct_read_size(&self, file: u32) -> Option<u64> {
                $direct(self, file)
            }
        }
    };
}
read_client!(SenderShard, |s: &SenderShard, file| s.file_size(file));
read_client!(ReceiverShard, |_: &ReceiverShard, _| None);

/// Gives `client`'s read slots 4 KiB-aligned, hugepage-backed (or THP-advised) memory
/// (`buf::disk_buffers`) in place of the heap buffers the proto shard made: what backs them
/// now (`Heap` when the shard kept its own).
pub(crate) fn lend_read_memory<C: ReadClient>(client: &mut C) -> Backing {
    if is_heap_forced() {
        return Backing::Heap;
    }
    let (count, bytes) = client.read_slots();
    match disk_buffers(count, bytes) {
        Ok((bufs, backing)) => match client.use_read_memory(bufs) == count {
            true => backing,
            false => Backing::Heap,
        },
        // Our own geometry (a block beyond `MAX_DISK_BUF_BYTES`): the shard's own memory.
        Err(_) => Backing::Heap,
    }
}

/// Whether `HAUL_DISK_BUFFERS=heap` asks for heap disk buffers.
fn is_heap_forced() -> bool {
    std::env::var(DISK_BUFFERS_ENV).is_ok_and(|v| v.trim() == "heap")
}

/// Disk buffers for the stager: `count` of `bytes` from `buf::disk_buffers`, or heap ones
/// (`HAUL_DISK_BUFFERS=heap`, or our own geometry refused).
fn arenas(count: usize, bytes: usize) -> (Vec<DiskBuf>, Backing) {
    let heap =
        || (std::iter::repeat_with(|| DiskBuf::heap(bytes)).take(count).collect(), Backing::Heap);
    if is_heap_forced() {
        return heap();
    }
    disk_buffers(count, bytes).unwrap_or_else(|_| heap())
}

/// The ring, if this shard's disk I/O goes through it.
fn ring_of(backend: &mut Backend, mode: DiskMode) -> Option<&mut UringBackend> {
    match (backend, mode) {
        (Backend::Uring(b), DiskMode::Ring) => Some(b),
        _ => None,
    }
}

/// Starts the reads the proto shard asks for: on the ring while it has room, else at once.
pub(crate) fn issue_reads<C: ReadClient>(
    backend: &mut Backend,
    mode: DiskMode,
    files: &mut OpenFiles,
    client: &mut C,
    now: ProtoInstant,
) {
    let Some(ring) = ring_of(backend, mode) else {
        while let Some(r) = client.poll_read() {
            let res = files.read_at(r.file, r.offset, client.read_buffer(r.slot));
            client.on_read(now, r.slot, res);
        }
        return;
    };
    while ring.disk_has_room() {
        let Some(r) = client.poll_read() else { break };
        push_read(ring, files, client, r, now);
    }
}

/// Puts read `r` on the ring (the ring has room), or reads it at once when it cannot. A
/// sender's read goes through the source's O_DIRECT twin when it has one and the read is
/// aligned ([`direct_read_len`]), through the buffered descriptor otherwise.
fn push_read<C: ReadClient>(
    ring: &mut UringBackend,
    files: &mut OpenFiles,
    client: &mut C,
    r: DiskRead,
    now: ProtoInstant,
) {
    let pinned = match client.direct_read_size(r.file) {
        Some(size) => files.pin_for_read(r.file, size),
        None => files.pin(r.file).map(|fd| (fd, None)),
    };
    let (fd, direct) = match pinned {
        Ok(fds) => fds,
        Err(e) => {
            client.on_read(now, r.slot, Err(e));
            return;
        }
    };
    let region = client.read_slot_region(r.slot);
    let (region_ptr, region_len) = (region.as_mut_ptr(), region.len());
    // SAFETY: a proto shard's read slot is memory allocated at the shard's creation (its own
    // Vec, or the `DiskBuf` lent by `lend_read_memory`) and never resized or freed before
    // the shard; `DiskIo::drain` releases the registration before the shard is dropped. A
    // slot already registered costs a table look-up.
    unsafe { ring.register_fixed(region_ptr, region_len) };
    let buf = client.read_buffer(r.slot);
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let room = region_len - (buf.as_ptr() as usize - region_ptr as usize);
    let (fd, len, part) = match direct.and_then(|(dfd, align)| {
        Some((dfd, direct_read_len(buf.as_ptr(), r.offset, len, align, room)?))
    }) {
        Some((dfd, n)) => (dfd, n, PART_DIRECT_READ),
        None => (fd, len, 0),
    };
    // SAFETY: the buffer is the unfilled part of the proto shard's read slot, allocated once
    // at the shard's creation; until `handle_disk` for it the shard neither reuses the slot
    // nor touches that part or any byte after it (it reads only what was filled; a sender
    // may send from the part before it). A direct read may run past the asked length up to
    // the alignment, never past the slot (`room`), and the proto shard takes no more than it
    // asked for. We call `handle_disk` only after taking this completion, and
    // `DiskIo::drain` takes every completion before the shard is dropped. The descriptors
    // stay open: pinned until the completion (`unpin`).
    let pushed = unsafe {
        ring.push_disk_read(fd, buf.as_mut_ptr(), len, r.offset, tag(r.file, r.slot, false, part))
    };
    match pushed {
        Ok(()) if client.direct_read_size(r.file).is_some() => {
            files.count_read(part == PART_DIRECT_READ);
        }
        Ok(()) => {}
        Err(_) => {
            files.unpin(r.file);
            let res = files.read_at(r.file, r.offset, client.read_buffer(r.slot));
            client.on_read(now, r.slot, res);
        }
    }
}

/// The length of an O_DIRECT read of `len` bytes at file offset `offset` into `buf`, where
/// `room` bytes of the slot lie from `buf` on: `len` rounded up to `align` (the kernel stops
/// at the end of the file, so the unaligned tail of a source is read directly too), or `None`
/// when the buffer or the offset is not aligned or the slot has no room for the rounding
/// (then the read is buffered).
fn direct_read_len(buf: *const u8, offset: u64, len: u32, align: u32, room: usize) -> Option<u32> {
    let rounded = len.checked_next_multiple_of(align)?;
    let aligned =
        (buf as usize).is_multiple_of(align as usize) && offset.is_multiple_of(u64::from(align));
    (aligned && len > 0 && rounded as usize <= room).then_some(rounded)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageState {
    Free,
    Filling,
    /// Full or ended by a discontinuity; waits to be submitted.
    Sealed,
    InFlight,
    Done(Result<usize, DiskError>),
}

/// One run: a write of contiguous bytes of one file, staged in an arena.
#[derive(Debug)]
struct StageBuf {
    /// The arena holding the bytes.
    arena: u8,
    /// Data for file offset `o` sits at `start + (o - offset)` in the arena, where `start` is
    /// a `MAX_DIRECT_ALIGN`-aligned address of the arena plus `offset % MAX_DIRECT_ALIGN`, so
    /// an aligned file offset is at an aligned address.
    start: usize,
    file: u32,
    offset: u64,
    len: usize,
    state: StageState,
    /// O_DIRECT alignment used for this write (0: all buffered).
    align: u32,
    parts_left: u8,
    error: Option<DiskError>,
}

impl StageBuf {
    fn data<'a>(&self, arenas: &'a [DiskBuf]) -> &'a [u8] {
        &arenas[usize::from(self.arena)][self.start..self.start + self.len]
    }

    fn is_live(&self) -> bool {
        self.state != StageState::Free
    }
}

/// The receiver's write buffers and the order their writes were staged in.
#[derive(Debug)]
pub(crate) struct Stager {
    mode: DiskMode,
    /// The memory runs are staged in, allocated once (`buf::disk_buffers`).
    arenas: Vec<DiskBuf>,
    /// What backs the arenas.
    backing: Backing,
    /// The arena new runs go to while they fit.
    arena_now: u8,
    /// The runs.
    bufs: Vec<StageBuf>,
    /// Sealed, in-flight and done buffers, oldest first (capacity STAGING_BUFFERS).
    order: std::collections::VecDeque<u8>,
    filling: Option<u8>,
    /// Writes submitted with O_DIRECT.
    direct_ops: u64,
}

impl Stager {
    pub(crate) fn new(mode: DiskMode) -> Stager {
        // Synchronous writes complete at once: one buffer is all they use.
        let (n, runs) = match mode {
            DiskMode::Ring => (STAGING_BUFFERS, STAGING_RUNS),
            DiskMode::Sync => (1, 1),
        };
        // Room to start at an aligned address and then at any offset within a block.
        let bytes = STAGING_BYTES + 2 * MAX_DIRECT_ALIGN as usize;
        let (arenas, backing) = arenas(n, bytes);
        let mut bufs = Vec::with_capacity(runs);
        for _ in 0..runs {
            bufs.push(StageBuf {
                arena: 0,
                start: 0,
                file: 0,
                offset: 0,
                len: 0,
                state: StageState::Free,
                align: 0,
                parts_left: 0,
                error: None,
            });
        }
        let order = std::collections::VecDeque::with_capacity(runs);
        Stager { mode, arenas, backing, arena_now: 0, bufs, order, filling: None, direct_ops: 0 }
    }

    /// What backs the write arenas.
    pub(crate) fn backing(&self) -> Backing {
        self.backing
    }

    /// Writes submitted with O_DIRECT so far.
    pub(crate) fn direct_ops(&self) -> u64 {
        self.direct_ops
    }

    /// Arenas without a live run.
    fn free_count(&self) -> usize {
        (0..self.arenas.len()).filter(|&a| !self.is_arena_live(a as u8)).count()
    }

    fn is_arena_live(&self, arena: u8) -> bool {
        self.bufs.iter().any(|b| b.arena == arena && b.is_live())
    }

    /// Where a new run of `len` bytes whose first byte is `in_block` bytes into a block
    /// goes: a free run and its arena and start, after every live run of the current arena
    /// if it fits there, else at the beginning of an arena with no live run.
    fn place(&mut self, len: usize, in_block: usize) -> Option<(usize, u8, usize)> {
        let run = self.bufs.iter().position(|b| !b.is_live())?;
        let align = MAX_DIRECT_ALIGN as usize;
        let start_after = |arena: &[u8], used: usize| {
            let at = used.min(arena.len());
            let start = at + arena[at..].as_ptr().align_offset(align) + in_block;
            (start + len <= arena.len()).then_some(start)
        };
        let now = self.arena_now;
        let used = self
            .bufs
            .iter()
            .filter(|b| b.arena == now && b.is_live())
            .map(|b| b.start + b.len)
            .max()
            .unwrap_or(0);
        if let Some(start) = start_after(&self.arenas[usize::from(now)], used) {
            return Some((run, now, start));
        }
        for a in 0..self.arenas.len() as u8 {
            if a != now && !self.is_arena_live(a) {
                let start = start_after(&self.arenas[usize::from(a)], 0)?;
                self.arena_now = a;
                return Some((run, a, start));
            }
        }
        None
    }

    /// Adds one payload, from inside the receive callback (no ring access there): appended
    /// to the buffer being filled if it continues it, else into a fresh buffer. With no free
    /// buffer (payloads far out of order), it is written synchronously at once.
    pub(crate) fn add(
        &mut self,
        files: &mut OpenFiles,
        shard: &mut ReceiverShard,
        now: ProtoInstant,
        (file, offset, data): (u32, u64, &[u8]),
    ) {
        if let Some(i) = self.filling {
            let b = &mut self.bufs[usize::from(i)];
            let contiguous = file == b.file && offset == b.offset + b.len as u64;
            let at = b.start + b.len;
            let arena = &mut self.arenas[usize::from(b.arena)];
            // The run being filled is the last placed in its arena: it may grow to the end.
            if contiguous && at + data.len() <= arena.len() {
                arena[at..at + data.len()].copy_from_slice(data);
                b.len += data.len();
                return;
            }
            self.seal(files, shard, now);
        }
        let in_block = (offset % u64::from(MAX_DIRECT_ALIGN)) as usize;
        let Some((i, arena, start)) = self.place(data.len(), in_block) else {
            // A buffered write beside an in-flight O_DIRECT write of the same pages could
            // leave a stale cached page over the direct data: drop it instead (a transient
            // error; the shard forgets the bytes and asks for them again).
            let res = if self.overlaps_in_flight(file, offset, data.len()) {
                Err(DiskError::Interrupted)
            } else {
                files.write_at(file, offset, data)
            };
            shard.handle_write_done_data(now, file, offset, data, res);
            return;
        };
        self.arenas[usize::from(arena)][start..start + data.len()].copy_from_slice(data);
        let b = &mut self.bufs[i];
        (b.arena, b.start, b.file, b.offset, b.len) = (arena, start, file, offset, data.len());
        (b.state, b.error) = (StageState::Filling, None);
        self.filling = Some(i as u8);
    }

    /// True when a write of `len` bytes at `offset` of `file` would share a page with a
    /// write in flight. Runs of different data never share a page that one of them covers
    /// whole, so only repeated data can.
    fn overlaps_in_flight(&self, file: u32, offset: u64, len: usize) -> bool {
        let page = u64::from(MAX_DIRECT_ALIGN);
        let pages = |o: u64, l: usize| (o / page, (o + l as u64).div_ceil(page));
        let (a0, a1) = pages(offset, len);
        self.bufs.iter().any(|b| {
            let (b0, b1) = pages(b.offset, b.len);
            b.state == StageState::InFlight && b.file == file && a0 < b1 && b0 < a1
        })
    }

    /// Ends the buffer being filled: queued for the ring, or written now (sync mode, or a
    /// small file on a memory filesystem: `OpenFiles::is_write_now`).
    fn seal(&mut self, files: &mut OpenFiles, shard: &mut ReceiverShard, now: ProtoInstant) {
        let Some(i) = self.filling.take() else { return };
        let b = &mut self.bufs[usize::from(i)];
        b.state = StageState::Sealed;
        self.order.push_back(i);
        if self.mode == DiskMode::Sync || files.is_write_now(b.file) {
            let res = files.write_at(b.file, b.offset, b.data(&self.arenas));
            b.state = StageState::Done(res);
            self.report_in_order(shard, now);
        }
    }

    /// Submits the sealed buffers (after the receive), oldest first.
    pub(crate) fn submit(
        &mut self,
        backend: &mut Backend,
        files: &mut OpenFiles,
        shard: &mut ReceiverShard,
        now: ProtoInstant,
    ) {
        self.seal(files, shard, now);
        let Some(ring) = ring_of(backend, self.mode) else { return };
        self.register(ring);
        for k in 0..self.order.len() {
            let i = self.order[k];
            let b = &self.bufs[usize::from(i)];
            // Repeated data waits until the write of the same pages ends (see
            // `overlaps_in_flight`); the next round submits it.
            if b.state == StageState::Sealed && !self.overlaps_in_flight(b.file, b.offset, b.len) {
                self.submit_one(ring, files, i);
            }
        }
        self.report_in_order(shard, now);
    }

    /// Registers the write arenas with the ring (`uring::fixed`): once, at the first
    /// submission; afterwards a table look-up per buffer finds them registered (or the
    /// registration refused) and changes nothing.
    fn register(&mut self, ring: &mut UringBackend) {
        for arena in &mut self.arenas {
            // SAFETY: each arena is a `DiskBuf` allocated once in `Stager::new` (it never
            // moves) and freed only with the stager, after `DiskIo::drain` released the registration. Every
            // run lies inside one arena, so its writes find the arena's registration.
            unsafe { ring.register_fixed(arena.as_mut_ptr(), arena.len()) };
        }
    }

    /// Submits buffer `i` as up to [`PARTS`] writes (see [`split`]).
    fn submit_one(&mut self, ring: &mut UringBackend, files: &mut OpenFiles, i: u8) {
        let b = &mut self.bufs[usize::from(i)];
        let started =
            files.reserve(b.file, b.offset, b.len).and_then(|()| files.pin_with_direct(b.file));
        let (fd, direct) = match started {
            Ok(fds) => fds,
            Err(e) => {
                b.state = StageState::Done(Err(e));
                return;
            }
        };
        b.align = direct.map_or(0, |(_, a)| a);
        b.state = StageState::InFlight;
        b.parts_left = 0;
        for (part, range) in split(b.offset, b.len, b.align).into_iter().enumerate() {
            if range.is_empty() {
                continue;
            }
            let (fd, is_direct) = match (part, direct) {
                (1, Some((dfd, _))) => (dfd, true),
                _ => (fd, false),
            };
            let at = b.offset + range.start as u64;
            let arena = &self.arenas[usize::from(b.arena)];
            let ptr = arena[b.start + range.start..].as_ptr();
            // SAFETY: the arena is owned by this stager, allocated once; this run's bytes are
            // not written while `InFlight` (only the run being filled grows, and runs never
            // overlap: `place`) and the arena is not freed before its completions are taken
            // (`DiskIo::drain` before drop). The descriptors are pinned until the last part
            // completes. An O_DIRECT part is aligned in memory, offset and length by
            // construction (`split`, and `start`).
            let pushed = unsafe {
                ring.push_disk_write(fd, ptr, range.len() as u32, at, tag(b.file, i, true, part))
            };
            match pushed {
                Ok(()) => {
                    b.parts_left += 1;
                    self.direct_ops += u64::from(is_direct);
                }
                Err(_) => {
                    let data = &arena[b.start + range.start..b.start + range.end];
                    if let Err(e) = files.write_at(b.file, at, data) {
                        b.error.get_or_insert(e);
                    }
                }
            }
        }
        if b.parts_left == 0 {
            files.unpin(b.file);
            b.state = StageState::Done(b.error.map_or(Ok(b.len), Err));
        }
    }

    /// Part `part` of buffer `i`'s write finished with `result`: a short count is finished
    /// here, synchronously and buffered; the buffer is done when all its parts are.
    fn on_write_done(&mut self, files: &mut OpenFiles, i: u8, part: usize, result: i32) {
        let Some(b) = self.bufs.get_mut(usize::from(i)) else { return };
        if b.state != StageState::InFlight || b.parts_left == 0 {
            return;
        }
        let range = split(b.offset, b.len, b.align)[part.min(PARTS - 1)].clone();
        let want = range.len();
        let res = match ring_result(result) {
            Ok(n) if n >= want => Ok(()),
            // Short (or a retryable errno): the rest the synchronous way, which loops until
            // done or a real error, ENOSPC included.
            Ok(n) => {
                let from = range.start + n;
                let data = &self.arenas[usize::from(b.arena)][b.start + from..b.start + range.end];
                files
                    .write_at(b.file, b.offset + from as u64, data)
                    .and_then(|m| if m == data.len() { Ok(()) } else { Err(DiskError::NoSpace) })
            }
            Err(e) if e.is_transient() => {
                let arena = &self.arenas[usize::from(b.arena)];
                let data = &arena[b.start + range.start..b.start + range.end];
                files.write_at(b.file, b.offset + range.start as u64, data).map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            b.error.get_or_insert(e);
        }
        b.parts_left -= 1;
        if b.parts_left == 0 {
            files.unpin(b.file);
            b.state = StageState::Done(b.error.map_or(Ok(b.len), Err));
        }
    }

    /// Hands finished writes to the shard in staging order.
    pub(crate) fn report_in_order(&mut self, shard: &mut ReceiverShard, now: ProtoInstant) {
        while let Some(&i) = self.order.front() {
            let b = &mut self.bufs[usize::from(i)];
            let StageState::Done(res) = b.state else { break };
            shard.handle_write_done_data(now, b.file, b.offset, b.data(&self.arenas), res);
            b.state = StageState::Free;
            self.order.pop_front();
        }
    }
}

/// One shard's disk I/O state.
#[derive(Debug)]
pub(crate) struct DiskIo {
    pub mode: DiskMode,
}

impl DiskIo {
    pub(crate) fn new(backend: &Backend) -> DiskIo {
        DiskIo { mode: DiskMode::for_backend(backend) }
    }

    /// True when the receiver should try O_DIRECT for its writes: ring mode, unless
    /// `HAUL_DISK_IO=buffered`.
    pub(crate) fn is_direct_wanted(&self) -> bool {
        let buffered = std::env::var(DISK_IO_ENV).is_ok_and(|v| v.trim() == "buffered");
        self.mode == DiskMode::Ring && !buffered
    }

    /// Takes every finished ring operation: reads go back to `client`, writes to `stager`
    /// (and from there, in order, to the receiver shard).
    pub(crate) fn take_done<C: ReadClient>(
        &self,
        backend: &mut Backend,
        files: &mut OpenFiles,
        client: &mut C,
        mut stager: Option<&mut Stager>,
        now: ProtoInstant,
    ) {
        let Some(ring) = ring_of(backend, self.mode) else { return };
        while let Some(DiskDone { tag, result }) = ring.poll_disk_done() {
            let (file, index, is_write, part) = untag(tag);
            if is_write {
                if let Some(s) = stager.as_deref_mut() {
                    s.on_write_done(files, index, part, result);
                }
            } else {
                files.unpin(file);
                // A filesystem that took the O_DIRECT open but refuses the read: the file
                // reads buffered from now on, and this read is asked for again (a transient
                // error to the proto shard).
                let res = match (part, result) {
                    (PART_DIRECT_READ, r) if r == -libc::EINVAL => {
                        files.refuse_direct_reads(file);
                        Err(DiskError::Interrupted)
                    }
                    _ => ring_result(result),
                };
                client.on_read(now, index, res);
            }
        }
    }

    /// Receiver, before a receive: waits (bounded) for writes until enough staging buffers
    /// are free, so the receive callback rarely has to write synchronously.
    pub(crate) fn make_room(
        &self,
        backend: &mut Backend,
        files: &mut OpenFiles,
        shard: &mut ReceiverShard,
        stager: &mut Stager,
        now: ProtoInstant,
    ) {
        let deadline = std::time::Instant::now() + MAX_STAGING_WAIT;
        loop {
            self.take_done(backend, files, shard, Some(stager), now);
            // Writes held back behind a write of the same pages go out once it ended.
            stager.submit(backend, files, shard, now);
            if stager.free_count() >= MIN_FREE_STAGING.min(stager.arenas.len()) {
                return;
            }
            match ring_of(backend, self.mode) {
                Some(ring) if ring.disk_busy() > 0 && std::time::Instant::now() < deadline => {
                    if ring.wait_disk(STAGING_WAIT).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Waits for every ring operation and hands its result on; after this, no kernel
    /// operation refers to the shard's or the stager's buffers.
    pub(crate) fn drain<C: ReadClient>(
        &self,
        backend: &mut Backend,
        files: &mut OpenFiles,
        client: &mut C,
        stager: Option<&mut Stager>,
        now: ProtoInstant,
    ) {
        if let Some(ring) = ring_of(backend, self.mode) {
            ring.drain_disk();
            // Nothing is in flight: the registered buffers may be freed after this.
            ring.release_fixed();
        }
        self.take_done(backend, files, client, stager, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_makes_an_aligned_middle_and_covers_every_byte() {
        assert_eq!(split(100, 50, 0), [0..50, 50..50, 50..50]);
        // Inside one block: nothing aligned.
        assert_eq!(split(100, 50, 4096), [0..50, 50..50, 50..50]);
        assert_eq!(split(0, 8192, 4096), [0..0, 0..8192, 8192..8192]);
        assert_eq!(split(4000, 10000, 4096), [0..96, 96..8288, 8288..10000]);
        for (offset, len) in [(1u64, 1usize), (4095, 2), (4096, 4095), (12345, 1 << 20), (0, 0)] {
            let [h, m, t] = split(offset, len, 4096);
            assert_eq!((h.start, h.end, m.end, t.end), (0, m.start, t.start, len));
            assert!((offset + m.start as u64).is_multiple_of(4096) || m.is_empty());
            assert!(m.len().is_multiple_of(4096));
        }
    }

    #[test]
    fn tags_round_trip() {
        for (file, index, is_write, part) in
            [(0, 0, false, 0), (u32::MAX, 255, true, 2), (7, 3, true, 1)]
        {
            assert_eq!(untag(tag(file, index, is_write, part)), (file, index, is_write, part));
        }
        assert_eq!(ring_result(5), Ok(5));
        assert_eq!(ring_result(-libc::ENOSPC), Err(DiskError::NoSpace));
        assert_eq!(ring_result(-libc::EINTR), Err(DiskError::Interrupted));
    }
}
