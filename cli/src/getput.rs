//! `haul get` and `haul put`: a transfer from a `haul://` URL through the gate of `haul serve`
//! (docs/URL.md, docs/GATE.md). Thin: the URL, the SSH client and the transfer live in
//! `haul_control`.
//!
//! Invariants: the URL may come from the command line, a file or stdin (`--url-file F`, `-`
//! for stdin), so the token can stay out of `ps`; the host key must match the URL's `hostkey=`
//! pin, and a URL without one is refused unless `--insecure-accept-any-host-key` is given; the
//! login is the shared transfer account with the shipped key, and the token goes inside the
//! channel.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use haul_control::authz::Direction;
use haul_control::client::transfer::ClientOptions;
use haul_control::client::{ClientRun, HostKeyCheck, Job, Target, run_blocking};
use haul_control::gate::TRANSFER_ACCOUNT;
use haul_control::session::{Ask, fresh_random};
use haul_control::url::TransferUrl;
use zeroize::Zeroizing;

use crate::args;

/// Longest URL file read (`--url-file`).
const MAX_URL_FILE: u64 = 64 * 1024;

/// Flags shared by `get`, `put` and `cp`.
#[derive(Debug, Args)]
pub struct ClientFlags {
    /// Do not check the server's host key at all. Anyone on the path can then read and change
    /// the transfer's set-up; only for tests on a trusted network.
    #[arg(long)]
    pub insecure_accept_any_host_key: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Shards of an upload (the gate caps them).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub shards: Option<u8>,
    /// What to do when a received file's name exists.
    #[arg(long, value_enum)]
    pub overwrite: Option<args::OverwriteArg>,
    /// How much of an interrupted transfer to keep.
    #[arg(long, value_enum)]
    pub resume: Option<args::ResumeArg>,
    /// put: send each file's owner and group; get: apply the owners the server sends (as root
    /// or with CAP_CHOWN). The server applies or sends them only when its operator allows it
    /// (`haul serve --allow-preserve-owner`).
    #[arg(long)]
    pub preserve_owner: bool,
    /// put: send each file's extended attributes (POSIX ACLs included); get: apply those the
    /// server sends. The server needs `--allow-preserve-xattrs`.
    #[arg(long)]
    pub preserve_xattrs: bool,
    /// UDP payload bytes per datagram: `auto` (the default) probes the path MTU up to a
    /// jumbo frame; N (512..=9000): put sends N-byte datagrams and does not probe, get takes
    /// no datagram or probe above N.
    #[arg(long, value_parser = args::parse_datagram_size)]
    pub datagram_size: Option<args::DatagramSize>,
}

impl ClientFlags {
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            shards: self.shards.unwrap_or_else(args::default_shards),
            overwrite: self.overwrite.map(|o| o.to_pref()).unwrap_or_default(),
            resume: self.resume.map(|r| r.to_pref()).unwrap_or_default(),
            backend: None,
            bind_ip: None,
            preserve_owner: self.preserve_owner,
            preserve_xattrs: self.preserve_xattrs,
            datagram_size: self.datagram_size.and_then(args::DatagramSize::fixed),
        }
    }

    /// What a put sends of its sources' owners and extended attributes.
    pub fn attrs_of(&self, sources: &[PathBuf]) -> Result<Vec<haul_proto::setup::FileAttrs>> {
        crate::walk::attrs_of(sources, self.preserve_owner, self.preserve_xattrs)
    }
}

/// Read the URL from `--url-file` (`-`: stdin) or the command line.
pub fn url_text(url: Option<String>, url_file: Option<&Path>) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    match (url, url_file) {
        (Some(u), None) => text.push_str(&u),
        (None, Some(p)) if p == Path::new("-") => {
            std::io::Read::read_to_string(
                &mut std::io::Read::take(std::io::stdin(), MAX_URL_FILE),
                &mut text,
            )
            .context("reading the URL from stdin")?;
        }
        (None, Some(p)) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_URL_FILE), &mut text)
                .with_context(|| format!("reading {}", p.display()))?;
        }
        (Some(_), Some(_)) => bail!("give the URL or --url-file, not both"),
        (None, None) => {
            bail!("no URL: give it as an argument or with --url-file FILE (- for stdin)")
        }
    }
    Ok(text)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

fn host_check(url: &TransferUrl, flags: &ClientFlags) -> Result<HostKeyCheck> {
    match (&url.hostkey, flags.insecure_accept_any_host_key) {
        (_, true) => {
            eprintln!(
                "haul: warning: not checking the server's host key (--insecure-accept-any-host-key)"
            );
            Ok(HostKeyCheck::InsecureAcceptAny)
        }
        (Some(pin), false) => Ok(HostKeyCheck::Pinned(pin.clone())),
        (None, false) => {
            bail!("the URL has no hostkey= pin; refusing to connect to an unverified server")
        }
    }
}

/// Print the run's summary: the data plane's report plus the SSH channel and UDP counts.
pub fn print_run(run: &ClientRun, role: &str, json: bool) {
    let io = &run.report.io;
    if json {
        let mut v = crate::report::to_json(&run.report, role);
        v["ssh_channel"] = serde_json::json!({
            "bytes_sent": run.channel_bytes_sent,
            "bytes_received": run.channel_bytes_received,
        });
        v["setup_ms"] = serde_json::json!(run.setup.as_secs_f64() * 1e3);
        v["udp"] = serde_json::json!({
            "datagrams_sent": io.datagrams_sent,
            "datagrams_received": io.datagrams_received,
        });
        println!("{v}");
    } else {
        crate::report::print(&run.report, role, false);
        println!(
            "set-up {:.1} ms; ssh channel: {} bytes sent, {} received; udp: {} datagrams sent, {} received",
            run.setup.as_secs_f64() * 1e3,
            run.channel_bytes_sent,
            run.channel_bytes_received,
            io.datagrams_sent,
            io.datagrams_received
        );
    }
}

fn ask_of(url: TransferUrl, direction: Direction) -> Result<(Ask, String, u16)> {
    let ask = Ask {
        direction,
        client_random: fresh_random().context("reading the OS random generator")?,
        path: url.path,
        token: url.token,
        suite: url.suite,
        policy: url.policy,
        rate_bps: url.rate_bps,
        min_rate_bps: url.min_rate_bps,
    };
    Ok((ask, url.host, url.port))
}

fn run(text: &str, direction: Direction, job: Job, flags: &ClientFlags) -> Result<ClientRun> {
    let url = TransferUrl::parse(text)?;
    let check = host_check(&url, flags)?;
    let (ask, host, port) = ask_of(url, direction)?;
    let target = Target {
        addr: resolve(&host, port)?,
        check,
        user: TRANSFER_ACCOUNT.into(),
        key: haul_control::hostkey::shipped_client_key()?,
    };
    Ok(run_blocking(target, &ask, job, &flags.options())?)
}

/// `haul get URL [DEST]`.
pub fn get(
    url: Option<String>,
    url_file: Option<&Path>,
    dest: Option<PathBuf>,
    flags: &ClientFlags,
) -> Result<()> {
    let text = url_text(url, url_file)?;
    let dest = dest.unwrap_or_else(|| PathBuf::from("."));
    if !dest.is_dir() {
        bail!("destination {} is not a directory", dest.display());
    }
    let r = run(&text, Direction::Download, Job::Get { dest }, flags).context("haul get")?;
    print_run(&r, "receiver", flags.json);
    Ok(())
}

/// `haul put URL FILES...`.
pub fn put(
    url: Option<String>,
    url_file: Option<&Path>,
    paths: &[PathBuf],
    flags: &ClientFlags,
) -> Result<()> {
    let text = url_text(url, url_file)?;
    let (files, sources) = crate::walk::collect(paths)?;
    let attrs = flags.attrs_of(&sources)?;
    let job = Job::Put { files, sources, attrs };
    let r = run(&text, Direction::Upload, job, flags).context("haul put")?;
    print_run(&r, "sender", flags.json);
    Ok(())
}

/// `haul get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The haul:// URL (or give --url-file, so the token stays out of `ps`).
    #[arg(required_unless_present = "url_file")]
    pub url: Option<String>,
    /// Directory to receive into (default: the current directory).
    pub dest: Option<PathBuf>,
    /// Read the URL from this file (`-`: standard input).
    #[arg(long)]
    pub url_file: Option<PathBuf>,
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `haul put` arguments: `haul put URL FILES...` or `haul put --url-file F FILES...`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The URL, then the files; with --url-file, only the files.
    #[arg(required = true, num_args = 1..)]
    pub args: Vec<String>,
    /// Read the URL from this file (`-`: standard input).
    #[arg(long)]
    pub url_file: Option<PathBuf>,
    #[command(flatten)]
    pub flags: ClientFlags,
}

impl GetArgs {
    pub fn run(self) -> Result<()> {
        // With --url-file, a lone positional is the destination.
        let (url, dest) = match (&self.url_file, self.url, self.dest) {
            (Some(_), Some(d), None) => (None, Some(PathBuf::from(d))),
            (Some(_), Some(_), Some(_)) => bail!("give the URL or --url-file, not both"),
            (_, u, d) => (u, d),
        };
        get(url, self.url_file.as_deref(), dest, &self.flags)
    }
}

impl PutArgs {
    pub fn run(self) -> Result<()> {
        let mut args = self.args.into_iter();
        let url = if self.url_file.is_some() { None } else { args.next() };
        let paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
        if paths.is_empty() {
            bail!("no files to put");
        }
        put(url, self.url_file.as_deref(), &paths, &self.flags)
    }
}
