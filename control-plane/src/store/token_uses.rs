//! Single-use token bookkeeping (tables `token_uses`, `token_resume_grants` of 0001).
//!
//! A single-use token's life: no row (unused) → `active` (a transfer holds it) → `complete`
//! (spent) or `interrupted` (may resume) → `active` again on resume → ... Transitions:
//!
//! | row state            | claim by this process  | finish(complete) | finish(interrupted) |
//! |----------------------|------------------------|------------------|---------------------|
//! | none                 | active (fresh)         | -                | -                   |
//! | active, our holder   | refused: in use        | complete         | interrupted         |
//! | active, other holder | active (resume)        | (not ours: kept) | (not ours: kept)    |
//! | interrupted          | active (resume)        | -                | -                   |
//! | complete             | refused: already used  | -                | -                   |
//!
//! Invariants:
//! - A claim is one `BEGIN IMMEDIATE` transaction, so two concurrent claims of one token
//!   (threads or processes) cannot both succeed.
//! - A resume is granted only for a path the first use was granted (the resume grant), so a
//!   single-use token cannot be spent on one file and then reused for another.
//! - A row left `active` by another holder belongs to a process that is gone (one `haul serve`
//!   per data directory, each with a fresh random holder id): it counts as interrupted.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError};
use crate::authz::Direction;

/// A granted claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UseClaim {
    /// First use.
    Fresh,
    /// A resume of an interrupted use of the same path; `partial_bytes` is what the last
    /// holder recorded as safely written (0 if it recorded nothing).
    Resumed { partial_bytes: u64 },
}

/// A refused claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UseRefusal {
    /// Another transfer holds the token now.
    InUse,
    /// The token's one use is complete.
    AlreadyUsed,
    /// The token's one use was for another path.
    OtherPath { granted: String },
}

/// What a claim is for.
#[derive(Clone, Copy, Debug)]
pub struct UseAsk<'a> {
    pub token_id: &'a [u8; 16],
    pub user: &'a str,
    pub direction: Direction,
    pub path: &'a str,
    pub holder: &'a [u8; 16],
    pub token_expires_at_s: i64,
}

impl Store {
    /// Claims a single-use token's use for `ask.holder` (see the module's table).
    pub fn claim_token_use(
        &self,
        ask: &UseAsk<'_>,
        now_s: i64,
    ) -> Result<Result<UseClaim, UseRefusal>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(String, Vec<u8>)> = tx
                .query_row(
                    "SELECT state, holder FROM token_uses WHERE token_id = ?1",
                    [&ask.token_id[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let outcome = match row {
                None => {
                    tx.execute(
                        "INSERT INTO token_uses (token_id, user_name, direction, state, holder,
                             first_used_at, updated_at, token_expires_at)
                         VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?5, ?6)",
                        params![
                            &ask.token_id[..],
                            ask.user,
                            ask.direction.name(),
                            &ask.holder[..],
                            now_s,
                            ask.token_expires_at_s
                        ],
                    )?;
                    tx.execute(
                        "INSERT INTO token_resume_grants (token_id, path, partial_bytes, updated_at)
                         VALUES (?1, ?2, 0, ?3)",
                        params![&ask.token_id[..], ask.path, now_s],
                    )?;
                    Ok(UseClaim::Fresh)
                }
                Some((state, _)) if state == "complete" => Err(UseRefusal::AlreadyUsed),
                Some((state, holder)) if state == "active" && holder == ask.holder[..] => {
                    Err(UseRefusal::InUse)
                }
                Some(_) => resume(&tx, ask, now_s)?,
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Ends `holder`'s hold: `complete` spends the token, otherwise it may resume.
    pub fn finish_token_use(
        &self,
        token_id: &[u8; 16],
        holder: &[u8; 16],
        is_complete: bool,
        now_s: i64,
    ) -> Result<(), StoreError> {
        let state = if is_complete { "complete" } else { "interrupted" };
        self.with_conn(|c| {
            c.execute(
                "UPDATE token_uses SET state = ?1, updated_at = ?2
                 WHERE token_id = ?3 AND holder = ?4 AND state = 'active'",
                params![state, now_s, &token_id[..], &holder[..]],
            )?;
            Ok(())
        })
    }

    /// Records how much of `path` is safely written, for a later resume.
    pub fn record_partial(
        &self,
        token_id: &[u8; 16],
        path: &str,
        partial_bytes: u64,
        now_s: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE token_resume_grants SET partial_bytes = ?1, updated_at = ?2
                 WHERE token_id = ?3 AND path = ?4",
                params![partial_bytes as i64, now_s, &token_id[..], path],
            )?;
            Ok(())
        })
    }

    /// What the resume grant of `token_id` records for `path`, if there is one.
    pub fn resume_partial_bytes(
        &self,
        token_id: &[u8; 16],
        path: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.with_conn(|c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT partial_bytes FROM token_resume_grants WHERE token_id = ?1 AND path = ?2",
                    params![&token_id[..], path],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.map(|b| b.max(0) as u64))
        })
    }

    /// The token's use state (`active`, `interrupted`, `complete`), if it was ever used.
    pub fn token_use_state(&self, token_id: &[u8; 16]) -> Result<Option<String>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT state FROM token_uses WHERE token_id = ?1",
                [&token_id[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// Deletes use rows of tokens expired before `now_s` (they can never be presented again).
    pub fn purge_token_uses(&self, now_s: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute("DELETE FROM token_uses WHERE token_expires_at <= ?1", [now_s])?)
        })
    }
}

fn resume(
    tx: &rusqlite::Transaction<'_>,
    ask: &UseAsk<'_>,
    now_s: i64,
) -> Result<Result<UseClaim, UseRefusal>, StoreError> {
    let partial: Option<i64> = tx
        .query_row(
            "SELECT partial_bytes FROM token_resume_grants WHERE token_id = ?1 AND path = ?2",
            params![&ask.token_id[..], ask.path],
            |r| r.get(0),
        )
        .optional()?;
    let Some(partial) = partial else {
        let granted: String = tx.query_row(
            "SELECT path FROM token_resume_grants WHERE token_id = ?1 ORDER BY path LIMIT 1",
            [&ask.token_id[..]],
            |r| r.get(0),
        )?;
        return Ok(Err(UseRefusal::OtherPath { granted }));
    };
    tx.execute(
        "UPDATE token_uses SET state = 'active', holder = ?1, uses = uses + 1, updated_at = ?2
         WHERE token_id = ?3",
        params![&ask.holder[..], now_s, &ask.token_id[..]],
    )?;
    Ok(Ok(UseClaim::Resumed { partial_bytes: partial.max(0) as u64 }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ask<'a>(id: &'a [u8; 16], holder: &'a [u8; 16], path: &'a str) -> UseAsk<'a> {
        UseAsk {
            token_id: id,
            user: "alice",
            direction: Direction::Download,
            path,
            holder,
            token_expires_at_s: 1000,
        }
    }

    #[test]
    fn follows_the_transition_table() {
        let s = Store::open_in_memory().unwrap();
        let (id, me, dead) = ([1; 16], [2; 16], [3; 16]);
        assert_eq!(s.claim_token_use(&ask(&id, &me, "f"), 1).unwrap(), Ok(UseClaim::Fresh));
        assert_eq!(s.claim_token_use(&ask(&id, &me, "f"), 2).unwrap(), Err(UseRefusal::InUse));
        s.record_partial(&id, "f", 4096, 3).unwrap();
        s.finish_token_use(&id, &me, false, 4).unwrap();
        assert_eq!(
            s.claim_token_use(&ask(&id, &me, "g"), 5).unwrap(),
            Err(UseRefusal::OtherPath { granted: "f".into() })
        );
        assert_eq!(
            s.claim_token_use(&ask(&id, &me, "f"), 5).unwrap(),
            Ok(UseClaim::Resumed { partial_bytes: 4096 })
        );
        s.finish_token_use(&id, &me, true, 6).unwrap();
        assert_eq!(s.token_use_state(&id).unwrap().as_deref(), Some("complete"));
        assert_eq!(
            s.claim_token_use(&ask(&id, &me, "f"), 7).unwrap(),
            Err(UseRefusal::AlreadyUsed)
        );

        // A row a dead process left active resumes for the next holder.
        let id2 = [9; 16];
        assert_eq!(s.claim_token_use(&ask(&id2, &dead, "f"), 1).unwrap(), Ok(UseClaim::Fresh));
        assert_eq!(
            s.claim_token_use(&ask(&id2, &me, "f"), 2).unwrap(),
            Ok(UseClaim::Resumed { partial_bytes: 0 })
        );
        // The dead holder's late finish changes nothing.
        s.finish_token_use(&id2, &dead, true, 3).unwrap();
        assert_eq!(s.token_use_state(&id2).unwrap().as_deref(), Some("active"));

        assert_eq!(s.purge_token_uses(1000).unwrap(), 2);
        assert_eq!(s.token_use_state(&id).unwrap(), None);
    }
}
