//! The management part of the JSON API: workgroups (create, members, delete), admin users
//! (create, update restrictions, disable, reset) and admin settings.
//!
//! Invariants:
//! - Every state-changing call runs the console's own handler (`web::workgroups`, `web::admin`,
//!   `web::settings`) with the request translated into that handler's form, so permission
//!   checks, validation, session ends and audit entries are the page's; refusals come back as
//!   JSON carrying the page's message and status.
//! - `/api/v1/admin/*` is reached only by an admin caller from an admin address with the
//!   `admin` scope (checked by [`Caller`]); the handlers check again through [`Admin`].
//! - A one-time password is in the response body only, once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, PageAnswer, id_in_path, page_answer, page_redirect, parse_body};
use crate::web::admin::{self, EditUserForm, NewUserForm};
use crate::web::error::{ApiError, AppError};
use crate::web::session::Admin;
use crate::web::settings::{self, SettingsForm};
use crate::web::state::AppState;
use crate::web::workgroups::{self, MemberForm, NewGroupForm};

fn created(to: &str) -> Result<Response, ApiError> {
    let id = id_in_path(to).ok_or_else(|| AppError::Internal(format!("created at {to}")))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

fn checkbox(on: bool) -> Option<String> {
    on.then(|| "on".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `POST /api/v1/workgroups` (admins): 201 `{ id }`.
pub async fn create_workgroup(
    State(state): State<AppState>,
    c: Caller,
    Json(b): Json<NewGroup>,
) -> Result<Response, ApiError> {
    let form = NewGroupForm { name: b.name, description: b.description };
    match page_redirect(workgroups::create(State(state), c.member, Form(form)).await).await {
        Ok(to) => created(&to),
        Err(refused) => Ok(refused),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub name: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// `POST /api/v1/workgroups/{id}/members` (admins and the group's workgroup admins).
pub async fn add_member(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // Another user's group is 404 before the body is read (IDOR).
    let gid = crate::web::accounts::parse_id(&id)?;
    let uid = c.member.ctx.account.user_id;
    if !c.member.ctx.account.is_admin
        && state.db(move |s| s.workgroup_for_member(gid, uid)).await?.is_none()
    {
        return Err(AppError::NotFound.into());
    }
    let b: NewMember = parse_body(&body)?;
    let form = MemberForm { name: b.name, is_admin: checkbox(b.is_admin) };
    let res = workgroups::add_member(State(state), c.member, Path(id), Form(form)).await;
    Ok(match page_redirect(res).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    })
}

/// `DELETE /api/v1/workgroups/{id}/members/{user_id}`.
pub async fn remove_member(
    State(state): State<AppState>,
    c: Caller,
    Path(ids): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let res = workgroups::remove_member(State(state), c.member, Path(ids)).await;
    Ok(match page_redirect(res).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    })
}

/// `DELETE /api/v1/workgroups/{id}` (admins).
pub async fn delete_workgroup(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let res = workgroups::delete(State(state), c.member, Path(id)).await;
    Ok(match page_redirect(res).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    })
}

/// The one-time password and user id shown by the console's secret page.
fn one_time_secret(html: &str) -> Option<(i64, String)> {
    let marker = "id=\"one-time-password\">";
    let at = html.find(marker)? + marker.len();
    let pw = super::html_unescape(&html[at..at + html[at..].find('<')?]);
    let link = "href=\"/admin/users/";
    let at = html.find(link)? + link.len();
    let id = html[at..at + html[at..].find('"')?].parse().ok()?;
    Some((id, pw))
}

async fn secret_reply(res: Result<Response, AppError>, status: StatusCode) -> Response {
    match page_answer(res).await {
        Ok(PageAnswer::Page(html)) => match one_time_secret(&html) {
            Some((id, pw)) => {
                (status, Json(json!({ "id": id, "one_time_password": pw }))).into_response()
            }
            None => ApiError(AppError::Internal("no one-time password on the page".into()))
                .into_response(),
        },
        Ok(PageAnswer::Redirect(to)) => {
            ApiError(AppError::Internal(format!("a one-time password page went to {to}")))
                .into_response()
        }
        Err(refused) => refused,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    pub role: String,
}

/// `POST /api/v1/admin/users`: 201 `{ id, one_time_password }`.
pub async fn create_user(
    State(state): State<AppState>,
    c: Caller,
    Json(b): Json<NewUser>,
) -> Result<Response, ApiError> {
    let form = NewUserForm { name: b.name, full_name: b.full_name, email: b.email, role: b.role };
    let res = admin::create_user(State(state), Admin(c.member), Form(form)).await;
    Ok(secret_reply(res, StatusCode::CREATED).await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAllow {
    #[serde(default)]
    pub login: Vec<String>,
    #[serde(default)]
    pub upload: Vec<String>,
    #[serde(default)]
    pub download: Vec<String>,
}

/// The whole state of a user (PUT replaces it): role, restrictions and profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub role: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub disabled: bool,
    /// `YYYY-MM-DD` (UTC), or absent for no expiry.
    pub expires: Option<String>,
    pub direction: String,
    #[serde(default)]
    pub may_send_external: bool,
    #[serde(default)]
    pub may_forward: bool,
    #[serde(default)]
    pub ip_allow: IpAllow,
}

/// `PUT /api/v1/admin/users/{id}`: then answers the user as `GET` does.
pub async fn update_user(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: UserUpdate = parse_body(&body)?;
    let form = EditUserForm {
        full_name: b.full_name,
        email: b.email,
        role: b.role,
        disabled: checkbox(b.disabled),
        expires: b.expires.unwrap_or_default(),
        direction: b.direction,
        may_send_external: checkbox(b.may_send_external),
        may_forward: checkbox(b.may_forward),
        ip_login: b.ip_allow.login.join(","),
        ip_upload: b.ip_allow.upload.join(","),
        ip_download: b.ip_allow.download.join(","),
    };
    let res = admin::update_user(
        State(state.clone()),
        Admin(c.member.clone()),
        Path(id.clone()),
        Form(form),
    )
    .await;
    if let Err(refused) = page_redirect(res).await {
        return Ok(refused);
    }
    Ok(super::admin_user(State(state), c, Path(id)).await?.into_response())
}

/// `POST /api/v1/admin/users/{id}/reset`: `{ id, one_time_password }`; ends their sessions.
pub async fn reset_user(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let res = admin::reset_password(State(state), Admin(c.member), Path(id)).await;
    Ok(secret_reply(res, StatusCode::OK).await)
}

/// `GET /api/v1/admin/settings` (the SMTP password is never returned, only whether it is set).
pub async fn settings(State(state): State<AppState>, _c: Caller) -> Result<Json<Value>, ApiError> {
    let (t, w) = state.db(|s| Ok((s.admin_settings()?, s.web_settings()?))).await?;
    Ok(Json(settings::settings_json(&t, &w)))
}

/// The whole settings (PUT replaces them); the keys are those `GET` answers, plus the SMTP
/// password (absent: keep the stored one) and `smtp_password_clear`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub strong_passwords: bool,
    pub password_min_len: u64,
    pub encrypt_transfers: bool,
    pub require_content_protection: bool,
    pub admin_cidrs: String,
    pub session_idle_min: u64,
    pub session_absolute_h: u64,
    pub token_lifetime_min: u64,
    pub rate_cap_mbps: u64,
    pub policy_cap: String,
    pub external_sending: bool,
    pub external_expiry_default_days: u64,
    pub external_expiry_max_days: u64,
    pub external_downloads_default: u64,
    pub external_downloads_max: u64,
    pub smtp_host: String,
    pub smtp_port: u64,
    pub smtp_starttls: bool,
    pub smtp_from: String,
    pub smtp_user: String,
    #[serde(default)]
    pub smtp_password: String,
    #[serde(default)]
    pub smtp_password_clear: bool,
    /// Answered by `GET`; ignored here.
    #[serde(default)]
    pub smtp_password_set: Option<bool>,
}

impl From<SettingsBody> for SettingsForm {
    fn from(b: SettingsBody) -> SettingsForm {
        SettingsForm {
            strong_passwords: checkbox(b.strong_passwords),
            password_min_len: b.password_min_len.to_string(),
            encrypt_transfers: checkbox(b.encrypt_transfers),
            require_content_protection: checkbox(b.require_content_protection),
            admin_cidrs: b.admin_cidrs,
            session_idle_min: b.session_idle_min.to_string(),
            session_absolute_h: b.session_absolute_h.to_string(),
            token_lifetime_min: b.token_lifetime_min.to_string(),
            rate_cap_mbps: b.rate_cap_mbps.to_string(),
            policy_cap: b.policy_cap,
            external_sending: checkbox(b.external_sending),
            external_expiry_default_days: b.external_expiry_default_days.to_string(),
            external_expiry_max_days: b.external_expiry_max_days.to_string(),
            external_downloads_default: b.external_downloads_default.to_string(),
            external_downloads_max: b.external_downloads_max.to_string(),
            smtp_host: b.smtp_host,
            smtp_port: b.smtp_port.to_string(),
            smtp_starttls: checkbox(b.smtp_starttls),
            smtp_from: b.smtp_from,
            smtp_user: b.smtp_user,
            smtp_password: b.smtp_password,
            smtp_password_clear: checkbox(b.smtp_password_clear),
        }
    }
}

/// `PUT /api/v1/admin/settings`: then answers the settings as `GET` does.
pub async fn put_settings(
    State(state): State<AppState>,
    c: Caller,
    Json(b): Json<SettingsBody>,
) -> Result<Response, ApiError> {
    let res =
        settings::save_settings(State(state.clone()), Admin(c.member.clone()), Form(b.into()))
            .await;
    if let Err(refused) = page_redirect(res).await {
        return Ok(refused);
    }
    Ok(settings(State(state), c).await?.into_response())
}
