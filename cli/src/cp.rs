//! `haul cp`: transfers for users with their own SSH key, for scripts, without a token:
//! `haul cp [-P PORT] -i KEY [user@]host:path DEST` downloads, `haul cp -i KEY FILES...
//! [user@]host:dir` uploads. The gate confines the path to the user's storage and applies the
//! user's restrictions (docs/GATE.md).
//!
//! Invariants: the host key is checked by trust on first use against a known-hosts file (its
//! fingerprint printed when first seen; a changed key is refused), unless the flag that says
//! `insecure` is given; the user's private key is read from `-i KEY` and never printed.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use haul_control::authz::{Direction, SecretToken};
use haul_control::client::{HostKeyCheck, Job, Target, run_blocking};
use haul_control::session::{Ask, fresh_random};
use haul_control::url::DEFAULT_SSH_PORT;
use zeroize::Zeroizing;

use crate::getput::{ClientFlags, print_run};

/// `haul cp` arguments.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Sources then the destination; exactly one side is remote: `[user@]host:path`.
    #[arg(required = true, num_args = 2..)]
    pub args: Vec<String>,
    /// The user's private key (unencrypted OpenSSH format).
    #[arg(short = 'i', long = "identity")]
    pub identity: PathBuf,
    /// The gate's SSH port.
    #[arg(short = 'P', long, default_value_t = DEFAULT_SSH_PORT)]
    pub port: u16,
    /// Known-hosts file for trust on first use (default: ~/.config/haul/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// A `[user@]host:path` argument.
#[derive(Debug, PartialEq, Eq)]
struct Remote {
    user: String,
    host: String,
    path: String,
}

/// `Some` when `arg` names a remote path (a `:` before any `/`; IPv6 hosts in brackets).
fn remote_of(arg: &str) -> Option<Remote> {
    let (user, rest) = match arg.split_once('@') {
        Some((u, r)) if !u.contains(['/', ':']) => (u.to_string(), r),
        _ => (std::env::var("USER").unwrap_or_default(), arg),
    };
    let (host, path) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':')?)
    } else {
        let (h, p) = rest.split_once(':')?;
        (h, p)
    };
    if host.is_empty() || host.contains('/') {
        return None;
    }
    let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
    Some(Remote { user, host: host.to_string(), path })
}

fn known_hosts_default() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: give --known-hosts FILE")?;
    Ok(PathBuf::from(home).join(".config/haul/known_hosts"))
}

impl CpArgs {
    pub fn run(self) -> Result<()> {
        let (last, sources) = self.args.split_last().context("nothing to copy")?;
        let (remote, direction, job) = match (sources, remote_of(&sources[0]), remote_of(last)) {
            ([_], Some(r), None) => {
                let dest = PathBuf::from(last);
                if !dest.is_dir() {
                    bail!("destination {} is not a directory", dest.display());
                }
                (r, Direction::Download, Job::Get { dest })
            }
            (_, None, Some(r)) => {
                let paths: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
                let (files, sources) = crate::walk::collect(&paths)?;
                let attrs = self.flags.attrs_of(&sources)?;
                (r, Direction::Upload, Job::Put { files, sources, attrs })
            }
            _ => bail!(
                "give one remote source and a local directory, or local files and one remote directory ([user@]host:path)"
            ),
        };
        if remote.user.is_empty() {
            bail!("no user: write user@{}:{}", remote.host, remote.path);
        }
        let check = if self.flags.insecure_accept_any_host_key {
            eprintln!(
                "haul: warning: not checking the server's host key (--insecure-accept-any-host-key)"
            );
            HostKeyCheck::InsecureAcceptAny
        } else {
            let path = match self.known_hosts {
                Some(p) => p,
                None => known_hosts_default()?,
            };
            HostKeyCheck::KnownHosts { path, host: remote.host.clone(), port: self.port }
        };
        let addr = (remote.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", remote.host))?
            .next()
            .with_context(|| format!("{} resolves to no address", remote.host))?;
        let key = haul_control::hostkey::read_private_key(&self.identity)?;
        let ask = Ask {
            direction,
            client_random: fresh_random().context("reading the OS random generator")?,
            path: remote.path,
            token: SecretToken(Zeroizing::new(String::new())),
            suite: None,
            policy: None,
            rate_bps: None,
            min_rate_bps: None,
        };
        let target = Target { addr, check, user: remote.user, key };
        let run = run_blocking(target, &ask, job, &self.flags.options()).context("haul cp")?;
        let role = if direction == Direction::Download { "receiver" } else { "sender" };
        print_run(&run, role, self.flags.json);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn remote_arguments() {
        let r = remote_of("alice@h.example:/dir/f").unwrap();
        assert_eq!(
            (r.user.as_str(), r.host.as_str(), r.path.as_str()),
            ("alice", "h.example", "/dir/f")
        );
        assert_eq!(remote_of("alice@[::1]:").unwrap().host, "::1");
        assert_eq!(remote_of("alice@h:").unwrap().path, "/");
        assert!(remote_of("./a:b").is_none());
        assert!(remote_of("/tmp/x").is_none());
        assert!(remote_of(":x").is_none());
    }
}
