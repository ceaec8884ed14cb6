//! `moescope demo` (the real-model mode): a real MoE model served over HTTP, its routing
//! recorded per language, the statistics at `/metrics`.
//!
//! - **Model:** an ONNX MoE run by tract (`moescope-tract`): the bundled tiny Qwen3-MoE
//!   decoder unless `--onnx` names another file, with the packed inputs (`input_ids`,
//!   `position_ids`, `segment_ids`) or a plain Hugging Face export's (`input_ids [B, S]`,
//!   `attention_mask`, `position_ids`); byte-level tokens. `--config`, `--name`,
//!   `--fixed-tokens` and `--router` shape the loading (see `moescope_tract::LoadOptions`).
//!   Running the model and recording its routing are separate: a recording failure is
//!   counted and logged at most once per interval, and the request is answered all the same.
//! - **Server:** `moescope-http` (hyper on its own thread, every input bounded: see its
//!   `Limits`), on `--listen` (loopback by default). `POST /v1/route?lang=TAG` with the text as
//!   the body runs the model on it: text over 1,024 bytes is cut at a character boundary and the
//!   cut reported (`"cut": true`); bodies over 64 KiB get `413`. Without `lang` (or a
//!   `Content-Language` header) the language is detected with `whatlang`, among the `--detect`
//!   languages. `GET /metrics` serves the Prometheus exposition of the publisher's rounds; it
//!   runs on the server thread, independent of inference, which runs on at most
//!   [`MAX_INFERENCE_IN_FLIGHT`] blocking threads (`503` beyond). `GET /` (the live page) and
//!   `GET /v1/snapshot` (the window as a snapshot file) share that pool ([`super::page`]).
//! - **Batching:** one inference thread packs the requests waiting in its queue into one flat
//!   token stream (up to `--max-batch-tokens`), runs the model once, records every MoE layer
//!   with each request's language, and answers each request.
//! - **Load generator:** unless `--no-load`, a thread posts sentences of the `--mix` languages
//!   to the server over HTTP at `--rps`, half of them without a tag (so detection runs too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moescope_core::{LangId, Languages, ModelSpec, Recorder};
use moescope_http::{
    Event, HttpServer, Limits, Method, Request, Response, Router, StatsHandle, StatusCode,
};
use moescope_prometheus::PrometheusRender;
use moescope_publish::Publisher;
use moescope_report::LivePageOptions;
use moescope_tract::{
    byte_tokens, FailureLog, InputLayout, LoadOptions, MoeModel, RouterSelector, TokenBatch,
};

use super::{sentences, CommonArgs, RealArgs};

/// Longest request the server takes, in bytes of text (= tokens of the byte-level model).
const MAX_REQUEST_BYTES: usize = 1024;

/// Requests waiting for inference at once (each holds a blocking thread while the inference
/// thread batches them); beyond, `503` at once.
pub const MAX_INFERENCE_IN_FLIGHT: usize = 16;

struct Job {
    tokens: Vec<i64>,
    lang: LangId,
    sequence_id: u64,
    reply: Sender<Result<JobDone, String>>,
}

struct JobDone {
    tokens: usize,
    batch_tokens: usize,
    next_token: usize,
}

/// Runs the real-model demo until `--duration` passes (or forever).
pub fn run(common: &CommonArgs, args: &RealArgs) -> Result<(), String> {
    let mix = super::mix::parse(&common.mix)?;
    if let Some((tag, _)) = mix.iter().find(|(t, _)| sentences::for_tag(t).is_none()) {
        return Err(format!(
            "--mix: the load generator has sentences for en, he and ja, not {tag:?}"
        ));
    }
    let path = args
        .onnx
        .clone()
        .unwrap_or_else(moescope_tract::bundled_model_path);
    let model = MoeModel::load(&path, &load_options(args)?).map_err(|e| e.to_string())?;
    for w in model.warnings() {
        eprintln!("moescope demo: warning: {w}");
    }
    let spec = model.spec().clone();
    let recorder = common.recorder(&spec)?;
    let interval = common.interval();
    let handle = PrometheusRender::new(interval * 3).map_err(|e| e.to_string())?;
    let publisher =
        Publisher::new(recorder.clone(), common.publisher_config()).map_err(|e| e.to_string())?;
    let publisher = moescope_publish::spawn(publisher, vec![Box::new(handle.sink())])
        .map_err(|e| format!("cannot start the publisher: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (jobs, queue) = mpsc::channel::<Job>();
    let max_batch = args.max_batch_tokens.max(1);
    let requests = Arc::new(AtomicU64::new(0));
    let server_stats = Arc::new(OnceLock::new());
    let router = router(
        detector_for(&args.detect),
        recorder.clone(),
        jobs,
        handle,
        requests.clone(),
        server_stats.clone(),
        super::page::page_options(&common.publisher_config()),
    );
    let server = HttpServer::start_with_observer(
        common.listen.as_str(),
        server_limits(),
        router,
        Some(Arc::new(report_server_event)),
    )
    .map_err(|e| e.to_string())?;
    let _ = server_stats.set(server.stats_handle());
    let addr = server.local_addr();

    let mut threads = Vec::new();
    {
        let (recorder, stop) = (recorder.clone(), stop.clone());
        threads.push(spawn("moescope-infer", move || {
            infer_loop(&model, &recorder, &queue, &stop, max_batch, interval)
        })?);
    }
    if !args.no_load {
        let (stop, mix) = (stop.clone(), mix.clone());
        let (rps, tagged, seed) = (args.rps, args.tagged_share, common.seed);
        threads.push(spawn("moescope-load", move || {
            load_loop(addr, &mix, rps, tagged, seed, &stop)
        })?);
    }

    say!(
        "moescope demo: {} ({} MoE layers, {} experts, top-{}) on tract; metrics at http://{addr}/metrics",
        spec.name,
        spec.num_moe_layers(),
        spec.num_experts,
        spec.top_k
    );
    say!("live page at http://{addr}/, the window as a snapshot file at http://{addr}/v1/snapshot");
    say!(
        "send text: curl -d 'שלום עולם' 'http://{addr}/v1/route?lang=he' (no lang: detected); {}",
        if args.no_load {
            "load generator off".to_owned()
        } else {
            format!(
                "load generator: {} requests/s, mix {}",
                args.rps,
                mix.iter()
                    .map(|(t, s)| format!("{t}={s}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    );
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let view_every = interval.max(Duration::from_secs(1));
    let mut next_view = start + view_every;
    loop {
        let t = start.elapsed().as_secs_f64();
        if common.duration > 0.0 && t >= common.duration {
            break;
        }
        if !common.quiet && Instant::now() >= next_view {
            if let Some(round) = publisher.latest() {
                let header = format!(
                    "moescope demo  t={t:.0}s  requests={}  model={} (real routing, tract)",
                    requests.load(Ordering::Relaxed),
                    spec.name
                );
                super::view::show(&round, &common.reference, &header);
            }
            next_view += view_every;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// How the model is loaded, from the flags.
fn load_options(args: &RealArgs) -> Result<LoadOptions, String> {
    let spec = match &args.config {
        Some(path) => Some(
            ModelSpec::from_hf_config(path)
                .map_err(|e| format!("--config {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let routers = if args.routers.is_empty() {
        RouterSelector::GraphShape
    } else if args.routers.iter().any(|r| r.contains('*')) {
        RouterSelector::NamePatterns(args.routers.clone())
    } else {
        RouterSelector::Names(args.routers.clone())
    };
    Ok(LoadOptions {
        routers,
        name: args.name.clone(),
        spec,
        top_k: None,
        fixed_tokens: args.fixed_tokens,
    })
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

/// The inference thread: batch what is queued, run once, record, answer. A recording
/// failure never fails the requests: the recorder counts the dropped tokens
/// (`moe_routing_dropped_total{reason}`) and the error is logged at most once per
/// `interval`.
fn infer_loop(
    model: &MoeModel,
    recorder: &Recorder,
    queue: &Receiver<Job>,
    stop: &AtomicBool,
    max_batch_tokens: usize,
    interval: Duration,
) {
    // A fixed-length Hugging Face export takes one request per run; a fixed-length packed
    // one takes at most that many tokens.
    let one_per_run =
        matches!(model.layout(), InputLayout::HuggingFace { .. }) && model.fixed_tokens().is_some();
    let max_batch_tokens = model
        .fixed_tokens()
        .map_or(max_batch_tokens, |n| n.min(max_batch_tokens));
    let mut batch = TokenBatch::new();
    let mut pending: Vec<Job> = Vec::new();
    let mut scratch = Vec::new();
    let mut failures = FailureLog::new(interval.max(Duration::from_secs(10)));
    while !stop.load(Ordering::Relaxed) {
        if pending.is_empty() {
            match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => pending.push(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let mut tokens = pending[0].tokens.len();
        let mut held = None;
        while !one_per_run && tokens < max_batch_tokens {
            match queue.try_recv() {
                Ok(job) if tokens + job.tokens.len() > max_batch_tokens => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    tokens += job.tokens.len();
                    pending.push(job);
                }
                Err(_) => break,
            }
        }
        batch.clear();
        for job in &pending {
            batch.push(&job.tokens, job.lang, Some(job.sequence_id));
        }
        let result = model
            .inputs(&batch)
            .and_then(|inputs| Ok((model.run(inputs.values)?, inputs.segments)));
        match result {
            Ok((out, segments)) => {
                if let Err(e) =
                    model.record(recorder, &out, Languages::Segments(&segments), &mut scratch)
                {
                    if let Some(line) = failures.note(&e, Instant::now()) {
                        eprintln!("{line}");
                    }
                }
                let logits = out.model_outputs()[0].to_plain_array_view::<f32>().ok();
                let mut end = 0;
                for (row, job) in pending.drain(..).enumerate() {
                    end += job.tokens.len();
                    let next_token = logits
                        .as_ref()
                        .and_then(|l| {
                            let last = match model.layout() {
                                InputLayout::Packed => l.index_axis(tract_ndarray_axis(), end - 1),
                                InputLayout::HuggingFace { .. } => l
                                    .index_axis(tract_ndarray_axis(), row)
                                    .index_axis_move(tract_ndarray_axis(), job.tokens.len() - 1),
                            };
                            last.iter()
                                .enumerate()
                                .max_by(|a, b| a.1.total_cmp(b.1))
                                .map(|(i, _)| i)
                        })
                        .unwrap_or(0);
                    let _ = job.reply.send(Ok(JobDone {
                        tokens: job.tokens.len(),
                        batch_tokens: batch.tokens(),
                        next_token,
                    }));
                }
            }
            Err(e) => {
                for job in pending.drain(..) {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
        pending.extend(held);
    }
}

fn tract_ndarray_axis() -> moescope_tract::ndarray::Axis {
    moescope_tract::ndarray::Axis(0)
}

/// Where a request's language came from.
fn language_of(
    detector: &whatlang::Detector,
    request: &Request,
    text: &str,
) -> (String, &'static str) {
    if let Some(tag) = request.query_param("lang").filter(|v| !v.is_empty()) {
        return (tag, "tag");
    }
    if let Some(h) = request
        .headers()
        .get(moescope_http::header::CONTENT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    {
        return (h.to_owned(), "tag");
    }
    match detect(detector, text) {
        Some(tag) => (tag.to_owned(), "detected"),
        None => ("und".to_owned(), "undetermined"),
    }
}

/// The language of `text` by whatlang among `detector`'s languages, when it is confident
/// enough.
fn detect(detector: &whatlang::Detector, text: &str) -> Option<&'static str> {
    let info = detector.detect(text)?;
    (info.confidence() >= MIN_DETECTION_CONFIDENCE).then(|| bcp47(info.lang()))
}

/// A detector limited to the languages the server expects (`tags`, BCP 47 or ISO 639-3):
/// whatlang confuses short sentences of related languages (English read as Portuguese), so an
/// operator who knows the traffic narrows the choice. Unknown tags are ignored; none known:
/// every language.
fn detector_for(tags: &[String]) -> whatlang::Detector {
    let langs: Vec<whatlang::Lang> = tags
        .iter()
        .filter_map(|t| {
            whatlang::Lang::all()
                .iter()
                .copied()
                .find(|l| bcp47(*l) == t.as_str() || l.code() == t.as_str())
        })
        .collect();
    if langs.is_empty() {
        whatlang::Detector::new()
    } else {
        whatlang::Detector::with_allowlist(langs)
    }
}

/// Below this whatlang confidence a request is tagged `und`. whatlang's own `is_reliable`
/// rejects most one-sentence requests, even in a script only one language uses.
const MIN_DETECTION_CONFIDENCE: f64 = 0.1;

/// whatlang's ISO 639-3 codes as the BCP 47 tags clients send (two letters where ISO 639-1
/// has one).
fn bcp47(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang::*;
    match lang {
        Eng => "en",
        Heb => "he",
        Jpn => "ja",
        Cmn => "zh",
        Kor => "ko",
        Ara => "ar",
        Rus => "ru",
        Ukr => "uk",
        Deu => "de",
        Fra => "fr",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Nld => "nl",
        Pol => "pl",
        Tur => "tr",
        Hin => "hi",
        Vie => "vi",
        Tha => "th",
        Ind => "id",
        Swe => "sv",
        Ell => "el",
        Pes => "fa",
        other => other.code(),
    }
}

/// The demo server's limits: the library defaults, with room for the requests waiting to be
/// batched.
fn server_limits() -> Limits {
    Limits {
        max_slow_in_flight: MAX_INFERENCE_IN_FLIGHT,
        ..Limits::default()
    }
}

/// The server's rare events (for example running out of file descriptors), at most one line
/// per kind every 10 s.
fn report_server_event(event: &Event) {
    eprintln!("moescope demo: http server: {event:?}");
}

fn text_response(status: StatusCode, body: &str) -> Response {
    Response::text(status, format!("{body}\n"))
}

/// `GET /metrics` on the server thread; `POST /v1/route`, and the live page `GET /` and
/// `GET /v1/snapshot` ([`super::page`], drawn with `page`), on the blocking pool.
/// `/metrics` ends with the server's own counters (`moescope_http_*`) once `server_stats` is
/// set.
fn router(
    detector: whatlang::Detector,
    recorder: Arc<Recorder>,
    jobs: Sender<Job>,
    metrics: PrometheusRender,
    requests: Arc<AtomicU64>,
    server_stats: Arc<OnceLock<StatsHandle>>,
    page: LivePageOptions,
) -> Router {
    let router = Router::new().fast(Method::GET, "/metrics", move |_| {
        let mut body = metrics.render();
        if let Some(stats) = server_stats.get() {
            body.push_str(&stats.read().to_prometheus_text());
        }
        Response::new(StatusCode::OK, PrometheusRender::CONTENT_TYPE, body)
    });
    // The live page and the window as a snapshot file, on the slow pool.
    super::page::routes(router, recorder.clone(), page).slow(
        Method::POST,
        "/v1/route",
        move |request| route(request, &detector, &recorder, &jobs, &requests),
    )
}

/// `POST /v1/route`: tag or detect the language, queue the text for inference, wait for it.
fn route(
    request: &Request,
    detector: &whatlang::Detector,
    recorder: &Recorder,
    jobs: &Sender<Job>,
    requests: &AtomicU64,
) -> Response {
    // Text over the limit is cut at a character boundary, never rejected for it.
    let (text, cut) = match request.body_text(MAX_REQUEST_BYTES) {
        Ok(t) if !t.text.trim().is_empty() => (t.text, t.cut),
        Ok(_) => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "the body must be non-empty UTF-8 text",
            )
        }
        Err(e) => {
            return text_response(
                StatusCode::BAD_REQUEST,
                &format!("the body must be non-empty UTF-8 text: {e}"),
            )
        }
    };
    let (tag, source) = language_of(detector, request, text);
    let lang = recorder.language(&tag);
    let tokens = byte_tokens(text);
    let (reply, answer) = mpsc::channel();
    let id = requests.fetch_add(1, Ordering::Relaxed);
    let sent = jobs.send(Job {
        tokens,
        lang,
        sequence_id: id,
        reply,
    });
    let done = sent
        .map_err(|_| "the inference thread stopped".to_owned())
        .and_then(|()| {
            answer
                .recv_timeout(Duration::from_secs(25))
                .map_err(|_| "inference timed out".to_owned())
        })
        .and_then(|r| r);
    match done {
        Ok(d) => {
            // Text lengths for the tokenization statistics (the tokens recorded).
            let chars = text.chars().count() as u64;
            let words = text.split_whitespace().count() as u64;
            recorder.record_text(lang, chars, words);
            let body = serde_json::json!({
                "lang": recorder.registry().tag(lang).map(|t| t.as_str().to_owned()),
                "lang_source": source,
                "tokens": d.tokens,
                "chars": chars,
                "words": words,
                "cut": cut,
                "received_bytes": request.body().len(),
                "batch_tokens": d.batch_tokens,
                "next_token": d.next_token,
            });
            Response::new(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        Err(e) => text_response(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// Posts the mix to the server over HTTP, `rps` requests per second, until stopped.
fn load_loop(
    addr: SocketAddr,
    mix: &[(String, f64)],
    rps: f64,
    tagged_share: f64,
    seed: u64,
    stop: &AtomicBool,
) {
    let total: f64 = mix.iter().map(|(_, s)| s).sum();
    let mut rng = moescope_core::rng::Rng::new(seed);
    let every = Duration::from_secs_f64(1.0 / rps.max(0.1));
    let start = Instant::now();
    let mut sent = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut pick = rng.next_f64() * total;
        let tag = mix
            .iter()
            .find(|(_, s)| {
                pick -= s;
                pick < 0.0
            })
            .map_or(mix[0].0.as_str(), |(t, _)| t.as_str());
        let pool = sentences::for_tag(tag).unwrap_or(sentences::EN);
        let text = pool[(rng.next_f64() * pool.len() as f64) as usize % pool.len()];
        let path = if rng.next_f64() < tagged_share {
            format!("/v1/route?lang={tag}")
        } else {
            "/v1/route".to_owned()
        };
        let _ = post(addr, &path, text);
        sent += 1;
        let target = start + every * sent;
        while let Some(wait) = target.checked_duration_since(Instant::now()) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
    }
}

/// A minimal HTTP/1.1 POST (the generator talks to our own server on loopback).
fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_sentences_are_detected_as_their_language() {
        let detector = detector_for(&["en".into(), "he".into(), "ja".into(), "xx".into()]);
        for (tag, pool) in [
            ("en", sentences::EN),
            ("he", sentences::HE),
            ("ja", sentences::JA),
        ] {
            for s in pool {
                assert_eq!(detect(&detector, s), Some(tag), "{s}");
            }
        }
    }
}
