//! Scenarios: everything one simulated run needs, drawn from a seed or built by hand.
//!
//! [`Scenario::from_seed`] picks the fault mix, files, shard count, suite and roles from the
//! seed alone, so `haul-sim run --seed N` rebuilds the same scenario anywhere. Hand-made
//! scenarios start from [`Scenario::clean`] and set the knobs they test.
//!
//! Invariants: sizes are chosen so that one run stays small (a few MiB, well under a second of
//! CPU in the `sim` profile); every probability is in `[0, 1]`; the step and virtual-time bounds
//! are set, and reaching either is a failure.

use crate::attacker::AttackerConfig;
use crate::disk::{DiskConfig, FatalFault, FaultOp};
use crate::net::{GilbertElliott, LinkConfig};
use crate::side::Side;
use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use haul_proto::rng::Rng;
use haul_proto::session::{DiskError, Role};
use haul_proto::time::Duration;

/// Default bound on driver steps (event-loop iterations) per run.
pub const DEFAULT_MAX_STEPS: u64 = 3_000_000;
/// Default bound on simulated time per run.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(600);
/// Most files one scenario carries.
pub const MAX_SCENARIO_FILES: usize = 16;

/// How a file's bytes are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// In memory on both sides; compared byte for byte.
    Stored,
    /// A function of (seed, offset); the receiver checks writes against it.
    Virtual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub size: u64,
    pub kind: FileKind,
}

/// A fatal disk fault and the side whose disk has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatalSpec {
    pub side: Side,
    pub fault: FatalFault,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub shards: u8,
    pub suite: SuiteId,
    /// The set-up role of the sending side (the receiver has the other).
    pub sender_role: Role,
    pub block_size_log2: u8,
    /// Receiver window per shard, bytes.
    pub window_bytes: u64,
    /// Sender's target rate, bits per second at the IP layer.
    pub rate_bps: u64,
    /// Sender's rate policy: `Fixed` for seeded runs (they test the protocol, not the
    /// controller); the rate scenarios (`crate::scenarios`) choose the adaptive policies.
    pub policy: Policy,
    pub files: Vec<FileSpec>,
    /// Sender → receiver link.
    pub forward: LinkConfig,
    /// Receiver → sender link.
    pub reverse: LinkConfig,
    /// Disk per side, indexed by [`Side::index`].
    pub disks: [DiskConfig; 2],
    pub fatal: Option<FatalSpec>,
    pub attacker: Option<AttackerConfig>,
    pub idle_timeout: Duration,
    pub max_steps: u64,
    pub max_time: Duration,
    /// Stop (without failing) at this simulated time: for measurements over a fixed span, such
    /// as the memory test over a 1 TiB virtual file.
    pub stop_at: Option<Duration>,
    /// Path-MTU probing: the sender probes datagram sizes up to this (UDP payload bytes);
    /// 0 or at most the base size leaves it off. Seeded runs turn it on at random
    /// ([`PMTU_CHANCE`]).
    pub pmtu_max: u16,
    /// The receiver's own probe ceiling (`haul recv --datagram-size N`): it leaves larger
    /// probes unanswered. 0 means the same as `pmtu_max`.
    pub receiver_pmtu_max: u16,
}

impl Scenario {
    /// A lossless, fault-free scenario: one shard, the default suite, one 1 MiB stored file.
    pub fn clean(seed: u64) -> Scenario {
        let link = LinkConfig::clean(100_000_000, Duration::from_millis(10));
        Scenario {
            seed,
            shards: 1,
            suite: SuiteId::Aes128CfbCmac,
            sender_role: Role::Client,
            block_size_log2: 16,
            window_bytes: 256 << 10,
            rate_bps: 80_000_000,
            policy: Policy::Fixed,
            files: vec![FileSpec { size: 1 << 20, kind: FileKind::Stored }],
            forward: link.clone(),
            reverse: link,
            disks: [DiskConfig::fast(), DiskConfig::fast()],
            fatal: None,
            attacker: None,
            idle_timeout: Duration::from_secs(10),
            max_steps: DEFAULT_MAX_STEPS,
            max_time: DEFAULT_MAX_TIME,
            stop_at: None,
            pmtu_max: 0,
            receiver_pmtu_max: 0,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// What this scenario exercises, as tags a sweep counts (its coverage report).
    pub fn coverage_tags(&self) -> Vec<String> {
        let mut t = vec![
            format!("shards={}", self.shards),
            format!("suite={}", self.suite.name()),
            format!(
                "sender={}",
                if self.sender_role == Role::Client { "client" } else { "server" }
            ),
        ];
        let links = [&self.forward, &self.reverse];
        let mut tag = |on: bool, name: &str| {
            if on {
                t.push(name.to_string());
            }
        };
        tag(links.iter().any(|l| l.loss > 0.0), "loss");
        tag(links.iter().any(|l| l.loss >= 0.1), "loss>=10%");
        tag(links.iter().any(|l| l.burst.is_some()), "burst_loss");
        tag(links.iter().any(|l| l.reorder > 0.0), "reordering");
        tag(links.iter().any(|l| l.duplicate > 0.0), "duplication");
        tag(links.iter().any(|l| l.corrupt > 0.0), "corruption");
        tag(links.iter().any(|l| l.jitter > Duration::ZERO), "jitter");
        tag(self.disks.iter().any(|d| d.p_interrupted > 0.0 || d.p_short > 0.0), "transient_disk");
        tag(self.fatal.is_some(), "fatal_disk_planned");
        tag(self.attacker.is_some(), "attacker");
        let block = 1u64 << self.block_size_log2;
        let has = |f: &dyn Fn(u64) -> bool| self.files.iter().any(|x| f(x.size));
        tag(has(&|n| n == 0), "size=0");
        tag(has(&|n| n == 1), "size=1");
        tag(has(&|n| n == block - 1), "size=block-1");
        tag(has(&|n| n == block), "size=block");
        tag(has(&|n| n == block + 1), "size=block+1");
        tag(has(&|n| n >= 4 * self.window_bytes), "size>=4*window");
        tag(self.files.len() > 1, "several_files");
        tag(self.files.iter().any(|f| f.kind == FileKind::Virtual), "virtual_file");
        tag(self.pmtu_max > 1472, "pmtu_probing");
        tag(links.iter().any(|l| l.mtu_change.is_some()), "mtu_change");
        tag(self.receiver_pmtu_max != 0, "receiver_pmtu_ceiling");
        t
    }

    /// Seed `seed`'s scenario (faults, shards, suite, roles) with its files replaced by `files`
    /// files of 1-64 KiB and no fatal fault, so the run must complete; 20x the step bound,
    /// since small files cost more steps per byte. (The `smallfiles` example sweeps these.)
    pub fn small_files(seed: u64, files: u64) -> Scenario {
        let mut s = Scenario::from_seed(seed);
        let mut r = Rng::new(seed ^ 0x5111);
        s.files = (0..files)
            .map(|_| FileSpec { size: (1 + r.below(64)) << 10, kind: FileKind::Stored })
            .collect();
        s.fatal = None;
        s.max_steps *= 20;
        s
    }

    /// The scenario seed `seed` stands for.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut r = Rng::new(seed);
        let mut s = Scenario::clean(seed);
        s.shards = 1 + r.below(4) as u8;
        s.suite = SuiteId::ALL[r.below(3) as usize];
        s.sender_role = if r.chance(0.5) { Role::Client } else { Role::Server };
        s.block_size_log2 = 14 + r.below(3) as u8;
        s.window_bytes = (64 + r.below(193)) << 10;
        s.files = pick_files(&mut r, 1 << s.block_size_log2, s.window_bytes, s.shards);
        let link_bps = 10_000_000 + r.below(190) * 1_000_000;
        let delay = Duration::from_micros(500 + r.below(40_000));
        s.rate_bps = link_bps / 100 * (60 + r.below(35));
        s.forward = pick_link(&mut r, link_bps, delay);
        s.reverse = pick_link(&mut r, link_bps, delay);
        s.disks = [pick_disk(&mut r), pick_disk(&mut r)];
        if r.chance(0.15) {
            s.fatal = Some(pick_fatal(&mut r, &s));
        }
        if r.chance(0.3) {
            s.attacker =
                Some(AttackerConfig { rate_per_sec: 200 + r.below(2000), max_datagrams: 3000 });
        }
        if r.chance(LONG_RUN_CHANCE) {
            make_long(&mut r, &mut s);
        }
        pick_pmtu(seed, &mut s);
        s
    }
}

/// Share of seeds that probe the path MTU (see [`pick_pmtu`]).
pub const PMTU_CHANCE: f64 = 0.4;

/// Path-MTU probing at random: link MTUs from 1500 to a 9000-byte jumbo frame, sometimes a
/// mid-run change (a drop, down to 1500, is a black hole for the sizes above it; a rise is a
/// new route), sometimes a receiver ceiling below the sender's. A stream of its own (not
/// `from_seed`'s), so adding it left every other choice of every seed as it was.
fn pick_pmtu(seed: u64, s: &mut Scenario) {
    let mut r = Rng::new(seed ^ 0x97_a1_3d_00_c0_ff_ee_11);
    if !r.chance(PMTU_CHANCE) {
        return;
    }
    s.pmtu_max = if r.chance(0.8) { 8972 } else { 1600 + r.below(7373) as u16 };
    let mtu = match r.below(4) {
        0 => 1500,
        1 => 4000,
        2 => 9000,
        _ => 1500 + r.below(7501) as usize,
    };
    s.forward.mtu = mtu;
    s.reverse.mtu = mtu;
    if r.chance(0.4) {
        let at = Duration::from_micros(20_000 + r.below(1_500_000));
        let to = if r.chance(0.75) { 1500 + r.below(mtu as u64 - 1499) as usize } else { 9000 };
        s.forward.mtu_change = Some((at, to));
        if r.chance(0.5) {
            s.reverse.mtu_change = Some((at, to));
        }
    }
    if r.chance(0.2) {
        s.receiver_pmtu_max = 1473 + r.below(7500) as u16;
    }
}

/// Share of seeds that are long runs (see [`make_long`]).
pub const LONG_RUN_CHANCE: f64 = 0.03;

/// A long run: one shard sends more datagrams than the replay window is wide, so the window
/// really slides and the attacker's late replays meet `Stale`, not only `Replayed`. The bulk is
/// a virtual file (nothing stored) on a fast link, with the attacker on.
fn make_long(r: &mut Rng, s: &mut Scenario) {
    s.shards = 1;
    s.fatal = None;
    s.files.push(FileSpec { size: (28 << 20) + r.below(4 << 20), kind: FileKind::Virtual });
    let rate = 200_000_000 + r.below(200) * 1_000_000;
    for l in [&mut s.forward, &mut s.reverse] {
        l.rate_bps = rate;
        l.queue_bytes = l.queue_bytes.max(1 << 20);
    }
    s.rate_bps = rate / 100 * 90;
    s.window_bytes = 256 << 10;
    s.attacker = Some(AttackerConfig { rate_per_sec: 100 + r.below(200), max_datagrams: 3000 });
}

/// One to five files from the sizes that matter: 0, 1, block ± 1, several windows, random.
fn pick_files(r: &mut Rng, block: u64, window: u64, shards: u8) -> Vec<FileSpec> {
    let n = 1 + r.below(5);
    let big = 4 * window * u64::from(shards) + r.below(window);
    let mut has_big = false;
    let mut files: Vec<FileSpec> = (0..n)
        .map(|_| {
            let size = match r.below(8) {
                0 => 0,
                1 => 1,
                2 => block - 1,
                3 => block,
                4 => block + 1,
                // One big file per session keeps a run small.
                5 if !has_big => {
                    has_big = true;
                    big
                }
                _ => r.below(3 * block),
            };
            FileSpec { size, kind: FileKind::Stored }
        })
        .collect();
    // Most runs carry one file of at least four windows, so the window really moves.
    if r.chance(0.7) && files.iter().all(|f| f.size < 4 * window) {
        let i = r.below(n) as usize;
        files[i].size = big;
    }
    if r.chance(0.1) {
        files.push(FileSpec { size: (1 << 20) + r.below(2 << 20), kind: FileKind::Virtual });
    }
    files
}

fn pick_link(r: &mut Rng, rate_bps: u64, delay: Duration) -> LinkConfig {
    let mut l = LinkConfig::clean(rate_bps, delay);
    if r.chance(0.5) {
        l.loss = r.unit_f64() * 0.2;
    }
    if r.chance(0.25) {
        l.burst = Some(GilbertElliott {
            p_good_to_bad: 0.001 + r.unit_f64() * 0.01,
            p_bad_to_good: 0.05 + r.unit_f64() * 0.3,
            loss_in_bad: 0.5 + r.unit_f64() * 0.5,
        });
    }
    if r.chance(0.25) {
        l.reorder = r.unit_f64() * 0.05;
        l.reorder_delay = Duration::from_micros(100 + r.below(5_000));
    }
    if r.chance(0.2) {
        l.duplicate = r.unit_f64() * 0.02;
    }
    if r.chance(0.2) {
        l.corrupt = r.unit_f64() * 0.01;
    }
    if r.chance(0.25) {
        l.jitter = Duration::from_micros(r.below(2_000));
    }
    if r.chance(0.5) {
        l.coalesce = Duration::from_micros(10 + r.below(200));
    }
    l
}

fn pick_disk(r: &mut Rng) -> DiskConfig {
    let mut d = DiskConfig::fast();
    d.latency = Duration::from_micros(20 + r.below(2_000));
    d.latency_jitter = Duration::from_micros(r.below(500));
    d.concurrency = 1 + r.below(8) as usize;
    if r.chance(0.3) {
        d.p_interrupted = r.unit_f64() * 0.05;
        d.p_short = r.unit_f64() * 0.05;
    }
    d
}

/// A fatal fault that fires partway through: EIO on the sender's reads, or EIO/ENOSPC on the
/// receiver's writes, EIO on its reads or its finalize.
fn pick_fatal(r: &mut Rng, s: &Scenario) -> FatalSpec {
    let blocks: u64 = s.files.iter().map(|f| f.size >> s.block_size_log2).sum();
    let after_ops = r.below(blocks.max(1) * 4);
    let side = if r.chance(0.5) { Side::Sender } else { Side::Receiver };
    let (op, error) = match (side, r.below(4)) {
        (Side::Sender, _) => (FaultOp::Read, DiskError::Io),
        (Side::Receiver, 0) => (FaultOp::Write, DiskError::NoSpace),
        (Side::Receiver, 1) => (FaultOp::Write, DiskError::Io),
        (Side::Receiver, 2) => (FaultOp::Read, DiskError::Io),
        (Side::Receiver, _) => (FaultOp::Finalize, DiskError::Io),
    };
    let after_ops =
        if op == FaultOp::Finalize { after_ops % s.files.len() as u64 } else { after_ops };
    FatalSpec { side, fault: FatalFault { op, after_ops, error } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_scenario() {
        assert_eq!(Scenario::from_seed(5), Scenario::from_seed(5));
        assert_ne!(Scenario::from_seed(5), Scenario::from_seed(6));
    }

    #[test]
    fn seeds_cover_the_required_mix() {
        let all: Vec<Scenario> = (0..500).map(Scenario::from_seed).collect();
        let any = |f: &dyn Fn(&Scenario) -> bool| all.iter().any(f);
        for shards in 1..=4 {
            assert!(any(&|s| s.shards == shards), "shards {shards}");
        }
        for suite in SuiteId::ALL {
            assert!(any(&|s| s.suite == suite));
        }
        assert!(any(&|s| s.sender_role == Role::Server) && any(&|s| s.sender_role == Role::Client));
        let has_size =
            |f: &dyn Fn(&Scenario, u64) -> bool| any(&|s| s.files.iter().any(|x| f(s, x.size)));
        assert!(has_size(&|_, n| n == 0) && has_size(&|_, n| n == 1));
        for d in [-1i64, 0, 1] {
            assert!(has_size(&|s, n| n as i64 == (1i64 << s.block_size_log2) + d));
        }
        assert!(has_size(&|s, n| n >= 4 * s.window_bytes));
        assert!(any(&|s| s.files.len() >= 3));
        assert!(any(&|s| s.files.iter().any(|f| f.kind == FileKind::Virtual)));
        assert!(any(&|s| s.forward.loss > 0.15) && any(&|s| s.forward.burst.is_some()));
        assert!(any(&|s| s.forward.reorder > 0.0 && s.forward.duplicate > 0.0));
        assert!(any(&|s| s.forward.corrupt > 0.0) && any(&|s| s.reverse.jitter > Duration::ZERO));
        assert!(any(&|s| s.disks[1].p_interrupted > 0.0));
        assert!(any(&|s| matches!(s.fatal, Some(f) if f.fault.error == DiskError::NoSpace)));
        assert!(any(&|s| matches!(s.fatal, Some(f) if f.side == Side::Sender)));
        assert!(any(&|s| s.attacker.is_some()));
        let probing = |s: &Scenario| s.pmtu_max > 1472;
        assert!(all.iter().filter(|s| probing(s)).count() >= 150);
        assert!(all.iter().filter(|s| !probing(s)).count() >= 250);
        for mtu in [1500, 4000, 9000] {
            assert!(any(&|s| probing(s) && s.forward.mtu == mtu), "mtu {mtu}");
        }
        assert!(any(&|s| matches!(s.forward.mtu_change, Some((_, m)) if m < s.forward.mtu)));
        assert!(any(&|s| s.receiver_pmtu_max != 0 && s.receiver_pmtu_max < s.pmtu_max));
        // Long runs: more datagrams on one shard than the replay window holds.
        let long = |s: &Scenario| s.shards == 1 && s.total_bytes() > 1472 * 16_384;
        assert!(all.iter().filter(|s| long(s)).count() >= 5);
        for s in &all {
            assert!(s.forward.loss <= 0.2 && s.reverse.loss <= 0.2);
            assert!(s.total_bytes() < 40 << 20, "seed {} is too big", s.seed);
            assert!(s.files.len() <= MAX_SCENARIO_FILES);
            // The base size (1472 + 28 header bytes) always passes: probing never strands data.
            let mtus = [s.forward.mtu_change, s.reverse.mtu_change];
            assert!(mtus.iter().flatten().all(|(_, m)| *m >= 1500) && s.forward.mtu >= 1500);
        }
    }
}
