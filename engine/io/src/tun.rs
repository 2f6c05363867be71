//! TUN devices: open `/dev/net/tun`, attach a layer-3 interface, read and write IP packets.
//!
//! Role: the packet source and sink of the WAN emulator (`crate::wan`). A [`Tun`] owns one
//! queue file descriptor of one TUN interface, opened with `IFF_TUN | IFF_NO_PI` (every read or
//! write is exactly one IP packet, with no 4-byte packet-information prefix) and, on request,
//! `IFF_MULTI_QUEUE`. The descriptor is nonblocking: [`Tun::read_packet`] returns `Ok(None)`
//! when nothing is queued instead of blocking, so one thread can wait on it with a deadline.
//!
//! Invariants:
//! - the interface is not persistent: it disappears when the last descriptor closes (drop);
//! - the descriptor stays valid and attached when the interface moves to another network
//!   namespace ([`Tun::move_to_netns`]), which is how one process in the root namespace serves
//!   interfaces that live in two other namespaces;
//! - bytes read are never interpreted here; a packet longer than the caller's buffer is
//!   truncated by the kernel and reported with its truncated length.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

/// Longest interface name the kernel takes (`IFNAMSIZ` minus the terminating NUL).
pub const IFNAME_MAX_LEN: usize = libc::IFNAMSIZ - 1;

/// `TUNSETIFF` = `_IOW('T', 202, int)`; libc does not export it for every target.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Why a TUN operation failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The caller asked for a name the kernel cannot take (empty, too long, or with a NUL).
    #[error("bad interface name {name:?}: 1 to {IFNAME_MAX_LEN} bytes, no NUL (caller's fault)")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// `/dev/net/tun` cannot be opened: no TUN support in this kernel, or not root / no
    /// CAP_NET_ADMIN (the host's configuration).
    #[error("cannot open /dev/net/tun (need root or CAP_NET_ADMIN and the tun module): {0}")]
    Open(#[source] io::Error),
    /// The kernel refused `TUNSETIFF` (name taken by a non-TUN device, missing capability).
    #[error("TUNSETIFF {name} failed (name in use, or missing CAP_NET_ADMIN): {source}")]
    SetIff {
        /// The requested interface name.
        name: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// `ip link set dev X netns NS` failed or could not run (iproute2 missing, no namespace).
    #[error("moving {name} to netns {netns} failed: {detail}")]
    MoveNetns {
        /// The interface name.
        name: String,
        /// The target namespace name.
        netns: String,
        /// What `ip` said, or why it could not run.
        detail: String,
    },
}

/// One queue of a layer-3 TUN interface, nonblocking.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) interface `name` with `IFF_TUN | IFF_NO_PI`, plus
    /// `IFF_MULTI_QUEUE` when `is_multi_queue`, and makes the descriptor nonblocking.
    pub fn open(name: &str, is_multi_queue: bool) -> Result<Tun, TunError> {
        if name.is_empty() || name.len() > IFNAME_MAX_LEN || name.contains('\0') {
            return Err(TunError::BadName { name: name.to_string() });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TunError::Open)?;
        // SAFETY: ifreq is a plain C struct (integers, arrays and a union of such) for which
        // all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if is_multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: the descriptor is open and owned by `file`; TUNSETIFF reads and writes one
        // `struct ifreq`, and `ifr` is a live, properly aligned ifreq for the whole call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut ifr as *mut libc::ifreq) };
        if rc < 0 {
            return Err(TunError::SetIff {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel wrote a NUL-terminated name of at most IFNAMSIZ bytes into
        // ifr_name (we zeroed the array and it never fills all IFNAMSIZ bytes).
        let actual = unsafe { CStr::from_ptr(ifr.ifr_name.as_ptr()) };
        let name = actual.to_string_lossy().into_owned();
        Ok(Tun { file, name })
    }

    /// The interface's name as the kernel reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one IP packet into `buf`. `Ok(None)`: nothing queued right now.
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one IP packet; the kernel delivers it as if it arrived on the interface.
    /// A TUN write never blocks on a full queue; errors mean the packet was refused (bad IP
    /// header, interface down) and is gone.
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        let written = (&self.file).write(packet)?;
        if written != packet.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short TUN write"));
        }
        Ok(())
    }

    /// Moves the interface into network namespace `netns` (a name under /run/netns) with
    /// `ip link set dev NAME netns NS`. The descriptor stays attached.
    pub fn move_to_netns(&self, netns: &str) -> Result<(), TunError> {
        let fail = |detail: String| TunError::MoveNetns {
            name: self.name.clone(),
            netns: netns.to_string(),
            detail,
        };
        let out = Command::new("ip")
            .args(["link", "set", "dev", &self.name, "netns", netns])
            .output()
            .map_err(|e| fail(format!("cannot run ip: {e}")))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        assert!(matches!(Tun::open("", false), Err(TunError::BadName { .. })));
        assert!(matches!(Tun::open("a-name-far-too-long", false), Err(TunError::BadName { .. })));
        assert!(matches!(Tun::open("a\0b", false), Err(TunError::BadName { .. })));
    }
}
