//! `HAUL_IO_BACKEND=portable` forces the portable backend for the whole process, with no
//! global sysctl; the choice says why. Alone in its own test binary (its own process) because
//! it changes the environment.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(unsafe_code)] // std::env::set_var is unsafe in edition 2024.

use haul_io::backend::{BACKEND_ENV, BackendBuilder, BackendKind};

#[test]
fn env_var_forces_portable_and_the_builder_overrides_it() {
    // SAFETY: this binary has this one test, so no other thread reads the environment now.
    unsafe { std::env::set_var(BACKEND_ENV, "portable") };
    let addr = "127.0.0.1:0".parse().unwrap();
    let (backend, choice) = BackendBuilder::new(addr).build().expect("portable backend");
    assert_eq!(backend.kind(), BackendKind::Portable);
    assert_eq!(choice.kind, BackendKind::Portable);
    assert!(choice.reason.contains("HAUL_IO_BACKEND"), "{}", choice.reason);
    println!("chosen: {} ({})", choice.kind.name(), choice.reason);

    // An explicit builder option wins over the environment (where io_uring exists at all).
    match BackendBuilder::new(addr).force(BackendKind::Uring).build() {
        Ok((backend, _)) => assert_eq!(backend.kind(), BackendKind::Uring),
        Err(e) => println!("note: io_uring unavailable here ({e}); override case skipped"),
    }
}
