//! Criterion benches for the wire codec: header and body encode/decode, per packet type that
//! matters on the data path (Data prefix, NAK, Feedback, Window), and the whole-datagram decode
//! a receiver does before authentication.
//!
//! `RUSTFLAGS="-C target-cpu=native" cargo bench -p haul-benches --bench wire`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use haul_proto::wire::{
    Body, DATA_PREFIX_LEN, Feedback, HEADER_LEN, Header, PacketType, Window, encode_data_prefix,
    encode_nak,
};
use std::hint::black_box;

fn header() -> Header {
    Header {
        ptype: PacketType::Data,
        shard: 1,
        session_id: 0x1122_3344_5566_7788,
        seq: (1 << 56) | 123_456,
        timestamp_us: 987_654,
    }
}

fn bench_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire/header");
    g.throughput(Throughput::Elements(1));
    let h = header();
    let mut buf = [0u8; 1472];
    g.bench_function("encode", |b| b.iter(|| black_box(&h).encode(black_box(&mut buf))));
    h.encode(&mut buf);
    g.bench_function("decode", |b| b.iter(|| Header::decode(black_box(&buf))));
    g.finish();
}

fn bench_bodies(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire/body");
    g.throughput(Throughput::Elements(1));
    let mut buf = [0u8; 1472];
    g.bench_function("data_prefix_encode", |b| {
        b.iter(|| encode_data_prefix(black_box(7), black_box(1 << 30), &mut buf))
    });
    encode_data_prefix(7, 1 << 30, &mut buf);
    let data = &buf[..DATA_PREFIX_LEN + 1400];
    g.bench_function("data_decode", |b| b.iter(|| Body::decode(PacketType::Data, black_box(data))));

    let ranges: Vec<(u64, u64)> = (0..64u64).map(|i| (i * 10_000, i * 10_000 + 1400)).collect();
    let mut nak = [0u8; 2048];
    g.bench_function("nak64_encode", |b| b.iter(|| encode_nak(black_box(&ranges), &mut nak)));
    let n = encode_nak(&ranges, &mut nak).unwrap_or(0);
    g.bench_function("nak64_decode_iterate", |b| {
        b.iter(|| match Body::decode(PacketType::Nak, black_box(&nak[..n])) {
            Ok(Body::Nak { ranges }) => ranges.iter().map(|(s, e)| e - s).sum::<u64>(),
            _ => 0,
        })
    });

    let fb = Body::Feedback(Feedback {
        recv_bytes: 1 << 33,
        ts_echo_us: 5,
        echo_delay_us: 100,
        owd_us_min: 50_000,
        owd_us_last: 50_300,
        datagrams: 64,
    });
    let w = Body::Window(Window { cum_ack: 1 << 30, limit: (1 << 30) + (256 << 20) });
    for (name, body, t) in
        [("feedback", fb, PacketType::Feedback), ("window", w, PacketType::Window)]
    {
        let mut out = [0u8; 64];
        g.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| black_box(&body).encode(&mut out))
        });
        let len = body.encode(&mut out).unwrap_or(0);
        g.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| Body::decode(t, black_box(&out[..len])))
        });
    }
    g.finish();
}

fn bench_datagram(c: &mut Criterion) {
    // What a receiver does with every datagram before authentication: decode the header of the
    // whole datagram.
    let mut g = c.benchmark_group("wire/datagram");
    let mut dgram = vec![0u8; 1472];
    header().encode(&mut dgram);
    encode_data_prefix(3, 4096, &mut dgram[HEADER_LEN..]);
    g.throughput(Throughput::Bytes(dgram.len() as u64));
    g.bench_function("header_decode_1472", |b| b.iter(|| Header::decode(black_box(&dgram))));
    g.finish();
}

criterion_group!(benches, bench_header, bench_bodies, bench_datagram);
criterion_main!(benches);
