//! `moescope demo`: the whole pipeline in one command, in one of two modes.
//!
//! - [`real`] (the default): a real MoE model runs on the CPU through tract behind an HTTP
//!   server with a built-in multilingual load generator; every MoE layer's router is recorded
//!   per language.
//! - [`sim`] (`--simulate`): a routing simulator drives a Qwen3-30B-A3B-shaped router where
//!   one language's deep layers collapse and recover on a schedule, so the collapse flag can
//!   be watched going up and down (and alerts rehearsed).
//!
//! Both record into a [`Recorder`] whose window the flags shape ([`CommonArgs`]), publish its
//! statistics at `/metrics`, read the language mix the same way ([`mix`]) and show the same
//! terminal view ([`view`]). Each mode's own flags are in their own group ([`RealArgs`],
//! [`SimArgs`]); giving one of the other mode's flags is an error.

use std::sync::Arc;
use std::time::Duration;

/// `println!` that ignores a closed stdout (a demo piped into `head`, or a test that read the
/// banner and went away) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use moescope_core::{ModelSpec, Recorder, WindowConfig};
use moescope_prometheus::DEFAULT_LISTEN;
use moescope_publish::{LanguageSelection, LayerDetail, PublisherConfig};

pub mod mix;
pub mod page;
pub mod real;
pub mod sentences;
pub mod sim;
pub mod view;

/// `moescope demo [--simulate] ...`
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Drive the recorder with simulated routing (a scripted deep-layer collapse on a
    /// Qwen3-30B-A3B-shaped router) instead of the real model.
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub real: RealArgs,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Flags both modes take.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Address of the HTTP server (`/metrics`, and the model's routes in the real mode).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Language mix as TAG=SHARE pairs; shares are relative weights (`en=9,he=1` is 90 % and
    /// 10 %).
    #[arg(long, default_value = "en=0.9,he=0.05,ja=0.05", value_delimiter = ',')]
    pub mix: Vec<String>,
    /// Reference language the others are compared with.
    #[arg(long, default_value = moescope_stats::AnalysisConfig::DEFAULT_REFERENCE)]
    pub reference: String,
    /// Publication interval in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub interval_ms: u64,
    /// Window bucket length in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub bucket_ms: u64,
    /// Buckets in the window.
    #[arg(long, default_value_t = 30)]
    pub buckets: usize,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Publish the opt-in per-expert selection counters.
    #[arg(long)]
    pub expert_selections: bool,
    /// Publish every per-layer metric (layer detail) for these languages (`all`, or tags
    /// separated by commas); by default only the usage entropy is published per layer.
    #[arg(long, value_name = "LANGS")]
    pub layer_detail: Option<String>,
    /// No terminal view (for running under a test or a service manager).
    #[arg(long)]
    pub quiet: bool,
    /// Seed of the load generator or the simulator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Flags of the real-model mode.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Real model (without --simulate)")]
pub struct RealArgs {
    /// The ONNX MoE file (default: the bundled tiny Qwen3-MoE). Packed inputs
    /// (`input_ids`, `position_ids`, `segment_ids`, each `[T]`) or a plain Hugging Face export
    /// (`input_ids [B, S]`, with `attention_mask` / `position_ids` when present).
    #[arg(long, value_name = "PATH", conflicts_with = "simulate")]
    pub onnx: Option<std::path::PathBuf>,
    /// The model's Hugging Face `config.json`: experts, top-k and the MoE layer numbers
    /// (default: read from the graph).
    #[arg(long, value_name = "PATH", conflicts_with = "simulate")]
    pub config: Option<std::path::PathBuf>,
    /// The `model` label of the metrics (default: the model's folder or file name).
    #[arg(long, value_name = "NAME", conflicts_with = "simulate")]
    pub name: Option<String>,
    /// Pin the model's token axis to this length (batches are padded to it; the padding is
    /// not recorded): for exports tract cannot type with symbolic shapes.
    #[arg(long, value_name = "TOKENS", conflicts_with = "simulate")]
    pub fixed_tokens: Option<usize>,
    /// A router to record, by its gate, logits or scores tensor or node name (repeat it, one
    /// per MoE layer; a name with `*` is a pattern). Default: found by graph shape.
    #[arg(long = "router", value_name = "NAME", conflicts_with = "simulate")]
    pub routers: Vec<String>,
    /// Requests per second of the built-in load generator.
    #[arg(long, default_value_t = 20.0, conflicts_with = "simulate")]
    pub rps: f64,
    /// Share of generated requests that carry a language tag (the rest are detected).
    #[arg(long, default_value_t = 0.5, conflicts_with = "simulate")]
    pub tagged_share: f64,
    /// Languages to detect untagged requests among (BCP 47 or ISO 639-3 tags; `any`: every
    /// language whatlang knows).
    #[arg(
        long,
        default_value = "en,he,ja",
        value_delimiter = ',',
        conflicts_with = "simulate"
    )]
    pub detect: Vec<String>,
    /// Serve only, no load generator.
    #[arg(long, conflicts_with = "simulate")]
    pub no_load: bool,
    /// Most tokens packed into one forward pass.
    #[arg(long, default_value_t = 4096, conflicts_with = "simulate")]
    pub max_batch_tokens: usize,
}

/// Flags of the simulated mode.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Simulation (with --simulate)")]
pub struct SimArgs {
    /// Model preset.
    #[arg(long, default_value = "qwen3-30b-a3b", requires = "simulate")]
    pub model: String,
    /// The language whose deep layers collapse.
    #[arg(long, default_value = "he", requires = "simulate")]
    pub collapse_lang: String,
    /// Seconds after start when the collapse begins.
    #[arg(long, default_value_t = 60.0, requires = "simulate")]
    pub collapse_at: f64,
    /// Seconds after start when it ends (0: never).
    #[arg(long, default_value_t = 240.0, requires = "simulate")]
    pub recover_at: f64,
    /// Tokens per simulated forward step.
    #[arg(long, default_value_t = 64, requires = "simulate")]
    pub tokens_per_step: usize,
    /// Forward steps per second.
    #[arg(long, default_value_t = 20.0, requires = "simulate")]
    pub steps_per_second: f64,
}

impl CommonArgs {
    /// The recorder both modes record into, with the window the flags ask for.
    pub fn recorder(&self, spec: &ModelSpec) -> Result<Arc<Recorder>, String> {
        Recorder::builder(spec.clone())
            .window(WindowConfig {
                bucket_ms: self.bucket_ms,
                buckets: self.buckets,
            })
            .build()
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// How both modes publish.
    pub fn publisher_config(&self) -> PublisherConfig {
        PublisherConfig {
            reference: self.reference.clone(),
            expert_selections: self.expert_selections,
            layer_detail: self.layer_detail(),
            interval: self.interval(),
            ..PublisherConfig::default()
        }
    }

    /// The layer detail `--layer-detail` asks for.
    pub fn layer_detail(&self) -> LayerDetail {
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

    /// The publication interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }
}

/// Runs the demo; the process exit code (0, or 2 with the error on stderr).
pub fn run(args: &DemoArgs) -> i32 {
    let result = if args.simulate {
        sim::run(&args.common, &args.sim)
    } else {
        real::run(&args.common, &args.real)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("moescope demo: {e}");
            2
        }
    }
}
