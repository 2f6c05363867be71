//! A set of `u64` positions kept as sorted, disjoint, non-adjacent half-open ranges.
//!
//! The session tracks received data, pending writes and retransmission queues with it, so its
//! memory grows with the number of holes, never with the file size (no per-datagram bitmap).
//!
//! Invariants (checked after every operation by the model test below):
//! - The map holds `start → end` with `start < end`; ranges are disjoint and never touch
//!   (`end` of one < `start` of the next), so each set has exactly one representation.
//! - `covered` is the sum of the ranges' lengths.
//! - Every operation accepts any input: a range with `start >= end` is empty (a no-op for
//!   updates, contained-by-everything and intersecting-nothing for queries), and `u64::MAX` as
//!   an end is fine. Memory is O(number of ranges); no operation allocates beyond map nodes.

use core::ops::Range;
use std::collections::BTreeMap;
use std::collections::btree_map;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// `start → end`, half-open.
    map: BTreeMap<u64, u64>,
    /// Total positions covered.
    covered: u64,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet { map: BTreeMap::new(), covered: 0 }
    }

    /// The range with the greatest start `<= pos`, if any.
    fn at_or_before(&self, pos: u64) -> Option<(u64, u64)> {
        self.map.range(..=pos).next_back().map(|(&s, &e)| (s, e))
    }

    /// Add `range`, merging with neighbours it overlaps or touches. Empty ranges are ignored.
    /// Returns how many positions were newly added.
    pub fn insert(&mut self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let (mut lo, mut hi) = (range.start, range.end);
        let mut absorbed = 0;
        if let Some((s, e)) = self.at_or_before(lo).filter(|&(_, e)| e >= lo) {
            self.map.remove(&s);
            absorbed += e - s;
            lo = s;
            hi = hi.max(e);
        }
        // Every later range starting at or before `hi` overlaps or touches: absorb it. Each
        // pass removes one range, so this runs at most `range_count()` times.
        while let Some((&s, &e)) = self.map.range(lo..=hi).next() {
            self.map.remove(&s);
            absorbed += e - s;
            hi = hi.max(e);
        }
        self.map.insert(lo, hi);
        let added = (hi - lo) - absorbed;
        self.covered += added;
        added
    }

    /// Remove `range`. Returns how many positions were removed.
    pub fn remove(&mut self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let (lo, hi) = (range.start, range.end);
        let mut removed = 0;
        // A range starting before `lo` keeps its head and maybe a tail past `hi`.
        if let Some((s, e)) = self.map.range(..lo).next_back().map(|(&s, &e)| (s, e))
            && e > lo
        {
            self.map.insert(s, lo);
            removed += e.min(hi) - lo;
            if e > hi {
                self.map.insert(hi, e);
            }
        }
        // Ranges starting inside `lo..hi` go, keeping any tail past `hi`. Each pass removes one
        // range, so this runs at most `range_count()` times.
        while let Some((&s, &e)) = self.map.range(lo..hi).next() {
            self.map.remove(&s);
            removed += e.min(hi) - s;
            if e > hi {
                self.map.insert(hi, e);
            }
        }
        self.covered -= removed;
        removed
    }

    pub fn contains(&self, pos: u64) -> bool {
        self.at_or_before(pos).is_some_and(|(_, e)| e > pos)
    }

    /// True if every position in `range` is in the set (an empty range is contained).
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        range.is_empty() || self.at_or_before(range.start).is_some_and(|(_, e)| e >= range.end)
    }

    /// True if any position in `range` is in the set.
    pub fn intersects(&self, range: Range<u64>) -> bool {
        !range.is_empty()
            && (self.contains(range.start)
                || self.map.range(range.start..range.end).next().is_some())
    }

    /// The end of the contiguous run that starts at `pos`, or `pos` if `pos` is not in the set.
    pub fn run_end(&self, pos: u64) -> u64 {
        match self.at_or_before(pos) {
            Some((_, e)) if e > pos => e,
            _ => pos,
        }
    }

    /// The first range, if any.
    pub fn first(&self) -> Option<Range<u64>> {
        self.map.first_key_value().map(|(&s, &e)| s..e)
    }

    /// Remove and return up to `max_len` positions from the front of the first range.
    /// `None` if the set is empty or `max_len` is 0 (nothing is removed then).
    pub fn pop_front(&mut self, max_len: u64) -> Option<Range<u64>> {
        if max_len == 0 {
            return None;
        }
        let (s, e) = self.map.pop_first()?;
        let taken_end = s + (e - s).min(max_len);
        if taken_end < e {
            self.map.insert(taken_end, e);
        }
        self.covered -= taken_end - s;
        Some(s..taken_end)
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The sub-ranges of `within` that are NOT in the set, in order.
    pub fn gaps(&self, within: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        // Start from the range that may cover `within.start`, so it advances the cursor.
        let from = self.at_or_before(within.start).map_or(within.start, |(s, _)| s);
        let ranges =
            if within.is_empty() { self.map.range(0..0) } else { self.map.range(from..within.end) };
        Gaps { ranges, cursor: within.start, end: within.end }
    }

    /// Number of disjoint ranges.
    pub fn range_count(&self) -> usize {
        self.map.len()
    }

    /// Total positions covered.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.covered = 0;
    }
}

/// Iterator behind [`RangeSet::gaps`]: walks the ranges that start before `end`, yielding the
/// holes between `cursor` and each.
struct Gaps<'a> {
    ranges: btree_map::Range<'a, u64, u64>,
    /// Positions below this are accounted for.
    cursor: u64,
    end: u64,
}

impl Iterator for Gaps<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        while self.cursor < self.end {
            let Some((&s, &e)) = self.ranges.next() else {
                let gap = self.cursor..self.end;
                self.cursor = self.end;
                return Some(gap);
            };
            let gap = self.cursor..s.min(self.end);
            self.cursor = self.cursor.max(e);
            if !gap.is_empty() {
                return Some(gap);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Positions the model tracks; operations reach a little past it to test clipping.
    const UNIVERSE: u64 = 256;

    /// The maximal runs of a set of positions, as half-open ranges.
    fn runs(model: &BTreeSet<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &p in model {
            match out.last_mut() {
                Some(last) if last.end == p => last.end = p + 1,
                _ => out.push(p..p + 1),
            }
        }
        out
    }

    fn check_queries(set: &RangeSet, model: &BTreeSet<u64>, q: Range<u64>) {
        let expected = runs(model);
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
        assert_eq!(set.range_count(), expected.len());
        assert_eq!(set.covered(), model.len() as u64);
        assert_eq!(set.is_empty(), model.is_empty());
        assert_eq!(set.first(), expected.first().cloned());
        // One backward pass: `end` is the first position above `p` that is not in the model.
        let mut end = UNIVERSE + 8;
        for p in (0..UNIVERSE + 8).rev() {
            let inside = model.contains(&p);
            if !inside {
                end = p;
            }
            assert_eq!(set.contains(p), inside, "contains {p}");
            assert_eq!(set.run_end(p), end, "run_end {p}");
        }
        let in_q: Vec<u64> = q.clone().filter(|p| model.contains(p)).collect();
        assert_eq!(
            set.contains_range(q.clone()),
            in_q.len() as u64 == q.end.saturating_sub(q.start)
        );
        assert_eq!(set.intersects(q.clone()), !in_q.is_empty(), "intersects {q:?}");
        let holes: BTreeSet<u64> = q.clone().filter(|p| !model.contains(p)).collect();
        assert_eq!(set.gaps(q.clone()).collect::<Vec<_>>(), runs(&holes), "gaps {q:?}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Range<u64>),
        Remove(Range<u64>),
        PopFront(u64),
        Clear,
    }

    fn any_range() -> impl Strategy<Value = Range<u64>> {
        // Inverted and empty ranges included on purpose.
        (0..UNIVERSE + 8, 0..UNIVERSE + 8).prop_map(|(a, b)| a..b)
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => any_range().prop_map(Op::Insert),
            5 => any_range().prop_map(Op::Remove),
            1 => (0u64..40).prop_map(Op::PopFront),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #[test]
        fn matches_model(ops in prop::collection::vec((any_op(), any_range()), 1..40)) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for (op, query) in ops {
                match op {
                    Op::Insert(r) => {
                        let new = r.clone().filter(|p| !model.contains(p)).count() as u64;
                        model.extend(r.clone());
                        prop_assert_eq!(set.insert(r), new);
                    }
                    Op::Remove(r) => {
                        let gone = r.clone().filter(|p| model.remove(p)).count() as u64;
                        prop_assert_eq!(set.remove(r), gone);
                    }
                    Op::PopFront(n) => {
                        let expected = runs(&model).first().cloned().filter(|_| n > 0).map(|r| {
                            r.start..r.end.min(r.start + n)
                        });
                        if let Some(r) = &expected {
                            for p in r.clone() {
                                model.remove(&p);
                            }
                        }
                        prop_assert_eq!(set.pop_front(n), expected);
                    }
                    Op::Clear => {
                        model.clear();
                        set.clear();
                    }
                }
                check_queries(&set, &model, query);
            }
        }
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // Inverted ranges are the point here.
    fn extreme_values_do_not_panic() {
        let mut set = RangeSet::new();
        assert_eq!(set.insert(u64::MAX - 10..u64::MAX), 10);
        assert_eq!(set.insert(0..u64::MAX), u64::MAX - 10);
        assert_eq!(set.covered(), u64::MAX);
        assert_eq!(set.range_count(), 1);
        assert_eq!(set.run_end(5), u64::MAX);
        assert!(set.contains_range(0..u64::MAX));
        assert_eq!(set.gaps(0..u64::MAX).count(), 0);
        assert_eq!(set.remove(1..u64::MAX - 1), u64::MAX - 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..1, u64::MAX - 1..u64::MAX]);
        assert_eq!(set.gaps(0..u64::MAX).collect::<Vec<_>>(), vec![1..u64::MAX - 1]);
        assert_eq!(set.insert(7..3), 0);
        assert_eq!(set.remove(7..3), 0);
        assert!(!set.intersects(9..2));
        assert!(set.contains_range(9..2));
        assert_eq!(set.gaps(9..2).count(), 0);
        assert_eq!(set.pop_front(u64::MAX), Some(0..1));
        assert_eq!(set.pop_front(0), None);
        assert_eq!(set.pop_front(u64::MAX), Some(u64::MAX - 1..u64::MAX));
        assert_eq!(set.pop_front(1), None);
        assert!(set.is_empty());
    }

    #[test]
    fn touching_ranges_merge() {
        let mut set = RangeSet::new();
        set.insert(0..10);
        set.insert(20..30);
        assert_eq!(set.insert(10..20), 10);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..30]);
        set.remove(5..6);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..5, 6..30]);
    }

    #[test]
    fn memory_is_per_range_not_per_position() {
        let mut set = RangeSet::new();
        // One terabyte-sized range and a hole in it: two map entries, not 2^40 bits.
        set.insert(0..1 << 40);
        set.remove(1 << 39..(1 << 39) + 1);
        assert_eq!(set.range_count(), 2);
        assert_eq!(set.covered(), (1 << 40) - 1);
    }
}
