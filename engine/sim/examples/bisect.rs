//! Bisect a failing seed: rerun it with one fault class removed at a time.
fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let base = haul_sim::Scenario::from_seed(seed);
    let variants: Vec<(&str, Box<dyn Fn(&mut haul_sim::Scenario)>)> = vec![
        ("as is", Box::new(|_| {})),
        ("no attacker", Box::new(|s| s.attacker = None)),
        ("no fatal", Box::new(|s| s.fatal = None)),
        (
            "no reorder/jitter",
            Box::new(|s| {
                for l in [&mut s.forward, &mut s.reverse] {
                    l.reorder = 0.0;
                    l.jitter = haul_proto::time::Duration::ZERO;
                }
            }),
        ),
        (
            "no loss",
            Box::new(|s| {
                for l in [&mut s.forward, &mut s.reverse] {
                    l.loss = 0.0;
                    l.burst = None;
                }
            }),
        ),
        (
            "no dup/corrupt",
            Box::new(|s| {
                for l in [&mut s.forward, &mut s.reverse] {
                    l.duplicate = 0.0;
                    l.corrupt = 0.0;
                }
            }),
        ),
        (
            "no disk faults",
            Box::new(|s| {
                for d in &mut s.disks {
                    d.p_interrupted = 0.0;
                    d.p_short = 0.0;
                }
            }),
        ),
    ];
    for (name, f) in variants {
        let mut s = base.clone();
        f(&mut s);
        let r = haul_sim::run_scenario(&s);
        let fail = r.failures.first().map(|f| f.to_string()).unwrap_or_else(|| "ok".into());
        println!("{name:>18}: {fail}");
    }
}
