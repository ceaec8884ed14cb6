//! The paper's routing figures from any moescope snapshot, as one self-contained HTML file.
//!
//! [`render_report`] analyses a [`Snapshot`] with [`moescope_stats::analyze`] (and, given a base
//! snapshot, compares the two with [`moescope_stats::diff()`]) and draws what the analysis holds:
//! a summary with the deep-layer collapse verdict per language, usage entropy by layer, the
//! entropy gap to the reference, heatmaps of normalized entropy, of language-pair divergence and
//! of expert usage, the LSI by layer and its τ sweep, and base-versus-candidate figures. The
//! file is readable offline and attachable to a pull request: inline SVG (drawn with plotters)
//! and inline CSS, no script, no font, nothing fetched — its Content-Security-Policy says so
//! ([`CSP`]). Every figure is a `<figure id="fig-…" class="moescope-figure">` with a caption and
//! a table of the plotted values ([`FIGURE_IDS`], [`DIFF_FIGURE_IDS`]).
//!
//! [`render_live_page`] draws the same figures over a serving process's current window for its
//! HTTP root: the collapse flag per language at the top, a refresh every few seconds, links to
//! `/metrics` and `/v1/snapshot`.
//!
//! ```
//! use moescope_core::Snapshot;
//! use moescope_report::{render_report, ReportOptions, CSP, FIGURE_IDS};
//!
//! // Four experts, top-1, four MoE layers; Hebrew funnels into one expert in the deep layers.
//! let layer = |n: [u32; 4]| format!(
//!     r#"{{ "tokens": 400, "expert_tokens": {n:?}, "prob_sum": null, "prob_tokens": 0 }}"#);
//! let even = layer([100, 100, 100, 100]);
//! let one = layer([400, 0, 0, 0]);
//! let json = format!(r#"{{
//!   "format": "moescope.snapshot/v1",
//!   "model": {{ "name": "toy", "num_experts": 4, "top_k": 1, "layers": [0, 1, 2, 3] }},
//!   "languages": {{
//!     "en": {{ "tokens": 400, "layers": [{even}, {even}, {even}, {even}] }},
//!     "he": {{ "tokens": 400, "layers": [{even}, {even}, {one}, {one}] }}
//!   }}
//! }}"#);
//! let snapshot = Snapshot::from_json_str(&json)?;
//!
//! let html = render_report(&snapshot, None, &ReportOptions::new("en").with_min_deep_tokens(100.0))?;
//! assert!(html.contains(CSP));
//! assert_eq!(html.matches("<figure id=\"fig-").count(), FIGURE_IDS.len());
//! // The summary carries the stats crate's verdict: Hebrew is collapsed.
//! assert!(html.contains(r#"<tr data-lang="he" data-verdict="collapsed""#));
//! assert!(!html.contains("https://") && !html.contains("<script"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use moescope_core::Snapshot;
use moescope_stats::{
    analyze, diff, Analysis, AnalysisConfig, AnalysisError, CollapseConfig, DiffConfig, DiffError,
};

mod chart;
mod figures;
mod html;

pub use html::CSP;

/// The ids of the figures every report and live page holds, in page order. A figure that
/// cannot be drawn for a snapshot (no second language, no reference) holds a note instead of
/// a chart (`data-status="note"`), so the ids are always there.
pub const FIGURE_IDS: [&str; 11] = [
    "fig-collapse-scores",
    "fig-entropy-by-layer",
    "fig-entropy-gap",
    "fig-normalized-entropy",
    "fig-pair-deep",
    "fig-pair-middle",
    "fig-pair-mean",
    "fig-lsi-by-layer",
    "fig-lsi-sweep",
    "fig-expert-usage-language",
    "fig-expert-usage-reference",
];

/// The ids of the figures a report with a base snapshot adds (after [`FIGURE_IDS`]).
pub const DIFF_FIGURE_IDS: [&str; 2] = ["fig-diff-collapse", "fig-diff-entropy"];

/// The language-pair metric of the pair heatmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PairMetric {
    /// Jensen–Shannon divergence of the usage distributions, in bits (0 = identical, 1 = disjoint).
    #[default]
    Jsd,
    /// Cosine similarity of the usage vectors (1 = same direction).
    Cosine,
}

impl PairMetric {
    /// The metric's name in the page (`JSD`, `cosine`).
    pub fn as_str(self) -> &'static str {
        match self {
            PairMetric::Jsd => "jsd",
            PairMetric::Cosine => "cosine",
        }
    }
}

/// Settings of [`render_report`]. Build with [`ReportOptions::new`] or [`Default`] (reference
/// `en`) and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReportOptions {
    /// Reference language (the paper's English). It must be in the snapshot.
    pub reference: String,
    /// Language of the expert-usage heatmap; `None`: the language with the highest collapse
    /// score (the first other language when none is scored). It must be in the snapshot.
    pub language: Option<String>,
    /// Metric of the language-pair heatmaps.
    pub pair_metric: PairMetric,
    /// τ of the LSI classes.
    pub lsi_threshold: f64,
    /// Collapse verdict settings (θ, minimum deep-layer tokens).
    pub collapse: CollapseConfig,
    /// Healthy collapse scores per language, in bits: the verdict judges C − baseline
    /// ([`AnalysisConfig::collapse_baselines`]); none by default.
    pub collapse_baselines: BTreeMap<String, f64>,
    /// Regression settings of the comparison with a base snapshot.
    pub diff: DiffConfig,
    /// Page title; `None`: "moescope report: MODEL".
    pub title: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions::new(AnalysisConfig::DEFAULT_REFERENCE)
    }
}

impl ReportOptions {
    /// Defaults with the given reference language.
    pub fn new(reference: impl Into<String>) -> Self {
        ReportOptions {
            reference: reference.into(),
            language: None,
            pair_metric: PairMetric::Jsd,
            lsi_threshold: AnalysisConfig::DEFAULT_LSI_THRESHOLD,
            collapse: CollapseConfig::DEFAULT,
            collapse_baselines: BTreeMap::new(),
            diff: DiffConfig::DEFAULT,
            title: None,
        }
    }

    /// Sets [`language`](Self::language).
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets [`pair_metric`](Self::pair_metric).
    #[must_use]
    pub fn with_pair_metric(mut self, metric: PairMetric) -> Self {
        self.pair_metric = metric;
        self
    }

    /// Sets [`lsi_threshold`](Self::lsi_threshold).
    #[must_use]
    pub fn with_lsi_threshold(mut self, tau: f64) -> Self {
        self.lsi_threshold = tau;
        self
    }

    /// Sets the collapse settings.
    #[must_use]
    pub fn with_collapse(mut self, collapse: CollapseConfig) -> Self {
        self.collapse = collapse;
        self
    }

    /// Sets the healthy collapse score of `lang`, in bits (the verdict judges C − baseline).
    #[must_use]
    pub fn with_collapse_baseline(mut self, lang: impl Into<String>, bits: f64) -> Self {
        self.collapse_baselines.insert(lang.into(), bits);
        self
    }

    /// Sets the collapse threshold θ, in bits.
    #[must_use]
    pub fn with_theta_bits(mut self, theta: f64) -> Self {
        self.collapse.theta_bits = theta;
        self
    }

    /// Sets the tokens every deep layer needs before a collapse verdict.
    #[must_use]
    pub fn with_min_deep_tokens(mut self, tokens: f64) -> Self {
        self.collapse.min_deep_tokens = tokens;
        self
    }

    /// Sets the regression settings of the comparison.
    #[must_use]
    pub fn with_diff(mut self, diff: DiffConfig) -> Self {
        self.diff = diff;
        self
    }

    /// Sets the page title.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    fn analysis_config(&self, reference: &str) -> AnalysisConfig {
        AnalysisConfig {
            lsi_threshold: self.lsi_threshold,
            collapse: self.collapse,
            collapse_baselines: self.collapse_baselines.clone(),
            ..AnalysisConfig::new(reference)
        }
    }
}

/// Settings of [`render_live_page`]. Build with [`LivePageOptions::new`] or [`Default`]
/// (reference `en`, refresh every 5 s) and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LivePageOptions {
    /// Reference language. When the window has no traffic of it yet, the figures that need it
    /// say so and the others are drawn.
    pub reference: String,
    /// Language of the expert-usage heatmap; `None`, or a language absent from the window: the
    /// language with the highest collapse score.
    pub language: Option<String>,
    /// Metric of the language-pair heatmaps.
    pub pair_metric: PairMetric,
    /// τ of the LSI classes.
    pub lsi_threshold: f64,
    /// Collapse verdict settings (θ, minimum deep-layer tokens).
    pub collapse: CollapseConfig,
    /// Healthy collapse scores per language, in bits (as the publisher's), none by default.
    pub collapse_baselines: BTreeMap<String, f64>,
    /// Seconds between the browser's reloads (`<meta http-equiv="refresh">`); 0: no reload.
    pub refresh_seconds: u32,
    /// Link to the Prometheus endpoint.
    pub metrics_path: String,
    /// Link to the snapshot of the current window.
    pub snapshot_path: String,
    /// Page title; `None`: "moescope live: MODEL".
    pub title: Option<String>,
}

impl Default for LivePageOptions {
    fn default() -> Self {
        LivePageOptions::new(AnalysisConfig::DEFAULT_REFERENCE)
    }
}

impl LivePageOptions {
    /// The default seconds between reloads.
    pub const DEFAULT_REFRESH_SECONDS: u32 = 5;

    /// Defaults with the given reference language.
    pub fn new(reference: impl Into<String>) -> Self {
        LivePageOptions {
            reference: reference.into(),
            language: None,
            pair_metric: PairMetric::Jsd,
            lsi_threshold: AnalysisConfig::DEFAULT_LSI_THRESHOLD,
            collapse: CollapseConfig::DEFAULT,
            collapse_baselines: BTreeMap::new(),
            refresh_seconds: Self::DEFAULT_REFRESH_SECONDS,
            metrics_path: "/metrics".into(),
            snapshot_path: "/v1/snapshot".into(),
            title: None,
        }
    }

    /// Sets [`refresh_seconds`](Self::refresh_seconds).
    #[must_use]
    pub fn with_refresh_seconds(mut self, seconds: u32) -> Self {
        self.refresh_seconds = seconds;
        self
    }

    /// Sets [`language`](Self::language).
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets [`pair_metric`](Self::pair_metric).
    #[must_use]
    pub fn with_pair_metric(mut self, metric: PairMetric) -> Self {
        self.pair_metric = metric;
        self
    }

    /// Sets [`lsi_threshold`](Self::lsi_threshold).
    #[must_use]
    pub fn with_lsi_threshold(mut self, tau: f64) -> Self {
        self.lsi_threshold = tau;
        self
    }

    /// Sets the collapse settings.
    #[must_use]
    pub fn with_collapse(mut self, collapse: CollapseConfig) -> Self {
        self.collapse = collapse;
        self
    }

    /// Sets the healthy collapse score of `lang`, in bits (the verdict judges C − baseline).
    #[must_use]
    pub fn with_collapse_baseline(mut self, lang: impl Into<String>, bits: f64) -> Self {
        self.collapse_baselines.insert(lang.into(), bits);
        self
    }

    /// Sets the link targets of the Prometheus endpoint and of the snapshot.
    #[must_use]
    pub fn with_links(mut self, metrics: impl Into<String>, snapshot: impl Into<String>) -> Self {
        self.metrics_path = metrics.into();
        self.snapshot_path = snapshot.into();
        self
    }

    /// Sets the page title.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

/// Why a page could not be rendered. Messages name the offending value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The reference language is not in the snapshot (`role` "snapshot") or the base
    /// (`role` "base"); [`render_report`] only: the live page draws what it can without it.
    #[error("reference language {reference:?} is not in the {role} (languages: {available}); pick one with --reference")]
    UnknownReference {
        /// Which snapshot: "snapshot" or "base".
        role: &'static str,
        /// The requested reference.
        reference: String,
        /// The snapshot's languages, comma-separated.
        available: String,
    },
    /// The language asked for the expert-usage heatmap is not in the snapshot.
    #[error("language {language:?} is not in the snapshot (languages: {available})")]
    UnknownLanguage {
        /// The requested language.
        language: String,
        /// The snapshot's languages, comma-separated.
        available: String,
    },
    /// The snapshot (`role` "snapshot") or the base snapshot (`role` "base") cannot be
    /// analysed: invalid counts or an out-of-range setting.
    #[error("{source}")]
    Analysis {
        /// Which snapshot: "snapshot" or "base".
        role: &'static str,
        /// The analysis error, naming the field.
        #[source]
        source: AnalysisError,
    },
    /// The base and the snapshot cannot be compared (different model shapes).
    #[error("cannot compare with the base snapshot: {0}")]
    Diff(#[source] DiffError),
    /// Drawing a figure failed (an internal error of the plotting library).
    #[error("cannot draw {figure}: {message}")]
    Chart {
        /// The figure's id.
        figure: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl ReportError {
    /// Which input the error is about: `Some("snapshot")` or `Some("base")` for the errors of
    /// one snapshot, `None` for the others.
    pub fn role(&self) -> Option<&'static str> {
        match self {
            ReportError::UnknownReference { role, .. } | ReportError::Analysis { role, .. } => {
                Some(role)
            }
            ReportError::UnknownLanguage { .. } => Some("snapshot"),
            ReportError::Diff(_) | ReportError::Chart { .. } => None,
        }
    }
}

fn available(snapshot: &Snapshot) -> String {
    if snapshot.languages.is_empty() {
        "none".into()
    } else {
        snapshot
            .languages
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn analysis_error(role: &'static str, snapshot: &Snapshot, e: AnalysisError) -> ReportError {
    match e {
        AnalysisError::UnknownReference { reference, .. } => ReportError::UnknownReference {
            role,
            reference,
            available: available(snapshot),
        },
        source => ReportError::Analysis { role, source },
    }
}

/// Renders the report of `snapshot` as one self-contained HTML document. With `base`, the
/// report also compares `snapshot` (the candidate, e.g. a continual pre-training checkpoint)
/// with `base`: both entropy profiles overlaid per language and the change in collapse score.
///
/// Works on any valid snapshot: with one language only (the reference), the figures that need
/// a second language hold a note; languages with no tokens show gaps.
///
/// # Errors
/// [`ReportError::UnknownReference`] when the reference is not in the snapshot (or the base);
/// [`ReportError::UnknownLanguage`] when [`ReportOptions::language`] is not in the snapshot;
/// [`ReportError::Analysis`] for an invalid snapshot or setting; [`ReportError::Diff`] when
/// the base is of another model shape. Never panics.
pub fn render_report(
    snapshot: &Snapshot,
    base: Option<&Snapshot>,
    opts: &ReportOptions,
) -> Result<String, ReportError> {
    let config = opts.analysis_config(&opts.reference);
    let analysis =
        analyze(snapshot, &config).map_err(|e| analysis_error("snapshot", snapshot, e))?;
    let diff = match base {
        Some(b) => {
            let ba = analyze(b, &config).map_err(|e| analysis_error("base", b, e))?;
            Some(diff(&ba, &analysis, &opts.diff).map_err(ReportError::Diff)?)
        }
        None => None,
    };
    if let Some(l) = &opts.language {
        if !snapshot.languages.contains_key(l) {
            return Err(ReportError::UnknownLanguage {
                language: l.clone(),
                available: available(snapshot),
            });
        }
    }
    let ctx = figures::Ctx::new(
        snapshot,
        &analysis,
        true,
        opts.language.as_deref(),
        opts.pair_metric,
    );
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| format!("moescope report: {}", snapshot.model.name));

    let mut out = String::with_capacity(1 << 20);
    page_head(&mut out, &title, None);
    let _ = write!(out, "<header><h1>{}</h1>", html::escape(&title));
    figures::flags(&ctx, &mut out);
    out.push_str("</header>\n<main>\n");
    figures::summary(&ctx, &mut out);
    if let Some(d) = &diff {
        figures::diff_summary(d, &mut out);
    }
    out.push_str("<section id=\"figures\"><h2>Figures</h2>\n");
    for f in figures::all(&ctx)? {
        f.render(&mut out);
    }
    if let Some(d) = &diff {
        for f in figures::diff_figures(&ctx, d)? {
            f.render(&mut out);
        }
    }
    out.push_str("</section>\n");
    page_tail(&mut out);
    Ok(out)
}

/// Renders the live page of a serving process's current window: the collapse flag per
/// language at the top, then the figures of [`render_report`] without the comparison ones.
/// The page reloads itself every [`LivePageOptions::refresh_seconds`] and links to the
/// Prometheus endpoint and the window's snapshot.
///
/// Drawn for any window, even an empty one: while the reference language has no traffic the
/// figures that need it say so, and a language asked for that is absent falls back to the
/// default choice.
///
/// # Errors
/// [`ReportError::Analysis`] for a snapshot whose counts do not fit its model or an
/// out-of-range setting; [`ReportError::Chart`] if drawing fails. Never panics.
pub fn render_live_page(
    snapshot: &Snapshot,
    opts: &LivePageOptions,
) -> Result<String, ReportError> {
    let reference_present = snapshot.languages.contains_key(&opts.reference);
    // Without the reference, analyse against any language present for the per-layer figures;
    // the figures that compare with the reference are replaced by a note.
    let analysis_ref = if reference_present {
        Some(opts.reference.clone())
    } else {
        snapshot.languages.keys().next().cloned()
    };
    let config = |r: &str| AnalysisConfig {
        lsi_threshold: opts.lsi_threshold,
        collapse: opts.collapse,
        collapse_baselines: opts.collapse_baselines.clone(),
        ..AnalysisConfig::new(r)
    };
    let analysis = match &analysis_ref {
        Some(r) => Some(
            analyze(snapshot, &config(r)).map_err(|e| analysis_error("snapshot", snapshot, e))?,
        ),
        None => {
            // No language at all: still check that the snapshot is valid.
            snapshot.validate().map_err(|e| ReportError::Analysis {
                role: "snapshot",
                source: AnalysisError::InvalidSnapshot {
                    field: e.field().unwrap_or("snapshot").to_string(),
                    problem: e.to_string(),
                },
            })?;
            None
        }
    };
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| format!("moescope live: {}", snapshot.model.name));
    let mut out = String::with_capacity(1 << 20);
    page_head(&mut out, &title, Some(opts.refresh_seconds));
    let _ = write!(
        out,
        "<header><h1>{}</h1><nav class=\"links\"><a href=\"{}\">Prometheus metrics ({})</a>\
         <a href=\"{}\">snapshot of this window ({})</a></nav>",
        html::escape(&title),
        html::escape(&opts.metrics_path),
        html::escape(&opts.metrics_path),
        html::escape(&opts.snapshot_path),
        html::escape(&opts.snapshot_path)
    );
    let Some(analysis) = analysis else {
        out.push_str(
            "<div id=\"collapse-flags\" class=\"flags\"></div></header>\n<main>\
             <p class=\"note\" id=\"no-traffic\">No traffic in the current window yet: the \
             figures appear once requests have been routed.</p>\n",
        );
        page_tail(&mut out);
        return Ok(out);
    };
    let language = opts
        .language
        .as_deref()
        .filter(|l| snapshot.languages.contains_key(*l));
    let mut ctx = figures::Ctx::new(
        snapshot,
        &analysis,
        reference_present,
        language,
        opts.pair_metric,
    );
    ctx.requested_reference = opts.reference.clone();
    figures::flags(&ctx, &mut out);
    if let Some(rs) = (opts.refresh_seconds > 0).then_some(opts.refresh_seconds) {
        let _ = write!(
            out,
            "<p class=\"refresh\">This page reloads every {rs} s.</p>"
        );
    }
    out.push_str("</header>\n<main>\n");
    if !reference_present {
        let _ = write!(
            out,
            "<p class=\"note\" id=\"no-reference\">The reference language {} has no traffic in \
             this window yet: the figures that compare with it are left out until it has.</p>",
            html::escape(&opts.reference)
        );
    }
    figures::summary(&ctx, &mut out);
    out.push_str("<section id=\"figures\"><h2>Figures</h2>\n");
    for f in figures::all(&ctx)? {
        f.render(&mut out);
    }
    out.push_str("</section>\n");
    page_tail(&mut out);
    Ok(out)
}

fn page_head(out: &mut String, title: &str, refresh: Option<u32>) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"moescope-report {}\">\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(n) = refresh.filter(|n| *n > 0) {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{n}\">");
    }
    let _ = write!(
        out,
        "<title>{}</title>\n<style>{}</style>\n</head>\n<body>\n",
        html::escape(title),
        html::CSS
    );
}

fn page_tail(out: &mut String) {
    let _ = write!(
        out,
        "</main>\n<footer><p>Made by moescope-report {}. Definitions of every metric: \
         docs/METRICS.md of moescope; how to read the figures: docs/REPORT.md.</p></footer>\n\
         </body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// The languages of an analysis in page order: the reference first, then the others sorted.
pub(crate) fn language_order(analysis: &Analysis, reference_present: bool) -> Vec<String> {
    let mut order = Vec::new();
    if reference_present {
        order.push(analysis.reference.clone());
    }
    order.extend(
        analysis
            .languages
            .iter()
            .filter(|l| !reference_present || **l != analysis.reference)
            .cloned(),
    );
    order
}

/// The collapse status word of a comparison row.
pub(crate) fn status_word(s: moescope_stats::CollapseStatus) -> &'static str {
    use moescope_stats::CollapseStatus as S;
    match s {
        S::Absent => "absent",
        S::Repaired => "repaired",
        S::Persisting => "persisting",
        S::Worsened => "worsened",
        S::Introduced => "introduced",
    }
}
