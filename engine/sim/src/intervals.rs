//! A compact set of `u64` values kept as disjoint, non-adjacent half-open ranges.
//!
//! The simulator uses it for two bookkeeping jobs where a flat bitmap would cost memory per
//! byte or per datagram: the sequence numbers each (direction, shard) has transmitted (they
//! rise, so the set stays one range per gap) and the byte ranges written to each receiver file.
//!
//! Invariant: ranges in the map are non-empty, sorted, disjoint and never touch (touching ranges
//! are merged on insert), so `range_count` is the number of holes plus one.

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    /// start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
    covered: u64,
}

impl IntervalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The range holding `pos`, if any.
    fn containing(&self, pos: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.ranges.range(..=pos).next_back()?;
        (pos < e).then_some((s, e))
    }

    pub fn contains(&self, pos: u64) -> bool {
        self.containing(pos).is_some()
    }

    /// True if every value of `r` is in the set (an empty range is contained).
    pub fn contains_range(&self, r: Range<u64>) -> bool {
        if r.is_empty() {
            return true;
        }
        matches!(self.containing(r.start), Some((_, e)) if e >= r.end)
    }

    /// True if any value of `r` is in the set.
    pub fn intersects(&self, r: Range<u64>) -> bool {
        if r.is_empty() {
            return false;
        }
        if self.contains(r.start) {
            return true;
        }
        self.ranges.range(r.start..r.end).next().is_some()
    }

    /// Add `r`, merging with every range it overlaps or touches. Returns how many values were
    /// new.
    pub fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.is_empty() {
            return 0;
        }
        let (mut start, mut end) = (r.start, r.end);
        let mut removed = 0u64;
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            removed += e - s;
            self.ranges.remove(&s);
        }
        // Ranges starting inside [start, end].
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            removed += e - s;
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        let added = (end - start) - removed;
        self.covered += added;
        added
    }

    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Total values covered.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_proto::rng::Rng;

    #[test]
    fn merges_touching_and_overlapping_ranges() {
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(10..20), 10);
        assert_eq!(s.insert(30..40), 10);
        assert_eq!(s.insert(20..30), 10);
        assert_eq!(s.range_count(), 1);
        assert_eq!(s.insert(5..45), 10);
        assert_eq!(s.insert(7..9), 0);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![5..45]);
        assert!(s.contains_range(5..45) && !s.contains_range(5..46));
        assert!(s.intersects(44..100) && !s.intersects(45..100) && !s.intersects(0..5));
        assert_eq!(s.insert(3..3), 0);
    }

    #[test]
    fn matches_a_naive_model_under_random_inserts() {
        let mut rng = Rng::new(9);
        for _ in 0..50 {
            let mut s = IntervalSet::new();
            let mut model = [false; 256];
            for _ in 0..40 {
                let a = rng.below(256);
                let b = (a + rng.below(20)).min(256);
                let new = (a..b).filter(|&i| !model[i as usize]).count() as u64;
                assert_eq!(s.insert(a..b), new);
                for i in a..b {
                    model[i as usize] = true;
                }
            }
            for i in 0..256u64 {
                assert_eq!(s.contains(i), model[i as usize], "value {i}");
            }
            assert_eq!(s.covered(), model.iter().filter(|&&b| b).count() as u64);
            let v: Vec<_> = s.iter().collect();
            assert!(v.windows(2).all(|w| w[0].end < w[1].start), "disjoint, non-adjacent");
        }
    }
}
