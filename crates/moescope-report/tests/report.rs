//! The report and the live page on simulator snapshots and edge cases: the figures are there,
//! the plotted values are the analysis's, the verdicts are the stats crate's, nothing is
//! fetched.

use std::collections::HashMap;

use moescope_core::{ModelSpec, Recorder, Snapshot};
use moescope_report::{
    render_live_page, render_report, LivePageOptions, PairMetric, ReportError, ReportOptions, CSP,
    DIFF_FIGURE_IDS, FIGURE_IDS,
};
use moescope_sim::{Collapse, LanguageProfile, Simulator};
use moescope_stats::{analyze, AnalysisConfig, CollapseStatus};

/// OLMoE-shaped (16 MoE layers, 64 experts, top-8): en, fr, he at 5.5 bits everywhere; with
/// `collapse`, he's last two MoE layers funnel into 8 experts (3 bits).
fn sim_snapshot(collapse: bool, seed: u64) -> Snapshot {
    let spec = ModelSpec::preset("olmoe-1b-7b").unwrap();
    let languages = vec![
        LanguageProfile::uniform_entropy("en", 0.5, 5.5),
        LanguageProfile::uniform_entropy("fr", 0.25, 5.5),
        LanguageProfile::uniform_entropy("he", 0.25, 5.5),
    ];
    let mut sim = Simulator::new(spec.clone(), languages, seed).unwrap();
    if collapse {
        sim.set_collapse(
            "he",
            Some(Collapse {
                deep_layers: 2,
                experts: 8,
            }),
        )
        .unwrap();
    }
    let recorder = Recorder::new(spec).unwrap();
    for _ in 0..20 {
        sim.drive(&recorder, 512).unwrap();
    }
    recorder.snapshot()
}

/// The `data-value` of every cell of a figure's table, by (row name, column name).
fn table(html: &str, figure: &str) -> HashMap<(String, String), Option<f64>> {
    let start = html
        .find(&format!("data-figure=\"{figure}\""))
        .unwrap_or_else(|| panic!("no table for {figure}"));
    let end = start + html[start..].find("</table>").unwrap();
    let t = &html[start..end];
    let head = &t[t.find("<thead>").unwrap()..t.find("</thead>").unwrap()];
    let text = |s: &str| s[s.find('>').unwrap() + 1..s.find("</").unwrap()].to_string();
    let cols: Vec<String> = head.split("<th ").skip(2).map(text).collect();
    let mut out = HashMap::new();
    for row in t[t.find("<tbody>").unwrap()..].split("<tr>").skip(1) {
        let name = text(&row[row.find("<th ").unwrap()..]);
        let cells: Vec<&str> = row.split("<td ").skip(1).collect();
        assert_eq!(cells.len(), cols.len(), "{figure} row {name}");
        for (col, cell) in cols.iter().zip(cells) {
            let i = cell.find("data-value=\"").unwrap() + 12;
            let v = &cell[i..i + cell[i..].find('"').unwrap()];
            out.insert(
                (name.clone(), col.clone()),
                (!v.is_empty()).then(|| v.parse::<f64>().unwrap()),
            );
        }
    }
    out
}

/// The opening tag of the figure with this id.
fn figure_tag<'a>(html: &'a str, id: &str) -> &'a str {
    let i = html
        .find(&format!("<figure id=\"{id}\""))
        .unwrap_or_else(|| panic!("no figure {id}"));
    &html[i..i + html[i..].find('>').unwrap()]
}

fn figure_body<'a>(html: &'a str, id: &str) -> &'a str {
    let i = html.find(&format!("<figure id=\"{id}\"")).unwrap();
    &html[i..i + html[i..].find("</figure>").unwrap()]
}

fn dump(name: &str, html: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), html).unwrap();
}

fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        )),
        "CSP tag missing"
    );
    for banned in [
        "http://",
        "https://",
        "<script",
        "<img",
        "<link",
        "@import",
        "url(",
        "@font-face",
    ] {
        assert!(!html.contains(banned), "the page contains {banned:?}");
    }
}

#[test]
fn collapsed_language_reads_as_collapsed_in_every_figure() {
    let snap = sim_snapshot(true, 7);
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    dump("collapsed.html", &html);
    assert_self_contained(&html);

    // Every figure, once, in order, each with a chart (three languages: nothing is a note).
    assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());
    let mut last = 0;
    for id in FIGURE_IDS {
        let i = html.find(&format!("<figure id=\"{id}\"")).unwrap();
        assert!(i > last, "{id} out of order");
        last = i;
        assert!(
            figure_tag(&html, id).contains("data-status=\"chart\""),
            "{id}"
        );
        let body = figure_body(&html, id);
        assert_eq!(body.matches("<svg ").count(), 1, "{id}");
        assert!(body.contains("<figcaption>"), "{id}");
    }
    for id in DIFF_FIGURE_IDS {
        assert!(!html.contains(&format!("id=\"{id}\"")));
    }

    // The summary's verdicts are the stats crate's.
    let a = analyze(&snap, &AnalysisConfig::new("en")).unwrap();
    assert!(a.collapse_for("he").unwrap().collapsed);
    for c in &a.collapse {
        let want = if c.collapsed { "collapsed" } else { "ok" };
        assert!(
            html.contains(&format!(
                "<tr data-lang=\"{}\" data-verdict=\"{want}\" data-score=\"{}\"",
                c.lang,
                c.score_bits.unwrap()
            )),
            "{}",
            c.lang
        );
    }
    assert!(html.contains("<span class=\"flag collapsed\" data-lang=\"he\""));
    assert!(html.contains("<span class=\"flag ok\" data-lang=\"fr\""));

    // Entropy by layer: he falls to log2 8 = 3 bits in the deep band, en stays at 5.5; the
    // plotted values are the analysis's.
    let h = table(&html, "fig-entropy-by-layer");
    for d in 0..16usize {
        for lang in ["en", "fr", "he"] {
            let want = a.layer_row(lang, d).unwrap().metrics.usage_entropy_bits;
            assert_eq!(h[&(lang.to_string(), d.to_string())], want, "{lang} {d}");
        }
    }
    for d in [14usize, 15] {
        let he = h[&("he".to_string(), d.to_string())].unwrap();
        let en = h[&("en".to_string(), d.to_string())].unwrap();
        assert!(he < en - 2.0, "layer {d}: he {he} en {en}");
        assert!((he - 3.0).abs() < 0.05, "{he}");
    }
    // The drawn lines say the same: he's polyline (the second palette colour, thicker since
    // collapsed) runs with en's (black, thick) until the deep layers, then far below it
    // (SVG y grows downwards).
    let body = figure_body(&html, "fig-entropy-by-layer");
    let line = |stroke: &str| -> Vec<(f64, f64)> {
        let key = format!("stroke=\"{stroke}\" stroke-width=\"3\" points=\"");
        let i = body
            .find(&key)
            .unwrap_or_else(|| panic!("no line {stroke}"))
            + key.len();
        body[i..i + body[i..].find('"').unwrap()]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    };
    let (en, he) = (line("#000000"), line("#56B4E9"));
    assert_eq!((en.len(), he.len()), (16, 16));
    for d in 0..14 {
        assert!(
            (en[d].1 - he[d].1).abs() <= 3.0,
            "layer {d}: {:?} {:?}",
            en[d],
            he[d]
        );
    }
    for d in 14..16 {
        assert!(
            he[d].1 > en[d].1 + 60.0,
            "layer {d}: {:?} {:?}",
            en[d],
            he[d]
        );
    }
    let tag = figure_tag(&html, "fig-entropy-by-layer");
    assert!(tag.contains("data-log2-e=\"6\""), "{tag}");
    assert!(tag.contains("data-deep-layers=\"14–15\""), "{tag}");
    assert!(tag.contains("data-middle-layers=\"4–11\""), "{tag}");

    // The gap to the reference widens in the deep band for he only.
    let gap = table(&html, "fig-entropy-gap");
    assert!(gap[&("he".into(), "15".into())].unwrap() > 2.0);
    assert!(gap[&("fr".into(), "15".into())].unwrap().abs() < 0.2);
    assert!(
        !gap.keys().any(|(r, _)| r == "en"),
        "no gap of the reference to itself"
    );

    // Collapse scores: the bars' values are the analysis's scores.
    let cs = table(&html, "fig-collapse-scores");
    assert_eq!(
        cs[&("score C".into(), "he".into())],
        a.collapse_for("he").unwrap().score_bits
    );

    // JSD at the deepest layer: he against en is far larger than fr against en; symmetric,
    // zero on the diagonal, equal to the analysis's pair rows.
    let jsd = table(&html, "fig-pair-deep");
    let cell = |r: &str, c: &str| jsd[&(r.to_string(), c.to_string())].unwrap();
    assert_eq!(cell("he", "en"), cell("en", "he"));
    assert_eq!(cell("en", "en"), 0.0);
    assert!(cell("he", "en") > 3.0 * cell("fr", "en"));
    let pair = a
        .pair_row("he", "en", 15)
        .unwrap()
        .metrics
        .js_divergence_bits
        .unwrap();
    assert!((cell("he", "en") - pair).abs() < 1e-12);
    // At the middle layer (depth 8: layer 8), he is like fr.
    let mid = table(&html, "fig-pair-middle");
    let m = |r: &str, c: &str| mid[&(r.to_string(), c.to_string())].unwrap();
    assert!(cell("he", "en") > 3.0 * m("he", "en"));
    assert!(m("he", "en") < 2.5 * m("fr", "en"));
    assert!(figure_body(&html, "fig-pair-middle").contains("at MoE layer 8"));
    // The layer mean is the mean of the per-layer values.
    let mean = table(&html, "fig-pair-mean")[&("he".into(), "en".into())].unwrap();
    let want: f64 = (0..16)
        .map(|d| {
            a.pair_row("he", "en", d)
                .unwrap()
                .metrics
                .js_divergence_bits
                .unwrap()
        })
        .sum::<f64>()
        / 16.0;
    assert!((mean - want).abs() < 1e-12);

    // Expert usage: by default the worst collapse score (he); in its deep layers 8 experts
    // take 1/8 each, every other expert none.
    assert!(figure_tag(&html, "fig-expert-usage-language").contains("data-lang=\"he\""));
    assert!(figure_tag(&html, "fig-expert-usage-reference").contains("data-lang=\"en\""));
    let usage = table(&html, "fig-expert-usage-language");
    let deep: Vec<f64> = (0..64)
        .map(|e| usage[&(e.to_string(), "15".to_string())].unwrap())
        .collect();
    assert_eq!(deep.iter().filter(|s| **s > 0.0).count(), 8);
    assert!(deep.iter().all(|s| *s == 0.0 || (s - 0.125).abs() < 0.02));
    assert!((deep.iter().sum::<f64>() - 1.0).abs() < 1e-9);

    // LSI by layer: the classes are the analysis's and partition the experts; he's shared
    // experts plunge in the deep band, fr's do not.
    let lsi = table(&html, "fig-lsi-by-layer");
    for r in &a.lsi_layers {
        let at = |row: String| lsi[&(row, r.layer.to_string())];
        assert_eq!(at(r.lang.clone()), r.shared.map(|c| c as f64));
        assert_eq!(
            at(format!("{} language-specific", r.lang)),
            r.lang_specific.map(|c| c as f64)
        );
        let total = at(r.lang.clone()).unwrap()
            + at(format!("{} language-specific", r.lang)).unwrap()
            + at(format!("{} reference-specific", r.lang)).unwrap();
        assert_eq!(total, 64.0);
    }
    let shared = |l: &str, layer: u32| lsi[&(l.to_string(), layer.to_string())].unwrap();
    assert!(
        shared("he", 15) < 0.25 * shared("he", 8),
        "{}",
        shared("he", 15)
    );
    assert!(shared("fr", 15) > 0.6 * shared("fr", 8));

    // LSI sweep: counts fall (weakly) as τ grows.
    let sweep = table(&html, "fig-lsi-sweep");
    for lang in ["fr", "he"] {
        let v: Vec<f64> = ["0.1", "0.2", "0.3", "0.4", "0.5"]
            .iter()
            .map(|t| sweep[&(lang.to_string(), t.to_string())].unwrap())
            .collect();
        assert!(v.windows(2).all(|w| w[0] >= w[1]), "{lang}: {v:?}");
    }
}

#[test]
fn healthy_snapshot_flags_nothing() {
    let snap = sim_snapshot(false, 7);
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    assert!(!html.contains("data-verdict=\"collapsed\""));
    assert!(!html.contains("COLLAPSED"));
    let h = table(&html, "fig-entropy-by-layer");
    let he = h[&("he".into(), "15".into())].unwrap();
    assert!((he - 5.5).abs() < 0.1, "{he}");
}

#[test]
fn diff_shows_a_repaired_collapse_as_repaired() {
    let base = sim_snapshot(true, 7);
    let candidate = sim_snapshot(false, 8);
    let html = render_report(&candidate, Some(&base), &ReportOptions::new("en")).unwrap();
    dump("diff-repaired.html", &html);
    assert_self_contained(&html);
    assert_eq!(
        html.matches("<figure ").count(),
        FIGURE_IDS.len() + DIFF_FIGURE_IDS.len()
    );
    assert!(html.contains("<tr data-lang=\"he\" data-status=\"repaired\""));
    assert!(html.contains("<tr data-lang=\"fr\" data-status=\"absent\""));
    assert!(html.contains("data-regression=\"false\""));

    // The bars: base above θ, candidate below it.
    let c = table(&html, "fig-diff-collapse");
    let theta = moescope_stats::CollapseConfig::DEFAULT.theta_bits;
    assert!(c[&("base".into(), "he".into())].unwrap() > theta);
    assert!(c[&("candidate".into(), "he".into())].unwrap() < theta);
    let body = figure_body(&html, "fig-diff-collapse");
    assert!(
        body.contains("he (repaired)"),
        "the status is written under the bars"
    );

    // The overlay: he's base dips in the deep band, its candidate does not.
    let e = table(&html, "fig-diff-entropy");
    let v = |r: &str| e[&(r.to_string(), "15".to_string())].unwrap();
    assert!(v("he base") < 3.1);
    assert!(v("he candidate") > 5.3);
    assert!(figure_body(&html, "fig-diff-entropy").contains("he: repaired"));

    // The other way round the collapse is introduced, and the candidate regresses.
    let html = render_report(&base, Some(&candidate), &ReportOptions::new("en")).unwrap();
    assert!(html.contains("<tr data-lang=\"he\" data-status=\"introduced\""));
    assert!(html.contains("data-regression=\"true\""));
    let d = moescope_stats::diff(
        &analyze(&candidate, &AnalysisConfig::new("en")).unwrap(),
        &analyze(&base, &AnalysisConfig::new("en")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        d.collapse.iter().find(|c| c.lang == "he").unwrap().status,
        CollapseStatus::Introduced
    );
}

#[test]
fn live_page_refreshes_links_and_flags() {
    let snap = sim_snapshot(true, 3);
    let html = render_live_page(&snap, &LivePageOptions::default()).unwrap();
    dump("live.html", &html);
    assert_self_contained(&html);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("href=\"/metrics\""));
    assert!(html.contains("href=\"/v1/snapshot\""));
    // The flags come before the first figure, the collapsed language first.
    let flags = html.find("id=\"collapse-flags\"").unwrap();
    assert!(flags < html.find("<figure").unwrap());
    let he = html
        .find("class=\"flag collapsed\" data-lang=\"he\"")
        .unwrap();
    let fr = html.find("class=\"flag ok\" data-lang=\"fr\"").unwrap();
    assert!(flags < he && he < fr);
    assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());

    let html =
        render_live_page(&snap, &LivePageOptions::default().with_refresh_seconds(0)).unwrap();
    assert!(!html.contains("http-equiv=\"refresh\""));
    let html =
        render_live_page(&snap, &LivePageOptions::default().with_refresh_seconds(30)).unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
}

#[test]
fn live_page_without_the_reference_draws_what_it_can() {
    let mut snap = sim_snapshot(true, 3);
    snap.languages.remove("en");
    snap.buckets.iter_mut().for_each(|b| {
        b.languages.remove("en");
    });
    let html = render_live_page(&snap, &LivePageOptions::default()).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("id=\"no-reference\""));
    assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());
    // Entropy by layer does not need the reference; the gap does.
    assert!(figure_tag(&html, "fig-entropy-by-layer").contains("data-status=\"chart\""));
    for id in [
        "fig-entropy-gap",
        "fig-collapse-scores",
        "fig-lsi-by-layer",
        "fig-expert-usage-reference",
    ] {
        assert!(
            figure_tag(&html, id).contains("data-status=\"note\""),
            "{id}"
        );
    }
    // No verdict against a stand-in reference is shown.
    assert!(!html.contains("data-verdict=\"collapsed\""));
    let h = table(&html, "fig-entropy-by-layer");
    assert!(h.contains_key(&("he".to_string(), "15".to_string())));

    // The report refuses instead: the reference is a choice the user makes.
    let err = render_report(&snap, None, &ReportOptions::new("en")).unwrap_err();
    assert!(matches!(err, ReportError::UnknownReference { .. }));
    let msg = err.to_string();
    assert!(msg.contains("\"en\"") && msg.contains("fr, he"), "{msg}");
    assert_eq!(err.role(), Some("snapshot"));
    // A base without the reference is named as the base.
    let full = sim_snapshot(false, 3);
    let err = render_report(&full, Some(&snap), &ReportOptions::new("en")).unwrap_err();
    assert_eq!(err.role(), Some("base"));
    assert!(err.to_string().contains("not in the base"), "{err}");
}

#[test]
fn empty_window_live_page() {
    let snap = Snapshot::new(ModelSpec::preset("olmoe-1b-7b").unwrap());
    let html = render_live_page(&snap, &LivePageOptions::default()).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("id=\"no-traffic\""));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
}

fn toy(experts: u32, layers: usize, langs: &[(&str, Vec<Vec<f64>>)]) -> Snapshot {
    let layer_list: Vec<String> = (0..layers).map(|l| l.to_string()).collect();
    let mut json = format!(
        r#"{{"format":"moescope.snapshot/v1","model":{{"name":"toy","num_experts":{experts},"top_k":1,"layers":[{}]}},"languages":{{"#,
        layer_list.join(",")
    );
    let mut first = true;
    for (tag, per_layer) in langs {
        if !first {
            json.push(',');
        }
        first = false;
        let total: f64 = per_layer.first().map_or(0.0, |l| l.iter().sum());
        let ls: Vec<String> = per_layer
            .iter()
            .map(|n| {
                let t: f64 = n.iter().sum();
                format!(r#"{{"tokens":{t},"expert_tokens":{n:?},"prob_sum":null,"prob_tokens":0}}"#)
            })
            .collect();
        json.push_str(&format!(
            r#""{tag}":{{"tokens":{total},"layers":[{}]}}"#,
            ls.join(",")
        ));
    }
    json.push_str("}}");
    Snapshot::from_json_str(&json).unwrap()
}

#[test]
fn one_language_only_says_what_needs_a_second() {
    let snap = toy(4, 4, &[("en", vec![vec![10.0, 10.0, 10.0, 10.0]; 4])]);
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    assert_self_contained(&html);
    assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());
    for id in [
        "fig-entropy-gap",
        "fig-collapse-scores",
        "fig-pair-deep",
        "fig-lsi-by-layer",
        "fig-lsi-sweep",
    ] {
        let tag = figure_tag(&html, id);
        assert!(tag.contains("data-status=\"note\""), "{id}: {tag}");
    }
    assert!(figure_tag(&html, "fig-entropy-by-layer").contains("data-status=\"chart\""));
    let h = table(&html, "fig-entropy-by-layer");
    assert_eq!(h[&("en".into(), "2".into())], Some(2.0));
}

#[test]
fn one_moe_layer_two_experts_and_a_silent_language() {
    // E = 2, one MoE layer; fr has no tokens at all.
    let snap = toy(
        2,
        1,
        &[
            ("en", vec![vec![10.0, 10.0]]),
            ("fr", vec![vec![0.0, 0.0]]),
            ("he", vec![vec![20.0, 0.0]]),
        ],
    );
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    assert_self_contained(&html);
    assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());
    let h = table(&html, "fig-entropy-by-layer");
    assert_eq!(h[&("en".into(), "0".into())], Some(1.0));
    assert_eq!(h[&("he".into(), "0".into())], Some(0.0));
    assert_eq!(h[&("fr".into(), "0".into())], None);
    // No middle layer in a one-layer model.
    assert!(figure_tag(&html, "fig-pair-middle").contains("data-status=\"note\""));
    assert!(figure_tag(&html, "fig-pair-deep").contains("data-status=\"chart\""));
    assert!(html.contains("<tr data-lang=\"fr\" data-verdict=\"undecided\""));
}

#[test]
fn one_expert_and_cosine_heatmaps() {
    let snap = toy(
        1,
        3,
        &[("en", vec![vec![5.0]; 3]), ("he", vec![vec![7.0]; 3])],
    );
    let opts = ReportOptions::new("en").with_pair_metric(PairMetric::Cosine);
    let html = render_report(&snap, None, &opts).unwrap();
    assert_self_contained(&html);
    let h = table(&html, "fig-entropy-by-layer");
    assert_eq!(h[&("he".into(), "1".into())], Some(0.0));
    // Normalized entropy is undefined with one expert.
    let n = table(&html, "fig-normalized-entropy");
    assert_eq!(n[&("he".into(), "1".into())], None);
    assert!(figure_tag(&html, "fig-pair-deep").contains("data-metric=\"cosine\""));
    let c = table(&html, "fig-pair-deep");
    assert_eq!(c[&("he".into(), "en".into())], Some(1.0));
}

#[test]
fn unknown_language_and_reference_are_named() {
    let snap = sim_snapshot(false, 1);
    let err = render_report(&snap, None, &ReportOptions::new("de")).unwrap_err();
    assert!(err.to_string().contains("\"de\""), "{err}");
    let err =
        render_report(&snap, None, &ReportOptions::new("en").with_language("xx")).unwrap_err();
    assert!(matches!(err, ReportError::UnknownLanguage { .. }), "{err}");
    // A chosen language replaces the default.
    let html = render_report(&snap, None, &ReportOptions::new("en").with_language("fr")).unwrap();
    assert!(figure_tag(&html, "fig-expert-usage-language").contains("data-lang=\"fr\""));
    // A base of another shape cannot be compared.
    let other = toy(4, 4, &[("en", vec![vec![1.0; 4]; 4])]);
    let err = render_report(&snap, Some(&other), &ReportOptions::new("en")).unwrap_err();
    assert!(matches!(err, ReportError::Diff(_)), "{err}");
}

#[test]
fn markup_in_the_model_name_is_escaped() {
    let mut snap = sim_snapshot(false, 1);
    snap.model.name = "<b>\"x\"&</b>".into();
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    assert!(!html.contains("<b>"));
    assert!(html.contains("&lt;b&gt;&quot;x&quot;&amp;&lt;/b&gt;"));
}

/// A window of the real-model demo (the bundled tiny Qwen3-MoE run by tract: 4 MoE layers,
/// 16 experts, top-4; en, he, ja from the load generator), saved from its `/v1/snapshot`.
#[test]
fn tract_demo_snapshot() {
    let text = include_str!("data/tract-demo.json");
    let snap = Snapshot::from_json_str(text).unwrap();
    let a = analyze(&snap, &AnalysisConfig::new("en")).unwrap();
    for html in [
        render_report(&snap, None, &ReportOptions::new("en")).unwrap(),
        render_live_page(&snap, &LivePageOptions::new("en")).unwrap(),
    ] {
        assert_self_contained(&html);
        assert_eq!(html.matches("<figure ").count(), FIGURE_IDS.len());
        for id in FIGURE_IDS {
            assert!(
                figure_tag(&html, id).contains("data-status=\"chart\""),
                "{id}"
            );
        }
        for c in &a.collapse {
            let want = if c.collapsed { "collapsed" } else { "ok" };
            assert!(
                html.contains(&format!(
                    "<tr data-lang=\"{}\" data-verdict=\"{want}\" data-score=\"{}\"",
                    c.lang,
                    c.score_bits.unwrap()
                )),
                "{}",
                c.lang
            );
        }
        let h = table(&html, "fig-entropy-by-layer");
        for r in &a.layers {
            assert_eq!(
                h[&(r.lang.clone(), r.layer.to_string())],
                r.metrics.usage_entropy_bits
            );
        }
        // The expert-usage heatmap shows the highest collapse score's language.
        let worst = a
            .collapse
            .iter()
            .max_by(|x, y| x.score_bits.unwrap().total_cmp(&y.score_bits.unwrap()))
            .unwrap();
        assert!(figure_tag(&html, "fig-expert-usage-language")
            .contains(&format!("data-lang=\"{}\"", worst.lang)));
        // Each layer's shares sum to 1.
        let u = table(&html, "fig-expert-usage-language");
        for l in &snap.model.moe_layers {
            let s: f64 = (0..16)
                .map(|e| u[&(e.to_string(), l.to_string())].unwrap())
                .sum();
            assert!((s - 1.0).abs() < 1e-9, "layer {l}: {s}");
        }
    }
}

#[test]
fn sixty_languages_fit_the_legend_and_the_tables() {
    let mut langs: Vec<(String, Vec<Vec<f64>>)> = vec![("en".into(), vec![vec![5.0; 4]; 4])];
    for i in 0..59u8 {
        let tag = format!("a{}{}", (b'a' + i / 26) as char, (b'a' + i % 26) as char);
        let skew = f64::from(i) + 1.0;
        langs.push((tag, vec![vec![skew, 5.0, 5.0, 5.0]; 4]));
    }
    let refs: Vec<(&str, Vec<Vec<f64>>)> =
        langs.iter().map(|(t, v)| (t.as_str(), v.clone())).collect();
    let snap = toy(4, 4, &refs);
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    dump("sixty.html", &html);
    assert_self_contained(&html);
    // The legend shows what fits and says how many more the table holds.
    let body = figure_body(&html, "fig-entropy-by-layer");
    let i = body.find("… and ").expect("legend summary missing") + "… and ".len();
    let more: usize = body[i..i + body[i..].find(' ').unwrap()].parse().unwrap();
    // Every language is in the legend once (its label, e.g. `aab`, as a text element) or counted.
    let shown = langs
        .iter()
        .filter(|(t, _)| {
            body.contains(&format!("\n{t}\n</text>"))
                || body.contains(&format!("\n{t} (reference)\n</text>"))
        })
        .count();
    assert!(more > 0 && shown + more == 60, "shown {shown}, more {more}");
    let h = table(&html, "fig-entropy-by-layer");
    assert_eq!(h.len(), 60 * 4);
    let pairs = table(&html, "fig-pair-mean");
    assert_eq!(pairs.len(), 60 * 60);
}

#[test]
fn a_healthy_baseline_moves_the_verdict() {
    // he collapses by C ≈ 2.5 bits; a healthy baseline of 2.4 bits makes that normal for he.
    let snap = sim_snapshot(true, 7);
    let c = analyze(&snap, &AnalysisConfig::new("en"))
        .unwrap()
        .collapse_for("he")
        .unwrap()
        .score_bits
        .unwrap();
    let opts = ReportOptions::new("en").with_collapse_baseline("he", c - 0.1);
    let html = render_report(&snap, None, &opts).unwrap();
    assert!(html.contains("<tr data-lang=\"he\" data-verdict=\"ok\""));
    assert!(html.contains("healthy baseline"));
    // The bar chart draws he's own threshold θ + baseline and says so in its legend.
    assert!(figure_body(&html, "fig-collapse-scores").contains("θ + baseline"));
    let live = render_live_page(
        &snap,
        &LivePageOptions::new("en").with_collapse_baseline("he", c - 0.1),
    )
    .unwrap();
    assert!(live.contains("class=\"flag ok\" data-lang=\"he\""));
    // Without it, collapsed; no baseline column.
    let html = render_report(&snap, None, &ReportOptions::new("en")).unwrap();
    assert!(html.contains("<tr data-lang=\"he\" data-verdict=\"collapsed\""));
    assert!(!html.contains("healthy baseline"));
}

/// A Qwen3-30B-A3B-shaped window (48 MoE layers, E = 128, top-8) with 16 languages, counts
/// made up deterministically (no simulation: fast in a debug build). The report stays under
/// 5 MB, with or without a base, and draws every figure.
#[test]
fn qwen_shaped_sixteen_languages_stay_under_five_megabytes() {
    let spec = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    let tags = [
        "en", "ar", "de", "es", "fa", "fr", "he", "hi", "id", "it", "ja", "ko", "nl", "pl", "pt",
        "ru",
    ];
    let make = |collapse: bool| {
        let mut snap = Snapshot::new(spec.clone());
        for (i, tag) in tags.iter().enumerate() {
            let mut lc = moescope_core::LanguageCounts::zeroed(&spec);
            lc.tokens = 10_000.0;
            for (d, layer) in lc.layers.iter_mut().enumerate() {
                layer.tokens = 10_000.0;
                let funnel = collapse && *tag == "ru" && d >= 42;
                for (e, n) in layer.expert_tokens.iter_mut().enumerate() {
                    *n = if funnel {
                        if e < 16 {
                            5_000.0
                        } else {
                            0.0
                        }
                    } else {
                        // A skewed but full spread, different per language and layer.
                        1.0 + ((e * 7 + d * 3 + i * 11) % 29) as f64 * 40.0
                    };
                }
            }
            snap.languages.insert(tag.to_string(), lc);
        }
        snap
    };
    let (collapsed, healthy) = (make(true), make(false));
    let html = render_report(&collapsed, None, &ReportOptions::new("en")).unwrap();
    assert!(html.len() < 5_000_000, "{} bytes", html.len());
    assert!(html.contains("<tr data-lang=\"ru\" data-verdict=\"collapsed\""));
    assert!(figure_tag(&html, "fig-expert-usage-language").contains("data-lang=\"ru\""));
    let body = figure_body(&html, "fig-expert-usage-language");
    assert!(body.matches("<rect ").count() >= 128 * 48);
    let html = render_report(&collapsed, Some(&healthy), &ReportOptions::new("en")).unwrap();
    assert!(html.len() < 5_000_000, "{} bytes", html.len());
    assert!(html.contains("<tr data-lang=\"ru\" data-status=\"introduced\""));
    assert_eq!(
        html.matches("data-status=\"chart\"").count(),
        FIGURE_IDS.len() + DIFF_FIGURE_IDS.len()
    );
}
