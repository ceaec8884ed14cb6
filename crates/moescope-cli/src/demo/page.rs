//! The routes both demo modes serve next to `/metrics`:
//!
//! - `GET /`: the live page, the figures of `moescope report` over the current window with
//!   the collapse flag per language at the top, reloading itself every few seconds
//!   ([`moescope_report::render_live_page`]); self-contained HTML (inline SVG and CSS, no
//!   script, nothing fetched), with its Content-Security-Policy also sent as a header.
//! - `GET /v1/snapshot`: the window as a `moescope.snapshot/v1` file (`moescope analyze`,
//!   `diff` and `report` read it).
//!
//! Both are slow routes (on the server's bounded pool of blocking threads): the page analyses
//! the window, and a large model's window takes a while to copy and write out; `/metrics`, a
//! fast route, never waits for them.

use std::sync::Arc;

use moescope_core::Recorder;
use moescope_http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use moescope_http::{Method, Response, Router, StatusCode};
use moescope_publish::PublisherConfig;
use moescope_report::{render_live_page, LivePageOptions, CSP};

/// The content type of `/v1/snapshot`.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/json";

/// The content type of the live page.
pub const PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The live page's settings for a demo publishing with `config`: the same reference language,
/// LSI threshold, collapse settings and per-language collapse baselines as `/metrics`,
/// reloading once per publication interval (2 to 60 s).
pub fn page_options(config: &PublisherConfig) -> LivePageOptions {
    let seconds = config.interval.as_secs_f64().ceil().clamp(2.0, 60.0) as u32;
    let mut options = LivePageOptions::new(config.reference.clone())
        .with_collapse(config.collapse)
        .with_lsi_threshold(config.lsi_threshold)
        .with_refresh_seconds(seconds)
        .with_links("/metrics", "/v1/snapshot");
    options.collapse_baselines = config.collapse_baselines.clone();
    options
}

/// `router` with `GET /` (the live page drawn with `options`) and `GET /v1/snapshot` added,
/// both reading `recorder`'s window.
pub fn routes(router: Router, recorder: Arc<Recorder>, options: LivePageOptions) -> Router {
    let window = recorder.clone();
    router
        .slow(Method::GET, "/v1/snapshot", move |_| {
            Response::new(
                StatusCode::OK,
                SNAPSHOT_CONTENT_TYPE,
                window.snapshot().to_json_string(),
            )
        })
        .slow(Method::GET, "/", move |_| live_page(&recorder, &options))
}

/// The live page of `recorder`'s window now (with its buckets: the spread of the collapse
/// score across them), or `500` naming what failed.
fn live_page(recorder: &Recorder, options: &LivePageOptions) -> Response {
    match render_live_page(&recorder.snapshot_with_buckets(), options) {
        Ok(html) => Response::new(StatusCode::OK, PAGE_CONTENT_TYPE, html)
            .with_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))
            .with_header(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        Err(e) => Response::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("moescope demo: cannot draw the live page: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moescope_core::{Languages, ModelSpec, RouterBatch, Snapshot};
    use moescope_http::Limits;

    /// `GET path` through `router`, without a socket: (status line and headers, body).
    fn get(router: &Router, path: &str) -> (String, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = moescope_http::serve_bytes(router, &Limits::default(), request.as_bytes())
            .expect("the router is valid");
        let text = String::from_utf8(out).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        (head.to_owned(), body.to_owned())
    }

    /// A recorder with `en` spread over the 4 experts of both layers and `he` on expert 0 in
    /// the deep one.
    fn recorder() -> Arc<Recorder> {
        let spec = ModelSpec::new("tiny", 4, 1, vec![0, 1]).unwrap();
        let recorder = Arc::new(Recorder::new(spec).unwrap());
        let (en, he) = (recorder.language("en"), recorder.language("he"));
        let spread: Vec<u32> = (0..400).map(|i| i % 4).collect();
        for depth in 0..2 {
            recorder
                .record(&RouterBatch::at_depth(depth, &spread, Languages::All(en)))
                .unwrap();
        }
        recorder
            .record(&RouterBatch::at_depth(0, &spread, Languages::All(he)))
            .unwrap();
        recorder
            .record(&RouterBatch::at_depth(1, &[0u32; 400], Languages::All(he)))
            .unwrap();
        recorder
    }

    #[test]
    fn the_snapshot_route_serves_the_window_as_a_snapshot_file() {
        let recorder = recorder();
        let router = routes(Router::new(), recorder.clone(), LivePageOptions::new("en"));
        let (head, body) = get(&router, "/v1/snapshot");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains(SNAPSHOT_CONTENT_TYPE), "{head}");
        let snap = Snapshot::from_json_str(&body).unwrap();
        assert_eq!(snap.languages, recorder.snapshot().languages);
        assert_eq!(snap.languages.len(), 2);
        assert_eq!(snap.model.name, "tiny");
    }

    #[test]
    fn the_live_page_draws_the_window_with_the_demos_settings() {
        let mut config = PublisherConfig {
            interval: std::time::Duration::from_millis(7_500),
            lsi_threshold: 0.25,
            ..PublisherConfig::default()
        };
        config.collapse_baselines.insert("he".into(), 0.2);
        let options = page_options(&config);
        assert_eq!(options.refresh_seconds, 8);
        assert_eq!(options.reference, config.reference);
        assert_eq!(options.collapse, config.collapse);
        assert_eq!(options.lsi_threshold, 0.25);
        assert_eq!(options.collapse_baselines, config.collapse_baselines);
        let router = routes(Router::new(), recorder(), options);
        let (head, body) = get(&router, "/");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/html"), "{head}");
        assert!(lower.contains("cache-control: no-store"), "{head}");
        assert!(
            lower.contains(&format!(
                "content-security-policy: {}",
                CSP.to_ascii_lowercase()
            )),
            "{head}"
        );
        assert!(body.contains(CSP), "no policy meta tag");
        assert!(
            body.contains(r#"http-equiv="refresh" content="8""#),
            "no reload"
        );
        assert!(body.contains(r#"href="/metrics""#) && body.contains(r#"href="/v1/snapshot""#));
        // One figure per id, and the flags for both languages.
        for id in moescope_report::FIGURE_IDS {
            assert_eq!(
                body.matches(&format!("<figure id=\"{id}\"")).count(),
                1,
                "{id}"
            );
        }
        assert!(body.contains(r#"data-lang="he""#) && body.contains(r#"data-lang="en""#));

        // The interval bounds: at least 2 s, at most 60 s.
        let fast = PublisherConfig {
            interval: std::time::Duration::from_millis(250),
            ..PublisherConfig::default()
        };
        assert_eq!(page_options(&fast).refresh_seconds, 2);
        let slow = PublisherConfig {
            interval: std::time::Duration::from_secs(600),
            ..PublisherConfig::default()
        };
        assert_eq!(page_options(&slow).refresh_seconds, 60);
    }

    #[test]
    fn an_empty_window_still_gets_a_page() {
        let spec = ModelSpec::new("tiny", 4, 1, vec![0, 1]).unwrap();
        let recorder = Arc::new(Recorder::new(spec).unwrap());
        let router = routes(Router::new(), recorder, LivePageOptions::new("en"));
        let (head, body) = get(&router, "/");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        assert!(body.contains(CSP));
    }
}
