//! GPU benchmark of the counting kernels on a Qwen3-30B-A3B-shaped layer (E = 128, k = 8,
//! 48 MoE layers), T = 1, 64, 4096 and 16384 tokens: device time per layer (CUDA events
//! around 400 back-to-back launches, median of 7 runs), host time per recording call, and
//! the cost of one flush. `--json PATH` also writes the figures for the PyTorch baselines
//! script (`benches/baselines.py`), which prints the comparison table.
//!
//! Without a GPU it prints `skipped: no CUDA device (gpu_bench)` and exits 0.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys, CudaSlice, CudaStream, DevicePtr as _};
use moescope_core::{ModelSpec, Recorder};
use moescope_cuda::reference::f32_to_bf16;
use moescope_cuda::{
    open_device, CudaMonitor, DevicePtr, FloatType, IdType, Logits, MonitorConfig, Tags, TokenInfo,
    TopK,
};

const TOKENS: [usize; 4] = [1, 64, 4096, 16384];
const E: usize = 128;
const K: usize = 8;
const LAUNCHES: usize = 400;
const RUNS: usize = 7;

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> DevicePtr {
    DevicePtr(s.device_ptr(stream).0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (device µs per launch, host µs per call), medians over `RUNS` runs of `LAUNCHES`.
fn time(
    stream: &Arc<CudaStream>,
    m: &mut CudaMonitor,
    mut launch: impl FnMut(&mut CudaMonitor, usize),
) -> (f64, f64) {
    let ctx = stream.context();
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let (start, end) = (ctx.new_event(flags).unwrap(), ctx.new_event(flags).unwrap());
    for i in 0..50 {
        launch(m, i);
    }
    let (mut dev, mut host) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        start.record(stream).unwrap();
        let t0 = Instant::now();
        for i in 0..LAUNCHES {
            launch(m, i);
        }
        host.push(t0.elapsed().as_secs_f64() * 1e6 / LAUNCHES as f64);
        end.record(stream).unwrap();
        dev.push(f64::from(start.elapsed_ms(&end).unwrap()) * 1e3 / LAUNCHES as f64);
        m.flush_blocking().unwrap();
    }
    (median(dev), median(host))
}

#[allow(unsafe_code)] // raw device addresses handed to the monitor
fn main() {
    let json_path = std::env::args().skip_while(|a| a != "--json").nth(1);
    let ctx = match open_device(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            println!("skipped: no CUDA device (gpu_bench): {e}");
            return;
        }
    };
    let stream = ctx.new_stream().unwrap();
    let spec = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    let layers = spec.num_moe_layers();
    assert_eq!((spec.num_experts as usize, spec.top_k as usize), (E, K));
    let recorder = Arc::new(Recorder::new(spec).unwrap());
    let langs: Vec<u16> = ["en", "he", "sw", "zh"]
        .iter()
        .map(|t| recorder.language(t).index() as u16)
        .collect();
    let config = MonitorConfig {
        max_tokens: 16384,
        flush_every_steps: 0,
    };
    let mut m = match common::new_monitor(recorder.clone(), &stream, config) {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: no CUDA device (gpu_bench): {e}");
            return;
        }
    };
    println!(
        "device: {} (sm {:?}), accumulator {} KiB x 2",
        ctx.name().unwrap_or_default(),
        ctx.compute_capability().unwrap(),
        m.layout().bytes() / 1024
    );
    let mut g = common::Gen::new(2026);
    let mut rows = Vec::new();
    println!(
        "{:>6} {:>28} {:>12} {:>12}",
        "T", "kernel", "device_us", "host_us"
    );
    for t in TOKENS {
        let ids: Vec<i32> = (0..t * K)
            .map(|i| ((i % K) * 16 + g.below(16) as usize) as i32)
            .collect();
        let w: Vec<f32> = (0..t * K).map(|_| g.unit().abs() / K as f32).collect();
        let logits: Vec<u16> = (0..t * E).map(|_| f32_to_bf16(4.0 * g.unit())).collect();
        let tags: Vec<u16> = (0..t).map(|i| langs[(i / 16) % langs.len()]).collect();
        let seqs: Vec<u64> = (0..t as u64).map(|i| i / 16).collect();
        let (ids_d, w_d) = (
            stream.clone_htod(&ids).unwrap(),
            stream.clone_htod(&w).unwrap(),
        );
        let logits_d = stream.clone_htod(&logits).unwrap();
        let (tags_d, seqs_d) = (
            stream.clone_htod(&tags).unwrap(),
            stream.clone_htod(&seqs).unwrap(),
        );
        let info = TokenInfo {
            tags: Tags::Device(ptr(&tags_d, &stream)),
            sequence_ids: Some(ptr(&seqs_d, &stream)),
            valid_tokens: None,
        };
        let topk = TopK {
            ids: ptr(&ids_d, &stream),
            id_type: IdType::I32,
            weights: Some((ptr(&w_d, &stream), FloatType::F32)),
        };
        let lg = Logits {
            logits: ptr(&logits_d, &stream),
            dtype: FloatType::Bf16,
        };
        let (d, h) = time(&stream, &mut m, |m, i| {
            // SAFETY: the buffers hold `t` rows and outlive the timed launches.
            unsafe { m.record_topk(i % layers, t, &topk, &info).unwrap() }
        });
        rows.push((t, "topk_i32_f32_weights", d, h));
        let (d, h) = time(&stream, &mut m, |m, i| {
            // SAFETY: as above, `t` rows of logits.
            unsafe { m.record_logits(i % layers, t, &lg, &info).unwrap() }
        });
        rows.push((t, "logits_bf16", d, h));
        for r in &rows[rows.len() - 2..] {
            println!("{:>6} {:>28} {:>12.2} {:>12.2}", r.0, r.1, r.2, r.3);
        }
    }
    // One flush: the flip, the copy of one accumulator to pinned memory, the merge.
    let mut flush = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        m.flush_blocking().unwrap();
        flush.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let flush_us = median(flush);
    println!("flush (copy + merge of one accumulator, blocking): {flush_us:.1} us");
    if let Some(path) = json_path {
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{{\"flush_us\": {flush_us}, \"rows\": [").unwrap();
        for (i, r) in rows.iter().enumerate() {
            let comma = if i + 1 < rows.len() { "," } else { "" };
            writeln!(
                f,
                "  {{\"tokens\": {}, \"kernel\": \"{}\", \"device_us\": {}, \"host_us\": {}}}{comma}",
                r.0, r.1, r.2, r.3
            )
            .unwrap();
        }
        writeln!(f, "]}}").unwrap();
        println!("wrote {path}");
    }
}
