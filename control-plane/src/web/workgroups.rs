//! Workgroups: admins create and delete them and pick their admins; a workgroup's admins (users
//! with the workgroup-admin role who are marked admin of that group) manage its members.
//!
//! Invariants:
//! - A non-admin reaches a workgroup only through their own membership
//!   (`Store::workgroup_for_member`): any other id is 404, the same as a missing one.
//! - Only admins create, delete, or mark members as workgroup admins.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{audit_for, parse_id};
use super::error::AppError;
use super::session::Member;
use super::state::AppState;
use super::views::{self, base, with};
use crate::store::web_audit::Outcome;
use crate::store::web_groups::{GroupError, Workgroup};

/// Longest workgroup name and description.
pub const MAX_GROUP_NAME: usize = 64;
pub const MAX_GROUP_DESCRIPTION: usize = 500;

async fn list_view(
    state: &AppState,
    m: &Member,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (uid, is_admin) = (m.ctx.account.user_id, m.ctx.account.is_admin);
    let groups: Vec<(Workgroup, bool)> = state
        .db(move |s| {
            if is_admin {
                Ok(s.list_workgroups()?.into_iter().map(|g| (g, false)).collect())
            } else {
                s.member_workgroups(uid)
            }
        })
        .await?;
    let list: Vec<Value> = groups
        .iter()
        .map(|(g, adm)| json!({ "id": g.id, "name": g.name, "description": g.description, "members": g.member_count, "created": views::when(g.created_at_s), "is_admin": adm }))
        .collect();
    let ctx =
        with(with(base(&m.visit, "Workgroups", "workgroups"), json!({ "groups": list })), extra);
    Ok((status, views::render("workgroups.html", ctx)?).into_response())
}

/// `GET /workgroups`.
pub async fn list(State(state): State<AppState>, m: Member) -> Result<Response, AppError> {
    list_view(&state, &m, json!({}), StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
pub struct NewGroupForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `POST /workgroups` (admins).
pub async fn create(
    State(state): State<AppState>,
    m: Member,
    Form(f): Form<NewGroupForm>,
) -> Result<Response, AppError> {
    if !m.ctx.account.is_admin {
        return Err(AppError::NotFound);
    }
    super::session::check_admin_address(&state, Some(m.visit.ip)).await?;
    let name = f.name.trim().to_owned();
    let desc = f.description.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > MAX_GROUP_NAME
        || name.chars().any(char::is_control)
    {
        let msg = format!("Give the workgroup a name of 1 to {MAX_GROUP_NAME} characters.");
        return list_view(&state, &m, json!({ "error": msg }), StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    }
    if desc.chars().count() > MAX_GROUP_DESCRIPTION || desc.chars().any(char::is_control) {
        let msg = format!("The description is at most {MAX_GROUP_DESCRIPTION} characters.");
        return list_view(&state, &m, json!({ "error": msg }), StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    }
    let (n, d, now_s) = (name.clone(), desc, state.now_s());
    let store = state.store.clone();
    let made = tokio::task::spawn_blocking(move || store.create_workgroup(&n, &d, now_s))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let id = match made {
        Ok(id) => id,
        Err(e @ GroupError::NameTaken(_)) => {
            return list_view(&state, &m, json!({ "error": e.to_string() }), StatusCode::CONFLICT)
                .await;
        }
        Err(GroupError::Full) => return Err(AppError::Internal("full on create".into())),
        Err(GroupError::Store(e)) => return Err(e.into()),
    };
    state
        .audit(
            audit_for(&m.visit, Some(&m.ctx.account.name), "workgroup.create", Outcome::Ok, "")
                .target(&name),
        )
        .await?;
    Ok(Redirect::to(&format!("/workgroups/{id}")).into_response())
}

/// The group behind an id, as `m` may see it: `(group, can_manage)`, or 404.
async fn visible(
    state: &AppState,
    m: &Member,
    raw_id: &str,
) -> Result<(Workgroup, bool), AppError> {
    let id = parse_id(raw_id)?;
    let (uid, is_admin, is_wg_admin) =
        (m.ctx.account.user_id, m.ctx.account.is_admin, m.ctx.user.is_workgroup_admin);
    state
        .db(move |s| {
            if is_admin {
                return Ok(s.workgroup(id)?.map(|g| (g, true)));
            }
            Ok(s.workgroup_for_member(id, uid)?.map(|(g, marked)| (g, marked && is_wg_admin)))
        })
        .await?
        .ok_or(AppError::NotFound)
}

async fn detail_view(
    state: &AppState,
    m: &Member,
    g: &Workgroup,
    can_manage: bool,
    error: Option<String>,
) -> Result<Response, AppError> {
    let gid = g.id;
    let members = state.db(move |s| s.workgroup_members(gid)).await?;
    let members: Vec<Value> = members
        .iter()
        .map(|x| json!({ "user_id": x.user_id, "name": x.name, "is_admin": x.is_admin }))
        .collect();
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let ctx = json!({ "g": { "id": g.id, "name": g.name, "description": g.description }, "members": members, "can_manage": can_manage, "error": error });
    Ok((status, views::render("workgroup.html", with(base(&m.visit, &g.name, "workgroups"), ctx))?)
        .into_response())
}

/// `GET /workgroups/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (g, can_manage) = visible(&state, &m, &id).await?;
    detail_view(&state, &m, &g, can_manage, None).await
}

#[derive(Debug, Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    pub name: String,
    pub is_admin: Option<String>,
}

/// `POST /workgroups/{id}/members`.
pub async fn add_member(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    Form(f): Form<MemberForm>,
) -> Result<Response, AppError> {
    let (g, can_manage) = visible(&state, &m, &id).await?;
    if !can_manage {
        return Err(AppError::NotFound);
    }
    let mark_admin = f.is_admin.is_some() && m.ctx.account.is_admin;
    let name: String = f.name.trim().chars().take(super::accounts::MAX_NAME_INPUT).collect();
    let n2 = name.clone();
    let Some(user) = state.db(move |s| s.user(&n2)).await? else {
        return detail_view(
            &state,
            &m,
            &g,
            can_manage,
            Some(format!("There is no user named {name}.")),
        )
        .await;
    };
    if mark_admin && !user.is_workgroup_admin {
        let msg = format!("{name} needs the workgroup admin role first (Users, {name}, Role).");
        return detail_view(&state, &m, &g, can_manage, Some(msg)).await;
    }
    let (gid, uid) = (g.id, user.id);
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.put_workgroup_member(gid, uid, mark_admin))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
    {
        Ok(()) => {}
        Err(e @ GroupError::Full) => {
            return detail_view(&state, &m, &g, can_manage, Some(e.to_string())).await;
        }
        Err(GroupError::Store(e)) => return Err(e.into()),
        Err(e @ GroupError::NameTaken(_)) => return Err(AppError::Internal(e.to_string())),
    }
    let detail = format!("member {name}{}", if mark_admin { " as workgroup admin" } else { "" });
    state
        .audit(
            audit_for(
                &m.visit,
                Some(&m.ctx.account.name),
                "workgroup.member_add",
                Outcome::Ok,
                &detail,
            )
            .target(&g.name),
        )
        .await?;
    Ok(Redirect::to(&format!("/workgroups/{}", g.id)).into_response())
}

/// `POST /workgroups/{id}/members/{user_id}/remove`.
pub async fn remove_member(
    State(state): State<AppState>,
    m: Member,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let (g, can_manage) = visible(&state, &m, &id).await?;
    let uid = parse_id(&user_id)?;
    if !can_manage {
        return Err(AppError::NotFound);
    }
    let gid = g.id;
    if !state.db(move |s| s.remove_workgroup_member(gid, uid)).await? {
        return Err(AppError::NotFound);
    }
    state
        .audit(
            audit_for(
                &m.visit,
                Some(&m.ctx.account.name),
                "workgroup.member_remove",
                Outcome::Ok,
                &format!("user id {uid}"),
            )
            .target(&g.name),
        )
        .await?;
    Ok(Redirect::to(&format!("/workgroups/{}", g.id)).into_response())
}

/// `POST /workgroups/{id}/delete` (admins).
pub async fn delete(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    if !m.ctx.account.is_admin {
        return Err(AppError::NotFound);
    }
    super::session::check_admin_address(&state, Some(m.visit.ip)).await?;
    let (g, _) = visible(&state, &m, &id).await?;
    let gid = g.id;
    state.db(move |s| s.delete_workgroup(gid)).await?;
    state
        .audit(
            audit_for(&m.visit, Some(&m.ctx.account.name), "workgroup.delete", Outcome::Ok, "")
                .target(&g.name),
        )
        .await?;
    Ok(Redirect::to("/workgroups").into_response())
}
