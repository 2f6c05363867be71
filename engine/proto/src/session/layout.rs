//! The manifest (the files of a session) and how their blocks are striped over shards.
//!
//! docs/PROTOCOL.md §6.1. Files are cut into blocks of `2^block_size_log2` bytes; blocks are
//! numbered globally across files in manifest order; global block `g` belongs to shard
//! `g mod N`. Each shard addresses its slice as a linear *stream*: the `k`-th block of the shard
//! occupies stream positions `[k·B, (k+1)·B)`, so a file's short last block leaves a *gap* in
//! the stream that both ends know of from the manifest. NAKs and windows are in stream
//! positions, which keeps them compact (one range per hole, whatever the file boundaries).
//!
//! Invariant: every lookup is total. Positions or blocks outside the layout return `None`;
//! nothing here panics on values from a peer.

use crate::checksum::MIN_BLOCK_SIZE;
use thiserror::Error;

/// The most files one session carries.
pub const MAX_FILES: usize = 1 << 20;
/// The most shards one session has.
pub const MAX_SHARDS: u8 = 64;
/// Block sizes allowed, as log2 of bytes: 1 KiB to 64 MiB.
pub const BLOCK_SIZE_LOG2_RANGE: core::ops::RangeInclusive<u8> = 10..=26;

/// One file as the sender describes it. `name` is relative and untrusted on the receiver (the
/// data plane validates it before creating anything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("too many files: {0} (at most {MAX_FILES})")]
    TooManyFiles(usize),
    #[error("block size 2^{0} is outside 2^10..=2^26 bytes")]
    BadBlockSize(u8),
    #[error("shard count {0} is outside 1..={MAX_SHARDS}")]
    BadShardCount(u8),
    #[error("total size overflows")]
    Overflow,
}

/// The files of a session and their block numbering.
#[derive(Clone, Debug)]
pub struct Manifest {
    files: Vec<FileEntry>,
    block_size_log2: u8,
    /// `first_block[i]` = global index of file i's first block; one extra entry = total.
    first_block: Vec<u64>,
}

impl Manifest {
    pub fn new(files: Vec<FileEntry>, block_size_log2: u8) -> Result<Manifest, LayoutError> {
        if files.len() > MAX_FILES {
            return Err(LayoutError::TooManyFiles(files.len()));
        }
        if !BLOCK_SIZE_LOG2_RANGE.contains(&block_size_log2) {
            return Err(LayoutError::BadBlockSize(block_size_log2));
        }
        let block = 1u64 << block_size_log2;
        let mut first_block = Vec::with_capacity(files.len() + 1);
        let mut next = 0u64;
        for f in &files {
            first_block.push(next);
            next = next.checked_add(f.size.div_ceil(block)).ok_or(LayoutError::Overflow)?;
        }
        first_block.push(next);
        debug_assert!(block >= MIN_BLOCK_SIZE);
        Ok(Manifest { files, block_size_log2, first_block })
    }

    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }
    pub fn file(&self, file: u32) -> Option<&FileEntry> {
        self.files.get(file as usize)
    }
    pub fn file_count(&self) -> u32 {
        self.files.len() as u32
    }
    pub fn block_size(&self) -> u64 {
        1u64 << self.block_size_log2
    }
    pub fn block_size_log2(&self) -> u8 {
        self.block_size_log2
    }
    pub fn total_blocks(&self) -> u64 {
        self.first_block.last().copied().unwrap_or(0)
    }
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).fold(0u64, u64::saturating_add)
    }
    pub fn blocks_in(&self, file: u32) -> u64 {
        let i = file as usize;
        match (self.first_block.get(i), self.first_block.get(i + 1)) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }
    /// Global index of `file`'s block `index`.
    pub fn global_block(&self, file: u32, index: u64) -> Option<u64> {
        (index < self.blocks_in(file)).then(|| self.first_block[file as usize] + index)
    }
    /// Which file and which of its blocks global block `g` is.
    pub fn locate_block(&self, g: u64) -> Option<(u32, u64)> {
        if g >= self.total_blocks() {
            return None;
        }
        // The last file whose first block is <= g and that has blocks.
        let i = self.first_block.partition_point(|&b| b <= g).checked_sub(1)?;
        Some((i as u32, g - self.first_block[i]))
    }
    /// Bytes in global block `g` (B, or less for a file's last block).
    pub fn block_len(&self, g: u64) -> Option<u64> {
        let (file, index) = self.locate_block(g)?;
        let size = self.files[file as usize].size;
        let start = index << self.block_size_log2;
        Some((size - start).min(self.block_size()))
    }
}

/// A manifest striped over `shards` shards.
#[derive(Clone, Debug)]
pub struct Layout {
    manifest: std::sync::Arc<Manifest>,
    shards: u8,
}

/// Where a stream position lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spot {
    pub global_block: u64,
    pub file: u32,
    pub block_in_file: u64,
    /// Offset inside the block.
    pub offset_in_block: u64,
    /// Bytes in the block.
    pub block_len: u64,
}

impl Spot {
    /// Offset of this position in its file.
    pub fn file_offset(&self, block_size: u64) -> u64 {
        self.block_in_file * block_size + self.offset_in_block
    }
    /// True if the position is past the block's data (the gap of a short block).
    pub fn is_gap(&self) -> bool {
        self.offset_in_block >= self.block_len
    }
}

impl Layout {
    pub fn new(manifest: std::sync::Arc<Manifest>, shards: u8) -> Result<Layout, LayoutError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(LayoutError::BadShardCount(shards));
        }
        Ok(Layout { manifest, shards })
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn manifest_arc(&self) -> &std::sync::Arc<Manifest> {
        &self.manifest
    }
    pub fn shards(&self) -> u8 {
        self.shards
    }
    pub fn block_size(&self) -> u64 {
        self.manifest.block_size()
    }
    pub fn shard_of_block(&self, g: u64) -> u8 {
        (g % u64::from(self.shards)) as u8
    }
    /// Blocks in shard `shard`'s slice.
    pub fn shard_blocks(&self, shard: u8) -> u64 {
        let total = self.manifest.total_blocks();
        let s = u64::from(shard);
        if s >= total { 0 } else { (total - s).div_ceil(u64::from(self.shards)) }
    }
    /// One past the last stream position of the shard's slice.
    pub fn stream_end(&self, shard: u8) -> u64 {
        self.shard_blocks(shard) << self.manifest.block_size_log2
    }
    /// Stream position of byte `offset` of `file`, and the shard that owns it.
    pub fn position_of(&self, file: u32, offset: u64) -> Option<(u8, u64)> {
        let log2 = self.manifest.block_size_log2;
        let g = self.manifest.global_block(file, offset >> log2)?;
        let in_block = offset & (self.block_size() - 1);
        let local = g / u64::from(self.shards);
        Some((self.shard_of_block(g), (local << log2) + in_block))
    }
    /// Where `shard`'s stream position `pos` lands.
    pub fn spot(&self, shard: u8, pos: u64) -> Option<Spot> {
        let log2 = self.manifest.block_size_log2;
        let local = pos >> log2;
        let g = local.checked_mul(u64::from(self.shards))?.checked_add(u64::from(shard))?;
        let (file, block_in_file) = self.manifest.locate_block(g)?;
        let block_len = self.manifest.block_len(g)?;
        Some(Spot {
            global_block: g,
            file,
            block_in_file,
            offset_in_block: pos & (self.block_size() - 1),
            block_len,
        })
    }
    /// Stream position where the block containing `pos` starts.
    pub fn block_start(&self, pos: u64) -> u64 {
        pos & !(self.block_size() - 1)
    }
    /// The stream ranges (whole blocks) of `shard` that a resumed transfer already has:
    /// `prefixes[f]` is how many leading bytes of file `f` are kept; a block counts only if the
    /// prefix covers all of its data.
    pub fn resumed_ranges<'a>(
        &'a self,
        shard: u8,
        prefixes: &'a [u64],
    ) -> impl Iterator<Item = core::ops::Range<u64>> + 'a {
        let m = &self.manifest;
        let n = u64::from(self.shards);
        (0..m.file_count()).flat_map(move |f| {
            let size = m.file(f).map_or(0, |e| e.size);
            let p = prefixes.get(f as usize).copied().unwrap_or(0);
            let blocks = if p >= size { m.blocks_in(f) } else { p >> m.block_size_log2 };
            let first = m.global_block(f, 0).unwrap_or(0);
            (0..blocks).filter_map(move |i| {
                let g = first + i;
                (g % n == u64::from(shard)).then(|| {
                    let start = (g / n) << m.block_size_log2;
                    start..start + m.block_size()
                })
            })
        })
    }

    /// The first position at or after `pos` that carries data (skips a short block's gap),
    /// or `stream_end` if none.
    pub fn skip_gap(&self, shard: u8, pos: u64) -> u64 {
        let end = self.stream_end(shard);
        match self.spot(shard, pos) {
            Some(s) if s.is_gap() => (self.block_start(pos) + self.block_size()).min(end),
            Some(_) => pos,
            None => end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn files(sizes: &[u64]) -> Vec<FileEntry> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| FileEntry { name: format!("f{i}"), size, mode: 0o644, mtime_ns: 0 })
            .collect()
    }

    #[test]
    fn striping_round_trips_every_byte_block() {
        let m = Arc::new(Manifest::new(files(&[0, 1, 1024, 1025, 5000, 0, 3072]), 10).unwrap());
        assert_eq!(m.total_blocks(), 1 + 1 + 2 + 5 + 3);
        for shards in 1..=4 {
            let l = Layout::new(m.clone(), shards).unwrap();
            let mut seen = 0;
            for f in 0..m.file_count() {
                let size = m.file(f).unwrap().size;
                for off in (0..size).step_by(512) {
                    let (s, pos) = l.position_of(f, off).unwrap();
                    let spot = l.spot(s, pos).unwrap();
                    assert_eq!((spot.file, spot.file_offset(1024)), (f, off));
                    assert!(!spot.is_gap());
                    assert!(pos < l.stream_end(s));
                    seen += 1;
                }
            }
            assert!(seen > 0);
            let blocks: u64 = (0..shards).map(|s| l.shard_blocks(s)).sum();
            assert_eq!(blocks, m.total_blocks());
        }
    }

    #[test]
    fn gaps_and_out_of_range_are_total() {
        let m = Arc::new(Manifest::new(files(&[1500]), 10).unwrap());
        let l = Layout::new(m, 1).unwrap();
        assert_eq!(l.stream_end(0), 2048);
        assert!(l.spot(0, 1024 + 476).unwrap().is_gap());
        assert_eq!(l.skip_gap(0, 1024 + 476), 2048);
        assert_eq!(l.spot(0, 2048), None);
        assert_eq!(l.spot(0, u64::MAX), None);
        assert_eq!(l.position_of(0, 2048), None);
        assert_eq!(l.position_of(7, 0), None);
        assert!(Layout::new(Arc::new(Manifest::new(vec![], 10).unwrap()), 0).is_err());
        assert!(Manifest::new(vec![], 9).is_err());
    }
}
