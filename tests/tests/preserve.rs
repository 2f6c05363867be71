//! Owner, extended attributes (a POSIX ACL among them) and setuid/setgid bits (issue 3, "File
//! semantics"): preserved only when the sender asks (`--preserve-owner`, `--preserve-xattrs`)
//! and the receiver allows it with the same flags (setid: `haul recv --keep-setid`, as root);
//! dropped otherwise. The owner and setid parts need root (the test says so and checks the
//! rest when not root); the xattr parts need a filesystem with user xattrs (tmpfs has them).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests: a failure is a test failure")]

use haul_tests::{Receiver, TRANSFER_TIMEOUT, TempDir, keygen, send, stderr, write_file};
use rustix::fs::XattrFlags;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const UID: u32 = 4321;
const GID: u32 = 8765;
const ACL: &str = "system.posix_acl_access";

/// A POSIX ACL in the kernel's xattr form: version 2, then (tag u16, perm u16, id u32)
/// entries sorted by tag: owner rwx, user 4321 r, group r-x, mask r-x, other r-x.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 4, UID),
        (0x04, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The source: one setuid file owned by UID:GID (when root) with a user xattr and an ACL
/// (when the filesystem takes them). Returns it and whether the ACL was set.
fn source(dir: &TempDir) -> (PathBuf, bool) {
    let src = dir.join("src/tool");
    write_file(&src, 70_000, 9, 0o755);
    if is_root() {
        std::os::unix::fs::chown(&src, Some(UID), Some(GID)).unwrap();
    }
    // After chown, which clears setuid.
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::setxattr(&src, "user.haul.note", b"kept", XattrFlags::empty())
        .expect("user xattrs on the test directory's filesystem");
    let acl = rustix::fs::setxattr(&src, ACL, &acl_bytes(), XattrFlags::empty()).is_ok();
    if !acl {
        println!("note: this filesystem takes no POSIX ACL; the ACL part is skipped");
    }
    (src, acl)
}

fn transfer(dir: &TempDir, src: &Path, recv_flags: &[&str], send_flags: &[&str]) -> PathBuf {
    let key = keygen(dir, "key");
    let dest = dir.join("dest");
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, recv_flags);
    let out = send(&recv.addr, &key, &[src.to_path_buf()], send_flags);
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(out.status.success(), "send: {}", stderr(&out));
    assert!(r.status.success(), "recv: {}", stderr(&r));
    dest.join("tool")
}

#[test]
fn owner_xattrs_acl_and_setid_are_kept_when_both_ends_ask() {
    let dir = TempDir::new("preserve");
    let (src, acl) = source(&dir);
    let both = ["--preserve-owner", "--preserve-xattrs"];
    let got = transfer(&dir, &src, &[&both[..], &["--keep-setid"]].concat(), &both);
    let meta = std::fs::metadata(&got).unwrap();
    assert_eq!(xattr(&got, "user.haul.note").as_deref(), Some(&b"kept"[..]));
    if acl {
        assert_eq!(xattr(&got, ACL), Some(acl_bytes()), "the ACL arrives");
    }
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (UID, GID), "owner kept");
        assert_eq!(meta.mode() & 0o7777, 0o4755, "root asked to keep setuid");
    } else {
        println!("note: not root; owner and setid parts skipped");
    }
}

#[test]
fn nothing_extra_is_kept_unless_the_receiver_allows_it() {
    let dir = TempDir::new("no-preserve");
    let (src, _) = source(&dir);
    // The sender asks; the receiver does not allow.
    let got = transfer(&dir, &src, &[], &["--preserve-owner", "--preserve-xattrs"]);
    let meta = std::fs::metadata(&got).unwrap();
    assert_eq!(xattr(&got, "user.haul.note"), None, "xattr not applied");
    assert_eq!(xattr(&got, ACL), None, "ACL not applied");
    assert_eq!(meta.mode() & 0o7777, 0o755, "setuid dropped");
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw(), "owned by the receiver");
}

#[test]
fn keep_setid_is_refused_on_send() {
    let dir = TempDir::new("setid-send");
    let (src, _) = source(&dir);
    let key = keygen(&dir, "key");
    let out = send("127.0.0.1:9", &key, &[src], &["--keep-setid"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--keep-setid"), "{}", stderr(&out));
}
