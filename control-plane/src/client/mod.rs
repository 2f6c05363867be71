//! The client side of the gate: open SSH to `haul serve`, check its host key, open the one
//! `haul-transfer` exec channel, and run the client's half of the transfer over it
//! ([`transfer`]).
//!
//! Invariants:
//! - The host key is checked before authentication: against the URL's `hostkey=` pin
//!   (`haul get`/`put`; a mismatch refuses), against a known-hosts file with trust on first use
//!   (`haul cp` only; a changed key refuses), or not at all only under
//!   [`HostKeyCheck::InsecureAcceptAny`], which only a flag whose name says `insecure` selects.
//! - The token goes into the channel, never into the exec command.
//! - The client sends SSH keepalives while the data flows over UDP, so the gate's idle timeout
//!   does not close a working transfer.

pub mod transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use crate::hostkey::fingerprint;
use crate::session::TRANSFER_COMMAND;

/// How long connecting and the SSH handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// SSH keepalive interval while a transfer runs.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// How the server's host key is checked.
#[derive(Clone, Debug)]
pub enum HostKeyCheck {
    /// Must equal this `SHA256:...` fingerprint (the URL's `hostkey=`).
    Pinned(String),
    /// Trust on first use, kept in an OpenSSH-format known-hosts file (`haul cp` only): a new
    /// host is learnt (its fingerprint printed to stderr), a changed key is refused.
    KnownHosts { path: PathBuf, host: String, port: u16 },
    /// No check at all (`--insecure-accept-any-host-key`).
    InsecureAcceptAny,
}

/// Client failures; each says whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's (or an attacker's): the host key is not the expected one.
    #[error(
        "host key mismatch: the server presented {got}, expected {expected}; refusing to connect"
    )]
    HostKeyMismatch { got: String, expected: String },
    /// The server's key changed since it was first seen.
    #[error(
        "host key of {host} changed (now {got}); if that is expected, remove its line from {file}"
    )]
    HostKeyChanged { host: String, got: String, file: String },
    /// The network's or the server's.
    #[error("ssh to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    /// The server refused our key or our request.
    #[error("ssh to {addr}: {why}")]
    Refused { addr: SocketAddr, why: String },
}

/// The SSH client's callbacks: only the host key check.
#[derive(Debug)]
pub struct Checker {
    check: HostKeyCheck,
    /// What went wrong, for the error message (russh reports only "unknown key").
    failure: Arc<std::sync::Mutex<Option<ClientError>>>,
}

impl Checker {
    fn verdict(&self, key: &PublicKey) -> Result<(), ClientError> {
        let got = fingerprint(key);
        match &self.check {
            HostKeyCheck::InsecureAcceptAny => Ok(()),
            HostKeyCheck::Pinned(expected) if *expected == got => Ok(()),
            HostKeyCheck::Pinned(expected) => {
                Err(ClientError::HostKeyMismatch { got, expected: expected.clone() })
            }
            HostKeyCheck::KnownHosts { path, host, port } => {
                let changed = || ClientError::HostKeyChanged {
                    host: host.clone(),
                    got: got.clone(),
                    file: path.display().to_string(),
                };
                match russh::keys::check_known_hosts_path(host, *port, key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        eprintln!(
                            "haul: new host {host}:{port}, key {got}; remembered in {}",
                            path.display()
                        );
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        russh::keys::known_hosts::learn_known_hosts_path(host, *port, key, path)
                            .map_err(|_| changed())
                    }
                    Err(_) => Err(changed()),
                }
            }
        }
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        match self.verdict(key) {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// An open SSH connection with its transfer channel running `haul-transfer`.
pub struct Connected {
    pub handle: Handle<ChannelHandler>,
    pub stream: russh::ChannelStream<client::Msg>,
    pub local: SocketAddr,
    pub server: SocketAddr,
}

/// The handler type of a [`Connected`] session.
pub type ChannelHandler = Checker;

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("local", &self.local)
            .field("server", &self.server)
            .finish()
    }
}

/// Connect, check the host key, authenticate `user` with `key`, and exec the transfer command.
pub async fn connect(
    addr: SocketAddr,
    check: HostKeyCheck,
    user: &str,
    key: PrivateKey,
) -> Result<Connected, ClientError> {
    let connect_err = |why: String| ClientError::Connect { addr, why };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().map_err(|e| connect_err(e.to_string()))?;
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE),
        nodelay: true,
        ..Default::default()
    });
    let failure = Arc::new(std::sync::Mutex::new(None));
    let checker = Checker { check, failure: failure.clone() };
    let handshake = client::connect_stream(config, tcp, checker);
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => return Err(connect_err("the SSH handshake timed out".into())),
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            let taken = failure.lock().ok().and_then(|mut f| f.take());
            return Err(taken.unwrap_or_else(|| connect_err(e.to_string())));
        }
    };
    let refused = |why: String| ClientError::Refused { addr, why };
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .map_err(|e| refused(e.to_string()))?;
    if !auth.success() {
        return Err(refused(format!("the server does not accept this key for user {user:?}")));
    }
    let channel = handle.channel_open_session().await.map_err(|e| refused(e.to_string()))?;
    channel.exec(true, TRANSFER_COMMAND).await.map_err(|e| refused(e.to_string()))?;
    Ok(Connected { handle, stream: channel.into_stream(), local, server: addr })
}

/// Bytes through a stream, each way: the tests assert the SSH channel carried little.
#[derive(Debug)]
pub struct Counting<S> {
    pub inner: S,
    pub read: Arc<AtomicU64>,
    pub written: Arc<AtomicU64>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting { inner, read: Arc::default(), written: Arc::default() }
    }
}

impl<S: std::io::Read> std::io::Read for Counting<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<S: std::io::Write> std::io::Write for Counting<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a client run asks for, beyond the connection.
#[derive(Debug)]
pub enum Job {
    /// `haul put`: these files (manifest entries and their sources), and either nothing or
    /// per file the owner and extended attributes to send (`--preserve-owner`/`-xattrs`; the
    /// gate applies them only when its operator consents).
    Put {
        files: Vec<haul_proto::session::FileEntry>,
        sources: Vec<PathBuf>,
        attrs: Vec<haul_proto::setup::FileAttrs>,
    },
    /// `haul get`: into this directory.
    Get { dest: PathBuf },
}

/// A finished client run: the data plane's report and the SSH channel's byte counts.
#[derive(Debug)]
pub struct ClientRun {
    pub report: haul_io::transfer::TransferReport,
    pub channel_bytes_sent: u64,
    pub channel_bytes_received: u64,
    /// From the call to the data plane's start: connect, host key check, login, Ask, grant,
    /// key derivation, Offer and Accept (the set-up latency; the benchmark prints it).
    pub setup: Duration,
}

/// Why a client run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Ssh(#[from] ClientError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// The system's: no async runtime, or the process could not be hardened.
    #[error("starting the SSH client: {0}")]
    Runtime(std::io::Error),
}

/// Everything one client run needs.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub check: HostKeyCheck,
    pub user: String,
    pub key: PrivateKey,
}

/// Connect to `target`, then run `job` with `ask` over the channel, blocking this thread (the
/// SSH connection runs on a small runtime of its own).
pub fn run_blocking(
    target: Target,
    ask: &crate::session::Ask,
    job: Job,
    opts: &transfer::ClientOptions,
) -> Result<ClientRun, RunError> {
    let started = std::time::Instant::now();
    // Before any key exists: no core file or unprivileged ptrace can copy the keys out.
    haul_io::secmem::make_undumpable()
        .map_err(|e| RunError::Runtime(std::io::Error::other(e.to_string())))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    // The channel stream spawns its writer task on first use: it needs the runtime's context
    // on this (non-runtime) thread too.
    let _context = rt.enter();
    let conn = rt.block_on(connect(target.addr, target.check, &target.user, target.key))?;
    let local_ip = opts.bind_ip.unwrap_or(conn.local.ip());
    let ends = transfer::Endpoints { local_ip, server_ip: conn.server.ip() };
    let bridge = tokio_util::io::SyncIoBridge::new_with_handle(conn.stream, rt.handle().clone());
    let mut s = Counting::new(bridge);
    let mut data_plane_at = None;
    let mut mark = || data_plane_at = Some(started.elapsed());
    let report = match job {
        Job::Put { files, sources, attrs } => {
            transfer::put(&mut s, ask, (files, sources, attrs), ends, opts, &mut mark)
        }
        Job::Get { dest } => transfer::get(&mut s, ask, &dest, ends, opts, &mut mark),
    };
    let (sent, received) = (s.written.load(Ordering::Relaxed), s.read.load(Ordering::Relaxed));
    drop(s);
    let handle = conn.handle;
    rt.block_on(async move {
        let _ = handle.disconnect(russh::Disconnect::ByApplication, "", "").await;
    });
    Ok(ClientRun {
        report: report?,
        channel_bytes_sent: sent,
        channel_bytes_received: received,
        setup: data_plane_at.unwrap_or_default(),
    })
}
