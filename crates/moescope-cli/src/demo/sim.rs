//! `moescope demo --simulate`: simulated routing with a scripted deep-layer collapse.
//!
//! A routing simulator (crate `moescope-sim`) generates router batches for the `--mix`
//! languages on a preset's shapes; the recorder records them; a publisher serves the
//! statistics at `/metrics`, with the live page at `/` and the window as a snapshot file at
//! `/v1/snapshot` ([`super::page`]); the terminal shows the shared view. One language collapses in its
//! deep layers at `--collapse-at` and recovers at `--recover-at`, so the flag can be watched
//! going up and down (and alerts rehearsed).

use std::io::Write;
use std::time::{Duration, Instant};

use moescope_core::ModelSpec;
use moescope_prometheus::{serve_prometheus_with_routes, Router};
use moescope_sim::{Collapse, LanguageProfile, Simulator};
use moescope_stats::deep_layers;

use super::{CommonArgs, SimArgs};

/// The simulator's language profiles for the mix: healthy routing uses most of the experts,
/// one bit or so under the maximum, a little lower for each later language, never below
/// log2 k.
fn profiles(common: &CommonArgs, spec: &ModelSpec) -> Result<Vec<LanguageProfile>, String> {
    let max = f64::from(spec.num_experts).log2();
    let min = f64::from(spec.top_k).log2();
    Ok(super::mix::parse(&common.mix)?
        .into_iter()
        .enumerate()
        .map(|(i, (tag, share))| {
            let bits = (max - 1.0 - 0.15 * i as f64).max(min);
            LanguageProfile::uniform_entropy(&tag, share, bits)
        })
        .collect())
}

/// Runs the simulated demo until `--duration` passes (or forever).
pub fn run(common: &CommonArgs, args: &SimArgs) -> Result<(), String> {
    let spec = ModelSpec::preset(&args.model).map_err(|e| e.to_string())?;
    let mut sim = Simulator::new(spec.clone(), profiles(common, &spec)?, common.seed)
        .map_err(|e| e.to_string())?;
    let layers = spec.num_moe_layers();
    let collapse = Collapse {
        deep_layers: deep_layers(layers).len().max(1),
        experts: (2 * spec.top_k as usize).min(spec.num_experts as usize),
    };
    // Check the collapsing language now rather than at the first switch.
    sim.set_collapse(&args.collapse_lang, None)
        .map_err(|e| format!("--collapse-lang: {e}"))?;
    let recorder = common.recorder(&spec)?;
    let export = serve_prometheus_with_routes(
        recorder.clone(),
        &common.listen,
        common.publisher_config(),
        super::page::routes(
            Router::new(),
            recorder.clone(),
            super::page::page_options(&common.publisher_config()),
        ),
    )
    .map_err(|e| e.to_string())?;
    let addr = export.endpoint.local_addr();
    say!(
        "moescope demo: simulating {} ({} MoE layers, {} experts, top-{}); metrics at http://{addr}/metrics",
        spec.name, layers, spec.num_experts, spec.top_k
    );
    say!("live page at http://{addr}/, the window as a snapshot file at http://{addr}/v1/snapshot");
    say!(
        "{} collapses in its last {} MoE layers onto {} experts at {}s{}",
        args.collapse_lang,
        collapse.deep_layers,
        collapse.experts,
        args.collapse_at,
        if args.recover_at > 0.0 {
            format!(" and recovers at {}s", args.recover_at)
        } else {
            String::new()
        }
    );
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let step_time = Duration::from_secs_f64(1.0 / args.steps_per_second.max(0.1));
    let view_every = common.interval().max(Duration::from_secs(1));
    let mut collapsed = false;
    let mut next_view = Instant::now() + view_every;
    let mut steps = 0u64;
    loop {
        let t = start.elapsed().as_secs_f64();
        if common.duration > 0.0 && t >= common.duration {
            return Ok(());
        }
        let want = t >= args.collapse_at && !(args.recover_at > 0.0 && t >= args.recover_at);
        if want != collapsed {
            sim.set_collapse(&args.collapse_lang, want.then_some(collapse))
                .map_err(|e| e.to_string())?;
            collapsed = want;
            say!(
                "[{t:>6.1}s] {} deep-layer collapse {}",
                args.collapse_lang,
                if want { "ON" } else { "OFF (recovered)" }
            );
        }
        sim.drive(&recorder, args.tokens_per_step)
            .map_err(|e| e.to_string())?;
        steps += 1;
        if !common.quiet && Instant::now() >= next_view {
            if let Some(round) = export.publisher.latest() {
                let header = format!(
                    "moescope demo  t={t:.0}s  steps={steps}  simulated collapse of {}: {}",
                    args.collapse_lang,
                    if collapsed { "ON" } else { "off" }
                );
                super::view::show(&round, &common.reference, &header);
            }
            next_view += view_every;
        }
        let target = start + step_time.mul_f64(steps as f64);
        if let Some(wait) = target.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}
