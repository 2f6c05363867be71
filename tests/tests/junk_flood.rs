//! Junk flood (issue 3, "Junk flood"): while a transfer runs, the receiver's port takes a flood
//! at least as large as the transfer's own traffic, from the peer's own address: random
//! datagrams, forged datagrams (a real header with a valid session id and an in-window sequence
//! number not yet received; a corrupted body), the receiver's own datagrams reflected back, and replays of datagrams
//! captured at the start once the window has moved. The transfer completes byte-identical, and
//! the receiver counts rejects by reason.
//!
//! How: the test is the sender (the libraries, as in `hostile.rs`) and puts a UDP proxy between
//! its shard socket and the receiver's; the proxy forwards every datagram and sends one junk
//! datagram per forwarded one. The transfer is sized (96 MiB at 120 Mbit/s) to last about
//! 6.5 s; the flood lasts as long as the transfer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests: a failure is a test failure")]

use haul_io::transfer::run_sender;
use haul_tests::hostile::offer;
use haul_tests::{Receiver, TRANSFER_TIMEOUT, TempDir, keygen, stderr, stdout, write_file};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SIZE: usize = 96 << 20;
const RATE_BPS: u64 = 120_000_000;
/// Datagrams captured at the start, replayed once the window has moved past them.
const OLD_CAPTURE: usize = 2048;
/// Recent datagrams kept per direction (for forgeries and reflections).
const RECENT: usize = 64;
/// Where the sequence number sits in a datagram header (docs/protocol/02-wire.md §2.1).
const SEQ_AT: usize = 12;
/// How far ahead of a seen sequence number forgeries claim to be.
const FORGE_AHEAD: u64 = 2000;
/// Datagrams handled per loop turn.
const BATCH: usize = 64;

#[derive(Default, Debug)]
struct Counts {
    forwarded: u64,
    random: u64,
    forged: u64,
    reflected: u64,
    replayed: u64,
}

struct Proxy {
    sock: UdpSocket,
    receiver: SocketAddr,
    sender: SocketAddr,
    old: Vec<Vec<u8>>,
    recent: VecDeque<Vec<u8>>,
    from_receiver: VecDeque<Vec<u8>>,
    rng: u64,
    counts: Counts,
}

impl Proxy {
    fn next(&mut self) -> u64 {
        // xorshift64: junk needs no quality, only variety.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn junk(&mut self) {
        let kind = self.next() % 4;
        let pick = self.next() as usize;
        let dgram = match kind {
            0 => {
                let len = 16 + (self.next() % 1400) as usize;
                self.counts.random += 1;
                (0..len).map(|_| self.next() as u8).collect()
            }
            1 if !self.recent.is_empty() => {
                // A real header moved a little ahead of what has been seen (valid session id,
                // in-window and not yet received: it must fail on its tag), corrupt body.
                let mut d = self.recent[pick % self.recent.len()].clone();
                if d.len() < SEQ_AT + 8 {
                    return;
                }
                let seq = u64::from_le_bytes(d[SEQ_AT..SEQ_AT + 8].try_into().unwrap());
                let ahead = seq.wrapping_add(FORGE_AHEAD + (pick % 64) as u64);
                d[SEQ_AT..SEQ_AT + 8].copy_from_slice(&ahead.to_le_bytes());
                let at = d.len() - 1 - (pick >> 8) % (d.len() / 2).max(1);
                d[at] ^= 0x5a;
                self.counts.forged += 1;
                d
            }
            2 if !self.from_receiver.is_empty() => {
                self.counts.reflected += 1;
                self.from_receiver[pick % self.from_receiver.len()].clone()
            }
            // Replays only once the transfer is well past the captured start.
            _ if self.old.len() == OLD_CAPTURE
                && self.counts.forwarded > 4 * OLD_CAPTURE as u64 =>
            {
                self.counts.replayed += 1;
                self.old[pick % OLD_CAPTURE].clone()
            }
            _ => return,
        };
        let _ = self.sock.send_to(&dgram, self.receiver);
    }

    fn turn(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let Ok((n, from)) = self.sock.recv_from(buf) else { return };
            let d = buf[..n].to_vec();
            if from == self.receiver {
                let _ = self.sock.send_to(&d, self.sender);
                push_bounded(&mut self.from_receiver, d);
            } else {
                let _ = self.sock.send_to(&d, self.receiver);
                if self.old.len() < OLD_CAPTURE {
                    self.old.push(d.clone());
                }
                push_bounded(&mut self.recent, d);
            }
            self.counts.forwarded += 1;
            // At least one junk datagram per forwarded one: the flood matches the transfer.
            while self.counts.random
                + self.counts.forged
                + self.counts.reflected
                + self.counts.replayed
                < self.counts.forwarded
            {
                self.junk();
            }
        }
    }
}

fn push_bounded(q: &mut VecDeque<Vec<u8>>, d: Vec<u8>) {
    if q.len() == RECENT {
        q.pop_front();
    }
    q.push_back(d);
}

#[test]
fn junk_flood_is_rejected_by_reason_and_the_transfer_completes() {
    let dir = TempDir::new("junk");
    let src = dir.join("src.bin");
    write_file(&src, SIZE, 99, 0o644);
    let key = keygen(&dir, "key");
    let dest = dir.join("dest");
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &["--json"]);
    let addr: SocketAddr = recv.addr.parse().unwrap();
    let offered = offer(addr, &key, "flooded.bin", &src, RATE_BPS).expect("accepted");
    let proxy_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    proxy_sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let proxy_addr = proxy_sock.local_addr().unwrap();
    let job = offered.job(addr.ip(), &src, Some(vec![proxy_addr]));
    let mut proxy = Proxy {
        sock: proxy_sock,
        receiver: SocketAddr::new(addr.ip(), offered.accept.ports[0]),
        sender: job.sockets.local_addrs()[0],
        old: Vec::with_capacity(OLD_CAPTURE),
        recent: VecDeque::with_capacity(RECENT),
        from_receiver: VecDeque::with_capacity(RECENT),
        rng: 0x9e37_79b9_7f4a_7c15,
        counts: Counts::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let flood = std::thread::spawn(move || {
        let started = Instant::now();
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            proxy.turn(&mut buf);
        }
        (proxy.counts, started.elapsed())
    });
    let report = run_sender(job, None).expect("the sender runs to its end");
    let summary = offered.finish();
    stop.store(true, Ordering::Relaxed);
    let (counts, flood_time) = flood.join().unwrap();
    let r = recv.finish(TRANSFER_TIMEOUT);
    println!("flood: {counts:?} over {flood_time:?}");
    assert!(r.status.success(), "recv: {}", stderr(&r));
    assert_eq!(report.outcome, haul_proto::session::Outcome::Complete);
    let want = blake3::hash(&std::fs::read(&src).unwrap());
    let got = blake3::hash(&std::fs::read(dest.join("flooded.bin")).unwrap());
    assert_eq!(got, want, "no junk reached the file");
    assert_eq!(summary.checksums, vec![*want.as_bytes()]);
    let junk = counts.random + counts.forged + counts.reflected + counts.replayed;
    assert!(junk >= counts.forwarded, "the flood matched the transfer: {counts:?}");
    assert!(counts.replayed > 0 && counts.reflected > 0 && counts.forged > 0, "{counts:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&r).trim()).unwrap();
    let rej = &v["rejects"];
    let n = |k: &str| rej[k].as_u64().unwrap();
    println!("receiver rejects: {rej}");
    // Each kind lands under its reason. The kernel may drop some junk on a busy loopback (so
    // "at least half"); a few legitimate datagrams may land there too (a late one is stale),
    // but junk is not counted twice or under another reason (so "at most, give or take 1%").
    let within = |got: u64, sent: u64, what: &str| {
        let ok = got <= sent + sent / 100 + 16 && got * 2 >= sent;
        assert!(ok, "{what}: {got} counted of {sent} sent: {rej}");
    };
    within(n("malformed"), counts.random, "random datagrams as malformed");
    within(n("bad_tag"), counts.forged, "forgeries as bad tags");
    within(n("reflected"), counts.reflected, "reflections as reflected");
    within(n("replayed") + n("stale"), counts.replayed, "replays as replayed or stale");
}
