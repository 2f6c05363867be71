//! A token's claims and their binary encoding (the plaintext sealed by `token::mint`).
//!
//! Layout, version 1 (docs/TOKENS.md, "Claims"), all integers big-endian:
//! `token_id[16] ‖ issued_at i64 ‖ expires_at i64 ‖ direction u8 ‖ flags u8 ‖ min_suite u8 ‖
//! policy_cap u8 ‖ rate_cap_bps u64 ‖ user (u8 len, bytes) ‖ package (u8 len, bytes; 0 = none)
//! ‖ client address (u8 tag 0/4/6, then 0/4/16 bytes) ‖ paths (u8 count, each u16 len, bytes)
//! ‖ extensions (u8 count, each u16 kind, u8 flags, u16 len, bytes)`, and nothing after.
//!
//! Invariants:
//! - Decoding is total: any bytes give [`Claims`] or a [`ClaimsError`], never a panic, and a
//!   decoded value passes the same checks as [`Claims::check`] (names, paths, limits).
//! - An extension whose critical flag is set and whose kind this build does not know refuses
//!   the whole token ([`ClaimsError::UnknownCritical`]); unknown non-critical ones are kept
//!   and ignored. Later issues add kinds to [`KNOWN_EXTENSIONS`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use thiserror::Error;

use crate::authz::Direction;
use crate::token::path::normalize_token_path;
use crate::users::UserName;

/// Most paths one token allows.
pub const MAX_PATHS: usize = 32;
/// Longest package id in bytes.
pub const MAX_PACKAGE_ID: usize = 128;
/// Most extensions one token carries.
pub const MAX_EXTENSIONS: usize = 8;
/// Longest extension value in bytes.
pub const MAX_EXTENSION_LEN: usize = 1024;
/// Extension kinds this build understands (none yet: encryption at rest will add one).
pub const KNOWN_EXTENSIONS: &[u16] = &[];

const FLAG_SINGLE_USE: u8 = 1;
const EXT_CRITICAL: u8 = 1;

/// A versioned requirement a later issue adds to tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub kind: u16,
    /// A server that does not know `kind` must refuse the token.
    pub is_critical: bool,
    pub value: Vec<u8>,
}

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub token_id: [u8; 16],
    pub user: UserName,
    pub direction: Direction,
    pub package_id: Option<String>,
    /// Relative to the user's storage root, normalized (`""` is the root itself).
    pub paths: Vec<String>,
    pub issued_at_s: i64,
    pub expires_at_s: i64,
    /// Only this client address may use the token.
    pub client_ip: Option<IpAddr>,
    /// The weakest suite the transfer may use.
    pub min_suite: SuiteId,
    /// Cap on the target rate, bits per second; 0: no cap.
    pub rate_cap_bps: u64,
    /// The most aggressive policy allowed.
    pub policy_cap: Policy,
    pub single_use: bool,
    pub extensions: Vec<Extension>,
}

/// Claims that cannot be encoded, or bytes that are not claims.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ClaimsError {
    #[error("token claims end early")]
    Truncated,
    #[error("token claims have {0} bytes after the end")]
    TrailingBytes(usize),
    #[error("token claims: bad {0}")]
    BadField(&'static str),
    #[error("token claims: path {path:?}: {why}")]
    BadPath { path: String, why: String },
    #[error("token claims: more than {MAX_PATHS} paths, or none")]
    PathCount,
    #[error(
        "token claims: more than {MAX_EXTENSIONS} extensions or one over {MAX_EXTENSION_LEN} bytes"
    )]
    ExtensionLimit,
    #[error("token requires extension {0}, which this server does not support")]
    UnknownCritical(u16),
}

/// Ranks a suite by protection: integrity-only below the encrypting suites.
pub fn suite_strength(s: SuiteId) -> u8 {
    u8::from(s.is_encrypting())
}

/// Ranks a policy by aggressiveness: low < fair < high < fixed.
pub fn policy_rank(p: Policy) -> u8 {
    match p {
        Policy::Low => 0,
        Policy::Fair => 1,
        Policy::High => 2,
        Policy::Fixed => 3,
    }
}

impl Claims {
    /// Checks every limit and rule that decoding checks, so what mints also opens.
    pub fn check(&self) -> Result<(), ClaimsError> {
        if self.paths.is_empty() || self.paths.len() > MAX_PATHS {
            return Err(ClaimsError::PathCount);
        }
        for p in &self.paths {
            match normalize_token_path(p) {
                Ok(n) if n == *p => {}
                Ok(n) => {
                    return Err(ClaimsError::BadPath {
                        path: p.clone(),
                        why: format!("not normalized (write {n:?})"),
                    });
                }
                Err(e) => return Err(ClaimsError::BadPath { path: p.clone(), why: e.to_string() }),
            }
        }
        if self.package_id.as_ref().is_some_and(|p| p.is_empty() || p.len() > MAX_PACKAGE_ID) {
            return Err(ClaimsError::BadField("package id"));
        }
        if self.expires_at_s <= self.issued_at_s {
            return Err(ClaimsError::BadField("expiry (not after the issue time)"));
        }
        if self.extensions.len() > MAX_EXTENSIONS
            || self.extensions.iter().any(|e| e.value.len() > MAX_EXTENSION_LEN)
        {
            return Err(ClaimsError::ExtensionLimit);
        }
        match self.extensions.iter().find(|e| e.is_critical && !KNOWN_EXTENSIONS.contains(&e.kind))
        {
            Some(e) => Err(ClaimsError::UnknownCritical(e.kind)),
            None => Ok(()),
        }
    }

    /// The plaintext. Call [`Claims::check`] first (mint does).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(128);
        o.extend_from_slice(&self.token_id);
        o.extend_from_slice(&self.issued_at_s.to_be_bytes());
        o.extend_from_slice(&self.expires_at_s.to_be_bytes());
        o.push(match self.direction {
            Direction::Download => 0,
            Direction::Upload => 1,
        });
        o.push(if self.single_use { FLAG_SINGLE_USE } else { 0 });
        o.push(self.min_suite as u8);
        o.push(self.policy_cap as u8);
        o.extend_from_slice(&self.rate_cap_bps.to_be_bytes());
        put_str8(&mut o, self.user.as_str());
        put_str8(&mut o, self.package_id.as_deref().unwrap_or(""));
        match self.client_ip {
            None => o.push(0),
            Some(IpAddr::V4(a)) => {
                o.push(4);
                o.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                o.push(6);
                o.extend_from_slice(&a.octets());
            }
        }
        o.push(self.paths.len() as u8);
        for p in &self.paths {
            o.extend_from_slice(&(p.len() as u16).to_be_bytes());
            o.extend_from_slice(p.as_bytes());
        }
        o.push(self.extensions.len() as u8);
        for e in &self.extensions {
            o.extend_from_slice(&e.kind.to_be_bytes());
            o.push(if e.is_critical { EXT_CRITICAL } else { 0 });
            o.extend_from_slice(&(e.value.len() as u16).to_be_bytes());
            o.extend_from_slice(&e.value);
        }
        o
    }

    /// Parses and checks a plaintext. Total: never panics.
    pub fn decode(bytes: &[u8]) -> Result<Claims, ClaimsError> {
        let mut r = Reader(bytes);
        let token_id: [u8; 16] = r.array()?;
        let issued_at_s = i64::from_be_bytes(r.array()?);
        let expires_at_s = i64::from_be_bytes(r.array()?);
        let direction = match r.u8()? {
            0 => Direction::Download,
            1 => Direction::Upload,
            _ => return Err(ClaimsError::BadField("direction")),
        };
        let flags = r.u8()?;
        if flags & !FLAG_SINGLE_USE != 0 {
            return Err(ClaimsError::BadField("flags"));
        }
        let min_suite = SuiteId::from_u8(r.u8()?).ok_or(ClaimsError::BadField("minimum suite"))?;
        let policy_cap = policy_from_u8(r.u8()?).ok_or(ClaimsError::BadField("policy cap"))?;
        let rate_cap_bps = u64::from_be_bytes(r.array()?);
        let user = r.str8()?;
        let user = UserName::parse(&user).map_err(|_| ClaimsError::BadField("user"))?;
        let package = r.str8()?;
        let client_ip = match r.u8()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
            _ => return Err(ClaimsError::BadField("client address")),
        };
        let paths = read_paths(&mut r)?;
        let extensions = read_extensions(&mut r)?;
        if !r.0.is_empty() {
            return Err(ClaimsError::TrailingBytes(r.0.len()));
        }
        let claims = Claims {
            token_id,
            user,
            direction,
            package_id: (!package.is_empty()).then_some(package),
            paths,
            issued_at_s,
            expires_at_s,
            client_ip,
            min_suite,
            rate_cap_bps,
            policy_cap,
            single_use: flags & FLAG_SINGLE_USE != 0,
            extensions,
        };
        claims.check()?;
        Ok(claims)
    }
}

fn read_paths(r: &mut Reader<'_>) -> Result<Vec<String>, ClaimsError> {
    let count = usize::from(r.u8()?);
    if count > MAX_PATHS {
        return Err(ClaimsError::PathCount);
    }
    let mut paths = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(u16::from_be_bytes(r.array()?));
        paths.push(r.string(len)?);
    }
    Ok(paths)
}

fn read_extensions(r: &mut Reader<'_>) -> Result<Vec<Extension>, ClaimsError> {
    let count = usize::from(r.u8()?);
    if count > MAX_EXTENSIONS {
        return Err(ClaimsError::ExtensionLimit);
    }
    let mut extensions = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = u16::from_be_bytes(r.array()?);
        let flags = r.u8()?;
        let len = usize::from(u16::from_be_bytes(r.array()?));
        if len > MAX_EXTENSION_LEN || flags & !EXT_CRITICAL != 0 {
            return Err(ClaimsError::ExtensionLimit);
        }
        let value = r.take(len)?.to_vec();
        extensions.push(Extension { kind, is_critical: flags & EXT_CRITICAL != 0, value });
    }
    Ok(extensions)
}

fn policy_from_u8(v: u8) -> Option<Policy> {
    [Policy::Fixed, Policy::High, Policy::Fair, Policy::Low].into_iter().find(|p| *p as u8 == v)
}

fn put_str8(o: &mut Vec<u8>, s: &str) {
    // Callers pass a checked user name (at most 64 bytes) or package id (at most 128).
    o.push(s.len() as u8);
    o.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClaimsError> {
        if self.0.len() < n {
            return Err(ClaimsError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ClaimsError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ClaimsError> {
        Ok(self.array::<1>()?[0])
    }
    fn string(&mut self, len: usize) -> Result<String, ClaimsError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| ClaimsError::BadField("text (not UTF-8)"))
    }
    fn str8(&mut self) -> Result<String, ClaimsError> {
        let len = usize::from(self.u8()?);
        self.string(len)
    }
}
