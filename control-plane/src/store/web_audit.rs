//! Store functions for the audit log (table `audit_log` of migration 0002).
//!
//! Invariants: entries are append-only through this module (no update, no delete); every field
//! is bounded ([`MAX_FIELD`]) so a long user input cannot bloat the log; callers never pass a
//! secret (the web layer builds `detail` from field names and non-secret values only).

use rusqlite::{ToSql, params};

use super::{Store, StoreError};

/// Longest text kept in any field (longer text is cut, marked with '…').
pub const MAX_FIELD: usize = 500;
/// Most entries one query returns.
pub const MAX_PAGE: u32 = 500;

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// One entry to record.
#[derive(Clone, Debug)]
pub struct AuditRecord<'a> {
    pub at_s: i64,
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub ip: &'a str,
    pub detail: &'a str,
}

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_s: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub ip: String,
    pub detail: String,
}

/// A filter; `None` fields match everything.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Matches actions starting with this (e.g. `login` matches `login.failure`).
    pub action_prefix: Option<String>,
    pub outcome: Option<Outcome>,
    pub ip: Option<String>,
    pub from_s: Option<i64>,
    pub until_s: Option<i64>,
    /// Only entries with an id below this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: u32,
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Store {
    /// Appends an entry.
    pub fn audit(&self, r: &AuditRecord<'_>) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO audit_log (at, actor, action, target, outcome, ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.at_s, r.actor.map(cut), cut(r.action), cut(r.target), r.outcome.name(), cut(r.ip), cut(r.detail)],
            )?;
            Ok(())
        })
    }

    /// Entries matching `f`, newest first.
    pub fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at, actor, action, target, outcome, ip, detail FROM audit_log WHERE 1 = 1",
        );
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        let mut add = |clause: &str, v: Box<dyn ToSql>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(a) = &f.actor {
            add(" AND actor = ?", Box::new(a.clone()));
        }
        if let Some(p) = &f.action_prefix {
            // Prefix match without LIKE wildcards from the user (both '?' are the same argument).
            add(" AND substr(action, 1, length(?)) = ?", Box::new(p.clone()));
        }
        if let Some(o) = f.outcome {
            add(" AND outcome = ?", Box::new(o.name()));
        }
        if let Some(ip) = &f.ip {
            add(" AND ip = ?", Box::new(ip.clone()));
        }
        if let Some(t) = f.from_s {
            add(" AND at >= ?", Box::new(t));
        }
        if let Some(t) = f.until_s {
            add(" AND at < ?", Box::new(t));
        }
        if let Some(id) = f.before_id {
            add(" AND id < ?", Box::new(id));
        }
        let limit = f.limit.clamp(1, MAX_PAGE);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        self.with_conn(|c| {
            let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params.as_slice(), |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_s: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    outcome: r.get(5)?,
                    ip: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
