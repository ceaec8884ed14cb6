//! The [`Simulator`]: turns a model spec and a language mix into router batches, one forward
//! step at a time.

use std::ops::Range;

use moescope_core::{
    LangId, Languages, ModelSpec, RecordError, Recorder, RouterBatch, Segment, Tag,
};

use crate::profile::{Collapse, EntropyProfile, LanguageProfile, SimError};
use crate::routing::{self, Router, ORDERS};
use moescope_core::rng::{derive_seed, Rng};

/// How far the language shares may sum from 1 before [`Simulator::new`] refuses them (they
/// are then rescaled to sum to exactly 1).
pub const SHARE_SUM_TOLERANCE: f64 = 1e-3;

/// Default per-token logit noise, in nats (standard deviation).
pub const DEFAULT_LOGIT_NOISE: f32 = 0.1;

/// Default longest segment: a language's tokens in a step are cut into requests of at most
/// this many tokens, each with its own sequence id.
pub const DEFAULT_SEGMENT_TOKENS: usize = 64;

/// Slack allowed on entropy targets at the ends of [log2 k, log2 E] (rounding of callers'
/// `log2` values).
const RANGE_SLACK_BITS: f64 = 1e-9;

/// One forward step: the tokens' languages as segments and every MoE layer's routing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// The step's index (0 for the first step of a simulator).
    pub index: u64,
    /// Tokens in the step (T).
    pub tokens: usize,
    /// The tokens' languages, in token order: one segment per simulated request, each with
    /// its own sequence id. Language ids are those of the recorder last passed to
    /// [`Simulator::bind`] or [`Simulator::drive`] (`und` before any).
    pub segments: Vec<Segment>,
    /// For each segment, the index of its language in [`Simulator::languages`].
    pub segment_languages: Vec<usize>,
    /// One entry per MoE layer, in depth order.
    pub layers: Vec<LayerStep>,
}

/// One MoE layer's routing for the tokens of a [`Step`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStep {
    /// Selected experts, row-major `T × k`, each row k distinct ids by decreasing gate weight.
    pub expert_ids: Vec<u32>,
    /// Gate weights, `T × k`, aligned with the ids: the softmax of the selected experts'
    /// logits (each row sums to 1, as with `norm_topk_prob`).
    pub topk_weights: Vec<f32>,
    /// Router logits, row-major `T × E`: ln p_e plus per-token noise. Empty when router
    /// logits are turned off ([`Simulator::with_router_logits`]).
    pub logits: Vec<f32>,
}

impl Step {
    /// The recorder's batch for MoE layer `depth` (ids, gate weights, logits when present,
    /// segments). `None` when `depth` is not below L.
    pub fn batch(&self, depth: usize) -> Option<RouterBatch<'_, u32>> {
        let layer = self.layers.get(depth)?;
        Some(layer_batch(depth, layer, &self.segments))
    }

    /// Tokens per language in this step, indexed like [`Simulator::languages`].
    pub fn language_tokens(&self, languages: usize) -> Vec<u64> {
        let mut out = vec![0u64; languages];
        for (seg, &lang) in self.segments.iter().zip(&self.segment_languages) {
            if let Some(n) = out.get_mut(lang) {
                *n += u64::from(seg.tokens);
            }
        }
        out
    }
}

fn layer_batch<'a>(depth: usize, layer: &'a LayerStep, segments: &'a [Segment]) -> RouterBatch<'a> {
    let batch = RouterBatch::at_depth(depth, &layer.expert_ids, Languages::Segments(segments))
        .topk_weights(&layer.topk_weights);
    if layer.logits.is_empty() {
        batch
    } else {
        batch.logits(&layer.logits)
    }
}

/// A collapse scheduled by [`Simulator::schedule_collapse`].
#[derive(Clone, Debug)]
struct Scheduled {
    lang: usize,
    collapse: Collapse,
    steps: Range<u64>,
}

/// Generates router batches for a model and a language mix. See the [crate docs](crate) for
/// the routing model.
///
/// Deterministic: the same spec, languages, seed, settings and sequence of calls give the
/// same steps (see the crate docs' limits for cross-platform rounding).
#[derive(Clone, Debug)]
pub struct Simulator {
    spec: ModelSpec,
    experts: usize,
    top_k: usize,
    layers: usize,
    languages: Vec<LanguageProfile>,
    /// Cumulative shares (upper ends), the last forced to 1.
    share_cdf: Vec<f64>,
    /// Per (depth, language) at `depth * languages + language`: the experts by rank.
    rankings: Vec<Vec<u32>>,
    /// Per (depth, language): the profile's usage distribution by rank.
    base: Vec<Vec<f64>>,
    /// Per (depth, language): the router in use (base or collapsed).
    routers: Vec<Router>,
    collapses: Vec<Option<Collapse>>,
    schedule: Vec<Scheduled>,
    rng: Rng,
    step_index: u64,
    next_sequence_id: u64,
    segment_tokens: usize,
    logit_noise: f32,
    router_logits: bool,
    lang_ids: Vec<LangId>,
    /// Reused by `step` (returned by reference) and `drive` (segments; one layer at a time).
    step: Step,
    scratch: LayerStep,
    lang_counts: Vec<usize>,
}

impl Simulator {
    /// A simulator of `spec`'s router for `languages`, seeded with `seed`.
    ///
    /// Building computes, per MoE layer and language, the expert ranking and the usage
    /// distribution whose entropy is the profile's target (a bisection; milliseconds for 48
    /// layers of 128 experts).
    ///
    /// # Errors
    /// [`SimError::Invalid`] naming the field: an invalid `spec`; no languages; a tag that is
    /// not a valid language tag, or repeated; a share outside [0, 1] or shares not summing to
    /// 1 within [`SHARE_SUM_TOLERANCE`]; an entropy profile of the wrong length or with a
    /// target outside [log2 k, log2 E] (k distinct experts per token make every usage share at
    /// most 1/k, so usage entropy cannot fall below log2 k); a specificity outside [0, 1].
    /// Never panics.
    pub fn new(
        spec: ModelSpec,
        languages: Vec<LanguageProfile>,
        seed: u64,
    ) -> Result<Simulator, SimError> {
        spec.validate()
            .map_err(|e| SimError::invalid("spec", e.to_string()))?;
        let experts = spec.num_experts as usize;
        let top_k = spec.top_k as usize;
        let layers = spec.num_moe_layers();
        let mut languages = languages;
        validate_languages(&mut languages, experts, top_k, layers)?;

        let total: f64 = languages.iter().map(|l| l.share).sum();
        let mut share_cdf = Vec::with_capacity(languages.len());
        let mut acc = 0.0;
        for l in &mut languages {
            l.share /= total;
            acc += l.share;
            share_cdf.push(acc);
        }
        if let Some(last) = share_cdf.last_mut() {
            *last = 1.0;
        }

        let n = languages.len();
        let mut rankings = Vec::with_capacity(layers * n);
        let mut base = Vec::with_capacity(layers * n);
        let mut routers = Vec::with_capacity(layers * n);
        for depth in 0..layers {
            let mut shared_rng = Rng::new(derive_seed(seed, &[0, depth as u64]));
            let shared: Vec<f64> = (0..experts).map(|_| shared_rng.normal()).collect();
            for (i, lang) in languages.iter().enumerate() {
                let mut rng = Rng::new(derive_seed(seed, &[1, depth as u64, i as u64]));
                let ranking = routing::ranking(&shared, lang.specificity, &mut rng);
                let mut orders = Vec::with_capacity(ORDERS * experts);
                for _ in 0..ORDERS {
                    let mut o: Vec<u32> = (0..experts as u32).collect();
                    rng.shuffle(&mut o);
                    orders.extend(o);
                }
                let target = lang.entropy_bits.at(depth).unwrap_or(0.0);
                let by_rank = routing::distribution_for_entropy(experts, top_k, target);
                routers.push(Router::new(by_id(&by_rank, &ranking), top_k, orders));
                rankings.push(ranking);
                base.push(by_rank);
            }
        }

        Ok(Simulator {
            spec,
            experts,
            top_k,
            layers,
            share_cdf,
            rankings,
            base,
            routers,
            collapses: vec![None; n],
            schedule: Vec::new(),
            rng: Rng::new(derive_seed(seed, &[2])),
            step_index: 0,
            next_sequence_id: derive_seed(seed, &[3]),
            segment_tokens: DEFAULT_SEGMENT_TOKENS,
            logit_noise: DEFAULT_LOGIT_NOISE,
            router_logits: true,
            lang_ids: vec![LangId::UND; n],
            step: Step::default(),
            scratch: LayerStep::default(),
            lang_counts: vec![0; n],
            languages,
        })
    }

    /// Sets the standard deviation of the per-token logit noise, in nats (default
    /// [`DEFAULT_LOGIT_NOISE`]); a negative or non-finite value means 0.
    #[must_use]
    pub fn with_logit_noise(mut self, sigma: f32) -> Simulator {
        self.logit_noise = if sigma.is_finite() {
            sigma.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// Whether steps carry router logits (`T × E` per layer; default on). Off saves most of
    /// the generation time and memory; gate weights are then the normalized usage
    /// probabilities of the selected experts.
    #[must_use]
    pub fn with_router_logits(mut self, on: bool) -> Simulator {
        self.router_logits = on;
        self
    }

    /// Sets the longest segment (request) in tokens (default [`DEFAULT_SEGMENT_TOKENS`];
    /// 0 means 1).
    #[must_use]
    pub fn with_segment_tokens(mut self, tokens: usize) -> Simulator {
        self.segment_tokens = tokens.clamp(1, u32::MAX as usize);
        self
    }

    /// The model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The languages, with normalized tags and shares rescaled to sum to 1.
    pub fn languages(&self) -> &[LanguageProfile] {
        &self.languages
    }

    /// The index of the next step.
    pub fn step_index(&self) -> u64 {
        self.step_index
    }

    fn lang_index(&self, tag: &str) -> Result<usize, SimError> {
        let norm = Tag::parse(tag).ok();
        let norm = norm.as_ref().map_or(tag, Tag::as_str);
        self.languages
            .iter()
            .position(|l| l.tag == norm)
            .ok_or_else(|| SimError::UnknownLanguage {
                tag: tag.to_string(),
                known: self
                    .languages
                    .iter()
                    .map(|l| l.tag.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The usage distribution (per expert id, summing to 1) that tokens of `tag` follow now in
    /// MoE layer `depth`, collapse included. `None` for an unknown tag or depth.
    pub fn usage_distribution(&self, tag: &str, depth: usize) -> Option<&[f64]> {
        let i = self.lang_index(tag).ok()?;
        (depth < self.layers).then(|| self.routers[depth * self.languages.len() + i].p.as_slice())
    }

    /// The usage entropy, in bits, that `tag`'s routing has now in MoE layer `depth`: the
    /// profile's target, or log2 `experts` in a collapsed layer. `None` for an unknown tag or
    /// depth.
    pub fn expected_entropy_bits(&self, tag: &str, depth: usize) -> Option<f64> {
        self.usage_distribution(tag, depth)
            .map(routing::entropy_bits)
    }

    /// The collapse currently applied to `tag`, if any.
    pub fn collapse(&self, tag: &str) -> Option<Collapse> {
        self.lang_index(tag).ok().and_then(|i| self.collapses[i])
    }

    /// Makes `tag`'s last `collapse.deep_layers` MoE layers route uniformly to its
    /// `collapse.experts` favourite experts of each layer (the top ranks of its usage
    /// distribution there) from the next step on; `None` restores the profile. Replaces any
    /// collapse already set for `tag`.
    ///
    /// # Errors
    /// [`SimError::UnknownLanguage`] for a tag not simulated; [`SimError::Invalid`] for
    /// `collapse.deep_layers` outside 1..=L or `collapse.experts` outside k..=E. Nothing
    /// changes on error.
    pub fn set_collapse(&mut self, tag: &str, collapse: Option<Collapse>) -> Result<(), SimError> {
        let i = self.lang_index(tag)?;
        if let Some(c) = collapse {
            self.validate_collapse(c)?;
        }
        self.apply_collapse(i, collapse);
        Ok(())
    }

    /// Schedules a collapse of `tag` for the steps `steps` (step indexes, see
    /// [`step_index`](Self::step_index)): at the start of step `steps.start` it is set and at
    /// the start of step `steps.end` it is cleared, each as by
    /// [`set_collapse`](Self::set_collapse). With a fixed step rate this is a collapse from
    /// t₁ to t₂ (a demo stepping every 100 ms collapses from 60 s to 120 s with
    /// `600..1200`). Edges already passed never fire.
    ///
    /// # Errors
    /// As [`set_collapse`](Self::set_collapse).
    pub fn schedule_collapse(
        &mut self,
        tag: &str,
        collapse: Collapse,
        steps: Range<u64>,
    ) -> Result<(), SimError> {
        let lang = self.lang_index(tag)?;
        self.validate_collapse(collapse)?;
        self.schedule.push(Scheduled {
            lang,
            collapse,
            steps,
        });
        Ok(())
    }

    fn validate_collapse(&self, c: Collapse) -> Result<(), SimError> {
        if c.deep_layers == 0 || c.deep_layers > self.layers {
            return Err(SimError::invalid(
                "collapse.deep_layers",
                format!(
                    "must be in 1..={} (the MoE layers), got {}",
                    self.layers, c.deep_layers
                ),
            ));
        }
        if c.experts < self.top_k || c.experts > self.experts {
            return Err(SimError::invalid(
                "collapse.experts",
                format!(
                    "must be in {}..={} (top-k routes to k distinct experts), got {}",
                    self.top_k, self.experts, c.experts
                ),
            ));
        }
        Ok(())
    }

    fn apply_collapse(&mut self, lang: usize, collapse: Option<Collapse>) {
        self.collapses[lang] = collapse;
        let n = self.languages.len();
        for depth in 0..self.layers {
            let slot = depth * n + lang;
            let by_rank = match collapse {
                Some(c) if depth >= self.layers - c.deep_layers => {
                    routing::funnel(self.experts, c.experts)
                }
                _ => self.base[slot].clone(),
            };
            let p = by_id(&by_rank, &self.rankings[slot]);
            if p != self.routers[slot].p {
                self.routers[slot] = self.routers[slot].with_usage(p, self.top_k);
            }
        }
    }

    /// Interns the simulated tags in `recorder` (`recorder.language(tag)`) and uses those ids
    /// in the segments of the following steps. [`drive`](Self::drive) does it by itself;
    /// call it before [`step`](Self::step) when you record the steps yourself. Cheap when the
    /// ids are already those of `recorder`.
    pub fn bind(&mut self, recorder: &Recorder) {
        let registry = recorder.registry();
        for (id, lang) in self.lang_ids.iter_mut().zip(&self.languages) {
            let current = registry.tag(*id);
            if current.as_ref().map(Tag::as_str) != Some(lang.tag.as_str()) {
                *id = recorder.language(&lang.tag);
            }
        }
        for (seg, &lang) in self
            .step
            .segments
            .iter_mut()
            .zip(&self.step.segment_languages)
        {
            seg.lang = self.lang_ids[lang];
        }
    }

    /// Generates one forward step of `tokens` tokens: each token's language is drawn from the
    /// shares, then every MoE layer's routing. Scheduled collapses whose edges fall on this
    /// step apply first. The step's buffers are reused by the next call (no allocation once
    /// they are large enough); clone the step to keep it. Memory: `L × T × (2k + E) × 4` bytes
    /// with router logits (100 MB for T = 4096 on Qwen3-30B-A3B), so step large batches
    /// through [`drive`](Self::drive), which holds one layer at a time. Never panics.
    pub fn step(&mut self, tokens: usize) -> &Step {
        self.begin_step(tokens);
        let mut layers = std::mem::take(&mut self.step.layers);
        layers.resize_with(self.layers, LayerStep::default);
        for (depth, layer) in layers.iter_mut().enumerate() {
            self.generate_layer(depth, layer);
        }
        self.step.layers = layers;
        &self.step
    }

    /// Generates one step of `tokens` tokens like [`step`](Self::step) (the same numbers for
    /// the same seed and calls) and records every MoE layer of it into `recorder`, interning
    /// the tags first ([`bind`](Self::bind)). Holds one layer at a time.
    ///
    /// # Errors
    /// The first [`RecordError`] of a layer's `record` (a recorder built for a model of
    /// another shape, or more than `MAX_BATCH_TOKENS` tokens); later layers of that step are
    /// not recorded. Never panics.
    pub fn drive(&mut self, recorder: &Recorder, tokens: usize) -> Result<(), RecordError> {
        self.bind(recorder);
        self.begin_step(tokens);
        self.step.layers.clear();
        let mut layer = std::mem::take(&mut self.scratch);
        let mut result = Ok(());
        for depth in 0..self.layers {
            self.generate_layer(depth, &mut layer);
            if let Err(e) = recorder.record(&layer_batch(depth, &layer, &self.step.segments)) {
                result = Err(e);
                break;
            }
        }
        self.scratch = layer;
        result
    }

    /// Applies the schedule, draws the tokens' languages and lays out the segments.
    fn begin_step(&mut self, tokens: usize) {
        let now = self.step_index;
        for i in 0..self.schedule.len() {
            let s = &self.schedule[i];
            if s.steps.end == now && s.steps.start < s.steps.end {
                let lang = s.lang;
                self.apply_collapse(lang, None);
            }
        }
        for i in 0..self.schedule.len() {
            let s = &self.schedule[i];
            if s.steps.start == now && s.steps.start < s.steps.end {
                let (lang, c) = (s.lang, s.collapse);
                self.apply_collapse(lang, Some(c));
            }
        }

        self.lang_counts.iter_mut().for_each(|c| *c = 0);
        let last = self.languages.len() - 1;
        for _ in 0..tokens {
            let u = self.rng.next_f64();
            let lang = self.share_cdf.partition_point(|&c| c <= u).min(last);
            self.lang_counts[lang] += 1;
        }
        let step = &mut self.step;
        step.index = now;
        step.tokens = tokens;
        step.segments.clear();
        step.segment_languages.clear();
        for (lang, &count) in self.lang_counts.iter().enumerate() {
            let mut left = count;
            while left > 0 {
                let n = left.min(self.segment_tokens);
                step.segments.push(Segment {
                    lang: self.lang_ids[lang],
                    tokens: n as u32,
                    sequence_id: Some(self.next_sequence_id),
                });
                step.segment_languages.push(lang);
                self.next_sequence_id = self.next_sequence_id.wrapping_add(1);
                left -= n;
            }
        }
        self.step_index += 1;
    }

    /// Routes the current step's tokens through MoE layer `depth` into `out`.
    fn generate_layer(&mut self, depth: usize, out: &mut LayerStep) {
        let (e, k, t) = (self.experts, self.top_k, self.step.tokens);
        out.expert_ids.resize(t * k, 0);
        out.topk_weights.resize(t * k, 0.0);
        out.logits
            .resize(if self.router_logits { t * e } else { 0 }, 0.0);
        // Uniform noise on [−a, a] has standard deviation a/√3.
        let amplitude = self.logit_noise * 3f32.sqrt();
        let n_lang = self.languages.len();
        let mut row = 0;
        for (seg, &lang) in self.step.segments.iter().zip(&self.step.segment_languages) {
            let router = &self.routers[depth * n_lang + lang];
            for _ in 0..seg.tokens {
                let ids = &mut out.expert_ids[row * k..(row + 1) * k];
                router.draw(&mut self.rng, ids);
                let weights = &mut out.topk_weights[row * k..(row + 1) * k];
                if self.router_logits {
                    let logits = &mut out.logits[row * e..(row + 1) * e];
                    fill_noisy_logits(&mut self.rng, &router.log_p, amplitude, logits);
                    for (w, &id) in weights.iter_mut().zip(ids.iter()) {
                        *w = logits[id as usize];
                    }
                } else {
                    for (w, &id) in weights.iter_mut().zip(ids.iter()) {
                        *w = router.log_p[id as usize];
                    }
                }
                sort_by_logit_and_softmax(ids, weights);
                row += 1;
            }
        }
    }
}

/// `logits[e] = log_p[e] + noise`, noise uniform on [−amplitude, amplitude] (16 bits each,
/// four per random word).
#[inline]
fn fill_noisy_logits(rng: &mut Rng, log_p: &[f32], amplitude: f32, logits: &mut [f32]) {
    let scale = 2.0 * amplitude / 65535.0;
    for (chunk_out, chunk_in) in logits.chunks_mut(4).zip(log_p.chunks(4)) {
        let mut bits = rng.next_u64();
        for (o, &lp) in chunk_out.iter_mut().zip(chunk_in) {
            *o = lp + ((bits & 0xFFFF) as f32 * scale - amplitude);
            bits >>= 16;
        }
    }
}

/// Sorts a token's k ids by decreasing logit (`weights` holds the logits on entry) and turns
/// the logits into their softmax.
#[inline]
fn sort_by_logit_and_softmax(ids: &mut [u32], weights: &mut [f32]) {
    // Insertion sort: k is small (8 for most models).
    for i in 1..ids.len() {
        let mut j = i;
        while j > 0 && weights[j - 1] < weights[j] {
            ids.swap(j - 1, j);
            weights.swap(j - 1, j);
            j -= 1;
        }
    }
    let max = weights.first().copied().unwrap_or(0.0);
    let mut sum = 0.0;
    for w in weights.iter_mut() {
        *w = (*w - max).exp();
        sum += *w;
    }
    for w in weights.iter_mut() {
        *w /= sum;
    }
}

/// A distribution by rank turned into one by expert id through `ranking` (rank → id).
fn by_id(by_rank: &[f64], ranking: &[u32]) -> Vec<f64> {
    let mut p = vec![0.0; by_rank.len()];
    for (&q, &id) in by_rank.iter().zip(ranking) {
        p[id as usize] = q;
    }
    p
}

fn validate_languages(
    languages: &mut [LanguageProfile],
    experts: usize,
    top_k: usize,
    layers: usize,
) -> Result<(), SimError> {
    if languages.is_empty() {
        return Err(SimError::invalid(
            "languages",
            "must list at least one language",
        ));
    }
    let (h_min, h_max) = ((top_k as f64).log2(), (experts as f64).log2());
    let check_bits = |field: String, h: f64| {
        if h.is_finite() && h >= h_min - RANGE_SLACK_BITS && h <= h_max + RANGE_SLACK_BITS {
            Ok(())
        } else {
            Err(SimError::invalid(
                field,
                format!(
                    "{h} bits is outside [log2 k, log2 E] = [{h_min}, {h_max}] \
                     (k = {top_k} distinct experts per token, E = {experts})"
                ),
            ))
        }
    };
    for i in 0..languages.len() {
        let tag = Tag::parse(&languages[i].tag).map_err(|e| {
            SimError::invalid(
                format!("languages[{i}].tag"),
                format!("{:?} is not a valid language tag: {e}", languages[i].tag),
            )
        })?;
        if let Some(j) = languages[..i].iter().position(|l| l.tag == tag.as_str()) {
            return Err(SimError::invalid(
                format!("languages[{i}].tag"),
                format!("{:?} repeats languages[{j}].tag", tag.as_str()),
            ));
        }
        let lang = &mut languages[i];
        lang.tag = tag.as_str().to_string();
        if !(lang.share.is_finite() && (0.0..=1.0).contains(&lang.share)) {
            return Err(SimError::invalid(
                format!("languages[{i}].share"),
                format!("{} is outside [0, 1]", lang.share),
            ));
        }
        if !(lang.specificity.is_finite() && (0.0..=1.0).contains(&lang.specificity)) {
            return Err(SimError::invalid(
                format!("languages[{i}].specificity"),
                format!("{} is outside [0, 1]", lang.specificity),
            ));
        }
        match &lang.entropy_bits {
            EntropyProfile::Constant(h) => check_bits(format!("languages[{i}].entropy_bits"), *h)?,
            EntropyProfile::PerLayer(v) => {
                if v.len() != layers {
                    return Err(SimError::invalid(
                        format!("languages[{i}].entropy_bits"),
                        format!(
                            "has {} values, expected one per MoE layer ({layers})",
                            v.len()
                        ),
                    ));
                }
                for (d, &h) in v.iter().enumerate() {
                    check_bits(format!("languages[{i}].entropy_bits[{d}]"), h)?;
                }
            }
        }
    }
    let total: f64 = languages.iter().map(|l| l.share).sum();
    if (total - 1.0).abs() > SHARE_SUM_TOLERANCE {
        return Err(SimError::invalid(
            "languages[].share",
            format!("the shares sum to {total}, expected 1 (± {SHARE_SUM_TOLERANCE})"),
        ));
    }
    Ok(())
}
