//! Side accounting: which end of the transfer the current thread is working for.
//!
//! The driver wraps every call into sender-side objects in `with_side(Side::Sender, ..)` and every
//! call into receiver-side objects in `with_side(Side::Receiver, ..)`. A counting global
//! allocator (in haul-io's memory test) reads [`current_side`] on each allocation and charges
//! the bytes to that side, so the sender's and the receiver's peak heap can be told apart while
//! both run in one thread.
//!
//! Invariants: the marker is a `const`-initialised thread-local `Cell<u8>`, so reading it from
//! inside an allocator never allocates and never recurses; `with_side` restores the previous
//! marker when it returns or unwinds, so nesting and panics leave it consistent.

use std::cell::Cell;

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

/// Run `f` with the current thread marked as working for `side`.
pub fn with_side<R>(side: Side, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(CURRENT.with(|c| c.replace(side as u8)));
    f()
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
    fn marker_is_restored_after_a_panic() {
        let r = std::panic::catch_unwind(|| with_side(Side::Receiver, || panic!("boom")));
        assert!(r.is_err());
        assert_eq!(current_side(), None);
    }
}
