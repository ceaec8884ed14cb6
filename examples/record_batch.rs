//! Records a few forward steps of a Qwen3-30B-A3B-shaped router for English and Hebrew
//! traffic, where Hebrew's deepest layers funnel into a handful of experts, and prints the
//! per-layer usage entropy and the deep-layer collapse score.
//!
//! Run: `cargo run --release --example record_batch`

use moescope::stats::{self, AnalysisConfig};
use moescope::{Languages, ModelSpec, Recorder, RouterBatch, Segment};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = ModelSpec::preset("qwen3-30b-a3b")?;
    let (layers, experts, k) = (spec.num_moe_layers(), spec.num_experts, spec.top_k as usize);
    let recorder = Recorder::new(spec)?;
    let (en, he) = (recorder.language("en"), recorder.language("he-IL"));

    // A batch of two requests per step: 48 English tokens, then 16 Hebrew tokens.
    let segments = [
        Segment {
            lang: en,
            tokens: 48,
            sequence_id: Some(1),
        },
        Segment {
            lang: he,
            tokens: 16,
            sequence_id: Some(2),
        },
    ];
    let mut rng = moescope::rng::Rng::new(1);
    let mut next = move |n: u32| rng.below(n as usize) as u32;
    let mut ids = Vec::with_capacity(64 * k);
    for _step in 0..200 {
        for layer in 0..layers {
            ids.clear();
            for t in 0..64 {
                // Hebrew tokens in the last 6 layers draw from 12 experts only.
                let pool = if t >= 48 && layer >= layers - 6 {
                    12
                } else {
                    experts
                };
                let start = ids.len();
                while ids.len() < start + k {
                    let e = next(pool);
                    if !ids[start..].contains(&e) {
                        ids.push(e);
                    }
                }
            }
            recorder.record(&RouterBatch::at_depth(
                layer,
                &ids,
                Languages::Segments(&segments),
            ))?;
        }
    }

    let snapshot = recorder.snapshot();
    println!("layer  en H(bits)  he H(bits)");
    for (depth, layer) in snapshot.model.moe_layers.iter().enumerate() {
        let h = |tag: &str| {
            stats::usage_entropy_bits(&snapshot.languages[tag].layers[depth].expert_tokens)
        };
        println!(
            "{layer:>5}  {:>10.3}  {:>10.3}",
            h("en").unwrap_or(f64::NAN),
            h("he-IL").unwrap_or(f64::NAN)
        );
    }
    let analysis = stats::analyze(&snapshot, &AnalysisConfig::new("en"))?;
    if let Some(c) = analysis.collapse_for("he-IL") {
        println!(
            "he-IL deep-layer collapse score against en: {:.3} bits (collapsed: {})",
            c.score_bits.unwrap_or(f64::NAN),
            c.collapsed
        );
    }
    Ok(())
}
