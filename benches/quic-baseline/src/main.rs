//! `quic-baseline`: encrypted QUIC bulk transfer (quinn), the baseline haul is measured against
//! in `benches/loopback/run.sh` (issue 3, "Loopback throughput").
//!
//! ```text
//! quic-baseline server --listen 127.0.0.1:0 --out FILE [--cert CERT.der]
//! quic-baseline client --connect ADDR --file FILE [--cert CERT.der]
//! ```
//!
//! The server writes a fresh self-signed certificate to `--cert`, prints `listening on ADDR`,
//! accepts one connection and one unidirectional stream, writes the stream to `--out` and exits
//! after printing the BLAKE3 of what it received. The client trusts only that certificate, sends
//! the file on one stream and prints the BLAKE3 of what it read. Both print their configuration
//! (`config:` lines) first and one `result:` line at the end.
//!
//! Invariant: the printed digests cover exactly the bytes written to / read from the files, so
//! the benchmark can compare them with the source.

#![forbid(unsafe_code)]

mod config;

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use config::Congestion;

/// Bytes read from the source file per stream write (one owned buffer each, handed to quinn).
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Largest chunk the server takes from the stream at once.
const RECV_CHUNK_BYTES: usize = 1 << 20;
/// How long the server waits for the client to close once all data has arrived.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Application close code for a finished transfer.
const CLOSE_DONE: u32 = 0;

/// Encrypted QUIC (quinn) bulk-transfer baseline.
#[derive(Debug, Parser)]
#[command(name = "quic-baseline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive one file on one stream, write it to --out, print its BLAKE3 and exit.
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        out: PathBuf,
        /// Where to write the fresh self-signed certificate (DER) the client must trust.
        #[arg(long, default_value = "quic-baseline.cert.der")]
        cert: PathBuf,
        #[arg(long, value_enum, default_value_t = Congestion::Cubic)]
        congestion: Congestion,
    },
    /// Send --file to a server on one stream and print its BLAKE3.
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        file: PathBuf,
        /// The server's certificate (DER), the only one trusted.
        #[arg(long, default_value = "quic-baseline.cert.der")]
        cert: PathBuf,
        #[arg(long, value_enum, default_value_t = Congestion::Cubic)]
        congestion: Congestion,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quic-baseline: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Server { listen, out, cert, congestion } => {
                serve(listen, &out, &cert, congestion).await
            }
            Command::Client { connect, file, cert, congestion } => {
                send(connect, &file, &cert, congestion).await.map(drop)
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quic-baseline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gbit_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 * 8.0 / secs / 1e9 } else { 0.0 }
}

fn runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(quinn::TokioRuntime)
}

/// Accept one connection and one stream; write it to `out`; print the digest.
async fn serve(listen: SocketAddr, out: &Path, cert: &Path, cc: Congestion) -> Result<()> {
    let endpoint = server_endpoint(listen, cert, cc)?;
    println!("listening on {}", endpoint.local_addr()?);
    std::io::stdout().flush()?;
    receive(&endpoint, out).await?;
    Ok(())
}

/// The server's endpoint on `listen`, with a fresh certificate written to `cert`.
fn server_endpoint(listen: SocketAddr, cert: &Path, cc: Congestion) -> Result<quinn::Endpoint> {
    let server_config = config::server_config(cc, cert)?;
    let (socket, report) = config::bind_socket(listen)?;
    config::print_config("server", cc, &report);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config), socket, runtime())
        .context("creating the QUIC endpoint")
}

/// Receive one connection's first unidirectional stream into `out`; the BLAKE3 of what arrived.
async fn receive(endpoint: &quinn::Endpoint, out: &Path) -> Result<blake3::Hash> {
    let Some(incoming) = endpoint.accept().await else { bail!("endpoint closed before a client") };
    let conn = incoming.await.context("QUIC handshake with the client")?;
    let mut stream = conn.accept_uni().await.context("waiting for the client's stream")?;
    let mut file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut started: Option<Instant> = None;
    // Writes are synchronous: on the benchmark's tmpfs a write is a memory copy, and a
    // current-thread runtime keeps the whole receiver on one core, like each haul shard.
    while let Some(chunk) = stream.read_chunk(RECV_CHUNK_BYTES, true).await? {
        started.get_or_insert_with(Instant::now);
        file.write_all(&chunk.bytes).with_context(|| format!("writing {}", out.display()))?;
        hasher.update(&chunk.bytes);
        bytes += chunk.bytes.len() as u64;
    }
    file.sync_data().with_context(|| format!("syncing {}", out.display()))?;
    let secs = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let stats = conn.stats();
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.closed()).await;
    println!(
        "stats: udp_rx {} datagrams, rtt {} us, lost packets {}",
        stats.udp_rx.datagrams,
        stats.path.rtt.as_micros(),
        stats.path.lost_packets
    );
    let digest = hasher.finalize();
    println!(
        "result: received {bytes} bytes in {secs:.3} s ({:.3} Gbit/s) blake3 {}",
        gbit_per_s(bytes, secs),
        digest.to_hex()
    );
    endpoint.wait_idle().await;
    Ok(digest)
}

/// Connect, send `path` on one unidirectional stream, wait until the server has it all; the
/// BLAKE3 of what was read from `path`.
async fn send(
    server: SocketAddr,
    path: &Path,
    cert: &Path,
    cc: Congestion,
) -> Result<blake3::Hash> {
    let client_config = config::client_config(cc, cert)?;
    let bind: SocketAddr =
        if server.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let (socket, report) = config::bind_socket(bind)?;
    config::print_config("client", cc, &report);
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime())
            .context("creating the QUIC endpoint")?;
    endpoint.set_default_client_config(client_config);

    let started = Instant::now();
    let conn = endpoint
        .connect(server, config::SERVER_NAME)
        .context("starting the QUIC handshake")?
        .await
        .with_context(|| format!("QUIC handshake with {server}"))?;
    let mut stream = conn.open_uni().await.context("opening the stream")?;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    loop {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        bytes += n as u64;
        stream.write_chunk(buf.into()).await.context("sending on the stream")?;
    }
    stream.finish().context("finishing the stream")?;
    stream.stopped().await.context("waiting for the server to read the stream")?;
    let secs = started.elapsed().as_secs_f64();
    let stats = conn.stats();
    conn.close(CLOSE_DONE.into(), b"done");
    println!(
        "stats: udp_tx {} datagrams in {} send calls, cwnd {} B, lost packets {}, mtu {} B",
        stats.udp_tx.datagrams,
        stats.udp_tx.ios,
        stats.path.cwnd,
        stats.path.lost_packets,
        stats.path.current_mtu
    );
    let digest = hasher.finalize();
    println!(
        "result: sent {bytes} bytes in {secs:.3} s ({:.3} Gbit/s) blake3 {}",
        gbit_per_s(bytes, secs),
        digest.to_hex()
    );
    endpoint.wait_idle().await;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A size that is not a multiple of either chunk size, so the last chunk is a short one.
    const TEST_FILE_BYTES: usize = 3 * READ_CHUNK_BYTES + 12_345;

    fn test_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn write_test_file(path: &Path) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..TEST_FILE_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(path, &data).unwrap();
        data
    }

    #[test]
    fn file_arrives_byte_identical_and_both_ends_print_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out, cert) =
            (dir.path().join("src"), dir.path().join("out"), dir.path().join("cert.der"));
        let data = write_test_file(&src);
        let (sent, received) = test_runtime().block_on(async {
            let listen = "127.0.0.1:0".parse().unwrap();
            let endpoint = server_endpoint(listen, &cert, Congestion::Cubic).unwrap();
            let addr = endpoint.local_addr().unwrap();
            let out = out.clone();
            let server = tokio::spawn(async move { receive(&endpoint, &out).await });
            let sent = send(addr, &src, &cert, Congestion::Cubic).await.unwrap();
            (sent, server.await.unwrap().unwrap())
        });
        assert_eq!(sent, received);
        assert_eq!(sent, blake3::hash(&data));
        assert!(std::fs::read(&out).unwrap() == data, "the copy differs from the source");
    }

    #[test]
    fn client_refuses_a_server_whose_certificate_it_was_not_given() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("out"));
        let (trusted, other) = (dir.path().join("trusted.der"), dir.path().join("other.der"));
        write_test_file(&src);
        let outcome = test_runtime().block_on(async {
            let listen = "127.0.0.1:0".parse().unwrap();
            // The certificate the client is given belongs to an endpoint it never reaches.
            let _decoy = server_endpoint(listen, &trusted, Congestion::Cubic).unwrap();
            let endpoint = server_endpoint(listen, &other, Congestion::Cubic).unwrap();
            let addr = endpoint.local_addr().unwrap();
            let server = tokio::spawn(async move { receive(&endpoint, &out).await });
            let outcome = send(addr, &src, &trusted, Congestion::Cubic).await;
            server.abort();
            outcome
        });
        let err = format!("{:#}", outcome.unwrap_err());
        assert!(err.contains("handshake"), "unexpected error: {err}");
    }
}
