//! Typed errors of the network and buffer layer.
//!
//! Every errno that reaches us (from a syscall or from an io_uring completion) is mapped by
//! [`map_errno`] to one [`IoError`] variant, and every variant says whose fault it is: ours (a
//! bug in this crate or its caller), the host's (kernel features, limits, configuration the
//! operator can change), the network's/peer's (unreachable, refused), or a transient condition
//! the caller retries. Nothing here panics on any errno value.

use std::io;

/// What went wrong in the data plane's network layer, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Our bug: a caller passed an argument the layer rejects (oversized datagram, empty
    /// batch where one is required, a slot that is not ours).
    #[error("invalid argument (our bug): {0}")]
    Invalid(&'static str),
    /// Our bug: the kernel rejected an argument we built (EINVAL, EFAULT, EBADF).
    #[error("kernel rejected our request in {op} (our bug): errno {errno}")]
    OurBug { op: &'static str, errno: i32 },
    /// The host: the kernel or its configuration lacks a feature we need.
    #[error("{op} is not supported by this kernel/configuration (host): errno {errno}")]
    Unsupported { op: &'static str, errno: i32 },
    /// The host: the operation is forbidden (seccomp, sysctl, firewall, capabilities).
    #[error("{op} is not permitted on this host (host configuration): errno {errno}")]
    NotPermitted { op: &'static str, errno: i32 },
    /// The host: out of kernel memory, socket buffers or locked-memory allowance.
    #[error("{op}: host out of memory/buffers/memlock (host limits): errno {errno}")]
    HostResources { op: &'static str, errno: i32 },
    /// The configuration: the datagram does not fit the path (EMSGSIZE).
    #[error("{op}: datagram too large for the path or socket (configuration): errno {errno}")]
    TooLarge { op: &'static str, errno: i32 },
    /// The network or the peer: unreachable, refused, or the route is down.
    #[error("{op}: network or peer unreachable (network/peer): errno {errno}")]
    Unreachable { op: &'static str, errno: i32 },
    /// Transient: try again later (EAGAIN, EINTR, ECANCELED during shutdown).
    #[error("{op}: transient condition, retry: errno {errno}")]
    Transient { op: &'static str, errno: i32 },
    /// Building a buffer pool failed (see [`crate::buf::BufError`] for whose fault).
    #[error("buffer pool: {0}")]
    Buffers(#[from] crate::buf::BufError),
    /// Anything else the kernel reported; the errno is kept for the operator.
    #[error("{op}: unexpected errno {errno}")]
    Other { op: &'static str, errno: i32 },
}

impl IoError {
    /// Whether the caller should simply retry the operation later.
    pub fn is_transient(&self) -> bool {
        matches!(self, IoError::Transient { .. })
    }

    /// The errno this error came from, if it came from one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IoError::Invalid(_) | IoError::Buffers(_) => None,
            IoError::OurBug { errno, .. }
            | IoError::Unsupported { errno, .. }
            | IoError::NotPermitted { errno, .. }
            | IoError::HostResources { errno, .. }
            | IoError::TooLarge { errno, .. }
            | IoError::Unreachable { errno, .. }
            | IoError::Transient { errno, .. }
            | IoError::Other { errno, .. } => Some(*errno),
        }
    }
}

/// Maps a positive errno from operation `op` to a typed error saying whose fault it is.
pub fn map_errno(op: &'static str, errno: i32) -> IoError {
    match errno {
        libc::EINVAL | libc::EFAULT | libc::EBADF | libc::ENOTSOCK | libc::EDESTADDRREQ => {
            IoError::OurBug { op, errno }
        }
        libc::ENOSYS | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            IoError::Unsupported { op, errno }
        }
        libc::EPERM | libc::EACCES => IoError::NotPermitted { op, errno },
        libc::ENOMEM | libc::ENOBUFS | libc::EMFILE | libc::ENFILE => {
            IoError::HostResources { op, errno }
        }
        libc::EMSGSIZE => IoError::TooLarge { op, errno },
        libc::ENETUNREACH
        | libc::EHOSTUNREACH
        | libc::ECONNREFUSED
        | libc::ENETDOWN
        | libc::EADDRNOTAVAIL
        | libc::EHOSTDOWN => IoError::Unreachable { op, errno },
        libc::EAGAIN | libc::EINTR | libc::ECANCELED | libc::ETIME => {
            IoError::Transient { op, errno }
        }
        _ => IoError::Other { op, errno },
    }
}

/// Maps a `std::io::Error` from operation `op` (a syscall wrapper) to a typed error.
pub fn map_io(op: &'static str, err: &io::Error) -> IoError {
    match err.raw_os_error() {
        Some(errno) => map_errno(op, errno),
        None => IoError::Other { op, errno: 0 },
    }
}

/// The errno of the last failed libc call on this thread, as a typed error.
pub(crate) fn last_os_error(op: &'static str) -> IoError {
    map_io(op, &io::Error::last_os_error())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_whose_fault() {
        assert!(matches!(map_errno("x", libc::EINVAL), IoError::OurBug { .. }));
        assert!(matches!(map_errno("x", libc::ENOSYS), IoError::Unsupported { .. }));
        assert!(matches!(map_errno("x", libc::EPERM), IoError::NotPermitted { .. }));
        assert!(matches!(map_errno("x", libc::ENOBUFS), IoError::HostResources { .. }));
        assert!(matches!(map_errno("x", libc::EMSGSIZE), IoError::TooLarge { .. }));
        assert!(matches!(map_errno("x", libc::ECONNREFUSED), IoError::Unreachable { .. }));
        assert!(map_errno("x", libc::EAGAIN).is_transient());
        assert!(matches!(map_errno("x", 9999), IoError::Other { errno: 9999, .. }));
        assert_eq!(map_errno("x", libc::EIO).errno(), Some(libc::EIO));
    }
}
