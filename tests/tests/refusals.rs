//! What must fail, and how: a wrong key, a destination that cannot take the files, and a
//! hostile sender naming files outside DEST. Each case checks the exit code, that the message
//! says what is wrong, and that nothing was written where it must not be.

use haul_tests::hostile::{Verdict, send_named};
use haul_tests::{
    BACKENDS, Receiver, TRANSFER_TIMEOUT, TempDir, haul_bin, keygen, run, send, stderr, tree,
    write_file,
};
use std::path::Path;
use std::process::Command;

#[test]
fn wrong_key_is_a_clear_error_and_writes_nothing() {
    for backend in BACKENDS {
        let dir = TempDir::new("wrong-key");
        let (k1, k2) = (keygen(&dir, "k1"), keygen(&dir, "k2"));
        write_file(&dir.join("f"), 100_000, 1, 0o644);
        let dest = dir.join("dest");
        let recv = Receiver::start("127.0.0.1:0", &k1, &dest, &["--backend", backend]);
        let out = send(&recv.addr, &k2, &[dir.join("f")], &["--backend", backend]);
        let r = recv.finish(TRANSFER_TIMEOUT);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("key mismatch or tampered set-up"), "{}", stderr(&out));
        assert_eq!(r.status.code(), Some(1));
        assert!(stderr(&r).contains("key mismatch or tampered set-up"), "{}", stderr(&r));
        assert!(tree(&dest).is_empty(), "nothing written: {:?}", tree(&dest));
    }
}

#[test]
fn missing_destination_parent_is_a_clear_error() {
    let dir = TempDir::new("no-parent");
    let key = keygen(&dir, "key");
    let dest = dir.join("missing/dest");
    let out = run(
        Command::new(haul_bin())
            .args(["recv", "--listen", "127.0.0.1:0", "--key-file"])
            .arg(&key)
            .arg(&dest),
        TRANSFER_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!dir.join("missing").exists());
}

/// A read-only tmpfs mounted for this test (root only), unmounted on drop.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn new(at: &Path) -> Option<ReadOnlyMount> {
        std::fs::create_dir_all(at).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(at)
            .status();
        st.ok().filter(|s| s.success()).map(|_| ReadOnlyMount(at.to_path_buf()))
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_destination_is_a_clear_error() {
    let dir = TempDir::new("ro-dest");
    let key = keygen(&dir, "key");
    let dest = dir.join("ro");
    let Some(_mount) = ReadOnlyMount::new(&dest) else {
        println!("note: cannot mount a tmpfs here (not root?); read-only DEST test skipped");
        return;
    };
    let out = run(
        Command::new(haul_bin())
            .args(["recv", "--listen", "127.0.0.1:0", "--key-file"])
            .arg(&key)
            .arg(&dest),
        TRANSFER_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not writable") && err.contains("Read-only"), "{err}");
}

#[test]
fn hostile_sender_names_are_refused_and_nothing_lands_outside_dest() {
    let dir = TempDir::new("hostile");
    let key = keygen(&dir, "key");
    let dest = dir.join("dest");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A symlink planted in DEST that points out of it.
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    write_file(&dir.join("payload"), 10_000, 7, 0o644);
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &["--keep-listening"]);
    let addr = recv.addr.parse().unwrap();
    let abs = format!("{}/x", outside.display());
    for name in ["../x", "/etc/x", "a/../../x", abs.as_str(), "link/x"] {
        let verdict = send_named(addr, &key, name, &dir.join("payload"));
        match verdict {
            Verdict::Refused(reason) => assert!(!reason.is_empty(), "{name}: empty reason"),
            Verdict::Accepted(Ok(outcome)) => {
                assert!(!outcome.contains("Complete"), "{name}: the receiver took it: {outcome}")
            }
            Verdict::Accepted(Err(_)) | Verdict::Closed => {}
        }
    }
    // The receiver serves one connection after another and reports each failure before it
    // accepts the next: one more (refused) offer means every report above is written.
    let sync = send_named(addr, &key, "../sync", &dir.join("payload"));
    assert!(matches!(sync, Verdict::Refused(_)), "{sync:?}");
    let r = recv.kill();
    let err = stderr(&r);
    for name in ["../x", "/etc/x", "a/../../x", "link/x"] {
        assert!(
            err.contains(&format!("{name:?}")) || err.contains(name),
            "{name} not named in: {err}"
        );
    }
    assert!(tree(&outside).is_empty(), "written outside DEST: {:?}", tree(&outside));
    assert!(!Path::new("/etc/x").exists());
    assert!(!dir.join("x").exists() && !dir.path().parent().unwrap().join("x").exists());
    let inside = tree(&dest);
    assert!(inside.is_empty(), "a refused transfer leaves nothing in DEST: {inside:?}");
}
