//! The optional second factor (TOTP) for admins: set up, confirm, turn off.
//!
//! Invariants: a secret becomes active only after a code from it has been verified (so a typo in
//! the app cannot lock the admin out); turning it off needs the password; the secret is shown
//! only while it is pending and never logged.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{CodeForm, NoticeQuery, audit_for, notice_text};
use super::error::AppError;
use super::password;
use super::session::Member;
use super::state::AppState;
use super::totp;
use super::views::{self, base, with};
use crate::store::web_audit::Outcome;

fn admin_only(m: &Member) -> Result<(), AppError> {
    if m.ctx.account.is_admin { Ok(()) } else { Err(AppError::NotFound) }
}

async fn view(
    state: &AppState,
    m: &Member,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let name = m.ctx.account.name.clone();
    let creds =
        state.db(move |s| Ok(s.web_login(&name)?.map(|x| x.1))).await?.ok_or(AppError::NotFound)?;
    let pending = creds.totp_pending.as_ref().map(|p| {
        json!({ "key": totp::base32(p), "uri": totp::otpauth_uri(p, "Haul", &m.ctx.account.name) })
    });
    let ctx = json!({ "enabled": creds.totp_secret.is_some(), "pending": pending });
    Ok((
        status,
        views::render(
            "totp.html",
            with(with(base(&m.visit, "Two-step verification", "account"), ctx), extra),
        )?,
    )
        .into_response())
}

/// `GET /account/totp`.
pub async fn totp_page(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    admin_only(&m)?;
    let notice = q.notice.as_deref().and_then(notice_text);
    view(&state, &m, json!({ "notice": notice }), StatusCode::OK).await
}

/// `POST /account/totp/start`: draws a pending secret.
pub async fn start(State(state): State<AppState>, m: Member) -> Result<Response, AppError> {
    admin_only(&m)?;
    let mut secret = [0u8; totp::SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| AppError::Internal(format!("randomness: {e}")))?;
    let uid = m.ctx.account.user_id;
    state.db(move |s| s.set_totp_pending(uid, Some(&secret))).await?;
    Ok(Redirect::to("/account/totp").into_response())
}

/// `POST /account/totp/confirm`: a code from the pending secret turns it on.
pub async fn confirm(
    State(state): State<AppState>,
    m: Member,
    Form(f): Form<CodeForm>,
) -> Result<Response, AppError> {
    admin_only(&m)?;
    let name = m.ctx.account.name.clone();
    let pending = state.db(move |s| Ok(s.web_login(&name)?.and_then(|x| x.1.totp_pending))).await?;
    let now_s = state.now_s();
    let step = pending.and_then(|p| totp::verify(&p, &f.code, now_s as u64, None));
    let Some(step) = step else {
        return view(&state, &m, json!({ "error": "That code is not valid. Check the key you entered and try the current code." }), StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let uid = m.ctx.account.user_id;
    state.db(move |s| s.set_totp_active(uid, true, Some(step as i64))).await?;
    state
        .audit(audit_for(&m.visit, Some(&m.ctx.account.name), "totp.enable", Outcome::Ok, ""))
        .await?;
    Ok(Redirect::to("/account/totp?notice=totp_on").into_response())
}

#[derive(Debug, Deserialize)]
pub struct PasswordOnly {
    #[serde(default)]
    pub password: String,
}

/// `POST /account/totp/disable`.
pub async fn disable(
    State(state): State<AppState>,
    m: Member,
    Form(f): Form<PasswordOnly>,
) -> Result<Response, AppError> {
    admin_only(&m)?;
    let name = m.ctx.account.name.clone();
    let stored = state
        .db(move |s| Ok(s.web_login(&name)?.map(|x| x.1.password_hash)))
        .await?
        .unwrap_or_default();
    let pw = f.password;
    if !state.blocking(move || password::is_password_valid(&pw, &stored)).await? {
        return view(
            &state,
            &m,
            json!({ "error": "The password is not right." }),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let uid = m.ctx.account.user_id;
    state.db(move |s| s.set_totp_active(uid, false, None)).await?;
    state
        .audit(audit_for(&m.visit, Some(&m.ctx.account.name), "totp.disable", Outcome::Ok, ""))
        .await?;
    Ok(Redirect::to("/account/totp?notice=totp_off").into_response())
}
