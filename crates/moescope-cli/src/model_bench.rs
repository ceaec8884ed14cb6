//! `moescope bench --model-overhead`: the bundled MoE model's tokens per second through tract,
//! with and without moescope, in the same run.
//!
//! Baseline: the ONNX file loaded and optimized by plain tract ([`PlainModel`]), outputs
//! untouched. Monitored: the same file through [`MoeModel`] (router logits and top-k ids
//! exposed as extra outputs before optimization) and every MoE layer recorded, with an upkeep
//! thread rotating the window as in production. Rounds alternate the two (the order flips
//! each round, so drift and turbo effects hit both); each round runs each side for the same
//! wall time on the same packed batch of English, Hebrew and Japanese requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moescope_core::{Languages, Recorder};
use moescope_tract::{
    bundled_model_path, byte_tokens, clear_upper_simd_state, LoadOptions, MoeModel, PackedBatch,
    TValue, TVec,
};
use serde::Serialize;
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TypedRunnableModel};

use crate::demo::sentences;

#[derive(Serialize)]
struct Report {
    format: &'static str,
    model: String,
    batch_tokens: usize,
    rounds: usize,
    round_ms: u128,
    plain_tokens_per_second_median: f64,
    monitored_tokens_per_second_median: f64,
    /// monitored ÷ plain of the medians.
    ratio_of_medians: f64,
    /// Median over rounds of (monitored ÷ plain) within the round.
    paired_ratio_median: f64,
    /// Time in `MoeModel::record` over the monitored run time (median over rounds).
    record_share_median: f64,
    plain_rounds: Vec<f64>,
    monitored_rounds: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The same ONNX file run as plain tract, its outputs untouched and no recorder: the
/// baseline.
struct PlainModel {
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl PlainModel {
    /// Loads and optimizes `path` with tract-onnx, nothing else.
    fn load(path: &std::path::Path) -> Result<PlainModel, String> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{}: {e:#}", path.display()))?;
        Ok(PlainModel { plan })
    }

    /// Runs it, then clears the AVX upper state as `MoeModel::run` does (a fair baseline).
    fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        let out = self.plan.run(inputs);
        clear_upper_simd_state();
        out.map_err(|e| format!("{e:#}"))
    }
}

/// Runs the benchmark; prints a table or JSON. Returns the exit code.
pub fn run(quick: bool, json: bool, batch_tokens: usize) -> Result<(), String> {
    let path = bundled_model_path();
    let plain = PlainModel::load(&path)?;
    let model = MoeModel::load(&path, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let recorder = Arc::new(Recorder::new(model.spec().clone()).map_err(|e| e.to_string())?);
    let _upkeep = recorder
        .spawn_upkeep(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;

    // One packed batch: English, Hebrew, Japanese requests until `batch_tokens`.
    let langs = [
        (recorder.language("en"), sentences::EN),
        (recorder.language("he"), sentences::HE),
        (recorder.language("ja"), sentences::JA),
    ];
    let mut batch = PackedBatch::new();
    let mut i = 0usize;
    while batch.tokens() < batch_tokens {
        let (lang, pool) = langs[i % 3];
        let mut t = byte_tokens(pool[(i / 3) % pool.len()]);
        t.truncate(batch_tokens - batch.tokens());
        batch.push(&t, lang, Some(i as u64));
        i += 1;
    }
    let tokens = batch.tokens() as f64;
    let inputs = batch.inputs();
    let mut scratch = Vec::new();

    let (rounds, round) = if quick {
        (7, Duration::from_millis(400))
    } else {
        (21, Duration::from_millis(1000))
    };
    // Warm up both.
    for _ in 0..3 {
        plain.run(inputs.clone())?;
        let out = model.run(inputs.clone()).map_err(|e| e.to_string())?;
        model
            .record(
                &recorder,
                &out,
                Languages::Segments(batch.segments()),
                &mut scratch,
            )
            .map_err(|e| e.to_string())?;
    }
    let mut plain_rounds = Vec::new();
    let mut monitored_rounds = Vec::new();
    let mut record_shares = Vec::new();
    for r in 0..rounds {
        for side in [r % 2, 1 - r % 2] {
            let start = Instant::now();
            let mut n = 0u32;
            let mut recording = Duration::ZERO;
            while start.elapsed() < round {
                if side == 0 {
                    plain.run(inputs.clone())?;
                } else {
                    let out = model.run(inputs.clone()).map_err(|e| e.to_string())?;
                    let t0 = Instant::now();
                    model
                        .record(
                            &recorder,
                            &out,
                            Languages::Segments(batch.segments()),
                            &mut scratch,
                        )
                        .map_err(|e| e.to_string())?;
                    recording += t0.elapsed();
                }
                n += 1;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let tps = tokens * f64::from(n) / elapsed;
            if side == 0 {
                plain_rounds.push(tps);
            } else {
                monitored_rounds.push(tps);
                record_shares.push(recording.as_secs_f64() / elapsed);
            }
        }
    }
    let paired: Vec<f64> = monitored_rounds
        .iter()
        .zip(&plain_rounds)
        .map(|(m, p)| m / p)
        .collect();
    let report = Report {
        format: "moescope.model-bench/v1",
        model: model.name().to_owned(),
        batch_tokens: batch.tokens(),
        rounds,
        round_ms: round.as_millis(),
        plain_tokens_per_second_median: median(&plain_rounds),
        monitored_tokens_per_second_median: median(&monitored_rounds),
        ratio_of_medians: median(&monitored_rounds) / median(&plain_rounds),
        paired_ratio_median: median(&paired),
        record_share_median: median(&record_shares),
        plain_rounds,
        monitored_rounds,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "model {} through tract, {} tokens per forward pass (en/he/ja requests packed), {} rounds of {} ms per side",
            report.model, report.batch_tokens, report.rounds, report.round_ms
        );
        println!(
            "  plain tract:            {:>10.0} tokens/s (median)",
            report.plain_tokens_per_second_median
        );
        println!(
            "  tract + moescope:       {:>10.0} tokens/s (median)",
            report.monitored_tokens_per_second_median
        );
        println!(
            "  monitored / plain:      {:>10.4} (ratio of medians), {:.4} (median of per-round ratios)",
            report.ratio_of_medians, report.paired_ratio_median
        );
        println!(
            "  time in record():       {:>10.4} % of the monitored run",
            100.0 * report.record_share_median
        );
    }
    Ok(())
}
