//! A set of `u64` positions kept as sorted, disjoint, non-adjacent half-open ranges.
//!
//! The session tracks received data, pending writes and retransmission queues with it, so its
//! memory grows with the number of holes, never with the file size (no per-datagram bitmap).
//! STUB: filled in by the wire work.

#![allow(clippy::todo)]

use core::ops::Range;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    _priv: (),
}

impl RangeSet {
    pub fn new() -> Self {
        todo!()
    }
    /// Add `range`, merging with neighbours it overlaps or touches. Empty ranges are ignored.
    /// Returns how many positions were newly added.
    pub fn insert(&mut self, range: Range<u64>) -> u64 {
        let _ = range;
        todo!()
    }
    /// Remove `range`. Returns how many positions were removed.
    pub fn remove(&mut self, range: Range<u64>) -> u64 {
        let _ = range;
        todo!()
    }
    pub fn contains(&self, pos: u64) -> bool {
        let _ = pos;
        todo!()
    }
    /// True if every position in `range` is in the set (an empty range is contained).
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        let _ = range;
        todo!()
    }
    /// True if any position in `range` is in the set.
    pub fn intersects(&self, range: Range<u64>) -> bool {
        let _ = range;
        todo!()
    }
    /// The end of the contiguous run that starts at `pos`, or `pos` if `pos` is not in the set.
    pub fn run_end(&self, pos: u64) -> u64 {
        let _ = pos;
        todo!()
    }
    /// The first range, if any.
    pub fn first(&self) -> Option<Range<u64>> {
        todo!()
    }
    /// Remove and return up to `max_len` positions from the front of the first range.
    pub fn pop_front(&mut self, max_len: u64) -> Option<Range<u64>> {
        let _ = max_len;
        todo!()
    }
    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        core::iter::empty()
    }
    /// The sub-ranges of `within` that are NOT in the set, in order.
    pub fn gaps(&self, within: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let _ = within;
        core::iter::empty()
    }
    /// Number of disjoint ranges.
    pub fn range_count(&self) -> usize {
        todo!()
    }
    /// Total positions covered.
    pub fn covered(&self) -> u64 {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
    pub fn clear(&mut self) {
        todo!()
    }
}
