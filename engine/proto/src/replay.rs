//! Anti-replay window, one per shard per direction (docs/protocol/05-replay.md).
//!
//! `check` is pure; `commit` is called only after the datagram's tag has verified, so a forged
//! datagram can never move the window.
//!
//! Invariants:
//! - The window covers the [`REPLAY_WINDOW`] sequence numbers ending at the highest committed
//!   one; bit `seq % REPLAY_WINDOW` of the ring says whether `seq` was seen, for every `seq` in
//!   that span, and bits of numbers not yet seen in the span are clear.
//! - Anything older than the span is `Stale` (it cannot be told apart from a replay).
//! - The ring is allocated once in [`ReplayWindow::new`]; `check` and `commit` never allocate,
//!   and `commit` clears at most one ring's worth of words however far the window jumps.
//! - No arithmetic can overflow: sequence numbers up to `u64::MAX` are fine.

use thiserror::Error;

/// Width of the window in sequence numbers: at least the worst reordering we tolerate.
pub const REPLAY_WINDOW: u64 = 16_384;

/// Bits per ring word.
const WORD_BITS: u64 = u64::BITS as u64;
/// Words in the ring.
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize;
const _: () = assert!(REPLAY_WINDOW.is_multiple_of(WORD_BITS) && WORDS > 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// Seen before.
    #[error("duplicate sequence number")]
    Duplicate,
    /// Older than the window: cannot tell, so refuse.
    #[error("sequence number older than the replay window")]
    Stale,
}

/// A sliding bitmap over the highest sequence number seen.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// `REPLAY_WINDOW` bits, indexed by `seq % REPLAY_WINDOW`.
    ring: Box<[u64; WORDS]>,
    /// The highest sequence number committed, or `None` before the first commit.
    highest: Option<u64>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Where `seq`'s bit lives: (word index, mask).
fn slot(seq: u64) -> (usize, u64) {
    let bit = seq % REPLAY_WINDOW;
    ((bit / WORD_BITS) as usize, 1u64 << (bit % WORD_BITS))
}

impl ReplayWindow {
    pub fn new() -> Self {
        ReplayWindow { ring: Box::new([0; WORDS]), highest: None }
    }

    /// The highest sequence number committed so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Would `seq` be accepted? Changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if seq > highest {
            return Ok(());
        }
        if highest - seq >= REPLAY_WINDOW {
            return Err(ReplayError::Stale);
        }
        let (word, mask) = slot(seq);
        if self.ring[word] & mask != 0 { Err(ReplayError::Duplicate) } else { Ok(()) }
    }

    /// Record `seq` as seen (after its tag verified). Returns the same verdict as `check`; a
    /// rejected `seq` changes nothing.
    pub fn commit(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        match self.highest {
            Some(highest) if seq > highest => {
                // The numbers highest+1 ..= seq enter the window; their bits may hold numbers
                // that just left it, so clear them (all of them if the jump is that large).
                self.clear_bits(highest + 1, seq - highest);
                self.highest = Some(seq);
            }
            Some(_) => {}
            None => self.highest = Some(seq),
        }
        let (word, mask) = slot(seq);
        self.ring[word] |= mask;
        Ok(())
    }

    /// Clear the ring bits of the `count` numbers from `from` on (all bits if `count` is the
    /// window or more), a word at a time: at most `WORDS + 1` iterations.
    fn clear_bits(&mut self, from: u64, count: u64) {
        let mut bit = from % REPLAY_WINDOW;
        let mut left = count.min(REPLAY_WINDOW);
        while left > 0 {
            let word = (bit / WORD_BITS) as usize;
            let offset = bit % WORD_BITS;
            let n = (WORD_BITS - offset).min(left);
            let mask = if n == WORD_BITS { u64::MAX } else { ((1u64 << n) - 1) << offset };
            self.ring[word] &= !mask;
            left -= n;
            bit = (bit + n) % REPLAY_WINDOW;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The obvious model: every number ever committed, and the highest.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        highest: Option<u64>,
    }

    impl Model {
        fn check(&self, seq: u64) -> Result<(), ReplayError> {
            match self.highest {
                Some(h) if seq <= h && h - seq >= REPLAY_WINDOW => Err(ReplayError::Stale),
                _ if self.seen.contains(&seq) => Err(ReplayError::Duplicate),
                _ => Ok(()),
            }
        }
        fn commit(&mut self, seq: u64) -> Result<(), ReplayError> {
            self.check(seq)?;
            self.seen.insert(seq);
            self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
            Ok(())
        }
    }

    #[test]
    fn zero_is_a_valid_first_sequence_number() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Ok(()));
        assert_eq!(w.commit(0), Ok(()));
        assert_eq!(w.commit(0), Err(ReplayError::Duplicate));
        assert_eq!(w.commit(1), Ok(()));
    }

    #[test]
    fn edge_of_window_is_stale_and_inside_is_not() {
        let mut w = ReplayWindow::new();
        w.commit(REPLAY_WINDOW + 10).unwrap();
        assert_eq!(w.check(10), Err(ReplayError::Stale));
        assert_eq!(w.check(11), Ok(()));
        w.commit(11).unwrap();
        assert_eq!(w.check(11), Err(ReplayError::Duplicate));
    }

    #[test]
    fn jumps_clear_bits_of_numbers_that_left_the_window() {
        let mut w = ReplayWindow::new();
        w.commit(5).unwrap();
        // 5 + REPLAY_WINDOW shares 5's bit; it must read as unseen after the jump.
        assert_eq!(w.check(5 + REPLAY_WINDOW), Ok(()));
        w.commit(5 + REPLAY_WINDOW - 1).unwrap();
        assert_eq!(w.check(5 + REPLAY_WINDOW), Ok(()));
        w.commit(5 + REPLAY_WINDOW).unwrap();
        assert_eq!(w.check(5 + REPLAY_WINDOW), Err(ReplayError::Duplicate));
        // A jump far larger than the window clears everything.
        w.commit(u64::MAX - 3).unwrap();
        assert_eq!(w.check(u64::MAX - 3 - REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(w.check(u64::MAX), Ok(()));
        w.commit(u64::MAX).unwrap();
        assert_eq!(w.commit(u64::MAX), Err(ReplayError::Duplicate));
        assert_eq!(w.check(0), Err(ReplayError::Stale));
    }

    /// A sequence number relative to the current state, so runs hit the interesting edges.
    #[derive(Clone, Debug)]
    enum Seq {
        /// `highest + delta` (clamped to the u64 range).
        Near(i32),
        /// `highest - REPLAY_WINDOW + delta`, right at the edge.
        Edge(i8),
        /// Anywhere.
        Abs(u64),
        /// Near the top of the space.
        Top(u16),
    }

    fn resolve(seq: &Seq, highest: Option<u64>) -> u64 {
        let h = highest.unwrap_or(0);
        match *seq {
            Seq::Near(d) => h.saturating_add_signed(i64::from(d)),
            Seq::Edge(d) => h.saturating_sub(REPLAY_WINDOW).saturating_add_signed(i64::from(d)),
            Seq::Abs(v) => v,
            Seq::Top(d) => u64::MAX - u64::from(d),
        }
    }

    fn any_seq() -> impl Strategy<Value = Seq> {
        prop_oneof![
            6 => (-40_000i32..40_000).prop_map(Seq::Near),
            4 => (-64i32..64).prop_map(Seq::Near),
            2 => any::<i8>().prop_map(Seq::Edge),
            1 => any::<u64>().prop_map(Seq::Abs),
            1 => any::<u16>().prop_map(Seq::Top),
        ]
    }

    proptest! {
        #[test]
        fn matches_model(ops in prop::collection::vec((any::<bool>(), any_seq()), 1..300)) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            for (is_commit, seq) in &ops {
                let seq = resolve(seq, m.highest);
                if *is_commit {
                    prop_assert_eq!(w.commit(seq), m.commit(seq), "commit {}", seq);
                } else {
                    prop_assert_eq!(w.check(seq), m.check(seq), "check {}", seq);
                }
                prop_assert_eq!(w.highest(), m.highest);
            }
        }
    }
}
