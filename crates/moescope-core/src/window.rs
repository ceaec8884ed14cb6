//! The rolling window: a ring of time buckets, owned by the reader side.
//!
//! Writers never touch the window: they count into staging stripes (the `stage` module), and
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
//! Known up front ([`RecorderBuilder::memory_bound`]). Per language recorded, in the window:
//! `R·L·E·8 + R·L·16 + R·16` bytes, plus `R·L·E·8 + R·L·16` with probabilities; its running
//! window sums, `2·L·E·8 + 3·L·8 + 24`, plus `L·E·8 + 2·L·8` with probabilities; plus
//! `L·E·8 + L·8` of totals since start; in each
//! staging stripe a writer thread used: `L·E·8 + L·16 + 16`, plus `L·E·8 + L·16` with
//! probabilities; plus `R·8·(cap + 2) + R·16` of bucket metadata and 128 bytes per stripe.
//! Qwen3-30B-A3B (L = 48, E = 128), default window (30 × 10 s, R = 31), 16 languages plus
//! `und` and `other`, with probabilities, recorded from 4 threads: 66.5 MB (63.4 MiB).
//!
//! [`RecorderBuilder::memory_bound`]: crate::RecorderBuilder::memory_bound

use crate::sync::atomic::{AtomicU64, Ordering};
use std::collections::VecDeque;

use crate::sampling::weight_for_threshold;
use crate::snapshot::{HalfCounts, LanguageCounts, LayerCounts};
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

    /// `Err((field, reason))` for a window no recorder can keep.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bucket_ms == 0 {
            return Err(("bucket_ms", "must be at least 1, got 0".into()));
        }
        if !(1..=100_000).contains(&self.buckets) {
            return Err((
                "buckets",
                format!("must be between 1 and 100000, got {}", self.buckets),
            ));
        }
        Ok(())
    }
}

/// An upper bound of the bytes a recorder holds (what [`Recorder::allocated_bytes`]
/// reports) for a model of `layers` MoE layers and `experts` routed experts, `languages`
/// languages recorded (count `und` and `other` if they get tokens), with or without router
/// probabilities, a cap of `max_languages`, and `writer_threads` threads recording at once.
/// Public as [`RecorderBuilder::memory_bound`].
///
/// [`Recorder::allocated_bytes`]: crate::Recorder::allocated_bytes
/// [`RecorderBuilder::memory_bound`]: crate::RecorderBuilder::memory_bound
pub(crate) fn memory_bytes(
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
    let sums = 2 * l * e * 8 + 3 * l * 8 + 24 + probs * (l * e * 8 + 2 * l * 8);
    let totals = l * e * 8 + l * 8;
    let stage = l * e * 8 + l * 16 + 16 + probs * (l * e * 8 + l * 16);
    let meta = r * 8 * (max_languages + 2) + r * 16;
    languages * (ring + sums + totals + writer_threads * stage) + meta + writer_threads * 128
}

/// Two counts of the split-half control packed in one `u64`: half A in the low 32 bits,
/// half B in the high 32 bits. Writers add [`PackedHalves::one`] of a token's half with one
/// plain add; readers [`split`](PackedHalves::split) or [`sum`](PackedHalves::sum) them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PackedHalves(pub u64);

impl PackedHalves {
    /// What one token (or selection) of half `h & 1` adds: 1 in its half's 32 bits.
    #[inline(always)]
    pub(crate) const fn one(h: u64) -> u64 {
        1u64 << (32 * (h & 1))
    }

    /// (half A, half B).
    #[inline(always)]
    pub(crate) const fn split(self) -> (u64, u64) {
        (self.0 & 0xffff_ffff, self.0 >> 32)
    }

    /// Both halves together.
    #[inline(always)]
    pub(crate) const fn sum(self) -> u64 {
        let (a, b) = self.split();
        a + b
    }
}

/// Probability sums of one language, all slots.
struct RingProbs {
    prob_sum: Vec<f64>,
    prob_tokens: Vec<u64>,
    entropy: Vec<f64>,
}

/// One language's counts summed over the slots in the window, each slot weighted by its
/// sampling weight: what a snapshot reads, so that a snapshot costs one pass over `L·E`
/// numbers per language rather than one per bucket. Folding adds to it; when a bucket leaves
/// the window the sums are rebuilt from the slots that remain (once per bucket), so they
/// never carry rounding residue of subtracted buckets: a count that left the window is 0.
struct WindowSums {
    /// `[half][layer][expert]`.
    counts: [Vec<f64>; 2],
    /// `[half][layer]`.
    layer_tokens: [Vec<f64>; 2],
    /// `[layer]`.
    topk_weight: Vec<f64>,
    /// Characters, words (not sampled).
    text: [u64; 2],
    /// Unweighted tokens over all layers and slots (exact): 0 when the language has no tokens
    /// in the window.
    raw_tokens: u64,
    /// `[layer][expert]`, `[layer]`, `[layer]`: Σ π, tokens, Σ selection entropy.
    probs: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

impl WindowSums {
    fn new(l: usize, e: usize) -> WindowSums {
        WindowSums {
            counts: [vec![0.0; l * e], vec![0.0; l * e]],
            layer_tokens: [vec![0.0; l], vec![0.0; l]],
            topk_weight: vec![0.0; l],
            text: [0, 0],
            raw_tokens: 0,
            probs: None,
        }
    }

    fn clear(&mut self) {
        for v in self.counts.iter_mut().chain(self.layer_tokens.iter_mut()) {
            v.fill(0.0);
        }
        self.topk_weight.fill(0.0);
        self.text = [0, 0];
        self.raw_tokens = 0;
        if let Some((p, t, h)) = &mut self.probs {
            p.fill(0.0);
            t.fill(0.0);
            h.fill(0.0);
        }
    }
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
    sums: WindowSums,
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

    fn weight(&self, slot: usize, li: usize) -> f64 {
        weight_for_threshold(self.thresholds[slot * self.lang_slots + li])
    }

    /// Closes the current bucket at `boundary` and opens the next (zeroing the one that
    /// leaves the window, and rebuilding the window sums without it).
    pub(crate) fn rotate(&mut self, boundary: u64) {
        if self.order.len() >= self.buckets {
            if let Some(oldest) = self.order.pop_front() {
                self.clear(oldest);
                self.free.push(oldest);
                self.rebuild_sums();
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

    /// Recomputes every language's window sums from the slots in the window.
    fn rebuild_sums(&mut self) {
        let (l, e) = (self.layers, self.experts);
        for li in 0..self.lang_slots {
            let weights: Vec<(usize, f64)> = self
                .order
                .iter()
                .map(|&s| (s, self.weight(s, li)))
                .collect();
            let Some(lang) = self.langs[li].as_mut() else {
                continue;
            };
            let sums = &mut lang.sums;
            sums.clear();
            for &(slot, w) in &weights {
                let counts = &lang.counts[slot * l * e..(slot + 1) * l * e];
                let [sa, sb] = &mut sums.counts;
                for ((a, b), &v) in sa.iter_mut().zip(sb.iter_mut()).zip(counts) {
                    if v != 0 {
                        let (x, y) = PackedHalves(v).split();
                        *a += x as f64 * w;
                        *b += y as f64 * w;
                    }
                }
                let tokens = &lang.layer_tokens[slot * l..(slot + 1) * l];
                let [ta, tb] = &mut sums.layer_tokens;
                for ((a, b), &v) in ta.iter_mut().zip(tb.iter_mut()).zip(tokens) {
                    let (x, y) = PackedHalves(v).split();
                    *a += x as f64 * w;
                    *b += y as f64 * w;
                    sums.raw_tokens += x + y;
                }
                for (d, &v) in sums
                    .topk_weight
                    .iter_mut()
                    .zip(&lang.topk_weight[slot * l..(slot + 1) * l])
                {
                    *d += v * w;
                }
                sums.text[0] += lang.text[slot * 2];
                sums.text[1] += lang.text[slot * 2 + 1];
                if let (Some(rp), Some((p, t, h))) = (&lang.probs, &mut sums.probs) {
                    for (d, &v) in p
                        .iter_mut()
                        .zip(&rp.prob_sum[slot * l * e..(slot + 1) * l * e])
                    {
                        *d += v * w;
                    }
                    for i in 0..l {
                        t[i] += rp.prob_tokens[slot * l + i] as f64 * w;
                        h[i] += rp.entropy[slot * l + i] * w;
                    }
                }
            }
        }
    }

    /// Adds a claimed stripe's staged counts into the current slot (and the window sums) and
    /// zeroes the stripe. `thresholds` are those of the stripe's epoch.
    ///
    /// Counts staged for a language slot that is not `live` (its id was freed while a writer
    /// still held it) are discarded, so a freed slot never carries counts into the language
    /// that claims it next; returns how many tokens that discarded (the largest per-layer
    /// count).
    pub(crate) fn fold(
        &mut self,
        claim: &Claim<'_>,
        thresholds: &[AtomicU64],
        live: impl Fn(usize) -> bool,
    ) -> u64 {
        let slot = self.current();
        let (r, l, e) = (self.slots, self.layers, self.experts);
        let mut discarded = 0;
        for (li, lazy) in claim.stripe.langs.iter().enumerate() {
            let Some(stage) = lazy.get() else { continue };
            if !stage.dirty.swap(false, Ordering::Relaxed) {
                continue;
            }
            if !live(li) {
                discarded += stage.clear();
                continue;
            }
            let threshold = thresholds[li].load(Ordering::Relaxed);
            self.thresholds[slot * self.lang_slots + li] = threshold;
            let weight = weight_for_threshold(threshold);
            let ring = self.langs[li].get_or_insert_with(|| RingLang {
                total_tokens: vec![0.0; l],
                total_selections: vec![0.0; l * e],
                counts: vec![0; r * l * e],
                layer_tokens: vec![0; r * l],
                topk_weight: vec![0.0; r * l],
                text: vec![0; r * 2],
                probs: None,
                sums: WindowSums::new(l, e),
            });
            let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
            let sums = &mut ring.sums;
            let [sa, sb] = &mut sums.counts;
            for ((((dst, total), src), a), b) in ring.counts[slot * l * e..(slot + 1) * l * e]
                .iter_mut()
                .zip(ring.total_selections.iter_mut())
                .zip(stage.counts.iter())
                .zip(sa.iter_mut())
                .zip(sb.iter_mut())
            {
                let v = take(src);
                if v != 0 {
                    let (x, y) = PackedHalves(v).split();
                    *dst += v;
                    *total += (x + y) as f64 * weight;
                    *a += x as f64 * weight;
                    *b += y as f64 * weight;
                }
            }
            let [ta, tb] = &mut sums.layer_tokens;
            for ((((dst, total), src), a), b) in ring.layer_tokens[slot * l..(slot + 1) * l]
                .iter_mut()
                .zip(ring.total_tokens.iter_mut())
                .zip(stage.layer_tokens.iter())
                .zip(ta.iter_mut())
                .zip(tb.iter_mut())
            {
                let v = take(src);
                let (x, y) = PackedHalves(v).split();
                *dst += v;
                *total += (x + y) as f64 * weight;
                *a += x as f64 * weight;
                *b += y as f64 * weight;
                sums.raw_tokens += x + y;
            }
            for ((dst, sum), src) in ring.topk_weight[slot * l..(slot + 1) * l]
                .iter_mut()
                .zip(sums.topk_weight.iter_mut())
                .zip(stage.topk_weight.iter())
            {
                let v = load_f64(src);
                src.store(0, Ordering::Relaxed);
                *dst += v;
                *sum += v * weight;
            }
            for ((dst, sum), src) in ring.text[slot * 2..slot * 2 + 2]
                .iter_mut()
                .zip(sums.text.iter_mut())
                .zip(stage.text.iter())
            {
                let v = take(src);
                *dst += v;
                *sum += v;
            }
            if let Some(sp) = stage.probs.get() {
                let rp = ring.probs.get_or_insert_with(|| RingProbs {
                    prob_sum: vec![0.0; r * l * e],
                    prob_tokens: vec![0; r * l],
                    entropy: vec![0.0; r * l],
                });
                let (ps, pt, ph) = sums
                    .probs
                    .get_or_insert_with(|| (vec![0.0; l * e], vec![0.0; l], vec![0.0; l]));
                for ((dst, sum), src) in rp.prob_sum[slot * l * e..(slot + 1) * l * e]
                    .iter_mut()
                    .zip(ps.iter_mut())
                    .zip(sp.prob_sum.iter())
                {
                    let v = load_f64(src);
                    if v != 0.0 {
                        src.store(0, Ordering::Relaxed);
                        *dst += v;
                        *sum += v * weight;
                    }
                }
                for ((dst, sum), src) in rp.prob_tokens[slot * l..(slot + 1) * l]
                    .iter_mut()
                    .zip(pt.iter_mut())
                    .zip(sp.prob_tokens.iter())
                {
                    let v = take(src);
                    *dst += v;
                    *sum += v as f64 * weight;
                }
                for ((dst, sum), src) in rp.entropy[slot * l..(slot + 1) * l]
                    .iter_mut()
                    .zip(ph.iter_mut())
                    .zip(sp.entropy.iter())
                {
                    let v = load_f64(src);
                    src.store(0, Ordering::Relaxed);
                    *dst += v;
                    *sum += v * weight;
                }
            }
        }
        discarded
    }

    /// Tokens of language `li` in `slot`, weighted: the largest per-layer count.
    pub(crate) fn weighted_tokens(&self, slot: usize, li: usize) -> f64 {
        let l = self.layers;
        self.langs[li].as_ref().map_or(0.0, |lang| {
            let max = lang.layer_tokens[slot * l..(slot + 1) * l]
                .iter()
                .map(|&v| PackedHalves(v).sum())
                .max()
                .unwrap_or(0);
            max as f64 * self.weight(slot, li)
        })
    }

    /// Language `li`'s counts in `slot`, weighted by the slot's sampling weight, with its split
    /// halves; `None` if it has none there.
    pub(crate) fn read_bucket(&self, slot: usize, li: usize) -> Option<LanguageCounts> {
        let (l, e) = (self.layers, self.experts);
        let lang = self.langs.get(li)?.as_ref()?;
        let text = [lang.text[slot * 2], lang.text[slot * 2 + 1]];
        let tokens = &lang.layer_tokens[slot * l..(slot + 1) * l];
        if text == [0, 0] && tokens.iter().all(|&v| v == 0) {
            return None;
        }
        let w = self.weight(slot, li);
        let counts = &lang.counts[slot * l * e..(slot + 1) * l * e];
        let half = |h: usize| -> Vec<LayerCounts> {
            (0..l)
                .map(|i| {
                    let pick = |v: u64| {
                        let (a, b) = PackedHalves(v).split();
                        [a, b][h] as f64 * w
                    };
                    LayerCounts {
                        tokens: pick(tokens[i]),
                        expert_tokens: counts[i * e..(i + 1) * e]
                            .iter()
                            .map(|&v| pick(v))
                            .collect(),
                        ..LayerCounts::zeroed(0)
                    }
                })
                .collect()
        };
        let halves = [half(0), half(1)];
        let layers = whole_layers(&halves, |i, layer| {
            let gate = lang.topk_weight[slot * l + i];
            layer.topk_weight_sum = (gate != 0.0).then_some(gate * w);
            if let Some(p) = &lang.probs {
                let n = p.prob_tokens[slot * l + i];
                if n != 0 {
                    layer.prob_tokens = n as f64 * w;
                    layer.prob_sum = Some(
                        p.prob_sum[(slot * l + i) * e..(slot * l + i + 1) * e]
                            .iter()
                            .map(|v| v * w)
                            .collect(),
                    );
                    layer.selection_entropy_sum_bits = Some(p.entropy[slot * l + i] * w);
                }
            }
        });
        Some(language_counts(layers, text, halves))
    }

    /// Language `li`'s counts over the whole window (the running sums), with its split halves;
    /// `None` if it has none in the window.
    pub(crate) fn read_window(&self, li: usize) -> Option<LanguageCounts> {
        let (l, e) = (self.layers, self.experts);
        let sums = &self.langs.get(li)?.as_ref()?.sums;
        if sums.raw_tokens == 0 && sums.text == [0, 0] {
            return None;
        }
        let half = |h: usize| -> Vec<LayerCounts> {
            (0..l)
                .map(|i| LayerCounts {
                    tokens: sums.layer_tokens[h][i],
                    expert_tokens: sums.counts[h][i * e..(i + 1) * e].to_vec(),
                    ..LayerCounts::zeroed(0)
                })
                .collect()
        };
        let halves = [half(0), half(1)];
        let layers = whole_layers(&halves, |i, layer| {
            let gate = sums.topk_weight[i];
            layer.topk_weight_sum = (gate != 0.0).then_some(gate);
            if let Some((p, t, h)) = &sums.probs {
                if t[i] != 0.0 {
                    layer.prob_tokens = t[i];
                    layer.prob_sum = Some(p[i * e..(i + 1) * e].to_vec());
                    layer.selection_entropy_sum_bits = Some(h[i]);
                }
            }
        });
        Some(language_counts(layers, sums.text, halves))
    }

    /// Whether language slot `li` has nothing in the window (no tokens, no text).
    pub(crate) fn is_idle(&self, li: usize) -> bool {
        self.langs
            .get(li)
            .and_then(Option::as_ref)
            .is_none_or(|lang| lang.sums.raw_tokens == 0 && lang.sums.text == [0, 0])
    }

    /// Drops everything of language slot `li` (its slot was freed for another language),
    /// including its totals since start.
    pub(crate) fn forget(&mut self, li: usize) {
        if let Some(lang) = self.langs.get_mut(li) {
            *lang = None;
        }
        for slot in 0..self.slots {
            self.thresholds[slot * self.lang_slots + li] = u64::MAX;
        }
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
                let s = &g.sums;
                let sp = s
                    .probs
                    .as_ref()
                    .map_or(0, |(p, t, h)| (p.len() + t.len() + h.len()) * 8);
                let sums = (s.counts[0].len() * 2 + s.layer_tokens[0].len() * 2) * 8
                    + s.topk_weight.len() * 8
                    + 24
                    + sp;
                (g.counts.len()
                    + g.layer_tokens.len()
                    + g.topk_weight.len()
                    + g.text.len()
                    + g.total_tokens.len()
                    + g.total_selections.len())
                    * 8
                    + p
                    + sums
            })
            .sum();
        meta + langs
    }
}

/// Each layer's counts as the sum of its two halves (the one merge rule,
/// [`LayerCounts::add_scaled`]), completed by `extra(layer index, layer)` with what only the
/// whole layer has (gate weights, probabilities).
fn whole_layers(
    [a, b]: &[Vec<LayerCounts>; 2],
    mut extra: impl FnMut(usize, &mut LayerCounts),
) -> Vec<LayerCounts> {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (a, b))| {
            let mut layer = a.clone();
            layer.add_scaled(b, 1.0);
            extra(i, &mut layer);
            layer
        })
        .collect()
}

/// A language's counts from its layers, text lengths and halves; its `tokens` is the largest
/// per-layer count.
fn language_counts(
    layers: Vec<LayerCounts>,
    text: [u64; 2],
    [a, b]: [Vec<LayerCounts>; 2],
) -> LanguageCounts {
    LanguageCounts {
        tokens: layers.iter().map(|l| l.tokens).fold(0.0, f64::max),
        chars: (text[0] != 0).then_some(text[0] as f64),
        words: (text[1] != 0).then_some(text[1] as f64),
        layers,
        halves: Some([HalfCounts { layers: a }, HalfCounts { layers: b }]),
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
        // ring 2·31·48·128·8 + 2·31·48·16 + 31·16, window sums 3·48·128·8 + 5·48·8 + 24,
        // totals 48·128·8 + 48·8, stages 2·(2·48·128·8 + 2·48·16 + 16).
        assert_eq!(
            memory_bytes(&w, 48, 128, 1, true, 32, 2) - memory_bytes(&w, 48, 128, 0, true, 32, 2),
            2 * 31 * 48 * 128 * 8
                + 2 * 31 * 48 * 16
                + 31 * 16
                + (3 * 48 * 128 * 8 + 5 * 48 * 8 + 24)
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
