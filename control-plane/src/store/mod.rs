//! The control plane's store: one SQLite database in the data directory, behind this module.
//!
//! Why rusqlite and not sqlx: docs/STORE.md. In short: every query here is small and local, the
//! gate and the console call it from `spawn_blocking`, and a synchronous API keeps the store
//! boundary (this module's functions) the only place SQL is written, so a PostgreSQL store for
//! multi-node Haul is a second implementation of the same functions.
//!
//! Invariants:
//! - Schema changes are append-only migrations in `control-plane/migrations/NNNN_name.sql`,
//!   listed in [`MIGRATIONS`] in order; each runs once, in a transaction, and is recorded in
//!   `schema_migrations`. A database newer than this build is refused, not downgraded.
//! - Issue 5 owns `0001`; later issues only add files.
//! - The database file is created 0600 in a data directory the caller has already checked.

pub mod deliveries;
pub mod external;
pub mod package_limits;
pub mod settings;
pub mod token_uses;
pub mod users;
pub mod web;
pub mod web_audit;
pub mod web_groups;
pub mod web_packages;
pub mod web_settings;
pub mod web_tokens;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use thiserror::Error;

/// The migrations, in order: (version, name, SQL). Append only.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (2, "web", include_str!("../../migrations/0002_web.sql")),
    (3, "external", include_str!("../../migrations/0003_external.sql")),
    (4, "deliveries", include_str!("../../migrations/0004_deliveries.sql")),
];

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "haul.db";

/// Store failures. `Corrupt`/`TooNew` are the operator's to fix; `Sql` carries SQLite's words.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "store database at {path} has schema version {found}; this build knows up to {known}: upgrade haul"
    )]
    TooNew { path: String, found: u32, known: u32 },
    #[error("store database is unusable: {0}")]
    Corrupt(String),
    #[error("store I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The caller asked to add a user whose name is taken.
    #[error("user {0} already exists")]
    UserExists(String),
    /// The caller named a user that does not exist.
    #[error("no user called {0}")]
    UserNotFound(String),
    /// The caller gave an SSH key another user (or this one, twice) already has.
    #[error("SSH key {fingerprint} already belongs to user {owner}")]
    SshKeyTaken { fingerprint: String, owner: String },
    /// A settings row holds a value this build cannot read (edited by hand, or a bug).
    #[error("setting {key} holds {value:?}, which is not a valid value")]
    BadSetting { key: String, value: String },
}

/// The store. Cheap to share behind an `Arc`; one connection, serialized by a mutex (SQLite
/// serializes writers anyway; every call is short).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if absent) `DATA_DIR/haul.db` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        create_private(&path)?;
        let conn = Connection::open(&path)?;
        Store::init(conn, &path.display().to_string())
    }

    /// An in-memory store with the full schema, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, path: &str) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        migrate(&mut conn, path)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Runs `f` with the connection. Store modules (users, tokens, ...) are the only callers.
    pub fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self.lock();
        f(&mut guard)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.with_conn(|c| current_version(c))
    }
}

fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map(drop)
        .map_err(io)
}

const fn libc_o_nofollow() -> i32 {
    // O_NOFOLLOW on Linux (all architectures Haul supports); std has no constant for it.
    0o400000
}

fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    let v: Option<u32> =
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0))
}

fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > known {
        return Err(StoreError::TooNew { path: path.to_owned(), found, known });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
            rusqlite::params![version, name],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_apply_once() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.0 > last, "migration {} out of order", m.0);
            last = m.0;
        }
        let dir = std::env::temp_dir().join(format!("haul-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.schema_version().unwrap(), last);
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.schema_version().unwrap(), last);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_newer_database() {
        let s = Store::open_in_memory().unwrap();
        let err = s.with_conn(|c| {
            c.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 0)", [])?;
            migrate(c, "test")
        });
        assert!(matches!(err, Err(StoreError::TooNew { found: 9999, .. })), "{err:?}");
    }
}
