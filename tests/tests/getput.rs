//! `haul put` / `haul get` against `haul serve` with minted tokens: the whole path of issue 5
//! (URL, host key pin, SSH gate, token, key exchange, UDP data plane).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::time::Duration;

use gate_common::{Appliance, haul};
use haul_tests::{TempDir, stderr, stdout, write_file};

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_channel_small_and_udp_busy(v: &serde_json::Value, udp_key: &str) {
    let sent = v["ssh_channel"]["bytes_sent"].as_u64().unwrap();
    let received = v["ssh_channel"]["bytes_received"].as_u64().unwrap();
    assert!(sent < 64 << 10 && received < 64 << 10, "ssh channel carried {sent}/{received} bytes");
    let datagrams = v["udp"][udp_key].as_u64().unwrap();
    // At most 9000 bytes each: path-MTU probing reaches jumbo frames on loopback.
    assert!(datagrams >= (64 << 20) / 9000, "udp {udp_key} = {datagrams}");
}

#[test]
fn put_64_mib_then_get_it_back_byte_identical() {
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("getput");
    let src = work.join("big.bin");
    write_file(&src, 64 << 20, 7, 0o644);

    let up = app.mint("alice", "upload", "/", &[]);
    let out = haul(&["put", "--json", &up, src.to_str().unwrap()], &[]);
    assert!(out.status.success(), "put: {}", stderr(&out));
    assert_channel_small_and_udp_busy(&json_of(&out), "datagrams_sent");
    assert_eq!(
        std::fs::read(app.storage("alice").join("big.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );

    let down = app.mint("alice", "download", "/big.bin", &[]);
    let dest = work.join("dest");
    std::fs::create_dir(&dest).unwrap();
    // The URL through a file, so it stays out of ps.
    let url_file = work.join("url");
    std::fs::write(&url_file, &down).unwrap();
    let out = haul(
        &["get", "--json", "--url-file", url_file.to_str().unwrap(), dest.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "get: {}", stderr(&out));
    assert_channel_small_and_udp_busy(&json_of(&out), "datagrams_received");
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), std::fs::read(&src).unwrap());
}

fn assert_refused(out: &std::process::Output, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let e = stderr(out);
    assert!(e.contains(&format!("unauthorized to transfer: {code}")), "want {code}: {e}");
}

/// Replace the token in `url` by `f(token)`.
fn with_token(url: &str, f: impl Fn(&str) -> String) -> String {
    let (head, rest) = url.split_once("token=").unwrap();
    let (token, tail) = rest.split_once('&').unwrap_or((rest, ""));
    format!("{head}token={}&{tail}", f(token))
}

#[test]
fn refused_tokens_say_why_and_leave_nothing() {
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("refused");
    let src = work.join("f.bin");
    write_file(&src, 100_000, 3, 0o644);
    let storage = app.storage("alice");
    let up = app.mint("alice", "upload", "/", &[]);

    // One character of the token changed: the AEAD tag fails.
    let tampered = with_token(&up, |t| {
        let mut b = t.as_bytes().to_vec();
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    });
    assert_refused(&haul(&["put", &tampered, src.to_str().unwrap()], &[]), "bad-token");
    // A download token used for an upload.
    let down = app.mint("alice", "download", "/", &[]);
    assert_refused(&haul(&["put", &down, src.to_str().unwrap()], &[]), "wrong-direction");
    // The URL's path edited to escape the token's path.
    let escape = up.replacen("/?token=", "/../../etc?token=", 1);
    assert_refused(&haul(&["put", &escape, src.to_str().unwrap()], &[]), "path-outside");
    // Expired.
    let short = app.mint("alice", "upload", "/", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_refused(&haul(&["put", &short, src.to_str().unwrap()], &[]), "expired");

    assert_eq!(std::fs::read_dir(&storage).unwrap().count(), 0, "no file and no partial");
    assert_eq!(app.udp_sockets(), 0, "no UDP socket");
    let log = app.log_text();
    assert!(log.contains("token refused"), "refusals are logged: {log}");
    assert!(!log.contains("transfer granted"), "no session: {log}");
}

#[test]
fn wrong_host_key_pin_is_refused_and_the_host_key_is_not_the_shipped_key() {
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("pin");
    let url = app.mint("alice", "download", "/", &[]);
    assert!(
        url.contains(&format!("hostkey={}", app.fingerprint.replace('+', "%2B")))
            || url.contains(&app.fingerprint)
    );
    let (head, _) = url.split_once("&hostkey=").unwrap();
    let wrong = format!("{head}&hostkey=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let out = haul(&["get", &wrong, work.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("host key mismatch"), "{}", stderr(&out));
    // No pin at all is refused too, unless the insecure flag says so.
    let out = haul(&["get", head, work.path().to_str().unwrap()], &[]);
    assert!(stderr(&out).contains("no hostkey= pin"), "{}", stderr(&out));

    let pubkey = gate_common::repo_root().join("control-plane/keys/client_ed25519.pub");
    let fp = std::process::Command::new("ssh-keygen").arg("-lf").arg(&pubkey).output();
    if let Some(fp) = fp.ok().filter(|o| o.status.success()) {
        let shipped = String::from_utf8_lossy(&fp.stdout).to_string();
        assert!(shipped.contains("SHA256:"));
        assert!(!shipped.contains(&app.fingerprint), "the host key must not be the shipped key");
    }
    let host_pub = std::fs::read_to_string(app.data.join("ssh_host_ed25519_key")).unwrap();
    let shipped_priv =
        std::fs::read_to_string(gate_common::repo_root().join("control-plane/keys/client_ed25519"))
            .unwrap();
    assert_ne!(host_pub, shipped_priv);
}
