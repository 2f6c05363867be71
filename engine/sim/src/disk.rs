//! The disk model: one simulated disk per side.
//!
//! Files are either *stored* (the bytes live in memory: the sender's generated from a seed, the
//! receiver's as written) or *virtual* (up to 1 TiB: byte `i` is a pure function of the file's
//! seed and `i`; the sender reads it from the function, the receiver checks every written byte
//! against it and keeps only the written ranges). Operations (reads, writes, finalizes) wait
//! for one of `concurrency` slots, then take `latency` plus a random jitter. Faults:
//! - transient: a read or write fails with [`DiskError::Interrupted`], or moves fewer bytes
//!   than asked (a short read or write). The session must recover from these.
//! - fatal: from the `after_ops`-th operation on, every operation of the chosen kind fails with
//!   the chosen error (EIO on anything, ENOSPC on writes). The session must abort naming it.
//!
//! Invariants: completions are yielded in time order (ties by submission order); a write only
//! changes the file when it completes, and only the bytes it reports; the queue of waiting
//! operations is bounded by [`MAX_QUEUED_OPS`] (more is a driver bug, reported as an error).

use haul_proto::rangeset::RangeSet;
use haul_proto::rng::Rng;
use haul_proto::session::DiskError;
use haul_proto::time::{Duration, Instant};
use std::collections::VecDeque;

/// Most operations one disk holds waiting for a slot.
pub const MAX_QUEUED_OPS: usize = 1 << 16;
/// Most concurrent operations a disk model may be given.
pub const MAX_CONCURRENCY: usize = 64;

/// Byte `offset` of a virtual file with `seed`, for a run of bytes: fills `out` with bytes
/// `offset..offset + out.len()`.
pub fn virtual_fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let word = mix(seed, pos >> 3).to_le_bytes();
        let in_word = (pos & 7) as usize;
        let n = (8 - in_word).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[in_word..in_word + n]);
        i += n;
        pos += n as u64;
    }
}

/// SplitMix64's finalizer over (seed, word index).
fn mix(seed: u64, word: u64) -> u64 {
    let mut z = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Content of a stored sender file of `size` bytes from `seed`.
pub fn stored_content(seed: u64, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    Rng::new(seed).fill_bytes(&mut v);
    v
}

/// One file on a simulated disk.
#[derive(Debug)]
pub enum SimFile {
    /// Bytes in memory; `written` records which ranges a receiver wrote.
    Stored { data: Vec<u8>, written: RangeSet },
    /// Bytes from [`virtual_fill`]; a receiver's writes are compared, not kept.
    Virtual { seed: u64, size: u64, written: RangeSet, mismatched_bytes: u64 },
}

impl SimFile {
    pub fn size(&self) -> u64 {
        match self {
            SimFile::Stored { data, .. } => data.len() as u64,
            SimFile::Virtual { size, .. } => *size,
        }
    }
    pub fn written(&self) -> &RangeSet {
        match self {
            SimFile::Stored { written, .. } | SimFile::Virtual { written, .. } => written,
        }
    }
    /// Fill `out` from `offset`; bytes past the end are left alone. Returns bytes filled.
    fn read(&self, offset: u64, out: &mut [u8]) -> usize {
        let n = self.size().saturating_sub(offset).min(out.len() as u64) as usize;
        match self {
            SimFile::Stored { data, .. } => {
                let o = offset as usize;
                out[..n].copy_from_slice(&data[o..o + n]);
            }
            SimFile::Virtual { seed, .. } => virtual_fill(*seed, offset, &mut out[..n]),
        }
        n
    }
    /// Write `data` at `offset`, clipped to the file. Returns bytes that fell outside the file.
    fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let n = self.size().saturating_sub(offset).min(data.len() as u64);
        match self {
            SimFile::Stored { data: d, written } => {
                let o = offset as usize;
                d[o..o + n as usize].copy_from_slice(&data[..n as usize]);
                written.insert(offset..offset + n);
            }
            SimFile::Virtual { seed, written, mismatched_bytes, .. } => {
                let mut want = vec![0u8; n as usize];
                virtual_fill(*seed, offset, &mut want);
                *mismatched_bytes += want.iter().zip(data).filter(|(a, b)| a != b).count() as u64;
                written.insert(offset..offset + n);
            }
        }
        data.len() as u64 - n
    }
}

/// Latency and transient faults of one disk.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    pub latency: Duration,
    /// Uniform extra latency in `[0, latency_jitter)`.
    pub latency_jitter: Duration,
    /// Operations in flight at once (1..=[`MAX_CONCURRENCY`]).
    pub concurrency: usize,
    /// Chance a read or write fails with `Interrupted`.
    pub p_interrupted: f64,
    /// Chance a read or write moves fewer bytes than asked.
    pub p_short: f64,
}

impl DiskConfig {
    pub fn fast() -> DiskConfig {
        DiskConfig {
            latency: Duration::from_micros(50),
            latency_jitter: Duration::ZERO,
            concurrency: 8,
            p_interrupted: 0.0,
            p_short: 0.0,
        }
    }
}

/// Which operations a fatal fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Finalize,
    Any,
}

/// A fatal fault: from the `after_ops`-th operation of kind `op`, each such operation fails with
/// `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatalFault {
    pub op: FaultOp,
    pub after_ops: u64,
    pub error: DiskError,
}

/// An operation a driver submits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskOp {
    Read { shard: u8, slot: u8, file: u32, offset: u64, len: u32 },
    Write { shard: u8, file: u32, offset: u64, data: Vec<u8> },
    Finalize { file: u32 },
}

impl DiskOp {
    fn matches(&self, op: FaultOp) -> bool {
        matches!(
            (self, op),
            (_, FaultOp::Any)
                | (DiskOp::Read { .. }, FaultOp::Read)
                | (DiskOp::Write { .. }, FaultOp::Write)
                | (DiskOp::Finalize { .. }, FaultOp::Finalize)
        )
    }
}

/// A finished operation and its result (bytes moved, or the error). For a read, the driver
/// copies `result` bytes with [`Disk::read_into`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub op: DiskOp,
    pub result: Result<usize, DiskError>,
}

/// Why a driver's request was refused (the driver's or the protocol's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskModelError {
    #[error("disk queue full ({MAX_QUEUED_OPS} operations waiting)")]
    QueueFull,
    #[error("operation on file {0}, which does not exist")]
    NoSuchFile(u32),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub reads: u64,
    pub writes: u64,
    pub finalizes: u64,
    pub interrupted: u64,
    pub short: u64,
    pub fatal: u64,
    /// Bytes written past a file's end (a protocol bug if non-zero).
    pub out_of_bounds_bytes: u64,
}

#[derive(Debug)]
pub struct Disk {
    cfg: DiskConfig,
    rng: Rng,
    files: Vec<SimFile>,
    finalized: Vec<u32>,
    fatal: Option<FatalFault>,
    /// The error a fatal fault produced, once it has fired.
    fatal_fired: Option<DiskError>,
    matching_ops: u64,
    waiting: VecDeque<DiskOp>,
    /// (completion time, submission number, op, result), at most `concurrency`.
    in_flight: Vec<(Instant, u64, DiskOp, Result<usize, DiskError>)>,
    submitted: u64,
    stats: DiskStats,
}

impl Disk {
    pub fn new(cfg: DiskConfig, files: Vec<SimFile>, fatal: Option<FatalFault>, seed: u64) -> Disk {
        let cfg = DiskConfig { concurrency: cfg.concurrency.clamp(1, MAX_CONCURRENCY), ..cfg };
        Disk {
            cfg,
            rng: Rng::new(seed),
            files,
            finalized: Vec::new(),
            fatal,
            fatal_fired: None,
            matching_ops: 0,
            waiting: VecDeque::new(),
            in_flight: Vec::new(),
            submitted: 0,
            stats: DiskStats::default(),
        }
    }

    pub fn files(&self) -> &[SimFile] {
        &self.files
    }
    /// Files finalized, in the order they were.
    pub fn finalized(&self) -> &[u32] {
        &self.finalized
    }
    pub fn fatal_fired(&self) -> Option<DiskError> {
        self.fatal_fired
    }
    pub fn stats(&self) -> &DiskStats {
        &self.stats
    }
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    pub fn submit(&mut self, now: Instant, op: DiskOp) -> Result<(), DiskModelError> {
        let file = match &op {
            DiskOp::Read { file, .. } | DiskOp::Write { file, .. } | DiskOp::Finalize { file } => {
                *file
            }
        };
        if file as usize >= self.files.len() {
            return Err(DiskModelError::NoSuchFile(file));
        }
        if self.waiting.len() >= MAX_QUEUED_OPS {
            return Err(DiskModelError::QueueFull);
        }
        self.waiting.push_back(op);
        self.start_waiting(now);
        Ok(())
    }

    /// Move waiting operations into free slots; each one's fate is drawn when it starts.
    fn start_waiting(&mut self, now: Instant) {
        while self.in_flight.len() < self.cfg.concurrency {
            let Some(op) = self.waiting.pop_front() else { return };
            let mut latency = self.cfg.latency;
            if self.cfg.latency_jitter > Duration::ZERO {
                latency = latency
                    + Duration::from_nanos(self.rng.below(self.cfg.latency_jitter.as_nanos()));
            }
            let result = self.draw_result(&op);
            self.submitted += 1;
            self.in_flight.push((now + latency, self.submitted, op, result));
        }
    }

    /// The fate of one operation: fatal, transient, short, or whole.
    fn draw_result(&mut self, op: &DiskOp) -> Result<usize, DiskError> {
        if let Some(f) = self.fatal
            && op.matches(f.op)
        {
            self.matching_ops += 1;
            if self.matching_ops > f.after_ops {
                self.stats.fatal += 1;
                self.fatal_fired = Some(f.error);
                return Err(f.error);
            }
        }
        let len = match op {
            DiskOp::Read { len, .. } => *len as usize,
            DiskOp::Write { data, .. } => data.len(),
            DiskOp::Finalize { .. } => return Ok(0),
        };
        if self.rng.chance(self.cfg.p_interrupted) {
            self.stats.interrupted += 1;
            return Err(DiskError::Interrupted);
        }
        if len > 1 && self.rng.chance(self.cfg.p_short) {
            self.stats.short += 1;
            return Ok(1 + self.rng.below(len as u64 - 1) as usize);
        }
        Ok(len)
    }

    /// When the next operation completes.
    pub fn next_completion(&self) -> Option<Instant> {
        self.in_flight.iter().map(|(at, ..)| *at).min()
    }

    /// The next operation completed by `now`, applied (a write changes the file here).
    pub fn poll_completion(&mut self, now: Instant) -> Option<Completion> {
        let i = (0..self.in_flight.len())
            .filter(|&i| self.in_flight[i].0 <= now)
            .min_by_key(|&i| (self.in_flight[i].0, self.in_flight[i].1))?;
        let (_, _, op, result) = self.in_flight.swap_remove(i);
        self.apply(&op, result);
        self.start_waiting(now);
        Some(Completion { op, result })
    }

    fn apply(&mut self, op: &DiskOp, result: Result<usize, DiskError>) {
        match op {
            DiskOp::Read { .. } => self.stats.reads += 1,
            DiskOp::Write { file, offset, data, .. } => {
                self.stats.writes += 1;
                if let Ok(n) = result {
                    let f = &mut self.files[*file as usize];
                    self.stats.out_of_bounds_bytes += f.write(*offset, &data[..n]);
                }
            }
            DiskOp::Finalize { file } => {
                self.stats.finalizes += 1;
                if result.is_ok() {
                    self.finalized.push(*file);
                }
            }
        }
    }

    /// Copy a completed read's bytes into `out` (its first `n` bytes, `n` from the result).
    /// Returns bytes copied (fewer at the end of the file).
    pub fn read_into(&self, file: u32, offset: u64, out: &mut [u8]) -> usize {
        self.files.get(file as usize).map_or(0, |f| f.read(offset, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> SimFile {
        SimFile::Stored { data: vec![0; size as usize], written: RangeSet::new() }
    }

    fn drain(d: &mut Disk, now: Instant) -> Vec<Completion> {
        std::iter::from_fn(|| d.poll_completion(now)).collect()
    }

    /// Every completion, stepping the clock from one to the next.
    fn drain_all(d: &mut Disk) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Some(t) = d.next_completion() {
            out.extend(drain(d, t));
        }
        out
    }

    #[test]
    fn virtual_content_is_a_function_of_seed_and_offset() {
        let mut whole = vec![0u8; 100];
        virtual_fill(7, 3, &mut whole);
        let mut part = vec![0u8; 10];
        virtual_fill(7, 3 + 45, &mut part);
        assert_eq!(part[..], whole[45..55]);
        let mut other = vec![0u8; 100];
        virtual_fill(8, 3, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn concurrency_bounds_in_flight_and_order_is_by_time() {
        let cfg =
            DiskConfig { concurrency: 2, latency: Duration::from_millis(1), ..DiskConfig::fast() };
        let mut d = Disk::new(cfg, vec![stored(100)], None, 1);
        let t0 = Instant::ZERO;
        for i in 0..3 {
            d.submit(t0, DiskOp::Read { shard: 0, slot: i, file: 0, offset: 0, len: 10 }).unwrap();
        }
        assert_eq!(d.next_completion(), Some(t0 + Duration::from_millis(1)));
        assert!(drain(&mut d, t0).is_empty());
        let t1 = t0 + Duration::from_millis(1);
        let done = drain(&mut d, t1);
        assert_eq!(done.len(), 2, "two slots");
        assert_eq!(d.next_completion(), Some(t1 + Duration::from_millis(1)));
        assert!(!d.is_idle());
    }

    #[test]
    fn writes_land_at_completion_and_virtual_writes_are_verified() {
        let files = vec![
            stored(8),
            SimFile::Virtual {
                seed: 3,
                size: 1 << 40,
                written: RangeSet::new(),
                mismatched_bytes: 0,
            },
        ];
        let mut d = Disk::new(DiskConfig::fast(), files, None, 1);
        d.submit(
            Instant::ZERO,
            DiskOp::Write { shard: 0, file: 0, offset: 6, data: vec![1, 2, 3] },
        )
        .unwrap();
        let mut good = vec![0u8; 16];
        virtual_fill(3, (1 << 40) - 16, &mut good);
        d.submit(
            Instant::ZERO,
            DiskOp::Write { shard: 0, file: 1, offset: (1 << 40) - 16, data: good },
        )
        .unwrap();
        d.submit(Instant::ZERO, DiskOp::Write { shard: 0, file: 1, offset: 0, data: vec![0; 64] })
            .unwrap();
        assert_eq!(d.files()[0].written().covered(), 0, "not before completion");
        let done = drain(&mut d, Instant::from_nanos(u64::MAX / 2));
        assert_eq!(done.len(), 3);
        assert_eq!(d.stats().out_of_bounds_bytes, 1);
        let SimFile::Virtual { mismatched_bytes, written, .. } = &d.files()[1] else { panic!() };
        assert!(*mismatched_bytes > 40, "zeros are not the virtual content");
        assert_eq!(written.covered(), 80);
        let mut out = [9u8; 4];
        assert_eq!(d.read_into(0, 6, &mut out), 2);
        assert_eq!(out, [1, 2, 9, 9]);
    }

    #[test]
    fn fatal_fault_fires_after_n_matching_ops_and_sticks() {
        let fatal = FatalFault { op: FaultOp::Write, after_ops: 2, error: DiskError::NoSpace };
        let mut d = Disk::new(DiskConfig::fast(), vec![stored(100)], Some(fatal), 1);
        let t = Instant::ZERO;
        d.submit(t, DiskOp::Read { shard: 0, slot: 0, file: 0, offset: 0, len: 4 }).unwrap();
        for i in 0..4 {
            d.submit(t, DiskOp::Write { shard: 0, file: 0, offset: i, data: vec![1] }).unwrap();
        }
        let results: Vec<_> = drain_all(&mut d).into_iter().map(|c| c.result).collect();
        assert_eq!(
            results,
            vec![Ok(4), Ok(1), Ok(1), Err(DiskError::NoSpace), Err(DiskError::NoSpace)]
        );
        assert_eq!(d.fatal_fired(), Some(DiskError::NoSpace));
        assert_eq!(d.files()[0].written().covered(), 2);
    }

    #[test]
    fn transient_faults_are_interrupted_or_short() {
        let cfg = DiskConfig { p_interrupted: 0.3, p_short: 0.3, ..DiskConfig::fast() };
        let mut d = Disk::new(cfg, vec![stored(4096)], None, 2);
        for i in 0..200 {
            d.submit(
                Instant::ZERO,
                DiskOp::Read { shard: 0, slot: 0, file: 0, offset: i, len: 100 },
            )
            .unwrap();
        }
        let done = drain_all(&mut d);
        assert_eq!(done.len(), 200);
        assert!(done.iter().all(|c| matches!(c.result, Ok(1..=100) | Err(DiskError::Interrupted))));
        assert!(d.stats().interrupted > 20 && d.stats().short > 20);
        assert!(d.submit(Instant::ZERO, DiskOp::Finalize { file: 9 }).is_err());
    }
}
