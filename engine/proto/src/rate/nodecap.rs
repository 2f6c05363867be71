//! The node cap: one aggregate rate that every session of a node shares (a virtual link).
//!
//! Each session holds a [`NodeCapShare`] and asks it, with its controller's rate as its demand,
//! how much it may send. The cap is divided max-min fairly: sessions that want less than an
//! equal share keep what they want, the rest split what is left equally. So the sum of what is
//! allowed never exceeds the cap (integer division rounds down), and an idle session's share
//! goes to the others.
//!
//! Invariants: at most [`MAX_CAP_SESSIONS`] sessions hold a share; a share is released when it
//! is dropped. The lock is held for O(sessions · log sessions) and never across calls out.

use std::sync::{Arc, Mutex, MutexGuard};

/// Most sessions one node cap divides between.
pub const MAX_CAP_SESSIONS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeCapError {
    /// The node already runs as many sessions as the cap accepts (the caller's load).
    #[error("node cap already shared by {MAX_CAP_SESSIONS} sessions")]
    Full,
}

#[derive(Debug)]
struct CapState {
    cap_bps: u64,
    next_id: u64,
    /// (session id, demand, bits per second).
    demands: Vec<(u64, u64)>,
}

/// The aggregate cap of one node.
#[derive(Debug)]
pub struct NodeCap {
    state: Mutex<CapState>,
}

impl NodeCap {
    pub fn new(cap_bps: u64) -> Arc<NodeCap> {
        Arc::new(NodeCap {
            state: Mutex::new(CapState { cap_bps, next_id: 0, demands: Vec::new() }),
        })
    }

    /// A poisoned lock only means another session panicked mid-update of plain numbers: the
    /// numbers are still usable.
    fn lock(&self) -> MutexGuard<'_, CapState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Join: a new session's share, with no demand yet.
    pub fn join(self: &Arc<Self>) -> Result<NodeCapShare, NodeCapError> {
        let mut s = self.lock();
        if s.demands.len() >= MAX_CAP_SESSIONS {
            return Err(NodeCapError::Full);
        }
        let id = s.next_id;
        s.next_id += 1;
        s.demands.push((id, 0));
        Ok(NodeCapShare { cap: Arc::clone(self), id })
    }

    /// Change the cap (live; sessions see it at their next `allowed_bps`).
    pub fn set_cap_bps(&self, cap_bps: u64) {
        self.lock().cap_bps = cap_bps;
    }

    pub fn cap_bps(&self) -> u64 {
        self.lock().cap_bps
    }

    pub fn sessions(&self) -> usize {
        self.lock().demands.len()
    }
}

/// Max-min fair share of `cap` for the session whose demand is `mine`, among `demands`.
fn max_min_share(cap: u64, demands: &mut [u64], mine: u64) -> u64 {
    demands.sort_unstable();
    let mut left = cap;
    let mut n = demands.len() as u64;
    for &d in demands.iter() {
        let equal = left / n.max(1);
        if d >= equal {
            return mine.min(equal);
        }
        if d == mine {
            return mine;
        }
        left -= d;
        n -= 1;
    }
    mine.min(left)
}

/// One session's place under a [`NodeCap`]; dropping it leaves.
#[derive(Debug)]
pub struct NodeCapShare {
    cap: Arc<NodeCap>,
    id: u64,
}

impl NodeCapShare {
    /// Record this session's demand and return what it may send now (≤ the demand).
    pub fn allowed_bps(&self, demand_bps: u64) -> u64 {
        let mut s = self.cap.lock();
        if let Some(e) = s.demands.iter_mut().find(|e| e.0 == self.id) {
            e.1 = demand_bps;
        }
        let mut all: Vec<u64> = s.demands.iter().map(|e| e.1).collect();
        max_min_share(s.cap_bps, &mut all, demand_bps)
    }

    pub fn cap(&self) -> &Arc<NodeCap> {
        &self.cap
    }
}

impl Drop for NodeCapShare {
    fn drop(&mut self) {
        let id = self.id;
        self.cap.lock().demands.retain(|e| e.0 != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_demands_split_equally_and_sum_within_cap() {
        let cap = NodeCap::new(300_000_000);
        let shares: Vec<_> = (0..3).map(|_| cap.join().unwrap()).collect();
        for s in &shares {
            s.allowed_bps(1_000_000_000);
        }
        let got: Vec<u64> = shares.iter().map(|s| s.allowed_bps(1_000_000_000)).collect();
        assert_eq!(got, vec![100_000_000; 3]);
    }

    #[test]
    fn a_small_demand_leaves_the_rest_to_others() {
        let cap = NodeCap::new(300);
        let a = cap.join().unwrap();
        let b = cap.join().unwrap();
        a.allowed_bps(50);
        assert_eq!(b.allowed_bps(1000), 250);
        assert_eq!(a.allowed_bps(50), 50);
        drop(a);
        assert_eq!(b.allowed_bps(1000), 300);
        assert_eq!(cap.sessions(), 1);
    }
}
