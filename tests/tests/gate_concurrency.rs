//! At least 20 concurrent transfers on one `haul serve`: 20 `haul get` processes at once, each
//! with its own token, all byte-identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_common;

use std::process::{Command, Stdio};

use gate_common::{Appliance, TRANSFER_TIMEOUT};
use haul_tests::{TempDir, haul_bin, stderr, wait, write_file};

#[test]
fn twenty_concurrent_downloads() {
    const N: usize = 20;
    let app = Appliance::start(&[], &[]);
    app.add_user("alice", &[]);
    let work = TempDir::new("concurrency");
    let mut children = Vec::new();
    for i in 0..N {
        write_file(&app.storage("alice").join(format!("f{i}")), 1 << 20, i as u64, 0o644);
        let url = app.mint("alice", "download", &format!("/f{i}"), &[]);
        let dest = work.join(format!("d{i}"));
        std::fs::create_dir(&dest).unwrap();
        let child = Command::new(haul_bin())
            .args(["get", &url, dest.to_str().unwrap(), "--shards", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((i, dest, child));
    }
    for (i, dest, child) in children {
        let out = wait(child, TRANSFER_TIMEOUT, "haul get");
        assert!(out.status.success(), "transfer {i}: {}", stderr(&out));
        let want = std::fs::read(app.storage("alice").join(format!("f{i}"))).unwrap();
        assert_eq!(std::fs::read(dest.join(format!("f{i}"))).unwrap(), want, "file {i}");
    }
    assert_eq!(app.log_text().matches("transfer complete").count(), N);
}
