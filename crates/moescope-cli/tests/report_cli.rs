//! End-to-end tests of `moescope report` on the hand-written fixtures of tests/data (see
//! analyze_cli.rs for their numbers) and on a simulator snapshot of a real model's shape.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn out_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(args)
        .output()
        .expect("the moescope binary runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report(args: &[&str], name: &str) -> String {
    let path = out_path(name);
    let mut all: Vec<&str> = vec!["report"];
    all.extend(args);
    all.extend(["-o", path.to_str().unwrap()]);
    let out = run(&all);
    ok(&out);
    std::fs::read_to_string(path).unwrap()
}

/// The value of `attr` in the tag that opens with `open`.
fn attr(html: &str, open: &str, attr: &str) -> String {
    let i = html.find(open).unwrap_or_else(|| panic!("no {open}"));
    let tag = &html[i..i + html[i..].find('>').unwrap()];
    let key = format!("{attr}=\"");
    let j = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        + key.len();
    tag[j..j + tag[j..].find('"').unwrap()].to_string()
}

#[test]
fn report_verdicts_match_analyze() {
    let base = data("base.json");
    let html = report(&[base.to_str().unwrap(), "--reference", "en"], "base.html");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--format",
        "json",
    ]);
    ok(&out);
    let analysis: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = analysis["collapse"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let lang = row["lang"].as_str().unwrap();
        let open = format!("<tr data-lang=\"{lang}\"");
        let verdict = attr(&html, &open, "data-verdict");
        let want = if row["collapsed"].as_bool().unwrap() {
            "collapsed"
        } else {
            "ok"
        };
        assert_eq!(verdict, want, "{lang}");
        let score: f64 = attr(&html, &open, "data-score").parse().unwrap();
        assert!((score - row["score_bits"].as_f64().unwrap()).abs() < 1e-12);
    }
    // he: C = 2 − 1.356780 = 0.643220 bits (hand-computed in analyze_cli.rs).
    let he: f64 = attr(&html, "<tr data-lang=\"he\"", "data-score")
        .parse()
        .unwrap();
    assert!((he - 0.643220).abs() < 1e-6, "{he}");
    assert_eq!(html.matches("<figure ").count(), 11);
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[test]
fn report_diff_reads_repaired_and_introduced() {
    let (b, c, r) = (data("base.json"), data("cpt.json"), data("regressed.json"));
    let html = report(
        &[
            c.to_str().unwrap(),
            "--diff",
            b.to_str().unwrap(),
            "--reference",
            "en",
        ],
        "cpt-vs-base.html",
    );
    assert_eq!(html.matches("<figure ").count(), 13);
    assert_eq!(
        attr(&html, "<tr data-lang=\"he\" data-status", "data-status"),
        "repaired"
    );
    assert_eq!(
        attr(&html, "<strong id=\"diff-verdict\"", "data-regression"),
        "false"
    );
    let base_c: f64 = attr(&html, "<tr data-lang=\"he\" data-status", "data-base-score")
        .parse()
        .unwrap();
    assert!((base_c - 0.643220).abs() < 1e-6);

    let html = report(
        &[
            r.to_str().unwrap(),
            "--diff",
            b.to_str().unwrap(),
            "--reference",
            "en",
        ],
        "regressed-vs-base.html",
    );
    assert_eq!(
        attr(&html, "<tr data-lang=\"ja\" data-status", "data-status"),
        "introduced"
    );
    assert_eq!(
        attr(&html, "<tr data-lang=\"he\" data-status", "data-status"),
        "worsened"
    );
    assert_eq!(
        attr(&html, "<strong id=\"diff-verdict\"", "data-regression"),
        "true"
    );
}

#[test]
fn report_options_and_errors() {
    let base = data("base.json");
    let b = base.to_str().unwrap();
    // --language picks the expert-usage language; --pair-metric the heatmaps' metric.
    let html = report(
        &[
            b,
            "--language",
            "ja",
            "--pair-metric",
            "cosine",
            "--title",
            "CPT <check>",
        ],
        "options.html",
    );
    assert_eq!(
        attr(
            &html,
            "<figure id=\"fig-expert-usage-language\"",
            "data-lang"
        ),
        "ja"
    );
    assert_eq!(
        attr(&html, "<figure id=\"fig-pair-deep\"", "data-metric"),
        "cosine"
    );
    assert!(html.contains("<title>CPT &lt;check&gt;</title>"));
    // Standard output.
    let out = run(&["report", b, "-o", "-"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<!DOCTYPE html>"));

    // Bad input: exit 2 with the value named.
    let dest = out_path("never.html");
    let _ = std::fs::remove_file(&dest);
    // A base without the reference: the error names the base file.
    let one = out_path("only-he.json");
    let mut snap: Value = serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    let langs = snap["languages"].as_object_mut().unwrap();
    langs.retain(|k, _| k == "he");
    std::fs::write(&one, serde_json::to_string(&snap).unwrap()).unwrap();
    let one_lang = one.to_str().unwrap();
    let d = dest.to_str().unwrap();
    for (args, needle) in [
        (vec!["report", b, "--reference", "de", "-o", d], "\"de\""),
        (vec!["report", b, "--language", "xx", "-o", d], "\"xx\""),
        (vec!["report", "/nonexistent.json", "-o", d], "cannot read"),
        (
            vec!["report", b, "--diff", "/nonexistent.json", "-o", d],
            "--diff",
        ),
        (
            vec!["report", b, "--diff", one_lang, "-o", d],
            "only-he.json: reference language \"en\" is not in the base",
        ),
        (
            vec!["report", b, "--min-deep-tokens=-1", "-o", d],
            "min_deep_tokens",
        ),
        (
            vec!["report", b, "--lsi-threshold", "1.5", "-o", d],
            "lsi_threshold",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!dest.exists(), "no file is written on bad input");
}

#[test]
fn report_takes_collapse_baselines() {
    // base.json: he's C = 0.643220 bits; a healthy baseline of 0.5 leaves 0.143 < θ = 0.3.
    let base = data("base.json");
    let b = base.to_str().unwrap();
    let html = report(&[b, "--collapse-baseline", "he=0.5"], "baseline.html");
    assert_eq!(attr(&html, "<tr data-lang=\"he\"", "data-verdict"), "ok");
    let html = report(&[b], "no-baseline.html");
    assert_eq!(
        attr(&html, "<tr data-lang=\"he\"", "data-verdict"),
        "collapsed"
    );
}
