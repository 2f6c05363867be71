fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut s = haul_sim::Scenario::from_seed(seed);
    println!("{:?}", s.attacker);
    println!("{}", haul_sim::run_scenario(&s).line());
    s.attacker = None;
    println!("{}", haul_sim::run_scenario(&s).line());
}
