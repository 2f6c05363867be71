//! A test hook that stops the receiver at a named phase of finishing a file, so that an
//! end-to-end test can `kill -9` it exactly there instead of guessing with timers.
//!
//! Compiled in always and inert unless the environment variable [`PAUSE_ENV`] is set to
//! `PHASE:MARKER`, where PHASE is `verify` or `rename` and MARKER a path. On reaching the phase
//! the first time, the process creates MARKER (empty) and sleeps, until killed or for at most
//! [`MAX_PAUSE`] (then it carries on as if nothing happened). The variable comes from whoever
//! started the process (operator or test), never from a peer. docs/FILES.md, "Test hooks".
//!
//! Phases:
//! - `verify`: every block of a file has been written, read back from disk and hashed, and
//!   the whole-file checksum matched the sender's; the file is not finalized yet.
//! - `rename`: a finalize batch's data and attributes are durable (the first filesystem sync
//!   is done); none of its partial files has been renamed yet.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable that arms the hook.
pub const PAUSE_ENV: &str = "HAUL_TEST_PAUSE";
/// Longest pause: a forgotten variable delays a transfer, never hangs it.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// A phase the hook can stop at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PausePhase {
    Verify,
    Rename,
}

impl PausePhase {
    fn parse(s: &str) -> Option<PausePhase> {
        match s {
            "verify" => Some(PausePhase::Verify),
            "rename" => Some(PausePhase::Rename),
            _ => None,
        }
    }
}

/// The armed phase and marker, read once from the environment.
fn armed() -> Option<&'static (PausePhase, std::path::PathBuf)> {
    static ARMED: OnceLock<Option<(PausePhase, std::path::PathBuf)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(PAUSE_ENV).ok()?;
            let (phase, marker) = v.split_once(':')?;
            Some((PausePhase::parse(phase)?, marker.into()))
        })
        .as_ref()
}

/// Pauses here if the hook is armed for `phase` and has not paused yet; otherwise returns at
/// once (one relaxed load and a branch once the environment has been read).
pub fn pause_if_armed(phase: PausePhase) {
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some((want, marker)) = armed() else { return };
    if *want != phase || DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    // The marker tells the test we are there; if it cannot be written the test times out.
    let _ = std::fs::write(marker, b"");
    std::thread::sleep(MAX_PAUSE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_unknown_ones_do_not() {
        assert_eq!(PausePhase::parse("verify"), Some(PausePhase::Verify));
        assert_eq!(PausePhase::parse("rename"), Some(PausePhase::Rename));
        assert_eq!(PausePhase::parse("data"), None);
    }

    #[test]
    fn unarmed_hook_returns_at_once() {
        // The test environment does not set HAUL_TEST_PAUSE.
        if std::env::var_os(PAUSE_ENV).is_none() {
            pause_if_armed(PausePhase::Verify);
            pause_if_armed(PausePhase::Rename);
        }
    }
}
