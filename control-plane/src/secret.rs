//! The server secret: the root of every token, cookie, CSRF and external-link key.
//!
//! It lives in `DATA_DIR/server-secret`, generated on first start. Sub-keys are derived with
//! HKDF-SHA256 from a secret, a [`Purpose`] label and the secret's key id, so a key for one
//! purpose never opens another purpose's blobs, and every blob names the secret it was sealed
//! under. [`rotate`] makes a new current secret and keeps the previous one valid for a grace
//! period (tokens minted just before a rotation still work until the grace period ends).
//!
//! Invariants (docs/TOKENS.md, "The server secret"):
//! - The file is opened with `O_NOFOLLOW` (a symlink is refused, not followed) and checked with
//!   `fstat` on the open descriptor (no check-then-open race): a regular file, owned by the
//!   effective uid, no group or other permission bits; its directory is not writable by group
//!   or others. Any failure refuses with a message that names the exact fix.
//! - Secret bytes are zeroized on drop, never printed (`Debug` is redacted), never logged.
//! - A new secret file is written to a temporary name with `O_EXCL|O_NOFOLLOW`, mode 0600,
//!   synced, then renamed into place, so a crash leaves the old file or the new one.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hkdf::Hkdf;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

/// The secret's file name inside the data directory.
pub const SECRET_FILE: &str = "server-secret";
/// Bytes of one secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of one derived sub-key.
pub const SUBKEY_LEN: usize = 32;
/// How long the previous secret stays valid after a rotation unless told otherwise: one day
/// (longer than the default token lifetime, so no token minted before a rotation dies early).
pub const DEFAULT_ROTATION_GRACE_S: i64 = 86_400;
/// The file is tiny; anything larger is not ours.
const MAX_FILE_LEN: u64 = 4096;
const MAGIC: &[u8; 8] = b"HAULSEC1";
/// Bytes of one entry: key id, created, valid-until, secret.
const ENTRY_LEN: usize = 4 + 8 + 8 + SECRET_LEN;
/// Salt of the sub-key HKDF (fixed; the secret is the input key material).
const HKDF_SALT: &[u8] = b"haul server secret v1";

/// What a sub-key is for. Each purpose has its own label, so keys never cross purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Transfer tokens (`token::`).
    Token,
    /// Web console session cookies.
    Cookie,
    /// Web console CSRF tokens.
    Csrf,
    /// External (one-time / limited) download links.
    ExternalLink,
}

impl Purpose {
    /// The HKDF label. Stable: changing one invalidates every blob of that purpose.
    pub const fn label(self) -> &'static str {
        match self {
            Purpose::Token => "transfer-token",
            Purpose::Cookie => "web-cookie",
            Purpose::Csrf => "web-csrf",
            Purpose::ExternalLink => "external-link",
        }
    }
}

/// Why the secret could not be used. Every variant but `Random` is the operator's to fix,
/// and its message says how.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error(
        "server secret {path} is a symbolic link; haul does not follow it. Fix: rm {path} (a new secret is generated at the next start) or move the real file into place"
    )]
    Symlink { path: String },
    #[error("server secret {path} is not a regular file. Fix: remove it (rm -r {path})")]
    NotRegular { path: String },
    #[error(
        "server secret {path} is owned by uid {owner}, but haul runs as uid {euid}. Fix: chown {euid} {path}"
    )]
    WrongOwner { path: String, owner: u32, euid: u32 },
    #[error(
        "server secret {path} has mode {mode:04o}: group or others may access it. Fix: chmod 600 {path}"
    )]
    TooOpen { path: String, mode: u32 },
    #[error(
        "directory {path} (holding the server secret) has mode {mode:04o}: group or others may write to it. Fix: chmod go-w {path}"
    )]
    ParentWritable { path: String, mode: u32 },
    #[error(
        "server secret {path} is damaged ({why}). Fix: restore it from a backup, or remove it to generate a new one (every outstanding token becomes invalid)"
    )]
    Corrupt { path: String, why: String },
    #[error("server secret: {op} {path}: {source}")]
    Io { path: String, op: &'static str, source: std::io::Error },
    #[error("reading the OS random generator: {0}")]
    Random(getrandom::Error),
}

/// One server secret and its validity.
struct SecretKey {
    id: u32,
    created_at_s: i64,
    /// `None` for the current secret; the end of the grace period for the previous one.
    valid_until_s: Option<i64>,
    bytes: Zeroizing<[u8; SECRET_LEN]>,
}

/// A derived key for one purpose under one secret.
pub struct SubKey {
    key_id: u32,
    purpose: Purpose,
    bytes: Zeroizing<[u8; SUBKEY_LEN]>,
}

impl SubKey {
    /// The id of the secret it derives from (carried in every blob sealed under it).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    pub fn as_bytes(&self) -> &[u8; SUBKEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubKey({:?}, key id {:08x}, <redacted>)", self.purpose, self.key_id)
    }
}

/// Why a key id found no usable secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLookup {
    /// No secret with this id: another server's, or older than the previous secret.
    Unknown,
    /// The previous secret, whose grace period ended at this instant (unix seconds).
    Retired { grace_ended_at_s: i64 },
}

/// What a keyring holds, without the secret bytes (for `haul secret show` and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: u32,
    pub created_at_s: i64,
    pub valid_until_s: Option<i64>,
}

/// The current secret and, after a rotation, the previous one.
pub struct Keyring {
    current: SecretKey,
    previous: Option<SecretKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.describe()).finish_non_exhaustive()
    }
}

impl Keyring {
    /// A fresh keyring with one new random secret.
    pub fn generate(now_s: i64) -> Result<Keyring, SecretError> {
        Ok(Keyring { current: fresh_secret(now_s, None)?, previous: None })
    }

    /// The id of the current secret.
    pub fn current_id(&self) -> u32 {
        self.current.id
    }

    /// The current sub-key for `purpose` (what new blobs are sealed under).
    pub fn subkey(&self, purpose: Purpose) -> SubKey {
        derive(&self.current, purpose)
    }

    /// The sub-key for `purpose` under the secret `key_id`, if that secret is still valid at
    /// `now_s`: the current one, or the previous one inside its grace period.
    pub fn subkey_for(
        &self,
        purpose: Purpose,
        key_id: u32,
        now_s: i64,
    ) -> Result<SubKey, KeyLookup> {
        if key_id == self.current.id {
            return Ok(derive(&self.current, purpose));
        }
        match &self.previous {
            Some(p) if p.id == key_id => match p.valid_until_s {
                Some(until) if now_s >= until => {
                    Err(KeyLookup::Retired { grace_ended_at_s: until })
                }
                _ => Ok(derive(p, purpose)),
            },
            _ => Err(KeyLookup::Unknown),
        }
    }

    /// A new keyring: a fresh current secret; this one's current becomes the previous, valid
    /// until `now_s + grace_s`. An older previous secret is dropped.
    pub fn rotated(&self, now_s: i64, grace_s: i64) -> Result<Keyring, SecretError> {
        let old = &self.current;
        let previous = SecretKey {
            id: old.id,
            created_at_s: old.created_at_s,
            valid_until_s: Some(now_s.saturating_add(grace_s.max(0))),
            bytes: old.bytes.clone(),
        };
        Ok(Keyring { current: fresh_secret(now_s, Some(old.id))?, previous: Some(previous) })
    }

    /// The keys held, without their bytes.
    pub fn describe(&self) -> Vec<KeyInfo> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|k| KeyInfo {
                key_id: k.id,
                created_at_s: k.created_at_s,
                valid_until_s: k.valid_until_s,
            })
            .collect()
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAGIC.len() + 1 + 2 * ENTRY_LEN));
        out.extend_from_slice(MAGIC);
        out.push(1 + u8::from(self.previous.is_some()));
        for k in std::iter::once(&self.current).chain(self.previous.as_ref()) {
            out.extend_from_slice(&k.id.to_be_bytes());
            out.extend_from_slice(&k.created_at_s.to_be_bytes());
            out.extend_from_slice(&k.valid_until_s.unwrap_or(i64::MAX).to_be_bytes());
            out.extend_from_slice(&k.bytes[..]);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Keyring, String> {
        let rest = bytes.strip_prefix(MAGIC).ok_or("not a haul server secret file")?;
        let (&count, entries) = rest.split_first().ok_or("truncated")?;
        if !(1..=2).contains(&count) || entries.len() != usize::from(count) * ENTRY_LEN {
            return Err(format!("{count} entries in {} bytes", entries.len()));
        }
        let mut keys = entries.chunks_exact(ENTRY_LEN).map(|e| {
            let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
            bytes.copy_from_slice(&e[20..]);
            let until = be_i64(&e[12..20]);
            SecretKey {
                id: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                created_at_s: be_i64(&e[4..12]),
                valid_until_s: (until != i64::MAX).then_some(until),
                bytes,
            }
        });
        let current = keys.next().ok_or("no current secret")?;
        let previous = keys.next();
        if current.valid_until_s.is_some() || previous.as_ref().is_some_and(|p| p.id == current.id)
        {
            return Err("inconsistent entries".into());
        }
        Ok(Keyring { current, previous })
    }
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    i64::from_be_bytes(a)
}

fn fresh_secret(now_s: i64, avoid_id: Option<u32>) -> Result<SecretKey, SecretError> {
    let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
    getrandom::fill(&mut bytes[..]).map_err(SecretError::Random)?;
    let mut id = [0u8; 4];
    loop {
        getrandom::fill(&mut id).map_err(SecretError::Random)?;
        if Some(u32::from_be_bytes(id)) != avoid_id {
            break;
        }
    }
    Ok(SecretKey { id: u32::from_be_bytes(id), created_at_s: now_s, valid_until_s: None, bytes })
}

#[allow(clippy::expect_used, reason = "32 bytes is always a valid HKDF-SHA256 output length")]
fn derive(secret: &SecretKey, purpose: Purpose) -> SubKey {
    let mut info = Vec::with_capacity(48);
    info.extend_from_slice(b"haul subkey v1\0");
    info.extend_from_slice(purpose.label().as_bytes());
    info.push(0);
    info.extend_from_slice(&secret.id.to_be_bytes());
    let mut bytes = Zeroizing::new([0u8; SUBKEY_LEN]);
    Hkdf::<Sha256>::new(Some(HKDF_SALT), &secret.bytes[..])
        .expand(&info, &mut bytes[..])
        .expect("valid HKDF output length");
    SubKey { key_id: secret.id, purpose, bytes }
}

/// Creates the data directory (mode 0700) if it is missing.
pub fn ensure_data_dir(data_dir: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::DirBuilderExt;
    if data_dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| io_err(data_dir, "creating", e))
}

/// Loads the secret from `data_dir`, generating it first if absent. Refuses (with the fix)
/// when any check of the module's invariants fails.
pub fn load_or_create(data_dir: &Path, now_s: i64) -> Result<Keyring, SecretError> {
    let dir = open_checked_dir(data_dir)?;
    match open_secret(&dir, data_dir) {
        Ok(file) => read_checked(file, &data_dir.join(SECRET_FILE)),
        Err(SecretError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let ring = Keyring::generate(now_s)?;
            write_secret(&dir, data_dir, &ring)?;
            Ok(ring)
        }
        Err(e) => Err(e),
    }
}

/// Loads an existing secret (no generation): for commands that must not create one.
pub fn load(data_dir: &Path) -> Result<Keyring, SecretError> {
    let dir = open_checked_dir(data_dir)?;
    let file = open_secret(&dir, data_dir)?;
    read_checked(file, &data_dir.join(SECRET_FILE))
}

/// Rotates the secret in `data_dir`: a new current secret, the old one valid for `grace_s`
/// more seconds. Returns the new keyring. A running server picks it up when it reloads.
pub fn rotate(data_dir: &Path, now_s: i64, grace_s: i64) -> Result<Keyring, SecretError> {
    let old = load(data_dir)?;
    let ring = old.rotated(now_s, grace_s)?;
    let dir = open_checked_dir(data_dir)?;
    write_secret(&dir, data_dir, &ring)?;
    Ok(ring)
}

fn io_err(path: &Path, op: &'static str, source: impl Into<std::io::Error>) -> SecretError {
    SecretError::Io { path: path.display().to_string(), op, source: source.into() }
}

/// Opens the data directory and checks, on the descriptor, that group and others cannot
/// write to it.
fn open_checked_dir(data_dir: &Path) -> Result<OwnedFd, SecretError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(data_dir, flags, Mode::empty())
        .map_err(|e| io_err(data_dir, "opening directory", e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(data_dir, "fstat", e))?;
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SecretError::ParentWritable { path: data_dir.display().to_string(), mode });
    }
    Ok(fd)
}

fn open_secret(dir: &OwnedFd, data_dir: &Path) -> Result<File, SecretError> {
    let path = data_dir.join(SECRET_FILE);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    match rustix::fs::openat(dir.as_fd(), SECRET_FILE, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::LOOP) => Err(SecretError::Symlink { path: path.display().to_string() }),
        Err(e) => Err(io_err(&path, "opening", e)),
    }
}

/// The fstat checks, on the open file, then the read.
fn read_checked(mut file: File, path: &Path) -> Result<Keyring, SecretError> {
    let shown = path.display().to_string();
    let meta = file.metadata().map_err(|e| io_err(path, "fstat", e))?;
    if !meta.file_type().is_file() {
        return Err(SecretError::NotRegular { path: shown });
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(SecretError::WrongOwner { path: shown, owner: meta.uid(), euid });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen { path: shown, mode });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, "reading", e))?;
    Keyring::decode(&bytes).map_err(|why| SecretError::Corrupt { path: shown, why })
}

fn write_secret(dir: &OwnedFd, data_dir: &Path, ring: &Keyring) -> Result<(), SecretError> {
    let tmp_name = format!("{SECRET_FILE}.tmp");
    let tmp = data_dir.join(&tmp_name);
    // A temporary left by a crash is ours to replace; a symlink there is not followed
    // (unlinkat removes the link itself).
    match rustix::fs::unlinkat(dir.as_fd(), tmp_name.as_str(), rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(io_err(&tmp, "removing", e)),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir.as_fd(), tmp_name.as_str(), flags, Mode::from_raw_mode(0o600))
        .map_err(|e| io_err(&tmp, "creating", e))?;
    let mut file = File::from(fd);
    file.write_all(&ring.encode()).map_err(|e| io_err(&tmp, "writing", e))?;
    file.sync_all().map_err(|e| io_err(&tmp, "syncing", e))?;
    rustix::fs::renameat(dir.as_fd(), tmp_name.as_str(), dir.as_fd(), SECRET_FILE)
        .map_err(|e| io_err(&data_dir.join(SECRET_FILE), "renaming into place", e))?;
    rustix::fs::fsync(dir).map_err(|e| io_err(data_dir, "syncing directory", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn subkeys_differ_by_purpose_and_secret_and_are_stable() {
        let ring = Keyring::generate(0).unwrap();
        let t = ring.subkey(Purpose::Token);
        let c = ring.subkey(Purpose::Cookie);
        assert_ne!(t.as_bytes(), c.as_bytes());
        assert_eq!(ring.subkey(Purpose::Token).as_bytes(), t.as_bytes());
        let other = Keyring::generate(0).unwrap();
        assert_ne!(other.subkey(Purpose::Token).as_bytes(), t.as_bytes());
        let again = Keyring::decode(&ring.encode()).unwrap();
        assert_eq!(again.subkey(Purpose::Token).as_bytes(), t.as_bytes());
        assert_eq!(again.describe(), ring.describe());
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_the_grace_period_only() {
        let ring = Keyring::generate(0).unwrap();
        let old_id = ring.current_id();
        let old_key = ring.subkey(Purpose::Token);
        let new = ring.rotated(1000, 100).unwrap();
        assert_ne!(new.current_id(), old_id);
        let inside = new.subkey_for(Purpose::Token, old_id, 1099).unwrap();
        assert_eq!(inside.as_bytes(), old_key.as_bytes());
        assert_eq!(
            new.subkey_for(Purpose::Token, old_id, 1100).map(|_| ()),
            Err(KeyLookup::Retired { grace_ended_at_s: 1100 })
        );
        assert_eq!(
            new.subkey_for(Purpose::Token, old_id ^ 1, 0).map(|_| ()),
            Err(KeyLookup::Unknown)
        );
        let twice = new.rotated(2000, 100).unwrap();
        assert_eq!(
            twice.subkey_for(Purpose::Token, old_id, 2000).map(|_| ()),
            Err(KeyLookup::Unknown)
        );
        let decoded = Keyring::decode(&twice.encode()).unwrap();
        assert_eq!(decoded.describe(), twice.describe());
    }

    #[test]
    fn debug_is_redacted() {
        let ring = Keyring::generate(0).unwrap();
        let k = ring.subkey(Purpose::Csrf);
        let shown = format!("{ring:?} {k:?}");
        assert!(!shown.contains(&format!("{:?}", &k.as_bytes()[..4])), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn decode_refuses_damage() {
        let enc = Keyring::generate(0).unwrap().encode();
        for cut in 0..enc.len() {
            assert!(Keyring::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.to_vec();
        bad[8] = 3;
        assert!(Keyring::decode(&bad).is_err());
    }
}
