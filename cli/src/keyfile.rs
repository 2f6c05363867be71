//! Direct mode's key file: 64 hex digits and a newline, mode 0600 (docs/CLI.md, "keygen").
//!
//! Invariants: a new key file is created with O_EXCL and mode 0600 in one step (no window in
//! which it is readable by others); a key file that group or other can read is refused, as is
//! anything but exactly 32 bytes of hex. The key never reaches a log or an error message.

use anyhow::{Context, Result, bail};
use haul_proto::setup::Psk;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Write a fresh key from the OS CSPRNG to `path`. Refuses an existing file unless `force`.
pub fn keygen(path: &Path, force: bool) -> Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).context("reading the OS random generator")?;
    let key = Psk::new(bytes);
    bytes.fill(0);
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| match path.exists() {
            true => format!("{} exists (use --force to replace it)", path.display()),
            false => format!("creating {}", path.display()),
        })?;
    // The umask may have cleared bits of 0600 but never adds any; set it exactly anyway.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    f.write_all(key.to_hex().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Read a key file, refusing one that group or other can read.
pub fn read_key(path: &Path) -> Result<Psk> {
    let meta = std::fs::metadata(path).with_context(|| format!("key file {}", path.display()))?;
    if !meta.is_file() {
        bail!("key file {} is not a regular file", path.display());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key file {} is readable by group or others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    if meta.len() > 66 {
        bail!("key file {} is not a haul key (64 hex digits and a newline)", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Psk::from_hex(&text).with_context(|| format!("key file {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("haul-keyfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn keygen_writes_0600_and_refuses_to_overwrite() {
        let p = temp("a");
        keygen(&p, false).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let first = std::fs::read_to_string(&p).unwrap();
        assert_eq!(first.len(), 65);
        assert!(read_key(&p).is_ok());
        let e = keygen(&p, false).unwrap_err();
        assert!(format!("{e:#}").contains("--force"), "{e:#}");
        keygen(&p, true).unwrap();
        assert_ne!(std::fs::read_to_string(&p).unwrap(), first, "a fresh key");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn readable_or_malformed_key_files_are_refused() {
        let p = temp("b");
        keygen(&p, false).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", read_key(&p).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "abcd\n").unwrap();
        assert!(read_key(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
