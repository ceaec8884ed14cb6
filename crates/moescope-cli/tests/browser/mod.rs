//! Headless Chromium for the page tests: find it, load a page, and read back what a reader's
//! browser made of it.
//!
//! - [`Chromium::load`] runs `chromium --headless --dump-dom` on a URL with a fresh profile and
//!   Chromium's NetLog on: the DOM after load, and every request the page made.
//! - [`figures`] reads each `<figure id="fig-…">` of that DOM: its `<svg>` elements and how many
//!   shapes they draw (paths with a `d`, polylines with points, rectangles with an area, ...).
//! - [`outside_requests`] and [`outside_references`] list what a page fetched (or would fetch)
//!   from anywhere but the page's own origin; [`csp`] reads its Content-Security-Policy meta tag.
//!
//! Chromium also talks to the network on its own (time checks, account lists) even with
//! `--disable-background-networking`; those requests are told apart from the page's by their
//! initiator and network isolation key, and never leave the machine: every host name resolves
//! to nothing (`--host-resolver-rules`), loopback excepted.
//!
//! Without Chromium the tests say they are skipped, unless `MOESCOPE_REQUIRE_CHROMIUM=1`
//! (scripts/test.sh sets it after installing the Debian package `chromium`): then they fail.
//! `MOESCOPE_CHROMIUM` names the binary when it is not `chromium`, `chromium-browser`,
//! `google-chrome` or `google-chrome-stable` on PATH.

#![allow(dead_code)] // each test file uses its own part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The variable that turns a missing Chromium from a skip into a failure.
pub const REQUIRE_ENV: &str = "MOESCOPE_REQUIRE_CHROMIUM";

/// Longest a single Chromium run may take before it is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The flags every run gets: headless, no sandbox (containers, root), no GPU, nothing of
/// Chromium's own first-run, update or sync traffic, and no name resolution except loopback
/// (so nothing can reach the outside even if a page asked).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
];

/// A Chromium binary.
#[derive(Debug, Clone)]
pub struct Chromium {
    /// Its path.
    pub path: PathBuf,
}

/// What Chromium made of a page.
#[derive(Debug)]
pub struct Loaded {
    /// The DOM after load, serialized (`--dump-dom`).
    pub dom: String,
    /// Every URL the page requested (its own navigation included), from the NetLog.
    pub page_requests: Vec<String>,
    /// Every URL request in the NetLog, Chromium's own included.
    pub all_requests: Vec<String>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Chromium {
    /// `MOESCOPE_CHROMIUM`, else the first of the usual names on PATH.
    pub fn find() -> Option<Chromium> {
        if let Some(path) = std::env::var_os("MOESCOPE_CHROMIUM") {
            let path = PathBuf::from(path);
            return path.is_file().then_some(Chromium { path });
        }
        let paths = std::env::var_os("PATH")?;
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .map(|path| Chromium { path })
    }

    /// [`find`](Self::find) for test `test`: `None` after saying the test is skipped, or a
    /// panic when `MOESCOPE_REQUIRE_CHROMIUM=1`.
    pub fn for_test(test: &str) -> Option<Chromium> {
        let found = Self::find();
        if found.is_none() {
            let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: no Chromium (chromium, chromium-browser, google-chrome on PATH, or \
                 MOESCOPE_CHROMIUM) and {REQUIRE_ENV}=1 (install the Debian package `chromium`, \
                 as scripts/browser.sh does)"
            );
            println!(
                "SKIPPED {test}: Chromium is not installed (apt-get install chromium, or set \
                 MOESCOPE_CHROMIUM)"
            );
        }
        found
    }

    /// Loads `url` in a fresh profile and returns the DOM after load and the requests made.
    ///
    /// # Panics
    /// When Chromium fails, times out, or writes no readable NetLog.
    pub fn load(&self, url: &str) -> Loaded {
        let dir = ScratchDir::new("load");
        let netlog = dir.path.join("netlog.json");
        let start = Instant::now();
        let out = self.run(
            &dir,
            &[
                format!("--log-net-log={}", netlog.display()),
                "--dump-dom".to_owned(),
                url.to_owned(),
            ],
        );
        let elapsed = start.elapsed();
        let log = std::fs::read_to_string(&netlog)
            .unwrap_or_else(|e| panic!("Chromium wrote no NetLog at {}: {e}", netlog.display()));
        let requests = NetLog::parse(&log).unwrap_or_else(|e| panic!("NetLog of {url}: {e}"));
        let mut page_requests = requests.page_requests();
        if url.starts_with("http") && !page_requests.iter().any(|u| u == url) {
            // The navigation itself is Chromium's (no initiator): count it as the page's.
            if requests.all_urls().iter().any(|u| u == url) {
                page_requests.insert(0, url.to_owned());
            }
        }
        Loaded {
            dom: out,
            page_requests,
            all_requests: requests.all_urls(),
            elapsed,
        }
    }

    /// Saves a PNG screenshot of `url` at `width` × `height` CSS pixels to `png`.
    ///
    /// # Panics
    /// When Chromium fails or writes no file.
    pub fn screenshot(&self, url: &str, png: &Path, width: u32, height: u32) {
        let dir = ScratchDir::new("shot");
        self.run(
            &dir,
            &[
                format!("--screenshot={}", png.display()),
                format!("--window-size={width},{height}"),
                url.to_owned(),
            ],
        );
        assert!(png.is_file(), "Chromium wrote no screenshot of {url}");
    }

    /// Runs Chromium with [`FLAGS`], a fresh profile in `dir`, and `args`; its stdout.
    fn run(&self, dir: &ScratchDir, args: &[String]) -> String {
        let profile = dir.path.join("profile");
        let mut child = Command::new(&self.path)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for Chromium") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        match status {
            Some(s) if s.success() => out,
            Some(s) => panic!("Chromium {args:?} exited with {s}; stderr:\n{err}"),
            None => panic!("Chromium {args:?} ran past {RUN_TIMEOUT:?}; stderr:\n{err}"),
        }
    }
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct ScratchDir {
    /// Its path.
    pub path: PathBuf,
}

impl ScratchDir {
    /// A new empty directory named after `what`, this process and a counter.
    pub fn new(what: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "moescope-browser-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// --- the NetLog ------------------------------------------------------------------------------

/// One URL request of a NetLog.
#[derive(Debug, Clone, PartialEq)]
pub struct NetRequest {
    /// The NetLog source it belongs to (one per request; a redirect stays in its source).
    pub source: u64,
    /// The URL started (or redirected to).
    pub url: String,
    /// The origin that asked for it; `"not an origin"` for Chromium's own requests and
    /// navigations typed on the command line.
    pub initiator: Option<String>,
    /// The network isolation key (the top frame's site, for a page's requests).
    pub isolation_key: Option<String>,
}

/// The URL requests of a NetLog (`--log-net-log`), Chromium's JSON format.
#[derive(Debug, Default)]
pub struct NetLog {
    /// Every `URL_REQUEST_START_JOB` (and redirect), in order.
    pub requests: Vec<NetRequest>,
}

impl NetLog {
    /// Parses a NetLog file. A log cut short (Chromium killed) lacks its closing brackets;
    /// they are added.
    pub fn parse(text: &str) -> Result<NetLog, String> {
        let json: Value = serde_json::from_str(text).or_else(|first| {
            let trimmed = text.trim_end().trim_end_matches(',');
            serde_json::from_str(&format!("{trimmed}]}}")).map_err(|_| first.to_string())
        })?;
        let types = json["constants"]["logEventTypes"]
            .as_object()
            .ok_or("no constants.logEventTypes")?;
        let id = |name: &str| types.get(name).and_then(Value::as_u64);
        let start = id("URL_REQUEST_START_JOB").ok_or("no URL_REQUEST_START_JOB event type")?;
        let redirect = id("URL_REQUEST_REDIRECT_JOB");
        let redirected = id("URL_REQUEST_REDIRECTED");
        let events = json["events"].as_array().ok_or("no events")?;
        let mut requests = Vec::new();
        for e in events {
            let Some(kind) = e["type"].as_u64() else {
                continue;
            };
            let source = e["source"]["id"].as_u64().unwrap_or(u64::MAX);
            let params = &e["params"];
            let url = if kind == start {
                params["url"].as_str()
            } else if Some(kind) == redirected || Some(kind) == redirect {
                params["location"].as_str().or(params["url"].as_str())
            } else {
                None
            };
            if let Some(url) = url {
                requests.push(NetRequest {
                    source,
                    url: url.to_owned(),
                    initiator: params["initiator"].as_str().map(str::to_owned),
                    isolation_key: params["network_isolation_key"].as_str().map(str::to_owned),
                });
            }
        }
        Ok(NetLog { requests })
    }

    /// Every URL requested, Chromium's own requests included, without repeats.
    pub fn all_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for r in &self.requests {
            if !urls.contains(&r.url) {
                urls.push(r.url.clone());
            }
        }
        urls
    }

    /// The URLs the page asked for: every URL of a request source in which some request has an
    /// origin as initiator, or an isolation key naming a local site (`file://`, loopback).
    /// Chromium's own requests have neither.
    pub fn page_requests(&self) -> Vec<String> {
        let is_page = |r: &NetRequest| {
            let initiated = r
                .initiator
                .as_deref()
                .is_some_and(|i| !i.is_empty() && i != "not an origin");
            let local = r.isolation_key.as_deref().is_some_and(|k| {
                k.contains("file://") || k.contains("http://127.0.0.1") || k.contains("localhost")
            });
            initiated || local
        };
        let sources: Vec<u64> = self
            .requests
            .iter()
            .filter(|r| is_page(r))
            .map(|r| r.source)
            .collect();
        let mut urls: Vec<String> = Vec::new();
        for r in &self.requests {
            if sources.contains(&r.source) && !urls.contains(&r.url) {
                urls.push(r.url.clone());
            }
        }
        urls
    }
}

/// Whether `url` stays on this machine: `file:`, `data:`, `blob:`, `about:`, or under
/// `origin` (`http://127.0.0.1:PORT`) when one is given.
pub fn is_local(url: &str, origin: Option<&str>) -> bool {
    let lower = url.to_ascii_lowercase();
    if ["file:", "data:", "blob:", "about:"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return true;
    }
    origin.is_some_and(|o| {
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        lower == o || lower.starts_with(&format!("{o}/")) || lower.starts_with(&format!("{o}?"))
    })
}

/// The page's requests that left the page's origin (`origin`, `http://127.0.0.1:PORT`, for a
/// served page; `None` for a file).
pub fn outside_requests(loaded: &Loaded, origin: Option<&str>) -> Vec<String> {
    loaded
        .page_requests
        .iter()
        .filter(|u| !is_local(u, origin))
        .cloned()
        .collect()
}

// --- the DOM ---------------------------------------------------------------------------------

/// A piece of serialized HTML.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// `<name attrs>` (names lowercased; attribute values with entities decoded).
    Start {
        /// Element name.
        name: String,
        /// Attributes in order.
        attrs: Vec<(String, String)>,
    },
    /// `</name>`.
    End {
        /// Element name.
        name: String,
    },
    /// Text between tags (entities decoded); the raw text of `<script>` and `<style>` too.
    Text(String),
}

impl Token {
    /// The value of attribute `key` of a start tag.
    pub fn attr(&self, key: &str) -> Option<&str> {
        match self {
            Token::Start { attrs, .. } => attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    fn is_start(&self, tag: &str) -> bool {
        matches!(self, Token::Start { name, .. } if name == tag)
    }

    fn is_end(&self, tag: &str) -> bool {
        matches!(self, Token::End { name } if name == tag)
    }
}

/// Decodes the character references a serializer writes (`&amp;`, `&lt;`, `&gt;`, `&quot;`,
/// `&#39;`, `&nbsp;`, numeric ones); others stay as they are.
fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits serialized HTML into tags and text. Comments, doctypes and processing instructions
/// are dropped; `<script>`, `<style>`, `<textarea>` and `<title>` hold raw text to their end
/// tag.
pub fn tokenize(html: &str) -> Vec<Token> {
    let bytes = html.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    let flush = |tokens: &mut Vec<Token>, from: usize, to: usize| {
        if to > from {
            tokens.push(Token::Text(decode(&html[from..to])));
        }
    };
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            flush(&mut tokens, text_start, i);
            i = rest.find("-->").map_or(bytes.len(), |e| i + e + 3);
            text_start = i;
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            flush(&mut tokens, text_start, i);
            i = rest.find('>').map_or(bytes.len(), |e| i + e + 1);
            text_start = i;
            continue;
        }
        let closing = rest.starts_with("</");
        let name_from = i + if closing { 2 } else { 1 };
        let name_len = html[name_from..]
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(html.len() - name_from);
        let name = &html[name_from..name_from + name_len];
        if name.is_empty() || !name.as_bytes()[0].is_ascii_alphabetic() {
            i += 1; // a `<` in text
            continue;
        }
        flush(&mut tokens, text_start, i);
        let name = name.to_ascii_lowercase();
        // The attributes, up to the `>` that is outside quotes.
        let mut j = name_from + name_len;
        let mut attrs = Vec::new();
        loop {
            while j < bytes.len() && (bytes[j].is_ascii_whitespace() || bytes[j] == b'/') {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] == b'>' {
                j += 1;
                break;
            }
            let key_len = html[j..]
                .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>' || c == '/')
                .unwrap_or(html.len() - j);
            let key = html[j..j + key_len].to_ascii_lowercase();
            j += key_len.max(1);
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            let mut value = String::new();
            if j < bytes.len() && bytes[j] == b'=' {
                j += 1;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
                    let quote = bytes[j] as char;
                    let end = html[j + 1..].find(quote).map_or(html.len(), |e| j + 1 + e);
                    value = decode(&html[j + 1..end]);
                    j = end + 1;
                } else {
                    let end = html[j..]
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .map_or(html.len(), |e| j + e);
                    value = decode(&html[j..end]);
                    j = end;
                }
            }
            if !key.is_empty() {
                attrs.push((key, value));
            }
        }
        i = j.min(bytes.len());
        text_start = i;
        if closing {
            tokens.push(Token::End { name });
            continue;
        }
        let raw = matches!(name.as_str(), "script" | "style" | "textarea" | "title");
        tokens.push(Token::Start {
            name: name.clone(),
            attrs,
        });
        if raw {
            let close = format!("</{name}");
            let end = html[i..]
                .to_ascii_lowercase()
                .find(&close)
                .map_or(html.len(), |e| i + e);
            flush(&mut tokens, i, end);
            i = end;
            text_start = i;
        }
    }
    flush(&mut tokens, text_start, bytes.len());
    tokens
}

/// One `<figure id="fig-…">` as rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Its `id`.
    pub id: String,
    /// Its `class`.
    pub class: String,
    /// Its `data-status` (`"note"`: a note stands where a chart cannot be drawn).
    pub status: Option<String>,
    /// `<svg>` elements inside it.
    pub svgs: usize,
    /// Shapes inside those that draw something: a `path` with a `d`, a `polyline` or
    /// `polygon` with `points`, a `rect` whose width and height are not zero, a `circle` or
    /// `ellipse` with a radius, a `line`.
    pub shapes: usize,
    /// Its text (caption, labels), whitespace collapsed.
    pub text: String,
}

/// Whether a shape element draws anything.
fn draws(token: &Token) -> bool {
    let Token::Start { name, .. } = token else {
        return false;
    };
    let nonzero = |key: &str| {
        // Absent, or not a plain number (a percentage, say): assumed to draw.
        token.attr(key).is_none_or(|v| {
            let number = v.trim().trim_end_matches("px").parse::<f64>();
            !matches!(number, Ok(x) if x == 0.0)
        })
    };
    let nonempty = |key: &str| token.attr(key).is_some_and(|v| !v.trim().is_empty());
    match name.as_str() {
        "path" => nonempty("d"),
        "polyline" | "polygon" => nonempty("points"),
        "rect" => nonzero("width") && nonzero("height"),
        "circle" => nonzero("r"),
        "ellipse" => nonzero("rx") && nonzero("ry"),
        "line" => true,
        _ => false,
    }
}

/// Collapses runs of whitespace into one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every `<figure>` whose id starts with `fig-`, in document order.
pub fn figures(dom: &str) -> Vec<Figure> {
    let tokens = tokenize(dom);
    let mut out = Vec::new();
    for (at, t) in tokens.iter().enumerate() {
        let Some(id) = t
            .attr("id")
            .filter(|id| t.is_start("figure") && id.starts_with("fig-"))
        else {
            continue;
        };
        let (mut depth, mut svg_depth) = (0usize, 0usize);
        let (mut svgs, mut shapes, mut text) = (0, 0, String::new());
        for t in &tokens[at..] {
            match t {
                Token::Start { name, .. } => {
                    match name.as_str() {
                        "figure" => depth += 1,
                        "svg" => {
                            svgs += 1;
                            svg_depth += 1;
                        }
                        _ => {}
                    }
                    if svg_depth > 0 && draws(t) {
                        shapes += 1;
                    }
                }
                Token::End { name } => match name.as_str() {
                    "figure" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "svg" => svg_depth = svg_depth.saturating_sub(1),
                    _ => {}
                },
                Token::Text(s) => {
                    text.push(' ');
                    text.push_str(s);
                }
            }
        }
        out.push(Figure {
            id: id.to_owned(),
            class: t.attr("class").unwrap_or_default().to_owned(),
            status: t.attr("data-status").map(str::to_owned),
            svgs,
            shapes,
            text: squash(&text),
        });
    }
    out
}

/// The page's text outside `<script>` and `<style>`, whitespace collapsed.
pub fn text(dom: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for t in tokenize(dom) {
        match &t {
            Token::Start { name, .. } => skip = matches!(name.as_str(), "script" | "style"),
            Token::End { .. } => skip = false,
            Token::Text(s) if !skip => {
                out.push(' ');
                out.push_str(s);
            }
            Token::Text(_) => {}
        }
    }
    squash(&out)
}

/// The `content` of the page's `<meta http-equiv="Content-Security-Policy">`, if any.
pub fn csp(dom: &str) -> Option<String> {
    tokenize(dom).into_iter().find_map(|t| {
        let equiv = t.attr("http-equiv")?;
        (t.is_start("meta") && equiv.eq_ignore_ascii_case("content-security-policy"))
            .then(|| t.attr("content").unwrap_or_default().to_owned())
    })
}

/// Whether a reference in the page points off this machine: an absolute `http(s):` URL or a
/// scheme-relative `//host` one not under `origin`.
fn is_outside_reference(value: &str, origin: Option<&str>) -> bool {
    let v = value.trim().to_ascii_lowercase();
    let absolute = v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//");
    absolute && !is_local(value.trim(), origin)
}

/// The URLs in `url(…)` and `@import "…"` of a stylesheet.
fn css_urls(css: &str) -> Vec<String> {
    let mut urls = Vec::new();
    let lower = css.to_ascii_lowercase();
    for (marker, ends) in [("url(", &[')'][..]), ("@import", &[';', ')'][..])] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(marker) {
            let start = from + at + marker.len();
            let end = lower[start..]
                .find(|c: char| ends.contains(&c))
                .map_or(css.len(), |e| start + e);
            let raw = css[start..end]
                .trim()
                .trim_start_matches("url(")
                .trim_matches(|c| c == '"' || c == '\'' || c == ' ');
            urls.push(raw.to_owned());
            from = end;
        }
    }
    urls
}

/// Every resource the page's markup would load from off this machine (or from another origin
/// than `origin`): `src`, `srcset`, `poster`, `data`, `<link href>`, SVG `<use>`/`<image>`
/// `href`, `xlink:href`, a meta refresh's target, and `url(…)`/`@import` in styles. Plain
/// `<a href>` links are not loads and are not listed.
pub fn outside_references(dom: &str, origin: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_style = false;
    for t in tokenize(dom) {
        match &t {
            Token::Start { name, attrs } => {
                in_style = name == "style";
                for (key, value) in attrs {
                    let candidates: Vec<String> = match key.as_str() {
                        "src" | "poster" | "data" | "xlink:href" | "action" | "formaction" => {
                            vec![value.clone()]
                        }
                        "srcset" => value
                            .split(',')
                            .filter_map(|c| c.split_whitespace().next())
                            .map(str::to_owned)
                            .collect(),
                        "href" if matches!(name.as_str(), "link" | "use" | "image" | "script") => {
                            vec![value.clone()]
                        }
                        "content"
                            if t.attr("http-equiv")
                                .is_some_and(|e| e.eq_ignore_ascii_case("refresh")) =>
                        {
                            value
                                .split_once(';')
                                .map(|(_, u)| {
                                    u.trim()
                                        .trim_start_matches(|c: char| c != '=')
                                        .trim_start_matches('=')
                                        .trim_matches(|c| c == '"' || c == '\'')
                                        .to_owned()
                                })
                                .into_iter()
                                .collect()
                        }
                        "style" => css_urls(value),
                        _ => Vec::new(),
                    };
                    found.extend(
                        candidates
                            .into_iter()
                            .filter(|c| is_outside_reference(c, origin)),
                    );
                }
            }
            Token::End { .. } => in_style = false,
            Token::Text(css) if in_style => found.extend(
                css_urls(css)
                    .into_iter()
                    .filter(|c| is_outside_reference(c, origin)),
            ),
            Token::Text(_) => {}
        }
    }
    found
}

/// Asserts that the page in `loaded` fetched nothing and references nothing from outside
/// (`origin`: the page's `http://127.0.0.1:PORT`, `None` for a file), and carries a
/// Content-Security-Policy meta tag that forbids loading by default. `what` names the page in
/// messages.
pub fn assert_self_contained(loaded: &Loaded, origin: Option<&str>, what: &str) {
    let fetched = outside_requests(loaded, origin);
    assert!(
        fetched.is_empty(),
        "{what} fetched from outside: {fetched:?} (all page requests: {:?})",
        loaded.page_requests
    );
    let referenced = outside_references(&loaded.dom, origin);
    assert!(
        referenced.is_empty(),
        "{what} references outside resources: {referenced:?}"
    );
    let policy = csp(&loaded.dom).unwrap_or_else(|| {
        panic!("{what} has no Content-Security-Policy meta tag");
    });
    assert!(
        policy.contains("default-src 'none'") || policy.contains("default-src 'self'"),
        "{what}: the Content-Security-Policy does not restrict loading by default: {policy:?}"
    );
}

/// Asserts that every figure of `expected` is in the page with an `<svg>`, and that every
/// figure of the page with an `<svg>` draws something in it. Returns the figures found.
pub fn assert_figures_drawn(dom: &str, expected: &[&str], what: &str) -> Vec<Figure> {
    let found = figures(dom);
    for id in expected {
        let fig = found.iter().find(|f| f.id == *id).unwrap_or_else(|| {
            panic!(
                "{what}: no figure#{id}; figures: {:?}",
                found.iter().map(|f| &f.id).collect::<Vec<_>>()
            )
        });
        assert!(fig.svgs > 0, "{what}: figure#{id} has no <svg>: {fig:?}");
    }
    for fig in found.iter().filter(|f| f.svgs > 0) {
        assert!(
            fig.shapes > 0,
            "{what}: figure#{} has {} <svg> but draws nothing",
            fig.id,
            fig.svgs
        );
    }
    found
}

/// The start tags of the page that have attribute `key` equal to `value`, with the text each
/// element holds (whitespace collapsed).
pub fn elements_with(dom: &str, key: &str, value: &str) -> Vec<(Token, String)> {
    let tokens = tokenize(dom);
    let mut out = Vec::new();
    for (at, t) in tokens.iter().enumerate() {
        let Token::Start { name, .. } = t else {
            continue;
        };
        if t.attr(key) != Some(value) {
            continue;
        }
        let void = matches!(
            name.as_str(),
            "meta" | "link" | "img" | "br" | "hr" | "input" | "source" | "col" | "area" | "base"
        );
        let mut text = String::new();
        if !void {
            let mut depth = 0usize;
            for t in &tokens[at..] {
                match t {
                    Token::Start { name: n, .. } if n == name => depth += 1,
                    Token::End { name: n } if n == name => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Text(s) => {
                        text.push(' ');
                        text.push_str(s);
                    }
                    _ => {}
                }
            }
        }
        out.push((t.clone(), squash(&text)));
    }
    out
}
