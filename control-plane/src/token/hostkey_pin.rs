//! The host key pin that goes into `hostkey=` of a `haul://` URL: `SHA256:<base64, no
//! padding>` of the SSH host key's public blob, as OpenSSH prints it.
//!
//! The gate creates the key (`DATA_DIR/ssh_host_ed25519_key`, OpenSSH private key format);
//! this module only reads the public half out of that file, so minting never needs the
//! private key's bytes. Total: any file content gives a fingerprint or a typed error.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The host key's file name in the data directory (agreed with the gate).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// A host key file is small; larger is not ours.
const MAX_KEY_FILE: u64 = 64 * 1024;
const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const AUTH_MAGIC: &[u8] = b"openssh-key-v1\0";

#[derive(Debug, Error)]
pub enum HostKeyPinError {
    #[error(
        "no SSH host key at {0}: start `haul serve --data-dir DIR` once to create it, or give --hostkey"
    )]
    Missing(PathBuf),
    #[error("SSH host key {path}: {why}")]
    Unreadable { path: PathBuf, why: String },
}

/// The fingerprint of the host key in `data_dir`.
pub fn host_key_fingerprint(data_dir: &Path) -> Result<String, HostKeyPinError> {
    let path = data_dir.join(HOST_KEY_FILE);
    let bad = |why: String| HostKeyPinError::Unreadable { path: path.clone(), why };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostKeyPinError::Missing(path));
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut text = String::new();
    file.take(MAX_KEY_FILE).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
    let blob = public_blob(&text).map_err(|w| bad(w.to_owned()))?;
    Ok(fingerprint_of_blob(&blob))
}

/// `SHA256:<base64 no pad>` of a public key blob.
pub fn fingerprint_of_blob(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The first public key blob of an OpenSSH private key file.
fn public_blob(text: &str) -> Result<Vec<u8>, &'static str> {
    let body = text
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(b, _)| b)
        .ok_or("not an OpenSSH private key file")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = STANDARD.decode(b64).map_err(|_| "bad base64 in the key file")?;
    let mut rest = raw.strip_prefix(AUTH_MAGIC).ok_or("not an openssh-key-v1 key")?;
    for _ in 0..3 {
        ssh_string(&mut rest)?; // cipher name, kdf name, kdf options
    }
    let count = rest.get(..4).ok_or("truncated key file")?;
    if u32::from_be_bytes([count[0], count[1], count[2], count[3]]) == 0 {
        return Err("the key file holds no key");
    }
    rest = &rest[4..];
    Ok(ssh_string(&mut rest)?.to_vec())
}

fn ssh_string<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let len = rest.get(..4).ok_or("truncated key file")?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let s = rest.get(4..4usize.saturating_add(len)).ok_or("truncated key file")?;
    *rest = &rest[4 + len..];
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn matches_ssh_keygen_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join(HOST_KEY_FILE);
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&key)
            .status();
        // scripts/test installs openssh-client.
        assert!(made.is_ok_and(|s| s.success()), "ssh-keygen (openssh-client) is required");
        let out = std::process::Command::new("ssh-keygen").arg("-lf").arg(&key).output().unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let want = line.split_whitespace().nth(1).unwrap();
        assert_eq!(host_key_fingerprint(d.path()).unwrap(), want);

        std::fs::write(&key, format!("{BEGIN}\nAAAA\n{END}\n")).unwrap();
        assert!(matches!(host_key_fingerprint(d.path()), Err(HostKeyPinError::Unreadable { .. })));
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(host_key_fingerprint(d.path()), Err(HostKeyPinError::Missing(_))));
        for junk in [
            "",
            "x",
            BEGIN,
            "-----BEGIN OPENSSH PRIVATE KEY-----b3BlbnNzaC1rZXktdjEA-----END OPENSSH PRIVATE KEY-----",
        ] {
            assert!(public_blob(junk).is_err());
        }
    }
}
