//! Path-MTU probing end to end: the release `haul send` and `haul recv` in two network
//! namespaces this test creates, joined by a veth pair with MTU 4000 (IPv4, then IPv6, then
//! with `haul recv --datagram-size 2000`, a ceiling the receiver holds by leaving larger
//! probes unanswered), then with a router namespace in the middle whose far link has MTU 2000
//! (so the sender's interface says 4000 but the path carries only 2000), and last with the
//! sender's veth lowered from 4000 to 2000 mid-transfer, so the kernel refuses its datagrams
//! with EMSGSIZE. `--json` says which datagram size the sender settled on; the file must
//! arrive byte-identical.
//!
//! Root only (namespaces); skipped with a note otherwise. One test function, so the runs are
//! serial; every namespace (and with it every veth) is deleted when its guard drops, also when
//! the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_tests::{
    Receiver, TRANSFER_TIMEOUT, TempDir, haul_bin, keygen, stderr, stdout, wait, write_file,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// File bytes per transfer: at the rate below it lasts several seconds, long enough for the
/// search (each size the path refuses costs 3 probe timeouts of at least 100 ms).
const FILE_BYTES: usize = 96 << 20;
/// The sender's target rate: slow enough that the search ends before the data does, even on
/// a loaded 2-core machine.
const RATE: &str = "200M";

/// `ip ARGS...`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Network namespaces that are deleted (with their veths) on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        ip(&["netns", "add", &name]);
        self.0.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A veth pair: `a` in `ns_a` with `addr_a`, `b` in `ns_b` with `addr_b`, both at `mtu`.
fn veth(ns_a: &str, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str, mtu: &str) {
    ip(&["link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b]);
    for (ns, dev, addr) in [(ns_a, a, addr_a), (ns_b, b, addr_b)] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "mtu", mtu, "up"]);
    }
}

fn can_make_namespaces() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    root && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// Receive in `ns_b` on `listen` (with `recv_extra` flags), send `file` from `ns_a`, run
/// `during` while the sender runs; returns the sender's JSON summary.
fn transfer_with(
    (ns_a, ns_b): (&str, &str),
    listen: &str,
    file: &Path,
    dir: &TempDir,
    recv_extra: &[&str],
    during: &dyn Fn(),
) -> serde_json::Value {
    let _ = std::fs::remove_file(dir.join("key"));
    let key = keygen(dir, "key");
    let dest = dir.join("dest");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns_b])
        .arg(haul_bin())
        .args(["recv", "--listen", listen, "--key-file"])
        .arg(&key)
        .args(recv_extra)
        .arg(&dest);
    let recv = Receiver::spawn(cmd);
    let addr = recv.addr.clone();
    let sender = Command::new("ip")
        .args(["netns", "exec", ns_a])
        .arg(haul_bin())
        .args(["send", "--to", &addr, "--key-file"])
        .arg(&key)
        .args(["--json", "--rate", RATE, "--datagram-size", "auto"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning haul send");
    during();
    let out = wait(sender, TRANSFER_TIMEOUT, "haul send");
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    assert!(r.status.success(), "recv failed: {}", stderr(&r));
    let name = file.file_name().unwrap();
    let got = std::fs::read(dest.join(name)).expect("received file");
    let want = std::fs::read(file).unwrap();
    assert!(got == want, "the file did not arrive byte-identical");
    serde_json::from_str(stdout(&out).trim()).expect("one JSON object from haul send --json")
}

fn transfer(ns_a: &str, ns_b: &str, listen: &str, file: &Path, dir: &TempDir) -> serde_json::Value {
    transfer_with((ns_a, ns_b), listen, file, dir, &[], &|| {})
}

/// Bytes sent so far on `dev` in `ns` (its kernel counter).
fn tx_bytes(ns: &str, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_bytes");
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", &path]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Sender bytes on the wire before the MTU drops: far past the search (one round trip on a
/// veth), well before the end of the file.
const BYTES_BEFORE_DROP: u64 = 24 << 20;
/// Longest wait for them (nominally about a second at `RATE`).
const DROP_WAIT: Duration = Duration::from_secs(120);

fn datagram_size(v: &serde_json::Value) -> u64 {
    v["datagram_size"].as_u64().unwrap_or_else(|| panic!("no datagram_size in {v}"))
}

#[test]
fn probing_finds_the_veth_mtu_and_a_smaller_router_mtu() {
    if !can_make_namespaces() {
        println!("note: not root or no `ip`: the namespace test of path-MTU probing is skipped");
        return;
    }
    let dir = TempDir::new("pmtu");
    let file = dir.join("big.bin");
    write_file(&file, FILE_BYTES, 7, 0o644);
    let tag = std::process::id();

    // 1. Two namespaces, one veth at MTU 4000: the route's MTU is the path's.
    {
        let mut ns = Namespaces(vec![]);
        let a = ns.add(format!("hpm-a-{tag}"));
        let b = ns.add(format!("hpm-b-{tag}"));
        veth(&a, "hpma", "10.201.0.1/24", &b, "hpmb", "10.201.0.2/24", "4000");
        let v = transfer(&a, &b, "10.201.0.2:0", &file, &dir);
        assert_eq!(datagram_size(&v), 4000 - 28, "{v}");
        assert!(v["pmtu"]["probes_acked"].as_u64() >= Some(1), "{v}");
        println!("veth path: {v}");
        std::fs::remove_dir_all(dir.join("dest")).unwrap();
        // `haul recv --datagram-size 2000`: a ceiling on both ends. The receiver acknowledges
        // no probe above 2000, so the sender's search settles at or below it.
        let extra = ["--datagram-size", "2000"];
        let v = transfer_with((&a, &b), "10.201.0.2:0", &file, &dir, &extra, &|| {});
        let size = datagram_size(&v);
        assert!(size <= 2000 && size > 1472, "datagram size {size} under a 2000 ceiling: {v}");
        assert!(v["pmtu"]["probes_lost"].as_u64() >= Some(3), "{v}");
        println!("veth path, receiver ceiling 2000: {v}");
        std::fs::remove_dir_all(dir.join("dest")).unwrap();
        // The same veth over IPv6 (48 header bytes instead of 28).
        ip(&["-n", &a, "addr", "add", "fd77:201::1/64", "dev", "hpma", "nodad"]);
        ip(&["-n", &b, "addr", "add", "fd77:201::2/64", "dev", "hpmb", "nodad"]);
        let v = transfer(&a, &b, "[fd77:201::2]:0", &file, &dir);
        assert_eq!(datagram_size(&v), 4000 - 48, "{v}");
        println!("veth path, IPv6: {v}");
        std::fs::remove_dir_all(dir.join("dest")).unwrap();
    }

    // 2. A router namespace in the middle: sender side MTU 4000, far side MTU 2000. The
    //    sender's interface says 4000; only probing finds 2000.
    {
        let mut ns = Namespaces(vec![]);
        let a = ns.add(format!("hpm-a-{tag}"));
        let r = ns.add(format!("hpm-r-{tag}"));
        let b = ns.add(format!("hpm-b-{tag}"));
        veth(&a, "hpma", "10.202.1.1/24", &r, "hpmra", "10.202.1.2/24", "4000");
        veth(&r, "hpmrb", "10.202.2.1/24", &b, "hpmb", "10.202.2.2/24", "2000");
        ip(&["-n", &a, "route", "add", "10.202.2.0/24", "via", "10.202.1.2"]);
        ip(&["-n", &b, "route", "add", "10.202.1.0/24", "via", "10.202.2.1"]);
        let fwd = Command::new("ip")
            .args(["netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("sysctl in the router namespace");
        assert!(fwd.success());
        let v = transfer(&a, &b, "10.202.2.2:0", &file, &dir);
        let size = datagram_size(&v);
        let path = 2000 - 28;
        assert!(size <= path && size > 1472, "datagram size {size} for a {path}-byte path: {v}");
        assert!(v["pmtu"]["probes_lost"].as_u64() >= Some(3), "{v}");
        println!("router path: {v}");
        std::fs::remove_dir_all(dir.join("dest")).unwrap();
    }

    // 3. The sender's own veth shrinks from 4000 to 2000 mid-transfer: its datagrams at 3972
    //    are refused by the kernel (EMSGSIZE). The size drops, what was refused is sent
    //    again, and the file still arrives whole.
    {
        let mut ns = Namespaces(vec![]);
        let a = ns.add(format!("hpm-a-{tag}"));
        let b = ns.add(format!("hpm-b-{tag}"));
        veth(&a, "hpma", "10.203.0.1/24", &b, "hpmb", "10.203.0.2/24", "4000");
        let shrink = || {
            let start = Instant::now();
            while tx_bytes(&a, "hpma") < BYTES_BEFORE_DROP {
                assert!(start.elapsed() < DROP_WAIT, "the sender never got going");
                std::thread::sleep(Duration::from_millis(20));
            }
            ip(&["-n", &a, "link", "set", "hpma", "mtu", "2000"]);
        };
        let v = transfer_with((&a, &b), "10.203.0.2:0", &file, &dir, &[], &shrink);
        let size = datagram_size(&v);
        assert!((1472..=2000 - 28).contains(&size), "datagram size {size} after the drop: {v}");
        assert!(v["pmtu"]["too_large"].as_u64() >= Some(1), "no EMSGSIZE seen: {v}");
        println!("veth shrunk mid-transfer: {v}");
    }
}
