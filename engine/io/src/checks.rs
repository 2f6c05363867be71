//! Start-up checks: what on this host keeps the data plane from full speed, and the exact
//! command that fixes it.
//!
//! Role: [`read_host_facts`] reads the real values (sysctls, rlimits, capabilities, a GSO/GRO
//! probe on a loopback socket, huge page counts); [`evaluate`] is a pure function from those
//! facts and what the shard wants to a list of [`Finding`]s, each with a remedy an operator can
//! paste. The split keeps every rule unit-tested without touching the host.
//!
//! Invariant: reading never fails; a value that cannot be read is `None` and yields no finding
//! (we only tell the operator what we know is wrong).

use std::fmt;

use crate::udp::{UdpOptions, UdpSocket};

/// Linux capability bit of CAP_NET_ADMIN (lets SO_*BUFFORCE exceed rmem_max/wmem_max).
const CAP_NET_ADMIN: u32 = 12;
/// Linux capability bit of CAP_IPC_LOCK (exempts from RLIMIT_MEMLOCK).
const CAP_IPC_LOCK: u32 = 14;

/// What was read from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `kernel.io_uring_disabled` (0 enabled, 1 privileged only, 2 disabled).
    pub io_uring_disabled: Option<u32>,
    /// Soft RLIMIT_MEMLOCK in bytes; `None` if unlimited or unreadable.
    pub memlock_bytes: Option<u64>,
    /// CAP_IPC_LOCK in the effective set (memlock limit does not apply).
    pub has_ipc_lock: bool,
    /// CAP_NET_ADMIN in the effective set (socket buffers may exceed the sysctl maxima).
    pub has_net_admin: bool,
    /// `net.core.rmem_max` in bytes.
    pub rmem_max_bytes: Option<u64>,
    /// `net.core.wmem_max` in bytes.
    pub wmem_max_bytes: Option<u64>,
    /// UDP_SEGMENT accepted on a probe socket.
    pub is_gso: Option<bool>,
    /// UDP_GRO accepted on a probe socket.
    pub is_gro: Option<bool>,
    /// `HugePages_Free` from /proc/meminfo.
    pub hugepages_free: Option<u64>,
    /// Selected transparent huge page mode (`always`, `madvise`, `never`).
    pub thp_mode: Option<String>,
}

/// What the data plane wants from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    /// Socket buffer size per direction, bytes.
    pub sockbuf_bytes: u64,
    /// Memory that will be registered/pinned with io_uring, bytes.
    pub locked_bytes: u64,
    /// Huge pages (2 MiB) the buffer pools would use.
    pub hugepages: u64,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but a faster setup exists.
    Info,
    /// Works, slower or less robust.
    Warning,
}

/// One problem and its remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// Stable short name of the check (`io_uring`, `memlock`, `rmem_max`, ...).
    pub check: &'static str,
    /// What is wrong, with the values read.
    pub problem: String,
    /// Exactly what to change.
    pub remedy: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {}: {}\n  fix: {}", self.severity, self.check, self.problem, self.remedy)
    }
}

/// Applies every rule to `facts`.
pub fn evaluate(facts: &HostFacts, wants: &Wants) -> Vec<Finding> {
    let mut out = Vec::new();
    check_io_uring(facts, &mut out);
    check_memlock(facts, wants, &mut out);
    check_sockbuf(facts.rmem_max_bytes, facts.has_net_admin, wants, "rmem_max", &mut out);
    check_sockbuf(facts.wmem_max_bytes, facts.has_net_admin, wants, "wmem_max", &mut out);
    check_offloads(facts, &mut out);
    check_hugepages(facts, wants, &mut out);
    out
}

fn check_io_uring(facts: &HostFacts, out: &mut Vec<Finding>) {
    let Some(v) = facts.io_uring_disabled.filter(|v| *v != 0) else { return };
    let what = if v == 1 { "restricted to privileged processes" } else { "disabled" };
    out.push(Finding {
        severity: Severity::Warning,
        check: "io_uring",
        problem: format!(
            "kernel.io_uring_disabled = {v}: io_uring is {what}; the portable sendmmsg/recvmmsg \
             backend runs instead (more syscalls per datagram)"
        ),
        remedy: "sysctl -w kernel.io_uring_disabled=0, and persist it in \
                 /etc/sysctl.d/90-haul.conf (see tuning/)"
            .into(),
    });
}

fn check_memlock(facts: &HostFacts, wants: &Wants, out: &mut Vec<Finding>) {
    let Some(limit) = facts.memlock_bytes else { return };
    if facts.has_ipc_lock || limit >= wants.locked_bytes {
        return;
    }
    out.push(Finding {
        severity: Severity::Warning,
        check: "memlock",
        problem: format!(
            "RLIMIT_MEMLOCK is {limit} bytes, below the {} bytes of buffers to register with \
             io_uring",
            wants.locked_bytes
        ),
        remedy: memlock_remedy(wants.locked_bytes),
    });
}

/// What to change so `bytes` of buffers can be registered (pinned) with io_uring: the
/// remedy of the `memlock` check, also printed when a shard's registration is refused.
pub fn memlock_remedy(bytes: u64) -> String {
    let kib = bytes.div_ceil(1024);
    format!(
        "ulimit -l {kib} (or unlimited) in the shell that starts haul; LimitMEMLOCK={bytes} \
         (or infinity) in the systemd unit; or grant CAP_IPC_LOCK"
    )
}

fn check_sockbuf(
    max: Option<u64>,
    has_net_admin: bool,
    wants: &Wants,
    name: &'static str,
    out: &mut Vec<Finding>,
) {
    let Some(max) = max else { return };
    if has_net_admin || max >= wants.sockbuf_bytes {
        return;
    }
    out.push(Finding {
        severity: Severity::Warning,
        check: name,
        problem: format!(
            "net.core.{name} is {max} bytes, below the wanted socket buffer of {} bytes: bursts \
             will be dropped by the kernel",
            wants.sockbuf_bytes
        ),
        remedy: format!(
            "sysctl -w net.core.{name}={}, and persist it in /etc/sysctl.d/90-haul.conf (see \
             tuning/); or run with CAP_NET_ADMIN",
            wants.sockbuf_bytes
        ),
    });
}

fn check_offloads(facts: &HostFacts, out: &mut Vec<Finding>) {
    for (name, value, kernel) in [("gso", facts.is_gso, "4.18"), ("gro", facts.is_gro, "5.0")] {
        if value == Some(false) {
            out.push(Finding {
                severity: Severity::Warning,
                check: name,
                problem: format!(
                    "UDP {} is not available: one syscall-level operation per datagram",
                    name.to_uppercase()
                ),
                remedy: format!(
                    "run a kernel >= {kernel} with UDP {} (CONFIG_INET); on a container, check \
                     that seccomp allows setsockopt(SOL_UDP)",
                    name.to_uppercase()
                ),
            });
        }
    }
}

fn check_hugepages(facts: &HostFacts, wants: &Wants, out: &mut Vec<Finding>) {
    let Some(free) = facts.hugepages_free else { return };
    if free >= wants.hugepages {
        return;
    }
    let thp = facts.thp_mode.as_deref().unwrap_or("unknown");
    let thp_note = if thp == "never" {
        " Transparent huge pages are off too: echo madvise > \
         /sys/kernel/mm/transparent_hugepage/enabled."
    } else {
        ""
    };
    out.push(Finding {
        severity: Severity::Info,
        check: "hugepages",
        problem: format!(
            "{free} huge pages free, {} wanted: buffers use transparent huge pages ({thp}) \
             instead of reserved ones",
            wants.hugepages
        ),
        remedy: format!(
            "sysctl -w vm.nr_hugepages={} (persist in /etc/sysctl.d/90-haul.conf, see \
             tuning/).{thp_note}",
            wants.hugepages
        ),
    });
}

/// Whether capability `bit` is set in the `CapEff:` line of `/proc/self/status` text.
pub fn parse_cap_eff(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| bit < 64 && caps & (1 << bit) != 0)
}

/// The bracketed choice in `/sys/kernel/mm/transparent_hugepage/enabled` text.
pub fn parse_thp_mode(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads the real values from this host.
pub fn read_host_facts() -> HostFacts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let probe = UdpSocket::bind(([127, 0, 0, 1], 0).into(), &UdpOptions::default()).ok();
    HostFacts {
        io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled").map(|v| v as u32),
        memlock_bytes: memlock_soft_limit(),
        has_ipc_lock: parse_cap_eff(&status, CAP_IPC_LOCK),
        has_net_admin: parse_cap_eff(&status, CAP_NET_ADMIN),
        rmem_max_bytes: read_u64("/proc/sys/net/core/rmem_max"),
        wmem_max_bytes: read_u64("/proc/sys/net/core/wmem_max"),
        is_gso: probe.as_ref().map(UdpSocket::is_gso),
        is_gro: probe.as_ref().map(UdpSocket::is_gro),
        hugepages_free: crate::buf::meminfo_value(&meminfo, "HugePages_Free:"),
        thp_mode: std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .ok()
            .and_then(|t| parse_thp_mode(&t)),
    }
}

pub(crate) fn memlock_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit on our stack that the call fills in.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const WANTS: Wants = Wants { sockbuf_bytes: 32 << 20, locked_bytes: 64 << 20, hugepages: 32 };

    fn healthy() -> HostFacts {
        HostFacts {
            io_uring_disabled: Some(0),
            memlock_bytes: None,
            has_ipc_lock: false,
            has_net_admin: false,
            rmem_max_bytes: Some(64 << 20),
            wmem_max_bytes: Some(64 << 20),
            is_gso: Some(true),
            is_gro: Some(true),
            hugepages_free: Some(64),
            thp_mode: Some("madvise".into()),
        }
    }

    fn checks(f: &HostFacts) -> Vec<&'static str> {
        evaluate(f, &WANTS).iter().map(|x| x.check).collect()
    }

    #[test]
    fn healthy_host_has_no_findings() {
        assert!(evaluate(&healthy(), &WANTS).is_empty());
        assert!(evaluate(&HostFacts::default(), &WANTS).is_empty(), "unknown is not wrong");
    }

    #[test]
    fn each_problem_names_its_remedy() {
        let f = HostFacts { io_uring_disabled: Some(2), ..healthy() };
        let found = evaluate(&f, &WANTS);
        assert_eq!(found.len(), 1);
        assert!(found[0].remedy.contains("sysctl -w kernel.io_uring_disabled=0"));

        let f = HostFacts { memlock_bytes: Some(8 << 20), ..healthy() };
        let found = evaluate(&f, &WANTS);
        assert_eq!(found[0].check, "memlock");
        assert!(found[0].remedy.contains("ulimit -l 65536"));
        assert!(found[0].remedy.contains("LimitMEMLOCK=67108864"));
        let f = HostFacts { memlock_bytes: Some(8 << 20), has_ipc_lock: true, ..healthy() };
        assert!(checks(&f).is_empty());

        let f = HostFacts { rmem_max_bytes: Some(212_992), ..healthy() };
        let found = evaluate(&f, &WANTS);
        assert_eq!(found[0].check, "rmem_max");
        assert!(found[0].remedy.contains("sysctl -w net.core.rmem_max=33554432"));
        let f = HostFacts { rmem_max_bytes: Some(212_992), has_net_admin: true, ..healthy() };
        assert!(checks(&f).is_empty());

        let f = HostFacts { wmem_max_bytes: Some(1), is_gso: Some(false), ..healthy() };
        assert_eq!(checks(&f), ["wmem_max", "gso"]);
        let f = HostFacts { is_gro: Some(false), ..healthy() };
        assert_eq!(checks(&f), ["gro"]);

        let f = HostFacts { hugepages_free: Some(0), thp_mode: Some("never".into()), ..healthy() };
        let found = evaluate(&f, &WANTS);
        assert_eq!(found[0].check, "hugepages");
        assert!(found[0].remedy.contains("sysctl -w vm.nr_hugepages=32"));
        assert!(found[0].remedy.contains("madvise"));
    }

    #[test]
    fn parsers_read_proc_text() {
        let status = "Name:\thaul\nCapEff:\t000001ffffffffff\n";
        assert!(parse_cap_eff(status, CAP_NET_ADMIN));
        assert!(parse_cap_eff(status, CAP_IPC_LOCK));
        assert!(!parse_cap_eff("CapEff:\t0000000000000000\n", CAP_IPC_LOCK));
        assert!(!parse_cap_eff("junk", CAP_IPC_LOCK));
        assert_eq!(parse_thp_mode("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(parse_thp_mode("no brackets"), None);
        assert_eq!(parse_thp_mode("]["), None);
    }

    #[test]
    fn real_host_facts_are_readable() {
        let facts = read_host_facts();
        for finding in evaluate(&facts, &WANTS) {
            println!("{finding}");
        }
        assert!(facts.rmem_max_bytes.is_some(), "/proc/sys/net/core/rmem_max must be readable");
    }
}
