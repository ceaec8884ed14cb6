//! The Prometheus endpoint over real HTTP: exposition format, values, errors, cardinality.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use moescope_core::{Languages, ManualClock, ModelSpec, Recorder, RouterBatch, WindowConfig};
use moescope_prometheus::{
    serve_prometheus, serve_prometheus_with_routes, EndpointError, Limits, Method,
    PrometheusEndpoint, Response, Router, StatusCode,
};
use moescope_publish::{
    Kind, LanguageSelection, LayerDetail, LayerSelection, Metric, Publication, Publisher,
    PublisherConfig, Sink, CATALOGUE,
};

fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// `name{k="v",...} value` lines → (name, labels) → value; HELP and TYPE lines by name.
struct Exposition {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    help: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

fn parse(body: &str) -> Exposition {
    let mut e = Exposition {
        samples: BTreeMap::new(),
        help: BTreeSet::new(),
        types: BTreeMap::new(),
    };
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            e.help.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            e.types
                .insert(it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
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

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// en uniform over 8 experts in all 8 layers; he the same except the last two layers, which
/// use `deep` experts. 800 tokens per layer each.
fn record_traffic(rec: &Recorder, deep: u32) {
    let (en, he) = (rec.language("en"), rec.language("he"));
    for depth in 0..8 {
        let uniform: Vec<u32> = (0..1600).map(|i| (i % 8) as u32).collect();
        rec.record(&RouterBatch::at_depth(depth, &uniform, Languages::All(en)))
            .unwrap();
        let pool = if depth >= 6 { deep } else { 8 };
        let ids: Vec<u32> = (0..1600).map(|i| (i as u32) % pool).collect();
        rec.record(&RouterBatch::at_depth(depth, &ids, Languages::All(he)))
            .unwrap();
    }
}

fn spec() -> ModelSpec {
    ModelSpec::new("toy-moe", 8, 2, (0..8).map(|l| l * 2).collect()).unwrap()
}

#[test]
fn scrape_shows_every_published_value_with_help_and_type() {
    let rec = Arc::new(Recorder::new(spec()).unwrap());
    record_traffic(&rec, 2);
    let endpoint = PrometheusEndpoint::start("127.0.0.1:0", Duration::from_secs(60)).unwrap();
    assert!(endpoint.local_addr().ip().is_loopback());
    // Every metric: per-layer detail for every language and layer, pairs on every layer.
    let config = PublisherConfig {
        layer_detail: LayerDetail {
            languages: LanguageSelection::All,
            layers: LayerSelection::All,
        },
        pair_layers: LayerSelection::All,
        ..PublisherConfig::default()
    };
    let mut publisher = Publisher::new(rec.clone(), config).unwrap();
    let round = publisher.collect();
    let mut sink = endpoint.sink();
    sink.publish(&round.publication);

    let (head, body) = get(endpoint.local_addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"));
    let e = parse(&body);
    promtool_check(&body, "scrape_shows_every_published_value");
    // Every sample of the publication is in the exposition with the same value.
    assert!(round.publication.samples.len() > 100);
    for s in &round.publication.samples {
        let d = s.metric.descriptor();
        let key = (
            d.name.to_owned(),
            d.labels
                .iter()
                .zip(&s.labels)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        );
        let got = e
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} missing"));
        let want = match d.kind {
            Kind::Counter => s.value.round(),
            Kind::Summary => unreachable!("summaries are not samples"),
            Kind::Gauge => s.value,
        };
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{key:?}: {got} vs {want}"
        );
        assert!(e.help.contains(d.name), "HELP for {}", d.name);
        let ty = match d.kind {
            Kind::Counter => "counter",
            Kind::Summary => "summary",
            Kind::Gauge => "gauge",
        };
        assert_eq!(
            e.types.get(d.name).map(String::as_str),
            Some(ty),
            "{}",
            d.name
        );
    }
    // Hand-checked values: he's deep layer (model layer 14) uses 2 experts: 1 bit; en 3 bits.
    let h = |lang: &str| {
        e.samples[&(
            "moe_routing_usage_entropy_bits".to_owned(),
            labels(&[("model", "toy-moe"), ("layer", "14"), ("lang", lang)]),
        )]
    };
    assert_eq!(h("he"), 1.0);
    assert_eq!(h("en"), 3.0);
    // The record time is a real summary: quantiles (when calls were timed), sum and count.
    let name = "moe_routing_monitor_record_seconds";
    assert_eq!(e.types.get(name).map(String::as_str), Some("summary"));
    assert!(e.help.contains(name));
    let summary = &round.publication.summaries[0];
    assert_eq!(summary.metric, Metric::MonitorRecordSeconds);
    let count = e.samples[&(format!("{name}_count"), labels(&[("model", "toy-moe")]))];
    assert_eq!(count, summary.count as f64);
    assert!(e
        .samples
        .contains_key(&(format!("{name}_sum"), labels(&[("model", "toy-moe")]))));
    for (q, v) in &summary.quantiles {
        let key = (
            name.to_owned(),
            labels(&[("model", "toy-moe"), ("quantile", &q.to_string())]),
        );
        assert_eq!(e.samples[&key], *v);
    }
    let score = e.samples[&(
        "moe_routing_deep_collapse_score_bits".to_owned(),
        labels(&[("model", "toy-moe"), ("lang", "he"), ("reference", "en")]),
    )];
    assert_eq!(score, 2.0); // drop 3 − 1 = 2 bits for he, 0 for en
                            // Pairwise JSD: both orders, equal to the JSD against the reference for (he, en).
    for layer in ["0", "14"] {
        let pair = |a: &str, b: &str| {
            e.samples[&(
                "moe_routing_pair_js_divergence_bits".to_owned(),
                labels(&[
                    ("model", "toy-moe"),
                    ("layer", layer),
                    ("lang_a", a),
                    ("lang_b", b),
                ]),
            )]
        };
        let vs_reference = e.samples[&(
            "moe_routing_js_divergence_bits".to_owned(),
            labels(&[
                ("model", "toy-moe"),
                ("layer", layer),
                ("lang", "he"),
                ("reference", "en"),
            ]),
        )];
        assert_eq!(pair("he", "en"), pair("en", "he"));
        assert_eq!(pair("he", "en"), vs_reference);
    }
    // One round only: the detector needs three in a row to raise the flag.
    let flag = e.samples[&(
        "moe_routing_deep_collapse".to_owned(),
        labels(&[("model", "toy-moe"), ("lang", "he"), ("reference", "en")]),
    )];
    assert_eq!(flag, 0.0);

    let (head, _) = get(endpoint.local_addr(), "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn extra_routes_are_served_next_to_metrics_and_replace_the_index() {
    let rec = Arc::new(Recorder::new(spec()).unwrap());
    record_traffic(&rec, 8);
    let window = rec.clone();
    let routes = Router::new()
        .slow(Method::GET, "/v1/snapshot", move |_| {
            Response::new(
                StatusCode::OK,
                "application/json",
                window.snapshot().to_json_string(),
            )
        })
        .fast(Method::GET, "/", |_| {
            Response::text(StatusCode::OK, "my page\n")
        });
    let config = PublisherConfig {
        interval: Duration::from_millis(50),
        ..PublisherConfig::default()
    };
    let export = serve_prometheus_with_routes(rec.clone(), "127.0.0.1:0", config, routes).unwrap();
    let addr = export.endpoint.local_addr();

    let (head, body) = get(addr, "/v1/snapshot");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let snap = moescope_core::Snapshot::from_json_str(&body).unwrap();
    assert_eq!(snap.languages.len(), 2);
    let (head, body) = get(addr, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "my page\n");
    // No keep-alive, as for serve_prometheus: one request per connection.
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (head, _) = get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = get(addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Without a `/` of the caller's, the endpoint's own line stays.
    let healthz = Router::new().fast(Method::GET, "/healthz", |_| {
        Response::text(StatusCode::OK, "ok\n")
    });
    let endpoint = PrometheusEndpoint::start_with_routes(
        "127.0.0.1:0",
        Duration::from_secs(1),
        Limits::default(),
        healthz,
    )
    .unwrap();
    let (_, body) = get(endpoint.local_addr(), "/");
    assert_eq!(body, "moescope: routing health at /metrics\n");
    let (_, body) = get(endpoint.local_addr(), "/healthz");
    assert_eq!(body, "ok\n");

    // `/metrics` is the endpoint's own: a second one is refused, naming it.
    let clash = Router::new().fast(Method::GET, "/metrics", |_| {
        Response::text(StatusCode::OK, "")
    });
    let err = serve_prometheus_with_routes(rec, "127.0.0.1:0", PublisherConfig::default(), clash)
        .err()
        .expect("a second /metrics is refused");
    assert!(matches!(err, EndpointError::Http(_)), "{err:?}");
    assert_eq!(err.to_string(), "duplicate route GET /metrics");
}

#[test]
fn a_taken_port_is_an_error_not_a_panic() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let rec = Arc::new(Recorder::new(spec()).unwrap());
    let err = serve_prometheus(rec.clone(), &addr, PublisherConfig::default())
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains(&addr), "{err}");
    // The recorder goes on working.
    record_traffic(&rec, 8);
    assert_eq!(rec.snapshot().languages.len(), 2);
    assert!(PrometheusEndpoint::start("no-such-host.invalid:1", Duration::from_secs(1)).is_err());
}

#[test]
fn settings_out_of_range_are_refused_naming_the_field() {
    let rec = Arc::new(Recorder::new(spec()).unwrap());
    // An LSI threshold of 1 would make every round's statistics fail: refused up front.
    let config = PublisherConfig {
        lsi_threshold: 1.0,
        ..PublisherConfig::default()
    };
    let err = serve_prometheus(rec.clone(), "127.0.0.1:0", config)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("lsi_threshold"), "{err}");
    let err = Publisher::new(
        rec.clone(),
        PublisherConfig {
            pair_languages: 1_000,
            ..PublisherConfig::default()
        },
    )
    .err()
    .expect("refused");
    assert_eq!(err.field, "pair_languages");
    let err = Publisher::new(
        rec.clone(),
        PublisherConfig {
            interval: Duration::ZERO,
            ..PublisherConfig::default()
        },
    )
    .err()
    .expect("refused");
    assert_eq!(err.field, "interval");
    let err = PrometheusEndpoint::start("127.0.0.1:0", Duration::ZERO)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
    assert_eq!(
        moescope_prometheus::PrometheusRender::new(Duration::ZERO)
            .err()
            .map(|e| e.field),
        Some("idle_timeout")
    );
}

#[test]
fn the_monitor_publishes_its_error_count_and_round_memory_every_round() {
    // A recorder's snapshots always pass the statistics' checks, so the error counter stays
    // at 0 here; its series is published every round, so an alert on it has data.
    let rec = Arc::new(Recorder::new(spec()).unwrap());
    record_traffic(&rec, 8);
    let mut publisher = Publisher::new(rec, PublisherConfig::default()).unwrap();
    let round = publisher.collect();
    assert!(round.error.is_none() && round.analysis.is_some());
    assert_eq!(publisher.analysis_errors(), 0);
    assert_eq!(
        round
            .publication
            .value(Metric::MonitorAnalysisErrorsTotal, &["toy-moe"]),
        Some(0.0)
    );
    assert!(
        round
            .publication
            .value(Metric::MonitorRoundBytes, &["toy-moe"])
            .unwrap()
            > 0.0
    );
}

#[test]
fn collapse_flag_rises_and_clears_with_hysteresis() {
    let clock = ManualClock::new(1_700_000_000_000);
    let rec = Arc::new(
        Recorder::builder(spec())
            .window(WindowConfig {
                bucket_ms: 1_000,
                buckets: 2,
            })
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let mut publisher = Publisher::new(rec.clone(), PublisherConfig::default()).unwrap();
    let flag = |p: &Publication| p.value(Metric::DeepCollapse, &["toy-moe", "he", "en"]);
    // Collapsed traffic: raised on the third consecutive round, not before.
    let mut flags = Vec::new();
    for _ in 0..4 {
        record_traffic(&rec, 2);
        flags.push(flag(&publisher.collect().publication));
    }
    assert_eq!(flags, [Some(0.0), Some(0.0), Some(1.0), Some(1.0)]);
    // Healthy traffic once the collapsed buckets have left the window: cleared on the third.
    clock.advance_ms(5_000);
    let mut flags = Vec::new();
    for _ in 0..4 {
        record_traffic(&rec, 8);
        flags.push(flag(&publisher.collect().publication));
    }
    assert_eq!(flags, [Some(1.0), Some(1.0), Some(0.0), Some(0.0)]);
}

#[test]
fn ten_thousand_random_tags_stay_within_the_series_cap() {
    let rec = Arc::new(Recorder::builder(spec()).max_languages(8).build().unwrap());
    let ids: Vec<u32> = (0..16).map(|i| i % 8).collect();
    let mut x = 7u64;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let tag: String = (0..2 + (x >> 61) % 3)
            .map(|i| (b'a' + ((x >> (7 * i + 3)) % 26) as u8) as char)
            .collect();
        let lang = rec.language(&tag);
        rec.record(&RouterBatch::at_depth(3, &ids, Languages::All(lang)))
            .unwrap();
    }
    let endpoint = PrometheusEndpoint::start("127.0.0.1:0", Duration::from_secs(60)).unwrap();
    let mut publisher = Publisher::new(rec, PublisherConfig::default()).unwrap();
    endpoint.sink().publish(&publisher.collect().publication);
    let (_, body) = get(endpoint.local_addr(), "/metrics");
    let e = parse(&body);
    let langs: BTreeSet<&String> = e
        .samples
        .keys()
        .filter_map(|(_, l)| l.get("lang"))
        .collect();
    assert!(langs.len() <= 8 + 2, "{langs:?}"); // the cap, und, other
    assert!(langs.contains(&"other".to_owned()));
    let over_cap = e.samples[&(
        "moe_routing_monitor_languages_over_cap_total".to_owned(),
        labels(&[("model", "toy-moe")]),
    )];
    assert!(over_cap > 9_000.0, "{over_cap}");
}

#[test]
fn quiet_languages_disappear_from_the_endpoint() {
    let clock = ManualClock::new(1_700_000_000_000);
    let rec = Arc::new(
        Recorder::builder(spec())
            .window(WindowConfig {
                bucket_ms: 1_000,
                buckets: 2,
            })
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    record_traffic(&rec, 8);
    let endpoint = PrometheusEndpoint::start("127.0.0.1:0", Duration::from_millis(300)).unwrap();
    let mut sink = endpoint.sink();
    let mut publisher = Publisher::new(rec.clone(), PublisherConfig::default()).unwrap();
    sink.publish(&publisher.collect().publication);
    assert!(endpoint.render().contains("lang=\"he\""));
    // Only English from now on; the Hebrew buckets leave the window.
    clock.advance_ms(5_000);
    let en = rec.language("en");
    let ids: Vec<u32> = (0..16).map(|i| i % 8).collect();
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
        .unwrap();
    let round = publisher.collect();
    assert!(round.publication.samples.iter().all(
        |s| !s.labels.contains(&"he".to_owned()) || s.metric.descriptor().kind == Kind::Counter
    ));
    std::thread::sleep(Duration::from_millis(400));
    sink.publish(&round.publication);
    let (_, body) = get(endpoint.local_addr(), "/metrics");
    let gauges_with_he = body
        .lines()
        .filter(|l| l.contains("lang=\"he\"") && !l.starts_with("moe_routing_tokens_total"))
        .count();
    assert_eq!(gauges_with_he, 0, "{body}");
}

#[test]
fn docs_list_every_metric_of_the_catalogue() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/METRICS.md"
    ))
    .unwrap();
    for d in CATALOGUE {
        assert!(
            doc.contains(&format!("`{}`", d.name)),
            "{} missing from docs/METRICS.md",
            d.name
        );
    }
}

/// The default series count at the language cap (32 tracked tags plus `und` and `other`) for
/// Qwen3-30B-A3B, scraped over HTTP, equals the formula of docs/METRICS.md and stays within
/// the budget of 2 500 series.
#[test]
fn default_series_at_the_language_cap_match_the_formula_and_budget() {
    let spec = ModelSpec::preset("qwen3-30b-a3b").unwrap(); // 48 MoE layers, E = 128, top-8
    let (num_layers, e, k) = (48usize, 128u32, 8usize);
    let rec = Arc::new(Recorder::new(spec).unwrap());
    let letter = |i: usize| char::from(b'a' + (i % 26) as u8);
    let mut tags: Vec<String> = (0..32)
        .map(|i| format!("q{}{}", letter(i / 26), letter(i)))
        .collect();
    tags[0] = "en".into();
    tags.push("qzz".into()); // over the cap: counted under `other`
    tags.push("not a tag!".into()); // invalid: counted under `und`
    for (i, tag) in tags.iter().enumerate() {
        let id = rec.language(tag);
        rec.record_text(id, 300, 50);
        for depth in 0..num_layers {
            let ids: Vec<u32> = (0..16 * k)
                .map(|j| ((i * 5 + j * 3 + depth) as u32) % e)
                .collect();
            rec.record(&RouterBatch::at_depth(depth, &ids, Languages::All(id)))
                .unwrap();
        }
    }
    let endpoint = PrometheusEndpoint::start("127.0.0.1:0", Duration::from_secs(60)).unwrap();
    let mut sink = endpoint.sink();
    let config = PublisherConfig::default();
    let mut publisher = Publisher::new(rec.clone(), config.clone()).unwrap();
    let round = publisher.collect();
    sink.publish(&round.publication);
    let (_, body) = get(endpoint.local_addr(), "/metrics");
    let series = body
        .lines()
        .filter(|l| l.starts_with("moe_routing_"))
        .count();
    // The endpoint's HTTP server adds its own 13 series.
    let http = body
        .lines()
        .filter(|l| l.starts_with("moescope_http_"))
        .count();
    let others = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
        - series
        - http;
    assert_eq!((http, others), (13, 0), "{body}");

    // The formula: n languages in the window (t of them with text lengths), r = n − 1 against
    // the reference, p = min(pair_languages, n) busiest languages compared on d deep layers,
    // R drop reasons, and the monitor's own series (7, the record-time summary's sum and count,
    // and its 4 quantiles when calls were timed in the interval).
    let n = 34;
    let t = 34;
    let r = n - 1;
    let p = config.pair_languages.min(n);
    let d = moescope_stats::deep_layers(num_layers).len();
    let drop_reasons = moescope_core::DropReason::ALL.len();
    let monitor = 7 + 2; // 7 gauges and counters, the record-time summary's sum and count
    let record_quantiles = round.publication.summaries[0].quantiles.len(); // 0 or 4
    let formula = n * num_layers
        + 4 * n
        + 2 * t
        + 5 * r
        + p * (p - 1) * d
        + 1
        + drop_reasons
        + monitor
        + record_quantiles;
    assert_eq!(round.snapshot.languages.len(), n);
    assert_eq!(series, formula, "{body}");
    assert!(
        series + http <= 2_500,
        "{series} + {http} series at the cap"
    );
    // The same count as the publication itself: one series per sample, and the summary's.
    assert_eq!(
        series,
        round.publication.samples.len() + 2 + record_quantiles
    );
    promtool_check(&body, "default_series_at_the_language_cap");
}

/// The only `promtool check metrics` findings allowed, as docs/METRICS.md documents: the
/// base-unit lint on metrics in bits (information, like node_exporter's
/// `node_entropy_available_bits`; promtool only knows `bytes`).
fn allowed_lint(line: &str) -> bool {
    line.split_once(' ').is_some_and(|(name, rest)| {
        rest == "use base unit \"bytes\" instead of \"bits\""
            && CATALOGUE
                .iter()
                .any(|d| d.name == name && d.unit == "bits" && name.ends_with("_bits"))
    })
}

/// Runs `promtool check metrics` on `body` and fails on any finding but the documented
/// exception. Without promtool on PATH: skipped (reported), unless
/// MOESCOPE_REQUIRE_PROMETHEUS=1 (scripts/test.sh sets it after installing promtool).
fn promtool_check(body: &str, test: &str) {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    let Some(promtool) = found else {
        let required = std::env::var("MOESCOPE_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: promtool is not on PATH and MOESCOPE_REQUIRE_PROMETHEUS=1"
        );
        println!("SKIPPED promtool check in {test}: promtool is not installed");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = findings
        .lines()
        .filter(|l| !l.trim().is_empty() && !allowed_lint(l.trim()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{test}: promtool check metrics: {unexpected:#?}"
    );
    // Exit 0 (clean) or 3 (lint findings only, all of them allowed above).
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{test}: promtool exited {:?}: {findings}",
        out.status
    );
}
