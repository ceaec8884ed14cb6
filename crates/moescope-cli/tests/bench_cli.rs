//! `moescope bench --json` prints every case and the ratios, with figures that hang together.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_json_reports_every_case_and_ratio() {
    let out = Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args([
            "bench",
            "--quick",
            "--json",
            "--tokens",
            "64",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "moescope.bench/v1");
    let cases = v["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["impl"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "moescope",
            "metrics-counter",
            "metrics-handles",
            "mutex-hashmap",
            "plain-array"
        ]
    );
    let ns = |name: &str| {
        cases.iter().find(|c| c["impl"] == name).unwrap()["ns_per_token_layer"]
            .as_f64()
            .unwrap()
    };
    for c in cases {
        assert_eq!(c["tokens"], 64);
        assert_eq!(c["threads"], 1);
        let (min, med, max) = (
            c["min_ns_per_token_layer"].as_f64().unwrap(),
            c["ns_per_token_layer"].as_f64().unwrap(),
            c["max_ns_per_token_layer"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= med && med <= max, "{c}");
    }
    let ratios = v["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 4);
    for r in ratios {
        let base = r["baseline"].as_str().unwrap();
        let want = ns(base) / ns("moescope");
        let got = r["baseline_over_moescope"].as_f64().unwrap();
        assert!((got / want - 1.0).abs() < 1e-9, "{base}: {got} vs {want}");
    }
    let budgets = v["budgets"].as_array().unwrap();
    assert!(budgets
        .iter()
        .any(|t| t["name"] == "T=64: metrics-handles / moescope"));
}

#[test]
fn bench_rejects_zero_tokens() {
    let out = Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(["bench", "--quick", "--tokens", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens"));
}
