//! `haul serve --udp-listen IP:LO-HI` and `IP:PORT` (docs/GATE.md, "Starting it"): every shard
//! socket of every transfer binds a port of the range (for firewalls that open only those),
//! transfers through it work, and a range that has no free port for a transfer fails that
//! transfer cleanly rather than binding elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::net::UdpSocket;

use gate_common::{Appliance, haul};
use haul_tests::{TempDir, stderr, write_file};

/// The two tests run one at a time: each picks free ports and then binds them, so run side by
/// side one could pick a port inside the other's range before the other binds it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run of `n` consecutive UDP ports on 127.0.0.1 that are free now (bound and released).
fn free_ports(n: u16) -> u16 {
    let seed = u16::try_from(std::process::id() % 20_000).unwrap();
    for i in 0..2_000u16 {
        let base = 30_000 + (seed + i * 13) % 30_000;
        let held: Vec<_> =
            (base..base + n).filter_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free UDP ports");
}

/// The ports the gate logged for its transfers' shards.
fn logged_ports(log: &str) -> Vec<u16> {
    log.lines()
        .filter(|l| l.contains("data plane bound its UDP ports"))
        .filter_map(|l| l.split("ports=[").nth(1)?.split(']').next().map(str::to_string))
        .flat_map(|list| {
            list.split(',').map(|p| p.trim().parse::<u16>().unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

fn round_trip(app: &Appliance, work: &TempDir, name: &str) {
    let src = work.join(name);
    write_file(&src, 2 << 20, 9, 0o644);
    let put = app.mint("alice", "upload", "/", &[]);
    let out = haul(&["put", &put, src.to_str().unwrap()], &[]);
    assert!(out.status.success(), "put: {}", stderr(&out));
    let dest = work.join(format!("back-{name}"));
    std::fs::create_dir(&dest).unwrap();
    let get = app.mint("alice", "download", &format!("/{name}"), &[]);
    let out = haul(&["get", &get, dest.to_str().unwrap()], &[]);
    assert!(out.status.success(), "get: {}", stderr(&out));
    assert_eq!(std::fs::read(dest.join(name)).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn shard_sockets_bind_inside_the_port_range() {
    let _serial = serial();
    let base = free_ports(8);
    let range = format!("127.0.0.1:{base}-{}", base + 7);
    let app = Appliance::start_at(&[], "127.0.0.1:0", &range, &["--shards", "2"], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("udp-range");
    for name in ["a.bin", "b.bin", "c.bin"] {
        round_trip(&app, &work, name);
    }
    let ports = logged_ports(&app.log_text());
    assert_eq!(ports.len(), 6 * 2, "two shards for each of six transfers: {ports:?}");
    assert!(ports.iter().all(|p| (base..=base + 7).contains(p)), "{ports:?} outside {range}");
}

#[test]
fn a_fixed_port_carries_one_shard_and_a_taken_port_fails_cleanly() {
    let _serial = serial();
    let port = free_ports(1);
    let fixed = format!("127.0.0.1:{port}");
    let app = Appliance::start_at(&[], "127.0.0.1:0", &fixed, &[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("udp-fixed");
    round_trip(&app, &work, "f.bin");
    let ports = logged_ports(&app.log_text());
    assert_eq!(ports, vec![port, port], "one shard per transfer, on the fixed port");
    // Someone else holds the port: the transfer fails and says why; nothing binds elsewhere.
    let squatter = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let get = app.mint("alice", "download", "/f.bin", &[]);
    let dest = work.join("blocked");
    std::fs::create_dir(&dest).unwrap();
    let out = haul(&["get", &get, dest.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(app.log_text().contains("free UDP ports"), "{}", app.log_text());
    assert_eq!(app.udp_sockets(), 0);
    drop(squatter);
}
