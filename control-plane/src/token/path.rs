//! Path confinement: a token's allowed paths, the path a client asks for, and the check that
//! it resolves inside the user's storage root.
//!
//! Invariants:
//! - Paths are relative to the storage root and normalized: no leading or trailing `/`, no
//!   `..`, `.` or empty component (haul-io's `SafeName` rules); `""` is the root itself.
//! - An asked path is granted only if it equals, or lies beneath, one of the token's paths
//!   (component-wise: `a/bc` is not beneath `a/b`).
//! - On disk, the path is resolved from an fd of the storage root with openat2
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one call per prefix, so a symlink anywhere in it,
//!   even one pointing inside the root, is refused rather than followed.

use std::os::fd::OwnedFd;
use std::path::Path;

use haul_io::files::SafeName;
use haul_io::files::dest::open_beneath;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use thiserror::Error;

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PathError {
    /// The client's (or minter's) fault: not a confined relative path.
    #[error("{0}")]
    Invalid(String),
    /// The path is valid but outside every path the token allows.
    #[error("not beneath any path the token allows")]
    NotAllowed,
    /// Resolving it met a symlink, or left the root.
    #[error("resolving it meets a symbolic link or leaves the storage root")]
    Escapes,
    /// A component that must be a directory is a file.
    #[error("a component is not a directory")]
    NotADirectory,
    /// It does not exist (downloads only).
    #[error("it does not exist")]
    Missing,
    /// The storage root itself cannot be opened.
    #[error("the storage root {root}: {why}")]
    Root { root: String, why: String },
}

/// Normalizes a path for a token or from a URL: one leading `/` and one trailing `/` are
/// dropped; the rest must be a `SafeName` (or empty: the root).
pub fn normalize_token_path(s: &str) -> Result<String, PathError> {
    let s = s.strip_prefix('/').unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() {
        return Ok(String::new());
    }
    SafeName::parse(s).map(|n| n.as_str().to_owned()).map_err(|e| PathError::Invalid(e.to_string()))
}

/// The asked path, normalized, if it equals or lies beneath one of `allowed`.
pub fn confine(allowed: &[String], asked: &str) -> Result<String, PathError> {
    let asked = normalize_token_path(asked)?;
    let beneath = |a: &String| {
        a.is_empty()
            || asked == *a
            || asked.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('/'))
    };
    if allowed.iter().any(beneath) { Ok(asked) } else { Err(PathError::NotAllowed) }
}

/// Opens the storage root (not following a symlink at its last component).
pub fn open_root(root: &Path) -> Result<OwnedFd, PathError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(root, flags, Mode::empty()).map_err(|e| PathError::Root {
        root: root.display().to_string(),
        why: std::io::Error::from(e).to_string(),
    })
}

/// Resolves `rel` (normalized) beneath `root_fd`, prefix by prefix. With `must_exist`, every
/// component must exist; without (uploads), resolution stops quietly at the first missing
/// component (the data plane creates the rest beneath the root).
pub fn resolve_beneath(root_fd: &OwnedFd, rel: &str, must_exist: bool) -> Result<(), PathError> {
    if rel.is_empty() {
        return Ok(());
    }
    let mut end = 0;
    for component in rel.split('/') {
        end += component.len();
        let prefix = &rel[..end];
        let is_last = end == rel.len();
        end += 1;
        let flags = if is_last { OFlags::PATH } else { OFlags::PATH | OFlags::DIRECTORY };
        match open_beneath(rustix::fd::AsFd::as_fd(root_fd), prefix, flags, 0) {
            Ok(_) => {}
            Err(Errno::NOENT) if !must_exist => return Ok(()),
            Err(Errno::NOENT) => return Err(PathError::Missing),
            Err(Errno::NOTDIR) => return Err(PathError::NotADirectory),
            Err(Errno::LOOP | Errno::XDEV) => return Err(PathError::Escapes),
            Err(e) => {
                return Err(PathError::Root {
                    root: format!("(resolving {prefix:?})"),
                    why: std::io::Error::from(e).to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn normalizes_and_refuses() {
        assert_eq!(normalize_token_path("/").unwrap(), "");
        assert_eq!(normalize_token_path("").unwrap(), "");
        assert_eq!(normalize_token_path("/a/b/").unwrap(), "a/b");
        assert_eq!(normalize_token_path("a").unwrap(), "a");
        for bad in ["//etc/passwd", "/../x", "a/../../b", "a//b", "./a", "a/.", "/a\n"] {
            assert!(normalize_token_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn confines_component_wise() {
        let allowed = vec!["pkg/one".to_owned()];
        assert_eq!(confine(&allowed, "/pkg/one").unwrap(), "pkg/one");
        assert_eq!(confine(&allowed, "/pkg/one/f.bin").unwrap(), "pkg/one/f.bin");
        assert_eq!(confine(&allowed, "/pkg/onex"), Err(PathError::NotAllowed));
        assert_eq!(confine(&allowed, "/pkg"), Err(PathError::NotAllowed));
        assert_eq!(confine(&allowed, "/"), Err(PathError::NotAllowed));
        assert!(matches!(confine(&allowed, "/pkg/one/../two"), Err(PathError::Invalid(_))));
        assert!(matches!(confine(&allowed, "//etc/passwd"), Err(PathError::Invalid(_))));
        assert_eq!(confine(&[String::new()], "/any/thing").unwrap(), "any/thing");
    }

    #[test]
    fn resolves_beneath_and_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/in")).unwrap();
        let fd = open_root(root).unwrap();
        assert_eq!(resolve_beneath(&fd, "a/b/f", true), Ok(()));
        assert_eq!(resolve_beneath(&fd, "a/b/g", true), Err(PathError::Missing));
        assert_eq!(resolve_beneath(&fd, "a/b/g/h", false), Ok(()));
        assert_eq!(resolve_beneath(&fd, "out/passwd", true), Err(PathError::Escapes));
        assert_eq!(resolve_beneath(&fd, "out", false), Err(PathError::Escapes));
        assert_eq!(resolve_beneath(&fd, "a/in/f", true), Err(PathError::Escapes));
        assert_eq!(resolve_beneath(&fd, "a/b/f/x", false), Err(PathError::NotADirectory));
        std::os::unix::fs::symlink(root.join("a"), d.path().join("link")).unwrap();
        assert!(matches!(open_root(&d.path().join("link")), Err(PathError::Root { .. })));
    }
}
