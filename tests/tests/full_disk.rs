//! A full disk: DEST is a small tmpfs (mounted for this test, root only, unmounted after); the
//! file does not fit. The error must name the file and the space needed, exit non-zero, and the
//! partial must stay for a resume (issue 3, "Bad destinations").
//!
//! One test in this file (the mount is serial by construction: test binaries run one after
//! another, and this binary has a single test).

use haul_tests::{Receiver, TRANSFER_TIMEOUT, TempDir, keygen, send, stderr, write_file};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the tmpfs DEST.
const DISK_BYTES: u64 = 8 << 20;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(at)
            .status();
        st.ok().filter(|s| s.success()).map(|_| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn names_beneath(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn full_disk_names_the_file_and_the_space_and_keeps_the_partial() {
    let dir = TempDir::new("full-disk");
    let dest = dir.join("small");
    let Some(_fs) = Tmpfs::mount(&dest) else {
        println!("note: cannot mount a tmpfs here (not root?); full-disk test skipped");
        return;
    };
    let key = keygen(&dir, "key");
    // A first file that fits, then one that does not.
    write_file(&dir.join("src/fits.bin"), 1 << 20, 1, 0o644);
    write_file(&dir.join("src/too-big.bin"), 3 * DISK_BYTES as usize, 2, 0o644);
    let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
    let out = send(&recv.addr, &key, &[dir.join("src")], &[]);
    let r = recv.finish(TRANSFER_TIMEOUT);
    assert!(!out.status.success(), "the sender must not report success");
    assert!(!r.status.success(), "the receiver must not report success");
    let err = format!("{}\n{}", stderr(&r), stderr(&out));
    assert!(err.contains("too-big.bin"), "the error names the file: {err}");
    assert!(
        err.contains("space") || err.contains("full"),
        "the error says the disk is full: {err}"
    );
    assert!(
        err.contains("MiB") || err.contains("bytes"),
        "the error says how much is needed: {err}"
    );
    let left = names_beneath(&dest);
    assert!(!left.iter().any(|n| n == "src/too-big.bin"), "no final file: {left:?}");
    // Refused at set-up (the space check ran before any byte was written): nothing to keep.
    // Otherwise the disk filled during the data, and the partial stays for a resume.
    if !stderr(&r).contains("refused") {
        assert!(
            left.iter().any(|n| n.contains("too-big.bin")),
            "the partial stays for a resume: {left:?}"
        );
    }
}
