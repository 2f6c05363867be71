//! Running scenarios: one run behind `catch_unwind`, and the parallel seed sweep.
//!
//! A panic anywhere in a run (ours or the protocol's) becomes a [`Failure::Panic`] carrying the
//! message and location, so a sweep reports the seed instead of dying. While a run is under way
//! its thread's panic output is captured rather than printed; panics elsewhere print as usual.
//!
//! Invariants: seeds are handed out by an atomic counter and results are stored by seed, so the
//! sweep's report does not depend on thread timing; the sweep runs at most [`MAX_JOBS`] threads.

use crate::driver::Sim;
use crate::report::{Failure, RunReport};
use crate::scenario::Scenario;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most worker threads a sweep starts.
pub const MAX_JOBS: usize = 64;

thread_local! {
    /// `Some` while a run is capturing this thread's panics: the last message, once one fired.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_capturing_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURED.with(|c| {
                let mut c = c.borrow_mut();
                c.as_mut().map(|slot| *slot = info.to_string()).is_some()
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Run one scenario to its end (or failure), never panicking.
pub fn run_scenario(sc: &Scenario) -> RunReport {
    install_capturing_hook();
    CAPTURED.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = catch_unwind(AssertUnwindSafe(|| match Sim::new(sc) {
        Ok(sim) => sim.run(),
        Err(f) => {
            let mut r = RunReport::new(sc.seed, sc.suite, sc.shards, sc.sender_role);
            r.failures.push(f);
            r
        }
    }));
    let message = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let mut report = result.unwrap_or_else(|_| {
        let mut r = RunReport::new(sc.seed, sc.suite, sc.shards, sc.sender_role);
        r.files = sc.files.len();
        r.bytes = sc.total_bytes();
        r.failures.push(Failure::Panic(message.replace('\n', " ")));
        r
    });
    report.coverage = sc.coverage_tags();
    report
}

/// Run the scenario of `seed`.
pub fn run_seed(seed: u64) -> RunReport {
    run_scenario(&Scenario::from_seed(seed))
}

/// Run seeds `start..start + count` on `jobs` threads. `progress` is called (from worker
/// threads) after each run with the number finished so far and that run's report.
pub fn sweep(
    start: u64,
    count: u64,
    jobs: usize,
    progress: &(dyn Fn(u64, &RunReport) + Sync),
) -> Vec<RunReport> {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let jobs = jobs.clamp(1, MAX_JOBS);
    let mut reports: Vec<RunReport> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return mine;
                        }
                        let r = run_seed(start + i);
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1, &r);
                        mine.push(r);
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}
