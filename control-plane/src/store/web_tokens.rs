//! Store functions for API tokens (table `api_tokens` of migration 0002).
//!
//! Invariants: only the SHA-256 of a token's secret is stored; every lookup by id is scoped to
//! the owning user, so one user's token ids reveal and revoke nothing of another's.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Most live (unrevoked) tokens one user may hold.
pub const MAX_TOKENS_PER_USER: u64 = 50;

/// A token as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: String,
    pub created_at_s: i64,
    pub expires_at_s: Option<i64>,
    pub last_used_at_s: Option<i64>,
    pub revoked_at_s: Option<i64>,
}

const COLS: &str = "id, user_id, name, scopes, created_at, expires_at, last_used_at, revoked_at";

fn row(r: &Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        scopes: r.get(3)?,
        created_at_s: r.get(4)?,
        expires_at_s: r.get(5)?,
        last_used_at_s: r.get(6)?,
        revoked_at_s: r.get(7)?,
    })
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenCreateError {
    #[error("you already hold {MAX_TOKENS_PER_USER} live API tokens: revoke one first")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Stores a new token; refused past [`MAX_TOKENS_PER_USER`] live tokens.
    pub fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        scopes: &str,
        secret_hash: &[u8; 32],
        expires_at_s: Option<i64>,
        now_s: i64,
    ) -> Result<i64, TokenCreateError> {
        let out = self.with_conn(|c| {
            let tx = c.transaction()?;
            let live: i64 = tx.query_row(
                "SELECT COUNT(*) FROM api_tokens WHERE user_id = ?1 AND revoked_at IS NULL",
                [user_id],
                |r| r.get(0),
            )?;
            if live.unsigned_abs() >= MAX_TOKENS_PER_USER {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO api_tokens (user_id, name, secret_hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![user_id, name, &secret_hash[..], scopes, now_s, expires_at_s],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(id))
        })?;
        out.ok_or(TokenCreateError::TooMany)
    }

    /// A user's tokens, newest first (revoked ones included, for the record).
    pub fn list_api_tokens(&self, user_id: i64) -> Result<Vec<ApiToken>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM api_tokens WHERE user_id = ?1 ORDER BY id DESC LIMIT 200"
            );
            Ok(c.prepare(&sql)?.query_map([user_id], row)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The live token whose secret hashes to `secret_hash`, marking it used at `now_s`.
    pub fn use_api_token(
        &self,
        secret_hash: &[u8; 32],
        now_s: i64,
    ) -> Result<Option<ApiToken>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM api_tokens WHERE secret_hash = ?1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > ?2)"
            );
            let tok = c.query_row(&sql, params![&secret_hash[..], now_s], row).optional()?;
            if let Some(t) = &tok {
                c.execute(
                    "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
                    params![t.id, now_s],
                )?;
            }
            Ok(tok)
        })
    }

    /// Revokes `user_id`'s token `id`. `false` if that user has no such live token.
    pub fn revoke_api_token(&self, user_id: i64, id: i64, now_s: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "UPDATE api_tokens SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                params![id, user_id, now_s],
            )?;
            Ok(n == 1)
        })
    }
}
