//! Checkpoints and resume: round trip through the disk, ordering (a range is in the checkpoint
//! only after a commit, which fdatasyncs first), corruption and foreign checkpoints mean start
//! over, fingerprints agree between a sender's source and a receiver's partial.

// Test helpers outside #[test] fns may unwrap too: a panic there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_io::files::checkpoint::{CheckpointInvalid, FingerprintKind};
use haul_io::files::{
    CheckpointWriter, DestRoot, FileIdentity, Leftover, Loaded, PartialFile, PartialOptions,
    ResumeLevel, ResumePlan, SafeName, StartOver, checkpoint_interval_bytes, fingerprint,
    load_leftover,
};
use std::fs;
use std::ops::Range;
use std::path::Path;

const SIZE: u64 = 10 << 20;
const CHUNK: usize = 64 << 10;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

struct Fixture {
    tmp: tempfile::TempDir,
    dest: DestRoot,
    name: SafeName,
    source: Vec<u8>,
    identity: FileIdentity,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("dest")).unwrap();
    let source = pattern(SIZE as usize, 3);
    fs::write(tmp.path().join("source.bin"), &source).unwrap();
    let src = fs::File::open(tmp.path().join("source.bin")).unwrap();
    let identity = FileIdentity::of_file(&src, SIZE, 77, true).unwrap();
    let dest = DestRoot::open(&tmp.path().join("dest")).unwrap();
    Fixture { tmp, dest, name: SafeName::parse("sub/big.bin").unwrap(), source, identity }
}

/// Receives the first `upto` bytes, committing as the writer asks; returns the writer.
fn receive_prefix(f: &Fixture, upto: u64) -> (PartialFile, CheckpointWriter) {
    let p = PartialFile::create(&f.dest, &f.name, SIZE, PartialOptions::default()).unwrap();
    let mut w = CheckpointWriter::new(&p, f.identity, &[]).unwrap();
    let mut off = 0;
    while off < upto {
        let end = (off + CHUNK as u64).min(upto);
        p.write_at(&f.source[off as usize..end as usize], off).unwrap();
        w.record_written(off..end).unwrap();
        w.maybe_commit().unwrap();
        off = end;
    }
    (p, w)
}

fn ckpt_path(f: &Fixture) -> std::path::PathBuf {
    f.tmp.path().join("dest/sub/.big.bin.haul-partial.ckpt")
}

#[test]
fn checkpoint_round_trip_and_resume_at_attributes() {
    let f = fixture();
    let interval = checkpoint_interval_bytes(SIZE);
    let written = 3 << 20;
    let (p, w) = receive_prefix(&f, written);
    assert_eq!(w.interval_bytes(), interval);
    drop((p, w)); // a crash: nothing more is committed
    let left = load_leftover(&f.dest, &f.name).unwrap();
    assert_eq!(left.partial_len, Some(SIZE));
    let Loaded::Found(ckpt) = &left.checkpoint else { panic!("{left:?}") };
    assert_eq!(ckpt.name, "sub/big.bin");
    assert_eq!(ckpt.identity, f.identity);
    assert_eq!(ckpt.ranges.len(), 1);
    let kept = ckpt.ranges[0].clone();
    assert_eq!(kept.start, 0);
    // At most one interval (plus one chunk of batching) is lost.
    assert!(kept.end <= written && written - kept.end <= interval + CHUNK as u64, "{kept:?}");

    let plan = ResumePlan::decide(ResumeLevel::Attributes, &left, &f.identity);
    assert_eq!(plan, ResumePlan::Keep { ranges: vec![kept.clone()], verify: None });
    assert_eq!(plan.kept_prefix(1 << 20), kept.end - kept.end % (1 << 20));

    // Resume: keep the ranges, write the rest, finalize.
    let p = PartialFile::create(&f.dest, &f.name, SIZE, PartialOptions::default()).unwrap();
    let mut back = vec![0; kept.end as usize];
    p.read_at(&mut back, 0).unwrap();
    assert_eq!(back, f.source[..kept.end as usize]);
    let mut w = CheckpointWriter::new(&p, f.identity, std::slice::from_ref(&kept)).unwrap();
    p.write_at(&f.source[kept.end as usize..], kept.end).unwrap();
    w.record_written(kept.end..SIZE).unwrap();
    w.commit().unwrap();
    assert_eq!(w.synced().covered(), SIZE);
    p.finalize(&Default::default(), false).unwrap();
    assert_eq!(fs::read(f.tmp.path().join("dest/sub/big.bin")).unwrap(), f.source);
    assert!(!ckpt_path(&f).exists(), "finalize removes the checkpoint");
}

#[test]
fn ranges_reach_the_checkpoint_only_through_commit() {
    let f = fixture();
    let p = PartialFile::create(&f.dest, &f.name, SIZE, PartialOptions::default()).unwrap();
    let mut w = CheckpointWriter::new(&p, f.identity, &[]).unwrap();
    p.write_at(&f.source[..CHUNK], 0).unwrap();
    w.record_written(0..CHUNK as u64).unwrap();
    assert!(!w.is_commit_due(), "64 KiB is below the 1% interval of 10 MiB");
    assert!(!w.maybe_commit().unwrap());
    assert!(!ckpt_path(&f).exists());
    w.commit().unwrap();
    let left = load_leftover(&f.dest, &f.name).unwrap();
    let Loaded::Found(c) = left.checkpoint else { panic!() };
    assert_eq!(c.ranges, vec![0..CHUNK as u64]);
    // Written but not committed: not in the checkpoint.
    let far = 5 << 20;
    p.write_at(&f.source[far as usize..far as usize + CHUNK], far).unwrap();
    w.record_written(far..far + CHUNK as u64).unwrap();
    let Loaded::Found(c) = load_leftover(&f.dest, &f.name).unwrap().checkpoint else { panic!() };
    assert_eq!(c.ranges, vec![0..CHUNK as u64]);
    w.commit().unwrap();
    let Loaded::Found(c) = load_leftover(&f.dest, &f.name).unwrap().checkpoint else { panic!() };
    assert_eq!(c.ranges, vec![0..CHUNK as u64, far..far + CHUNK as u64]);
    assert!(w.record_written(SIZE - 1..SIZE + 1).is_err());
    assert!(!f.tmp.path().join("dest/sub/.big.bin.haul-partial.ckpt.tmp").exists());
}

#[test]
fn corrupt_truncated_and_foreign_checkpoints_mean_start_over() {
    let f = fixture();
    let (_p, mut w) = receive_prefix(&f, 2 << 20);
    w.commit().unwrap();
    let path = ckpt_path(&f);
    let good = fs::read(&path).unwrap();
    let plan = |dest: &DestRoot, name: &SafeName| {
        ResumePlan::decide(
            ResumeLevel::Attributes,
            &load_leftover(dest, name).unwrap(),
            &f.identity,
        )
    };

    let mut bad = good.clone();
    bad[40] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    assert_eq!(
        plan(&f.dest, &f.name),
        ResumePlan::StartOver(StartOver::Invalid(CheckpointInvalid::BadChecksum))
    );
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(plan(&f.dest, &f.name), ResumePlan::StartOver(StartOver::Invalid(_))));
    fs::write(&path, b"").unwrap();
    assert!(matches!(plan(&f.dest, &f.name), ResumePlan::StartOver(StartOver::Invalid(_))));
    fs::write(&path, vec![0xAB; 1 << 20]).unwrap();
    assert!(matches!(plan(&f.dest, &f.name), ResumePlan::StartOver(StartOver::Invalid(_))));

    // Another file's checkpoint copied under this name.
    let other = SafeName::parse("sub/other.bin").unwrap();
    fs::write(f.tmp.path().join("dest/sub/.other.bin.haul-partial"), vec![0; SIZE as usize])
        .unwrap();
    fs::write(f.tmp.path().join("dest/sub/.other.bin.haul-partial.ckpt"), &good).unwrap();
    assert_eq!(
        plan(&f.dest, &other),
        ResumePlan::StartOver(StartOver::Invalid(CheckpointInvalid::Foreign))
    );

    // The source changed since.
    fs::write(&path, &good).unwrap();
    let changed = FileIdentity { mtime_ns: 78, ..f.identity };
    let left = load_leftover(&f.dest, &f.name).unwrap();
    assert_eq!(
        ResumePlan::decide(ResumeLevel::Attributes, &left, &changed),
        ResumePlan::StartOver(StartOver::SourceChanged)
    );
    // A fresh start removes the checkpoint before discarding the data.
    let p = PartialFile::create(
        &f.dest,
        &f.name,
        SIZE,
        PartialOptions { fresh: true, ..Default::default() },
    )
    .unwrap();
    assert!(!path.exists());
    assert_eq!(load_leftover(&f.dest, &f.name).unwrap().checkpoint, Loaded::Missing);
    p.discard().unwrap();
    assert_eq!(
        load_leftover(&f.dest, &f.name).unwrap(),
        Leftover { checkpoint: Loaded::Missing, partial_len: None }
    );
}

#[test]
fn fingerprints_agree_on_equal_bytes_and_catch_changes() {
    let f = fixture();
    let (p, mut w) = receive_prefix(&f, 6 << 20);
    w.commit().unwrap();
    drop((p, w));
    let left = load_leftover(&f.dest, &f.name).unwrap();
    let source = fs::File::open(f.tmp.path().join("source.bin")).unwrap();
    let partial_path = f.tmp.path().join("dest/sub/.big.bin.haul-partial");
    for (level, kind) in [
        (ResumeLevel::SparseChecksum, FingerprintKind::Sparse),
        (ResumeLevel::FullChecksum, FingerprintKind::Full),
    ] {
        let plan = ResumePlan::decide(level, &left, &f.identity);
        let ResumePlan::Keep { ranges, verify } = &plan else { panic!("{plan:?}") };
        assert_eq!(*verify, Some(kind));
        let theirs = fingerprint(kind, &source, ranges).unwrap();
        let ours = fingerprint(kind, &fs::File::open(&partial_path).unwrap(), ranges).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(plan.clone().confirm(Some(ours), Some(theirs)), plan);
    }
    // Flip one byte at offset 0 (inside the first sparse sample and the full range).
    let mut bytes = fs::read(&partial_path).unwrap();
    bytes[0] ^= 1;
    fs::write(&partial_path, &bytes).unwrap();
    let Loaded::Found(c) = &left.checkpoint else { panic!() };
    for kind in [FingerprintKind::Sparse, FingerprintKind::Full] {
        let theirs = fingerprint(kind, &source, &c.ranges).unwrap();
        let ours = fingerprint(kind, &fs::File::open(&partial_path).unwrap(), &c.ranges).unwrap();
        assert_ne!(ours, theirs, "{kind:?}");
    }
    // A byte between sparse samples is caught by the full fingerprint only.
    let mut bytes = fs::read(&partial_path).unwrap();
    bytes[0] ^= 1;
    bytes[300 << 10] ^= 1;
    fs::write(&partial_path, &bytes).unwrap();
    let partial = fs::File::open(&partial_path).unwrap();
    let sparse = |file: &fs::File| fingerprint(FingerprintKind::Sparse, file, &c.ranges).unwrap();
    let full = |file: &fs::File| fingerprint(FingerprintKind::Full, file, &c.ranges).unwrap();
    assert_eq!(sparse(&partial), sparse(&source));
    assert_ne!(full(&partial), full(&source));
    // Ranges past the end of a file fail rather than hash short.
    let short = f.tmp.path().join("short");
    fs::write(&short, b"abc").unwrap();
    assert!(
        fingerprint(
            FingerprintKind::Full,
            &fs::File::open(&short).unwrap(),
            &[Range { start: 0, end: 10 }]
        )
        .is_err()
    );
    assert_identity_head_is_first_mib(&f, Path::new("source.bin"));
}

fn assert_identity_head_is_first_mib(f: &Fixture, rel: &Path) {
    let path = f.tmp.path().join(rel);
    let mut changed = f.source.clone();
    changed[(1 << 20) + 5] ^= 1;
    let other = f.tmp.path().join("changed-after-head.bin");
    fs::write(&other, &changed).unwrap();
    let a = FileIdentity::of_file(&fs::File::open(&path).unwrap(), SIZE, 77, true).unwrap();
    let b = FileIdentity::of_file(&fs::File::open(&other).unwrap(), SIZE, 77, true).unwrap();
    assert_eq!(a.head_hash, b.head_hash, "only the first MiB is hashed");
    changed[5] ^= 1;
    fs::write(&other, &changed).unwrap();
    let c = FileIdentity::of_file(&fs::File::open(&other).unwrap(), SIZE, 77, true).unwrap();
    assert_ne!(a.head_hash, c.head_hash);
    assert!(!a.matches(&c) && a.matches(&FileIdentity { head_hash: None, ..a }));
}
