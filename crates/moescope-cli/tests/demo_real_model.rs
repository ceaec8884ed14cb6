//! `moescope demo` (the real model through tract) serves per-layer usage entropy for en, he
//! and ja at /metrics, from its own load generator, within seconds.

use std::time::{Duration, Instant};

mod common;

#[test]
fn demo_serves_per_layer_entropy_for_en_he_ja_from_the_real_model() {
    let demo = common::start_demo(["--duration", "40", "--interval-ms", "500", "--rps", "40"]);
    let (addr, first) = (demo.addr.clone(), demo.banner.clone());
    assert!(first.contains("tiny-qwen3-moe"), "{first}");

    let deadline = Instant::now() + Duration::from_secs(35);
    let mut last = String::new();
    loop {
        if let Ok(body) = common::get(&addr, "/metrics") {
            let has = |lang: &str, layer: u32| {
                body.lines().any(|l| {
                    l.starts_with("moe_routing_usage_entropy_bits{")
                        && l.contains(&format!("layer=\"{layer}\""))
                        && l.contains(&format!("lang=\"{lang}\""))
                })
            };
            let all = ["en", "he", "ja"]
                .iter()
                .all(|lang| (0..4).all(|layer| has(lang, layer)));
            let tokenization = ["en", "he", "ja"].iter().all(|lang| {
                body.lines().any(|l| {
                    l.starts_with("moe_routing_tokens_per_char{")
                        && l.contains(&format!("lang=\"{lang}\""))
                })
            });
            if all && tokenization {
                // Byte-level tokens: one per English character, three per Japanese one.
                let per_char = |lang: &str| -> f64 {
                    body.lines()
                        .find(|l| {
                            l.starts_with("moe_routing_tokens_per_char{")
                                && l.contains(&format!("lang=\"{lang}\""))
                        })
                        .and_then(|l| l.rsplit(' ').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap()
                };
                assert!((per_char("en") - 1.0).abs() < 1e-9, "{body}");
                assert!((per_char("ja") - 3.0).abs() < 0.05, "{body}");
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "no entropy for en, he and ja in time; last scrape:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A request without a tag is detected; with one, the tag is used.
    let body = "השועל החום הזריז קופץ מעל הכלב העצלן.";
    let request = format!(
        "POST /v1/route HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = common::send(&addr, request.as_bytes()).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\"lang\":\"he\"") && out.contains("\"lang_source\":\"detected\""),
        "{out}"
    );
    assert!(out.contains(&format!("\"tokens\":{}", body.len())), "{out}");

    // The live window as a snapshot file, which `moescope analyze` reads back.
    let response = common::get(&addr, "/v1/snapshot").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let path = std::env::temp_dir().join(format!("moescope-window-{}.json", std::process::id()));
    std::fs::write(&path, json).unwrap();
    let analyzed = std::process::Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(["analyze", "--reference", "en", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        analyzed.status.success(),
        "{}",
        String::from_utf8_lossy(&analyzed.stderr)
    );
    let analysis: serde_json::Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    assert_eq!(analysis["model"]["name"], "tiny-qwen3-moe");
    for lang in ["en", "he", "ja"] {
        assert!(
            analysis["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|row| row["lang"] == lang),
            "no rows for {lang}"
        );
    }
    drop(demo);
}
