//! Login throttling per source address and per account: backoff, never a hard lockout.
//!
//! Rule (issue 6): after [`MAX_FAILURES`] failed logins within [`WINDOW_S`] for a key (an address
//! or an account name), further attempts for that key are answered 429 with `Retry-After` —
//! even with the right password, so a guesser learns nothing — until the window has room again.
//! Each time a key is blocked again while its failures are still remembered, the wait doubles
//! (up to [`MAX_BLOCK_S`]); a success clears the account's and the address's record.
//!
//! Invariants: pure (time is an argument); the table holds at most [`MAX_KEYS`] keys, each with at
//! most [`MAX_FAILURES`] timestamps, so memory is bounded whatever an attacker sends.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures allowed within the window before a key is blocked.
pub const MAX_FAILURES: usize = 10;
/// The sliding window, in seconds.
pub const WINDOW_S: u64 = 60;
/// The longest wait a repeat offender is given, in seconds.
pub const MAX_BLOCK_S: u64 = 15 * 60;
/// Most keys remembered; past it the key whose last failure is oldest is forgotten.
pub const MAX_KEYS: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    Address(IpAddr),
    Account(String),
}

#[derive(Debug, Default)]
struct Entry {
    /// Failure times (unix seconds) within the window, oldest first; at most MAX_FAILURES.
    failures: Vec<u64>,
    /// While blocked: until when.
    blocked_until_s: u64,
    /// Blocks in a row (doubles the wait); cleared by a success or a quiet period.
    strikes: u32,
}

/// The throttle table.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<ThrottleKey, Entry>,
}

impl Throttle {
    /// Seconds to wait if `key` is blocked at `now_s`, else `None`.
    pub fn retry_after_s(&self, key: &ThrottleKey, now_s: u64) -> Option<u64> {
        let e = self.entries.get(key)?;
        (e.blocked_until_s > now_s).then(|| e.blocked_until_s - now_s)
    }

    /// Records a failed attempt for `key`.
    pub fn on_failure(&mut self, key: ThrottleKey, now_s: u64) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_KEYS {
            self.evict(now_s);
        }
        let e = self.entries.entry(key).or_default();
        e.failures.retain(|&t| t + WINDOW_S > now_s);
        if e.failures.is_empty() && e.blocked_until_s + WINDOW_S <= now_s {
            e.strikes = 0;
        }
        if e.failures.len() >= MAX_FAILURES {
            e.failures.remove(0);
        }
        e.failures.push(now_s);
        if e.failures.len() >= MAX_FAILURES && e.blocked_until_s <= now_s {
            e.strikes = e.strikes.saturating_add(1);
            // The window's own wait: until the oldest remembered failure leaves it.
            let window_wait = e.failures[0] + WINDOW_S - now_s;
            let doubled = window_wait.max(1) << (e.strikes - 1).min(10);
            e.blocked_until_s = now_s + doubled.min(MAX_BLOCK_S);
            e.failures.clear();
        }
    }

    /// A successful login clears what the key had accumulated.
    pub fn on_success(&mut self, key: &ThrottleKey) {
        self.entries.remove(key);
    }

    fn evict(&mut self, now_s: u64) {
        self.entries.retain(|_, e| {
            e.blocked_until_s > now_s || e.failures.iter().any(|&t| t + WINDOW_S > now_s)
        });
        if self.entries.len() >= MAX_KEYS {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.failures.last().copied().unwrap_or(e.blocked_until_s))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_block_then_the_window_reopens() {
        let mut t = Throttle::default();
        let k = ThrottleKey::Account("alice".into());
        for i in 0..9 {
            t.on_failure(k.clone(), 1000 + i);
            assert_eq!(t.retry_after_s(&k, 1000 + i), None);
        }
        t.on_failure(k.clone(), 1009);
        let wait = t.retry_after_s(&k, 1009).unwrap();
        assert_eq!(wait, 51);
        assert!(t.retry_after_s(&k, 1009 + wait).is_none());
    }

    #[test]
    fn repeat_blocks_back_off_but_never_lock_out() {
        let mut t = Throttle::default();
        let k = ThrottleKey::Address("192.0.2.1".parse().unwrap());
        let mut now = 0;
        let mut last = 0;
        for _ in 0..6 {
            for _ in 0..MAX_FAILURES {
                t.on_failure(k.clone(), now);
            }
            let wait = t.retry_after_s(&k, now).unwrap();
            assert!(wait >= last && wait <= MAX_BLOCK_S);
            last = wait;
            now += wait;
            assert!(t.retry_after_s(&k, now).is_none());
        }
        assert!(last > WINDOW_S);
        t.on_success(&k);
        assert!(t.retry_after_s(&k, now).is_none());
    }

    #[test]
    fn table_stays_bounded() {
        let mut t = Throttle::default();
        for i in 0..(MAX_KEYS as u32 + 10) {
            t.on_failure(ThrottleKey::Account(i.to_string()), 5);
        }
        assert!(t.entries.len() <= MAX_KEYS);
    }
}
