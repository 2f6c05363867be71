//! The sender's side of preserving extended attributes (POSIX ACLs are the `system.posix_acl_*`
//! attributes, so they come along): read a source file's attributes, within the limits the
//! set-up channel carries.
//!
//! Invariants: a source symlink is never followed (`llistxattr`/`lgetxattr`; the walk only
//! yields regular files anyway); at most [`MAX_XATTRS`] attributes per file, names of at most
//! [`MAX_XATTR_NAME_LEN`] bytes and values of at most [`MAX_XATTR_VALUE_BYTES`]; anything
//! beyond, or a name that is not UTF-8, is left out and named in the returned notes. The
//! receiver's side is `partial::set_xattrs` (applied at finalize, only when permitted).

use super::error::{FileError, Op};
use super::partial::{MAX_XATTR_VALUE_BYTES, MAX_XATTRS};
use rustix::io::Errno;
use std::path::Path;

/// Longest attribute name (Linux XATTR_NAME_MAX).
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// Largest list of attribute names the kernel returns (Linux XATTR_LIST_MAX).
const LIST_BYTES: usize = 65_536;

/// A source file's extended attributes, and the names left out (with why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceXattrs {
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub left_out: Vec<String>,
}

/// Reads every extended attribute of `path` (not following a symlink). A filesystem without
/// xattrs gives an empty list.
pub fn read_xattrs(path: &Path) -> Result<SourceXattrs, FileError> {
    let file = path.display().to_string();
    let mut names = vec![0u8; LIST_BYTES];
    let len = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::OPNOTSUPP) => 0,
        Err(e) => return Err(FileError::io(file, Op::GetXattr, e)),
    };
    let mut out = SourceXattrs::default();
    let mut value = vec![0u8; MAX_XATTR_VALUE_BYTES];
    for raw in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            out.left_out.push(format!("{} (not UTF-8)", String::from_utf8_lossy(raw)));
            continue;
        };
        if out.xattrs.len() >= MAX_XATTRS || name.len() > MAX_XATTR_NAME_LEN {
            out.left_out.push(format!("{name} (over the limits)"));
            continue;
        }
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => out.xattrs.push((name.to_owned(), value[..n].to_vec())),
            // Removed since the listing: nothing to preserve.
            Err(Errno::NODATA) => {}
            Err(Errno::RANGE) => out.left_out.push(format!("{name} (value over 64 KiB)")),
            Err(e) => return Err(FileError::io(file, Op::GetXattr, e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_attributes_where_the_filesystem_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let set = rustix::fs::setxattr(&p, "user.haul", b"v1", rustix::fs::XattrFlags::empty());
        let got = read_xattrs(&p).unwrap();
        if set.is_ok() {
            assert!(got.xattrs.contains(&("user.haul".to_owned(), b"v1".to_vec())), "{got:?}");
        }
        assert!(got.left_out.is_empty());
    }
}
