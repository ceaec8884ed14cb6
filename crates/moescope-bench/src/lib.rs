//! Record-cost workloads: moescope against what a serving engineer would otherwise write.
//!
//! Every implementation counts the same thing: one selection per (layer, language, expert)
//! for each routed slot of a Qwen3-30B-A3B-shaped layer (E = 128, k = 8, 48 MoE layers), for
//! a batch of `T` tokens whose languages are mixed 90 % English, 5 % Hebrew, 5 % Japanese.
//!
//! | impl              | what it does per routed slot                                       |
//! |-------------------|--------------------------------------------------------------------|
//! | `moescope`        | nothing per slot: one `Recorder::record` per batch                  |
//! | `metrics-counter` | `counter!(name, "layer", "expert", "lang").increment(1)` under the Prometheus recorder (label values pre-built `&'static str`) |
//! | `metrics-handles` | `Counter::increment(1)` on a handle registered up front for every (layer, lang, expert) |
//! | `mutex-hashmap`   | `*map.entry((layer, lang, expert)).or_insert(0) += 1`, the mutex taken once per batch |
//! | `plain-array`     | `counts[layer][lang][expert] += 1` in a thread-private array: the floor |
//!
//! Threads run the same loop over the layers, starting at different layers (like
//! unsynchronized replicas in one process), on one shared sink (each its own for
//! `plain-array`). The figure of merit is nanoseconds per token-layer: wall time × threads ÷
//! token-layers recorded, so perfect scaling keeps it constant as threads are added.
//!
//! [`round`] measures the other side: what one publication round costs, against the round it
//! replaced.

pub mod alert;
pub mod round;

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::Counter;
use moescope_core::{LangId, Languages, ModelSpec, Recorder, RouterBatch};

/// Experts of the benchmarked layer.
pub const EXPERTS: usize = 128;
/// Top-k of the benchmarked layer.
pub const TOP_K: usize = 8;
/// MoE layers cycled through.
pub const LAYERS: usize = 48;
/// Languages of the mix, in label order.
pub const LANGS: [&str; 3] = ["en", "he", "ja"];

/// The implementations compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Impl {
    /// moescope's recorder.
    Moescope,
    /// `metrics::counter!` with dynamic labels.
    MetricsCounter,
    /// `metrics::Counter` handles registered up front.
    MetricsHandles,
    /// A `Mutex<HashMap>`.
    MutexHashMap,
    /// A thread-private array.
    PlainArray,
}

impl Impl {
    /// Every implementation, moescope first.
    pub const ALL: [Impl; 5] = [
        Impl::Moescope,
        Impl::MetricsCounter,
        Impl::MetricsHandles,
        Impl::MutexHashMap,
        Impl::PlainArray,
    ];

    /// The name used in reports (`impl` in the JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Impl::Moescope => "moescope",
            Impl::MetricsCounter => "metrics-counter",
            Impl::MetricsHandles => "metrics-handles",
            Impl::MutexHashMap => "mutex-hashmap",
            Impl::PlainArray => "plain-array",
        }
    }
}

/// One layer's batch: `T × k` expert ids and a language index per token.
pub struct Workload {
    /// Tokens per batch.
    pub tokens: usize,
    /// Per layer: `T × k` ids.
    pub ids: Vec<Vec<u32>>,
    /// Language index (into [`LANGS`]) per token.
    pub langs: Vec<u8>,
}

impl Workload {
    /// A deterministic workload of `tokens` tokens per batch. Each token picks k distinct
    /// experts with a skew towards low ids (as trained routers are skewed).
    pub fn new(tokens: usize) -> Workload {
        let mut x = 0x2545_f491_4f6c_dd1du64 ^ tokens as u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ids = (0..LAYERS)
            .map(|_| {
                let mut ids = Vec::with_capacity(tokens * TOP_K);
                for _ in 0..tokens {
                    let start = ids.len();
                    while ids.len() < start + TOP_K {
                        let r = next();
                        // min of two uniforms: density falling linearly with the id
                        let e = ((r % EXPERTS as u64).min((r >> 32) % EXPERTS as u64)) as u32;
                        if !ids[start..].contains(&e) {
                            ids.push(e);
                        }
                    }
                }
                ids
            })
            .collect();
        let langs = (0..tokens)
            .map(|_| match next() % 20 {
                0 => 1,
                1 => 2,
                _ => 0,
            })
            .collect();
        Workload { tokens, ids, langs }
    }

    /// Token-layers in one batch call (one layer): `T`.
    pub fn token_layers_per_call(&self) -> u64 {
        self.tokens as u64
    }
}

/// A sink the workload records into; shared by the threads of a case.
pub trait Sink: Sync {
    /// Records layer `layer`'s batch. `scratch` is the calling thread's own state.
    fn record(&self, w: &Workload, layer: usize, scratch: &mut ThreadState);
}

/// Per-thread state of a sink (only `plain-array` uses it).
#[derive(Default)]
pub struct ThreadState {
    array: Vec<u64>,
}

/// moescope's recorder as a sink.
pub struct MoescopeSink {
    /// The recorder.
    pub recorder: Recorder,
    lang_ids: Vec<LangId>,
}

impl MoescopeSink {
    /// A recorder for a Qwen3-30B-A3B-shaped model, with the workload's languages.
    pub fn new(w: &Workload) -> MoescopeSink {
        let spec = ModelSpec::new(
            "bench-qwen3-shaped",
            EXPERTS as u32,
            TOP_K as u32,
            (0..LAYERS as u32).collect(),
        )
        .unwrap_or_else(|e| unreachable!("valid spec: {e}"));
        let recorder = Recorder::new(spec).unwrap_or_else(|e| unreachable!("valid config: {e}"));
        let ids: Vec<LangId> = LANGS.iter().map(|t| recorder.language(t)).collect();
        let lang_ids = w.langs.iter().map(|&l| ids[l as usize]).collect();
        MoescopeSink { recorder, lang_ids }
    }
}

impl Sink for MoescopeSink {
    #[inline]
    fn record(&self, w: &Workload, layer: usize, _: &mut ThreadState) {
        let batch =
            RouterBatch::at_depth(layer, &w.ids[layer], Languages::PerToken(&self.lang_ids));
        // The workload is valid; a failure would show up as missing counts in the tests.
        let _ = self.recorder.record(&batch);
    }
}

fn label_values() -> &'static (Vec<&'static str>, Vec<&'static str>) {
    static LABELS: OnceLock<(Vec<&'static str>, Vec<&'static str>)> = OnceLock::new();
    LABELS.get_or_init(|| {
        let leak = |n: usize| -> Vec<&'static str> {
            (0..n)
                .map(|i| &*Box::leak(i.to_string().into_boxed_str()))
                .collect()
        };
        (leak(LAYERS), leak(EXPERTS))
    })
}

/// Installs the Prometheus recorder as the global `metrics` recorder (once per process) and
/// returns its handle, so the `metrics-*` sinks record into what a Prometheus user runs.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then the counters go there instead.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `metrics::counter!` per routed slot.
pub struct MetricsCounterSink;

impl MetricsCounterSink {
    /// Installs the Prometheus recorder if needed.
    pub fn new() -> MetricsCounterSink {
        prometheus();
        MetricsCounterSink
    }
}

impl Default for MetricsCounterSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for MetricsCounterSink {
    fn record(&self, w: &Workload, layer: usize, _: &mut ThreadState) {
        let (layers, experts) = label_values();
        for (t, row) in w.ids[layer].chunks_exact(TOP_K).enumerate() {
            let lang = LANGS[w.langs[t] as usize];
            for &e in row {
                metrics::counter!(
                    "moe_expert_selections_total",
                    "layer" => layers[layer],
                    "expert" => experts[e as usize],
                    "lang" => lang
                )
                .increment(1);
            }
        }
    }
}

/// `metrics::Counter` handles registered up front.
pub struct MetricsHandlesSink {
    handles: Vec<Counter>,
}

impl MetricsHandlesSink {
    /// Registers a handle for every (layer, lang, expert).
    pub fn new() -> MetricsHandlesSink {
        prometheus();
        let (layers, experts) = label_values();
        let mut handles = Vec::with_capacity(LAYERS * LANGS.len() * EXPERTS);
        for &layer in layers {
            for lang in LANGS {
                for &expert in experts {
                    handles.push(metrics::counter!(
                        "moe_expert_selections_handles_total",
                        "layer" => layer,
                        "expert" => expert,
                        "lang" => lang
                    ));
                }
            }
        }
        MetricsHandlesSink { handles }
    }
}

impl Default for MetricsHandlesSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for MetricsHandlesSink {
    #[inline]
    fn record(&self, w: &Workload, layer: usize, _: &mut ThreadState) {
        for (t, row) in w.ids[layer].chunks_exact(TOP_K).enumerate() {
            let base = (layer * LANGS.len() + w.langs[t] as usize) * EXPERTS;
            let handles = &self.handles[base..base + EXPERTS];
            for &e in row {
                handles[e as usize].increment(1);
            }
        }
    }
}

/// A mutex-protected hash map of counters.
#[derive(Default)]
pub struct MutexHashMapSink {
    /// The counters.
    pub map: Mutex<HashMap<(u16, u8, u16), u64>>,
}

impl Sink for MutexHashMapSink {
    fn record(&self, w: &Workload, layer: usize, _: &mut ThreadState) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (t, row) in w.ids[layer].chunks_exact(TOP_K).enumerate() {
            for &e in row {
                *map.entry((layer as u16, w.langs[t], e as u16)).or_insert(0) += 1;
            }
        }
    }
}

/// A thread-private array: the floor.
pub struct PlainArraySink;

impl Sink for PlainArraySink {
    #[inline]
    fn record(&self, w: &Workload, layer: usize, s: &mut ThreadState) {
        if s.array.is_empty() {
            s.array = vec![0; LAYERS * LANGS.len() * EXPERTS];
        }
        for (t, row) in w.ids[layer].chunks_exact(TOP_K).enumerate() {
            let base = (layer * LANGS.len() + w.langs[t] as usize) * EXPERTS;
            let counts = &mut s.array[base..base + EXPERTS];
            for &e in row {
                counts[e as usize] += 1;
            }
        }
    }
}

/// A sink for `imp`.
pub fn sink(imp: Impl, w: &Workload) -> Box<dyn Sink + Send> {
    match imp {
        Impl::Moescope => Box::new(MoescopeSink::new(w)),
        Impl::MetricsCounter => Box::new(MetricsCounterSink::new()),
        Impl::MetricsHandles => Box::new(MetricsHandlesSink::new()),
        Impl::MutexHashMap => Box::new(MutexHashMapSink::default()),
        Impl::PlainArray => Box::new(PlainArraySink),
    }
}

/// Runs `calls` batch calls on each of `threads` threads (thread `i` starts at layer
/// `i·L/threads`) and returns the wall time from a common start to the last thread's end.
pub fn run_calls(sink: &(dyn Sink + Send), w: &Workload, threads: usize, calls: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut state = ThreadState::default();
                    let mut layer = i * LAYERS / threads;
                    sink.record(w, layer, &mut state); // warm-up: scratch, array
                    barrier.wait();
                    for _ in 0..calls {
                        layer = if layer + 1 == LAYERS { 0 } else { layer + 1 };
                        sink.record(w, layer, &mut state);
                    }
                    std::hint::black_box(&state);
                    Instant::now()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let end = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Instant::now()))
            .max()
            .unwrap_or(start);
        end.saturating_duration_since(start)
    })
}

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Samples per case (the median is reported).
    pub samples: usize,
    /// Target duration of one sample.
    pub sample_time: Duration,
}

impl Budget {
    /// `moescope bench --quick`: about half a second per case.
    pub const QUICK: Budget = Budget {
        samples: 5,
        sample_time: Duration::from_millis(60),
    };
    /// The default: about three seconds per case.
    pub const FULL: Budget = Budget {
        samples: 11,
        sample_time: Duration::from_millis(250),
    };
}

/// The measurement of one (impl, tokens, threads) case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    /// Implementation name.
    #[serde(rename = "impl")]
    pub imp: &'static str,
    /// Tokens per batch.
    pub tokens: usize,
    /// Writer threads.
    pub threads: usize,
    /// Median over samples of wall time × threads ÷ token-layers.
    pub ns_per_token_layer: f64,
    /// Smallest and largest sample.
    pub min_ns_per_token_layer: f64,
    /// Largest sample.
    pub max_ns_per_token_layer: f64,
    /// Token-layers per second over all threads, at the median.
    pub token_layers_per_second: f64,
    /// Batch calls per thread per sample.
    pub calls_per_sample: u64,
    /// Samples taken.
    pub samples: usize,
}

/// Measures one case: calibrates the calls per sample to `budget.sample_time`, then takes
/// `budget.samples` samples.
pub fn measure(imp: Impl, w: &Workload, threads: usize, budget: Budget) -> CaseResult {
    let sink = sink(imp, w);
    // Calibrate: grow the call count until a run takes a tenth of the sample time.
    let mut calls = 1u64;
    let per_call = loop {
        let d = run_calls(&*sink, w, threads, calls);
        if d >= budget.sample_time / 10 || calls >= 1 << 30 {
            break d.as_secs_f64() / calls as f64;
        }
        calls *= 4;
    };
    let calls = ((budget.sample_time.as_secs_f64() / per_call.max(1e-12)) as u64).max(1);
    let token_layers = calls * threads as u64 * w.token_layers_per_call();
    let mut ns: Vec<f64> = (0..budget.samples.max(1))
        .map(|_| {
            let d = run_calls(&*sink, w, threads, calls);
            d.as_secs_f64() * 1e9 * threads as f64 / token_layers as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    let median = ns[ns.len() / 2];
    CaseResult {
        imp: imp.name(),
        tokens: w.tokens,
        threads,
        ns_per_token_layer: median,
        min_ns_per_token_layer: ns[0],
        max_ns_per_token_layer: ns[ns.len() - 1],
        token_layers_per_second: threads as f64 * 1e9 / median,
        calls_per_sample: calls,
        samples: ns.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sink counts the same selections: the comparison is between equals.
    #[test]
    fn every_sink_counts_every_slot() {
        let w = Workload::new(64);
        let mut expected = vec![0u64; LAYERS * LANGS.len() * EXPERTS];
        for layer in [0usize, 7] {
            for (t, row) in w.ids[layer].chunks_exact(TOP_K).enumerate() {
                for &e in row {
                    expected[(layer * LANGS.len() + w.langs[t] as usize) * EXPERTS + e as usize] +=
                        1;
                }
            }
        }
        // Rows hold distinct experts.
        for row in w.ids[3].chunks_exact(TOP_K) {
            let mut r = row.to_vec();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), TOP_K);
        }
        let record_both = |sink: &dyn Sink, state: &mut ThreadState| {
            sink.record(&w, 0, state);
            sink.record(&w, 7, state);
        };

        let mut state = ThreadState::default();
        record_both(&PlainArraySink, &mut state);
        assert_eq!(state.array, expected);

        let map = MutexHashMapSink::default();
        record_both(&map, &mut ThreadState::default());
        let map = map.map.into_inner().unwrap();
        for ((l, lang, e), v) in map {
            let i = (l as usize * LANGS.len() + lang as usize) * EXPERTS + e as usize;
            assert_eq!(v, expected[i]);
        }

        let m = MoescopeSink::new(&w);
        record_both(&m, &mut ThreadState::default());
        let snap = m.recorder.snapshot();
        for (li, tag) in LANGS.iter().enumerate() {
            for layer in [0usize, 7] {
                let got = &snap.languages[*tag].layers[layer].expert_tokens;
                for e in 0..EXPERTS {
                    let want = expected[(layer * LANGS.len() + li) * EXPERTS + e];
                    assert_eq!(got[e], want as f64, "{tag} layer {layer} expert {e}");
                }
            }
        }

        let handles = MetricsHandlesSink::new();
        record_both(&handles, &mut ThreadState::default());
        MetricsCounterSink::new().record(&w, 0, &mut ThreadState::default());
        let text = prometheus().render();
        // Layer 0, English, expert 0: the same count in both metrics sinks.
        let want = expected[0];
        for name in [
            "moe_expert_selections_total",
            "moe_expert_selections_handles_total",
        ] {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with(name)
                        && l.contains("layer=\"0\"")
                        && l.contains("expert=\"0\"")
                        && l.contains("lang=\"en\"")
                })
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
            assert!(line.ends_with(&format!(" {want}")), "{line} vs {want}");
        }
    }

    #[test]
    fn measure_reports_consistent_figures() {
        let w = Workload::new(64);
        let budget = Budget {
            samples: 3,
            sample_time: Duration::from_millis(5),
        };
        let r = measure(Impl::PlainArray, &w, 1, budget);
        assert_eq!(r.samples, 3);
        assert!(r.min_ns_per_token_layer <= r.ns_per_token_layer);
        assert!(r.ns_per_token_layer <= r.max_ns_per_token_layer);
        assert!(r.ns_per_token_layer > 0.0);
        let tps = r.token_layers_per_second * r.ns_per_token_layer;
        assert!((tps / 1e9 - 1.0).abs() < 1e-9);
    }
}
