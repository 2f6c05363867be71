//! `haul serve`: the appliance. Thin: opens the data directory (server secret, store), builds
//! the token authorizer, and runs `haul_control::serve` until SIGINT or SIGTERM.
//!
//! Invariants: the process is made non-dumpable before any key exists; the server refuses to
//! start when the secret, the store or the host key fails its checks (the message says how to
//! fix it); the first two stdout lines are `ssh listening on ADDR` and `host key SHA256:...`;
//! logs go to stderr (`--log-level`, or `RUST_LOG`), and never hold a token or a key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use haul_control::authorize::{TokenAuthorizer, system_now_s};
use haul_control::gate::limits::Limits;
use haul_control::serve::{
    DEFAULT_SSH_LISTEN, DEFAULT_UDP_LISTEN, DEFAULT_WEB_LISTEN, ServeConfig, Started, UdpListen,
    run,
};
use haul_control::store::Store;
use haul_control::web::gate_ledger::GateLedger;
use haul_control::web::{self, WebConfig};

/// `haul serve` flags (docs/GATE.md; the defaults are part of the command-line contract).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The appliance's state: server secret, store, host key, user storage.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The SSH gate's address.
    #[arg(long, default_value = DEFAULT_SSH_LISTEN)]
    pub ssh_listen: SocketAddr,
    /// The address the transfers' UDP shard sockets bind, and their ports: IP:0 (each shard a
    /// kernel-chosen port, announced inside the SSH channel), IP:PORT (one fixed port) or
    /// IP:LO-HI (a range, e.g. 0.0.0.0:33001-33100, for firewalls).
    #[arg(long, default_value = DEFAULT_UDP_LISTEN)]
    pub udp_listen: UdpListen,
    /// The web console's address (HTTPS).
    #[arg(long, default_value = DEFAULT_WEB_LISTEN)]
    pub web_listen: SocketAddr,
    /// Concurrent transfers on this server.
    #[arg(long, default_value_t = Limits::default().transfers)]
    pub max_transfers: usize,
    /// Concurrent transfers from one source address.
    #[arg(long, default_value_t = Limits::default().transfers_per_address)]
    pub max_transfers_per_address: usize,
    /// Concurrent SSH connections from one source address.
    #[arg(long, default_value_t = Limits::default().connections_per_address)]
    pub max_connections_per_address: usize,
    /// Authentication attempts per connection.
    #[arg(long, default_value_t = Limits::default().auth_attempts)]
    pub max_auth_attempts: usize,
    /// Failed authentications from one source address within --auth-window before the
    /// address is blocked for --auth-backoff (doubling for each further block, up to an hour).
    #[arg(long, default_value_t = Limits::default().auth_failures_per_address, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_auth_failures_per_address: usize,
    /// Seconds the failed authentications of an address are counted over.
    #[arg(long, default_value_t = Limits::default().auth_window.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub auth_window: u64,
    /// Seconds an address is blocked the first time.
    #[arg(long, default_value_t = Limits::default().auth_backoff.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub auth_backoff: u64,
    /// Seconds a connection may stay silent (clients send keepalives during transfers).
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Consent to carry file owners through the gate: uploads whose client sends them
    /// (`haul put --preserve-owner`) get them applied (needs root or CAP_CHOWN), downloads send
    /// them (applied by `haul get --preserve-owner`). Off by default.
    #[arg(long)]
    pub allow_preserve_owner: bool,
    /// The same for extended attributes, POSIX ACLs included (`--preserve-xattrs`).
    #[arg(long)]
    pub allow_preserve_xattrs: bool,
    /// Shards per transfer on this side (at most 4).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub shards: u8,
    /// The gate's ceiling on UDP payload bytes per datagram (512..=9000), for a path whose
    /// MTU is smaller than the route says (a VPN, a tunnel): downloads start and probe no
    /// larger, uploads answer no probe above it and refuse a client that offers more.
    /// Default: probe the path up to a jumbo frame.
    #[arg(long, value_parser = parse_gate_datagram_size)]
    pub datagram_size: Option<u16>,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// `--datagram-size N` of `haul serve`: a number in the range every `--datagram-size` takes.
fn parse_gate_datagram_size(s: &str) -> Result<u16, String> {
    let n = s.trim().parse::<u16>().map_err(|_| format!("`{s}` is not a size in 512..=9000"))?;
    haul_control::gate::transfer::check_datagram_size(n)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Record where the gate listens, so `haul token mint` writes it into URLs: the port always,
/// the host only when the listener names a specific address.
fn record_public_address(store: &Store, ssh: SocketAddr) {
    use haul_control::store::settings::{KEY_PUBLIC_HOST, KEY_PUBLIC_PORT};
    let now = system_now_s();
    let mut r = store.set_setting(KEY_PUBLIC_PORT, &ssh.port().to_string(), now);
    if !ssh.ip().is_unspecified() {
        r = r.and_then(|()| store.set_setting(KEY_PUBLIC_HOST, &ssh.ip().to_string(), now));
    }
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not record the public address for minted URLs");
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    init_logging(&a.log_level);
    haul_io::secmem::make_undumpable().context("making the process non-dumpable")?;
    if haul_io::secmem::can_lock_all_memory() {
        haul_io::secmem::lock_all_memory().context("locking memory (mlockall)")?;
        tracing::info!("memory locked: session keys never reach swap");
    } else {
        tracing::warn!(
            "memory not locked: session keys could reach swap; run with LimitMEMLOCK=infinity \
             (systemd) or ulimit -l unlimited"
        );
    }
    haul_control::secret::ensure_data_dir(&a.data_dir)?;
    let keyring = haul_control::secret::load_or_create(&a.data_dir, system_now_s())?;
    let store = Store::open(&a.data_dir)
        .with_context(|| format!("opening the store in {}", a.data_dir.display()))?;
    let store = Arc::new(store);
    // The console needs its own keyring: the authorizer owns the one it is given.
    let web_keys = Arc::new(haul_control::secret::load(&a.data_dir)?);
    let packages = haul_control::web::package_files::StorePackages { store: store.clone() };
    let authz = TokenAuthorizer::new(store.clone(), keyring, &a.data_dir)?
        .with_packages(Box::new(packages));
    let web_cfg = WebConfig::new(a.web_listen, a.data_dir.clone());
    let cfg = ServeConfig {
        data_dir: a.data_dir,
        ssh_listen: a.ssh_listen,
        udp_listen: a.udp_listen,
        web_listen: a.web_listen,
        limits: Limits {
            connections_per_address: a.max_connections_per_address,
            transfers_per_address: a.max_transfers_per_address,
            transfers: a.max_transfers,
            auth_attempts: a.max_auth_attempts,
            auth_failures_per_address: a.max_auth_failures_per_address,
            auth_window: Duration::from_secs(a.auth_window),
            auth_backoff: Duration::from_secs(a.auth_backoff),
            idle_timeout: Duration::from_secs(a.idle_timeout),
        },
        shards: a.shards,
        preserve_owner: a.allow_preserve_owner,
        preserve_xattrs: a.allow_preserve_xattrs,
        datagram_size_max: a.datagram_size,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let counters = rt.block_on(async {
        let web = web::spawn(web_cfg, store.clone(), web_keys).await?;
        let on_started = |s: &Started| {
            record_public_address(&store, s.ssh_addr);
            println!("ssh listening on {}", s.ssh_addr);
            println!("host key {}", s.fingerprint);
            println!("web console on https://{}/", web.local_addr());
            if let Some(path) = web.initial_admin_password_file() {
                // The path only: the password itself never reaches stdout or a log.
                println!(
                    "first admin: user {}, one-time password in {}",
                    web::first_admin::FIRST_ADMIN_NAME,
                    path.display()
                );
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
        };
        // The ledger audits tokens at the gate and charges external links' downloads.
        let authz = GateLedger::new(authz, store.clone(), &cfg.data_dir);
        let counters = run(cfg, Arc::new(authz), on_started, shutdown_signal()).await?;
        web.shutdown().await?;
        anyhow::Ok(counters)
    })?;
    let refused: Vec<String> = counters
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    tracing::info!(refused = %refused.join(" "), "haul serve stopped");
    Ok(())
}
