//! The monitoring mixin of `dashboards/` against the metric catalogue and a real Prometheus.
//!
//! - `dashboards_and_rules_are_well_formed`: the Grafana JSON (schema version, the datasource
//!   variable, every panel on `${datasource}`, every `$variable` defined), every metric name
//!   in a dashboard or rule exists in `moescope_publish::CATALOGUE` or is recorded by
//!   `dashboards/rules/recording.yml`, and every alert has its section in docs/RUNBOOK.md.
//! - `promtool_checks_and_tests_the_rules`: `promtool check rules` and `promtool test rules`
//!   (dashboards/tests/*.test.yml: each alert firing and not firing, the recording rules
//!   against hand-computed entropies).
//! - `collapse_alert_fires_in_prometheus_and_every_panel_has_data`: a real `prometheus`
//!   scrapes `moescope demo --simulate` on loopback with the rules loaded; before the
//!   simulated collapse no collapse alert exists, after it `MoeRoutingDeepLayerCollapse`
//!   fires for `he` (and for no other language); then every expression of every panel and
//!   variable of both dashboards returns data from that Prometheus, and the fleet entropy the
//!   recording rules compute from the per-expert counters matches the published gauges.
//!
//! Without `prometheus`/`promtool` on PATH the last two report themselves skipped, unless
//! `MOESCOPE_REQUIRE_PROMETHEUS=1` (scripts/test.sh sets it after installing them): then they
//! fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const MODEL: &str = "olmoe-1b-7b";
/// Seconds after the demo starts when Hebrew's deep layers collapse.
const COLLAPSE_AT: f64 = 20.0;
/// How long the collapse alert may take to fire once the collapse starts.
const FIRE_DEADLINE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `name` on PATH; `None` (after saying the test is skipped) when missing, a panic when
/// MOESCOPE_REQUIRE_PROMETHEUS=1.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("MOESCOPE_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: `{name}` is not on PATH and MOESCOPE_REQUIRE_PROMETHEUS=1 \
             (install the Debian package `prometheus`, as scripts/test.sh does)"
        );
        println!("SKIPPED {test}: `{name}` is not installed (apt-get install prometheus)");
    }
    found
}

// --- dashboards and rules as data ---------------------------------------------------------

fn dashboard(name: &str) -> Value {
    serde_json::from_str(&read(&format!("dashboards/{name}")))
        .unwrap_or_else(|e| panic!("dashboards/{name}: {e}"))
}

const DASHBOARDS: [&str; 2] = ["moe-routing-health.json", "moe-routing-fleet.json"];

/// Every non-row panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// (panel title, expression) of every target of every panel.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_owned(),
                t["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

/// The template variables: name → the query of a `query` variable ("" for others).
fn variables(d: &Value) -> BTreeMap<String, (String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                (
                    v["type"].as_str().unwrap_or("").to_owned(),
                    v["query"]["query"]
                        .as_str()
                        .or_else(|| v["query"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                ),
            )
        })
        .collect()
}

/// Identifiers in a PromQL expression or a YAML text that look like metric names: words
/// (letters, digits, `_`, `:`) starting with `moe_routing_` or containing `:moe_routing_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("moe_routing_") || w.contains(":moe_routing_"))
        .map(str::to_owned)
        .collect()
}

/// Names recorded by dashboards/rules/recording.yml.
fn recorded() -> BTreeSet<String> {
    read("dashboards/rules/recording.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Alert names of dashboards/rules/alerts.yml.
fn alerts() -> Vec<String> {
    read("dashboards/rules/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// `$name` and `${name}` references in a string.
fn var_refs(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn dashboards_and_rules_are_well_formed() {
    let catalogue: BTreeSet<&str> = moescope_publish::CATALOGUE.iter().map(|d| d.name).collect();
    // Counters are exposed with their name as is (`_total` included).
    let known = |name: &str| catalogue.contains(name);
    let recorded = recorded();
    assert!(
        recorded.contains("model_layer_lang:moe_routing_usage_entropy_bits:rate5m"),
        "{recorded:?}"
    );
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let title = d["title"].as_str().unwrap_or_default().to_owned();
        assert!(!title.is_empty(), "{name}: no title");
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{name}: uid"
        );
        assert!(
            d["schemaVersion"].as_u64().unwrap() >= 39,
            "{name}: schemaVersion {} is not current",
            d["schemaVersion"]
        );
        let vars = variables(&d);
        let ds = vars.get("datasource").expect("a datasource variable");
        assert_eq!(
            (ds.0.as_str(), ds.1.as_str()),
            ("datasource", "prometheus"),
            "{name}"
        );
        let wanted: &[&str] = if name == "moe-routing-health.json" {
            &["model", "lang", "reference", "instance", "layer"]
        } else {
            &["model", "lang", "reference", "layer"]
        };
        for v in wanted {
            assert_eq!(
                vars.get(*v).map(|v| v.0.as_str()),
                Some("query"),
                "{name}: ${v}"
            );
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: {v}");
            }
        }
        let mut ids = BTreeSet::new();
        let all = panels(&d);
        assert!(all.len() >= 8, "{name}: {} panels", all.len());
        for p in &all {
            let ptitle = p["title"].as_str().unwrap_or_default();
            assert!(!ptitle.is_empty(), "{name}: a panel without title");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: id of {ptitle}"
            );
            for k in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][k].is_u64(), "{name}: {ptitle}: gridPos.{k}");
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {ptitle}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {ptitle}: no target");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {ptitle}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()));
            }
            for r in var_refs(&p.to_string()) {
                assert!(
                    vars.contains_key(&r) || r.starts_with("__"),
                    "{name}: {ptitle}: ${r} is not a variable"
                );
            }
        }
        // Every metric name is published by moescope or recorded by the rules; the fleet
        // dashboard reads only recording rules (and the fleet-level collapse flags).
        for (ptitle, expr) in expressions(&d) {
            for m in metric_names(&expr) {
                if m.contains(':') {
                    assert!(
                        recorded.contains(&m),
                        "{name}: {ptitle}: {m} is not recorded"
                    );
                } else {
                    assert!(known(&m), "{name}: {ptitle}: {m} is not in the catalogue");
                    assert!(
                        name != "moe-routing-fleet.json",
                        "{name}: {ptitle}: the fleet view reads raw {m}"
                    );
                }
            }
        }
        for (_, q) in vars.values() {
            for m in metric_names(q) {
                assert!(
                    known(&m) || recorded.contains(&m),
                    "{name}: variable on {m}"
                );
            }
        }
    }
    // Every panel the dashboards promise is there.
    let health: Vec<String> = expressions(&dashboard(DASHBOARDS[0]))
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for m in [
        "moe_routing_usage_entropy_bits",
        "moe_routing_entropy_gap_bits",
        "moe_routing_gini",
        "moe_routing_active_experts",
        "moe_routing_cosine_similarity",
        "moe_routing_js_divergence_bits",
        "moe_routing_split_half_cosine_similarity",
        "moe_routing_lsi_experts",
        "moe_routing_deep_collapse_score_bits",
        "moe_routing_deep_collapse_threshold_bits",
        "moe_routing_tokens_total",
        "moe_routing_monitor_record_seconds",
        "moe_routing_monitor_upkeep_seconds",
        "moe_routing_dropped_total",
    ] {
        assert!(
            health.iter().any(|e| metric_names(e).contains(m)),
            "no panel on {m}"
        );
    }
    // Rules use published names only; every alert has a runbook section and a runbook_url
    // pointing at it.
    for file in ["alerts.yml", "recording.yml"] {
        for m in metric_names(&read(&format!("dashboards/rules/{file}"))) {
            assert!(
                known(&m) || recorded.contains(&m),
                "{file}: {m} is neither published nor recorded"
            );
        }
    }
    let runbook = read("docs/RUNBOOK.md");
    let rules = read("dashboards/rules/alerts.yml");
    let names = alerts();
    assert_eq!(names.len(), 6, "{names:?}");
    for a in &names {
        assert!(
            runbook.lines().any(|l| l.trim() == format!("## {a}")),
            "docs/RUNBOOK.md has no `## {a}` section"
        );
        let url = format!("docs/RUNBOOK.md#{}", a.to_lowercase());
        assert!(rules.contains(&url), "alerts.yml: no runbook_url {url}");
        assert!(
            runbook.contains("moescope analyze"),
            "the runbook says how to confirm with moescope analyze"
        );
    }
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(promtool) = tool("promtool", "promtool_checks_and_tests_the_rules") else {
        return;
    };
    let dir = repo().join("dashboards");
    let run = |args: &[&str]| {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        text
    };
    let checked = run(&["check", "rules", "rules/alerts.yml", "rules/recording.yml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tests: Vec<String> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .map(|p| format!("tests/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(tests.len() >= 2, "{tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let tested = run(&args);
    assert_eq!(tested.matches("SUCCESS").count(), tests.len(), "{tested}");
}

// --- processes and HTTP -------------------------------------------------------------------

/// A child process killed (and reaped) when dropped, also when the test panics.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over HTTP/1.0 (no chunked encoding, the server closes): (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

struct Prometheus {
    port: u16,
}

impl Prometheus {
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.port, path).unwrap_or_else(|| panic!("GET {path}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// An instant query: (result type, result).
    fn query(&self, expr: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", encode(expr)))
    }

    /// Alerts in Prometheus's /api/v1/alerts named `name`.
    fn alerts(&self, name: &str) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}

/// Whether an instant query's result holds data.
fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => true,
        _ => data["result"].as_array().is_some_and(|r| !r.is_empty()),
    }
}

#[test]
fn collapse_alert_fires_in_prometheus_and_every_panel_has_data() {
    const TEST: &str = "collapse_alert_fires_in_prometheus_and_every_panel_has_data";
    let Some(prometheus) = tool("prometheus", TEST) else {
        return;
    };
    let t0 = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("prometheus_e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();

    // The demo: OLMoE-shaped routing (16 MoE layers, 64 experts), publication every second
    // into a 20 s window, per-expert counters on; Hebrew collapses at COLLAPSE_AT.
    let mut demo = Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args([
            "demo",
            "--simulate",
            "--quiet",
            "--expert-selections",
            // The dashboards' drill-down panels show opt-in layer detail.
            "--layer-detail",
            "all",
        ])
        .args(["--listen", "127.0.0.1:0", "--model", MODEL])
        .args([
            "--collapse-at",
            &COLLAPSE_AT.to_string(),
            "--recover-at",
            "0",
        ])
        .args([
            "--interval-ms",
            "1000",
            "--bucket-ms",
            "1000",
            "--buckets",
            "20",
        ])
        .args(["--tokens-per-step", "128", "--duration", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start moescope demo");
    let demo_started = Instant::now();
    let stdout = demo.stdout.take().unwrap();
    let _demo = Guard {
        name: "moescope demo",
        child: demo,
    };
    // Read the endpoint from the first line, then keep draining stdout (the demo must never
    // write into a closed pipe).
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("demo output").unwrap();
    let demo_addr = first
        .split("metrics at http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no endpoint in {first:?}"))
        .to_owned();
    let demo_log = Arc::new(Mutex::new(String::new()));
    let log = demo_log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            log.lock().unwrap().push_str(&(line + "\n"));
        }
    });

    // Prometheus, on its own port and TSDB, scraping the demo and evaluating the rules every
    // second. The collapse alert's `for:` (10m in production) is shortened to 10s here; the
    // promtool tests cover the real value.
    let rules = read("dashboards/rules/alerts.yml");
    let mut out = Vec::new();
    let mut in_collapse = false;
    let mut replaced = 0;
    for line in rules.lines() {
        if line.trim() == "- alert: MoeRoutingDeepLayerCollapse" {
            in_collapse = true;
        } else if line.trim().starts_with("- alert:") {
            in_collapse = false;
        }
        if in_collapse && line.trim().starts_with("for:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push(format!("{indent}for: 10s"));
            replaced += 1;
        } else {
            out.push(line.to_owned());
        }
    }
    assert_eq!(replaced, 1, "the collapse alert's `for:`");
    std::fs::write(dir.join("alerts.yml"), out.join("\n")).unwrap();
    let recording = repo().join("dashboards/rules/recording.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n  - {}\n\
         scrape_configs:\n  - job_name: moescope\n    static_configs:\n      - targets: ['{demo_addr}']\n",
        dir.join("alerts.yml").display(),
        recording.canonicalize().unwrap().display()
    );
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let port = free_port();
    let log_file = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Guard {
        name: "prometheus",
        child: Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus"),
    };
    let p = Prometheus { port };
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let ready_by = Instant::now() + Duration::from_secs(60);
    while get(port, "/-/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < ready_by,
            "prometheus not ready:\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "prometheus ready on 127.0.0.1:{port} after {:.1}s, scraping {demo_addr}",
        t0.elapsed().as_secs_f64()
    );

    // Before the collapse: scraped, and no collapse alert, pending or firing, for anyone.
    let quiet_until = demo_started + Duration::from_secs_f64(COLLAPSE_AT - 3.0);
    let mut scraped = false;
    while Instant::now() < quiet_until {
        let a = p.alerts("MoeRoutingDeepLayerCollapse");
        assert!(a.is_empty(), "collapse alert before the collapse: {a:?}");
        scraped = scraped || has_data(&p.query("up{job=\"moescope\"} == 1"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        scraped,
        "prometheus never scraped the demo:\n{}",
        prom_log()
    );

    // The collapse starts; wait for the alert to fire for he.
    let collapse_start = demo_started + Duration::from_secs_f64(COLLAPSE_AT);
    let deadline = collapse_start + FIRE_DEADLINE;
    let mut pending_at = None;
    let firing = loop {
        let alerts = p.alerts("MoeRoutingDeepLayerCollapse");
        for a in &alerts {
            assert_eq!(a["labels"]["lang"], "he", "only Hebrew collapses, got {a}");
        }
        if let Some(a) = alerts.iter().find(|a| a["state"] == "firing") {
            break a.clone();
        }
        if pending_at.is_none() && alerts.iter().any(|a| a["state"] == "pending") {
            pending_at = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "MoeRoutingDeepLayerCollapse not firing {}s after the collapse began.\n\
             score: {}\nflag: {}\nwindow tokens: {}\ndemo:\n{}",
            FIRE_DEADLINE.as_secs(),
            p.query("moe_routing_deep_collapse_score_bits"),
            p.query("moe_routing_deep_collapse"),
            p.query("moe_routing_window_tokens"),
            demo_log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let since = |t: Instant| t.saturating_duration_since(collapse_start).as_secs_f64();
    println!(
        "MoeRoutingDeepLayerCollapse pending {:.1}s and firing {:.1}s after the collapse began: {}",
        pending_at.map_or(f64::NAN, since),
        since(Instant::now()),
        firing
    );
    let labels = &firing["labels"];
    assert_eq!(labels["model"], MODEL);
    assert_eq!(labels["lang"], "he");
    assert_eq!(labels["reference"], "en");
    assert_eq!(labels["severity"], "critical");
    let score: f64 = firing["value"].as_str().unwrap().parse().unwrap();
    assert!(score > 0.3, "collapse score {score}");
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(description.contains(" he "), "{description}");
    assert!(!firing["annotations"]["summary"].is_null());

    // Every expression of every panel and every variable of both dashboards returns data.
    let instance = demo_addr.clone();
    let layer = "15"; // OLMoE's last MoE layer: a deep layer, where the collapse shows.
    let substitute = |expr: &str| -> String {
        let s = expr
            .replace("${datasource}", "")
            .replace("$__rate_interval", "15s")
            .replace("$model", MODEL)
            .replace("$instance", &instance)
            .replace("$lang", "(en|he|ja)")
            .replace("$reference", "en")
            .replace("$layer", layer);
        assert!(!s.contains('$'), "unresolved variable in {s}");
        s
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in DASHBOARDS {
        let d = dashboard(name);
        for (title, expr) in expressions(&d) {
            let q = substitute(&expr);
            checked += 1;
            if !has_data(&p.query(&q)) {
                failures.push(format!("{name}: panel {title:?}: no data for {q}"));
            }
        }
        for (var, (kind, query)) in variables(&d) {
            if kind != "query" {
                continue;
            }
            // label_values(SELECTOR, LABEL) → count by (LABEL) (SELECTOR)
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name}: ${var}: {query}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            let q = substitute(&format!("count by ({}) ({selector})", label.trim()));
            checked += 1;
            if !has_data(&p.query(&q)) {
                failures.push(format!("{name}: variable ${var}: no values from {q}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{checked} dashboard expressions and variables returned data");

    // The recording rules' fleet entropy (one replica here) equals the published per-layer
    // gauge for the steady reference language, within sampling noise.
    let fleet = p.query(&format!(
        "model_layer_lang:moe_routing_usage_entropy_bits:rate5m{{model=\"{MODEL}\", lang=\"en\"}}"
    ));
    let gauge = p.query(&format!(
        "moe_routing_usage_entropy_bits{{model=\"{MODEL}\", lang=\"en\"}}"
    ));
    let by_layer = |v: &Value| -> BTreeMap<String, f64> {
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["metric"]["layer"].as_str().unwrap().to_owned(),
                    s["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let (fleet, gauge) = (by_layer(&fleet), by_layer(&gauge));
    assert_eq!(fleet.len(), 16, "{fleet:?}");
    for (layer, h) in &fleet {
        let g = gauge[layer];
        assert!(
            (h - g).abs() < 0.05,
            "layer {layer}: fleet entropy {h} vs published {g}"
        );
    }
    println!(
        "done in {:.1}s (collapse began at {COLLAPSE_AT}s)",
        t0.elapsed().as_secs_f64()
    );
}
