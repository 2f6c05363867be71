//! `haul serve`: the appliance's start-up. Loads (or creates, on first start) the host key in
//! the data directory, binds the SSH gate and runs it until asked to stop.
//!
//! Invariants: nothing listens before the host key is loaded and checked; the process is made
//! non-dumpable before any session key exists (`haul_io::secmem`); the web console is started
//! beside this by the caller (`haul serve` calls `web::spawn`); the first two lines on
//! stdout are `ssh listening on ADDR` and `host key SHA256:...` (scripts and tests read them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use russh::server::Server as _;

use crate::authz::Authorizer;
use crate::gate::limits::{Counters, Ledger, Limits};
use crate::gate::transfer::DataPlaneConfig;
use crate::gate::{GateServer, GateState, ssh_config};
use crate::hostkey::{HostKeyError, load_or_create, shipped_client_key};

/// `--ssh-listen` default: every address, port 33001.
pub const DEFAULT_SSH_LISTEN: &str = "0.0.0.0:33001";
/// `--udp-listen` default: every address; each transfer's shards get kernel-chosen ports.
pub const DEFAULT_UDP_LISTEN: &str = "0.0.0.0:0";
/// `--web-listen` default (the web console, issue 6).
pub const DEFAULT_WEB_LISTEN: &str = "0.0.0.0:8443";
/// Most shards one transfer gets on the gate.
pub const MAX_SHARDS_PER_TRANSFER: u8 = 4;

/// Everything `haul serve` was told.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub ssh_listen: SocketAddr,
    pub udp_listen: SocketAddr,
    /// The web console's address; `haul serve` binds it with `web::spawn`, not this module.
    pub web_listen: SocketAddr,
    pub limits: Limits,
    pub shards: u8,
}

/// Start-up failures; each says whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// The operator's: a bad flag value.
    #[error("{0}")]
    Config(String),
    /// The system's: binding or serving the SSH port.
    #[error("ssh listener {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The running gate, for the caller's start-up report.
#[derive(Debug)]
pub struct Started {
    pub ssh_addr: SocketAddr,
    pub fingerprint: String,
    pub counters: Arc<Counters>,
}

/// Check the config, load the host key, bind, report, then serve until `stop` resolves.
pub async fn run(
    cfg: ServeConfig,
    authz: Arc<dyn Authorizer>,
    on_started: impl FnOnce(&Started),
    stop: impl std::future::Future<Output = ()>,
) -> Result<Arc<Counters>, ServeError> {
    if cfg.udp_listen.port() != 0 {
        return Err(ServeError::Config(format!(
            "--udp-listen {}: give port 0 (each transfer's shards take kernel-chosen ports)",
            cfg.udp_listen
        )));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ServeError::Config(format!("data dir {}: {e}", cfg.data_dir.display())))?;
    let host = load_or_create(&cfg.data_dir)?;
    let shipped = shipped_client_key()?;
    let counters = Arc::new(Counters::default());
    let state = Arc::new(GateState {
        authz,
        shipped_key: shipped.public_key().clone(),
        ledger: Ledger::new(cfg.limits.clone()),
        counters: counters.clone(),
        dataplane: DataPlaneConfig {
            udp_ip: cfg.udp_listen.ip(),
            shards: cfg.shards.clamp(1, MAX_SHARDS_PER_TRANSFER),
            backend: None,
        },
    });
    let listen = |source| ServeError::Listen { addr: cfg.ssh_listen, source };
    let listener = tokio::net::TcpListener::bind(cfg.ssh_listen).await.map_err(listen)?;
    let ssh_addr = listener.local_addr().map_err(listen)?;
    let fingerprint = host.fingerprint();
    let config = Arc::new(ssh_config(host.private_key().clone(), &cfg.limits));
    drop(host);
    on_started(&Started { ssh_addr, fingerprint, counters: counters.clone() });
    tracing::info!(%ssh_addr, web_listen = %cfg.web_listen, "haul serve started");
    let mut server = GateServer { state };
    let running = server.run_on_socket(config, &listener);
    let handle = running.handle();
    tokio::select! {
        r = running => r.map_err(listen)?,
        () = stop => handle.shutdown("haul serve is stopping".into()),
    }
    Ok(counters)
}
