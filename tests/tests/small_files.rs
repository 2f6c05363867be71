//! Many small files streamed back to back: a tree of 10,000 files of 1–64 KiB plus one 1 GiB
//! file arrives byte-identical, with modes and mtimes preserved (issue 3, "Small files").
//! Run with the default backend and with the fallback forced.
//!
//! Sized for CI: about 330 MiB of small files and 1 GiB on /dev/shm per side, once per backend.

use haul_tests::{
    BACKENDS, Receiver, TempDir, keygen, prefixed, set_mtime, stderr, tree, write_file,
};
use std::time::Duration;

/// Small files in the tree.
const SMALL_FILES: u64 = 10_000;
/// Files per directory, so the tree has depth as well as breadth.
const PER_DIR: u64 = 500;
/// Deadline for the whole transfer: nominally ~20 s on this machine's loopback.
const DEADLINE: Duration = Duration::from_secs(400);

fn build_tree(dir: &TempDir) -> std::path::PathBuf {
    let root = dir.join("many");
    for i in 0..SMALL_FILES {
        // 1 KiB to 64 KiB, spread by a cheap hash of the index.
        let size = 1024 + (i.wrapping_mul(2_654_435_761) % (63 * 1024 + 1)) as usize;
        let mode = [0o644, 0o600, 0o755, 0o640][(i % 4) as usize];
        let p = root.join(format!("d{:02}/f{i:05}", i / PER_DIR));
        write_file(&p, size, i, mode);
        set_mtime(&p, 1_500_000_000 + i);
    }
    let big = root.join("big.bin");
    write_file(&big, 1 << 30, 0xb16, 0o640);
    set_mtime(&big, 1_234_567_890);
    root
}

#[test]
fn ten_thousand_small_files_and_one_gib_arrive_identical() {
    for backend in BACKENDS {
        let dir = TempDir::new("small-files");
        let src = build_tree(&dir);
        let key = keygen(&dir, "key");
        let dest = dir.join("dest");
        let recv = Receiver::start("127.0.0.1:0", &key, &dest, &["--backend", backend]);
        let out = haul_tests::run(
            std::process::Command::new(haul_tests::haul_bin())
                .args(["send", "--to", &recv.addr, "--key-file"])
                .arg(&key)
                .args(["--backend", backend])
                .arg(&src),
            DEADLINE,
        );
        let r = recv.finish(DEADLINE);
        assert!(out.status.success(), "{backend}: send: {}", stderr(&out));
        assert!(r.status.success(), "{backend}: recv: {}", stderr(&r));
        let want = prefixed(&tree(&src), "many");
        let got = tree(&dest);
        assert_eq!(got.len(), want.len(), "{backend}: file count");
        let diff: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
        assert!(diff.is_empty(), "{backend}: differing files (first 5): {diff:?}");
    }
}
