//! Both backends x IPv4/IPv6 x datagram sizes 1200/1472/8000 over loopback: 20,000
//! sequence-numbered datagrams sent in GSO batches, received with GRO (multishot on io_uring).
//!
//! The sender keeps at most a window of datagrams ahead of what the receiver has counted, so
//! loopback is not overrun; the assertions are that nothing arrives corrupted, truncated,
//! duplicated or from elsewhere, and that at least 95% arrives. No assertion reads a clock;
//! deadlines (60 s for a run that takes well under a second) only stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{check, fill, has_ipv6_loopback, is_available, loopback, pattern};
use haul_io::backend::{Backend, BackendBuilder, BackendKind};

const DATAGRAMS: u64 = 20_000;
const BATCH: usize = 64;
const WINDOW_BYTES: u64 = 2 << 20;
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const IDLE_AFTER_DONE: Duration = Duration::from_secs(3);

struct Outcome {
    stats: haul_io::backend::IoStats,
    is_coalescing: bool,
    unique: u64,
    corrupt: u64,
    duplicate: u64,
    foreign: u64,
}

fn receive(
    mut rx: Backend,
    size: usize,
    expected_from: SocketAddr,
    progress: Arc<AtomicU64>,
    sender_done: Arc<AtomicBool>,
) -> Outcome {
    let pat = pattern(size);
    let mut seen = vec![false; DATAGRAMS as usize];
    let is_coalescing = rx.socket().is_gro();
    let mut out = Outcome {
        stats: rx.stats(),
        is_coalescing,
        unique: 0,
        corrupt: 0,
        duplicate: 0,
        foreign: 0,
    };
    let start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while out.unique < DATAGRAMS && start.elapsed() < RUN_DEADLINE {
        let n = rx
            .recv_batch(Duration::from_millis(50), |from, d| {
                if from != expected_from {
                    out.foreign += 1;
                    return;
                }
                match check(d, size, &pat) {
                    Some(seq) if seq < DATAGRAMS => {
                        if std::mem::replace(&mut seen[seq as usize], true) {
                            out.duplicate += 1;
                        } else {
                            out.unique += 1;
                        }
                    }
                    _ => out.corrupt += 1,
                }
            })
            .expect("recv_batch");
        progress.store(out.unique, Ordering::Release);
        if n > 0 || !sender_done.load(Ordering::Acquire) {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() > IDLE_AFTER_DONE {
            break;
        }
    }
    out.stats = rx.stats();
    out
}

fn send(mut tx: Backend, dest: SocketAddr, size: usize, progress: Arc<AtomicU64>) -> bool {
    let pat = pattern(size);
    let mut bufs = vec![vec![0u8; size]; BATCH];
    let window = (WINDOW_BYTES / size as u64).max(BATCH as u64);
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < DATAGRAMS {
        // Pace by the receiver's progress: never more than `window` datagrams ahead.
        while seq.saturating_sub(progress.load(Ordering::Acquire)) > window
            && start.elapsed() < RUN_DEADLINE
        {
            thread::yield_now();
        }
        let n = BATCH.min((DATAGRAMS - seq) as usize);
        for (k, buf) in bufs.iter_mut().take(n).enumerate() {
            fill(buf, seq + k as u64, &pat);
        }
        let slices: Vec<&[u8]> = bufs[..n].iter().map(|b| b.as_slice()).collect();
        tx.send_batch(dest, &slices, size).expect("send_batch");
        seq += n as u64;
    }
    tx.socket().is_gso()
}

fn run(kind: BackendKind, v6: bool, size: usize) {
    let (rx, rx_choice) = BackendBuilder::new(loopback(v6)).force(kind).build().expect("rx");
    let (tx, _) = BackendBuilder::new(loopback(v6)).force(kind).build().expect("tx");
    assert_eq!(rx.kind(), kind, "backend {kind:?} must be honoured: {}", rx_choice.reason);
    let (dest, from) = (rx.local_addr(), tx.local_addr());
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (progress, done) = (progress.clone(), done.clone());
        thread::spawn(move || receive(rx, size, from, progress, done))
    };
    let is_gso = send(tx, dest, size, progress);
    done.store(true, Ordering::Release);
    let out = receiver.join().expect("receiver thread");
    let label = format!("{} v6={v6} size={size}", kind.name());
    println!(
        "{label}: unique {} corrupt {} dup {} foreign {}",
        out.unique, out.corrupt, out.duplicate, out.foreign
    );
    assert_eq!(out.corrupt, 0, "{label}: corrupted datagrams");
    assert_eq!(out.duplicate, 0, "{label}: duplicated datagrams");
    assert_eq!(out.foreign, 0, "{label}: datagrams from an unexpected address");
    assert!(out.unique * 100 >= DATAGRAMS * 95, "{label}: only {} arrived", out.unique);
    println!("{label}: gso {is_gso} gro {} stats {:?}", out.is_coalescing, out.stats);
    assert_eq!(
        out.stats.datagrams_received,
        out.unique + out.corrupt + out.duplicate + out.foreign
    );
    if is_gso && out.is_coalescing {
        // GSO sends arrive as coalesced GRO buffers: far fewer buffers than datagrams.
        assert!(out.stats.recv_buffers * 2 < out.stats.datagrams_received, "{label}: no GRO");
    }
}

fn matrix(kind: BackendKind) {
    if !is_available(kind) {
        return;
    }
    let v6 = has_ipv6_loopback();
    for size in [1200, 1472, 8000] {
        run(kind, false, size);
        if v6 {
            run(kind, true, size);
        }
    }
}

#[test]
fn uring_backend_delivers_every_size_and_family_intact() {
    matrix(BackendKind::Uring);
}

#[test]
fn portable_backend_forced_by_builder_delivers_intact() {
    matrix(BackendKind::Portable);
}

#[test]
fn oversized_datagram_is_rejected_as_our_bug() {
    for kind in [BackendKind::Uring, BackendKind::Portable].into_iter().filter(|k| is_available(*k))
    {
        let (mut tx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("tx");
        let big = [0u8; 1500];
        let dest = tx.local_addr();
        let err = tx.send_batch(dest, &[&big], 1200).expect_err("must reject");
        assert!(matches!(err, haul_io::error::IoError::Invalid(_)), "{err}");
    }
}

#[test]
fn multishot_receive_rearms_after_the_buffer_ring_runs_dry() {
    const SIZE: usize = 1472;
    const COUNT: u64 = 8000; // ~11.8 MB: far more than the ring's 64 buffers can hold at once
    if !is_available(BackendKind::Uring) {
        return;
    }
    let big = haul_io::udp::UdpOptions { rcvbuf_bytes: 64 << 20, ..Default::default() };
    let (mut rx, _) = BackendBuilder::new(loopback(false))
        .force(BackendKind::Uring)
        .udp_options(big)
        .build()
        .expect("rx");
    let (mut tx, _) =
        BackendBuilder::new(loopback(false)).force(BackendKind::Uring).build().expect("tx");
    if rx.socket().rcvbuf_bytes() < (32 << 20) {
        println!("note: socket buffer capped at {}; skipped", rx.socket().rcvbuf_bytes());
        return;
    }
    let dest = rx.local_addr();
    // Arm the multishot receive, then send everything without receiving.
    rx.recv_batch(Duration::ZERO, |_, _| {}).expect("arm");
    let pat = pattern(SIZE);
    let mut bufs = vec![vec![0u8; SIZE]; BATCH];
    let mut seq = 0;
    while seq < COUNT {
        for (k, buf) in bufs.iter_mut().enumerate() {
            fill(buf, seq + k as u64, &pat);
        }
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        tx.send_batch(dest, &slices, SIZE).expect("send");
        seq += BATCH as u64;
    }
    let mut seen = vec![false; seq as usize];
    let (mut unique, mut bad) = (0u64, 0u64);
    let start = Instant::now();
    while unique < seq && start.elapsed() < RUN_DEADLINE {
        rx.recv_batch(Duration::from_millis(100), |_, d| match check(d, SIZE, &pat) {
            Some(s) if (s as usize) < seen.len() && !seen[s as usize] => {
                seen[s as usize] = true;
                unique += 1;
            }
            _ => bad += 1,
        })
        .expect("recv");
    }
    let stats = rx.stats();
    println!("unique {unique} of {seq}, bad {bad}, {stats:?}");
    assert_eq!(bad, 0);
    assert_eq!(unique, seq, "nothing may be lost while the ring is dry: the socket holds it");
    assert!(stats.recv_rearms >= 1, "the ring ran dry, so the receive must have been re-armed");
}

#[test]
fn dropping_an_armed_backend_closes_its_socket() {
    for kind in [BackendKind::Uring, BackendKind::Portable].into_iter().filter(|k| is_available(*k))
    {
        let (mut rx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("rx");
        let addr = rx.local_addr();
        rx.recv_batch(Duration::from_millis(1), |_, _| {}).expect("arm");
        drop(rx);
        // The receive was cancelled and reaped, then the socket closed: the port is free again.
        let again = BackendBuilder::new(addr).force(kind).build();
        assert!(again.is_ok(), "{}: port still bound after drop", kind.name());
    }
}

#[test]
fn recv_segments_hands_whole_gro_buffers_writable() {
    const SIZE: usize = 1472;
    const COUNT: u64 = 640;
    for kind in [BackendKind::Uring, BackendKind::Portable].into_iter().filter(|k| is_available(*k))
    {
        let (mut rx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("rx");
        let (mut tx, _) = BackendBuilder::new(loopback(false)).force(kind).build().expect("tx");
        let pat = pattern(SIZE);
        let mut bufs = vec![vec![0u8; SIZE]; BATCH];
        let mut seq = 0;
        let (mut intact, mut bad, mut widest) = (0u64, 0u64, 0usize);
        let start = Instant::now();
        while intact < COUNT && start.elapsed() < RUN_DEADLINE {
            if seq < COUNT {
                for (k, buf) in bufs.iter_mut().enumerate() {
                    fill(buf, seq + k as u64, &pat);
                }
                let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
                tx.send_batch(rx.local_addr(), &slices, SIZE).expect("send");
                seq += BATCH as u64;
            }
            rx.recv_segments(Duration::from_millis(100), |_, payload, seg| {
                widest = widest.max(payload.len() / seg);
                // `payload` is `&mut [u8]`: a shard verifies and decrypts these in place.
                for d in payload.chunks_mut(seg) {
                    if check(d, SIZE, &pat).is_some() { intact += 1 } else { bad += 1 }
                }
            })
            .expect("recv");
        }
        println!("{}: intact {intact} bad {bad} widest buffer {widest} datagrams", kind.name());
        assert_eq!(bad, 0);
        assert_eq!(intact, COUNT);
        if rx.socket().is_gro() && tx.socket().is_gso() {
            assert!(widest > 1, "{}: GRO buffers must carry several datagrams", kind.name());
        }
    }
}
