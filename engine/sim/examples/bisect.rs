//! Bisect a failing seed: rerun its scenario with one fault class removed at a time, to see
//! which ingredient the failure needs. `cargo run -p haul-sim --example bisect -- SEED`
use haul_proto::time::Duration;
use haul_sim::Scenario;

type Variant = (&'static str, fn(&mut Scenario));

const VARIANTS: [Variant; 7] = [
    ("as is", |_| {}),
    ("no attacker", |s| s.attacker = None),
    ("no fatal", |s| s.fatal = None),
    ("no reorder/jitter", |s| {
        for l in [&mut s.forward, &mut s.reverse] {
            l.reorder = 0.0;
            l.jitter = Duration::ZERO;
        }
    }),
    ("no loss", |s| {
        for l in [&mut s.forward, &mut s.reverse] {
            l.loss = 0.0;
            l.burst = None;
        }
    }),
    ("no dup/corrupt", |s| {
        for l in [&mut s.forward, &mut s.reverse] {
            l.duplicate = 0.0;
            l.corrupt = 0.0;
        }
    }),
    ("no disk faults", |s| {
        for d in &mut s.disks {
            d.p_interrupted = 0.0;
            d.p_short = 0.0;
        }
    }),
];

fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let base = Scenario::from_seed(seed);
    for (name, change) in VARIANTS {
        let mut s = base.clone();
        change(&mut s);
        let r = haul_sim::run_scenario(&s);
        let verdict = r.failures.first().map_or_else(|| "ok".to_string(), |f| f.to_string());
        println!("{name:>18}: {verdict}");
    }
}
