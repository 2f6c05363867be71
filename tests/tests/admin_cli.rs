#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `haul user`, `haul token mint` and `haul secret` from the outside (docs/TOKENS.md,
//! docs/STORE.md): exit codes, what they print, what they leave in the data directory, and
//! the server secret's refusals as an operator meets them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use haul_tests::{TRANSFER_TIMEOUT, TempDir, haul_bin, run, stderr, stdout};

fn haul(args: &[&str], data: &Path) -> Output {
    let mut cmd = Command::new(haul_bin());
    // The two subcommand words (`user add`, `token mint`, ...), --data-dir, then the rest.
    cmd.args(&args[..2]).arg("--data-dir").arg(data).args(&args[2..]);
    run(&mut cmd, TRANSFER_TIMEOUT)
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), stderr(out));
    stdout(out)
}

fn fails(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "stdout: {} stderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(needle), "wanted {needle:?} in: {}", stderr(out));
}

fn ssh_keygen(path: &Path, comment: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client; scripts/test installs it)");
    assert!(st.success());
}

fn fingerprint(path: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned()
}

/// A data directory with user alice and a host key.
fn setup(label: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(label);
    let data = t.join("data");
    ok(&haul(&["user", "add", "alice"], &data));
    ssh_keygen(&data.join("ssh_host_ed25519_key"), "");
    (t, data)
}

#[test]
fn user_add_creates_a_private_storage_root_and_records_restrictions() {
    let t = TempDir::new("admin-add");
    let data = t.join("data");
    ssh_keygen(&t.join("alice_key"), "alice@laptop");
    let out = ok(&haul(
        &[
            "user",
            "add",
            "alice",
            "--ip-allow-upload",
            "10.0.0.0/8,192.168.1.7",
            "--ip-allow-download",
            "2001:db8::/32",
            "--expires",
            "2031-05-06",
            "--upload-only",
            "--ssh-key",
            t.join("alice_key.pub").to_str().unwrap(),
        ],
        &data,
    ));
    assert!(out.contains("name: alice"), "{out}");
    assert!(out.contains("ip-allow-upload: 10.0.0.0/8,192.168.1.7/32"), "{out}");
    assert!(out.contains("ip-allow-download: 2001:db8::/32"), "{out}");
    assert!(out.contains("ip-allow-login: any"), "{out}");
    assert!(out.contains("expires: 2031-05-06T00:00:00Z"), "{out}");
    assert!(out.contains("directions: upload-only"), "{out}");
    let fp = fingerprint(&t.join("alice_key.pub"));
    assert!(out.contains(&format!("ssh-key: ssh-ed25519 {fp} alice@laptop")), "{out}");

    let meta = std::fs::symlink_metadata(data.join("storage/alice")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(data.join("server-secret")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(data.join("haul.db")).unwrap().mode() & 0o777, 0o600);

    assert_eq!(ok(&haul(&["user", "show", "alice"], &data)), out);
    fails(&haul(&["user", "add", "alice"], &data), "already exists");
}

#[test]
fn user_set_changes_only_what_it_is_given_and_disable_enable_list_work() {
    let (_t, data) = setup("admin-set");
    ok(&haul(&["user", "set", "alice", "--download-only", "--ip-allow-login", "127.0.0.1"], &data));
    let out = ok(&haul(&["user", "set", "alice", "--expires", "2040-01-01T12:00:00Z"], &data));
    assert!(out.contains("directions: download-only"), "{out}");
    assert!(out.contains("ip-allow-login: 127.0.0.1/32"), "{out}");
    assert!(out.contains("expires: 2040-01-01T12:00:00Z"), "{out}");
    let out = ok(&haul(
        &["user", "set", "alice", "--any-direction", "--ip-allow-login", "", "--expires", "never"],
        &data,
    ));
    assert!(out.contains("directions: upload and download"), "{out}");
    assert!(out.contains("ip-allow-login: any"), "{out}");
    assert!(out.contains("expires: never"), "{out}");

    ok(&haul(&["user", "add", "bob"], &data));
    assert!(ok(&haul(&["user", "disable", "bob"], &data)).contains("disabled: true"));
    assert_eq!(ok(&haul(&["user", "list"], &data)), "alice active\nbob disabled\n");
    assert!(ok(&haul(&["user", "enable", "bob"], &data)).contains("disabled: false"));
    ok(&haul(&["user", "set", "bob", "--expires", "2001-01-01"], &data));
    assert_eq!(ok(&haul(&["user", "list"], &data)), "alice active\nbob expired\n");
    fails(&haul(&["user", "set", "carol", "--upload-only"], &data), "no user called carol");
}

#[test]
fn user_commands_refuse_bad_input_with_the_rule() {
    let (t, data) = setup("admin-bad");
    fails(&haul(&["user", "add", "../evil"], &data), "is not allowed");
    fails(
        &haul(&["user", "add", "x", "--ip-allow-upload", "10.0.0.0/33"], &data),
        "is not a network",
    );
    fails(&haul(&["user", "add", "y", "--expires", "2024-02-30"], &data), "is not a date");
    std::fs::write(t.join("junk.pub"), "ssh-ed25519 !!!notbase64\n").unwrap();
    fails(
        &haul(&["user", "add", "z", "--ssh-key", t.join("junk.pub").to_str().unwrap()], &data),
        "line 1",
    );
    // A key can belong to one user only.
    ssh_keygen(&t.join("k"), "");
    let k = t.join("k.pub");
    ok(&haul(&["user", "set", "alice", "--ssh-key", k.to_str().unwrap()], &data));
    fails(
        &haul(&["user", "add", "bob", "--ssh-key", k.to_str().unwrap()], &data),
        "already belongs to user alice",
    );
    assert!(!ok(&haul(&["user", "list"], &data)).contains("bob"), "the failed add left no user");
    // clap refuses contradictory flags as a usage error.
    let out = haul(&["user", "set", "alice", "--upload-only", "--download-only"], &data);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for bad in ["x", "../x", "z", "bob"] {
        assert!(!data.join("storage").join(bad).exists(), "{bad}");
    }
}

fn query_param<'a>(url: &'a str, key: &str) -> &'a str {
    let q = url.split_once('?').unwrap().1;
    q.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap()
}

#[test]
fn token_mint_prints_one_url_with_the_host_key_pin() {
    let (_t, data) = setup("admin-mint");
    let out = haul(
        &[
            "token",
            "mint",
            "--user",
            "alice",
            "--direction",
            "download",
            "--path",
            "/pkg/a b.bin",
            "--expires",
            "10m",
            "--single-use",
        ],
        &data,
    );
    let url = ok(&out);
    let url = url.strip_suffix('\n').unwrap();
    assert_eq!(url.lines().count(), 1, "{url}");
    assert!(url.starts_with("haul://localhost:2222/pkg/a%20b.bin?token="), "{url}");
    let token = query_param(url, "token");
    assert!(
        token.len() > 40
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    let pin = query_param(url, "hostkey").replace("%2B", "+");
    assert_eq!(pin, fingerprint(&data.join("ssh_host_ed25519_key")));
    assert!(!stderr(&out).contains(token), "the token is never on stderr");
    assert!(stderr(&out).contains("single use"), "{}", stderr(&out));

    let url2 = ok(&haul(
        &[
            "token",
            "mint",
            "--user",
            "alice",
            "--direction",
            "upload",
            "--path",
            "/",
            "--host",
            "gate.example",
            "--port",
            "22",
        ],
        &data,
    ));
    assert!(url2.starts_with("haul://gate.example:22/?token="), "{url2}");
    assert_ne!(query_param(&url2, "token"), token, "every token is fresh");
}

#[test]
fn token_mint_refuses_what_could_never_be_used() {
    let (t, data) = setup("admin-mint-bad");
    let mint = |user: &str, dir: &str, path: &str| {
        haul(&["token", "mint", "--user", user, "--direction", dir, "--path", path], &data)
    };
    fails(&mint("bob", "download", "/x"), "no user called bob");
    fails(&mint("alice", "download", "/../etc/passwd"), "'..'");
    ok(&haul(&["user", "set", "alice", "--upload-only"], &data));
    fails(&mint("alice", "download", "/x"), "upload-only");
    ok(&haul(&["user", "disable", "alice"], &data));
    fails(&mint("alice", "upload", "/x"), "disabled or expired");
    let out = haul(
        &["token", "mint", "--user", "alice", "--direction", "sideways", "--path", "/"],
        &data,
    );
    assert_eq!(out.status.code(), Some(2));
    // Without a host key there is no pin to give: refused, with how to get one.
    let fresh = t.join("fresh");
    ok(&haul(&["user", "add", "carol"], &fresh));
    let out =
        haul(&["token", "mint", "--user", "carol", "--direction", "upload", "--path", "/"], &fresh);
    fails(&out, "haul serve");
    assert!(stdout(&out).is_empty());
}

#[test]
fn secret_rotate_keeps_the_previous_secret_for_the_grace_period() {
    let (_t, data) = setup("admin-rotate");
    let before = ok(&haul(&["secret", "show"], &data));
    assert_eq!(before.lines().count(), 1);
    assert!(before.contains(" current created "), "{before}");
    let before_bytes = std::fs::read(data.join("server-secret")).unwrap();
    let out = ok(&haul(&["secret", "rotate", "--grace", "2h"], &data));
    assert_eq!(out.lines().count(), 2, "{out}");
    let old_id = before.split_whitespace().next().unwrap();
    let prev = out.lines().nth(1).unwrap();
    assert!(prev.starts_with(&format!("{old_id} previous created ")), "{out}");
    assert!(prev.contains(" valid until "), "{out}");
    assert_ne!(std::fs::read(data.join("server-secret")).unwrap(), before_bytes);
    assert_eq!(std::fs::metadata(data.join("server-secret")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(ok(&haul(&["secret", "show"], &data)), out);
}

/// Each bad secret case, through a command an operator runs: exit 1, the fix in the message,
/// and nothing done.
#[test]
fn commands_refuse_an_unsafe_server_secret_and_say_how_to_fix_it() {
    let euid = std::fs::metadata("/proc/self").unwrap().uid();
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil, String); 4] = [
        (
            "owner",
            |d| std::os::unix::fs::chown(d.join("server-secret"), Some(4321), None).unwrap(),
            format!("chown {euid} "),
        ),
        (
            "mode",
            |d| {
                std::fs::set_permissions(
                    d.join("server-secret"),
                    std::fs::Permissions::from_mode(0o640),
                )
                .unwrap()
            },
            "chmod 600 ".into(),
        ),
        (
            "parent",
            |d| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap(),
            "chmod go-w ".into(),
        ),
        (
            "symlink",
            |d| {
                std::fs::rename(d.join("server-secret"), d.join("real-secret")).unwrap();
                std::os::unix::fs::symlink(d.join("real-secret"), d.join("server-secret")).unwrap();
            },
            "symbolic link".into(),
        ),
    ];
    for (label, spoil, fix) in cases {
        let (_t, data) = setup(&format!("admin-secret-{label}"));
        spoil(&data);
        for args in [
            &["user", "add", "mallory"][..],
            &["token", "mint", "--user", "alice", "--direction", "download", "--path", "/"][..],
            &["secret", "rotate"][..],
        ] {
            let out = haul(args, &data);
            fails(&out, &fix);
            assert!(stdout(&out).is_empty(), "{label} {args:?}: {}", stdout(&out));
        }
        assert!(!data.join("storage/mallory").exists(), "{label}: nothing was done");
    }
}

#[test]
fn settings_set_changes_what_tokens_carry_and_refuses_bad_values() {
    let (_t, data) = setup("admin-settings");
    let shown = ok(&haul(&["settings", "show"], &data));
    assert!(shown.contains("encrypt_transfers: true"), "{shown}");
    assert!(shown.contains("public_port: 2222"), "{shown}");
    let out = ok(&haul(&["settings", "set", "public_host", "gate.example"], &data));
    assert!(out.contains("public_host: gate.example"), "{out}");
    ok(&haul(&["settings", "set", "public_port", "2022"], &data));
    ok(&haul(&["settings", "set", "policy_cap", "fair"], &data));
    let url = ok(&haul(
        &["token", "mint", "--user", "alice", "--direction", "upload", "--path", "/"],
        &data,
    ));
    assert!(url.starts_with("haul://gate.example:2022/?token="), "{url}");
    fails(&haul(&["settings", "set", "policy_cap", "greedy"], &data), "policy_cap");
    fails(&haul(&["settings", "set", "public_port", "0"], &data), "public_port");
    fails(&haul(&["settings", "set", "colour", "blue"], &data), "unknown setting");
    let after = ok(&haul(&["settings", "show"], &data));
    assert!(after.contains("policy_cap: fair"), "the bad value was rolled back: {after}");
    assert!(after.contains("public_port: 2022"), "{after}");
}
