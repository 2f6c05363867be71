//! `--preserve-owner` / `--preserve-xattrs` through the gate (docs/GATE.md, "Owners and
//! extended attributes"), against the release binary: carried for `haul put`, `haul get` and
//! `haul cp` only when the client asks and the server's operator consents (`haul serve
//! --allow-preserve-owner --allow-preserve-xattrs`); dropped otherwise. Mode and mtime are
//! always carried. Setuid/setgid bits never pass the gate. Runs as root (owners need it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gate_common::{Appliance, haul};
use haul_tests::{TempDir, stderr, write_file};
use rustix::fs::XattrFlags;

const UID: u32 = 4321;
const GID: u32 = 8765;
const XATTR: &str = "user.haul.note";
const CONSENT: [&str; 2] = ["--allow-preserve-owner", "--allow-preserve-xattrs"];
const ASK: [&str; 2] = ["--preserve-owner", "--preserve-xattrs"];

fn xattr(path: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, XATTR, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A file owned by UID:GID, mode 0640 plus setuid, an old mtime and a user xattr.
fn source(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join(name);
    write_file(&src, 300_000, 3, 0o640);
    std::os::unix::fs::chown(&src, Some(UID), Some(GID)).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o4640)).unwrap();
    rustix::fs::setxattr(&src, XATTR, b"kept", XattrFlags::empty())
        .expect("user xattrs on the test directory's filesystem");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options().write(true).open(&src).unwrap().set_modified(old).unwrap();
    src
}

/// Mode (without setid) and mtime always arrive; owner and xattr only when `kept`.
fn assert_attrs(got: &Path, src: &Path, kept: bool, what: &str) {
    let (g, s) = (std::fs::metadata(got).unwrap(), std::fs::metadata(src).unwrap());
    assert_eq!(std::fs::read(got).unwrap(), std::fs::read(src).unwrap(), "{what}: content");
    assert_eq!(g.mode() & 0o7777, 0o640, "{what}: mode kept, setuid dropped");
    assert_eq!(g.mtime(), s.mtime(), "{what}: mtime kept");
    if kept {
        assert_eq!((g.uid(), g.gid()), (UID, GID), "{what}: owner kept");
        assert_eq!(xattr(got).as_deref(), Some(&b"kept"[..]), "{what}: xattr kept");
    } else {
        assert_eq!((g.uid(), g.gid()), (0, 0), "{what}: owner not kept");
        assert_eq!(xattr(got), None, "{what}: xattr not kept");
    }
}

fn put(app: &Appliance, src: &Path, flags: &[&str]) {
    let url = app.mint("alice", "upload", "/", &[]);
    let mut args = vec!["put", &url, src.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = haul(&args, &[]);
    assert!(out.status.success(), "put {flags:?}: {}", stderr(&out));
}

fn get(app: &Appliance, name: &str, dest: &Path, flags: &[&str]) {
    std::fs::create_dir_all(dest).unwrap();
    let url = app.mint("alice", "download", &format!("/{name}"), &[]);
    let mut args = vec!["get", &url, dest.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = haul(&args, &[]);
    assert!(out.status.success(), "get {flags:?}: {}", stderr(&out));
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn owner_and_xattrs_pass_the_gate_only_when_asked_and_consented() {
    assert!(is_root(), "this test sets file owners: run it as root");
    let work = TempDir::new("gate-preserve");
    let src_dir = work.join("src");
    std::fs::create_dir(&src_dir).unwrap();

    let consenting = Appliance::start(&CONSENT, &[]);
    consenting.add_user("alice", &[]);
    let storage = consenting.storage("alice");
    // put, asked and consented: kept.
    let a = source(&src_dir, "a.bin");
    put(&consenting, &a, &ASK);
    assert_attrs(&storage.join("a.bin"), &a, true, "put asked+consented");
    // put, not asked: dropped.
    let b = source(&src_dir, "b.bin");
    put(&consenting, &b, &[]);
    assert_attrs(&storage.join("b.bin"), &b, false, "put not asked");
    // get, asked and consented: kept; not asked: dropped.
    get(&consenting, "a.bin", &work.join("get-asked"), &ASK);
    assert_attrs(&work.join("get-asked/a.bin"), &a, true, "get asked+consented");
    get(&consenting, "a.bin", &work.join("get-plain"), &[]);
    assert_attrs(&work.join("get-plain/a.bin"), &a, false, "get not asked");

    // A server without the consent drops them both ways, even when asked.
    let refusing = Appliance::start(&[], &[]);
    refusing.add_user("alice", &[]);
    let c = source(&src_dir, "c.bin");
    put(&refusing, &c, &ASK);
    assert_attrs(&refusing.storage("alice").join("c.bin"), &c, false, "put, no consent");
    let stored = refusing.storage("alice").join("d.bin");
    let d = source(&src_dir, "d.bin");
    std::fs::rename(&d, &stored).unwrap();
    get(&refusing, "d.bin", &work.join("get-refused"), &ASK);
    assert_attrs(&work.join("get-refused/d.bin"), &stored, false, "get, no consent");
}

#[test]
fn haul_cp_carries_owner_and_xattrs_with_consent() {
    assert!(is_root(), "this test sets file owners: run it as root");
    let app = Appliance::start(&CONSENT, &[]);
    let work = TempDir::new("gate-preserve-cp");
    let key = work.join("id");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let pubkey = work.join("id.pub");
    app.add_user("alice", &["--ssh-key", pubkey.to_str().unwrap()]);
    let src_dir = work.join("src");
    std::fs::create_dir(&src_dir).unwrap();
    let e = source(&src_dir, "e.bin");
    let known = work.join("known_hosts");
    let port = app.ssh_port.to_string();
    let cp = |from: &str, to: &str| {
        let args = [
            "cp",
            "--identity",
            key.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
            "--port",
            &port,
            ASK[0],
            ASK[1],
            from,
            to,
        ];
        let out = haul(&args, &[]);
        assert!(out.status.success(), "cp {from} {to}: {}", stderr(&out));
    };
    cp(e.to_str().unwrap(), "alice@127.0.0.1:/");
    assert_attrs(&app.storage("alice").join("e.bin"), &e, true, "cp up");
    let back = work.join("back");
    std::fs::create_dir(&back).unwrap();
    cp("alice@127.0.0.1:/e.bin", back.to_str().unwrap());
    assert_attrs(&back.join("e.bin"), &e, true, "cp down");
}
