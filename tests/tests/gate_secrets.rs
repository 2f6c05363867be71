//! No secrets in logs: with the test hook on (`HAUL_TEST_EXPOSE_SECRETS`, which makes each
//! side append its session secret, both randoms and the token to a file outside everything
//! searched) and the server at debug log level, a full upload and download leave none of
//! them, nor the server secret, in the server's log, the clients' stdout and stderr, or any
//! file of the data directory, as raw bytes, hex, base64 or Rust `Debug` output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::path::Path;

use gate_common::{Appliance, haul};
use haul_tests::{TempDir, stderr, write_file};

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// Every form a secret could leak in.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = vec![
        secret.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        format!("{secret:?}").into_bytes(),
        format!("{secret:x?}").into_bytes(),
    ];
    for (a, pad) in [(STD, true), (STD, false), (URL, true), (URL, false)] {
        f.push(base64(secret, a, pad).into_bytes());
    }
    // A prefix long enough to be unmistakable also counts (a truncated log line).
    if secret.len() >= 16 {
        f.push(hex.as_bytes()[..32].to_vec());
    }
    f
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    hay.iter()
        .enumerate()
        .any(|(i, &b)| b == first && hay.get(i + 1..i + 1 + rest.len()).is_some_and(|w| w == rest))
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_full_transfer_at_debug_level_leaves_no_secret_anywhere() {
    let outside = TempDir::new("exposed");
    let server_hook = outside.join("server");
    let client_hook = outside.join("client");
    let app = Appliance::start(
        &["--log-level", "debug"],
        &[("HAUL_TEST_EXPOSE_SECRETS", server_hook.to_str().unwrap()), ("RUST_LOG", "debug")],
    );
    app.add_user("alice", &[]);
    let work = TempDir::new("secrets");
    let src = work.join("f.bin");
    write_file(&src, 1 << 20, 5, 0o644);
    let env = [("HAUL_TEST_EXPOSE_SECRETS", client_hook.to_str().unwrap())];
    let mut outputs = Vec::new();
    let up = app.mint("alice", "upload", "/", &[]);
    let out = haul(&["put", &up, src.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    outputs.push(out);
    let down = app.mint("alice", "download", "/f.bin", &[]);
    let dest = work.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = haul(&["get", "--json", &down, dest.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    outputs.push(out);

    // The secrets: both hooks' lines, and the server secret from its own file.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for hook in [&server_hook, &client_hook] {
        for line in std::fs::read_to_string(hook).unwrap().lines() {
            let (name, hex) = line.split_once(' ').unwrap();
            secrets.push((name.to_string(), hex_decode(hex)));
        }
    }
    assert!(
        secrets.iter().filter(|(n, _)| n == "session_secret").count() >= 4,
        "both sides, both transfers"
    );
    let secret_file = std::fs::read(app.data.join("server-secret")).unwrap();
    // HAULSEC1, count, then id(4) created(8) valid_until(8) secret(32).
    secrets.push(("server_secret".into(), secret_file[9 + 20..9 + 52].to_vec()));

    let mut hay: Vec<(String, Vec<u8>)> =
        vec![("server log".into(), std::fs::read(&app.log).unwrap())];
    for (i, o) in outputs.iter().enumerate() {
        hay.push((format!("client {i} stdout"), o.stdout.clone()));
        hay.push((format!("client {i} stderr"), o.stderr.clone()));
    }
    let mut files = Vec::new();
    files_under(&app.data, &mut files);
    for f in files {
        if f.file_name().is_some_and(|n| n == "server-secret") {
            continue; // the secret's own home
        }
        hay.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    assert!(hay[0].1.len() > 1000, "debug logging is on");
    for (name, secret) in &secrets {
        for form in forms(secret) {
            for (where_, h) in &hay {
                assert!(
                    !contains(h, &form),
                    "{name} found in {where_} as {:?}",
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }
}
