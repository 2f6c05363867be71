//! Resume state: checkpoints, resume levels and fingerprints.
//!
//! A checkpoint records, for one file, the sender's identity of it ([`FileIdentity`]: size,
//! mtime, optional BLAKE3 of its first MiB) and the byte ranges of the partial file known
//! written AND fdatasync'ed. It lives at `<dir>/.<name>.haul-partial.ckpt` and is replaced
//! atomically (write `.tmp`, fdatasync, rename). Format: docs/FILES.md, "Checkpoints".
//!
//! Invariants:
//! - Data is durable before a checkpoint covers it: [`CheckpointWriter::commit`] is the only
//!   way ranges become "synced", and it fdatasyncs the file before writing the checkpoint.
//! - Loading never panics and never trusts: a short, corrupt, foreign (another file's), or
//!   out-of-range checkpoint is [`Loaded::Invalid`], which means start over.
//! - Both ends compute fingerprints with the same functions ([`fingerprint`],
//!   [`FileIdentity::of_file`]), so a match means the same bytes.

use super::dest::{DestRoot, ParentDir, open_beneath};
use super::error::{FileError, Op};
use super::names::{PATH_MAX, SafeName};
use super::partial::{CKPT_SUFFIX, PartialFile, TMP_SUFFIX, partial_name, read_full_at};
use haul_proto::rangeset::RangeSet;
use rustix::fs::{AtFlags, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use thiserror::Error;

/// A 32-byte BLAKE3 value.
pub type Hash = [u8; 32];

/// First bytes of every checkpoint file.
pub const CKPT_MAGIC: [u8; 8] = *b"HAULCKPT";
/// Format version this code writes and reads.
pub const CKPT_VERSION: u16 = 1;
/// Most ranges one checkpoint records; beyond it the highest ranges are left out (safe: they
/// are only sent again).
pub const MAX_CKPT_RANGES: usize = 1024;
/// Largest checkpoint file accepted when loading.
pub const MAX_CKPT_BYTES: usize = 64 + PATH_MAX + 2 + MAX_CKPT_RANGES * 16 + 32;
/// Upper bound of the checkpoint interval (the other bound is 1% of the file).
pub const MAX_CHECKPOINT_INTERVAL_BYTES: u64 = 64 << 20;
/// Bytes hashed for [`FileIdentity::head_hash`].
pub const HEAD_HASH_BYTES: u64 = 1 << 20;
/// Samples in a sparse fingerprint.
pub const SPARSE_SAMPLES: u64 = 16;
/// Bytes per sample of a sparse fingerprint.
pub const SPARSE_SAMPLE_BYTES: u64 = 64 << 10;
/// Read buffer of the fingerprint functions.
const HASH_CHUNK_BYTES: usize = 1 << 20;

const HEAD_CONTEXT: &str = "haul 2026-11 file head v1";
const SPARSE_CONTEXT: &str = "haul 2026-11 sparse fingerprint v1";
const FULL_CONTEXT: &str = "haul 2026-11 full fingerprint v1";
const TRAILER_CONTEXT: &str = "haul 2026-11 checkpoint trailer v1";

/// Progress, in bytes, after which a checkpoint is due: min(64 MiB, 1% of the file), at
/// least one byte.
pub fn checkpoint_interval_bytes(size: u64) -> u64 {
    size.div_ceil(100).clamp(1, MAX_CHECKPOINT_INTERVAL_BYTES)
}

/// How much of an interrupted transfer to trust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResumeLevel {
    /// Start every file over.
    None,
    /// Keep the checkpointed ranges if the sender's size and mtime (and head hash, when both
    /// sides have one) match the checkpoint.
    #[default]
    Attributes,
    /// Also require equal sparse fingerprints of the kept ranges.
    SparseChecksum,
    /// Also require equal full fingerprints of the kept ranges.
    FullChecksum,
}

/// The sender's identity of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    pub size: u64,
    pub mtime_ns: i64,
    /// BLAKE3 (derive-key context "haul 2026-11 file head v1") of the first
    /// [`HEAD_HASH_BYTES`] of the file, if computed.
    pub head_hash: Option<Hash>,
}

impl FileIdentity {
    /// The identity of `file`, hashing its head if `with_head_hash`.
    pub fn of_file(
        file: &File,
        size: u64,
        mtime_ns: i64,
        with_head_hash: bool,
    ) -> std::io::Result<FileIdentity> {
        let head_hash = if with_head_hash {
            let mut h = blake3::Hasher::new_derive_key(HEAD_CONTEXT);
            let mut buf = vec![0; HEAD_HASH_BYTES.min(size) as usize];
            let n = read_full_at(file, &mut buf, 0)?;
            h.update(&buf[..n]);
            Some(*h.finalize().as_bytes())
        } else {
            None
        };
        Ok(FileIdentity { size, mtime_ns, head_hash })
    }

    /// Same size and mtime, and same head hash when both have one.
    pub fn matches(&self, other: &FileIdentity) -> bool {
        let heads_agree = match (self.head_hash, other.head_hash) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.size == other.size && self.mtime_ns == other.mtime_ns && heads_agree
    }
}

/// Which fingerprint a resume level compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FingerprintKind {
    Sparse,
    Full,
}

/// BLAKE3 over `ranges` of `file`, as defined in docs/FILES.md ("Resume levels"). The sender
/// runs it over its source, the receiver over its partial; equal values mean equal bytes
/// (all of them for `Full`, the samples for `Sparse`). Fails if a range runs past the end.
pub fn fingerprint(
    kind: FingerprintKind,
    file: &File,
    ranges: &[Range<u64>],
) -> std::io::Result<Hash> {
    let mut buf = vec![0; HASH_CHUNK_BYTES];
    let context = match kind {
        FingerprintKind::Sparse => SPARSE_CONTEXT,
        FingerprintKind::Full => FULL_CONTEXT,
    };
    let mut h = blake3::Hasher::new_derive_key(context);
    let covered: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    if kind == FingerprintKind::Full || covered <= SPARSE_SAMPLES * SPARSE_SAMPLE_BYTES {
        for r in ranges {
            hash_span(&mut h, file, r.start, r.end.saturating_sub(r.start), &mut buf)?;
        }
        return Ok(*h.finalize().as_bytes());
    }
    for i in 0..SPARSE_SAMPLES {
        // Sample i starts at covered offset i·(C−S)/(N−1): first and last samples touch the
        // ends of the covered bytes. u128: C can be near 2^64.
        let at = (u128::from(i) * u128::from(covered - SPARSE_SAMPLE_BYTES)
            / u128::from(SPARSE_SAMPLES - 1)) as u64;
        let mut want = SPARSE_SAMPLE_BYTES;
        for (start, len) in covered_pieces(ranges, at, &mut want) {
            hash_span(&mut h, file, start, len, &mut buf)?;
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// The file pieces holding covered bytes `at..at+want` (may span ranges).
fn covered_pieces(ranges: &[Range<u64>], at: u64, want: &mut u64) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    let mut skip = at;
    for r in ranges {
        let len = r.end.saturating_sub(r.start);
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(*want);
        pieces.push((r.start + skip, take));
        *want -= take;
        skip = 0;
        if *want == 0 {
            break;
        }
    }
    pieces
}

/// Hashes `start`, `len` and the bytes `start..start+len` of `file`.
fn hash_span(
    h: &mut blake3::Hasher,
    file: &File,
    start: u64,
    len: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    h.update(&start.to_le_bytes());
    h.update(&len.to_le_bytes());
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let got = read_full_at(file, &mut buf[..n], start + done)?;
        if got < n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// Why a checkpoint file was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum CheckpointInvalid {
    #[error("checkpoint is truncated or too large")]
    BadLength,
    #[error("not a checkpoint (bad magic)")]
    BadMagic,
    #[error("checkpoint format version {0} is not {CKPT_VERSION}")]
    BadVersion(u16),
    #[error("checkpoint checksum does not match (corrupt)")]
    BadChecksum,
    #[error("checkpoint belongs to another file")]
    Foreign,
    #[error("checkpoint ranges are unsorted, overlapping, empty or past the file's end")]
    BadRanges,
}

/// The decoded content of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file's relative name (a checkpoint found under another name is foreign).
    pub name: String,
    pub identity: FileIdentity,
    /// Sorted, disjoint, non-empty ranges, each within `identity.size`.
    pub ranges: Vec<Range<u64>>,
}

impl Checkpoint {
    /// The on-disk bytes (docs/FILES.md, "Checkpoints"): little-endian fields, then a BLAKE3
    /// trailer over everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let ranges = &self.ranges[..self.ranges.len().min(MAX_CKPT_RANGES)];
        let mut out = Vec::with_capacity(64 + self.name.len() + ranges.len() * 16 + 32);
        out.extend_from_slice(&CKPT_MAGIC);
        out.extend_from_slice(&CKPT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.identity.size.to_le_bytes());
        out.extend_from_slice(&self.identity.mtime_ns.to_le_bytes());
        out.push(u8::from(self.identity.head_hash.is_some()));
        out.extend_from_slice(&self.identity.head_hash.unwrap_or([0; 32]));
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
        for r in ranges {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&r.end.to_le_bytes());
        }
        let trailer = blake3::Hasher::new_derive_key(TRAILER_CONTEXT).update(&out).finalize();
        out.extend_from_slice(trailer.as_bytes());
        out
    }

    /// Parses and checks a checkpoint; any defect is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointInvalid> {
        if bytes.len() < 32 || bytes.len() > MAX_CKPT_BYTES {
            return Err(CheckpointInvalid::BadLength);
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 32);
        let mut r = Reader { rest: body };
        if r.take(8)? != CKPT_MAGIC {
            return Err(CheckpointInvalid::BadMagic);
        }
        let version = r.u16()?;
        if version != CKPT_VERSION {
            return Err(CheckpointInvalid::BadVersion(version));
        }
        let expected = blake3::Hasher::new_derive_key(TRAILER_CONTEXT).update(body).finalize();
        if expected.as_bytes() != trailer {
            return Err(CheckpointInvalid::BadChecksum);
        }
        let size = r.u64()?;
        let mtime_ns = r.u64()? as i64;
        let has_head = r.take(1)?[0];
        let head: Hash = r.take(32)?.try_into().map_err(|_| CheckpointInvalid::BadLength)?;
        let head_hash = match has_head {
            0 => None,
            1 => Some(head),
            _ => return Err(CheckpointInvalid::BadLength),
        };
        let name_len = usize::from(r.u16()?);
        let name = String::from_utf8(r.take(name_len)?.to_vec())
            .map_err(|_| CheckpointInvalid::Foreign)?;
        let count = usize::from(r.u16()?);
        if count > MAX_CKPT_RANGES {
            return Err(CheckpointInvalid::BadRanges);
        }
        let mut ranges = Vec::with_capacity(count);
        for _ in 0..count {
            let (start, end) = (r.u64()?, r.u64()?);
            let after_previous = ranges.last().is_none_or(|p: &Range<u64>| p.end < start);
            if start >= end || end > size || !after_previous {
                return Err(CheckpointInvalid::BadRanges);
            }
            ranges.push(start..end);
        }
        if !r.rest.is_empty() {
            return Err(CheckpointInvalid::BadLength);
        }
        Ok(Checkpoint { name, identity: FileIdentity { size, mtime_ns, head_hash }, ranges })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointInvalid> {
        if self.rest.len() < n {
            return Err(CheckpointInvalid::BadLength);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, CheckpointInvalid> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, CheckpointInvalid> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// What was found at a file's checkpoint name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No checkpoint (or no partial directory).
    Missing,
    /// A checkpoint that must not be used: start over.
    Invalid(CheckpointInvalid),
    /// A well-formed checkpoint for this name.
    Found(Checkpoint),
}

/// What the receiver left of `name` earlier: its checkpoint and its partial file's length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub checkpoint: Loaded,
    /// Length of the partial file, `None` if there is none.
    pub partial_len: Option<u64>,
}

/// Reads what an interrupted transfer left of `name` beneath `dest`. I/O errors are errors;
/// any defect in the content is [`Loaded::Invalid`].
pub fn load_leftover(dest: &DestRoot, name: &SafeName) -> Result<Leftover, FileError> {
    load_leftover_in(dest.find_parent(name)?.as_ref(), name)
}

/// [`load_leftover`] given the directory of `name` (`None`: it does not exist).
pub fn load_leftover_in(
    parent: Option<&ParentDir>,
    name: &SafeName,
) -> Result<Leftover, FileError> {
    let missing = Leftover { checkpoint: Loaded::Missing, partial_len: None };
    let Some(parent) = parent else { return Ok(missing) };
    let partial = partial_name(name.file_name());
    let partial_len =
        match rustix::fs::statat(parent.as_fd(), partial.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {
                Some(st.st_size as u64)
            }
            Ok(_) | Err(Errno::NOENT) => None,
            Err(e) => return Err(FileError::io(name.as_str(), Op::Stat, e)),
        };
    let ckpt = format!("{partial}{CKPT_SUFFIX}");
    let fd = match open_beneath(parent.as_fd(), &ckpt, OFlags::RDONLY, 0) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Leftover { checkpoint: Loaded::Missing, partial_len }),
        // A symlink or other oddity at our name: not ours, so not trusted.
        Err(Errno::LOOP | Errno::XDEV) => {
            return Ok(Leftover {
                checkpoint: Loaded::Invalid(CheckpointInvalid::Foreign),
                partial_len,
            });
        }
        Err(e) => return Err(FileError::io(name.as_str(), Op::Open, e)),
    };
    let file = File::from(fd);
    let mut buf = vec![0; MAX_CKPT_BYTES + 1];
    let n =
        read_full_at(&file, &mut buf, 0).map_err(|e| FileError::io(name.as_str(), Op::Read, e))?;
    let checkpoint = match Checkpoint::decode(&buf[..n]) {
        Ok(c) if c.name == name.as_str() => Loaded::Found(c),
        Ok(_) => Loaded::Invalid(CheckpointInvalid::Foreign),
        Err(why) => Loaded::Invalid(why),
    };
    Ok(Leftover { checkpoint, partial_len })
}

/// Why the receiver starts a file over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum StartOver {
    #[error("resume level is none")]
    LevelNone,
    #[error("no checkpoint")]
    NoCheckpoint,
    #[error("checkpoint unusable: {0}")]
    Invalid(CheckpointInvalid),
    #[error("the source changed (size, mtime or head hash differ)")]
    SourceChanged,
    #[error("the partial file is missing or shorter than its checkpoint")]
    PartialShort,
    #[error("fingerprints differ")]
    FingerprintMismatch,
}

/// The resume decision for one file, before fingerprints are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumePlan {
    StartOver(StartOver),
    /// Keep `ranges`, provided the two ends' `verify` fingerprints of them are equal.
    Keep {
        ranges: Vec<Range<u64>>,
        verify: Option<FingerprintKind>,
    },
}

impl ResumePlan {
    /// Decides from what was left and the sender's identity of the file.
    pub fn decide(level: ResumeLevel, left: &Leftover, source: &FileIdentity) -> ResumePlan {
        let verify = match level {
            ResumeLevel::None => return ResumePlan::StartOver(StartOver::LevelNone),
            ResumeLevel::Attributes => None,
            ResumeLevel::SparseChecksum => Some(FingerprintKind::Sparse),
            ResumeLevel::FullChecksum => Some(FingerprintKind::Full),
        };
        let ckpt = match &left.checkpoint {
            Loaded::Missing => return ResumePlan::StartOver(StartOver::NoCheckpoint),
            Loaded::Invalid(why) => return ResumePlan::StartOver(StartOver::Invalid(*why)),
            Loaded::Found(c) => c,
        };
        if !ckpt.identity.matches(source) {
            return ResumePlan::StartOver(StartOver::SourceChanged);
        }
        let needed_len = ckpt.ranges.last().map_or(0, |r| r.end);
        if left.partial_len.is_none_or(|len| len < needed_len) {
            return ResumePlan::StartOver(StartOver::PartialShort);
        }
        ResumePlan::Keep { ranges: ckpt.ranges.clone(), verify }
    }

    /// Settles a `Keep` once both fingerprints are known (`None` when `verify` was `None`).
    pub fn confirm(self, receiver: Option<Hash>, sender: Option<Hash>) -> ResumePlan {
        match self {
            ResumePlan::Keep { verify: Some(_), .. }
                if receiver.is_none() || receiver != sender =>
            {
                ResumePlan::StartOver(StartOver::FingerprintMismatch)
            }
            plan => plan,
        }
    }

    /// The bytes kept from offset 0 onward, rounded down to `block_size` (for a runtime that
    /// resumes a prefix only).
    pub fn kept_prefix(&self, block_size: u64) -> u64 {
        match self {
            ResumePlan::Keep { ranges, .. } => match ranges.first() {
                Some(r) if r.start == 0 => r.end - r.end % block_size.max(1),
                _ => 0,
            },
            ResumePlan::StartOver(_) => 0,
        }
    }
}

/// Records progress of one partial file and writes its checkpoint, fdatasync'ing the data
/// first. Holds its own handles on the file and its directory.
#[derive(Debug)]
pub struct CheckpointWriter {
    name: SafeName,
    parent: ParentDir,
    file: File,
    ckpt: String,
    tmp: String,
    identity: FileIdentity,
    interval_bytes: u64,
    pending: RangeSet,
    synced: RangeSet,
    since_commit: u64,
}

impl CheckpointWriter {
    /// A writer for `partial`, whose `kept` ranges (from a resume) are already durable.
    pub fn new(
        partial: &PartialFile,
        identity: FileIdentity,
        kept: &[Range<u64>],
    ) -> Result<CheckpointWriter, FileError> {
        let name = partial.name().clone();
        let file = partial
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| FileError::io(name.as_str(), Op::Open, e))?;
        let mut synced = RangeSet::new();
        for r in kept {
            synced.insert(r.start..r.end.min(partial.size()));
        }
        let ckpt = format!("{}{CKPT_SUFFIX}", partial.partial_name());
        Ok(CheckpointWriter {
            parent: partial.parent().try_clone(name.as_str())?,
            tmp: format!("{ckpt}{TMP_SUFFIX}"),
            ckpt,
            file: File::from(file),
            interval_bytes: checkpoint_interval_bytes(identity.size),
            identity: FileIdentity { size: partial.size(), ..identity },
            pending: RangeSet::new(),
            synced,
            since_commit: 0,
            name,
        })
    }

    /// Notes that `range` has been written (not yet synced).
    pub fn record_written(&mut self, range: Range<u64>) -> Result<(), FileError> {
        if range.start > range.end || range.end > self.identity.size {
            return Err(FileError::OutOfRange {
                file: self.name.to_string(),
                start: range.start,
                end: range.end,
                size: self.identity.size,
            });
        }
        self.since_commit += self.pending.insert(range);
        Ok(())
    }

    /// True when at least one interval of progress is unrecorded.
    pub fn is_commit_due(&self) -> bool {
        self.since_commit >= self.interval_bytes
    }

    /// Commits if due; returns whether it did.
    pub fn maybe_commit(&mut self) -> Result<bool, FileError> {
        if !self.is_commit_due() {
            return Ok(false);
        }
        self.commit()?;
        Ok(true)
    }

    /// fdatasync the file, then write the checkpoint covering everything recorded so far.
    pub fn commit(&mut self) -> Result<(), FileError> {
        let file = self.name.as_str();
        self.file.sync_data().map_err(|e| FileError::io(file, Op::Sync, e))?;
        for r in self.pending.iter() {
            self.synced.insert(r);
        }
        self.pending.clear();
        self.since_commit = 0;
        let ckpt = Checkpoint {
            name: self.name.to_string(),
            identity: self.identity,
            ranges: self.synced.iter().take(MAX_CKPT_RANGES).collect(),
        };
        self.write_atomically(&ckpt.encode())
    }

    /// Ranges written and durable.
    pub fn synced(&self) -> &RangeSet {
        &self.synced
    }

    /// Progress between checkpoints, in bytes.
    pub fn interval_bytes(&self) -> u64 {
        self.interval_bytes
    }

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), FileError> {
        let file = self.name.as_str();
        let dir = self.parent.as_fd();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
        let fd = open_beneath(dir, &self.tmp, flags, 0o600)
            .map_err(|e| super::dest::classify_beneath(&self.name, &self.tmp, Op::Create, e))?;
        let mut tmp = File::from(fd);
        tmp.write_all(bytes).map_err(|e| FileError::io(file, Op::Write, e))?;
        tmp.sync_data().map_err(|e| FileError::io(file, Op::Sync, e))?;
        rustix::fs::renameat(dir, self.tmp.as_str(), dir, self.ckpt.as_str())
            .map_err(|e| FileError::io(file, Op::Rename, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            name: "dir/big.bin".into(),
            identity: FileIdentity { size: 10 << 20, mtime_ns: -5, head_hash: Some([7; 32]) },
            ranges: vec![0..(4 << 20), (5 << 20)..(6 << 20)],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        let c = Checkpoint {
            identity: FileIdentity { head_hash: None, ..sample().identity },
            ranges: vec![],
            ..sample()
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Checkpoint::decode(&b).is_err(), "byte {i} bit {bit}");
            }
            assert!(Checkpoint::decode(&bytes[..i]).is_err(), "truncated at {i}");
        }
    }

    #[test]
    fn bad_ranges_are_refused_even_with_a_valid_trailer() {
        for ranges in
            [&[(5, 5)][..], &[(0, 2), (1, 3)], &[(0, 2), (2, 3)], &[(4, 2)], &[(0, 11 << 20)]]
        {
            let ranges = ranges.iter().map(|&(start, end)| Range { start, end }).collect();
            let c = Checkpoint { ranges, ..sample() };
            assert_eq!(Checkpoint::decode(&c.encode()), Err(CheckpointInvalid::BadRanges));
        }
    }

    #[test]
    fn interval_is_min_of_64mib_and_one_percent() {
        assert_eq!(checkpoint_interval_bytes(0), 1);
        assert_eq!(checkpoint_interval_bytes(1000), 10);
        assert_eq!(checkpoint_interval_bytes(1 << 30), (1u64 << 30).div_ceil(100));
        assert_eq!(checkpoint_interval_bytes(1 << 40), 64 << 20);
    }

    #[test]
    fn covered_pieces_span_ranges() {
        let ranges = [0..10, 20..25, 30..40];
        let mut want = 8;
        assert_eq!(covered_pieces(&ranges, 8, &mut want), vec![(8, 2), (20, 5), (30, 1)]);
        assert_eq!(want, 0);
    }

    #[test]
    fn plan_follows_levels() {
        let c = sample();
        let source = c.identity;
        let left = Leftover { checkpoint: Loaded::Found(c.clone()), partial_len: Some(10 << 20) };
        assert_eq!(
            ResumePlan::decide(ResumeLevel::None, &left, &source),
            ResumePlan::StartOver(StartOver::LevelNone)
        );
        let keep = ResumePlan::decide(ResumeLevel::Attributes, &left, &source);
        assert_eq!(keep, ResumePlan::Keep { ranges: c.ranges.clone(), verify: None });
        assert_eq!(keep.kept_prefix(1 << 20), 4 << 20);
        assert_eq!(keep.clone().confirm(None, None), keep);
        let changed = FileIdentity { mtime_ns: 1, ..source };
        assert_eq!(
            ResumePlan::decide(ResumeLevel::Attributes, &left, &changed),
            ResumePlan::StartOver(StartOver::SourceChanged)
        );
        let other_head = FileIdentity { head_hash: Some([8; 32]), ..source };
        assert_eq!(
            ResumePlan::decide(ResumeLevel::Attributes, &left, &other_head),
            ResumePlan::StartOver(StartOver::SourceChanged)
        );
        let short = Leftover { partial_len: Some(1 << 20), ..left.clone() };
        assert_eq!(
            ResumePlan::decide(ResumeLevel::Attributes, &short, &source),
            ResumePlan::StartOver(StartOver::PartialShort)
        );
        let sparse = ResumePlan::decide(ResumeLevel::SparseChecksum, &left, &source);
        assert_eq!(
            sparse,
            ResumePlan::Keep { ranges: c.ranges.clone(), verify: Some(FingerprintKind::Sparse) }
        );
        assert_eq!(sparse.clone().confirm(Some([1; 32]), Some([1; 32])), sparse);
        assert_eq!(
            sparse.clone().confirm(Some([1; 32]), Some([2; 32])),
            ResumePlan::StartOver(StartOver::FingerprintMismatch)
        );
        assert_eq!(
            sparse.confirm(None, None),
            ResumePlan::StartOver(StartOver::FingerprintMismatch)
        );
        let invalid = Leftover {
            checkpoint: Loaded::Invalid(CheckpointInvalid::BadChecksum),
            partial_len: None,
        };
        assert_eq!(
            ResumePlan::decide(ResumeLevel::FullChecksum, &invalid, &source),
            ResumePlan::StartOver(StartOver::Invalid(CheckpointInvalid::BadChecksum))
        );
    }
}
