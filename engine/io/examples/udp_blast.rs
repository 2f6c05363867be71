//! Raw UDP GSO+GRO blaster, no crypto: the kernel's ceiling for Haul's benchmarks.
//!
//! Role: one process sends `--bytes` of `--datagram-size` datagrams as fast as the socket
//! takes them (GSO batches; no pacing but the socket's); another receives them (GRO, multishot
//! on io_uring) and prints Gbit/s, datagrams, CPU seconds (getrusage) and syscalls per 1,000
//! datagrams. Payloads are not checked: this measures the kernel path only.
//!
//! ```text
//! udp_blast --role recv --addr 127.0.0.1:9000 --bytes 4G [--datagram-size 1472]
//! udp_blast --role send --addr 127.0.0.1:9000 --bytes 4G [--datagram-size 1472]
//! ```
//! `--backend uring|portable` forces a backend (default: automatic, see HAUL_IO_BACKEND).

#![allow(unsafe_code)] // getrusage only; engine/io is the crate allowed unsafe.

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haul_io::backend::{Backend, BackendBuilder, BackendKind};
use haul_io::udp::MAX_BATCH_DATAGRAMS;

/// Receiver gives up after this long without a datagram once data has flowed.
const IDLE_END: Duration = Duration::from_secs(2);
/// Receiver gives up if nothing arrives at all for this long.
const FIRST_DATAGRAM_WAIT: Duration = Duration::from_secs(60);
/// Datagrams per send batch.
const BATCH: usize = 512;
const _: () = assert!(BATCH <= MAX_BATCH_DATAGRAMS);

struct Args {
    role: String,
    addr: SocketAddr,
    bytes: u64,
    datagram_size: usize,
    backend: Option<BackendKind>,
}

fn parse_bytes(text: &str) -> Result<u64, Box<dyn Error>> {
    let (digits, mult) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    Ok(digits.parse::<u64>()? * mult)
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        role: String::new(),
        addr: "127.0.0.1:9000".parse()?,
        bytes: 1 << 30,
        datagram_size: 1472,
        backend: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--role" => args.role = value,
            "--addr" => args.addr = value.parse()?,
            "--bytes" => args.bytes = parse_bytes(&value)?,
            "--datagram-size" => args.datagram_size = value.parse()?,
            "--backend" => {
                args.backend = haul_io::backend::parse_backend_env(Some(&value));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.role != "send" && args.role != "recv" {
        return Err("--role must be send or recv".into());
    }
    Ok(args)
}

/// (user, system) CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: all-zero is a valid rusage; getrusage fills it in and only writes to it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage on our stack.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

fn open(addr: SocketAddr, kind: Option<BackendKind>) -> Result<Backend, Box<dyn Error>> {
    let mut builder = BackendBuilder::new(addr);
    if let Some(kind) = kind {
        builder = builder.force(kind);
    }
    let (backend, choice) = builder.build()?;
    eprintln!(
        "backend {} ({}), receive buffers {}, gso {} gro {}, rcvbuf {} sndbuf {}",
        choice.kind.name(),
        choice.reason,
        backend.recv_pool_backing().name(),
        backend.socket().is_gso(),
        backend.socket().is_gro(),
        backend.socket().rcvbuf_bytes(),
        backend.socket().sndbuf_bytes()
    );
    if let Backend::Uring(uring) = &backend {
        eprintln!("io_uring features: {:?}", uring.features());
    }
    Ok(backend)
}

fn receive(args: &Args) -> Result<(), Box<dyn Error>> {
    let mut rx = open(args.addr, args.backend)?;
    println!("listening {}", rx.local_addr());
    let (mut bytes, mut datagrams) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    while bytes < args.bytes {
        let n = rx.recv_segments(Duration::from_millis(200), |_, payload, _| {
            bytes += payload.len() as u64;
        })?;
        datagrams += n as u64;
        let now = Instant::now();
        if n > 0 {
            first.get_or_insert(now);
            last = now;
        } else if first.is_some() && now - last > IDLE_END {
            break;
        } else if first.is_none() && now - started > FIRST_DATAGRAM_WAIT {
            return Err("no datagram arrived".into());
        }
    }
    let cpu1 = cpu_seconds();
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64()).max(1e-9);
    let cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let stats = rx.stats();
    println!(
        "recv: bytes {bytes} datagrams {datagrams} seconds {secs:.3} gbit_s {:.2} \
         cpu_s {cpu:.2} (user {:.2} sys {:.2}) cpu_s_per_gib {:.3} loss_pct {:.2} \
         syscalls_per_1000 {:.1} datagrams_per_buffer {:.1} backend {}",
        bytes as f64 * 8.0 / secs / 1e9,
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        cpu / gib.max(1e-9),
        100.0 * (1.0 - bytes as f64 / args.bytes as f64).max(0.0),
        stats.syscalls as f64 * 1000.0 / datagrams.max(1) as f64,
        datagrams as f64 / stats.recv_buffers.max(1) as f64,
        rx.kind().name()
    );
    Ok(())
}

fn send(args: &Args) -> Result<(), Box<dyn Error>> {
    let bind: SocketAddr =
        if args.addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let mut tx = open(bind, args.backend)?;
    let payload = vec![0xa5u8; args.datagram_size * BATCH];
    let slices: Vec<&[u8]> = payload.chunks(args.datagram_size).collect();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < args.bytes {
        let left = (args.bytes - sent).div_ceil(args.datagram_size as u64);
        let n = (left as usize).min(BATCH);
        match tx.send_batch(args.addr, &slices[..n], args.datagram_size) {
            Ok(k) => sent += (k * args.datagram_size) as u64,
            // The receiver's port may refuse (ICMP) or buffers fill: a ceiling keeps pushing.
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let cpu1 = cpu_seconds();
    let cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    let stats = tx.stats();
    println!(
        "send: bytes {sent} seconds {secs:.3} gbit_s {:.2} cpu_s {cpu:.2} cpu_s_per_gib {:.3} \
         syscalls_per_1000 {:.1} backend {}",
        sent as f64 * 8.0 / secs / 1e9,
        cpu / (sent as f64 / (1u64 << 30) as f64).max(1e-9),
        stats.syscalls as f64 * 1000.0 / stats.datagrams_sent.max(1) as f64,
        tx.kind().name()
    );
    Ok(())
}

/// Prints what on this host keeps the kernel path from full speed, with remedies.
fn print_findings() {
    let wants = haul_io::checks::Wants {
        sockbuf_bytes: haul_io::udp::DEFAULT_SOCKET_BUFFER_BYTES as u64,
        locked_bytes: 8 << 20,
        hugepages: 4,
    };
    for finding in haul_io::checks::evaluate(&haul_io::checks::read_host_facts(), &wants) {
        eprintln!("{finding}");
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    print_findings();
    if args.role == "recv" { receive(&args) } else { send(&args) }
}
