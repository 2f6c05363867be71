//! Backend selection: one enum over the io_uring and portable network backends.
//!
//! Role: [`BackendBuilder`] opens the socket and picks the backend: io_uring unless it is
//! disabled (`/proc/sys/kernel/io_uring_disabled` != 0), unavailable (setup fails with
//! ENOSYS/EPERM, a missing opcode or buffer-ring support), or the portable backend is forced
//! per process (`HAUL_IO_BACKEND=portable`, or [`BackendBuilder::force`]), so tests need no
//! global sysctl. The choice and its reason are reported in [`BackendChoice`].
//!
//! Invariant: both backends expose the same batch contract: `send_batch` hands every datagram
//! to the kernel (or errs) before returning; `recv_batch` calls back once per datagram with the
//! exact bytes received (`recv_segments` once per GRO buffer, writable) and allocates nothing.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::IoError;
use crate::fallback::PortableBackend;
use crate::udp::{UdpOptions, UdpSocket};
use crate::uring::UringBackend;

/// Environment variable that forces a backend: `portable`, `uring` or `auto`.
pub const BACKEND_ENV: &str = "HAUL_IO_BACKEND";

/// Which backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring with multishot receive and a provided buffer ring.
    Uring,
    /// sendmmsg/recvmmsg.
    Portable,
}

impl BackendKind {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Portable => "portable",
        }
    }
}

/// The backend chosen and why.
#[derive(Debug, Clone)]
pub struct BackendChoice {
    /// What runs.
    pub kind: BackendKind,
    /// Why it was chosen (forced, io_uring disabled, setup error, default).
    pub reason: String,
}

/// What the operator asked for, from `HAUL_IO_BACKEND`.
pub fn parse_backend_env(value: Option<&str>) -> Option<BackendKind> {
    match value.map(str::trim) {
        Some("portable") => Some(BackendKind::Portable),
        Some("uring") | Some("io_uring") => Some(BackendKind::Uring),
        _ => None,
    }
}

/// Decides before trying io_uring: a forced choice wins, then the sysctl.
pub fn preselect(forced: Option<BackendKind>, io_uring_disabled: Option<u32>) -> BackendChoice {
    match (forced, io_uring_disabled) {
        (Some(kind), _) => {
            BackendChoice { kind, reason: "forced by flag or HAUL_IO_BACKEND".into() }
        }
        (None, Some(v)) if v != 0 => BackendChoice {
            kind: BackendKind::Portable,
            reason: format!("kernel.io_uring_disabled = {v}"),
        },
        _ => BackendChoice { kind: BackendKind::Uring, reason: "default".into() },
    }
}

/// After io_uring failed with `err`: the portable choice, or the error when io_uring was forced.
pub fn fall_back(forced: Option<BackendKind>, err: IoError) -> Result<BackendChoice, IoError> {
    if forced == Some(BackendKind::Uring) {
        return Err(err);
    }
    Ok(BackendChoice {
        kind: BackendKind::Portable,
        reason: format!("io_uring unavailable: {err}"),
    })
}

/// Builds a socket plus backend.
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    addr: SocketAddr,
    udp: UdpOptions,
    forced: Option<BackendKind>,
}

impl BackendBuilder {
    /// A builder for a socket bound to `addr` (port 0 picks one) with default options; the
    /// backend may be forced by `HAUL_IO_BACKEND`.
    pub fn new(addr: SocketAddr) -> BackendBuilder {
        let env = std::env::var(BACKEND_ENV).ok();
        BackendBuilder {
            addr,
            udp: UdpOptions::default(),
            forced: parse_backend_env(env.as_deref()),
        }
    }

    /// Forces a backend for this socket (overrides the environment).
    pub fn force(mut self, kind: BackendKind) -> BackendBuilder {
        self.forced = Some(kind);
        self
    }

    /// Socket options (buffer sizes, GRO); blocking mode is chosen per backend.
    pub fn udp_options(mut self, udp: UdpOptions) -> BackendBuilder {
        self.udp = udp;
        self
    }

    /// Opens the socket and the backend, falling back to portable when io_uring fails
    /// (unless io_uring was forced, then its error is returned).
    pub fn build(self) -> Result<(Backend, BackendChoice), IoError> {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let mut choice = preselect(self.forced, disabled);
        if choice.kind == BackendKind::Uring {
            let mut udp = self.udp.clone();
            // The ring polls the socket itself; a blocking socket makes it retry on a full
            // buffer instead of failing the operation with EAGAIN.
            udp.is_nonblocking = false;
            let socket = UdpSocket::bind(self.addr, &udp)?;
            match UringBackend::new(socket) {
                Ok(b) => return Ok((Backend::Uring(Box::new(b)), choice)),
                Err(e) => choice = fall_back(self.forced, e)?,
            }
        }
        let mut udp = self.udp;
        udp.is_nonblocking = true;
        let socket = UdpSocket::bind(self.addr, &udp)?;
        Ok((Backend::Portable(Box::new(PortableBackend::new(socket)?)), choice))
    }
}

/// Counters of one backend, for benchmarks (syscalls per 1,000 datagrams) and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Syscalls made: io_uring_enter, or sendmmsg/recvmmsg/poll.
    pub syscalls: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Datagrams delivered to callbacks.
    pub datagrams_received: u64,
    /// Receive buffers filled by the kernel (fewer than datagrams when GRO coalesces).
    pub recv_buffers: u64,
    /// Times the multishot receive ended (buffer ring dry, or the kernel stopped it) and was
    /// re-armed; always 0 on the portable backend.
    pub recv_rearms: u64,
    /// Disk syscalls (pread/pwrite/open) a shard made beside the backend's; 0 from a backend
    /// itself, filled in by the transfer runtime.
    pub disk_syscalls: u64,
    /// Disk reads and writes submitted through the shard's io_uring (no syscall of their
    /// own); 0 when the shard used pread/pwrite. Filled in by the transfer runtime.
    pub disk_ring_ops: u64,
    /// Of those, operations made with O_DIRECT: the aligned middles of the receiver's
    /// writes, the sender's reads through its sources' O_DIRECT twins.
    pub disk_direct_ops: u64,
    /// Sender: ring reads through the buffered descriptor (sources without an O_DIRECT twin,
    /// resends at unaligned offsets). Not counted: pread/pwrite.
    pub disk_buffered_reads: u64,
    /// O_DIRECT operations the kernel refused with EINVAL after the twin opened, redone
    /// buffered (the file stays buffered).
    pub disk_direct_fallbacks: u64,
    /// What backs the disk buffers (staging arenas, read slots; the lesser over shards and
    /// regions): `None` when no shard reported one.
    pub disk_buffers_backing: Option<crate::buf::Backing>,
    /// What backs the network receive buffers (the lesser over shards).
    pub net_buffers_backing: Option<crate::buf::Backing>,
    /// Receiver files for which O_DIRECT was wanted and not used (the filesystem refused
    /// it, or it is tmpfs/ramfs, where it brings nothing).
    pub disk_direct_refused_files: u64,
    /// Sender sources read buffered instead of with O_DIRECT because the page cache held them
    /// (dirty pages, or at least half of the file cached: `transfer::store`).
    pub disk_direct_cached_files: u64,
    /// Of the ring's disk operations, those made with registered buffers (`ReadFixed`/
    /// `WriteFixed`, `uring::fixed`).
    pub disk_fixed_ops: u64,
    /// Bytes of disk buffers registered with the ring (pinned).
    pub disk_fixed_bytes: u64,
    /// Buffer registrations the kernel refused (memlock, an old kernel): those shards used
    /// plain `Read`/`Write`.
    pub disk_fixed_refused: u64,
    /// The errno of the last refusal (0: none).
    pub disk_fixed_errno: i32,
}

impl IoStats {
    /// Network plus disk syscalls per 1,000 datagrams sent and received (0 when none moved):
    /// the figure the loopback benchmark prints for each end.
    pub fn syscalls_per_1000_datagrams(&self) -> f64 {
        let datagrams = self.datagrams_sent + self.datagrams_received;
        if datagrams == 0 {
            return 0.0;
        }
        (self.syscalls + self.disk_syscalls) as f64 * 1000.0 / datagrams as f64
    }

    /// Adds `other`'s counters into this one (a side's total over its shards).
    pub fn merge(&mut self, other: &IoStats) {
        self.syscalls += other.syscalls;
        self.datagrams_sent += other.datagrams_sent;
        self.datagrams_received += other.datagrams_received;
        self.recv_buffers += other.recv_buffers;
        self.recv_rearms += other.recv_rearms;
        self.disk_syscalls += other.disk_syscalls;
        self.disk_ring_ops += other.disk_ring_ops;
        self.disk_direct_ops += other.disk_direct_ops;
        self.disk_buffered_reads += other.disk_buffered_reads;
        self.disk_direct_fallbacks += other.disk_direct_fallbacks;
        use crate::buf::Backing;
        self.disk_buffers_backing =
            Backing::weaker(self.disk_buffers_backing, other.disk_buffers_backing);
        self.net_buffers_backing =
            Backing::weaker(self.net_buffers_backing, other.net_buffers_backing);
        self.disk_direct_refused_files += other.disk_direct_refused_files;
        self.disk_direct_cached_files += other.disk_direct_cached_files;
        self.disk_fixed_ops += other.disk_fixed_ops;
        self.disk_fixed_bytes += other.disk_fixed_bytes;
        self.disk_fixed_refused += other.disk_fixed_refused;
        if other.disk_fixed_errno != 0 {
            self.disk_fixed_errno = other.disk_fixed_errno;
        }
    }
}

/// The network backend of one shard.
#[derive(Debug)]
pub enum Backend {
    /// io_uring.
    Uring(Box<UringBackend>),
    /// sendmmsg/recvmmsg.
    Portable(Box<PortableBackend>),
}

impl Backend {
    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Portable(_) => BackendKind::Portable,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        match self {
            Backend::Uring(b) => b.socket(),
            Backend::Portable(b) => b.socket(),
        }
    }

    /// Counters since the backend was built.
    pub fn stats(&self) -> IoStats {
        match self {
            Backend::Uring(b) => b.stats(),
            Backend::Portable(b) => b.stats(),
        }
    }

    /// Which memory backs the receive buffers (hugetlb, thp or normal).
    pub fn recv_pool_backing(&self) -> crate::buf::Backing {
        match self {
            Backend::Uring(b) => b.recv_pool_backing(),
            Backend::Portable(b) => b.recv_pool_backing(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket().local_addr()
    }

    /// Sends `datagrams` (each at most `segment_bytes`) to `dest` with GSO where available;
    /// every datagram is with the kernel when this returns `Ok`.
    pub fn send_batch(
        &mut self,
        dest: SocketAddr,
        datagrams: &[&[u8]],
        segment_bytes: usize,
    ) -> Result<usize, IoError> {
        match self {
            Backend::Uring(b) => b.send_batch(dest, datagrams, segment_bytes),
            Backend::Portable(b) => b.send_batch(dest, datagrams, segment_bytes),
        }
    }

    /// Receives queued datagrams, waiting up to `timeout` for the first; calls
    /// `on_datagram(from, bytes)` per datagram and returns how many it saw.
    pub fn recv_batch<F>(&mut self, timeout: Duration, mut on_datagram: F) -> Result<usize, IoError>
    where
        F: FnMut(SocketAddr, &[u8]),
    {
        self.recv_segments(timeout, |from, payload, segment_bytes| {
            for datagram in payload.chunks(segment_bytes) {
                on_datagram(from, datagram);
            }
        })
    }

    /// Lets a write to the eventfd `fd` end the backend's waits at once (a coordinator's
    /// command for an idle shard). `fd` must stay open as long as this backend.
    pub fn watch_waker(&mut self, fd: i32) -> Result<(), IoError> {
        match self {
            Backend::Uring(b) => b.watch_waker(fd),
            Backend::Portable(b) => {
                b.watch_waker(fd);
                Ok(())
            }
        }
    }

    /// Like [`Backend::recv_batch`], but calls `on_buffer(from, payload, segment_bytes)` once
    /// per receive buffer, with every datagram of a GRO-coalesced buffer at once (each
    /// `segment_bytes` long, the last possibly shorter) and writable: the shape batched
    /// in-place verification and decryption wants. Returns the number of datagrams.
    pub fn recv_segments<F>(&mut self, timeout: Duration, on_buffer: F) -> Result<usize, IoError>
    where
        F: FnMut(SocketAddr, &mut [u8], usize),
    {
        match self {
            Backend::Uring(b) => b.recv_segments(timeout, on_buffer),
            Backend::Portable(b) => b.recv_segments(timeout, on_buffer),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn env_and_sysctl_pick_the_backend() {
        assert_eq!(parse_backend_env(Some("portable")), Some(BackendKind::Portable));
        assert_eq!(parse_backend_env(Some("uring")), Some(BackendKind::Uring));
        assert_eq!(parse_backend_env(Some("auto")), None);
        assert_eq!(parse_backend_env(None), None);
        assert_eq!(preselect(None, Some(0)).kind, BackendKind::Uring);
        assert_eq!(preselect(None, Some(2)).kind, BackendKind::Portable);
        assert_eq!(preselect(None, None).kind, BackendKind::Uring);
        let enosys = || IoError::Unsupported { op: "io_uring_setup", errno: libc::ENOSYS };
        let fallen = fall_back(None, enosys()).unwrap();
        assert_eq!(fallen.kind, BackendKind::Portable);
        assert!(fallen.reason.contains("io_uring_setup"), "{}", fallen.reason);
        assert!(fall_back(Some(BackendKind::Uring), enosys()).is_err());
        let forced = preselect(Some(BackendKind::Portable), Some(0));
        assert_eq!(forced.kind, BackendKind::Portable);
        assert!(forced.reason.contains("forced"));
    }
}
