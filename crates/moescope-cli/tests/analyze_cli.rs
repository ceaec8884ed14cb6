//! End-to-end tests of `moescope analyze` and `moescope diff` on hand-written snapshots.
//!
//! Fixtures (tests/data): E = 4, top-1, 8 MoE layers numbered 1, 3, …, 15 (deep set: the last
//! d = max(2, floor(8/8 + 1/2)) = 2 → layers 13, 15; middle set: depths 2..6 → layers 5..11),
//! 1000 tokens per layer and language.
//! - `base.json`: en uniform (H = 2 bits) everywhere; he uniform except the deep layers at
//!   (700, 100, 100, 100) (H = 1.356780 bits); ja at (300, 200, 300, 200) (H = 1.970951) everywhere.
//!   he: drop = 2 − 1.356780 = 0.643220 bits, en drop 0 → C = 0.643220 > θ = 0.3: collapsed.
//! - `cpt.json`: he uniform in the deep layers too (repaired).
//! - `regressed.json`: he and ja one-hot in the deep layers (he worse, ja newly collapsed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(args)
        .output()
        .expect("the moescope binary runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)
}

/// A scratch file in the target directory, unique per test.
fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("analyze_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn find(rows: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| pred(r))
        .expect("row present")
}

#[test]
fn analyze_json_matches_hand_computed_values() {
    let base = data("base.json");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--lsi-threshold",
        "0.1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = stdout_json(&out);
    assert_eq!(j["format"], "moescope.analysis/v1");
    assert_eq!(j["reference"], "en");
    assert_eq!(j["model"]["name"], "toy-base");
    assert_eq!(j["deep_layers"], serde_json::json!([13, 15]));

    // he, layer 15: p = (0.7, 0.1, 0.1, 0.1): H = 1.356780, normalized 0.678390,
    // Gini: 2(0.1 + 0.2 + 0.3 + 2.8)/4 − 5/4 = 0.45; active: all ≥ 0.1/4.
    let he15 = find(&j["layers"], |r| r["lang"] == "he" && r["layer"] == 15);
    assert!(close(&he15["tokens"], 1000.0));
    assert!(close(&he15["usage_entropy_bits"], 1.356_780));
    assert!(close(&he15["normalized_entropy"], 0.678_390));
    assert!(close(&he15["gini"], 0.45));
    assert_eq!(he15["active_experts"], 4);
    assert!(he15["selection_entropy_bits"].is_null());
    // en records selection entropy: 1500 bits over 1000 tokens.
    let en1 = find(&j["layers"], |r| r["lang"] == "en" && r["layer"] == 1);
    assert!(close(&en1["selection_entropy_bits"], 1.5));
    // ja's layer tokens were left out of the file: filled with Σ expert_tokens / top_k.
    let ja1 = find(&j["layers"], |r| r["lang"] == "ja" && r["layer"] == 1);
    assert!(close(&ja1["tokens"], 1000.0));
    assert!(close(&ja1["usage_entropy_bits"], 1.970_951));

    // Pair he–en at layer 15: gap 2 − 1.356780; cosine 0.25/(√0.52 · 0.5) = 0.693375;
    // JSD = H(0.475, 0.175 ×3) − (1.356780 + 2)/2 = 1.830301 − 1.678390 = 0.151911;
    // top-1: he → 0, en all tied → 0: overlap 1; en is constant: rank correlations null.
    let p = find(&j["pairs"], |r| r["lang"] == "he" && r["layer"] == 15);
    assert_eq!(p["reference"], "en");
    assert!(close(&p["entropy_gap_bits"], 0.643_220));
    assert!(close(&p["cosine_similarity"], 0.693_375));
    assert!(close(&p["js_divergence_bits"], 0.151_911));
    assert!(close(&p["topk_overlap_ratio"], 1.0));
    assert!(p["spearman_rho"].is_null());
    assert!(p["kendall_tau_b"].is_null());
    // Only pairs against the reference without --all-pairs.
    assert!(j["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reference"] == "en"));

    // Collapse: he C = 0.643220 (collapsed), ja C = 0.
    let he = find(&j["collapse"], |r| r["lang"] == "he");
    assert!(close(&he["drop_bits"], 0.643_220));
    assert!(close(&he["reference_drop_bits"], 0.0));
    assert!(close(&he["score_bits"], 0.643_220));
    assert_eq!(he["collapsed"], true);
    let ja = find(&j["collapse"], |r| r["lang"] == "ja");
    assert!(close(&ja["score_bits"], 0.0));
    assert_eq!(ja["collapsed"], false);
    // Split-half control of he: both halves collapsed alike → C = 0, not flagged.
    let sh = find(&j["split_half_collapse"], |r| r["lang"] == "he");
    assert!(close(&sh["score_bits"], 0.0));
    assert_eq!(sh["collapsed"], false);

    // LSI (probability basis, a_e = p_e here): deep layers (0.45/0.95, −0.15/0.35 ×3) = (0.473684,
    // −0.428571 ×3), middle 0; averaged over 8 layers: (0.118421, −0.107143 ×3).
    // τ = 0.1: 1 he-specific, 3 en-specific, 0 shared.
    let lsi = find(&j["lsi"], |r| r["lang"] == "he");
    assert_eq!(lsi["reference"], "en");
    assert_eq!(lsi["basis"], "probability");
    assert!(close(&lsi["threshold"], 0.1));
    assert_eq!(
        (
            lsi["lang_specific"].as_u64(),
            lsi["reference_specific"].as_u64(),
            lsi["shared"].as_u64()
        ),
        (Some(1), Some(3), Some(0))
    );
    assert!(close(&lsi["values"][0], 0.118_421));
    // ja has no probabilities: usage basis.
    assert_eq!(find(&j["lsi"], |r| r["lang"] == "ja")["basis"], "usage");
    // The sweep: τ = 0.2 puts every he expert in the shared class.
    let s02 = find(&j["lsi_sweep"], |r| {
        r["lang"] == "he" && close(&r["threshold"], 0.2)
    });
    assert_eq!(s02["shared"], 4);

    // Tokenization: he 8000 tokens / 20000 chars = 0.4, / 4000 words = 2.
    let t = find(&j["tokenization"], |r| r["lang"] == "he");
    assert!(close(&t["tokens_per_char"], 0.4));
    assert!(close(&t["tokens_per_word"], 2.0));
    assert!(find(&j["tokenization"], |r| r["lang"] == "ja")["tokens_per_char"].is_null());

    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("NaN"));
}

#[test]
fn analyze_all_pairs_adds_language_pairs() {
    let base = data("base.json");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--all-pairs",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = stdout_json(&out);
    // he–ja at layer 15: cosine_similarity((0.7, 0.1, 0.1, 0.1), (0.3, 0.2, 0.3, 0.2)) = 0.761500.
    let p = find(&j["pairs"], |r| {
        r["lang"] == "he" && r["reference"] == "ja" && r["layer"] == 15
    });
    assert!(close(&p["cosine_similarity"], 0.761_500));
    // 2 reference pairs + 1 other pair, 8 layers each.
    assert_eq!(j["pairs"].as_array().unwrap().len(), 24);
}

#[test]
fn analyze_table_puts_collapsed_languages_first() {
    let base = data("base.json");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--format",
        "table",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("COLLAPSED"), "{text}");
    let per_layer = text.split("Per layer").nth(1).expect("per-layer section");
    let first_row = per_layer.lines().nth(2).unwrap();
    assert!(first_row.starts_with("he"), "{first_row}");
    // Deep layers are marked.
    let deep_row = per_layer
        .lines()
        .find(|l| l.starts_with("he") && l.contains(" 15 "))
        .unwrap();
    assert!(deep_row.contains('*'), "{deep_row}");
    let mid_row = per_layer
        .lines()
        .find(|l| l.starts_with("he") && l.contains("  7 "))
        .unwrap();
    assert!(!mid_row.contains('*'), "{mid_row}");
    // The collapse section lists he before ja.
    let collapse = text.split("Per layer").next().unwrap();
    assert!(collapse.find("\nhe").unwrap() < collapse.find("\nja").unwrap());
}

#[test]
fn analyze_csv_has_one_row_per_language_and_layer() {
    let base = data("base.json");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--format",
        "csv",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 3 * 8);
    assert!(lines[0].starts_with("lang,reference,layer,depth,deep,tokens,usage_entropy_bits"));
    let he15 = lines.iter().find(|l| l.starts_with("he,en,15,")).unwrap();
    assert!(he15.contains(",true,"), "{he15}");
    // en is the reference: no pair columns, empty fields rather than NaN.
    let en1 = lines.iter().find(|l| l.starts_with("en,,1,")).unwrap();
    assert!(en1.ends_with(",,,,,,"), "{en1}");
}

#[test]
fn analyze_fail_on_collapse_exits_1() {
    let base = data("base.json");
    let out = run(&[
        "analyze",
        base.to_str().unwrap(),
        "--reference",
        "en",
        "--fail-on-collapse",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let cpt = data("cpt.json");
    let out = run(&[
        "analyze",
        cpt.to_str().unwrap(),
        "--reference",
        "en",
        "--fail-on-collapse",
    ]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_collapse_baseline_judges_the_excess() {
    // he's C = 0.643220 bits. A baseline of 0.4 leaves an excess of 0.243220 < θ = 0.3: not
    // collapsed, with the raw score still reported; a baseline of 0.3 leaves 0.343220 > θ.
    let base = data("base.json");
    let path = base.to_str().unwrap();
    let verdict = |baseline: &str| {
        let out = run(&[
            "analyze",
            path,
            "--reference",
            "en",
            "--collapse-baseline",
            baseline,
            "--fail-on-collapse",
        ]);
        let doc = stdout_json(&out);
        let he = find(&doc["collapse"], |r| r["lang"] == "he").clone();
        (out.status.code(), he)
    };
    let (code, he) = verdict("he=0.4");
    assert_eq!(code, Some(0), "{he}");
    assert_eq!(he["collapsed"], false);
    assert!(close(&he["score_bits"], 0.643220), "{he}");
    assert!(close(&he["baseline_bits"], 0.4), "{he}");
    let (code, he) = verdict("he=0.3");
    assert_eq!(code, Some(1), "{he}");
    assert_eq!(he["collapsed"], true);
    // A malformed value is refused with the flag named.
    let out = run(&["analyze", path, "--collapse-baseline", "he:0.3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--collapse-baseline"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn diff_repaired_exits_0() {
    let (b, c) = (data("base.json"), data("cpt.json"));
    let out = run(&[
        "diff",
        b.to_str().unwrap(),
        c.to_str().unwrap(),
        "--reference",
        "en",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = stdout_json(&out);
    assert_eq!(j["format"], "moescope.diff/v1");
    assert_eq!(j["regression"], false);
    let he = find(&j["collapse"], |r| r["lang"] == "he");
    assert_eq!(he["status"], "repaired");
    assert_eq!(he["base_collapsed"], true);
    assert_eq!(he["candidate_collapsed"], false);
    assert!(close(&he["score_bits"]["delta"], -0.643_220));
    assert_eq!(
        find(&j["collapse"], |r| r["lang"] == "ja")["status"],
        "absent"
    );
    // Layer 15, he: entropy +0.643220, Gini 0.45 → 0, cosine 0.693375 → 1.
    let l = find(&j["layers"], |r| r["lang"] == "he" && r["layer"] == 15);
    assert!(close(&l["usage_entropy_bits"]["delta"], 0.643_220));
    assert!(close(&l["gini"]["delta"], -0.45));
    assert!(close(&l["cosine_similarity"]["delta"], 1.0 - 0.693_375));
    // LSI at τ = 0.2 before and after (all shared in both).
    let lsi = find(&j["lsi"], |r| r["lang"] == "he");
    assert_eq!(lsi["base"]["shared"], 4);
    assert_eq!(lsi["candidate"]["shared"], 4);

    // The table says so too.
    let out = run(&[
        "diff",
        b.to_str().unwrap(),
        c.to_str().unwrap(),
        "--reference",
        "en",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("repaired") && text.contains("verdict: no regression"),
        "{text}"
    );
}

#[test]
fn diff_regressed_exits_1() {
    let (b, c) = (data("base.json"), data("regressed.json"));
    let out = run(&[
        "diff",
        b.to_str().unwrap(),
        c.to_str().unwrap(),
        "--reference",
        "en",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = stdout_json(&out);
    assert_eq!(j["regression"], true);
    // he: C 0.643220 → 2 (one-hot deep layers): worsened; ja: 0 → 1.970951: introduced.
    let he = find(&j["collapse"], |r| r["lang"] == "he");
    assert_eq!(he["status"], "worsened");
    assert!(close(&he["score_bits"]["candidate"], 2.0));
    let ja = find(&j["collapse"], |r| r["lang"] == "ja");
    assert_eq!(ja["status"], "introduced");
    assert!(close(&ja["score_bits"]["candidate"], 1.970_951));
    let reasons: Vec<&str> = j["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2);
    // Reverse: the repaired checkpoint as base, the collapsed one as candidate.
    let cpt = data("cpt.json");
    let out = run(&[
        "diff",
        cpt.to_str().unwrap(),
        b.to_str().unwrap(),
        "--reference",
        "en",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("verdict: REGRESSION (exit 1)")
            && text.contains("he: deep-layer collapse introduced"),
        "{text}"
    );
}

#[test]
fn diff_strict_fails_on_persisting_collapse() {
    let b = data("base.json");
    let out = run(&[
        "diff",
        b.to_str().unwrap(),
        b.to_str().unwrap(),
        "--reference",
        "en",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&[
        "diff",
        b.to_str().unwrap(),
        b.to_str().unwrap(),
        "--reference",
        "en",
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not repaired"));
}

#[test]
fn malformed_input_exits_2_with_a_message_naming_the_problem() {
    let base_text = std::fs::read_to_string(data("base.json")).unwrap();

    let missing = data("no-such-file.json");
    let out = run(&["analyze", missing.to_str().unwrap(), "--reference", "en"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read") && stderr(&out).contains("no-such-file.json"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let p = scratch("truncated.json", &base_text[..base_text.len() / 2]);
    let out = run(&["analyze", p.to_str().unwrap(), "--reference", "en"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("truncated.json"), "{}", stderr(&out));

    let p = scratch(
        "wrong-format.json",
        &base_text.replace("moescope.snapshot/v1", "moescope.snapshot/v9"),
    );
    let out = run(&["analyze", p.to_str().unwrap(), "--reference", "en"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("format"), "{}", stderr(&out));

    let mut v: Value = serde_json::from_str(&base_text).unwrap();
    v["languages"]["he"]["layers"][2]["expert_tokens"] = serde_json::json!([1, 2, 3]);
    let p = scratch("short-vector.json", &v.to_string());
    let out = run(&["analyze", p.to_str().unwrap(), "--reference", "en"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "languages.he.layers[2].expert_tokens: expected 4 numbers (model.num_experts), found 3"
        ),
        "{}",
        stderr(&out)
    );

    let out = run(&[
        "analyze",
        data("base.json").to_str().unwrap(),
        "--reference",
        "fr",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("reference language \"fr\" is not in the snapshot (languages: en, he, ja)"),
        "{}",
        stderr(&out)
    );

    let out = run(&[
        "analyze",
        data("base.json").to_str().unwrap(),
        "--reference",
        "en",
        "--lsi-threshold",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lsi_threshold"), "{}", stderr(&out));

    // Missing required option: clap's usage error, also 2.
    let out = run(&["analyze", data("base.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--reference"), "{}", stderr(&out));

    // diff: a bad candidate is named as such; different model shapes are bad input.
    let p = scratch("bad-candidate.json", "{ not json");
    let out = run(&[
        "diff",
        data("base.json").to_str().unwrap(),
        p.to_str().unwrap(),
        "--reference",
        "en",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("candidate") && stderr(&out).contains("bad-candidate.json"),
        "{}",
        stderr(&out)
    );

    let mut v: Value = serde_json::from_str(&base_text).unwrap();
    v["model"]["layers"] = serde_json::json!([1, 3, 5, 7, 9, 11, 13]);
    for l in ["en", "he", "ja"] {
        v["languages"][l]["layers"].as_array_mut().unwrap().pop();
        if let Some(h) = v["languages"][l]["halves"].as_array_mut() {
            for half in h {
                half["layers"].as_array_mut().unwrap().pop();
            }
        }
    }
    let p = scratch("seven-layers.json", &v.to_string());
    let out = run(&[
        "diff",
        data("base.json").to_str().unwrap(),
        p.to_str().unwrap(),
        "--reference",
        "en",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different model shapes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn analyze_all_pairs_streams_the_library_document() {
    // The streamed document equals the library's analysis with all_pairs, value for value.
    let out = run(&[
        "analyze",
        data("base.json").to_str().unwrap(),
        "--reference",
        "en",
        "--all-pairs",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let streamed = stdout_json(&out);
    let snap = moescope_core::Snapshot::read_json(data("base.json")).unwrap();
    let mut config = moescope_stats::AnalysisConfig::new("en");
    config.all_pairs = true;
    let whole = serde_json::to_value(moescope_stats::analyze(&snap, &config).unwrap()).unwrap();
    assert_eq!(streamed, whole);
    // 2 pairs with the reference and he–ja, 8 layers each.
    assert_eq!(streamed["pairs"].as_array().unwrap().len(), 3 * 8);
}

/// A snapshot of `langs` languages with E = `experts` routed experts in `layers` MoE layers,
/// counts from a small deterministic generator.
fn synthetic(langs: &[String], experts: usize, layers: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % 100_000
    };
    let mut doc = format!(
        r#"{{"format":"moescope.snapshot/v1","model":{{"name":"synthetic","num_experts":{experts},"top_k":1,"layers":[{}]}},"languages":{{"#,
        (0..layers)
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    for (i, lang) in langs.iter().enumerate() {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(r#""{lang}":{{"tokens":1,"layers":["#));
        for l in 0..layers {
            if l > 0 {
                doc.push(',');
            }
            let counts: Vec<String> = (0..experts).map(|_| next().to_string()).collect();
            doc.push_str(&format!(r#"{{"expert_tokens":[{}]}}"#, counts.join(",")));
        }
        doc.push_str("]}");
    }
    doc.push_str("}}");
    doc
}

#[test]
fn analyze_a_wide_snapshot_in_near_linear_time() {
    // E = 65 536 experts, 3 languages: about 1 MB. Kendall τ-b in O(E log E) keeps this well
    // under a second in a release build; the guard is generous for a debug build on a busy
    // machine.
    let langs: Vec<String> = ["en", "he", "ja"].map(String::from).to_vec();
    let text = synthetic(&langs, 65_536, 1);
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    let path = scratch("wide.json", &text);
    let started = std::time::Instant::now();
    let out = run(&["analyze", path.to_str().unwrap(), "--reference", "en"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(took.as_secs_f64() < 30.0, "took {took:?}");
    let a = stdout_json(&out);
    let p = find(&a["pairs"], |r| r["lang"] == "he");
    let tau = p["kendall_tau_b"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&tau));
    // Independent counts: near 0, far from ±1.
    assert!(tau.abs() < 0.05, "tau {tau}");
}

#[test]
fn analyze_all_pairs_refuses_an_absurd_number_of_pairs() {
    // 1 500 languages × 90 layers: 1 124 250 pairs per layer, 101 million pair rows.
    let langs: Vec<String> = (0..1_500)
        .map(|i| {
            if i == 0 {
                "en".to_string()
            } else {
                let a = |n: usize| char::from(b'a' + (n % 26) as u8);
                format!("q{}{}{}", a(i / 676), a(i / 26), a(i))
            }
        })
        .collect();
    let path = scratch("many_pairs.json", &synthetic(&langs, 1, 90));
    let out = run(&[
        "analyze",
        path.to_str().unwrap(),
        "--reference",
        "en",
        "--all-pairs",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--all-pairs") && err.contains("limit"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
