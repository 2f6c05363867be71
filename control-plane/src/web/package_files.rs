//! Where a package's files live, and delivery to recipients; plus the package check the
//! transfer gate asks before it lets a token naming a package through.
//!
//! Layout (all under the data directory, each user's part inside their own storage root, so
//! transfer tokens stay confined to their user's root):
//! - the sender uploads into `storage/SENDER/outbox/PUBLIC_ID/`;
//! - sending hard-links each file into `storage/RECIPIENT/inbox/PUBLIC_ID/`.
//!
//! Invariants:
//! - Only regular files directly inside the outbox directory are delivered; symlinks,
//!   directories and anything else are skipped, and at most [`MAX_PACKAGE_FILES`] are listed.
//! - Hard links share the sender's bytes (no copy); after sending, the package check refuses
//!   further uploads into the package, so the delivered content cannot change under the
//!   recipients through Haul.
//! - The package check admits an upload only by the sender into a draft, and a download only by
//!   a recipient of a sent package.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::authorize::PackageCheck;
use crate::authz::{Direction, Refusal, RefusalCode};
use crate::store::Store;
use crate::users::{User, UserName, create_storage_root, storage_root};

/// Most files one package holds.
pub const MAX_PACKAGE_FILES: usize = 1000;
pub const OUTBOX_DIR: &str = "outbox";
pub const INBOX_DIR: &str = "inbox";

/// A file of a package, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageFile {
    pub name: String,
    pub size: u64,
}

/// The token path (relative to the user's storage root) of a package's outbox.
pub fn outbox_path(public_id: &str) -> String {
    format!("{OUTBOX_DIR}/{public_id}")
}

/// The token path of a delivered file in a recipient's inbox.
pub fn inbox_file_path(public_id: &str, file: &str) -> String {
    format!("{INBOX_DIR}/{public_id}/{file}")
}

/// Creates the sender's storage root and the package's empty outbox (0700).
pub fn create_outbox(
    data_dir: &Path,
    sender: &UserName,
    public_id: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let root = create_storage_root(data_dir, sender)?;
    let outbox = root.join(OUTBOX_DIR);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&outbox)?;
    let dir = outbox.join(public_id);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The regular files directly inside `dir`, by name (absent directory: none).
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PackageFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries.take(MAX_PACKAGE_FILES * 2) {
        let entry = entry?;
        let meta = std::fs::symlink_metadata(entry.path())?;
        // Partial files of a transfer still running are not package content.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if meta.file_type().is_file() && !name.starts_with('.') && files.len() < MAX_PACKAGE_FILES {
            files.push(PackageFile { name, size: meta.len() });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The files uploaded to a package so far.
pub fn outbox_files(
    data_dir: &Path,
    sender: &UserName,
    public_id: &str,
) -> std::io::Result<Vec<PackageFile>> {
    list_files(&storage_root(data_dir, sender).join(OUTBOX_DIR).join(public_id))
}

/// The files delivered to a recipient.
pub fn inbox_files(
    data_dir: &Path,
    recipient: &UserName,
    public_id: &str,
) -> std::io::Result<Vec<PackageFile>> {
    list_files(&storage_root(data_dir, recipient).join(INBOX_DIR).join(public_id))
}

/// Hard-links every outbox file into each recipient's inbox.
pub fn deliver(
    data_dir: &Path,
    sender: &UserName,
    public_id: &str,
    recipients: &[UserName],
) -> std::io::Result<usize> {
    use std::os::unix::fs::DirBuilderExt;
    let src = storage_root(data_dir, sender).join(OUTBOX_DIR).join(public_id);
    let files = list_files(&src)?;
    for r in recipients {
        let inbox = create_storage_root(data_dir, r)?.join(INBOX_DIR);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&inbox)?;
        let dst = inbox.join(public_id);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dst)?;
        for f in &files {
            match std::fs::hard_link(src.join(&f.name), dst.join(&f.name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(files.len())
}

/// The gate's package check over the store (install with `TokenAuthorizer::with_packages`).
#[derive(Debug)]
pub struct StorePackages {
    pub store: Arc<Store>,
}

/// The package id a token minted from an external link's page carries: the link's row id,
/// which the package check resolves to the link (live) and its package (sent, by this sender).
pub fn link_token_package_id(link_id: i64) -> String {
    format!("{LINK_PREFIX}{link_id}")
}

const LINK_PREFIX: &str = "link-";

impl StorePackages {
    /// A link token: downloads only, of an existing link of a sent package of `user` (the
    /// sender). The link's expiry and limit are the gate ledger's to check (`gate_ledger`).
    fn check_link(&self, raw_id: &str, user: &User, direction: Direction) -> Result<(), Refusal> {
        let refuse = |code, detail: &str| Err(Refusal { code, detail: detail.to_owned() });
        let Ok(link_id) = raw_id.parse::<i64>() else {
            return refuse(RefusalCode::PackageGone, "malformed link package id");
        };
        if direction != Direction::Download {
            return refuse(RefusalCode::WrongDirection, "a link token only downloads");
        }
        let link = match self.store.external_link_by_id(link_id) {
            Ok(Some(l)) => l,
            Ok(None) => return refuse(RefusalCode::PackageGone, "no such external link"),
            Err(e) => return refuse(RefusalCode::PackageGone, &format!("link store: {e}")),
        };
        match self.store.package_for(link.package_id, user.id) {
            Ok(Some(p)) if p.sender_id == user.id && p.sent_at_s.is_some() => Ok(()),
            Ok(_) => refuse(RefusalCode::NotEntitled, "the link's package is not this sender's"),
            Err(e) => refuse(RefusalCode::PackageGone, &format!("package store: {e}")),
        }
    }
}

impl PackageCheck for StorePackages {
    fn check(&self, package_id: &str, user: &User, direction: Direction) -> Result<(), Refusal> {
        if let Some(link) = package_id.strip_prefix(LINK_PREFIX) {
            return self.check_link(link, user, direction);
        }
        let refuse = |code, detail: &str| Err(Refusal { code, detail: detail.to_owned() });
        let pkg = match self.store.package_by_public_id(package_id) {
            Ok(Some(p)) => p,
            Ok(None) => return refuse(RefusalCode::PackageGone, "no such package"),
            Err(e) => return refuse(RefusalCode::PackageGone, &format!("package store: {e}")),
        };
        match direction {
            Direction::Upload if pkg.sender_id == user.id && pkg.sent_at_s.is_none() => Ok(()),
            Direction::Upload => {
                refuse(RefusalCode::NotEntitled, "uploads go only into the sender's unsent package")
            }
            Direction::Download if pkg.sent_at_s.is_some() => match self
                .store
                .is_package_recipient(pkg.id, user.id)
            {
                Ok(true) => Ok(()),
                Ok(false) => refuse(RefusalCode::NotEntitled, "not a recipient of this package"),
                Err(e) => refuse(RefusalCode::PackageGone, &format!("package store: {e}")),
            },
            Direction::Download => {
                refuse(RefusalCode::NotEntitled, "the package has not been sent")
            }
        }
    }
}
