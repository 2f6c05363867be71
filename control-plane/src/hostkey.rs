//! SSH keys of the appliance: the server's own host key, and the client key that ships inside
//! `haul`.
//!
//! - The host key is ed25519, generated on first start into `DATA_DIR/ssh_host_ed25519_key`
//!   (created with `O_EXCL` and mode 0600 in one step, OpenSSH format) and loaded on every later
//!   start. A host key file that group or other can read is refused.
//! - The shipped client key (`keys/client_ed25519`) is public by design: anyone holding a copy
//!   of `haul` has it. It proves nothing about the client; the gate accepts it only for the
//!   shared transfer account and only for a token exec (docs/GATE.md).
//! - Fingerprints are printed like OpenSSH's: `SHA256:` and the unpadded base64 of the SHA-256
//!   of the public key blob, so `ssh-keygen -lf` shows the same string.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// The host key's file name inside the data directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// The client key compiled into `haul`: public by design (docs/GATE.md).
pub const SHIPPED_CLIENT_KEY: &str = include_str!("../keys/client_ed25519");
/// Its public half, as OpenSSH writes it.
pub const SHIPPED_CLIENT_PUBLIC_KEY: &str = include_str!("../keys/client_ed25519.pub");

/// Host key failures; each says whose fault.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The operator's: the file is readable by others, or not a key we can use.
    #[error("host key {path}: {why}")]
    Unusable { path: PathBuf, why: String },
    /// The system's: reading or writing the file failed.
    #[error("host key {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The system's: no randomness.
    #[error("reading the OS random generator: {0}")]
    Random(String),
    /// Our build's: the compiled-in client key does not parse.
    #[error("the shipped client key does not parse: {0}")]
    Shipped(String),
}

/// The server's host key.
#[derive(Debug)]
pub struct HostKey {
    key: PrivateKey,
}

impl HostKey {
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }
    /// `SHA256:<base64 without padding>`, as in a `hostkey=` pin and in `ssh-keygen -lf`.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.key.public_key())
    }
}

/// The OpenSSH-style SHA-256 fingerprint of a public key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Load `DATA_DIR/ssh_host_ed25519_key`, or create it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<HostKey, HostKeyError> {
    let path = data_dir.join(HOST_KEY_FILE);
    let io = |source| HostKeyError::Io { path: path.clone(), source };
    match std::fs::symlink_metadata(&path) {
        Ok(_) => load(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut()).map_err(|e| HostKeyError::Random(e.to_string()))?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| HostKeyError::Unusable { path: path.clone(), why: e.to_string() })?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_o_nofollow())
                .open(&path)
                .map_err(io)?;
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            Ok(HostKey { key })
        }
        Err(e) => Err(io(e)),
    }
}

/// `O_NOFOLLOW` on Linux (std does not name it; the value is fixed by the kernel ABI).
const fn libc_o_nofollow() -> i32 {
    0o400000
}

fn load(path: &Path) -> Result<HostKey, HostKeyError> {
    let unusable = |why: String| HostKeyError::Unusable { path: path.to_path_buf(), why };
    let f =
        OpenOptions::new().read(true).custom_flags(libc_o_nofollow()).open(path).map_err(|e| {
            match e.raw_os_error() {
                Some(40) => unusable("is a symbolic link; replace it with the key file".into()),
                _ => HostKeyError::Io { path: path.to_path_buf(), source: e },
            }
        })?;
    let meta =
        f.metadata().map_err(|e| HostKeyError::Io { path: path.to_path_buf(), source: e })?;
    if meta.mode() & 0o077 != 0 {
        return Err(unusable(format!(
            "mode {:o} lets group or other read it; run `chmod 600 {}`",
            meta.mode() & 0o777,
            path.display()
        )));
    }
    let text = Zeroizing::new(
        std::io::read_to_string(f)
            .map_err(|e| HostKeyError::Io { path: path.to_path_buf(), source: e })?,
    );
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| unusable(e.to_string()))?;
    if key.algorithm() != russh::keys::Algorithm::Ed25519 {
        return Err(unusable(format!("is {}, not ed25519", key.algorithm())));
    }
    Ok(HostKey { key })
}

/// The shipped client key (public by design).
pub fn shipped_client_key() -> Result<PrivateKey, HostKeyError> {
    PrivateKey::from_openssh(SHIPPED_CLIENT_KEY).map_err(|e| HostKeyError::Shipped(e.to_string()))
}

/// Read a user's private key file (`haul cp -i KEY`), unencrypted OpenSSH format.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| HostKeyError::Io { path: path.to_path_buf(), source: e })?,
    );
    PrivateKey::from_openssh(text.as_bytes())
        .map_err(|e| HostKeyError::Unusable { path: path.to_path_buf(), why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).unwrap();
        let d =
            std::env::temp_dir().join(format!("haul-hostkey-{tag}-{:x}", u64::from_le_bytes(r)));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn created_once_then_kept() {
        let d = tmpdir("keep");
        let a = load_or_create(&d).unwrap();
        let b = load_or_create(&d).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("SHA256:"));
        assert!(!a.fingerprint().ends_with('='));
        let mode = std::fs::metadata(d.join(HOST_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn readable_by_others_or_symlink_is_refused() {
        let d = tmpdir("perm");
        load_or_create(&d).unwrap();
        let p = d.join(HOST_KEY_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&d).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::rename(&p, d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), &p).unwrap();
        let e = load_or_create(&d).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shipped_key_parses_and_differs_from_a_host_key() {
        let shipped = shipped_client_key().unwrap();
        let d = tmpdir("ship");
        let host = load_or_create(&d).unwrap();
        assert_ne!(fingerprint(shipped.public_key()), host.fingerprint());
        let public = PublicKey::from_openssh(SHIPPED_CLIENT_PUBLIC_KEY.trim()).unwrap();
        assert_eq!(fingerprint(&public), fingerprint(shipped.public_key()));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
