//! `moescope report`: the paper's figures from a snapshot as one self-contained HTML file.
//!
//! Exit codes: 0 written; 2 bad input (unreadable or invalid snapshot, unknown reference or
//! language, snapshots of different model shapes, bad options, the output cannot be written).

use std::path::{Path, PathBuf};

use moescope_core::Snapshot;
use moescope_report::{render_report, PairMetric, ReportOptions};
use moescope_stats::{AnalysisConfig, DiffConfig};

use crate::analyze::{CollapseArgs, EXIT_BAD_INPUT, EXIT_OK};

/// Metric of the language-pair heatmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PairMetricArg {
    /// Jensen–Shannon divergence, in bits.
    Jsd,
    /// Cosine similarity.
    Cosine,
}

/// `moescope report`: every figure of one snapshot (and optionally its comparison with a base)
/// in one HTML file with inline SVG, no script and nothing fetched.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Snapshot file (`moescope.snapshot/v1` JSON). With `--diff`, the candidate.
    pub snapshot: PathBuf,
    /// A base snapshot to compare with (e.g. the checkpoint before continual pre-training):
    /// adds base-against-candidate figures and the change in collapse score per language.
    #[arg(long, value_name = "BASE")]
    pub diff: Option<PathBuf>,
    /// Reference language (the paper's English).
    #[arg(long, value_name = "LANG", default_value = AnalysisConfig::DEFAULT_REFERENCE)]
    pub reference: String,
    /// Language of the expert-usage heatmap (default: the highest collapse score).
    #[arg(long, value_name = "TAG")]
    pub language: Option<String>,
    /// Metric of the language-pair heatmaps.
    #[arg(long, value_enum, default_value_t = PairMetricArg::Jsd)]
    pub pair_metric: PairMetricArg,
    /// LSI threshold τ.
    #[arg(long, value_name = "T", default_value_t = AnalysisConfig::DEFAULT_LSI_THRESHOLD)]
    pub lsi_threshold: f64,
    /// How much a persisting collapse score may grow before the comparison calls it worse, in bits.
    #[arg(long, value_name = "BITS", default_value_t = DiffConfig::DEFAULT.tolerance_bits)]
    pub tolerance_bits: f64,
    /// Page title (default: "moescope report: MODEL").
    #[arg(long)]
    pub title: Option<String>,
    /// Output HTML file (`-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Collapse settings.
    #[command(flatten)]
    pub collapse: CollapseArgs,
}

fn load(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Snapshot::from_json_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn fail(msg: &str) -> i32 {
    eprintln!("moescope report: error: {msg}");
    EXIT_BAD_INPUT
}

/// Runs `moescope report`; writes the HTML file, errors to stderr; returns 0 or 2.
pub fn run(args: &ReportArgs) -> i32 {
    let snapshot = match load(&args.snapshot) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let base = match args.diff.as_deref().map(load).transpose() {
        Ok(b) => b,
        Err(e) => return fail(&format!("--diff: {e}")),
    };
    let mut opts = ReportOptions::new(args.reference.clone())
        .with_pair_metric(match args.pair_metric {
            PairMetricArg::Jsd => PairMetric::Jsd,
            PairMetricArg::Cosine => PairMetric::Cosine,
        })
        .with_lsi_threshold(args.lsi_threshold)
        .with_theta_bits(args.collapse.theta_bits)
        .with_min_deep_tokens(args.collapse.min_deep_tokens)
        .with_diff(DiffConfig {
            tolerance_bits: args.tolerance_bits,
            ..DiffConfig::DEFAULT
        });
    for (lang, bits) in &args.collapse.collapse_baseline {
        opts = opts.with_collapse_baseline(lang.clone(), *bits);
    }
    if let Some(l) = &args.language {
        opts = opts.with_language(l.clone());
    }
    if let Some(t) = &args.title {
        opts = opts.with_title(t.clone());
    }
    let html = match render_report(&snapshot, base.as_ref(), &opts) {
        Ok(h) => h,
        Err(e) => {
            // Name the file the error is about.
            let path = match (e.role(), &args.diff) {
                (Some("base"), Some(base)) => format!("--diff {}: ", base.display()),
                (Some(_), _) => format!("{}: ", args.snapshot.display()),
                (None, _) => String::new(),
            };
            return fail(&format!("{path}{e}"));
        }
    };
    let written = if args.output.as_os_str() == "-" {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(html.as_bytes()).and_then(|()| out.flush())
    } else {
        std::fs::write(&args.output, html.as_bytes())
    };
    match written {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&format!("cannot write {}: {e}", args.output.display())),
    }
}
