//! Store functions for external recipients' links and their byte accounting (tables
//! `external_links`, `external_link_bytes` of migration 0003).
//!
//! Invariants:
//! - Only the SHA-256 of a link id is stored or looked up; the id itself never reaches the
//!   store.
//! - [`Store::reserve_link_bytes`] checks and reserves in one transaction, under the store's
//!   single connection lock, so concurrent requests cannot together pass a link's limit:
//!   `sent + reserved + asked <= max_downloads x size` for every file of a limited link.
//! - [`Store::finish_link_bytes`] turns a reservation into bytes sent (what the response really
//!   sent) and frees the rest, so an aborted response costs only what it sent.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Most external links one package has.
pub const MAX_LINKS_PER_PACKAGE: usize = 100;

/// An external link as stored (its id is not: only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalLink {
    pub id: i64,
    pub package_id: i64,
    pub email: String,
    pub created_at_s: i64,
    pub expires_at_s: Option<i64>,
    pub max_downloads: Option<u32>,
}

/// Bytes accounted for one file of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBytes {
    pub sent: u64,
    pub reserved: u64,
}

/// The answer to a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved: the response may send that many bytes.
    Granted,
    /// Sending would pass the link's limit for this file: nothing reserved.
    OverLimit,
}

const COLS: &str = "id, package_id, email, created_at, expires_at, max_downloads";

fn row(r: &Row<'_>) -> rusqlite::Result<ExternalLink> {
    Ok(ExternalLink {
        id: r.get(0)?,
        package_id: r.get(1)?,
        email: r.get(2)?,
        created_at_s: r.get(3)?,
        expires_at_s: r.get(4)?,
        max_downloads: r.get(5)?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Adds an external link to package `package_id`; `None` if the package has
    /// [`MAX_LINKS_PER_PACKAGE`] already.
    pub fn create_external_link(
        &self,
        package_id: i64,
        email: &str,
        id_hash: &[u8; 32],
        expires_at_s: Option<i64>,
        max_downloads: Option<u32>,
        now_s: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let n: i64 = tx.query_row(
                "SELECT count(*) FROM external_links WHERE package_id = ?1",
                params![package_id],
                |r| r.get(0),
            )?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= MAX_LINKS_PER_PACKAGE {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO external_links (package_id, email, id_hash, created_at, expires_at, max_downloads)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![package_id, email, &id_hash[..], now_s, expires_at_s, max_downloads],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(id))
        })
    }

    /// The link whose id hashes to `id_hash`, if any.
    pub fn external_link_by_hash(
        &self,
        id_hash: &[u8; 32],
    ) -> Result<Option<ExternalLink>, StoreError> {
        self.with_conn(|c| {
            let sql = format!("SELECT {COLS} FROM external_links WHERE id_hash = ?1");
            Ok(c.query_row(&sql, params![&id_hash[..]], row).optional()?)
        })
    }

    /// The link with row id `id`, if any.
    pub fn external_link_by_id(&self, id: i64) -> Result<Option<ExternalLink>, StoreError> {
        self.with_conn(|c| {
            let sql = format!("SELECT {COLS} FROM external_links WHERE id = ?1");
            Ok(c.query_row(&sql, params![id], row).optional()?)
        })
    }

    /// The sent package a link belongs to: (public id, sender's name, sender's e-mail, title).
    pub fn external_link_package(
        &self,
        package_id: i64,
    ) -> Result<Option<(String, String, String, String)>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT p.public_id, u.name, coalesce(a.email, ''), p.title FROM packages p
                 JOIN users u ON u.id = p.sender_id LEFT JOIN web_accounts a ON a.user_id = p.sender_id
                 WHERE p.id = ?1 AND p.sent_at IS NOT NULL",
                params![package_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
        })
    }

    /// A package's external links, oldest first.
    pub fn external_links(&self, package_id: i64) -> Result<Vec<ExternalLink>, StoreError> {
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {COLS} FROM external_links WHERE package_id = ?1 ORDER BY id LIMIT ?2"
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![package_id, MAX_LINKS_PER_PACKAGE as i64], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The bytes accounted for `file` of link `link_id`.
    pub fn link_bytes(&self, link_id: i64, file: &str) -> Result<LinkBytes, StoreError> {
        self.with_conn(|c| {
            let got: Option<(i64, i64)> = c
                .query_row(
                    "SELECT bytes_sent, bytes_reserved FROM external_link_bytes
                     WHERE link_id = ?1 AND file_name = ?2",
                    params![link_id, file],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(got.map_or(LinkBytes::default(), |(s, r)| LinkBytes {
                sent: u64::try_from(s).unwrap_or(0),
                reserved: u64::try_from(r).unwrap_or(0),
            }))
        })
    }

    /// Reserves `len` bytes of `file` (of `size` bytes) for one response, unless that would
    /// let the link serve more than `max_downloads x size` bytes of it (`None`: no limit).
    pub fn reserve_link_bytes(
        &self,
        link_id: i64,
        file: &str,
        size: u64,
        len: u64,
        max_downloads: Option<u32>,
    ) -> Result<Reservation, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let (sent, reserved): (i64, i64) = tx
                .query_row(
                    "SELECT bytes_sent, bytes_reserved FROM external_link_bytes
                     WHERE link_id = ?1 AND file_name = ?2",
                    params![link_id, file],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or((0, 0));
            let used = u64::try_from(sent).unwrap_or(0) + u64::try_from(reserved).unwrap_or(0);
            if let Some(max) = max_downloads {
                let allowed = u64::from(max).saturating_mul(size);
                if used.saturating_add(len) > allowed {
                    return Ok(Reservation::OverLimit);
                }
            }
            tx.execute(
                "INSERT INTO external_link_bytes (link_id, file_name, bytes_reserved) VALUES (?1, ?2, ?3)
                 ON CONFLICT (link_id, file_name) DO UPDATE SET bytes_reserved = bytes_reserved + ?3",
                params![link_id, file, to_i64(len)],
            )?;
            tx.commit()?;
            Ok(Reservation::Granted)
        })
    }

    /// Ends a reservation of `reserved` bytes of which `sent` were sent; returns the file's
    /// total bytes sent before and after.
    pub fn finish_link_bytes(
        &self,
        link_id: i64,
        file: &str,
        reserved: u64,
        sent: u64,
    ) -> Result<(u64, u64), StoreError> {
        let sent = sent.min(reserved);
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let before: i64 = tx
                .query_row(
                    "SELECT bytes_sent FROM external_link_bytes WHERE link_id = ?1 AND file_name = ?2",
                    params![link_id, file],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            tx.execute(
                "UPDATE external_link_bytes SET bytes_sent = bytes_sent + ?3,
                 bytes_reserved = max(bytes_reserved - ?4, 0) WHERE link_id = ?1 AND file_name = ?2",
                params![link_id, file, to_i64(sent), to_i64(reserved)],
            )?;
            tx.commit()?;
            let before = u64::try_from(before).unwrap_or(0);
            Ok((before, before.saturating_add(sent)))
        })
    }
}
