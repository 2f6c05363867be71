//! When io_uring cannot be set up (here: a seccomp filter makes `io_uring_setup` fail with
//! EPERM, as container runtimes do), the builder falls back to the portable backend on its own,
//! says why, and the fallback moves data.
//!
//! The filter is installed on one spawned thread only (seccomp filters are per thread without
//! TSYNC), so the rest of the test process is untouched and no global sysctl is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(unsafe_code)] // prctl(PR_SET_SECCOMP) for the test's own thread.

use std::time::Duration;

use haul_io::backend::{BackendBuilder, BackendKind};

/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K (0x05 | 0x10 | 0x00).
const BPF_JMP_JEQ_K: u16 = 0x15;
/// BPF_RET | BPF_K (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// Makes `io_uring_setup` fail with EPERM on the calling thread. (No architecture check: the
/// filter only ever sees this test's own syscalls on the build's native architecture.)
fn deny_io_uring_on_this_thread() -> bool {
    let mut filter = [
        libc::sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: libc::SYS_io_uring_setup as u32 },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW },
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; it only affects this thread.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies the
    // program, and it only affects this thread.
    let rc = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const prog, 0, 0)
    };
    nnp == 0 && rc == 0
}

#[test]
fn io_uring_setup_denied_falls_back_to_portable_and_moves_data() {
    let handle = std::thread::spawn(|| {
        if !deny_io_uring_on_this_thread() {
            println!("note: seccomp unavailable here; automatic fallback case skipped");
            return;
        }
        let (mut rx, choice) = BackendBuilder::new("127.0.0.1:0".parse().unwrap()).build().unwrap();
        println!("chosen: {} ({})", choice.kind.name(), choice.reason);
        assert_eq!(rx.kind(), BackendKind::Portable);
        assert!(choice.reason.contains("io_uring unavailable"), "{}", choice.reason);
        let (mut tx, _) = BackendBuilder::new("127.0.0.1:0".parse().unwrap()).build().unwrap();
        let payload = [7u8; 1200];
        let batch: [&[u8]; 10] = [&payload; 10];
        tx.send_batch(rx.local_addr(), &batch, 1200).unwrap();
        let mut got = 0;
        for _ in 0..100 {
            rx.recv_batch(Duration::from_millis(100), |_, d| {
                assert_eq!(d, &payload[..]);
                got += 1;
            })
            .unwrap();
            if got == 10 {
                break;
            }
        }
        assert_eq!(got, 10);
    });
    handle.join().expect("fallback thread");
}
