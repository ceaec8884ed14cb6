//! The atomics of the lock-free parts (staging stripes, the lazy cell, the window and the
//! recorder's counters): `std`'s, or loom's in a `--cfg loom` build, where
//! `scripts/loom.sh` model-checks the stripe protocol under every interleaving loom explores.

/// Atomics: `std::sync::atomic`, or `loom::sync::atomic` under `--cfg loom`.
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
}

/// Gives the other threads a chance while spinning (loom needs to see it).
#[inline]
pub(crate) fn spin_yield() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
