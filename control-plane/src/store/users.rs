//! Store functions for users, their allow-lists and their SSH keys (tables `users`,
//! `user_ip_allow`, `user_ssh_keys` of migration 0001).
//!
//! Invariants:
//! - Every change to a user runs in one transaction: a failed change leaves the user as it was.
//! - Rows hold only values that passed `users::` parsing; reading a row that does not parse
//!   again (edited by hand) is [`StoreError::Corrupt`], not a panic.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Store, StoreError};
use crate::users::{Cidr, DirectionLimit, IpPurpose, SshPublicKey, User, UserChange, UserName};

impl Store {
    /// Adds a user with `change` applied. Fails with [`StoreError::UserExists`] if the name
    /// is taken.
    pub fn create_user(
        &self,
        name: &UserName,
        change: &UserChange,
        now_s: i64,
    ) -> Result<User, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                "INSERT INTO users (name, created_at, updated_at) VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![name.as_str(), now_s],
            )?;
            if inserted == 0 {
                return Err(StoreError::UserExists(name.to_string()));
            }
            let id = tx.last_insert_rowid();
            change_and_commit(tx, id, name, change, now_s)
        })
    }

    /// Applies `change` to an existing user. Fails with [`StoreError::UserNotFound`].
    pub fn update_user(
        &self,
        name: &UserName,
        change: &UserChange,
        now_s: i64,
    ) -> Result<User, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let id: Option<i64> = tx
                .query_row("SELECT id FROM users WHERE name = ?1", [name.as_str()], |r| r.get(0))
                .optional()?;
            let id = id.ok_or_else(|| StoreError::UserNotFound(name.to_string()))?;
            change_and_commit(tx, id, name, change, now_s)
        })
    }

    /// The user called `name`, if any.
    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.with_conn(|c| load_user(c, name))
    }

    /// Every user, by name, at most `limit`.
    pub fn list_users(&self, limit: u32) -> Result<Vec<User>, StoreError> {
        self.with_conn(|c| {
            let names: Vec<String> = c
                .prepare("SELECT name FROM users ORDER BY name LIMIT ?1")?
                .query_map([limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut users = Vec::with_capacity(names.len());
            for n in names {
                users.extend(load_user(c, &n)?);
            }
            Ok(users)
        })
    }

    /// The user whose SSH key has this fingerprint (`SHA256:...`), for the gate's `haul cp`.
    pub fn user_by_ssh_fingerprint(&self, fingerprint: &str) -> Result<Option<User>, StoreError> {
        self.with_conn(|c| {
            let name: Option<String> = c
                .query_row(
                    "SELECT u.name FROM user_ssh_keys k JOIN users u ON u.id = k.user_id
                     WHERE k.fingerprint = ?1",
                    [fingerprint],
                    |r| r.get(0),
                )
                .optional()?;
            match name {
                Some(n) => load_user(c, &n),
                None => Ok(None),
            }
        })
    }
}

/// Applies `change` to user `id`, reads the user back and commits.
fn change_and_commit(
    tx: Transaction<'_>,
    id: i64,
    name: &UserName,
    change: &UserChange,
    now_s: i64,
) -> Result<User, StoreError> {
    apply_change(&tx, id, change, now_s)?;
    let user = load_user(&tx, name.as_str())?;
    tx.commit()?;
    user.ok_or_else(|| StoreError::UserNotFound(name.to_string()))
}

fn apply_change(
    tx: &Transaction<'_>,
    id: i64,
    ch: &UserChange,
    now_s: i64,
) -> Result<(), StoreError> {
    let set = |col: &str, v: &dyn rusqlite::ToSql| -> Result<(), StoreError> {
        tx.execute(&format!("UPDATE users SET {col} = ?1 WHERE id = ?2"), params![v, id])?;
        Ok(())
    };
    if let Some(v) = ch.is_disabled {
        set("disabled", &v)?;
    }
    if let Some(v) = ch.expires_at_s {
        set("expires_at", &v)?;
    }
    if let Some(limit) = ch.direction_limit {
        let (up, down) = match limit {
            DirectionLimit::Both => (false, false),
            DirectionLimit::UploadOnly => (true, false),
            DirectionLimit::DownloadOnly => (false, true),
        };
        tx.execute(
            "UPDATE users SET upload_only = ?1, download_only = ?2 WHERE id = ?3",
            params![up, down, id],
        )?;
    }
    if let Some(v) = ch.may_send_external {
        set("may_send_external", &v)?;
    }
    if let Some(v) = ch.may_forward {
        set("may_forward", &v)?;
    }
    if let Some(v) = ch.is_workgroup_admin {
        set("workgroup_admin", &v)?;
    }
    for (purpose, list) in [
        (IpPurpose::Login, &ch.ip_allow_login),
        (IpPurpose::Upload, &ch.ip_allow_upload),
        (IpPurpose::Download, &ch.ip_allow_download),
    ] {
        if let Some(list) = list {
            replace_cidrs(tx, id, purpose, list)?;
        }
    }
    if let Some(keys) = &ch.ssh_keys {
        replace_ssh_keys(tx, id, keys, now_s)?;
    }
    set("updated_at", &now_s)
}

fn replace_cidrs(
    tx: &Transaction<'_>,
    id: i64,
    purpose: IpPurpose,
    list: &[Cidr],
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM user_ip_allow WHERE user_id = ?1 AND purpose = ?2",
        params![id, purpose.name()],
    )?;
    for c in list {
        tx.execute(
            "INSERT OR IGNORE INTO user_ip_allow (user_id, purpose, cidr) VALUES (?1, ?2, ?3)",
            params![id, purpose.name(), c.to_string()],
        )?;
    }
    Ok(())
}

fn replace_ssh_keys(
    tx: &Transaction<'_>,
    id: i64,
    keys: &[SshPublicKey],
    now_s: i64,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM user_ssh_keys WHERE user_id = ?1", [id])?;
    for k in keys {
        let fingerprint = k.fingerprint();
        let owner: Option<String> = tx
            .query_row(
                "SELECT u.name FROM user_ssh_keys k JOIN users u ON u.id = k.user_id
                 WHERE k.fingerprint = ?1",
                [&fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::SshKeyTaken { fingerprint, owner });
        }
        tx.execute(
            "INSERT INTO user_ssh_keys (user_id, algorithm, key_base64, comment, fingerprint, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, k.algorithm, k.key_base64, k.comment, fingerprint, now_s],
        )?;
    }
    Ok(())
}

type UserRow = (i64, String, bool, Option<i64>, bool, bool, bool, bool, bool);

fn load_user(c: &Connection, name: &str) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = c
        .query_row(
            "SELECT id, name, disabled, expires_at, upload_only, download_only,
                    may_send_external, may_forward, workgroup_admin
             FROM users WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .optional()?;
    let Some((id, name, disabled, expires, up, down, ext, fwd, wga)) = row else {
        return Ok(None);
    };
    let corrupt = |what: String| StoreError::Corrupt(format!("user {name:?}: {what}"));
    let name_ok = UserName::parse(&name).map_err(|e| corrupt(e.to_string()))?;
    let direction_limit = match (up, down) {
        (false, false) => DirectionLimit::Both,
        (true, false) => DirectionLimit::UploadOnly,
        (false, true) => DirectionLimit::DownloadOnly,
        (true, true) => return Err(corrupt("both upload-only and download-only".into())),
    };
    let cidrs = |purpose: IpPurpose| -> Result<Vec<Cidr>, StoreError> {
        let texts: Vec<String> = c
            .prepare(
                "SELECT cidr FROM user_ip_allow WHERE user_id = ?1 AND purpose = ?2 ORDER BY cidr",
            )?
            .query_map(params![id, purpose.name()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        texts
            .iter()
            .map(|t| t.parse().map_err(|e: crate::users::UserInputError| corrupt(e.to_string())))
            .collect()
    };
    let ssh_keys = c
        .prepare("SELECT algorithm, key_base64, comment FROM user_ssh_keys WHERE user_id = ?1 ORDER BY id")?
        .query_map([id], |r| {
            Ok(SshPublicKey { algorithm: r.get(0)?, key_base64: r.get(1)?, comment: r.get(2)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(User {
        id,
        name: name_ok,
        is_disabled: disabled,
        expires_at_s: expires,
        direction_limit,
        may_send_external: ext,
        may_forward: fwd,
        is_workgroup_admin: wga,
        ip_allow_login: cidrs(IpPurpose::Login)?,
        ip_allow_upload: cidrs(IpPurpose::Upload)?,
        ip_allow_download: cidrs(IpPurpose::Download)?,
        ssh_keys,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::users::{parse_cidr_list, parse_ssh_keys};

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIImHtiLu4/ui8qSx74NU3l8zibip/LD64hCAmlHx21Ru t@h";

    #[test]
    fn users_round_trip_through_the_store() {
        let s = Store::open_in_memory().unwrap();
        let alice = UserName::parse("alice").unwrap();
        let change = UserChange {
            expires_at_s: Some(Some(2_000_000_000)),
            direction_limit: Some(DirectionLimit::UploadOnly),
            ip_allow_upload: Some(parse_cidr_list("10.0.0.0/8,192.168.1.0/24").unwrap()),
            ssh_keys: Some(parse_ssh_keys(KEY).unwrap()),
            ..UserChange::default()
        };
        let u = s.create_user(&alice, &change, 100).unwrap();
        assert_eq!(u.expires_at_s, Some(2_000_000_000));
        assert_eq!(u.direction_limit, DirectionLimit::UploadOnly);
        assert_eq!(u.ip_allow_upload.len(), 2);
        assert!(u.ip_allow_download.is_empty());
        assert_eq!(s.user("alice").unwrap(), Some(u.clone()));
        assert!(matches!(
            s.create_user(&alice, &UserChange::default(), 100),
            Err(StoreError::UserExists(_))
        ));

        let found = s.user_by_ssh_fingerprint(&u.ssh_keys[0].fingerprint()).unwrap();
        assert_eq!(found.map(|f| f.name), Some(alice.clone()));

        let off = UserChange {
            is_disabled: Some(true),
            ip_allow_upload: Some(vec![]),
            ..UserChange::default()
        };
        let u2 = s.update_user(&alice, &off, 200).unwrap();
        assert!(u2.is_disabled);
        assert!(u2.ip_allow_upload.is_empty());
        assert_eq!(u2.direction_limit, DirectionLimit::UploadOnly, "untouched");
        assert_eq!(u2.ssh_keys.len(), 1, "untouched");

        let bob = UserName::parse("bob").unwrap();
        assert!(matches!(s.update_user(&bob, &off, 1), Err(StoreError::UserNotFound(_))));
        let taken =
            UserChange { ssh_keys: Some(parse_ssh_keys(KEY).unwrap()), ..UserChange::default() };
        assert!(matches!(s.create_user(&bob, &taken, 1), Err(StoreError::SshKeyTaken { .. })));
        assert!(s.user("bob").unwrap().is_none(), "the failed add left nothing");
        assert_eq!(s.list_users(10).unwrap().len(), 1);
    }
}
