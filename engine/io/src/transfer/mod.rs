//! The transfer runtime: per-core shard threads and a coordinator thread driving `haul-proto`
//! sessions over real sockets and files (docs/DATAPLANE.md, "Shards").
//!
//! A side of a transfer is one coordinator thread plus N shard threads. A shard thread owns one
//! [`Backend`] (its UDP socket and ring), one proto shard (`SenderShard` or `ReceiverShard`),
//! its read buffers and its write staging buffer; it shares nothing on the data path. Shards
//! and the coordinator talk over bounded crossbeam channels carrying the proto's
//! `ShardEvent`/`ShardCommand`.
//!
//! This module is the seam between set-up (key file today, SSH gate later) and data: callers
//! agree on [`SessionParams`], keys and the manifest however they like, bind the shard sockets
//! with [`bind_shards`] (so the ports can be told to the peer), then call [`run_sender`] or
//! [`run_receiver`].

use crate::backend::{Backend, BackendChoice, BackendKind, IoStats};
use haul_proto::crypto::SessionSecret;
use haul_proto::session::{Manifest, Outcome, RejectCounts, Role, SessionParams};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

/// The bound sockets of one side's shards, one per shard, in shard order.
#[derive(Debug)]
pub struct ShardSockets {
    pub(crate) backends: Vec<Backend>,
    pub(crate) choice: BackendChoice,
}

/// Key material agreed on the set-up channel.
#[derive(Debug)]
pub struct Keys {
    pub secret: SessionSecret,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// Which end of the set-up channel this process is.
    pub role: Role,
}

/// What the receiver does when a file's final name already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse (the default).
    #[default]
    Never,
    Always,
    /// Replace if size or mtime differ.
    IfDifferent,
    /// Replace if the existing file is older than the source.
    IfOlder,
}

/// How much of an interrupted transfer to trust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResumeLevel {
    /// Start every file over.
    None,
    /// Trust a checkpoint whose size and mtime match the source.
    #[default]
    Attributes,
    /// Also compare a BLAKE3 of sampled ranges.
    SparseChecksum,
    /// Also compare a BLAKE3 of the whole kept prefix.
    FullChecksum,
}

#[derive(Clone, Debug, Default)]
pub struct RecvOptions {
    pub overwrite: Overwrite,
    pub resume: ResumeLevel,
    /// Preserve owner and group (only when permitted).
    pub preserve_owner: bool,
    /// Keep setuid/setgid bits (only honoured for root).
    pub keep_setid: bool,
}

/// The sending side of one transfer.
#[derive(Debug)]
pub struct SendJob {
    pub params: SessionParams,
    pub keys: Keys,
    pub manifest: Arc<Manifest>,
    /// The source path of every manifest file, in manifest order.
    pub sources: Vec<PathBuf>,
    pub sockets: ShardSockets,
    /// The receiver's shard addresses, in shard order.
    pub peers: Vec<SocketAddr>,
    /// Per file: bytes of its prefix the receiver already has (a multiple of the block size).
    pub resume: Vec<u64>,
    /// Pin shard threads to cores.
    pub pin_cores: bool,
}

/// The receiving side of one transfer.
#[derive(Debug)]
pub struct RecvJob {
    pub params: SessionParams,
    pub keys: Keys,
    pub manifest: Arc<Manifest>,
    /// The destination directory; every file is created beneath it.
    pub dest: PathBuf,
    pub options: RecvOptions,
    pub sockets: ShardSockets,
    /// From [`prepare_receive`]: per file, the prefix already on disk and kept.
    pub resume: Vec<u64>,
    pub pin_cores: bool,
}

/// A snapshot for progress displays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bps: u64,
    pub resent_bytes: u64,
    pub elapsed: std::time::Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the file as verified by the receiver.
    pub blake3: [u8; 32],
}

/// What one side saw of a transfer.
#[derive(Clone, Debug)]
pub struct TransferReport {
    pub outcome: Outcome,
    pub files: Vec<FileSummary>,
    /// File bytes moved in this session (not counting a resumed prefix).
    pub bytes: u64,
    pub elapsed: std::time::Duration,
    pub resent_bytes: u64,
    pub rejects: RejectCounts,
    pub io: IoStats,
    pub backend: BackendKind,
    /// User + system CPU seconds of this process during the transfer.
    pub cpu_seconds: f64,
}

#[derive(Debug, Error)]
pub enum TransferError {
    #[error("network: {0}")]
    Io(#[from] crate::error::IoError),
    #[error("{0}")]
    Setup(String),
    #[error("session: {0}")]
    Session(#[from] haul_proto::session::SessionError),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("a shard thread failed: {0}")]
    Thread(String),
}

/// Bind one UDP socket per shard on `ip` (port 0: the kernel picks), with the chosen backend.
pub fn bind_shards(
    ip: IpAddr,
    shards: u8,
    force: Option<BackendKind>,
) -> Result<ShardSockets, TransferError> {
    let _ = (ip, shards, force);
    Err(TransferError::Setup("bind_shards: runtime not built yet".into()))
}

impl ShardSockets {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.backends.iter().map(Backend::local_addr).collect()
    }
    pub fn choice(&self) -> &BackendChoice {
        &self.choice
    }
}

/// Check the destination and decide, per file, what an earlier interrupted transfer left that
/// can be kept (per the options' resume level and overwrite policy). Errors name the file.
pub fn prepare_receive(
    dest: &std::path::Path,
    manifest: &Manifest,
    options: &RecvOptions,
) -> Result<Vec<u64>, TransferError> {
    let _ = (dest, manifest, options);
    Err(TransferError::Setup("prepare_receive: runtime not built yet".into()))
}

/// Run the sending side to its end.
pub fn run_sender(
    job: SendJob,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    let _ = (job, progress);
    Err(TransferError::Setup("run_sender: runtime not built yet".into()))
}

/// Run the receiving side to its end.
pub fn run_receiver(
    job: RecvJob,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport, TransferError> {
    let _ = (job, progress);
    Err(TransferError::Setup("run_receiver: runtime not built yet".into()))
}
