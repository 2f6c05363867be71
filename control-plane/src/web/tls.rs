//! The console's TLS identity: a configured certificate, or a self-signed one made on first start.
//!
//! Invariants:
//! - HTTPS is the only way the console is served; there is no plain-HTTP listener.
//! - The self-signed key is written with mode 0600 (created exclusive, never through a symlink),
//!   so another local user cannot read it; an existing pair is reused, never regenerated, so
//!   clients that pinned it keep working across restarts.
//! - rustls runs with the `ring` provider and HTTP/1.1 ALPN only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::WebError;

/// Largest certificate or key file read (a chain of a few certificates fits easily).
pub const MAX_PEM_BYTES: u64 = 256 * 1024;
/// File names of the self-signed pair inside the data directory.
pub const SELF_SIGNED_CERT: &str = "web-cert.pem";
pub const SELF_SIGNED_KEY: &str = "web-key.pem";

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// Generate (once) a self-signed certificate for these names into the data directory.
    SelfSigned { names: Vec<String> },
    /// PEM files configured by the operator: a certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Loads or creates the certificate and builds the rustls server configuration.
pub fn server_config(source: &TlsSource, data_dir: &Path) -> Result<Arc<ServerConfig>, WebError> {
    let (cert_path, key_path) = match source {
        TlsSource::SelfSigned { names } => {
            let cert = data_dir.join(SELF_SIGNED_CERT);
            let key = data_dir.join(SELF_SIGNED_KEY);
            if !cert.exists() || !key.exists() {
                generate(names, &cert, &key)?;
            }
            (cert, key)
        }
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
    };
    let chain = read_pem(&cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebError::Tls(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(WebError::Tls(format!("{}: no certificate in the file", cert_path.display())));
    }
    let key_pem = read_pem(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| WebError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebError::Tls(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn generate(names: &[String], cert_path: &Path, key_path: &Path) -> Result<(), WebError> {
    let names = if names.is_empty() { vec!["localhost".to_owned()] } else { names.to_vec() };
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| WebError::Tls(format!("generating the self-signed certificate: {e}")))?;
    write_new(key_path, made.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, made.cert.pem().as_bytes(), 0o644)
}

/// Creates `path` exclusively with `mode` (no symlink followed, nothing overwritten).
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WebError> {
    let io = |source| WebError::Io { path: path.display().to_string(), source };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, WebError> {
    use std::io::Read;
    let io = |source| WebError::Io { path: path.display().to_string(), source };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_BYTES + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(WebError::Tls(format!(
            "{}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_pair_is_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("haul-web-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = TlsSource::SelfSigned { names: vec!["localhost".into()] };
        server_config(&src, &dir).unwrap();
        let key = dir.join(SELF_SIGNED_KEY);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read(dir.join(SELF_SIGNED_CERT)).unwrap();
        server_config(&src, &dir).unwrap();
        assert_eq!(first, std::fs::read(dir.join(SELF_SIGNED_CERT)).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
