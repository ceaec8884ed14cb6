//! Bulk counts: routing counts aggregated outside [`Recorder::record`] (on a GPU, in another
//! process) merged into the recorder's window.
//!
//! A [`BulkCounts`] holds one MoE layer's counts for one language: tokens and expert
//! selections per split half, and optionally the sum of top-k gate weights and the router
//! probability sums. [`Recorder::merge_counts`] adds them to a staging stripe exactly as
//! `record` would have added the same tokens one by one, so they follow the same fold and
//! epoch protocol and land in the bucket that is current at the next upkeep.
//!
//! # Sampling
//!
//! Bulk counts are unsampled: every token was counted. A stripe's counts are weighted at fold
//! time by the language's sampling weight, so merging unsampled counts into a language that is
//! being sampled (rate below 1) would inflate them. [`Recorder::merge_counts`] refuses such a
//! merge with [`BulkError::Sampled`] and changes nothing; keep the default rate
//! ([`crate::SamplingRate::All`]) for the languages whose counts come in bulk.
//!
//! # Split halves
//!
//! `record` assigns a token with a sequence id to half `mix64(sequence_id ^ salt) & 1`
//! ([`sequence_half`] with [`Recorder::split_salt`]); an aggregator that uses the same rule
//! produces halves identical to `record`'s.
//!
//! ```
//! use moescope_core::{BulkCounts, Languages, ModelSpec, Recorder, RouterBatch};
//!
//! let spec = ModelSpec::new("tiny", 4, 2, vec![0, 1])?; // 4 experts, top-2, 2 layers
//! let recorder = Recorder::new(spec)?;
//! let fr = recorder.language("fr");
//! // Layer 1: 3 tokens counted elsewhere, 2 in half A and 1 in half B.
//! let a = [2, 0, 1, 1];
//! let b = [0, 1, 0, 1];
//! recorder.merge_counts(&BulkCounts::new(1, fr, [2, 1], [&a, &b]))?;
//! let layer = &recorder.snapshot().languages["fr"].layers[1];
//! assert_eq!(layer.tokens, 3.0);
//! assert_eq!(layer.expert_tokens, [2.0, 1.0, 1.0, 2.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::Ordering;

use crate::batch::DropReason;
use crate::lang::LangId;
use crate::recorder::Recorder;
use crate::sampling::{mix64, weight_for_threshold};
use crate::stage::{bump, bump_f64, Claim};

/// One MoE layer's counts of one language, aggregated outside `record`.
#[derive(Clone, Copy, Debug)]
pub struct BulkCounts<'a> {
    /// The MoE layer's depth index (`0..L`).
    pub layer: usize,
    /// The language ([`LangId::EXCLUDED`] merges nothing).
    pub lang: LangId,
    /// Tokens counted, per split half.
    pub tokens: [u64; 2],
    /// Selections per expert, per split half: two slices of length `E`.
    pub expert_tokens: [&'a [u64]; 2],
    /// Σ of the tokens' top-k gate weights, if they were given.
    pub topk_weight_sum: Option<f64>,
    /// Router probability sums, if the probabilities were given.
    pub probs: Option<BulkProbs<'a>>,
}

/// Router probability sums of one layer and language (see [`BulkCounts::probs`]).
#[derive(Clone, Copy, Debug)]
pub struct BulkProbs<'a> {
    /// Tokens whose probabilities are summed.
    pub tokens: u64,
    /// Σ of each expert's probability over those tokens, length `E`.
    pub prob_sum: &'a [f64],
    /// Σ of the tokens' selection entropies, in bits.
    pub entropy_sum_bits: f64,
}

impl<'a> BulkCounts<'a> {
    /// Counts of tokens and selections only.
    pub fn new(
        layer: usize,
        lang: LangId,
        tokens: [u64; 2],
        expert_tokens: [&'a [u64]; 2],
    ) -> Self {
        BulkCounts {
            layer,
            lang,
            tokens,
            expert_tokens,
            topk_weight_sum: None,
            probs: None,
        }
    }

    /// Adds the Σ of top-k gate weights.
    pub fn topk_weight_sum(mut self, sum: f64) -> Self {
        self.topk_weight_sum = Some(sum);
        self
    }

    /// Adds router probability sums.
    pub fn probs(mut self, probs: BulkProbs<'a>) -> Self {
        self.probs = Some(probs);
        self
    }

    /// Tokens in both halves.
    pub fn total_tokens(&self) -> u64 {
        self.tokens[0].saturating_add(self.tokens[1])
    }
}

/// Why [`Recorder::merge_counts`] merged nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BulkError {
    /// The layer index is not below the model's number of MoE layers.
    #[error("layer {layer} out of range: the model has {layers} MoE layers")]
    LayerOutOfRange {
        /// The layer passed.
        layer: usize,
        /// MoE layers of the model.
        layers: usize,
    },
    /// A slice has the wrong length.
    #[error("{field}: expected length {expected}, found {found}")]
    ShapeMismatch {
        /// The field.
        field: &'static str,
        /// Its expected length (the number of experts).
        expected: usize,
        /// Its length.
        found: usize,
    },
    /// The language id was never issued by the recorder's registry (counted as
    /// [`DropReason::UnknownLanguage`] drops).
    #[error("language id {0} was never issued by this recorder")]
    UnknownLanguage(u16),
    /// The language is being sampled at a rate below 1, so unsampled counts cannot be merged
    /// exactly (see the module docs).
    #[error(
        "language {tag:?} is sampled at rate {rate}: unsampled bulk counts would be mis-weighted"
    )]
    Sampled {
        /// The language's tag.
        tag: String,
        /// Its current sampling rate.
        rate: f64,
    },
    /// A half's count would pass 2^32 in the staging stripe (counts are packed two halves per
    /// 64-bit word): merge more often.
    #[error("{field}: a half's count would exceed 2^32 before the next fold")]
    Overflow {
        /// The field.
        field: &'static str,
    },
}

/// The split half (0 or 1) that `record` assigns to a token of sequence `sequence_id`, for a
/// recorder whose [`Recorder::split_salt`] is `salt`.
#[inline]
pub fn sequence_half(salt: u64, sequence_id: u64) -> usize {
    (mix64(sequence_id ^ salt) & 1) as usize
}

impl Recorder {
    /// The salt of the split-half hash: a token of sequence `q` is in half
    /// [`sequence_half`]`(salt, q)`. Derived from the builder's seed.
    pub fn split_salt(&self) -> u64 {
        self.salt
    }

    /// Adds `tokens` to the drop counter of `reason`, for input dropped by an aggregator
    /// outside `record` (e.g. a GPU kernel that found an out-of-range expert id).
    pub fn add_dropped(&self, reason: DropReason, tokens: u64) {
        self.drops[reason.index()].fetch_add(tokens, Ordering::Relaxed);
    }

    /// Merges one layer's bulk counts of one language into the window, as if its tokens had
    /// been recorded one by one by [`record`](Self::record) with the same halves. Never
    /// panics; may wait briefly for a writer to release a staging stripe (it is meant for a
    /// background thread, not the serving path).
    ///
    /// # Errors
    /// [`BulkError`] naming the offending field; nothing is merged then.
    pub fn merge_counts(&self, counts: &BulkCounts<'_>) -> Result<(), BulkError> {
        let spec = self.spec();
        let (layers, e) = (spec.num_moe_layers(), spec.num_experts as usize);
        if counts.layer >= layers {
            return Err(BulkError::LayerOutOfRange {
                layer: counts.layer,
                layers,
            });
        }
        let shape = |field, found: usize| {
            if found == e {
                Ok(())
            } else {
                Err(BulkError::ShapeMismatch {
                    field,
                    expected: e,
                    found,
                })
            }
        };
        shape("expert_tokens[0]", counts.expert_tokens[0].len())?;
        shape("expert_tokens[1]", counts.expert_tokens[1].len())?;
        if let Some(p) = counts.probs {
            shape("prob_sum", p.prob_sum.len())?;
        }
        if counts.lang == LangId::EXCLUDED {
            return Ok(());
        }
        let li = counts.lang.index();
        if li >= self.registry().issued() {
            self.add_dropped(DropReason::UnknownLanguage, counts.total_tokens());
            return Err(BulkError::UnknownLanguage(li as u16));
        }
        let claim = self.claim_for_merge();
        let stripe = claim.stripe;
        let parity = (stripe.epoch.load(Ordering::Relaxed) & 1) as usize;
        let threshold = self.thresholds[parity][li].load(Ordering::Relaxed);
        if threshold != u64::MAX {
            let tag = self.registry().tag(counts.lang);
            return Err(BulkError::Sampled {
                tag: tag.map_or_else(String::new, |t| t.as_str().to_owned()),
                rate: 1.0 / weight_for_threshold(threshold),
            });
        }
        let block = stripe.block(li);
        let row = &block.counts[counts.layer * e..(counts.layer + 1) * e];
        let fits = |cur: u64, add: [u64; 2]| {
            (cur & 0xffff_ffff)
                .checked_add(add[0])
                .is_some_and(|v| v <= 0xffff_ffff)
                && (cur >> 32)
                    .checked_add(add[1])
                    .is_some_and(|v| v <= 0xffff_ffff)
        };
        let packed = |add: [u64; 2]| add[0] | (add[1] << 32);
        let [a, b] = counts.expert_tokens;
        if !row
            .iter()
            .zip(a.iter().zip(b))
            .all(|(c, (&x, &y))| fits(c.load(Ordering::Relaxed), [x, y]))
        {
            return Err(BulkError::Overflow {
                field: "expert_tokens",
            });
        }
        let tokens = &block.layer_tokens[counts.layer];
        if !fits(tokens.load(Ordering::Relaxed), counts.tokens) {
            return Err(BulkError::Overflow { field: "tokens" });
        }
        // Checked: every addition below fits its half. The stripe is claimed, so plain adds.
        block.dirty.store(true, Ordering::Relaxed);
        for (c, (&x, &y)) in row.iter().zip(a.iter().zip(b)) {
            if x | y != 0 {
                bump(c, packed([x, y]));
            }
        }
        bump(tokens, packed(counts.tokens));
        if let Some(w) = counts.topk_weight_sum {
            bump_f64(&block.topk_weight[counts.layer], w);
        }
        if let Some(p) = counts.probs {
            if p.tokens > 0 {
                let probs = block.probs(layers, e);
                let sums = &probs.prob_sum[counts.layer * e..(counts.layer + 1) * e];
                for (acc, &v) in sums.iter().zip(p.prob_sum) {
                    bump_f64(acc, v);
                }
                bump(&probs.prob_tokens[counts.layer], p.tokens);
                bump_f64(&probs.entropy[counts.layer], p.entropy_sum_bits);
            }
        }
        Ok(())
    }

    /// Claims a free staging stripe, or waits for the first one (reader-side callers only).
    fn claim_for_merge(&self) -> Claim<'_> {
        self.stripes
            .iter()
            .find_map(|s| s.try_claim())
            .unwrap_or_else(|| self.stripes[0].claim_waiting())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Languages, ManualClock, ModelSpec, RouterBatch, SamplingConfig, SamplingRate, Snapshot,
    };

    const E: usize = 8;
    const K: usize = 2;
    const LAYERS: usize = 3;

    fn recorder(sampling: SamplingConfig) -> Recorder {
        let spec =
            ModelSpec::new("bulk", E as u32, K as u32, (0..LAYERS as u32).collect()).unwrap();
        Recorder::builder(spec)
            .clock(ManualClock::new(1_000_000))
            .sampling(sampling)
            .seed(42)
            .build()
            .unwrap()
    }

    /// The crate's deterministic generator, with the two draws these tests use.
    struct Gen(crate::rng::Rng);
    impl Gen {
        fn below(&mut self, n: u64) -> u64 {
            self.0.below(n as usize) as u64
        }
    }

    /// Dyadic probabilities (sum exactly 1, so `record`'s renormalization and entropy are
    /// exact and sums do not depend on their order): 1/2, 1/4, …, with the remainder on the
    /// last expert.
    fn dyadic_row(g: &mut Gen) -> [f32; E] {
        let mut row = [0.0f32; E];
        let mut left = 1.0f32;
        for i in 0..E - 1 {
            let j = (i + g.below(E as u64) as usize) % E;
            if row[j] == 0.0 && g.below(2) == 0 {
                left /= 2.0;
                row[j] = left;
            }
        }
        let last = row.iter().position(|&p| p == 0.0).unwrap_or(0);
        row[last] += left;
        row
    }

    fn entropy_bits(row: &[f32]) -> f64 {
        row.iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -f64::from(p) * f64::from(p).log2())
            .sum()
    }

    /// Aggregates what `record` would count, per (layer, language), as a device would.
    struct Agg {
        tokens: [u64; 2],
        experts: [[u64; E]; 2],
        weight: f64,
        prob_tokens: u64,
        prob_sum: [f64; E],
        entropy: f64,
    }

    #[test]
    fn merged_counts_equal_per_token_records() {
        let by_token = recorder(SamplingConfig::default());
        let merged = recorder(SamplingConfig::default());
        let tags = ["he", "en", "sw"];
        let ids_a: Vec<LangId> = tags.iter().map(|t| by_token.language(t)).collect();
        let ids_b: Vec<LangId> = tags.iter().map(|t| merged.language(t)).collect();
        assert_eq!(ids_a, ids_b);
        let salt = merged.split_salt();
        assert_eq!(salt, by_token.split_salt());
        let mut g = Gen(crate::rng::Rng::new(0x1234_5678_9abc_def1));
        let mut agg: Vec<Vec<Agg>> = (0..LAYERS)
            .map(|_| {
                (0..tags.len())
                    .map(|_| Agg {
                        tokens: [0; 2],
                        experts: [[0; E]; 2],
                        weight: 0.0,
                        prob_tokens: 0,
                        prob_sum: [0.0; E],
                        entropy: 0.0,
                    })
                    .collect()
            })
            .collect();
        for step in 0..20 {
            let layer = step % LAYERS;
            let t = 1 + g.below(40) as usize;
            let langs: Vec<usize> = (0..t)
                .map(|_| g.below(tags.len() as u64) as usize)
                .collect();
            let lang_ids: Vec<LangId> = langs.iter().map(|&l| ids_a[l]).collect();
            let seqs: Vec<u64> = (0..t).map(|_| g.below(16)).collect();
            let mut ids = Vec::with_capacity(t * K);
            let mut weights = Vec::with_capacity(t * K);
            let mut probs = Vec::with_capacity(t * E);
            for _ in 0..t {
                let a = g.below(E as u64) as u32;
                let b = (a + 1 + g.below(E as u64 - 1) as u32) % E as u32;
                ids.extend([a, b]);
                weights.extend([0.5f32, 0.25 * g.below(4) as f32]);
                probs.extend(dyadic_row(&mut g));
            }
            let with_probs = step % 2 == 0;
            let mut batch = RouterBatch::at_depth(layer, &ids, Languages::PerToken(&lang_ids))
                .topk_weights(&weights)
                .sequence_ids(&seqs);
            if with_probs {
                batch = batch.probabilities(&probs);
            }
            let out = by_token.record(&batch).unwrap();
            assert_eq!(out.recorded as usize, t);
            for tok in 0..t {
                let a = &mut agg[layer][langs[tok]];
                let half = sequence_half(salt, seqs[tok]);
                a.tokens[half] += 1;
                for &id in &ids[tok * K..(tok + 1) * K] {
                    a.experts[half][id as usize] += 1;
                }
                a.weight += weights[tok * K..(tok + 1) * K]
                    .iter()
                    .map(|&w| f64::from(w))
                    .sum::<f64>();
                if with_probs {
                    let row = &probs[tok * E..(tok + 1) * E];
                    a.prob_tokens += 1;
                    for (s, &p) in a.prob_sum.iter_mut().zip(row) {
                        *s += f64::from(p);
                    }
                    a.entropy += entropy_bits(row);
                }
            }
        }
        for (layer, row) in agg.iter().enumerate() {
            for (l, a) in row.iter().enumerate() {
                let mut c = BulkCounts::new(
                    layer,
                    ids_b[l],
                    a.tokens,
                    [&a.experts[0][..], &a.experts[1][..]],
                )
                .topk_weight_sum(a.weight);
                if a.prob_tokens > 0 {
                    c = c.probs(BulkProbs {
                        tokens: a.prob_tokens,
                        prob_sum: &a.prob_sum,
                        entropy_sum_bits: a.entropy,
                    });
                }
                merged.merge_counts(&c).unwrap();
            }
        }
        let (x, y): (Snapshot, Snapshot) = (by_token.snapshot(), merged.snapshot());
        assert!(x.languages["he"].layers[0].tokens > 0.0);
        assert!(x.languages["en"].layers[0].prob_sum.is_some());
        assert_eq!(x, y);
        assert_eq!(by_token.totals(), merged.totals());
    }

    #[test]
    fn a_sampled_language_refuses_bulk_counts() {
        let r = recorder(
            SamplingConfig::default()
                .with_language("en", SamplingRate::Fixed(0.5))
                .unwrap(),
        );
        let en = r.language("en");
        let he = r.language("he");
        let z = [0u64; E];
        let one = [1, 1, 0, 0, 0, 0, 0, 0];
        let err = r
            .merge_counts(&BulkCounts::new(0, en, [1, 0], [&one, &z]))
            .unwrap_err();
        assert_eq!(
            err,
            BulkError::Sampled {
                tag: "en".into(),
                rate: 0.5
            }
        );
        r.merge_counts(&BulkCounts::new(0, he, [1, 0], [&one, &z]))
            .unwrap();
        let s = r.snapshot();
        assert!(!s.languages.contains_key("en"));
        assert_eq!(s.languages["he"].layers[0].expert_tokens[..2], [1.0, 1.0]);
    }

    #[test]
    fn bad_input_names_the_field_and_merges_nothing() {
        let r = recorder(SamplingConfig::default());
        let he = r.language("he");
        let z = [0u64; E];
        let short = [0u64; E - 1];
        assert_eq!(
            r.merge_counts(&BulkCounts::new(LAYERS, he, [0, 0], [&z, &z])),
            Err(BulkError::LayerOutOfRange {
                layer: LAYERS,
                layers: LAYERS
            })
        );
        assert_eq!(
            r.merge_counts(&BulkCounts::new(0, he, [0, 0], [&z, &short])),
            Err(BulkError::ShapeMismatch {
                field: "expert_tokens[1]",
                expected: E,
                found: E - 1
            })
        );
        let never = LangId::from_index(9);
        assert_eq!(
            r.merge_counts(&BulkCounts::new(0, never, [3, 4], [&z, &z])),
            Err(BulkError::UnknownLanguage(9))
        );
        assert_eq!(r.dropped(DropReason::UnknownLanguage), 7);
        // A half's count is 32 bits in the stripe: 2^32 - 1 fits, one more does not.
        let max = [u64::from(u32::MAX); E];
        r.merge_counts(&BulkCounts::new(
            0,
            he,
            [u64::from(u32::MAX), 0],
            [&max, &z],
        ))
        .unwrap();
        let one = [1u64; E];
        assert_eq!(
            r.merge_counts(&BulkCounts::new(0, he, [0, 0], [&one, &z])),
            Err(BulkError::Overflow {
                field: "expert_tokens"
            })
        );
        // The other half still has room.
        r.merge_counts(&BulkCounts::new(0, he, [0, 1], [&z, &one]))
            .unwrap();
        assert_eq!(
            r.merge_counts(&BulkCounts::new(1, LangId::EXCLUDED, [5, 5], [&one, &one])),
            Ok(())
        );
        let s = r.snapshot();
        let l0 = &s.languages["he"].layers[0];
        assert_eq!(l0.tokens, f64::from(u32::MAX) + 1.0);
        assert_eq!(l0.expert_tokens[0], f64::from(u32::MAX) + 1.0);
        assert_eq!(s.languages["he"].layers[1].tokens, 0.0);
    }

    #[test]
    fn sequence_half_matches_records() {
        // A sequence's tokens all go to one half, the one `sequence_half` names.
        let r = recorder(SamplingConfig::default());
        let he = r.language("he");
        let salt = r.split_salt();
        for q in 0..32u64 {
            let ids = [0u32, 1];
            r.record(&RouterBatch::at_depth(0, &ids, Languages::All(he)).sequence_ids(&[q]))
                .unwrap();
        }
        let s = r.snapshot();
        let halves = s.languages["he"].halves.as_ref().unwrap();
        let in_b = (0..32u64).filter(|&q| sequence_half(salt, q) == 1).count() as f64;
        assert_eq!(halves[1].layers[0].tokens, in_b);
        assert_eq!(halves[0].layers[0].tokens, 32.0 - in_b);
        assert!(in_b > 4.0 && in_b < 28.0);
    }
}
