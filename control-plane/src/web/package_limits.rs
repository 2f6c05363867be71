//! Users' packages' limits: expiry, downloads per recipient and file, delete-after-download.
//! The sender picks them on the new-package form within the admin maxima; they are enforced by
//! the console (no download URL or link once refused), the HTTPS fallback (410) and the gate's
//! ledger (`expired` / `download-limit`); a sweeper removes the files for good.
//!
//! Invariants:
//! - A recipient's download of a file is refused once the package expired, its files were
//!   removed, or the recipient has `max_downloads` completed downloads (delivery receipts, any
//!   path) of that file. Downloads already running when the count is reached may finish.
//! - The sweeper removes a sent package's files (the sender's outbox and every recipient's
//!   inbox copy) when it has expired, or, with delete-after-download, once every recipient has
//!   a receipt for every file and no external link of it can still be used. It looks at most
//!   `store::package_limits::MAX_SWEEP` packages per pass, every [`SWEEP_INTERVAL`].

use std::path::Path;
use std::time::Duration;

use super::package_files::{INBOX_DIR, OUTBOX_DIR, list_files};
use super::state::AppState;
use crate::store::package_limits::{PackageLimits, SweepCandidate};
use crate::store::web_audit::{AuditRecord, Outcome};
use crate::store::web_settings::WebSettings;
use crate::store::{Store, StoreError};
use crate::users::{UserName, storage_root};

/// Time between two sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Seconds in a day (expiry is given in days).
const DAY_S: i64 = 86_400;

/// Why a recipient may not download a file now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Expired,
    Removed,
    UsedUp,
}

impl Refused {
    /// The sentence the pages show.
    pub const fn message(self) -> &'static str {
        match self {
            Refused::Expired => "This package has expired.",
            Refused::Removed => "This package's files have been removed.",
            Refused::UsedUp => "You have downloaded this file as many times as the sender allows.",
        }
    }
}

/// Whether a recipient with `done` completed downloads of a file may download it again.
pub fn check(l: &PackageLimits, now_s: i64, done: u32) -> Result<(), Refused> {
    if l.files_removed_at_s.is_some() {
        return Err(Refused::Removed);
    }
    if l.is_expired(now_s) {
        return Err(Refused::Expired);
    }
    if l.max_downloads.is_some_and(|m| done >= m) {
        return Err(Refused::UsedUp);
    }
    Ok(())
}

/// The new-package form's limits: days until expiry and downloads (empty: none), and the
/// delete-after-download box; checked against the admin maxima.
pub fn parse(
    expires_days: &str,
    downloads: &str,
    delete_after_download: bool,
    settings: &WebSettings,
    now_s: i64,
) -> Result<PackageLimits, String> {
    let num =
        |v: &str, what: &str, max: u32| -> Result<Option<u32>, String> {
            match v.trim() {
                "" => Ok(None),
                v => v.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).map(Some).ok_or_else(
                    || format!("{what} must be a whole number from 1 to {max}, or empty."),
                ),
            }
        };
    let days = num(expires_days, "Expires after (days)", settings.package_expiry_max_days)?;
    let max_downloads = num(downloads, "Downloads per file", settings.package_downloads_max)?;
    Ok(PackageLimits {
        expires_at_s: days.map(|d| now_s.saturating_add(i64::from(d) * DAY_S)),
        max_downloads,
        delete_after_download,
        files_removed_at_s: None,
    })
}

/// Runs [`sweep_once`] every [`SWEEP_INTERVAL`] until the task is aborted.
pub async fn run(state: AppState) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let (store, dir, now_s) =
            (state.store.clone(), state.config.data_dir.clone(), state.now_s());
        match tokio::task::spawn_blocking(move || sweep_once(&store, &dir, now_s)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(target: "haul::web", "package sweep: {e}"),
            Err(e) => tracing::warn!(target: "haul::web", "package sweep task: {e}"),
        }
    }
}

/// One sweep at `now_s`: removes the files of every package due; returns how many.
pub fn sweep_once(store: &Store, data_dir: &Path, now_s: i64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for c in store.sweep_candidates(now_s)? {
        let Ok(sender) = UserName::parse(&c.sender) else { continue };
        let outbox = storage_root(data_dir, &sender).join(OUTBOX_DIR).join(&c.public_id);
        let expired = c.limits.is_expired(now_s);
        if !expired && !is_fully_delivered(store, &c, &outbox, now_s)? {
            continue;
        }
        let mut dirs = vec![outbox];
        for r in store.package_recipients(c.package_id)? {
            if let Ok(name) = UserName::parse(&r.name) {
                dirs.push(storage_root(data_dir, &name).join(INBOX_DIR).join(&c.public_id));
            }
        }
        let mut failed = false;
        for d in &dirs {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(target: "haul::web", "package {}: removing files: {e}", c.package_id);
                    failed = true;
                }
            }
        }
        if failed {
            continue;
        }
        store.mark_files_removed(c.package_id, now_s)?;
        let why = if expired { "expired" } else { "delivered (delete after download)" };
        store.audit(&AuditRecord {
            at_s: now_s,
            actor: None,
            action: "package.files_removed",
            target: &format!("package {}", c.package_id),
            outcome: Outcome::Ok,
            ip: "",
            detail: why,
        })?;
        removed += 1;
    }
    Ok(removed)
}

/// Delete-after-download: every recipient has every file, and no external link is still live.
fn is_fully_delivered(
    store: &Store,
    c: &SweepCandidate,
    outbox: &Path,
    now_s: i64,
) -> Result<bool, StoreError> {
    let files = match list_files(outbox) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(target: "haul::web", "package {}: listing files: {e}", c.package_id);
            return Ok(false);
        }
    };
    if files.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    if !store.all_recipients_downloaded(c.package_id, &names)? {
        return Ok(false);
    }
    for link in store.external_links(c.package_id)? {
        if link.expires_at_s.is_some_and(|e| now_s >= e) {
            continue;
        }
        let Some(max) = link.max_downloads else { return Ok(false) };
        for f in &files {
            if store.link_bytes(link.id, &f.name)?.sent < u64::from(max).saturating_mul(f.size) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
