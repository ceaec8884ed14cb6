//! Staging stripes: where writers count, without contending with each other.
//!
//! A writer claims one stripe for the length of a `record` call (one compare-and-swap on the
//! stripe's `busy` flag, trying its thread's preferred stripe first and then the others) and
//! counts straight into that stripe's arrays: `[layer][expert]` per language, exactly the
//! shape a hand-written array would have. The reader (upkeep and snapshot) claims each stripe
//! in turn, folds its counts into the rolling window and zeroes it.
//!
//! # Why plain loads and stores are exact
//!
//! Every field below is an atomic, but while a stripe is claimed nobody else touches it: the
//! claimer (writer or reader) is its only user, so an increment is a relaxed `load` and a
//! relaxed `store` — plain `mov`s, no `lock` prefix. The claim is acquired with `Acquire` and
//! released with `Release`, so whatever the previous holder wrote is visible to the next.
//!
//! # Epochs
//!
//! `epoch` says which bucket the staged counts belong to. Only the reader changes it, and
//! only while holding the stripe, right after folding the stripe into the bucket that is
//! closing. A writer reads the stripe's epoch after claiming it and samples with that
//! epoch's thresholds, so a stripe never mixes two buckets' counts (or two sampling weights).

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;

use crate::lazy::LazyBox;

/// Adds `v` to a counter the caller holds exclusively (see the module docs).
#[inline(always)]
pub(crate) fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// Adds `v` to an `f64` stored as bits, held exclusively.
#[inline(always)]
pub(crate) fn bump_f64(a: &AtomicU64, v: f64) {
    let x = f64::from_bits(a.load(Ordering::Relaxed)) + v;
    a.store(x.to_bits(), Ordering::Relaxed);
}

/// Reads an `f64` stored as bits.
#[inline(always)]
pub(crate) fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

pub(crate) fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// One language's staged counts in one stripe. Halves of the split-half control are packed
/// in each `u64` (half A in the low 32 bits, half B in the high 32 bits).
pub(crate) struct StageBlock {
    /// Set by a writer that staged anything; cleared by the reader's fold.
    pub dirty: AtomicBool,
    /// `[layer][expert]`, packed halves.
    pub counts: Box<[AtomicU64]>,
    /// `[layer]`, packed halves.
    pub layer_tokens: Box<[AtomicU64]>,
    /// `[layer]`, Σ top-k gate weights (f64 bits).
    pub topk_weight: Box<[AtomicU64]>,
    /// Characters, words.
    pub text: [AtomicU64; 2],
    /// Created the first time probabilities are staged.
    pub probs: LazyBox<StageProbs>,
}

/// Staged router-probability sums of one language in one stripe.
pub(crate) struct StageProbs {
    /// `[layer][expert]`, Σ π (f64 bits).
    pub prob_sum: Box<[AtomicU64]>,
    /// `[layer]`, tokens.
    pub prob_tokens: Box<[AtomicU64]>,
    /// `[layer]`, Σ selection entropy in bits (f64 bits).
    pub entropy: Box<[AtomicU64]>,
}

impl StageBlock {
    fn new(layers: usize, experts: usize) -> StageBlock {
        StageBlock {
            dirty: AtomicBool::new(false),
            counts: zeroed(layers * experts),
            layer_tokens: zeroed(layers),
            topk_weight: zeroed(layers),
            text: [AtomicU64::new(0), AtomicU64::new(0)],
            probs: LazyBox::new(),
        }
    }

    pub(crate) fn probs(&self, layers: usize, experts: usize) -> &StageProbs {
        self.probs.get_or_init(|| StageProbs {
            prob_sum: zeroed(layers * experts),
            prob_tokens: zeroed(layers),
            entropy: zeroed(layers),
        })
    }

    /// Zeroes every staged count; returns the tokens it held (the largest per-layer count).
    pub(crate) fn clear(&self) -> u64 {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        let tokens = self
            .layer_tokens
            .iter()
            .map(|a| crate::window::PackedHalves(take(a)).sum())
            .max()
            .unwrap_or(0);
        for a in self
            .counts
            .iter()
            .chain(self.topk_weight.iter())
            .chain(&self.text)
        {
            take(a);
        }
        if let Some(p) = self.probs.get() {
            for a in p
                .prob_sum
                .iter()
                .chain(p.prob_tokens.iter())
                .chain(p.entropy.iter())
            {
                take(a);
            }
        }
        tokens
    }

    pub(crate) fn bytes(&self) -> usize {
        let p = self.probs.get().map_or(0, |p| {
            (p.prob_sum.len() + p.prob_tokens.len() + p.entropy.len()) * 8
        });
        (self.counts.len() + self.layer_tokens.len() + self.topk_weight.len() + 2) * 8 + p
    }
}

/// One stripe: a claim flag, the epoch of its counts, and per-language blocks.
pub(crate) struct Stripe {
    busy: CachePadded<AtomicBool>,
    /// Which bucket the staged counts belong to (see the module docs).
    pub epoch: AtomicU64,
    /// Per-call random stream (for sampling and halves without sequence ids).
    pub rng: AtomicU64,
    /// One token's probabilities: only the claimer locks it, so `try_lock` always succeeds.
    pub row: Mutex<Vec<f64>>,
    pub langs: Box<[LazyBox<StageBlock>]>,
    layers: usize,
    experts: usize,
}

/// A claimed stripe; dropping it releases the claim.
pub(crate) struct Claim<'a> {
    pub stripe: &'a Stripe,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.stripe.busy.store(false, Ordering::Release);
    }
}

impl Stripe {
    pub(crate) fn new(index: usize, lang_slots: usize, layers: usize, experts: usize) -> Stripe {
        Stripe {
            busy: CachePadded::new(AtomicBool::new(false)),
            epoch: AtomicU64::new(0),
            rng: AtomicU64::new(
                0x9e37_79b9_7f4a_7c15 ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1,
            ),
            row: Mutex::new(Vec::new()),
            langs: (0..lang_slots).map(|_| LazyBox::new()).collect(),
            layers,
            experts,
        }
    }

    /// Claims the stripe if it is free.
    #[inline]
    pub(crate) fn try_claim(&self) -> Option<Claim<'_>> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Claim { stripe: self })
    }

    /// Claims the stripe, waiting for a writer to finish (reader side only).
    pub(crate) fn claim_waiting(&self) -> Claim<'_> {
        loop {
            if let Some(c) = self.try_claim() {
                return c;
            }
            crate::sync::spin_yield();
        }
    }

    /// The block of language slot `lang`, created on first use.
    #[inline]
    pub(crate) fn block(&self, lang: usize) -> &StageBlock {
        self.langs[lang].get_or_init(|| StageBlock::new(self.layers, self.experts))
    }

    /// Bytes of counters held; a stripe no thread has used holds none (its flag's cache
    /// line, 128 bytes, is counted once used).
    pub(crate) fn bytes(&self) -> usize {
        let blocks: usize = self
            .langs
            .iter()
            .filter_map(LazyBox::get)
            .map(StageBlock::bytes)
            .sum();
        if blocks == 0 {
            0
        } else {
            blocks + 128
        }
    }

    /// Next value of the stripe's random stream (xorshift64*); call only while claimed.
    #[inline]
    pub(crate) fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_stripe_cannot_be_claimed_twice() {
        let s = Stripe::new(0, 3, 2, 4);
        let c = s.try_claim().unwrap();
        assert!(s.try_claim().is_none());
        drop(c);
        let c = s.claim_waiting();
        bump(&c.stripe.block(1).counts[5], 3);
        bump_f64(&c.stripe.block(1).topk_weight[0], 0.25);
        assert_eq!(s.block(1).counts[5].load(Ordering::Relaxed), 3);
        assert_eq!(load_f64(&s.block(1).topk_weight[0]), 0.25);
        assert_eq!(s.bytes(), (8 + 2 + 2 + 2) * 8 + 128);
    }

    #[test]
    fn claims_serialize_plain_increments_across_threads() {
        let s = Stripe::new(0, 1, 1, 1);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut done = 0;
                    while done < 10_000 {
                        if let Some(c) = s.try_claim() {
                            bump(&c.stripe.block(0).counts[0], 1);
                            done += 1;
                        }
                    }
                });
            }
        });
        assert_eq!(s.block(0).counts[0].load(Ordering::Relaxed), 40_000);
    }
}

/// The stripe protocol under loom (`scripts/loom.sh`): every interleaving of two writers and
/// a reader that folds and moves the stripe to the next epoch.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Each writer tries to claim the stripe once, as `record` does (a writer that finds it
    /// busy drops its token and counts the drop; it never waits), reads the stripe's epoch and
    /// stages one token counted for expert `w` and marked with that epoch (`text[epoch]`). The
    /// reader folds what is staged into the bucket of the stripe's current epoch and moves the
    /// stripe to epoch 1, then folds the rest into bucket 1. Under every interleaving: every
    /// token is counted once or dropped once, and each bucket holds only tokens of its own
    /// epoch.
    #[test]
    fn claims_and_epochs_never_lose_or_mix_counts() {
        loom::model(|| {
            let stripe = Arc::new(Stripe::new(0, 1, 1, 2));
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let s = stripe.clone();
                    thread::spawn(move || match s.try_claim() {
                        Some(c) => {
                            let epoch = c.stripe.epoch.load(Ordering::Relaxed) as usize;
                            let block = c.stripe.block(0);
                            block.dirty.store(true, Ordering::Relaxed);
                            bump(&block.counts[w], 1);
                            bump(&block.text[epoch], 1);
                            0u64
                        }
                        None => 1, // dropped as writer contention
                    })
                })
                .collect();
            // buckets[b] = (tokens per expert, tokens by the epoch they were staged under)
            let mut buckets = [([0u64; 2], [0u64; 2]); 2];
            let mut fold = |bucket: usize, s: &Stripe| {
                let c = s.claim_waiting();
                if let Some(block) = c.stripe.langs[0].get() {
                    if block.dirty.swap(false, Ordering::Relaxed) {
                        for e in 0..2 {
                            buckets[bucket].0[e] += block.counts[e].swap(0, Ordering::Relaxed);
                            buckets[bucket].1[e] += block.text[e].swap(0, Ordering::Relaxed);
                        }
                    }
                }
                if bucket == 0 {
                    c.stripe.epoch.store(1, Ordering::Relaxed); // published by the release
                }
            };
            fold(0, &stripe);
            let dropped: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
            fold(1, &stripe);
            let counted: u64 = buckets.iter().flat_map(|b| b.0).sum();
            assert_eq!(counted + dropped, 2, "{buckets:?}, {dropped} dropped");
            for (b, (counts, by_epoch)) in buckets.iter().enumerate() {
                let tokens: u64 = counts.iter().sum();
                assert_eq!(by_epoch[b], tokens, "bucket {b} mixes epochs: {buckets:?}");
                assert_eq!(by_epoch[1 - b], 0, "bucket {b} mixes epochs: {buckets:?}");
            }
        });
    }

    /// Two threads creating a stripe's language block at once agree on one block, and
    /// counts staged through either are seen by the next holder of the stripe.
    #[test]
    fn racing_first_uses_agree_on_one_block() {
        loom::model(|| {
            let stripe = Arc::new(Stripe::new(0, 1, 1, 1));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let s = stripe.clone();
                    thread::spawn(move || s.block(0) as *const StageBlock as usize)
                })
                .collect();
            let addrs: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(addrs[0], addrs[1]);
            let c = stripe.claim_waiting();
            bump(&c.stripe.block(0).counts[0], 3);
            drop(c);
            assert_eq!(stripe.block(0).counts[0].load(Ordering::Relaxed), 3);
        });
    }
}
