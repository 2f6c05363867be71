//! The gate's limits and counters: connections and transfers per source address, transfers in
//! all, failed authentications per source address (a window, then a growing backoff), and a
//! count of every refusal by kind (docs/GATE.md, "Limits").
//!
//! Invariants: a slot is taken before the thing it limits starts and is released by `Drop`, so
//! a connection or transfer that ends any way at all gives its slot back; one more than a limit
//! is refused; the ledger holds at most one entry per address with a live slot (entries at zero
//! are removed), so its size is bounded by the connection limit times the addresses connected.
//! The failed-authentication table holds at most [`MAX_AUTH_TRACKED_ADDRESSES`] addresses;
//! entries idle for [`MAX_AUTH_BACKOFF`] past their window or block are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::policy::RefusalKind;

/// Most source addresses whose failed authentications are remembered at once.
pub const MAX_AUTH_TRACKED_ADDRESSES: usize = 65_536;
/// The longest an address is blocked after repeated bursts of failed authentications.
pub const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);

/// The gate's limits. Defaults are documented in docs/GATE.md.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent SSH connections from one address.
    pub connections_per_address: usize,
    /// Concurrent transfers from one address.
    pub transfers_per_address: usize,
    /// Concurrent transfers on this server.
    pub transfers: usize,
    /// Authentication attempts per connection.
    pub auth_attempts: usize,
    /// Failed authentications from one address within [`Limits::auth_window`] before that
    /// address is blocked (every connection from it refused) for the backoff.
    pub auth_failures_per_address: usize,
    /// The window failed authentications are counted in.
    pub auth_window: Duration,
    /// The first block's length; each further block of the same address doubles it, up to
    /// [`MAX_AUTH_BACKOFF`].
    pub auth_backoff: Duration,
    /// A connection that sends nothing for this long is closed (clients send keepalives while
    /// their data flows over UDP).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_address: 64,
            transfers_per_address: 32,
            transfers: 256,
            auth_attempts: 6,
            auth_failures_per_address: 20,
            auth_window: Duration::from_secs(60),
            auth_backoff: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Refusals counted by kind, and transfers served.
#[derive(Debug, Default)]
pub struct Counters {
    refused: [AtomicU64; RefusalKind::ALL.len()],
    pub transfers_ok: AtomicU64,
    pub transfers_failed: AtomicU64,
}

impl Counters {
    pub fn refuse(&self, kind: RefusalKind, client: Option<IpAddr>) {
        if let Some(c) = RefusalKind::ALL.iter().position(|k| *k == kind) {
            self.refused[c].fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(refused = kind.name(), client = ?client, "gate refused a request");
    }
    pub fn refused(&self, kind: RefusalKind) -> u64 {
        RefusalKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |c| self.refused[c].load(Ordering::Relaxed))
    }
    /// `name=count` for every kind, for the log line at shutdown and for tests.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RefusalKind::ALL.iter().map(|k| (k.name(), self.refused(*k))).collect()
    }
}

#[derive(Debug, Default)]
struct PerAddress {
    connections: usize,
    transfers: usize,
}

/// One address's failed authentications.
#[derive(Clone, Copy, Debug)]
struct AuthRecord {
    window_start: Instant,
    failures: usize,
    blocked_until: Option<Instant>,
    /// Blocks so far: the next one lasts `auth_backoff * 2^strikes`.
    strikes: u32,
}

impl AuthRecord {
    /// When this record stops mattering (and may be dropped).
    fn stale_at(&self, window: Duration) -> Instant {
        let end = self.blocked_until.unwrap_or(self.window_start).max(self.window_start + window);
        end + MAX_AUTH_BACKOFF
    }
}

/// Live connections and transfers, per address and in all; failed authentications per address.
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    inner: Mutex<(HashMap<IpAddr, PerAddress>, usize)>,
    auth: Mutex<HashMap<IpAddr, AuthRecord>>,
}

/// Which count a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Connection,
    Transfer,
}

/// A held connection or transfer; released on drop.
#[derive(Debug)]
pub struct Slot {
    ledger: Arc<Ledger>,
    ip: IpAddr,
    kind: SlotKind,
}

impl Ledger {
    pub fn new(limits: Limits) -> Arc<Ledger> {
        Arc::new(Ledger {
            limits,
            inner: Mutex::new((HashMap::new(), 0)),
            auth: Mutex::new(HashMap::new()),
        })
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn take(self: &Arc<Self>, ip: IpAddr, kind: SlotKind) -> Result<Slot, RefusalKind> {
        // A poisoned lock means a panic while holding it: our bug; refuse rather than guess.
        let mut g = self.inner.lock().map_err(|_| RefusalKind::SessionLimit)?;
        let (map, total) = &mut *g;
        let e = map.entry(ip).or_default();
        match kind {
            SlotKind::Connection if e.connections >= self.limits.connections_per_address => {
                return Err(RefusalKind::ConnectionLimit);
            }
            SlotKind::Transfer
                if e.transfers >= self.limits.transfers_per_address
                    || *total >= self.limits.transfers =>
            {
                return Err(RefusalKind::SessionLimit);
            }
            SlotKind::Connection => e.connections += 1,
            SlotKind::Transfer => {
                e.transfers += 1;
                *total += 1;
            }
        }
        Ok(Slot { ledger: self.clone(), ip, kind })
    }

    /// One more connection from `ip`, or the refusal.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, RefusalKind> {
        self.take(ip, SlotKind::Connection)
    }
    /// One more transfer from `ip`, or the refusal.
    pub fn transfer(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, RefusalKind> {
        self.take(ip, SlotKind::Transfer)
    }
    /// Live transfers in all.
    pub fn transfers(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.1)
    }

    /// Whether `ip` is blocked for failed authentications at `now`.
    pub fn is_auth_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        // A poisoned lock (our bug): block rather than guess.
        let Ok(g) = self.auth.lock() else { return true };
        g.get(&ip).and_then(|r| r.blocked_until).is_some_and(|t| now < t)
    }

    /// Count one failed authentication from `ip`. Returns the block's length when this failure
    /// started a block of the address.
    pub fn on_auth_failure(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let l = &self.limits;
        let mut g = self.auth.lock().ok()?;
        if !g.contains_key(&ip) && g.len() >= MAX_AUTH_TRACKED_ADDRESSES {
            g.retain(|_, r| now < r.stale_at(l.auth_window));
            if g.len() >= MAX_AUTH_TRACKED_ADDRESSES {
                // Full of live records: this address is not tracked (its per-connection limit
                // still holds).
                return None;
            }
        }
        let r = g.entry(ip).or_insert(AuthRecord {
            window_start: now,
            failures: 0,
            blocked_until: None,
            strikes: 0,
        });
        if now.duration_since(r.window_start) > l.auth_window {
            r.window_start = now;
            r.failures = 0;
        }
        r.failures += 1;
        if r.failures < l.auth_failures_per_address.max(1) {
            return None;
        }
        let backoff = l.auth_backoff.saturating_mul(1 << r.strikes.min(16)).min(MAX_AUTH_BACKOFF);
        r.blocked_until = Some(now + backoff);
        r.strikes = r.strikes.saturating_add(1);
        r.failures = 0;
        r.window_start = now;
        Some(backoff)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut g) = self.ledger.inner.lock() else { return };
        let (map, total) = &mut *g;
        if let Some(e) = map.get_mut(&self.ip) {
            match self.kind {
                SlotKind::Connection => e.connections = e.connections.saturating_sub(1),
                SlotKind::Transfer => {
                    e.transfers = e.transfers.saturating_sub(1);
                    *total = total.saturating_sub(1);
                }
            }
            if e.connections == 0 && e.transfers == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_more_than_the_limit_is_refused_and_slots_come_back() {
        let l = Ledger::new(Limits {
            connections_per_address: 2,
            transfers_per_address: 1,
            transfers: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c1 = l.connect(a).unwrap();
        let _c2 = l.connect(a).unwrap();
        assert_eq!(l.connect(a).unwrap_err(), RefusalKind::ConnectionLimit);
        assert!(l.connect(b).is_ok(), "other addresses are not affected");
        drop(c1);
        assert!(l.connect(a).is_ok());
        let t1 = l.transfer(a).unwrap();
        assert_eq!(l.transfer(a).unwrap_err(), RefusalKind::SessionLimit, "per address");
        let _t2 = l.transfer(b).unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(l.transfer(c).unwrap_err(), RefusalKind::SessionLimit, "in all");
        drop(t1);
        assert_eq!(l.transfers(), 1);
        assert!(l.transfer(c).is_ok());
    }

    #[test]
    fn failed_authentications_block_the_address_with_a_growing_backoff() {
        let l = Ledger::new(Limits {
            auth_failures_per_address: 3,
            auth_window: Duration::from_secs(10),
            auth_backoff: Duration::from_secs(5),
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.on_auth_failure(a, t0), None);
        assert_eq!(l.on_auth_failure(a, t0), None);
        assert!(!l.is_auth_blocked(a, t0));
        assert_eq!(l.on_auth_failure(a, t0), Some(Duration::from_secs(5)));
        assert!(l.is_auth_blocked(a, t0 + Duration::from_secs(4)));
        assert!(!l.is_auth_blocked(b, t0), "other addresses are not affected");
        let t1 = t0 + Duration::from_secs(6);
        assert!(!l.is_auth_blocked(a, t1), "the block ends");
        for _ in 0..2 {
            assert_eq!(l.on_auth_failure(a, t1), None);
        }
        assert_eq!(l.on_auth_failure(a, t1), Some(Duration::from_secs(10)), "doubled");
        // Failures spread wider than the window never block.
        let t2 = t1 + Duration::from_secs(20);
        for i in 0..6u64 {
            assert_eq!(l.on_auth_failure(b, t2 + Duration::from_secs(11 * i)), None);
        }
    }

    #[test]
    fn counters_count_by_kind() {
        let c = Counters::default();
        c.refuse(RefusalKind::Shell, None);
        c.refuse(RefusalKind::Shell, None);
        c.refuse(RefusalKind::Env, None);
        assert_eq!(c.refused(RefusalKind::Shell), 2);
        assert_eq!(c.refused(RefusalKind::Env), 1);
        assert_eq!(c.refused(RefusalKind::Pty), 0);
    }
}
