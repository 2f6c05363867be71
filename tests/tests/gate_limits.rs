//! The gate's limits from the outside: one more concurrent transfer or connection than the
//! limit is refused with a message and exit status, the idle timeout closes a silent
//! connection, and refusals are logged by kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gate_common::{Appliance, shipped_key};
use haul_tests::{TempDir, run, stderr};

fn ssh_cmd(app: &Appliance, key: &Path) -> Command {
    ssh_cmd_from(app, key, "127.0.0.1")
}

/// ssh from the local address `from` (a loopback address) to the gate on 127.0.0.1.
fn ssh_cmd_from(app: &Appliance, key: &Path, from: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]);
    c.args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-b", from]);
    c.arg("-i").arg(key).args(["-p", &app.ssh_port.to_string(), "haul@127.0.0.1", "haul-transfer"]);
    c
}

/// An ssh that runs the transfer command and then says nothing (its stdin stays open).
fn hold(app: &Appliance, key: &Path) -> Child {
    ssh_cmd(app, key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_log(app: &Appliance, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.log_text().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "{needle} x{count} never logged: {}", app.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_transfer_more_than_the_per_address_limit_is_refused() {
    let app = Appliance::start(&["--max-transfers-per-address", "2"], &[]);
    let dir = TempDir::new("limits");
    let key = shipped_key(&dir);
    let mut held = vec![hold(&app, &key), hold(&app, &key)];
    wait_for_log(&app, "transfer session started", 2);
    let out = run(&mut ssh_cmd(&app, &key), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("too many concurrent transfers"), "{}", stderr(&out));
    assert!(app.log_text().contains("session-limit"));
    // A slot comes back when a transfer ends.
    let mut first = held.remove(0);
    let _ = first.kill();
    let _ = first.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = hold(&app, &key);
        std::thread::sleep(Duration::from_millis(500));
        match c.try_wait().unwrap() {
            None => {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            Some(_) => assert!(Instant::now() < deadline, "the slot never came back"),
        }
    }
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn one_connection_more_than_the_per_address_limit_is_refused() {
    let app = Appliance::start(&["--max-connections-per-address", "2"], &[]);
    let dir = TempDir::new("conn-limits");
    let key = shipped_key(&dir);
    let held = vec![hold(&app, &key), hold(&app, &key)];
    wait_for_log(&app, "transfer session started", 2);
    let out = run(&mut ssh_cmd(&app, &key), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("too many connections from your address"), "{}", stderr(&out));
    assert!(app.log_text().contains("connection-limit"));
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let app = Appliance::start(&["--idle-timeout", "2"], &[]);
    let dir = TempDir::new("idle");
    let key = shipped_key(&dir);
    let mut c = hold(&app, &key);
    // Nominally 2 s; the deadline is 30x that.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the idle connection was never closed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
}

/// An ed25519 key the server does not know.
fn stranger_key(dir: &TempDir) -> std::path::PathBuf {
    let key = dir.join("stranger");
    let out = run(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
    key
}

#[test]
fn failed_authentications_from_one_address_block_it_for_a_backoff() {
    let app = Appliance::start(
        &["--max-auth-failures-per-address", "3", "--auth-window", "600", "--auth-backoff", "600"],
        &[],
    );
    let dir = TempDir::new("auth-limit");
    let key = shipped_key(&dir);
    let stranger = stranger_key(&dir);
    // Several connections from 127.0.0.1, each failing once with an unknown key.
    for _ in 0..3 {
        let out = run(&mut ssh_cmd(&app, &stranger), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
        assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    }
    // The address is blocked now: even the right key is refused, with the reason.
    let out = run(&mut ssh_cmd(&app, &key), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("too many failed authentication attempts from your address"),
        "{}",
        stderr(&out)
    );
    let log = app.log_text();
    assert!(log.contains("address blocked for failed authentications"), "{log}");
    assert!(log.contains("auth-limit"), "refusals are logged and counted by kind: {log}");
    // Another source address is not affected.
    let mut c = ssh_cmd_from(&app, &key, "127.0.0.2")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&app, "transfer session started", 1);
    let _ = c.kill();
    let _ = c.wait();
}
