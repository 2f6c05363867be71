//! Store functions for packages and their recipients (tables `packages`, `package_recipients` of
//! migration 0002).
//!
//! Invariant: every lookup a request reaches is scoped to the caller: a package is visible only
//! to its sender and, once sent, to its recipients ([`Store::package_for`]).

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Most packages one list shows, and most recipients one package has.
pub const MAX_PACKAGE_LIST: u32 = 200;
pub const MAX_RECIPIENTS: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub id: i64,
    pub public_id: String,
    pub sender_id: i64,
    pub sender: String,
    pub title: String,
    pub note: String,
    pub created_at_s: i64,
    pub sent_at_s: Option<i64>,
}

/// A resolved recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: i64,
    pub name: String,
    /// '' for a direct recipient, else the workgroup it came through.
    pub via: String,
}

const COLS: &str =
    "p.id, p.public_id, p.sender_id, u.name, p.title, p.note, p.created_at, p.sent_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Package> {
    Ok(Package {
        id: r.get(0)?,
        public_id: r.get(1)?,
        sender_id: r.get(2)?,
        sender: r.get(3)?,
        title: r.get(4)?,
        note: r.get(5)?,
        created_at_s: r.get(6)?,
        sent_at_s: r.get(7)?,
    })
}

impl Store {
    /// Creates a draft package with its recipients (one transaction).
    pub fn create_package(
        &self,
        public_id: &str,
        sender_id: i64,
        title: &str,
        note: &str,
        recipients: &[(i64, String)],
        now_s: i64,
    ) -> Result<i64, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO packages (public_id, sender_id, title, note, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![public_id, sender_id, title, note, now_s],
            )?;
            let id = tx.last_insert_rowid();
            for (user_id, via) in recipients.iter().take(MAX_RECIPIENTS) {
                tx.execute(
                    "INSERT INTO package_recipients (package_id, user_id, via) VALUES (?1, ?2, ?3)
                     ON CONFLICT (package_id, user_id) DO NOTHING",
                    params![id, user_id, via],
                )?;
            }
            tx.commit()?;
            Ok(id)
        })
    }

    /// Adds recipients to a sent package (forwarding); returns the ones that were new.
    pub fn add_package_recipients(
        &self,
        id: i64,
        recipients: &[(i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let mut added = Vec::new();
            for (user_id, via) in recipients.iter().take(MAX_RECIPIENTS) {
                let n = tx.execute(
                    "INSERT INTO package_recipients (package_id, user_id, via) VALUES (?1, ?2, ?3)
                     ON CONFLICT (package_id, user_id) DO NOTHING",
                    params![id, user_id, via],
                )?;
                if n == 1 {
                    added.push(*user_id);
                }
            }
            tx.commit()?;
            Ok(added)
        })
    }

    /// Package `id` as `user_id` may see it: their own (any state), or sent to them.
    pub fn package_for(&self, id: i64, user_id: i64) -> Result<Option<Package>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM packages p JOIN users u ON u.id = p.sender_id WHERE p.id = ?1
                 AND (p.sender_id = ?2 OR (p.sent_at IS NOT NULL AND EXISTS
                     (SELECT 1 FROM package_recipients r WHERE r.package_id = p.id AND r.user_id = ?2)))"
            );
            Ok(c.query_row(&sql, params![id, user_id], row).optional()?)
        })
    }

    /// Package by its public id (for the transfer gate's package check).
    pub fn package_by_public_id(&self, public_id: &str) -> Result<Option<Package>, StoreError> {
        self.with_conn(|c| {
            let sql = format!("SELECT {COLS} FROM packages p JOIN users u ON u.id = p.sender_id WHERE p.public_id = ?1");
            Ok(c.query_row(&sql, [public_id], row).optional()?)
        })
    }

    /// Whether `user_id` is a recipient of package `id`.
    pub fn is_package_recipient(&self, id: i64, user_id: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM package_recipients WHERE package_id = ?1 AND user_id = ?2)",
                params![id, user_id],
                |r| r.get(0),
            )?)
        })
    }

    pub fn package_recipients(&self, id: i64) -> Result<Vec<Recipient>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT r.user_id, u.name, r.via FROM package_recipients r JOIN users u ON u.id = r.user_id
                 WHERE r.package_id = ?1 ORDER BY u.name",
            )?;
            let rows = stmt.query_map([id], |r| Ok(Recipient { user_id: r.get(0)?, name: r.get(1)?, via: r.get(2)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Marks a draft sent. `false` if it was not a draft of this sender.
    pub fn mark_package_sent(
        &self,
        id: i64,
        sender_id: i64,
        now_s: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "UPDATE packages SET sent_at = ?3 WHERE id = ?1 AND sender_id = ?2 AND sent_at IS NULL",
                params![id, sender_id, now_s],
            )? == 1)
        })
    }

    /// Packages sent to `user_id`, newest first.
    pub fn inbox(&self, user_id: i64) -> Result<Vec<Package>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM packages p JOIN users u ON u.id = p.sender_id
                 JOIN package_recipients r ON r.package_id = p.id AND r.user_id = ?1
                 WHERE p.sent_at IS NOT NULL ORDER BY p.sent_at DESC, p.id DESC LIMIT {MAX_PACKAGE_LIST}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([user_id], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Packages `user_id` created (drafts included), newest first.
    pub fn sent_packages(&self, user_id: i64) -> Result<Vec<Package>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM packages p JOIN users u ON u.id = p.sender_id
                 WHERE p.sender_id = ?1 ORDER BY p.id DESC LIMIT {MAX_PACKAGE_LIST}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([user_id], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
