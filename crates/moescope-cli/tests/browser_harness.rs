//! The browser harness checks itself: its HTML reader and NetLog reader on fixed inputs, then
//! with a real headless Chromium, that a page pulling a stylesheet, an image or a script from
//! outside IS caught (from a file and from a loopback server), while a self-contained page
//! passes and its loopback requests are seen.
//!
//! The Chromium tests report themselves skipped without Chromium, unless
//! `MOESCOPE_REQUIRE_CHROMIUM=1` (scripts/test.sh): then they fail.

mod browser;

use std::panic::{catch_unwind, AssertUnwindSafe};

use browser::{Chromium, NetLog, ScratchDir, Token};
use moescope_http::{HttpServer, Limits, Method, Response, Router, StatusCode};

/// A page as Chromium serializes it: two figures (one drawing, one whose shapes draw nothing),
/// a table figure, and text with entities.
const DOM: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"><title>a <b> title</title>
<style>.x > p { color: red }</style></head>
<body><!-- <figure id="fig-comment"> -->
<figure id="fig-entropy" class="moescope-figure"><svg width="100" height="50" viewBox="0 0 100 50"><g><rect x="0" y="0" width="100" height="50" fill="white"></rect><polyline points="0,0 10,10 20,5" fill="none"></polyline><path d=""></path><text x="1" y="9">layer</text></g></svg><figcaption>Usage entropy &amp; layers</figcaption></figure>
<figure id="fig-empty" class="moescope-figure"><svg><rect width="0" height="10"></rect><path d="  "></path><circle r="0"></circle></svg></figure>
<figure id="fig-table" class="moescope-figure" data-status="note"><table><tr><td>he</td><td>COLLAPSED</td></tr></table></figure>
<p data-x='a>b'>he: deep-layer collapse&nbsp;YES &#x2014; &#8212;</p>
<div><span class="flag collapsed" data-lang="he" data-verdict="collapsed">he: <span>COLLAPSED</span> 0.64</span><span data-lang="en" data-verdict="reference">en: reference</span><img data-lang="x"></div>
<script>if (a < b && c > d) { document.write("</p>") }</script>
</body></html>
"#;

#[test]
fn the_html_reader_finds_figures_shapes_text_and_the_policy() {
    let figures = browser::figures(DOM);
    let ids: Vec<&str> = figures.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["fig-entropy", "fig-empty", "fig-table"]);
    // rect (area) + polyline (points); the empty path and the text do not count.
    assert_eq!((figures[0].svgs, figures[0].shapes), (1, 2));
    assert_eq!(figures[0].class, "moescope-figure");
    assert_eq!(figures[0].text, "layer Usage entropy & layers");
    // A zero-width rect, a blank path and a zero radius draw nothing.
    assert_eq!((figures[1].svgs, figures[1].shapes), (1, 0));
    assert_eq!((figures[2].svgs, figures[2].shapes), (0, 0));
    assert_eq!(figures[2].text, "he COLLAPSED");
    assert_eq!(figures[2].status.as_deref(), Some("note"));
    assert_eq!(figures[0].status, None);

    // Elements by attribute, with their text (nested elements of the same name included).
    let flags = browser::elements_with(DOM, "data-verdict", "collapsed");
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0].0.attr("data-lang"), Some("he"));
    assert_eq!(flags[0].1, "he: COLLAPSED 0.64");
    let en = browser::elements_with(DOM, "data-lang", "en");
    assert_eq!(en.len(), 1);
    assert_eq!(en[0].0.attr("data-verdict"), Some("reference"));
    assert_eq!(en[0].1, "en: reference");
    let void = browser::elements_with(DOM, "data-lang", "x");
    assert_eq!((void.len(), void[0].1.as_str()), (1, ""));

    let text = browser::text(DOM);
    // Entities decoded; a no-break space counts as whitespace.
    assert!(
        text.contains("he: deep-layer collapse YES \u{2014} \u{2014}"),
        "{text}"
    );
    assert!(text.contains("a <b> title"), "{text}");
    assert!(!text.contains("document.write"), "{text}");
    assert_eq!(
        browser::csp(DOM).as_deref(),
        Some("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    );
    assert_eq!(browser::csp("<html><head></head></html>"), None);
    // The single-quoted attribute with a `>` inside stays one attribute.
    let p = browser::tokenize(DOM)
        .into_iter()
        .find(|t| t.attr("data-x").is_some())
        .unwrap();
    assert_eq!(p.attr("data-x"), Some("a>b"));
    assert!(matches!(p, Token::Start { ref name, .. } if name == "p"));

    // Every svg figure must draw: fig-empty fails the check, naming itself.
    let err = catch_unwind(|| browser::assert_figures_drawn(DOM, &["fig-entropy"], "DOM"))
        .expect_err("fig-empty draws nothing");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("figure#fig-empty"), "{message}");
    let err = catch_unwind(|| browser::assert_figures_drawn(DOM, &["fig-missing"], "DOM"))
        .expect_err("fig-missing is not there");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("no figure#fig-missing"), "{message}");
    let drawn = r#"<figure id="fig-a"><svg><path d="M0 0L1 1"></path></svg></figure>"#;
    assert_eq!(
        browser::assert_figures_drawn(drawn, &["fig-a"], "x").len(),
        1
    );
}

#[test]
fn the_markup_check_lists_every_outside_load_and_no_plain_link() {
    let origin = Some("http://127.0.0.1:8080");
    let page = r##"<html><head>
<link rel="stylesheet" href="https://cdn.example.com/a.css">
<link rel="icon" href="/favicon.ico">
<meta http-equiv="refresh" content="5; url=https://example.com/next">
<style>@import "https://fonts.example.com/f.css"; body { background: url('//img.example.com/b.png') }</style>
<script src="http://127.0.0.1:8080/ok.js"></script>
</head><body>
<img src="http://evil.example.com/i.png" srcset="/a.png 1x, https://img.example.com/2x.png 2x">
<div style="background-image: url(https://img.example.com/c.png)"></div>
<svg><image href="https://img.example.com/d.svg"></image><use xlink:href="#local"></use></svg>
<a href="https://github.com/moescope">source</a><a href="/metrics">metrics</a>
<img src="data:image/png;base64,AAAA">
</body></html>"##;
    let found = browser::outside_references(page, origin);
    assert_eq!(
        found,
        [
            "https://cdn.example.com/a.css",
            "https://example.com/next",
            "//img.example.com/b.png",
            "https://fonts.example.com/f.css",
            "http://evil.example.com/i.png",
            "https://img.example.com/2x.png",
            "https://img.example.com/c.png",
            "https://img.example.com/d.svg",
        ]
    );
    // Served from a file, loopback resources are outside too.
    assert!(
        browser::outside_references(page, None).contains(&"http://127.0.0.1:8080/ok.js".to_owned())
    );
    // A refresh of the page itself is no load from outside.
    let refresh = r#"<meta http-equiv="refresh" content="5">"#;
    assert!(browser::outside_references(refresh, origin).is_empty());

    assert!(browser::is_local("file:///tmp/x.html", None));
    assert!(browser::is_local("data:text/plain,x", None));
    assert!(browser::is_local("http://127.0.0.1:8080/metrics", origin));
    assert!(browser::is_local("http://127.0.0.1:8080", origin));
    assert!(!browser::is_local("http://127.0.0.1:8081/metrics", origin));
    assert!(!browser::is_local("http://127.0.0.1:80800/", origin));
    assert!(!browser::is_local("https://example.com/", origin));
}

/// A NetLog as Chromium writes it, cut to what the reader uses: Chromium's own time check
/// (no initiator), a page's stylesheet from outside (initiator `null`: a file page) that
/// redirects, a loopback page's image, and an event type the reader ignores.
fn netlog() -> String {
    let event = |ty: u32, source: u32, params: &str| {
        format!(
            r#"{{"phase":1,"source":{{"id":{source},"type":1}},"time":"1","type":{ty},"params":{params}}}"#
        )
    };
    let events = [
        event(
            3,
            14,
            r#"{"url":"http://clients2.google.com/time/1/current","priority":"IDLE"}"#,
        ),
        event(
            7,
            14,
            r#"{"initiator":"not an origin","load_flags":82,"method":"GET","network_isolation_key":"null null","url":"http://clients2.google.com/time/1/current"}"#,
        ),
        event(
            7,
            107,
            r#"{"initiator":"null","method":"GET","network_isolation_key":"file:// [internally: file://] file:// [internally: file://]","url":"https://cdn.example.invalid/x.css"}"#,
        ),
        event(
            9,
            107,
            r#"{"location":"https://cdn2.example.invalid/y.css"}"#,
        ),
        event(
            7,
            120,
            r#"{"initiator":"http://127.0.0.1:4000","method":"GET","network_isolation_key":"http://127.0.0.1 http://127.0.0.1","url":"http://127.0.0.1:4000/dot.svg"}"#,
        ),
    ];
    format!(
        r#"{{"constants":{{"logEventTypes":{{"REQUEST_ALIVE":3,"URL_REQUEST_START_JOB":7,"URL_REQUEST_REDIRECTED":9}}}},
"events": [
{}
]}}"#,
        events.join(",\n")
    )
}

#[test]
fn the_netlog_reader_tells_the_pages_requests_from_chromiums_own() {
    let log = NetLog::parse(&netlog()).unwrap();
    assert_eq!(log.requests.len(), 4);
    assert_eq!(
        log.all_urls(),
        [
            "http://clients2.google.com/time/1/current",
            "https://cdn.example.invalid/x.css",
            "https://cdn2.example.invalid/y.css",
            "http://127.0.0.1:4000/dot.svg",
        ]
    );
    // The redirect stays with the page's request; Chromium's time check is not the page's.
    let page = log.page_requests();
    assert_eq!(
        page,
        [
            "https://cdn.example.invalid/x.css",
            "https://cdn2.example.invalid/y.css",
            "http://127.0.0.1:4000/dot.svg",
        ]
    );
    let loaded = browser::Loaded {
        dom: String::new(),
        page_requests: page,
        all_requests: log.all_urls(),
        elapsed: std::time::Duration::ZERO,
    };
    assert_eq!(
        browser::outside_requests(&loaded, Some("http://127.0.0.1:4000")),
        [
            "https://cdn.example.invalid/x.css",
            "https://cdn2.example.invalid/y.css"
        ]
    );

    // A log cut short (Chromium killed mid-write) still reads.
    let full = netlog();
    let cut = full.trim_end().trim_end_matches("]}").trim_end().to_owned() + ",\n";
    assert!(serde_json::from_str::<serde_json::Value>(&cut).is_err());
    assert_eq!(NetLog::parse(&cut).unwrap().requests.len(), 4);
    assert!(NetLog::parse("{}").is_err());
}

/// A self-contained page: inline SVG and style, the policy tag, an image from its own origin
/// when `own_image`.
fn good_page(own_image: bool) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:">
<title>good</title><style>figure {{ margin: 0 }}</style></head><body>
<figure id="fig-bars" class="moescope-figure"><svg width="120" height="60"><rect x="0" y="10" width="20" height="50"></rect><rect x="30" y="30" width="20" height="30"></rect><polyline points="0,0 60,30 120,10" fill="none" stroke="black"></polyline></svg><figcaption>bars</figcaption></figure>
{}<a href="https://github.com/">a link is not a load</a>
</body></html>"#,
        if own_image {
            r#"<img src="/dot.svg" alt="dot">"#
        } else {
            ""
        }
    )
}

/// A page that pulls a stylesheet, an image and a script from outside, and has no policy.
const BAD_PAGE: &str = r#"<!doctype html><html><head><title>bad</title>
<link rel="stylesheet" href="https://cdn.moescope-test.invalid/x.css">
<script src="https://cdn.moescope-test.invalid/x.js"></script></head>
<body><img src="https://img.moescope-test.invalid/x.png"><p>bad</p></body></html>"#;

/// The outside URLs of [`BAD_PAGE`].
const BAD_URLS: [&str; 3] = [
    "https://cdn.moescope-test.invalid/x.css",
    "https://cdn.moescope-test.invalid/x.js",
    "https://img.moescope-test.invalid/x.png",
];

#[test]
fn chromium_catches_a_page_file_that_pulls_from_outside() {
    let Some(chromium) = Chromium::for_test("chromium_catches_a_page_file_that_pulls_from_outside")
    else {
        return;
    };
    let dir = ScratchDir::new("pages");
    let bad = dir.path.join("bad.html");
    let good = dir.path.join("good.html");
    std::fs::write(&bad, BAD_PAGE).unwrap();
    std::fs::write(&good, good_page(false)).unwrap();

    let loaded = chromium.load(&format!("file://{}", bad.display()));
    let fetched = browser::outside_requests(&loaded, None);
    for url in BAD_URLS {
        assert!(
            fetched.iter().any(|u| u == url),
            "{url} not among the page's outside requests {fetched:?} (all requests: {:?})",
            loaded.all_requests
        );
    }
    // Chromium's own requests are not blamed on the page.
    assert!(
        fetched.iter().all(|u| u.contains("moescope-test.invalid")),
        "{fetched:?}"
    );
    let err = catch_unwind(AssertUnwindSafe(|| {
        browser::assert_self_contained(&loaded, None, "bad.html");
    }))
    .expect_err("the bad page fails the check");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("fetched from outside"), "{message}");

    let loaded = chromium.load(&format!("file://{}", good.display()));
    browser::assert_self_contained(&loaded, None, "good.html");
    let figures = browser::assert_figures_drawn(&loaded.dom, &["fig-bars"], "good.html");
    assert_eq!(figures[0].shapes, 3);
    println!("a file page loaded in {:?}", loaded.elapsed);
}

#[test]
fn chromium_sees_a_served_pages_requests_and_catches_outside_ones() {
    let Some(chromium) =
        Chromium::for_test("chromium_sees_a_served_pages_requests_and_catches_outside_ones")
    else {
        return;
    };
    let router = Router::new()
        .fast(Method::GET, "/", |_| {
            Response::new(StatusCode::OK, "text/html; charset=utf-8", good_page(true))
        })
        .fast(Method::GET, "/bad", |_| {
            Response::new(StatusCode::OK, "text/html; charset=utf-8", BAD_PAGE)
        })
        .fast(Method::GET, "/dot.svg", |_| {
            Response::new(
                StatusCode::OK,
                "image/svg+xml",
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>"#,
            )
        });
    let server = HttpServer::start("127.0.0.1:0", Limits::default(), router).unwrap();
    let origin = format!("http://{}", server.local_addr());

    let loaded = chromium.load(&format!("{origin}/"));
    // The page's own image request is seen, and it is local.
    assert!(
        loaded.page_requests.contains(&format!("{origin}/dot.svg")),
        "{:?}",
        loaded.page_requests
    );
    browser::assert_self_contained(&loaded, Some(&origin), "the served page");
    browser::assert_figures_drawn(&loaded.dom, &["fig-bars"], "the served page");

    let loaded = chromium.load(&format!("{origin}/bad"));
    let fetched = browser::outside_requests(&loaded, Some(&origin));
    for url in BAD_URLS {
        assert!(fetched.iter().any(|u| u == url), "{url} not in {fetched:?}");
    }
    server.stop();
}
