//! The server secret file's checks, on a real file system: generation on first start, the
//! refusals (wrong owner, group/other bits, a writable parent, a symlink), each message naming
//! its fix, and rotation persisted across loads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use haul_control::secret::{self, KeyLookup, Purpose, SECRET_FILE, SecretError};

fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn first_start_generates_a_private_secret_and_later_starts_load_it() {
    let d = data_dir();
    let ring = secret::load_or_create(d.path(), 10).unwrap();
    let meta = std::fs::symlink_metadata(d.path().join(SECRET_FILE)).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    let again = secret::load_or_create(d.path(), 20).unwrap();
    assert_eq!(again.describe(), ring.describe());
    assert_eq!(again.subkey(Purpose::Token).as_bytes(), ring.subkey(Purpose::Token).as_bytes());
    assert!(!d.path().join(format!("{SECRET_FILE}.tmp")).exists());
}

#[test]
fn refuses_a_secret_owned_by_another_uid() {
    let d = data_dir();
    secret::load_or_create(d.path(), 0).unwrap();
    let path = d.path().join(SECRET_FILE);
    std::os::unix::fs::chown(&path, Some(4321), None).unwrap();
    let err = secret::load_or_create(d.path(), 0).unwrap_err();
    assert!(matches!(err, SecretError::WrongOwner { owner: 4321, .. }), "{err}");
    let euid = rustix::process::geteuid().as_raw();
    assert!(err.to_string().contains(&format!("chown {euid} {}", path.display())), "{err}");
}

#[test]
fn refuses_group_or_other_bits() {
    for mode in [0o640, 0o604, 0o610, 0o601] {
        let d = data_dir();
        secret::load_or_create(d.path(), 0).unwrap();
        let path = d.path().join(SECRET_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = secret::load(d.path()).unwrap_err();
        assert!(matches!(err, SecretError::TooOpen { .. }), "{mode:o}: {err}");
        assert!(err.to_string().contains(&format!("chmod 600 {}", path.display())), "{err}");
    }
}

#[test]
fn refuses_a_parent_writable_by_group_or_others() {
    for mode in [0o770, 0o707, 0o777] {
        let d = data_dir();
        secret::load_or_create(d.path(), 0).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = secret::load_or_create(d.path(), 0).unwrap_err();
        assert!(matches!(err, SecretError::ParentWritable { .. }), "{mode:o}: {err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }
    // Nor is a secret generated in such a directory.
    let d = data_dir();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(secret::load_or_create(d.path(), 0).is_err());
    assert!(!d.path().join(SECRET_FILE).exists());
}

#[test]
fn refuses_a_symlink_and_does_not_follow_it() {
    let d = data_dir();
    let real = d.path().join("elsewhere");
    {
        let other = data_dir();
        secret::load_or_create(other.path(), 0).unwrap();
        std::fs::copy(other.path().join(SECRET_FILE), &real).unwrap();
    }
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, d.path().join(SECRET_FILE)).unwrap();
    let err = secret::load_or_create(d.path(), 0).unwrap_err();
    assert!(matches!(err, SecretError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // A dangling symlink is not "absent": it is refused too, and nothing is created through it.
    std::fs::remove_file(&real).unwrap();
    let err = secret::load_or_create(d.path(), 0).unwrap_err();
    assert!(matches!(err, SecretError::Symlink { .. }), "{err}");
    assert!(!real.exists());
}

#[test]
fn refuses_a_damaged_file() {
    let d = data_dir();
    secret::load_or_create(d.path(), 0).unwrap();
    let path = d.path().join(SECRET_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(20);
    std::fs::write(&path, &bytes).unwrap();
    let err = secret::load(d.path()).unwrap_err();
    assert!(matches!(err, SecretError::Corrupt { .. }), "{err}");
}

#[test]
fn rotation_is_persisted_and_the_old_secret_lapses_after_the_grace_period() {
    let d = data_dir();
    let first = secret::load_or_create(d.path(), 0).unwrap();
    let old_id = first.current_id();
    let rotated = secret::rotate(d.path(), 1000, 3600).unwrap();
    let loaded = secret::load(d.path()).unwrap();
    assert_eq!(loaded.describe(), rotated.describe());
    assert_ne!(loaded.current_id(), old_id);
    let inside = loaded.subkey_for(Purpose::Token, old_id, 4599).unwrap();
    assert_eq!(inside.as_bytes(), first.subkey(Purpose::Token).as_bytes());
    assert_eq!(
        loaded.subkey_for(Purpose::Token, old_id, 4600).map(|_| ()),
        Err(KeyLookup::Retired { grace_ended_at_s: 4600 })
    );
    let meta = std::fs::symlink_metadata(d.path().join(SECRET_FILE)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
}
