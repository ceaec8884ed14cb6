//! Raw bytes as one client connection to the HTTP server (hyper's parser, the limits, the
//! router, body reading, fast and slow handlers): never panics, always terminates, and every
//! answer starts with a well-formed status line (`HTTP/1.1`, or `HTTP/1.0` for 1.0 clients).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use moescope_http::{serve_bytes, Limits, Method, Response, Router, StatusCode};

fn setup() -> &'static (Router, Limits) {
    static SETUP: OnceLock<(Router, Limits)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let router = Router::new()
            .fast(Method::GET, "/metrics", |_| {
                Response::new(StatusCode::OK, "text/plain; version=0.0.4", "up 1\n")
            })
            .slow(Method::POST, "/v1/route", |req| match req.body_text(64) {
                Ok(t) => Response::text(
                    StatusCode::OK,
                    format!(
                        "{} {} {:?}",
                        t.text.len(),
                        t.cut,
                        req.query_param("lang").map(|l| l.len())
                    ),
                ),
                Err(e) => Response::text(StatusCode::BAD_REQUEST, e.to_string()),
            });
        // Small limits so that short inputs reach every limit.
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 16,
            max_uri_bytes: 256,
            max_body_bytes: 256,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        (router, limits)
    })
}

fuzz_target!(|data: &[u8]| {
    let (router, limits) = setup();
    let out = serve_bytes(router, limits, data).expect("serve_bytes");
    let mut rest = &out[..];
    // Every response starts with a status line; bodies are short and known, so scanning for
    // status lines is enough.
    let is_status = |w: &[u8]| w == b"HTTP/1.1 " || w == b"HTTP/1.0 ";
    if !rest.is_empty() {
        assert!(
            is_status(&rest[..rest.len().min(9)]),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    while let Some(i) = rest.windows(9).position(is_status) {
        let code = &rest[i + 9..(i + 12).min(rest.len())];
        assert!(
            code.len() == 3 && code.iter().all(u8::is_ascii_digit),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        rest = &rest[i + 12..];
    }
});
