//! The WAN emulator end to end: real namespaces, real TUN devices, real UDP sockets.
//!
//! These tests change global state (network namespaces), so they take a file lock and run one
//! at a time, even across test binaries. They need root, `/dev/net/tun` and iproute2; without
//! them each test prints why and passes without running (the rest of the suite must still run
//! on a laptop or an unprivileged CI runner). Every emulator they start is dropped or stopped
//! before the test ends, which deletes its namespaces; test (d) checks exactly that.
//!
//! Bands are generous on purpose: the machine has 2 cores shared with compilers, and the
//! assertions are about the emulator's behaviour (never early, never over the rate, drops
//! accounted for), not about how fast this machine is.

// The helpers below are only called from tests: a panic there is the test failing
// (STYLE.md rule 6); clippy's allow-unwrap-in-tests does not reach non-#[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use haul_io::wan::{self, ADDR_A, ADDR_B, Config, DirectionConfig, Emulator, netns, traffic};

const LOCK_PATH: &str = "/tmp/haul-wanemu-tests.lock";

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let is_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .is_some_and(|euid| euid == "0");
    if !is_root {
        return Some("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no iproute2 (ip)".into());
    }
    None
}

/// Takes the cross-process lock, or returns None (after printing why) when we must skip.
fn guard(test: &str) -> Option<File> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    let file = File::create(LOCK_PATH).unwrap();
    file.lock().unwrap();
    Some(file)
}

fn direction(rate_bps: u64, delay_ms: u64, loss: f64) -> DirectionConfig {
    DirectionConfig {
        rate_bps,
        delay_ns: delay_ms * 1_000_000,
        jitter_ns: 0,
        loss,
        queue_bytes: None,
    }
}

fn config(tag: &str, dir: DirectionConfig) -> Config {
    Config {
        name: format!("t{}{tag}", std::process::id()),
        a_to_b: dir,
        b_to_a: dir,
        seed: 7,
        is_realtime: true,
    }
}

fn socket_in(ns: &str, ip: std::net::Ipv4Addr, port: u16) -> UdpSocket {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    netns::in_netns(ns, || UdpSocket::bind(addr)).unwrap().unwrap()
}

#[test]
fn wanemu_a_echo_rtt_is_twice_the_delay() {
    let Some(_lock) = guard("echo rtt") else { return };
    let delay_ms = 20;
    let emu = Emulator::start(&config("rtt", direction(100_000_000, delay_ms, 0.0))).unwrap();
    let ends = emu.endpoints().clone();
    let server = socket_in(&ends.netns_b, ADDR_B, 7007);
    let client = socket_in(&ends.netns_a, ADDR_A, 0);
    server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    server.send_to(&buf[..n], from).unwrap();
                }
            }
        })
    };
    let mut rtts = Vec::new();
    let mut buf = [0u8; 2048];
    for seq in 0u32..30 {
        let sent = Instant::now();
        client.send_to(&seq.to_le_bytes(), SocketAddr::from((ADDR_B, 7007))).unwrap();
        let n = client.recv(&mut buf).expect("echo reply within 2 s");
        assert_eq!(&buf[..n], &seq.to_le_bytes());
        rtts.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    let report = emu.stop().unwrap();
    rtts.sort();
    let low = Duration::from_millis(2 * delay_ms);
    let high = low + Duration::from_millis(50);
    eprintln!("rtt min {:?} median {:?} max {:?}", rtts[0], rtts[15], rtts[29]);
    eprint!("{report}");
    // Never early: a packet released before its time is a bug, whatever the load.
    assert!(rtts[0] >= low, "rtt {:?} below 2 x delay", rtts[0]);
    assert!(rtts[15] <= high, "median rtt {:?} above 2 x delay + 50 ms", rtts[15]);
    let in_band = rtts.iter().filter(|r| **r <= high).count();
    assert!(in_band >= 27, "only {in_band}/30 rtts within the band");
    assert_eq!(report.a_to_b.delivered_packets, 30);
    assert_eq!(report.b_to_a.delivered_packets, 30);
}

#[test]
fn wanemu_b_blast_at_twice_the_rate_delivers_at_most_the_rate() {
    let Some(_lock) = guard("rate") else { return };
    let rate_bps = 20_000_000;
    let emu = Emulator::start(&config("rate", direction(rate_bps, 5, 0.0))).unwrap();
    let ends = emu.endpoints().clone();
    let queue_bytes = ends.a_to_b.queue_bytes;
    let rx = socket_in(&ends.netns_b, ADDR_B, 9000);
    let tx = socket_in(&ends.netns_a, ADDR_A, 0);
    let sink = std::thread::spawn(move || {
        traffic::sink(&rx, Duration::from_millis(500), Duration::from_secs(20)).unwrap()
    });
    let to = SocketAddr::from((ADDR_B, 9000));
    let blast = traffic::blast(&tx, to, 2 * rate_bps, Duration::from_secs(2), traffic::PAYLOAD_MAX)
        .unwrap();
    let got = sink.join().unwrap();
    let report = emu.stop().unwrap();
    let s = &report.a_to_b;
    eprintln!("{blast:?}\n{got:?}\n{report}");
    // What the receiver saw over the run stays under the rate.
    let run_secs = blast.elapsed.as_secs_f64() + 0.1;
    let cap = rate_bps as f64 / 8.0 * run_secs * 1.1 + queue_bytes as f64;
    assert!((got.ip_bytes as f64) <= cap, "received {} bytes > cap {cap}", got.ip_bytes);
    // ... and the link was used: at least 80% of the rate arrived.
    assert!(got.rate_bps() >= 0.8 * rate_bps as f64, "rate {} bps", got.rate_bps());
    // Every packet the emulator read is delivered or counted as dropped.
    let gone = s.drops_queue + s.drops_loss + s.drops_pool + s.write_errors + s.flushed_at_exit;
    assert_eq!(s.packets_in, s.delivered_packets + gone);
    assert_eq!(s.drops_loss + s.drops_pool + s.write_errors, 0);
    // The excess the sender offered is what the queue dropped: the receiver saw exactly what
    // the emulator delivered, and at most 1% was lost before the emulator read it (the TUN's
    // own 500-packet ring, should the forwarder lose the CPU for 150 ms).
    assert_eq!(got.packets, s.delivered_packets);
    let lost_before = blast.packets - s.packets_in;
    assert!(lost_before as f64 <= 0.01 * blast.packets as f64 + 5.0, "{lost_before} lost before");
    assert!(s.drops_queue as f64 >= 0.3 * blast.packets as f64, "2x offered, too few drops");
}

#[test]
fn wanemu_c_random_loss_of_ten_percent() {
    let Some(_lock) = guard("loss") else { return };
    let emu = Emulator::start(&config("loss", direction(0, 1, 0.10))).unwrap();
    let ends = emu.endpoints().clone();
    let rx = socket_in(&ends.netns_b, ADDR_B, 9001);
    // Room for all 20,000 datagrams, so a receiver that loses the CPU drops none.
    traffic::set_recv_buffer(&rx, traffic::SINK_RCVBUF_BYTES);
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let tx = socket_in(&ends.netns_a, ADDR_A, 0);
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut n = 0u64;
        while rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let to = SocketAddr::from((ADDR_B, 9001));
    const SENT: u64 = 20_000;
    for i in 0..SENT {
        tx.send_to(&i.to_le_bytes(), to).unwrap();
        // 100 datagrams per 5 ms: no queue anywhere comes close to full.
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let received = counter.join().unwrap();
    let report = emu.stop().unwrap();
    eprintln!("received {received}/{SENT}\n{report}");
    let s = &report.a_to_b;
    assert_eq!(s.packets_in, SENT);
    let emu_loss = s.drops_loss as f64 / SENT as f64;
    assert!((0.08..=0.12).contains(&emu_loss), "emulator loss {emu_loss}");
    let seen_loss = 1.0 - received as f64 / SENT as f64;
    assert!((0.08..=0.12).contains(&seen_loss), "observed loss {seen_loss}");
    assert_eq!(received, s.delivered_packets);
}

/// Starts `haul-wanemu up` and waits for its `ready` line; returns the child, its output so
/// far, and the channel that carries the rest (it keeps draining the pipe until EOF, so the
/// child never writes into a closed pipe).
fn spawn_up(name: &str) -> (Child, Vec<String>, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_haul-wanemu"))
        .args(["up", "--name", name, "--rate", "10M", "--delay", "1ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The test may have stopped listening; keep reading so the pipe stays open.
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.last().is_none_or(|l: &String| l != "ready") {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no ready line from haul-wanemu ({e}); got {lines:?}");
            }
        }
    }
    (child, lines, rx)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("haul-wanemu did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exists(ns: &str) -> bool {
    std::path::Path::new(netns::NETNS_DIR).join(ns).exists()
}

#[test]
fn wanemu_d_namespaces_are_gone_after_exit_sigterm_panic_and_cleanup() {
    let Some(_lock) = guard("cleanup") else { return };
    let pid = std::process::id();

    // Normal stop and drop.
    let emu = Emulator::start(&config("drop", direction(0, 0, 0.0))).unwrap();
    let (a, b) = (emu.endpoints().netns_a.clone(), emu.endpoints().netns_b.clone());
    assert!(exists(&a) && exists(&b));
    drop(emu);
    assert!(!exists(&a) && !exists(&b), "namespaces left after drop");

    // A panic while the emulator runs.
    let name = format!("t{pid}panic");
    let cfg = config("panic", direction(0, 0, 0.0));
    // Silence the default hook's backtrace for this deliberate panic (the lock keeps the
    // other tests of this binary waiting, so nobody else's panic is hidden).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(|| {
        let _emu = Emulator::start(&cfg).unwrap();
        panic!("deliberate panic with a running emulator");
    });
    std::panic::set_hook(hook);
    assert!(caught.is_err());
    let (a, b) = wan::netns::netns_names(&name);
    assert!(!exists(&a) && !exists(&b), "namespaces left after a panic");

    // SIGTERM to the binary.
    let name = format!("t{pid}term");
    let (a, b) = wan::netns::netns_names(&name);
    let (mut child, lines, rest) = spawn_up(&name);
    assert!(lines.iter().any(|l| l.contains(&format!("netns_a={a}"))), "{lines:?}");
    assert!(exists(&a) && exists(&b));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut child).success());
    assert!(!exists(&a) && !exists(&b), "namespaces left after SIGTERM");
    let tail: Vec<String> = rest.iter().collect();
    assert!(tail.iter().any(|l| l.starts_with("a->b: drops_tun_ring=")), "no stats: {tail:?}");
    assert_eq!(tail.last().map(String::as_str), Some("stopped"));

    // SIGKILL leaves them behind; `cleanup` removes them (and only stale ones).
    let live = Emulator::start(&config("live", direction(0, 0, 0.0))).unwrap();
    let name = format!("t{pid}kill");
    let (a, b) = wan::netns::netns_names(&name);
    let (mut child, _, _) = spawn_up(&name);
    child.kill().unwrap();
    wait_exit(&mut child);
    assert!(exists(&a) && exists(&b), "SIGKILL cannot clean up; cleanup must");
    let out = Command::new(env!("CARGO_BIN_EXE_haul-wanemu")).arg("cleanup").output().unwrap();
    assert!(out.status.success());
    assert!(!exists(&a) && !exists(&b), "cleanup left stale namespaces");
    assert!(exists(&live.endpoints().netns_a), "cleanup removed a live emulator's namespace");
    drop(live);
}
