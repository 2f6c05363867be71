//! The audit log page: filters by user, action, outcome, address and UTC date range, newest
//! first, paged backwards by id.
//!
//! Invariant: filter input is bounded and parsed (dates by `users::parse_date`); a bad filter is
//! a message, not an error page; the page shows only what `store::web_audit` recorded, which
//! never holds a secret.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::AppError;
use super::session::Admin;
use super::state::AppState;
use super::views::{self, base, with};
use crate::store::web_audit::{AuditEntry, AuditFilter, Outcome};
use crate::users;

/// Entries per page.
pub const PAGE_SIZE: u32 = 100;
/// Longest filter value read.
pub const MAX_FILTER: usize = 64;

#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub until: String,
    pub before: Option<i64>,
}

fn opt(s: &str) -> Option<String> {
    let s: String = s.trim().chars().take(MAX_FILTER).collect();
    (!s.is_empty()).then_some(s)
}

/// The store filter a query asks for.
pub fn filter(q: &AuditQuery) -> Result<AuditFilter, String> {
    let date = |s: &str, what: &str| -> Result<Option<i64>, String> {
        match opt(s) {
            None => Ok(None),
            Some(d) => {
                users::parse_date(&d).map_err(|_| format!("The {what} date must be YYYY-MM-DD."))
            }
        }
    };
    let outcome = match q.outcome.as_str() {
        "" => None,
        "ok" => Some(Outcome::Ok),
        "refused" => Some(Outcome::Refused),
        "failed" => Some(Outcome::Failed),
        _ => return Err("Pick an outcome from the list.".into()),
    };
    Ok(AuditFilter {
        actor: opt(&q.actor),
        action_prefix: opt(&q.action),
        outcome,
        ip: opt(&q.ip),
        from_s: date(&q.from, "from")?,
        // "Until" a date includes that whole day.
        until_s: date(&q.until, "until")?.map(|t| t + 86_400),
        before_id: q.before,
        limit: PAGE_SIZE,
    })
}

fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "when": views::when(e.at_s),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "ip": e.ip,
        "detail": e.detail,
    })
}

fn next_url(q: &AuditQuery, before: i64) -> String {
    let enc = views::percent_encode;
    format!(
        "/admin/audit?actor={}&action={}&outcome={}&ip={}&from={}&until={}&before={before}",
        enc(&q.actor),
        enc(&q.action),
        enc(&q.outcome),
        enc(&q.ip),
        enc(&q.from),
        enc(&q.until)
    )
}

/// `GET /admin/audit`.
pub async fn audit_page(
    State(state): State<AppState>,
    a: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let shown = json!({ "actor": q.actor, "action": q.action, "outcome": q.outcome, "ip": q.ip, "from": q.from, "until": q.until });
    let (entries, error, status) = match filter(&q) {
        Ok(f) => (state.db(move |s| s.audit_entries(&f)).await?, None, StatusCode::OK),
        Err(msg) => (Vec::new(), Some(msg), StatusCode::UNPROCESSABLE_ENTITY),
    };
    let next_before =
        (entries.len() as u32 == PAGE_SIZE).then(|| entries.last().map(|e| e.id)).flatten();
    let ctx = json!({
        "f": shown,
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "error": error,
        "next_before": next_before,
        "next_url": next_before.map(|b| next_url(&q, b)),
    });
    Ok((
        status,
        views::render("admin_audit.html", with(base(&a.0.visit, "Audit log", "audit"), ctx))?,
    )
        .into_response())
}
