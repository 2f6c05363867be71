//! Side accounting: which end of the transfer the current thread is working for.
//!
//! The driver wraps every call into sender-side objects in `with_side(Side::Sender, ..)` and every
//! call into receiver-side objects in `with_side(Side::Receiver, ..)`. A counting global
//! allocator (in haul-io's memory test) reads [`current_side`] on each allocation and charges
//! the bytes to that side, so the sender's and the receiver's peak heap can be told apart while
//! both run in one thread.
//!
//! Two ways to charge: an allocator that reads [`current_side`] itself, or one with its own
//! closure-scoped account (such as `haul_io::alloc::with_account`), registered once with
//! [`set_side_hook`]; `with_side` then runs its closure inside the hook, e.g.
//! `set_side_hook(|side, f| haul_io::alloc::with_account(side as usize, f))`. haul-sim does not
//! depend on haul-io for this.
//!
//! Invariants: the marker is a `const`-initialised thread-local `Cell<u8>`, so reading it from
//! inside an allocator never allocates and never recurses; `with_side` restores the previous
//! marker when it returns or unwinds, so nesting and panics leave it consistent; the hook is set
//! at most once per process and calling it allocates nothing.

use std::cell::Cell;
use std::sync::OnceLock;

/// A wrapper every `with_side` call runs its work through; it must call the closure once.
pub type SideHook = fn(Side, &mut dyn FnMut());

static HOOK: OnceLock<SideHook> = OnceLock::new();

/// Register the process's side hook. Returns false if one was already set (it stays).
pub fn set_side_hook(hook: SideHook) -> bool {
    HOOK.set(hook).is_ok()
}

/// One end of a simulated transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Sender = 1,
    Receiver = 2,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Sender, Side::Receiver];

    pub const fn name(self) -> &'static str {
        match self {
            Side::Sender => "sender",
            Side::Receiver => "receiver",
        }
    }

    /// Index into per-side arrays: sender 0, receiver 1.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    pub const fn peer(self) -> Side {
        match self {
            Side::Sender => Side::Receiver,
            Side::Receiver => Side::Sender,
        }
    }
}

thread_local! {
    static CURRENT: Cell<u8> = const { Cell::new(0) };
}

/// The side the current thread is working for, if any. Never allocates.
pub fn current_side() -> Option<Side> {
    match CURRENT.with(Cell::get) {
        1 => Some(Side::Sender),
        2 => Some(Side::Receiver),
        _ => None,
    }
}

/// Restores the previous marker on drop (also during unwinding).
struct Restore(u8);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Run `f` with the current thread marked as working for `side` (and inside the side hook, if
/// one is set).
pub fn with_side<R>(side: Side, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(CURRENT.with(|c| c.replace(side as u8)));
    let Some(hook) = HOOK.get() else { return f() };
    let mut f = Some(f);
    let mut out = None;
    hook(side, &mut || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    });
    match (out, f) {
        (Some(r), _) => r,
        // A hook that did not call the closure: run it here, unwrapped.
        (None, Some(f)) => f(),
        // `f` was taken, so it ran; it returned (else we would be unwinding), so `out` is set.
        (None, None) => unreachable!("with_side: the closure ran but left no result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_nests_and_restores() {
        assert_eq!(current_side(), None);
        with_side(Side::Sender, || {
            assert_eq!(current_side(), Some(Side::Sender));
            with_side(Side::Receiver, || assert_eq!(current_side(), Some(Side::Receiver)));
            assert_eq!(current_side(), Some(Side::Sender));
        });
        assert_eq!(current_side(), None);
    }

    #[test]
    fn hook_wraps_every_call_once() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
        fn hook(side: Side, f: &mut dyn FnMut()) {
            CALLS[side as usize].fetch_add(1, Ordering::Relaxed);
            f();
        }
        // Other tests in this binary run without a hook until this one sets it; that is fine,
        // they only look at the marker.
        assert!(set_side_hook(hook));
        assert!(!set_side_hook(hook), "set once");
        let before = CALLS[1].load(Ordering::Relaxed);
        let v = with_side(Side::Sender, || with_side(Side::Receiver, || 7) + 1);
        assert_eq!(v, 8);
        assert_eq!(CALLS[1].load(Ordering::Relaxed), before + 1);
        assert!(CALLS[2].load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn marker_is_restored_after_a_panic() {
        let r = std::panic::catch_unwind(|| with_side(Side::Receiver, || panic!("boom")));
        assert!(r.is_err());
        assert_eq!(current_side(), None);
    }
}
