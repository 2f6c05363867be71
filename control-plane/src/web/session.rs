//! Sessions, cookies and CSRF: who a request is, and whether a state-changing request is one the
//! signed-in browser meant to send.
//!
//! Invariants:
//! - Cookies are `__Host-` prefixed, `Secure`, `HttpOnly`, `SameSite=Strict`, `Path=/`, with no
//!   `Domain`; their values are random ids signed with the cookie sub-key ([`keys`]).
//! - Sessions live on the server (`web_sessions`); a session idle longer than the idle timeout,
//!   or older than the absolute timeout, is deleted when seen and the request is anonymous.
//!   A disabled or expired user's sessions end the same way.
//! - Every request that is not GET/HEAD/OPTIONS must carry the CSRF token bound to its session
//!   (or, before sign-in, to its pre-session cookie) in the `x-csrf-token` header or the `csrf`
//!   form field, or it is refused 403 before any handler runs. The only exemption is a request
//!   that carries no cookie at all and authenticates with an API token (`Authorization: Bearer`):
//!   a browser cannot be made to send that header cross-site. Cross-site requests
//!   (`Sec-Fetch-Site: cross-site`) are refused as well.
//! - A form body read for its CSRF field is bounded ([`MAX_FORM_BYTES`]).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::keys::{self, ID_BYTES};
use super::security::ClientIp;
use super::state::AppState;
use crate::store::web::{WebAccount, WebSession};
use crate::users::User;

pub const SESSION_COOKIE: &str = "__Host-haul-session";
pub const PRE_COOKIE: &str = "__Host-haul-pre";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body accepted (and read for its CSRF field).
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// A session's last-seen time is written at most this often (seconds).
pub const TOUCH_EVERY_S: i64 = 15;
const SESSION_LABEL: &[u8] = b"haul-session-v1";
const PRE_LABEL: &[u8] = b"haul-pre-v1";

/// The three roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    WorkgroupAdmin,
    User,
}

impl Role {
    pub fn of(account: &WebAccount, user: &User) -> Role {
        if account.is_admin {
            Role::Admin
        } else if user.is_workgroup_admin {
            Role::WorkgroupAdmin
        } else {
            Role::User
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Role::Admin => "Administrator",
            Role::WorkgroupAdmin => "Workgroup admin",
            Role::User => "User",
        }
    }
}

/// A signed-in (or half signed-in) session.
#[derive(Clone, Debug)]
pub struct SessionCtx {
    pub id_hash: [u8; 32],
    /// The password was right; the second factor is still owed.
    pub is_partial: bool,
    pub account: WebAccount,
    pub user: User,
}

impl SessionCtx {
    pub fn role(&self) -> Role {
        Role::of(&self.account, &self.user)
    }
}

/// What the middleware learnt about a request; every handler can read it.
#[derive(Clone, Debug)]
pub struct Visit {
    pub ip: IpAddr,
    /// The CSRF token to put in this page's forms.
    pub csrf: String,
    pub session: Option<Arc<SessionCtx>>,
}

/// A cookie's value from the request headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a session or pre-session cookie (`None`: delete it).
pub fn set_cookie(name: &str, value: Option<&str>) -> HeaderValue {
    let text = match value {
        Some(v) => format!("{name}={v}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        None => format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    // Names are constants and values are hex and '.', so the header is always valid ASCII.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session cookie value for a new session id.
pub fn session_cookie_value(state: &AppState, id: &[u8; ID_BYTES]) -> String {
    keys::sign_id(&state.keys, SESSION_LABEL, id)
}

/// Loads the session a cookie names, ending it if it has timed out or its user may no longer
/// sign in. `None`: anonymous.
async fn load_session(
    state: &AppState,
    id: [u8; ID_BYTES],
    now_s: i64,
) -> Result<Option<(SessionCtx, [u8; ID_BYTES])>, AppError> {
    let id_hash = keys::id_hash(&id);
    let found = state
        .db(move |s| {
            let Some(sess) = s.web_session(&id_hash)? else { return Ok(None) };
            let (idle_s, absolute_s) = s.web_session_timeouts()?;
            let live = is_live(&sess, now_s, idle_s, absolute_s);
            let account = if live { s.web_account(sess.user_id)? } else { None };
            let user = match &account {
                Some(a) => s.user(&a.name)?,
                None => None,
            };
            match (account, user) {
                (Some(account), Some(user)) if !user.is_disabled && !user.is_expired(now_s) => {
                    if now_s - sess.last_seen_at_s >= TOUCH_EVERY_S {
                        s.touch_web_session(&id_hash, now_s)?;
                    }
                    Ok(Some(SessionCtx { id_hash, is_partial: sess.is_partial, account, user }))
                }
                _ => {
                    s.delete_web_session(&id_hash)?;
                    Ok(None)
                }
            }
        })
        .await?;
    Ok(found.map(|c| (c, id)))
}

/// Whether a session is within both timeouts at `now_s`.
pub fn is_live(s: &WebSession, now_s: i64, idle_s: i64, absolute_s: i64) -> bool {
    now_s - s.last_seen_at_s < idle_s && now_s - s.created_at_s < absolute_s
}

/// The middleware: resolves the session, checks CSRF, and records a [`Visit`].
pub async fn resolve(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match resolve_inner(&state, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn resolve_inner(
    state: &AppState,
    mut req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let now_s = state.now_s();
    let ip = req.extensions().get::<ClientIp>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    let headers = req.headers();
    let session_id = cookie(headers, SESSION_COOKIE)
        .and_then(|v| keys::verify_id(&state.keys, SESSION_LABEL, v, now_s));
    let pre_id =
        cookie(headers, PRE_COOKIE).and_then(|v| keys::verify_id(&state.keys, PRE_LABEL, v, now_s));
    let has_cookie = headers.contains_key(header::COOKIE);
    let session = match session_id {
        Some(id) => load_session(state, id, now_s).await?,
        None => None,
    };
    let mut new_pre = None;
    let anchor = match (&session, pre_id) {
        (Some((_, id)), _) => *id,
        (None, Some(pre)) => pre,
        (None, None) => {
            let id =
                keys::random_id().map_err(|e| AppError::Internal(format!("randomness: {e}")))?;
            // A script with an API token gets no pre-session cookie: a client that keeps
            // cookies would otherwise turn its next write into a cookie call needing CSRF.
            if has_cookie || !is_bearer(headers) {
                new_pre = Some(id);
            }
            id
        }
    };
    if !is_safe_method(req.method()) {
        if req.headers().get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
            return Err(AppError::Csrf);
        }
        let is_api_token_only = !has_cookie && is_bearer(req.headers());
        if !is_api_token_only {
            let (token, rebuilt) = csrf_from_request(req).await?;
            req = rebuilt;
            if !token.is_some_and(|t| keys::is_csrf_valid(&state.keys, &anchor, &t, now_s)) {
                return Err(AppError::Csrf);
            }
        }
    }
    let csrf = keys::csrf_token(&state.keys, &anchor);
    req.extensions_mut().insert(Visit { ip, csrf, session: session.map(|(c, _)| Arc::new(c)) });
    let mut res = next.run(req).await;
    if let Some(id) = new_pre {
        let v = keys::sign_id(&state.keys, PRE_LABEL, &id);
        res.headers_mut().append(header::SET_COOKIE, set_cookie(PRE_COOKIE, Some(&v)));
    }
    Ok(res)
}

fn is_safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
}

/// The CSRF token from the header, or from an urlencoded form body (which is read, bounded,
/// and put back for the handler).
async fn csrf_from_request(req: Request) -> Result<(Option<String>, Request), AppError> {
    if let Some(v) = req.headers().get(CSRF_HEADER) {
        let t = v.to_str().ok().map(str::to_owned);
        return Ok((t, req));
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| AppError::BadRequest(format!("form larger than {MAX_FORM_BYTES} bytes")))?;
    let token = bytes
        .split(|&b| b == b'&')
        .filter_map(|kv| kv.strip_prefix(format!("{CSRF_FIELD}=").as_bytes()))
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned);
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

fn visit(parts: &Parts) -> Result<Visit, AppError> {
    parts
        .extensions
        .get::<Visit>()
        .cloned()
        .ok_or_else(|| AppError::Internal("session middleware missing".into()))
}

/// A signed-in user whose password is current: what almost every page requires.
#[derive(Clone, Debug)]
pub struct Member {
    pub ctx: Arc<SessionCtx>,
    pub visit: Visit,
}

/// A signed-in user who may still owe a password change (the password page, sign-out).
#[derive(Clone, Debug)]
pub struct MemberAny {
    pub ctx: Arc<SessionCtx>,
    pub visit: Visit,
}

impl FromRequestParts<AppState> for MemberAny {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<MemberAny, AppError> {
        let visit = visit(parts)?;
        match &visit.session {
            Some(ctx) if !ctx.is_partial => Ok(MemberAny { ctx: ctx.clone(), visit }),
            _ => Err(AppError::SignIn),
        }
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Member, AppError> {
        let MemberAny { ctx, visit } = MemberAny::from_request_parts(parts, state).await?;
        if ctx.account.must_change_password {
            return Err(AppError::MustChangePassword);
        }
        Ok(Member { ctx, visit })
    }
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Visit, AppError> {
        visit(parts)
    }
}

/// An admin, using the console from an allowed address. Anyone else gets 404 (the admin pages
/// do not exist for them); an admin outside the admin CIDR ranges gets 403.
#[derive(Clone, Debug)]
pub struct Admin(pub Member);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, AppError> {
        let ip = parts.extensions.get::<ClientIp>().map(|c| c.0);
        // The address check comes first, so a disallowed address learns nothing else.
        check_admin_address(state, ip).await?;
        let m = Member::from_request_parts(parts, state).await?;
        if !m.ctx.account.is_admin {
            return Err(AppError::NotFound);
        }
        Ok(Admin(m))
    }
}

/// 403 unless `ip` is inside the admin console's CIDR ranges (empty: anywhere).
pub async fn check_admin_address(state: &AppState, ip: Option<IpAddr>) -> Result<(), AppError> {
    let text = state.db(|s| Ok(s.web_settings()?.admin_cidrs)).await?;
    let ranges = crate::users::parse_cidr_list(&text)
        .map_err(|e| AppError::Internal(format!("admin_cidrs setting: {e}")))?;
    match ip {
        Some(ip) if crate::users::is_allowed(&ranges, ip) => Ok(()),
        _ => Err(AppError::Forbidden("The admin console cannot be used from this address.")),
    }
}
