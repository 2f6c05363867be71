//! Store functions for what the console mints for the gate and what was delivered (tables
//! `minted_tokens` and `package_downloads` of migration 0004).
//!
//! Invariants:
//! - A token is recorded by its 16-byte id only, never the token; rows past their expiry are
//!   pruned on each insert, so the table holds at most the tokens still usable.
//! - Receipts are append-only here; one row per completed download of one file, whatever
//!   the path (haul or HTTPS), naming either a user or an external link (by row id), never both.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Most receipts one package page lists (newest first).
pub const MAX_RECEIPTS: u32 = 500;

/// What a minted token was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MintedFor {
    pub package_id: i64,
    pub user_id: i64,
    pub link_id: Option<i64>,
}

/// Which path a download took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Haul,
    Https,
}

impl Via {
    pub const fn name(self) -> &'static str {
        match self {
            Via::Haul => "haul",
            Via::Https => "https",
        }
    }
}

/// Who downloaded: a user (by id) or an external link (by row id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Downloader {
    User(i64),
    Link(i64),
}

/// One receipt, as the sender's page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The user's name, or the external address.
    pub who: String,
    pub is_external: bool,
    pub file_name: String,
    pub via: String,
    pub at_s: i64,
}

impl Store {
    /// Records a minted token's id and what it is for; prunes expired rows.
    pub fn record_minted_token(
        &self,
        token_id: &[u8; 16],
        what: MintedFor,
        direction: &str,
        expires_at_s: i64,
        now_s: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM minted_tokens WHERE expires_at < ?1", params![now_s])?;
            tx.execute(
                "INSERT OR REPLACE INTO minted_tokens (token_id, package_id, user_id, link_id, direction, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&token_id[..], what.package_id, what.user_id, what.link_id, direction, expires_at_s],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// What token `token_id` was minted for, if the console minted it.
    pub fn minted_token(&self, token_id: &[u8; 16]) -> Result<Option<MintedFor>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT package_id, user_id, link_id FROM minted_tokens WHERE token_id = ?1",
                params![&token_id[..]],
                |r| Ok(MintedFor { package_id: r.get(0)?, user_id: r.get(1)?, link_id: r.get(2)? }),
            )
            .optional()?)
        })
    }

    /// Appends a receipt: `who` completed a download of `file` of package `package_id`.
    pub fn record_download(
        &self,
        package_id: i64,
        who: Downloader,
        file: &str,
        via: Via,
        at_s: i64,
    ) -> Result<(), StoreError> {
        let (user_id, link_id) = match who {
            Downloader::User(u) => (Some(u), None),
            Downloader::Link(l) => (None, Some(l)),
        };
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO package_downloads (package_id, user_id, link_id, file_name, via, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![package_id, user_id, link_id, file, via.name(), at_s],
            )?;
            Ok(())
        })
    }

    /// A package's receipts, newest first, at most [`MAX_RECEIPTS`].
    pub fn package_receipts(&self, package_id: i64) -> Result<Vec<Receipt>, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare(
                "SELECT coalesce(u.name, x.email, '?'), d.link_id IS NOT NULL, d.file_name, d.via, d.at
                 FROM package_downloads d LEFT JOIN users u ON u.id = d.user_id
                 LEFT JOIN external_links x ON x.id = d.link_id
                 WHERE d.package_id = ?1 ORDER BY d.id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![package_id, MAX_RECEIPTS], |r| {
                Ok(Receipt {
                    who: r.get(0)?,
                    is_external: r.get(1)?,
                    file_name: r.get(2)?,
                    via: r.get(3)?,
                    at_s: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// For a download notice: (sender's e-mail, package title, who downloaded: the user's name
    /// or the external address).
    pub fn download_notice(
        &self,
        package_id: i64,
        who: Downloader,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        let (user_id, link_id) = match who {
            Downloader::User(u) => (Some(u), None),
            Downloader::Link(l) => (None, Some(l)),
        };
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT coalesce(a.email, ''), p.title,
                        coalesce((SELECT name FROM users WHERE id = ?2),
                                 (SELECT email FROM external_links WHERE id = ?3), '?')
                 FROM packages p LEFT JOIN web_accounts a ON a.user_id = p.sender_id
                 WHERE p.id = ?1",
                params![package_id, user_id, link_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
        })
    }

    /// How many completed downloads of `file` user `user_id` has of package `package_id`.
    pub fn user_download_count(
        &self,
        package_id: i64,
        user_id: i64,
        file: &str,
    ) -> Result<u32, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM package_downloads WHERE package_id = ?1 AND user_id = ?2 AND file_name = ?3",
                params![package_id, user_id, file],
                |r| r.get(0),
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_expire_and_receipts_need_one_downloader() {
        let s = Store::open_in_memory().unwrap();
        s.with_conn(|c| {
            c.execute_batch(
                "INSERT INTO users (id, name, created_at, updated_at) VALUES (1, 'alice', 0, 0), (2, 'bob', 0, 0);
                 INSERT INTO packages (id, public_id, sender_id, title, created_at, sent_at)
                 VALUES (7, '0123456789abcdef0123456789abcdef', 1, 't', 0, 1);",
            )?;
            Ok(())
        })
        .unwrap();
        let what = MintedFor { package_id: 7, user_id: 2, link_id: None };
        s.record_minted_token(&[1; 16], what, "download", 100, 10).unwrap();
        assert_eq!(s.minted_token(&[1; 16]).unwrap(), Some(what));
        // A later mint prunes the expired one.
        s.record_minted_token(&[2; 16], what, "download", 500, 200).unwrap();
        assert_eq!(s.minted_token(&[1; 16]).unwrap(), None);
        s.record_download(7, Downloader::User(2), "a.bin", Via::Https, 300).unwrap();
        s.record_download(7, Downloader::User(2), "a.bin", Via::Haul, 301).unwrap();
        let r = s.package_receipts(7).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].who.as_str(), r[0].via.as_str(), r[0].at_s), ("bob", "haul", 301));
        assert_eq!(s.user_download_count(7, 2, "a.bin").unwrap(), 2);
    }
}
