//! Admin settings (table `settings`): typed key/value rows. Each key has a type and a default
//! here; an absent row means the default, so a fresh store behaves as documented without
//! seeding. Later issues add keys (and may use [`Store::setting`]/[`Store::set_setting`] for
//! their own), never columns.
//!
//! Invariants:
//! - Defaults are the safe choice: transfers are encrypted unless an admin turns it off.
//! - A row that does not parse is [`StoreError::BadSetting`], never a silent default.

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Longest settings value we store.
pub const MAX_SETTING_VALUE: usize = 4096;

pub const KEY_ENCRYPT_TRANSFERS: &str = "encrypt_transfers";
pub const KEY_TOKEN_LIFETIME_S: &str = "token_lifetime_s";
pub const KEY_RATE_CAP_BPS: &str = "rate_cap_bps";
pub const KEY_POLICY_CAP: &str = "policy_cap";
pub const KEY_PUBLIC_HOST: &str = "public_host";
pub const KEY_PUBLIC_PORT: &str = "public_port";

/// Default token lifetime: one hour.
pub const DEFAULT_TOKEN_LIFETIME_S: u64 = 3600;
/// Host and port put in `haul://` URLs until `haul serve` records its own.
pub const DEFAULT_PUBLIC_HOST: &str = "localhost";
pub const DEFAULT_PUBLIC_PORT: u16 = 2222;

/// The settings tokens take their minimum suite and caps from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// "Encrypt transfers": every minted token requires an encrypting suite.
    pub encrypt_transfers: bool,
    /// Lifetime of a minted token when the minter does not say.
    pub token_lifetime_s: u64,
    /// Cap on a transfer's target rate, bits per second; 0: no cap.
    pub rate_cap_bps: u64,
    /// The most aggressive policy a transfer may ask for (low < fair < high < fixed).
    pub policy_cap: Policy,
    /// Host and port of the SSH gate as clients should reach it (for URLs).
    pub public_host: String,
    pub public_port: u16,
}

impl Default for AdminSettings {
    fn default() -> AdminSettings {
        AdminSettings {
            encrypt_transfers: true,
            token_lifetime_s: DEFAULT_TOKEN_LIFETIME_S,
            rate_cap_bps: 0,
            policy_cap: Policy::Fixed,
            public_host: DEFAULT_PUBLIC_HOST.to_owned(),
            public_port: DEFAULT_PUBLIC_PORT,
        }
    }
}

impl AdminSettings {
    /// The weakest suite a transfer may use under these settings.
    pub fn min_suite(&self) -> SuiteId {
        if self.encrypt_transfers { SuiteId::Aes128CfbCmac } else { SuiteId::IntegrityCmac }
    }
}

impl Store {
    /// The raw value of a settings key, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        })
    }

    /// Sets a settings key (values longer than [`MAX_SETTING_VALUE`] are refused).
    pub fn set_setting(&self, key: &str, value: &str, now_s: i64) -> Result<(), StoreError> {
        if value.len() > MAX_SETTING_VALUE {
            return Err(StoreError::BadSetting { key: key.to_owned(), value: "<too long>".into() });
        }
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![key, value, now_s],
            )?;
            Ok(())
        })
    }

    /// Removes a settings key: it reads as its default again.
    pub fn clear_setting(&self, key: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute("DELETE FROM settings WHERE key = ?1", [key])?;
            Ok(())
        })
    }

    /// The admin settings, defaults filled in.
    pub fn admin_settings(&self) -> Result<AdminSettings, StoreError> {
        let d = AdminSettings::default();
        Ok(AdminSettings {
            encrypt_transfers: self.typed(
                KEY_ENCRYPT_TRANSFERS,
                d.encrypt_transfers,
                parse_bool,
            )?,
            token_lifetime_s: self.typed(KEY_TOKEN_LIFETIME_S, d.token_lifetime_s, |v| {
                v.parse().ok().filter(|s| *s > 0)
            })?,
            rate_cap_bps: self.typed(KEY_RATE_CAP_BPS, d.rate_cap_bps, |v| v.parse().ok())?,
            policy_cap: self.typed(KEY_POLICY_CAP, d.policy_cap, Policy::from_name)?,
            public_host: self
                .typed(KEY_PUBLIC_HOST, d.public_host, |v| (!v.is_empty()).then(|| v.to_owned()))?,
            public_port: self
                .typed(KEY_PUBLIC_PORT, d.public_port, |v| v.parse().ok().filter(|p| *p > 0))?,
        })
    }

    /// Writes every admin setting.
    pub fn set_admin_settings(&self, s: &AdminSettings, now_s: i64) -> Result<(), StoreError> {
        let pairs = [
            (KEY_ENCRYPT_TRANSFERS, s.encrypt_transfers.to_string()),
            (KEY_TOKEN_LIFETIME_S, s.token_lifetime_s.to_string()),
            (KEY_RATE_CAP_BPS, s.rate_cap_bps.to_string()),
            (KEY_POLICY_CAP, s.policy_cap.name().to_owned()),
            (KEY_PUBLIC_HOST, s.public_host.clone()),
            (KEY_PUBLIC_PORT, s.public_port.to_string()),
        ];
        for (k, v) in pairs {
            self.set_setting(k, &v, now_s)?;
        }
        Ok(())
    }

    fn typed<T>(
        &self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, StoreError> {
        match self.setting(key)? {
            None => Ok(default),
            Some(v) => {
                parse(&v).ok_or_else(|| StoreError::BadSetting { key: key.to_owned(), value: v })
            }
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_then_round_trip_then_refuse_garbage() {
        let s = Store::open_in_memory().unwrap();
        let d = s.admin_settings().unwrap();
        assert_eq!(d, AdminSettings::default());
        assert!(d.encrypt_transfers, "encrypted by default");
        assert_eq!(d.min_suite(), SuiteId::Aes128CfbCmac);
        let changed = AdminSettings {
            encrypt_transfers: false,
            token_lifetime_s: 600,
            rate_cap_bps: 1_000_000,
            policy_cap: Policy::Fair,
            public_host: "haul.example".into(),
            public_port: 22,
        };
        s.set_admin_settings(&changed, 5).unwrap();
        assert_eq!(s.admin_settings().unwrap(), changed);
        assert_eq!(changed.min_suite(), SuiteId::IntegrityCmac);
        s.set_setting(KEY_POLICY_CAP, "greedy", 6).unwrap();
        assert!(matches!(s.admin_settings(), Err(StoreError::BadSetting { .. })));
    }
}
