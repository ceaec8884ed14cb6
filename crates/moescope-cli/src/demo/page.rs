//! The routes both demo modes serve next to `/metrics`: `GET /v1/snapshot`, the live window
//! as a `moescope.snapshot/v1` file (`moescope analyze` and `diff` read it).
//!
//! It is a slow route (on the server's bounded pool of blocking threads): a large model's
//! window takes a while to copy and write out, and `/metrics` (a fast route) never waits for
//! it.

use std::sync::Arc;

use moescope_core::Recorder;
use moescope_http::{Method, Response, Router, StatusCode};

/// The content type of `/v1/snapshot`.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/json";

/// `router` with `GET /v1/snapshot` added, reading `recorder`'s window.
pub fn routes(router: Router, recorder: Arc<Recorder>) -> Router {
    router.slow(Method::GET, "/v1/snapshot", move |_| {
        Response::new(
            StatusCode::OK,
            SNAPSHOT_CONTENT_TYPE,
            recorder.snapshot().to_json_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moescope_core::{Languages, ModelSpec, RouterBatch, Snapshot};
    use moescope_http::Limits;

    /// `GET path` through `router`, without a socket: (status line and headers, body).
    pub(super) fn get(router: &Router, path: &str) -> (String, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = moescope_http::serve_bytes(router, &Limits::default(), request.as_bytes())
            .expect("the router is valid");
        let text = String::from_utf8(out).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        (head.to_owned(), body.to_owned())
    }

    #[test]
    fn the_snapshot_route_serves_the_window_as_a_snapshot_file() {
        let spec = ModelSpec::new("tiny", 4, 1, vec![0, 1]).unwrap();
        let recorder = Arc::new(Recorder::new(spec).unwrap());
        let en = recorder.language("en");
        recorder
            .record(&RouterBatch::at_depth(
                1,
                &[0u32, 1, 2, 3, 3],
                Languages::All(en),
            ))
            .unwrap();
        let router = routes(Router::new(), recorder.clone());
        let (head, body) = get(&router, "/v1/snapshot");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains(SNAPSHOT_CONTENT_TYPE), "{head}");
        let snap = Snapshot::from_json_str(&body).unwrap();
        assert_eq!(snap.languages, recorder.snapshot().languages);
        assert_eq!(snap.languages.len(), 1);
        assert_eq!(snap.model.name, "tiny");
    }
}
