//! Named network namespaces for the emulator: create, configure, enter, delete, clean up.
//!
//! Role: everything the emulator does to the host's namespace list goes through here.
//! Namespaces are named `haulwan-<name>-a` and `haulwan-<name>-b`; the owning process writes
//! its pid to `/run/haulwan/<name>.pid`. [`NetnsPair`] is the guard: dropping it deletes both
//! namespaces and the pid file, so they go away on normal exit and on a panic that unwinds;
//! signals are the binary's job (it turns SIGINT/SIGTERM into a normal exit). After a SIGKILL,
//! [`cleanup_stale`] removes pairs whose owner is dead.
//!
//! Invariants: we only ever add or delete namespaces whose names start with [`NETNS_PREFIX`];
//! configuration uses iproute2 (`ip`), and entering a namespace ([`in_netns`]) happens on a
//! scratch thread, so the caller's own thread never changes namespace.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

use super::WanError;

/// Every namespace the emulator creates starts with this.
pub const NETNS_PREFIX: &str = "haulwan-";
/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Where the emulator records which process owns which pair.
pub const PID_DIR: &str = "/run/haulwan";
/// Longest instance name we accept (namespace names are file names; keep them short).
pub const NAME_MAX_LEN: usize = 32;

/// Checks an instance name: 1 to [`NAME_MAX_LEN`] of `[A-Za-z0-9_]`.
pub fn check_name(name: &str) -> Result<(), WanError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(WanError::BadName(name.to_string())) }
}

/// The two namespace names of instance `name`.
pub fn netns_names(name: &str) -> (String, String) {
    (format!("{NETNS_PREFIX}{name}-a"), format!("{NETNS_PREFIX}{name}-b"))
}

/// Runs `ip ARGS...` and returns its standard output; a failure carries what `ip` printed.
pub fn run_ip(args: &[&str]) -> Result<String, WanError> {
    let out = Command::new("ip").args(args).output().map_err(|e| WanError::Ip {
        args: args.join(" "),
        detail: format!("cannot run ip: {e}"),
    })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(WanError::Ip { args: args.join(" "), detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `tx_dropped` counter of interface `dev` in namespace `netns`, from
/// `ip -s -o link show` (one line; statistics blocks separated by backslashes).
pub fn tx_dropped(netns: &str, dev: &str) -> Result<u64, WanError> {
    let args = ["-n", netns, "-s", "-o", "link", "show", "dev", dev];
    parse_tx_dropped(&run_ip(&args)?).ok_or_else(|| WanError::Ip {
        args: args.join(" "),
        detail: "no TX dropped counter in the output".into(),
    })
}

/// Finds "TX: bytes packets errors dropped ..." and returns the value under "dropped".
fn parse_tx_dropped(text: &str) -> Option<u64> {
    let mut parts = text.split('\\').map(str::trim);
    let header = parts.find(|p| p.starts_with("TX:"))?;
    let column = header.split_whitespace().skip(1).position(|w| w == "dropped")?;
    let values = parts.next()?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// The guard over one instance's two namespaces and its pid file.
#[derive(Debug)]
pub struct NetnsPair {
    /// Namespace of side A.
    pub a: String,
    /// Namespace of side B.
    pub b: String,
    pid_file: PathBuf,
}

impl NetnsPair {
    /// Creates both namespaces (and brings `lo` up in each) and records our pid. Fails if
    /// either name exists: another instance may own it (see [`cleanup_stale`]).
    pub fn create(name: &str) -> Result<NetnsPair, WanError> {
        check_name(name)?;
        let (a, b) = netns_names(name);
        for ns in [&a, &b] {
            if PathBuf::from(NETNS_DIR).join(ns).exists() {
                return Err(WanError::NetnsExists(ns.clone()));
            }
        }
        fs::create_dir_all(PID_DIR).map_err(|e| WanError::PidFile(PID_DIR.into(), e))?;
        let pid_file = PathBuf::from(PID_DIR).join(format!("{name}.pid"));
        fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| WanError::PidFile(pid_file.clone(), e))?;
        // From here on, dropping `pair` undoes whatever part was done.
        let pair = NetnsPair { a, b, pid_file };
        for ns in [&pair.a, &pair.b] {
            run_ip(&["netns", "add", ns])?;
            run_ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if PathBuf::from(NETNS_DIR).join(ns).exists()
                && let Err(e) = run_ip(&["netns", "del", ns])
            {
                eprintln!("haul-wanemu: warning: {e}");
            }
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// Runs `f` on a scratch thread that has entered namespace `netns`; returns its result. A
/// socket created inside `f` stays in that namespace for its whole life, whichever thread
/// uses it afterwards.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, WanError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = PathBuf::from(NETNS_DIR).join(netns);
    let file = File::open(&path).map_err(|e| WanError::Enter(netns.to_string(), e))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            // SAFETY: `file` is an open namespace file (kept alive by the enclosing scope);
            // setns only changes the calling thread's namespace, and this thread is ours and
            // ends when `f` returns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(WanError::Enter(netns.to_string(), std::io::Error::last_os_error()));
            }
            Ok(f())
        });
        handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Names of existing namespaces that start with [`NETNS_PREFIX`].
pub fn list_ours() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .collect();
    names.sort();
    names
}

/// True if process `pid` exists (signal 0 probes without sending anything).
fn is_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The live owner of instance `name`, if its pid file names a running process.
fn owner_of(name: &str) -> Option<libc::pid_t> {
    let text = fs::read_to_string(PathBuf::from(PID_DIR).join(format!("{name}.pid"))).ok()?;
    let pid: libc::pid_t = text.trim().parse().ok()?;
    is_alive(pid).then_some(pid)
}

/// Deletes `haulwan-*` namespaces whose owner is dead or unknown (all of them when
/// `is_all`), with their pid files. Returns the names deleted.
pub fn cleanup_stale(is_all: bool) -> Result<Vec<String>, WanError> {
    let mut deleted = Vec::new();
    for ns in list_ours() {
        let name = ns
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.strip_suffix("-a").or_else(|| rest.strip_suffix("-b")))
            .unwrap_or("");
        if !is_all && owner_of(name).is_some() {
            continue;
        }
        run_ip(&["netns", "del", &ns])?;
        let _ = fs::remove_file(PathBuf::from(PID_DIR).join(format!("{name}.pid")));
        deleted.push(ns);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_dropped_is_parsed_from_one_line_output() {
        let line = "5: wan0: <POINTOPOINT,UP> mtu 1500 qdisc pfifo_fast state UNKNOWN \\    \
                    link/none \\    RX:  bytes packets errors dropped  missed   mcast \\    \
                    0 0 0 0 0 0 \\    TX:  bytes packets errors dropped carrier collsns \\    \
                    301990500  201327      0    6969       0       0\n";
        assert_eq!(parse_tx_dropped(line), Some(6969));
        assert_eq!(parse_tx_dropped("garbage"), None);
    }

    #[test]
    fn names_are_checked_and_derived() {
        assert!(check_name("bench1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-b").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name(&"x".repeat(NAME_MAX_LEN + 1)).is_err());
        assert_eq!(netns_names("t1"), ("haulwan-t1-a".into(), "haulwan-t1-b".into()));
    }
}
