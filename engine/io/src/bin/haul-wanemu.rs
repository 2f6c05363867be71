//! `haul-wanemu`: the userspace WAN emulator's command line (docs/WANEMU.md).
//!
//! - `haul-wanemu up --rate 200M --delay 100ms --loss 1%` creates the two namespaces, prints
//!   their names and addresses, prints `ready`, and forwards until SIGINT/SIGTERM/SIGHUP; then
//!   it prints each direction's counters and timing error and deletes the namespaces.
//! - `haul-wanemu cleanup [--all]` deletes `haulwan-*` namespaces left by a killed emulator.
//! - `haul-wanemu blast` / `sink`: a paced UDP sender and a counting receiver, run inside the
//!   namespaces with `ip netns exec`, to measure the emulator's own ceiling.
//!
//! Invariant: signals are blocked in every thread and taken synchronously by the main thread
//! (`sigtimedwait`), so a signal always leads to the normal exit path that removes the
//! namespaces; a panic unwinds through the `Emulator` guard, which removes them too.

#![allow(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use haul_io::wan::{self, Config, DirectionConfig, Emulator, traffic};

#[derive(Parser, Debug)]
#[command(name = "haul-wanemu", about = "Userspace WAN emulator: two netns joined by a TUN link")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the namespaces and forward until killed.
    Up(UpArgs),
    /// Delete haulwan-* namespaces whose owner process is gone.
    Cleanup {
        /// Delete every haulwan-* namespace, owned or not.
        #[arg(long)]
        all: bool,
    },
    /// Send paced UDP datagrams (run it inside a namespace).
    Blast {
        /// Destination, e.g. 10.201.0.2:9000.
        #[arg(long)]
        to: SocketAddr,
        /// Rate at the IP layer: 200M, 1G, 500k, or bits/s.
        #[arg(long, value_parser = parse_rate)]
        rate: u64,
        /// How long: 5s, 500ms.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        time: Duration,
        /// UDP payload bytes (1472 fills a 1500-byte MTU).
        #[arg(long, default_value_t = traffic::PAYLOAD_MAX)]
        size: usize,
    },
    /// Count received UDP datagrams and print the IP-layer rate (run it inside a namespace).
    Sink {
        /// Address to bind, e.g. 10.201.0.2:9000.
        #[arg(long)]
        bind: SocketAddr,
        /// Stop this long after the last datagram.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        idle: Duration,
        /// Stop at the latest after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        time: Duration,
    },
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Instance name (namespaces haulwan-NAME-a / -b); default: this process's pid.
    #[arg(long)]
    name: Option<String>,
    /// Link rate at the IP layer, both directions: 200M, 1G, 0 = unlimited.
    #[arg(long, value_parser = parse_rate)]
    rate: u64,
    /// One-way delay, both directions: 100ms, 10ms, 250us.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    delay: Duration,
    /// Jitter half-width (uniform, no reordering).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    jitter: Duration,
    /// Random loss: 1% or 0.01.
    #[arg(long, default_value = "0", value_parser = parse_loss)]
    loss: f64,
    /// Queue size in bytes; default 1 BDP = rate × round-trip delay.
    #[arg(long)]
    queue_bytes: Option<u64>,
    /// Override the rate for direction B→A.
    #[arg(long, value_parser = parse_rate)]
    rate_ba: Option<u64>,
    /// Override the one-way delay for B→A.
    #[arg(long, value_parser = parse_duration)]
    delay_ba: Option<Duration>,
    /// Override the jitter for B→A.
    #[arg(long, value_parser = parse_duration)]
    jitter_ba: Option<Duration>,
    /// Override the loss for B→A.
    #[arg(long, value_parser = parse_loss)]
    loss_ba: Option<f64>,
    /// Override the queue size for B→A.
    #[arg(long)]
    queue_bytes_ba: Option<u64>,
    /// Seed of the loss and jitter draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not ask for SCHED_FIFO.
    #[arg(long)]
    no_realtime: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => run_up(&args),
        Command::Cleanup { all } => {
            for ns in wan::netns::cleanup_stale(all)? {
                println!("deleted netns {ns}");
            }
            Ok(())
        }
        Command::Blast { to, rate, time, size } => {
            let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .context("wildcard address")?;
            let socket = UdpSocket::bind(bind).context("binding the blaster's socket")?;
            let r = traffic::blast(&socket, to, rate, time, size)?;
            let mbit = r.ip_bytes as f64 * 8.0 / r.elapsed.as_secs_f64().max(1e-9) / 1e6;
            println!(
                "blast: packets={} ip_bytes={} send_errors={} secs={:.3} mbit_s={mbit:.1}",
                r.packets,
                r.ip_bytes,
                r.send_errors,
                r.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Sink { bind, idle, time } => {
            let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
            let r = traffic::sink(&socket, idle, time)?;
            println!(
                "sink: packets={} ip_bytes={} seq_span={} secs={:.3} mbit_s={:.1}",
                r.packets,
                r.ip_bytes,
                r.seq_span,
                r.first_to_last.as_secs_f64(),
                r.rate_bps() / 1e6
            );
            Ok(())
        }
    }
}

fn run_up(args: &UpArgs) -> Result<()> {
    let ab = DirectionConfig {
        rate_bps: args.rate,
        delay_ns: args.delay.as_nanos() as u64,
        jitter_ns: args.jitter.as_nanos() as u64,
        loss: args.loss,
        queue_bytes: args.queue_bytes,
    };
    let ba = DirectionConfig {
        rate_bps: args.rate_ba.unwrap_or(ab.rate_bps),
        delay_ns: args.delay_ba.map_or(ab.delay_ns, |d| d.as_nanos() as u64),
        jitter_ns: args.jitter_ba.map_or(ab.jitter_ns, |d| d.as_nanos() as u64),
        loss: args.loss_ba.unwrap_or(ab.loss),
        queue_bytes: args.queue_bytes_ba.or(ab.queue_bytes),
    };
    let config = Config {
        name: args.name.clone().unwrap_or_else(|| std::process::id().to_string()),
        a_to_b: ab,
        b_to_a: ba,
        seed: args.seed,
        is_realtime: !args.no_realtime,
    };
    let signals = block_exit_signals()?;
    let emulator = Emulator::start(&config).context("starting the emulator")?;
    print!("{}", emulator.endpoints());
    println!("ready");
    let outcome = wait_for_exit(&signals, &emulator);
    let report = emulator.stop().context("stopping the emulator")?;
    print!("{report}");
    println!("stopped");
    outcome
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread it starts).
fn block_exit_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; the signal numbers are valid constants.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        bail!("pthread_sigmask failed: {}", std::io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Waits for one of the blocked signals, or for a forwarder to die.
fn wait_for_exit(set: &libc::sigset_t, emulator: &Emulator) -> Result<()> {
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
    loop {
        // SAFETY: `set` and `timeout` are live for the call; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            eprintln!("haul-wanemu: signal {sig}, stopping");
            return Ok(());
        }
        if !emulator.is_healthy() {
            bail!(
                "a namespace was deleted from outside, or a forwarder thread died (a bug in \
                 haul-wanemu); stopping"
            );
        }
    }
}

/// "200M", "1G", "1.5G", "500k", "0", or a plain number of bits/s.
fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim().trim_end_matches("bit").trim_end_matches("bps");
    let (num, mult) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1e3),
        Some((i, 'm' | 'M')) => (&text[..i], 1e6),
        Some((i, 'g' | 'G')) => (&text[..i], 1e9),
        _ => (text, 1.0),
    };
    let value: f64 = num.parse().map_err(|_| format!("bad rate {text:?}: try 200M"))?;
    if !(0.0..=1e12).contains(&value) || !value.is_finite() {
        return Err(format!("rate {text:?} out of range"));
    }
    Ok((value * mult).round() as u64)
}

/// "100ms", "1s", "250us", "0".
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if text == "0" {
        ("0", 1.0)
    } else {
        return Err(format!("bad duration {text:?}: give a unit, e.g. 100ms"));
    };
    let value: f64 = num.parse().map_err(|_| format!("bad duration {text:?}"))?;
    if !(0.0..=3600.0).contains(&(value * scale)) {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// "1%" or "0.01".
fn parse_loss(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(p) => p.parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("bad loss {text:?}: try 1%"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("loss {text:?} not between 0 and 100%"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(parse_rate("200M"), Ok(200_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1M").is_err());
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("100").is_err());
        assert_eq!(parse_loss("1%"), Ok(0.01));
        assert_eq!(parse_loss("0.05"), Ok(0.05));
        assert!(parse_loss("150%").is_err());
    }
}
