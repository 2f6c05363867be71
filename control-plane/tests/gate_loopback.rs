//! The gate and the client, in process, over loopback: SSH on a port-0 listener, data over UDP
//! through haul-io, with a test `Authorizer` (the real one is the token side's; the e2e tests in
//! tests/ drive the release binary with real tokens).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haul_control::authz::{
    Authorizer, Direction, Grant, Outcome, Refusal, RefusalCode, TransferAsk,
};
use haul_control::client::transfer::ClientOptions;
use haul_control::client::{ClientError, HostKeyCheck, Job, RunError, Target, run_blocking};
use haul_control::gate::TRANSFER_ACCOUNT;
use haul_control::gate::limits::{Counters, Limits};
use haul_control::serve::{ServeConfig, run};
use haul_control::session::{Ask, SessionError, fresh_random};
use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;

/// Grants token "good" (downloads: the URL path under the root; uploads: into the root),
/// refuses "expired" as expired and anything else as tampered.
struct TestAuthz {
    root: PathBuf,
    finished: Mutex<Vec<Outcome>>,
    grants: AtomicUsize,
}

impl Authorizer for TestAuthz {
    fn authorize(&self, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let code = match ask.token.0.as_str() {
            "good" => None,
            "expired" => Some(RefusalCode::Expired),
            _ => Some(RefusalCode::Tampered),
        };
        if let Some(code) = code {
            return Err(Refusal { code, detail: "test".into() });
        }
        self.grants.fetch_add(1, Ordering::Relaxed);
        let paths = match ask.direction {
            Direction::Download => vec![ask.path.trim_start_matches('/').to_string()],
            Direction::Upload => vec![],
        };
        Ok(Grant {
            token_id: [0; 16],
            user: "alice".into(),
            direction: ask.direction,
            root: self.root.clone(),
            paths,
            suite: SuiteId::Aes128CfbCmac,
            rate_bps: 2_000_000_000,
            min_rate_bps: 0,
            policy: Policy::Fair,
            single_use: false,
        })
    }
    fn finish(&self, _grant: &Grant, outcome: Outcome) {
        self.finished.lock().unwrap().push(outcome);
    }
}

struct Server {
    addr: SocketAddr,
    fingerprint: String,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    authz: Arc<TestAuthz>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the gate may take to record a transfer's end once the client has returned. Nominal
/// is microseconds; the deadline is for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(60);

/// Wait until `seen()` equals `want`, or fail after [`SETTLE`]. The gate records a transfer's end
/// (its counters, `Authorizer::finish`) after its last frame to the client (the `Bye` of a
/// finished transfer, the `Refused` reply), so the client can return first: tests wait for the
/// state they assert instead of reading it the moment the client returns.
fn settle<T: PartialEq + std::fmt::Debug>(what: &str, want: T, mut seen: impl FnMut() -> T) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = seen();
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now:?} after {SETTLE:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).unwrap();
    let d = std::env::temp_dir().join(format!("haul-gate-{tag}-{:016x}", u64::from_le_bytes(r)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(root: &Path, limits: Limits) -> Server {
    let data_dir = tmpdir("data");
    let authz = Arc::new(TestAuthz {
        root: root.to_path_buf(),
        finished: Mutex::default(),
        grants: AtomicUsize::new(0),
    });
    let cfg = ServeConfig {
        data_dir,
        ssh_listen: "127.0.0.1:0".parse().unwrap(),
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        web_listen: "127.0.0.1:0".parse().unwrap(),
        limits,
        shards: 2,
        preserve_owner: false,
        preserve_xattrs: false,
        datagram_size_max: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let a: Arc<dyn Authorizer> = authz.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let on = |s: &haul_control::serve::Started| {
                tx.send((s.ssh_addr, s.fingerprint.clone(), s.counters.clone())).unwrap();
            };
            run(cfg, a, on, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let (addr, fingerprint, counters) =
        rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    Server { addr, fingerprint, counters, stop: Some(stop_tx), thread: Some(thread), authz }
}

fn ask(direction: Direction, path: &str, token: &str) -> Ask {
    Ask {
        direction,
        client_random: fresh_random().unwrap(),
        path: path.into(),
        token: haul_control::authz::SecretToken(zeroize::Zeroizing::new(token.into())),
        suite: None,
        policy: None,
        rate_bps: None,
        min_rate_bps: None,
    }
}

fn target(s: &Server, check: HostKeyCheck) -> Target {
    Target {
        addr: s.addr,
        check,
        user: TRANSFER_ACCOUNT.into(),
        key: haul_control::hostkey::shipped_client_key().unwrap(),
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        shards: 2,
        overwrite: Default::default(),
        resume: Default::default(),
        backend: None,
        bind_ip: None,
        preserve_owner: false,
        preserve_xattrs: false,
        datagram_size: None,
    }
}

fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let mut x = blake3::Hasher::new_keyed(&seed).finalize_xof();
    x.fill(&mut data);
    std::fs::write(path, data).unwrap();
}

fn put_job(path: &Path) -> Job {
    let w = haul_io::files::walk(&[path.to_path_buf()]).unwrap();
    let (files, sources) = w.files.into_iter().map(|f| (f.entry, f.path)).unzip();
    Job::Put { files, sources, attrs: Vec::new() }
}

#[test]
fn put_then_get_64_mib_over_the_gate() {
    let root = tmpdir("root");
    let src_dir = tmpdir("src");
    let src = src_dir.join("big.bin");
    random_file(&src, 64 << 20);
    let server = start(&root, Limits::default());
    let pin = HostKeyCheck::Pinned(server.fingerprint.clone());

    let up = run_blocking(
        target(&server, pin.clone()),
        &ask(Direction::Upload, "/", "good"),
        put_job(&src),
        &opts(),
    )
    .unwrap();
    assert_eq!(std::fs::read(root.join("big.bin")).unwrap(), std::fs::read(&src).unwrap());
    assert!(
        up.channel_bytes_sent < 64 << 10,
        "ssh channel carried {} bytes up",
        up.channel_bytes_sent
    );
    assert!(up.channel_bytes_received < 64 << 10, "{} bytes down", up.channel_bytes_received);
    // At most 9000 bytes each: `haul put` probes the path MTU, which reaches jumbo frames on
    // loopback.
    assert!(
        up.report.io.datagrams_sent >= (64 << 20) / 9000,
        "udp carried the data: {:?}",
        up.report.io
    );

    let dest = tmpdir("dest");
    let down = run_blocking(
        target(&server, pin),
        &ask(Direction::Download, "/big.bin", "good"),
        Job::Get { dest: dest.clone() },
        &opts(),
    )
    .unwrap();
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), std::fs::read(&src).unwrap());
    assert!(down.channel_bytes_sent < 64 << 10 && down.channel_bytes_received < 64 << 10);
    assert!(down.report.io.datagrams_received >= (64 << 20) / 9000, "{:?}", down.report.io);
    settle("outcomes", vec![Outcome::Complete; 2], || {
        server.authz.finished.lock().unwrap().clone()
    });
    for d in [root, src_dir, dest] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn refused_token_leaves_nothing_and_says_why() {
    let root = tmpdir("root");
    let src_dir = tmpdir("src");
    random_file(&src_dir.join("f"), 4096);
    let server = start(&root, Limits::default());
    let pin = HostKeyCheck::Pinned(server.fingerprint.clone());
    for (token, code) in [("expired", "expired"), ("forged", "bad-token")] {
        let e = run_blocking(
            target(&server, pin.clone()),
            &ask(Direction::Upload, "/", token),
            put_job(&src_dir.join("f")),
            &opts(),
        )
        .unwrap_err();
        match &e {
            RunError::Session(SessionError::Unauthorized(c)) => assert_eq!(c.as_str(), code),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(&format!("unauthorized to transfer: {code}")), "{e}");
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "no file, no partial");
    assert_eq!(server.authz.grants.load(Ordering::Relaxed), 0);
    let token = haul_control::gate::policy::RefusalKind::Token;
    settle("token refusals", 2, || server.counters.refused(token));
    for d in [root, src_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn wrong_host_key_pin_is_refused_before_login() {
    let root = tmpdir("root");
    let server = start(&root, Limits::default());
    let wrong = HostKeyCheck::Pinned("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let e = run_blocking(
        target(&server, wrong),
        &ask(Direction::Download, "/x", "good"),
        Job::Get { dest: root.clone() },
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(e, RunError::Ssh(ClientError::HostKeyMismatch { .. })), "{e}");
    assert!(e.to_string().contains(&server.fingerprint), "names what it saw: {e}");
    assert_eq!(server.authz.grants.load(Ordering::Relaxed), 0);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn twenty_concurrent_transfers() {
    let root = tmpdir("root");
    for i in 0..20 {
        random_file(&root.join(format!("f{i}")), 1 << 20);
    }
    let server = start(&root, Limits::default());
    let pin = HostKeyCheck::Pinned(server.fingerprint.clone());
    let dests: Vec<PathBuf> = (0..20).map(|_| tmpdir("dest")).collect();
    std::thread::scope(|sc| {
        let handles: Vec<_> = dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let t = target(&server, pin.clone());
                let o = ClientOptions { shards: 1, ..opts() };
                sc.spawn(move || {
                    run_blocking(
                        t,
                        &ask(Direction::Download, &format!("/f{i}"), "good"),
                        Job::Get { dest: d.clone() },
                        &o,
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    for (i, d) in dests.iter().enumerate() {
        assert_eq!(
            std::fs::read(d.join(format!("f{i}"))).unwrap(),
            std::fs::read(root.join(format!("f{i}"))).unwrap()
        );
        std::fs::remove_dir_all(d).unwrap();
    }
    settle("transfers ok", 20, || server.counters.transfers_ok.load(Ordering::Relaxed));
    std::fs::remove_dir_all(root).unwrap();
}

/// No reflection: a client whose UDP comes from a third address (127.0.0.3, not the SSH
/// connection's 127.0.0.1) asks for a download; the gate sends that address nothing.
#[test]
fn a_download_is_never_aimed_at_a_third_address() {
    let root = tmpdir("root");
    random_file(&root.join("f"), 4 << 20);
    let server = start(&root, Limits::default());
    let pin = HostKeyCheck::Pinned(server.fingerprint.clone());
    let dest = tmpdir("dest");
    let third: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let o = ClientOptions { bind_ip: Some(third), ..opts() };
    let r = run_blocking(
        target(&server, pin),
        &ask(Direction::Download, "/f", "good"),
        Job::Get { dest: dest.clone() },
        &o,
    );
    assert!(r.is_err(), "the download cannot complete");
    assert!(!dest.join("f").exists());
    settle("transfers failed", 1, || server.counters.transfers_failed.load(Ordering::Relaxed));
    settle("outcomes", vec![Outcome::Interrupted], || {
        server.authz.finished.lock().unwrap().clone()
    });
    for d in [root, dest] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
