//! The web console: HTTPS server, pages, admin console and JSON API (issue 6). docs/WEB.md is
//! the operator's guide; this module is the entry point `haul serve` calls.
//!
//! - [`spawn`] binds the listener, loads or creates the TLS identity, creates the first admin
//!   on first start, and serves until the returned [`WebHandle`] is shut down; [`serve`] does the
//!   same and waits for a shutdown future.
//! - [`app::app`] builds every route and layer from an [`state::AppState`].
//!
//! Invariants:
//! - HTTPS only: no plain-HTTP listener exists.
//! - The first admin's one-time password goes to `DATA_DIR/initial-admin-password` (0600) and
//!   nowhere else: not standard output, not the log. [`WebHandle::initial_admin_password_file`]
//!   tells the caller where it is, so `haul serve` can print the path.
//! - SQL stays in `store/`; handlers call the store through [`state::AppState::db`]
//!   (`spawn_blocking`), never on the async threads.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod app;
pub mod assets;
pub mod audit;
pub mod download;
pub mod error;
pub mod external;
pub mod external_link;
pub mod external_notify;
pub mod first_admin;
pub mod gate_ledger;
pub mod keys;
pub mod mfa;
pub mod package_files;
pub mod package_limits;
pub mod packages;
pub mod password;
pub mod security;
pub mod session;
pub mod settings;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod totp;
pub mod trace;
pub mod transfer_urls;
pub mod views;
pub mod workgroups;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Keyring;
use crate::store::{Store, StoreError};
use crate::users::Cidr;

pub use state::{Clock, ManualClock, SystemClock};
pub use tls::TlsSource;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long graceful shutdown waits for open requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the console needs from `haul serve`.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Address to listen on (port 0: any free port; see [`WebHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The data directory (already checked by the caller: `secret::ensure_data_dir`).
    pub data_dir: PathBuf,
    pub tls: TlsSource,
    /// Proxies whose `X-Forwarded-For` is believed; empty: none.
    pub trusted_proxies: Vec<Cidr>,
    /// The clock sessions, throttling and the audit log read (tests pass a [`ManualClock`]).
    pub clock: Arc<dyn Clock>,
}

impl WebConfig {
    /// A configuration with a self-signed certificate for `localhost`, no trusted proxies and
    /// the system clock.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> WebConfig {
        WebConfig {
            listen,
            data_dir,
            tls: TlsSource::SelfSigned { names: vec!["localhost".into(), "127.0.0.1".into()] },
            trusted_proxies: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the console could not start. Each says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web console TLS (operator: fix the certificate or key): {0}")]
    Tls(String),
    #[error("web console I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("web console could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("web console store: {0}")]
    Store(#[from] StoreError),
    #[error("web console start-up: {0}")]
    Internal(String),
}

/// A running console.
#[derive(Debug)]
pub struct WebHandle {
    local_addr: SocketAddr,
    initial_admin_password_file: Option<PathBuf>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl WebHandle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the first admin's one-time password was written, if this start created it.
    pub fn initial_admin_password_file(&self) -> Option<&std::path::Path> {
        self.initial_admin_password_file.as_deref()
    }

    /// Stops accepting, lets open requests finish (up to [`SHUTDOWN_GRACE`]) and waits.
    pub async fn shutdown(self) -> Result<(), WebError> {
        self.sweeper.abort();
        self.handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        match self.task.await {
            Ok(r) => r.map_err(|e| WebError::Internal(format!("server: {e}"))),
            Err(e) => Err(WebError::Internal(format!("server task: {e}"))),
        }
    }
}

/// Starts the console on the current tokio runtime and returns once it is listening.
pub async fn spawn(
    config: WebConfig,
    store: Arc<Store>,
    keys: Arc<Keyring>,
) -> Result<WebHandle, WebError> {
    let tls = tls::server_config(&config.tls, &config.data_dir)?;
    let now_s = config.clock.now_s();
    let initial_admin_password_file = {
        let store = store.clone();
        let dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || first_admin::ensure(&store, &dir, now_s))
            .await
            .map_err(|e| WebError::Internal(e.to_string()))??
    };
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|source| WebError::Bind { addr: config.listen, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| WebError::Bind { addr: config.listen, source })?;
    let local_addr =
        listener.local_addr().map_err(|source| WebError::Bind { addr: config.listen, source })?;
    let app_state = state::AppState::new(config, store, keys);
    // Removes expired and fully delivered packages' files (issue 6, package limits).
    let sweeper = tokio::spawn(package_limits::run(app_state.clone()));
    let router = app::app(app_state);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handshake_timeout(HANDSHAKE_TIMEOUT);
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp(listener)
        .map_err(|source| WebError::Bind { addr: local_addr, source })?
        .acceptor(acceptor)
        .handle(handle.clone());
    let task =
        tokio::spawn(server.serve(router.into_make_service_with_connect_info::<SocketAddr>()));
    Ok(WebHandle { local_addr, initial_admin_password_file, handle, task, sweeper })
}

/// Runs the console until `shutdown` completes (for `haul serve`: pass its signal future).
pub async fn serve(
    config: WebConfig,
    store: Arc<Store>,
    keys: Arc<Keyring>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebError> {
    let h = spawn(config, store, keys).await?;
    if let Some(path) = h.initial_admin_password_file() {
        // The path only: the password itself never reaches a log.
        tracing::info!("first admin created: its one-time password is in {}", path.display());
    }
    shutdown.await;
    h.shutdown().await
}
