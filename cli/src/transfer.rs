//! `haul send` and `haul recv` in direct mode: the set-up channel over TCP (client and
//! server), then the data plane from `haul_io::transfer`, then the summary.
//!
//! Invariants: nothing is bound, created or accepted before the peer proved it holds the PSK
//! (the sealed Offer opened); on a wrong key the server answers nothing more and closes; the
//! sender trusts its run only once the receiver's Summary reports "complete" with the same
//! per-file BLAKE3 the sender computed.

use crate::args::{self, TransferFlags};
use crate::frames::{is_unauthenticated, read_frame, read_message, send_message, write_frame};
use crate::report;
use anyhow::{Context, Result, bail};
use haul_io::transfer::{
    Keys, Progress, RecvJob, RecvOptions, SendJob, TransferReport, bind_shards, prepare_receive,
    run_receiver, run_sender,
};
use haul_proto::session::{FileEntry, Outcome, Role};
use haul_proto::setup::{
    Accept, Channel, ClientHello, DEFAULT_BLOCK_SIZE_LOG2, Message, OUTCOME_COMPLETE, Offer, Psk,
    Refuse, RefuseCode, Summary, ValidOffer, server_handle_hello, validate_offer,
};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long either end waits for the other on the set-up channel.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the sender waits for the receiver's Summary once its own side ended (the
/// receiver may still be verifying and renaming).
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(600);
/// Receiver window per shard proposed by the sender.
const WINDOW_BYTES: u64 = 256 << 20;

/// What the sender proposes, resolved from its flags.
#[derive(Debug)]
pub struct SendPlan {
    pub files: Vec<FileEntry>,
    pub sources: Vec<PathBuf>,
    /// Empty, or per file the owner and xattrs to preserve (`walk::attrs_of`).
    pub attrs: Vec<haul_proto::setup::FileAttrs>,
    pub flags: TransferFlags,
}

fn random32() -> Result<[u8; 32]> {
    let mut r = [0u8; 32];
    getrandom::fill(&mut r).context("reading the OS random generator")?;
    Ok(r)
}

fn offer_of(plan: &SendPlan, peer: SocketAddr, transcript: [u8; 32]) -> Offer {
    let f = &plan.flags;
    let v6 = peer.is_ipv6();
    Offer {
        transcript,
        suite: f.cipher.map_or(haul_proto::crypto::SuiteId::Aes128CfbCmac, |c| c.to_suite()) as u8,
        shards: f.shards.unwrap_or_else(args::default_shards),
        datagram_size: f.datagram_size.and_then(args::DatagramSize::fixed).unwrap_or(if v6 {
            1452
        } else {
            1472
        }),
        ip_overhead: if v6 { 48 } else { 28 },
        window_bytes: WINDOW_BYTES,
        min_rate_bps: f.min_rate.unwrap_or(0),
        target_rate_bps: f.rate.unwrap_or(args::DEFAULT_TARGET_RATE_BPS),
        policy: f.policy.map_or(haul_proto::rate::Policy::Fair, |p| p.to_policy()) as u8,
        block_size_log2: DEFAULT_BLOCK_SIZE_LOG2,
        overwrite: f.overwrite.map(|o| o.to_pref()).unwrap_or_default(),
        resume: f.resume.map(|r| r.to_pref()).unwrap_or_default(),
        files: plan.files.clone(),
        attrs: plan.attrs.clone(),
    }
}

/// A progress callback that can move to the thread running the transfer.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The client: set up, send, and check the receiver's summary.
pub fn send(
    to: SocketAddr,
    psk: Psk,
    plan: SendPlan,
    progress: Option<ProgressFn>,
) -> Result<TransferReport> {
    if plan.flags.keep_setid {
        bail!("--keep-setid is for `haul recv`: the receiving root decides whether to keep them");
    }
    let mut stream = TcpStream::connect_timeout(&to, SETUP_TIMEOUT)
        .with_context(|| format!("connecting to {to}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream.set_read_timeout(Some(SETUP_TIMEOUT)).context("setting a read timeout")?;
    let hello = ClientHello::new(psk, random32()?);
    write_frame(&mut stream, hello.hello_frame())?;
    let Some(reply) = read_frame(&mut stream)? else {
        bail!("{to} closed the set-up channel before its hello (is it `haul recv`?)");
    };
    let mut est = hello.handle_server_hello(&reply)?;
    let offer = offer_of(&plan, to, est.transcript);
    // Our own offer through the server's checks: the same params on both ends, and a bad
    // proposal is caught here with the same reason the server would give.
    let valid = validate_offer(&offer, &est.transcript)
        .map_err(|r| anyhow::anyhow!("cannot offer this transfer: {}", r.reason))?;
    send_message(&mut stream, &mut est.channel, &Message::Offer(offer))?;
    let accept = match read_frame(&mut stream)? {
        None => {
            bail!("key mismatch or tampered set-up: {to} closed the set-up channel on our offer")
        }
        Some(f) => match est.channel.open(&f)? {
            Message::Accept(a) => a,
            Message::Refuse(r) => bail!("{to} refused the transfer ({:?}): {}", r.code, r.reason),
            other => bail!("{to} sent {} where Accept or Refuse was expected", other.name()),
        },
    };
    let job = sender_job(&stream, &plan, &valid, &accept, &est)?;
    // No read deadline while the data flows (a transfer may take hours); the deadline for the
    // Summary starts once our side has ended (`run_watching`).
    stream.set_read_timeout(None).context("clearing the read timeout")?;
    let (report, summary) = run_watching(&stream, job, progress, &mut est, to)?;
    // The receiver may already have closed; Bye is a courtesy.
    let _ = send_message(&mut stream, &mut est.channel, &Message::Bye);
    check_summary(&report, &summary, valid.manifest.files())?;
    Ok(report)
}

/// What the two threads of [`run_watching`] report.
enum Event {
    Ran(Box<Result<TransferReport, haul_io::transfer::TransferError>>),
    Frame(Result<Option<Vec<u8>>>),
}

/// Run the sender while watching the set-up channel: a receiver that fails (a destination
/// error after Accept, a full disk) says so in an early Summary, and the sender stops at once
/// instead of waiting for the data plane's idle timeout. Returns the report and the receiver's
/// Summary.
fn run_watching(
    stream: &TcpStream,
    job: SendJob,
    progress: Option<ProgressFn>,
    est: &mut haul_proto::setup::Established,
    to: SocketAddr,
) -> Result<(TransferReport, Summary)> {
    let mut reader = stream.try_clone().context("watching the set-up channel")?;
    // Two events at most, one from each thread.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let _ = tx2.send(Event::Frame(read_frame(&mut reader)));
    });
    std::thread::spawn(move || {
        let p = progress.as_deref().map(|p| p as &(dyn Fn(&Progress) + Sync));
        let _ = tx.send(Event::Ran(Box::new(run_sender(job, p))));
    });
    let lost = || anyhow::anyhow!("a transfer thread ended without a word");
    let mut report = None;
    let mut summary = None;
    while report.is_none() || summary.is_none() {
        let event = match report {
            None => rx.recv().map_err(|_| lost())?,
            Some(_) => rx.recv_timeout(SUMMARY_TIMEOUT).map_err(|_| {
                anyhow::anyhow!("{to} sent no summary within {SUMMARY_TIMEOUT:?} of the data's end")
            })?,
        };
        match event {
            Event::Ran(r) => report = Some((*r).context("sending")?),
            Event::Frame(f) => {
                let s = match f?.map(|f| est.channel.open(&f)).transpose()? {
                    Some(Message::Summary(s)) => s,
                    Some(other) => bail!("{to} sent {} where Summary was expected", other.name()),
                    None => bail!("{to} closed the set-up channel before its summary"),
                };
                if report.is_none() && s.outcome != OUTCOME_COMPLETE {
                    let reason = haul_proto::session::AbortReason::from_u16(s.outcome);
                    // An abort of our own (a source that shrank) reached the receiver before
                    // our report was in: take the report, so the error is said in our words.
                    // Only for a reason of a sender's: a receiver's own abort (a full disk)
                    // ends this process at once, as before.
                    let ours = reason == haul_proto::session::AbortReason::DiskReadFailed;
                    if ours && let Ok(Event::Ran(r)) = rx.recv_timeout(OWN_REPORT_WAIT) {
                        let r = (*r).context("sending")?;
                        if matches!(r.outcome, Outcome::Aborted { by_peer: false, .. }) {
                            return Ok((r, s));
                        }
                    }
                    // The data plane has no cancel: returning ends this process, and the
                    // thread with it (in `bench`, the thread runs on to its idle timeout).
                    bail!("{to} ended the transfer early: {reason:?} (its log says why)");
                }
                summary = Some(s);
            }
        }
    }
    report.zip(summary).ok_or_else(lost)
}

/// How long a sender told by the receiver that the transfer aborted waits for its own report,
/// in case the abort was its own (its data plane winds down within 5 s, `WIND_DOWN`; a loaded
/// host with CPU steal can take longer, and the wait ends as soon as the report is in).
const OWN_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn sender_job(
    stream: &TcpStream,
    plan: &SendPlan,
    valid: &ValidOffer,
    accept: &Accept,
    est: &haul_proto::setup::Established,
) -> Result<SendJob> {
    let mut params = valid.params(accept.session_id);
    let files = valid.manifest.file_count() as usize;
    if accept.ports.len() != usize::from(params.shards) || accept.resume.len() != files {
        bail!("the receiver's Accept does not match the offer (ports or resume list length)");
    }
    if accept.target_rate_bps > params.rate.target_bps
        || accept.target_rate_bps < params.rate.min_bps
    {
        bail!("the receiver's rate cap {} bit/s is below our --min-rate", accept.target_rate_bps);
    }
    params.rate.target_bps = accept.target_rate_bps;
    let local = stream.local_addr().context("set-up socket address")?;
    let peer = stream.peer_addr().context("set-up peer address")?;
    if plan.flags.datagram_size.and_then(args::DatagramSize::fixed).is_none() {
        // Path-MTU probing (docs/DATAPLANE.md "Path MTU"): up to a 9000-byte jumbo frame; the
        // shards lower this to the route's MTU once they know the peer.
        params.datagram_size_max = haul_proto::pmtu::sender_ceiling(peer.is_ipv6());
    }
    let sockets = bind_shards(local.ip(), params.shards, plan.flags.backend.forced())
        .context("binding the shard sockets")?;
    Ok(SendJob {
        params,
        keys: Keys {
            secret: est.secret().clone(),
            client_random: est.client_random,
            server_random: est.server_random,
            role: Role::Client,
        },
        manifest: Arc::new(valid.manifest.clone()),
        sources: plan.sources.clone(),
        sockets,
        peers: accept.ports.iter().map(|p| SocketAddr::new(peer.ip(), *p)).collect(),
        resume: accept.resume.clone(),
        pin_cores: true,
    })
}

fn check_summary(report: &TransferReport, summary: &Summary, files: &[FileEntry]) -> Result<()> {
    // A transfer this end aborted says why in its own words (a source that shrank names the
    // file); the receiver's summary then only echoes the reason.
    if matches!(report.outcome, Outcome::Aborted { by_peer: false, .. }) {
        report::check_outcome(&report.outcome, files, report.detail.as_deref())?;
    }
    if summary.outcome != OUTCOME_COMPLETE {
        let reason = haul_proto::session::AbortReason::from_u16(summary.outcome);
        bail!("the receiver reports the transfer aborted: {reason:?}");
    }
    report::check_outcome(&report.outcome, files, report.detail.as_deref())?;
    if summary.checksums.len() != report.files.len() {
        bail!(
            "the receiver's summary lists {} files, we sent {}",
            summary.checksums.len(),
            report.files.len()
        );
    }
    for (ours, theirs) in report.files.iter().zip(&summary.checksums) {
        if &ours.blake3 != theirs {
            bail!("{}: the receiver's BLAKE3 differs from ours", ours.name);
        }
    }
    Ok(())
}

/// Receiver-side settings from `haul recv`'s flags.
#[derive(Debug)]
pub struct RecvPlan {
    pub dest: PathBuf,
    pub flags: TransferFlags,
}

/// The server side of one connection: set-up, receive, summary.
pub fn serve_one(
    mut stream: TcpStream,
    psk: &Psk,
    plan: &RecvPlan,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<TransferReport> {
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream.set_read_timeout(Some(SETUP_TIMEOUT)).context("setting a read timeout")?;
    let Some(hello) = read_frame(&mut stream)? else { bail!("the peer closed before its hello") };
    let (mut est, reply) = server_handle_hello(psk, random32()?, &hello)?;
    write_frame(&mut stream, &reply)?;
    let offer = match read_message(&mut stream, &mut est.channel, "offer") {
        Ok(Message::Offer(o)) => o,
        Ok(other) => bail!("the peer sent {} where Offer was expected", other.name()),
        // A wrong key: answer nothing more (§9.2) and close.
        Err(e) if is_unauthenticated(&e) => bail!("key mismatch or tampered set-up"),
        Err(e) => return Err(e),
    };
    let (valid, options, target) = match accept_offer(&offer, &est.transcript, plan) {
        Ok(v) => v,
        Err(r) => {
            let _ = send_message(&mut stream, &mut est.channel, &Message::Refuse(r.clone()));
            bail!("refused the transfer ({:?}): {}", r.code, r.reason);
        }
    };
    let job = receiver_job(&mut stream, &mut est, plan, valid, options, target)?;
    let manifest = job.manifest.clone();
    let result = run_receiver(job, progress);
    let summary = match &result {
        Ok(r) if r.outcome == Outcome::Complete => Summary {
            outcome: OUTCOME_COMPLETE,
            checksums: r.files.iter().map(|f| f.blake3).collect(),
        },
        Ok(r) => Summary { outcome: report::abort_code(&r.outcome), checksums: vec![] },
        Err(_) => Summary {
            outcome: haul_proto::session::AbortReason::Cancelled as u16,
            checksums: vec![],
        },
    };
    let _ = send_message(&mut stream, &mut est.channel, &Message::Summary(summary));
    let report = result.context("receiving")?;
    if report.attrs_skipped > 0 {
        eprintln!(
            "haul: note: {} files arrived without the owner or some extended attributes the \
             sender asked for (no privilege here, or the filesystem refused them)",
            report.attrs_skipped
        );
    }
    // The Bye is a courtesy; a sender that vanished after the data changes nothing here.
    let _ = read_frame(&mut stream);
    report::check_outcome(&report.outcome, manifest.files(), report.detail.as_deref())?;
    Ok(report)
}

/// Validate the offer and apply the receiver's own limits; a refusal says why.
fn accept_offer(
    offer: &Offer,
    transcript: &[u8; 32],
    plan: &RecvPlan,
) -> Result<(ValidOffer, RecvOptions, u64), Refuse> {
    let valid = validate_offer(offer, transcript)?;
    let f = &plan.flags;
    let refuse = |why: String| Refuse { code: RefuseCode::BadParams, reason: why };
    if let Some(c) = f.cipher.filter(|c| c.to_suite() as u8 != offer.suite) {
        return Err(refuse(format!("this receiver requires cipher {}", c.to_suite().name())));
    }
    if let Some(p) = f.policy.filter(|p| p.to_policy() as u8 != offer.policy) {
        return Err(refuse(format!("this receiver requires policy {}", p.to_policy().name())));
    }
    if let Some(max) = f.shards.filter(|m| offer.shards > *m) {
        return Err(refuse(format!(
            "{} shards offered, this receiver takes at most {max}",
            offer.shards
        )));
    }
    if let Some(max) =
        f.datagram_size.and_then(args::DatagramSize::fixed).filter(|m| offer.datagram_size > *m)
    {
        return Err(refuse(format!(
            "datagram size {} offered, at most {max} here",
            offer.datagram_size
        )));
    }
    let target = f.rate.map_or(offer.target_rate_bps, |cap| cap.min(offer.target_rate_bps));
    if target < offer.min_rate_bps {
        return Err(refuse(format!(
            "the offered minimum rate exceeds this receiver's cap {target} bit/s"
        )));
    }
    // Owner and xattrs: the sender asked (it sent them) and this receiver allows it.
    let options = RecvOptions {
        overwrite: args::overwrite_of(f.overwrite.map_or(valid.overwrite, |o| o.to_pref())),
        resume: args::resume_of(f.resume.map_or(valid.resume, |r| r.to_pref())),
        preserve_owner: f.preserve_owner,
        preserve_xattrs: f.preserve_xattrs,
        keep_setid: f.keep_setid,
        file_attrs: valid.attrs.clone(),
    };
    Ok((valid, options, target))
}

fn receiver_job(
    stream: &mut TcpStream,
    est: &mut haul_proto::setup::Established,
    plan: &RecvPlan,
    valid: ValidOffer,
    options: RecvOptions,
    target_rate_bps: u64,
) -> Result<RecvJob> {
    let refuse =
        |stream: &mut TcpStream, est: &mut haul_proto::setup::Established, reason: String| {
            let r = Refuse { code: RefuseCode::Destination, reason };
            let _ = send_message(stream, &mut est.channel, &Message::Refuse(r));
        };
    let resume = match prepare_receive(&plan.dest, &valid.manifest, &options) {
        Ok(r) => r,
        Err(e) => {
            refuse(stream, est, e.to_string());
            return Err(e).with_context(|| format!("destination {}", plan.dest.display()));
        }
    };
    let mut session_id = [0u8; 8];
    getrandom::fill(&mut session_id).context("reading the OS random generator")?;
    let mut params = valid.params(u64::from_le_bytes(session_id));
    params.rate.target_bps = target_rate_bps;
    // Probes are acknowledged up to `--datagram-size N`, or any size the buffers hold (auto):
    // N is a ceiling on both ends (docs/DATAPLANE.md "Path MTU").
    params.datagram_size_max = plan
        .flags
        .datagram_size
        .and_then(args::DatagramSize::fixed)
        .unwrap_or(haul_proto::pmtu::MAX_PROBE_SIZE);
    let local = stream.local_addr().context("set-up socket address")?;
    let sockets = match bind_shards(local.ip(), params.shards, plan.flags.backend.forced()) {
        Ok(s) => s,
        Err(e) => {
            refuse(stream, est, "the receiver could not bind its UDP sockets".into());
            return Err(e).context("binding the shard sockets");
        }
    };
    let accept = Accept {
        session_id: params.session_id,
        target_rate_bps,
        ports: sockets.local_addrs().iter().map(SocketAddr::port).collect(),
        resume: resume.clone(),
    };
    send_message(stream, &mut est.channel, &Message::Accept(accept))?;
    Ok(RecvJob {
        params,
        keys: Keys {
            secret: est.secret().clone(),
            client_random: est.client_random,
            server_random: est.server_random,
            role: Role::Server,
        },
        manifest: Arc::new(valid.manifest),
        dest: plan.dest.clone(),
        options,
        sockets,
        resume,
        pin_cores: true,
    })
}
