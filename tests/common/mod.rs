//! Helpers shared by the end-to-end tests: one HTTP GET, one exposition parser, one recorder
//! on a manual clock, and the offline analysis as JSON.

#![allow(dead_code)] // each test file uses a part

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use moescope_core::{ManualClock, ModelSpec, Recorder, Snapshot, WindowConfig};
use serde_json::Value;

/// `GET path` over HTTP/1.1: the status line and headers, and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: moescope\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// A series: metric name and labels.
pub type Series = (String, BTreeMap<String, String>);

/// A Prometheus text exposition, parsed: every sample by series, HELP names, TYPE by name.
pub struct Exposition {
    pub samples: BTreeMap<Series, f64>,
    pub help: BTreeSet<String>,
    pub types: BTreeMap<String, String>,
}

/// Parses the text exposition format (the subset the endpoint writes).
pub fn parse_exposition(body: &str) -> Exposition {
    let mut e = Exposition {
        samples: BTreeMap::new(),
        help: BTreeSet::new(),
        types: BTreeMap::new(),
    };
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "empty HELP for {name}");
            e.help.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            e.types.insert(name.to_owned(), ty.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            e.samples
                .insert((name.to_owned(), labels), value.parse().unwrap());
        }
    }
    e
}

/// The series `name{labels}`.
pub fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// A recorder of `spec` with `window`, on a manual clock the test moves.
pub fn recorder_with_clock(spec: ModelSpec, window: WindowConfig) -> (Arc<Recorder>, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let recorder = Recorder::builder(spec)
        .window(window)
        .clock(clock.clone())
        .build()
        .unwrap();
    (Arc::new(recorder), clock)
}

/// The `moescope.analysis/v1` document of `snapshot` against `reference`, as JSON: what
/// `moescope analyze SNAPSHOT --reference REF` prints (the CLI's own tests check that its
/// output equals the library's document).
pub fn analysis_json(snapshot: &Snapshot, reference: &str) -> Value {
    let a =
        moescope_stats::analyze(snapshot, &moescope_stats::AnalysisConfig::new(reference)).unwrap();
    serde_json::to_value(a).unwrap()
}

/// Equal within 1e-9, relative.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
