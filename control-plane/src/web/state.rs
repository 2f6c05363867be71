//! The console's shared state: configuration, store, keys, clock and the login throttle.
//!
//! Invariant: the store is only called from `spawn_blocking` ([`AppState::db`]), so a slow disk
//! never stalls the async threads that serve other requests.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::WebConfig;
use super::error::AppError;
use super::throttle::Throttle;
use crate::secret::Keyring;
use crate::store::{Store, StoreError};

/// Where the console reads the time (unix seconds, UTC).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_s(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_s(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock tests set by hand, so timeouts are tested without waiting.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_s: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_s))
    }
    pub fn advance(&self, by_s: i64) {
        self.0.fetch_add(by_s, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_s(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a handler can reach.
#[derive(Debug)]
pub struct Shared {
    pub config: WebConfig,
    pub store: Arc<Store>,
    pub keys: Arc<Keyring>,
    throttle: Mutex<Throttle>,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: WebConfig, store: Arc<Store>, keys: Arc<Keyring>) -> AppState {
        AppState(Arc::new(Shared {
            config,
            store,
            keys,
            throttle: Mutex::new(Throttle::default()),
        }))
    }

    pub fn now_s(&self) -> i64 {
        self.config.clock.now_s()
    }

    /// The login throttle (held briefly; never across an await).
    pub fn throttle(&self) -> MutexGuard<'_, Throttle> {
        // The throttle is plain data updated in one step; a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is safe to take over.
        self.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the store in a blocking thread.
    pub async fn db<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AppError::Internal(format!("store task: {e}")))?
            .map_err(AppError::from)
    }

    /// Runs CPU-heavy work (argon2) in a blocking thread.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AppError::Internal(format!("worker task: {e}")))
    }
}

/// An audit entry to record (owned, so it can cross into the blocking thread).
#[derive(Clone, Debug)]
pub struct Audit {
    pub actor: Option<String>,
    pub action: &'static str,
    pub target: String,
    pub outcome: crate::store::web_audit::Outcome,
    pub ip: std::net::IpAddr,
    /// Never a secret: field names and non-secret values only.
    pub detail: String,
}

impl Audit {
    /// The same entry about `target`.
    pub fn target(mut self, target: &str) -> Audit {
        self.target = target.to_owned();
        self
    }
}

impl AppState {
    /// Appends to the audit log at the current time.
    pub async fn audit(&self, a: Audit) -> Result<(), AppError> {
        let at_s = self.now_s();
        self.db(move |s| {
            s.audit(&crate::store::web_audit::AuditRecord {
                at_s,
                actor: a.actor.as_deref(),
                action: a.action,
                target: &a.target,
                outcome: a.outcome,
                ip: &a.ip.to_string(),
                detail: &a.detail,
            })
        })
        .await
    }
}
