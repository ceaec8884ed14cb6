//! `moescope demo --simulate` serves the live window as a snapshot file at `/v1/snapshot`
//! and the live page at `/` (next to `/metrics`); `moescope analyze` reads the snapshot back
//! with the scripted collapse in it, and the page flags it. (What a browser makes of the page
//! is tested in browser_pages.rs.)

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
    let demo = common::start_collapsed_sim_demo();
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
        // Until the simulator's first steps, the window is empty.
        let snapshot: serde_json::Value = serde_json::from_str(body(&response)).unwrap();
        assert_eq!(snapshot["format"], "moescope.snapshot/v1");
        if ["en", "he", "ja"]
            .iter()
            .any(|l| snapshot["languages"].get(l).is_none())
        {
            assert!(Instant::now() < deadline, "no traffic in the window");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
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
    // The live page flags the same collapse, in one self-contained HTML document.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = common::get(&addr, "/").unwrap();
        let head = page.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(page.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        if body(&page).contains(r#"data-lang="he" data-verdict="collapsed""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live page does not flag he:\n{}",
            body(&page)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The page is drawn on the slow pool: a scrape during two page loads is not held up.
    let pages: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let page = common::get(&addr, "/").unwrap();
                (
                    page.starts_with("HTTP/1.1 200"),
                    start.elapsed(),
                    Instant::now(),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    let scrape = common::get(&addr, "/metrics").unwrap();
    let (scraped, scraped_at) = (start.elapsed(), Instant::now());
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    let pages: Vec<_> = pages.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(pages.iter().all(|p| p.0), "a page load failed");
    let last_page = pages.iter().map(|p| p.2).max().unwrap();
    println!(
        "scrape during two page loads: {scraped:?}; page loads: {:?}",
        pages.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    assert!(
        scraped_at < last_page,
        "the scrape ({scraped:?}) waited for the page loads ({pages:?})"
    );

    // `/metrics` is still the endpoint's own, next to the page's routes.
    let metrics = common::get(&addr, "/metrics").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(body(&metrics).contains("moe_routing_"), "{metrics}");
    drop(demo);
}
