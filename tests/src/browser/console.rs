//! The web console under test, in-process: `haul_control::web::spawn` on 127.0.0.1 port 0 with
//! a fresh data directory (server secret, store, self-signed certificate, first admin), the
//! way `haul serve` starts it. Dropping the [`Console`] stops it and removes the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haul_control::secret;
use haul_control::store::Store;
use haul_control::web::{self, WebConfig, WebHandle};

use super::driver::spki_sha256_b64;

/// A running console and its data directory.
#[derive(Debug)]
pub struct Console {
    // Declared before `dir`: the server stops before its directory goes.
    handle: Option<WebHandle>,
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
        let now_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                as i64;
        let keys = Arc::new(secret::load_or_create(&data_dir, now_s).unwrap());
        let store = Arc::new(Store::open(&data_dir).unwrap());
        let config = WebConfig::new("127.0.0.1:0".parse().unwrap(), data_dir.clone());
        let handle = web::spawn(config, store.clone(), keys).await.unwrap();
        let addr = handle.local_addr();
        Console { handle: Some(handle), store, addr, data_dir, _dir: dir }
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

    /// What Chromium must trust: the SPKI hash of the console's certificate.
    pub fn spki(&self) -> String {
        spki_sha256_b64(&self.data_dir.join(web::tls::SELF_SIGNED_CERT))
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.unwrap();
        }
    }
}
