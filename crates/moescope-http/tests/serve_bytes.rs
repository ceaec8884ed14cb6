//! The socket-free entry point (`serve_bytes`) runs the same code path as a listening server.

mod common;

use std::sync::Arc;

use common::test_router;
use moescope_http::{serve_bytes, Limits, Method, Response, Router, StatusCode};

fn reply(router: &Router, input: &[u8]) -> String {
    String::from_utf8_lossy(&serve_bytes(router, &Limits::default(), input).unwrap()).into_owned()
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let router = test_router(0, Arc::default());
    let out = reply(
        &router,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{out}");
    assert!(out.contains("moescope_up 1\n"));
    assert!(out.contains("\r\n\r\n5"));
}

#[test]
fn garbage_and_truncated_input_get_an_answer_or_nothing() {
    let router = test_router(0, Arc::default());
    assert_eq!(reply(&router, b""), "");
    assert!(reply(&router, b"\x00\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    // The body never arrives: the client closed its side.
    let out = reply(
        &router,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    // A declared body over the limit is refused from the header, whatever the route.
    let out = reply(
        &router,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[test]
fn utf8_text_over_the_limit_is_cut_at_a_character_and_the_cut_reported() {
    // A handler like the demo's: take at most 4,096 bytes of text.
    let router = Router::new().slow(Method::POST, "/v1/route", |req| match req.body_text(4096) {
        Ok(t) => Response::text(
            StatusCode::OK,
            format!(
                "chars={} bytes={} cut={}",
                t.text.chars().count(),
                t.text.len(),
                t.cut
            ),
        ),
        Err(e) => Response::text(StatusCode::BAD_REQUEST, e.to_string()),
    });
    // 3,000 two-byte letters: 6,000 bytes; byte 4,096 is a boundary, so shift by one ASCII
    // byte to put the cut inside a letter.
    let text = format!("a{}", "ש".repeat(3000));
    let mut req = format!(
        "POST /v1/route HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    req.extend_from_slice(text.as_bytes());
    let out = reply(&router, &req);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("chars=2048 bytes=4095 cut=true"), "{out}");
    // Invalid UTF-8 inside the limit is still a 400 naming the offset.
    let mut bad = b"POST /v1/route HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\na".to_vec();
    bad.extend_from_slice(b"\xff\xfe");
    let out = reply(&router, &bad);
    assert!(
        out.starts_with("HTTP/1.1 400") && out.ends_with("invalid UTF-8 at byte 1"),
        "{out}"
    );
}
