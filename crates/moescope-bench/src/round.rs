//! The publisher's round: what one publication costs the serving host, against the round it
//! replaced, in the same run on the same window.
//!
//! The window: Qwen3-30B-A3B shapes (48 MoE layers, E = 128, top-8), 16 languages, 30 buckets,
//! router probabilities recorded. Between rounds one bucket closes (the clock moves one bucket
//! on and every language records one more bucket of traffic, untimed), as it would between
//! two publications.
//!
//! - `live round` is [`Publisher::collect`]: the window without re-reading closed buckets
//!   (`snapshot_with_buckets_after`), collapse scored once per closed bucket, and only the
//!   figures published ([`moescope_stats::live_analysis`]).
//! - `full-analysis round` is what a round did before: the window with every bucket
//!   (`snapshot_with_buckets`), the whole offline [`analyze`] (every pair metric of every
//!   layer, the LSI sweep, per-layer LSI, the spread of every metric across every bucket),
//!   the collapse evidence and tokenization again per language, the pair JSD of the 6 busiest
//!   languages on every layer, and the totals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moescope_core::{Languages, ManualClock, ModelSpec, Recorder, RouterBatch, WindowConfig};
use moescope_publish::{Publisher, PublisherConfig};
use moescope_stats::{
    analyze, collapse_evidence, js_divergence_bits, layer_entropies, tokenization, AnalysisConfig,
};
use serde::Serialize;

/// The size of the window a round works on.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RoundWorkload {
    /// Languages with traffic (the first is the reference, `en`).
    pub languages: usize,
    /// Buckets in the window.
    pub buckets: usize,
    /// Tokens per language, layer and bucket.
    pub tokens_per_bucket: usize,
    /// Whether router probabilities are recorded (E floats per token).
    pub probabilities: bool,
}

impl RoundWorkload {
    /// Qwen3-30B-A3B, 16 languages, 30 buckets, probabilities.
    pub const QWEN3_16_LANGUAGES: RoundWorkload = RoundWorkload {
        languages: 16,
        buckets: 30,
        tokens_per_bucket: 64,
        probabilities: true,
    };
}

/// Milliseconds per round of one path.
#[derive(Clone, Debug, Serialize)]
pub struct RoundResult {
    /// `live round`, `full-analysis round`, or the live round's parts.
    pub path: &'static str,
    /// Rounds timed.
    pub rounds: usize,
    /// Median milliseconds per round.
    pub median_ms: f64,
    /// Fastest round.
    pub min_ms: f64,
    /// Slowest round.
    pub max_ms: f64,
    /// Samples the last round published (the live round only).
    pub samples: Option<usize>,
    /// [`Publisher::round_bytes`] after the last round (the live round only).
    pub round_bytes: Option<usize>,
}

/// A filled window and a publisher on it.
pub struct RoundBench {
    workload: RoundWorkload,
    recorder: Arc<Recorder>,
    clock: ManualClock,
    publisher: Publisher,
    tags: Vec<String>,
    step: u64,
}

const BUCKET_MS: u64 = 1_000;

fn tag(i: usize) -> String {
    const TAGS: [&str; 16] = [
        "en", "he", "ja", "de", "fr", "es", "it", "pt", "ru", "zh", "ko", "ar", "hi", "tr", "vi",
        "sw",
    ];
    TAGS.get(i)
        .map_or_else(|| format!("x{i:03}"), |t| (*t).to_string())
}

impl RoundBench {
    /// A Qwen3-30B-A3B recorder with `workload`'s window filled, and a default publisher.
    ///
    /// # Panics
    /// Only if the built-in preset or settings were rejected (a bug).
    pub fn new(workload: RoundWorkload) -> RoundBench {
        let spec = ModelSpec::preset("qwen3-30b-a3b").expect("preset");
        let clock = ManualClock::new(1_700_000_000_000);
        let recorder = Arc::new(
            Recorder::builder(spec)
                .window(WindowConfig {
                    bucket_ms: BUCKET_MS,
                    buckets: workload.buckets,
                })
                .clock(clock.clone())
                .build()
                .expect("recorder"),
        );
        let publisher =
            Publisher::new(recorder.clone(), PublisherConfig::default()).expect("defaults");
        let mut bench = RoundBench {
            workload,
            recorder,
            clock,
            publisher,
            tags: (0..workload.languages).map(tag).collect(),
            step: 0,
        };
        for _ in 0..workload.buckets {
            bench.advance();
        }
        // The first round reads every bucket; the timed rounds after it, one new bucket each.
        bench.publisher.collect();
        bench
    }

    /// Records one bucket of traffic for every language, then closes the bucket.
    pub fn advance(&mut self) {
        let spec = self.recorder.spec().clone();
        let (e, k, t) = (
            spec.num_experts as usize,
            spec.top_k as usize,
            self.workload.tokens_per_bucket,
        );
        for (li, tag) in self.tags.iter().enumerate() {
            let id = self.recorder.language(tag);
            for depth in 0..spec.num_moe_layers() {
                // Each language prefers its own slice of experts, more so in the deep layers.
                let mut ids = Vec::with_capacity(t * k);
                let mut probs = Vec::with_capacity(if self.workload.probabilities {
                    t * e
                } else {
                    0
                });
                for tok in 0..t {
                    let base = (li * 7 + depth * 3 + tok + self.step as usize) % e;
                    for j in 0..k {
                        ids.push(((base + j * (1 + li % 3)) % e) as u32);
                    }
                    if self.workload.probabilities {
                        let row_start = probs.len();
                        probs.extend((0..e).map(|x| 1.0 + ((x + base) % 5) as f32));
                        let sum: f32 = probs[row_start..].iter().sum();
                        for p in &mut probs[row_start..] {
                            *p /= sum;
                        }
                    }
                }
                let batch = RouterBatch::at_depth(depth, &ids, Languages::All(id));
                let batch = if self.workload.probabilities {
                    batch.probabilities(&probs)
                } else {
                    batch
                };
                // Every batch fits the model by construction; a refusal would only leave
                // the window emptier.
                let _ = self.recorder.record(&batch);
            }
        }
        self.step += 1;
        self.clock.advance_ms(BUCKET_MS);
    }

    /// One live round ([`Publisher::collect`]); returns its duration and sample count.
    pub fn live_round(&mut self) -> (Duration, usize) {
        let started = Instant::now();
        let round = self.publisher.collect();
        let took = started.elapsed();
        (took, round.publication.samples.len())
    }

    /// The recorder's upkeep alone: folding the writers' stripes into the window and
    /// rotating the closed bucket out (the first thing a round's snapshot does; timed apart
    /// so that the round's figures split into the recorder's share and the publisher's).
    pub fn upkeep(&mut self) -> Duration {
        let started = Instant::now();
        self.recorder.upkeep();
        started.elapsed()
    }

    /// One round as before the live analysis: see the module docs. Returns its duration.
    pub fn full_analysis_round(&mut self) -> Duration {
        let started = Instant::now();
        let snapshot = self.recorder.snapshot_with_buckets();
        let config = AnalysisConfig::new("en");
        let analysis = analyze(&snapshot, &config).ok();
        let mut work = 0.0;
        if let Some(a) = &analysis {
            for row in &a.collapse {
                let ev = collapse_evidence(&snapshot, &row.lang, Some("en"));
                work += ev.score.map_or(0.0, |s| s.score_bits);
            }
        }
        for (tag, lang) in &snapshot.languages {
            work += tokenization(tag, lang).tokens;
            work += layer_entropies(lang).iter().flatten().sum::<f64>();
        }
        let mut busiest: Vec<(&String, f64)> = snapshot
            .languages
            .iter()
            .map(|(t, l)| (t, l.tokens))
            .collect();
        busiest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        busiest.truncate(6);
        for (i, &(a, _)) in busiest.iter().enumerate() {
            for &(b, _) in &busiest[i + 1..] {
                let (la, lb) = (&snapshot.languages[a].layers, &snapshot.languages[b].layers);
                for (x, y) in la.iter().zip(lb) {
                    work += js_divergence_bits(&x.expert_tokens, &y.expert_tokens).unwrap_or(0.0);
                }
            }
        }
        work += self.recorder.totals().len() as f64;
        std::hint::black_box(work);
        std::hint::black_box(analysis);
        started.elapsed()
    }

    /// The publisher (for its round memory).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summarize(
    path: &'static str,
    mut times: Vec<f64>,
    samples: Option<usize>,
    bytes: Option<usize>,
) -> RoundResult {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    RoundResult {
        path,
        rounds: n,
        median_ms: median,
        min_ms: times.first().copied().unwrap_or(f64::NAN),
        max_ms: times.last().copied().unwrap_or(f64::NAN),
        samples,
        round_bytes: bytes,
    }
}

/// Times `live_rounds` live rounds and `full_rounds` full-analysis rounds, interleaved on the
/// same window (one bucket closes before each live round), and returns both, live first, then
/// the live round's two parts: the recorder's upkeep (fold and rotate) and the publisher's
/// round (snapshot, statistics, samples).
pub fn measure_rounds(
    workload: RoundWorkload,
    live_rounds: usize,
    full_rounds: usize,
) -> Vec<RoundResult> {
    let mut bench = RoundBench::new(workload);
    let (mut live, mut full, mut upkeep, mut publisher) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut samples = 0;
    for i in 0..live_rounds.max(full_rounds) {
        bench.advance();
        if i < live_rounds {
            let u = bench.upkeep();
            let (d, n) = bench.live_round();
            live.push(ms(u + d));
            upkeep.push(ms(u));
            publisher.push(ms(d));
            samples = n;
        }
        if i < full_rounds {
            full.push(ms(bench.full_analysis_round()));
        }
    }
    let bytes = bench.publisher().round_bytes();
    vec![
        summarize("live round", live, Some(samples), Some(bytes)),
        summarize("full-analysis round", full, None, None),
        summarize("of which recorder upkeep", upkeep, None, None),
        summarize("of which publisher", publisher, None, None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rounds_run_on_a_small_window() {
        let w = RoundWorkload {
            languages: 3,
            buckets: 3,
            tokens_per_bucket: 4,
            probabilities: true,
        };
        let r = measure_rounds(w, 2, 1);
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].rounds, r[1].rounds), (2, 1));
        assert!(r[0].median_ms > 0.0 && r[1].median_ms > 0.0);
        // 3 languages × 48 layers of usage entropy at least.
        assert!(r[0].samples.unwrap() > 3 * 48, "{:?}", r[0].samples);
        assert!(r[0].round_bytes.unwrap() > 0);
    }
}
