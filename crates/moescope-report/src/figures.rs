//! The page's sections and figures, each built from the stats crate's analysis of the
//! snapshot (the only numbers computed here are the language-pair matrices, with the stats
//! crate's own functions, and layer averages of them).

use std::collections::HashMap;
use std::fmt::Write as _;

use moescope_core::Snapshot;
use moescope_stats::{cosine_similarity, js_divergence_bits, normalize, Analysis, AnalysisDiff};
use plotters::style::RGBColor;

use crate::chart::{
    bar_chart, heatmap, line_chart, small_multiples, Band, BarChart, Dash, HLine, Heatmap,
    LineChart, Look, Series,
};
use crate::html::{escape, num, tokens, Figure, FigureBody, ValueTable};
use crate::{language_order, status_word, PairMetric, ReportError};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 420;
const DEEP_COLOR: RGBColor = RGBColor(213, 94, 0);
const MIDDLE_COLOR: RGBColor = RGBColor(0, 114, 178);

/// What every figure reads.
pub(crate) struct Ctx<'a> {
    pub snapshot: &'a Snapshot,
    pub analysis: &'a Analysis,
    /// The analysis's reference is the requested one (false on a live page whose window has
    /// no traffic of the reference yet: reference figures are notes then).
    pub reference_present: bool,
    /// The reference asked for (for notes).
    pub requested_reference: String,
    /// Languages in page order.
    pub order: Vec<String>,
    pub looks: HashMap<String, Look>,
    /// Model layer number per depth index.
    pub x: Vec<f64>,
    /// The language of the expert-usage heatmap.
    pub language: Option<String>,
    pub pair_metric: PairMetric,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        snapshot: &'a Snapshot,
        analysis: &'a Analysis,
        reference_present: bool,
        language: Option<&str>,
        pair_metric: PairMetric,
    ) -> Ctx<'a> {
        let order = language_order(analysis, reference_present);
        let mut looks = HashMap::new();
        let mut i = 0;
        for l in &order {
            if reference_present && *l == analysis.reference {
                looks.insert(l.clone(), Look::reference());
            } else {
                looks.insert(l.clone(), Look::nth(i));
                i += 1;
            }
        }
        let x = (0..snapshot.model.moe_layers.len())
            .map(|d| f64::from(snapshot.model.moe_layers[d]))
            .collect();
        let language = language.map(str::to_string).or_else(|| {
            // The worst collapse score (scores against a stand-in reference do not count),
            // else the first other language, else the reference.
            let worst = analysis
                .collapse
                .iter()
                .filter(|_| reference_present)
                .filter_map(|c| c.score_bits.map(|s| (c, s)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.lang.cmp(&a.0.lang)))
                .map(|(c, _)| c.lang.clone());
            worst.or_else(|| {
                order
                    .iter()
                    .find(|l| !reference_present || **l != analysis.reference)
                    .or(order.first())
                    .cloned()
            })
        });
        Ctx {
            snapshot,
            analysis,
            reference_present,
            requested_reference: analysis.reference.clone(),
            order,
            looks,
            x,
            language,
            pair_metric,
        }
    }

    fn reference(&self) -> &str {
        &self.analysis.reference
    }

    fn others(&self) -> Vec<&String> {
        self.order
            .iter()
            .filter(|l| !self.reference_present || **l != self.analysis.reference)
            .collect()
    }

    fn layer_names(&self) -> Vec<String> {
        self.snapshot
            .model
            .moe_layers
            .iter()
            .map(u32::to_string)
            .collect()
    }

    fn look(&self, lang: &str) -> Look {
        self.looks.get(lang).copied().unwrap_or(Look::nth(0))
    }

    /// The deep and middle bands, in model layer numbers.
    fn bands(&self) -> Vec<Band> {
        let mut bands = Vec::new();
        let span = |v: &[u32]| v.first().zip(v.last()).map(|(a, b)| (*a, *b));
        if let Some((a, b)) = span(&self.analysis.middle_layers) {
            bands.push(Band {
                from: f64::from(a) - 0.5,
                to: f64::from(b) + 0.5,
                label: "middle layers".into(),
                color: MIDDLE_COLOR,
            });
        }
        if let Some((a, b)) = span(&self.analysis.deep_layers) {
            bands.push(Band {
                from: f64::from(a) - 0.5,
                to: f64::from(b) + 0.5,
                label: "deep layers".into(),
                color: DEEP_COLOR,
            });
        }
        bands
    }

    fn missing_reference_note(&self) -> Option<String> {
        (!self.reference_present).then(|| {
            format!(
                "Needs the reference language {}, which has no traffic in this window yet.",
                self.requested_reference
            )
        })
    }

    fn log2_e(&self) -> f64 {
        f64::from(self.snapshot.model.num_experts.max(1)).log2()
    }
}

fn span_text(v: &[u32]) -> String {
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if a == b => format!("{a}"),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "none".into(),
    }
}

/// The collapse flags: one badge per language, collapsed first.
pub(crate) fn flags(ctx: &Ctx<'_>, out: &mut String) {
    out.push_str(
        "<div id=\"collapse-flags\" class=\"flags\" aria-label=\"collapse verdict per language\">",
    );
    let mut rows: Vec<_> = ctx.analysis.collapse.iter().collect();
    rows.sort_by(|a, b| {
        b.collapsed
            .cmp(&a.collapsed)
            .then(
                b.score_bits
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&a.score_bits.unwrap_or(f64::NEG_INFINITY)),
            )
            .then(a.lang.cmp(&b.lang))
    });
    if ctx.reference_present {
        for c in rows {
            let (class, word) = verdict(c);
            let _ = write!(
                out,
                "<span class=\"flag {class}\" data-lang=\"{l}\" data-verdict=\"{class}\">{l}: {word}{score}</span>",
                l = escape(&c.lang),
                score = c
                    .score_bits
                    .map(|s| format!(" (C = {} bits)", crate::html::fixed(s, 2)))
                    .unwrap_or_default()
            );
        }
        let _ = write!(
            out,
            "<span class=\"flag reference\" data-lang=\"{l}\" data-verdict=\"reference\">{l}: reference</span>",
            l = escape(ctx.reference())
        );
    }
    out.push_str("</div>");
}

/// (CSS class / data value, word for people) of a collapse row.
fn verdict(c: &moescope_stats::CollapseRow) -> (&'static str, &'static str) {
    if c.collapsed {
        ("collapsed", "COLLAPSED")
    } else if !c.enough_tokens {
        ("undecided", "not enough tokens")
    } else if c.score_bits.is_none() {
        ("undecided", "undefined")
    } else {
        ("ok", "ok")
    }
}

/// The summary: model, window, settings, languages with tokens and verdicts.
pub(crate) fn summary(ctx: &Ctx<'_>, out: &mut String) {
    let a = ctx.analysis;
    let m = &ctx.snapshot.model;
    out.push_str("<section id=\"summary\"><h2>Summary</h2><dl class=\"meta\">");
    let mut item = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), v);
    };
    item(
        "Model",
        format!(
            "<span id=\"model-name\">{}</span>: {} routed experts (E), top-{} routing, {} MoE layers ({}){}",
            escape(&m.name),
            m.num_experts,
            m.top_k,
            m.moe_layers.len(),
            span_text(&m.moe_layers),
            if m.shared_experts > 0 {
                format!(", {} shared experts (not routed, not counted)", m.shared_experts)
            } else {
                String::new()
            }
        ),
    );
    item(
        "Window",
        match &ctx.snapshot.window {
            Some(w) => format!(
                "{} to {} ({:.0} s, {} bucket{})",
                crate::html::utc(w.start_unix_ms),
                crate::html::utc(w.end_unix_ms),
                (w.end_unix_ms.saturating_sub(w.start_unix_ms)) as f64 / 1000.0,
                ctx.snapshot.buckets.len(),
                if ctx.snapshot.buckets.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
            None => "not recorded in the snapshot".into(),
        },
    );
    item(
        "Reference",
        if ctx.reference_present {
            escape(ctx.reference())
        } else {
            format!(
                "{} (absent from this window)",
                escape(&ctx.requested_reference)
            )
        },
    );
    item(
        "Layer sets",
        format!(
            "deep layers D = {} (the last max(2, L/8 rounded) of the L MoE layers), middle layers M = {} (the middle half before D); model layer numbers",
            span_text(&a.deep_layers),
            span_text(&a.middle_layers)
        ),
    );
    item(
        "Settings",
        format!(
            "collapse threshold θ = {} bits, at least {} tokens per deep layer; LSI τ = {}",
            a.settings.theta_bits,
            tokens(a.settings.min_deep_tokens),
            a.settings.lsi_threshold
        ),
    );
    out.push_str("</dl>");

    let _ = write!(
        out,
        "<table id=\"summary-table\"><caption>Languages: deep-layer collapse against {} \
         (C = drop of the language − drop of the reference, in bits; collapsed when C &gt; θ with \
         enough tokens and above the spread across buckets)</caption><thead><tr>\
         <th class=\"l\" scope=\"col\">language</th><th scope=\"col\">tokens</th>\
         <th class=\"l\" scope=\"col\">verdict</th><th scope=\"col\">score C (bits)</th>\
         <th scope=\"col\">drop (bits)</th><th scope=\"col\">reference drop (bits)</th>\
         <th scope=\"col\">min deep-layer tokens</th><th scope=\"col\">C spread across buckets (bits)</th>\
         <th scope=\"col\">split-half control C (bits)</th><th class=\"l\" scope=\"col\">split-half verdict</th>",
        escape(&ctx.requested_reference)
    );
    // Healthy baselines (when configured): the verdict judges C − baseline.
    let has_baseline = ctx.reference_present && a.collapse.iter().any(|c| c.baseline_bits != 0.0);
    if has_baseline {
        out.push_str("<th scope=\"col\">healthy baseline (bits; judged: C − baseline)</th>");
    }
    out.push_str("</tr></thead><tbody>");
    let collapse: HashMap<&str, _> = a.collapse.iter().map(|c| (c.lang.as_str(), c)).collect();
    let split: HashMap<&str, _> = a
        .split_half_collapse
        .iter()
        .map(|s| (s.lang.as_str(), s))
        .collect();
    for l in &ctx.order {
        let toks = ctx.snapshot.languages.get(l).map_or(0.0, |c| c.tokens);
        let sh = split.get(l.as_str());
        let (sh_score, sh_word) = match sh {
            Some(s) => (
                s.score_bits,
                if s.collapsed {
                    "flagged (the control itself looks collapsed: too little data?)"
                } else {
                    "clear"
                },
            ),
            None => (None, "no halves recorded"),
        };
        let is_ref = ctx.reference_present && *l == a.reference;
        // Verdicts against a stand-in reference (live page, reference absent) are not shown.
        let c = collapse
            .get(l.as_str())
            .copied()
            .filter(|_| ctx.reference_present);
        let (class, word) = match c {
            _ if is_ref => ("reference", "reference"),
            Some(c) => verdict(c),
            None if ctx.reference_present => ("undecided", "not scored"),
            None => ("undecided", "no reference yet"),
        };
        let _ = write!(
            out,
            "<tr data-lang=\"{le}\" data-verdict=\"{class}\" data-score=\"{}\" data-split-half-score=\"{}\">\
             <th class=\"l\" scope=\"row\">{le}</th><td data-tokens=\"{}\">{}</td><td class=\"l verdict-{class}\">{word}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td>",
            crate::html::data_num(c.and_then(|c| c.score_bits)),
            crate::html::data_num(sh_score),
            crate::html::data_num(Some(toks)),
            tokens(toks),
            num(c.and_then(|c| c.score_bits), 3),
            num(c.and_then(|c| c.drop_bits), 3),
            num(c.and_then(|c| c.reference_drop_bits), 3),
            c.and_then(|c| c.min_deep_tokens).map_or("–".into(), tokens),
            num(c.and_then(|c| c.bucket_score_std_bits), 3),
            num(sh_score, 3),
            sh_word,
            le = escape(l),
        );
        if has_baseline {
            let _ = write!(out, "<td>{}</td>", num(c.map(|c| c.baseline_bits), 3));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>\n");
}

/// The comparison's summary: the change of each language's collapse.
pub(crate) fn diff_summary(d: &AnalysisDiff, out: &mut String) {
    let _ = write!(
        out,
        "<section id=\"diff-summary\"><h2>Base against candidate</h2><p>Base model {}, candidate \
         (this snapshot) {}, reference {}. <strong id=\"diff-verdict\" data-regression=\"{}\">{}</strong></p>",
        escape(&d.base_model),
        escape(&d.candidate_model),
        escape(&d.reference),
        d.regression,
        if d.regression {
            "Verdict: the candidate regresses.".to_string()
        } else {
            "Verdict: no regression.".to_string()
        }
    );
    if !d.reasons.is_empty() {
        out.push_str("<ul>");
        for r in &d.reasons {
            let _ = write!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul>");
    }
    if !d.only_in_base.is_empty() || !d.only_in_candidate.is_empty() {
        let _ = write!(
            out,
            "<p>Not compared: only in the base [{}], only in the candidate [{}].</p>",
            escape(&d.only_in_base.join(", ")),
            escape(&d.only_in_candidate.join(", "))
        );
    }
    out.push_str(
        "<table id=\"diff-table\"><caption>Deep-layer collapse, base → candidate</caption><thead><tr>\
         <th class=\"l\" scope=\"col\">language</th><th class=\"l\" scope=\"col\">change</th>\
         <th scope=\"col\">base C (bits)</th><th scope=\"col\">candidate C (bits)</th>\
         <th scope=\"col\">Δ C (bits)</th><th class=\"l\" scope=\"col\">regression</th></tr></thead><tbody>",
    );
    for c in &d.collapse {
        let s = status_word(c.status);
        let _ = write!(
            out,
            "<tr data-lang=\"{l}\" data-status=\"{s}\" data-base-score=\"{}\" data-candidate-score=\"{}\">\
             <th class=\"l\" scope=\"row\">{l}</th><td class=\"l status-{s}\">{s}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            crate::html::data_num(c.score_bits.base),
            crate::html::data_num(c.score_bits.candidate),
            num(c.score_bits.base, 3),
            num(c.score_bits.candidate, 3),
            c.score_bits.delta.map_or("–".into(), |v| format!("{v:+.3}")),
            if c.regression { "yes" } else { "no" },
            l = escape(&c.lang),
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn note(id: &'static str, caption: &str, text: String) -> Figure {
    Figure {
        id,
        caption: escape(caption),
        body: FigureBody::Note(text),
        attrs: Vec::new(),
    }
}

/// Every figure of a report or live page, in [`crate::FIGURE_IDS`] order.
pub(crate) fn all(ctx: &Ctx<'_>) -> Result<Vec<Figure>, ReportError> {
    let mut v = vec![
        collapse_scores(ctx)?,
        entropy_by_layer(ctx)?,
        entropy_gap(ctx)?,
        normalized_entropy(ctx)?,
    ];
    v.extend(pair_heatmaps(ctx)?);
    v.push(lsi_by_layer(ctx)?);
    v.push(lsi_sweep(ctx)?);
    v.extend(expert_usage(ctx)?);
    Ok(v)
}

fn collapse_scores(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-collapse-scores";
    let has_baseline = ctx.analysis.collapse.iter().any(|c| c.baseline_bits != 0.0);
    let caption = format!(
        "Deep-layer collapse score C per language (bars) against the threshold θ (dashed), with \
         the split-half control (the language against itself: should stay near 0). A bar above \
         θ is a collapse.{}",
        if has_baseline {
            " A black line across a language's bars is its own threshold, θ plus its healthy \
             baseline: with a baseline, a bar above that line is a collapse."
        } else {
            ""
        }
    );
    let caption = caption.as_str();
    if let Some(n) = ctx.missing_reference_note() {
        return Ok(note(ID, caption, n));
    }
    let a = ctx.analysis;
    if a.collapse.is_empty() {
        return Ok(note(
            ID,
            caption,
            format!(
                "Only the reference language {} is in the snapshot: collapse is scored against it, so there is nothing to score.",
                ctx.reference()
            ),
        ));
    }
    let split: HashMap<&str, Option<f64>> = a
        .split_half_collapse
        .iter()
        .map(|s| (s.lang.as_str(), s.score_bits))
        .collect();
    let cats: Vec<String> = a.collapse.iter().map(|c| c.lang.clone()).collect();
    let scores: Vec<Option<f64>> = a.collapse.iter().map(|c| c.score_bits).collect();
    let controls: Vec<Option<f64>> = cats
        .iter()
        .map(|l| split.get(l.as_str()).copied().flatten())
        .collect();
    let mut series = vec![(
        "collapse score C".to_string(),
        RGBColor(0, 114, 178),
        scores.clone(),
    )];
    let has_controls = controls.iter().any(Option::is_some);
    if has_controls {
        series.push((
            "split-half control C".into(),
            RGBColor(230, 159, 0),
            controls.clone(),
        ));
    }
    let chart = BarChart {
        title: format!("Deep-layer collapse score against {}", ctx.reference()),
        x_label: "language".into(),
        y_label: "collapse score C (bits)".into(),
        categories: cats.clone(),
        series,
        hlines: vec![HLine {
            y: a.settings.theta_bits,
            label: format!("θ = {} bits", a.settings.theta_bits),
        }],
        // With healthy baselines, a language is judged on C − baseline > θ: its own threshold
        // θ + baseline is drawn across its bars.
        marks: (
            "θ + baseline".into(),
            if has_baseline {
                a.collapse
                    .iter()
                    .map(|c| Some(a.settings.theta_bits + c.baseline_bits))
                    .collect()
            } else {
                Vec::new()
            },
        ),
        notes: a
            .collapse
            .iter()
            .map(|c| {
                if c.collapsed {
                    "COLLAPSED".into()
                } else {
                    String::new()
                }
            })
            .collect(),
    };
    let svg = bar_chart(&chart, WIDTH, HEIGHT, ID)?;
    let mut rows = vec![("score C".to_string(), scores)];
    if has_controls {
        rows.push(("split-half C".into(), controls));
    }
    Ok(Figure {
        id: ID,
        caption: escape(caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Collapse score C and split-half control, bits".into(),
                row_header: "series".into(),
                cols: cats,
                rows,
                decimals: 3,
            },
        },
        attrs: vec![("theta-bits", a.settings.theta_bits.to_string())],
    })
}

/// Per language, the values of `f` per depth (from the analysis's layer rows).
fn per_layer(
    ctx: &Ctx<'_>,
    langs: &[&String],
    f: impl Fn(&moescope_stats::LayerRow) -> Option<f64>,
) -> Vec<(String, Vec<Option<f64>>)> {
    let n = ctx.x.len();
    let mut by_lang: HashMap<&str, Vec<Option<f64>>> = HashMap::new();
    for r in &ctx.analysis.layers {
        let v = by_lang
            .entry(r.lang.as_str())
            .or_insert_with(|| vec![None; n]);
        if let Some(slot) = v.get_mut(r.depth) {
            *slot = f(r);
        }
    }
    langs
        .iter()
        .map(|l| {
            (
                (*l).clone(),
                by_lang.remove(l.as_str()).unwrap_or_else(|| vec![None; n]),
            )
        })
        .collect()
}

fn series_of(ctx: &Ctx<'_>, rows: &[(String, Vec<Option<f64>>)]) -> Vec<Series> {
    rows.iter()
        .map(|(l, v)| {
            let collapsed = ctx
                .analysis
                .collapse_for(l)
                .is_some_and(|c| c.collapsed && ctx.reference_present);
            let mut look = ctx.look(l);
            if collapsed {
                look.width = look.width.max(3);
            }
            Series {
                label: if collapsed {
                    format!("{l} (collapsed)")
                } else if ctx.reference_present && *l == ctx.analysis.reference {
                    format!("{l} (reference)")
                } else {
                    l.clone()
                },
                points: ctx.x.iter().copied().zip(v.iter().copied()).collect(),
                look,
            }
        })
        .collect()
}

fn entropy_by_layer(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-entropy-by-layer";
    let log2e = ctx.log2_e();
    let caption = format!(
        "Usage entropy H of each language's expert usage per MoE layer, in bits. The dashed line \
         is log2 E = {log2e:.2} bits (every expert used equally); shaded: the middle layers M and \
         the deep layers D the collapse score compares. A collapsing language drops in the deep \
         band while the reference stays level."
    );
    let langs: Vec<&String> = ctx.order.iter().collect();
    let rows = per_layer(ctx, &langs, |r| r.metrics.usage_entropy_bits);
    let chart = LineChart {
        title: "Usage entropy by layer".into(),
        x_label: "MoE layer (model layer number)".into(),
        y_label: "usage entropy H (bits)".into(),
        series: series_of(ctx, &rows),
        bands: ctx.bands(),
        hlines: vec![HLine {
            y: log2e,
            label: format!("log2 E = {log2e:.2} bits"),
        }],
        y_include: (0.0, log2e.max(1.0)),
        integer_x: true,
        y_decimals: 2,
    };
    let svg = line_chart(&chart, WIDTH, HEIGHT, ID)?;
    Ok(Figure {
        id: ID,
        caption: escape(&caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Usage entropy H, bits, per language (rows) and MoE layer (columns)"
                    .into(),
                row_header: "language".into(),
                cols: ctx.layer_names(),
                rows,
                decimals: 3,
            },
        },
        attrs: vec![
            ("log2-e", log2e.to_string()),
            ("deep-layers", span_text(&ctx.analysis.deep_layers)),
            ("middle-layers", span_text(&ctx.analysis.middle_layers)),
        ],
    })
}

fn entropy_gap(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-entropy-gap";
    let caption = "Entropy gap Δ = H_reference − H_language per MoE layer, in bits: how much more \
                   concentrated a language's routing is than the reference's. Collapse shows as a \
                   gap that widens in the deep band; the score C is the deep mean of Δ minus its \
                   middle mean.";
    if let Some(n) = ctx.missing_reference_note() {
        return Ok(note(ID, caption, n));
    }
    let others = ctx.others();
    if others.is_empty() {
        return Ok(note(
            ID,
            caption,
            "Needs a second language besides the reference.".into(),
        ));
    }
    let n = ctx.x.len();
    let mut by_lang: HashMap<&str, Vec<Option<f64>>> = HashMap::new();
    for p in &ctx.analysis.pairs {
        if p.reference != ctx.analysis.reference {
            continue;
        }
        let v = by_lang
            .entry(p.lang.as_str())
            .or_insert_with(|| vec![None; n]);
        if let Some(slot) = v.get_mut(p.depth) {
            *slot = p.metrics.entropy_gap_bits;
        }
    }
    let rows: Vec<(String, Vec<Option<f64>>)> = others
        .iter()
        .map(|l| {
            (
                (*l).clone(),
                by_lang.remove(l.as_str()).unwrap_or_else(|| vec![None; n]),
            )
        })
        .collect();
    let chart = LineChart {
        title: format!("Entropy gap to {} by layer", ctx.reference()),
        x_label: "MoE layer (model layer number)".into(),
        y_label: format!("H_{} − H_language (bits)", ctx.reference()),
        series: series_of(ctx, &rows),
        bands: ctx.bands(),
        hlines: vec![HLine {
            y: 0.0,
            label: "no gap".into(),
        }],
        y_include: (0.0, 0.5),
        integer_x: true,
        y_decimals: 2,
    };
    let svg = line_chart(&chart, WIDTH, HEIGHT, ID)?;
    Ok(Figure {
        id: ID,
        caption: escape(caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Entropy gap, bits, per language and MoE layer".into(),
                row_header: "language".into(),
                cols: ctx.layer_names(),
                rows,
                decimals: 3,
            },
        },
        attrs: Vec::new(),
    })
}

fn normalized_entropy(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-normalized-entropy";
    let caption = "Normalized entropy H / log2 E per language (rows) and MoE layer (columns), \
                   from 0 (one expert takes everything) to 1 (all experts equally). Collapse shows \
                   as a row that darkens at its right end. Grey: no tokens.";
    let langs: Vec<&String> = ctx.order.iter().collect();
    let rows = per_layer(ctx, &langs, |r| r.metrics.normalized_entropy);
    let map = Heatmap {
        title: "Normalized entropy, language × layer".into(),
        x_label: "MoE layer (model layer number)".into(),
        y_label: "language".into(),
        x_names: ctx.layer_names(),
        y_names: rows.iter().map(|r| r.0.clone()).collect(),
        values: rows.iter().map(|r| r.1.clone()).collect(),
        range: (0.0, 1.0),
        value_label: "H / log2 E".into(),
        row_px: (320 / rows.len().max(1) as u32).clamp(14, 40),
        y_every: 1,
    };
    let svg = heatmap(&map, WIDTH, ID)?;
    Ok(Figure {
        id: ID,
        caption: escape(caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Normalized entropy (0–1) per language and MoE layer".into(),
                row_header: "language".into(),
                cols: ctx.layer_names(),
                rows,
                decimals: 3,
            },
        },
        attrs: Vec::new(),
    })
}

/// The language × language matrix of the pair metric at depth `d`.
fn pair_matrix(ctx: &Ctx<'_>, d: usize) -> Vec<Vec<Option<f64>>> {
    let n = ctx.order.len();
    let mut m = vec![vec![None; n]; n];
    let layer = |l: &str| ctx.snapshot.languages.get(l).and_then(|c| c.layers.get(d));
    for (i, li) in ctx.order.iter().enumerate() {
        for (j, lj) in ctx.order.iter().enumerate().skip(i) {
            let (Some(a), Some(b)) = (layer(li), layer(lj)) else {
                continue;
            };
            let v = match ctx.pair_metric {
                PairMetric::Jsd => js_divergence_bits(&a.expert_tokens, &b.expert_tokens),
                PairMetric::Cosine => cosine_similarity(&a.expert_tokens, &b.expert_tokens),
            };
            m[i][j] = v;
            m[j][i] = v;
        }
    }
    m
}

fn pair_heatmaps(ctx: &Ctx<'_>) -> Result<Vec<Figure>, ReportError> {
    let metric = ctx.pair_metric;
    let (name, short, unit_label) = match metric {
        PairMetric::Jsd => ("Jensen–Shannon divergence", "JSD", "JSD (bits)"),
        PairMetric::Cosine => (
            "Cosine similarity",
            "Cosine similarity",
            "cosine similarity",
        ),
    };
    let reading = match metric {
        PairMetric::Jsd => "0: the two languages use the experts in the same proportions; 1 bit: disjoint experts. A collapsing language's row turns bright against every other language in the deep layers.",
        PairMetric::Cosine => "1: the same usage direction; 0: disjoint experts. A collapsing language's row darkens against every other language in the deep layers.",
    };
    let l = ctx.x.len();
    let ids: [&'static str; 3] = ["fig-pair-deep", "fig-pair-middle", "fig-pair-mean"];
    let n = ctx.order.len();
    if n < 2 || l == 0 {
        let why = if l == 0 {
            "The model has no MoE layer."
        } else {
            "Needs at least two languages."
        };
        return Ok(ids
            .iter()
            .map(|id| note(id, &format!("{name} between languages."), why.into()))
            .collect());
    }
    let deep = l - 1;
    let middle = {
        let m = moescope_stats::middle_layers(l);
        (!m.is_empty()).then(|| m.start + (m.end - m.start) / 2)
    };
    let deep_m = pair_matrix(ctx, deep);
    let middle_m = middle.map(|d| pair_matrix(ctx, d));
    // The layer average of each cell, over the layers where it is defined.
    let mut sum = vec![vec![(0.0f64, 0usize); n]; n];
    for d in 0..l {
        let m = if d == deep {
            deep_m.clone()
        } else if Some(d) == middle {
            middle_m.clone().unwrap_or_default()
        } else {
            pair_matrix(ctx, d)
        };
        for (i, row) in m.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if let Some(v) = v {
                    sum[i][j].0 += v;
                    sum[i][j].1 += 1;
                }
            }
        }
    }
    let mean_m: Vec<Vec<Option<f64>>> = sum
        .iter()
        .map(|r| {
            r.iter()
                .map(|(s, c)| (*c > 0).then(|| s / *c as f64))
                .collect()
        })
        .collect();
    let all_vals = deep_m
        .iter()
        .chain(middle_m.iter().flatten())
        .chain(mean_m.iter())
        .flatten()
        .flatten()
        .copied();
    let range = match metric {
        PairMetric::Jsd => (0.0, all_vals.fold(1e-3, f64::max)),
        PairMetric::Cosine => (all_vals.fold(1.0, f64::min).min(0.999), 1.0),
    };
    let label = |d: usize| ctx.snapshot.model.moe_layers[d];
    let mut figs = Vec::new();
    let make = |id: &'static str,
                title: String,
                what: String,
                m: Vec<Vec<Option<f64>>>|
     -> Result<Figure, ReportError> {
        let map = Heatmap {
            title,
            x_label: "language".into(),
            y_label: "language".into(),
            x_names: ctx.order.clone(),
            y_names: ctx.order.clone(),
            values: m.clone(),
            range,
            value_label: unit_label.into(),
            row_px: (360 / n as u32).clamp(14, 48),
            y_every: 1,
        };
        let svg = heatmap(&map, WIDTH.min(260 + 60 * n as u32).max(680), id)?;
        Ok(Figure {
            id,
            caption: escape(&format!(
                "{name} between every two languages {what}. {reading}"
            )),
            body: FigureBody::Chart {
                svg,
                table: ValueTable {
                    caption: format!("{unit_label} {what}"),
                    row_header: "language".into(),
                    cols: ctx.order.clone(),
                    rows: ctx.order.iter().cloned().zip(m).collect(),
                    decimals: 4,
                },
            },
            attrs: vec![("metric", metric.as_str().into())],
        })
    };
    figs.push(make(
        ids[0],
        format!("{short} at layer {} (deepest)", label(deep)),
        format!("at MoE layer {} (the deepest)", label(deep)),
        deep_m,
    )?);
    match (middle, middle_m) {
        (Some(d), Some(m)) => figs.push(make(
            ids[1],
            format!("{short} at layer {} (middle)", label(d)),
            format!(
                "at MoE layer {} (the middle of the middle layers)",
                label(d)
            ),
            m,
        )?),
        _ => figs.push(note(
            ids[1],
            &format!("{name} between languages at a middle layer."),
            "A model with one MoE layer has no middle layer.".into(),
        )),
    }
    figs.push(make(
        ids[2],
        format!("{short}, mean of {l} MoE layers"),
        format!("averaged over the {l} MoE layers"),
        mean_m,
    )?);
    Ok(figs)
}

fn lsi_by_layer(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-lsi-by-layer";
    let a = ctx.analysis;
    let tau = a.settings.lsi_threshold;
    let caption = format!(
        "Experts shared with the reference per MoE layer: those whose Language Specificity \
         Index against {r} lies within ±τ = {tau} (the two languages use them comparably). A \
         collapsing language shares few in the deep band: its routing piles onto a handful of \
         experts (language-specific, LSI > τ) and abandons the rest (reference-specific, LSI < \
         −τ). The table gives all three classes per language and layer.",
        r = ctx.reference(),
    );
    if let Some(n) = ctx.missing_reference_note() {
        return Ok(note(ID, &caption, n));
    }
    let others = ctx.others();
    if others.is_empty() {
        return Ok(note(
            ID,
            &caption,
            "Needs a second language besides the reference.".into(),
        ));
    }
    let n = ctx.x.len();
    // Per language: (shared, language-specific, reference-specific) per depth.
    type Classes = [Vec<Option<f64>>; 3];
    let mut by_lang: HashMap<&str, Classes> = HashMap::new();
    for r in &a.lsi_layers {
        let v = by_lang
            .entry(r.lang.as_str())
            .or_insert_with(|| [vec![None; n], vec![None; n], vec![None; n]]);
        if r.depth < n {
            v[0][r.depth] = r.shared.map(|c| c as f64);
            v[1][r.depth] = r.lang_specific.map(|c| c as f64);
            v[2][r.depth] = r.reference_specific.map(|c| c as f64);
        }
    }
    let mut shared = Vec::new();
    let mut table_rows = Vec::new();
    for l in &others {
        let [sh, ls, rs] = by_lang
            .remove(l.as_str())
            .unwrap_or_else(|| [vec![None; n], vec![None; n], vec![None; n]]);
        shared.push(((*l).clone(), sh.clone()));
        table_rows.push(((*l).clone(), sh));
        table_rows.push((format!("{l} language-specific"), ls));
        table_rows.push((format!("{l} reference-specific"), rs));
    }
    let e = f64::from(ctx.snapshot.model.num_experts);
    let chart = LineChart {
        title: format!(
            "Experts shared with {} (|LSI| ≤ {tau}) by layer",
            ctx.reference()
        ),
        x_label: "MoE layer (model layer number)".into(),
        y_label: "shared experts (count)".into(),
        series: series_of(ctx, &shared),
        bands: ctx.bands(),
        hlines: vec![HLine {
            y: e,
            label: format!("E = {e}"),
        }],
        y_include: (0.0, e.max(1.0)),
        integer_x: true,
        y_decimals: 0,
    };
    let svg = line_chart(&chart, WIDTH, HEIGHT, ID)?;
    Ok(Figure {
        id: ID,
        caption: escape(&caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: format!(
                    "LSI classes at τ = {tau} per language and MoE layer: shared (the row named \
                     by the language alone), language-specific, reference-specific (counts of experts)"
                ),
                row_header: "language, class".into(),
                cols: ctx.layer_names(),
                rows: table_rows,
                decimals: 0,
            },
        },
        attrs: vec![("tau", tau.to_string())],
    })
}

fn lsi_sweep(ctx: &Ctx<'_>) -> Result<Figure, ReportError> {
    const ID: &str = "fig-lsi-sweep";
    let a = ctx.analysis;
    let caption = format!(
        "Sensitivity of the LSI classes to τ: language-specific experts (layer-averaged LSI > τ) \
         against {} for each τ of the sweep. The counts fall as τ grows; the ordering of the \
         languages should not depend on the τ picked.",
        ctx.reference()
    );
    if let Some(n) = ctx.missing_reference_note() {
        return Ok(note(ID, &caption, n));
    }
    let others = ctx.others();
    if others.is_empty() || a.lsi_sweep.is_empty() {
        return Ok(note(
            ID,
            &caption,
            "Needs a second language besides the reference.".into(),
        ));
    }
    let mut taus: Vec<f64> = a.lsi_sweep.iter().map(|r| r.threshold).collect();
    taus.sort_by(f64::total_cmp);
    taus.dedup();
    let rows: Vec<(String, Vec<Option<f64>>)> = others
        .iter()
        .map(|l| {
            let v = taus
                .iter()
                .map(|t| {
                    a.lsi_sweep
                        .iter()
                        .find(|r| r.lang == **l && r.threshold == *t)
                        .and_then(|r| r.lang_specific)
                        .map(|c| c as f64)
                })
                .collect();
            ((*l).clone(), v)
        })
        .collect();
    let series = series_of(ctx, &[])
        .into_iter()
        .chain(rows.iter().map(|(l, v)| Series {
            label: l.clone(),
            points: taus.iter().copied().zip(v.iter().copied()).collect(),
            look: ctx.look(l),
        }))
        .collect();
    let chart = LineChart {
        title: "LSI sweep: language-specific experts against τ".into(),
        x_label: "LSI threshold τ (dimensionless)".into(),
        y_label: "language-specific experts (count)".into(),
        series,
        bands: Vec::new(),
        hlines: Vec::new(),
        y_include: (0.0, 1.0),
        integer_x: false,
        y_decimals: 0,
    };
    let svg = line_chart(&chart, WIDTH, HEIGHT, ID)?;
    Ok(Figure {
        id: ID,
        caption: escape(&caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Language-specific experts per language (rows) and τ (columns)".into(),
                row_header: "language".into(),
                cols: taus.iter().map(|t| t.to_string()).collect(),
                rows,
                decimals: 0,
            },
        },
        attrs: Vec::new(),
    })
}

/// The usage share of each expert (rows) per layer (columns) of one language.
fn usage_shares(ctx: &Ctx<'_>, lang: &str) -> Vec<Vec<Option<f64>>> {
    let e = ctx.snapshot.model.num_experts as usize;
    let l = ctx.x.len();
    let mut m = vec![vec![None; l]; e];
    if let Some(lc) = ctx.snapshot.languages.get(lang) {
        for (d, layer) in lc.layers.iter().enumerate().take(l) {
            if let Some(p) = normalize(&layer.expert_tokens) {
                for (x, share) in p.iter().enumerate().take(e) {
                    m[x][d] = Some(*share);
                }
            }
        }
    }
    m
}

fn expert_usage(ctx: &Ctx<'_>) -> Result<Vec<Figure>, ReportError> {
    let ids: [&'static str; 2] = ["fig-expert-usage-language", "fig-expert-usage-reference"];
    let e = ctx.snapshot.model.num_experts as usize;
    let k = ctx.snapshot.model.top_k;
    let reading = format!(
        "Each cell is the share of the layer's expert assignments that went to the expert (the \
         column sums to 1; with top-{k} routing no expert can take more than 1/{k}). Healthy \
         routing spreads colour over many rows; collapse shows as a few bright rows in the deep \
         layers and dark elsewhere. Grey: no tokens."
    );
    let lang = ctx.language.clone();
    let reference = ctx.reference_present.then(|| ctx.reference().to_string());
    let mats: Vec<Option<Vec<Vec<Option<f64>>>>> = vec![
        lang.as_deref().map(|l| usage_shares(ctx, l)),
        reference.as_deref().map(|l| usage_shares(ctx, l)),
    ];
    let max = mats
        .iter()
        .flatten()
        .flatten()
        .flatten()
        .flatten()
        .copied()
        .fold(1e-6, f64::max);
    let mut figs = Vec::new();
    let targets = [(lang, "language"), (reference, "reference")];
    for ((id, m), (who, role)) in ids.iter().zip(mats).zip(targets) {
        let (Some(m), Some(who)) = (m, who) else {
            let why = if role == "reference" {
                ctx.missing_reference_note()
                    .unwrap_or_else(|| "No reference language.".into())
            } else {
                "No language in the snapshot.".into()
            };
            figs.push(note(
                id,
                &format!("Expert usage share of the {role}. {reading}"),
                why,
            ));
            continue;
        };
        let what = if role == "reference" {
            format!("{who} (the reference)")
        } else {
            let score = ctx
                .analysis
                .collapse_for(&who)
                .and_then(|c| c.score_bits)
                .map(|s| format!(", collapse score C = {} bits", crate::html::fixed(s, 2)))
                .unwrap_or_default();
            format!("{who}{score}")
        };
        let row_px = (384 / e.max(1) as u32).clamp(3, 24);
        let map = Heatmap {
            title: format!("Expert usage share of {what}"),
            x_label: "MoE layer (model layer number)".into(),
            y_label: "expert index".into(),
            x_names: ctx.layer_names(),
            y_names: (0..e).map(|x| x.to_string()).collect(),
            values: m.clone(),
            range: (0.0, max),
            value_label: "usage share".into(),
            row_px,
            y_every: e.div_ceil(16).max(1),
        };
        let svg = heatmap(&map, WIDTH, id)?;
        figs.push(Figure {
            id,
            caption: escape(&format!(
                "Expert usage share of {what}, expert × layer. {reading}"
            )),
            body: FigureBody::Chart {
                svg,
                table: ValueTable {
                    caption: format!(
                        "Usage share per expert (rows) and MoE layer (columns) of {who}"
                    ),
                    row_header: "expert".into(),
                    cols: ctx.layer_names(),
                    rows: (0..e).map(|x| x.to_string()).zip(m).collect(),
                    decimals: 4,
                },
            },
            attrs: vec![("lang", who.clone())],
        });
    }
    Ok(figs)
}

/// The comparison figures, in [`crate::DIFF_FIGURE_IDS`] order.
pub(crate) fn diff_figures(ctx: &Ctx<'_>, d: &AnalysisDiff) -> Result<Vec<Figure>, ReportError> {
    Ok(vec![diff_collapse(ctx, d)?, diff_entropy(ctx, d)?])
}

const BASE_LOOK: Look = Look {
    color: RGBColor(86, 180, 233),
    dash: Dash::Dashed,
    width: 2,
};
const CANDIDATE_LOOK: Look = Look {
    color: RGBColor(213, 94, 0),
    dash: Dash::Solid,
    width: 2,
};

fn diff_collapse(ctx: &Ctx<'_>, d: &AnalysisDiff) -> Result<Figure, ReportError> {
    const ID: &str = "fig-diff-collapse";
    let theta = ctx.analysis.settings.theta_bits;
    let caption = format!(
        "Collapse score C per language in the base (light) and the candidate (dark), against θ = \
         {theta} bits (dashed). A repaired collapse is a light bar above θ next to a dark bar \
         below it; the change is written under each language."
    );
    if d.collapse.is_empty() {
        return Ok(note(
            ID,
            &caption,
            "No language besides the reference is in both snapshots.".into(),
        ));
    }
    let cats: Vec<String> = d.collapse.iter().map(|c| c.lang.clone()).collect();
    let base: Vec<Option<f64>> = d.collapse.iter().map(|c| c.score_bits.base).collect();
    let cand: Vec<Option<f64>> = d.collapse.iter().map(|c| c.score_bits.candidate).collect();
    let chart = BarChart {
        title: "Collapse score, base → candidate".into(),
        x_label: "language (change)".into(),
        y_label: "collapse score C (bits)".into(),
        categories: cats.clone(),
        series: vec![
            ("base".into(), BASE_LOOK.color, base.clone()),
            ("candidate".into(), CANDIDATE_LOOK.color, cand.clone()),
        ],
        hlines: vec![HLine {
            y: theta,
            label: format!("θ = {theta} bits"),
        }],
        marks: (String::new(), Vec::new()),
        notes: d
            .collapse
            .iter()
            .map(|c| status_word(c.status).to_string())
            .collect(),
    };
    let svg = bar_chart(&chart, WIDTH, HEIGHT, ID)?;
    let delta: Vec<Option<f64>> = d.collapse.iter().map(|c| c.score_bits.delta).collect();
    Ok(Figure {
        id: ID,
        caption: escape(&caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Collapse score C, bits: base, candidate, change".into(),
                row_header: "series".into(),
                cols: cats,
                rows: vec![
                    ("base".into(), base),
                    ("candidate".into(), cand),
                    ("delta".into(), delta),
                ],
                decimals: 3,
            },
        },
        attrs: vec![("theta-bits", theta.to_string())],
    })
}

fn diff_entropy(ctx: &Ctx<'_>, d: &AnalysisDiff) -> Result<Figure, ReportError> {
    const ID: &str = "fig-diff-entropy";
    let caption = "Usage entropy by layer, base (dashed, light) against candidate (solid, dark), \
                   one panel per language, the deep layers shaded. A repaired collapse is a dashed \
                   line that dips in the deep band under a solid line that stays level.";
    if d.languages.is_empty() {
        return Ok(note(
            ID,
            caption,
            "No language is in both snapshots.".into(),
        ));
    }
    let n = ctx.x.len();
    type BaseAndCandidate = (Vec<Option<f64>>, Vec<Option<f64>>);
    let mut by_lang: HashMap<&str, BaseAndCandidate> = HashMap::new();
    for r in &d.layers {
        let e = by_lang
            .entry(r.lang.as_str())
            .or_insert_with(|| (vec![None; n], vec![None; n]));
        if r.depth < n {
            e.0[r.depth] = r.usage_entropy_bits.base;
            e.1[r.depth] = r.usage_entropy_bits.candidate;
        }
    }
    let status: HashMap<&str, &moescope_stats::CollapseChange> =
        d.collapse.iter().map(|c| (c.lang.as_str(), c)).collect();
    // The reference first, then the others as in the comparison.
    let mut langs: Vec<&String> = d.languages.iter().filter(|l| **l == d.reference).collect();
    langs.extend(d.languages.iter().filter(|l| **l != d.reference));
    let log2e = ctx.log2_e();
    let deep_band: Vec<Band> = ctx
        .bands()
        .into_iter()
        .filter(|b| b.label.starts_with("deep"))
        .collect();
    let mut panels = Vec::new();
    let mut rows = Vec::new();
    for l in &langs {
        let (b, c) = by_lang
            .remove(l.as_str())
            .unwrap_or_else(|| (vec![None; n], vec![None; n]));
        let title = match status.get(l.as_str()) {
            Some(s) => format!(
                "{l}: {} (C {} → {})",
                status_word(s.status),
                num(s.score_bits.base, 2),
                num(s.score_bits.candidate, 2)
            ),
            None if **l == d.reference => format!("{l} (reference)"),
            None => (*l).clone(),
        };
        panels.push(LineChart {
            title,
            x_label: "MoE layer".into(),
            y_label: "H (bits)".into(),
            // The candidate first, so the dashed base stays visible where the two coincide.
            series: vec![
                Series {
                    label: "candidate".into(),
                    points: ctx.x.iter().copied().zip(c.iter().copied()).collect(),
                    look: CANDIDATE_LOOK,
                },
                Series {
                    label: "base".into(),
                    points: ctx.x.iter().copied().zip(b.iter().copied()).collect(),
                    look: BASE_LOOK,
                },
            ],
            bands: deep_band.clone(),
            hlines: Vec::new(),
            y_include: (0.0, log2e.max(1.0)),
            integer_x: true,
            y_decimals: 1,
        });
        rows.push((format!("{l} base"), b));
        rows.push((format!("{l} candidate"), c));
    }
    let cols = if panels.len() <= 2 { panels.len() } else { 3 };
    let svg = small_multiples(
        &panels,
        &[
            ("base".into(), BASE_LOOK),
            ("candidate".into(), CANDIDATE_LOOK),
        ],
        cols,
        WIDTH / cols.max(1) as u32,
        230,
        ID,
        "Usage entropy by layer, base against candidate",
    )?;
    Ok(Figure {
        id: ID,
        caption: escape(caption),
        body: FigureBody::Chart {
            svg,
            table: ValueTable {
                caption: "Usage entropy H, bits, base and candidate per language and MoE layer"
                    .into(),
                row_header: "language, snapshot".into(),
                cols: ctx.layer_names(),
                rows,
                decimals: 3,
            },
        },
        attrs: Vec::new(),
    })
}
