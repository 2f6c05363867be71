//! `haul-sim`: run one simulated transfer from a seed, sweep many seeds, or show a demo.
//!
//! `haul-sim run --seed N` (or `haul-sim --seed N`) prints one result line and exits 1 if the
//! run failed;
//! `haul-sim sweep --seeds 500 [--start S] [--jobs 2]` runs seeds in parallel and exits 1 on any
//! failure, printing each failing seed with the command that replays it; `haul-sim demo` runs
//! one medium transfer and explains what happened. The result line never contains wall-clock
//! figures, so the same seed prints the same line anywhere.

use anyhow::Result;
use clap::{Parser, Subcommand};
use haul_proto::session::RejectCounts;
use haul_proto::time::Duration;
use haul_sim::attacker::AttackStats;
use haul_sim::net::{GilbertElliott, LinkConfig};
use haul_sim::report::{attacks_text, rejects_text};
use haul_sim::scenario::{FileKind, FileSpec};
use haul_sim::scenarios::{self, grid};
use haul_sim::{Failure, RunReport, Scenario, run_scenario, run_seed, sweep};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "haul-sim", about = "Deterministic simulator for Haul's transfer protocol")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Shorthand for `run --seed N`.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the scenario of one seed and print its result line.
    Run {
        #[arg(long)]
        seed: u64,
        /// Also print the scenario the seed stands for and, on failure, the end state.
        #[arg(long)]
        verbose: bool,
    },
    /// Run many seeds in parallel; exit non-zero if any fails.
    Sweep {
        #[arg(long, default_value_t = 500)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// The utilization grid (link × RTT × loss) with the adaptive controller; prints a table.
    Grid {
        /// Only cells whose link (Mbit/s), RTT (ms) and loss (%) are in these lists, e.g.
        /// `--links 100,1000 --rtts 200 --losses 0,5`.
        #[arg(long, value_delimiter = ',')]
        links: Vec<u64>,
        #[arg(long, value_delimiter = ',')]
        rtts: Vec<u64>,
        #[arg(long, value_delimiter = ',')]
        losses: Vec<u64>,
        /// File size in bandwidth-delay products (the issue asks for at least 50).
        #[arg(long, default_value_t = 50)]
        bdps: u64,
        #[arg(long, default_value = "fair")]
        policy: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// Fair flows sharing a bottleneck: Jain's index over time and combined utilization.
    Fairness {
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// High vs fair, low alone, low vs fair, low vs TCP-like, fair vs TCP-like.
    Policies {
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Fairness and policies from real sessions sharing one bottleneck queue (2 and 4 fair
    /// sessions at 20/200 ms, with the simulator's target and unlimited; high and low vs fair).
    Sessions {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sessions per fair run (the 2 and 4 by default).
        #[arg(long, value_delimiter = ',', default_values_t = [2, 4])]
        counts: Vec<usize>,
    },
    /// Three sessions under one node cap.
    Nodecap {
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run one medium transfer over a lossy long link and print a readable summary.
    Demo {
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    Ok(match (cli.cmd, cli.seed) {
        (Some(Cmd::Run { seed, verbose }), _) => cmd_run(seed, verbose),
        (Some(Cmd::Sweep { seeds, start, jobs }), _) => cmd_sweep(start, seeds, jobs),
        (Some(Cmd::Demo { seed }), _) => cmd_demo(seed),
        (Some(Cmd::Grid { links, rtts, losses, bdps, policy, seed, jobs }), _) => {
            cmd_grid(&links, &rtts, &losses, bdps, &policy, seed, jobs)
        }
        (Some(Cmd::Fairness { seed }), _) => {
            let mut ok = true;
            for n in [2, 4] {
                ok &= print_table(scenarios::fairness::fair_flows(n, seed));
            }
            exit(ok)
        }
        (Some(Cmd::Policies { seed }), _) => {
            let a = print_table(scenarios::fairness::high_vs_fair(seed));
            let b = print_table(scenarios::fairness::policies(seed));
            exit(a && b)
        }
        (Some(Cmd::Sessions { seed, counts }), _) => {
            use scenarios::sessions;
            let mut ok = true;
            for n in counts {
                for target in [sessions::TABLE_LINK_BPS / 4 * 5, sessions::UNLIMITED_BPS] {
                    ok &= print_table(sessions::fair_sessions(n, target, 5, seed));
                }
            }
            ok &= print_table(sessions::policies(seed));
            exit(ok)
        }
        (Some(Cmd::Nodecap { seed }), _) => exit(print_table(scenarios::fairness::node_cap(seed))),
        (None, Some(seed)) => cmd_run(seed, false),
        (None, None) => {
            eprintln!("usage: haul-sim run --seed N | sweep --seeds N | demo (see --help)");
            ExitCode::from(2)
        }
    })
}

fn cmd_run(seed: u64, verbose: bool) -> ExitCode {
    if verbose {
        println!("{:#?}", Scenario::from_seed(seed));
    }
    let r = run_seed(seed);
    println!("{}", r.line());
    if verbose {
        for d in &r.diagnostics {
            println!("{d}");
        }
    }
    match r.failures.first() {
        None => ExitCode::SUCCESS,
        Some(f) => {
            eprintln!("FAILED seed {seed}: {f}");
            eprintln!("replay: haul-sim run --seed {seed}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_sweep(start: u64, count: u64, jobs: usize) -> ExitCode {
    let wall = std::time::Instant::now();
    println!("sweep: seeds {start}..{} on {jobs} threads", start + count);
    let step = (count / 10).max(1);
    let progress = |done: u64, r: &RunReport| {
        if let Some(f) = r.failures.first() {
            println!("FAIL seed={}: {f}\n  replay: haul-sim run --seed {}", r.seed, r.seed);
        }
        if done.is_multiple_of(step) || done == count {
            println!("  {done}/{count} runs");
        }
    };
    let reports = sweep(start, count, jobs, &progress);
    let t = Totals::of(&reports);
    println!("rejects: {}", rejects_text(&t.rejects));
    println!(
        "attacks injected: {} ({}), rejected: {}",
        t.attacks.total(),
        attacks_text(&t.attacks),
        t.attacks_rejected
    );
    println!("corrupted datagrams rejected: {}", t.corrupted_rejected);
    println!("datagrams transmitted with unique (direction, shard, seq): {}", t.transmitted);
    println!("accepted junk: {}", t.accepted_junk);
    println!(
        "runs: {} complete, {} aborted on an injected disk error as expected, {} failed",
        t.complete, t.aborted, t.failed
    );
    let coverage: Vec<String> = t.coverage.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    println!("coverage (seeds per tag): {}", coverage.join(" "));
    println!("wall time: {:.1}s", wall.elapsed().as_secs_f64());
    let lost = count - reports.len() as u64;
    if lost > 0 {
        println!("sweep FAILED: {lost} runs did not report (a worker thread died)");
        return ExitCode::FAILURE;
    }
    if t.failed == 0 {
        println!("sweep passed");
        ExitCode::SUCCESS
    } else {
        println!("sweep FAILED: {} of {} seeds", t.failed, reports.len());
        ExitCode::FAILURE
    }
}

/// Sums over a sweep.
#[derive(Default)]
struct Totals {
    rejects: RejectCounts,
    attacks: AttackStats,
    attacks_rejected: u64,
    corrupted_rejected: u64,
    transmitted: u64,
    accepted_junk: u64,
    complete: u64,
    aborted: u64,
    failed: u64,
    coverage: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    fn of(reports: &[RunReport]) -> Totals {
        let mut t = Totals::default();
        for r in reports {
            t.rejects.merge(&r.rejects);
            t.attacks.merge(&r.attacks);
            t.attacks_rejected += r.attacks_rejected;
            t.corrupted_rejected += r.corrupted_rejected;
            t.transmitted += r.transmitted;
            t.accepted_junk += r
                .failures
                .iter()
                .filter(|f| {
                    matches!(f, Failure::AcceptedJunk { .. } | Failure::AcceptedCorrupt { .. })
                })
                .count() as u64;
            for tag in &r.coverage {
                *t.coverage.entry(tag.clone()).or_default() += 1;
            }
            match (r.is_ok(), r.fatal) {
                (false, _) => t.failed += 1,
                (true, None) => t.complete += 1,
                (true, Some(_)) => t.aborted += 1,
            }
        }
        t
    }
}

/// 24 MiB in three files over a 200 Mbit/s, 80 ms RTT path with 2% loss and some bursts, two
/// shards, under a light attack.
fn demo_scenario(seed: u64) -> Scenario {
    let mut s = Scenario::clean(seed);
    s.shards = 2;
    s.block_size_log2 = 20;
    s.window_bytes = 8 << 20;
    s.rate_bps = 180_000_000;
    s.files =
        [16 << 20, 8 << 20, 12_345].map(|size| FileSpec { size, kind: FileKind::Stored }).to_vec();
    let mut link = LinkConfig::clean(200_000_000, Duration::from_millis(40));
    link.loss = 0.02;
    link.burst =
        Some(GilbertElliott { p_good_to_bad: 0.001, p_bad_to_good: 0.2, loss_in_bad: 0.8 });
    link.jitter = Duration::from_micros(500);
    s.forward = link.clone();
    s.reverse = link;
    s.attacker =
        Some(haul_sim::attacker::AttackerConfig { rate_per_sec: 500, max_datagrams: 1000 });
    s
}

fn cmd_demo(seed: u64) -> ExitCode {
    let s = demo_scenario(seed);
    println!(
        "demo: {} files, {} bytes, {} shards, suite {}",
        s.files.len(),
        s.total_bytes(),
        s.shards,
        s.suite.name()
    );
    println!(
        "path: {} Mbit/s, {} ms one-way, {:.1}% random loss plus bursts; sender target {} Mbit/s",
        s.forward.rate_bps / 1_000_000,
        s.forward.delay.as_millis(),
        s.forward.loss * 100.0,
        s.rate_bps / 1_000_000
    );
    let wall = std::time::Instant::now();
    let r = run_scenario(&s);
    println!(
        "simulated time: {:.3} s (wall {:.2} s)",
        r.sim_time.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    println!("goodput: {:.1} Mbit/s", r.goodput_mbps());
    println!(
        "retransmitted: {} bytes ({:.2}% of the data)",
        r.resent_bytes,
        100.0 * r.resent_bytes as f64 / r.bytes.max(1) as f64
    );
    println!("rejected datagrams: {}", rejects_text(&r.rejects));
    println!(
        "attacker: {} injected ({}), {} rejected",
        r.attacks.total(),
        attacks_text(&r.attacks),
        r.attacks_rejected
    );
    println!("result: {}", r.line());
    if r.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn exit(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn print_table((lines, ok): (Vec<String>, bool)) -> bool {
    for l in lines {
        println!("{l}");
    }
    ok
}

/// The grid cells the filters keep, run on `jobs` threads (longest first), printed as they
/// finish and then in grid order.
fn cmd_grid(
    links: &[u64],
    rtts: &[u64],
    losses: &[u64],
    bdps: u64,
    policy: &str,
    seed: u64,
    jobs: usize,
) -> ExitCode {
    let Some(policy) = haul_proto::rate::Policy::from_name(policy) else {
        eprintln!("unknown policy {policy} (fixed, high, fair, low)");
        return ExitCode::from(2);
    };
    let keep = |list: &[u64], v: u64| list.is_empty() || list.contains(&v);
    let mut cells = Vec::new();
    for link in grid::LINKS_BPS {
        for rtt in grid::RTTS_MS {
            for loss in grid::LOSSES_PCT {
                if keep(links, link / 1_000_000) && keep(rtts, rtt) && keep(losses, loss) {
                    cells.push(grid::Cell {
                        link_bps: link,
                        rtt_ms: rtt,
                        loss_pct: loss,
                        policy,
                        bdps,
                        seed,
                    });
                }
            }
        }
    }
    println!("{}", grid::header());
    // Longest cells first (a cell's work grows with its file, link × RTT): in grid order the
    // four 1 Gbit/s, 1000 ms cells (5-9 min each) came last and ran two at a time with the
    // other threads idle, about 10 min of the grid's 35.
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cells[i].link_bps.saturating_mul(cells[i].rtt_ms)));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; cells.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 16) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    let c = &cells[i];
                    let r = grid::run_cell(c);
                    println!("{}", grid::row(&r));
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    println!("-- in grid order --");
    let mut all = true;
    for r in results.iter().flatten() {
        println!("{}", grid::row(r));
        all &= r.passes();
    }
    let passed = results.iter().flatten().filter(|r| r.passes()).count();
    println!("{passed} of {} cells pass", results.len());
    exit(all)
}
