//! Minting with the admin settings applied: what `haul token mint` and the web console call.
//!
//! Invariants:
//! - Every minted token carries the settings' minimum suite ("encrypt transfers" forces an
//!   encrypting suite) and their rate and policy caps; the minter cannot lower them.
//! - Tokens are minted only for an existing, enabled, unexpired user whose direction limit
//!   allows the direction, and only for normalized paths (`token::path`).
//! - The URL builder percent-encodes the path; the token is base64url and needs no escaping.

use std::fmt::Write as _;
use std::net::IpAddr;

use thiserror::Error;

use super::claims::Claims;
use super::path::{PathError, normalize_token_path};
use super::{MintedToken, TokenError, mint, new_token_id};
use crate::authz::Direction;
use crate::secret::Keyring;
use crate::store::{Store, StoreError};
use crate::users::{DirectionLimit, UserName};

/// Longest lifetime a token may be minted with: 30 days.
pub const MAX_TOKEN_LIFETIME_S: u64 = 30 * 86_400;

/// Why a token was not minted (the minter's request, the store, or the secret).
#[derive(Debug, Error)]
pub enum MintError {
    #[error("no user called {0}")]
    UnknownUser(String),
    #[error("user {0} is disabled or expired: no token minted")]
    UserInactive(String),
    #[error("user {user} is {limit}: cannot mint a {direction} token")]
    DirectionNotAllowed { user: String, limit: &'static str, direction: &'static str },
    #[error("path {path:?}: {source}")]
    BadPath { path: String, source: PathError },
    #[error("token lifetime must be 1 s to {MAX_TOKEN_LIFETIME_S} s")]
    BadLifetime,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// What to mint.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub user: UserName,
    pub direction: Direction,
    /// As the minter wrote them (`/a/b`, `a/b/` and `a/b` are the same path).
    pub paths: Vec<String>,
    /// `None`: the settings' token lifetime.
    pub lifetime_s: Option<u64>,
    pub single_use: bool,
    pub client_ip: Option<IpAddr>,
    pub package_id: Option<String>,
}

/// Mints tokens under a keyring, with the store's admin settings and users.
#[derive(Debug)]
pub struct Minter<'a> {
    store: &'a Store,
    keyring: &'a Keyring,
}

impl<'a> Minter<'a> {
    pub fn new(store: &'a Store, keyring: &'a Keyring) -> Minter<'a> {
        Minter { store, keyring }
    }

    /// Mints one token at `now_s`; returns the claims (for display and audit) and the token.
    pub fn mint(&self, req: &MintRequest, now_s: i64) -> Result<(Claims, MintedToken), MintError> {
        let user = self
            .store
            .user(req.user.as_str())?
            .ok_or_else(|| MintError::UnknownUser(req.user.to_string()))?;
        if user.is_disabled || user.is_expired(now_s) {
            return Err(MintError::UserInactive(req.user.to_string()));
        }
        let refused = match (user.direction_limit, req.direction) {
            (DirectionLimit::UploadOnly, Direction::Download) => Some("upload-only"),
            (DirectionLimit::DownloadOnly, Direction::Upload) => Some("download-only"),
            _ => None,
        };
        if let Some(limit) = refused {
            return Err(MintError::DirectionNotAllowed {
                user: req.user.to_string(),
                limit,
                direction: req.direction.name(),
            });
        }
        let settings = self.store.admin_settings()?;
        let lifetime_s = req.lifetime_s.unwrap_or(settings.token_lifetime_s);
        if lifetime_s == 0 || lifetime_s > MAX_TOKEN_LIFETIME_S {
            return Err(MintError::BadLifetime);
        }
        let paths = req
            .paths
            .iter()
            .map(|p| {
                normalize_token_path(p)
                    .map_err(|source| MintError::BadPath { path: p.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claims = Claims {
            token_id: new_token_id()?,
            user: req.user.clone(),
            direction: req.direction,
            package_id: req.package_id.clone(),
            paths,
            issued_at_s: now_s,
            expires_at_s: now_s.saturating_add(lifetime_s as i64),
            client_ip: req.client_ip,
            min_suite: settings.min_suite(),
            rate_cap_bps: settings.rate_cap_bps,
            policy_cap: settings.policy_cap,
            single_use: req.single_use,
            extensions: Vec::new(),
        };
        let token = mint(self.keyring, &claims)?;
        Ok((claims, token))
    }
}

/// `haul://HOST:PORT/PATH?token=TOKEN&hostkey=FINGERPRINT` (docs/URL.md). `host` may be a
/// name or an address (IPv6 is bracketed); `path` is percent-encoded except `/`.
pub fn transfer_url(
    host: &str,
    port: u16,
    path: &str,
    token: &MintedToken,
    hostkey: &str,
) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut url = format!("haul://{host}:{port}/");
    for b in path.trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url.push_str("?token=");
    url.push_str(token.expose());
    url.push_str("&hostkey=");
    for b in hostkey.bytes() {
        // SHA256:base64: ':' and '/' are legal in a query (RFC 3986); '+' is escaped because
        // form decoding reads it as a space.
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            url.push(char::from(b));
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::settings::AdminSettings;
    use crate::token::open;
    use crate::users::UserChange;
    use haul_proto::crypto::SuiteId;
    use haul_proto::rate::Policy;

    fn req(user: &str, direction: Direction) -> MintRequest {
        MintRequest {
            user: UserName::parse(user).unwrap(),
            direction,
            paths: vec!["/a/b/".into()],
            lifetime_s: None,
            single_use: false,
            client_ip: None,
            package_id: None,
        }
    }

    #[test]
    fn applies_settings_and_refuses_what_cannot_be_used() {
        let store = Store::open_in_memory().unwrap();
        let ring = Keyring::generate(0).unwrap();
        let m = Minter::new(&store, &ring);
        assert!(matches!(
            m.mint(&req("alice", Direction::Download), 0),
            Err(MintError::UnknownUser(_))
        ));
        let alice = UserName::parse("alice").unwrap();
        store.create_user(&alice, &UserChange::default(), 0).unwrap();
        let s = AdminSettings {
            rate_cap_bps: 5_000,
            policy_cap: Policy::Fair,
            token_lifetime_s: 60,
            ..AdminSettings::default()
        };
        store.set_admin_settings(&s, 0).unwrap();
        let (c, t) = m.mint(&req("alice", Direction::Download), 100).unwrap();
        assert_eq!(c.paths, vec!["a/b".to_owned()]);
        assert_eq!(c.expires_at_s, 160);
        assert_eq!(c.min_suite, SuiteId::Aes128CfbCmac, "encrypt transfers is on by default");
        assert_eq!((c.rate_cap_bps, c.policy_cap), (5_000, Policy::Fair));
        assert_eq!(open(&ring, t.expose(), 100).unwrap().claims(), &c);

        let mut r = req("alice", Direction::Upload);
        r.paths = vec!["../x".into()];
        assert!(matches!(m.mint(&r, 0), Err(MintError::BadPath { .. })));
        r.paths = vec!["x".into()];
        r.lifetime_s = Some(MAX_TOKEN_LIFETIME_S + 1);
        assert!(matches!(m.mint(&r, 0), Err(MintError::BadLifetime)));

        let only = UserChange {
            direction_limit: Some(DirectionLimit::UploadOnly),
            ..UserChange::default()
        };
        store.update_user(&alice, &only, 0).unwrap();
        assert!(matches!(
            m.mint(&req("alice", Direction::Download), 0),
            Err(MintError::DirectionNotAllowed { .. })
        ));
        let off = UserChange { is_disabled: Some(true), ..UserChange::default() };
        store.update_user(&alice, &off, 0).unwrap();
        assert!(matches!(
            m.mint(&req("alice", Direction::Upload), 0),
            Err(MintError::UserInactive(_))
        ));
    }

    #[test]
    fn urls_escape_what_they_must() {
        let ring = Keyring::generate(0).unwrap();
        let t = mint(&ring, &crate::token::tests::sample_claims(0)).unwrap();
        let u = transfer_url("h.example", 2222, "/dir/a b?.bin", &t, "SHA256:ab+/c");
        assert!(u.starts_with("haul://h.example:2222/dir/a%20b%3F.bin?token="), "{u}");
        assert!(u.ends_with("&hostkey=SHA256:ab%2B/c"), "{u}");
        assert!(transfer_url("::1", 1, "", &t, "x").starts_with("haul://[::1]:1/?token="));
    }
}
