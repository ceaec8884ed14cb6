//! `moescope demo --onnx` on a plain Hugging Face export (DeepSeek-V3-style group-limited
//! routing, exported from transformers' own class): the per-expert counts at /metrics equal
//! what transformers routed, under the model's own layer numbers from `--config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::Demo;

/// Sends a request given as text; the whole response.
fn http(addr: &str, request: &str) -> std::io::Result<String> {
    common::send(addr, request.as_bytes())
}

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../moescope-tract/models/hf")
        .join(family)
}

#[test]
fn demo_onnx_records_a_group_limited_export_exactly() {
    let dir = fixture("deepseek_v3_grouped");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (demo, addr) = start(
        &[
            "--interval-ms".as_ref(),
            "300".as_ref(),
            "--expert-selections".as_ref(),
            "--onnx".as_ref(),
            dir.join("model.onnx").as_os_str(),
            "--config".as_ref(),
            dir.join("config.json").as_os_str(),
            "--name".as_ref(),
            "tiny-dsv3".as_ref(),
        ],
        &[],
    );
    let first = demo.banner.clone();
    assert!(
        first.contains("tiny-dsv3") && first.contains("top-4"),
        "{first}"
    );

    // What transformers routed: (layer number, lang, expert) -> tokens.
    let layers: Vec<u64> = expected["moe_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut want: BTreeMap<(u64, String, u64), u64> = BTreeMap::new();
    for req in expected["requests"].as_array().unwrap() {
        let lang = req["lang"].as_str().unwrap();
        let text = req["text"].as_str().unwrap();
        let out = http(
            &addr,
            &format!(
                "POST /v1/route?lang={lang} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            ),
        )
        .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        for (depth, tokens) in req["routing"].as_array().unwrap().iter().enumerate() {
            for ids in tokens.as_array().unwrap() {
                for id in ids.as_array().unwrap() {
                    *want
                        .entry((layers[depth], lang.to_owned(), id.as_u64().unwrap()))
                        .or_default() += 1;
                }
            }
        }
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http(
            &addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap_or_default();
        let mut got: BTreeMap<(u64, String, u64), u64> = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| l.starts_with("moe_routing_expert_selections_total{"))
        {
            let label = |k: &str| {
                line.split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(label("model"), "tiny-dsv3", "{line}");
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            if v > 0.0 {
                got.insert(
                    (
                        label("layer").parse().unwrap(),
                        label("lang"),
                        label("expert").parse().unwrap(),
                    ),
                    v as u64,
                );
            }
        }
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts at /metrics never matched transformers'; want {want:?}\nlast scrape:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(demo);
}

/// Starts the demo (60 s, no load generator) with `args`; returns it and its address, after
/// checking that its banner holds every string of `banner`.
fn start(args: &[&std::ffi::OsStr], banner: &[&str]) -> (Demo, String) {
    let demo = common::start_demo(
        ["--duration".as_ref(), "60".as_ref(), "--no-load".as_ref()]
            .into_iter()
            .chain(args.iter().copied()),
    );
    for b in banner {
        assert!(demo.banner.contains(b), "{b:?} not in {}", demo.banner);
    }
    let addr = demo.addr.clone();
    (demo, addr)
}

fn route(addr: &str, lang: &str, text: &str) -> String {
    http(
        addr,
        &format!(
            "POST /v1/route?lang={lang} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{text}",
            text.len()
        ),
    )
    .unwrap()
}

#[test]
fn demo_onnx_config_and_name_run_every_family_with_a_top_k() {
    for family in [
        "qwen2_moe",
        "qwen3_moe",
        "qwen3_moe_dynamo",
        "olmoe",
        "mixtral",
        "minimax",
        "deepseek_v3",
        "glm4_moe",
        "exaone_moe",
        "gpt_oss",
        "granitemoe",
    ] {
        let dir = fixture(family);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let layers = expected["moe_layers"].as_array().unwrap().len();
        let name = format!("tiny-{family}");
        let (demo, addr) = start(
            &[
                "--onnx".as_ref(),
                dir.join("model.onnx").as_os_str(),
                "--config".as_ref(),
                dir.join("config.json").as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
            ],
            &[
                &name,
                &format!("({layers} MoE layers"),
                &format!("top-{}", expected["top_k"]),
            ],
        );
        let out = route(&addr, "he", "שלום עולם");
        assert!(out.starts_with("HTTP/1.1 200"), "{family}: {out}");
        assert!(out.contains("\"tokens\":17"), "{family}: {out}");
        drop(demo);
    }
}

#[test]
fn demo_fixed_tokens_pads_a_hugging_face_export_and_serves_requests_one_per_run() {
    let dir = fixture("qwen3_moe");
    let (demo, addr) = start(
        &[
            "--onnx".as_ref(),
            dir.join("model.onnx").as_os_str(),
            "--fixed-tokens".as_ref(),
            "48".as_ref(),
        ],
        &["qwen3_moe", "(2 MoE layers"],
    );
    for (lang, text) in [("en", "Routing is watched."), ("ja", "言語ごと")] {
        let out = route(&addr, lang, text);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(&format!("\"tokens\":{}", text.len())), "{out}");
    }
    // Longer than the fixed length: that request fails, and says why.
    let out = route(&addr, "en", &"a".repeat(49));
    assert!(
        out.contains("49 tokens do not fit the model's fixed length of 48"),
        "{out}"
    );
    drop(demo);
}
