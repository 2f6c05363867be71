//! The gate's ledger: an [`Authorizer`] around the token authorizer that audits every token
//! the gate is shown, charges external links' byte accounting for `haul get`, and writes
//! delivery receipts and download mail for transfers through the gate.
//!
//! Invariants:
//! - For a token the console minted from an external link's page (`minted_tokens.link_id`),
//!   the grant reserves each file's full size in the link's accounting
//!   ([`Store::reserve_link_bytes`], the same reservation as the HTTPS path) before a byte is
//!   sent, and is refused with `download-limit` when that would pass `max_downloads x size`.
//!   When the transfer ends the bytes the gate reports as sent become "sent" and the rest is
//!   freed; bytes the gate cannot report (it failed before its report) are charged in full.
//!   So haul, HTTPS and Range requests together never copy more than the limit allows.
//! - A recipient's download of a user package is refused once the package's limits say so
//!   (`super::package_limits`: `expired`, `package-gone` after the sweeper, `download-limit`).
//! - The session's bytes are charged to the grant's files in order, each at most its
//!   reservation: exact for one file; for several, the total is exact.
//! - Audit entries name the user, the package and the link by row id and the refusal code:
//!   never a token, a token id or a link id.
//! - A link token is refused `expired` once its link has expired (the ledger's clock).
//! - Every hold is settled by [`Authorizer::on_bytes_sent`], which the gate calls for each
//!   granted download just before `finish`.
//! - At most [`MAX_HELD`] grants are held at once; beyond that a link grant is refused `in-use`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::authorize::system_now_s;
use crate::authz::{Authorizer, Direction, Grant, Outcome, Refusal, RefusalCode, TransferAsk};
use crate::notify::{Mail, spawn_send_with};
use crate::store::Store;
use crate::store::deliveries::{Downloader, MintedFor, Via};
use crate::store::external::Reservation;
use crate::store::web_audit::{AuditRecord, Outcome as AuditOutcome};

use super::package_files::{PackageFile, list_files};
use super::package_limits::{self, Refused};

/// Most grants the ledger holds at once (the gate's own transfer limit is far lower).
pub const MAX_HELD: usize = 4096;

/// What one grant holds until it ends.
#[derive(Debug)]
struct Held {
    minted: MintedFor,
    client_ip: IpAddr,
    /// Files with their sizes; for a link grant each has its size reserved.
    files: Vec<PackageFile>,
    max_downloads: Option<u32>,
}

/// The ledger around `inner`.
pub struct GateLedger<A> {
    inner: A,
    store: Arc<Store>,
    data_dir: PathBuf,
    rt: Option<tokio::runtime::Handle>,
    held: Mutex<HashMap<[u8; 16], Vec<Held>>>,
    clock: Clock,
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

impl<A> std::fmt::Debug for GateLedger<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateLedger").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

fn refusal(code: RefusalCode, detail: impl Into<String>) -> Refusal {
    Refusal { code, detail: detail.into() }
}

/// The files a grant may read, with their sizes (a path is one file or a package directory).
fn grant_files(grant: &Grant) -> std::io::Result<Vec<PackageFile>> {
    let mut out = Vec::new();
    for p in &grant.paths {
        let full = grant.root.join(p);
        let meta = std::fs::symlink_metadata(&full)?;
        if meta.is_file() {
            let name = Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned());
            out.push(PackageFile { name: name.unwrap_or_default(), size: meta.len() });
        } else {
            out.extend(list_files(&full)?);
        }
    }
    Ok(out)
}

impl<A: Authorizer> GateLedger<A> {
    /// Wraps `inner`; mail goes out on the runtime current at this call, if there is one.
    pub fn new(inner: A, store: Arc<Store>, data_dir: &Path) -> Self {
        GateLedger {
            inner,
            store,
            data_dir: data_dir.to_owned(),
            rt: tokio::runtime::Handle::try_current().ok(),
            held: Mutex::new(HashMap::new()),
            clock: Arc::new(system_now_s),
        }
    }

    /// Uses `clock` (unix seconds) instead of the system clock, as the authorizer does in tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Vec<Held>>> {
        // Held entries are plain data; a panic elsewhere cannot leave one half-written.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        target: &str,
        ok: bool,
        ip: IpAddr,
        detail: &str,
    ) {
        let outcome = if ok { AuditOutcome::Ok } else { AuditOutcome::Refused };
        let rec = AuditRecord {
            at_s: (self.clock)(),
            actor,
            action,
            target,
            outcome,
            ip: &ip.to_string(),
            detail,
        };
        if let Err(e) = self.store.audit(&rec) {
            tracing::warn!(target: "haul::gate", "audit of {action} failed: {e}");
        }
    }

    /// Reserves every file of a link grant; all or nothing.
    fn reserve_link(
        &self,
        link_id: i64,
        files: &[PackageFile],
        max: Option<u32>,
    ) -> Result<(), Refusal> {
        for (i, f) in files.iter().enumerate() {
            let got = self.store.reserve_link_bytes(link_id, &f.name, f.size, f.size, max);
            let why = match got {
                Ok(Reservation::Granted) => continue,
                Ok(Reservation::OverLimit) => refusal(
                    RefusalCode::DownloadLimit,
                    format!("external link {link_id}: {} would pass its download limit", f.name),
                ),
                Err(e) => refusal(RefusalCode::PackageGone, format!("link accounting: {e}")),
            };
            for done in &files[..i] {
                let _ = self.store.finish_link_bytes(link_id, &done.name, done.size, 0);
            }
            return Err(why);
        }
        Ok(())
    }

    /// After the inner grant: what the console minted the token for, and the link's hold.
    fn hold(&self, grant: &Grant, client_ip: IpAddr) -> Result<Option<Held>, Refusal> {
        let minted = match self.store.minted_token(&grant.token_id) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) => return Err(refusal(RefusalCode::PackageGone, format!("store: {e}"))),
        };
        if grant.direction != Direction::Download {
            return Ok(None);
        }
        let files = grant_files(grant)
            .map_err(|e| refusal(RefusalCode::PackageGone, format!("package files: {e}")))?;
        let mut max_downloads = None;
        if minted.link_id.is_none() {
            self.check_package_limits(&minted, &files)?;
        }
        if let Some(link_id) = minted.link_id {
            let link = self
                .store
                .external_link_by_id(link_id)
                .map_err(|e| refusal(RefusalCode::PackageGone, format!("store: {e}")))?;
            let link = link.ok_or_else(|| refusal(RefusalCode::PackageGone, "link deleted"))?;
            if link.expires_at_s.is_some_and(|e| (self.clock)() >= e) {
                return Err(refusal(RefusalCode::Expired, "the external link has expired"));
            }
            if self.held().len() >= MAX_HELD {
                return Err(refusal(RefusalCode::InUse, "too many transfers held"));
            }
            max_downloads = link.max_downloads;
            self.reserve_link(link_id, &files, max_downloads)?;
        }
        Ok(Some(Held { minted, client_ip, files, max_downloads }))
    }

    /// A recipient's download of a user package: the package's limits (expiry, removed files,
    /// downloads per file).
    fn check_package_limits(&self, m: &MintedFor, files: &[PackageFile]) -> Result<(), Refusal> {
        let store_err =
            |e: crate::store::StoreError| refusal(RefusalCode::PackageGone, format!("store: {e}"));
        let limits = self.store.package_limits(m.package_id).map_err(store_err)?;
        for f in files {
            let done = self
                .store
                .user_download_count(m.package_id, m.user_id, &f.name)
                .map_err(store_err)?;
            let code = match package_limits::check(&limits, (self.clock)(), done) {
                Ok(()) => continue,
                Err(Refused::Expired) => RefusalCode::Expired,
                Err(Refused::Removed) => RefusalCode::PackageGone,
                Err(Refused::UsedUp) => RefusalCode::DownloadLimit,
            };
            return Err(refusal(code, format!("package {}: {}", m.package_id, f.name)));
        }
        Ok(())
    }

    /// Charges `sent` (`None`: everything held) to a finished grant's files.
    fn settle(&self, grant: &Grant, h: Held, outcome: Outcome, sent: Option<u64>) {
        let mut left = sent.unwrap_or(u64::MAX);
        for f in &h.files {
            let part = left.min(f.size);
            left -= part;
            match h.minted.link_id {
                Some(link_id) => self.settle_link_file(&h, link_id, f, part),
                None if outcome == Outcome::Complete => {
                    self.on_downloaded(
                        &h,
                        Downloader::User(h.minted.user_id),
                        &f.name,
                        &grant.user,
                    );
                }
                None => {}
            }
        }
    }

    fn settle_link_file(&self, h: &Held, link_id: i64, f: &PackageFile, part: u64) {
        match self.store.finish_link_bytes(link_id, &f.name, f.size, part) {
            Ok((before, after)) => {
                let (b, a) = (before.checked_div(f.size), after.checked_div(f.size));
                if a > b {
                    self.on_downloaded(h, Downloader::Link(link_id), &f.name, "");
                }
            }
            Err(e) => {
                tracing::warn!(target: "haul::gate", "external link {link_id}: accounting failed: {e}");
            }
        }
    }

    /// A completed download of one file through the gate: receipt, audit, mail to the sender.
    fn on_downloaded(&self, h: &Held, who: Downloader, file: &str, user: &str) {
        let now_s = (self.clock)();
        let pkg = h.minted.package_id;
        if let Err(e) = self.store.record_download(pkg, who, file, Via::Haul, now_s) {
            tracing::warn!(target: "haul::gate", "receipt for package {pkg} failed: {e}");
        }
        let (actor, target, detail) = match who {
            Downloader::User(_) => (Some(user), format!("package {pkg}"), "via=haul".to_owned()),
            Downloader::Link(l) => {
                let of =
                    h.max_downloads.map_or_else(String::new, |m| format!(" max_downloads={m}"));
                (None, format!("package {pkg}"), format!("via=haul external_link={l}{of}"))
            }
        };
        self.audit(actor, "package.download", &target, true, h.client_ip, &detail);
        self.mail_sender(pkg, who, file);
    }

    fn mail_sender(&self, package_id: i64, who: Downloader, file: &str) {
        let Some(rt) = &self.rt else { return };
        let found = self.store.download_notice(package_id, who);
        let (to, title, by) = match found {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => return tracing::warn!(target: "haul::notify", "download mail: {e}"),
        };
        if to.trim().is_empty() {
            return;
        }
        let mail = Mail {
            to,
            subject: format!("Downloaded: {title}"),
            body: format!("{by} downloaded {file} from your package {title} (with haul).\n"),
        };
        spawn_send_with(rt, self.store.clone(), self.data_dir.clone(), mail);
    }

    fn take_held(&self, token_id: &[u8; 16]) -> Option<Held> {
        let mut held = self.held();
        let list = held.get_mut(token_id)?;
        let h = list.pop();
        if list.is_empty() {
            held.remove(token_id);
        }
        h
    }
}

impl<A: Authorizer> Authorizer for GateLedger<A> {
    fn authorize(&self, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let ip = ask.client_ip;
        let grant = match self.inner.authorize(ask) {
            Ok(g) => g,
            Err(r) => {
                let detail = format!("direction={} code={}", ask.direction.name(), r.code.code());
                self.audit(None, "token.refused", "transfer", false, ip, &detail);
                return Err(r);
            }
        };
        let held = match self.hold(&grant, ip) {
            Ok(h) => h,
            Err(r) => {
                self.inner.finish(&grant, Outcome::Interrupted);
                let detail = format!("direction={} code={}", ask.direction.name(), r.code.code());
                self.audit(Some(&grant.user), "token.refused", "transfer", false, ip, &detail);
                return Err(r);
            }
        };
        let mut detail = format!("direction={}", grant.direction.name());
        if let Some(h) = &held {
            detail.push_str(&format!(" package={}", h.minted.package_id));
            if let Some(l) = h.minted.link_id {
                detail.push_str(&format!(" external_link={l}"));
            }
        }
        self.audit(Some(&grant.user), "token.use", "transfer", true, ip, &detail);
        if let Some(h) = held {
            self.held().entry(grant.token_id).or_default().push(h);
        }
        Ok(grant)
    }

    fn on_bytes_sent(&self, grant: &Grant, outcome: Outcome, sent_bytes: Option<u64>) {
        if let Some(h) = self.take_held(&grant.token_id) {
            self.settle(grant, h, outcome, sent_bytes);
        }
        self.inner.on_bytes_sent(grant, outcome, sent_bytes);
    }

    fn finish(&self, grant: &Grant, outcome: Outcome) {
        // Settling happened in `on_bytes_sent`, which the gate calls for every download before
        // this (grants of one token are not told apart here, so settling again could charge
        // another running grant's hold). A hold never settled stays reserved: that errs on the
        // side of copying less, never more.
        self.inner.finish(grant, outcome);
    }

    fn is_user_key(&self, user: &str, openssh_public_key: &str) -> bool {
        self.inner.is_user_key(user, openssh_public_key)
    }

    fn authorize_user(&self, user: &str, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        self.inner.authorize_user(user, ask)
    }

    fn record_partial(&self, grant: &Grant, path: &str, partial_bytes: u64) {
        self.inner.record_partial(grant, path, partial_bytes);
    }

    fn resume_partial_bytes(&self, grant: &Grant, path: &str) -> Option<u64> {
        self.inner.resume_partial_bytes(grant, path)
    }
}
