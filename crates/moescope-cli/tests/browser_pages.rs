//! What a reader's browser shows, in headless Chromium: a `moescope report` file and the live
//! page `/` of a running `moescope demo` (simulated, and the real model).
//!
//! Each test loads the page, reads the DOM after load and asserts, element by element, that
//! every figure of the page drew into its `<svg>` (paths, rectangles, polylines), that the
//! collapse flag shows for the collapsing language, and that nothing was fetched from outside
//! (Chromium's NetLog: only `file://` or the demo's own `http://127.0.0.1:PORT/`), with the
//! Content-Security-Policy meta tag in place.
//!
//! They report themselves skipped without Chromium, unless `MOESCOPE_REQUIRE_CHROMIUM=1`
//! (scripts/test.sh): then they fail.

mod browser;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use browser::{Chromium, ScratchDir};
use moescope_report::{DIFF_FIGURE_IDS, FIGURE_IDS};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The flag of `lang` at the top of a page: its verdict (`collapsed`, `ok`, `undecided`,
/// `reference`) and its text.
fn flag(dom: &str, lang: &str) -> (String, String) {
    let flags = browser::elements_with(dom, "data-lang", lang);
    let (tag, text) = flags
        .iter()
        .find(|(t, _)| t.attr("class").is_some_and(|c| c.contains("flag")))
        .unwrap_or_else(|| panic!("no collapse flag for {lang}"));
    (
        tag.attr("data-verdict").unwrap_or_default().to_owned(),
        text.clone(),
    )
}

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// Polls the demo's `/` until `ready` holds for its HTML; panics after `within`.
fn wait_for_page(addr: &str, within: Duration, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        if let Ok(response) = common::get(addr, "/") {
            if response.starts_with("HTTP/1.1 200") && ready(body(&response)) {
                return;
            }
            last = response;
        }
        assert!(
            Instant::now() < deadline,
            "the live page was not ready in {within:?}; last answer:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_report_file_draws_every_figure_and_loads_nothing() {
    let Some(chromium) = Chromium::for_test("a_report_file_draws_every_figure_and_loads_nothing")
    else {
        return;
    };
    // he and ja collapse in the candidate's deep layers; the base has he collapsed only.
    let dir = ScratchDir::new("report");
    let html = dir.path.join("report.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moescope"))
        .arg("report")
        .arg(data("regressed.json"))
        .arg("--diff")
        .arg(data("base.json"))
        .args(["--reference", "en", "-o"])
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let loaded = chromium.load(&format!("file://{}", html.display()));
    browser::assert_self_contained(&loaded, None, "the report");
    let expected: Vec<&str> = FIGURE_IDS.iter().chain(&DIFF_FIGURE_IDS).copied().collect();
    let figures = browser::assert_figures_drawn(&loaded.dom, &expected, "the report");
    assert_eq!(figures.len(), expected.len(), "{figures:#?}");
    for fig in &figures {
        assert!(
            fig.class.split_whitespace().any(|c| c == "moescope-figure"),
            "{fig:?}"
        );
        assert!(fig.shapes > 0, "{fig:?}");
    }
    for lang in ["he", "ja"] {
        let (verdict, text) = flag(&loaded.dom, lang);
        assert_eq!(verdict, "collapsed", "{lang}: {text}");
        assert!(text.contains(&format!("{lang}: COLLAPSED")), "{text}");
    }
    assert_eq!(flag(&loaded.dom, "en").0, "reference");
    println!(
        "report: {} figures, {} shapes, loaded in {:?}",
        figures.len(),
        figures.iter().map(|f| f.shapes).sum::<usize>(),
        loaded.elapsed
    );
}

#[test]
fn the_simulated_demos_live_page_draws_every_figure_from_loopback_only() {
    let Some(chromium) =
        Chromium::for_test("the_simulated_demos_live_page_draws_every_figure_from_loopback_only")
    else {
        return;
    };
    let demo = common::start_collapsed_sim_demo();
    let addr = demo.addr.clone();
    wait_for_page(&addr, Duration::from_secs(40), |html| {
        html.contains(r#"data-lang="he" data-verdict="collapsed""#)
            && html.contains(r#"data-lang="ja" data-verdict="ok""#)
    });

    let origin = format!("http://{addr}");
    let loaded = chromium.load(&format!("{origin}/"));
    assert!(
        loaded.page_requests.contains(&format!("{origin}/")),
        "the page's own request is not in the NetLog: {:?}",
        loaded.all_requests
    );
    browser::assert_self_contained(&loaded, Some(&origin), "the live page");
    let figures = browser::assert_figures_drawn(&loaded.dom, &FIGURE_IDS, "the live page");
    assert_eq!(figures.len(), FIGURE_IDS.len(), "{figures:#?}");

    let (verdict, text) = flag(&loaded.dom, "he");
    assert_eq!(verdict, "collapsed", "{text}");
    assert!(text.contains("he: COLLAPSED"), "{text}");
    assert_eq!(flag(&loaded.dom, "ja").0, "ok");
    assert_eq!(flag(&loaded.dom, "en").0, "reference");
    // It reloads itself (the demo's interval, at least 2 s) and links to the other routes.
    let refresh = browser::elements_with(&loaded.dom, "http-equiv", "refresh");
    assert_eq!(refresh.len(), 1, "no reload");
    assert_eq!(refresh[0].0.attr("content"), Some("2"));
    for path in ["/metrics", "/v1/snapshot"] {
        assert_eq!(
            browser::elements_with(&loaded.dom, "href", path).len(),
            1,
            "no link to {path}"
        );
    }
    // `/metrics` answers while the page is drawn (it is a fast route).
    assert!(common::get(&addr, "/metrics")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    println!(
        "simulated live page: {} figures, {} shapes, loaded in {:?}",
        figures.len(),
        figures.iter().map(|f| f.shapes).sum::<usize>(),
        loaded.elapsed
    );
    drop(demo);
}

#[test]
fn the_real_model_demos_live_page_draws_from_loopback_only() {
    let Some(chromium) =
        Chromium::for_test("the_real_model_demos_live_page_draws_from_loopback_only")
    else {
        return;
    };
    let demo = common::start_demo(["--duration", "60", "--interval-ms", "500", "--rps", "40"]);
    let addr = demo.addr.clone();
    assert!(demo.banner.contains("tiny-qwen3-moe"), "{}", demo.banner);
    // Traffic of all three languages in the window.
    wait_for_page(&addr, Duration::from_secs(45), |html| {
        ["en", "he", "ja"]
            .iter()
            .all(|l| html.contains(&format!(r#"data-lang="{l}" data-verdict="#)))
    });

    let origin = format!("http://{addr}");
    let loaded = chromium.load(&format!("{origin}/"));
    browser::assert_self_contained(&loaded, Some(&origin), "the real model's live page");
    // Every figure is there; each one that is a chart (not a note) draws.
    let charts: Vec<String> = browser::figures(&loaded.dom)
        .into_iter()
        .filter(|f| f.status.as_deref() != Some("note"))
        .map(|f| f.id)
        .collect();
    let charts: Vec<&str> = charts.iter().map(String::as_str).collect();
    assert!(charts.contains(&"fig-entropy-by-layer"), "{charts:?}");
    let figures = browser::assert_figures_drawn(&loaded.dom, &charts, "the real model's live page");
    for id in FIGURE_IDS {
        assert!(figures.iter().any(|f| f.id == id), "no figure#{id}");
    }
    assert_eq!(flag(&loaded.dom, "en").0, "reference");
    println!(
        "real-model live page: {} figures ({} charts), loaded in {:?}",
        figures.len(),
        charts.len(),
        loaded.elapsed
    );
    drop(demo);
}
