//! The JSON API under `/api/v1/`, for scripts.
//!
//! Invariants:
//! - A caller is either an API token (`Authorization: Bearer haul_...`, no cookie) or a signed-in
//!   browser session; with a session, every state-changing call needs the CSRF token (checked by
//!   the session middleware before this module runs).
//! - Token scopes gate methods: `read` for GET, `write` for POST/DELETE, `admin` for
//!   `/api/v1/admin/*`, which also needs an admin account and an address inside the admin ranges.
//! - The account checks of a sign-in (disabled, expired, login allow-list) apply to every
//!   token call too.
//! - Errors are JSON `{ "error", "status" }`; ids that are not the caller's are 404.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{account_refusal, parse_id};
use super::audit::{AuditQuery, filter};
use super::error::{ApiError, AppError};
use super::session::{Member, SessionCtx, Visit, check_admin_address};
use super::state::AppState;
use super::tokens::{self, Scopes};
use crate::users::{IpPurpose, User};

/// Longest `Authorization` header value read.
pub const MAX_AUTH_HEADER: usize = 256;

/// An authenticated API caller and what it may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub member: Member,
    pub scopes: Scopes,
}

async fn by_token(state: &AppState, visit: Visit, secret: &str) -> Result<Caller, AppError> {
    let hash = tokens::token_hash(secret);
    let now_s = state.now_s();
    let found = state
        .db(move |s| {
            let Some(tok) = s.use_api_token(&hash, now_s)? else { return Ok(None) };
            let Some(account) = s.web_account(tok.user_id)? else { return Ok(None) };
            Ok(s.user(&account.name)?.map(|u| (tok, account, u)))
        })
        .await?;
    let Some((tok, account, user)) = found else { return Err(AppError::SignIn) };
    if account_refusal(&user, &visit, now_s).is_some() {
        return Err(AppError::Forbidden(
            "This account may not use the API now (disabled, expired or address not allowed).",
        ));
    }
    let mut scopes = Scopes::parse(&tok.scopes);
    scopes.admin &= account.is_admin;
    let ctx = Arc::new(SessionCtx { id_hash: [0; 32], is_partial: false, account, user });
    if ctx.account.must_change_password {
        return Err(AppError::MustChangePassword);
    }
    Ok(Caller { member: Member { ctx, visit }, scopes })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let visit = Visit::from_request_parts(parts, state).await?;
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_AUTH_HEADER);
        let caller = match auth.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(secret) => by_token(state, visit, secret.trim()).await?,
            None => {
                let member = Member::from_request_parts(parts, state).await?;
                let admin = member.ctx.account.is_admin;
                Caller { member, scopes: Scopes { read: true, write: true, admin } }
            }
        };
        let needed_write = !matches!(parts.method, Method::GET | Method::HEAD);
        let is_admin_route = parts.uri.path().starts_with("/api/v1/admin/");
        if (needed_write && !caller.scopes.write) || (!needed_write && !caller.scopes.read) {
            return Err(AppError::Forbidden("This token's scopes do not allow this call.").into());
        }
        if is_admin_route {
            check_admin_address(state, Some(caller.member.visit.ip)).await?;
            if !caller.scopes.admin {
                return Err(AppError::NotFound.into());
            }
        }
        Ok(caller)
    }
}

fn user_json(u: &User) -> Value {
    let list = |p: IpPurpose| u.ip_allow(p).iter().map(ToString::to_string).collect::<Vec<_>>();
    json!({
        "id": u.id,
        "name": u.name.as_str(),
        "disabled": u.is_disabled,
        "expires_at": u.expires_at_s.map(crate::users::format_utc),
        "direction": super::admin::direction_key(u.direction_limit),
        "may_send_external": u.may_send_external,
        "may_forward": u.may_forward,
        "workgroup_admin": u.is_workgroup_admin,
        "ip_allow": { "login": list(IpPurpose::Login), "upload": list(IpPurpose::Upload), "download": list(IpPurpose::Download) },
    })
}

/// `GET /api/v1/me`.
pub async fn me(c: Caller) -> Json<Value> {
    let a = &c.member.ctx.account;
    Json(
        json!({ "user": user_json(&c.member.ctx.user), "role": c.member.ctx.role(), "email": a.email, "full_name": a.full_name, "scopes": c.scopes.to_text() }),
    )
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    c: Caller,
) -> Result<Json<Value>, ApiError> {
    let uid = c.member.ctx.account.user_id;
    let list = state.db(move |s| s.list_api_tokens(uid)).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|t| json!({ "id": t.id, "name": t.name, "scopes": t.scopes, "created_at": t.created_at_s, "expires_at": t.expires_at_s, "last_used_at": t.last_used_at_s, "revoked_at": t.revoked_at_s }))
        .collect();
    Ok(Json(json!({ "tokens": out })))
}

#[derive(Debug, Deserialize)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_days: u32,
}

/// `POST /api/v1/tokens`: the secret is in this response only.
pub async fn create_token(
    State(state): State<AppState>,
    c: Caller,
    Json(t): Json<NewToken>,
) -> Result<Response, ApiError> {
    let scopes = Scopes::parse(&t.scopes.join(" "));
    let (id, secret) = tokens::mint(&state, &c.member, &t.name, scopes, t.expires_days).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "token": secret }))).into_response())
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tokens::revoke(&state, &c.member, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workgroups`.
pub async fn list_workgroups(
    State(state): State<AppState>,
    c: Caller,
) -> Result<Json<Value>, ApiError> {
    let (uid, is_admin) = (c.member.ctx.account.user_id, c.member.ctx.account.is_admin);
    let groups = state
        .db(move |s| {
            if is_admin {
                Ok(s.list_workgroups()?.into_iter().map(|g| (g, false)).collect())
            } else {
                s.member_workgroups(uid)
            }
        })
        .await?;
    let out: Vec<Value> = groups.iter().map(|(g, adm)| json!({ "id": g.id, "name": g.name, "description": g.description, "members": g.member_count, "you_admin": adm })).collect();
    Ok(Json(json!({ "workgroups": out })))
}

/// `GET /api/v1/workgroups/{id}`.
pub async fn workgroup(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let (uid, is_admin) = (c.member.ctx.account.user_id, c.member.ctx.account.is_admin);
    let found = state
        .db(move |s| {
            let g = if is_admin {
                s.workgroup(id)?
            } else {
                s.workgroup_for_member(id, uid)?.map(|x| x.0)
            };
            match g {
                Some(g) => Ok(Some((g, s.workgroup_members(id)?))),
                None => Ok(None),
            }
        })
        .await?;
    let (g, members) = found.ok_or(AppError::NotFound)?;
    let members: Vec<Value> = members
        .iter()
        .map(|m| json!({ "user_id": m.user_id, "name": m.name, "is_admin": m.is_admin }))
        .collect();
    Ok(Json(
        json!({ "id": g.id, "name": g.name, "description": g.description, "members": members }),
    ))
}

/// `GET /api/v1/admin/users`.
pub async fn admin_users(
    State(state): State<AppState>,
    _c: Caller,
) -> Result<Json<Value>, ApiError> {
    let users = state.db(|s| s.list_users(crate::store::web::MAX_LIST)).await?;
    Ok(Json(json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })))
}

/// `GET /api/v1/admin/users/{id}`.
pub async fn admin_user(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let user = state
        .db(move |s| match s.user_name_by_id(id)? {
            Some(n) => s.user(&n),
            None => Ok(None),
        })
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(user_json(&user)))
}

/// `GET /api/v1/admin/audit` (same filters as the page).
pub async fn admin_audit(
    State(state): State<AppState>,
    _c: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = filter(&q).map_err(AppError::BadRequest)?;
    let entries = state.db(move |s| s.audit_entries(&f)).await?;
    Ok(Json(json!({ "entries": entries })))
}

/// The OpenAPI document of this API (embedded; `tests/web_api.rs` checks it against the router).
pub const OPENAPI_JSON: &str = include_str!("../../../assets/openapi.json");

/// `GET /api/v1/openapi.json` (no authentication: it describes, it does not reveal).
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub mod manage;
pub mod packages;

/// Largest console page read back when an API route reuses a page handler.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// What a console page handler answered, for the API routes that run the same handler (so the
/// page and the API cannot drift apart): a redirect is success and names the new or changed
/// resource; a 200 page is success with content (read by the caller); anything else becomes the
/// JSON error `{ error, status }` carrying the page's own alert message.
pub(crate) enum PageAnswer {
    Redirect(String),
    Page(String),
}

pub(crate) async fn page_answer(res: Result<Response, AppError>) -> Result<PageAnswer, Response> {
    let res = res.map_err(|e| ApiError(e).into_response())?;
    let status = res.status();
    if status.is_redirection() {
        let to = res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        return Ok(PageAnswer::Redirect(to.to_owned()));
    }
    let body = axum::body::to_bytes(res.into_body(), MAX_PAGE_BYTES).await.map_err(|e| {
        ApiError(AppError::Internal(format!("reading a page: {e}"))).into_response()
    })?;
    let html = String::from_utf8_lossy(&body).into_owned();
    if status == StatusCode::OK {
        return Ok(PageAnswer::Page(html));
    }
    let message = alert_text(&html).unwrap_or_else(|| status.to_string());
    Err((status, Json(json!({ "error": message, "status": status.as_u16() }))).into_response())
}

/// The page handler's success redirect, or its refusal as the response to send.
pub(crate) async fn page_redirect(res: Result<Response, AppError>) -> Result<String, Response> {
    match page_answer(res).await? {
        PageAnswer::Redirect(to) => Ok(to),
        PageAnswer::Page(_) => Err(ApiError(AppError::Internal(
            "a console handler answered a page where a redirect was expected".into(),
        ))
        .into_response()),
    }
}

/// A JSON body read after the ids in the path were checked (so another user's id is 404
/// whatever the body holds).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("The body is not the expected JSON: {e}")))
}

/// The id at the end of a console path such as `/packages/12` or `/admin/users/5?notice=saved`.
pub(crate) fn id_in_path(path: &str) -> Option<i64> {
    let path = path.split('?').next().unwrap_or("");
    path.rsplit('/').next().and_then(|s| s.parse().ok())
}

/// The text of the first `role="alert"` paragraph of a console page (where every page shows its
/// validation message), unescaped.
pub(crate) fn alert_text(html: &str) -> Option<String> {
    let at = html.find("role=\"alert\"")?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find("</p>")?;
    Some(html_unescape(&rest[start..start + end]))
}

/// The inverse of the template engine's HTML escaping (`& < > " ' /`).
pub(crate) fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_message_is_read_back_unescaped() {
        let html = r#"<main><p class="error" role="alert" id="x">There is no user named &lt;b&gt; &amp; &#x27;c&#x27;.</p></main>"#;
        assert_eq!(alert_text(html).as_deref(), Some("There is no user named <b> & 'c'."));
        assert_eq!(alert_text("<p>nothing</p>"), None);
    }

    #[test]
    fn ids_are_read_from_console_paths() {
        assert_eq!(id_in_path("/packages/12"), Some(12));
        assert_eq!(id_in_path("/admin/users/5?notice=saved"), Some(5));
        assert_eq!(id_in_path("/workgroups"), None);
    }
}
