//! The HTTPS download fallback: a package's files over HTTPS, for people without the `haul`
//! client, with single-range `Range` support (resume and seeking).
//!
//! Invariants:
//! - Only the sender (from the outbox) and recipients of a sent package (from their inbox) can
//!   download; anyone else gets 404. Upload-only users and addresses outside the user's download
//!   allow-list get 403, as at the transfer gate.
//! - The file is found by listing the package directory and matching the name exactly, so no
//!   path from the URL reaches the file system; it is opened without following symlinks.
//! - A recipient is refused (410) once the package's limits say so (`super::package_limits`).
//! - A recipient's response that sends the file's last byte writes a delivery receipt
//!   (`package_downloads`, shown to the sender) and mails the sender; aborted responses do not.
//! - A `Range` the file cannot satisfy is 416 with `Content-Range: bytes */LEN`; several ranges
//!   are answered with the whole file (RFC 9110 lets a server ignore `Range`).

use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

use super::accounts::{audit_for, parse_id};
use super::error::AppError;
use super::package_files::{self, INBOX_DIR, OUTBOX_DIR};
use super::session::Member;
use super::state::AppState;
use crate::notify::Mail;
use crate::store::deliveries::{Downloader, Via};
use crate::store::web_audit::Outcome;
use crate::users::{DirectionLimit, IpPurpose, UserName, is_allowed, storage_root};

/// Bytes read per chunk of the response body.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Longest `Range` header parsed.
pub const MAX_RANGE_HEADER: usize = 200;
const O_NOFOLLOW: i32 = 0o400000;

/// A byte range `start..end` (end exclusive) of a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsk {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parses a `Range` header against a file of `len` bytes (pure).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(h) = header.filter(|h| h.len() <= MAX_RANGE_HEADER) else { return RangeAsk::Whole };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return RangeAsk::Whole };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Unsatisfiable };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) | None => return RangeAsk::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
        },
        (false, true) => match num(a) {
            Some(s) => (s, len),
            None => return RangeAsk::Unsatisfiable,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if e >= s => (s, e.saturating_add(1).min(len)),
            _ => return RangeAsk::Unsatisfiable,
        },
        (true, true) => return RangeAsk::Unsatisfiable,
    };
    if start >= len || start >= end {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part { start, end }
    }
}

/// `attachment; filename*=UTF-8''NAME` with the name percent-encoded.
fn disposition(name: &str) -> HeaderValue {
    let enc = super::views::percent_encode(name);
    HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The package file `name` as `m` may download it: (package id, title, open file, name, whether
/// `m` is the sender).
async fn locate(
    state: &AppState,
    m: &Member,
    id: &str,
    name: &str,
) -> Result<(i64, String, std::fs::File, String, bool), AppError> {
    let (pid, uid) = (parse_id(id)?, m.ctx.account.user_id);
    let p = state.db(move |s| s.package_for(pid, uid)).await?.ok_or(AppError::NotFound)?;
    let is_sender = p.sender_id == uid;
    if m.ctx.user.direction_limit == DirectionLimit::UploadOnly {
        return Err(AppError::Forbidden("Your account is upload-only: it cannot download files."));
    }
    if !is_allowed(m.ctx.user.ip_allow(IpPurpose::Download), m.visit.ip) {
        return Err(AppError::Forbidden("Your account may not download from this address."));
    }
    let owner = if is_sender {
        UserName::parse(&p.sender).map_err(|e| AppError::Internal(e.to_string()))?
    } else {
        m.ctx.user.name.clone()
    };
    let dir = storage_root(&state.config.data_dir, &owner)
        .join(if is_sender { OUTBOX_DIR } else { INBOX_DIR })
        .join(&p.public_id);
    let listed = {
        let dir = dir.clone();
        state
            .blocking(move || package_files::list_files(&dir))
            .await?
            .map_err(|e| AppError::Internal(format!("package files: {e}")))?
    };
    let f = listed.into_iter().find(|f| f.name == name).ok_or(AppError::NotFound)?;
    let file = open_nofollow(&dir.join(&f.name))?;
    Ok((pid, p.title, file, f.name, is_sender))
}

/// `GET /packages/{id}/files/{name}`.
pub async fn file(
    State(state): State<AppState>,
    m: Member,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (pid, title, std_file, name, is_sender) = locate(&state, &m, &id, &name).await?;
    if !is_sender {
        let (uid, file) = (m.ctx.account.user_id, name.clone());
        let (limits, done) = state
            .db(move |s| Ok((s.package_limits(pid)?, s.user_download_count(pid, uid, &file)?)))
            .await?;
        if let Err(why) = super::package_limits::check(&limits, state.now_s(), done) {
            let page = super::views::error_page(StatusCode::GONE, why.message());
            return Ok((StatusCode::GONE, page).into_response());
        }
    }
    let len = std_file.metadata().map_err(|e| AppError::Internal(e.to_string()))?.len();
    let ask = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len);
    let (status, start, end) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeAsk::Unsatisfiable => return unsatisfiable(len),
    };
    let mut file = tokio::fs::File::from_std(std_file);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let receipt = (!is_sender && end == len).then(|| {
        let (state, uid, name) = (state.clone(), m.ctx.account.user_id, name.clone());
        move || receipt_for_user(state, pid, uid, name)
    });
    // The receipt is written when the response has read its last byte: hyper stops polling at
    // the Content-Length, so EOF is never seen; an aborted response is dropped before that.
    let (mut left, mut receipt) = (end - start, receipt);
    let on_read = move |n: u64| {
        left = left.saturating_sub(n);
        if left == 0
            && let Some(f) = receipt.take()
        {
            f();
        }
    };
    let reader = Counted { inner: file.take(end - start), on_read };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK_BYTES));
    let detail = format!("package {pid} file bytes {start}-{end} of {len} over HTTPS");
    state
        .audit(
            audit_for(
                &m.visit,
                Some(&m.ctx.account.name),
                "package.download",
                Outcome::Ok,
                &detail,
            )
            .target(&title),
        )
        .await?;
    file_response(status, body, (start, end, len), &name)
}

/// A reader that tells `on_read` how many bytes each read returned (shared with the external
/// link download, which meters its responses with it).
pub struct Counted<R, F> {
    pub inner: R,
    pub on_read: F,
}

impl<R, F> std::fmt::Debug for Counted<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin, F: FnMut(u64) + Unpin> AsyncRead for Counted<R, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            let read = (buf.filled().len() - before) as u64;
            (self.on_read)(read);
        }
        r
    }
}

/// A recipient's HTTPS response sent a file's last byte: receipt, and mail to the sender.
fn receipt_for_user(state: AppState, package_id: i64, user_id: i64, file: String) {
    tokio::spawn(async move {
        let who = Downloader::User(user_id);
        let now_s = state.now_s();
        let name = file.clone();
        let notice = state
            .db(move |s| {
                s.record_download(package_id, who, &name, Via::Https, now_s)?;
                s.download_notice(package_id, who)
            })
            .await;
        match notice {
            Ok(Some((to, title, by))) if !to.trim().is_empty() => {
                let body = format!("{by} downloaded {file} from your package {title} (HTTPS).\n");
                let mail = Mail { to, subject: format!("Downloaded: {title}"), body };
                super::external_notify::spawn_send(&state, mail);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "haul::web", "receipt for package {package_id}: {e:?}")
            }
        }
    });
}

/// 416 with `Content-Range: bytes */LEN` (shared with the external link download).
pub fn unsatisfiable(len: u64) -> Result<Response, AppError> {
    let cr = HeaderValue::from_str(&format!("bytes */{len}"))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, cr)]).into_response())
}

/// A file download response: `body` carries bytes `start..end` of a file of `len` bytes
/// (shared with the external link download).
pub fn file_response(
    status: StatusCode,
    body: Body,
    (start, end, len): (u64, u64, u64),
    name: &str,
) -> Result<Response, AppError> {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::CONTENT_DISPOSITION, disposition(name));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
            .map_err(|e| AppError::Internal(e.to_string()))?;
        h.insert(header::CONTENT_RANGE, cr);
    }
    Ok(res)
}

/// Opens a package file for reading without following a symlink.
pub fn open_nofollow(path: &std::path::Path) -> Result<std::fs::File, AppError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(|e| AppError::Internal(format!("opening package file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        let p = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), RangeAsk::Whole);
        assert_eq!(p("bytes=0-9"), RangeAsk::Part { start: 0, end: 10 });
        assert_eq!(p("bytes=90-"), RangeAsk::Part { start: 90, end: 100 });
        assert_eq!(p("bytes=-10"), RangeAsk::Part { start: 90, end: 100 });
        assert_eq!(p("bytes=-1000"), RangeAsk::Part { start: 0, end: 100 });
        assert_eq!(p("bytes=50-5000"), RangeAsk::Part { start: 50, end: 100 });
        assert_eq!(p("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(p("bytes=9-3"), RangeAsk::Unsatisfiable);
        assert_eq!(p("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(p("bytes=x-y"), RangeAsk::Unsatisfiable);
        assert_eq!(p("bytes=0-1,5-6"), RangeAsk::Whole);
        assert_eq!(p("items=0-1"), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
    }
}
