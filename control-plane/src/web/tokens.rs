//! API tokens for scripts: the page that lists, creates and revokes them, and the bearer
//! authentication the JSON API uses.
//!
//! Invariants:
//! - A token is `haul_` + 64 hex digits (256 random bits); only its SHA-256 is stored, and the
//!   secret is shown once, on the page that created it.
//! - Scopes are `read`, `write`, `admin`; `admin` is granted only to admins and is still
//!   subject to the admin address ranges on every call.
//! - Token ids in URLs are scoped to their owner: another user's id is 404.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{NoticeQuery, audit_for, notice_text, parse_id};
use super::error::AppError;
use super::keys;
use super::session::Member;
use super::state::AppState;
use super::views::{self, base, with};
use crate::store::web_audit::Outcome;
use crate::store::web_tokens::{ApiToken, TokenCreateError};

/// The prefix every API token starts with (so secret scanners can find leaked ones).
pub const TOKEN_PREFIX: &str = "haul_";
/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;
/// Longest lifetime a token may be given, in days.
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A token's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    pub fn parse(text: &str) -> Scopes {
        let has = |w: &str| text.split_whitespace().any(|s| s == w);
        Scopes { read: has("read"), write: has("write"), admin: has("admin") }
    }

    pub fn to_text(self) -> String {
        [(self.read, "read"), (self.write, "write"), (self.admin, "admin")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The SHA-256 a presented token is looked up by.
pub fn token_hash(secret: &str) -> [u8; 32] {
    keys::id_hash(secret.as_bytes())
}

fn token_json(t: &ApiToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scopes": t.scopes,
        "created": views::when(t.created_at_s),
        "expires": t.expires_at_s.map(views::when),
        "last_used": t.last_used_at_s.map(views::when),
        "revoked": t.revoked_at_s.map(views::when),
    })
}

async fn page(
    state: &AppState,
    m: &Member,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let uid = m.ctx.account.user_id;
    let tokens = state.db(move |s| s.list_api_tokens(uid)).await?;
    let list: Vec<Value> = tokens.iter().map(token_json).collect();
    let ctx = with(with(base(&m.visit, "API tokens", "tokens"), json!({ "tokens": list })), extra);
    Ok((status, views::render("tokens.html", ctx)?).into_response())
}

/// `GET /account/tokens`.
pub async fn tokens_page(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let notice = q.notice.as_deref().and_then(notice_text);
    page(&state, &m, json!({ "notice": notice }), StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    pub name: String,
    pub scope_read: Option<String>,
    pub scope_write: Option<String>,
    pub scope_admin: Option<String>,
    #[serde(default)]
    pub expires_days: String,
}

/// A new token for `m`'s user: `(id, secret)`. Refusals are the caller's to fix.
pub async fn mint(
    state: &AppState,
    m: &Member,
    name: &str,
    scopes: Scopes,
    days: u32,
) -> Result<(i64, String), AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
        return Err(AppError::BadRequest(format!(
            "Give the token a name of 1 to {MAX_TOKEN_NAME} characters."
        )));
    }
    if scopes == Scopes::default() {
        return Err(AppError::BadRequest("Choose at least one scope.".into()));
    }
    if scopes.admin && !m.ctx.account.is_admin {
        return Err(AppError::Forbidden("Only administrators can create admin tokens."));
    }
    if days > MAX_TOKEN_DAYS {
        return Err(AppError::BadRequest(format!("A token lives at most {MAX_TOKEN_DAYS} days.")));
    }
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        hex::encode(keys::random_id().map_err(|e| AppError::Internal(e.to_string()))?)
    );
    let hash = token_hash(&secret);
    let now_s = state.now_s();
    let expires = (days > 0).then(|| now_s + i64::from(days) * 86_400);
    let (uid, n, sc) = (m.ctx.account.user_id, name.to_owned(), scopes.to_text());
    let store = state.store.clone();
    let made = tokio::task::spawn_blocking(move || {
        store.create_api_token(uid, &n, &sc, &hash, expires, now_s)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?;
    let id = match made {
        Ok(id) => id,
        Err(TokenCreateError::TooMany) => {
            return Err(AppError::BadRequest(TokenCreateError::TooMany.to_string()));
        }
        Err(TokenCreateError::Store(e)) => return Err(e.into()),
    };
    let detail = format!("api token {id} \"{name}\" scopes {}", scopes.to_text());
    state
        .audit(audit_for(&m.visit, Some(&m.ctx.account.name), "token.create", Outcome::Ok, &detail))
        .await?;
    Ok((id, secret))
}

/// `POST /account/tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    m: Member,
    Form(f): Form<NewTokenForm>,
) -> Result<Response, AppError> {
    let scopes = Scopes {
        read: f.scope_read.is_some(),
        write: f.scope_write.is_some(),
        admin: f.scope_admin.is_some(),
    };
    let days = match f.expires_days.trim() {
        "" => 0,
        d => match d.parse::<u32>() {
            Ok(d) => d,
            Err(_) => {
                return page(
                    &state,
                    &m,
                    json!({ "error": "The expiry must be a number of days." }),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    match mint(&state, &m, &f.name, scopes, days).await {
        Ok((_, secret)) => {
            page(
                &state,
                &m,
                json!({ "created": { "name": f.name.trim(), "secret": secret } }),
                StatusCode::OK,
            )
            .await
        }
        Err(AppError::BadRequest(msg)) => {
            page(&state, &m, json!({ "error": msg }), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(AppError::Forbidden(msg)) => {
            page(&state, &m, json!({ "error": msg }), StatusCode::FORBIDDEN).await
        }
        Err(e) => Err(e),
    }
}

/// Revokes `m`'s token `id`; 404 if it is not theirs or already revoked.
pub async fn revoke(state: &AppState, m: &Member, id: i64) -> Result<(), AppError> {
    let (uid, now_s) = (m.ctx.account.user_id, state.now_s());
    if !state.db(move |s| s.revoke_api_token(uid, id, now_s)).await? {
        return Err(AppError::NotFound);
    }
    state
        .audit(audit_for(
            &m.visit,
            Some(&m.ctx.account.name),
            "token.revoke",
            Outcome::Ok,
            &format!("api token {id}"),
        ))
        .await
}

/// `POST /account/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    revoke(&state, &m, parse_id(&id)?).await?;
    Ok(Redirect::to("/account/tokens?notice=revoked").into_response())
}
