//! Command-line flags shared by `send`, `recv` and `bench`, and their value parsers.
//!
//! Invariant: every flag value is checked here, at parse time, so a bad value is a usage
//! error (exit 2, clap's message) and never reaches the transfer.

use clap::{Args, ValueEnum};
use haul_io::backend::BackendKind;
use haul_io::transfer::{Overwrite, ResumeLevel};
use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use haul_proto::setup::{OverwritePref, ResumePref};

/// The target rate when none is given: "no limit" in practice on today's links.
pub const DEFAULT_TARGET_RATE_BPS: u64 = 10_000_000_000;
/// The most shards a session has (proto's `MAX_SHARDS`).
pub const MAX_SHARDS: u8 = 64;

/// A rate in bits per second: a number with an optional k/M/G/T suffix (powers of 1000),
/// e.g. `200M`, `1G`, `1.5G`.
/// `--datagram-size`: probe the path, or a fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramSize {
    Auto,
    Fixed(u16),
}

impl DatagramSize {
    /// The fixed size, if one was given.
    pub fn fixed(self) -> Option<u16> {
        match self {
            DatagramSize::Auto => None,
            DatagramSize::Fixed(n) => Some(n),
        }
    }
}

/// `auto` or a number of UDP payload bytes in 512..=9000.
pub fn parse_datagram_size(s: &str) -> Result<DatagramSize, String> {
    if s == "auto" {
        return Ok(DatagramSize::Auto);
    }
    match s.parse::<u16>() {
        Ok(n) if (512..=9000).contains(&n) => Ok(DatagramSize::Fixed(n)),
        _ => Err(format!("`{s}` is neither `auto` nor a size in 512..=9000")),
    }
}

pub fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1e3,
                'M' => 1e6,
                'G' => 1e9,
                'T' => 1e12,
                _ => return Err(format!("unknown rate suffix {c:?} (use k, M, G or T)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a rate such as 200M or 1.5G"))?;
    let bps = v * mult;
    if !(0.0..=4e11).contains(&bps) {
        return Err(format!("rate {s:?} is outside 0..400G bit/s"));
    }
    Ok(bps as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    Fixed,
    High,
    Fair,
    Low,
}

impl PolicyArg {
    pub fn to_policy(self) -> Policy {
        match self {
            PolicyArg::Fixed => Policy::Fixed,
            PolicyArg::High => Policy::High,
            PolicyArg::Fair => Policy::Fair,
            PolicyArg::Low => Policy::Low,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CipherArg {
    #[value(name = "aes128-cfb-cmac")]
    Aes128CfbCmac,
    #[value(name = "aes128-gcm")]
    Aes128Gcm,
    #[value(name = "integrity-cmac")]
    IntegrityCmac,
}

impl CipherArg {
    pub fn to_suite(self) -> SuiteId {
        match self {
            CipherArg::Aes128CfbCmac => SuiteId::Aes128CfbCmac,
            CipherArg::Aes128Gcm => SuiteId::Aes128Gcm,
            CipherArg::IntegrityCmac => SuiteId::IntegrityCmac,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverwriteArg {
    Never,
    Always,
    IfDifferent,
    IfOlder,
}

impl OverwriteArg {
    pub fn to_pref(self) -> OverwritePref {
        match self {
            OverwriteArg::Never => OverwritePref::Never,
            OverwriteArg::Always => OverwritePref::Always,
            OverwriteArg::IfDifferent => OverwritePref::IfDifferent,
            OverwriteArg::IfOlder => OverwritePref::IfOlder,
        }
    }
}

pub fn overwrite_of(p: OverwritePref) -> Overwrite {
    match p {
        OverwritePref::Never => Overwrite::Never,
        OverwritePref::Always => Overwrite::Always,
        OverwritePref::IfDifferent => Overwrite::IfDifferent,
        OverwritePref::IfOlder => Overwrite::IfOlder,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResumeArg {
    None,
    Attributes,
    Sparse,
    Full,
}

impl ResumeArg {
    pub fn to_pref(self) -> ResumePref {
        match self {
            ResumeArg::None => ResumePref::None,
            ResumeArg::Attributes => ResumePref::Attributes,
            ResumeArg::Sparse => ResumePref::SparseChecksum,
            ResumeArg::Full => ResumePref::FullChecksum,
        }
    }
}

pub fn resume_of(p: ResumePref) -> ResumeLevel {
    match p {
        ResumePref::None => ResumeLevel::None,
        ResumePref::Attributes => ResumeLevel::Attributes,
        ResumePref::SparseChecksum => ResumeLevel::SparseChecksum,
        ResumePref::FullChecksum => ResumeLevel::FullChecksum,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Auto,
    Uring,
    Portable,
}

impl BackendArg {
    pub fn forced(self) -> Option<BackendKind> {
        match self {
            BackendArg::Auto => None,
            BackendArg::Uring => Some(BackendKind::Uring),
            BackendArg::Portable => Some(BackendKind::Portable),
        }
    }
}

/// Flags both `send` and `recv` take. On `send` they are the proposal; on `recv`, the ones
/// given explicitly are limits the receiver imposes (docs/CLI.md, "Who decides what").
#[derive(Clone, Debug, Args)]
pub struct TransferFlags {
    /// Target rate in bit/s, e.g. 200M, 1G, 1.5G [default: no limit (10G)].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Minimum rate in bit/s the sender keeps even under congestion [default: 0].
    #[arg(long, value_parser = parse_rate)]
    pub min_rate: Option<u64>,
    /// Rate policy [default: fair].
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// Cipher suite of the data datagrams [default: aes128-cfb-cmac].
    #[arg(long, value_enum)]
    pub cipher: Option<CipherArg>,
    /// Shards (one thread and one UDP port each), 1..=64 [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub shards: Option<u8>,
    /// UDP payload bytes per datagram: `auto` starts at 1472 (IPv4) or 1452 (IPv6) and
    /// probes the path for more, up to jumbo frames; a number 512..=9000 fixes the size and
    /// turns probing off [default: auto]. recv: a number is the largest size it accepts.
    #[arg(long, value_parser = parse_datagram_size)]
    pub datagram_size: Option<DatagramSize>,
    /// What the receiver does when a file exists [default: never].
    #[arg(long, value_enum)]
    pub overwrite: Option<OverwriteArg>,
    /// How much of an interrupted transfer to keep [default: attributes].
    #[arg(long, value_enum)]
    pub resume: Option<ResumeArg>,
    /// send: send each file's owner and group; recv: apply the owners a sender sends (as
    /// root, or with CAP_CHOWN; otherwise skipped and reported). Both ends must say it.
    #[arg(long)]
    pub preserve_owner: bool,
    /// send: send each file's extended attributes, POSIX ACLs included; recv: apply them
    /// (those the filesystem or privileges refuse are skipped and reported). Both ends must
    /// say it.
    #[arg(long)]
    pub preserve_xattrs: bool,
    /// recv only, as root: keep setuid/setgid bits (otherwise they are always dropped).
    #[arg(long)]
    pub keep_setid: bool,
    /// Print one JSON object as the summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// UDP backend; `portable` forces sendmmsg/recvmmsg.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

/// Shards by default: one per core, at most [`MAX_SHARDS`].
pub fn default_shards() -> u8 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, usize::from(MAX_SHARDS)) as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("200M"), Ok(200_000_000));
        assert_eq!(parse_rate("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("1.5g"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64k"), Ok(64_000));
        assert_eq!(parse_rate("12345"), Ok(12345));
        for bad in ["", "G", "1X", "-1M", "abc", "1e30", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }
}
