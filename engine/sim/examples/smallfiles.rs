//! Many small files through the simulator: each seed's scenario (faults, shards, suite, roles)
//! with its files replaced by FILES files of 1-64 KiB and no fatal fault, so every run must
//! complete; a stall shows as a failure. `cargo run --profile sim -p haul-sim --example smallfiles -- START SEEDS FILES`
use haul_sim::Scenario;

/// Most files one run carries (a run holds every file's bytes in memory).
const MAX_FILES: u64 = 20_000;

fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (start, seeds, files) = (arg(1, 0), arg(2, 20), arg(3, 300).min(MAX_FILES));
    let verbose = std::env::var_os("SMALLFILES_VERBOSE").is_some();
    let mut failed = 0;
    for seed in start..start + seeds {
        let mut s = Scenario::small_files(seed, files);
        let res = haul_sim::run_scenario(&s);
        let verdict = res.failures.first().map_or_else(|| "ok".to_string(), |f| f.to_string());
        if !res.failures.is_empty() {
            failed += 1;
            if verbose {
                let files = std::mem::take(&mut s.files);
                println!(
                    "{s:#?}\n{} files, {} bytes",
                    files.len(),
                    files.iter().map(|f| f.size).sum::<u64>()
                );
                println!("{}", res.line());
                for d in &res.diagnostics {
                    println!("{d}");
                }
            }
        }
        println!(
            "seed={seed} shards={} files={files} {verdict} outcomes={:?}",
            s.shards, res.outcomes
        );
    }
    println!("failed {failed} of {seeds}");
}
