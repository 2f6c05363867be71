//! The console's e-mail notifications (issue 6): a package sent (to each recipient with an
//! e-mail address, and to each external recipient with their link), and an external download
//! (to the sender). Delivery is [`crate::notify`]'s: SMTP, or the development outbox.
//!
//! Invariants:
//! - Sending happens on a spawned task: a slow or failing mail server never delays or fails
//!   the request. A failure is logged with the error only, never the message (which may hold a
//!   link id).
//! - Links in messages use the console's origin as the sender's browser reached it (the `Host`
//!   header, checked to be a plain host[:port]), else the configured public host.

use axum::http::{HeaderMap, header};

use super::state::AppState;
use crate::notify::Mail;
use crate::store::deliveries::{Downloader, Via};
use crate::store::web_audit::Outcome;
use crate::store::web_packages::{Package, Recipient};

/// Longest `Host` header used in a link.
pub const MAX_HOST: usize = 255;

/// The `https://host[:port]` origin for links in messages.
pub async fn origin(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= MAX_HOST
                && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_owned);
    match host {
        Some(h) => format!("https://{h}"),
        None => {
            let port = state.config.listen.port();
            let public = state.db(|s| s.admin_settings()).await.map(|a| a.public_host);
            format!("https://{}:{port}", public.unwrap_or_else(|_| "localhost".into()))
        }
    }
}

/// Sends `mail` on a spawned task through the mailer the settings choose.
pub fn spawn_send(state: &AppState, mail: Mail) {
    let rt = tokio::runtime::Handle::current();
    crate::notify::spawn_send_with(&rt, state.store.clone(), state.config.data_dir.clone(), mail);
}

/// To each recipient with an e-mail address: a package was sent to them.
pub async fn package_sent(
    state: &AppState,
    headers: &HeaderMap,
    p: &Package,
    recipients: &[Recipient],
) {
    let base = origin(state, headers).await;
    let ids: Vec<i64> = recipients.iter().map(|r| r.user_id).collect();
    let emails = state
        .db(move |s| {
            let mut out = Vec::new();
            for id in ids {
                out.extend(s.web_account(id)?.map(|a| a.email).filter(|e| !e.trim().is_empty()));
            }
            Ok(out)
        })
        .await;
    let emails = match emails {
        Ok(e) => e,
        Err(e) => return tracing::warn!(target: "haul::notify", "notifications not sent: {e:?}"),
    };
    for to in emails {
        let body = format!(
            "{} sent you a package: {}\n\n{}\n\nOpen it: {base}/packages/{}\n",
            p.sender, p.title, p.note, p.id
        );
        spawn_send(
            state,
            Mail { to, subject: format!("Package from {}: {}", p.sender, p.title), body },
        );
    }
}

/// To an external recipient: their link.
pub async fn link_sent(
    state: &AppState,
    headers: &HeaderMap,
    p: &Package,
    to: &str,
    link_id: &str,
    expires_at_s: i64,
    max_downloads: u32,
) {
    let base = origin(state, headers).await;
    let body = format!(
        "{} sent you a package: {}\n\n{}\n\nDownload it here: {base}/x/{link_id}\n\n\
         The link works until {} and for {max_downloads} download(s) of each file.\n",
        p.sender,
        p.title,
        p.note,
        super::views::when(expires_at_s),
    );
    spawn_send(
        state,
        Mail {
            to: to.to_owned(),
            subject: format!("Package from {}: {}", p.sender, p.title),
            body,
        },
    );
}

/// What an external download's notice names.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub sender_email: String,
    pub recipient: String,
    pub title: String,
    pub file: String,
    pub link_id: i64,
    pub package_id: i64,
    pub max_downloads: Option<u32>,
    pub ip: std::net::IpAddr,
}

/// An external recipient finished download number `n` of a file over HTTPS: write the
/// delivery receipt, audit it and tell the sender.
pub async fn downloaded(state: &AppState, d: Downloaded, n: u64) {
    let (pkg, link, file, now_s) = (d.package_id, d.link_id, d.file.clone(), state.now_s());
    let receipt =
        state.db(move |s| s.record_download(pkg, Downloader::Link(link), &file, Via::Https, now_s));
    if let Err(e) = receipt.await {
        tracing::warn!(target: "haul::web", "receipt for package {pkg} failed: {e:?}");
    }
    let of = d.max_downloads.map_or_else(String::new, |m| format!(" of {m}"));
    let detail = format!("external link {}: download {n}{of} of a file", d.link_id);
    let entry = super::state::Audit {
        actor: None,
        action: "external.download",
        target: d.recipient.clone(),
        outcome: Outcome::Ok,
        ip: d.ip,
        detail,
    };
    if let Err(e) = state.audit(entry).await {
        tracing::warn!(target: "haul::web", "audit of an external download failed: {e:?}");
    }
    if d.sender_email.trim().is_empty() {
        return;
    }
    let body = format!(
        "{} downloaded {} from your package {} (download {n}{of}).\n",
        d.recipient, d.file, d.title
    );
    spawn_send(
        state,
        Mail { to: d.sender_email, subject: format!("Downloaded: {}", d.title), body },
    );
}
