//! Store functions for workgroups and their members (tables `workgroups`, `workgroup_members` of
//! migration 0002).
//!
//! Invariant: lookups that a non-admin's request reaches are scoped to groups the user belongs
//! to ([`Store::workgroup_for_member`]), so a group id alone reveals nothing.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Most workgroups listed at once, and most members one group holds.
pub const MAX_WORKGROUPS: u32 = 1000;
pub const MAX_MEMBERS: u64 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workgroup {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at_s: i64,
    pub member_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
}

/// Why a workgroup change was refused (the caller's to fix).
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("a workgroup named {0:?} already exists")]
    NameTaken(String),
    #[error("a workgroup holds at most {MAX_MEMBERS} members")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLS: &str = "g.id, g.name, g.description, g.created_at, \
    (SELECT COUNT(*) FROM workgroup_members m WHERE m.workgroup_id = g.id)";

fn row(r: &Row<'_>) -> rusqlite::Result<Workgroup> {
    let members: i64 = r.get(4)?;
    Ok(Workgroup {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        created_at_s: r.get(3)?,
        member_count: members.unsigned_abs(),
    })
}

impl Store {
    pub fn create_workgroup(
        &self,
        name: &str,
        description: &str,
        now_s: i64,
    ) -> Result<i64, GroupError> {
        let id = self.with_conn(|c| {
            let n = c.execute(
                "INSERT INTO workgroups (name, description, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, description, now_s],
            )?;
            Ok((n == 1).then(|| c.last_insert_rowid()))
        })?;
        id.ok_or_else(|| GroupError::NameTaken(name.to_owned()))
    }

    pub fn update_workgroup(&self, id: i64, description: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "UPDATE workgroups SET description = ?2 WHERE id = ?1",
                params![id, description],
            )? == 1)
        })
    }

    pub fn delete_workgroup(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| Ok(c.execute("DELETE FROM workgroups WHERE id = ?1", [id])? == 1))
    }

    /// Every workgroup (for admins).
    pub fn list_workgroups(&self) -> Result<Vec<Workgroup>, StoreError> {
        self.with_conn(|c| {
            let sql =
                format!("SELECT {COLS} FROM workgroups g ORDER BY g.name LIMIT {MAX_WORKGROUPS}");
            Ok(c.prepare(&sql)?.query_map([], row)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The workgroups `user_id` belongs to, with whether they administer each.
    pub fn member_workgroups(&self, user_id: i64) -> Result<Vec<(Workgroup, bool)>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS}, me.is_admin FROM workgroups g JOIN workgroup_members me
                 ON me.workgroup_id = g.id AND me.user_id = ?1 ORDER BY g.name LIMIT {MAX_WORKGROUPS}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([user_id], |r| Ok((row(r)?, r.get::<_, bool>(5)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Workgroup `id`, whoever asks (admins only).
    pub fn workgroup(&self, id: i64) -> Result<Option<Workgroup>, StoreError> {
        self.with_conn(|c| {
            let sql = format!("SELECT {COLS} FROM workgroups g WHERE g.id = ?1");
            Ok(c.query_row(&sql, [id], row).optional()?)
        })
    }

    /// Workgroup `id` if `user_id` is a member, with whether they administer it.
    pub fn workgroup_for_member(
        &self,
        id: i64,
        user_id: i64,
    ) -> Result<Option<(Workgroup, bool)>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS}, me.is_admin FROM workgroups g JOIN workgroup_members me
                 ON me.workgroup_id = g.id AND me.user_id = ?2 WHERE g.id = ?1"
            );
            Ok(c.query_row(&sql, params![id, user_id], |r| Ok((row(r)?, r.get::<_, bool>(5)?)))
                .optional()?)
        })
    }

    pub fn workgroup_members(&self, id: i64) -> Result<Vec<Member>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT m.user_id, u.name, m.is_admin FROM workgroup_members m JOIN users u ON u.id = m.user_id
                 WHERE m.workgroup_id = ?1 ORDER BY u.name LIMIT {MAX_MEMBERS}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([id], |r| Ok(Member { user_id: r.get(0)?, name: r.get(1)?, is_admin: r.get(2)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Adds a member or changes their admin mark.
    pub fn put_workgroup_member(
        &self,
        id: i64,
        user_id: i64,
        is_admin: bool,
    ) -> Result<(), GroupError> {
        let full = self.with_conn(|c| {
            let tx = c.transaction()?;
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM workgroup_members WHERE workgroup_id = ?1", [id], |r| r.get(0))?;
            let n = n.unsigned_abs();
            let present: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM workgroup_members WHERE workgroup_id = ?1 AND user_id = ?2)",
                params![id, user_id],
                |r| r.get(0),
            )?;
            if !present && n >= MAX_MEMBERS {
                return Ok(true);
            }
            tx.execute(
                "INSERT INTO workgroup_members (workgroup_id, user_id, is_admin) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workgroup_id, user_id) DO UPDATE SET is_admin = excluded.is_admin",
                params![id, user_id, is_admin],
            )?;
            tx.commit()?;
            Ok(false)
        })?;
        if full { Err(GroupError::Full) } else { Ok(()) }
    }

    pub fn remove_workgroup_member(&self, id: i64, user_id: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "DELETE FROM workgroup_members WHERE workgroup_id = ?1 AND user_id = ?2",
                params![id, user_id],
            )? == 1)
        })
    }
}
