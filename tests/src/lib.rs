//! Helpers for the end-to-end tests in `tests/tests/`: they run the RELEASE `haul` binary as
//! real processes over loopback sockets.
//!
//! Invariants: every child process is waited for with a generous deadline (at least 10x the
//! nominal time) and killed if it overruns, so a hung transfer fails its test instead of
//! hanging CI; every temporary directory is removed when its guard drops; nothing here
//! asserts a speed.
//!
//! The binary: `$HAUL_BIN` if set, else `<target dir>/release/haul` next to the test's own
//! profile directory. `scripts/test` builds it first (`cargo build --release -p haul`).

#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failure is a test failure"
)]

pub mod browser;
pub mod hostile;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Deadline for one small transfer (nominally well under a second on loopback).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for `haul recv` to print its address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The release `haul` binary; panics with the command to run when it is missing.
pub fn haul_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HAUL_BIN") {
        return PathBuf::from(p);
    }
    // current_exe = <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir");
    let bin = target.join("release").join("haul");
    assert!(
        bin.is_file(),
        "the release haul binary is missing at {}: run `cargo build --release -p haul` \
         (scripts/test does) or set HAUL_BIN",
        bin.display()
    );
    bin
}

/// A temporary directory under /dev/shm (or the system temp dir), removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("haul-e2e-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `haul keygen` into `dir/name`; returns the path.
pub fn keygen(dir: &TempDir, name: &str) -> PathBuf {
    let p = dir.join(name);
    let out = run(Command::new(haul_bin()).arg("keygen").arg(&p), TRANSFER_TIMEOUT);
    assert!(out.status.success(), "keygen failed: {}", stderr(&out));
    p
}

/// Every source arrived under `dest` by its file name, byte for byte.
pub fn assert_copied(srcs: &[PathBuf], dest: &Path) {
    for src in srcs {
        let name = src.file_name().expect("a source names a file");
        let same = std::fs::read(src).unwrap() == std::fs::read(dest.join(name)).unwrap();
        assert!(same, "{} differs from its copy in {}", src.display(), dest.display());
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run to completion with a deadline; kill and panic on overrun.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    wait(child.expect("spawning haul"), timeout, &what)
}

/// Wait for `child` (stdout/stderr piped) with a deadline; kill and panic on overrun.
pub fn wait(mut child: Child, timeout: Duration, what: &str) -> Output {
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(out_pipe.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_t = drain(err_pipe.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
            panic!("{what} did not finish within {timeout:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// A running `haul recv` whose first stdout line (its bound address) has been read.
#[derive(Debug)]
pub struct Receiver {
    child: Option<Child>,
    pub addr: String,
    rest_of_stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Receiver {
    /// Start `haul recv --listen LISTEN --key-file KEY DEST EXTRA...`.
    pub fn start(listen: &str, key: &Path, dest: &Path, extra: &[&str]) -> Receiver {
        Self::start_with_env(listen, key, dest, extra, &[])
    }

    /// [`start`](Self::start) with extra environment variables (test hooks).
    pub fn start_with_env(
        listen: &str,
        key: &Path,
        dest: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Receiver {
        let mut cmd = Command::new(haul_bin());
        cmd.envs(env.iter().copied())
            .args(["recv", "--listen", listen, "--key-file"])
            .arg(key)
            .arg(dest)
            .args(extra);
        Self::spawn(cmd)
    }

    /// Start a prepared `haul recv` command (one run inside a network namespace, say) and
    /// wait for its address line.
    pub fn spawn(mut cmd: Command) -> Receiver {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning haul recv");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let rest = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        });
        let line = match rx.recv_timeout(LISTEN_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("haul recv printed no address within {LISTEN_TIMEOUT:?}");
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let out = wait(child, TRANSFER_TIMEOUT, "haul recv");
            panic!("haul recv did not start: {line:?} {}", stderr(&out));
        };
        Receiver { child: Some(child), addr, rest_of_stdout: Some(rest) }
    }

    /// Wait for the receiver to exit; stdout holds what followed the address line.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let child = self.child.take().unwrap();
        let mut out = wait(child, timeout, "haul recv");
        out.stdout = self.rest_of_stdout.take().unwrap().join().unwrap();
        out
    }

    /// Kill the receiver (for --keep-listening) and collect what it printed.
    pub fn kill(mut self) -> Output {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let mut out = wait(child, TRANSFER_TIMEOUT, "haul recv (killed)");
        out.stdout = self.rest_of_stdout.take().unwrap().join().unwrap();
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `haul send --to ADDR --key-file KEY EXTRA... PATHS...`, waited for.
pub fn send(addr: &str, key: &Path, paths: &[PathBuf], extra: &[&str]) -> Output {
    run(
        Command::new(haul_bin())
            .args(["send", "--to", addr, "--key-file"])
            .arg(key)
            .args(extra)
            .args(paths),
        TRANSFER_TIMEOUT,
    )
}

/// Write `size` pseudo-random bytes (seeded: reproducible) to `path`, with `mode`.
pub fn write_file(path: &Path, size: usize, seed: u64, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut xof = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Set a file's mtime to `secs` after the epoch.
pub fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

/// What the tests compare: per relative name, (BLAKE3 hex, mode & 0o7777, mtime seconds).
pub type Tree = BTreeMap<String, (String, u32, i64)>;

/// Every regular file beneath `root`, by relative name (symlinks are not followed and not
/// listed). Partial files and checkpoints left by the receiver count too: a finished transfer
/// leaves none.
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&p).unwrap()).unwrap();
                let hash = h.finalize().to_hex().to_string();
                out.insert(rel, (hash, m.mode() & 0o7777, m.mtime()));
            }
        }
    }
    out
}

/// The same tree with every name prefixed by `prefix/` (a sent directory arrives under its
/// own name).
pub fn prefixed(t: &Tree, prefix: &str) -> Tree {
    t.iter().map(|(k, v)| (format!("{prefix}/{k}"), v.clone())).collect()
}

/// Whether this host can bind ::1.
pub fn has_ipv6() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// The backends every e2e suite runs under: the default (auto) and the forced fallback.
pub const BACKENDS: [&str; 2] = ["auto", "portable"];
