//! The console's own admin settings, kept as keys in 0001's `settings` table beside the transfer
//! settings of `store::settings` (which the console edits too).
//!
//! Invariants: every key has a type and a default here (an absent row is the default); a row
//! that does not parse is [`StoreError::BadSetting`], never a silent default; the SMTP password
//! is stored for sending but never returned to a page or written to the audit log.

use super::{Store, StoreError};

pub const KEY_STRONG_PASSWORDS: &str = "web.strong_passwords";
pub const KEY_PASSWORD_MIN_LEN: &str = "web.password_min_len";
pub const KEY_CONTENT_PROTECTION: &str = "web.require_content_protection";
pub const KEY_EXTERNAL_SENDING: &str = "web.external_sending";
pub const KEY_EXTERNAL_EXPIRY_DEFAULT_DAYS: &str = "web.external_expiry_default_days";
pub const KEY_EXTERNAL_EXPIRY_MAX_DAYS: &str = "web.external_expiry_max_days";
pub const KEY_EXTERNAL_DOWNLOADS_DEFAULT: &str = "web.external_downloads_default";
pub const KEY_EXTERNAL_DOWNLOADS_MAX: &str = "web.external_downloads_max";
pub const KEY_PACKAGE_EXPIRY_MAX_DAYS: &str = "web.package_expiry_max_days";
pub const KEY_PACKAGE_DOWNLOADS_MAX: &str = "web.package_downloads_max";
pub const KEY_ADMIN_CIDRS: &str = "web.admin_cidrs";
pub const KEY_SESSION_IDLE_S: &str = "web.session_idle_s";
pub const KEY_SESSION_ABSOLUTE_S: &str = "web.session_absolute_s";
pub const KEY_SMTP_HOST: &str = "smtp.host";
pub const KEY_SMTP_PORT: &str = "smtp.port";
pub const KEY_SMTP_FROM: &str = "smtp.from";
pub const KEY_SMTP_USER: &str = "smtp.user";
pub const KEY_SMTP_PASSWORD: &str = "smtp.password";
pub const KEY_SMTP_STARTTLS: &str = "smtp.starttls";

/// The console settings, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSettings {
    /// Passwords need a letter, a number and a symbol.
    pub strong_passwords: bool,
    pub password_min_len: u32,
    /// "Require content protection": stored here, enforced by the encryption-at-rest issue.
    pub require_content_protection: bool,
    /// Whether packages may go to external addresses at all.
    pub external_sending: bool,
    pub external_expiry_default_days: u32,
    pub external_expiry_max_days: u32,
    pub external_downloads_default: u32,
    pub external_downloads_max: u32,
    /// Most days a package may be set to expire after (its sender picks up to this).
    pub package_expiry_max_days: u32,
    /// Most downloads per recipient and file a package may be limited to.
    pub package_downloads_max: u32,
    /// Comma-separated CIDR list the admin console may be used from; empty: anywhere.
    pub admin_cidrs: String,
    pub session_idle_s: i64,
    pub session_absolute_s: i64,
    pub smtp: SmtpSettings,
}

/// Where notifications are sent through.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Empty: e-mail is off.
    pub host: String,
    pub port: u16,
    pub from: String,
    pub user: String,
    pub password: String,
    pub starttls: bool,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { "<redacted>" })
            .field("starttls", &self.starttls)
            .finish()
    }
}

impl Default for WebSettings {
    fn default() -> WebSettings {
        WebSettings {
            strong_passwords: true,
            password_min_len: 12,
            require_content_protection: false,
            external_sending: false,
            external_expiry_default_days: 7,
            external_expiry_max_days: 30,
            external_downloads_default: 1,
            external_downloads_max: 10,
            package_expiry_max_days: 365,
            package_downloads_max: 100,
            admin_cidrs: String::new(),
            session_idle_s: 30 * 60,
            session_absolute_s: 12 * 3600,
            smtp: SmtpSettings {
                host: String::new(),
                port: 587,
                from: String::new(),
                user: String::new(),
                password: String::new(),
                starttls: true,
            },
        }
    }
}

impl Store {
    fn web_typed<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, StoreError> {
        match self.setting(key)? {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| StoreError::BadSetting { key: key.to_owned(), value: v })
            }
        }
    }

    /// The console settings.
    pub fn web_settings(&self) -> Result<WebSettings, StoreError> {
        let d = WebSettings::default();
        Ok(WebSettings {
            strong_passwords: self.web_typed(KEY_STRONG_PASSWORDS, d.strong_passwords)?,
            password_min_len: self.web_typed(KEY_PASSWORD_MIN_LEN, d.password_min_len)?,
            require_content_protection: self
                .web_typed(KEY_CONTENT_PROTECTION, d.require_content_protection)?,
            external_sending: self.web_typed(KEY_EXTERNAL_SENDING, d.external_sending)?,
            external_expiry_default_days: self
                .web_typed(KEY_EXTERNAL_EXPIRY_DEFAULT_DAYS, d.external_expiry_default_days)?,
            external_expiry_max_days: self
                .web_typed(KEY_EXTERNAL_EXPIRY_MAX_DAYS, d.external_expiry_max_days)?,
            external_downloads_default: self
                .web_typed(KEY_EXTERNAL_DOWNLOADS_DEFAULT, d.external_downloads_default)?,
            external_downloads_max: self
                .web_typed(KEY_EXTERNAL_DOWNLOADS_MAX, d.external_downloads_max)?,
            package_expiry_max_days: self
                .web_typed(KEY_PACKAGE_EXPIRY_MAX_DAYS, d.package_expiry_max_days)?,
            package_downloads_max: self
                .web_typed(KEY_PACKAGE_DOWNLOADS_MAX, d.package_downloads_max)?,
            admin_cidrs: self.web_typed(KEY_ADMIN_CIDRS, d.admin_cidrs)?,
            session_idle_s: self.web_typed(KEY_SESSION_IDLE_S, d.session_idle_s)?,
            session_absolute_s: self.web_typed(KEY_SESSION_ABSOLUTE_S, d.session_absolute_s)?,
            smtp: SmtpSettings {
                host: self.web_typed(KEY_SMTP_HOST, d.smtp.host)?,
                port: self.web_typed(KEY_SMTP_PORT, d.smtp.port)?,
                from: self.web_typed(KEY_SMTP_FROM, d.smtp.from)?,
                user: self.web_typed(KEY_SMTP_USER, d.smtp.user)?,
                password: self.web_typed(KEY_SMTP_PASSWORD, d.smtp.password)?,
                starttls: self.web_typed(KEY_SMTP_STARTTLS, d.smtp.starttls)?,
            },
        })
    }

    /// Only the session timeouts `(idle_s, absolute_s)`: read on every signed-in request, so
    /// two lookups instead of the whole settings set.
    pub fn web_session_timeouts(&self) -> Result<(i64, i64), StoreError> {
        let d = WebSettings::default();
        Ok((
            self.web_typed(KEY_SESSION_IDLE_S, d.session_idle_s)?,
            self.web_typed(KEY_SESSION_ABSOLUTE_S, d.session_absolute_s)?,
        ))
    }

    /// Writes every console setting.
    pub fn set_web_settings(&self, s: &WebSettings, now_s: i64) -> Result<(), StoreError> {
        let pairs = [
            (KEY_STRONG_PASSWORDS, s.strong_passwords.to_string()),
            (KEY_PASSWORD_MIN_LEN, s.password_min_len.to_string()),
            (KEY_CONTENT_PROTECTION, s.require_content_protection.to_string()),
            (KEY_EXTERNAL_SENDING, s.external_sending.to_string()),
            (KEY_EXTERNAL_EXPIRY_DEFAULT_DAYS, s.external_expiry_default_days.to_string()),
            (KEY_EXTERNAL_EXPIRY_MAX_DAYS, s.external_expiry_max_days.to_string()),
            (KEY_EXTERNAL_DOWNLOADS_DEFAULT, s.external_downloads_default.to_string()),
            (KEY_EXTERNAL_DOWNLOADS_MAX, s.external_downloads_max.to_string()),
            (KEY_PACKAGE_EXPIRY_MAX_DAYS, s.package_expiry_max_days.to_string()),
            (KEY_PACKAGE_DOWNLOADS_MAX, s.package_downloads_max.to_string()),
            (KEY_ADMIN_CIDRS, s.admin_cidrs.clone()),
            (KEY_SESSION_IDLE_S, s.session_idle_s.to_string()),
            (KEY_SESSION_ABSOLUTE_S, s.session_absolute_s.to_string()),
            (KEY_SMTP_HOST, s.smtp.host.clone()),
            (KEY_SMTP_PORT, s.smtp.port.to_string()),
            (KEY_SMTP_FROM, s.smtp.from.clone()),
            (KEY_SMTP_USER, s.smtp.user.clone()),
            (KEY_SMTP_PASSWORD, s.smtp.password.clone()),
            (KEY_SMTP_STARTTLS, s.smtp.starttls.to_string()),
        ];
        for (k, v) in pairs {
            self.set_setting(k, &v, now_s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_garbage_is_refused() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.web_settings().unwrap(), WebSettings::default());
        let d = WebSettings::default();
        let w = WebSettings {
            strong_passwords: false,
            admin_cidrs: "10.0.0.0/8".into(),
            smtp: SmtpSettings { password: "hunter2".into(), ..d.smtp.clone() },
            ..d
        };
        s.set_web_settings(&w, 1).unwrap();
        assert_eq!(s.web_settings().unwrap(), w);
        assert!(!format!("{:?}", w.smtp).contains("hunter2"));
        s.set_setting(KEY_PASSWORD_MIN_LEN, "many", 2).unwrap();
        assert!(matches!(s.web_settings(), Err(StoreError::BadSetting { .. })));
    }
}
