//! Process hardening for key material (issue 5): a process that holds session keys is made
//! non-dumpable, so no core file and no unprivileged `ptrace`/`/proc/PID/mem` read can copy
//! them out.
//!
//! Invariant: `make_undumpable` runs before the first key exists (`haul serve` calls it first
//! thing); it only ever lowers what the process allows.

use crate::error::{IoError, map_errno};

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, and `/proc/PID/mem` and `ptrace` need
/// CAP_SYS_PTRACE.
pub fn make_undumpable() -> Result<(), IoError> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument (0 or 1) and no pointers; the unused
    // variadic arguments are passed as zero as the man page asks.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(map_errno("prctl(PR_SET_DUMPABLE)", errno));
    }
    Ok(())
}

/// Whether this process is dumpable (for tests and the start-up log).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
    unsafe {
        libc::prctl(
            libc::PR_GET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undumpable_sticks() {
        // prctl is per process: this makes the test process undumpable, which nothing else
        // in this crate's tests relies on.
        make_undumpable().unwrap();
        assert!(!is_dumpable());
    }
}
