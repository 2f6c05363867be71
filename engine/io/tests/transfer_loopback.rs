//! The transfer runtime end to end in one process over loopback: real sockets, real files,
//! real threads. Byte-identical files for 1, 2 and 4 shards (several shards on these 2 cores),
//! both backends. The set-up is the shared one of `transfers/mod.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod transfers;

use haul_io::backend::BackendKind;
use haul_proto::session::FileEntry;
use transfers::{Setup, Source, dir_in, run_transfer, shm, write_random};

fn transfer(shards: u8, backend: BackendKind, sizes: &[usize], tag: &str) {
    transfer_blocks(shards, backend, sizes, 20, tag);
}

/// Sends one random file per size (`f<i>` as `dir/f<i>`) and checks every copy and its
/// BLAKE3 in the receiver's summary.
fn transfer_blocks(shards: u8, backend: BackendKind, sizes: &[usize], block_log2: u8, tag: &str) {
    let src = dir_in(&shm(), &format!("{tag}-src"));
    let dst = dir_in(&shm(), &format!("{tag}-dst"));
    let mut sources = Vec::new();
    let mut data = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let path = src.join(format!("f{i}"));
        data.push(write_random(&path, size, i as u64 + 1));
        let entry = FileEntry {
            name: format!("dir/f{i}"),
            size: size as u64,
            mode: 0o640,
            mtime_ns: 1_600_000_000_000_000_000,
        };
        sources.push(Source { path, entry });
    }
    let (_, received) = run_transfer(Setup { shards, backend, block_log2 }, &sources, &dst);
    for (i, want) in data.iter().enumerate() {
        let got = std::fs::read(dst.join(format!("dir/f{i}"))).unwrap();
        assert!(got == *want, "file {i} differs ({tag})");
        assert_eq!(received.files[i].blake3, *blake3::hash(want).as_bytes(), "file {i} ({tag})");
    }
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

#[test]
fn one_two_and_four_shards_deliver_identical_files() {
    for shards in [1u8, 2, 4] {
        transfer(shards, BackendKind::Uring, &[0, 1, 3 << 20, 100_000], &format!("uring{shards}"));
    }
}

#[test]
fn portable_backend_delivers_identical_files() {
    transfer(2, BackendKind::Portable, &[5 << 20, 777], "portable");
}

/// The receiver leaves a small fresh file's partial to the one shard that writes it (created
/// at its first open, O_EXCL) only when the file is one block: with 4 KiB blocks, files of
/// 1-64 KiB span both shards and must be created up front, or the second shard's exclusive
/// create would fail. Files in the new directory and a large one alongside.
#[test]
fn small_files_spanning_shards_arrive_identical() {
    let sizes: Vec<usize> = (0..40).map(|i| 1 + i * 1637).chain([2 << 20, 4096, 0]).collect();
    transfer_blocks(2, BackendKind::Uring, &sizes, 12, "span2");
    transfer_blocks(2, BackendKind::Uring, &sizes, 20, "whole2");
}
