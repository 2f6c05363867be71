//! The first admin account, created on first start.
//!
//! Invariants:
//! - Created only when no console admin exists. Its one-time password is written to
//!   `DATA_DIR/initial-admin-password`, created exclusively with mode 0600 (a stale file from an
//!   earlier store is replaced), and never printed or logged; the caller learns only the path.
//! - The account must change its password at first sign-in; the file is removed once it has.

use std::path::{Path, PathBuf};

use super::WebError;
use super::password;
use super::tls::write_new;
use crate::store::Store;
use crate::store::web::NewWebAccount;
use crate::store::web_audit::{AuditRecord, Outcome};
use crate::users::{UserChange, UserName};

/// The file the first admin's one-time password is written to.
pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";
/// The first admin's user name.
pub const FIRST_ADMIN_NAME: &str = "admin";

/// Creates the first admin if there is none; returns the password file's path if it did.
pub fn ensure(store: &Store, data_dir: &Path, now_s: i64) -> Result<Option<PathBuf>, WebError> {
    if store.web_admin_count()? > 0 {
        return Ok(None);
    }
    let name = UserName::parse(FIRST_ADMIN_NAME).map_err(|e| WebError::Internal(e.to_string()))?;
    let user = match store.user(FIRST_ADMIN_NAME)? {
        Some(u) => u,
        None => {
            let change = UserChange {
                may_send_external: Some(true),
                may_forward: Some(true),
                ..UserChange::default()
            };
            store.create_user(&name, &change, now_s)?
        }
    };
    let pw = password::one_time_password().map_err(|e| WebError::Internal(e.to_string()))?;
    let hash = password::hash_password(&pw).map_err(|e| WebError::Internal(e.to_string()))?;
    let path = data_dir.join(INITIAL_ADMIN_PASSWORD_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(WebError::Io { path: path.display().to_string(), source }),
    }
    write_new(&path, format!("{pw}\n").as_bytes(), 0o600)?;
    let account = NewWebAccount {
        user_id: user.id,
        password_hash: &hash,
        is_admin: true,
        must_change_password: true,
        email: "",
        full_name: "Administrator",
    };
    store.put_web_account(&account, now_s)?;
    store.audit(&AuditRecord {
        at_s: now_s,
        actor: None,
        action: "admin.first_created",
        target: FIRST_ADMIN_NAME,
        outcome: Outcome::Ok,
        ip: "",
        detail: "one-time password written to the data directory",
    })?;
    Ok(Some(path))
}

/// Removes the one-time password file (after the first admin chose a password).
pub fn forget(data_dir: &Path) {
    // Absent is fine: it was removed already, or this admin was not the first.
    let _ = std::fs::remove_file(data_dir.join(INITIAL_ADMIN_PASSWORD_FILE));
}
