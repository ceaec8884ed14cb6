//! moescope-sim: a routing simulator for rehearsing moescope without a model.
//!
//! For a [`ModelSpec`](moescope_core::ModelSpec) and a language mix, a [`Simulator`]
//! generates what an MoE serving step hands the recorder — per MoE layer the top-k expert
//! ids, gate weights and router logits, and the tokens' languages as segments with sequence
//! ids — such that each language's *usage entropy* (docs/METRICS.md) in each layer follows a
//! profile you give. It can make a language collapse in its deep layers from a given step and
//! recover, so dashboards, alert rules and the collapse detector can be exercised end to end:
//! [`Simulator::drive`] records one step into a [`Recorder`](moescope_core::Recorder), whose
//! snapshot then reads like a real model's.
//!
//! ```
//! use moescope_core::{ModelSpec, Recorder};
//! use moescope_sim::{Collapse, LanguageProfile, Simulator};
//! use moescope_stats::{analyze, usage_entropy_bits, AnalysisConfig};
//!
//! let spec = ModelSpec::preset("olmoe-1b-7b")?; // 16 MoE layers, 64 experts, top-8
//! let languages = vec![
//!     LanguageProfile::uniform_entropy("en", 0.7, 5.5),
//!     LanguageProfile::uniform_entropy("he", 0.3, 5.5),
//! ];
//! let mut sim = Simulator::new(spec.clone(), languages, 42)?;
//! // Hebrew's last 2 MoE layers funnel into 8 experts (3 bits).
//! sim.set_collapse("he", Some(Collapse { deep_layers: 2, experts: 8 }))?;
//!
//! let recorder = Recorder::new(spec)?;
//! for _ in 0..10 {
//!     sim.drive(&recorder, 512)?; // one forward step of 512 tokens, all 16 layers
//! }
//! let snapshot = recorder.snapshot();
//! let he = &snapshot.languages["he"];
//! let middle = usage_entropy_bits(&he.layers[8].expert_tokens).unwrap();
//! let deep = usage_entropy_bits(&he.layers[15].expert_tokens).unwrap();
//! assert!((middle - 5.5).abs() < 0.1 && (deep - 3.0).abs() < 0.1);
//!
//! let analysis = analyze(&snapshot, &AnalysisConfig::new("en"))?;
//! assert!(analysis.collapse_for("he").unwrap().collapsed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The routing model
//! Per (MoE layer, language) the simulator fixes a categorical *usage distribution* p over
//! the E routed experts and routes every token of that language through it:
//! - **Shape.** The layer's experts are ranked (by a score shared by all languages of the
//!   layer, mixed with a per-language score: [`LanguageProfile::specificity`]) and rank r gets
//!   weight (r + 1)^−s, a Zipf law. Because a token uses k *distinct* experts, no expert can
//!   take more than 1/k of the assignments, so the normalized weights are capped at 1/k by
//!   water-filling. The exponent s is found by bisection so that the entropy of p equals the
//!   layer's target to about 1e−9 bits. Reachable targets are therefore [log2 k, log2 E]
//!   (3 to 7 bits for top-8 of 128) — a property of top-k routing, not of the simulator.
//! - **Selection.** Each token draws its k experts without replacement by *systematic πps
//!   sampling*: the inclusion probabilities π_e = k·p_e (≤ 1) are laid end to end, and the
//!   experts whose interval holds one of the points u, u+1, …, u+k−1 (u uniform) are
//!   selected. Each expert is selected with probability exactly π_e and never twice, so the
//!   expected usage distribution *is* p and needs no calibration. (Successive draws, as in
//!   Gumbel top-k, select with inclusion probabilities that are a flattened p with no closed
//!   form, and would need a simulated calibration.) The recorded usage entropy is the target
//!   up to sampling noise and the plug-in estimator's small downward bias (about
//!   (E − 1) / (2 N ln 2) bits for N assignments: 0.006 bits for 2 000 tokens of top-8 of
//!   128).
//! - **Router outputs.** Logits are ln p_e plus per-token noise (uniform, standard deviation
//!   0.1 nats by default, [`Simulator::with_logit_noise`]); the softmax of a row is p up to
//!   that noise, so probability-based metrics (mean router probability, LSI on the
//!   probability basis) agree with the usage ones. Gate weights are the softmax of the
//!   selected experts' logits, and each row lists its experts by decreasing weight.
//! - **Collapse.** [`Simulator::set_collapse`] replaces a language's distribution in its last
//!   `deep_layers` MoE layers with the uniform distribution over its `experts` favourite
//!   experts (usage entropy exactly log2 `experts`); `None` restores the profile.
//!   [`Simulator::schedule_collapse`] does the same between two step indexes.
//! - **Languages.** Each token's language is drawn independently from the shares; a step's
//!   tokens of one language are cut into segments (requests) of at most
//!   [`DEFAULT_SEGMENT_TOKENS`] tokens, each with a fresh sequence id.
//!
//! # Limits
//! - A token's experts are drawn independently of its logits: the selected experts are not
//!   the top-k of the emitted logits, and a row's selection entropy (the entropy of its
//!   softmax) is about the layer's usage entropy, where a real router is much surer per
//!   token. Metrics of aggregates (usage, mean probability) are realistic; per-token ones
//!   are not.
//! - Which experts are selected *together* comes from a few fixed random orders per
//!   (layer, language) (see the `routing` module source): marginals are exact, co-selection
//!   is not a real router's. Layers are independent: a token's routing in one layer says
//!   nothing about the next.
//! - Distributions are fixed per (layer, language): no drift, no dependence on the token or
//!   position. Only the scripted collapse changes them.
//! - Determinism: the same spec, languages, seed, settings and calls give the same steps
//!   (the crate's own xoshiro256** generator; no global state). Across platforms the setup
//!   math (`powf`, `ln`, `cos` of the platform's libm) may round differently in the last
//!   bit, which can move a distribution by ~1e−16 or swap two experts whose ranking scores
//!   tie to the last bit. Each (layer, language)'s
//!   ranking comes from its own sub-stream, so appending a language leaves the others'
//!   rankings alone; the per-token draws share one stream.
#![warn(missing_docs)]

mod profile;
mod routing;
mod simulator;

pub use profile::{Collapse, EntropyProfile, LanguageProfile, SimError, DEFAULT_SPECIFICITY};
pub use simulator::{
    LayerStep, Simulator, Step, DEFAULT_LOGIT_NOISE, DEFAULT_SEGMENT_TOKENS, SHARE_SUM_TOLERANCE,
};
