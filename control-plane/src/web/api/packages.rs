//! The packages part of the JSON API: inbox and sent lists, create, one package with its files
//! and freshly minted transfer URLs, send and forward.
//!
//! Invariants:
//! - Every `{id}` is resolved through `packages::load` (sender, or recipient once sent) before
//!   the body is read: another user's id is 404 whatever the body holds.
//! - Create, send and forward run the console's own handlers (`web::packages`), so the checks
//!   (download-only users, forward permission, recipient resolution) and the audit entries are
//!   the page's; their refusals come back as JSON with the page's message.
//! - A transfer URL carries a token minted for the caller on this request; it is in the response
//!   body only, never logged.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, id_in_path, page_redirect, parse_body};
use crate::authz::Direction;
use crate::store::web_packages::Package;
use crate::users::{DirectionLimit, UserName, format_utc};
use crate::web::error::{ApiError, AppError};
use crate::web::package_files::{self, PackageFile};
use crate::web::packages::{self, ForwardForm, NewPackageForm};
use crate::web::state::AppState;
use crate::web::transfer_urls;
use crate::web::views;

/// Most user or workgroup names in one JSON request.
pub const MAX_NAMES_JSON: usize = packages::MAX_NAMES;

fn summary(p: &Package) -> Value {
    json!({
        "id": p.id, "title": p.title, "sender": p.sender,
        "created_at": format_utc(p.created_at_s), "sent_at": p.sent_at_s.map(format_utc),
    })
}

async fn list(state: &AppState, c: &Caller, sent: bool) -> Result<Json<Value>, ApiError> {
    let uid = c.member.ctx.account.user_id;
    let list = state.db(move |s| if sent { s.sent_packages(uid) } else { s.inbox(uid) }).await?;
    Ok(Json(json!({ "packages": list.iter().map(summary).collect::<Vec<_>>() })))
}

/// `GET /api/v1/packages/inbox`.
pub async fn inbox(State(state): State<AppState>, c: Caller) -> Result<Json<Value>, ApiError> {
    list(&state, &c, false).await
}

/// `GET /api/v1/packages/sent`.
pub async fn sent(State(state): State<AppState>, c: Caller) -> Result<Json<Value>, ApiError> {
    list(&state, &c, true).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPackage {
    pub title: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub workgroups: Vec<String>,
}

/// The console's comma-separated names field; a name holding a comma is refused, not split.
fn names_field(names: &[String]) -> Result<String, AppError> {
    if names.len() > MAX_NAMES_JSON {
        return Err(AppError::BadRequest(format!("At most {MAX_NAMES_JSON} names per list.")));
    }
    if names.iter().any(|n| n.contains(',')) {
        return Err(AppError::BadRequest("A name cannot contain a comma.".into()));
    }
    Ok(names.join(","))
}

/// `POST /api/v1/packages`: a draft package; 201 `{ id }`. Recipients are users and
/// workgroups; external addresses are added once sent (`POST /api/v1/packages/{id}/external`).
pub async fn create(
    State(state): State<AppState>,
    c: Caller,
    Json(b): Json<NewPackage>,
) -> Result<Response, ApiError> {
    let form = NewPackageForm {
        title: b.title,
        note: b.note,
        users: names_field(&b.users)?,
        workgroups: names_field(&b.workgroups)?,
    };
    let res = packages::create(State(state), c.member, Form(form)).await;
    let to = match page_redirect(res).await {
        Ok(to) => to,
        Err(refused) => return Ok(refused),
    };
    let id = id_in_path(&to).ok_or_else(|| AppError::Internal(format!("create went to {to}")))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

fn file_json(f: &PackageFile) -> Value {
    json!({ "name": f.name, "size": f.size })
}

/// `GET /api/v1/packages/{id}`: the package, its recipients and files; for a recipient each
/// file has a `haul get` URL minted now and the HTTPS fallback path; for the sender of a draft,
/// the `haul put` URL.
pub async fn package(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = &c.member;
    let p = packages::load(&state, m, &id).await?;
    let pid = p.id;
    let recipients = state.db(move |s| s.package_recipients(pid)).await?;
    let is_sender = p.sender_id == m.ctx.account.user_id;
    let (dir, me, pubid) =
        (state.config.data_dir.clone(), m.ctx.user.name.clone(), p.public_id.clone());
    let sender = UserName::parse(&p.sender).map_err(|e| AppError::Internal(e.to_string()))?;
    let files = state
        .blocking(move || {
            if is_sender {
                package_files::outbox_files(&dir, &sender, &pubid)
            } else {
                package_files::inbox_files(&dir, &me, &pubid)
            }
        })
        .await?
        .map_err(|e| AppError::Internal(format!("package files: {e}")))?;
    let mut out = Vec::with_capacity(files.len());
    let may_download = !is_sender && m.ctx.user.direction_limit != DirectionLimit::UploadOnly;
    for f in &files {
        let mut v = file_json(f);
        if may_download {
            let path = package_files::inbox_file_path(&p.public_id, &f.name);
            let want = packages::url_for(m, &p, Direction::Download, path);
            let link = transfer_urls::transfer_link(&state, want).await?;
            v["haul_url"] = json!(link.as_ref().ok());
            v["haul_url_error"] = json!(link.err());
            v["https_path"] =
                json!(format!("/packages/{}/files/{}", p.id, views::percent_encode(&f.name)));
        }
        out.push(v);
    }
    let mut body = summary(&p);
    body["note"] = json!(p.note);
    body["is_sender"] = json!(is_sender);
    body["recipients"] = json!(
        recipients
            .iter()
            .map(|r| json!({ "user_id": r.user_id, "name": r.name, "via": r.via }))
            .collect::<Vec<_>>()
    );
    body["files"] = json!(out);
    if is_sender && p.sent_at_s.is_none() {
        let path = package_files::outbox_path(&p.public_id);
        let want = packages::url_for(m, &p, Direction::Upload, path);
        let link = transfer_urls::transfer_link(&state, want).await?;
        body["upload_url"] = json!(link.as_ref().ok());
        body["upload_url_error"] = json!(link.err());
    }
    Ok(Json(body))
}

/// `POST /api/v1/packages/{id}/send`: delivers the uploaded files to every recipient.
pub async fn send(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let res = packages::send(State(state), c.member, Path(id.clone()), headers).await;
    Ok(match page_redirect(res).await {
        Ok(_) => Json(json!({ "id": id_in_path(&id), "sent": true })).into_response(),
        Err(refused) => refused,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub workgroups: Vec<String>,
}

/// `POST /api/v1/packages/{id}/forward`.
pub async fn forward(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The package is checked before the body is read (IDOR: 404 whatever the body holds).
    packages::load(&state, &c.member, &id).await?;
    let b: Forward = parse_body(&body)?;
    let form =
        ForwardForm { users: names_field(&b.users)?, workgroups: names_field(&b.workgroups)? };
    let res = packages::forward(State(state), c.member, Path(id), Form(form)).await;
    Ok(match page_redirect(res).await {
        Ok(_) => Json(json!({ "forwarded": true })).into_response(),
        Err(refused) => refused,
    })
}
