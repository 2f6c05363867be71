//! `haul cp` with a user's own SSH key: works both ways, is confined to the user's storage,
//! enforces the user's restrictions, and refuses a changed host key (trust on first use).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::process::Command;

use gate_common::{Appliance, haul};
use haul_tests::{TempDir, stderr, write_file};

fn keygen(dir: &TempDir, name: &str) -> String {
    let p = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p.to_str().unwrap().to_string()
}

#[test]
fn cp_with_a_users_own_key_confined_and_restricted() {
    let app = Appliance::start(&[], &[]);
    let dir = TempDir::new("cp");
    let alice = keygen(&dir, "alice");
    let carol = keygen(&dir, "carol");
    app.add_user("alice", &["--ssh-key", &format!("{alice}.pub")]);
    app.add_user("bob", &[]);
    app.add_user("carol", &["--ssh-key", &format!("{carol}.pub"), "--download-only"]);
    write_file(&app.storage("bob").join("secret.bin"), 1000, 2, 0o644);
    let kh = dir.join("known_hosts");
    let port = app.ssh_port.to_string();
    let cp = |key: &str, args: &[&str]| {
        let mut a = vec!["cp", "-P", &port, "-i", key, "--known-hosts", kh.to_str().unwrap()];
        a.extend_from_slice(args);
        haul(&a, &[])
    };
    let src = dir.join("f.bin");
    write_file(&src, 2 << 20, 9, 0o644);
    let out = cp(&alice, &[src.to_str().unwrap(), "alice@127.0.0.1:/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&app.fingerprint),
        "the fingerprint is shown on first use: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(app.storage("alice").join("f.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    let dest = dir.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = cp(&alice, &["alice@127.0.0.1:/f.bin", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dest.join("f.bin")).unwrap(), std::fs::read(&src).unwrap());

    // Confined to the user's own storage.
    let out = cp(&alice, &["alice@127.0.0.1:/../bob/secret.bin", dest.to_str().unwrap()]);
    assert!(stderr(&out).contains("unauthorized to transfer: path-outside"), "{}", stderr(&out));
    // A key is accepted only for its own user.
    let out = cp(&alice, &["bob@127.0.0.1:/secret.bin", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not accept this key"), "{}", stderr(&out));
    assert!(!dest.join("secret.bin").exists());
    // The user's restrictions apply.
    let out = cp(&carol, &[src.to_str().unwrap(), "carol@127.0.0.1:/"]);
    assert!(stderr(&out).contains("unauthorized to transfer: download-only"), "{}", stderr(&out));
    // The shipped key is not a user key.
    let shipped = gate_common::shipped_key(&dir);
    let out = cp(shipped.to_str().unwrap(), &["alice@127.0.0.1:/f.bin", dest.to_str().unwrap()]);
    assert!(stderr(&out).contains("does not accept this key"), "{}", stderr(&out));
}

#[test]
fn cp_refuses_a_changed_host_key() {
    let app = Appliance::start(&[], &[]);
    let dir = TempDir::new("cp-changed");
    let alice = keygen(&dir, "alice");
    app.add_user("alice", &["--ssh-key", &format!("{alice}.pub")]);
    // The known-hosts file remembers another key for this host and port.
    let other = keygen(&dir, "other");
    let other_pub = std::fs::read_to_string(format!("{other}.pub")).unwrap();
    let mut parts = other_pub.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        app.ssh_port,
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, line).unwrap();
    let dest = dir.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let port = app.ssh_port.to_string();
    let out = haul(
        &[
            "cp",
            "-P",
            &port,
            "-i",
            &alice,
            "--known-hosts",
            kh.to_str().unwrap(),
            "alice@127.0.0.1:/",
            dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("changed"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&app.fingerprint), "names the key it saw: {}", stderr(&out));
}
