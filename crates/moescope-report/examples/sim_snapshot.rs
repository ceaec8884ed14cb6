//! Writes a simulator snapshot for trying `moescope report` (and for timing it): a model
//! preset, N languages, one of them collapsing in its deep layers.
//!
//! ```text
//! cargo run --release -p moescope-report --example sim_snapshot -- qwen3-30b-a3b 16 out.json [--no-collapse]
//! ```

use moescope_core::{ModelSpec, Recorder};
use moescope_sim::{Collapse, LanguageProfile, Simulator};

/// Language tags, English first (the reference).
const TAGS: [&str; 24] = [
    "en", "ar", "de", "es", "fa", "fr", "he", "hi", "id", "it", "ja", "ko", "nl", "pl", "pt", "ru",
    "sw", "th", "tr", "uk", "ur", "vi", "yo", "zh",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("qwen3-30b-a3b", String::as_str);
    let n: usize = args.get(1).map_or(Ok(16), |s| s.parse())?;
    let out = args.get(2).map_or("sim-snapshot.json", String::as_str);
    let collapse = !args.iter().any(|a| a == "--no-collapse");
    let n = n.clamp(1, TAGS.len());

    let spec = ModelSpec::preset(preset)?;
    let k = f64::from(spec.top_k);
    let e = f64::from(spec.num_experts);
    // Targets between log2 k and log2 E; English the highest.
    let hi = e.log2() - 0.3;
    let lo = (k.log2() + e.log2()) / 2.0;
    let languages: Vec<LanguageProfile> = (0..n)
        .map(|i| {
            let bits = hi - (hi - lo) * i as f64 / n.max(2) as f64;
            let share = if i == 0 { 0.3 } else { 0.7 / (n - 1) as f64 };
            LanguageProfile::uniform_entropy(TAGS[i], if n == 1 { 1.0 } else { share }, bits)
        })
        .collect();
    let mut sim = Simulator::new(spec.clone(), languages, 42)?;
    if collapse && n > 1 {
        let deep = (spec.num_moe_layers() / 8).max(2);
        sim.set_collapse(
            TAGS[n - 1],
            Some(Collapse {
                deep_layers: deep,
                experts: spec.top_k as usize * 2,
            }),
        )?;
    }
    let recorder = Recorder::new(spec)?;
    for _ in 0..40 {
        sim.drive(&recorder, 2048)?;
    }
    recorder.snapshot().write_json(out)?;
    eprintln!("wrote {out}");
    Ok(())
}
