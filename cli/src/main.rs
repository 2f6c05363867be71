//! The `haul` binary. Thin: all logic lives in the libraries.
//!
//! Today it checks that this CPU can run the binary, and says plainly what works and what is
//! still to come: the appliance (`haul serve`), the client commands and the web console arrive
//! with later issues. No command here pretends to do what it cannot.
//!
//! Exit codes: 0 success, 1 error, 2 this CPU cannot run this build (or a usage error, as clap
//! reports them).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Result;
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
}

/// What exists today, and what each later issue brings. Kept honest by hand: update it with
/// the issue that changes it.
const STATUS: &str = "\
Haul is being built. What exists today (issue 2, in progress):
  - haul-proto: the sans-IO protocol core (wire format, per-datagram crypto, anti-replay,
    sessions, rate control), tested by `scripts/test`;
  - haul-sim: the deterministic seeded simulator (`cargo run --profile sim -p haul-sim
    --bin haul-sim -- --help`, once its binary lands);
  - crypto and codec benchmarks (`cargo bench -p haul-benches`, once they land).

Not yet here (no command below works today):
  - issue 3: haul send, haul recv, haul keygen (transfers between two hosts);
  - issue 5: haul serve (the appliance), haul get, haul put, haul token, haul user;
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
    }
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
    fn status_names_the_issues_to_come() {
        for needle in ["issue 3", "issue 5", "issue 6", "haul serve", "scripts/test"] {
            assert!(STATUS.contains(needle), "status text lacks {needle}");
        }
    }
}
