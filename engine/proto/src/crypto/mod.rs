//! Per-datagram cryptography: the key schedule and the pluggable suites.
//!
//! The spec is docs/protocol/03-crypto.md (§3 suites, §4 key schedule).
//!
//! Every datagram of every type is sealed (§3): the header is authenticated,
//! the body is encrypted (except under the integrity-only suite), and a 16-byte tag follows.
//! Receivers verify before they decrypt, and before any session state changes.
//!
//! Invariants:
//! - Keys are per session, per direction and per shard; encryption, IV derivation and MAC keys
//!   are distinct (`keys.rs`). Key types zeroize on drop and redact their `Debug`.
//! - A (key, IV) or (key, nonce) pair never repeats, because the IV/nonce is a function of the
//!   sequence number, and sequence numbers never repeat under one key (`session`).
//! - The batch paths produce byte-identical output to the serial reference (property-tested).
//!
//! Batch API: callers gather up to [`MAX_BATCH`] datagrams into [`Job`]s (in an `ArrayVec` on
//! the stack: no allocation per datagram) and call [`Suite::seal_batch`]/[`Suite::open_batch`].

mod cfb_cmac;
mod gcm;
mod integrity;
mod keys;
mod multibuf;

pub use keys::{DirectionKeys, KeyPurpose, KeySchedule, SessionSecret};

use keys::SuiteKeys;
use thiserror::Error;

/// Length of the authentication tag every sealed datagram ends with.
pub const TAG_LEN: usize = 16;
/// The most datagrams one batch call handles; callers keep their job arrays this size.
pub const MAX_BATCH: usize = 64;

/// The cipher suites, in increasing order of protection (so `a < b` means "a is weaker").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum SuiteId {
    /// AES-CMAC over header and payload; the payload travels in the clear. Only when an admin
    /// has turned encryption off.
    IntegrityCmac = 3,
    /// The default and the reference document's scheme: AES-128-CFB under a secret per-datagram
    /// IV, then AES-CMAC over header and ciphertext (encrypt-then-MAC).
    Aes128CfbCmac = 1,
    /// AES-128-GCM with a nonce derived from the sequence number.
    Aes128Gcm = 2,
}

impl SuiteId {
    pub const ALL: [SuiteId; 3] =
        [SuiteId::Aes128CfbCmac, SuiteId::Aes128Gcm, SuiteId::IntegrityCmac];

    /// The name used on command lines, in URLs and in docs.
    pub const fn name(self) -> &'static str {
        match self {
            SuiteId::Aes128CfbCmac => "aes128-cfb-cmac",
            SuiteId::Aes128Gcm => "aes128-gcm",
            SuiteId::IntegrityCmac => "integrity-cmac",
        }
    }

    pub fn from_name(name: &str) -> Option<SuiteId> {
        SuiteId::ALL.into_iter().find(|s| s.name() == name)
    }

    pub const fn from_u8(v: u8) -> Option<SuiteId> {
        match v {
            1 => Some(SuiteId::Aes128CfbCmac),
            2 => Some(SuiteId::Aes128Gcm),
            3 => Some(SuiteId::IntegrityCmac),
            _ => None,
        }
    }

    /// Whether the suite keeps the payload confidential.
    pub const fn is_encrypting(self) -> bool {
        !matches!(self, SuiteId::IntegrityCmac)
    }
}

/// Which way a datagram travels. Each direction has its own keys and sequence space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    ClientToServer = 0,
    ServerToClient = 1,
}

/// One datagram in a batch.
///
/// `buf` holds `header ‖ body ‖ tag`: `buf[..header_len]` is authenticated but never encrypted,
/// `buf[header_len..buf.len() - TAG_LEN]` is the body (encrypted in place by `seal`, decrypted
/// in place by `open`), and the last [`TAG_LEN`] bytes are the tag (written by `seal`, checked
/// by `open`). `seq` is the datagram's sequence number, which the caller has already written
/// into the header; the suite uses it to derive the IV or nonce.
#[derive(Debug)]
pub struct Job<'a> {
    pub seq: u64,
    pub header_len: usize,
    pub buf: &'a mut [u8],
    /// Set by `open_batch`: true if the tag verified (and the body is now plaintext). On false
    /// the body is left as it was received. Ignored by `seal_batch`.
    pub ok: bool,
}

impl<'a> Job<'a> {
    pub fn new(seq: u64, header_len: usize, buf: &'a mut [u8]) -> Self {
        Job { seq, header_len, buf, ok: false }
    }

    /// Whether `buf` holds a header of `header_len` bytes and a tag. Bytes from a peer may
    /// not: such a job is never `ok` and is never touched.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.buf.len() >= TAG_LEN && self.header_len <= self.buf.len() - TAG_LEN
    }

    /// Where the tag starts (the end of the authenticated bytes). Only for well-formed jobs.
    pub(crate) fn tag_at(&self) -> usize {
        self.buf.len() - TAG_LEN
    }

    /// `(header, body, tag)`. Only for well-formed jobs.
    pub(crate) fn parts_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let body_len = self.tag_at() - self.header_len;
        let (header, rest) = self.buf.split_at_mut(self.header_len);
        let (body, tag) = rest.split_at_mut(body_len);
        (header, body, tag)
    }

    /// The body, between header and tag. Only for well-formed jobs.
    pub(crate) fn body_mut(&mut self) -> &mut [u8] {
        self.parts_mut().1
    }

    /// Seal's precondition: a job that cannot hold its header and a tag is the caller's bug.
    pub(crate) fn assert_sealable(&self) {
        assert!(
            self.is_well_formed(),
            "seal: buf of {} bytes cannot hold a {}-byte header and a tag",
            self.buf.len(),
            self.header_len
        );
    }
}

/// A suite keyed for one direction of one shard of one session.
pub trait Suite: Send + core::fmt::Debug {
    fn id(&self) -> SuiteId;

    /// Encrypt (if the suite encrypts) and tag every job, in place.
    ///
    /// Panics only on a caller bug: a job whose `buf` is shorter than `header_len + TAG_LEN`.
    fn seal_batch(&mut self, jobs: &mut [Job<'_>]);

    /// Verify every job's tag and, where it verifies, decrypt in place and set `ok`.
    /// Never panics on any bytes: a job too short to hold a tag is simply not `ok`.
    fn open_batch(&mut self, jobs: &mut [Job<'_>]);

    /// One datagram, through the batch path.
    fn seal(&mut self, seq: u64, header_len: usize, buf: &mut [u8]) {
        self.seal_batch(&mut [Job::new(seq, header_len, buf)]);
    }

    /// One datagram, through the batch path; true if it verified.
    fn open(&mut self, seq: u64, header_len: usize, buf: &mut [u8]) -> bool {
        let mut jobs = [Job::new(seq, header_len, buf)];
        self.open_batch(&mut jobs);
        jobs[0].ok
    }
}

/// Errors from setting up a suite; per-datagram failures are `Job::ok == false` instead.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Our bug or the caller's: the key material does not fit the suite.
    #[error("key material does not fit suite {0:?}")]
    KeyMismatch(SuiteId),
}

/// Build the suite for `keys` (which carry their suite id and only that suite's keys).
pub fn new_suite(keys: &DirectionKeys) -> Box<dyn Suite> {
    match keys.material() {
        SuiteKeys::CfbCmac { enc, iv, mac } => Box::new(cfb_cmac::CfbCmac::new(enc, iv, mac)),
        SuiteKeys::Gcm { key, salt } => Box::new(gcm::Gcm::new(key, salt)),
        SuiteKeys::Integrity { mac } => Box::new(integrity::IntegrityCmac::new(mac)),
    }
}

// The serial reference implementations the batch paths are checked against (tests and
// benches only), one datagram at a time; documented in the module itself.
#[cfg(any(test, feature = "reference"))]
pub mod reference;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests;
