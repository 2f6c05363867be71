//! Helpers shared by the appliance's end-to-end tests (`gate_*.rs`, `getput.rs`,
//! `openssh_refusals.rs`): a running `haul serve` on a port-0 listener with its own data
//! directory, users, minted URLs, and the shipped client key for OpenSSH.
//!
//! Invariants: the server is stopped (SIGTERM, then waited for with a deadline, then killed)
//! when its guard drops; its stderr (the log) goes to a file the tests can search; every
//! child has a deadline of at least 10x its nominal time.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use haul_tests::{TempDir, haul_bin, run, stderr};

/// Deadline for the server to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for one admin command.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a transfer of up to 64 MiB on loopback (nominally about a second).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// Deadline for one set-up command (`ip`, `iptables`, `sysctl`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Run a set-up command (`ip netns add`, ...) with [`CMD_TIMEOUT`]; panics with its stderr
/// when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = run(Command::new(args[0]).args(&args[1..]), CMD_TIMEOUT);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// A running `haul serve`.
pub struct Appliance {
    pub dir: TempDir,
    pub data: PathBuf,
    pub ssh_port: u16,
    pub fingerprint: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Appliance {
    /// Start `haul serve` on 127.0.0.1 port 0 with these extra flags and environment.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Appliance {
        Appliance::start_at(&[], "127.0.0.1:0", "127.0.0.1:0", extra, env)
    }

    /// Start `haul serve` behind `wrapper` (e.g. `ip netns exec NS`, which execs it: the pid
    /// stays the server's) with these SSH and UDP listen addresses.
    pub fn start_at(
        wrapper: &[&str],
        ssh_listen: &str,
        udp_listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Appliance {
        let dir = TempDir::new("appliance");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.join("data");
        let log = dir.join("serve.log");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(haul_bin());
                c
            }
            None => Command::new(haul_bin()),
        };
        cmd.args(["serve", "--data-dir"]).arg(&data);
        cmd.args(["--ssh-listen", ssh_listen, "--udp-listen", udp_listen]);
        cmd.args(["--web-listen", "127.0.0.1:0"]);
        cmd.args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning haul serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let a = lines.next().and_then(Result::ok);
            let b = lines.next().and_then(Result::ok);
            let _ = tx.send((a, b));
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let (a, b) = match rx.recv_timeout(START_TIMEOUT) {
            Ok((Some(a), Some(b))) => (a, b),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "haul serve did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let addr = a.strip_prefix("ssh listening on ").expect("first line: ssh listening on ADDR");
        let ssh_port = addr.rsplit(':').next().unwrap().parse().unwrap();
        let fingerprint =
            b.strip_prefix("host key ").expect("second line: host key FP").to_string();
        Appliance { dir, data, ssh_port, fingerprint, log, child: Some(child) }
    }

    /// Run a `haul` admin command on this data directory (`--data-dir` is appended).
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(haul_bin());
        cmd.args(args).arg("--data-dir").arg(&self.data);
        let out = run(&mut cmd, ADMIN_TIMEOUT);
        assert!(out.status.success(), "haul {args:?} failed: {}", stderr(&out));
        out
    }

    pub fn add_user(&self, name: &str, extra: &[&str]) {
        let mut a = vec!["user", "add"];
        a.extend_from_slice(extra);
        a.push(name);
        self.admin(&a);
    }

    pub fn storage(&self, user: &str) -> PathBuf {
        self.data.join("storage").join(user)
    }

    /// `haul token mint`; returns the URL.
    pub fn mint(&self, user: &str, direction: &str, path: &str, extra: &[&str]) -> String {
        let mut a = vec!["token", "mint", "--user", user, "--direction", direction, "--path", path];
        a.extend_from_slice(extra);
        let out = self.admin(&a);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// How many UDP sockets the server process holds now (its socket fds matched against
    /// /proc/net/udp and udp6 by inode).
    pub fn udp_sockets(&self) -> usize {
        let pid = self.child.as_ref().map(Child::id).unwrap();
        let mut inodes = std::collections::HashSet::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy().into_owned();
                if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(i.to_string());
                }
            }
        }
        ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| {
                t.lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .filter(|i| inodes.contains(i))
            .count()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop the server (SIGTERM) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `haul ARGS` with a deadline.
pub fn haul(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(haul_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, TRANSFER_TIMEOUT)
}

/// The repository root (for the shipped key file).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A copy of the shipped client key with mode 0600 (OpenSSH refuses a readable key file).
pub fn shipped_key(dir: &TempDir) -> PathBuf {
    let src = repo_root().join("control-plane/keys/client_ed25519");
    let dst = dir.join("shipped_key");
    std::fs::copy(src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}
