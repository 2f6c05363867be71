//! The `haul` binary. Thin: all logic lives in the libraries.
//!
//! It checks that this CPU can run the binary, then runs one command: the appliance (`serve`,
//! docs/GATE.md), the URL client (`get`, `put`) and `cp` (docs/URL.md), administration (`user`,
//! `token`, `secret`, `settings`), direct-mode transfers (`keygen`, `send`, `recv`), the
//! loopback quick look (`bench loopback`), `version` and the status text. The web console
//! arrives with issue 6. No command here pretends to do what it cannot. docs/CLI.md is the
//! reference.
//!
//! Exit codes: 0 success, 1 error (network, peer, disk, refused or aborted transfer), 2 a usage
//! error (bad flag value, as clap reports them) or a CPU that cannot run this build.

#![forbid(unsafe_code)]

mod admin;
mod args;
mod bench;
mod cp;
mod frames;
mod getput;
mod keyfile;
mod report;
mod serve;
mod transfer;
mod walk;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Haul: fast, secure transfer of large files over long, lossy networks.
#[derive(Debug, Parser)]
#[command(name = "haul", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version and the build's CPU target features.
    Version,
    /// Print what works today and what arrives with which issue (the default).
    Status,
    /// Write a fresh 32-byte key file (64 hex digits, mode 0600) for direct transfers.
    Keygen {
        file: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Receive files from `haul send` (direct mode, pre-shared key).
    Recv {
        /// TCP address to listen on for the set-up channel (port 0: any free port; the bound
        /// address is the first line on stdout).
        #[arg(long)]
        listen: String,
        #[arg(long)]
        key_file: PathBuf,
        /// Directory the files are created beneath.
        dest: PathBuf,
        /// Serve one transfer after another instead of exiting after the first.
        #[arg(long)]
        keep_listening: bool,
        #[command(flatten)]
        flags: args::TransferFlags,
    },
    /// Send files and directory trees to `haul recv` (direct mode, pre-shared key).
    Send {
        /// The receiver's set-up address, HOST:PORT.
        #[arg(long)]
        to: String,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        flags: args::TransferFlags,
    },
    /// Quick looks at this machine (not the headline benchmarks, which live in benches/).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Administer users and their restrictions in a data directory.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Mint transfer tokens (prints a haul:// URL).
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Rotate or inspect the server secret.
    #[command(subcommand)]
    Secret(admin::SecretCommand),
    /// Show or change the admin settings (encrypt transfers, caps, token lifetime, URL host).
    #[command(subcommand)]
    Settings(admin::SettingsCommand),
    /// Run the appliance: the SSH gate and the data plane (docs/GATE.md).
    Serve(serve::ServeArgs),
    /// Download what a haul:// URL grants (docs/URL.md).
    Get(getput::GetArgs),
    /// Upload files with a haul:// URL (docs/URL.md).
    Put(getput::PutArgs),
    /// Copy to or from your storage with your own SSH key: `cp -i KEY user@host:path DEST`.
    Cp(cp::CpArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Both ends in one process over 127.0.0.1, file to file on /dev/shm.
    Loopback {
        /// File size, e.g. 1G, 512M (powers of 1024).
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        flags: args::TransferFlags,
    },
}

/// A size in bytes with an optional K/M/G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.trim().to_ascii_uppercase().chars().last() {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 =
        num.trim().parse().map_err(|_| format!("{s:?} is not a size such as 512M or 1G"))?;
    match n.checked_mul(1 << shift) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("size {s:?} is zero or too large")),
    }
}

/// What exists today, and what each later issue brings. Kept honest by hand: update it with
/// the issue that changes it.
const STATUS: &str = "\
Haul is being built. What exists today:
  - issue 3: haul keygen, haul recv, haul send (direct transfers between two hosts with a
    pre-shared key file), haul bench loopback (a quick look); see docs/CLI.md;
  - haul-proto: the sans-IO protocol core (wire format, per-datagram crypto, anti-replay,
    sessions, rate control, the set-up channel), tested by `scripts/test`;
  - haul-sim: the deterministic seeded simulator (`cargo run --profile sim -p haul-sim
    --bin haul-sim -- --help`: run, sweep, demo, grid, fairness, policies, nodecap);
  - haul-wanemu: the userspace WAN emulator (docs/WANEMU.md);
  - benchmarks: crypto and codec (`cargo bench -p haul-benches`), loopback and WAN harnesses
    (benches/), figures in benches/RESULTS.md.

  - issue 5: haul serve (the appliance: the SSH gate and the data plane; docs/GATE.md),
    haul get and haul put with haul:// URLs, haul cp with your own SSH key (docs/URL.md),
    haul user, haul token mint, haul secret, haul settings (administer a data directory;
    docs/TOKENS.md, docs/STORE.md).

Not yet here (no command below works today):
  - issue 6: the web console.

The whole test suite: scripts/test. Start what exists: scripts/start.";

fn main() -> ExitCode {
    if let Err(e) = haul_io::cpu::check_cpu_features() {
        eprintln!("haul: {e}");
        return ExitCode::from(2);
    }
    for note in haul_io::cpu::cpu_feature_notes() {
        eprintln!("haul: note: {note}");
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haul: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Status) {
        Command::Version => print_version(),
        Command::Status => println!("{STATUS}"),
        Command::Keygen { file, force } => {
            keyfile::keygen(&file, force)?;
            eprintln!("haul: wrote a new key to {} (mode 0600)", file.display());
        }
        Command::Recv { listen, key_file, dest, keep_listening, flags } => {
            recv(&listen, &key_file, dest, keep_listening, flags)?
        }
        Command::Send { to, key_file, paths, flags } => send(&to, &key_file, &paths, flags)?,
        Command::Bench(BenchCommand::Loopback { size, flags }) => bench::loopback(size, flags)?,
        Command::User(c) => admin::user(c)?,
        Command::Token(c) => admin::token(c)?,
        Command::Secret(c) => admin::secret(c)?,
        Command::Settings(c) => admin::settings(c)?,
        Command::Serve(a) => serve::serve(a)?,
        Command::Get(a) => a.run()?,
        Command::Put(a) => a.run()?,
        Command::Cp(a) => a.run()?,
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let mut addrs = addr.to_socket_addrs().with_context(|| format!("address {addr:?}"))?;
    addrs.next().with_context(|| format!("address {addr:?} resolves to nothing"))
}

/// Fail before listening if DEST cannot take files: its parent is missing, it is not a
/// directory, or it is not writable (a probe file is created and removed).
fn check_dest(dest: &std::path::Path) -> Result<()> {
    if !dest.exists() {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = parent.filter(|p| !p.is_dir()) {
            bail!("destination {}: its parent {} does not exist", dest.display(), p.display());
        }
        std::fs::create_dir(dest)
            .with_context(|| format!("creating destination {}", dest.display()))?;
    }
    if !dest.is_dir() {
        bail!("destination {} is not a directory", dest.display());
    }
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).context("reading the OS random generator")?;
    let probe = dest.join(format!(".haul-probe-{}", hex::encode(r)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("destination {} is not writable", dest.display()))?;
    std::fs::remove_file(&probe).with_context(|| format!("removing {}", probe.display()))?;
    Ok(())
}

fn recv(
    listen: &str,
    key_file: &std::path::Path,
    dest: PathBuf,
    keep_listening: bool,
    flags: args::TransferFlags,
) -> Result<()> {
    let psk = keyfile::read_key(key_file)?;
    check_dest(&dest)?;
    let addr = resolve(listen)?;
    let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr().context("listener address")?;
    println!("listening on {bound}");
    std::io::Write::flush(&mut std::io::stdout()).context("writing stdout")?;
    let json = flags.json;
    let plan = transfer::RecvPlan { dest, flags };
    loop {
        let (stream, peer) = listener.accept().context("accepting a connection")?;
        let bar = report::progress_bar();
        let show = |p: &haul_io::transfer::Progress| {
            if let Some(b) = &bar {
                report::show(b, p);
            }
        };
        let result = transfer::serve_one(stream, &psk, &plan, Some(&show));
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        match result {
            Ok(done) => report::print(&done, "receiver", json),
            Err(e) if keep_listening => eprintln!("haul: transfer from {peer} failed: {e:#}"),
            Err(e) => return Err(e.context(format!("transfer from {peer}"))),
        }
        if !keep_listening {
            return Ok(());
        }
    }
}

fn send(
    to: &str,
    key_file: &std::path::Path,
    paths: &[PathBuf],
    flags: args::TransferFlags,
) -> Result<()> {
    let psk = keyfile::read_key(key_file)?;
    let (files, sources) = walk::collect(paths)?;
    let attrs = walk::attrs_of(&sources, flags.preserve_owner, flags.preserve_xattrs)?;
    let addr = resolve(to)?;
    let json = flags.json;
    let bar = report::progress_bar();
    let show: Option<transfer::ProgressFn> = bar.clone().map(|b| {
        std::sync::Arc::new(move |p: &haul_io::transfer::Progress| report::show(&b, p)) as _
    });
    let result =
        transfer::send(addr, psk, transfer::SendPlan { files, sources, attrs, flags }, show);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let done = result.with_context(|| format!("transfer to {addr}"))?;
    report::print(&done, "sender", json);
    Ok(())
}

fn print_version() {
    println!("haul {}", env!("CARGO_PKG_VERSION"));
    let compiled: Vec<&str> =
        haul_io::cpu::feature_states().iter().filter(|s| s.is_compiled).map(|s| s.name).collect();
    println!("target features: {}", compiled.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_argument_means_status() {
        let cli = Cli::try_parse_from(["haul"]).map_err(|e| e.to_string());
        assert!(matches!(cli, Ok(Cli { command: None })), "{cli:?}");
    }

    #[test]
    fn version_subcommand_parses() {
        let cli = Cli::try_parse_from(["haul", "version"]).map_err(|e| e.to_string());
        assert!(matches!(cli, Ok(Cli { command: Some(Command::Version) })), "{cli:?}");
    }

    #[test]
    fn send_and_recv_parse_with_defaults_and_refuse_bad_values() {
        let ok = Cli::try_parse_from(["haul", "send", "--to", "h:1", "--key-file", "k", "a"]);
        assert!(ok.is_ok());
        for bad in [
            vec!["haul", "send", "--to", "h:1", "--key-file", "k", "--rate", "fast", "a"],
            vec!["haul", "send", "--to", "h:1", "--key-file", "k", "--shards", "65", "a"],
            vec!["haul", "send", "--to", "h:1", "--key-file", "k", "--datagram-size", "9001", "a"],
            vec!["haul", "send", "--to", "h:1", "--key-file", "k", "--cipher", "rot13", "a"],
            vec!["haul", "send", "--to", "h:1", "--key-file", "k"],
            vec!["haul", "recv", "--listen", "h:1", "--key-file", "k", "--policy", "greedy", "d"],
        ] {
            let e = Cli::try_parse_from(&bad).map(|_| ()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn status_names_the_issues_to_come() {
        for needle in ["issue 3", "issue 5", "issue 6", "haul serve", "haul send", "scripts/test"] {
            assert!(STATUS.contains(needle), "status text lacks {needle}");
        }
    }
}
