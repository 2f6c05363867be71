//! The [`Authorizer`] over the store and tokens: what the gate calls before anything exists.
//!
//! Order of checks (cheapest and most telling first; nothing is written to the store until
//! every check has passed, so a refusal leaves no trace but its log line):
//! 1. the token opens: version, key id (current secret, or the previous one inside its grace
//!    period), AEAD tag, claims, expiry;
//! 2. the direction asked is the token's;
//! 3. a client-address binding, if the token has one;
//! 4. the user: exists, enabled, not expired, direction limit, the upload/download allow-list;
//! 5. the cipher asked is not weaker than the token's minimum nor the current "encrypt
//!    transfers" setting;
//! 6. the path: confined to the token's paths after normalization, then resolved beneath the
//!    user's storage root with no symlink (downloads: it must exist);
//! 7. the package, if the token names one, still exists and the user is entitled to it;
//! 8. rate and policy clamped to the token's caps;
//! 9. single-use tokens: the use is claimed (`store::token_uses`): a concurrent second use is
//!    `InUse`, a spent one `AlreadyUsed`, an interrupted one resumes for the same path.
//!
//! Invariants:
//! - A [`Grant`] is built only at the end of [`TokenAuthorizer::authorize`]; a [`Refusal`]
//!   carries a stable code and a detail for the server log that never contains the token.
//! - Time comes from the authorizer's clock (the system clock, or a test's).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;

use crate::authz::{Authorizer, Direction, Grant, Outcome, Refusal, RefusalCode, TransferAsk};
use crate::secret::Keyring;
use crate::store::Store;
use crate::store::token_uses::{UseAsk, UseClaim, UseRefusal};
use crate::token::claims::{policy_rank, suite_strength};
use crate::token::path::{PathError, confine, open_root, resolve_beneath};
use crate::token::{OpenedToken, TokenError, new_token_id, open};
use crate::users::{DirectionLimit, IpPurpose, User, is_allowed, storage_root};

/// The target rate when neither the URL nor a cap gives one (as `haul send`'s default).
pub const DEFAULT_TARGET_RATE_BPS: u64 = 10_000_000_000;
/// The suite when the URL asks for none.
pub const DEFAULT_SUITE: SuiteId = SuiteId::Aes128CfbCmac;

/// Whether a token's package still exists and the user may still have it. Packages arrive
/// with the web console; until one is configured, a token naming a package is refused.
pub trait PackageCheck: Send + Sync {
    fn check(&self, package_id: &str, user: &User, direction: Direction) -> Result<(), Refusal>;
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The token side of the gate.
pub struct TokenAuthorizer {
    store: Arc<Store>,
    keyring: RwLock<Arc<Keyring>>,
    data_dir: PathBuf,
    /// This process's id in `token_uses.holder`.
    holder: [u8; 16],
    clock: Clock,
    packages: Option<Box<dyn PackageCheck>>,
}

impl std::fmt::Debug for TokenAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthorizer").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

fn refuse(code: RefusalCode, detail: impl Into<String>) -> Refusal {
    Refusal { code, detail: detail.into() }
}

/// Unix seconds from the system clock (0 if the clock is before 1970).
pub fn system_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TokenAuthorizer {
    /// An authorizer over `store`, `keyring` and the storage roots under `data_dir/storage`.
    pub fn new(store: Arc<Store>, keyring: Keyring, data_dir: &Path) -> Result<Self, TokenError> {
        Ok(TokenAuthorizer {
            store,
            keyring: RwLock::new(Arc::new(keyring)),
            data_dir: data_dir.to_owned(),
            holder: new_token_id()?,
            clock: Arc::new(system_now_s),
            packages: None,
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Installs the package check (the web console's packages).
    pub fn with_packages(mut self, packages: Box<dyn PackageCheck>) -> Self {
        self.packages = Some(packages);
        self
    }

    /// Swaps in a new keyring (after `haul secret rotate`).
    pub fn replace_keyring(&self, keyring: Keyring) {
        let mut guard = self.keyring.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(keyring);
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Steps 1 to 8: everything but claiming a single use. Writes nothing.
    fn verify(&self, ask: &TransferAsk<'_>, now_s: i64) -> Result<(OpenedToken, Grant), Refusal> {
        let opened =
            open(&self.keyring(), &ask.token.0, now_s).map_err(|e: TokenError| e.refusal())?;
        let c = opened.claims();
        if ask.direction != c.direction {
            return Err(refuse(
                RefusalCode::WrongDirection,
                format!("token is for {}, asked {}", c.direction.name(), ask.direction.name()),
            ));
        }
        if let Some(bound) = c.client_ip
            && !same_ip(bound, ask.client_ip)
        {
            return Err(refuse(
                RefusalCode::AddressNotAllowed,
                format!("token is bound to {bound}, used from {}", ask.client_ip),
            ));
        }
        let user = self.check_user(c.user.as_str(), ask, now_s)?;
        let settings = self.store.admin_settings().map_err(internal)?;
        let suite = choose_suite(ask.suite, c.min_suite, settings.min_suite())?;
        let (root, path) = self.check_path(&user, &c.paths, ask)?;
        if let Some(package_id) = &c.package_id {
            match &self.packages {
                Some(p) => p.check(package_id, &user, ask.direction)?,
                None => {
                    return Err(refuse(
                        RefusalCode::PackageGone,
                        format!(
                            "token names package {package_id}, and this server keeps no packages"
                        ),
                    ));
                }
            }
        }
        let (rate_bps, min_rate_bps, policy) = clamp(ask, c.rate_cap_bps, c.policy_cap);
        let grant = Grant {
            token_id: c.token_id,
            user: user.name.to_string(),
            direction: c.direction,
            root,
            paths: vec![path],
            suite,
            rate_bps,
            min_rate_bps,
            policy,
            single_use: c.single_use,
        };
        Ok((opened, grant))
    }

    fn check_user(&self, name: &str, ask: &TransferAsk<'_>, now_s: i64) -> Result<User, Refusal> {
        let user = self.store.user(name).map_err(internal)?.ok_or_else(|| {
            refuse(RefusalCode::NotEntitled, format!("user {name} no longer exists"))
        })?;
        if user.is_disabled {
            return Err(refuse(RefusalCode::UserDisabled, format!("user {name} is disabled")));
        }
        if user.is_expired(now_s) {
            return Err(refuse(RefusalCode::UserExpired, format!("user {name} has expired")));
        }
        match (user.direction_limit, ask.direction) {
            (DirectionLimit::UploadOnly, Direction::Download) => {
                return Err(refuse(RefusalCode::UploadOnly, format!("user {name} is upload-only")));
            }
            (DirectionLimit::DownloadOnly, Direction::Upload) => {
                return Err(refuse(
                    RefusalCode::DownloadOnly,
                    format!("user {name} is download-only"),
                ));
            }
            _ => {}
        }
        let purpose = match ask.direction {
            Direction::Upload => IpPurpose::Upload,
            Direction::Download => IpPurpose::Download,
        };
        if !is_allowed(user.ip_allow(purpose), ask.client_ip) {
            return Err(refuse(
                RefusalCode::AddressNotAllowed,
                format!("{} is outside user {name}'s {} allow-list", ask.client_ip, purpose.name()),
            ));
        }
        Ok(user)
    }

    fn check_path(
        &self,
        user: &User,
        allowed: &[String],
        ask: &TransferAsk<'_>,
    ) -> Result<(PathBuf, String), Refusal> {
        let outside = |e: PathError| refuse(RefusalCode::PathOutside, format!("path: {e}"));
        let rel = confine(allowed, ask.path).map_err(outside)?;
        let root = storage_root(&self.data_dir, &user.name);
        let root_fd = open_root(&root)
            .map_err(|e| refuse(RefusalCode::PackageGone, format!("storage: {e}")))?;
        let must_exist = ask.direction == Direction::Download;
        resolve_beneath(&root_fd, &rel, must_exist).map_err(|e| match e {
            PathError::Missing => refuse(RefusalCode::PackageGone, format!("{rel:?}: {e}")),
            other => outside(other),
        })?;
        let canonical = std::fs::canonicalize(&root)
            .map_err(|e| refuse(RefusalCode::PackageGone, format!("storage root: {e}")))?;
        Ok((canonical, rel))
    }
}

/// The suite to use: the one asked, or the default; refused when weaker than either floor.
fn choose_suite(
    asked: Option<SuiteId>,
    token_min: SuiteId,
    settings_min: SuiteId,
) -> Result<SuiteId, Refusal> {
    let floor = suite_strength(token_min).max(suite_strength(settings_min));
    let suite = asked.unwrap_or(DEFAULT_SUITE);
    if suite_strength(suite) < floor {
        return Err(refuse(
            RefusalCode::CipherTooWeak,
            format!("{} asked; this transfer requires an encrypting suite", suite.name()),
        ));
    }
    Ok(suite)
}

/// (rate, minimum rate, policy) after the caps (`rate_cap_bps` 0: no cap).
fn clamp(ask: &TransferAsk<'_>, rate_cap_bps: u64, policy_cap: Policy) -> (u64, u64, Policy) {
    let cap = if rate_cap_bps == 0 { u64::MAX } else { rate_cap_bps };
    let rate = ask.rate_bps.unwrap_or(DEFAULT_TARGET_RATE_BPS.min(cap)).min(cap);
    let min_rate = ask.min_rate_bps.unwrap_or(0).min(rate);
    let asked = ask.policy.unwrap_or_default();
    let policy = if policy_rank(asked) > policy_rank(policy_cap) { policy_cap } else { asked };
    (rate, min_rate, policy)
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    // The store failing is the server's fault; the client sees a generic code.
    refuse(RefusalCode::NotEntitled, format!("server error while authorizing: {e}"))
}

impl Authorizer for TokenAuthorizer {
    fn authorize(&self, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let now_s = (self.clock)();
        let (opened, grant) = self.verify(ask, now_s)?;
        if !grant.single_use {
            return Ok(grant);
        }
        let claim = UseAsk {
            token_id: &grant.token_id,
            user: &grant.user,
            direction: grant.direction,
            path: &grant.paths[0],
            holder: &self.holder,
            token_expires_at_s: opened.claims().expires_at_s,
        };
        match self.store.claim_token_use(&claim, now_s).map_err(internal)? {
            Ok(UseClaim::Fresh | UseClaim::Resumed { .. }) => Ok(grant),
            Err(UseRefusal::InUse) => {
                Err(refuse(RefusalCode::InUse, "single-use token held by a running transfer"))
            }
            Err(UseRefusal::AlreadyUsed) => {
                Err(refuse(RefusalCode::AlreadyUsed, "single-use token already used"))
            }
            Err(UseRefusal::OtherPath { granted }) => Err(refuse(
                RefusalCode::AlreadyUsed,
                format!("single-use token was used for {granted:?}; only that path may resume"),
            )),
        }
    }

    fn finish(&self, grant: &Grant, outcome: Outcome) {
        if !grant.single_use {
            return;
        }
        let done = outcome == Outcome::Complete;
        // Failing to record is not fatal for the transfer that already ran; the row stays
        // active under our holder, and the next process treats it as interrupted.
        let _ = self.store.finish_token_use(&grant.token_id, &self.holder, done, (self.clock)());
    }

    fn record_partial(&self, grant: &Grant, path: &str, partial_bytes: u64) {
        if grant.single_use {
            // Best effort: without the record a resume starts from the receiver's checkpoint.
            let _ = self.store.record_partial(&grant.token_id, path, partial_bytes, (self.clock)());
        }
    }

    fn is_user_key(&self, user: &str, key_fingerprint: &str) -> bool {
        // A store error means "not known": the login is refused, never let through.
        self.store
            .user_by_ssh_fingerprint(key_fingerprint)
            .ok()
            .flatten()
            .is_some_and(|u| u.name.as_str() == user)
    }

    /// `haul cp` (added by the gate's branch): the same user, suite and path checks as a
    /// token, confined to the whole of the user's storage root; no caps but the settings'.
    fn authorize_user(&self, user: &str, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let now_s = (self.clock)();
        let u = self.check_user(user, ask, now_s)?;
        let settings = self.store.admin_settings().map_err(internal)?;
        let suite = choose_suite(ask.suite, DEFAULT_SUITE, settings.min_suite())?;
        let (root, path) = self.check_path(&u, &[String::new()], ask)?;
        let (rate_bps, min_rate_bps, policy) = clamp(ask, 0, Policy::Fixed);
        Ok(Grant {
            token_id: new_token_id().map_err(internal)?,
            user: u.name.to_string(),
            direction: ask.direction,
            root,
            paths: vec![path],
            suite,
            rate_bps,
            min_rate_bps,
            policy,
            single_use: false,
        })
    }

    fn resume_partial_bytes(&self, grant: &Grant, path: &str) -> Option<u64> {
        if !grant.single_use {
            return None;
        }
        self.store.resume_partial_bytes(&grant.token_id, path).ok().flatten()
    }
}
