//! Store functions for packages' limits (table `package_limits` of migration 0004): expiry,
//! downloads per recipient and file, delete-after-download, and the sweeper's bookkeeping.
//!
//! Invariants: a package without a row has no limits; `files_removed_at` is set once, by the
//! sweeper, after it removed the files; the sweeper's queries return at most [`MAX_SWEEP`]
//! packages per call.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Most packages one sweep looks at.
pub const MAX_SWEEP: u32 = 100;

/// A package's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackageLimits {
    pub expires_at_s: Option<i64>,
    pub max_downloads: Option<u32>,
    pub delete_after_download: bool,
    pub files_removed_at_s: Option<i64>,
}

impl PackageLimits {
    /// Whether the package is past its expiry at `now_s`.
    pub fn is_expired(&self, now_s: i64) -> bool {
        self.expires_at_s.is_some_and(|e| now_s >= e)
    }
}

/// A package the sweeper may have to empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepCandidate {
    pub package_id: i64,
    pub public_id: String,
    pub sender: String,
    pub limits: PackageLimits,
}

impl Store {
    /// Sets package `package_id`'s limits.
    pub fn set_package_limits(&self, package_id: i64, l: &PackageLimits) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT OR REPLACE INTO package_limits
                 (package_id, expires_at, max_downloads, delete_after_download, files_removed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    package_id,
                    l.expires_at_s,
                    l.max_downloads,
                    l.delete_after_download,
                    l.files_removed_at_s
                ],
            )?;
            Ok(())
        })
    }

    /// Package `package_id`'s limits (the default, none, if it has no row).
    pub fn package_limits(&self, package_id: i64) -> Result<PackageLimits, StoreError> {
        self.with_conn(|c| {
            let got = c
                .query_row(
                    "SELECT expires_at, max_downloads, delete_after_download, files_removed_at
                     FROM package_limits WHERE package_id = ?1",
                    params![package_id],
                    |r| {
                        Ok(PackageLimits {
                            expires_at_s: r.get(0)?,
                            max_downloads: r.get(1)?,
                            delete_after_download: r.get(2)?,
                            files_removed_at_s: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            Ok(got.unwrap_or_default())
        })
    }

    /// Sent packages whose files are still kept and that are expired at `now_s` or delete
    /// after download, at most [`MAX_SWEEP`], oldest first.
    pub fn sweep_candidates(&self, now_s: i64) -> Result<Vec<SweepCandidate>, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare(
                "SELECT p.id, p.public_id, u.name, l.expires_at, l.max_downloads, l.delete_after_download
                 FROM package_limits l JOIN packages p ON p.id = l.package_id
                 JOIN users u ON u.id = p.sender_id
                 WHERE l.files_removed_at IS NULL AND p.sent_at IS NOT NULL
                   AND ((l.expires_at IS NOT NULL AND l.expires_at <= ?1) OR l.delete_after_download = 1)
                 ORDER BY p.id LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_s, MAX_SWEEP], |r| {
                Ok(SweepCandidate {
                    package_id: r.get(0)?,
                    public_id: r.get(1)?,
                    sender: r.get(2)?,
                    limits: PackageLimits {
                        expires_at_s: r.get(3)?,
                        max_downloads: r.get(4)?,
                        delete_after_download: r.get(5)?,
                        files_removed_at_s: None,
                    },
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Whether every recipient of package `package_id` has a receipt for each of `files`.
    pub fn all_recipients_downloaded(
        &self,
        package_id: i64,
        files: &[String],
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare(
                "SELECT count(*) FROM package_recipients r WHERE r.package_id = ?1 AND NOT EXISTS
                 (SELECT 1 FROM package_downloads d WHERE d.package_id = ?1 AND d.user_id = r.user_id
                  AND d.file_name = ?2)",
            )?;
            for f in files {
                let missing: i64 = st.query_row(params![package_id, f], |r| r.get(0))?;
                if missing > 0 {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Records that the sweeper removed package `package_id`'s files at `now_s`.
    pub fn mark_files_removed(&self, package_id: i64, now_s: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE package_limits SET files_removed_at = ?2 WHERE package_id = ?1",
                params![package_id, now_s],
            )?;
            Ok(())
        })
    }
}
