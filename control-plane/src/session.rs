//! SSH mode of the set-up channel (docs/GATE.md, docs/protocol/09-setup.md §9.4): what the
//! client and the gate say inside the one `haul-transfer` exec channel before the data plane
//! starts, and how both derive the session keys.
//!
//! ```text
//! client                                           gate
//!   Ask { direction, client_random, path, token,   ─►   authorize (no socket, no file yet)
//!         cipher/rate/minrate/policy requests }
//!                                   ◄─  Reply::Granted { server_random, suite, policy, rates, max_shards }
//!                                     | Reply::Refused { "unauthorized to transfer: CODE" }
//!   ── both: transcript = SHA-256(Ask frame ‖ Reply frame);
//!            secret = HKDF-SHA256(salt = client_random ‖ server_random,
//!                                 IKM = client_random ‖ server_random ‖ transcript,
//!                                 info = "haul/1 ssh session")
//!   upload:   Offer ─►            ◄─ Accept { session id, gate's UDP ports }   ◄─ Summary   Bye ─►
//!   download: ◄─ Offer            Accept { client's ports } ─►
//!                                 ◄─ Accept { session id, gate's UDP ports }   Summary ─►   ◄─ Bye
//! ```
//!
//! Invariants: the token travels only inside the channel (never in the exec command) and is
//! held as [`SecretToken`]; both randoms are fresh per session, so keys are fresh per session;
//! the secret and randoms zeroize on drop and are never printed; decoding never panics and every
//! length is bounded ([`MAX_TOKEN_LEN`], [`MAX_PATH_LEN`], the frame cap of §9.1).

use std::io::{ErrorKind, Read, Write};

use haul_proto::crypto::{SessionSecret, SuiteId};
use haul_proto::rate::Policy;
use haul_proto::setup::{SetupError, encode_frame, parse_frame_len};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::authz::{Direction, SecretToken};
use haul_io::transfer::TransferReport as Report;
use haul_io::transfer::{Overwrite, ResumeLevel, TransferReport};
use haul_proto::session::{AbortReason, Outcome};
use haul_proto::setup::{
    Channel as _, DEFAULT_BLOCK_SIZE_LOG2, Message, OUTCOME_COMPLETE, Offer, OverwritePref,
    PlainChannel, ResumePref, Summary,
};

/// The one command the gate executes. The token is never an argument.
pub const TRANSFER_COMMAND: &str = "haul-transfer";
/// Version byte of [`Ask`] and [`Reply`].
pub const ASK_VERSION: u8 = 1;
/// Longest token accepted in an Ask.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest path accepted in an Ask.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest refusal code in a Reply.
pub const MAX_CODE_LEN: usize = 64;
/// The largest set-up frame either end reads in SSH mode: an Offer or Accept for many files.
pub const MAX_SSH_FRAME: usize = haul_proto::setup::MAX_FRAME_LEN;

const INFO_SESSION: &[u8] = b"haul/1 ssh session";
const REPLY_GRANTED: u8 = 1;
const REPLY_REFUSED: u8 = 2;

/// The client's request: the token and the URL's asks. `Debug` shows neither the token nor the
/// random.
pub struct Ask {
    pub direction: Direction,
    pub client_random: Zeroizing<[u8; 32]>,
    pub path: String,
    pub token: SecretToken,
    pub suite: Option<SuiteId>,
    pub policy: Option<Policy>,
    pub rate_bps: Option<u64>,
    pub min_rate_bps: Option<u64>,
}

impl std::fmt::Debug for Ask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ask")
            .field("direction", &self.direction)
            .field("path", &self.path)
            .field("suite", &self.suite)
            .field("policy", &self.policy)
            .field("rate_bps", &self.rate_bps)
            .field("min_rate_bps", &self.min_rate_bps)
            .finish_non_exhaustive()
    }
}

/// The gate's answer to an [`Ask`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Authorized: the gate's random and the terms it settled (requests checked and clamped).
    Granted(Granted),
    /// `unauthorized to transfer: CODE` (the stable code of `authz::RefusalCode`).
    Refused { code: String },
}

#[derive(PartialEq, Eq)]
pub struct Granted {
    pub server_random: Zeroizing<[u8; 32]>,
    pub suite: SuiteId,
    pub policy: Policy,
    pub rate_bps: u64,
    pub min_rate_bps: u64,
    /// Most shards the gate takes for an upload (its `--shards`, fewer with a narrow
    /// `--udp-listen` port range): the client offers at most this many.
    pub max_shards: u8,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("suite", &self.suite)
            .field("policy", &self.policy)
            .field("rate_bps", &self.rate_bps)
            .field("min_rate_bps", &self.min_rate_bps)
            .field("max_shards", &self.max_shards)
            .finish_non_exhaustive()
    }
}

/// A byte cursor whose reads fail (never panic) past the end.
struct Cursor<'a>(&'a [u8]);

fn malformed(what: &'static str) -> SetupError {
    SetupError::Malformed(what, 0)
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SetupError> {
        if self.0.len() < n {
            return Err(malformed(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SetupError> {
        Ok(self.take(1, what)?[0])
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, SetupError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
    fn random(&mut self) -> Result<Zeroizing<[u8; 32]>, SetupError> {
        let mut r = Zeroizing::new([0u8; 32]);
        r.copy_from_slice(self.take(32, "random")?);
        Ok(r)
    }
    fn str(&mut self, max: usize, what: &'static str) -> Result<Zeroizing<String>, SetupError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2, what)?);
        let n = usize::from(u16::from_le_bytes(b));
        if n > max {
            return Err(SetupError::Malformed(what, n as u64));
        }
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|_| malformed(what))
    }
    fn end(&self) -> Result<(), SetupError> {
        if self.0.is_empty() { Ok(()) } else { Err(malformed("trailing bytes")) }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Callers bound every string below u16::MAX.
    let n = s.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..n]);
}

impl Ask {
    /// The frame body. It holds the token: zeroized when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(64 + self.path.len() + self.token.0.len()));
        out.push(ASK_VERSION);
        out.push(match self.direction {
            Direction::Download => 0,
            Direction::Upload => 1,
        });
        out.extend_from_slice(self.client_random.as_ref());
        put_str(&mut out, &self.path);
        put_str(&mut out, &self.token.0);
        out.push(self.suite.map_or(0, |s| s as u8));
        out.push(self.policy.map_or(0xff, |p| p as u8));
        out.extend_from_slice(&self.rate_bps.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.min_rate_bps.unwrap_or(0).to_le_bytes());
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Ask, SetupError> {
        let mut c = Cursor(frame);
        let v = c.u8("version")?;
        if v != ASK_VERSION {
            return Err(SetupError::Version(v));
        }
        let direction = match c.u8("direction")? {
            0 => Direction::Download,
            1 => Direction::Upload,
            _ => return Err(malformed("direction")),
        };
        let client_random = c.random()?;
        let path = c.str(MAX_PATH_LEN, "path")?.to_string();
        let token = SecretToken(c.str(MAX_TOKEN_LEN, "token")?);
        let suite = match c.u8("suite")? {
            0 => None,
            s => Some(SuiteId::from_u8(s).ok_or(malformed("suite"))?),
        };
        let policy = match c.u8("policy")? {
            0xff => None,
            p => Some(policy_of(p).ok_or(malformed("policy"))?),
        };
        let rate_bps = Some(c.u64("rate")?).filter(|r| *r > 0);
        let min_rate_bps = Some(c.u64("minrate")?).filter(|r| *r > 0);
        c.end()?;
        Ok(Ask { direction, client_random, path, token, suite, policy, rate_bps, min_rate_bps })
    }
}

/// The policy of its wire byte (docs/protocol/09-setup.md §9.3.2).
pub fn policy_of(v: u8) -> Option<Policy> {
    [Policy::Fixed, Policy::High, Policy::Fair, Policy::Low].into_iter().find(|p| *p as u8 == v)
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ASK_VERSION];
        match self {
            Reply::Granted(g) => {
                out.push(REPLY_GRANTED);
                out.extend_from_slice(g.server_random.as_ref());
                out.push(g.suite as u8);
                out.push(g.policy as u8);
                out.extend_from_slice(&g.rate_bps.to_le_bytes());
                out.extend_from_slice(&g.min_rate_bps.to_le_bytes());
                out.push(g.max_shards);
            }
            Reply::Refused { code } => {
                out.push(REPLY_REFUSED);
                put_str(&mut out, &code[..code.len().min(MAX_CODE_LEN)]);
            }
        }
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Reply, SetupError> {
        let mut c = Cursor(frame);
        let v = c.u8("version")?;
        if v != ASK_VERSION {
            return Err(SetupError::Version(v));
        }
        let reply = match c.u8("reply")? {
            REPLY_GRANTED => Reply::Granted(Granted {
                server_random: c.random()?,
                suite: SuiteId::from_u8(c.u8("suite")?).ok_or(malformed("suite"))?,
                policy: policy_of(c.u8("policy")?).ok_or(malformed("policy"))?,
                rate_bps: c.u64("rate")?,
                min_rate_bps: c.u64("minrate")?,
                max_shards: match c.u8("shards")? {
                    0 => return Err(malformed("shards")),
                    n => n,
                },
            }),
            REPLY_REFUSED => Reply::Refused { code: c.str(MAX_CODE_LEN, "code")?.to_string() },
            _ => return Err(malformed("reply")),
        };
        c.end()?;
        Ok(reply)
    }
}

/// The data plane's key material, derived identically on both ends. In SSH mode the randoms
/// are secret too (they are the IKM), so `Debug` shows none of it.
pub struct SessionKeys {
    pub secret: SessionSecret,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// SHA-256(Ask frame ‖ Reply frame): the Offer carries it.
    pub transcript: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.client_random.zeroize();
        self.server_random.zeroize();
    }
}

/// Derive the session keys from the two randoms and the two frames, as sent.
pub fn derive_keys(
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    ask_frame: &[u8],
    reply_frame: &[u8],
) -> SessionKeys {
    let mut h = Sha256::new();
    h.update(ask_frame);
    h.update(reply_frame);
    let transcript: [u8; 32] = h.finalize().into();
    let mut salt = Zeroizing::new([0u8; 64]);
    salt[..32].copy_from_slice(client_random);
    salt[32..].copy_from_slice(server_random);
    let mut ikm = Zeroizing::new([0u8; 96]);
    ikm[..64].copy_from_slice(salt.as_ref());
    ikm[64..].copy_from_slice(&transcript);
    let hk = Hkdf::<Sha256>::new(Some(salt.as_ref()), ikm.as_ref());
    let mut secret = SessionSecret([0; 32]);
    // Expand refuses only outputs over 255 * 32 bytes; ours is 32.
    if hk.expand(INFO_SESSION, &mut secret.0).is_err() {
        unreachable!("HKDF-SHA256 expands up to 8160 bytes");
    }
    SessionKeys { secret, client_random: *client_random, server_random: *server_random, transcript }
}

/// 32 fresh bytes from the OS.
pub fn fresh_random() -> std::io::Result<Zeroizing<[u8; 32]>> {
    let mut r = Zeroizing::new([0u8; 32]);
    getrandom::fill(r.as_mut()).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(r)
}

/// Write one §9.1 frame and flush.
pub fn write_frame(stream: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let frame = Zeroizing::new(
        encode_frame(body).map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?,
    );
    stream.write_all(&frame)?;
    stream.flush()
}

/// Read one §9.1 frame; `None` if the peer closed between frames.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len =
        parse_frame_len(header).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    let mut body = Zeroizing::new(vec![0u8; len.min(MAX_SSH_FRAME)]);
    stream.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Why an SSH-mode transfer failed; each variant says whose fault.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The token side's: the gate refused the token (the code is stable).
    #[error("unauthorized to transfer: {0}")]
    Unauthorized(String),
    /// The peer's: it broke the protocol, refused the offer or reported a failure.
    #[error("{0}")]
    Peer(String),
    /// The peer's bytes: a malformed set-up message.
    #[error("set-up: {0}")]
    Setup(#[from] SetupError),
    /// The channel's: reading or writing the SSH channel failed.
    #[error("set-up channel: {0}")]
    Channel(#[from] std::io::Error),
    /// The data plane's (network, disk, session abort).
    #[error("data plane: {0}")]
    Transfer(#[from] haul_io::transfer::TransferError),
}

fn peer(msg: impl Into<String>) -> SessionError {
    SessionError::Peer(msg.into())
}

/// Encode `msg` (unsealed: the SSH channel encrypts, §9.4) and send it as one frame.
pub fn send_message(s: &mut impl Write, msg: &Message) -> Result<(), SessionError> {
    Ok(write_frame(s, &PlainChannel.seal(msg)?)?)
}

/// The next message; `what` names it for errors. A Refuse becomes [`SessionError::Peer`].
pub fn read_message(s: &mut impl Read, what: &str) -> Result<Message, SessionError> {
    let frame = read_frame(s)?.ok_or_else(|| peer(format!("the peer closed before its {what}")))?;
    match PlainChannel.open(&frame)? {
        Message::Refuse(r) => Err(peer(format!("refused ({:?}): {}", r.code, r.reason))),
        m => Ok(m),
    }
}

/// The Summary a receiver sends for its report.
pub fn summary_of(result: &Result<TransferReport, haul_io::transfer::TransferError>) -> Summary {
    match result {
        Ok(r) if r.outcome == Outcome::Complete => Summary {
            outcome: OUTCOME_COMPLETE,
            checksums: r.files.iter().map(|f| f.blake3).collect(),
        },
        Ok(Report { outcome: Outcome::Aborted { reason, .. }, .. }) => {
            Summary { outcome: *reason as u16, checksums: vec![] }
        }
        _ => Summary { outcome: AbortReason::Cancelled as u16, checksums: vec![] },
    }
}

/// The sender's end of a transfer, on either side of the gate: read the receiver's Summary
/// (`peer` names the other end in the error), say Bye, and check the Summary against what was
/// sent.
pub fn finish_sending<S: Read + Write>(
    s: &mut S,
    report: &TransferReport,
    peer_name: &str,
) -> Result<(), SessionError> {
    let summary = match read_message(s, "summary")? {
        Message::Summary(sm) => sm,
        other => return Err(peer(format!("the {peer_name} sent {}", other.name()))),
    };
    let _ = send_message(s, &Message::Bye);
    check_summary(report, &summary)
}

/// The sender's check of the receiver's Summary against what it sent.
pub fn check_summary(report: &TransferReport, summary: &Summary) -> Result<(), SessionError> {
    if summary.outcome != OUTCOME_COMPLETE {
        let reason = AbortReason::from_u16(summary.outcome);
        return Err(peer(format!("the receiver reports the transfer aborted: {reason:?}")));
    }
    if let Outcome::Aborted { reason, .. } = report.outcome {
        return Err(peer(format!("the transfer aborted: {reason:?}")));
    }
    if summary.checksums.len() != report.files.len()
        || report.files.iter().zip(&summary.checksums).any(|(f, c)| &f.blake3 != c)
    {
        return Err(peer("the receiver's BLAKE3 checksums differ from the sender's"));
    }
    Ok(())
}

/// The file layer's overwrite policy of a set-up preference.
pub fn overwrite_of(p: OverwritePref) -> Overwrite {
    match p {
        OverwritePref::Never => Overwrite::Never,
        OverwritePref::Always => Overwrite::Always,
        OverwritePref::IfDifferent => Overwrite::IfDifferent,
        OverwritePref::IfOlder => Overwrite::IfOlder,
    }
}

/// The file layer's resume level of a set-up preference.
pub fn resume_of(p: ResumePref) -> ResumeLevel {
    match p {
        ResumePref::None => ResumeLevel::None,
        ResumePref::Attributes => ResumeLevel::Attributes,
        ResumePref::SparseChecksum => ResumeLevel::SparseChecksum,
        ResumePref::FullChecksum => ResumeLevel::FullChecksum,
    }
}

/// Receiver window per shard the sender proposes.
pub const WINDOW_BYTES: u64 = 256 << 20;

/// What the sender proposes for the settled terms and its files.
pub fn offer_for(
    g: &Granted,
    transcript: [u8; 32],
    shards: u8,
    peer_is_v6: bool,
    files: Vec<haul_proto::session::FileEntry>,
    prefs: (OverwritePref, ResumePref),
) -> Offer {
    Offer {
        transcript,
        suite: g.suite as u8,
        shards,
        datagram_size: if peer_is_v6 { 1452 } else { 1472 },
        ip_overhead: if peer_is_v6 { 48 } else { 28 },
        window_bytes: WINDOW_BYTES,
        min_rate_bps: g.min_rate_bps,
        target_rate_bps: g.rate_bps,
        policy: g.policy as u8,
        block_size_log2: DEFAULT_BLOCK_SIZE_LOG2,
        overwrite: prefs.0,
        resume: prefs.1,
        files,
        attrs: Vec::new(),
    }
}

/// A fresh random session id.
pub fn fresh_session_id() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask {
        Ask {
            direction: Direction::Upload,
            client_random: Zeroizing::new([7; 32]),
            path: "/pkg/a".into(),
            token: SecretToken(Zeroizing::new("tok".into())),
            suite: Some(SuiteId::Aes128Gcm),
            policy: Some(Policy::Low),
            rate_bps: Some(5),
            min_rate_bps: None,
        }
    }

    #[test]
    fn ask_and_reply_round_trip() {
        let a = Ask::decode(&ask().encode()).unwrap();
        assert_eq!(
            (a.direction, a.path.as_str(), a.token.0.as_str()),
            (Direction::Upload, "/pkg/a", "tok")
        );
        assert_eq!(
            (a.suite, a.policy, a.rate_bps, a.min_rate_bps),
            (Some(SuiteId::Aes128Gcm), Some(Policy::Low), Some(5), None)
        );
        let g = Reply::Granted(Granted {
            server_random: Zeroizing::new([9; 32]),
            suite: SuiteId::Aes128CfbCmac,
            policy: Policy::Fair,
            rate_bps: 10,
            min_rate_bps: 1,
            max_shards: 2,
        });
        assert_eq!(Reply::decode(&g.encode()).unwrap(), g);
        let r = Reply::Refused { code: "expired".into() };
        assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn truncated_or_mutated_bytes_never_panic() {
        let frame = ask().encode();
        for cut in 0..frame.len() {
            assert!(Ask::decode(&frame[..cut]).is_err());
        }
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.to_vec();
                f[i] ^= 1 << bit;
                let _ = Ask::decode(&f);
                let _ = Reply::decode(&f);
            }
        }
        let mut long = frame.to_vec();
        long.push(0);
        assert!(Ask::decode(&long).is_err(), "trailing bytes");
    }

    #[test]
    fn keys_agree_and_depend_on_every_input() {
        let a = derive_keys(&[1; 32], &[2; 32], b"ask", b"reply");
        let b = derive_keys(&[1; 32], &[2; 32], b"ask", b"reply");
        assert_eq!(a.secret.0, b.secret.0);
        assert_eq!(a.transcript, b.transcript);
        for other in [
            derive_keys(&[3; 32], &[2; 32], b"ask", b"reply"),
            derive_keys(&[1; 32], &[3; 32], b"ask", b"reply"),
            derive_keys(&[1; 32], &[2; 32], b"asK", b"reply"),
        ] {
            assert_ne!(a.secret.0, other.secret.0);
        }
        assert_eq!(format!("{a:?}"), "SessionKeys(<redacted>)");
    }
}
