//! Path-MTU probing through the gate (docs/DATAPLANE.md "Path MTU"; docs/GATE.md): `haul
//! serve` in one network namespace, the client in another, joined by a veth pair at MTU 4000
//! that this test creates and removes. `haul put` (the client sends) and `haul get` (the
//! gate sends) both probe with `--datagram-size auto`, the default: each `--json` says the
//! size reached, 3972 (4000 less 28 bytes of IPv4 and UDP headers), and every file arrives
//! byte-identical. A `get --datagram-size 2000` holds the gate's search at or below 2000.
//! `haul serve --datagram-size 2000` (the gate's own ceiling) holds both directions at or
//! below 2000 on the same MTU-4000 path, and refuses a put that offers more.
//!
//! Needs root and iproute2; touches no host state: everything lives in the two namespaces,
//! removed by a guard (also on a panic).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::process::Command;

use gate_common::{Appliance, sh};
use haul_tests::{TRANSFER_TIMEOUT, TempDir, run, stderr, stdout, write_file};

const SERVER_IP: &str = "10.78.1.1";
/// File bytes per transfer: the search ends within a round trip of the first datagram, so
/// most of this goes at the found size.
const FILE_BYTES: usize = 32 << 20;

/// The tests here share one address plan: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The server's and the client's namespaces, deleted on drop.
struct Net {
    s: String,
    c: String,
}

impl Net {
    /// Namespaces named after this process and `tag` (one per test).
    fn new(tag: &str) -> Net {
        let id = std::process::id();
        let n = Net { s: format!("haulpm{tag}-s-{id}"), c: format!("haulpm{tag}-c-{id}") };
        for ns in [&n.s, &n.c] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &n.s, "link", "add", "hps0", "type", "veth", "peer", "name", "hps1"]);
        sh(&["ip", "-n", &n.s, "link", "set", "hps1", "netns", &n.c]);
        for (ns, dev, addr) in [(&n.s, "hps0", "10.78.1.1/24"), (&n.c, "hps1", "10.78.1.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "mtu", "4000", "up"]);
        }
        n
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.s, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `haul ARGS` in the client's namespace, `--json`; returns its summary.
fn client(net: &Net, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.c]).arg(haul_tests::haul_bin()).args(args);
    let out = run(&mut cmd, TRANSFER_TIMEOUT);
    assert!(out.status.success(), "haul {args:?}: {}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn datagram_size(v: &serde_json::Value) -> u64 {
    v["datagram_size"].as_u64().unwrap_or_else(|| panic!("no datagram_size in {v}"))
}

fn assert_root_and_iproute2() {
    let root = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&root.stdout).trim(), "0", "this test needs root");
    assert!(gate_common::have("ip"), "this test needs iproute2");
}

#[test]
fn put_and_get_through_the_gate_probe_the_path_mtu() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_root_and_iproute2();
    let net = Net::new("a");
    let wrapper = ["ip", "netns", "exec", net.s.as_str()];
    let listen = format!("{SERVER_IP}:0");
    let app = Appliance::start_at(&wrapper, &listen, &listen, &[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("pmtu-gate");
    let src = work.join("up.bin");
    write_file(&src, FILE_BYTES, 11, 0o644);

    // Upload: the client's sender probes; the gate's receiver acknowledges.
    let up = app.mint("alice", "upload", "/", &[]);
    let v = client(&net, &["put", "--json", &up, src.to_str().unwrap()]);
    assert_eq!(datagram_size(&v), 4000 - 28, "put: {v}");
    assert!(v["pmtu"]["probes_acked"].as_u64() >= Some(1), "put: {v}");
    let stored = app.storage("alice").join("up.bin");
    assert!(std::fs::read(&stored).unwrap() == std::fs::read(&src).unwrap(), "upload differs");
    println!("put: {v}");

    // Download: the gate's sender probes; the client's receiver reports the largest probe
    // it acknowledged, the size the gate's search reached.
    let url = app.mint("alice", "download", "/up.bin", &[]);
    let dest = work.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let v = client(&net, &["get", "--json", &url, dest.to_str().unwrap()]);
    assert_eq!(datagram_size(&v), 4000 - 28, "get: {v}");
    assert!(v["pmtu"]["probes_acked"].as_u64() >= Some(1), "get: {v}");
    assert!(std::fs::read(dest.join("up.bin")).unwrap() == std::fs::read(&src).unwrap());
    println!("get: {v}");

    // `get --datagram-size 2000`: the client acknowledges no probe above 2000.
    let url = app.mint("alice", "download", "/up.bin", &[]);
    let capped = work.join("capped");
    std::fs::create_dir(&capped).unwrap();
    let args = ["get", "--json", "--datagram-size", "2000", &url, capped.to_str().unwrap()];
    let v = client(&net, &args);
    let size = datagram_size(&v);
    assert!(size <= 2000, "get under a 2000 ceiling acknowledged {size}: {v}");
    assert!(std::fs::read(capped.join("up.bin")).unwrap() == std::fs::read(&src).unwrap());
    println!("get --datagram-size 2000: {v}");
}

#[test]
fn the_gates_own_datagram_size_ceiling_holds_both_directions() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_root_and_iproute2();
    let net = Net::new("b");
    let wrapper = ["ip", "netns", "exec", net.s.as_str()];
    let listen = format!("{SERVER_IP}:0");
    let app = Appliance::start_at(&wrapper, &listen, &listen, &["--datagram-size", "2000"], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("pmtu-gate-cap");
    let src = work.join("up.bin");
    write_file(&src, FILE_BYTES, 12, 0o644);

    // Upload: the client probes (auto); the gate answers no probe above 2000.
    let up = app.mint("alice", "upload", "/", &[]);
    let v = client(&net, &["put", "--json", &up, src.to_str().unwrap()]);
    let size = datagram_size(&v);
    assert!((1472..=2000).contains(&size), "put to a gate capped at 2000 reached {size}: {v}");
    // Not asserted: that a probe above 2000 was counted lost. On a quiet machine the 32 MiB
    // put ends (0.11 s in CI) before the unanswered probe's loss timeout; the size bound above
    // is what the ceiling guarantees (uncapped, the same put reaches 3972: the test above).
    let stored = app.storage("alice").join("up.bin");
    assert!(std::fs::read(&stored).unwrap() == std::fs::read(&src).unwrap(), "upload differs");
    println!("put to a gate capped at 2000: {v}");

    // Download: the gate's own search stays at or below 2000 (the client would take 3972).
    let url = app.mint("alice", "download", "/up.bin", &[]);
    let dest = work.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let v = client(&net, &["get", "--json", &url, dest.to_str().unwrap()]);
    let size = datagram_size(&v);
    assert!((1472..=2000).contains(&size), "get from a gate capped at 2000 reached {size}: {v}");
    assert!(std::fs::read(dest.join("up.bin")).unwrap() == std::fs::read(&src).unwrap());
    println!("get from a gate capped at 2000: {v}");

    // A put that insists on 3000-byte datagrams is refused, saying why.
    let up = app.mint("alice", "upload", "/", &[]);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.c]).arg(haul_tests::haul_bin());
    cmd.args(["put", "--datagram-size", "3000", &up, src.to_str().unwrap()]);
    let out = run(&mut cmd, TRANSFER_TIMEOUT);
    assert!(!out.status.success(), "a 3000-byte put passed a gate capped at 2000");
    assert!(stderr(&out).contains("ceiling of 2000"), "refusal: {}", stderr(&out));
}

#[test]
fn serve_refuses_a_datagram_size_out_of_range() {
    let work = TempDir::new("pmtu-gate-flag");
    for bad in ["100", "9001", "big"] {
        let mut cmd = Command::new(haul_tests::haul_bin());
        cmd.args(["serve", "--data-dir"]).arg(work.join("data"));
        cmd.args(["--datagram-size", bad]);
        let out = run(&mut cmd, TRANSFER_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "serve --datagram-size {bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("512..=9000"),
            "serve --datagram-size {bad}: {}",
            stderr(&out)
        );
    }
}
