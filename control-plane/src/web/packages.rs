//! Packages: create (title, note, recipients), upload with `haul put`, send, and the inbox and
//! sent lists; recipients fetch files with `haul get` URLs minted for them.
//!
//! Invariants:
//! - A package is visible only to its sender and, once sent, to its recipients; any other id
//!   is 404 (`Store::package_for`).
//! - A download-only user cannot create or send packages; an upload-only user is given no
//!   download URL. Tokens are minted by `token::Minter`, which applies the admin settings and
//!   the user's state again, and name the package, so the gate's package check applies too.
//! - A transfer URL carries a token: it is put in the page for its user and never logged.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{audit_for, parse_id};
use super::error::AppError;
use super::package_files::{self, PackageFile};
use super::package_limits;
use super::session::Member;
use super::state::AppState;
use super::transfer_urls::{UrlFor, transfer_link};
use super::views::{self, base, with};
use crate::authz::Direction;
use crate::store::deliveries::MintedFor;
use crate::store::package_limits::PackageLimits;
use crate::store::web_audit::Outcome;
use crate::store::web_packages::{MAX_RECIPIENTS, Package};
use crate::users::{DirectionLimit, UserName};

/// Longest title and note.
pub const MAX_TITLE: usize = 200;
pub const MAX_NOTE: usize = 4000;
/// Most names in one recipients field.
pub const MAX_NAMES: usize = 100;

fn package_json(p: &Package) -> Value {
    json!({
        "id": p.id, "title": p.title, "sender": p.sender,
        "created": views::when(p.created_at_s), "sent": p.sent_at_s.map(views::when),
    })
}

async fn list_view(state: &AppState, m: &Member, sent: bool) -> Result<Response, AppError> {
    let uid = m.ctx.account.user_id;
    let list = state.db(move |s| if sent { s.sent_packages(uid) } else { s.inbox(uid) }).await?;
    let (title, active) = if sent { ("Sent", "sent") } else { ("Inbox", "inbox") };
    let ctx =
        json!({ "packages": list.iter().map(package_json).collect::<Vec<_>>(), "is_sent": sent });
    Ok(views::render("packages.html", with(base(&m.visit, title, active), ctx))?.into_response())
}

/// `GET /packages/inbox`.
pub async fn inbox(State(state): State<AppState>, m: Member) -> Result<Response, AppError> {
    list_view(&state, &m, false).await
}

/// `GET /packages/sent`.
pub async fn sent(State(state): State<AppState>, m: Member) -> Result<Response, AppError> {
    list_view(&state, &m, true).await
}

fn may_send(m: &Member) -> Result<(), AppError> {
    match m.ctx.user.direction_limit {
        DirectionLimit::DownloadOnly => {
            Err(AppError::Forbidden("Your account is download-only: it cannot send packages."))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NewPackageForm {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub users: String,
    #[serde(default)]
    pub workgroups: String,
    /// Days until the package expires; empty: never.
    #[serde(default)]
    pub expires_days: String,
    /// Downloads per recipient and file; empty: no limit.
    #[serde(default)]
    pub downloads: String,
    pub delete_after_download: Option<String>,
}

fn new_view(m: &Member, f: &NewPackageForm, error: Option<String>) -> Result<Response, AppError> {
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let ctx = json!({ "form": { "title": f.title, "note": f.note, "users": f.users, "workgroups": f.workgroups,
        "expires_days": f.expires_days, "downloads": f.downloads, "delete_after_download": f.delete_after_download.is_some() }, "error": error });
    Ok((
        status,
        views::render("package_new.html", with(base(&m.visit, "New package", "new"), ctx))?,
    )
        .into_response())
}

/// `GET /packages/new`.
pub async fn new_page(m: Member) -> Result<Response, AppError> {
    may_send(&m)?;
    new_view(&m, &NewPackageForm::default(), None)
}

fn names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(MAX_NAMES)
        .map(str::to_owned)
        .collect()
}

/// Resolves the recipient fields to `(user_id, via)`; a message if a name is unknown or a
/// workgroup is not the sender's.
async fn resolve(
    state: &AppState,
    m: &Member,
    users: &str,
    workgroups: &str,
) -> Result<Result<Vec<(i64, String)>, String>, AppError> {
    let (users, groups) = (names(users), names(workgroups));
    let (uid, is_admin) = (m.ctx.account.user_id, m.ctx.account.is_admin);
    state
        .db(move |s| {
            let mut out: Vec<(i64, String)> = Vec::new();
            for n in &users {
                match s.user(n)? {
                    Some(u) => out.push((u.id, String::new())),
                    None => return Ok(Err(format!("There is no user named {n}."))),
                }
            }
            let visible = if is_admin {
                s.list_workgroups()?
            } else {
                s.member_workgroups(uid)?.into_iter().map(|x| x.0).collect()
            };
            for g in &groups {
                let Some(group) = visible.iter().find(|w| &w.name == g) else {
                    return Ok(Err(format!("You are not a member of a workgroup named {g}.")));
                };
                for member in s.workgroup_members(group.id)? {
                    if !out.iter().any(|(id, _)| *id == member.user_id) {
                        out.push((member.user_id, group.name.clone()));
                    }
                }
            }
            Ok(if out.is_empty() {
                Err("Add at least one recipient: a user or a workgroup.".into())
            } else if out.len() > MAX_RECIPIENTS {
                Err(format!("A package goes to at most {MAX_RECIPIENTS} people."))
            } else {
                Ok(out)
            })
        })
        .await
}

/// `POST /packages`.
pub async fn create(
    State(state): State<AppState>,
    m: Member,
    Form(f): Form<NewPackageForm>,
) -> Result<Response, AppError> {
    may_send(&m)?;
    let title = f.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE || title.chars().any(char::is_control)
    {
        return new_view(
            &m,
            &f,
            Some(format!("Give the package a title of 1 to {MAX_TITLE} characters.")),
        );
    }
    if f.note.chars().count() > MAX_NOTE {
        return new_view(&m, &f, Some(format!("The note is at most {MAX_NOTE} characters.")));
    }
    let recipients = match resolve(&state, &m, &f.users, &f.workgroups).await? {
        Ok(r) => r,
        Err(msg) => return new_view(&m, &f, Some(msg)),
    };
    let settings = state.db(|s| s.web_settings()).await?;
    let delete = f.delete_after_download.is_some();
    let limits = match package_limits::parse(
        &f.expires_days,
        &f.downloads,
        delete,
        &settings,
        state.now_s(),
    ) {
        Ok(l) => l,
        Err(msg) => return new_view(&m, &f, Some(msg)),
    };
    let public_id = hex::encode(
        &super::keys::random_id().map_err(|e| AppError::Internal(e.to_string()))?[..16],
    );
    let sender = m.ctx.user.name.clone();
    let (dir, pid) = (state.config.data_dir.clone(), public_id.clone());
    state
        .blocking(move || package_files::create_outbox(&dir, &sender, &pid))
        .await?
        .map_err(|e| AppError::Internal(format!("package outbox: {e}")))?;
    let (uid, note, now_s, t2, pid) =
        (m.ctx.account.user_id, f.note.clone(), state.now_s(), title.clone(), public_id.clone());
    let id = state
        .db(move |s| {
            let id = s.create_package(&pid, uid, &t2, &note, &recipients, now_s)?;
            s.set_package_limits(id, &limits)?;
            Ok(id)
        })
        .await?;
    state
        .audit(
            audit_for(
                &m.visit,
                Some(&m.ctx.account.name),
                "package.create",
                Outcome::Ok,
                &format!("package {id}"),
            )
            .target(&title),
        )
        .await?;
    Ok(Redirect::to(&format!("/packages/{id}")).into_response())
}

fn files_json(files: &[PackageFile]) -> Vec<Value> {
    files.iter().map(|f| json!({ "name": f.name, "size": views::human_bytes(f.size) })).collect()
}

async fn load(state: &AppState, m: &Member, raw: &str) -> Result<Package, AppError> {
    let (id, uid) = (parse_id(raw)?, m.ctx.account.user_id);
    state.db(move |s| s.package_for(id, uid)).await?.ok_or(AppError::NotFound)
}

/// A recipient's downloads: per file a `haul get` URL and the HTTPS link, or why not (the
/// package's limits).
async fn download_links(
    state: &AppState,
    m: &Member,
    p: &Package,
    files: &[PackageFile],
    limits: &PackageLimits,
) -> Result<Vec<Value>, AppError> {
    let mut links = Vec::new();
    for f in files {
        let (pid, uid, name) = (p.id, m.ctx.account.user_id, f.name.clone());
        let done = state.db(move |s| s.user_download_count(pid, uid, &name)).await?;
        let size = views::human_bytes(f.size);
        if let Err(why) = package_limits::check(limits, state.now_s(), done) {
            links.push(json!({ "name": f.name, "size": size, "refused": why.message() }));
            continue;
        }
        let path = package_files::inbox_file_path(&p.public_id, &f.name);
        let link = transfer_link(state, url_for(m, p, Direction::Download, path)).await?;
        let href = format!("/packages/{}/files/{}", p.id, views::percent_encode(&f.name));
        links.push(json!({ "name": f.name, "size": size, "href": href, "url": link.as_ref().ok(), "error": link.err() }));
    }
    Ok(links)
}

fn limits_json(l: &PackageLimits) -> Value {
    json!({
        "expires": l.expires_at_s.map(views::when),
        "max_downloads": l.max_downloads,
        "delete_after_download": l.delete_after_download,
        "removed": l.files_removed_at_s.map(views::when),
    })
}

/// The delivery receipts of package `pid`, newest first (for its sender).
async fn receipts_json(state: &AppState, pid: i64) -> Result<Vec<Value>, AppError> {
    let receipts = state.db(move |s| s.package_receipts(pid)).await?;
    Ok(receipts
        .iter()
        .map(|r| {
            let via = if r.via == "haul" { "haul get" } else { "HTTPS" };
            json!({ "who": r.who, "external": r.is_external, "file": r.file_name, "via": via, "at": views::when(r.at_s) })
        })
        .collect())
}

/// A URL for `m` on package `p`.
fn url_for(m: &Member, p: &Package, direction: Direction, path: String) -> UrlFor {
    let user_id = m.ctx.account.user_id;
    UrlFor {
        user: m.ctx.user.name.clone(),
        direction,
        path,
        package_id: p.public_id.clone(),
        minted: MintedFor { package_id: p.id, user_id, link_id: None },
        lifetime_s: None,
        ip: m.visit.ip,
    }
}

/// `GET /packages/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let p = load(&state, &m, &id).await?;
    detail_view(&state, &m, &p, None).await
}

async fn detail_view(
    state: &AppState,
    m: &Member,
    p: &Package,
    error: Option<String>,
) -> Result<Response, AppError> {
    let pid = p.id;
    let recipients = state.db(move |s| s.package_recipients(pid)).await?;
    let is_sender = p.sender_id == m.ctx.account.user_id;
    let dir = state.config.data_dir.clone();
    let (me, pubid) = (m.ctx.user.name.clone(), p.public_id.clone());
    let sender_name = UserName::parse(&p.sender).map_err(|e| AppError::Internal(e.to_string()))?;
    let files = state
        .blocking(move || {
            if is_sender {
                package_files::outbox_files(&dir, &sender_name, &pubid)
            } else {
                package_files::inbox_files(&dir, &me, &pubid)
            }
        })
        .await?
        .map_err(|e| AppError::Internal(format!("package files: {e}")))?;
    let limits = state.db(move |s| s.package_limits(pid)).await?;
    let mut links = Vec::new();
    let mut upload = None;
    if is_sender && p.sent_at_s.is_none() {
        let want = url_for(m, p, Direction::Upload, package_files::outbox_path(&p.public_id));
        upload = Some(match transfer_link(state, want).await? {
            Ok(url) => json!({ "url": url }),
            Err(why) => json!({ "error": why }),
        });
    } else if !is_sender && m.ctx.user.direction_limit != DirectionLimit::UploadOnly {
        links = download_links(state, m, p, &files, &limits).await?;
    }
    let receipts = if is_sender { receipts_json(state, pid).await? } else { Vec::new() };
    let ctx = json!({
        "p": package_json(p),
        "limits": limits_json(&limits),
        "receipts": receipts,
        "note": p.note,
        "is_sender": is_sender,
        "is_draft": p.sent_at_s.is_none(),
        "upload_only": m.ctx.user.direction_limit == DirectionLimit::UploadOnly,
        "may_forward": !is_sender && p.sent_at_s.is_some() && m.ctx.user.may_forward,
        "recipients": recipients.iter().map(|r| json!({ "name": r.name, "via": r.via })).collect::<Vec<_>>(),
        "files": files_json(&files),
        "links": links,
        "upload": upload,
        "error": error,
    });
    let status =
        if ctx["error"].is_null() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((
        status,
        views::render(
            "package.html",
            with(base(&m.visit, &p.title, if is_sender { "sent" } else { "inbox" }), ctx),
        )?,
    )
        .into_response())
}

/// `POST /packages/{id}/send`: delivers the uploaded files to every recipient.
pub async fn send(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, AppError> {
    let p = load(&state, &m, &id).await?;
    if p.sender_id != m.ctx.account.user_id || p.sent_at_s.is_some() {
        return Err(AppError::NotFound);
    }
    may_send(&m)?;
    let pid = p.id;
    let recipients = state.db(move |s| s.package_recipients(pid)).await?;
    let names: Vec<UserName> =
        recipients.iter().filter_map(|r| UserName::parse(&r.name).ok()).collect();
    let (dir, sender, pubid) =
        (state.config.data_dir.clone(), m.ctx.user.name.clone(), p.public_id.clone());
    let count = state
        .blocking(move || {
            let files = package_files::outbox_files(&dir, &sender, &pubid)?;
            if files.is_empty() {
                return Ok(0);
            }
            package_files::deliver(&dir, &sender, &pubid, &names)
        })
        .await?
        .map_err(|e| AppError::Internal(format!("delivering package: {e}")))?;
    if count == 0 {
        return detail_view(
            &state,
            &m,
            &p,
            Some("Upload at least one file before sending.".into()),
        )
        .await;
    }
    let (uid, now_s) = (m.ctx.account.user_id, state.now_s());
    state.db(move |s| s.mark_package_sent(pid, uid, now_s)).await?;
    super::external_notify::package_sent(&state, &headers, &p, &recipients).await;
    let detail = format!("package {pid}: {count} files to {} recipients", recipients.len());
    state
        .audit(
            audit_for(&m.visit, Some(&m.ctx.account.name), "package.send", Outcome::Ok, &detail)
                .target(&p.title),
        )
        .await?;
    Ok(Redirect::to(&format!("/packages/{pid}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct ForwardForm {
    #[serde(default)]
    pub users: String,
    #[serde(default)]
    pub workgroups: String,
}

/// `POST /packages/{id}/forward`: a recipient with the forward permission adds recipients; the
/// files are delivered to them from the sender's outbox as on sending.
pub async fn forward(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    Form(f): Form<ForwardForm>,
) -> Result<Response, AppError> {
    let p = load(&state, &m, &id).await?;
    if p.sender_id == m.ctx.account.user_id || p.sent_at_s.is_none() {
        return Err(AppError::NotFound);
    }
    if !m.ctx.user.may_forward {
        return Err(AppError::Forbidden("Your account may not forward packages."));
    }
    let recipients = match resolve(&state, &m, &f.users, &f.workgroups).await? {
        Ok(r) => r,
        Err(msg) => return detail_view(&state, &m, &p, Some(msg)).await,
    };
    let via = format!("forwarded by {}", m.ctx.account.name);
    let rows: Vec<(i64, String)> =
        recipients.into_iter().map(|(uid, _)| (uid, via.clone())).collect();
    let pid = p.id;
    let added = state.db(move |s| s.add_package_recipients(pid, &rows)).await?;
    let names = state
        .db(move |s| {
            let mut out = Vec::new();
            for uid in added {
                if let Some(n) = s.user_name_by_id(uid)? {
                    out.extend(UserName::parse(&n).ok());
                }
            }
            Ok(out)
        })
        .await?;
    let count = names.len();
    let sender = UserName::parse(&p.sender).map_err(|e| AppError::Internal(e.to_string()))?;
    let (dir, pubid) = (state.config.data_dir.clone(), p.public_id.clone());
    state
        .blocking(move || package_files::deliver(&dir, &sender, &pubid, &names))
        .await?
        .map_err(|e| AppError::Internal(format!("delivering package: {e}")))?;
    let detail = format!("package {pid} forwarded to {count} new recipients");
    state
        .audit(
            audit_for(&m.visit, Some(&m.ctx.account.name), "package.forward", Outcome::Ok, &detail)
                .target(&p.title),
        )
        .await?;
    Ok(Redirect::to(&format!("/packages/{pid}")).into_response())
}
