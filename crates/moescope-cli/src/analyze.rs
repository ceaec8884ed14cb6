//! `moescope analyze` and `moescope diff`: the paper's analysis of snapshot files, offline.
//!
//! Exit codes (both commands):
//! - 0: success; for `diff`, the candidate does not regress;
//! - 1: `diff`: the candidate regresses (deep-layer collapse introduced, or worse by more than
//!   `--tolerance-bits`; with `--strict` also a collapse that persists); `analyze` only with
//!   `--fail-on-collapse`, when a language is flagged collapsed;
//! - 2: bad input: unreadable file, malformed JSON, wrong `format`, counts that do not fit the
//!   model, unknown reference language, snapshots of different model shapes, bad options.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use moescope_core::Snapshot;
use moescope_stats::{
    analyze, diff, Analysis, AnalysisConfig, AnalysisDiff, CollapseConfig, CollapseRow,
    CollapseStatus, DiffConfig, LayerRow, LsiRow, PairRow,
};

/// Success; for `diff`, no regression.
pub const EXIT_OK: i32 = 0;
/// `diff`: the candidate regresses (`analyze --fail-on-collapse`: a language is collapsed).
pub const EXIT_REGRESSION: i32 = 1;
/// Bad input or options.
pub const EXIT_BAD_INPUT: i32 = 2;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `moescope.analysis/v1` (or `moescope.diff/v1`) JSON.
    Json,
    /// Aligned text for people: collapse first, then per-layer rows with deep layers marked.
    Table,
    /// One row per language and layer.
    Csv,
}

/// Settings of the deep-layer collapse verdict.
#[derive(Debug, Clone, clap::Args)]
pub struct CollapseArgs {
    /// Collapse threshold θ on the score C, in bits.
    #[arg(long, value_name = "BITS", default_value_t = CollapseConfig::DEFAULT.theta_bits)]
    pub theta_bits: f64,
    /// Tokens every deep layer needs, for the language and the reference, before a verdict.
    #[arg(long, value_name = "N", default_value_t = CollapseConfig::DEFAULT.min_deep_tokens)]
    pub min_deep_tokens: f64,
    /// A language's healthy collapse score, judged against θ as C − baseline (repeatable:
    /// `--collapse-baseline he=0.25 --collapse-baseline ja=-0.4`).
    #[arg(long, value_name = "LANG=BITS", value_parser = parse_baseline)]
    pub collapse_baseline: Vec<(String, f64)>,
}

/// `LANG=BITS` of `--collapse-baseline`.
fn parse_baseline(s: &str) -> Result<(String, f64), String> {
    let (lang, bits) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not LANG=BITS"))?;
    let bits: f64 = bits
        .trim()
        .parse()
        .map_err(|_| format!("{bits:?} is not a number of bits"))?;
    if !bits.is_finite() {
        return Err(format!("{bits} is not a finite number of bits"));
    }
    Ok((lang.trim().to_owned(), bits))
}

impl CollapseArgs {
    fn baselines(&self) -> std::collections::BTreeMap<String, f64> {
        self.collapse_baseline.iter().cloned().collect()
    }

    fn config(&self) -> CollapseConfig {
        CollapseConfig {
            theta_bits: self.theta_bits,
            min_deep_tokens: self.min_deep_tokens,
            ..CollapseConfig::default()
        }
    }
}

/// `moescope analyze`: every metric of one snapshot against a reference language.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Snapshot file (`moescope.snapshot/v1` JSON).
    pub snapshot: PathBuf,
    /// Reference language (the paper's English), e.g. `en`.
    #[arg(long, value_name = "LANG")]
    pub reference: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// LSI threshold τ: > τ language-specific, < −τ reference-specific, else shared.
    #[arg(long, value_name = "T", default_value_t = AnalysisConfig::DEFAULT_LSI_THRESHOLD)]
    pub lsi_threshold: f64,
    /// Compare every pair of languages (e.g. for JSD heatmaps), not only each with the reference.
    #[arg(long)]
    pub all_pairs: bool,
    /// K of the top-K overlap (default: the model's top_k).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// α of the active-expert count: experts with share ≥ α/E.
    #[arg(long, value_name = "ALPHA", default_value_t = AnalysisConfig::DEFAULT_ACTIVE_ALPHA)]
    pub active_alpha: f64,
    /// Exit with 1 when any language is flagged collapsed.
    #[arg(long)]
    pub fail_on_collapse: bool,
    /// Collapse settings.
    #[command(flatten)]
    pub collapse: CollapseArgs,
}

/// `moescope diff`: base checkpoint against a candidate (CPT or SFT); exit 1 on regression.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// Base snapshot file.
    pub base: PathBuf,
    /// Candidate snapshot file.
    pub candidate: PathBuf,
    /// Reference language, e.g. `en`.
    #[arg(long, value_name = "LANG")]
    pub reference: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// LSI threshold τ.
    #[arg(long, value_name = "T", default_value_t = AnalysisConfig::DEFAULT_LSI_THRESHOLD)]
    pub lsi_threshold: f64,
    /// How much a persisting collapse score may grow before it counts as a regression, in bits.
    #[arg(long, value_name = "BITS", default_value_t = DiffConfig::DEFAULT.tolerance_bits)]
    pub tolerance_bits: f64,
    /// Also count a collapse that the candidate did not repair as a regression.
    #[arg(long)]
    pub strict: bool,
    /// Collapse settings.
    #[command(flatten)]
    pub collapse: CollapseArgs,
}

/// The most pair rows `--all-pairs` writes: n(n − 1)/2 pairs per layer (about 40 GB of JSON).
pub const MAX_ALL_PAIRS_ROWS: usize = 100_000_000;

/// The `moescope.analysis/v1` document of an analysis made without `all_pairs`, written field
/// by field; with `all_pairs`, the pairs between languages other than the reference follow the
/// reference pairs in `pairs`, each computed as it is written. Byte for byte what serializing
/// [`analyze`]'s result with `all_pairs` gives.
struct StreamedAnalysis<'a> {
    a: &'a Analysis,
    snapshot: &'a Snapshot,
    all_pairs: bool,
}

/// The `pairs` list, streamed.
struct StreamedPairs<'a>(&'a StreamedAnalysis<'a>);

impl serde::Serialize for StreamedPairs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let StreamedAnalysis {
            a,
            snapshot,
            all_pairs,
        } = *self.0;
        let k = a.settings.topk;
        let deep = moescope_stats::deep_layers(snapshot.model.moe_layers.len());
        let (deep_start, deep_end) = (deep.start, deep.end);
        let others: Vec<&String> = snapshot
            .languages
            .keys()
            .filter(|l| **l != a.reference)
            .collect();
        let others = &others;
        let extra = others.iter().enumerate().flat_map(move |(i, x)| {
            others[i + 1..].iter().flat_map(move |y| {
                let (lx, ly) = (&snapshot.languages[*x], &snapshot.languages[*y]);
                lx.layers
                    .iter()
                    .zip(&ly.layers)
                    .enumerate()
                    .map(move |(d, (p, q))| PairRow {
                        layer: snapshot
                            .model
                            .moe_layers
                            .get(d)
                            .copied()
                            .unwrap_or(d as u32),
                        depth: d,
                        deep: (deep_start..deep_end).contains(&d),
                        lang: (*x).clone(),
                        reference: (*y).clone(),
                        metrics: moescope_stats::pair_metrics(p, q, k),
                    })
            })
        });
        let extra = all_pairs.then_some(extra).into_iter().flatten();
        serializer.collect_seq(a.pairs.iter().cloned().chain(extra))
    }
}

impl serde::Serialize for StreamedAnalysis<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let a = self.a;
        let mut st = serializer.serialize_struct("Analysis", 19)?;
        st.serialize_field("format", &a.format)?;
        st.serialize_field("model", &a.model)?;
        st.serialize_field("reference", &a.reference)?;
        st.serialize_field("window", &a.window)?;
        st.serialize_field("languages", &a.languages)?;
        st.serialize_field("deep_layers", &a.deep_layers)?;
        st.serialize_field("middle_layers", &a.middle_layers)?;
        st.serialize_field("settings", &a.settings)?;
        st.serialize_field("layers", &a.layers)?;
        st.serialize_field("pairs", &StreamedPairs(self))?;
        st.serialize_field("lsi", &a.lsi)?;
        st.serialize_field("lsi_sweep", &a.lsi_sweep)?;
        st.serialize_field("lsi_layers", &a.lsi_layers)?;
        st.serialize_field("depth_means", &a.depth_means)?;
        st.serialize_field("collapse", &a.collapse)?;
        st.serialize_field("split_half", &a.split_half)?;
        st.serialize_field("split_half_collapse", &a.split_half_collapse)?;
        st.serialize_field("spread", &a.spread)?;
        st.serialize_field("tokenization", &a.tokenization)?;
        st.end()
    }
}

fn load(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Snapshot::from_json_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic or a different exit code.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn fail(cmd: &str, msg: &str) -> i32 {
    eprintln!("moescope {cmd}: error: {msg}");
    EXIT_BAD_INPUT
}

/// Runs `moescope analyze`; prints the analysis to stdout, errors to stderr; returns the exit
/// code (0, 1 with `--fail-on-collapse` and a collapsed language, 2 on bad input).
pub fn run_analyze(args: &AnalyzeArgs) -> i32 {
    let snap = match load(&args.snapshot) {
        Ok(s) => s,
        Err(e) => return fail("analyze", &e),
    };
    // Every pair of languages is computed while it is written (JSON only: the table and CSV
    // show each language against the reference), so memory stays bounded.
    let config = AnalysisConfig {
        lsi_threshold: args.lsi_threshold,
        active_alpha: args.active_alpha,
        top_k: args.top_k,
        all_pairs: false,
        collapse: args.collapse.config(),
        collapse_baselines: args.collapse.baselines(),
        ..AnalysisConfig::new(args.reference.clone())
    };
    if args.all_pairs {
        let n = snap.languages.len().saturating_sub(1);
        let rows = (n * n.saturating_sub(1) / 2).saturating_mul(snap.model.moe_layers.len());
        if rows > MAX_ALL_PAIRS_ROWS {
            return fail(
                "analyze",
                &format!(
                    "--all-pairs: {n} languages besides the reference give {rows} pair rows \
                     (n(n-1)/2 per layer), above the limit of {MAX_ALL_PAIRS_ROWS}; compare \
                     fewer languages (drop them from the snapshot) or leave out --all-pairs"
                ),
            );
        }
    }
    let analysis = match analyze(&snap, &config) {
        Ok(a) => a,
        Err(e) => return fail("analyze", &format!("{}: {e}", args.snapshot.display())),
    };
    let text = match args.format {
        OutputFormat::Json => {
            let doc = StreamedAnalysis {
                a: &analysis,
                snapshot: &snap,
                all_pairs: args.all_pairs,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
                .and_then(|()| out.flush());
            match written {
                Ok(()) => String::new(),
                // A closed pipe (`| head`) is not an error worth a different exit code.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => String::new(),
                Err(e) => return fail("analyze", &format!("cannot write the analysis: {e}")),
            }
        }
        OutputFormat::Table => analysis_table(&analysis),
        OutputFormat::Csv => analysis_csv(&analysis),
    };
    print_out(&text);
    if args.fail_on_collapse && analysis.collapse.iter().any(|c| c.collapsed) {
        EXIT_REGRESSION
    } else {
        EXIT_OK
    }
}

/// Runs `moescope diff`; prints the comparison to stdout, errors to stderr; returns 0 (no
/// regression), 1 (regression) or 2 (bad input).
pub fn run_diff(args: &DiffArgs) -> i32 {
    let config = AnalysisConfig {
        lsi_threshold: args.lsi_threshold,
        collapse: args.collapse.config(),
        collapse_baselines: args.collapse.baselines(),
        ..AnalysisConfig::new(args.reference.clone())
    };
    let mut analyses = Vec::new();
    for (role, path) in [("base", &args.base), ("candidate", &args.candidate)] {
        let snap = match load(path) {
            Ok(s) => s,
            Err(e) => return fail("diff", &format!("{role}: {e}")),
        };
        match analyze(&snap, &config) {
            Ok(a) => analyses.push(a),
            Err(e) => return fail("diff", &format!("{role}: {}: {e}", path.display())),
        }
    }
    if !args.tolerance_bits.is_finite() || args.tolerance_bits < 0.0 {
        return fail(
            "diff",
            &format!("--tolerance-bits {} is not ≥ 0", args.tolerance_bits),
        );
    }
    let dc = DiffConfig {
        tolerance_bits: args.tolerance_bits,
        strict: args.strict,
    };
    let d = match diff(&analyses[0], &analyses[1], &dc) {
        Ok(d) => d,
        Err(e) => return fail("diff", &e.to_string()),
    };
    let text = match args.format {
        OutputFormat::Json => match serde_json::to_string_pretty(&d) {
            Ok(s) => s + "\n",
            Err(e) => return fail("diff", &format!("cannot encode the diff: {e}")),
        },
        OutputFormat::Table => diff_table(&d),
        OutputFormat::Csv => diff_csv(&d),
    };
    print_out(&text);
    if d.regression {
        EXIT_REGRESSION
    } else {
        EXIT_OK
    }
}

fn num(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
}

fn signed(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:+.prec$}"))
}

fn count(x: Option<usize>) -> String {
    x.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn tokens(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e15 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

/// Renders rows as aligned columns: the first `left` columns left-aligned, the rest right-aligned.
fn render(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            if i < left {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Lookups into an analysis's rows by language (and depth), built once: the renderers stay
/// linear in the number of languages and layers.
struct Index<'a> {
    collapse: HashMap<&'a str, &'a CollapseRow>,
    layers: HashMap<&'a str, Vec<&'a LayerRow>>,
    /// Pairs against the reference, by (language, depth).
    pairs: HashMap<(&'a str, usize), &'a PairRow>,
    lsi: HashMap<&'a str, &'a LsiRow>,
    /// The sweep, by (language, threshold bits).
    sweep: HashMap<(&'a str, u64), &'a LsiRow>,
}

impl<'a> Index<'a> {
    fn new(a: &'a Analysis) -> Index<'a> {
        let mut layers: HashMap<&str, Vec<&LayerRow>> = HashMap::new();
        for r in &a.layers {
            layers.entry(r.lang.as_str()).or_default().push(r);
        }
        Index {
            collapse: a.collapse.iter().map(|c| (c.lang.as_str(), c)).collect(),
            layers,
            pairs: a
                .pairs
                .iter()
                .filter(|p| p.reference == a.reference)
                .map(|p| ((p.lang.as_str(), p.depth), p))
                .collect(),
            lsi: a.lsi.iter().map(|r| (r.lang.as_str(), r)).collect(),
            sweep: a
                .lsi_sweep
                .iter()
                .map(|r| ((r.lang.as_str(), r.threshold.to_bits()), r))
                .collect(),
        }
    }
}

/// Languages in display order: collapsed ones (highest score first), the other compared
/// languages, then the reference.
fn language_order(a: &Analysis) -> Vec<String> {
    let mut scored: Vec<(&str, bool, f64)> = a
        .collapse
        .iter()
        .map(|c| {
            (
                c.lang.as_str(),
                c.collapsed,
                c.score_bits.unwrap_or(f64::NEG_INFINITY),
            )
        })
        .collect();
    scored.sort_by(|x, y| y.1.cmp(&x.1).then(y.2.total_cmp(&x.2)).then(x.0.cmp(y.0)));
    let mut order: Vec<String> = scored.iter().map(|s| s.0.to_string()).collect();
    let scored: HashSet<&str> = scored.iter().map(|s| s.0).collect();
    for l in &a.languages {
        if !scored.contains(l.as_str()) && *l != a.reference {
            order.push(l.clone());
        }
    }
    order.push(a.reference.clone());
    order
}

fn analysis_table(a: &Analysis) -> String {
    let mut out = String::new();
    let m = &a.model;
    let _ = writeln!(
        out,
        "moescope analysis: model {} ({} routed experts, top-{}, {} MoE layers), reference {}",
        m.name,
        m.num_experts,
        m.top_k,
        m.layers.len(),
        a.reference
    );
    let span = |v: &[u32]| match (v.first(), v.last()) {
        (Some(f), Some(l)) => format!("{f}-{l}"),
        _ => "none".to_string(),
    };
    let _ = writeln!(
        out,
        "deep layers {} (marked *), middle layers {}",
        span(&a.deep_layers),
        span(&a.middle_layers)
    );

    let _ = writeln!(
        out,
        "\nDeep-layer collapse (theta {:.3} bits, at least {} tokens per deep layer)",
        a.settings.theta_bits,
        tokens(a.settings.min_deep_tokens)
    );
    let order = language_order(a);
    let index = Index::new(a);
    let rows: Vec<Vec<String>> = order
        .iter()
        .filter_map(|l| index.collapse.get(l.as_str()).copied())
        .map(|c| {
            vec![
                c.lang.clone(),
                c.reference.clone(),
                if c.collapsed { "COLLAPSED" } else { "ok" }.to_string(),
                num(c.score_bits, 3),
                num(c.drop_bits, 3),
                num(c.reference_drop_bits, 3),
                c.min_deep_tokens.map_or("-".into(), tokens),
                num(c.bucket_score_std_bits, 3),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "lang",
            "ref",
            "status",
            "score_bits",
            "drop_bits",
            "ref_drop_bits",
            "min_deep_tokens",
            "bucket_std",
        ],
        &rows,
        3,
    ));
    if !a.split_half_collapse.is_empty() {
        let parts: Vec<String> = a
            .split_half_collapse
            .iter()
            .map(|s| {
                format!(
                    "{} {}{}",
                    s.lang,
                    num(s.score_bits, 3),
                    if s.collapsed { " (COLLAPSED)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "split-half control scores (half A vs B, bits): {}",
            parts.join(", ")
        );
    }

    let _ = writeln!(
        out,
        "\nPer layer (gap = H_{r} - H_lang; cosine, JSD, top-K, rank correlations against {r})",
        r = a.reference
    );
    let mut rows = Vec::new();
    for lang in &order {
        for r in index.layers.get(lang.as_str()).into_iter().flatten() {
            let p = index
                .pairs
                .get(&(lang.as_str(), r.depth))
                .map(|p| p.metrics);
            rows.push(layer_cells(r, p));
        }
    }
    out.push_str(&render(
        &[
            "lang", "layer", "deep", "tokens", "H_bits", "H_norm", "gini", "active", "sel_H",
            "gap_bits", "cosine", "jsd_bits", "topk", "spearman", "kendall",
        ],
        &rows,
        1,
    ));

    if !a.lsi.is_empty() {
        let _ = writeln!(
            out,
            "\nLSI, averaged over layers (lang-specific / reference-specific / shared experts)"
        );
        let mut header = vec!["lang".to_string(), "ref".to_string(), "basis".to_string()];
        let mut taus: Vec<f64> = Vec::new();
        let mut seen = HashSet::new();
        for r in &a.lsi_sweep {
            if seen.insert(r.threshold.to_bits()) {
                taus.push(r.threshold);
            }
        }
        for t in &taus {
            let mark = if *t == a.settings.lsi_threshold {
                "*"
            } else {
                ""
            };
            header.push(format!("tau={t}{mark}"));
        }
        let rows: Vec<Vec<String>> = order
            .iter()
            .filter_map(|l| index.lsi.get(l.as_str()).copied())
            .map(|r| {
                let mut cells = vec![
                    r.lang.clone(),
                    r.reference.clone(),
                    r.basis.as_str().to_string(),
                ];
                for t in &taus {
                    let s = index.sweep.get(&(r.lang.as_str(), t.to_bits()));
                    cells.push(s.map_or("-".into(), |s| {
                        format!(
                            "{}/{}/{}",
                            count(s.lang_specific),
                            count(s.reference_specific),
                            count(s.shared)
                        )
                    }));
                }
                cells
            })
            .collect();
        let h: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&render(&h, &rows, 3));
        if !taus.contains(&a.settings.lsi_threshold) {
            for r in &a.lsi {
                let _ = writeln!(
                    out,
                    "{} at tau={}: {}/{}/{}",
                    r.lang,
                    r.threshold,
                    count(r.lang_specific),
                    count(r.reference_specific),
                    count(r.shared)
                );
            }
        }
    }

    let tok: Vec<Vec<String>> = a
        .tokenization
        .iter()
        .filter(|t| t.tokens_per_char.is_some() || t.tokens_per_word.is_some())
        .map(|t| {
            vec![
                t.lang.clone(),
                tokens(t.tokens),
                num(t.tokens_per_char, 3),
                num(t.tokens_per_word, 3),
            ]
        })
        .collect();
    if !tok.is_empty() {
        let _ = writeln!(out, "\nTokenization");
        out.push_str(&render(
            &["lang", "tokens", "tokens_per_char", "tokens_per_word"],
            &tok,
            1,
        ));
    }
    out
}

fn layer_cells(r: &LayerRow, p: Option<moescope_stats::PairMetrics>) -> Vec<String> {
    let m = &r.metrics;
    let p = p.unwrap_or_default();
    vec![
        r.lang.clone(),
        r.layer.to_string(),
        if r.deep { "*" } else { "" }.to_string(),
        tokens(r.tokens),
        num(m.usage_entropy_bits, 3),
        num(m.normalized_entropy, 3),
        num(m.gini, 3),
        count(m.active_experts),
        num(m.selection_entropy_bits, 3),
        signed(p.entropy_gap_bits, 3),
        num(p.cosine_similarity, 3),
        num(p.js_divergence_bits, 4),
        num(p.topk_overlap_ratio, 3),
        num(p.spearman_rho, 3),
        num(p.kendall_tau_b, 3),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(String::new, |v| v.to_string())
}

fn analysis_csv(a: &Analysis) -> String {
    let mut out = String::from(
        "lang,reference,layer,depth,deep,tokens,usage_entropy_bits,normalized_entropy,gini,\
         active_experts,selection_entropy_bits,entropy_gap_bits,cosine_similarity,js_divergence_bits,\
         topk_overlap_ratio,spearman_rho,kendall_tau_b\n",
    );
    let index = Index::new(a);
    for r in &a.layers {
        let p: Option<&PairRow> = index.pairs.get(&(r.lang.as_str(), r.depth)).copied();
        let pm = p.map(|p| p.metrics).unwrap_or_default();
        let m = &r.metrics;
        let cells = [
            csv_field(&r.lang),
            if p.is_some() {
                csv_field(&a.reference)
            } else {
                String::new()
            },
            r.layer.to_string(),
            r.depth.to_string(),
            r.deep.to_string(),
            r.tokens.to_string(),
            opt(m.usage_entropy_bits),
            opt(m.normalized_entropy),
            opt(m.gini),
            m.active_experts.map_or_else(String::new, |v| v.to_string()),
            opt(m.selection_entropy_bits),
            opt(pm.entropy_gap_bits),
            opt(pm.cosine_similarity),
            opt(pm.js_divergence_bits),
            opt(pm.topk_overlap_ratio),
            opt(pm.spearman_rho),
            opt(pm.kendall_tau_b),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn status_word(s: CollapseStatus) -> &'static str {
    match s {
        CollapseStatus::Absent => "absent",
        CollapseStatus::Repaired => "repaired",
        CollapseStatus::Persisting => "persisting",
        CollapseStatus::Worsened => "worsened",
        CollapseStatus::Introduced => "introduced",
    }
}

fn diff_table(d: &AnalysisDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "moescope diff: base {} -> candidate {}, reference {}",
        d.base_model, d.candidate_model, d.reference
    );
    if !d.only_in_base.is_empty() || !d.only_in_candidate.is_empty() {
        let _ = writeln!(
            out,
            "not compared: only in base [{}], only in candidate [{}]",
            d.only_in_base.join(", "),
            d.only_in_candidate.join(", ")
        );
    }
    let _ = writeln!(out, "\nDeep-layer collapse");
    let rows: Vec<Vec<String>> = d
        .collapse
        .iter()
        .map(|c| {
            vec![
                c.lang.clone(),
                c.reference.clone(),
                status_word(c.status).to_string(),
                if c.base_collapsed { "yes" } else { "no" }.to_string(),
                if c.candidate_collapsed { "yes" } else { "no" }.to_string(),
                num(c.score_bits.base, 3),
                num(c.score_bits.candidate, 3),
                signed(c.score_bits.delta, 3),
                if c.regression { "REGRESSION" } else { "" }.to_string(),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "lang",
            "ref",
            "status",
            "base",
            "candidate",
            "score_base",
            "score_cand",
            "delta",
            "",
        ],
        &rows,
        5,
    ));

    if !d.lsi.is_empty() {
        let _ = writeln!(
            out,
            "\nLSI classes (lang-specific / reference-specific / shared)"
        );
        let f = |c: &moescope_stats::LsiCounts| {
            format!(
                "{}/{}/{}",
                count(c.lang_specific),
                count(c.reference_specific),
                count(c.shared)
            )
        };
        let rows: Vec<Vec<String>> = d
            .lsi
            .iter()
            .map(|l| {
                vec![
                    l.lang.clone(),
                    format!("{}", l.threshold),
                    f(&l.base),
                    f(&l.candidate),
                ]
            })
            .collect();
        out.push_str(&render(&["lang", "tau", "base", "candidate"], &rows, 1));
    }

    let _ = writeln!(out, "\nPer layer (candidate - base; deep layers marked *)");
    let rows: Vec<Vec<String>> = d
        .layers
        .iter()
        .map(|r| {
            vec![
                r.lang.clone(),
                r.layer.to_string(),
                if r.deep { "*" } else { "" }.to_string(),
                num(r.usage_entropy_bits.base, 3),
                num(r.usage_entropy_bits.candidate, 3),
                signed(r.usage_entropy_bits.delta, 3),
                signed(r.gini.delta, 3),
                signed(r.cosine_similarity.delta, 3),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "lang", "layer", "deep", "H_base", "H_cand", "dH_bits", "d_gini", "d_cosine",
        ],
        &rows,
        1,
    ));

    let _ = writeln!(out);
    if d.regression {
        let _ = writeln!(out, "verdict: REGRESSION (exit 1)");
        for r in &d.reasons {
            let _ = writeln!(out, "  {r}");
        }
    } else {
        let repaired: Vec<&str> = d
            .collapse
            .iter()
            .filter(|c| c.status == CollapseStatus::Repaired)
            .map(|c| c.lang.as_str())
            .collect();
        let _ = writeln!(
            out,
            "verdict: no regression (exit 0){}",
            if repaired.is_empty() {
                String::new()
            } else {
                format!("; collapse repaired for {}", repaired.join(", "))
            }
        );
    }
    out
}

fn diff_csv(d: &AnalysisDiff) -> String {
    let mut out = String::from(
        "lang,layer,depth,deep,usage_entropy_bits_base,usage_entropy_bits_candidate,\
         usage_entropy_bits_delta,gini_base,gini_candidate,gini_delta,cosine_similarity_base,\
         cosine_similarity_candidate,cosine_similarity_delta\n",
    );
    for r in &d.layers {
        let cells = [
            csv_field(&r.lang),
            r.layer.to_string(),
            r.depth.to_string(),
            r.deep.to_string(),
            opt(r.usage_entropy_bits.base),
            opt(r.usage_entropy_bits.candidate),
            opt(r.usage_entropy_bits.delta),
            opt(r.gini.base),
            opt(r.gini.candidate),
            opt(r.gini.delta),
            opt(r.cosine_similarity.base),
            opt(r.cosine_similarity.candidate),
            opt(r.cosine_similarity.delta),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
