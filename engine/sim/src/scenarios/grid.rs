//! The utilization grid: link rate × RTT × loss, one real session per cell.
//!
//! Each cell runs a [`Scenario`] with one virtual file of `bdps` × the bandwidth-delay product
//! (at least 50 for the figures) over a link with the cell's rate, one-way delay
//! RTT/2 each way, the cell's random loss on both directions and a queue of one BDP. The sender
//! uses the adaptive controller (policy fair by default) with a target 25% above the link, so
//! the controller, not the target, has to find the link.
//!
//! Figures per cell (docs/RATE.md): goodput (file bytes / simulated time from the first
//! datagram to the end of the session), payload fraction, redundant bytes (file bytes the
//! receiver got twice, % of the file), and mean and p99 queuing delay at the bottleneck.

use crate::driver::Sim;
use crate::net::LinkConfig;
use crate::report::RunReport;
use crate::scenario::{FileKind, FileSpec, Scenario};
use haul_proto::rate::Policy;
use haul_proto::session::SessionParams;
use haul_proto::time::Duration;

/// Link rates of the grid, bits per second.
pub const LINKS_BPS: [u64; 3] = [100_000_000, 1_000_000_000, 10_000_000_000];
/// RTTs of the grid, milliseconds.
pub const RTTS_MS: [u64; 5] = [10, 100, 200, 500, 1000];
/// Random loss of the grid, percent.
pub const LOSSES_PCT: [u64; 4] = [0, 1, 5, 10];
/// Share of the utilization target a cell must reach.
pub const TARGET_SHARE: f64 = 0.95;
/// Disk operations in flight per side in a grid cell.
pub const GRID_DISK_CONCURRENCY: usize = 64;
/// Receiver window of a cell, in BDPs.
pub const GRID_WINDOW_BDPS: u64 = 16;
/// Smallest file of a cell, bytes (short RTTs have a small BDP).
const MIN_FILE_BYTES: u64 = 16 << 20;

/// One cell of the grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    pub link_bps: u64,
    pub rtt_ms: u64,
    pub loss_pct: u64,
    pub policy: Policy,
    /// File size in bandwidth-delay products.
    pub bdps: u64,
    pub seed: u64,
}

/// What one cell measured.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub cell: Cell,
    pub file_bytes: u64,
    pub goodput_bps: f64,
    pub payload_fraction: f64,
    pub target_bps: f64,
    pub redundant_pct: f64,
    pub resent_pct: f64,
    pub queue_mean: Duration,
    pub queue_p99: Duration,
    pub ok: bool,
    pub failure: Option<String>,
}

impl CellResult {
    pub fn passes(&self) -> bool {
        self.ok && self.goodput_bps >= self.target_bps
    }
}

/// File bytes per datagram over IP bytes per datagram, for the default 1500-byte IPv4 path.
pub fn payload_fraction() -> f64 {
    let p = SessionParams::new(0, haul_proto::crypto::SuiteId::Aes128CfbCmac);
    p.payload_per_datagram() as f64 / (f64::from(p.datagram_size) + f64::from(p.ip_overhead))
}

/// The scenario one cell runs.
pub fn scenario(c: &Cell) -> Scenario {
    let mut s = Scenario::clean(c.seed);
    let one_way = Duration::from_micros(c.rtt_ms * 500);
    let bdp = c.link_bps / 8 * c.rtt_ms / 1000;
    let mut link = LinkConfig::clean(c.link_bps, one_way);
    link.loss = c.loss_pct as f64 / 100.0;
    s.forward = link.clone();
    s.reverse = link;
    s.files = vec![FileSpec { size: (bdp * c.bdps).max(MIN_FILE_BYTES), kind: FileKind::Virtual }];
    s.block_size_log2 = 20;
    // 16 BDP: at 10% loss a hole can need four resend rounds (~5 RTT), and the cumulative ack
    // waits for it; a 4-BDP window stalled the sender (measured: 63% vs 76% of the link at
    // 100 Mbit/s, 200 ms, 10%, fixed rate).
    s.window_bytes = (GRID_WINDOW_BDPS * bdp).max(4 << 20);
    s.rate_bps = if c.policy == Policy::Fixed { c.link_bps } else { c.link_bps / 4 * 5 };
    s.policy = c.policy;
    set_up_long_run(&mut s, Duration::from_secs(3_600));
    s
}

/// Disks fast enough for the link, and bounds for a long run of up to `max_time` of simulated
/// time (the grid's cells and the multi-session runs).
pub fn set_up_long_run(s: &mut Scenario, max_time: Duration) {
    // Every datagram is one write: the default simulated disk (8 in flight × 50 µs, 160 k
    // writes/s) cannot absorb 10 Gbit/s (830 k datagrams/s) and its back-pressure reads as loss.
    for d in &mut s.disks {
        d.concurrency = GRID_DISK_CONCURRENCY;
        d.latency = Duration::from_micros(20);
    }
    s.idle_timeout = Duration::from_secs(30);
    s.max_steps = u64::MAX / 2;
    s.max_time = max_time;
}

/// Run one cell.
pub fn run_cell(c: &Cell) -> CellResult {
    let sc = scenario(c);
    let r: RunReport = match Sim::new(&sc) {
        Ok(sim) => sim.run(),
        Err(f) => {
            let mut r = RunReport::default();
            r.failures.push(f);
            r
        }
    };
    let pf = payload_fraction();
    let bytes = sc.total_bytes();
    // Goodput's clock (issue 4): from the first datagram (the run starts with it) to the
    // receiver's verified rename, not to the sender hearing of it half an RTT later.
    let secs = r.renamed_at.unwrap_or(r.sim_time).as_secs_f64();
    let goodput_bps = if secs > 0.0 { bytes as f64 * 8.0 / secs } else { 0.0 };
    let loss = c.loss_pct as f64 / 100.0;
    CellResult {
        cell: *c,
        file_bytes: bytes,
        goodput_bps,
        payload_fraction: pf,
        target_bps: TARGET_SHARE * (1.0 - loss) * c.link_bps as f64 * pf,
        redundant_pct: r.duplicate_bytes as f64 * 100.0 / bytes.max(1) as f64,
        resent_pct: r.resent_bytes as f64 * 100.0 / bytes.max(1) as f64,
        queue_mean: r.queue_delay.mean(),
        queue_p99: r.queue_delay.percentile(99.0),
        ok: r.is_ok(),
        failure: r.failures.first().map(|f| f.to_string()),
    }
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:>9} {:>6} {:>5} {:>6} {:>9} {:>11} {:>7} {:>7} {:>9} {:>15} {:>9} {:>9}  verdict",
        "link",
        "rtt",
        "loss",
        "policy",
        "file",
        "goodput",
        "%link",
        "payload",
        "target",
        "redund%",
        "q_mean",
        "q_p99"
    )
}

fn rate_text(bps: f64) -> String {
    if bps >= 1e9 { format!("{:.3}G", bps / 1e9) } else { format!("{:.2}M", bps / 1e6) }
}

/// One row of the table.
pub fn row(r: &CellResult) -> String {
    let c = &r.cell;
    let verdict = match (&r.failure, r.passes()) {
        (Some(f), _) => format!("FAIL ({f})"),
        (None, true) => "PASS".to_string(),
        (None, false) => "FAIL".to_string(),
    };
    format!(
        "{:>9} {:>4}ms {:>4}% {:>6} {:>8}M {:>11} {:>6.1}% {:>7.4} {:>9} {:>6.2}%/{:>5.3}% {:>7.2}ms {:>7.2}ms  {verdict}",
        rate_text(c.link_bps as f64),
        c.rtt_ms,
        c.loss_pct,
        c.policy.name(),
        r.file_bytes >> 20,
        rate_text(r.goodput_bps),
        r.goodput_bps * 100.0 / c.link_bps as f64,
        r.payload_fraction,
        rate_text(r.target_bps),
        r.resent_pct,
        r.redundant_pct,
        r.queue_mean.as_secs_f64() * 1e3,
        r.queue_p99.as_secs_f64() * 1e3,
    )
}
