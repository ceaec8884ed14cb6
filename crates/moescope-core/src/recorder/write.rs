//! The writer side: [`Recorder::record`] and [`Recorder::record_text`], the serving path.
//!
//! A call claims a staging stripe ([`crate::stage`]), checks the batch's shape once, and
//! counts each token of a language run straight into the stripe's arrays. Two loops do the
//! counting: one for the common batch of ids and languages only, with its state in locals,
//! and one for batches with gate weights, router scores or sequence ids. Both resolve a run of
//! tokens of one language the same way ([`Run::resolve`]).

use std::sync::atomic::AtomicUsize;

use crate::sync::atomic::{AtomicU64, Ordering};

use super::{Recorder, RECORD_TIME_SAMPLE_EVERY};
use crate::batch::{
    DropReason, ExpertId, Languages, RecordError, Recorded, RouterBatch, RouterScores,
    MAX_BATCH_TOKENS,
};
use crate::lang::LangId;
use crate::sampling::mix64;
use crate::stage::{bump, bump_f64, StageBlock, Stripe};
use crate::window::PackedHalves;

thread_local! {
    /// The stripe this thread tries first.
    static PREFERRED_STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
    /// Calls until this thread times one (const-initialized: no allocation, no destructor).
    static TIMING_COUNTDOWN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

/// What every token of one call shares.
struct Call<'a, I: ExpertId> {
    batch: &'a RouterBatch<'a, I>,
    stripe: &'a Stripe,
    thresholds: &'a [AtomicU64],
    issued: usize,
    alternate: u64,
    row: &'a mut [f64],
    /// The language of the current run, and what to do with its tokens.
    run_lang: LangId,
    run: Run<'a>,
    /// Tokens of the current run not yet added to its layer count (halves packed).
    pending_tokens: u64,
    out: Recorded,
    drops: [u32; DropReason::COUNT],
}

/// What a run of tokens of one language does.
#[derive(Clone, Copy)]
enum Run<'a> {
    Excluded,
    Unknown,
    Count {
        threshold: u64,
        block: &'a StageBlock,
    },
}

impl<'a> Run<'a> {
    /// What to do with a run of tokens of `lang` in a call holding `stripe`: both record loops
    /// resolve a run here. Marks the language's block dirty for the next fold.
    #[inline]
    fn resolve(
        stripe: &'a Stripe,
        thresholds: &[AtomicU64],
        issued: usize,
        lang: LangId,
    ) -> Run<'a> {
        let li = lang.index();
        if lang == LangId::EXCLUDED {
            Run::Excluded
        } else if li >= issued {
            Run::Unknown
        } else {
            let block = stripe.block(li);
            block.dirty.store(true, Ordering::Relaxed);
            Run::Count {
                threshold: thresholds[li].load(Ordering::Relaxed),
                block,
            }
        }
    }
}

impl<I: ExpertId> Call<'_, I> {
    #[inline(always)]
    fn drop_token(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
        self.out.dropped += 1;
    }
}

impl Recorder {
    pub(super) fn count_drop(&self, reason: DropReason, tokens: u64) {
        self.drops[reason.index()].fetch_add(tokens, Ordering::Relaxed);
    }

    /// Claims a free stripe, starting with this thread's preferred one.
    #[inline]
    fn claim(&self) -> Option<crate::stage::Claim<'_>> {
        let n = self.stripes.len();
        let first = PREFERRED_STRIPE.try_with(|s| *s).unwrap_or(0) % n;
        (0..n).find_map(|i| {
            let j = if first + i >= n {
                first + i - n
            } else {
                first + i
            };
            self.stripes[j].try_claim()
        })
    }

    /// Records one MoE layer's routing decisions for one step.
    ///
    /// Never panics, never blocks, allocates only on warm-up. Tokens with bad values are
    /// dropped one by one and counted by reason; the rest of the batch is recorded.
    ///
    /// # Errors
    /// [`RecordError`] when the batch cannot be read at all (lengths that do not match, a
    /// MoE layer depth out of range, too many tokens); its tokens are counted as drops under
    /// [`RecordError::reason`], and nothing already recorded is affected.
    pub fn record<I: ExpertId>(&self, batch: &RouterBatch<'_, I>) -> Result<Recorded, RecordError> {
        let timed = TIMING_COUNTDOWN
            .try_with(|c| match c.get() {
                0 => {
                    c.set(RECORD_TIME_SAMPLE_EVERY - 1);
                    true
                }
                n => {
                    c.set(n - 1);
                    false
                }
            })
            .unwrap_or(false);
        let start = timed.then(std::time::Instant::now);
        let result = self.record_untimed(batch);
        if let Some(start) = start {
            if let Ok(mut h) = self.record_times.try_lock() {
                h.saturating_record(start.elapsed().as_nanos().max(1) as u64);
            }
        }
        result
    }

    fn record_untimed<I: ExpertId>(
        &self,
        batch: &RouterBatch<'_, I>,
    ) -> Result<Recorded, RecordError> {
        let tokens = batch.expert_ids.len() / self.top_k;
        if let Err(err) = self.check_shape(batch) {
            self.count_drop(err.reason(), tokens.max(1) as u64);
            return Err(err);
        }
        let Some(claim) = self.claim() else {
            self.count_drop(DropReason::WriterContention, tokens as u64);
            return Ok(Recorded {
                dropped: tokens as u32,
                ..Recorded::default()
            });
        };
        let stripe = claim.stripe;
        let epoch = stripe.epoch.load(Ordering::Relaxed);
        let mut row_guard = match batch.scores {
            // Only the claimer locks `row`, so this never waits.
            Some(_) => stripe.row.try_lock().ok(),
            None => None,
        };
        let mut spare = Vec::new();
        let row: &mut Vec<f64> = row_guard.as_deref_mut().unwrap_or(&mut spare);
        if batch.scores.is_some() && row.len() < self.experts {
            row.resize(self.experts, 0.0); // warm-up
        }
        // Ids and languages only (the common case): a loop that keeps its state in locals.
        let no_sequences = match batch.languages {
            Languages::Segments(segs) => segs.iter().all(|s| s.sequence_id.is_none()),
            _ => batch.sequence_ids.is_none(),
        };
        if batch.topk_weights.is_none() && batch.scores.is_none() && no_sequences {
            let thresholds = &self.thresholds[(epoch & 1) as usize];
            // Rows of a common top-k are arrays, so the compiler unrolls the count; then the
            // language lookup is specialised per kind of `languages`.
            macro_rules! by_rows {
                ($lang_at:expr) => {{
                    let ids = batch.expert_ids;
                    match self.top_k {
                        8 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.depth,
                            ids.as_chunks::<8>().0.iter(),
                            $lang_at,
                        ),
                        6 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.depth,
                            ids.as_chunks::<6>().0.iter(),
                            $lang_at,
                        ),
                        4 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.depth,
                            ids.as_chunks::<4>().0.iter(),
                            $lang_at,
                        ),
                        2 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.depth,
                            ids.as_chunks::<2>().0.iter(),
                            $lang_at,
                        ),
                        k => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.depth,
                            ids.chunks_exact(k),
                            $lang_at,
                        ),
                    }
                }};
            }
            let (out, drops) = match batch.languages {
                Languages::All(lang) => by_rows!(|_| lang),
                Languages::PerToken(langs) => by_rows!(|t| langs[t]),
                Languages::Segments(segs) => {
                    let mut langs = segs
                        .iter()
                        .flat_map(|s| std::iter::repeat_n(s.lang, s.tokens as usize));
                    // The shape check made the segments add up to T.
                    by_rows!(|_| langs.next().unwrap_or(LangId::EXCLUDED))
                }
            };
            drop(row_guard);
            drop(claim);
            self.add_drops(&drops);
            return Ok(out);
        }
        let mut call = Call {
            batch,
            stripe,
            thresholds: &self.thresholds[(epoch & 1) as usize],
            issued: self.registry.issued(),
            alternate: stripe.next_random(),
            row: row.as_mut_slice(),
            run_lang: LangId::EXCLUDED,
            run: Run::Excluded,
            pending_tokens: 0,
            out: Recorded::default(),
            drops: [0; DropReason::COUNT],
        };
        match batch.languages {
            Languages::All(lang) => match batch.sequence_ids {
                Some(seqs) => {
                    for (t, &q) in seqs.iter().enumerate() {
                        self.token(&mut call, t, lang, Some(q));
                    }
                }
                None => {
                    for t in 0..tokens {
                        self.token(&mut call, t, lang, None);
                    }
                }
            },
            Languages::PerToken(langs) => match batch.sequence_ids {
                Some(seqs) => {
                    for (t, (&lang, &q)) in langs.iter().zip(seqs).enumerate() {
                        self.token(&mut call, t, lang, Some(q));
                    }
                }
                None => {
                    for (t, &lang) in langs.iter().enumerate() {
                        self.token(&mut call, t, lang, None);
                    }
                }
            },
            Languages::Segments(segs) => {
                let mut t = 0;
                for seg in segs {
                    for _ in 0..seg.tokens {
                        self.token(&mut call, t, seg.lang, seg.sequence_id);
                        t += 1;
                    }
                }
            }
        }
        self.end_run(&mut call);
        let (out, drops) = (call.out, call.drops);
        drop(row_guard);
        drop(claim);
        self.add_drops(&drops);
        Ok(out)
    }

    fn add_drops(&self, drops: &[u32; DropReason::COUNT]) {
        for (reason, &n) in DropReason::ALL.iter().zip(drops) {
            if n > 0 {
                self.count_drop(*reason, u64::from(n));
            }
        }
    }

    /// The loop for batches of ids and languages only (no gate weights, no router scores, no
    /// sequence ids): the same steps as [`token`](Self::token), with its state in locals.
    #[inline(always)]
    fn count_ids_only<'b, I: ExpertId, R>(
        &self,
        stripe: &Stripe,
        thresholds: &[AtomicU64],
        layer: usize,
        rows: impl Iterator<Item = R>,
        mut lang_at: impl FnMut(usize) -> LangId,
    ) -> (Recorded, [u32; DropReason::COUNT])
    where
        R: Copy + IntoIterator<Item = &'b I>,
    {
        let e = self.experts;
        let issued = self.registry.issued();
        let alternate = stripe.next_random();
        let mut out = Recorded::default();
        let mut drops = [0u32; DropReason::COUNT];
        let mut run_lang = LangId::EXCLUDED;
        // The current run's threshold, block and `counts[layer]`; None: excluded or unknown.
        let mut run: Option<(u64, &StageBlock, &[AtomicU64])> = None;
        let mut pending = 0u64;
        for (t, ids) in rows.enumerate() {
            let lang = lang_at(t);
            if lang != run_lang {
                if let (Some((_, block, _)), true) = (run, pending != 0) {
                    bump(&block.layer_tokens[layer], pending);
                }
                pending = 0;
                run_lang = lang;
                run = match Run::resolve(stripe, thresholds, issued, lang) {
                    Run::Count { threshold, block } => {
                        Some((threshold, block, &block.counts[layer * e..(layer + 1) * e]))
                    }
                    Run::Excluded | Run::Unknown => None,
                };
            }
            let Some((threshold, _, counts)) = run else {
                if lang == LangId::EXCLUDED {
                    out.excluded += 1;
                } else {
                    drops[DropReason::UnknownLanguage.index()] += 1;
                    out.dropped += 1;
                }
                continue;
            };
            let h = if threshold == u64::MAX {
                alternate ^ t as u64
            } else {
                let h = stripe.next_random();
                if h >= threshold {
                    out.sampled_out += 1;
                    continue;
                }
                h
            };
            let inc = PackedHalves::one(h);
            if count_row(counts, ids, inc) {
                uncount_row(counts, ids, inc);
                drops[DropReason::ExpertOutOfRange.index()] += 1;
                out.dropped += 1;
                continue;
            }
            pending += inc;
            out.recorded += 1;
        }
        if let (Some((_, block, _)), true) = (run, pending != 0) {
            bump(&block.layer_tokens[layer], pending);
        }
        (out, drops)
    }

    fn check_shape<I: ExpertId>(&self, b: &RouterBatch<'_, I>) -> Result<(), RecordError> {
        let (k, e) = (self.top_k, self.experts);
        let n = b.expert_ids.len();
        if !n.is_multiple_of(k) {
            return Err(RecordError::ShapeMismatch {
                field: "expert_ids",
                expected: n.div_ceil(k) * k,
                found: n,
            });
        }
        let t = n / k;
        if t > MAX_BATCH_TOKENS {
            return Err(RecordError::BatchTooLarge { tokens: t });
        }
        if b.depth >= self.layers {
            return Err(RecordError::LayerOutOfRange {
                depth: b.depth,
                layers: self.layers,
            });
        }
        let mismatch = |field, expected, found| {
            if expected == found {
                Ok(())
            } else {
                Err(RecordError::ShapeMismatch {
                    field,
                    expected,
                    found,
                })
            }
        };
        match b.languages {
            Languages::All(_) => {}
            Languages::PerToken(ids) => mismatch("languages", t, ids.len())?,
            Languages::Segments(segs) => {
                let total: u64 = segs.iter().map(|s| u64::from(s.tokens)).sum();
                mismatch("languages", t, total.min(usize::MAX as u64) as usize)?
            }
        }
        if let Some(w) = b.topk_weights {
            mismatch("topk_weights", t * k, w.len())?;
        }
        if let Some(s) = b.scores {
            mismatch("router_scores", t * e, s.values().len())?;
        }
        if let (Some(q), false) = (
            b.sequence_ids,
            matches!(b.languages, Languages::Segments(_)),
        ) {
            mismatch("sequence_ids", t, q.len())?;
        }
        Ok(())
    }

    /// Resolves the language of a new run of tokens (tokens come in runs of one language:
    /// a request's segment, or a whole batch), settling the previous run's token count.
    #[cold]
    fn start_run<'a, I: ExpertId>(&self, c: &mut Call<'a, I>, lang: LangId) {
        self.end_run(c);
        c.run_lang = lang;
        c.run = Run::resolve(c.stripe, c.thresholds, c.issued, lang);
    }

    /// Adds the current run's tokens to its layer's token count.
    fn end_run<I: ExpertId>(&self, c: &mut Call<'_, I>) {
        if let Run::Count { block, .. } = c.run {
            if c.pending_tokens != 0 {
                bump(&block.layer_tokens[c.batch.depth], c.pending_tokens);
            }
        }
        c.pending_tokens = 0;
    }

    /// Validates token `t`, samples it, and counts it into the claimed stripe.
    #[inline(always)]
    fn token<I: ExpertId>(&self, c: &mut Call<'_, I>, t: usize, lang: LangId, seq: Option<u64>) {
        let (k, e) = (self.top_k, self.experts);
        if lang != c.run_lang {
            self.start_run(c, lang);
        }
        let (threshold, block) = match c.run {
            Run::Count { threshold, block } => (threshold, block),
            Run::Excluded => {
                c.out.excluded += 1;
                return;
            }
            Run::Unknown => {
                c.drop_token(DropReason::UnknownLanguage);
                return;
            }
        };
        let h = match seq {
            Some(q) => mix64(q ^ self.salt),
            None if threshold == u64::MAX => c.alternate ^ t as u64,
            None => c.stripe.next_random(),
        };
        if threshold != u64::MAX && h >= threshold {
            c.out.sampled_out += 1;
            return;
        }
        let ids = &c.batch.expert_ids[t * k..(t + 1) * k];
        let mut weight_sum = 0.0f64;
        if let Some(w) = c.batch.topk_weights {
            let w = &w[t * k..(t + 1) * k];
            if let Err(reason) = check_weights(w) {
                c.drop_token(reason);
                return;
            }
            weight_sum = w.iter().map(|&x| f64::from(x)).sum();
        }
        let mut entropy = 0.0;
        if let Some(scores) = c.batch.scores {
            if c.row.len() < e {
                // No row buffer (cannot happen: the claimer owns it); count, never panic.
                c.drop_token(DropReason::WriterContention);
                return;
            }
            match probabilities(scores, t, e, c.row) {
                Ok(h) => entropy = h,
                Err(reason) => {
                    c.drop_token(reason);
                    return;
                }
            }
        }
        // Count the token: plain increments into the claimed stripe. The ids are checked as
        // they are counted (one pass); a row with a bad id is taken back out, which is rare.
        let layer = c.batch.depth;
        let inc = PackedHalves::one(h);
        let counts = &block.counts[layer * e..(layer + 1) * e];
        if count_row(counts, ids, inc) {
            uncount_row(counts, ids, inc);
            c.drop_token(DropReason::ExpertOutOfRange);
            return;
        }
        c.pending_tokens += inc;
        if c.batch.topk_weights.is_some() {
            bump_f64(&block.topk_weight[layer], weight_sum);
        }
        if c.batch.scores.is_some() {
            let probs = block.probs(self.layers, e);
            for (acc, &p) in probs.prob_sum[layer * e..(layer + 1) * e]
                .iter()
                .zip(c.row.iter())
            {
                bump_f64(acc, p);
            }
            bump(&probs.prob_tokens[layer], 1);
            bump_f64(&probs.entropy[layer], entropy);
        }
        c.out.recorded += 1;
    }

    /// Records the text length of a request (characters and whitespace-separated words) for
    /// the tokenization statistics. Call it once per request with the text whose tokens you
    /// record (prompt, and generated text if you record decode steps). Text is not sampled.
    pub fn record_text(&self, lang: LangId, chars: u64, words: u64) {
        if lang == LangId::EXCLUDED {
            return;
        }
        if lang.index() >= self.registry.issued() {
            self.count_drop(DropReason::UnknownLanguage, 1);
            return;
        }
        let Some(claim) = self.claim() else {
            self.count_drop(DropReason::WriterContention, 1);
            return;
        };
        let block = claim.stripe.block(lang.index());
        block.dirty.store(true, Ordering::Relaxed);
        bump(&block.text[0], chars);
        bump(&block.text[1], words);
    }
}

/// Adds `inc` to each id's counter; true if an id was out of range (the others are counted,
/// and [`uncount_row`] takes them back out).
#[inline(always)]
fn count_row<'a, I: ExpertId + 'a>(
    counts: &[AtomicU64],
    ids: impl IntoIterator<Item = &'a I>,
    inc: u64,
) -> bool {
    let mut bad = false;
    for id in ids {
        match counts.get(id.expert_index() as usize) {
            Some(n) => bump(n, inc),
            None => bad = true,
        }
    }
    bad
}

/// Takes back what [`count_row`] added for a row that held an out-of-range id.
#[cold]
fn uncount_row<'a, I: ExpertId + 'a>(
    counts: &[AtomicU64],
    ids: impl IntoIterator<Item = &'a I>,
    inc: u64,
) {
    for id in ids {
        if let Some(n) = counts.get(id.expert_index() as usize) {
            bump(n, inc.wrapping_neg());
        }
    }
}

fn check_weights(w: &[f32]) -> Result<(), DropReason> {
    if !w.iter().all(|x| x.is_finite()) {
        return Err(DropReason::NonFinite);
    }
    if w.iter().any(|&x| x < 0.0) {
        return Err(DropReason::InvalidProbability);
    }
    Ok(())
}

/// Token `t`'s routed-expert probabilities into `row`; returns its selection entropy in bits.
fn probabilities(
    scores: RouterScores<'_>,
    t: usize,
    e: usize,
    row: &mut [f64],
) -> Result<f64, DropReason> {
    let values = &scores.values()[t * e..(t + 1) * e];
    if !values.iter().all(|x| x.is_finite()) {
        return Err(DropReason::NonFinite);
    }
    let row = &mut row[..e];
    match scores {
        RouterScores::Logits(_) => {
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (p, &x) in row.iter_mut().zip(values) {
                *p = f64::from(x - max).exp();
            }
        }
        RouterScores::Probabilities(_) => {
            if values.iter().any(|&x| x < 0.0) {
                return Err(DropReason::InvalidProbability);
            }
            for (p, &x) in row.iter_mut().zip(values) {
                *p = f64::from(x);
            }
        }
    }
    let sum: f64 = row.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(DropReason::InvalidProbability);
    }
    let mut entropy = 0.0;
    for p in row.iter_mut() {
        *p /= sum;
        if *p > 0.0 {
            entropy -= *p * p.log2();
        }
    }
    Ok(entropy)
}
