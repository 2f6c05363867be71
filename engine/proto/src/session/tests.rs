//! A minimal in-crate driver: both sides in one loop, a fixed-delay lossy network and an
//! in-memory disk. The full fault model lives in `haul-sim`; these tests pin the session logic.

use super::*;
use crate::crypto::{KeySchedule, SessionSecret, SuiteId};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// (deliver_at, order, to_receiver, shard, bytes)
type InFlight = Reverse<(Instant, u64, bool, u8, Vec<u8>)>;

struct Net {
    q: BinaryHeap<InFlight>,
    order: u64,
    delay: Duration,
    loss: f64,
    write_faults: f64,
    rng: Rng,
}

impl Net {
    /// Puts the batch `out` (one datagram per 2048 bytes, lengths in `lens`) on the wire,
    /// each datagram lost with probability `loss`: whether the batch held any.
    fn carry(&mut self, now: Instant, (out, lens): (&[u8], &[usize]), to_rx: bool, s: u8) -> bool {
        for (i, &len) in lens.iter().enumerate() {
            if !self.rng.chance(self.loss) {
                self.order += 1;
                let d = out[i * 2048..i * 2048 + len].to_vec();
                self.q.push(Reverse((now + self.delay, self.order, to_rx, s, d)));
            }
        }
        !lens.is_empty()
    }
}

struct Run {
    first: u64,
    sent_data: Vec<Vec<u8>>,
    recv_data: Vec<Vec<u8>>,
    sender: Option<Outcome>,
    receiver: Option<Outcome>,
    resent: u64,
    now: Instant,
    /// Blocks the receivers read back from disk to hash.
    read_backs: u64,
    /// The longest read a sender asked for.
    max_read: u32,
}

fn run(sizes: &[u64], shards: u8, loss: f64, seed: u64, suite: SuiteId) -> Run {
    run_resumed(sizes, &[], shards, loss, seed, suite)
}

fn run_resumed(
    sizes: &[u64],
    resume: &[u64],
    shards: u8,
    loss: f64,
    seed: u64,
    suite: SuiteId,
) -> Run {
    run_blocks(sizes, resume, shards, (loss, seed), suite, 14)
}

fn run_blocks(
    sizes: &[u64],
    resume: &[u64],
    shards: u8,
    (loss, seed): (f64, u64),
    suite: SuiteId,
    block_log2: u8,
) -> Run {
    let mut rng = Rng::new(seed);
    let files: Vec<FileEntry> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| FileEntry { name: format!("f{i}"), size, mode: 0o644, mtime_ns: 0 })
        .collect();
    let sent_data: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&s| {
            let mut v = vec![0u8; s as usize];
            rng.fill_bytes(&mut v);
            v
        })
        .collect();
    let mut recv_data: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0u8; s as usize]).collect();
    for (f, &p) in resume.iter().enumerate() {
        let p = p as usize;
        recv_data[f][..p].copy_from_slice(&sent_data[f][..p]);
    }
    let manifest = Arc::new(Manifest::new(files, block_log2).unwrap());
    let layout = Layout::new(manifest, shards).unwrap();
    let mut params = SessionParams::new(7, suite);
    params.shards = shards;
    params.window_bytes = 256 << 10;
    params.rate = crate::rate::RateLimits { min_bps: 0, target_bps: 200_000_000 };
    params.idle_timeout = Duration::from_secs(5);
    let secret = SessionSecret([3; 32]);
    let keys = KeySchedule::new(&secret, &[1; 32], &[2; 32], suite, 7);
    let now0 = Instant::from_nanos(1_000_000_000);
    let mut ss = Vec::new();
    let mut rs = Vec::new();
    for s in 0..shards {
        let (tx, rx) = shard_suites(&keys, Role::Client, s);
        ss.push(SenderShard::new(&params, layout.clone(), s, tx, rx, now0).unwrap());
        ss.last_mut().unwrap().with_resume(resume);
        let (tx, rx) = shard_suites(&keys, Role::Server, s);
        rs.push(ReceiverShard::new(&params, layout.clone(), s, tx, rx, now0).unwrap());
        rs.last_mut().unwrap().with_resume(resume);
    }
    let mut sc = SenderCoordinator::new(&params, layout.clone(), now0).unwrap();
    let mut rc = ReceiverCoordinator::new(&params, layout.clone(), now0).unwrap();
    let write_faults = if seed >= 100 { 0.05 } else { 0.0 };
    // Odd seeds report writes with their bytes (blocks written in order are hashed from them),
    // even seeds without (every block is read back), so both paths run under loss and faults.
    let hash_from_writes = seed % 2 == 1;
    let mut read_backs = 0;
    let mut max_read = 0;
    let mut net = Net {
        q: BinaryHeap::new(),
        order: 0,
        delay: Duration::from_millis(10),
        loss,
        write_faults,
        rng,
    };
    let mut now = now0;
    let mut out = vec![0u8; 64 * 2048];
    let mut lens = [0usize; 64];
    for _step in 0..2_000_000 {
        // Pump everything at `now` until quiet.
        for _ in 0..10_000 {
            let mut busy = false;
            for s in 0..shards as usize {
                while let Some(r) = ss[s].poll_disk() {
                    max_read = max_read.max(r.len);
                    let data = &sent_data[r.file as usize][r.offset as usize..][..r.len as usize];
                    ss[s].disk_buffer_mut(r.slot).copy_from_slice(data);
                    ss[s].handle_disk(now, r.slot, Ok(r.len as usize));
                    busy = true;
                }
                while let Some(r) = rs[s].poll_disk() {
                    read_backs += 1;
                    let data = &recv_data[r.file as usize][r.offset as usize..][..r.len as usize];
                    rs[s].disk_buffer_mut(r.slot).copy_from_slice(data);
                    rs[s].handle_disk(now, r.slot, Ok(r.len as usize));
                    busy = true;
                }
                let n = ss[s].poll_transmit(now, &mut out, 2048, &mut lens);
                busy |= net.carry(now, (&out, &lens[..n]), true, s as u8);
                let n = rs[s].poll_transmit(now, &mut out, 2048, &mut lens);
                busy |= net.carry(now, (&out, &lens[..n]), false, s as u8);
                while let Some(ev) = ss[s].poll_event() {
                    sc.handle_event(now, s as u8, ev);
                    busy = true;
                }
                while let Some(ev) = rs[s].poll_event() {
                    rc.handle_event(now, s as u8, ev);
                    busy = true;
                }
            }
            while let Some((s, cmd)) = sc.poll_command() {
                ss[s as usize].handle_command(now, cmd);
                busy = true;
            }
            while let Some((s, cmd)) = rc.poll_command() {
                rs[s as usize].handle_command(now, cmd);
                busy = true;
            }
            while let Some(op) = rc.poll_file_op() {
                rc.handle_file_op_done(now, op, Ok(()));
                busy = true;
            }
            if !busy {
                break;
            }
        }
        let done = ss.iter().all(|s| s.is_closed()) && rs.iter().all(|s| s.is_closed());
        if done && sc.outcome().is_some() && rc.outcome().is_some() {
            break;
        }
        // Next event.
        let mut next = Instant::FAR_FUTURE;
        for s in 0..shards as usize {
            next = next.min(ss[s].poll_timeout().unwrap_or(Instant::FAR_FUTURE));
            next = next.min(rs[s].poll_timeout().unwrap_or(Instant::FAR_FUTURE));
        }
        if let Some(Reverse((t, ..))) = net.q.peek() {
            next = next.min(*t);
        }
        if next == Instant::FAR_FUTURE {
            break;
        }
        now = now.max(next);
        while let Some(Reverse((t, ..))) = net.q.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, _, to_rx, s, mut d))) = net.q.pop() else { break };
            let mut batch = [RxDatagram::new(&mut d)];
            if to_rx {
                rs[s as usize].handle_datagrams(now, &mut batch);
                if let RxOutcome::Write { file, offset, payload } = batch[0].outcome.clone() {
                    let len = payload.len();
                    let r = net.rng.unit_f64();
                    let result = if r < net.write_faults {
                        Err(DiskError::Interrupted)
                    } else if r < 2.0 * net.write_faults {
                        Ok(len / 2)
                    } else {
                        Ok(len)
                    };
                    let n = *result.as_ref().unwrap_or(&0);
                    recv_data[file as usize][offset as usize..][..n]
                        .copy_from_slice(&d[payload.start..payload.start + n]);
                    if hash_from_writes {
                        let data = &d[payload.start..payload.end];
                        rs[s as usize].handle_write_done_data(now, file, offset, data, result);
                    } else {
                        rs[s as usize].handle_write_done(now, file, offset, len as u32, result);
                    }
                }
            } else {
                ss[s as usize].handle_datagrams(now, &mut batch);
            }
        }
        for s in 0..shards as usize {
            ss[s].handle_timeout(now);
            rs[s].handle_timeout(now);
        }
    }
    if std::env::var("SESSION_DEBUG").is_ok() {
        for s in 0..shards as usize {
            eprintln!("sender {s}: {:?}", ss[s].stats());
            eprintln!("receiver {s}: {:?} complete={}", rs[s].stats(), rs[s].is_slice_complete());
        }
        eprintln!("acked {} done {} now {:?}", sc.files_acked(), rc.files_done(), now);
    }
    let resent = ss.iter().map(|s| s.stats().data_bytes_resent).sum();
    let first = ss.iter().map(|s| s.stats().data_bytes_sent).sum();
    let (sender, receiver) = (sc.outcome(), rc.outcome());
    Run { first, sent_data, recv_data, sender, receiver, resent, now, read_backs, max_read }
}

#[test]
fn lossless_transfer_is_byte_identical() {
    for shards in 1..=3 {
        let r = run(&[0, 1, 16383, 16384, 16385, 300_000], shards, 0.0, 1, SuiteId::Aes128CfbCmac);
        assert_eq!(r.sender, Some(Outcome::Complete), "shards {shards}");
        assert_eq!(r.receiver, Some(Outcome::Complete));
        assert_eq!(r.sent_data, r.recv_data);
        assert_eq!(r.resent, 0);
    }
}

/// Lossless, in order: every block is hashed from its writes and none is read back; with
/// writes reported without their bytes, every block is read back. Both complete, so both
/// paths give the sender's hashes.
#[test]
fn in_order_blocks_are_hashed_from_their_writes() {
    let sizes = [0, 1, 16383, 16384, 16385, 300_000];
    let r = run(&sizes, 2, 0.0, 1, SuiteId::Aes128CfbCmac);
    assert_eq!(r.receiver, Some(Outcome::Complete));
    assert_eq!(r.sent_data, r.recv_data);
    assert_eq!(r.read_backs, 0);
    let r = run(&sizes, 2, 0.0, 2, SuiteId::Aes128CfbCmac);
    assert_eq!(r.receiver, Some(Outcome::Complete));
    assert!(r.read_backs > 0);
}

/// Blocks larger than a read piece are read, hashed and sent piece by piece (no read longer
/// than a piece): byte-identical without loss, with loss, and with a resumed prefix whose
/// kept blocks are read and hashed in pieces but never sent.
#[test]
fn blocks_larger_than_a_read_piece_arrive_whole() {
    let block = 1u64 << 20;
    let sizes = [3 * block + 12_345, 700_000];
    for (loss, seed, shards) in [(0.0, 1, 2), (0.05, 3, 1)] {
        let r = run_blocks(&sizes, &[], shards, (loss, seed), SuiteId::Aes128CfbCmac, 20);
        assert_eq!(r.sender, Some(Outcome::Complete), "seed {seed} at {:?}", r.now);
        assert_eq!(r.receiver, Some(Outcome::Complete), "seed {seed}");
        assert_eq!(r.sent_data, r.recv_data, "seed {seed}");
        assert!(r.max_read <= sender::READ_PIECE, "read of {} bytes", r.max_read);
    }
    let resume = [2 * block + 5000, 0];
    let r = run_blocks(&sizes, &resume, 1, (0.0, 9), SuiteId::Aes128CfbCmac, 20);
    assert_eq!(r.receiver, Some(Outcome::Complete));
    assert_eq!(r.sent_data, r.recv_data);
    assert_eq!(r.first, sizes[0] - 2 * block + sizes[1], "only the unfinished part is sent");
}

#[test]
fn lossy_transfer_recovers() {
    for (seed, suite) in
        [(2, SuiteId::Aes128CfbCmac), (3, SuiteId::Aes128Gcm), (4, SuiteId::IntegrityCmac)]
    {
        let r = run(&[1_000_000, 5000], 2, 0.1, seed, suite);
        assert_eq!(r.sender, Some(Outcome::Complete), "seed {seed} at {:?}", r.now);
        assert_eq!(r.receiver, Some(Outcome::Complete));
        assert_eq!(r.sent_data, r.recv_data);
        assert!(r.resent > 0);
    }
}

#[test]
fn resume_sends_only_the_missing_part() {
    let block = 16 << 10;
    for shards in [1, 3] {
        // File 0 keeps 5 whole blocks and a partial one (which is sent again); file 1 is whole.
        let sizes = [20 * block + 100, 3000];
        let resume = [5 * block + 700, 3000];
        let r = run_resumed(&sizes, &resume, shards, 0.0, 9, SuiteId::Aes128CfbCmac);
        assert_eq!(r.sender, Some(Outcome::Complete), "shards {shards}");
        assert_eq!(r.receiver, Some(Outcome::Complete));
        assert_eq!(r.sent_data, r.recv_data);
        assert_eq!(r.first, sizes[0] - 5 * block, "only the unfinished part is sent");
    }
}

#[test]
fn transient_write_failures_are_recovered() {
    for seed in 100..106 {
        let r = run(&[300_000, 70_000, 1], 3, 0.05, seed, SuiteId::Aes128CfbCmac);
        assert_eq!(r.sender, Some(Outcome::Complete), "seed {seed} at {:?}", r.now);
        assert_eq!(r.receiver, Some(Outcome::Complete), "seed {seed}");
        assert_eq!(r.sent_data, r.recv_data);
    }
}

/// Regression: a driver that coalesces contiguous payloads into one write spanning two blocks
/// (here a full block and the file's 1-byte last block) left the second block unverified, and
/// the transfer never finished.
#[test]
fn coalesced_write_across_blocks_verifies_every_block() {
    let size = (16u64 << 10) + 1;
    let files = vec![FileEntry { name: "f".into(), size, mode: 0o644, mtime_ns: 0 }];
    let layout = Layout::new(Arc::new(Manifest::new(files, 14).unwrap()), 1).unwrap();
    let params = SessionParams::new(3, SuiteId::Aes128CfbCmac);
    let keys = KeySchedule::new(&SessionSecret([1; 32]), &[2; 32], &[3; 32], params.suite, 3);
    let now = Instant::from_nanos(1_000_000_000);
    let (tx, rx) = shard_suites(&keys, Role::Client, 0);
    let mut snd = SenderShard::new(&params, layout.clone(), 0, tx, rx, now).unwrap();
    let (tx, rx) = shard_suites(&keys, Role::Server, 0);
    let mut rcv = ReceiverShard::new(&params, layout, 0, tx, rx, now).unwrap();
    let data = vec![7u8; size as usize];
    while let Some(r) = snd.poll_disk() {
        let chunk = &data[r.offset as usize..][..r.len as usize];
        snd.disk_buffer_mut(r.slot).copy_from_slice(chunk);
        snd.handle_disk(now, r.slot, Ok(r.len as usize));
    }
    let mut out = vec![0u8; 64 * 2048];
    let mut lens = [0usize; 64];
    let mut written = 0u64;
    let t = now + Duration::from_millis(5);
    let n = snd.poll_transmit(t, &mut out, 2048, &mut lens);
    for i in 0..n {
        let mut batch = [RxDatagram::new(&mut out[i * 2048..i * 2048 + lens[i]])];
        rcv.handle_datagrams(t, &mut batch);
        if let RxOutcome::Write { payload, .. } = &batch[0].outcome {
            written += payload.len() as u64;
        }
    }
    assert_eq!(written, size, "every byte was handed out for writing");
    // One write for the whole file, as a coalescing driver does.
    rcv.handle_write_done(t, 0, 0, size as u32, Ok(size as usize));
    let mut hashed = Vec::new();
    while let Some(r) = rcv.poll_disk() {
        let chunk = &data[r.offset as usize..][..r.len as usize];
        rcv.disk_buffer_mut(r.slot).copy_from_slice(chunk);
        rcv.handle_disk(t, r.slot, Ok(r.len as usize));
    }
    while let Some(ev) = rcv.poll_event() {
        if let ShardEvent::BlockHashed { block_in_file, .. } = ev {
            hashed.push(block_in_file);
        }
    }
    hashed.sort_unstable();
    assert_eq!(hashed, vec![0, 1]);
}
