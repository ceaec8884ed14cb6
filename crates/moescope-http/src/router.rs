//! Requests, responses, and the route table that maps a method and path to a handler.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};

use crate::error::HttpError;
use crate::text::{truncate_utf8, InvalidUtf8, Truncated};

/// A request whose head and body were read within the server's [`Limits`](crate::Limits).
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) peer: Option<SocketAddr>,
}

impl Request {
    /// Builds a request by hand, for testing handlers without a server.
    pub fn new(method: Method, path: &str, query: Option<&str>, body: impl Into<Bytes>) -> Self {
        Self {
            method,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: HeaderMap::new(),
            body: body.into(),
            peer: None,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, as sent (not percent-decoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of query parameter `key`, percent-decoded (`+` reads as a space).
    /// `None` when absent or when the decoded value is not UTF-8.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)?.as_ref() == key)
                .then(|| percent_decode(v).map(Cow::into_owned))
                .flatten()
        })
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, complete (at most [`Limits::max_body_bytes`](crate::Limits::max_body_bytes)).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text cut to at most `max` bytes at a character boundary; see
    /// [`truncate_utf8`].
    ///
    /// # Errors
    /// [`InvalidUtf8`] when the kept part is not UTF-8.
    pub fn body_text(&self, max: usize) -> Result<Truncated<'_>, InvalidUtf8> {
        truncate_utf8(&self.body, max)
    }

    /// The client's address (absent for requests built by hand).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// Decodes `%XX` escapes and `+`; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A response: status, headers and a complete body.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Response {
    /// A response with `status`, a `Content-Type` and a body.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self {
            status,
            headers,
            body: body.into(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// Adds (or replaces) a header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A request handler: synchronous, called with the complete request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync + 'static>;

/// Where a route's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the server's own thread, between network events: for cheap handlers (rendering
    /// metrics, a health check). A fast handler must not block; while it runs, no other
    /// request makes progress.
    Fast,
    /// On a blocking thread, at most [`Limits::max_slow_in_flight`](crate::Limits) at once;
    /// beyond that the request is answered `503` at once. For expensive work (model inference):
    /// fast routes keep answering while slow ones run.
    Slow,
}

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) mode: Mode,
    pub(crate) handler: Handler,
}

/// The route table: exact method and path to a handler and its [`Mode`].
///
/// Requests for a path with no route get `404`; for a known path with another method, `405`.
#[derive(Clone, Default)]
pub struct Router {
    pub(crate) routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for r in &self.routes {
            list.entry(&format_args!("{} {} ({:?})", r.method, r.path, r.mode));
        }
        list.finish()
    }
}

/// What the route table says about a method and path.
pub(crate) enum Lookup<'a> {
    Found(&'a Route),
    WrongMethod,
    NotFound,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Checked when the server starts: paths start with `/`, and a method and
    /// path appear once.
    #[must_use]
    pub fn route<F>(mut self, method: Method, path: &str, mode: Mode, handler: F) -> Self
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.routes.push(Route {
            method,
            path: path.to_owned(),
            mode,
            handler: Arc::new(handler),
        });
        self
    }

    /// Adds a [`Mode::Fast`] route.
    #[must_use]
    pub fn fast<F>(self, method: Method, path: &str, handler: F) -> Self
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.route(method, path, Mode::Fast, handler)
    }

    /// Adds a [`Mode::Slow`] route.
    #[must_use]
    pub fn slow<F>(self, method: Method, path: &str, handler: F) -> Self
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.route(method, path, Mode::Slow, handler)
    }

    /// Whether the table has a route for exactly `method` and `path` (for code that adds a
    /// default route only when its caller did not give one).
    pub fn contains(&self, method: &Method, path: &str) -> bool {
        matches!(self.lookup(method, path), Lookup::Found(_))
    }

    /// Checks paths and duplicates.
    ///
    /// # Errors
    /// [`HttpError::InvalidPath`] or [`HttpError::DuplicateRoute`].
    pub fn validate(&self) -> Result<(), HttpError> {
        for (i, r) in self.routes.iter().enumerate() {
            if !r.path.starts_with('/') {
                return Err(HttpError::InvalidPath {
                    path: r.path.clone(),
                });
            }
            if self.routes[..i]
                .iter()
                .any(|o| o.method == r.method && o.path == r.path)
            {
                return Err(HttpError::DuplicateRoute {
                    method: r.method.to_string(),
                    path: r.path.clone(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut path_known = false;
        for r in &self.routes {
            if r.path == path {
                if r.method == method {
                    return Lookup::Found(r);
                }
                path_known = true;
            }
        }
        if path_known {
            Lookup::WrongMethod
        } else {
            Lookup::NotFound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_decodes() {
        let r = Request::new(
            Method::GET,
            "/x",
            Some("a=1&lang=zh%2DHant&t=hello+w%C3%B6rld&bad=%zz&e"),
            "",
        );
        assert_eq!(r.query_param("lang").as_deref(), Some("zh-Hant"));
        assert_eq!(r.query_param("t").as_deref(), Some("hello w\u{f6}rld"));
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.query_param("bad"), None);
        assert_eq!(r.query_param("e").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        let trailing = Request::new(Method::GET, "/x", Some("k=%4"), "");
        assert_eq!(trailing.query_param("k"), None);
    }

    #[test]
    fn router_validates_and_looks_up() {
        let ok = |_: &Request| Response::text(StatusCode::OK, "ok");
        let r = Router::new()
            .fast(Method::GET, "/metrics", ok)
            .slow(Method::POST, "/v1/route", ok);
        r.validate().unwrap();
        assert!(
            matches!(r.lookup(&Method::GET, "/metrics"), Lookup::Found(x) if x.mode == Mode::Fast)
        );
        assert!(matches!(
            r.lookup(&Method::POST, "/metrics"),
            Lookup::WrongMethod
        ));
        assert!(matches!(r.lookup(&Method::GET, "/nope"), Lookup::NotFound));
        assert!(r.contains(&Method::GET, "/metrics"));
        assert!(!r.contains(&Method::POST, "/metrics"));
        assert!(!r.contains(&Method::GET, "/v1/route"));
        assert!(!r.contains(&Method::GET, "/"));
        let dup = r.clone().fast(Method::GET, "/metrics", ok);
        assert!(matches!(
            dup.validate(),
            Err(HttpError::DuplicateRoute { .. })
        ));
        let bad = Router::new().fast(Method::GET, "metrics", ok);
        assert!(matches!(bad.validate(), Err(HttpError::InvalidPath { .. })));
    }
}
