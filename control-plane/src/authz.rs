//! The contract between the SSH gate (`gate/`) and the token side (`token/`, `store/`): what the
//! gate asks before any UDP socket exists, and what it gets back.
//!
//! Invariants:
//! - The gate opens no socket, creates no file and starts no session until [`Authorizer::authorize`]
//!   has returned a [`Grant`]. A [`Refusal`] leaves nothing behind.
//! - A [`Refusal`] is shown to the client as `unauthorized to transfer: CODE` with the stable
//!   code of [`RefusalCode::code`]; the detail goes to the server log, never the token.
//! - The token travels as [`SecretToken`]: it is zeroized on drop and its `Debug` is redacted, so
//!   it cannot reach a log by accident.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use zeroize::Zeroizing;

/// Which way file bytes flow, seen from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The server sends: `haul get`.
    Download,
    /// The server receives: `haul put`.
    Upload,
}

impl Direction {
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }
}

/// A token as the client presented it. Never printed, zeroized on drop.
pub struct SecretToken(pub Zeroizing<String>);

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// What the client asks for: the token, and the URL's requests (which are only requests).
#[derive(Debug)]
pub struct TransferAsk<'a> {
    pub token: &'a SecretToken,
    pub direction: Direction,
    /// The path part of the URL, percent-decoded, with its leading `/` (untrusted; the
    /// authorizer normalizes and confines it: docs/TOKENS.md, "What the gate checks").
    pub path: &'a str,
    /// The address the SSH connection came from.
    pub client_ip: IpAddr,
    /// `cipher=`: refused if weaker than the token's minimum.
    pub suite: Option<SuiteId>,
    /// `rate=` / `minrate=` in bits per second: clamped to the token's caps.
    pub rate_bps: Option<u64>,
    pub min_rate_bps: Option<u64>,
    /// `policy=`: clamped to the token's cap.
    pub policy: Option<Policy>,
}

/// Permission for one transfer, with every request already checked and clamped.
#[derive(Debug)]
pub struct Grant {
    pub token_id: [u8; 16],
    pub user: String,
    pub direction: Direction,
    /// The directory the transfer is confined to (canonical; files are opened beneath it).
    pub root: PathBuf,
    /// The names, relative to `root`, that may be read (download) or the directory that may be
    /// written (upload), already validated.
    pub paths: Vec<String>,
    pub suite: SuiteId,
    pub rate_bps: u64,
    pub min_rate_bps: u64,
    pub policy: Policy,
    /// Single-use tokens: the transfer holds the token's one use until it completes or fails.
    pub single_use: bool,
}

/// Why a transfer was refused. The codes are stable: scripts and tests match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    Malformed,
    Tampered,
    UnknownKey,
    Expired,
    WrongDirection,
    PathOutside,
    AlreadyUsed,
    InUse,
    UserDisabled,
    UserExpired,
    AddressNotAllowed,
    UploadOnly,
    DownloadOnly,
    CipherTooWeak,
    PackageGone,
    NotEntitled,
    /// An external link's downloads are used up (or the rest is reserved by another download).
    DownloadLimit,
}

impl RefusalCode {
    /// The stable code shown after `unauthorized to transfer: `.
    pub const fn code(self) -> &'static str {
        match self {
            RefusalCode::Malformed => "malformed-token",
            RefusalCode::Tampered => "bad-token",
            RefusalCode::UnknownKey => "unknown-key",
            RefusalCode::Expired => "expired",
            RefusalCode::WrongDirection => "wrong-direction",
            RefusalCode::PathOutside => "path-outside",
            RefusalCode::AlreadyUsed => "already-used",
            RefusalCode::InUse => "in-use",
            RefusalCode::UserDisabled => "user-disabled",
            RefusalCode::UserExpired => "user-expired",
            RefusalCode::AddressNotAllowed => "address-not-allowed",
            RefusalCode::UploadOnly => "upload-only",
            RefusalCode::DownloadOnly => "download-only",
            RefusalCode::CipherTooWeak => "cipher-too-weak",
            RefusalCode::PackageGone => "package-gone",
            RefusalCode::NotEntitled => "not-entitled",
            RefusalCode::DownloadLimit => "download-limit",
        }
    }
}

/// A refusal: the code for the client, the detail for the server's log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unauthorized to transfer: {}", code.code())]
pub struct Refusal {
    pub code: RefusalCode,
    pub detail: String,
}

/// How a granted transfer ended, reported back so single use and receipts are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file verified and renamed into place.
    Complete,
    /// Interrupted: a single-use token stays resumable by the same token id.
    Interrupted,
}

/// The token side, as the gate sees it. Implemented by `token::` over the store; tests may
/// implement it to drive the gate alone.
pub trait Authorizer: Send + Sync + 'static {
    /// Checks the token and the asks. On success the grant holds the token's use (single-use
    /// tokens: a second concurrent ask gets `InUse`) until [`Authorizer::finish`].
    fn authorize(&self, ask: &TransferAsk<'_>) -> Result<Grant, Refusal>;
    /// Releases the grant's hold and records how the transfer ended.
    fn finish(&self, grant: &Grant, outcome: Outcome);

    /// The gate calls this once per granted download, just before [`Authorizer::finish`], with
    /// the file bytes it sent (`None`: unknown, the transfer failed before its report), so the
    /// token side can charge them (external links' byte accounting, delivery receipts). The
    /// default records nothing.
    fn on_bytes_sent(&self, _grant: &Grant, _outcome: Outcome, _sent_bytes: Option<u64>) {}

    /// Whether `openssh_public_key` (one authorized_keys line: `ssh-ed25519 AAAA... [comment]`)
    /// is one of `user`'s own keys (the users table): such a login may run `haul cp` transfers
    /// without a token. The default knows no user keys.
    fn is_user_key(&self, user: &str, openssh_public_key: &str) -> bool {
        let _ = (user, openssh_public_key);
        false
    }

    /// `haul cp`: authorize a transfer for `user`, whose own key the SSH login proved. The
    /// ask's token is empty; the path is confined to the user's storage and the user's
    /// restrictions apply as for a token. The default refuses.
    fn authorize_user(&self, user: &str, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let _ = ask;
        Err(Refusal {
            code: RefusalCode::NotEntitled,
            detail: format!("user {user}: per-user transfers are not configured on this server"),
        })
    }

    /// Records that `path` (one of `grant.paths`, or a file beneath it) has `partial_bytes`
    /// safely written, so a resume of a single-use token is bound to that file and partial.
    /// Optional: the default records nothing.
    fn record_partial(&self, _grant: &Grant, _path: &str, _partial_bytes: u64) {}
    /// For a resumed single-use grant: what [`Authorizer::record_partial`] last recorded.
    fn resume_partial_bytes(&self, _grant: &Grant, _path: &str) -> Option<u64> {
        None
    }
}
