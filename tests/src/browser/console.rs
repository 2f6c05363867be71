//! The web console under test, in-process: `haul_control::web::spawn` on 127.0.0.1 port 0 with
//! a fresh data directory (server secret, store, self-signed certificate, first admin), and on
//! request the SSH gate (`haul_control::serve::run`) over the same directory, the way `haul
//! serve` starts them. Dropping the [`Console`] stops both and removes the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haul_control::authorize::TokenAuthorizer;
use haul_control::gate::limits::Limits;
use haul_control::secret;
use haul_control::serve::{self, ServeConfig, Started};
use haul_control::store::Store;
use haul_control::store::settings::{KEY_PUBLIC_HOST, KEY_PUBLIC_PORT};
use haul_control::web::gate_ledger::GateLedger;
use haul_control::web::package_files::StorePackages;
use haul_control::web::{self, WebConfig, WebHandle};

use super::COMMAND_TIMEOUT;
use super::driver::spki_sha256_b64;

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A running console (and, once [`Console::start_gate`] ran, the SSH gate) and its data
/// directory.
#[derive(Debug)]
pub struct Console {
    // Declared before `dir`: the servers stop before their directory goes.
    handle: Option<WebHandle>,
    gate_stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    pub store: Arc<Store>,
    addr: SocketAddr,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Console {
    /// Starts a console with the system clock, as in production.
    pub async fn start() -> Console {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        secret::ensure_data_dir(&data_dir).unwrap();
        let now_s = now_s();
        let keys = Arc::new(secret::load_or_create(&data_dir, now_s).unwrap());
        let store = Arc::new(Store::open(&data_dir).unwrap());
        let config = WebConfig::new("127.0.0.1:0".parse().unwrap(), data_dir.clone());
        let handle = web::spawn(config, store.clone(), keys).await.unwrap();
        let addr = handle.local_addr();
        Console {
            handle: Some(handle),
            gate_stop: std::sync::Mutex::new(None),
            store,
            addr,
            data_dir,
            _dir: dir,
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The first admin's one-time password, from the file the console wrote.
    pub fn initial_admin_password(&self) -> String {
        let path = self.data_dir.join(web::first_admin::INITIAL_ADMIN_PASSWORD_FILE);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Puts `bytes` as `name` into the outbox of `sender`'s only empty package: where
    /// `haul put` with the package page's URL lands files through the gate. For the look test,
    /// which runs no client; browser_flow uploads with the real `haul put`.
    pub fn place_in_outbox(&self, sender: &str, name: &str, bytes: &[u8]) {
        let outbox = self.data_dir.join("storage").join(sender).join("outbox");
        let drafts: Vec<PathBuf> = std::fs::read_dir(&outbox)
            .unwrap_or_else(|e| panic!("{}: {e}", outbox.display()))
            .map(|e| e.unwrap().path())
            .filter(|d| std::fs::read_dir(d).is_ok_and(|mut files| files.next().is_none()))
            .collect();
        assert_eq!(drafts.len(), 1, "one empty package expected in {}", outbox.display());
        std::fs::write(drafts[0].join(name), bytes).unwrap();
    }

    /// The first message in the development outbox (`DATA_DIR/outbox/*.eml`) whose text
    /// (quoted-printable decoded) contains `needle`, waiting for it up to [`COMMAND_TIMEOUT`] (mail is sent on a task).
    pub async fn mail_containing(&self, needle: &str) -> String {
        let dir = self.data_dir.join(haul_control::notify::OUTBOX_DIR);
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let found = std::fs::read_dir(&dir).into_iter().flatten().find_map(|e| {
                let text = unquote(&std::fs::read_to_string(e.ok()?.path()).ok()?);
                text.contains(needle).then_some(text)
            });
            if let Some(text) = found {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "no mail containing {needle:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// What Chromium must trust: the SPKI hash of the console's certificate.
    pub fn spki(&self) -> String {
        spki_sha256_b64(&self.data_dir.join(web::tls::SELF_SIGNED_CERT))
    }

    /// Starts the SSH gate on 127.0.0.1 port 0 over the same data directory and store, the way
    /// `haul serve` does (token authorizer with the package check, inside the gate's ledger), and records its address as
    /// the public host and port that the console puts in `haul://` URLs. Returns the address.
    pub async fn start_gate(&self) -> SocketAddr {
        let keys = secret::load(&self.data_dir).unwrap();
        let packages = Box::new(StorePackages { store: self.store.clone() });
        let authz = TokenAuthorizer::new(self.store.clone(), keys, &self.data_dir)
            .unwrap()
            .with_packages(packages);
        let authz = GateLedger::new(authz, self.store.clone(), &self.data_dir);
        let cfg = ServeConfig {
            data_dir: self.data_dir.clone(),
            ssh_listen: "127.0.0.1:0".parse().unwrap(),
            udp_listen: "127.0.0.1:0".parse().unwrap(),
            web_listen: self.addr,
            limits: Limits::default(),
            // `haul serve`'s default: the client offers as many, and the gate refuses more.
            shards: 2,
            preserve_owner: false,
            preserve_xattrs: false,
            datagram_size_max: None,
        };
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let on_started = |s: &Started| {
                let _ = started_tx.send(s.ssh_addr);
            };
            let stop = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = serve::run(cfg, Arc::new(authz), on_started, stop).await {
                eprintln!("browser tests: the gate stopped: {e}");
            }
        });
        let ssh = tokio::time::timeout(COMMAND_TIMEOUT, started_rx)
            .await
            .expect("the gate did not start in time")
            .expect("the gate failed to start (its error is above)");
        let now_s = now_s();
        self.store.set_setting(KEY_PUBLIC_HOST, &ssh.ip().to_string(), now_s).unwrap();
        self.store.set_setting(KEY_PUBLIC_PORT, &ssh.port().to_string(), now_s).unwrap();
        *self.gate_stop.lock().unwrap() = Some(stop_tx);
        ssh
    }

    /// Stops the servers gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.gate_stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            h.shutdown().await.unwrap();
        }
    }
}

/// Decodes quoted-printable text (RFC 2045 6.7): soft line breaks and `=XX` escapes.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
