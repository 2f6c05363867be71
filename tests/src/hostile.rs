//! A hostile sender built from the libraries (`haul_proto::setup` + `haul_io::transfer`): it
//! holds the right key, so its Offer opens, but it names files that would land outside DEST.
//! The receiver must refuse (tests/tests/refusals.rs).
//!
//! It speaks the set-up protocol exactly as `haul send` does (docs/protocol/09-setup.md), minus
//! the sender's own name checks.

use haul_io::transfer::{Keys, SendJob, bind_shards, run_sender};
use haul_proto::session::{FileEntry, Role};
use haul_proto::setup::{
    Channel, ClientHello, DEFAULT_BLOCK_SIZE_LOG2, Message, Offer, OverwritePref, Psk, ResumePref,
    encode_frame, parse_frame_len,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the receiver made of the hostile offer.
#[derive(Debug)]
pub enum Verdict {
    /// A sealed Refuse, with its reason.
    Refused(String),
    /// Accepted; the data was sent and the runtime ended with this (Ok: outcome text).
    Accepted(Result<String, String>),
    /// The receiver closed without a word.
    Closed,
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let mut body = vec![0u8; parse_frame_len(h).ok()?];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn write_frame(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&encode_frame(body).unwrap()).unwrap();
}

/// An offer the receiver accepted: the set-up stream, keys and its answer.
#[derive(Debug)]
pub struct Offered {
    pub stream: TcpStream,
    pub est: haul_proto::setup::Established,
    pub accept: haul_proto::setup::Accept,
    pub entry: FileEntry,
}

/// Greet the receiver at `addr` and offer one file `name` (content: `source`) at
/// `target_rate_bps`; the receiver's refusal or silence comes back as the error.
pub fn offer(
    addr: SocketAddr,
    key_file: &Path,
    name: &str,
    source: &Path,
    target_rate_bps: u64,
) -> Result<Offered, Verdict> {
    let psk = Psk::from_hex(&std::fs::read_to_string(key_file).unwrap()).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let hello = ClientHello::new(psk, [0x5a; 32]);
    write_frame(&mut s, hello.hello_frame());
    let Some(reply) = read_frame(&mut s) else { return Err(Verdict::Closed) };
    let mut est = hello.handle_server_hello(&reply).unwrap();
    let size = std::fs::metadata(source).unwrap().len();
    let entry = FileEntry { name: name.into(), size, mode: 0o644, mtime_ns: 0 };
    let offer = Offer {
        transcript: est.transcript,
        suite: haul_proto::crypto::SuiteId::Aes128CfbCmac as u8,
        shards: 1,
        datagram_size: 1472,
        ip_overhead: 28,
        window_bytes: WINDOW_BYTES,
        min_rate_bps: 0,
        target_rate_bps,
        policy: haul_proto::rate::Policy::Fixed as u8,
        block_size_log2: DEFAULT_BLOCK_SIZE_LOG2,
        overwrite: OverwritePref::Always,
        resume: ResumePref::None,
        files: vec![entry.clone()],
        attrs: Vec::new(),
    };
    write_frame(&mut s, &est.channel.seal(&Message::Offer(offer)).unwrap());
    let Some(frame) = read_frame(&mut s) else { return Err(Verdict::Closed) };
    match est.channel.open(&frame) {
        Ok(Message::Refuse(r)) => Err(Verdict::Refused(r.reason)),
        Ok(Message::Accept(accept)) => Ok(Offered { stream: s, est, accept, entry }),
        other => panic!("unexpected answer to the offer: {other:?}"),
    }
}

/// Receiver window per shard the test senders offer.
const WINDOW_BYTES: u64 = 64 << 20;

impl Offered {
    /// The sending job for `source`, with its shard sockets bound on `ip`; `peers` defaults to
    /// the receiver's ports on `ip`.
    pub fn job(
        &self,
        ip: std::net::IpAddr,
        source: &Path,
        peers: Option<Vec<SocketAddr>>,
    ) -> SendJob {
        let a = &self.accept;
        let suite = haul_proto::crypto::SuiteId::Aes128CfbCmac;
        let mut params = haul_proto::session::SessionParams::new(a.session_id, suite);
        params.window_bytes = WINDOW_BYTES;
        params.policy = haul_proto::rate::Policy::Fixed;
        params.rate.target_bps = a.target_rate_bps;
        let manifest =
            haul_proto::session::Manifest::new(vec![self.entry.clone()], DEFAULT_BLOCK_SIZE_LOG2);
        SendJob {
            params,
            keys: Keys {
                secret: self.est.secret().clone(),
                client_random: self.est.client_random,
                server_random: self.est.server_random,
                role: Role::Client,
            },
            manifest: Arc::new(manifest.unwrap()),
            sources: vec![source.to_path_buf()],
            sockets: bind_shards(ip, 1, None).unwrap(),
            peers: peers
                .unwrap_or_else(|| a.ports.iter().map(|p| SocketAddr::new(ip, *p)).collect()),
            resume: a.resume.clone(),
            pin_cores: false,
        }
    }

    /// Read the receiver's Summary and answer Bye.
    pub fn finish(mut self) -> haul_proto::setup::Summary {
        let frame = read_frame(&mut self.stream).expect("the receiver's summary");
        let summary = match self.est.channel.open(&frame) {
            Ok(Message::Summary(s)) => s,
            other => panic!("expected Summary, got {other:?}"),
        };
        write_frame(&mut self.stream, &self.est.channel.seal(&Message::Bye).unwrap());
        summary
    }
}

/// Offer `name` (content: `source`) to the receiver at `addr` and report its verdict.
pub fn send_named(addr: SocketAddr, key_file: &Path, name: &str, source: &Path) -> Verdict {
    let offered = match offer(addr, key_file, name, source, 1_000_000_000) {
        Ok(o) => o,
        Err(v) => return v,
    };
    // The receiver let the name through set-up: send the data and see the runtime refuse it.
    let job = offered.job(addr.ip(), source, None);
    Verdict::Accepted(
        run_sender(job, None).map(|r| format!("{:?}", r.outcome)).map_err(|e| e.to_string()),
    )
}
