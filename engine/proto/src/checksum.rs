//! The whole-file checksum (docs/PROTOCOL.md §8): BLAKE3 of the file's bytes, the same value
//! `b3sum` prints.
//!
//! Why BLAKE3 and not SHA-256: a file is cut into power-of-two blocks that different shards
//! read (sender) or verify (receiver) independently and out of order. BLAKE3 is a tree hash, so
//! each block's subtree chaining value can be computed where the block is, and the coordinator
//! merges them in order into the standard BLAKE3 root without ever seeing the bytes. It is also
//! several times faster than SHA-256 per core. SHA-256 would force one serial pass over the file.
//!
//! Invariant: blocks are `2^k` bytes with `2^k >= 1024` (a whole number of BLAKE3 chunks), so
//! every block but a file's last is a complete subtree, and merging with BLAKE3's own lazy
//! stack rule reproduces its tree exactly (property-tested against `blake3::hash`).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use std::collections::BTreeMap;

/// The smallest block size, in bytes (one BLAKE3 chunk).
pub const MIN_BLOCK_SIZE: u64 = 1024;
/// Most out-of-order block values one file's merger holds; more is a caller bug or a hostile
/// reorder far beyond the window, reported as an error.
pub const MAX_PENDING_BLOCKS: usize = 65_536;

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// What hashing one block yields: the root itself when the file is one block, otherwise the
/// block's subtree chaining value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockHash {
    Root(Hash),
    Subtree(ChainingValue),
}

/// Hash block `index` of a file that has `blocks_in_file` blocks of `block_size` bytes.
/// `data` is the block's bytes (shorter only for the file's last block).
pub fn hash_block(data: &[u8], index: u64, block_size: u64, blocks_in_file: u64) -> BlockHash {
    let mut hasher = BlockHasher::new(index, block_size, blocks_in_file);
    hasher.update(data);
    hasher.finalize()
}

/// Hashes one block from its bytes given front to back in pieces of any length (the receiver
/// hashes what it writes while the bytes are hot). Fixed size: no allocation.
#[derive(Clone, Debug)]
pub struct BlockHasher {
    hasher: blake3::Hasher,
    is_root: bool,
}

impl BlockHasher {
    /// For block `index` of a file that has `blocks_in_file` blocks of `block_size` bytes.
    pub fn new(index: u64, block_size: u64, blocks_in_file: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        let is_root = blocks_in_file <= 1;
        if !is_root {
            hasher.set_input_offset(index.saturating_mul(block_size));
        }
        BlockHasher { hasher, is_root }
    }

    /// The next bytes of the block.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// The block's value, as [`hash_block`] gives it for the same bytes.
    pub fn finalize(&self) -> BlockHash {
        if self.is_root {
            BlockHash::Root(*self.hasher.finalize().as_bytes())
        } else {
            BlockHash::Subtree(self.hasher.finalize_non_root())
        }
    }
}

/// The checksum of an empty file.
pub fn empty_file_hash() -> Hash {
    *blake3::hash(&[]).as_bytes()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("block {0} is outside the file")]
    OutOfRange(u64),
    #[error("block {0} was given twice")]
    Duplicate(u64),
    #[error("a root hash was given for a file of several blocks, or the reverse")]
    WrongKind,
    #[error("too many blocks waiting for an earlier one")]
    TooManyPending,
}

/// Merges one file's block hashes, given in any order, into the file's BLAKE3 hash.
#[derive(Clone, Debug)]
pub struct FileHasher {
    blocks_in_file: u64,
    /// Blocks merged so far (a prefix of the file).
    merged: u64,
    /// BLAKE3's chaining-value stack over the merged prefix.
    stack: Vec<ChainingValue>,
    /// Blocks that arrived before their predecessors.
    pending: BTreeMap<u64, ChainingValue>,
    root: Option<Hash>,
}

impl FileHasher {
    pub fn new(blocks_in_file: u64) -> Self {
        let root = (blocks_in_file == 0).then(empty_file_hash);
        FileHasher { blocks_in_file, merged: 0, stack: Vec::new(), pending: BTreeMap::new(), root }
    }

    /// Add block `index`'s hash. Returns the file hash once every block is in.
    pub fn add(&mut self, index: u64, hash: BlockHash) -> Result<Option<Hash>, MergeError> {
        if index >= self.blocks_in_file {
            return Err(MergeError::OutOfRange(index));
        }
        if index < self.merged || self.pending.contains_key(&index) || self.root.is_some() {
            return Err(MergeError::Duplicate(index));
        }
        let cv = match (hash, self.blocks_in_file) {
            (BlockHash::Root(h), 1) => {
                self.root = Some(h);
                self.merged = 1;
                return Ok(self.root);
            }
            (BlockHash::Subtree(cv), n) if n > 1 => cv,
            _ => return Err(MergeError::WrongKind),
        };
        if self.pending.len() >= MAX_PENDING_BLOCKS {
            return Err(MergeError::TooManyPending);
        }
        self.pending.insert(index, cv);
        while let Some(cv) = self.pending.remove(&self.merged) {
            self.push(cv);
        }
        if self.merged == self.blocks_in_file {
            self.root = Some(self.finish());
        }
        Ok(self.root)
    }

    pub fn root(&self) -> Option<Hash> {
        self.root
    }

    /// How many leading blocks have been merged: the verified prefix, in blocks.
    pub fn merged_blocks(&self) -> u64 {
        self.merged
    }

    /// BLAKE3's lazy merge: before pushing the next value, merge the stack down to as many
    /// entries as there are one bits in the count of values pushed so far.
    fn push(&mut self, cv: ChainingValue) {
        let target = self.merged.count_ones() as usize;
        while self.stack.len() > target {
            self.merge_top_two();
        }
        self.stack.push(cv);
        self.merged += 1;
    }

    fn merge_top_two(&mut self) {
        if let (Some(right), Some(left)) = (self.stack.pop(), self.stack.pop()) {
            self.stack.push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }

    fn finish(&mut self) -> Hash {
        while self.stack.len() > 2 {
            self.merge_top_two();
        }
        match (self.stack.first(), self.stack.get(1)) {
            (Some(left), Some(right)) => *merge_subtrees_root(left, right, Mode::Hash).as_bytes(),
            // Unreachable for a file of two or more blocks (at least two values were pushed).
            _ => empty_file_hash(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn file_hash_by_blocks(data: &[u8], block_size: u64, order_seed: u64) -> Hash {
        let n = (data.len() as u64).div_ceil(block_size);
        let mut order: Vec<u64> = (0..n).collect();
        let mut rng = Rng::new(order_seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut fh = FileHasher::new(n);
        let mut out = fh.root();
        for i in order {
            let start = (i * block_size) as usize;
            let end = (start + block_size as usize).min(data.len());
            out = fh.add(i, hash_block(&data[start..end], i, block_size, n)).unwrap();
        }
        out.unwrap()
    }

    #[test]
    fn matches_blake3_for_any_size_and_order() {
        let mut rng = Rng::new(1);
        let mut data = vec![0u8; 40 * 1024 + 17];
        rng.fill_bytes(&mut data);
        for block_size in [1024u64, 2048, 4096, 8192] {
            for len in [0usize, 1, 1023, 1024, 1025, 2048, 5000, 8193, 16384, 40 * 1024 + 17] {
                let want = *blake3::hash(&data[..len]).as_bytes();
                for seed in 0..3 {
                    assert_eq!(file_hash_by_blocks(&data[..len], block_size, seed), want);
                }
            }
        }
    }

    #[test]
    fn rejects_duplicates_and_out_of_range() {
        let mut fh = FileHasher::new(3);
        let cv = match hash_block(&[1; 1024], 0, 1024, 3) {
            BlockHash::Subtree(cv) => cv,
            BlockHash::Root(_) => unreachable!(),
        };
        assert_eq!(fh.add(5, BlockHash::Subtree(cv)), Err(MergeError::OutOfRange(5)));
        assert_eq!(fh.add(1, BlockHash::Subtree(cv)), Ok(None));
        assert_eq!(fh.add(1, BlockHash::Subtree(cv)), Err(MergeError::Duplicate(1)));
        assert_eq!(fh.add(0, BlockHash::Root([0; 32])), Err(MergeError::WrongKind));
    }
}
