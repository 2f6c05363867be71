//! Signing in and out, the forced password change, the home page, API tokens and the optional
//! second factor.
//!
//! Invariants:
//! - A sign-in is checked in this order: throttle (429 even for the right password), password
//!   (argon2, with a dummy hash for unknown names), then the account's state (disabled,
//!   expired, login address allow-list). Each outcome is audited with who, what and where.
//! - Every successful sign-in starts a new session id (no fixation); a password change ends
//!   every session of the user and starts a new one for this browser.
//! - API token secrets are shown once and stored only as SHA-256.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::AppError;
use super::keys;
use super::password::{self, PasswordPolicy};
use super::session::{self, Member, MemberAny, PRE_COOKIE, SESSION_COOKIE, Visit};
use super::state::{AppState, Audit};
use super::throttle::ThrottleKey;
use super::totp;
use super::views::{self, base, with};
use crate::store::web::{WebAccount, WebSession};
use crate::store::web_audit::Outcome;
use crate::users::{IpPurpose, User, is_allowed};

/// Longest user name read from a form (longer cannot exist: `users::MAX_USER_NAME`).
pub const MAX_NAME_INPUT: usize = 64;

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub password: String,
}

fn login_view(
    visit: &Visit,
    name: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let page = views::render(
        "login.html",
        with(base(visit, "Sign in", "login"), json!({ "name": name, "error": error })),
    )?;
    Ok((status, page).into_response())
}

/// `GET /login`.
pub async fn login_page(visit: Visit) -> Result<Response, AppError> {
    match &visit.session {
        Some(s) if !s.is_partial => Ok(Redirect::to("/").into_response()),
        Some(_) => Ok(Redirect::to("/login/totp").into_response()),
        None => login_view(&visit, "", None, StatusCode::OK),
    }
}

fn throttle_keys(visit: &Visit, name: &str) -> [ThrottleKey; 2] {
    [ThrottleKey::Address(visit.ip), ThrottleKey::Account(name.to_lowercase())]
}

pub fn audit_for(
    visit: &Visit,
    actor: Option<&str>,
    action: &'static str,
    outcome: Outcome,
    detail: &str,
) -> Audit {
    Audit {
        actor: actor.map(str::to_owned),
        action,
        target: actor.unwrap_or("").to_owned(),
        outcome,
        ip: visit.ip,
        detail: detail.to_owned(),
    }
}

/// `POST /login`.
pub async fn login(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<LoginForm>,
) -> Result<Response, AppError> {
    let name: String = f.name.trim().chars().take(MAX_NAME_INPUT).collect();
    let now_s = state.now_s();
    let keys = throttle_keys(&visit, &name);
    let wait = keys.iter().filter_map(|k| state.throttle().retry_after_s(k, now_s as u64)).max();
    if let Some(retry_after_s) = wait {
        state
            .audit(audit_for(&visit, Some(&name), "login.throttled", Outcome::Refused, ""))
            .await?;
        return Err(AppError::Throttled { retry_after_s });
    }
    let lookup = name.clone();
    let found = state
        .db(move |s| {
            let Some((acct, creds)) = s.web_login(&lookup)? else { return Ok(None) };
            Ok(s.user(&acct.name)?.map(|u| (acct, creds, u)))
        })
        .await?;
    let hash = found
        .as_ref()
        .map_or_else(|| password::dummy_hash().to_owned(), |f| f.1.password_hash.clone());
    let pw = f.password;
    let ok = state.blocking(move || password::is_password_valid(&pw, &hash)).await?;
    let Some((acct, creds, user)) = found.filter(|_| ok) else {
        for k in keys {
            state.throttle().on_failure(k, now_s as u64);
        }
        state
            .audit(audit_for(
                &visit,
                Some(&name),
                "login.failure",
                Outcome::Refused,
                "wrong name or password",
            ))
            .await?;
        return login_view(
            &visit,
            &name,
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    if let Some(why) = account_refusal(&user, &visit, now_s) {
        state.audit(audit_for(&visit, Some(&name), "login.refused", Outcome::Refused, why)).await?;
        return login_view(&visit, &name, Some(why), StatusCode::FORBIDDEN);
    }
    for k in &keys {
        state.throttle().on_success(k);
    }
    let partial = creds.totp_secret.is_some();
    let cookie = start_session(&state, &visit, acct.user_id, partial).await?;
    let (action, to) = match (partial, acct.must_change_password) {
        (true, _) => ("login.password_ok", "/login/totp"),
        (false, true) => ("login.success", "/account/password"),
        (false, false) => ("login.success", "/"),
    };
    state.audit(audit_for(&visit, Some(&acct.name), action, Outcome::Ok, "")).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

/// Why a user with the right password still may not sign in.
pub fn account_refusal(user: &User, visit: &Visit, now_s: i64) -> Option<&'static str> {
    if user.is_disabled {
        Some("This account is disabled. Ask an administrator.")
    } else if user.is_expired(now_s) {
        Some("This account has expired. Ask an administrator.")
    } else if !is_allowed(user.ip_allow(IpPurpose::Login), visit.ip) {
        Some("This account may not sign in from this address.")
    } else {
        None
    }
}

/// Starts a new session for `user_id` (ending the browser's current one) and returns the
/// `Set-Cookie` value.
pub async fn start_session(
    state: &AppState,
    visit: &Visit,
    user_id: i64,
    is_partial: bool,
) -> Result<HeaderValue, AppError> {
    let id = keys::random_id().map_err(|e| AppError::Internal(format!("randomness: {e}")))?;
    let now_s = state.now_s();
    let old = visit.session.as_ref().map(|s| s.id_hash);
    let row = WebSession {
        user_id,
        created_at_s: now_s,
        last_seen_at_s: now_s,
        ip: visit.ip.to_string(),
        is_partial,
    };
    let id_hash = keys::id_hash(&id);
    state
        .db(move |s| {
            if let Some(old) = old {
                s.delete_web_session(&old)?;
            }
            s.create_web_session(&id_hash, &row)
        })
        .await?;
    Ok(session::set_cookie(SESSION_COOKIE, Some(&session::session_cookie_value(state, &id))))
}

/// `POST /logout`: ends the session on the server and clears the cookie.
pub async fn logout(State(state): State<AppState>, visit: Visit) -> Result<Response, AppError> {
    if let Some(s) = &visit.session {
        let h = s.id_hash;
        state.db(move |st| st.delete_web_session(&h)).await?;
        state.audit(audit_for(&visit, Some(&s.account.name), "logout", Outcome::Ok, "")).await?;
    }
    let mut headers = HeaderMap::new();
    headers.append(header::SET_COOKIE, session::set_cookie(SESSION_COOKIE, None));
    headers.append(header::SET_COOKIE, session::set_cookie(PRE_COOKIE, None));
    Ok((headers, Redirect::to("/login")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    pub code: String,
}

/// `GET /login/totp`: the second step, for a half signed-in session.
pub async fn totp_page(visit: Visit) -> Result<Response, AppError> {
    match &visit.session {
        Some(s) if s.is_partial => Ok(views::render(
            "login_totp.html",
            with(base(&visit, "Two-step verification", "login"), json!({})),
        )?
        .into_response()),
        Some(_) => Ok(Redirect::to("/").into_response()),
        None => Ok(Redirect::to("/login").into_response()),
    }
}

/// `POST /login/totp`.
pub async fn totp_login(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<CodeForm>,
) -> Result<Response, AppError> {
    let Some(sess) = visit.session.clone().filter(|s| s.is_partial) else {
        return Ok(Redirect::to("/login").into_response());
    };
    let now_s = state.now_s();
    let keys = throttle_keys(&visit, &sess.account.name);
    if let Some(retry_after_s) =
        keys.iter().filter_map(|k| state.throttle().retry_after_s(k, now_s as u64)).max()
    {
        return Err(AppError::Throttled { retry_after_s });
    }
    let name = sess.account.name.clone();
    let creds = state.db(move |s| Ok(s.web_login(&name)?.map(|x| x.1))).await?;
    let step = creds.and_then(|c| {
        let secret = c.totp_secret?;
        let last = c.totp_last_step.and_then(|l| u64::try_from(l).ok());
        totp::verify(&secret, &f.code, now_s as u64, last)
    });
    let user_id = sess.account.user_id;
    let recorded = match step {
        Some(step) => state.db(move |s| s.record_totp_step(user_id, step as i64)).await?,
        None => false,
    };
    if !recorded {
        for k in keys {
            state.throttle().on_failure(k, now_s as u64);
        }
        state
            .audit(audit_for(
                &visit,
                Some(&sess.account.name),
                "login.totp_failure",
                Outcome::Refused,
                "",
            ))
            .await?;
        let ctx = with(
            base(&visit, "Two-step verification", "login"),
            json!({ "error": "That code is not valid. Try the current one." }),
        );
        return Ok(
            (StatusCode::UNAUTHORIZED, views::render("login_totp.html", ctx)?).into_response()
        );
    }
    let cookie = start_session(&state, &visit, user_id, false).await?;
    state
        .audit(audit_for(
            &visit,
            Some(&sess.account.name),
            "login.success",
            Outcome::Ok,
            "with second factor",
        ))
        .await?;
    let to = if sess.account.must_change_password { "/account/password" } else { "/" };
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

/// The policy in force.
pub async fn policy(state: &AppState) -> Result<PasswordPolicy, AppError> {
    let s = state.db(|s| s.web_settings()).await?;
    Ok(PasswordPolicy { is_strong: s.strong_passwords, min_len: s.password_min_len as usize })
}

/// The rules, as the password forms show them.
pub fn policy_text(p: &PasswordPolicy) -> String {
    let min = p.min_len.max(password::MIN_PASSWORD_FLOOR);
    if p.is_strong {
        format!("At least {min} characters, with at least one letter, one number and one symbol.")
    } else {
        format!("At least {min} characters.")
    }
}

fn password_view(
    visit: &Visit,
    acct: &WebAccount,
    p: &PasswordPolicy,
    error: Option<&str>,
) -> Result<Html<String>, AppError> {
    let ctx =
        json!({ "forced": acct.must_change_password, "rules": policy_text(p), "error": error });
    views::render("password.html", with(base(visit, "Change your password", "account"), ctx))
}

/// `GET /account/password`.
pub async fn password_page(
    State(state): State<AppState>,
    m: MemberAny,
) -> Result<Response, AppError> {
    let p = policy(&state).await?;
    Ok(password_view(&m.visit, &m.ctx.account, &p, None)?.into_response())
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub current: String,
    #[serde(default)]
    pub new: String,
    #[serde(default)]
    pub confirm: String,
}

/// `POST /account/password`.
pub async fn change_password(
    State(state): State<AppState>,
    m: MemberAny,
    Form(f): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let p = policy(&state).await?;
    let acct = m.ctx.account.clone();
    let refuse = |msg: &str| -> Result<Response, AppError> {
        Ok((StatusCode::UNPROCESSABLE_ENTITY, password_view(&m.visit, &acct, &p, Some(msg))?)
            .into_response())
    };
    let name = acct.name.clone();
    let stored = state
        .db(move |s| Ok(s.web_login(&name)?.map(|x| x.1.password_hash)))
        .await?
        .unwrap_or_default();
    let current = f.current.clone();
    if !state.blocking(move || password::is_password_valid(&current, &stored)).await? {
        state
            .audit(audit_for(
                &m.visit,
                Some(&acct.name),
                "password.change",
                Outcome::Refused,
                "wrong current password",
            ))
            .await?;
        return refuse("The current password is not right.");
    }
    if let Err(e) = p.check(&f.new) {
        return refuse(&format!("{e}."));
    }
    if f.new != f.confirm {
        return refuse("The two new passwords differ.");
    }
    if f.new == f.current {
        return refuse("Choose a password different from the current one.");
    }
    let new = f.new;
    let hash = state
        .blocking(move || password::hash_password(&new))
        .await?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let (uid, now_s) = (acct.user_id, state.now_s());
    state.db(move |s| s.set_web_password(uid, &hash, false, now_s)).await?;
    if acct.is_admin && acct.must_change_password {
        super::first_admin::forget(&state.config.data_dir);
    }
    // The change ended every session, this one included: start a fresh one for this browser.
    let mut visit = m.visit.clone();
    visit.session = None;
    let cookie = start_session(&state, &visit, uid, false).await?;
    state.audit(audit_for(&m.visit, Some(&acct.name), "password.change", Outcome::Ok, "")).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/?notice=password")).into_response())
}

/// `GET /`: the home page.
pub async fn home(
    State(state): State<AppState>,
    m: Member,
    axum::extract::Query(q): axum::extract::Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let uid = m.ctx.account.user_id;
    let groups = state.db(move |s| s.member_workgroups(uid)).await?;
    let u = &m.ctx.user;
    let a = &m.ctx.account;
    let list =
        |p: IpPurpose| u.ip_allow(p).iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let account = json!({
        "expires": u.expires_at_s.map(views::when),
        "direction": match u.direction_limit {
            crate::users::DirectionLimit::Both => "Upload and download",
            crate::users::DirectionLimit::UploadOnly => "Upload only",
            crate::users::DirectionLimit::DownloadOnly => "Download only",
        },
        "may_send_external": u.may_send_external,
        "may_forward": u.may_forward,
        "last_login": a.last_login_at_s.map(views::when),
        "has_totp": a.has_totp,
        "ip_login": list(IpPurpose::Login),
        "ip_upload": list(IpPurpose::Upload),
        "ip_download": list(IpPurpose::Download),
    });
    let groups: Vec<_> = groups
        .iter()
        .map(|(g, adm)| json!({ "id": g.id, "name": g.name, "is_admin": adm }))
        .collect();
    let notice = q.notice.as_deref().and_then(notice_text);
    let ctx = json!({ "account": account, "groups": groups, "notice": notice });
    Ok(views::render("home.html", with(base(&m.visit, "Home", "home"), ctx))?.into_response())
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// Fixed notices a redirect may ask for (never free text from the URL).
pub fn notice_text(key: &str) -> Option<&'static str> {
    match key {
        "password" => Some("Your password has been changed."),
        "saved" => Some("Changes saved."),
        "revoked" => Some("The token has been revoked."),
        "totp_on" => Some("Two-step verification is on."),
        "totp_off" => Some("Two-step verification is off."),
        "deleted" => Some("Deleted."),
        _ => None,
    }
}

/// 404 for a path parameter that is not an id (same answer as an id that is not yours).
pub fn parse_id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|i| *i > 0).ok_or(AppError::NotFound)
}
