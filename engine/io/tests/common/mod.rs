//! Shared helpers of the loopback tests: sequence-numbered payloads and their checks.
//!
//! A datagram of `size` bytes carries its sequence number (8 bytes, little endian) and then a
//! window of a fixed pseudo-random pattern that starts at an offset derived from the sequence
//! number, so any corruption, truncation or mix-up between datagrams is detected by one compare.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::net::SocketAddr;

/// Offsets into the pattern cycle over this many values.
const PATTERN_SHIFTS: u64 = 251;

/// The pattern every payload is cut from.
pub fn pattern(size: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..size + PATTERN_SHIFTS as usize)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Writes datagram `seq` of `buf.len()` bytes.
pub fn fill(buf: &mut [u8], seq: u64, pattern: &[u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let shift = (seq % PATTERN_SHIFTS) as usize;
    let n = buf.len() - 8;
    buf[8..].copy_from_slice(&pattern[shift..shift + n]);
}

/// The sequence number of `datagram` if it is exactly `size` bytes of intact content.
pub fn check(datagram: &[u8], size: usize, pattern: &[u8]) -> Option<u64> {
    if datagram.len() != size {
        return None;
    }
    let seq = u64::from_le_bytes(datagram[..8].try_into().ok()?);
    let shift = (seq % PATTERN_SHIFTS) as usize;
    (datagram[8..] == pattern[shift..shift + size - 8]).then_some(seq)
}

/// Whether this host can bind IPv6 loopback; prints a note when it cannot.
pub fn has_ipv6_loopback() -> bool {
    let ok = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if !ok {
        println!("note: ::1 is unavailable on this host; IPv6 cases skipped");
    }
    ok
}

/// Loopback address of the family of `v6`, port 0.
pub fn loopback(v6: bool) -> SocketAddr {
    if v6 { "[::1]:0".parse().unwrap() } else { "127.0.0.1:0".parse().unwrap() }
}

/// Whether `kind` can run on this host; prints a note when io_uring cannot (a container's
/// seccomp profile or `kernel.io_uring_disabled`), so its cases are skipped, not failed.
pub fn is_available(kind: haul_io::backend::BackendKind) -> bool {
    use haul_io::backend::{BackendBuilder, BackendKind};
    if kind == BackendKind::Portable {
        return true;
    }
    match BackendBuilder::new(loopback(false)).force(kind).build() {
        Ok(_) => true,
        Err(e) => {
            println!("note: io_uring is unavailable here ({e}); io_uring cases skipped");
            false
        }
    }
}
