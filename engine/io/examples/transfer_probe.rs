//! A quick look at the runtime's speed: both sides in one process over loopback, files in
//! /dev/shm. Not the headline benchmark (that one runs two processes: benches/).
//!
//! `cargo run --release -p haul-io --example transfer_probe -- SIZE_MIB SHARDS [cipher]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::transfer::{
    Keys, RecvJob, RecvOptions, SendJob, bind_shards, prepare_receive, run_receiver, run_sender,
};
use haul_proto::crypto::{SessionSecret, SuiteId};
use haul_proto::rate::RateLimits;
use haul_proto::session::{FileEntry, Manifest, Role, SessionParams};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let shards: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let suite = args.get(3).and_then(|s| SuiteId::from_name(s)).unwrap_or(SuiteId::Aes128CfbCmac);
    let base =
        std::path::PathBuf::from("/dev/shm").join(format!("haul-probe-{}", std::process::id()));
    std::fs::create_dir_all(base.join("dst")).unwrap();
    let src = base.join("src.bin");
    {
        let mut rng = haul_proto::rng::Rng::new(1);
        let mut chunk = vec![0u8; 1 << 20];
        let mut f = std::fs::File::create(&src).unwrap();
        for _ in 0..mib {
            rng.fill_bytes(&mut chunk);
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
    }
    let size = mib << 20;
    let files = vec![FileEntry { name: "out.bin".into(), size, mode: 0o644, mtime_ns: 0 }];
    let manifest = Arc::new(Manifest::new(files, 20).unwrap());
    let mut params = SessionParams::new(1, suite);
    params.shards = shards;
    params.rate = RateLimits { min_bps: 0, target_bps: 40_000_000_000 };
    let keys = |role| Keys {
        secret: SessionSecret([7; 32]),
        client_random: [1; 32],
        server_random: [2; 32],
        role,
    };
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rsock = bind_shards(lo, shards, None).unwrap();
    let ssock = bind_shards(lo, shards, None).unwrap();
    println!("backend: {} ({})", ssock.choice().kind.name(), ssock.choice().reason);
    let peers = rsock.local_addrs();
    let dst = base.join("dst");
    let resume = prepare_receive(&dst, &manifest, &RecvOptions::default()).unwrap();
    let rjob = RecvJob {
        params: params.clone(),
        keys: keys(Role::Server),
        manifest: manifest.clone(),
        dest: dst,
        options: RecvOptions::default(),
        sockets: rsock,
        resume: resume.clone(),
        pin_cores: true,
    };
    let r = std::thread::spawn(move || run_receiver(rjob, None));
    let sjob = SendJob {
        params,
        keys: keys(Role::Client),
        manifest,
        sources: vec![src],
        sockets: ssock,
        peers,
        resume,
        pin_cores: true,
    };
    let s = run_sender(sjob, None).unwrap();
    let r = r.join().unwrap().unwrap();
    let secs = s.elapsed.as_secs_f64();
    println!(
        "{} MiB, {} shards, {}: {:.2} Gbit/s, {:.2} s, CPU (both ends, one process) {:.2} s = {:.3} s/GiB, resent {} B, outcome {:?}/{:?}",
        mib,
        shards,
        suite.name(),
        size as f64 * 8.0 / secs / 1e9,
        secs,
        r.cpu_seconds,
        r.cpu_seconds / (size as f64 / (1u64 << 30) as f64),
        s.resent_bytes,
        s.outcome,
        r.outcome
    );
    println!("sender io {:?}\nreceiver io {:?}\nrejects {:?}", s.io, r.io, r.rejects);
    let _ = std::fs::remove_dir_all(&base);
}
