//! `moescope demo --simulate` serves the live window as a snapshot file at `/v1/snapshot`
//! (next to `/metrics`), and `moescope analyze` reads it back with the scripted collapse in it.

use std::time::{Duration, Instant};

mod common;

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[test]
fn the_simulated_demos_snapshot_round_trips_through_analyze_with_the_collapse_flagged() {
    // he collapses from the start and never recovers.
    let demo = common::start_demo([
        "--simulate",
        "--collapse-at",
        "0",
        "--recover-at",
        "0",
        "--mix",
        "en=0.8,he=0.1,ja=0.1",
        "--steps-per-second",
        "50",
        "--interval-ms",
        "250",
        "--duration",
        "60",
    ]);
    assert!(demo.banner.contains("/v1/snapshot"), "{}", demo.banner);
    let addr = demo.addr.clone();
    let path =
        std::env::temp_dir().join(format!("moescope-sim-window-{}.json", std::process::id()));

    let deadline = Instant::now() + Duration::from_secs(45);
    let analysis = loop {
        let response = common::get(&addr, "/v1/snapshot").unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{response}"
        );
        std::fs::write(&path, body(&response)).unwrap();
        let analyzed = std::process::Command::new(env!("CARGO_BIN_EXE_moescope"))
            .args(["analyze", "--reference", "en", "--format", "json"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            analyzed.status.success(),
            "{}",
            String::from_utf8_lossy(&analyzed.stderr)
        );
        let analysis: serde_json::Value = serde_json::from_slice(&analyzed.stdout).unwrap();
        let he_collapsed = analysis["collapse"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["lang"] == "he" && row["collapsed"] == true);
        if he_collapsed {
            break analysis;
        }
        assert!(
            Instant::now() < deadline,
            "he not flagged collapsed in time; last analysis:\n{analysis:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    std::fs::remove_file(&path).ok();

    assert_eq!(analysis["model"]["name"], "qwen3-30b-a3b");
    // Only the scripted language collapses; ja is compared with en and stays healthy.
    let ja = analysis["collapse"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["lang"] == "ja")
        .expect("a collapse row for ja");
    assert_eq!(ja["collapsed"], false, "{analysis:#}");
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
    // `/metrics` is still the endpoint's own, next to the snapshot route.
    let metrics = common::get(&addr, "/metrics").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(body(&metrics).contains("moe_routing_"), "{metrics}");
    drop(demo);
}
