//! Plain UDP traffic for measuring the emulator: a paced blaster and a counting sink.
//!
//! Role: the "fixed-rate blaster at the link rate" of the WAN benchmark and of the emulator's
//! tests. Rates and byte counts are at the IP layer (UDP payload + 28 bytes of IPv4 and UDP
//! headers), the same layer the emulator's rate applies to. Each datagram carries its sequence
//! number in its first 8 bytes (little-endian) so the sink can count what it missed.
//!
//! Invariants: the blaster never gets ahead of `rate × elapsed` by more than one tick's worth
//! ([`TICK_NS`]) and sends at most [`BURST_PACKETS_MAX`] per tick, so a stall cannot turn into
//! a burst larger than that; the sink's loop ends at its deadline whatever arrives.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// IPv4 (20) + UDP (8) header bytes per datagram.
pub const IP_UDP_OVERHEAD: usize = 28;
/// The blaster's pacing period.
pub const TICK_NS: u64 = 1_000_000;
/// Most datagrams sent in one tick (catching up after a stall included).
pub const BURST_PACKETS_MAX: u64 = 1024;
/// Largest payload the blaster sends (fills a 1500-byte MTU).
pub const PAYLOAD_MAX: usize = 1472;
/// The sink's receive buffer: 16 MiB, about 0.25 s at 500 Mbit/s, so a sink that loses the
/// CPU for a moment does not drop what the emulator delivered.
pub const SINK_RCVBUF_BYTES: libc::c_int = 16 << 20;

/// What the blaster sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlastReport {
    /// Datagrams handed to the kernel.
    pub packets: u64,
    /// Their IP bytes.
    pub ip_bytes: u64,
    /// Sends the kernel refused (e.g. ENOBUFS), not counted above.
    pub send_errors: u64,
    /// From the first send to the last.
    pub elapsed: Duration,
}

/// What the sink received.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkReport {
    /// Datagrams received.
    pub packets: u64,
    /// Their IP bytes.
    pub ip_bytes: u64,
    /// Highest sequence number seen plus one (datagrams the sender numbered up to the last).
    pub seq_span: u64,
    /// From the first datagram to the last.
    pub first_to_last: Duration,
}

impl SinkReport {
    /// IP-layer throughput between the first and the last datagram, bits/s.
    pub fn rate_bps(&self) -> f64 {
        let secs = self.first_to_last.as_secs_f64();
        if secs <= 0.0 { 0.0 } else { self.ip_bytes as f64 * 8.0 / secs }
    }
}

/// Sends `payload_len`-byte datagrams to `to` at `rate_bps` (IP layer) for `duration`.
pub fn blast(
    socket: &UdpSocket,
    to: SocketAddr,
    rate_bps: u64,
    duration: Duration,
    payload_len: usize,
) -> io::Result<BlastReport> {
    let payload_len = payload_len.clamp(8, PAYLOAD_MAX);
    let ip_len = (payload_len + IP_UDP_OVERHEAD) as u64;
    let mut buf = vec![0u8; payload_len];
    let mut report = BlastReport::default();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut tick = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_nanos() * rate_bps as u128 / (8 * 1_000_000_000 * ip_len as u128))
            as u64
            + 1;
        let mut burst = 0;
        while seq < due && burst < BURST_PACKETS_MAX {
            buf[..8].copy_from_slice(&seq.to_le_bytes());
            match socket.send_to(&buf, to) {
                Ok(_) => {
                    report.packets += 1;
                    report.ip_bytes += ip_len;
                }
                Err(_) => report.send_errors += 1,
            }
            seq += 1;
            burst += 1;
        }
        tick += 1;
        let next = Duration::from_nanos(tick * TICK_NS);
        if let Some(left) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Counts datagrams on `socket` until `idle` passes without one (after the first) or
/// `deadline` passes from the call, whichever is first.
pub fn sink(socket: &UdpSocket, idle: Duration, deadline: Duration) -> io::Result<SinkReport> {
    set_recv_buffer(socket, SINK_RCVBUF_BYTES);
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut buf = vec![0u8; 65536];
    let mut report = SinkReport::default();
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = start;
    while start.elapsed() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                report.packets += 1;
                report.ip_bytes += (n + IP_UDP_OVERHEAD) as u64;
                if n >= 8 {
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&buf[..8]);
                    report.seq_span =
                        report.seq_span.max(u64::from_le_bytes(seq).saturating_add(1));
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if first.is_some() && last.elapsed() >= idle {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    report.first_to_last = first.map_or(Duration::ZERO, |f| last - f);
    Ok(report)
}

/// Asks for a receive buffer of `bytes`: SO_RCVBUFFORCE (root may exceed net.core.rmem_max),
/// else SO_RCVBUF (capped by rmem_max). Best effort: a smaller buffer only risks drops that
/// the sink's counts then show.
pub fn set_recv_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the descriptor is open (borrowed from `socket`); the option value is a live
        // c_int and `len` is its size, as both options expect.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                len,
            )
        };
        if rc == 0 {
            return;
        }
    }
}
