//! `haul keygen` and the key file rules, from the outside (docs/CLI.md, "keygen").

use haul_tests::{Receiver, TRANSFER_TIMEOUT, TempDir, haul_bin, keygen, run, send, stderr};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn keygen_writes_mode_0600_and_64_hex_digits() {
    let dir = TempDir::new("keygen");
    let k = keygen(&dir, "key");
    let meta = std::fs::metadata(&k).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&k).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
    assert_ne!(text, std::fs::read_to_string(keygen(&dir, "key2")).unwrap(), "keys are fresh");
}

#[test]
fn keygen_refuses_to_overwrite_unless_forced() {
    let dir = TempDir::new("keygen-exists");
    let k = keygen(&dir, "key");
    let before = std::fs::read_to_string(&k).unwrap();
    let out = run(Command::new(haul_bin()).arg("keygen").arg(&k), TRANSFER_TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&k).unwrap(), before, "the old key is untouched");
    let out = run(Command::new(haul_bin()).args(["keygen", "--force"]).arg(&k), TRANSFER_TIMEOUT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(std::fs::read_to_string(&k).unwrap(), before);
    assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn recv_and_send_refuse_a_key_file_others_can_read() {
    let dir = TempDir::new("keygen-0644");
    let k = keygen(&dir, "key");
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        Command::new(haul_bin())
            .args(["recv", "--listen", "127.0.0.1:0", "--key-file"])
            .arg(&k)
            .arg(dir.join("dest")),
        TRANSFER_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!dir.join("dest").exists(), "recv refused before touching DEST");

    // A receiver with a good key, so that only the sender's key file is at fault.
    let good = keygen(&dir, "good");
    let recv = Receiver::start("127.0.0.1:0", &good, &dir.join("dest2"), &[]);
    std::fs::write(dir.join("f"), b"x").unwrap();
    let out = send(&recv.addr, &k, &[dir.join("f")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn malformed_key_files_are_refused() {
    let dir = TempDir::new("keygen-bad");
    let k = dir.join("key");
    std::fs::write(&k, "not a key\n").unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(
        Command::new(haul_bin())
            .args(["send", "--to", "127.0.0.1:9", "--key-file"])
            .arg(&k)
            .arg(&k),
        TRANSFER_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("64 hex digits"), "{}", stderr(&out));
}
