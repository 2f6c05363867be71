//! `haul serve`: the appliance's start-up. Loads (or creates, on first start) the host key in
//! the data directory, binds the SSH gate and runs it until asked to stop.
//!
//! Invariants: nothing listens before the host key is loaded and checked; the process is made
//! non-dumpable before any session key exists (`haul_io::secmem`); the web console is started
//! beside this by the caller (`haul serve` calls `web::spawn`); the first two lines on
//! stdout are `ssh listening on ADDR` and `host key SHA256:...` (scripts and tests read them).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
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
/// `--udp-listen` default: every address; each transfer's shards get kernel-chosen ports
/// (`IP:PORT` or `IP:LO-HI` confine them, see [`UdpListen`]).
pub const DEFAULT_UDP_LISTEN: &str = "0.0.0.0:0";
/// `--web-listen` default (the web console, issue 6).
pub const DEFAULT_WEB_LISTEN: &str = "0.0.0.0:8443";
/// Most shards one transfer gets on the gate.
pub const MAX_SHARDS_PER_TRANSFER: u8 = 4;

/// `--udp-listen`: the address the transfers' shard sockets bind, and their ports: `IP:0`
/// (each shard a kernel-chosen port), `IP:PORT` (one fixed port: one shard of one transfer at
/// a time) or `IP:LO-HI` (each shard a free port of the range, for firewalls). IPv6: `[::]:LO-HI`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpListen {
    pub ip: IpAddr,
    /// `None`: kernel-chosen ports.
    pub ports: Option<RangeInclusive<u16>>,
}

impl std::str::FromStr for UdpListen {
    type Err = String;
    fn from_str(s: &str) -> Result<UdpListen, String> {
        let bad = |why: &str| format!("--udp-listen {s:?}: {why} (IP:0, IP:PORT or IP:LO-HI)");
        let (host, ports) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| bad("not an IP address"))?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| bad("not a port number"));
        let ports = match ports.split_once('-') {
            None if port(ports)? == 0 => None,
            None => Some(port(ports)?..=port(ports)?),
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo == 0 || hi < lo {
                    return Err(bad("a range needs 1 <= LO <= HI"));
                }
                Some(lo..=hi)
            }
        };
        Ok(UdpListen { ip, ports })
    }
}

impl std::fmt::Display for UdpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = SocketAddr::new(self.ip, 0).to_string();
        let ip = ip.strip_suffix(":0").unwrap_or(&ip);
        match &self.ports {
            None => write!(f, "{ip}:0"),
            Some(r) if r.start() == r.end() => write!(f, "{ip}:{}", r.start()),
            Some(r) => write!(f, "{ip}:{}-{}", r.start(), r.end()),
        }
    }
}

/// Everything `haul serve` was told.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub ssh_listen: SocketAddr,
    pub udp_listen: UdpListen,
    /// The web console's address; `haul serve` binds it with `web::spawn`, not this module.
    pub web_listen: SocketAddr,
    pub limits: Limits,
    pub shards: u8,
    /// The operator's consent to carry owners / extended attributes through the gate
    /// (`--allow-preserve-owner`, `--allow-preserve-xattrs`); the client must ask too.
    pub preserve_owner: bool,
    pub preserve_xattrs: bool,
    /// `--datagram-size N`: the gate's ceiling on its transfers' datagrams, both directions
    /// (`DataPlaneConfig::datagram_size_max`); `None`: probe up to a jumbo frame.
    pub datagram_size_max: Option<u16>,
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
    // A port range narrower than the shard count gets fewer shards per transfer.
    let ports_len = cfg.udp_listen.ports.as_ref().map_or(usize::MAX, |r| r.clone().count());
    let shards = cfg.shards.clamp(1, MAX_SHARDS_PER_TRANSFER);
    let shards = u8::try_from(ports_len).map_or(shards, |n| shards.min(n.max(1)));
    if let Some(n) = cfg.datagram_size_max {
        crate::gate::transfer::check_datagram_size(n)
            .map_err(|e| ServeError::Config(format!("--datagram-size: {e}")))?;
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
            udp_ip: cfg.udp_listen.ip,
            udp_ports: cfg.udp_listen.ports.clone(),
            shards,
            preserve_owner: cfg.preserve_owner,
            preserve_xattrs: cfg.preserve_xattrs,
            backend: None,
            datagram_size_max: cfg.datagram_size_max,
        },
    });
    let listen = |source| ServeError::Listen { addr: cfg.ssh_listen, source };
    let listener = tokio::net::TcpListener::bind(cfg.ssh_listen).await.map_err(listen)?;
    let ssh_addr = listener.local_addr().map_err(listen)?;
    let fingerprint = host.fingerprint();
    let config = Arc::new(ssh_config(host.private_key().clone(), &cfg.limits));
    drop(host);
    on_started(&Started { ssh_addr, fingerprint, counters: counters.clone() });
    tracing::info!(%ssh_addr, udp_listen = %cfg.udp_listen, web_listen = %cfg.web_listen, "haul serve started");
    let mut server = GateServer { state };
    let running = server.run_on_socket(config, &listener);
    let handle = running.handle();
    tokio::select! {
        r = running => r.map_err(listen)?,
        () = stop => handle.shutdown("haul serve is stopping".into()),
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_listen_parses_port_zero_a_fixed_port_and_a_range() {
        let p = |s: &str| s.parse::<UdpListen>();
        assert_eq!(p("0.0.0.0:0").unwrap().ports, None);
        assert_eq!(p("127.0.0.1:33001").unwrap().ports, Some(33001..=33001));
        let r = p("0.0.0.0:33001-33100").unwrap();
        assert_eq!(r.ports, Some(33001..=33100));
        assert_eq!(r.to_string(), "0.0.0.0:33001-33100");
        assert_eq!(p("[::]:5000-5001").unwrap().to_string(), "[::]:5000-5001");
        for bad in ["0.0.0.0", "x:1", "1.2.3.4:0-5", "1.2.3.4:9-8", "1.2.3.4:70000", "1.2.3.4:a-b"]
        {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
