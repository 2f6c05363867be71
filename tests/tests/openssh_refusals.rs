//! A real OpenSSH client against the gate of `haul serve`, with the shipped client key: every
//! request but one exec of `haul-transfer` is refused with a message and an exit status, and
//! password authentication is not even offered. Asserts on ssh's exit status and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use gate_common::{Appliance, have, shipped_key};
use haul_tests::{TempDir, run, stderr};

/// Deadline for one ssh run (nominally milliseconds).
const SSH_TIMEOUT: Duration = Duration::from_secs(60);

fn ssh(
    app: &Appliance,
    key: &Path,
    opts: &[&str],
    command: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]);
    c.args([
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
    ]);
    c.arg("-i").arg(key).args(["-p", &app.ssh_port.to_string()]);
    c.args(opts).arg("haul@127.0.0.1").args(command);
    c.env_remove("SSH_AUTH_SOCK").env_remove("DISPLAY");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c, SSH_TIMEOUT)
}

fn assert_refused(out: &Output, status: i32, needle: &str) {
    let e = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {e}");
    assert!(e.contains(needle), "want {needle:?} in: {e}");
}

#[test]
fn openssh_is_refused_everything_but_the_transfer_command() {
    if !have("ssh") {
        panic!(
            "openssh-client is missing: scripts/test installs it (apt-get install openssh-client)"
        );
    }
    let app = Appliance::start(&[], &[]);
    let dir = TempDir::new("openssh");
    let key = shipped_key(&dir);

    // An interactive shell (no command), with and without a terminal.
    assert_refused(&ssh(&app, &key, &["-T"], &[], &[]), 126, "no shell here");
    // ssh gives up when a terminal it was told to get (-t) is refused: its own exit status.
    let out = ssh(&app, &key, &["-tt"], &[], &[]);
    assert_refused(&out, 255, "PTY allocation request failed");
    // Any other command, and the transfer command with arguments or metacharacters.
    for cmd in [
        "ls",
        "haul-transfer x",
        "haul-transfer; ls",
        "haul-transfer $(id)",
        "haul-transfer `id`",
        "sh -c id",
    ] {
        assert_refused(&ssh(&app, &key, &[], &[cmd], &[]), 126, "only the haul transfer command");
    }
    // Subsystems, sftp included.
    assert_refused(&ssh(&app, &key, &["-s"], &["sftp"], &[]), 126, "no subsystems");
    // Environment variables.
    assert_refused(
        &ssh(&app, &key, &["-o", "SendEnv=HAUL_PROBE"], &["haul-transfer"], &[("HAUL_PROBE", "1")]),
        126,
        "environment variables",
    );
    assert_refused(
        &ssh(&app, &key, &["-o", "SetEnv=FOO=bar"], &["haul-transfer"], &[]),
        126,
        "environment variables",
    );
    // X11 forwarding (ssh asks only when DISPLAY is set).
    assert_refused(
        &ssh(&app, &key, &["-X"], &["haul-transfer"], &[("DISPLAY", "127.0.0.1:99")]),
        126,
        "X11 forwarding",
    );
    // Agent forwarding (ssh asks only when it has an agent).
    if have("ssh-agent") {
        let sock = dir.join("agent.sock");
        let mut agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sock.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = ssh(
            &app,
            &key,
            &["-A"],
            &["haul-transfer"],
            &[("SSH_AUTH_SOCK", sock.to_str().unwrap())],
        );
        let _ = agent.kill();
        let _ = agent.wait();
        assert_refused(&out, 126, "agent forwarding");
    }
    // Remote forwarding (-R): refused; ssh exits when told to on forward failure.
    assert_refused(
        &ssh(
            &app,
            &key,
            &["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"],
            &["haul-transfer"],
            &[],
        ),
        255,
        "forwarding failed",
    );
    // Local forwarding (-L) opens a direct-tcpip channel per connection; -W opens one at once.
    assert_refused(
        &ssh(&app, &key, &["-W", "127.0.0.1:9"], &[], &[]),
        255,
        "stdio forwarding failed",
    );
    let log = app.log_text();
    for kind in ["shell", "pty", "command", "subsystem", "env", "x11-forwarding", "tcp-forwarding"]
    {
        assert!(
            log.contains(&format!("refused=\"{kind}\""))
                || log.contains(&format!("refused={kind}")),
            "{kind} not logged: {log}"
        );
    }
}

#[test]
fn local_forwarding_is_refused_per_connection() {
    let app = Appliance::start(&[], &[]);
    let dir = TempDir::new("openssh-l");
    let key = shipped_key(&dir);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = free.local_addr().unwrap().port();
    drop(free);
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]);
    c.args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-N"]);
    c.arg("-i").arg(&key).args(["-p", &app.ssh_port.to_string()]);
    c.args(["-L", &format!("127.0.0.1:{lport}:127.0.0.1:9"), "haul@127.0.0.1"]);
    let mut child =
        c.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "ssh -L never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the forwarded connection is closed at once");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).contains("administratively prohibited"), "{}", stderr(&out));
    assert!(app.log_text().contains("tcp-forwarding"));
}

#[test]
fn password_authentication_is_not_offered() {
    let app = Appliance::start(&[], &[]);
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]);
    c.args(["-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no"]);
    c.args(["-o", "PreferredAuthentications=password,keyboard-interactive"]);
    c.args(["-p", &app.ssh_port.to_string(), "haul@127.0.0.1", "haul-transfer"]);
    let out = run(&mut c, SSH_TIMEOUT);
    assert_eq!(out.status.code(), Some(255));
    let e = stderr(&out);
    assert!(e.contains("Permission denied (publickey)"), "only publickey is offered: {e}");
}

#[test]
fn another_key_for_the_transfer_account_is_refused() {
    let app = Appliance::start(&[], &[]);
    let dir = TempDir::new("openssh-k");
    let other = dir.join("other");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let out = ssh(&app, &other, &[], &["haul-transfer"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("Permission denied (publickey)"), "{}", stderr(&out));
}
