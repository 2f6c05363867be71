//! The protocol core on the data path allocates nothing per datagram in steady state: a sender
//! shard and a receiver shard exchange 100,000 data datagrams (plus their control traffic) in
//! one thread, with a counting global allocator, and the allocation count over that stretch
//! (after a warm-up) must be zero. Together with `steady_state.rs` (the sockets) this covers the
//! shard loop's per-datagram work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::alloc::{CountingAlloc, measure_thread};
use haul_proto::crypto::{KeySchedule, SessionSecret, SuiteId};
use haul_proto::rate::RateLimits;
use haul_proto::session::{
    FileEntry, Layout, Manifest, ReceiverShard, Role, RxDatagram, RxOutcome, SenderShard,
    SessionParams, ShardEvent, shard_suites,
};
use haul_proto::time::{Duration, Instant};
use std::sync::Arc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

const STRIDE: usize = 1536;
const BATCH: usize = 32;

struct Pair {
    snd: SenderShard,
    rcv: ReceiverShard,
    now: Instant,
    out: Vec<u8>,
    lens: [usize; BATCH],
    block: Vec<u8>,
    data_datagrams: u64,
}

impl Pair {
    /// One round: disk, transmit both ways, deliver in order, complete writes, drain events.
    fn step(&mut self) {
        self.now += Duration::from_micros(50);
        while let Some(r) = self.snd.poll_disk() {
            let n = r.len as usize;
            self.snd.disk_buffer_mut(r.slot).copy_from_slice(&self.block[..n]);
            self.snd.handle_disk(self.now, r.slot, Ok(n));
        }
        while let Some(r) = self.rcv.poll_disk() {
            let n = r.len as usize;
            self.rcv.disk_buffer_mut(r.slot).copy_from_slice(&self.block[..n]);
            self.rcv.handle_disk(self.now, r.slot, Ok(n));
        }
        let n = self.snd.poll_transmit(self.now, &mut self.out, STRIDE, &mut self.lens);
        for i in 0..n {
            let len = self.lens[i];
            let buf = &mut self.out[i * STRIDE..i * STRIDE + len];
            let mut batch = [RxDatagram::new(buf)];
            self.rcv.handle_datagrams(self.now, &mut batch);
            if let RxOutcome::Write { file, offset, payload } = batch[0].outcome.clone() {
                self.data_datagrams += 1;
                // As the shard runtime reports writes: with their bytes, so in-order blocks
                // are hashed from them (the path a real receiver takes).
                let n = payload.len();
                let data = &batch[0].buf[payload];
                self.rcv.handle_write_done_data(self.now, file, offset, data, Ok(n));
            }
        }
        let n = self.rcv.poll_transmit(self.now, &mut self.out, STRIDE, &mut self.lens);
        for i in 0..n {
            let len = self.lens[i];
            let buf = &mut self.out[i * STRIDE..i * STRIDE + len];
            self.snd.handle_datagrams(self.now, &mut [RxDatagram::new(buf)]);
        }
        self.snd.handle_timeout(self.now);
        self.rcv.handle_timeout(self.now);
        // Events go to coordinators in the real runtime; here they are only drained.
        while let Some(ev) = self.snd.poll_event() {
            drop_event(ev);
        }
        while let Some(ev) = self.rcv.poll_event() {
            drop_event(ev);
        }
    }
}

fn drop_event(ev: ShardEvent) {
    if let ShardEvent::Aborted { reason, .. } = ev {
        panic!("session aborted: {reason:?}");
    }
}

#[test]
fn no_allocation_per_datagram_in_steady_state() {
    let size: u64 = 1 << 40; // a virtual 1 TiB file: the run never reaches its end
    let files = vec![FileEntry { name: "big".into(), size, mode: 0o644, mtime_ns: 0 }];
    let manifest = Arc::new(Manifest::new(files, 20).unwrap());
    let layout = Layout::new(manifest, 1).unwrap();
    let mut params = SessionParams::new(9, SuiteId::Aes128CfbCmac);
    params.rate = RateLimits { min_bps: 0, target_bps: 100_000_000_000 };
    let keys = KeySchedule::new(&SessionSecret([1; 32]), &[2; 32], &[3; 32], params.suite, 9);
    let now = Instant::from_nanos(1_000_000_000);
    let (tx, rx) = shard_suites(&keys, Role::Client, 0);
    let snd = SenderShard::new(&params, layout.clone(), 0, tx, rx, now).unwrap();
    let (tx, rx) = shard_suites(&keys, Role::Server, 0);
    let rcv = ReceiverShard::new(&params, layout, 0, tx, rx, now).unwrap();
    let mut p = Pair {
        snd,
        rcv,
        now,
        out: vec![0; STRIDE * BATCH],
        lens: [0; BATCH],
        block: vec![0x5a; 1 << 20],
        data_datagrams: 0,
    };
    // Warm-up: queues, maps and buffers reach their working size.
    while p.data_datagrams < 20_000 {
        p.step();
    }
    let start = p.data_datagrams;
    let ((), stats) = measure_thread(|| {
        while p.data_datagrams < start + 100_000 {
            p.step();
        }
    });
    let moved = p.data_datagrams - start;
    println!("{moved} data datagrams in steady state: {stats:?}");
    assert!(moved >= 100_000);
    assert_eq!(stats.allocations, 0, "allocations on the data path: {stats:?}");
}
