//! `LazyBox`: a heap value created on first use, without locks.
//!
//! The recorder allocates a language's counters the first time that language is recorded
//! (so memory follows the languages actually seen, up to the cap) and the probability
//! counters the first time probabilities are passed. Initialization must not block the
//! serving path, so instead of a `OnceLock` (whose initializer makes racing callers wait)
//! each racer builds its own value and tries to publish it with one compare-and-swap; the
//! losers free theirs and use the winner's.

use crate::sync::atomic::{AtomicPtr, Ordering};
use std::ptr;

pub(crate) struct LazyBox<T> {
    /// Null until published; afterwards a pointer from `Box::into_raw` that is never
    /// changed again until `drop`.
    ptr: AtomicPtr<T>,
}

impl<T> LazyBox<T> {
    pub(crate) fn new() -> LazyBox<T> {
        LazyBox {
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The value, if it was created.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null `ptr` came from `Box::into_raw` in `get_or_init` and was
        // published with `Release` (paired with the `Acquire` load above, so the pointee's
        // initialization is visible). It is freed only in `drop`, which takes `&mut self`,
        // so it outlives the `&self` borrow we hand out.
        unsafe { p.as_ref() }
    }

    /// The value, creating it with `init` if nobody has yet.
    #[inline(always)]
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        match self.get() {
            Some(v) => v,
            None => self.init(init),
        }
    }

    #[cold]
    #[inline(never)]
    fn init(&self, init: impl FnOnce() -> T) -> &T {
        let fresh = Box::into_raw(Box::new(init()));
        match self
            .ptr
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: we just published `fresh`, a live `Box` allocation; see `get` for why
            // it outlives `&self`.
            Ok(_) => unsafe { &*fresh },
            Err(winner) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was never shared (the
                // CAS failed), so we still own it and free it exactly once.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: `winner` is the non-null pointer another thread published with
                // `Release` (we loaded it with `Acquire`); see `get`.
                unsafe { &*winner }
            }
        }
    }
}

impl<T> Drop for LazyBox<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can touch the pointer now (a load, so loom builds too).
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` and `&mut self` proves no borrow from
            // `get`/`get_or_init` is alive; it is freed once, here.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

// SAFETY: `LazyBox<T>` hands out `&T` to any thread and drops `T` on the thread that drops
// it, exactly like a `Box<T>` shared by reference: it is Send when `T: Send` and Sync when
// `T: Send + Sync` (Send because the winning value may be created on one thread and
// dropped on another).
unsafe impl<T: Send> Send for LazyBox<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for LazyBox<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn racing_initializers_agree_on_one_value() {
        let lazy = LazyBox::<usize>::new();
        let made = AtomicUsize::new(0);
        assert!(lazy.get().is_none());
        let seen: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let (lazy, made) = (&lazy, &made);
                    s.spawn(move || {
                        *lazy.get_or_init(|| {
                            made.fetch_add(1, Ordering::Relaxed);
                            i
                        })
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(made.load(Ordering::Relaxed) >= 1);
        assert!(seen.iter().all(|&v| v == seen[0]));
        assert_eq!(lazy.get(), Some(&seen[0]));
    }
}
