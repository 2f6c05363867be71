//! Process hardening for key material (issue 5): a process that holds session keys is made
//! non-dumpable, so no core file and no unprivileged `ptrace`/`/proc/PID/mem` read can copy
//! them out, and its memory is locked in RAM, so no key is ever written to swap.
//!
//! Invariants: both run before the first key exists (`haul serve` calls them first thing);
//! they only ever lower what the process allows. Memory is locked with `MCL_ONFAULT`: a page
//! is locked when first touched, so large buffers that are mapped but unused cost nothing.

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

/// Whether locking all memory can work here: root (CAP_IPC_LOCK) or an unlimited
/// `RLIMIT_MEMLOCK`. Under a finite limit, `MCL_FUTURE` would make large mappings fail.
pub fn can_lock_all_memory() -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root || (rc == 0 && r.rlim_cur == libc::RLIM_INFINITY)
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: every page of the process, now and
/// later, stays in RAM once touched.
pub fn lock_all_memory() -> Result<(), IoError> {
    // SAFETY: mlockall takes a flag word and no pointers.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(map_errno("mlockall", errno));
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
