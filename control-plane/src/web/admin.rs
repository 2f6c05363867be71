//! The admin console's user pages: list, create, edit roles and restrictions, reset passwords.
//!
//! Invariants:
//! - Every handler takes [`Admin`], so a non-admin gets 404 and an address outside the admin
//!   ranges gets 403 before anything is read.
//! - Restrictions are parsed by `users::` (CIDR lists, dates) and refused with a message on bad
//!   input; nothing is half-applied (the store applies a change in one transaction).
//! - Disabling a user, changing their role or resetting their password ends their sessions.
//! - The audit detail names the fields changed, never a password.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{NoticeQuery, audit_for, notice_text, parse_id};
use super::error::AppError;
use super::password;
use super::session::{Admin, Role};
use super::state::AppState;
use super::views::{self, base, with};
use crate::store::web::{NewWebAccount, WebAccount};
use crate::store::web_audit::Outcome;
use crate::users::{self, DirectionLimit, IpPurpose, User, UserChange, UserName};

/// Longest full name or e-mail address kept.
pub const MAX_PROFILE_FIELD: usize = 254;

pub(crate) fn role_key(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::WorkgroupAdmin => "workgroup_admin",
        Role::User => "user",
    }
}

/// `(is_admin, is_workgroup_admin)` for a role picked in a form.
fn parse_role(s: &str) -> Result<(bool, bool), AppError> {
    match s {
        "admin" => Ok((true, false)),
        "workgroup_admin" => Ok((false, true)),
        "user" => Ok((false, false)),
        _ => Err(AppError::BadRequest("Pick a role from the list.".into())),
    }
}

/// The form and API key of a direction limit.
pub fn direction_key(d: DirectionLimit) -> &'static str {
    match d {
        DirectionLimit::Both => "both",
        DirectionLimit::UploadOnly => "upload_only",
        DirectionLimit::DownloadOnly => "download_only",
    }
}

fn cidr_text(u: &User, p: IpPurpose) -> String {
    u.ip_allow(p).iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn user_json(u: &User, a: Option<&WebAccount>, now_s: i64) -> Value {
    let role = a
        .map_or(if u.is_workgroup_admin { Role::WorkgroupAdmin } else { Role::User }, |a| {
            Role::of(a, u)
        });
    json!({
        "id": u.id,
        "name": u.name.as_str(),
        "full_name": a.map_or("", |a| a.full_name.as_str()),
        "email": a.map_or("", |a| a.email.as_str()),
        "role": role.label(),
        "role_key": role_key(role),
        "has_account": a.is_some(),
        "has_totp": a.is_some_and(|a| a.has_totp),
        "must_change": a.is_some_and(|a| a.must_change_password),
        "disabled": u.is_disabled,
        "expired": u.is_expired(now_s),
        "expires": u.expires_at_s.map(views::when),
        "expires_input": u.expires_at_s.map(|t| users::format_utc(t)[..10].to_owned()).unwrap_or_default(),
        "last_login": a.and_then(|a| a.last_login_at_s).map(views::when),
        "direction": direction_key(u.direction_limit),
        "may_send_external": u.may_send_external,
        "may_forward": u.may_forward,
        "ip_login": cidr_text(u, IpPurpose::Login),
        "ip_upload": cidr_text(u, IpPurpose::Upload),
        "ip_download": cidr_text(u, IpPurpose::Download),
    })
}

async fn users_view(
    state: &AppState,
    a: &Admin,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let now_s = state.now_s();
    let (users, accounts) = state
        .db(|s| Ok((s.list_users(crate::store::web::MAX_LIST)?, s.list_web_accounts()?)))
        .await?;
    let list: Vec<Value> = users
        .iter()
        .map(|u| user_json(u, accounts.iter().find(|x| x.user_id == u.id), now_s))
        .collect();
    let ctx =
        with(with(base(&a.0.visit, "Users", "users"), json!({ "users": list, "form": {} })), extra);
    Ok((status, views::render("admin_users.html", ctx)?).into_response())
}

/// `GET /admin/users`.
pub async fn users_page(
    State(state): State<AppState>,
    a: Admin,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let notice = q.notice.as_deref().and_then(notice_text);
    users_view(&state, &a, json!({ "notice": notice }), StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: String,
}

fn bounded(s: &str, what: &str) -> Result<String, AppError> {
    let s = s.trim();
    if s.len() > MAX_PROFILE_FIELD {
        return Err(AppError::BadRequest(format!(
            "The {what} is longer than {MAX_PROFILE_FIELD} characters."
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!("The {what} contains control characters.")));
    }
    Ok(s.to_owned())
}

/// Gives `user_id` a console account (or a new password) with a one-time password; returns it.
async fn issue_one_time(
    state: &AppState,
    user_id: i64,
    is_admin: bool,
    email: String,
    full_name: String,
) -> Result<String, AppError> {
    let pw = password::one_time_password().map_err(|e| AppError::Internal(e.to_string()))?;
    let p2 = pw.clone();
    let hash = state
        .blocking(move || password::hash_password(&p2))
        .await?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let now_s = state.now_s();
    state
        .db(move |s| {
            let acct = NewWebAccount {
                user_id,
                password_hash: &hash,
                is_admin,
                must_change_password: true,
                email: &email,
                full_name: &full_name,
            };
            s.put_web_account(&acct, now_s)?;
            s.set_totp_active(user_id, false, None)?;
            s.delete_user_web_sessions(user_id)
        })
        .await?;
    Ok(pw)
}

fn secret_page(
    a: &Admin,
    title: &str,
    user_id: i64,
    user_name: &str,
    pw: &str,
) -> Result<Response, AppError> {
    let ctx = json!({ "user_id": user_id, "user_name": user_name, "password": pw });
    Ok(views::render("admin_secret.html", with(base(&a.0.visit, title, "users"), ctx))?
        .into_response())
}

/// `POST /admin/users`.
pub async fn create_user(
    State(state): State<AppState>,
    a: Admin,
    Form(f): Form<NewUserForm>,
) -> Result<Response, AppError> {
    let fail = |msg: String| json!({ "error": msg, "form": { "name": f.name, "full_name": f.full_name, "email": f.email } });
    let checked = (|| {
        let name =
            UserName::parse(f.name.trim()).map_err(|e| AppError::BadRequest(e.to_string()))?;
        Ok::<_, AppError>((
            name,
            parse_role(&f.role)?,
            bounded(&f.full_name, "full name")?,
            bounded(&f.email, "e-mail address")?,
        ))
    })();
    let (name, (is_admin, is_wg), full, email) = match checked {
        Ok(v) => v,
        Err(AppError::BadRequest(m)) => {
            return users_view(&state, &a, fail(m), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        Err(e) => return Err(e),
    };
    let now_s = state.now_s();
    let n2 = name.clone();
    let change = UserChange { is_workgroup_admin: Some(is_wg), ..UserChange::default() };
    let created = state.store.clone();
    let made = tokio::task::spawn_blocking(move || created.create_user(&n2, &change, now_s))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let user = match made {
        Ok(u) => u,
        Err(crate::store::StoreError::UserExists(_)) => {
            return users_view(
                &state,
                &a,
                fail(format!("A user named {name} already exists.", name = name.as_str())),
                StatusCode::CONFLICT,
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    };
    let pw = issue_one_time(&state, user.id, is_admin, email, full).await?;
    let detail = format!("role {}", f.role);
    state
        .audit(
            audit_for(&a.0.visit, Some(&a.0.ctx.account.name), "user.create", Outcome::Ok, &detail)
                .target(name.as_str()),
        )
        .await?;
    secret_page(&a, "User created", user.id, name.as_str(), &pw)
}

/// The user and console account behind an id in a URL, or 404.
async fn load(state: &AppState, raw_id: &str) -> Result<(User, Option<WebAccount>), AppError> {
    let id = parse_id(raw_id)?;
    state
        .db(move |s| {
            let Some(name) = s.user_name_by_id(id)? else { return Ok(None) };
            let Some(user) = s.user(&name)? else { return Ok(None) };
            Ok(Some((user, s.web_account(id)?)))
        })
        .await?
        .ok_or(AppError::NotFound)
}

async fn user_view(
    state: &AppState,
    a: &Admin,
    user: &User,
    acct: Option<&WebAccount>,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let ctx = with(json!({ "u": user_json(user, acct, state.now_s()) }), extra);
    Ok((
        status,
        views::render("admin_user.html", with(base(&a.0.visit, user.name.as_str(), "users"), ctx))?,
    )
        .into_response())
}

/// `GET /admin/users/{id}`.
pub async fn user_page(
    State(state): State<AppState>,
    a: Admin,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let (user, acct) = load(&state, &id).await?;
    let notice = q.notice.as_deref().and_then(notice_text);
    user_view(&state, &a, &user, acct.as_ref(), json!({ "notice": notice }), StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
pub struct EditUserForm {
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: String,
    pub disabled: Option<String>,
    #[serde(default)]
    pub expires: String,
    #[serde(default)]
    pub direction: String,
    pub may_send_external: Option<String>,
    pub may_forward: Option<String>,
    #[serde(default)]
    pub ip_login: String,
    #[serde(default)]
    pub ip_upload: String,
    #[serde(default)]
    pub ip_download: String,
}

/// The change a form asks for, checked.
fn parse_edit(f: &EditUserForm) -> Result<(UserChange, bool), AppError> {
    let bad = |e: users::UserInputError| AppError::BadRequest(e.to_string());
    let (is_admin, is_wg) = parse_role(&f.role)?;
    let expires = match f.expires.trim() {
        "" => None,
        t => users::parse_date(t).map_err(bad)?,
    };
    let direction = match f.direction.as_str() {
        "both" => DirectionLimit::Both,
        "upload_only" => DirectionLimit::UploadOnly,
        "download_only" => DirectionLimit::DownloadOnly,
        _ => return Err(AppError::BadRequest("Pick a transfer direction from the list.".into())),
    };
    let change = UserChange {
        is_disabled: Some(f.disabled.is_some()),
        expires_at_s: Some(expires),
        direction_limit: Some(direction),
        may_send_external: Some(f.may_send_external.is_some()),
        may_forward: Some(f.may_forward.is_some()),
        is_workgroup_admin: Some(is_wg),
        ip_allow_login: Some(users::parse_cidr_list(&f.ip_login).map_err(bad)?),
        ip_allow_upload: Some(users::parse_cidr_list(&f.ip_upload).map_err(bad)?),
        ip_allow_download: Some(users::parse_cidr_list(&f.ip_download).map_err(bad)?),
        ssh_keys: None,
    };
    Ok((change, is_admin))
}

/// `POST /admin/users/{id}`.
pub async fn update_user(
    State(state): State<AppState>,
    a: Admin,
    Path(id): Path<String>,
    Form(f): Form<EditUserForm>,
) -> Result<Response, AppError> {
    let (user, acct) = load(&state, &id).await?;
    let parsed = parse_edit(&f).and_then(|c| {
        Ok((c, bounded(&f.full_name, "full name")?, bounded(&f.email, "e-mail address")?))
    });
    let refuse = |m: String| {
        let ctx = json!({ "error": m });
        user_view(&state, &a, &user, acct.as_ref(), ctx, StatusCode::UNPROCESSABLE_ENTITY)
    };
    let ((change, is_admin), full, email) = match parsed {
        Ok(v) => v,
        Err(AppError::BadRequest(m)) => return refuse(m).await,
        Err(e) => return Err(e),
    };
    if user.id == a.0.ctx.account.user_id && (!is_admin || change.is_disabled == Some(true)) {
        return refuse(
            "You cannot remove your own admin role or disable yourself; ask another admin.".into(),
        )
        .await;
    }
    let role_changed = acct.as_ref().is_some_and(|x| x.is_admin != is_admin)
        || user.is_workgroup_admin != change.is_workgroup_admin.unwrap_or(false);
    let ends_sessions = role_changed || change.is_disabled == Some(true);
    let (name, uid, now_s, has_acct) = (user.name.clone(), user.id, state.now_s(), acct.is_some());
    state
        .db(move |s| {
            s.update_user(&name, &change, now_s)?;
            if has_acct {
                s.set_web_profile(uid, is_admin, &email, &full)?;
            }
            if ends_sessions {
                s.delete_user_web_sessions(uid)?;
            }
            Ok(())
        })
        .await?;
    let detail = format!(
        "role {}; restrictions and profile saved{}",
        f.role,
        if ends_sessions { "; sessions ended" } else { "" }
    );
    state
        .audit(
            audit_for(&a.0.visit, Some(&a.0.ctx.account.name), "user.update", Outcome::Ok, &detail)
                .target(user.name.as_str()),
        )
        .await?;
    Ok(Redirect::to(&format!("/admin/users/{}?notice=saved", user.id)).into_response())
}

/// `POST /admin/users/{id}/reset`: a new one-time password (or a first console account).
pub async fn reset_password(
    State(state): State<AppState>,
    a: Admin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (user, acct) = load(&state, &id).await?;
    let (is_admin, email, full) =
        acct.map_or((false, String::new(), String::new()), |x| (x.is_admin, x.email, x.full_name));
    let pw = issue_one_time(&state, user.id, is_admin, email, full).await?;
    state
        .audit(
            audit_for(
                &a.0.visit,
                Some(&a.0.ctx.account.name),
                "password.reset",
                Outcome::Ok,
                "one-time password issued",
            )
            .target(user.name.as_str()),
        )
        .await?;
    secret_page(&a, "Password reset", user.id, user.name.as_str(), &pw)
}
