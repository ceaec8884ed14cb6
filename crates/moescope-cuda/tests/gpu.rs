//! The GPU correctness suite: the device's counts, merged into a recorder, against the CPU
//! recorder fed the same tokens (exact counts, sums within 1e-5 relative), drops by reason,
//! CUDA-graph replay, the enable flag and periodic flushes.
//!
//! Without a GPU (or without the driver or NVRTC) every test prints
//! `skipped: no CUDA device (<test>)` and passes; with `MOESCOPE_REQUIRE_GPU=1` (as the
//! GPU check's run.sh sets it) they fail instead.

mod common;

use std::sync::Arc;

use common::{assert_drops_match, assert_snapshots_match, recorder, sweep, Case, Mode, Shape};
use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr as _};
use moescope_core::{LangId, Recorder};
use moescope_cuda::reference::{count_topk, Step, TokenTags};
use moescope_cuda::{
    open_device, Aggregates, CudaMonitor, DevicePtr, FloatType, IdType, Layout, Logits,
    MonitorConfig, Tags, TokenInfo, TopK,
};

fn required() -> bool {
    std::env::var("MOESCOPE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: MOESCOPE_REQUIRE_GPU=1 but {why}");
    }
    // Straight to stderr, past the test harness's capture, so the skip is visible.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: no CUDA device ({test}): {why}");
}

/// The device and a stream, or `None` after reporting the skip.
fn device(test: &str) -> Option<(Arc<CudaContext>, Arc<CudaStream>)> {
    match open_device(0) {
        Ok(ctx) => match ctx.new_stream() {
            Ok(s) => Some((ctx, s)),
            Err(e) => {
                skip(test, &e.to_string());
                None
            }
        },
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}

fn monitor(
    test: &str,
    r: Arc<Recorder>,
    stream: &Arc<CudaStream>,
    config: MonitorConfig,
) -> Option<CudaMonitor> {
    match common::new_monitor(r, stream, config) {
        Ok(m) => Some(m),
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> DevicePtr {
    DevicePtr(s.device_ptr(stream).0)
}

/// A case's buffers on the device (kept alive until the monitor has flushed).
struct Uploaded {
    _slices: Vec<Box<dyn std::any::Any>>,
    data: DevicePtr,
    values: Option<DevicePtr>,
    tags: DevicePtr,
    seqs: DevicePtr,
}

fn up<T: cudarc::driver::DeviceRepr + 'static>(
    stream: &Arc<CudaStream>,
    v: &[T],
    keep: &mut Vec<Box<dyn std::any::Any>>,
) -> DevicePtr {
    let s = stream.clone_htod(v).unwrap();
    let p = ptr(&s, stream);
    keep.push(Box::new(s));
    p
}

fn upload(case: &Case, stream: &Arc<CudaStream>) -> Uploaded {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let k = &mut keep;
    let float = |t: FloatType, k: &mut Vec<Box<dyn std::any::Any>>| match t {
        FloatType::F32 => up(stream, &case.values, k),
        _ => up(stream, &case.raw16, k),
    };
    let (data, values) = match case.shape.mode {
        Mode::TopK { id_type, weights } => {
            let ids = match id_type {
                IdType::I32 => up(
                    stream,
                    &case.ids.iter().map(|&x| x as i32).collect::<Vec<_>>(),
                    k,
                ),
                IdType::I64 => up(stream, &case.ids, k),
                IdType::U32 => up(
                    stream,
                    &case.ids.iter().map(|&x| x as u32).collect::<Vec<_>>(),
                    k,
                ),
            };
            (ids, weights.map(|t| float(t, k)))
        }
        Mode::Logits(t) => (float(t, k), None),
    };
    let tags = up(stream, &case.tags, k);
    let seqs = up(stream, &case.seqs, k);
    Uploaded {
        _slices: keep,
        data,
        values,
        tags,
        seqs,
    }
}

/// Runs `case` once through `monitor` (without flushing).
#[allow(unsafe_code)] // raw device addresses handed to the monitor
fn launch(monitor: &mut CudaMonitor, case: &Case, up: &Uploaded) {
    monitor.stage_valid_tokens(case.valid() as u32).unwrap();
    let info = TokenInfo {
        tags: Tags::Device(up.tags),
        sequence_ids: case.shape.sequence_ids.then_some(up.seqs),
        valid_tokens: Some(monitor.staged_valid_tokens()),
    };
    match case.shape.mode {
        Mode::TopK { id_type, weights } => {
            let topk = TopK {
                ids: up.data,
                id_type,
                weights: weights.map(|t| (up.values.unwrap(), t)),
            };
            // SAFETY: the buffers hold the case's `tokens` rows and live until the flush.
            unsafe { monitor.record_topk(case.layer, case.shape.tokens, &topk, &info) }.unwrap();
        }
        Mode::Logits(dtype) => {
            let logits = Logits {
                logits: up.data,
                dtype,
            };
            // SAFETY: as above.
            unsafe { monitor.record_logits(case.layer, case.shape.tokens, &logits, &info) }
                .unwrap();
        }
    }
}

#[test]
fn gpu_counts_match_cpu_recorder() {
    let test = "gpu_counts_match_cpu_recorder";
    let Some((_ctx, stream)) = device(test) else {
        return;
    };
    let mut tokens = 0.0;
    for (i, shape) in sweep().into_iter().enumerate() {
        let case = Case::new(shape, 1000 + i as u64);
        let on_gpu = Arc::new(recorder(&shape));
        let Some(mut m) = monitor(test, on_gpu.clone(), &stream, MonitorConfig::default()) else {
            return;
        };
        let up = upload(&case, &stream);
        launch(&mut m, &case, &up);
        let report = m.flush_blocking().unwrap();
        assert!(report.errors.is_empty(), "{shape:?}: {:?}", report.errors);
        let what = format!("case {i} {shape:?}");
        // Against the CPU recorder (halves are the recorder's only with sequence ids) ...
        let recorded = recorder(&shape);
        case.record(&recorded);
        tokens += assert_snapshots_match(
            &on_gpu.snapshot(),
            &recorded.snapshot(),
            shape.sequence_ids,
            &what,
        );
        assert_drops_match(&on_gpu, &recorded, &what);
        // ... and against the kernels' CPU model, halves included.
        let modeled = recorder(&shape);
        case.reference(Layout::for_recorder(&modeled), modeled.split_salt())
            .merge_into(&modeled);
        assert_snapshots_match(&on_gpu.snapshot(), &modeled.snapshot(), true, &what);
        println!(
            "ok: {what}: {} token-layers merged, {} dropped",
            report.merged_tokens, report.dropped_tokens
        );
    }
    assert!(tokens > 30_000.0);
}

#[test]
#[allow(unsafe_code)] // raw device addresses handed to the monitor
fn gpu_drops_are_counted_by_reason() {
    let test = "gpu_drops_are_counted_by_reason";
    let Some((_ctx, stream)) = device(test) else {
        return;
    };
    let shape = Shape {
        tokens: 4,
        experts: 8,
        k: 2,
        layers: 1,
        mode: Mode::TopK {
            id_type: IdType::I64,
            weights: Some(FloatType::F32),
        },
        sequence_ids: false,
        faults: false,
        padding: 0,
    };
    let r = Arc::new(recorder(&shape));
    let Some(mut m) = monitor(test, r.clone(), &stream, MonitorConfig::default()) else {
        return;
    };
    let he = r.language("he");
    let ids = stream.clone_htod(&[0i64, 1, 2, 8, 3, 4, 5, 6]).unwrap();
    let w = stream
        .clone_htod(&[0.5f32, 0.5, 0.5, 0.5, f32::NAN, 0.5, 0.5, 0.5])
        .unwrap();
    let tags = stream
        .clone_htod(&[he.index() as u16, he.index() as u16, he.index() as u16, 999])
        .unwrap();
    let topk = TopK {
        ids: ptr(&ids, &stream),
        id_type: IdType::I64,
        weights: Some((ptr(&w, &stream), FloatType::F32)),
    };
    let info = TokenInfo {
        tags: Tags::Device(ptr(&tags, &stream)),
        sequence_ids: None,
        valid_tokens: None,
    };
    // SAFETY: 4 rows of 2 ids and weights, 4 tags.
    unsafe { m.record_topk(0, 4, &topk, &info) }.unwrap();
    let report = m.flush_blocking().unwrap();
    assert_eq!((report.merged_tokens, report.dropped_tokens), (1, 3));
    use moescope_core::DropReason::*;
    assert_eq!(r.dropped(ExpertOutOfRange), 1);
    assert_eq!(r.dropped(NonFinite), 1);
    assert_eq!(r.dropped(UnknownLanguage), 1);
    let layer = &r.snapshot().languages["he"].layers[0];
    assert_eq!(
        layer.expert_tokens,
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(layer.topk_weight_sum, Some(1.0));
}

#[test]
#[allow(unsafe_code)] // raw device addresses handed to the monitor
fn gpu_graph_replays_count_every_replay() {
    let test = "gpu_graph_replays_count_every_replay";
    let Some((_ctx, stream)) = device(test) else {
        return;
    };
    let shape = Shape {
        tokens: 64,
        experts: 128,
        k: 8,
        layers: 2,
        mode: Mode::TopK {
            id_type: IdType::I32,
            weights: Some(FloatType::Bf16),
        },
        sequence_ids: false,
        faults: false,
        padding: 0,
    };
    let r = Arc::new(recorder(&shape));
    let Some(mut m) = monitor(test, r.clone(), &stream, MonitorConfig::default()) else {
        return;
    };
    let case = Case::new(shape, 42);
    let up = upload(&case, &stream);
    let langs_a: Vec<LangId> = case.tags.iter().map(|&g| LangId::from_index(g)).collect();
    let langs_b = vec![r.language("sw"); shape.tokens];
    m.stage_tags(&langs_a).unwrap();
    m.stage_valid_tokens(64).unwrap();
    let topk = TopK {
        ids: up.data,
        id_type: IdType::I32,
        weights: Some((up.values.unwrap(), FloatType::Bf16)),
    };
    let info = TokenInfo {
        tags: Tags::Device(m.staged_tags()),
        sequence_ids: None,
        valid_tokens: Some(m.staged_valid_tokens()),
    };
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    // SAFETY: the case's 64 rows; the staged buffers are the monitor's.
    unsafe { m.record_topk(case.layer, 64, &topk, &info) }.unwrap();
    assert!(matches!(
        m.flush(),
        Err(moescope_cuda::CudaError::Capturing)
    ));
    let graph = stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    let launches = m.stats().launches;
    // 3 replays with tags A and 64 tokens; 2 with tags B and 40 tokens; 1 disabled.
    for _ in 0..3 {
        graph.launch().unwrap();
    }
    m.stage_tags(&langs_b).unwrap();
    m.stage_valid_tokens(40).unwrap();
    for _ in 0..2 {
        graph.launch().unwrap();
    }
    m.set_enabled(false).unwrap();
    graph.launch().unwrap();
    m.set_enabled(true).unwrap();
    let report = m.flush_blocking().unwrap();
    assert_eq!(
        m.stats().launches,
        launches,
        "replays do not go through record_topk"
    );
    // Expected: the CPU model of the same replays.
    let layout = Layout::for_recorder(&r);
    let mut want = Aggregates::zeroed(layout);
    let tags_b: Vec<u16> = langs_b.iter().map(|l| l.index() as u16).collect();
    for (tags, valid, times) in [(&case.tags, 64, 3), (&tags_b, 40, 2)] {
        let step = Step {
            layer: case.layer,
            tokens: 64,
            tags: TokenTags::PerToken(tags),
            sequence_ids: None,
            salt: r.split_salt(),
            valid: Some(valid),
        };
        for _ in 0..times {
            count_topk(&mut want, &step, &case.ids, 8, Some(&case.values));
        }
    }
    let modeled = recorder(&shape);
    want.merge_into(&modeled);
    assert_eq!(report.merged_tokens, 3 * 64 + 2 * 40);
    assert_snapshots_match(&r.snapshot(), &modeled.snapshot(), true, test);
    drop(graph);
}

#[test]
fn gpu_periodic_flushes_lose_nothing() {
    let test = "gpu_periodic_flushes_lose_nothing";
    let Some((_ctx, stream)) = device(test) else {
        return;
    };
    let shape = Shape {
        tokens: 4096,
        experts: 128,
        k: 8,
        layers: 4,
        mode: Mode::Logits(FloatType::Bf16),
        sequence_ids: true,
        faults: true,
        padding: 0,
    };
    let r = Arc::new(recorder(&shape));
    let config = MonitorConfig {
        max_tokens: 4096,
        flush_every_steps: 1,
    };
    let Some(mut m) = monitor(test, r.clone(), &stream, config) else {
        return;
    };
    let modeled = recorder(&shape);
    let mut want = Aggregates::zeroed(Layout::for_recorder(&modeled));
    let cases: Vec<Case> = (0..8).map(|i| Case::new(shape, 77 + i)).collect();
    let ups: Vec<Uploaded> = cases.iter().map(|c| upload(c, &stream)).collect();
    let mut merged_early = 0;
    for step in 0..40 {
        let i = step % cases.len();
        launch(&mut m, &cases[i], &ups[i]);
        cases[i].reference_into(&mut want, modeled.split_salt());
        if let Some(rep) = m.end_step().unwrap() {
            merged_early += 1;
            assert!(rep.errors.is_empty());
        }
    }
    m.flush_blocking().unwrap();
    want.merge_into(&modeled);
    assert_snapshots_match(&r.snapshot(), &modeled.snapshot(), true, test);
    assert_drops_match(&r, &modeled, test);
    println!(
        "{test}: {merged_early} flushes merged while stepping, {} in all",
        m.stats().flushes
    );
}
