//! The rolling window: a ring of time buckets, owned by the reader side.
//!
//! Writers never touch the window: they count into staging stripes ([`crate::stage`]), and
//! the reader (upkeep and snapshot, serialized by the recorder's reader mutex) folds the
//! stripes into the current bucket. Rotation therefore never blocks a writer: it is
//! bookkeeping on memory only the reader sees.
//!
//! # Layout
//!
//! The ring has `R = buckets + 1` slots: the current one, up to `buckets − 1` older ones, and
//! at least one zeroed spare. Per language, created the first time it is folded:
//!
//! | array          | index                  | value                                        |
//! |----------------|------------------------|----------------------------------------------|
//! | `counts`       | `[slot][layer][expert]`| selections, halves packed (A low, B high 32 bits) |
//! | `layer_tokens` | `[slot][layer]`        | tokens, halves packed                        |
//! | `topk_weight`  | `[slot][layer]`        | Σ top-k gate weights                         |
//! | `text`         | `[slot][2]`            | characters, words                            |
//! | `probs`        | as above               | Σ router probability per expert, tokens, Σ selection entropy (created when probabilities are first recorded) |
//!
//! Counts are the sampled tokens; each (slot, language) keeps the sampling threshold its
//! counts were taken under, and readers weight them by its inverse (see [`crate::sampling`]).
//! Packed halves bound one half's count per (slot, layer, language, expert) to 2^32 − 1
//! selections (4.29 billion in one bucket), far beyond what a server routes.
//!
//! # Memory
//!
//! Known up front ([`memory_bytes`]). Per language recorded, in the window:
//! `R·L·E·8 + R·L·16 + R·16` bytes, plus `R·L·E·8 + R·L·16` with probabilities, plus
//! `L·E·8 + L·8` of totals since start; in each
//! staging stripe a writer thread used: `L·E·8 + L·16 + 16`, plus `L·E·8 + L·16` with
//! probabilities; plus `R·8·(cap + 2) + R·16` of bucket metadata and 128 bytes per stripe.
//! Qwen3-30B-A3B (L = 48, E = 128), default window (30 × 10 s, R = 31), 16 languages plus
//! `und` and `other`, with probabilities, recorded from 4 threads: 63.8 MB (60.9 MiB).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stage::{load_f64, Claim};

/// The shape of the rolling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Length of one bucket in milliseconds (default 10 000).
    pub bucket_ms: u64,
    /// Buckets in the window (default 30: five minutes).
    pub buckets: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            bucket_ms: 10_000,
            buckets: 30,
        }
    }
}

impl WindowConfig {
    /// Slots in the ring: the window's buckets plus one spare.
    pub fn ring_slots(&self) -> usize {
        self.buckets + 1
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.bucket_ms == 0 {
            return Err("window.bucket_ms must be at least 1");
        }
        if !(1..=100_000).contains(&self.buckets) {
            return Err("window.buckets must be between 1 and 100000");
        }
        Ok(())
    }
}

/// An upper bound of the bytes a recorder holds (what [`Recorder::allocated_bytes`]
/// reports) for a model of `layers` MoE layers and `experts` routed experts, `languages`
/// languages recorded (count `und` and `other` if they get tokens), with or without router
/// probabilities, a cap of `max_languages`, and `writer_threads` threads recording at once.
///
/// [`Recorder::allocated_bytes`]: crate::Recorder::allocated_bytes
pub fn memory_bytes(
    window: &WindowConfig,
    layers: usize,
    experts: usize,
    languages: usize,
    with_probabilities: bool,
    max_languages: usize,
    writer_threads: usize,
) -> usize {
    let r = window.ring_slots();
    let (l, e) = (layers, experts);
    let probs = usize::from(with_probabilities);
    let ring = r * l * e * 8 + r * l * 16 + r * 16 + probs * (r * l * e * 8 + r * l * 16);
    let totals = l * e * 8 + l * 8;
    let stage = l * e * 8 + l * 16 + 16 + probs * (l * e * 8 + l * 16);
    let meta = r * 8 * (max_languages + 2) + r * 16;
    languages * (ring + totals + writer_threads * stage) + meta + writer_threads * 128
}

/// Probability sums of one language, all slots.
struct RingProbs {
    prob_sum: Vec<f64>,
    prob_tokens: Vec<u64>,
    entropy: Vec<f64>,
}

/// Counts of one language, all slots, and its totals since start.
struct RingLang {
    /// `[layer]`: weighted tokens since start (never cleared).
    total_tokens: Vec<f64>,
    /// `[layer][expert]`: weighted selections since start (never cleared).
    total_selections: Vec<f64>,
    counts: Vec<u64>,
    layer_tokens: Vec<u64>,
    topk_weight: Vec<f64>,
    text: Vec<u64>,
    probs: Option<RingProbs>,
}

/// One language's counts in one bucket, unweighted, as read back from the ring.
pub(crate) struct BucketRead<'a> {
    pub counts: &'a [u64],
    pub layer_tokens: &'a [u64],
    pub topk_weight: &'a [f64],
    pub text: [u64; 2],
    pub probs: Option<(&'a [f64], &'a [u64], &'a [f64])>,
    pub threshold: u64,
}

/// The ring of buckets. Reader-owned: lives inside the recorder's reader mutex.
pub(crate) struct Ring {
    slots: usize,
    layers: usize,
    experts: usize,
    lang_slots: usize,
    buckets: usize,
    /// Slots in the window, oldest first; the back one is current.
    pub order: VecDeque<usize>,
    free: Vec<usize>,
    start_ms: Vec<u64>,
    end_ms: Vec<u64>,
    /// `[slot][lang]`: the sampling threshold the slot's counts of that language were taken
    /// under.
    thresholds: Vec<u64>,
    langs: Vec<Option<RingLang>>,
}

impl Ring {
    pub(crate) fn new(
        window: &WindowConfig,
        layers: usize,
        experts: usize,
        lang_slots: usize,
        start_ms: u64,
    ) -> Ring {
        let slots = window.ring_slots();
        let mut ring = Ring {
            slots,
            layers,
            experts,
            lang_slots,
            buckets: window.buckets,
            order: VecDeque::from([0]),
            free: (1..slots).rev().collect(),
            start_ms: vec![0; slots],
            end_ms: vec![0; slots],
            thresholds: vec![u64::MAX; slots * lang_slots],
            langs: (0..lang_slots).map(|_| None).collect(),
        };
        ring.start_ms[0] = start_ms;
        ring
    }

    /// The slot writers' counts are folded into now.
    pub(crate) fn current(&self) -> usize {
        self.order.back().copied().unwrap_or(0)
    }

    pub(crate) fn start_ms(&self, slot: usize) -> u64 {
        self.start_ms[slot]
    }

    pub(crate) fn end_ms(&self, slot: usize) -> u64 {
        self.end_ms[slot]
    }

    /// Closes the current bucket at `boundary` and opens the next (zeroing the one that
    /// leaves the window).
    pub(crate) fn rotate(&mut self, boundary: u64) {
        if self.order.len() >= self.buckets {
            if let Some(oldest) = self.order.pop_front() {
                self.clear(oldest);
                self.free.push(oldest);
            }
        }
        let old = self.current();
        // The ring has one slot more than the window, so a free slot always exists.
        let Some(new) = self.free.pop() else { return };
        self.end_ms[old] = boundary;
        self.start_ms[new] = boundary;
        self.end_ms[new] = 0;
        self.order.push_back(new);
    }

    fn clear(&mut self, slot: usize) {
        let (l, e) = (self.layers, self.experts);
        for lang in self.langs.iter_mut().flatten() {
            lang.counts[slot * l * e..(slot + 1) * l * e].fill(0);
            lang.layer_tokens[slot * l..(slot + 1) * l].fill(0);
            lang.topk_weight[slot * l..(slot + 1) * l].fill(0.0);
            lang.text[slot * 2..slot * 2 + 2].fill(0);
            if let Some(p) = &mut lang.probs {
                p.prob_sum[slot * l * e..(slot + 1) * l * e].fill(0.0);
                p.prob_tokens[slot * l..(slot + 1) * l].fill(0);
                p.entropy[slot * l..(slot + 1) * l].fill(0.0);
            }
        }
        self.thresholds[slot * self.lang_slots..(slot + 1) * self.lang_slots].fill(u64::MAX);
        self.start_ms[slot] = 0;
        self.end_ms[slot] = 0;
    }

    /// Adds a claimed stripe's staged counts into the current slot and zeroes the stripe.
    /// `thresholds` are those of the stripe's epoch.
    pub(crate) fn fold(&mut self, claim: &Claim<'_>, thresholds: &[AtomicU64]) {
        let slot = self.current();
        let (r, l, e) = (self.slots, self.layers, self.experts);
        for (li, lazy) in claim.stripe.langs.iter().enumerate() {
            let Some(stage) = lazy.get() else { continue };
            if !stage.dirty.swap(false, Ordering::Relaxed) {
                continue;
            }
            let threshold = thresholds[li].load(Ordering::Relaxed);
            self.thresholds[slot * self.lang_slots + li] = threshold;
            let weight = crate::sampling::weight_for_threshold(threshold);
            let ring = self.langs[li].get_or_insert_with(|| RingLang {
                total_tokens: vec![0.0; l],
                total_selections: vec![0.0; l * e],
                counts: vec![0; r * l * e],
                layer_tokens: vec![0; r * l],
                topk_weight: vec![0.0; r * l],
                text: vec![0; r * 2],
                probs: None,
            });
            let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
            let unpacked = |v: u64| ((v & 0xffff_ffff) + (v >> 32)) as f64 * weight;
            for ((dst, total), src) in ring.counts[slot * l * e..(slot + 1) * l * e]
                .iter_mut()
                .zip(ring.total_selections.iter_mut())
                .zip(stage.counts.iter())
            {
                let v = take(src);
                *dst += v;
                *total += unpacked(v);
            }
            for ((dst, total), src) in ring.layer_tokens[slot * l..(slot + 1) * l]
                .iter_mut()
                .zip(ring.total_tokens.iter_mut())
                .zip(stage.layer_tokens.iter())
            {
                let v = take(src);
                *dst += v;
                *total += unpacked(v);
            }
            for (dst, src) in ring.topk_weight[slot * l..(slot + 1) * l]
                .iter_mut()
                .zip(stage.topk_weight.iter())
            {
                *dst += load_f64(src);
                src.store(0, Ordering::Relaxed);
            }
            for (dst, src) in ring.text[slot * 2..slot * 2 + 2]
                .iter_mut()
                .zip(stage.text.iter())
            {
                *dst += take(src);
            }
            if let Some(sp) = stage.probs.get() {
                let rp = ring.probs.get_or_insert_with(|| RingProbs {
                    prob_sum: vec![0.0; r * l * e],
                    prob_tokens: vec![0; r * l],
                    entropy: vec![0.0; r * l],
                });
                for (dst, src) in rp.prob_sum[slot * l * e..(slot + 1) * l * e]
                    .iter_mut()
                    .zip(sp.prob_sum.iter())
                {
                    *dst += load_f64(src);
                    src.store(0, Ordering::Relaxed);
                }
                for (dst, src) in rp.prob_tokens[slot * l..(slot + 1) * l]
                    .iter_mut()
                    .zip(sp.prob_tokens.iter())
                {
                    *dst += take(src);
                }
                for (dst, src) in rp.entropy[slot * l..(slot + 1) * l]
                    .iter_mut()
                    .zip(sp.entropy.iter())
                {
                    *dst += load_f64(src);
                    src.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Tokens of language `li` in `slot`, weighted: the largest per-layer count.
    pub(crate) fn weighted_tokens(&self, slot: usize, li: usize) -> f64 {
        let l = self.layers;
        self.langs[li].as_ref().map_or(0.0, |lang| {
            let max = lang.layer_tokens[slot * l..(slot + 1) * l]
                .iter()
                .map(|&v| (v & 0xffff_ffff) + (v >> 32))
                .max()
                .unwrap_or(0);
            max as f64
                * crate::sampling::weight_for_threshold(
                    self.thresholds[slot * self.lang_slots + li],
                )
        })
    }

    /// One language's counts in one slot, if it has any.
    pub(crate) fn read(&self, slot: usize, li: usize) -> Option<BucketRead<'_>> {
        let (l, e) = (self.layers, self.experts);
        let lang = self.langs.get(li)?.as_ref()?;
        Some(BucketRead {
            counts: &lang.counts[slot * l * e..(slot + 1) * l * e],
            layer_tokens: &lang.layer_tokens[slot * l..(slot + 1) * l],
            topk_weight: &lang.topk_weight[slot * l..(slot + 1) * l],
            text: [lang.text[slot * 2], lang.text[slot * 2 + 1]],
            probs: lang.probs.as_ref().map(|p| {
                (
                    &p.prob_sum[slot * l * e..(slot + 1) * l * e],
                    &p.prob_tokens[slot * l..(slot + 1) * l],
                    &p.entropy[slot * l..(slot + 1) * l],
                )
            }),
            threshold: self.thresholds[slot * self.lang_slots + li],
        })
    }

    /// Language `li`'s totals since start: weighted tokens per layer and selections per
    /// `[layer][expert]`.
    pub(crate) fn totals(&self, li: usize) -> Option<(&[f64], &[f64])> {
        let lang = self.langs.get(li)?.as_ref()?;
        Some((&lang.total_tokens, &lang.total_selections))
    }

    /// Bytes held by the ring.
    pub(crate) fn bytes(&self) -> usize {
        let meta = self.thresholds.len() * 8 + self.slots * 16;
        let langs: usize = self
            .langs
            .iter()
            .flatten()
            .map(|g| {
                let p = g.probs.as_ref().map_or(0, |p| {
                    (p.prob_sum.len() + p.prob_tokens.len() + p.entropy.len()) * 8
                });
                (g.counts.len()
                    + g.layer_tokens.len()
                    + g.topk_weight.len()
                    + g.text.len()
                    + g.total_tokens.len()
                    + g.total_selections.len())
                    * 8
                    + p
            })
            .sum();
        meta + langs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_with_16_languages_fits_in_64_mib() {
        let w = WindowConfig::default();
        let bytes = memory_bytes(&w, 48, 128, 16 + 2, true, 32, 4);
        assert!(bytes < 64 << 20, "{bytes}");
        // One more language, with probabilities, two writer threads:
        // ring 2·31·48·128·8 + 2·31·48·16 + 31·16, totals 48·128·8 + 48·8,
        // stages 2·(2·48·128·8 + 2·48·16 + 16).
        assert_eq!(
            memory_bytes(&w, 48, 128, 1, true, 32, 2) - memory_bytes(&w, 48, 128, 0, true, 32, 2),
            2 * 31 * 48 * 128 * 8
                + 2 * 31 * 48 * 16
                + 31 * 16
                + (48 * 128 * 8 + 48 * 8)
                + 2 * (2 * 48 * 128 * 8 + 2 * 48 * 16 + 16)
        );
    }

    #[test]
    fn rotation_keeps_the_window_and_one_spare() {
        let w = WindowConfig {
            bucket_ms: 10,
            buckets: 3,
        };
        let mut ring = Ring::new(&w, 1, 2, 3, 100);
        for b in 1..=10u64 {
            ring.rotate(100 + 10 * b);
            assert!(ring.order.len() <= 3);
            assert_eq!(ring.start_ms(ring.current()), 100 + 10 * b);
        }
        let slots: Vec<usize> = ring.order.iter().copied().collect();
        assert_eq!(ring.end_ms(slots[0]), ring.start_ms(slots[1]));
        assert_eq!(ring.end_ms(ring.current()), 0);
    }
}
