//! The [`Authorizer`] over the store and tokens: what the gate calls before anything exists.
//!
//! Order of checks (cheapest and most telling first; nothing is written to the store until
//! every check has passed, so a refusal leaves no trace but its log line):
//! 1. the token opens: version, key id (current secret, or the previous one inside its grace
//!    period; an unknown key id re-reads the secret file first, rate-limited, so a rotation
//!    by `haul secret rotate` is picked up without a restart), AEAD tag, claims, expiry;
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
//! `haul cp` (a user's own SSH key, no token): [`TokenAuthorizer::verify_user_key`] at login,
//! then [`TokenAuthorizer::authorize_for_user`] runs steps 4 to 8 with the whole storage root as
//! the allowed path and the admin settings as the floor and caps.
//!
//! Invariants:
//! - A [`Grant`] is built only at the end of [`TokenAuthorizer::authorize`]; a [`Refusal`]
//!   carries a stable code and a detail for the server log that never contains the token.
//! - Time comes from the authorizer's clock (the system clock, or a test's).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
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
use crate::users::{DirectionLimit, IpPurpose, User, is_allowed, parse_ssh_keys, storage_root};

/// The target rate when neither the URL nor a cap gives one (as `haul send`'s default).
pub const DEFAULT_TARGET_RATE_BPS: u64 = 10_000_000_000;
/// Least time between two re-reads of the secret file prompted by unknown key ids.
pub const KEYRING_RELOAD_INTERVAL_S: i64 = 1;
/// The suite when the URL asks for none.
pub const DEFAULT_SUITE: SuiteId = SuiteId::Aes128CfbCmac;

/// Whether a token's package still exists and the user may still have it. Packages arrive
/// with the web console; until one is configured, a token naming a package is refused.
pub trait PackageCheck: Send + Sync {
    fn check(&self, package_id: &str, user: &User, direction: Direction) -> Result<(), Refusal>;
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What a transfer is limited to: a token's claims, or the settings for `haul cp`.
struct Limits<'a> {
    token_id: [u8; 16],
    paths: &'a [String],
    package_id: Option<&'a str>,
    min_suite: SuiteId,
    rate_cap_bps: u64,
    policy_cap: Policy,
    single_use: bool,
}

/// The token side of the gate.
pub struct TokenAuthorizer {
    store: Arc<Store>,
    keyring: RwLock<Arc<Keyring>>,
    data_dir: PathBuf,
    /// This process's id in `token_uses.holder`.
    holder: [u8; 16],
    clock: Clock,
    /// When the secret file was last re-read (unix seconds).
    last_reload_s: AtomicI64,
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
    /// Purges the use rows of tokens that have expired (they can never be presented again).
    pub fn new(store: Arc<Store>, keyring: Keyring, data_dir: &Path) -> Result<Self, TokenError> {
        // Best effort: stale rows only take space.
        let _ = store.purge_token_uses(system_now_s());
        Ok(TokenAuthorizer {
            store,
            keyring: RwLock::new(Arc::new(keyring)),
            data_dir: data_dir.to_owned(),
            holder: new_token_id()?,
            clock: Arc::new(system_now_s),
            last_reload_s: AtomicI64::new(i64::MIN),
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

    /// Re-reads the server secret (after `haul secret rotate` by another process, tokens carry
    /// a key id this process has not seen), at most once per [`KEYRING_RELOAD_INTERVAL_S`]
    /// so forged key ids cannot make every ask read the file. True if a new keyring was
    /// loaded. A file that fails its checks leaves the current keyring in place.
    fn reload_keyring_if_due(&self, now_s: i64) -> bool {
        let last = self.last_reload_s.load(Ordering::Relaxed);
        if now_s.saturating_sub(last) < KEYRING_RELOAD_INTERVAL_S
            || self
                .last_reload_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        match crate::secret::load(&self.data_dir) {
            Ok(ring) if ring.current_id() != self.keyring().current_id() => {
                self.replace_keyring(ring);
                true
            }
            _ => false,
        }
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Steps 1 to 8: everything but claiming a single use. Writes nothing.
    fn verify(&self, ask: &TransferAsk<'_>, now_s: i64) -> Result<(OpenedToken, Grant), Refusal> {
        let opened = match open(&self.keyring(), &ask.token.0, now_s) {
            Err(TokenError::UnknownKey(_)) if self.reload_keyring_if_due(now_s) => {
                open(&self.keyring(), &ask.token.0, now_s)
            }
            other => other,
        }
        .map_err(|e| e.refusal())?;
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
        let limits = Limits {
            token_id: c.token_id,
            paths: &c.paths,
            package_id: c.package_id.as_deref(),
            min_suite: c.min_suite,
            rate_cap_bps: c.rate_cap_bps,
            policy_cap: c.policy_cap,
            single_use: c.single_use,
        };
        let grant = self.grant_for(c.user.as_str(), ask, &limits, now_s)?;
        Ok((opened, grant))
    }

    /// Steps 4 to 8, for a user, within `limits` (a token's, or the settings' for `haul cp`).
    fn grant_for(
        &self,
        user_name: &str,
        ask: &TransferAsk<'_>,
        limits: &Limits<'_>,
        now_s: i64,
    ) -> Result<Grant, Refusal> {
        let user = self.check_user(user_name, ask, now_s)?;
        let settings = self.store.admin_settings().map_err(internal)?;
        let suite = choose_suite(ask.suite, limits.min_suite, settings.min_suite())?;
        let (root, path) = self.check_path(&user, limits.paths, ask)?;
        if let Some(package_id) = limits.package_id {
            match &self.packages {
                Some(p) => p.check(package_id, &user, ask.direction)?,
                None => {
                    return Err(refuse(
                        RefusalCode::PackageGone,
                        format!("token names package {package_id}; this server keeps no packages"),
                    ));
                }
            }
        }
        let (rate_bps, min_rate_bps, policy) = clamp(ask, limits.rate_cap_bps, limits.policy_cap);
        Ok(Grant {
            token_id: limits.token_id,
            user: user.name.to_string(),
            direction: ask.direction,
            root,
            paths: vec![path],
            suite,
            rate_bps,
            min_rate_bps,
            policy,
            single_use: limits.single_use,
        })
    }

    /// `haul cp`: whether `openssh_public_key` (an authorized_keys line) is one of `user`'s
    /// own keys. The gate asks this at SSH login; the transfer is then authorized by
    /// [`TokenAuthorizer::authorize_for_user`].
    pub fn verify_user_key(&self, user: &str, openssh_public_key: &str) -> bool {
        let Ok(keys) = parse_ssh_keys(openssh_public_key) else { return false };
        let [key] = keys.as_slice() else { return false };
        match self.store.user_by_ssh_fingerprint(&key.fingerprint()) {
            Ok(Some(u)) => u.name.as_str() == user,
            _ => false,
        }
    }

    /// `haul cp`: authorizes a transfer for `user`, whose own key the SSH login proved. No
    /// token: the path may be anywhere in the user's storage root, the user's restrictions
    /// apply as for a token, and the suite floor and caps come from the admin settings.
    pub fn authorize_for_user(&self, user: &str, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        let now_s = (self.clock)();
        let settings = self.store.admin_settings().map_err(internal)?;
        let root = [String::new()];
        let limits = Limits {
            token_id: new_token_id().map_err(|e| e.refusal())?,
            paths: &root,
            package_id: None,
            min_suite: settings.min_suite(),
            rate_cap_bps: settings.rate_cap_bps,
            policy_cap: settings.policy_cap,
            single_use: false,
        };
        self.grant_for(user, ask, &limits, now_s)
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

    fn is_user_key(&self, user: &str, openssh_public_key: &str) -> bool {
        self.verify_user_key(user, openssh_public_key)
    }

    fn authorize_user(&self, user: &str, ask: &TransferAsk<'_>) -> Result<Grant, Refusal> {
        self.authorize_for_user(user, ask)
    }

    fn resume_partial_bytes(&self, grant: &Grant, path: &str) -> Option<u64> {
        if !grant.single_use {
            return None;
        }
        self.store.resume_partial_bytes(&grant.token_id, path).ok().flatten()
    }
}
