//! The gate's side of one transfer, after the SSH layer accepted the `haul-transfer` exec: read
//! the Ask, authorize it, settle the keys, then run the data plane (docs/GATE.md).
//!
//! Invariants:
//! - Nothing is bound, created or started before [`Authorizer::authorize`] returned a grant; a
//!   refusal answers `Reply::Refused` and leaves no socket, no session and no file.
//! - Every grant is released with [`Authorizer::finish`], whatever happened after it.
//! - The gate's sender never sends to an address it was told: its shards start without a peer
//!   and learn it from the client's first authenticated datagram (no reflection), so a
//!   download starts only when the client's receiver speaks first.
//! - The token is never logged; the log names the token side's refusal code and detail.
//! - A single-use grant's progress is recorded ([`Authorizer::record_partial`]) while data
//!   flows, so its resume grant is bound to the token id, the path and that partial: a resumed
//!   download whose client claims less than the recorded partial, less one checkpoint interval
//!   per file and the bytes that may have been in flight, is refused (the token bought one
//!   copy; it may finish it, not start it again).
//! - The data plane runs under the connection's [`CancelHandle`]: a client that goes away
//!   (its SSH channel or connection closes) stops it at once and the use ends interrupted.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haul_io::backend::BackendKind;
use haul_io::files::checkpoint::checkpoint_interval_bytes;
use haul_io::transfer::{
    CancelHandle, Keys, Progress, RecvJob, RecvOptions, SKIP_FILE, SendJob, TransferReport,
    bind_shards, bind_shards_in, prepare_receive, run_receiver_cancellable, run_sender_cancellable,
};
use haul_proto::session::Role;
use haul_proto::setup::{Accept, Message, OverwritePref, ResumePref, validate_offer};

use crate::authz::{Authorizer, Direction, Grant, Outcome, TransferAsk};
use crate::session::{
    Ask, Granted, Reply, SessionError, SessionKeys, derive_keys, finish_sending, fresh_random,
    fresh_session_id, offer_for, overwrite_of, read_frame, read_message, resume_of, send_message,
    summary_of, write_frame,
};

/// How the gate runs the data plane of its transfers.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// The address its shard sockets bind.
    pub udp_ip: IpAddr,
    /// The ports they take (`--udp-listen IP:LO-HI`); `None`: the kernel picks one per shard.
    pub udp_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Shards per download the gate sends (uploads take the client's count, at most this).
    pub shards: u8,
    /// The operator's consent (`haul serve --allow-preserve-owner`): uploads may set the
    /// owners their client sends, downloads send the files' owners.
    pub preserve_owner: bool,
    /// The same for extended attributes (`--allow-preserve-xattrs`), POSIX ACLs included.
    pub preserve_xattrs: bool,
    pub backend: Option<BackendKind>,
    /// The operator's datagram-size ceiling (`haul serve --datagram-size N`, checked by
    /// [`check_datagram_size`]): downloads offer and probe no larger, uploads answer no probe
    /// above it and refuse an offer above it. `None`: probe up to a jumbo frame.
    pub datagram_size_max: Option<u16>,
}

/// Checks an operator's datagram-size ceiling: the range the wire allows
/// (`MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE`, as every `--datagram-size` flag).
pub fn check_datagram_size(n: u16) -> Result<u16, String> {
    use haul_proto::setup::validate::{MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE};
    if (MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "datagram size {n} is outside {MIN_DATAGRAM_SIZE}..={MAX_DATAGRAM_SIZE} \
             (UDP payload bytes per datagram)"
        ))
    }
}

impl DataPlaneConfig {
    /// `limit`, lowered to the operator's ceiling if there is one.
    fn capped(&self, limit: u16) -> u16 {
        self.datagram_size_max.map_or(limit, |n| n.min(limit))
    }

    /// Bind `shards` shard sockets per the `--udp-listen` ports.
    fn bind(&self, shards: u8) -> Result<haul_io::transfer::ShardSockets, SessionError> {
        let sockets = match &self.udp_ports {
            None => bind_shards(self.udp_ip, shards, self.backend)?,
            Some(r) => bind_shards_in(self.udp_ip, r.clone(), shards, self.backend)?,
        };
        let ports: Vec<u16> = sockets.local_addrs().iter().map(SocketAddr::port).collect();
        tracing::info!(?ports, "data plane bound its UDP ports");
        Ok(sockets)
    }
}

/// Who the SSH login proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The shared transfer account with the shipped key: proves nothing; the token decides.
    TransferAccount,
    /// A user with their own key (`haul cp`): the user's storage and restrictions decide.
    User(String),
}

/// How often a single-use grant's progress is written to the store.
pub const RECORD_PARTIAL_EVERY: Duration = Duration::from_millis(500);
/// Bytes a download's sender may have counted as sent that never reached the client's disk
/// (in flight, in socket buffers, not yet checkpointed beyond the per-file interval). A
/// resumed download may claim this much less than its grant recorded.
pub const RESUME_IN_FLIGHT_BYTES: u64 = 64 << 20;

/// Writes a single-use grant's progress to its resume grant, at most every
/// [`RECORD_PARTIAL_EVERY`].
struct PartialRecorder<'a> {
    authz: &'a dyn Authorizer,
    grant: &'a Grant,
    /// Bytes already there when this session started (its resume offsets).
    base: u64,
    last: Mutex<Option<Instant>>,
}

impl PartialRecorder<'_> {
    fn on_progress(&self, p: &Progress) {
        let Some(path) = self.grant.paths.first().filter(|_| self.grant.single_use) else {
            return;
        };
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_some_and(|t| t.elapsed() < RECORD_PARTIAL_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let fresh = p.bytes_done.saturating_sub(p.resent_bytes);
        self.authz.record_partial(self.grant, path, self.base.saturating_add(fresh));
    }
}

/// What one finished transfer looked like, for the log and the counters.
#[derive(Debug)]
pub struct Served {
    pub direction: Direction,
    pub report: TransferReport,
}

/// Run one transfer over the exec channel `s`, from the Ask to the last frame.
pub fn serve_transfer<S: Read + Write>(
    s: &mut S,
    authz: &dyn Authorizer,
    identity: &Identity,
    client_ip: IpAddr,
    cfg: &DataPlaneConfig,
    cancel: &CancelHandle,
) -> Result<Served, SessionError> {
    let ask_frame = read_frame(s)?
        .ok_or_else(|| SessionError::Peer("the client closed before its ask".into()))?;
    let ask = Ask::decode(&ask_frame)?;
    let t_ask = TransferAsk {
        token: &ask.token,
        direction: ask.direction,
        path: &ask.path,
        client_ip,
        suite: ask.suite,
        rate_bps: ask.rate_bps,
        min_rate_bps: ask.min_rate_bps,
        policy: ask.policy,
    };
    let decision = match identity {
        Identity::TransferAccount => authz.authorize(&t_ask),
        Identity::User(user) => authz.authorize_user(user, &t_ask),
    };
    let grant = match decision {
        Ok(g) => g,
        Err(r) => {
            tracing::warn!(%client_ip, code = r.code.code(), detail = %r.detail, "token refused");
            let _ = write_frame(s, &Reply::Refused { code: r.code.code().into() }.encode());
            return Err(SessionError::Unauthorized(r.code.code().into()));
        }
    };
    tracing::info!(%client_ip, user = %grant.user, direction = grant.direction.name(), "transfer granted");
    let run = Run { authz, grant: &grant, client_ip, cfg, cancel };
    let result = run_granted(s, &ask, &ask_frame, &run);
    // A channel closed after a complete transfer (the client's Bye, then close) is no
    // interruption; one closed before is, and the data plane stopped early because of it.
    if result.is_err() && cancel.is_cancelled() {
        tracing::warn!(%client_ip, "transfer interrupted: the client's SSH channel closed");
    }
    let outcome = match &result {
        Ok(_) => Outcome::Complete,
        Err(_) => Outcome::Interrupted,
    };
    if grant.direction == Direction::Download {
        authz.on_bytes_sent(&grant, outcome, result.as_ref().ok().map(|r| r.bytes));
    }
    authz.finish(&grant, outcome);
    result.map(|report| Served { direction: grant.direction, report })
}

/// One granted transfer's context.
struct Run<'a> {
    authz: &'a dyn Authorizer,
    grant: &'a Grant,
    client_ip: IpAddr,
    cfg: &'a DataPlaneConfig,
    cancel: &'a CancelHandle,
}

fn run_granted<S: Read + Write>(
    s: &mut S,
    ask: &Ask,
    ask_frame: &[u8],
    run: &Run<'_>,
) -> Result<TransferReport, SessionError> {
    let grant = run.grant;
    let g = Granted {
        server_random: fresh_random()?,
        suite: grant.suite,
        policy: grant.policy,
        rate_bps: grant.rate_bps,
        min_rate_bps: grant.min_rate_bps,
        max_shards: run.cfg.shards.max(1),
    };
    let reply = Reply::Granted(g).encode();
    write_frame(s, &reply)?;
    let Reply::Granted(g) = Reply::decode(&reply)? else {
        unreachable!("we encoded a grant just above");
    };
    let keys = derive_keys(&ask.client_random, &g.server_random, ask_frame, &reply);
    crate::testhook::expose_keys(&keys, &ask.token);
    match grant.direction {
        Direction::Upload => receive_upload(s, keys, &g, run),
        Direction::Download => send_download(s, keys, &g, run),
    }
}

fn keys_of(k: &SessionKeys) -> Keys {
    Keys {
        secret: k.secret.clone(),
        client_random: k.client_random,
        server_random: k.server_random,
        role: Role::Server,
    }
}

/// The directory an upload writes beneath: the grant's root, or its one allowed directory.
fn upload_dir(grant: &Grant) -> PathBuf {
    grant.paths.first().map_or_else(|| grant.root.clone(), |p| grant.root.join(p))
}

fn receive_upload<S: Read + Write>(
    s: &mut S,
    keys: SessionKeys,
    g: &Granted,
    run: &Run<'_>,
) -> Result<TransferReport, SessionError> {
    let (grant, cfg) = (run.grant, run.cfg);
    let Message::Offer(offer) = read_message(s, "offer")? else {
        return Err(SessionError::Peer("the client sent something else than its Offer".into()));
    };
    let refuse = |s: &mut S, code, reason: String| {
        let _ = send_message(
            s,
            &Message::Refuse(haul_proto::setup::Refuse { code, reason: reason.clone() }),
        );
        SessionError::Peer(reason)
    };
    let valid = match validate_offer(&offer, &keys.transcript) {
        Ok(v) => v,
        Err(r) => return Err(refuse(s, r.code, r.reason)),
    };
    use haul_proto::setup::RefuseCode;
    if offer.suite != g.suite as u8
        || offer.policy != g.policy as u8
        || offer.target_rate_bps > g.rate_bps
        || offer.shards > cfg.shards.max(1)
    {
        let why = "the offer departs from the granted terms (suite, policy, rate or shards)";
        return Err(refuse(s, RefuseCode::BadParams, why.into()));
    }
    if offer.datagram_size > cfg.capped(offer.datagram_size) {
        let why = format!(
            "the client offers {}-byte datagrams, above this gate's ceiling of {} \
             (rerun with --datagram-size {} or less)",
            offer.datagram_size,
            cfg.capped(offer.datagram_size),
            cfg.capped(offer.datagram_size)
        );
        return Err(refuse(s, RefuseCode::BadParams, why));
    }
    let dest = upload_dir(grant);
    // Owner and xattrs: the client sent them and the operator consents. Setid bits are
    // never kept through the gate.
    let options = RecvOptions {
        overwrite: overwrite_of(valid.overwrite),
        resume: resume_of(valid.resume),
        preserve_owner: cfg.preserve_owner,
        preserve_xattrs: cfg.preserve_xattrs,
        file_attrs: valid.attrs.clone(),
        ..Default::default()
    };
    let resume = match prepare_receive(&dest, &valid.manifest, &options) {
        Ok(r) => r,
        Err(e) => return Err(refuse(s, RefuseCode::Destination, e.to_string())),
    };
    let mut params = valid.params(fresh_session_id()?);
    // The client probes the path (docs/DATAPLANE.md "Path MTU"): acknowledge any size up to
    // the operator's ceiling; probes above it go unanswered.
    params.datagram_size_max = cfg.capped(haul_proto::pmtu::MAX_PROBE_SIZE);
    let sockets = cfg.bind(params.shards)?;
    let accept = Accept {
        session_id: params.session_id,
        target_rate_bps: params.rate.target_bps,
        ports: sockets.local_addrs().iter().map(SocketAddr::port).collect(),
        resume: resume.clone(),
    };
    send_message(s, &Message::Accept(accept))?;
    let job = RecvJob {
        params,
        keys: keys_of(&keys),
        manifest: Arc::new(valid.manifest),
        dest,
        options,
        sockets,
        resume,
        pin_cores: false,
    };
    drop(keys);
    let base = resume_base(&job.resume, &job.manifest);
    let rec = PartialRecorder { authz: run.authz, grant, base, last: Mutex::new(None) };
    let on_progress = |p: &Progress| rec.on_progress(p);
    let result =
        run_receiver_cancellable(job, &[], Some(run.client_ip), Some(&on_progress), run.cancel);
    send_message(s, &Message::Summary(summary_of(&result)))?;
    // Bye is a courtesy; a client that vanished after the Summary changes nothing.
    let _ = read_frame(s);
    let report = result?;
    if let haul_proto::session::Outcome::Aborted { reason, .. } = report.outcome {
        return Err(SessionError::Peer(format!("the upload aborted: {reason:?}")));
    }
    Ok(report)
}

/// What a download sends of each file's owner and extended attributes: nothing unless the
/// operator consents (the client applies them only if it asks too).
fn attrs_of(
    sources: &[PathBuf],
    cfg: &DataPlaneConfig,
) -> Result<Vec<haul_proto::setup::FileAttrs>, SessionError> {
    use std::os::unix::fs::MetadataExt;
    if !cfg.preserve_owner && !cfg.preserve_xattrs {
        return Ok(Vec::new());
    }
    let unreadable = |p: &std::path::Path, e: &dyn std::fmt::Display| {
        SessionError::Peer(format!("the package cannot be read: {}: {e}", p.display()))
    };
    sources
        .iter()
        .map(|path| {
            let mut a = haul_proto::setup::FileAttrs::default();
            if cfg.preserve_owner {
                let meta = std::fs::symlink_metadata(path).map_err(|e| unreadable(path, &e))?;
                a.owner = Some((meta.uid(), meta.gid()));
            }
            if cfg.preserve_xattrs {
                a.xattrs =
                    haul_io::files::read_xattrs(path).map_err(|e| unreadable(path, &e))?.xattrs;
            }
            Ok(a)
        })
        .collect()
}

/// Bytes the resume offsets say are already there (skipped files count as whole).
fn resume_base(resume: &[u64], manifest: &haul_proto::session::Manifest) -> u64 {
    (0..manifest.file_count())
        .zip(resume)
        .map(|(f, &r)| {
            let size = manifest.file(f).map_or(0, |e| e.size);
            if r == SKIP_FILE { size } else { r.min(size) }
        })
        .sum()
}

/// What a resumed download of a single-use grant may claim at least: the recorded partial
/// less one checkpoint interval per file and [`RESUME_IN_FLIGHT_BYTES`].
fn resume_floor(recorded: u64, manifest: &haul_proto::session::Manifest) -> u64 {
    let slack: u64 = (0..manifest.file_count())
        .map(|f| checkpoint_interval_bytes(manifest.file(f).map_or(0, |e| e.size)))
        .sum::<u64>()
        .saturating_add(RESUME_IN_FLIGHT_BYTES);
    recorded.saturating_sub(slack)
}

fn send_download<S: Read + Write>(
    s: &mut S,
    keys: SessionKeys,
    g: &Granted,
    run: &Run<'_>,
) -> Result<TransferReport, SessionError> {
    let (grant, client_ip, cfg) = (run.grant, run.client_ip, run.cfg);
    let roots: Vec<PathBuf> = grant.paths.iter().map(|p| grant.root.join(p)).collect();
    let walked = haul_io::files::walk(&roots)
        .map_err(|e| SessionError::Peer(format!("the package cannot be read: {e}")))?;
    let (files, sources): (Vec<_>, Vec<_>) =
        walked.files.into_iter().map(|f| (f.entry, f.path)).unzip();
    let prefs = (OverwritePref::default(), ResumePref::default());
    let mut offer =
        offer_for(g, keys.transcript, cfg.shards.max(1), client_ip.is_ipv6(), files, prefs);
    offer.attrs = attrs_of(&sources, cfg)?;
    // Start no larger than the operator's ceiling (the probing below stays under it too).
    offer.datagram_size = cfg.capped(offer.datagram_size);
    let valid = validate_offer(&offer, &keys.transcript)
        .map_err(|r| SessionError::Peer(format!("cannot offer the package: {}", r.reason)))?;
    send_message(s, &Message::Offer(offer))?;
    let Message::Accept(theirs) = read_message(s, "accept")? else {
        return Err(SessionError::Peer("the client sent something else than Accept".into()));
    };
    let n_files = valid.manifest.file_count() as usize;
    if theirs.resume.len() != n_files || theirs.target_rate_bps > g.rate_bps {
        return Err(SessionError::Peer("the client's Accept does not match the offer".into()));
    }
    let base = resume_base(&theirs.resume, &valid.manifest);
    let recorded = grant.paths.first().and_then(|p| run.authz.resume_partial_bytes(grant, p));
    if let Some(floor) = recorded.map(|r| resume_floor(r, &valid.manifest))
        && base < floor
    {
        let reason = format!(
            "unauthorized to transfer: resume-below-grant: this single-use URL already \
             delivered {} bytes; rerun it into the destination that holds the partial file",
            recorded.unwrap_or(0)
        );
        let refuse = haul_proto::setup::Refuse {
            code: haul_proto::setup::RefuseCode::BadParams,
            reason: reason.clone(),
        };
        let _ = send_message(s, &Message::Refuse(refuse));
        return Err(SessionError::Peer(reason));
    }
    let mut params = valid.params(fresh_session_id()?);
    params.rate.target_bps = theirs.target_rate_bps.max(params.rate.min_bps);
    // Probe the path as `haul send` does, up to the operator's ceiling; the client's receiver
    // caps what it acknowledges too.
    params.datagram_size_max = cfg.capped(haul_proto::pmtu::sender_ceiling(client_ip.is_ipv6()));
    let sockets = cfg.bind(params.shards)?;
    let ours = Accept {
        session_id: params.session_id,
        target_rate_bps: params.rate.target_bps,
        ports: sockets.local_addrs().iter().map(SocketAddr::port).collect(),
        resume: theirs.resume.clone(),
    };
    send_message(s, &Message::Accept(ours))?;
    let job = SendJob {
        params,
        keys: keys_of(&keys),
        manifest: Arc::new(valid.manifest),
        sources,
        sockets,
        // No reflection: the client's announced ports are ignored; each shard learns its peer
        // from the client's first authenticated datagram, and only from the SSH client's IP.
        peers: vec![],
        resume: theirs.resume,
        pin_cores: false,
    };
    drop(keys);
    let rec = PartialRecorder { authz: run.authz, grant, base, last: Mutex::new(None) };
    let on_progress = |p: &Progress| rec.on_progress(p);
    let report = run_sender_cancellable(job, Some(client_ip), Some(&on_progress), run.cancel)?;
    finish_sending(s, &report, "client")?;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(ceiling: Option<u16>) -> DataPlaneConfig {
        DataPlaneConfig {
            udp_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            udp_ports: None,
            shards: 1,
            preserve_owner: false,
            preserve_xattrs: false,
            backend: None,
            datagram_size_max: ceiling,
        }
    }

    #[test]
    fn the_operators_ceiling_caps_every_limit_and_only_lowers() {
        let none = config(None);
        assert_eq!(none.capped(8972), 8972);
        assert_eq!(none.capped(1472), 1472);
        let cap = config(Some(2000));
        assert_eq!(cap.capped(8972), 2000);
        assert_eq!(cap.capped(8952), 2000);
        assert_eq!(cap.capped(1472), 1472, "a smaller limit stays");
        assert_eq!(config(Some(1200)).capped(1472), 1200, "the offer itself shrinks");
    }

    #[test]
    fn a_ceiling_outside_the_wire_range_is_the_operators_error() {
        assert_eq!(check_datagram_size(512), Ok(512));
        assert_eq!(check_datagram_size(9000), Ok(9000));
        for bad in [0, 511, 9001, u16::MAX] {
            let e = check_datagram_size(bad).unwrap_err();
            assert!(e.contains("512..=9000"), "{e}");
        }
    }
}
