//! The baseline's QUIC configuration: TLS (self-signed certificate, one cipher suite), transport
//! (windows, congestion controller, MTU) and the UDP socket (buffers, GSO/GRO).
//!
//! Invariants: both ends offer exactly one TLS 1.3 cipher suite (`CIPHER_SUITE`), so the suite a
//! handshake that succeeds negotiated is known without reaching into quinn's rustls session; the
//! client trusts only the certificate the server wrote for this run (no accept-any verifier);
//! every window is at least `WINDOW_BYTES`.

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use quinn::congestion::{BbrConfig, ControllerFactory, CubicConfig, NewRenoConfig};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::udp::{UdpSockRef, UdpSocketState};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Stream receive window, connection receive window and send window (the issue asks >= 64 MiB).
pub const WINDOW_BYTES: u32 = 64 << 20;
/// Socket send and receive buffer we ask for; the kernel caps it at net.core.[rw]mem_max.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Largest UDP payload on a 1500-byte MTU over IPv4 (1500 - 20 IP - 8 UDP), the same datagram
/// size haul and the raw blaster use on the benchmark's `lo`.
const MTU_UPPER_BOUND: u16 = 1472;
/// The name the self-signed certificate is issued for and the client checks.
pub const SERVER_NAME: &str = "localhost";
/// ALPN both ends require.
const ALPN: &[u8] = b"haul-quic-baseline";
/// The only cipher suite either end offers: the same AES-128-GCM scp is run with.
const CIPHER_SUITE_NAME: &str = "TLS13_AES_128_GCM_SHA256";
/// A connection with no packet for this long is closed (the benchmark never idles that long).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Congestion controller choice (`--congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Congestion {
    Cubic,
    Bbr,
    NewReno,
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
            Congestion::NewReno => "new-reno",
        })
    }
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(provider)
}

/// Windows, congestion controller and MTU shared by both ends.
fn transport(congestion: Congestion) -> Result<Arc<quinn::TransportConfig>> {
    let window = quinn::VarInt::from_u32(WINDOW_BYTES);
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(window)
        .receive_window(window)
        .send_window(u64::from(WINDOW_BYTES))
        .enable_segmentation_offload(true)
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().context("idle timeout out of range")?));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    let factory: Arc<dyn ControllerFactory + Send + Sync> = match congestion {
        Congestion::Cubic => Arc::new(CubicConfig::default()),
        Congestion::Bbr => Arc::new(BbrConfig::default()),
        Congestion::NewReno => Arc::new(NewRenoConfig::default()),
    };
    t.congestion_controller_factory(factory);
    Ok(Arc::new(t))
}

/// A fresh self-signed certificate for `SERVER_NAME`; its DER is written to `cert_path` for the
/// client to trust, and the server config that presents it is returned.
pub fn server_config(congestion: Congestion, cert_path: &Path) -> Result<quinn::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .context("generating the self-signed certificate")?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    std::fs::write(cert_path, &cert)
        .with_context(|| format!("writing the certificate to {}", cert_path.display()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("installing the certificate")?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).context("QUIC server crypto config")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(congestion)?);
    Ok(config)
}

/// A client config that trusts only the certificate at `cert_path`.
pub fn client_config(congestion: Congestion, cert_path: &Path) -> Result<quinn::ClientConfig> {
    let der = std::fs::read(cert_path)
        .with_context(|| format!("reading the server certificate {}", cert_path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der)).context("the server certificate is not valid DER")?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).context("QUIC client crypto config")?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(congestion)?);
    Ok(config)
}

/// What the socket ended up with, for the configuration printout.
#[derive(Debug)]
pub struct SocketReport {
    pub gso_segments_max: usize,
    pub gro_segments: usize,
    pub send_buffer_bytes: usize,
    pub recv_buffer_bytes: usize,
}

/// Bind `addr`, enlarge its buffers and report what GSO/GRO quinn-udp will use on it.
pub fn bind_socket(addr: SocketAddr) -> Result<(UdpSocket, SocketReport)> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket)).context("quinn-udp socket")?;
    // Best effort: the kernel silently caps these at rmem_max/wmem_max; the report shows the
    // figure in force.
    let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER_BYTES);
    let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER_BYTES);
    let report = SocketReport {
        gso_segments_max: state.max_gso_segments(),
        gro_segments: state.gro_segments(),
        send_buffer_bytes: state.send_buffer_size(UdpSockRef::from(&socket))?,
        recv_buffer_bytes: state.recv_buffer_size(UdpSockRef::from(&socket))?,
    };
    Ok((socket, report))
}

/// Print the configuration both ends share plus this socket's, one `config:` line each.
pub fn print_config(role: &str, congestion: Congestion, socket: &SocketReport) {
    let on = |n: usize| if n > 1 { "enabled" } else { "disabled" };
    println!("config: role {role}, quinn 0.11, rustls 0.23 with the ring provider, TLS 1.3");
    println!("config: cipher suite {CIPHER_SUITE_NAME} (the only suite either end offers)");
    println!(
        "config: stream receive window {WINDOW_BYTES} B, connection receive window \
         {WINDOW_BYTES} B, send window {WINDOW_BYTES} B"
    );
    println!("config: congestion controller {congestion}, MTU discovery up to {MTU_UPPER_BOUND} B");
    println!(
        "config: GSO {} (max {} segments), GRO {} ({} segments)",
        on(socket.gso_segments_max),
        socket.gso_segments_max,
        on(socket.gro_segments),
        socket.gro_segments
    );
    println!(
        "config: socket buffers send {} B, receive {} B; tokio current-thread runtime",
        socket.send_buffer_bytes, socket.recv_buffer_bytes
    );
}
