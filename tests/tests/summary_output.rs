//! The end-of-transfer summary when stdout cannot take it (issue 3: bad input gets a clear
//! message, nothing panics): a sender whose stdout is `/dev/full` still completes the
//! transfer, exits 0 (the file is in place and verified) and says on stderr that its summary
//! could not be written, with text and with `--json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haul_tests::{Receiver, TempDir, assert_copied, haul_bin, keygen, stderr, wait, write_file};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_full_stdout_loses_only_the_summary_and_says_so() {
    for (tag, flags) in [("summary-text", &[][..]), ("summary-json", &["--json"][..])] {
        let dir = TempDir::new(tag);
        let src = dir.join("src/a.bin");
        write_file(&src, 3 << 20, 91, 0o644);
        let key = keygen(&dir, "key");
        let dest = dir.join("dst");
        std::fs::create_dir_all(&dest).unwrap();
        let recv = Receiver::start("127.0.0.1:0", &key, &dest, &[]);
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let sender = Command::new(haul_bin())
            .args(["send", "--to", &recv.addr, "--key-file"])
            .arg(&key)
            .args(flags)
            .arg(&src)
            .stdin(Stdio::null())
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait(sender, Duration::from_secs(120), "haul send");
        let r = recv.finish(Duration::from_secs(120));
        let err = stderr(&out);
        assert!(out.status.success(), "{tag}: sender {:?}: {err}", out.status);
        assert!(err.contains("summary could not be written to stdout"), "{tag}: {err}");
        assert!(r.status.success(), "{tag}: receiver: {}", stderr(&r));
        assert_copied(&[src], &dest);
    }
}
