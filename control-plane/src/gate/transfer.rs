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

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use haul_io::backend::BackendKind;
use haul_io::transfer::{
    Keys, RecvJob, RecvOptions, SendJob, TransferReport, bind_shards, prepare_receive,
    run_receiver_to, run_sender_from,
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
    /// The address its shard sockets bind (port 0: the kernel picks one per shard).
    pub udp_ip: IpAddr,
    /// Shards per download the gate sends (uploads take the client's count, at most this).
    pub shards: u8,
    pub backend: Option<BackendKind>,
}

/// Who the SSH login proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The shared transfer account with the shipped key: proves nothing; the token decides.
    TransferAccount,
    /// A user with their own key (`haul cp`): the user's storage and restrictions decide.
    User(String),
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
    let result = run_granted(s, &ask, &ask_frame, &grant, client_ip, cfg);
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

fn run_granted<S: Read + Write>(
    s: &mut S,
    ask: &Ask,
    ask_frame: &[u8],
    grant: &Grant,
    client_ip: IpAddr,
    cfg: &DataPlaneConfig,
) -> Result<TransferReport, SessionError> {
    let g = Granted {
        server_random: fresh_random()?,
        suite: grant.suite,
        policy: grant.policy,
        rate_bps: grant.rate_bps,
        min_rate_bps: grant.min_rate_bps,
    };
    let reply = Reply::Granted(g).encode();
    write_frame(s, &reply)?;
    let Reply::Granted(g) = Reply::decode(&reply)? else {
        unreachable!("we encoded a grant just above");
    };
    let keys = derive_keys(&ask.client_random, &g.server_random, ask_frame, &reply);
    crate::testhook::expose_keys(&keys, &ask.token);
    match grant.direction {
        Direction::Upload => receive_upload(s, keys, &g, grant, client_ip, cfg),
        Direction::Download => send_download(s, keys, &g, grant, client_ip, cfg),
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
    grant: &Grant,
    client_ip: IpAddr,
    cfg: &DataPlaneConfig,
) -> Result<TransferReport, SessionError> {
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
    let dest = upload_dir(grant);
    let options = RecvOptions {
        overwrite: overwrite_of(valid.overwrite),
        resume: resume_of(valid.resume),
        // Owner, xattrs and setid are not preserved through the gate.
        ..Default::default()
    };
    let resume = match prepare_receive(&dest, &valid.manifest, &options) {
        Ok(r) => r,
        Err(e) => return Err(refuse(s, RefuseCode::Destination, e.to_string())),
    };
    let params = valid.params(fresh_session_id()?);
    let sockets = bind_shards(cfg.udp_ip, params.shards, cfg.backend)?;
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
    let result = run_receiver_to(job, &[], Some(client_ip), None);
    send_message(s, &Message::Summary(summary_of(&result)))?;
    // Bye is a courtesy; a client that vanished after the Summary changes nothing.
    let _ = read_frame(s);
    let report = result?;
    if let haul_proto::session::Outcome::Aborted { reason, .. } = report.outcome {
        return Err(SessionError::Peer(format!("the upload aborted: {reason:?}")));
    }
    Ok(report)
}

fn send_download<S: Read + Write>(
    s: &mut S,
    keys: SessionKeys,
    g: &Granted,
    grant: &Grant,
    client_ip: IpAddr,
    cfg: &DataPlaneConfig,
) -> Result<TransferReport, SessionError> {
    let roots: Vec<PathBuf> = grant.paths.iter().map(|p| grant.root.join(p)).collect();
    let walked = haul_io::files::walk(&roots)
        .map_err(|e| SessionError::Peer(format!("the package cannot be read: {e}")))?;
    let (files, sources): (Vec<_>, Vec<_>) =
        walked.files.into_iter().map(|f| (f.entry, f.path)).unzip();
    let prefs = (OverwritePref::default(), ResumePref::default());
    let offer = offer_for(g, keys.transcript, cfg.shards.max(1), client_ip.is_ipv6(), files, prefs);
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
    let mut params = valid.params(fresh_session_id()?);
    params.rate.target_bps = theirs.target_rate_bps.max(params.rate.min_bps);
    let sockets = bind_shards(cfg.udp_ip, params.shards, cfg.backend)?;
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
    let report = run_sender_from(job, Some(client_ip), None)?;
    finish_sending(s, &report, "client")?;
    Ok(report)
}
