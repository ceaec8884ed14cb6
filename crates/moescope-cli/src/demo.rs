//! `moescope demo`: the whole pipeline in one command.
//!
//! Without `--simulate` (the default), a real MoE model runs on the CPU through tract behind
//! an HTTP server with a built-in load generator: see [`crate::serve`].
//!
//! With `--simulate`, a routing simulator (crate `moescope-sim`) generates router batches for a language mix; the
//! recorder records them; a publisher serves the statistics at `/metrics`; the terminal shows,
//! per language, its traffic, its deep-layer entropy against the reference and the collapse
//! flag. One language collapses in its deep layers at `--collapse-at` and recovers at
//! `--recover-at`, so the flag can be watched going up and down (and alerts rehearsed).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moescope_core::{ModelSpec, Recorder, WindowConfig};
use moescope_prometheus::{serve_prometheus, DEFAULT_LISTEN};
use moescope_publish::{Metric, PublisherConfig, Round};
use moescope_sim::{Collapse, LanguageProfile, Simulator};
use moescope_stats::{deep_layers, layer_entropies};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Drive the recorder with simulated routing instead of the real model (a scripted
    /// collapse on a Qwen3-30B-A3B-shaped router).
    #[arg(long)]
    pub(crate) simulate: bool,
    /// Real model: the ONNX MoE file (default: the bundled tiny Qwen3-MoE).
    #[arg(long, value_name = "PATH")]
    pub(crate) onnx: Option<std::path::PathBuf>,
    /// Real model: requests per second of the built-in load generator.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) rps: f64,
    /// Real model: share of generated requests that carry a language tag (the rest are
    /// detected).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) tagged_share: f64,
    /// Real model: languages to detect untagged requests among (BCP 47 or ISO 639-3 tags;
    /// `any`: every language whatlang knows).
    #[arg(long, default_value = "en,he,ja", value_delimiter = ',')]
    pub(crate) detect: Vec<String>,
    /// Real model: serve only, no load generator.
    #[arg(long)]
    pub(crate) no_load: bool,
    /// Real model: most tokens packed into one forward pass.
    #[arg(long, default_value_t = 4096)]
    pub(crate) max_batch_tokens: usize,
    /// Address of the `/metrics` endpoint.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub(crate) listen: String,
    /// Simulated: model preset.
    #[arg(long, default_value = "qwen3-30b-a3b")]
    pub(crate) model: String,
    /// Language mix as TAG=SHARE pairs.
    #[arg(long, default_value = "en=0.9,he=0.05,ja=0.05", value_delimiter = ',')]
    pub(crate) mix: Vec<String>,
    /// Reference language.
    #[arg(long, default_value = "en")]
    pub(crate) reference: String,
    /// The language whose deep layers collapse.
    #[arg(long, default_value = "he")]
    pub(crate) collapse_lang: String,
    /// Seconds after start when the collapse begins.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) collapse_at: f64,
    /// Seconds after start when it ends (0: never).
    #[arg(long, default_value_t = 240.0)]
    pub(crate) recover_at: f64,
    /// Tokens per simulated forward step.
    #[arg(long, default_value_t = 64)]
    pub(crate) tokens_per_step: usize,
    /// Forward steps per second.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) steps_per_second: f64,
    /// Publication interval in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) interval_ms: u64,
    /// Window bucket length in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) bucket_ms: u64,
    /// Buckets in the window.
    #[arg(long, default_value_t = 30)]
    pub(crate) buckets: usize,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) duration: f64,
    /// Publish the opt-in per-expert selection counters.
    #[arg(long)]
    pub(crate) expert_selections: bool,
    /// Publish every per-layer metric (layer detail) for these languages (`all`, or tags
    /// separated by commas); by default only the usage entropy is published per layer.
    #[arg(long, value_name = "LANGS")]
    pub(crate) layer_detail: Option<String>,
    /// No terminal view (for running under a test or a service manager).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Simulator seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

impl DemoArgs {
    /// The layer detail `--layer-detail` asks for.
    pub(crate) fn layer_detail(&self) -> moescope_publish::LayerDetail {
        use moescope_publish::{LanguageSelection, LayerDetail};
        let languages = match self.layer_detail.as_deref() {
            None => LanguageSelection::None,
            Some("all") => LanguageSelection::All,
            Some(tags) => LanguageSelection::Only(tags.split(',').map(str::to_owned).collect()),
        };
        LayerDetail {
            languages,
            ..LayerDetail::default()
        }
    }

    /// The recorder both demos record into, with the window the flags ask for.
    pub(crate) fn recorder(&self, spec: &ModelSpec) -> Result<Arc<Recorder>, String> {
        Recorder::builder(spec.clone())
            .window(WindowConfig {
                bucket_ms: self.bucket_ms,
                buckets: self.buckets,
            })
            .build()
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

pub fn run(args: &DemoArgs) -> i32 {
    let result = if args.simulate {
        simulate(args)
    } else {
        crate::serve::run(args)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("moescope demo: {e}");
            2
        }
    }
}

fn mix(args: &DemoArgs, spec: &ModelSpec) -> Result<Vec<LanguageProfile>, String> {
    let max = f64::from(spec.num_experts).log2();
    let min = f64::from(spec.top_k).log2();
    args.mix
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let (tag, share) = pair
                .split_once('=')
                .ok_or_else(|| format!("--mix: {pair:?} is not TAG=SHARE"))?;
            let share: f64 = share
                .parse()
                .map_err(|_| format!("--mix: share {share:?} of {tag} is not a number"))?;
            // Healthy routing uses most of the experts: one bit or so under the maximum,
            // a little lower for the less common languages, never below log2 k.
            let bits = (max - 1.0 - 0.15 * i as f64).max(min);
            Ok(LanguageProfile::uniform_entropy(tag, share, bits))
        })
        .collect()
}

fn simulate(args: &DemoArgs) -> Result<(), String> {
    let spec = ModelSpec::preset(&args.model).map_err(|e| e.to_string())?;
    let profiles = mix(args, &spec)?;
    let mut sim = Simulator::new(spec.clone(), profiles, args.seed).map_err(|e| e.to_string())?;
    let layers = spec.num_moe_layers();
    let collapse = Collapse {
        deep_layers: deep_layers(layers).len().max(1),
        experts: (2 * spec.top_k as usize).min(spec.num_experts as usize),
    };
    // Check the collapsing language now rather than at the first switch.
    sim.set_collapse(&args.collapse_lang, None)
        .map_err(|e| format!("--collapse-lang: {e}"))?;
    let recorder = args.recorder(&spec)?;
    let config = PublisherConfig {
        reference: args.reference.clone(),
        expert_selections: args.expert_selections,
        layer_detail: args.layer_detail(),
        interval: Duration::from_millis(args.interval_ms.max(1)),
        ..PublisherConfig::default()
    };
    let export =
        serve_prometheus(recorder.clone(), &args.listen, config).map_err(|e| e.to_string())?;
    let addr = export.endpoint.local_addr();
    println!(
        "moescope demo: simulating {} ({} MoE layers, {} experts, top-{}); metrics at http://{addr}/metrics",
        spec.name, layers, spec.num_experts, spec.top_k
    );
    println!(
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
    let mut collapsed = false;
    let mut next_view = Instant::now() + Duration::from_millis(args.interval_ms.max(1000));
    let mut steps = 0u64;
    loop {
        let t = start.elapsed().as_secs_f64();
        if args.duration > 0.0 && t >= args.duration {
            return Ok(());
        }
        let want = t >= args.collapse_at && !(args.recover_at > 0.0 && t >= args.recover_at);
        if want != collapsed {
            sim.set_collapse(&args.collapse_lang, want.then_some(collapse))
                .map_err(|e| e.to_string())?;
            collapsed = want;
            println!(
                "[{t:>6.1}s] {} deep-layer collapse {}",
                args.collapse_lang,
                if want { "ON" } else { "OFF (recovered)" }
            );
        }
        sim.drive(&recorder, args.tokens_per_step)
            .map_err(|e| e.to_string())?;
        steps += 1;
        if !args.quiet && Instant::now() >= next_view {
            if let Some(round) = export.publisher.latest() {
                view(&round, args, t, steps, collapsed);
            }
            next_view += Duration::from_millis(args.interval_ms.max(1000));
        }
        let target = start + step_time.mul_f64(steps as f64);
        if let Some(wait) = target.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// One screen of the terminal view.
fn view(round: &Round, args: &DemoArgs, t: f64, steps: u64, collapsed: bool) {
    let snap = &round.snapshot;
    let seconds = snap.window.map_or(1.0, |w| {
        (w.end_unix_ms.saturating_sub(w.start_unix_ms)).max(1) as f64 / 1000.0
    });
    let deep = deep_layers(snap.model.num_moe_layers());
    let deep_mean = |tag: &str| -> Option<f64> {
        let h = layer_entropies(snap.languages.get(tag)?);
        let vals: Vec<f64> = h[deep.clone()].iter().flatten().copied().collect();
        (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
    };
    let flag = |tag: &str| {
        round.publication.value(
            Metric::DeepCollapse,
            &[&snap.model.name, tag, &args.reference],
        )
    };
    let score = |tag: &str| {
        round.publication.value(
            Metric::DeepCollapseScoreBits,
            &[&snap.model.name, tag, &args.reference],
        )
    };
    let mut out = String::new();
    let tty = std::io::stdout().is_terminal();
    if tty {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!(
        "moescope demo  t={t:.0}s  steps={steps}  window={seconds:.0}s  simulated collapse of {}: {}\n\n",
        args.collapse_lang,
        if collapsed { "ON" } else { "off" }
    ));
    out.push_str(&format!(
        "{:<8} {:>10} {:>16} {:>16} {:>12} {:>9}\n",
        "lang", "tokens/s", "deep H (bits)", "ref deep H", "score bits", "COLLAPSE"
    ));
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let reference = deep_mean(&args.reference);
    for (tag, lang) in &snap.languages {
        let f = match flag(tag) {
            Some(v) if v >= 1.0 => "YES",
            Some(_) => "no",
            None => "-",
        };
        out.push_str(&format!(
            "{:<8} {:>10.1} {:>16} {:>16} {:>12} {:>9}\n",
            tag,
            lang.tokens / seconds,
            fmt(deep_mean(tag)),
            fmt(reference),
            fmt(score(tag)),
            f
        ));
    }
    out.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
