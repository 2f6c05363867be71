//! The external recipient's side: the link page (`GET /x/{link}`) listing the package's files,
//! and each file over HTTPS with `Range` (`GET /x/{link}/files/{name}`).
//!
//! Invariants:
//! - The link id in the URL is looked up by its SHA-256 only; an id of the wrong shape or an
//!   unknown one is 404; an expired or used-up link is 410 with a page saying so.
//! - Byte accounting, per link and file, across every request: before sending, the response's
//!   length is reserved in the store and refused if `sent + reserved + length` would pass
//!   `max_downloads x size` ([`Store::reserve_link_bytes`]); when the response ends (finished
//!   or aborted) the bytes really read for it become "sent" and the rest is freed. So repeated
//!   aborts and Range requests cannot copy more than the limit allows, and an aborted attempt
//!   costs only what it sent.
//! - A download counts each time a file's bytes sent reach another multiple of its size; the
//!   link is used up when every non-empty file has reached `max_downloads x size`. Empty files
//!   send nothing and are never refused by the count.
//! - The page offers a short-lived `haul get` URL per file with downloads left; the gate charges
//!   those transfers to the same accounting (`super::gate_ledger`).
//! - The request log records the route template (`/x/{link}`), never the id; the audit log
//!   names the link by its row id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::download::{self, CHUNK_BYTES, Counted, RangeAsk, parse_range};
use super::error::AppError;
use super::external_notify;
use super::keys::id_hash;
use super::package_files::{self, PackageFile};
use super::session::Visit;
use super::state::AppState;
use super::transfer_urls::{UrlFor, transfer_link};
use super::views::{self, base, with};
use crate::store::Store;
use crate::store::deliveries::MintedFor;
use crate::store::external::{ExternalLink, LinkBytes, Reservation};
use crate::users::UserName;

/// Length of a link id: 32 bytes in unpadded base64url.
pub const LINK_ID_LEN: usize = 43;
/// Lifetime of the `haul get` URLs on a link's page: enough to copy one and start the client.
pub const LINK_TOKEN_LIFETIME_S: u64 = 15 * 60;
/// Most files of a link's page offered with a `haul get` URL (each is a minted token).
pub const MAX_LINK_URLS: usize = 50;

/// A live link with its package.
#[derive(Debug)]
struct Resolved {
    link: ExternalLink,
    title: String,
    sender: String,
    sender_email: String,
    dir: std::path::PathBuf,
    files: Vec<(PackageFile, LinkBytes)>,
}

impl Resolved {
    fn is_used_up(&self) -> bool {
        let Some(max) = self.link.max_downloads else { return false };
        let limited: Vec<_> = self.files.iter().filter(|(f, _)| f.size > 0).collect();
        !limited.is_empty()
            && limited.iter().all(|(f, b)| b.sent >= u64::from(max).saturating_mul(f.size))
    }
}

fn link_hash(raw: &str) -> Option<[u8; 32]> {
    let ok = raw.len() == LINK_ID_LEN
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .is_ok_and(|b| b.len() == 32);
    ok.then(|| id_hash(raw.as_bytes()))
}

/// The link and its files; 404 if unknown, 410 if expired or used up.
async fn resolve(state: &AppState, raw: &str) -> Result<Result<Resolved, Response>, AppError> {
    let hash = link_hash(raw).ok_or(AppError::NotFound)?;
    let found = state
        .db(move |s| {
            let Some(link) = s.external_link_by_hash(&hash)? else { return Ok(None) };
            Ok(s.external_link_package(link.package_id)?.map(|p| (link, p)))
        })
        .await?;
    let (link, (public_id, sender, sender_email, title)) = found.ok_or(AppError::NotFound)?;
    if link.expires_at_s.is_some_and(|e| state.now_s() >= e) {
        return Ok(Err(gone("This link has expired.")));
    }
    let name = UserName::parse(&sender).map_err(|e| AppError::Internal(e.to_string()))?;
    let (data_dir, pid) = (state.config.data_dir.clone(), public_id.clone());
    let listed = state
        .blocking(move || package_files::outbox_files(&data_dir, &name, &pid))
        .await?
        .map_err(|e| AppError::Internal(format!("package files: {e}")))?;
    let lid = link.id;
    let files = state
        .db(move |s| {
            listed
                .into_iter()
                .map(|f| Ok((s.link_bytes(lid, &f.name)?, f)))
                .map(|r| r.map(|(b, f)| (f, b)))
                .collect()
        })
        .await?;
    let dir = crate::users::storage_root(
        &state.config.data_dir,
        &UserName::parse(&sender).map_err(|e| AppError::Internal(e.to_string()))?,
    )
    .join(package_files::OUTBOX_DIR)
    .join(&public_id);
    let r = Resolved { link, title, sender, sender_email, dir, files };
    if r.is_used_up() {
        return Ok(Err(gone("This link has been used as many times as it allows.")));
    }
    Ok(Ok(r))
}

/// The 410 page.
fn gone(message: &str) -> Response {
    (StatusCode::GONE, views::error_page(StatusCode::GONE, message)).into_response()
}

/// `GET /x/{link}`.
pub async fn link_page(
    State(state): State<AppState>,
    visit: Visit,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let r = match resolve(&state, &raw).await? {
        Ok(r) => r,
        Err(res) => return Ok(res),
    };
    let max = r.link.max_downloads;
    let files: Vec<_> = r
        .files
        .iter()
        .map(|(f, b)| {
            let done = b.sent.checked_div(f.size).unwrap_or(0);
            json!({
                "name": f.name, "size": views::human_bytes(f.size),
                "href": format!("/x/{raw}/files/{}", views::percent_encode(&f.name)),
                "left": max.map(|m| u64::from(m).saturating_sub(done)),
            })
        })
        .collect();
    let mut gets = Vec::new();
    for (f, b) in r.files.iter().take(MAX_LINK_URLS) {
        let left = max.is_none_or(|m| b.sent < u64::from(m).saturating_mul(f.size));
        if left {
            let url = link_haul_url(&state, &r, &f.name, &visit).await?;
            gets.push(json!({ "name": f.name, "url": url.as_ref().ok(), "error": url.err() }));
        }
    }
    let ctx = json!({
        "title": r.title, "sender": r.sender, "files": files, "gets": gets,
        "more_files": r.files.len() > MAX_LINK_URLS,
        "expires": r.link.expires_at_s.map(views::when), "max_downloads": max,
    });
    let mut page = with(base(&visit, &r.title, ""), ctx);
    page["me"] = serde_json::Value::Null;
    Ok(Html(views::render("external_link.html", page)?.0).into_response())
}

/// A short-lived `haul get` URL for one file, minted from the link: the token names the sender
/// (whose outbox holds the files) and the link, so the gate's package check admits it only
/// while the link lives, and the gate's ledger charges the link's byte accounting.
async fn link_haul_url(
    state: &AppState,
    r: &Resolved,
    file: &str,
    visit: &Visit,
) -> Result<Result<String, String>, AppError> {
    let (link_id, package_id) = (r.link.id, r.link.package_id);
    let name = UserName::parse(&r.sender).map_err(|e| AppError::Internal(e.to_string()))?;
    let lookup = name.as_str().to_owned();
    let Some(sender) = state.db(move |s| s.user(&lookup)).await? else {
        return Ok(Err("The sender's account no longer exists.".into()));
    };
    let public_id = r.dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let want = UrlFor {
        user: name,
        direction: crate::authz::Direction::Download,
        path: format!("{}/{file}", package_files::outbox_path(&public_id.unwrap_or_default())),
        package_id: package_files::link_token_package_id(link_id),
        minted: MintedFor { package_id, user_id: sender.id, link_id: Some(link_id) },
        lifetime_s: Some(LINK_TOKEN_LIFETIME_S),
        ip: visit.ip,
    };
    transfer_link(state, want).await
}

/// What the end of a response must record.
struct Meter {
    state: AppState,
    store: Arc<Store>,
    link_id: i64,
    file: String,
    size: u64,
    reserved: u64,
    read: u64,
    notice: external_notify::Downloaded,
}

impl Drop for Meter {
    fn drop(&mut self) {
        let (store, link_id, file) =
            (self.store.clone(), self.link_id, std::mem::take(&mut self.file));
        let (reserved, read, size) = (self.reserved, self.read, self.size);
        let (state, notice) = (self.state.clone(), self.notice.clone());
        let finish = move || store.finish_link_bytes(link_id, &file, reserved, read);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): record synchronously so no reservation leaks.
            if let Err(e) = finish() {
                tracing::warn!(target: "haul::web", "external link {link_id}: accounting failed: {e}");
            }
            return;
        };
        rt.spawn(async move {
            match tokio::task::spawn_blocking(finish).await {
                Ok(Ok((before, after))) => {
                    let (b, a) = (before.checked_div(size), after.checked_div(size));
                    if a > b {
                        external_notify::downloaded(&state, notice, a.unwrap_or(0)).await;
                    }
                }
                Ok(Err(e)) => tracing::warn!(target: "haul::web", "external link {link_id}: accounting failed: {e}"),
                Err(e) => tracing::warn!(target: "haul::web", "external link {link_id}: accounting task: {e}"),
            }
        });
    }
}

/// `GET /x/{link}/files/{name}`.
pub async fn link_file(
    State(state): State<AppState>,
    visit: Visit,
    Path((raw, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let r = match resolve(&state, &raw).await? {
        Ok(r) => r,
        Err(res) => return Ok(res),
    };
    let (f, bytes) = r.files.iter().find(|(f, _)| f.name == name).ok_or(AppError::NotFound)?;
    let std_file = download::open_nofollow(&r.dir.join(&f.name))?;
    let len = std_file.metadata().map_err(|e| AppError::Internal(e.to_string()))?.len();
    let (status, start, end) =
        match parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len) {
            RangeAsk::Whole => (StatusCode::OK, 0, len),
            RangeAsk::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
            RangeAsk::Unsatisfiable => return download::unsatisfiable(len),
        };
    let (lid, fname, max) = (r.link.id, f.name.clone(), r.link.max_downloads);
    let ask = end - start;
    let granted = state.db(move |s| s.reserve_link_bytes(lid, &fname, len, ask, max)).await?;
    if granted == Reservation::OverLimit {
        let allowed = max.map_or(u64::MAX, |m| u64::from(m).saturating_mul(len));
        if bytes.sent >= allowed {
            return Ok(gone("This file has been downloaded as many times as this link allows."));
        }
        let msg = "This request would pass the link's download limit: another download of this file may be running, or only part of it is left to fetch (resume the download).";
        return Ok(
            (StatusCode::CONFLICT, views::error_page(StatusCode::CONFLICT, msg)).into_response()
        );
    }
    let meter = Meter {
        state: state.clone(),
        store: state.store.clone(),
        link_id: lid,
        file: f.name.clone(),
        size: len,
        reserved: ask,
        read: 0,
        notice: external_notify::Downloaded {
            sender_email: r.sender_email.clone(),
            recipient: r.link.email.clone(),
            title: r.title.clone(),
            file: f.name.clone(),
            link_id: lid,
            package_id: r.link.package_id,
            max_downloads: max,
            ip: visit.ip,
        },
    };
    let mut file = tokio::fs::File::from_std(std_file);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let mut meter = meter;
    // The closure must own the whole meter (not just its `read` field, which a `move` closure
    // naming only `meter.read` would capture): the meter settles the accounting when the
    // response's body, and with it this closure, is dropped.
    let on_read = move |n: u64| {
        let m: &mut Meter = &mut meter;
        m.read += n;
    };
    let reader = Counted { inner: file.take(ask), on_read };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK_BYTES));
    download::file_response(status, body, (start, end, len), &f.name)
}
