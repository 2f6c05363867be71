//! The client's half of an SSH-mode transfer (docs/GATE.md; the message order is in
//! `session.rs`): send the Ask, take the grant, derive the keys, then send (`put`) or receive
//! (`get`) over UDP with haul-io's transfer runtime.
//!
//! Invariants: the client uses the gate's settled terms (suite, policy, rates) and never more;
//! on a download its receiver speaks first, to the gate's shard ports, so the gate's sender
//! learns the client's address from an authenticated datagram; a `put` trusts its run only
//! when the gate's Summary lists the same BLAKE3 per file.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haul_io::backend::BackendKind;
use haul_io::transfer::{
    Keys, RecvJob, RecvOptions, SendJob, TransferReport, bind_shards, prepare_receive,
    run_receiver_to, run_sender,
};
use haul_proto::session::{FileEntry, Role};
use haul_proto::setup::{Accept, FileAttrs, Message, OverwritePref, ResumePref, validate_offer};

use crate::session::{
    Ask, Granted, Reply, SessionError, SessionKeys, derive_keys, finish_sending, offer_for,
    overwrite_of, read_frame, read_message, resume_of, send_message, summary_of, write_frame,
};

/// The client's own choices.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Shards of an upload (the gate caps them).
    pub shards: u8,
    pub overwrite: OverwritePref,
    pub resume: ResumePref,
    pub backend: Option<BackendKind>,
    /// Where the client's UDP sockets bind (default: the SSH connection's local address).
    pub bind_ip: Option<IpAddr>,
    /// `haul get`: apply the owners / extended attributes the gate sends (it sends them only
    /// when its operator consents; owners need root or CAP_CHOWN here).
    pub preserve_owner: bool,
    pub preserve_xattrs: bool,
    /// `--datagram-size N`: a put sends N-byte datagrams and does not probe; a get refuses an
    /// offer above N and acknowledges no probe above N. `None` (auto): probe the path
    /// (docs/DATAPLANE.md "Path MTU").
    pub datagram_size: Option<u16>,
}

/// Where the two ends are: the client's shards bind `local_ip`; the gate's shards are at
/// `server_ip` and the ports it announces.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub local_ip: IpAddr,
    pub server_ip: IpAddr,
}

/// Send the Ask and read the gate's answer; derive the keys on a grant.
fn ask_for<S: Read + Write>(s: &mut S, ask: &Ask) -> Result<(Granted, SessionKeys), SessionError> {
    let ask_frame = ask.encode();
    write_frame(s, &ask_frame)?;
    let reply_frame = read_frame(s)?
        .ok_or_else(|| SessionError::Peer("the gate closed the channel before answering".into()))?;
    match Reply::decode(&reply_frame)? {
        Reply::Refused { code } => Err(SessionError::Unauthorized(code)),
        Reply::Granted(g) => {
            let keys = derive_keys(&ask.client_random, &g.server_random, &ask_frame, &reply_frame);
            crate::testhook::expose_keys(&keys, &ask.token);
            Ok((g, keys))
        }
    }
}

fn keys_of(k: &SessionKeys) -> Keys {
    Keys {
        secret: k.secret.clone(),
        client_random: k.client_random,
        server_random: k.server_random,
        role: Role::Client,
    }
}

/// `haul put`: send `files` (read from `sources`, in the same order) to the gate.
pub fn put<S: Read + Write>(
    s: &mut S,
    ask: &Ask,
    (files, sources, attrs): (Vec<FileEntry>, Vec<PathBuf>, Vec<FileAttrs>),
    ends: Endpoints,
    opts: &ClientOptions,
    on_data_plane: &mut dyn FnMut(),
) -> Result<TransferReport, SessionError> {
    let (g, keys) = ask_for(s, ask)?;
    let prefs = (opts.overwrite, opts.resume);
    let shards = opts.shards.clamp(1, g.max_shards.max(1));
    let mut offer = offer_for(&g, keys.transcript, shards, ends.server_ip.is_ipv6(), files, prefs);
    offer.attrs = attrs;
    if let Some(n) = opts.datagram_size {
        offer.datagram_size = n;
    }
    let valid = validate_offer(&offer, &keys.transcript)
        .map_err(|r| SessionError::Peer(format!("cannot offer this transfer: {}", r.reason)))?;
    send_message(s, &Message::Offer(offer))?;
    let Message::Accept(accept) = read_message(s, "accept")? else {
        return Err(SessionError::Peer("the gate sent something else than Accept".into()));
    };
    let mut params = valid.params(accept.session_id);
    if accept.ports.len() != usize::from(params.shards)
        || accept.resume.len() != valid.manifest.file_count() as usize
        || accept.target_rate_bps > params.rate.target_bps
    {
        return Err(SessionError::Peer("the gate's Accept does not match the offer".into()));
    }
    params.rate.target_bps = accept.target_rate_bps.max(params.rate.min_bps);
    if opts.datagram_size.is_none() {
        params.datagram_size_max = haul_proto::pmtu::sender_ceiling(ends.server_ip.is_ipv6());
    }
    let sockets = bind_shards(ends.local_ip, params.shards, opts.backend)?;
    let job = SendJob {
        params,
        keys: keys_of(&keys),
        manifest: Arc::new(valid.manifest),
        sources,
        sockets,
        peers: accept.ports.iter().map(|p| SocketAddr::new(ends.server_ip, *p)).collect(),
        resume: accept.resume,
        pin_cores: true,
    };
    drop(keys);
    on_data_plane();
    let report = run_sender(job, None)?;
    finish_sending(s, &report, "gate")?;
    Ok(report)
}

/// `haul get`: receive the granted files beneath `dest`.
pub fn get<S: Read + Write>(
    s: &mut S,
    ask: &Ask,
    dest: &Path,
    ends: Endpoints,
    opts: &ClientOptions,
    on_data_plane: &mut dyn FnMut(),
) -> Result<TransferReport, SessionError> {
    let (g, keys) = ask_for(s, ask)?;
    let Message::Offer(offer) = read_message(s, "offer")? else {
        return Err(SessionError::Peer("the gate sent something else than its Offer".into()));
    };
    let valid = validate_offer(&offer, &keys.transcript)
        .map_err(|r| SessionError::Peer(format!("the gate's offer is not valid: {}", r.reason)))?;
    if offer.suite != g.suite as u8
        || offer.policy != g.policy as u8
        || offer.target_rate_bps > g.rate_bps
    {
        return Err(SessionError::Peer("the gate's offer departs from its own grant".into()));
    }
    if let Some(n) = opts.datagram_size.filter(|n| offer.datagram_size > *n) {
        let size = offer.datagram_size;
        let why = format!("the gate offers {size}-byte datagrams, above --datagram-size {n}");
        return Err(SessionError::Peer(why));
    }
    // Owner and xattrs: the gate sent them (its operator consents) and this client asks.
    // Setid bits are never kept through the gate.
    let options = RecvOptions {
        overwrite: overwrite_of(opts.overwrite),
        resume: resume_of(opts.resume),
        preserve_owner: opts.preserve_owner,
        preserve_xattrs: opts.preserve_xattrs,
        file_attrs: valid.attrs.clone(),
        ..Default::default()
    };
    let resume = prepare_receive(dest, &valid.manifest, &options)?;
    let shards = offer.shards;
    let sockets = bind_shards(ends.local_ip, shards, opts.backend)?;
    let target = ask.rate_bps.map_or(offer.target_rate_bps, |r| r.min(offer.target_rate_bps));
    let ours = Accept {
        session_id: 0,
        target_rate_bps: target.max(offer.min_rate_bps),
        ports: sockets.local_addrs().iter().map(SocketAddr::port).collect(),
        resume: resume.clone(),
    };
    send_message(s, &Message::Accept(ours))?;
    let Message::Accept(theirs) = read_message(s, "accept")? else {
        return Err(SessionError::Peer("the gate sent something else than Accept".into()));
    };
    let mut params = valid.params(theirs.session_id);
    if theirs.ports.len() != usize::from(params.shards) || theirs.resume != resume {
        return Err(SessionError::Peer("the gate's Accept does not match ours".into()));
    }
    params.rate.target_bps = theirs.target_rate_bps;
    params.datagram_size_max = opts.datagram_size.unwrap_or(haul_proto::pmtu::MAX_PROBE_SIZE);
    let peers: Vec<SocketAddr> =
        theirs.ports.iter().map(|p| SocketAddr::new(ends.server_ip, *p)).collect();
    let job = RecvJob {
        params,
        keys: keys_of(&keys),
        manifest: Arc::new(valid.manifest),
        dest: dest.to_path_buf(),
        options,
        sockets,
        resume,
        pin_cores: true,
    };
    drop(keys);
    on_data_plane();
    let result = run_receiver_to(job, &peers, Some(ends.server_ip), None);
    send_message(s, &Message::Summary(summary_of(&result)))?;
    let _ = read_frame(s);
    let report = result?;
    if let haul_proto::session::Outcome::Aborted { reason, .. } = report.outcome {
        return Err(SessionError::Peer(format!("the download aborted: {reason:?}")));
    }
    Ok(report)
}
