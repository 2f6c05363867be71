//! External recipients of a package: the sender adds an e-mail address, with an expiry and/or
//! a download count, and the recipient is e-mailed a link (`/x/{link}`, see
//! [`super::external_link`]).
//!
//! Invariants:
//! - Only the sender of a sent package adds external recipients, and only if the admin setting
//!   allows external sending and the sender's account may send external: otherwise the form
//!   shows a validation error (422) and the API answers 403.
//! - Expiry and download count are clamped to the admin maxima; defaults fill what is left out.
//! - A link id is 256 random bits, base64url; the store keeps only its plain SHA-256. A keyed
//!   hash would add nothing: with 256 random bits there is nothing to guess, so a stolen
//!   database gives no link; and a plain hash keeps links working across secret rotation.
//! - The id is put only in the e-mail to the recipient (and never in a log or the audit log).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{audit_for, parse_id};
use super::api::Caller;
use super::error::{ApiError, AppError};
use super::external_notify;
use super::keys::{id_hash, random_id};
use super::session::Member;
use super::state::AppState;
use super::views::{self, base, with};
use crate::notify::parse_address;
use crate::store::external::ExternalLink;
use crate::store::web_audit::Outcome;
use crate::store::web_packages::Package;
use crate::users::DirectionLimit;

/// Seconds in a day (expiry is given in days).
pub const DAY_S: i64 = 86_400;

/// The form and the API's body.
#[derive(Debug, Default, Deserialize)]
pub struct ExternalForm {
    #[serde(default)]
    pub email: String,
    /// Days until the link expires; empty: the default.
    #[serde(default)]
    pub expires_days: Option<String>,
    /// Downloads allowed; empty: the default.
    #[serde(default)]
    pub downloads: Option<String>,
}

/// The API's body (numbers as JSON numbers).
#[derive(Debug, Default, Deserialize)]
pub struct ExternalBody {
    pub email: String,
    #[serde(default)]
    pub expires_days: Option<u32>,
    #[serde(default)]
    pub downloads: Option<u32>,
}

impl From<ExternalBody> for ExternalForm {
    fn from(b: ExternalBody) -> ExternalForm {
        ExternalForm {
            email: b.email,
            expires_days: b.expires_days.map(|n| n.to_string()),
            downloads: b.downloads.map(|n| n.to_string()),
        }
    }
}

/// A validated request for a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkAsk {
    pub email: String,
    pub expires_days: u32,
    pub downloads: u32,
}

/// Why a link cannot be added: `Refused` is the permission (403 on the API), `Invalid` the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Refused(&'static str),
    Invalid(String),
}

fn number(raw: &Option<String>, default: u32, max: u32, what: &str) -> Result<u32, Refusal> {
    let raw = raw.as_deref().map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(default.clamp(1, max.max(1)));
    }
    match raw.parse::<u32>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(Refusal::Invalid(format!("The {what} is a whole number from 1 to {max}."))),
    }
}

/// Checks the permission, the package state and the input.
async fn check(
    state: &AppState,
    m: &Member,
    p: &Package,
    f: &ExternalForm,
) -> Result<Result<LinkAsk, Refusal>, AppError> {
    let settings = state.db(|s| s.web_settings()).await?;
    if !settings.external_sending {
        return Ok(Err(Refusal::Refused(
            "The administrator does not allow sending to external addresses.",
        )));
    }
    if !m.ctx.user.may_send_external || m.ctx.user.direction_limit == DirectionLimit::DownloadOnly {
        return Ok(Err(Refusal::Refused("Your account may not send to external addresses.")));
    }
    if p.sent_at_s.is_none() {
        return Ok(Err(Refusal::Invalid(
            "Send the package first, then add external recipients.".into(),
        )));
    }
    if parse_address(&f.email).is_err() {
        return Ok(Err(Refusal::Invalid("Enter a valid e-mail address.".into())));
    }
    let days = match number(
        &f.expires_days,
        settings.external_expiry_default_days,
        settings.external_expiry_max_days,
        "expiry in days",
    ) {
        Ok(d) => d,
        Err(r) => return Ok(Err(r)),
    };
    let downloads = match number(
        &f.downloads,
        settings.external_downloads_default,
        settings.external_downloads_max,
        "number of downloads",
    ) {
        Ok(d) => d,
        Err(r) => return Ok(Err(r)),
    };
    Ok(Ok(LinkAsk { email: f.email.trim().to_owned(), expires_days: days, downloads }))
}

/// Creates the link, e-mails it, audits; returns the stored link.
async fn add_link(
    state: &AppState,
    headers: &HeaderMap,
    m: &Member,
    p: &Package,
    ask: LinkAsk,
) -> Result<ExternalLink, AppError> {
    let raw = random_id().map_err(|e| AppError::Internal(format!("random link id: {e}")))?;
    let link_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = id_hash(link_id.as_bytes());
    let now_s = state.now_s();
    let expires_at_s = now_s + i64::from(ask.expires_days) * DAY_S;
    let (pid, email, max) = (p.id, ask.email.clone(), ask.downloads);
    let id = state
        .db(move |s| {
            s.create_external_link(pid, &email, &hash, Some(expires_at_s), Some(max), now_s)
        })
        .await?
        .ok_or(AppError::BadRequest(
            "This package has as many external recipients as it can have.".into(),
        ))?;
    external_notify::link_sent(state, headers, p, &ask.email, &link_id, expires_at_s, max).await;
    let detail =
        format!("package {pid}: external link {id} ({max} downloads, {} days)", ask.expires_days);
    state
        .audit(
            audit_for(
                &m.visit,
                Some(&m.ctx.account.name),
                "package.external",
                Outcome::Ok,
                &detail,
            )
            .target(&ask.email),
        )
        .await?;
    Ok(ExternalLink {
        id,
        package_id: pid,
        email: ask.email,
        created_at_s: now_s,
        expires_at_s: Some(expires_at_s),
        max_downloads: Some(max),
    })
}

/// The sender's own package `raw`, or 404.
async fn own_package(state: &AppState, m: &Member, raw: &str) -> Result<Package, AppError> {
    let (id, uid) = (parse_id(raw)?, m.ctx.account.user_id);
    let p = state.db(move |s| s.package_for(id, uid)).await?.ok_or(AppError::NotFound)?;
    if p.sender_id != uid {
        return Err(AppError::NotFound);
    }
    Ok(p)
}

fn link_json(l: &ExternalLink, now_s: i64) -> Value {
    json!({
        "id": l.id, "email": l.email, "created": views::when(l.created_at_s),
        "expires": l.expires_at_s.map(views::when), "max_downloads": l.max_downloads,
        "is_expired": l.expires_at_s.is_some_and(|e| now_s >= e),
    })
}

async fn page(
    state: &AppState,
    m: &Member,
    p: &Package,
    form: &ExternalForm,
    error: Option<String>,
) -> Result<Response, AppError> {
    let pid = p.id;
    let (links, settings) =
        state.db(move |s| Ok((s.external_links(pid)?, s.web_settings()?))).await?;
    let now_s = state.now_s();
    let ctx = json!({
        "p": { "id": p.id, "title": p.title, "sent": p.sent_at_s.is_some() },
        "links": links.iter().map(|l| link_json(l, now_s)).collect::<Vec<_>>(),
        "allowed": settings.external_sending && m.ctx.user.may_send_external,
        "defaults": { "days": settings.external_expiry_default_days, "max_days": settings.external_expiry_max_days,
                      "downloads": settings.external_downloads_default, "max_downloads": settings.external_downloads_max },
        "form": { "email": form.email, "expires_days": form.expires_days, "downloads": form.downloads },
        "error": error,
    });
    let status =
        if ctx["error"].is_null() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = views::render("package_external.html", with(base(&m.visit, &p.title, "sent"), ctx))?;
    Ok((status, body).into_response())
}

/// `GET /packages/{id}/external`.
pub async fn external_page(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let p = own_package(&state, &m, &id).await?;
    page(&state, &m, &p, &ExternalForm::default(), None).await
}

/// `POST /packages/{id}/external`.
pub async fn add(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ExternalForm>,
) -> Result<Response, AppError> {
    let p = own_package(&state, &m, &id).await?;
    match check(&state, &m, &p, &f).await? {
        Ok(ask) => {
            add_link(&state, &headers, &m, &p, ask).await?;
            Ok(Redirect::to(&format!("/packages/{}/external", p.id)).into_response())
        }
        Err(Refusal::Refused(msg)) => page(&state, &m, &p, &f, Some(msg.into())).await,
        Err(Refusal::Invalid(msg)) => page(&state, &m, &p, &f, Some(msg)).await,
    }
}

/// `POST /api/v1/packages/{id}/external`: 201 with the link's facts (not its id: that goes
/// to the recipient only); 403 without the permission; 400 for bad input.
pub async fn api_add(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The package is checked before the body is read, so another user's id is 404 whatever
    // the body holds.
    let p = own_package(&state, &c.member, &id).await?;
    let body: ExternalBody = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("The body is not the expected JSON: {e}")))?;
    let f = ExternalForm::from(body);
    match check(&state, &c.member, &p, &f).await? {
        Ok(ask) => {
            let l = add_link(&state, &headers, &c.member, &p, ask).await?;
            Ok((StatusCode::CREATED, Json(link_json(&l, state.now_s()))).into_response())
        }
        Err(Refusal::Refused(msg)) => Err(AppError::Forbidden(msg).into()),
        Err(Refusal::Invalid(msg)) => Err(AppError::BadRequest(msg).into()),
    }
}

/// `GET /api/v1/packages/{id}/external`: the sender's view of the package's external links.
pub async fn api_list(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = own_package(&state, &c.member, &id).await?;
    let pid = p.id;
    let links = state.db(move |s| s.external_links(pid)).await?;
    let now_s = state.now_s();
    Ok(Json(json!({ "links": links.iter().map(|l| link_json(l, now_s)).collect::<Vec<_>>() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_default_and_stay_within_the_maximum() {
        assert_eq!(number(&None, 7, 30, "x"), Ok(7));
        assert_eq!(number(&Some(" ".into()), 40, 30, "x"), Ok(30));
        assert_eq!(number(&Some("3".into()), 7, 30, "x"), Ok(3));
        assert!(number(&Some("31".into()), 7, 30, "x").is_err());
        assert!(number(&Some("0".into()), 7, 30, "x").is_err());
        assert!(number(&Some("-1".into()), 7, 30, "x").is_err());
    }
}
