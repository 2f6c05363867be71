//! Resumable browser uploads into a draft package: the core of tus 1.0 (creation, `HEAD` for
//! the offset, `PATCH` chunks at that offset, the `sha256` checksum extension), with creation
//! taking a JSON body instead of `Upload-Metadata`.
//!
//! 1. `POST /api/v1/packages/{id}/uploads` `{ name, size, sha256? }` → 201, `Location:
//!    /api/v1/uploads/{upload}`, `Upload-Offset: 0`.
//! 2. `PATCH /api/v1/uploads/{upload}` with `Upload-Offset: N`, `Content-Type:
//!    application/offset+octet-stream`, optionally `Upload-Checksum: sha256 BASE64` → 204 and
//!    the new `Upload-Offset`; a wrong offset is 409 (with the right one), a chunk that would
//!    pass the declared size 413, a checksum mismatch 460 (nothing written).
//! 3. After a network error: `HEAD /api/v1/uploads/{upload}` → `Upload-Offset`, and go on.
//!
//! Invariants:
//! - The partial file lives in `DATA_DIR/uploads/` (outside every storage root, so neither the
//!   gate nor a recipient can see it) and becomes a package file only when all `size` bytes are
//!   there and, if the creator gave one, their SHA-256 matches: then it is hard-linked into the
//!   sender's outbox under its name (never replacing a file) and the partial is removed.
//! - An upload id is 128 random bits, checked to be 32 hex digits before it names a file; an id
//!   that is another user's, unknown or malformed is the same 404.
//! - Only the sender of a draft may upload into it (the package's own 404 rule), with the
//!   account's send permission and upload address list. The size limit and the number of
//!   unfinished uploads per user come from the admin settings (`store::web_uploads`).
//! - The offset is the partial file's length, written with `sync_data` before it is reported, so
//!   a resumed upload continues from bytes that are on disk.
//! - One request at a time writes an upload (a second gets 409); uploads untouched for
//!   [`UPLOAD_IDLE_S`] are removed when the next upload is created.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Mutex, OnceLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::accounts::audit_for;
use super::api::Caller;
use super::error::{ApiError, AppError};
use super::package_files::OUTBOX_DIR;
use super::packages;
use super::state::AppState;
use crate::store::web_audit::Outcome;
use crate::store::web_uploads::UploadSettings;
use crate::users::{self, IpPurpose, UserName, storage_root};

/// Where partial files live, under the data directory.
pub const UPLOADS_DIR: &str = "uploads";
/// Largest `PATCH` body.
pub const MAX_CHUNK_BYTES: usize = 8 << 20;
/// An upload not written for this long is abandoned and removed.
pub const UPLOAD_IDLE_S: i64 = 24 * 3600;
/// Longest file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Most entries of the uploads directory looked at by one sweep.
pub const MAX_UPLOADS_SCANNED: usize = 10_000;
/// Largest creation body and largest metadata file read.
pub const MAX_META_BYTES: usize = 4096;
pub const TUS_VERSION: &str = "1.0.0";
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// tus's status for a chunk whose `Upload-Checksum` does not match.
pub const CHECKSUM_MISMATCH: u16 = 460;
const ID_HEX_LEN: usize = 32;

/// Why an upload request is refused; each says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Unknown, malformed or another user's upload (the caller's, or nobody's, business).
    #[error("There is no such upload, or it is not yours.")]
    NotFound,
    /// The client's offset is not the server's (the client resumes from `expected`).
    #[error("The upload is at offset {expected}; resume from there.")]
    Offset { expected: u64 },
    /// The request collides with the upload's or the package's state.
    #[error("{0}")]
    Conflict(&'static str),
    /// Larger than the settings or the declared size allow (the client's).
    #[error("{0}")]
    TooLarge(String),
    /// The user holds as many unfinished uploads as the settings allow.
    #[error("You have {0} unfinished uploads, the most allowed; finish or cancel one first.")]
    Quota(u32),
    /// The chunk's bytes do not match its `Upload-Checksum` (corrupted on the way).
    #[error("The chunk does not match its Upload-Checksum; nothing was written.")]
    ChunkChecksum,
    /// The whole file does not match the SHA-256 given at creation; the upload is removed.
    #[error("The file does not match the sha256 given when the upload was created.")]
    FileChecksum,
    /// The body is not `application/offset+octet-stream`.
    #[error("A chunk is sent as application/offset+octet-stream.")]
    ContentType,
    /// A malformed request (the client's); the message says what.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<ApiError> for UploadError {
    fn from(e: ApiError) -> UploadError {
        UploadError::App(e.0)
    }
}

impl From<crate::store::StoreError> for UploadError {
    fn from(e: crate::store::StoreError) -> UploadError {
        UploadError::App(e.into())
    }
}

impl UploadError {
    fn status(&self) -> StatusCode {
        match self {
            UploadError::NotFound => StatusCode::NOT_FOUND,
            UploadError::Offset { .. } | UploadError::Conflict(_) => StatusCode::CONFLICT,
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            UploadError::ChunkChecksum => {
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST)
            }
            UploadError::FileChecksum => StatusCode::UNPROCESSABLE_ENTITY,
            UploadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UploadError::App(e) => e.status(),
        }
    }
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        let mut res = match self {
            UploadError::App(e) => ApiError(e).into_response(),
            e => {
                let status = e.status();
                let body = json!({ "error": e.to_string(), "status": status.as_u16() });
                let mut res = (status, Json(body)).into_response();
                if let UploadError::Offset { expected } = e {
                    res.headers_mut().insert("upload-offset", HeaderValue::from(expected));
                }
                res
            }
        };
        res.headers_mut().insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
        res
    }
}

/// What the server keeps about an unfinished upload, beside its partial file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    user_id: i64,
    package_id: i64,
    public_id: String,
    sender: String,
    name: String,
    size: u64,
    sha256: Option<String>,
    updated_at_s: i64,
}

fn uploads_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join(UPLOADS_DIR)
}

fn meta_path(data_dir: &FsPath, id: &str) -> PathBuf {
    uploads_dir(data_dir).join(format!("{id}.json"))
}

fn part_path(data_dir: &FsPath, id: &str) -> PathBuf {
    uploads_dir(data_dir).join(format!("{id}.part"))
}

fn is_upload_id(s: &str) -> bool {
    s.len() == ID_HEX_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file name a package may hold: one path component, printable, not hidden.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!("A file name is 1 to {MAX_FILE_NAME_BYTES} bytes."));
    }
    if name.starts_with('.') || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(
            "A file name cannot start with a dot or hold slashes or control characters.".into()
        );
    }
    Ok(())
}

fn read_meta(path: &FsPath) -> std::io::Result<Meta> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_META_BYTES as u64).read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

fn write_meta(path: &FsPath, meta: &Meta, is_new: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    if is_new && path.exists() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    std::fs::rename(tmp, path)
}

fn remove_upload(data_dir: &FsPath, id: &str) {
    // Either file may already be gone (a finished or swept upload): nothing to report.
    let _ = std::fs::remove_file(part_path(data_dir, id));
    let _ = std::fs::remove_file(meta_path(data_dir, id));
}

/// Upload ids a request is writing now (one writer per upload).
fn busy() -> &'static Mutex<HashSet<String>> {
    static BUSY: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    BUSY.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Held while an upload is created: its quota count and its new files are one step.
fn creating() -> &'static Mutex<()> {
    static CREATING: Mutex<()> = Mutex::new(());
    &CREATING
}

/// The claim on one upload; released on drop.
struct Claim(String);

impl Claim {
    fn take(id: &str) -> Result<Claim, UploadError> {
        let mut set = busy().lock().map_err(|_| AppError::Internal("upload lock".into()))?;
        if !set.insert(id.to_owned()) {
            return Err(UploadError::Conflict("Another request is writing this upload."));
        }
        Ok(Claim(id.to_owned()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut set) = busy().lock() {
            set.remove(&self.0);
        }
    }
}

/// Removes abandoned uploads; returns how many unfinished uploads `user_id` holds.
fn sweep(data_dir: &FsPath, user_id: i64, now_s: i64) -> std::io::Result<u32> {
    let dir = uploads_dir(data_dir);
    let mut mine = 0;
    for entry in std::fs::read_dir(&dir)?.take(MAX_UPLOADS_SCANNED) {
        let path = entry?.path();
        let Some(id) = path.file_stem().and_then(|s| s.to_str()).filter(|s| is_upload_id(s)) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_meta(&path) {
            Ok(m) if now_s - m.updated_at_s > UPLOAD_IDLE_S => remove_upload(data_dir, id),
            Ok(m) if m.user_id == user_id => mine += 1,
            Ok(_) => {}
            Err(_) => remove_upload(data_dir, id),
        }
    }
    Ok(mine)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    pub name: String,
    pub size: u64,
    /// The whole file's SHA-256 in hex: checked before the file joins the package.
    pub sha256: Option<String>,
}

fn parse_new(body: &[u8]) -> Result<NewUpload, UploadError> {
    if body.len() > MAX_META_BYTES {
        return Err(UploadError::BadRequest("The body is too long.".into()));
    }
    let b: NewUpload = serde_json::from_slice(body)
        .map_err(|e| UploadError::BadRequest(format!("The body is not the expected JSON: {e}")))?;
    check_file_name(&b.name).map_err(UploadError::BadRequest)?;
    if b.size == 0 {
        return Err(UploadError::BadRequest("An upload has at least one byte.".into()));
    }
    if b.sha256.as_ref().is_some_and(|h| h.len() != 64 || hex::decode(h).is_err()) {
        return Err(UploadError::BadRequest("sha256 is 64 hex digits.".into()));
    }
    Ok(b)
}

/// `POST /api/v1/packages/{id}/uploads`: a new upload into one of the caller's drafts.
pub async fn create(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, UploadError> {
    let m = &c.member;
    // The package first: another user's id is 404 whatever the body holds.
    let p = packages::load(&state, m, &id).await?;
    if p.sender_id != m.ctx.account.user_id || p.sent_at_s.is_some() {
        return Err(UploadError::NotFound);
    }
    packages::may_send(m)?;
    if !users::is_allowed(m.ctx.user.ip_allow(IpPurpose::Upload), m.visit.ip) {
        return Err(AppError::Forbidden("Your account may not upload from this address.").into());
    }
    let b = parse_new(&body)?;
    let limits: UploadSettings = state.db(|s| s.upload_settings()).await?;
    if b.size > limits.max_bytes {
        return Err(UploadError::TooLarge(format!(
            "A file is at most {} bytes here.",
            limits.max_bytes
        )));
    }
    let raw = super::keys::random_id().map_err(|e| AppError::Internal(e.to_string()))?;
    let upload_id = hex::encode(&raw[..ID_HEX_LEN / 2]);
    let meta = Meta {
        user_id: m.ctx.account.user_id,
        package_id: p.id,
        public_id: p.public_id.clone(),
        sender: p.sender.clone(),
        name: b.name,
        size: b.size,
        sha256: b.sha256.map(|h| h.to_lowercase()),
        updated_at_s: state.now_s(),
    };
    let (dir, uid) = (state.config.data_dir.clone(), upload_id.clone());
    state.blocking(move || begin(&dir, &uid, &meta, limits.per_user)).await??;
    let location = format!("/api/v1/uploads/{upload_id}");
    let mut res = (
        StatusCode::CREATED,
        Json(json!({ "id": upload_id, "location": location, "offset": 0, "size": b.size })),
    )
        .into_response();
    let h = res.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| AppError::Internal(e.to_string()))?,
    );
    h.insert("upload-offset", HeaderValue::from(0u64));
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    Ok(res)
}

/// The outbox file an upload becomes.
fn target_path(data_dir: &FsPath, meta: &Meta) -> Result<PathBuf, UploadError> {
    let sender = UserName::parse(&meta.sender).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(storage_root(data_dir, &sender).join(OUTBOX_DIR).join(&meta.public_id).join(&meta.name))
}

/// Checks the quota and that the name is free, then writes the metadata and an empty partial.
fn begin(data_dir: &FsPath, id: &str, meta: &Meta, per_user: u32) -> Result<(), UploadError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |e: std::io::Error| AppError::Internal(format!("uploads directory: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(uploads_dir(data_dir))
        .map_err(io)?;
    // One creation at a time, so two cannot both pass the quota.
    let _lock = creating().lock().map_err(|_| AppError::Internal("upload lock".into()))?;
    let held = sweep(data_dir, meta.user_id, meta.updated_at_s).map_err(io)?;
    if held >= per_user {
        return Err(UploadError::Quota(held));
    }
    if target_path(data_dir, meta)?.exists() {
        return Err(UploadError::Conflict("The package already has a file with this name."));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(part_path(data_dir, id))
        .map_err(io)?;
    write_meta(&meta_path(data_dir, id), meta, true).map_err(io)?;
    Ok(())
}

/// The caller's upload behind an id, or 404.
async fn load(state: &AppState, c: &Caller, id: &str) -> Result<Meta, UploadError> {
    if !is_upload_id(id) {
        return Err(UploadError::NotFound);
    }
    let path = meta_path(&state.config.data_dir, id);
    let meta =
        state.blocking(move || read_meta(&path)).await?.map_err(|_| UploadError::NotFound)?;
    if meta.user_id != c.member.ctx.account.user_id {
        return Err(UploadError::NotFound);
    }
    Ok(meta)
}

fn offset_headers(res: &mut Response, offset: u64, size: u64) {
    let h = res.headers_mut();
    h.insert("upload-offset", HeaderValue::from(offset));
    h.insert("upload-length", HeaderValue::from(size));
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `HEAD /api/v1/uploads/{upload}`: where to resume.
pub async fn offset(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, UploadError> {
    let meta = load(&state, &c, &id).await?;
    let part = part_path(&state.config.data_dir, &id);
    let len = state.blocking(move || std::fs::metadata(part).map(|m| m.len())).await?;
    let len = len.map_err(|_| UploadError::NotFound)?;
    let mut res = StatusCode::OK.into_response();
    offset_headers(&mut res, len, meta.size);
    Ok(res)
}

/// The chunk's `Upload-Checksum` (`sha256 BASE64`), if any.
fn chunk_checksum(headers: &HeaderMap) -> Result<Option<[u8; 32]>, UploadError> {
    let Some(v) = headers.get("upload-checksum") else { return Ok(None) };
    let bad = || UploadError::BadRequest("Upload-Checksum is `sha256 BASE64`.".into());
    let (algo, b64) = v.to_str().map_err(|_| bad())?.split_once(' ').ok_or_else(bad)?;
    if algo != "sha256" {
        return Err(UploadError::BadRequest("Upload-Checksum supports sha256 only.".into()));
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    Ok(Some(raw.try_into().map_err(|_| bad())?))
}

fn patch_offset(headers: &HeaderMap) -> Result<u64, UploadError> {
    let is_chunk = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(OFFSET_CONTENT_TYPE));
    if !is_chunk {
        return Err(UploadError::ContentType);
    }
    headers
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| UploadError::BadRequest("Upload-Offset is a whole number.".into()))
}

/// `PATCH /api/v1/uploads/{upload}`: one chunk at the upload's offset.
pub async fn patch(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    let mut meta = load(&state, &c, &id).await?;
    let at = patch_offset(&headers)?;
    let sum = chunk_checksum(&headers)?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > MAX_CHUNK_BYTES as u64) {
        return Err(UploadError::TooLarge(format!("A chunk is at most {MAX_CHUNK_BYTES} bytes.")));
    }
    // Nothing of a chunk that does not arrive whole is written: the client resumes from HEAD.
    let chunk = axum::body::to_bytes(body, MAX_CHUNK_BYTES).await.map_err(|_| {
        UploadError::BadRequest(format!(
            "The chunk did not arrive whole, or is over {MAX_CHUNK_BYTES} bytes; nothing of it was written."
        ))
    })?;
    let claim = Claim::take(&id)?;
    let (pid, uid) = (meta.package_id, c.member.ctx.account.user_id);
    let package = state.db(move |s| s.package_for(pid, uid)).await?;
    let dir = state.config.data_dir.clone();
    let Some(package) = package.filter(|p| p.sent_at_s.is_none()) else {
        let id2 = id.clone();
        state.blocking(move || remove_upload(&dir, &id2)).await?;
        return Err(UploadError::Conflict("The package is sent or gone; the upload is removed."));
    };
    meta.updated_at_s = state.now_s();
    let (id2, meta2) = (id.clone(), meta.clone());
    let step = state.blocking(move || append(&dir, &id2, &meta2, at, &chunk, sum)).await?;
    drop(claim);
    let offset = step?;
    if offset == meta.size {
        let detail = format!("file {} ({} bytes) uploaded in the browser", meta.name, meta.size);
        let m = &c.member;
        let entry =
            audit_for(&m.visit, Some(&m.ctx.account.name), "package.upload", Outcome::Ok, &detail);
        state.audit(entry.target(&package.title)).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    offset_headers(&mut res, offset, meta.size);
    Ok(res)
}

/// Appends `chunk` at `at` (which must be the partial's length); on the last byte, checks the
/// whole file and moves it into the package. Returns the new offset.
fn append(
    data_dir: &FsPath,
    id: &str,
    meta: &Meta,
    at: u64,
    chunk: &[u8],
    sum: Option<[u8; 32]>,
) -> Result<u64, UploadError> {
    let io = |e: std::io::Error| AppError::Internal(format!("upload {id}: {e}"));
    let part = part_path(data_dir, id);
    let len = std::fs::metadata(&part).map_err(|_| UploadError::NotFound)?.len();
    if at != len {
        return Err(UploadError::Offset { expected: len });
    }
    let end = len + chunk.len() as u64;
    if end > meta.size {
        return Err(UploadError::TooLarge(format!(
            "The chunk ends at byte {end}, past the declared size {}.",
            meta.size
        )));
    }
    if sum.is_some_and(|s| s[..] != Sha256::digest(chunk)[..]) {
        return Err(UploadError::ChunkChecksum);
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&part).map_err(io)?;
    f.write_all(chunk).map_err(io)?;
    f.sync_data().map_err(io)?;
    write_meta(&meta_path(data_dir, id), meta, false).map_err(io)?;
    if end == meta.size {
        finish(data_dir, id, meta)?;
    }
    Ok(end)
}

/// The complete partial joins the package (checked against its SHA-256, if one was given).
fn finish(data_dir: &FsPath, id: &str, meta: &Meta) -> Result<(), UploadError> {
    let io = |e: std::io::Error| AppError::Internal(format!("upload {id}: {e}"));
    let part = part_path(data_dir, id);
    if let Some(want) = &meta.sha256 {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&part).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        if hex::encode(h.finalize()) != *want {
            remove_upload(data_dir, id);
            return Err(UploadError::FileChecksum);
        }
    }
    let target = target_path(data_dir, meta)?;
    let linked = std::fs::hard_link(&part, &target);
    remove_upload(data_dir, id);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(UploadError::Conflict("The package already has a file with this name."))
        }
        Err(e) => Err(io(e).into()),
    }
}

/// `DELETE /api/v1/uploads/{upload}`: abandons an upload.
pub async fn cancel(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, UploadError> {
    load(&state, &c, &id).await?;
    let claim = Claim::take(&id)?;
    let dir = state.config.data_dir.clone();
    state.blocking(move || remove_upload(&dir, &id)).await?;
    drop(claim);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/admin/upload-settings`.
pub async fn settings(State(state): State<AppState>, _c: Caller) -> Result<Response, UploadError> {
    let s = state.db(|s| s.upload_settings()).await?;
    Ok(Json(json!({ "max_bytes": s.max_bytes, "per_user": s.per_user })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub max_bytes: u64,
    pub per_user: u32,
}

/// `PUT /api/v1/admin/upload-settings`.
pub async fn put_settings(
    State(state): State<AppState>,
    c: Caller,
    Json(b): Json<SettingsBody>,
) -> Result<Response, UploadError> {
    let s = UploadSettings { max_bytes: b.max_bytes, per_user: b.per_user };
    s.check().map_err(UploadError::BadRequest)?;
    let now_s = state.now_s();
    state.db(move |st| st.set_upload_settings(&s, now_s)).await?;
    let detail = format!("upload limits: {} bytes, {} per user", s.max_bytes, s.per_user);
    let m = &c.member;
    let entry =
        audit_for(&m.visit, Some(&m.ctx.account.name), "settings.update", Outcome::Ok, &detail);
    state.audit(entry.target("uploads")).await?;
    settings(State(state), c).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_printable_component() {
        assert!(check_file_name("reel 4.mov").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a\\b", "a\nb", &"x".repeat(256)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upload_ids_are_32_lowercase_hex_digits() {
        assert!(is_upload_id(&"0a".repeat(16)));
        assert!(!is_upload_id(&"0A".repeat(16)));
        assert!(!is_upload_id("../../etc/passwd"));
        assert!(!is_upload_id(&"0".repeat(31)));
    }
}
