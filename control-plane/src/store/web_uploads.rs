//! The browser-upload settings, kept as keys in 0001's `settings` table (no migration).
//!
//! Invariants: an absent key is the default; a value that does not parse is
//! [`StoreError::BadSetting`]; values are range-checked by [`UploadSettings::check`] before
//! they are written.

use super::{Store, StoreError};

pub const KEY_UPLOAD_MAX_BYTES: &str = "web.upload_max_bytes";
pub const KEY_UPLOADS_PER_USER: &str = "web.uploads_per_user";

/// Largest file the setting may allow (1 TiB) and most concurrent uploads per user it may allow.
pub const UPLOAD_MAX_BYTES_CEILING: u64 = 1 << 40;
pub const UPLOADS_PER_USER_CEILING: u32 = 64;

/// Limits on resumable browser uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadSettings {
    /// Largest file one upload may declare.
    pub max_bytes: u64,
    /// Most unfinished uploads one user may hold at once.
    pub per_user: u32,
}

impl Default for UploadSettings {
    fn default() -> UploadSettings {
        UploadSettings { max_bytes: 64 << 30, per_user: 4 }
    }
}

impl UploadSettings {
    /// A message naming the bad value, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=UPLOAD_MAX_BYTES_CEILING).contains(&self.max_bytes) {
            return Err(format!("upload_max_bytes must be 1 to {UPLOAD_MAX_BYTES_CEILING}."));
        }
        if !(1..=UPLOADS_PER_USER_CEILING).contains(&self.per_user) {
            return Err(format!("uploads_per_user must be 1 to {UPLOADS_PER_USER_CEILING}."));
        }
        Ok(())
    }
}

impl Store {
    /// The upload limits.
    pub fn upload_settings(&self) -> Result<UploadSettings, StoreError> {
        let d = UploadSettings::default();
        Ok(UploadSettings {
            max_bytes: self.web_typed(KEY_UPLOAD_MAX_BYTES, d.max_bytes)?,
            per_user: self.web_typed(KEY_UPLOADS_PER_USER, d.per_user)?,
        })
    }

    /// Writes the upload limits (checked by the caller with [`UploadSettings::check`]).
    pub fn set_upload_settings(&self, s: &UploadSettings, now_s: i64) -> Result<(), StoreError> {
        self.set_setting(KEY_UPLOAD_MAX_BYTES, &s.max_bytes.to_string(), now_s)?;
        self.set_setting(KEY_UPLOADS_PER_USER, &s.per_user.to_string(), now_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_garbage_is_refused() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.upload_settings().unwrap(), UploadSettings::default());
        let u = UploadSettings { max_bytes: 1000, per_user: 2 };
        s.set_upload_settings(&u, 1).unwrap();
        assert_eq!(s.upload_settings().unwrap(), u);
        assert!(UploadSettings { max_bytes: 0, per_user: 2 }.check().is_err());
        assert!(UploadSettings { max_bytes: 1, per_user: 65 }.check().is_err());
        s.set_setting(KEY_UPLOADS_PER_USER, "lots", 2).unwrap();
        assert!(matches!(s.upload_settings(), Err(StoreError::BadSetting { .. })));
    }
}
