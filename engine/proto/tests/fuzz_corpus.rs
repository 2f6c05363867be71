//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same check
//! function its fuzz target runs, so `cargo test` re-checks every input the fuzzer ever kept
//! (docs/FUZZING.md). A corpus directory with no check function below fails the test: whoever
//! adds a fuzz target adds its line to `check_for`.

// This test reads the corpus from disk: it is a test harness, not the sans-IO core, so the
// core's bans on `std::fs` (clippy.toml) do not apply here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};

/// Most files one corpus directory may hold; a committed corpus is minimized to far fewer.
const MAX_CORPUS_FILES: usize = 2_000;

/// The check function of each fuzz target, by corpus directory name.
fn check_for(target: &str) -> Option<fn(&[u8])> {
    match target {
        "decode" => Some(haul_proto::wire::fuzz_check_decode),
        "receive" => Some(|b| {
            let _ = haul_proto::session::fuzz::fuzz_check_receiver(b);
        }),
        _ => None,
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("in {}: {e}", dir.display())).path())
        .collect();
    entries.sort();
    entries
}

#[test]
fn every_corpus_file_passes_its_targets_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut replayed = 0usize;
    for dir in sorted_entries(&root).into_iter().filter(|p| p.is_dir()) {
        let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some(check) = check_for(&target) else {
            panic!("fuzz/corpus/{target} has no check function in tests/fuzz_corpus.rs");
        };
        let files = sorted_entries(&dir);
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        assert!(files.len() <= MAX_CORPUS_FILES, "fuzz/corpus/{target}: minimize it");
        for file in files.iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            // A panic names the file, so the failing input can be replayed alone.
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{} fails the {target} check", file.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus under {}", root.display());
    println!("replayed {replayed} corpus files");
}
