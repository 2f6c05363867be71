//! No reflection, against the release binary and across network namespaces (issue 5, "No
//! reflection"; docs/GATE.md): the gate sends data only to the source address of an
//! authenticated client datagram of that session, and only when that address is the SSH
//! connection's own.
//!
//! Three namespaces the test creates and removes: the server `S` (10.77.1.1 towards the
//! client, 10.77.2.1 towards the third party), the client `C` (10.77.1.2) and a third party
//! `T` (10.77.2.3) that only listens and counts the UDP datagrams reaching it (its
//! `/proc/net/snmp` counters: `InDatagrams` + `NoPorts`). First a plain `haul get` from `C`
//! works (the topology is sound). Then `C` rewrites the source of its UDP datagrams to T's
//! address (iptables SNAT: the client's first, authenticated datagram arrives from an address
//! it does not own) while its SSH still comes from 10.77.1.2: the download must fail and T must
//! receive nothing, although the server did receive the spoofed datagrams.
//!
//! Needs root, iproute2 and iptables. Touches no host state: everything lives in the three
//! namespaces, removed by a guard (also on a panic).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::process::{Command, Output};
use std::time::Duration;

use gate_common::{Appliance, have, sh};
use haul_tests::{TempDir, run, stderr, write_file};

/// Deadline for the spoofed download to give up (its receiver's idle timeout is 30 s).
const SPOOFED_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline for the plain download of a small file (nominally well under a second).
const PLAIN_DEADLINE: Duration = Duration::from_secs(120);
const SERVER_IP: &str = "10.77.1.1";
const THIRD_IP: &str = "10.77.2.3";

/// Three namespaces, deleted on drop.
struct Net {
    s: String,
    c: String,
    t: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let n = Net {
            s: format!("haulrefl-s-{id}"),
            c: format!("haulrefl-c-{id}"),
            t: format!("haulrefl-t-{id}"),
        };
        for ns in [&n.s, &n.c, &n.t] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n.link("sc", &n.c.clone(), "10.77.1.1/24", "10.77.1.2/24");
        n.link("st", &n.t.clone(), "10.77.2.1/24", "10.77.2.3/24");
        sh(&["ip", "-n", &n.c, "route", "add", "default", "via", "10.77.1.1"]);
        sh(&["ip", "-n", &n.t, "route", "add", "default", "via", "10.77.2.1"]);
        // The spoofed datagrams arrive on the client's link with the third party's address:
        // no reverse-path filter may drop them before the gate sees them.
        for key in ["all", "default", "sc0"] {
            let k = format!("net.ipv4.conf.{key}.rp_filter=0");
            sh(&["ip", "netns", "exec", &n.s, "sysctl", "-q", "-w", &k]);
        }
        n
    }

    /// A veth pair `NAME0` (in S, `s_addr`) and `NAME1` (in `peer`, `p_addr`).
    fn link(&self, name: &str, peer: &str, s_addr: &str, p_addr: &str) {
        let (a, b) = (format!("{name}0"), format!("{name}1"));
        sh(&["ip", "-n", &self.s, "link", "add", &a, "type", "veth", "peer", "name", &b]);
        sh(&["ip", "-n", &self.s, "link", "set", &b, "netns", peer]);
        sh(&["ip", "-n", &self.s, "addr", "add", s_addr, "dev", &a]);
        sh(&["ip", "-n", peer, "addr", "add", p_addr, "dev", &b]);
        sh(&["ip", "-n", &self.s, "link", "set", &a, "up"]);
        sh(&["ip", "-n", peer, "link", "set", &b, "up"]);
    }

    /// UDP datagrams that reached namespace `ns` (delivered or to a closed port).
    fn udp_in(&self, ns: &str) -> u64 {
        let out = sh(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
        let pick = |want: &str| -> u64 {
            let i = names.split_whitespace().position(|n| n == want).unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        };
        pick("InDatagrams") + pick("NoPorts")
    }

    fn exec(&self, ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.into()]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.s, &self.c, &self.t] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn get_in(net: &Net, url: &str, dest: &std::path::Path, deadline: Duration) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.c]).arg(haul_tests::haul_bin());
    cmd.args(["get", url]).arg(dest);
    run(&mut cmd, deadline)
}

#[test]
fn a_download_aimed_at_a_third_address_sends_it_nothing() {
    let root = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&root.stdout).trim(), "0", "this test needs root");
    assert!(have("ip") && have("iptables"), "this test needs iproute2 and iptables");
    let net = Net::new();
    let wrapper = net.exec(&net.s);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let ssh = format!("{SERVER_IP}:0");
    let udp = format!("{SERVER_IP}:0");
    let app = Appliance::start_at(&wrapper, &ssh, &udp, &[], &[]);
    app.add_user("alice", &[]);
    write_file(&app.storage("alice").join("f.bin"), 4 << 20, 5, 0o644);
    let work = TempDir::new("reflection");

    // The topology works: a plain download from C succeeds.
    let plain = work.join("plain");
    std::fs::create_dir(&plain).unwrap();
    let url = app.mint("alice", "download", "/f.bin", &[]);
    assert!(url.contains(SERVER_IP), "the URL names the server's address: {url}");
    let out = get_in(&net, &url, &plain, PLAIN_DEADLINE);
    assert!(out.status.success(), "plain get: {}", stderr(&out));

    // T counts what reaches it: a probe from S is seen.
    let t0 = net.udp_in(&net.t);
    let probe = format!("echo probe > /dev/udp/{THIRD_IP}/9");
    sh(&["ip", "netns", "exec", &net.s, "bash", "-c", &probe]);
    let t1 = net.udp_in(&net.t);
    assert!(t1 > t0, "the third party's counter sees a datagram sent to it");

    // Now C's UDP leaves with T's address as its source; its SSH does not change.
    sh(&[
        "ip",
        "netns",
        "exec",
        &net.c,
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-p",
        "udp",
        "-d",
        SERVER_IP,
        "-j",
        "SNAT",
        "--to-source",
        THIRD_IP,
    ]);
    let s_before = net.udp_in(&net.s);
    let spoofed = work.join("spoofed");
    std::fs::create_dir(&spoofed).unwrap();
    let url = app.mint("alice", "download", "/f.bin", &[]);
    let out = get_in(&net, &url, &spoofed, SPOOFED_DEADLINE);
    assert!(!out.status.success(), "the spoofed download must not complete");
    assert!(net.udp_in(&net.s) > s_before, "the spoofed datagrams did reach the server");
    assert_eq!(net.udp_in(&net.t), t1, "the third address received nothing from the gate");
    assert!(!spoofed.join("f.bin").exists());
}
