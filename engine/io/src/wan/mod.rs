//! A userspace WAN emulator: two network namespaces joined by a rate-limited, delayed, lossy
//! link (this kernel has no netem).
//!
//! Role: benches and tests run real programs on both sides of an emulated long-distance path.
//! [`Emulator::start`] creates namespaces `haulwan-<name>-a` and `-b`, one TUN interface in
//! each (named `wan0`, addresses [`ADDR_A`] and [`ADDR_B`] on a /30 used only inside those
//! namespaces, MTU 1500, `lo` up), and one forwarder thread per direction in this process,
//! which holds both TUN descriptors and applies the [`link`] model: rate, one-way delay,
//! bounded jitter, random loss and a bounded FIFO queue with tail drop (1 BDP by default).
//! [`Emulator::stop`] returns each direction's counters and its own timing error.
//!
//! Invariants:
//! - traffic stays inside the two namespaces: the addresses are configured nowhere else and
//!   the emulator writes packets only to its own TUN devices;
//! - the namespaces are removed when the [`Emulator`] is dropped or stopped (including while
//!   a panic unwinds); `netns::cleanup_stale` removes what a killed process left;
//! - `engine/proto` is not involved: this is test and bench infrastructure.

pub mod forward;
pub mod link;
pub mod netns;
pub mod stats;
pub mod traffic;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::tun::{Tun, TunError};
use forward::Forwarder;
use link::{Link, LinkParams};
use netns::NetnsPair;
use stats::DirectionStats;

/// Side A's address (inside namespace `-a` only).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Side B's address (inside namespace `-b` only).
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Prefix length of the link's subnet.
pub const PREFIX_LEN: u8 = 30;
/// The interface name inside each namespace.
pub const DEV_NAME: &str = "wan0";
/// The link MTU (the issue counts the link at the IP layer with a 1500-byte MTU).
pub const MTU: u32 = 1500;
/// Packets the kernel queues on each TUN for the forwarder to read (its `txqueuelen`, which
/// sizes the TUN's ring): 4096, about 100 ms at 500 Mbit/s of full-size packets, so that a
/// forwarder that loses the CPU for a moment does not turn into unconfigured loss (what
/// still overflows is reported as `drops_tun_ring`).
pub const TUN_RING_PACKETS: u32 = 4096;

/// Errors of the emulator, each saying whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// The caller's instance name is unusable.
    #[error("bad instance name {0:?}: 1 to 32 of [A-Za-z0-9_] (caller's fault)")]
    BadName(String),
    /// The caller's parameters are out of range.
    #[error("bad emulator parameter: {0} (caller's fault)")]
    BadParam(String),
    /// A namespace of that name exists: another instance, or a stale one.
    #[error("netns {0} exists: another emulator owns it, or run `haul-wanemu cleanup`")]
    NetnsExists(String),
    /// An `ip` command failed (host: iproute2 missing, not root, no netns support).
    #[error("ip {args}: {detail}")]
    Ip {
        /// The arguments given to `ip`.
        args: String,
        /// What went wrong.
        detail: String,
    },
    /// The pid file could not be written (host: /run not writable).
    #[error("pid file {0}: {1}")]
    PidFile(PathBuf, #[source] std::io::Error),
    /// Entering a namespace failed (host: not root, or the namespace vanished).
    #[error("cannot enter netns {0}: {1}")]
    Enter(String, #[source] std::io::Error),
    /// A TUN operation failed.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// A forwarder thread could not be started or died (our bug if it panicked).
    #[error("forwarder thread: {0}")]
    Thread(String),
}

/// One direction's knobs, as given by the user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DirectionConfig {
    /// Bits per second at the IP layer; 0 means unlimited.
    pub rate_bps: u64,
    /// One-way delay.
    pub delay_ns: u64,
    /// Half-width of the uniform jitter (no reordering).
    pub jitter_ns: u64,
    /// Random loss probability in [0, 1].
    pub loss: f64,
    /// Queue size; `None` means 1 BDP (rate × round-trip delay), see [`link::bdp_bytes`].
    pub queue_bytes: Option<u64>,
}

/// The whole emulator's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Instance name: namespaces are `haulwan-<name>-a` / `-b`.
    pub name: String,
    /// Side A to side B.
    pub a_to_b: DirectionConfig,
    /// Side B to side A.
    pub b_to_a: DirectionConfig,
    /// Seed of the loss and jitter draws (direction B→A uses seed + 1).
    pub seed: u64,
    /// Ask for SCHED_FIFO on the forwarder threads.
    pub is_realtime: bool,
}

/// Longest one-way delay or jitter we accept (10 s).
pub const DELAY_NS_MAX: u64 = 10_000_000_000;

impl DirectionConfig {
    fn resolve(&self, rtt_ns: u64) -> Result<LinkParams, WanError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(WanError::BadParam(format!("loss {} not in [0, 1]", self.loss)));
        }
        if self.delay_ns > DELAY_NS_MAX || self.jitter_ns > DELAY_NS_MAX {
            return Err(WanError::BadParam("delay and jitter must be at most 10 s".into()));
        }
        let queue_bytes = self.queue_bytes.unwrap_or(link::bdp_bytes(self.rate_bps, rtt_ns));
        if queue_bytes > link::QUEUE_BYTES_MAX {
            return Err(WanError::BadParam(format!("queue {queue_bytes} bytes over 1 GiB")));
        }
        Ok(LinkParams {
            rate_bps: self.rate_bps,
            delay_ns: self.delay_ns,
            jitter_ns: self.jitter_ns,
            loss: self.loss,
            queue_bytes,
        })
    }
}

/// What a running emulator looks like from outside.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Namespace of side A.
    pub netns_a: String,
    /// Namespace of side B.
    pub netns_b: String,
    /// Resolved parameters A→B.
    pub a_to_b: LinkParams,
    /// Resolved parameters B→A.
    pub b_to_a: LinkParams,
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "netns_a={} addr_a={ADDR_A} dev={DEV_NAME}", self.netns_a)?;
        writeln!(f, "netns_b={} addr_b={ADDR_B} dev={DEV_NAME}", self.netns_b)?;
        for (label, p) in [("a->b", &self.a_to_b), ("b->a", &self.b_to_a)] {
            writeln!(
                f,
                "{label}: rate_bps={} delay_us={} jitter_us={} loss={} queue_bytes={}",
                p.rate_bps,
                p.delay_ns / 1000,
                p.jitter_ns / 1000,
                p.loss,
                p.queue_bytes
            )?;
        }
        Ok(())
    }
}

/// Both directions' statistics at stop.
#[derive(Clone, Debug)]
pub struct Report {
    /// Side A to side B.
    pub a_to_b: DirectionStats,
    /// Side B to side A.
    pub b_to_a: DirectionStats,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "a->b: {}", self.a_to_b)?;
        writeln!(f, "b->a: {}", self.b_to_a)
    }
}

/// A running emulator. Dropping it stops the forwarders and deletes the namespaces.
#[derive(Debug)]
pub struct Emulator {
    endpoints: Endpoints,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<DirectionStats>>,
    // Declared last: dropped after the threads are joined and the TUNs closed.
    netns: Option<NetnsPair>,
}

/// Distinguishes TUN names when one process starts several emulators.
static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl Emulator {
    /// Creates the namespaces and TUNs, configures them, and starts both forwarders.
    pub fn start(config: &Config) -> Result<Emulator, WanError> {
        let rtt_ns = config.a_to_b.delay_ns + config.b_to_a.delay_ns;
        let a_to_b = config.a_to_b.resolve(rtt_ns)?;
        let b_to_a = config.b_to_a.resolve(rtt_ns)?;
        let pair = NetnsPair::create(&config.name)?;
        let seq = INSTANCE.fetch_add(1, Ordering::Relaxed) % 1000;
        let pid = std::process::id();
        let tun_a = Arc::new(Tun::open(&format!("hw{pid}x{seq}a"), false)?);
        let tun_b = Arc::new(Tun::open(&format!("hw{pid}x{seq}b"), false)?);
        configure_side(&tun_a, &pair.a, ADDR_A)?;
        configure_side(&tun_b, &pair.b, ADDR_B)?;
        let endpoints =
            Endpoints { netns_a: pair.a.clone(), netns_b: pair.b.clone(), a_to_b, b_to_a };
        let stop = Arc::new(AtomicBool::new(false));
        let mut emulator = Emulator { endpoints, stop, threads: Vec::new(), netns: Some(pair) };
        let epoch = Instant::now();
        let directions = [
            ("a->b", &tun_a, &tun_b, a_to_b, config.seed),
            ("b->a", &tun_b, &tun_a, b_to_a, config.seed.wrapping_add(1)),
        ];
        for (label, src, dst, params, seed) in directions {
            let fwd = Forwarder {
                label,
                src: Arc::clone(src),
                dst: Arc::clone(dst),
                link: Link::new(params, seed),
                epoch,
                stop: Arc::clone(&emulator.stop),
                is_realtime: config.is_realtime,
            };
            let handle = std::thread::Builder::new()
                .name(format!("wan {label}"))
                .spawn(move || fwd.run())
                .map_err(|e| WanError::Thread(e.to_string()))?;
            emulator.threads.push(handle);
        }
        Ok(emulator)
    }

    /// Namespace names and resolved parameters.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// False once a forwarder thread has ended on its own (it panicked: our bug) or a
    /// namespace was deleted from outside (the link is then gone for good).
    pub fn is_healthy(&self) -> bool {
        let dir = std::path::Path::new(netns::NETNS_DIR);
        self.threads.iter().all(|t| !t.is_finished())
            && dir.join(&self.endpoints.netns_a).exists()
            && dir.join(&self.endpoints.netns_b).exists()
    }

    /// Stops both forwarders, deletes the namespaces, and returns what each direction saw.
    pub fn stop(mut self) -> Result<Report, WanError> {
        // Read the rings' drop counters while the interfaces still exist. Best effort: a
        // namespace deleted from outside has no counter left to read, and the rest of the
        // report is still worth having.
        let ring_dropped = |ns: &str| {
            netns::tx_dropped(ns, DEV_NAME).unwrap_or_else(|e| {
                eprintln!("haul-wanemu: warning: TUN ring drops unknown (counted as 0): {e}");
                0
            })
        };
        let ring_a = ring_dropped(&self.endpoints.netns_a);
        let ring_b = ring_dropped(&self.endpoints.netns_b);
        let mut stats = self.join_all();
        self.netns = None;
        let mut b_to_a = stats.pop().ok_or_else(|| WanError::Thread("b->a lost".into()))??;
        let mut a_to_b = stats.pop().ok_or_else(|| WanError::Thread("a->b lost".into()))??;
        a_to_b.drops_tun_ring = ring_a;
        b_to_a.drops_tun_ring = ring_b;
        Ok(Report { a_to_b, b_to_a })
    }

    fn join_all(&mut self) -> Vec<Result<DirectionStats, WanError>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().map_err(|_| WanError::Thread("a forwarder panicked".into())))
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.join_all();
        // `netns` drops after this, deleting the namespaces.
    }
}

/// Moves `tun` into `netns`, names it `wan0`, and configures address, MTU and link state.
fn configure_side(tun: &Tun, netns: &str, addr: Ipv4Addr) -> Result<(), WanError> {
    tun.move_to_netns(netns)?;
    let cidr = format!("{addr}/{PREFIX_LEN}");
    let mtu = MTU.to_string();
    let ring = TUN_RING_PACKETS.to_string();
    netns::run_ip(&["-n", netns, "link", "set", "dev", tun.name(), "name", DEV_NAME])?;
    // No IPv6 on the link: router solicitations and MLD reports would otherwise cross it and
    // show up in the counters. Kernels without IPv6 have no such file; that is fine.
    let path = format!("/proc/sys/net/ipv6/conf/{DEV_NAME}/disable_ipv6");
    let _ = netns::in_netns(netns, || std::fs::write(&path, "1"));
    netns::run_ip(&["-n", netns, "addr", "add", &cidr, "dev", DEV_NAME])?;
    netns::run_ip(&[
        "-n",
        netns,
        "link",
        "set",
        "dev",
        DEV_NAME,
        "mtu",
        &mtu,
        "txqueuelen",
        &ring,
        "up",
    ])?;
    Ok(())
}
