//! The accumulator's layout, and its host copy merged into a [`Recorder`].
//!
//! One accumulator is a flat array of 64-bit words (integers, or `f64` bits for sums), for a
//! model of `L` MoE layers, `G` tag slots (the recorder's language slots) and `E` experts:
//!
//! | region        | shape            | type |
//! |---------------|------------------|------|
//! | `counts`      | `[L][G][2][E]`   | u64 selections per split half |
//! | `prob_sum`    | `[L][G][E]`      | f64 Σ router probability |
//! | `tokens`      | `[L][G][2]`      | u64 tokens per split half |
//! | `prob_tokens` | `[L][G]`         | u64 tokens with probabilities |
//! | `entropy`     | `[L][G]`         | f64 Σ selection entropy, bits |
//! | `weight`      | `[L][G]`         | f64 Σ top-k gate weights |
//! | `stats`       | `[L][5]`         | u64 per [`Stat`] |
//!
//! The kernels compute the same offsets (`off_*` in the CUDA source); the tests check both.

use moescope_core::{BulkCounts, BulkError, BulkProbs, DropReason, LangId, Recorder};

/// Per-layer counters of tokens a kernel did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// An expert id negative or not below `E` ([`DropReason::ExpertOutOfRange`]).
    IdOutOfRange = 0,
    /// A NaN or infinite weight or logit ([`DropReason::NonFinite`]).
    NonFinite = 1,
    /// A negative top-k weight ([`DropReason::InvalidProbability`]).
    InvalidProbability = 2,
    /// A tag not below the tag capacity ([`DropReason::UnknownLanguage`]).
    TagOutOfRange = 3,
    /// A token tagged [`LangId::EXCLUDED`]: skipped on purpose, not a drop.
    Excluded = 4,
}

impl Stat {
    /// Every counter, in layout order.
    pub const ALL: [Stat; 5] = [
        Stat::IdOutOfRange,
        Stat::NonFinite,
        Stat::InvalidProbability,
        Stat::TagOutOfRange,
        Stat::Excluded,
    ];

    /// The recorder's drop reason for this counter (`None` for [`Stat::Excluded`]).
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            Stat::IdOutOfRange => Some(DropReason::ExpertOutOfRange),
            Stat::NonFinite => Some(DropReason::NonFinite),
            Stat::InvalidProbability => Some(DropReason::InvalidProbability),
            Stat::TagOutOfRange => Some(DropReason::UnknownLanguage),
            Stat::Excluded => None,
        }
    }
}

/// The shape of one accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// MoE layers (`L`).
    pub layers: usize,
    /// Tag slots (`G`): a token's tag is its language's [`LangId::index`].
    pub tags: usize,
    /// Routed experts (`E`).
    pub experts: usize,
}

impl Layout {
    /// The layout for `recorder`'s model and language slots.
    pub fn for_recorder(recorder: &Recorder) -> Layout {
        Layout {
            layers: recorder.spec().num_moe_layers(),
            tags: recorder.registry().slot_count(),
            experts: recorder.spec().num_experts as usize,
        }
    }

    fn lg(&self) -> usize {
        self.layers * self.tags
    }

    /// Offset of `counts[layer][tag][half][0]`.
    pub fn counts(&self, layer: usize, tag: usize, half: usize) -> usize {
        ((layer * self.tags + tag) * 2 + half) * self.experts
    }
    /// Offset of `prob_sum[layer][tag][0]`.
    pub fn prob_sum(&self, layer: usize, tag: usize) -> usize {
        self.lg() * 2 * self.experts + (layer * self.tags + tag) * self.experts
    }
    fn base_tokens(&self) -> usize {
        self.lg() * 3 * self.experts
    }
    /// Offset of `tokens[layer][tag][half]`.
    pub fn tokens(&self, layer: usize, tag: usize, half: usize) -> usize {
        self.base_tokens() + (layer * self.tags + tag) * 2 + half
    }
    /// Offset of `prob_tokens[layer][tag]`.
    pub fn prob_tokens(&self, layer: usize, tag: usize) -> usize {
        self.base_tokens() + self.lg() * 2 + layer * self.tags + tag
    }
    /// Offset of `entropy[layer][tag]`.
    pub fn entropy(&self, layer: usize, tag: usize) -> usize {
        self.base_tokens() + self.lg() * 3 + layer * self.tags + tag
    }
    /// Offset of `weight[layer][tag]`.
    pub fn weight(&self, layer: usize, tag: usize) -> usize {
        self.base_tokens() + self.lg() * 4 + layer * self.tags + tag
    }
    /// Offset of `stats[layer][stat]`.
    pub fn stat(&self, layer: usize, stat: Stat) -> usize {
        self.base_tokens() + self.lg() * 5 + layer * Stat::ALL.len() + stat as usize
    }
    /// Words in one accumulator.
    pub fn words(&self) -> usize {
        self.base_tokens() + self.lg() * 5 + self.layers * Stat::ALL.len()
    }
    /// Bytes in one accumulator.
    pub fn bytes(&self) -> usize {
        self.words() * 8
    }
}

/// What merging one accumulator did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeReport {
    /// Token-layers merged into the recorder (a token counts once per layer).
    pub merged_tokens: u64,
    /// Token-layers the kernels dropped, added to the recorder's drop counters.
    pub dropped_tokens: u64,
    /// Token-layers tagged [`LangId::EXCLUDED`].
    pub excluded_tokens: u64,
    /// Token-layers the recorder refused (see `errors`).
    pub unmerged_tokens: u64,
    /// Why the recorder refused them (e.g. [`BulkError::Sampled`]), one entry per layer and
    /// language refused.
    pub errors: Vec<BulkError>,
}

/// A host copy of one accumulator.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregates {
    layout: Layout,
    words: Vec<u64>,
}

impl Aggregates {
    /// An empty accumulator of `layout`.
    pub fn zeroed(layout: Layout) -> Aggregates {
        Aggregates {
            layout,
            words: vec![0; layout.words()],
        }
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The raw words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The raw words, to fill from the device or count into.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Adds `v` to the integer at `at`.
    pub fn add(&mut self, at: usize, v: u64) {
        self.words[at] = self.words[at].wrapping_add(v);
    }

    /// Adds `v` to the `f64` at `at`.
    pub fn add_f64(&mut self, at: usize, v: f64) {
        self.words[at] = (f64::from_bits(self.words[at]) + v).to_bits();
    }

    /// The integer at `at`.
    pub fn get(&self, at: usize) -> u64 {
        self.words[at]
    }

    /// The `f64` at `at`.
    pub fn get_f64(&self, at: usize) -> f64 {
        f64::from_bits(self.words[at])
    }

    /// Tokens of `layer` and `tag`, both halves.
    pub fn tokens(&self, layer: usize, tag: usize) -> u64 {
        let l = &self.layout;
        self.get(l.tokens(layer, tag, 0)) + self.get(l.tokens(layer, tag, 1))
    }

    /// Merges every non-empty (layer, tag) into `recorder` with
    /// [`Recorder::merge_counts`], and the drop counters with [`Recorder::add_dropped`].
    /// `words` is left untouched. Never panics.
    pub fn merge_into(&self, recorder: &Recorder) -> MergeReport {
        merge_words(self.layout, &self.words, recorder)
    }
}

/// [`Aggregates::merge_into`] over a borrowed word array (e.g. pinned host memory).
pub(crate) fn merge_words(layout: Layout, w: &[u64], recorder: &Recorder) -> MergeReport {
    let mut report = MergeReport::default();
    if w.len() != layout.words() || Layout::for_recorder(recorder) != layout {
        report.errors.push(BulkError::ShapeMismatch {
            field: "accumulator",
            expected: Layout::for_recorder(recorder).words(),
            found: w.len(),
        });
        return report;
    }
    let e = layout.experts;
    let f = |at: usize| f64::from_bits(w[at]);
    for layer in 0..layout.layers {
        for tag in 0..layout.tags {
            let tokens = [
                w[layout.tokens(layer, tag, 0)],
                w[layout.tokens(layer, tag, 1)],
            ];
            let prob_tokens = w[layout.prob_tokens(layer, tag)];
            if tokens == [0, 0] && prob_tokens == 0 {
                continue;
            }
            let a = &w[layout.counts(layer, tag, 0)..][..e];
            let b = &w[layout.counts(layer, tag, 1)..][..e];
            let lang = LangId::from_index(tag as u16);
            let mut c = BulkCounts::new(layer, lang, tokens, [a, b]);
            let weight = f(layout.weight(layer, tag));
            if weight != 0.0 {
                c = c.topk_weight_sum(weight);
            }
            if prob_tokens > 0 {
                c = c.probs(BulkProbs {
                    tokens: prob_tokens,
                    prob_sum: bytemuck_f64(&w[layout.prob_sum(layer, tag)..][..e]),
                    entropy_sum_bits: f(layout.entropy(layer, tag)),
                });
            }
            match recorder.merge_counts(&c) {
                Ok(()) => report.merged_tokens += c.total_tokens(),
                Err(err) => {
                    report.unmerged_tokens += c.total_tokens();
                    report.errors.push(err);
                }
            }
        }
        for stat in Stat::ALL {
            let n = w[layout.stat(layer, stat)];
            if n == 0 {
                continue;
            }
            match stat.drop_reason() {
                Some(reason) => {
                    recorder.add_dropped(reason, n);
                    report.dropped_tokens += n;
                }
                None => report.excluded_tokens += n,
            }
        }
    }
    report
}

/// Reinterprets words holding `f64` bits as `f64`s.
#[allow(unsafe_code)] // a same-size, same-alignment slice cast
fn bytemuck_f64(words: &[u64]) -> &[f64] {
    // SAFETY: u64 and f64 have the same size and alignment, and every bit pattern is a valid
    // f64; the slice's length and lifetime are kept.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f64>(), words.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_tile_the_accumulator_without_overlap() {
        let l = Layout {
            layers: 3,
            tags: 5,
            experts: 7,
        };
        let mut owner = vec![None; l.words()];
        let mut claim = |at: usize, what: String| {
            assert!(owner[at].is_none(), "{what} overlaps {:?}", owner[at]);
            owner[at] = Some(what);
        };
        for layer in 0..3 {
            for tag in 0..5 {
                for e in 0..7 {
                    for h in 0..2 {
                        claim(
                            l.counts(layer, tag, h) + e,
                            format!("counts {layer} {tag} {h} {e}"),
                        );
                    }
                    claim(
                        l.prob_sum(layer, tag) + e,
                        format!("prob {layer} {tag} {e}"),
                    );
                }
                for h in 0..2 {
                    claim(l.tokens(layer, tag, h), format!("tokens {layer} {tag} {h}"));
                }
                claim(l.prob_tokens(layer, tag), format!("pt {layer} {tag}"));
                claim(l.entropy(layer, tag), format!("ent {layer} {tag}"));
                claim(l.weight(layer, tag), format!("w {layer} {tag}"));
            }
            for s in Stat::ALL {
                claim(l.stat(layer, s), format!("stat {layer} {s:?}"));
            }
        }
        assert!(
            owner.iter().all(Option::is_some),
            "every word has one owner"
        );
        assert_eq!(l.words(), 3 * 5 * (7 * 3 + 5) + 3 * 5);
    }
}
