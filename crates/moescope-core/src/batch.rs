//! What the serving path hands the recorder: one [`RouterBatch`] per MoE layer per step.

use crate::lang::LangId;

/// An expert id as a router emits it: `u32`, `i32`, `i64` (PyTorch's `topk` indices) and
/// friends. Negative values are out of range.
pub trait ExpertId: Copy + Send + Sync + 'static {
    /// The id as an index; negative ids map to `u64::MAX` (out of range).
    fn expert_index(self) -> u64;
}

macro_rules! unsigned_ids {
    ($($t:ty),*) => {$(
        impl ExpertId for $t {
            #[inline(always)]
            fn expert_index(self) -> u64 { self as u64 }
        }
    )*};
}
macro_rules! signed_ids {
    ($($t:ty),*) => {$(
        impl ExpertId for $t {
            #[inline(always)]
            fn expert_index(self) -> u64 { if self < 0 { u64::MAX } else { self as u64 } }
        }
    )*};
}
unsigned_ids!(u8, u16, u32, u64, usize);
signed_ids!(i16, i32, i64);

/// The router's scores for every routed expert, row-major `T × E`, `f32`.
#[derive(Clone, Copy, Debug)]
pub enum RouterScores<'a> {
    /// Probabilities over the `E` routed experts (each row is renormalized by its sum, so a
    /// softmax over a superset, e.g. with shared experts, is accepted).
    Probabilities(&'a [f32]),
    /// Raw logits; the recorder takes the softmax.
    Logits(&'a [f32]),
}

impl<'a> RouterScores<'a> {
    pub(crate) fn values(&self) -> &'a [f32] {
        match *self {
            RouterScores::Probabilities(v) | RouterScores::Logits(v) => v,
        }
    }
}

/// A contiguous run of tokens of one request in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The request's language ([`LangId::EXCLUDED`] skips the run).
    pub lang: LangId,
    /// Tokens in the run.
    pub tokens: u32,
    /// The request's sequence id: keeps sampling and the split-half control consistent across
    /// layers and steps. `None` lets the recorder alternate tokens.
    pub sequence_id: Option<u64>,
}

/// Which language each token belongs to.
#[derive(Clone, Copy, Debug)]
pub enum Languages<'a> {
    /// Every token of the batch has this language.
    All(LangId),
    /// One id per token.
    PerToken(&'a [LangId]),
    /// Contiguous runs, in token order; their lengths add up to `T`.
    Segments(&'a [Segment]),
}

/// One MoE layer's routing decisions for one forward step.
///
/// A batch names its MoE layer by **depth**: 0 for the model's first MoE layer, `L − 1` for
/// its last. That is not the model's own layer number when some layers are dense: DeepSeek-V3's
/// MoE layers are numbers 3..=60, depths 0..=57. [`ModelSpec::depth_of`] maps a layer number to
/// its depth; snapshots, the statistics and metric labels use layer numbers.
///
/// ```
/// use moescope_core::{LangId, Languages, ModelSpec, RouterBatch};
/// let spec = ModelSpec::preset("deepseek-v3")?;
/// let depth = spec.depth_of(3).unwrap(); // layer number 3 is the first MoE layer
/// assert_eq!(depth, 0);
/// let ids: [u32; 16] = [0; 16];           // T = 2 tokens, top-8
/// let batch = RouterBatch::at_depth(depth, &ids, Languages::All(LangId::UND));
/// assert_eq!(batch.depth(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`ModelSpec::depth_of`]: crate::ModelSpec::depth_of
#[derive(Clone, Copy, Debug)]
pub struct RouterBatch<'a, I: ExpertId = u32> {
    pub(crate) depth: usize,
    pub(crate) expert_ids: &'a [I],
    pub(crate) topk_weights: Option<&'a [f32]>,
    pub(crate) scores: Option<RouterScores<'a>>,
    pub(crate) languages: Languages<'a>,
    pub(crate) sequence_ids: Option<&'a [u64]>,
}

impl<'a, I: ExpertId> RouterBatch<'a, I> {
    /// A batch for the MoE layer at depth `depth` (`0..L`; not the model's layer number:
    /// see [`ModelSpec::depth_of`](crate::ModelSpec::depth_of)), with the top-k expert ids
    /// row-major `T × k`.
    pub fn at_depth(depth: usize, expert_ids: &'a [I], languages: Languages<'a>) -> Self {
        RouterBatch {
            depth,
            expert_ids,
            topk_weights: None,
            scores: None,
            languages,
            sequence_ids: None,
        }
    }

    /// The top-k gate weights, `T × k`, aligned with the ids.
    pub fn topk_weights(mut self, weights: &'a [f32]) -> Self {
        self.topk_weights = Some(weights);
        self
    }

    /// The full router probabilities, `T × E`.
    pub fn probabilities(mut self, probs: &'a [f32]) -> Self {
        self.scores = Some(RouterScores::Probabilities(probs));
        self
    }

    /// The raw router logits, `T × E` (softmax is taken).
    pub fn logits(mut self, logits: &'a [f32]) -> Self {
        self.scores = Some(RouterScores::Logits(logits));
        self
    }

    /// One sequence id per token (ignored with [`Languages::Segments`], which carry their own).
    pub fn sequence_ids(mut self, ids: &'a [u64]) -> Self {
        self.sequence_ids = Some(ids);
        self
    }

    /// The MoE layer's depth (`0..L`).
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// What one `record` call did. Every token of the batch is in exactly one field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Tokens counted.
    pub recorded: u32,
    /// Tokens skipped by sampling.
    pub sampled_out: u32,
    /// Tokens tagged [`LangId::EXCLUDED`].
    pub excluded: u32,
    /// Tokens dropped for bad input (counted by reason in the recorder's drop counters).
    pub dropped: u32,
}

/// Why input was dropped. Each reason has a counter ([`crate::Recorder::dropped`]) and a
/// label value for `moe_routing_dropped_total{reason}`. New reasons may be added: iterate
/// [`DropReason::ALL`] rather than matching exhaustively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// A length did not match (ids not a multiple of k, languages, weights, scores or
    /// sequence ids of the wrong length): the whole batch is dropped.
    ShapeMismatch,
    /// The MoE layer depth is not below the model's number of MoE layers: the batch is dropped.
    LayerOutOfRange,
    /// An expert id is negative or not below E: the token is dropped.
    ExpertOutOfRange,
    /// A NaN or infinite logit, probability or gate weight: the token is dropped.
    NonFinite,
    /// A negative probability or gate weight, or a probability row summing to 0.
    InvalidProbability,
    /// A language id the registry never issued: the token is dropped.
    UnknownLanguage,
    /// More than [`MAX_BATCH_TOKENS`] tokens in one call: the batch is dropped.
    BatchTooLarge,
    /// Every staging stripe was busy (more threads recording at the same instant than
    /// `writer_stripes`): the batch is dropped rather than waited for.
    WriterContention,
}

/// Largest batch one `record` call takes (2^24 tokens).
pub const MAX_BATCH_TOKENS: usize = 1 << 24;

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: &'static [DropReason] = &[
        DropReason::ShapeMismatch,
        DropReason::LayerOutOfRange,
        DropReason::ExpertOutOfRange,
        DropReason::NonFinite,
        DropReason::InvalidProbability,
        DropReason::UnknownLanguage,
        DropReason::BatchTooLarge,
        DropReason::WriterContention,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::ShapeMismatch => "shape_mismatch",
            DropReason::LayerOutOfRange => "layer_out_of_range",
            DropReason::ExpertOutOfRange => "expert_out_of_range",
            DropReason::NonFinite => "non_finite",
            DropReason::InvalidProbability => "invalid_probability",
            DropReason::UnknownLanguage => "unknown_language",
            DropReason::BatchTooLarge => "batch_too_large",
            DropReason::WriterContention => "writer_contention",
        }
    }

    /// How many reasons there are (the length of [`DropReason::ALL`]).
    pub(crate) const COUNT: usize = DropReason::ALL.len();

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// A batch the recorder could not take at all (its tokens are also counted as drops).
/// Per-token problems are not errors: they are counted and reported in [`Recorded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A field's length does not match the batch's shape.
    #[error("router batch: {field} has {found} values, expected {expected}")]
    ShapeMismatch {
        /// The field: `expert_ids`, `languages`, `topk_weights`, `router_scores`, `sequence_ids`.
        field: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        found: usize,
    },
    /// The MoE layer depth is out of range.
    #[error(
        "router batch: MoE layer depth {depth} is out of range (the model has {layers} MoE layers, depths 0..{layers}; a layer number maps to its depth with ModelSpec::depth_of)"
    )]
    LayerOutOfRange {
        /// The depth passed.
        depth: usize,
        /// MoE layers of the model.
        layers: usize,
    },
    /// Too many tokens in one call.
    #[error("router batch: {tokens} tokens in one call; at most {MAX_BATCH_TOKENS} are accepted")]
    BatchTooLarge {
        /// Tokens passed.
        tokens: usize,
    },
}

impl RecordError {
    /// The drop reason this error is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            RecordError::ShapeMismatch { .. } => DropReason::ShapeMismatch,
            RecordError::LayerOutOfRange { .. } => DropReason::LayerOutOfRange,
            RecordError::BatchTooLarge { .. } => DropReason::BatchTooLarge,
        }
    }
}
