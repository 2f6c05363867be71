//! Store functions for console accounts and sessions (tables `web_accounts`, `web_sessions` of
//! migration 0002).
//!
//! Invariants:
//! - Sessions are looked up by the SHA-256 of their id only; the id itself is never stored.
//! - Changing a password or resetting it ends every session of that user in the same
//!   transaction, so a stolen session does not outlive the password it was opened with.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Most accounts or sessions one listing returns.
pub const MAX_LIST: u32 = 1000;

/// A console account, joined with its user's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebAccount {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
    pub must_change_password: bool,
    pub email: String,
    pub full_name: String,
    pub has_totp: bool,
    pub last_login_at_s: Option<i64>,
}

/// What a sign-in checks: never leaves the server.
#[derive(Clone, Debug)]
pub struct WebCredentials {
    pub password_hash: String,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_pending: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
}

/// A new account's fields.
#[derive(Clone, Debug)]
pub struct NewWebAccount<'a> {
    pub user_id: i64,
    pub password_hash: &'a str,
    pub is_admin: bool,
    pub must_change_password: bool,
    pub email: &'a str,
    pub full_name: &'a str,
}

/// A stored session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub user_id: i64,
    pub created_at_s: i64,
    pub last_seen_at_s: i64,
    pub ip: String,
    pub is_partial: bool,
}

const ACCOUNT_COLS: &str = "a.user_id, u.name, a.is_admin, a.must_change_password, a.email, \
    a.full_name, a.totp_secret IS NOT NULL, a.last_login_at";

fn account_row(r: &Row<'_>) -> rusqlite::Result<WebAccount> {
    Ok(WebAccount {
        user_id: r.get(0)?,
        name: r.get(1)?,
        is_admin: r.get(2)?,
        must_change_password: r.get(3)?,
        email: r.get(4)?,
        full_name: r.get(5)?,
        has_totp: r.get(6)?,
        last_login_at_s: r.get(7)?,
    })
}

fn account_where(
    c: &Connection,
    cond: &str,
    p: impl rusqlite::Params,
) -> Result<Option<WebAccount>, StoreError> {
    let sql = format!(
        "SELECT {ACCOUNT_COLS} FROM web_accounts a JOIN users u ON u.id = a.user_id WHERE {cond}"
    );
    Ok(c.query_row(&sql, p, account_row).optional()?)
}

impl Store {
    /// How many console admins exist (0 on first start).
    pub fn web_admin_count(&self) -> Result<u64, StoreError> {
        self.with_conn(|c| {
            let n: i64 =
                c.query_row("SELECT COUNT(*) FROM web_accounts WHERE is_admin = 1", [], |r| {
                    r.get(0)
                })?;
            Ok(n.unsigned_abs())
        })
    }

    /// Creates (or replaces) the console account of an existing user.
    pub fn put_web_account(&self, a: &NewWebAccount<'_>, now_s: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO web_accounts (user_id, password_hash, is_admin, must_change_password,
                     email, full_name, password_changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,
                     is_admin = excluded.is_admin, must_change_password = excluded.must_change_password,
                     email = excluded.email, full_name = excluded.full_name,
                     password_changed_at = excluded.password_changed_at",
                params![a.user_id, a.password_hash, a.is_admin, a.must_change_password, a.email, a.full_name, now_s],
            )?;
            Ok(())
        })
    }

    /// The console account of user `user_id`.
    pub fn web_account(&self, user_id: i64) -> Result<Option<WebAccount>, StoreError> {
        self.with_conn(|c| account_where(c, "a.user_id = ?1", [user_id]))
    }

    /// The console account named `name`, with what a sign-in checks.
    pub fn web_login(
        &self,
        name: &str,
    ) -> Result<Option<(WebAccount, WebCredentials)>, StoreError> {
        self.with_conn(|c| {
            let Some(acct) = account_where(c, "u.name = ?1", [name])? else { return Ok(None) };
            let creds = c.query_row(
                "SELECT password_hash, totp_secret, totp_pending, totp_last_step FROM web_accounts WHERE user_id = ?1",
                [acct.user_id],
                |r| Ok(WebCredentials { password_hash: r.get(0)?, totp_secret: r.get(1)?, totp_pending: r.get(2)?, totp_last_step: r.get(3)? }),
            )?;
            Ok(Some((acct, creds)))
        })
    }

    /// Every console account, by name.
    pub fn list_web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {ACCOUNT_COLS} FROM web_accounts a JOIN users u ON u.id = a.user_id ORDER BY u.name LIMIT {MAX_LIST}"
            );
            let rows = c.prepare(&sql)?.query_map([], account_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Sets a new password hash and ends every session of the user.
    pub fn set_web_password(
        &self,
        user_id: i64,
        hash: &str,
        must_change: bool,
        now_s: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE web_accounts SET password_hash = ?2, must_change_password = ?3, password_changed_at = ?4 WHERE user_id = ?1",
                params![user_id, hash, must_change, now_s],
            )?;
            tx.execute("DELETE FROM web_sessions WHERE user_id = ?1", [user_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Updates an account's role and contact fields.
    pub fn set_web_profile(
        &self,
        user_id: i64,
        is_admin: bool,
        email: &str,
        full_name: &str,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE web_accounts SET is_admin = ?2, email = ?3, full_name = ?4 WHERE user_id = ?1",
                params![user_id, is_admin, email, full_name],
            )?;
            Ok(())
        })
    }

    /// Sets (`Some`) or clears the pending TOTP secret.
    pub fn set_totp_pending(&self, user_id: i64, secret: Option<&[u8]>) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE web_accounts SET totp_pending = ?2 WHERE user_id = ?1",
                params![user_id, secret],
            )?;
            Ok(())
        })
    }

    /// Makes the pending secret the active one (`enable`) or removes the second factor.
    pub fn set_totp_active(
        &self,
        user_id: i64,
        enable: bool,
        step: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let sql = if enable {
                "UPDATE web_accounts SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ?2 WHERE user_id = ?1"
            } else {
                "UPDATE web_accounts SET totp_secret = NULL, totp_pending = NULL, totp_last_step = ?2 WHERE user_id = ?1"
            };
            c.execute(sql, params![user_id, step])?;
            Ok(())
        })
    }

    /// Records an accepted TOTP step, only if it is later than the last one (so two requests
    /// racing with the same code cannot both win). Returns whether it was recorded.
    pub fn record_totp_step(&self, user_id: i64, step: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE web_accounts SET totp_last_step = ?2 WHERE user_id = ?1
                 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
                params![user_id, step],
            )?;
            Ok(n == 1)
        })
    }

    /// Stores a new session.
    pub fn create_web_session(&self, id_hash: &[u8; 32], s: &WebSession) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO web_sessions (id_hash, user_id, created_at, last_seen_at, ip, is_partial)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&id_hash[..], s.user_id, s.created_at_s, s.last_seen_at_s, s.ip, s.is_partial],
            )?;
            if !s.is_partial {
                c.execute("UPDATE web_accounts SET last_login_at = ?2 WHERE user_id = ?1", params![s.user_id, s.created_at_s])?;
            }
            Ok(())
        })
    }

    /// The session with this id hash.
    pub fn web_session(&self, id_hash: &[u8; 32]) -> Result<Option<WebSession>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT user_id, created_at, last_seen_at, ip, is_partial FROM web_sessions WHERE id_hash = ?1",
                [&id_hash[..]],
                |r| Ok(WebSession { user_id: r.get(0)?, created_at_s: r.get(1)?, last_seen_at_s: r.get(2)?, ip: r.get(3)?, is_partial: r.get(4)? }),
            )
            .optional()?)
        })
    }

    /// Marks a session as seen at `now_s` (the idle timeout counts from here).
    pub fn touch_web_session(&self, id_hash: &[u8; 32], now_s: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE web_sessions SET last_seen_at = ?2 WHERE id_hash = ?1",
                params![&id_hash[..], now_s],
            )?;
            Ok(())
        })
    }

    /// Ends one session.
    pub fn delete_web_session(&self, id_hash: &[u8; 32]) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute("DELETE FROM web_sessions WHERE id_hash = ?1", [&id_hash[..]])?;
            Ok(())
        })
    }

    /// Ends every session of a user (disable, reset, role change).
    pub fn delete_user_web_sessions(&self, user_id: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute("DELETE FROM web_sessions WHERE user_id = ?1", [user_id])?;
            Ok(())
        })
    }

    /// Forgets sessions idle since before `idle_before_s` or created before `created_before_s`.
    pub fn purge_web_sessions(
        &self,
        idle_before_s: i64,
        created_before_s: i64,
    ) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "DELETE FROM web_sessions WHERE last_seen_at < ?1 OR created_at < ?2",
                params![idle_before_s, created_before_s],
            )?)
        })
    }

    /// The name of the user with this id (ids are what console URLs carry).
    pub fn user_name_by_id(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row("SELECT name FROM users WHERE id = ?1", [user_id], |r| r.get(0))
                .optional()?)
        })
    }
}
