//! A small cudarc-based "serving stack" hands its router buffers to moescope's CUDA monitor.
//!
//! The stack's own kernel writes each MoE layer's router logits (bf16, T × 128) for a batch of
//! English and Hebrew tokens, where Hebrew's deepest layers favour a handful of experts. Per
//! layer the monitor counts the logits on the device (softmax, top-8, entropy). One decode
//! step (48 layers: the stack's kernel and the monitor's) is captured in a CUDA graph and
//! replayed; the tags and the valid-token count live in the monitor's persistent buffers,
//! updated before each replay. Counts reach the recorder through non-blocking flushes; the
//! example prints the per-layer usage entropy per language.
//!
//! Run: `cargo run --release --example cuda_monitor --features cuda`. Needs a GPU (compute
//! capability 8.0+), the driver and NVRTC 13 on the library path. Without them it prints why
//! and exits with code 0 (nothing to demonstrate is not a failure).

use std::sync::Arc;

use moescope::cuda::cudarc::driver::{sys, CudaSlice, DevicePtr as _, PushKernelArg};
use moescope::cuda::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use moescope::cuda::{
    kernels, open_device, CudaMonitor, DevicePtr, FloatType, Logits, MonitorConfig, Tags, TokenInfo,
};
use moescope::{stats, ModelSpec, Recorder};

/// The stack's router: pseudo-random logits; tokens of language `he` in layers ≥ 40 get a
/// large bias towards experts 0..4.
const STACK_KERNEL: &str = r#"
extern "C" __global__ void toy_router(unsigned short* logits, const unsigned short* tags,
                                      unsigned int tokens, unsigned int experts,
                                      unsigned int layer, unsigned int step, unsigned int he) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= tokens * experts) return;
    unsigned int t = i / experts, e = i % experts;
    unsigned long long x = ((unsigned long long)step << 40) ^ ((unsigned long long)layer << 32) ^ i;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    float v = (float)(x >> 40) / 16777216.0f * 4.0f - 2.0f;
    if (tags[t] == he && layer >= 40 && e < 4) v += 6.0f;
    logits[i] = (unsigned short)(__float_as_uint(v) >> 16);  // bf16 (truncated)
}
"#;

#[allow(unsafe_code)] // a stack's kernel launch and raw device addresses handed to the monitor
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = match open_device(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            println!("cuda_monitor: nothing to run without a GPU: {e}");
            return Ok(());
        }
    };
    if !kernels::nvrtc_available() {
        println!("cuda_monitor: nothing to run without NVRTC (libnvrtc.so.13 on LD_LIBRARY_PATH)");
        return Ok(());
    }
    let stream = ctx.new_stream()?;
    let spec = ModelSpec::preset("qwen3-30b-a3b")?;
    let (layers, experts) = (spec.num_moe_layers(), spec.num_experts as usize);
    let recorder = Arc::new(Recorder::new(spec)?);
    let (en, he) = (recorder.language("en"), recorder.language("he"));
    let tokens = 64usize;
    let config = MonitorConfig {
        max_tokens: tokens,
        flush_every_steps: 8,
    };
    let mut monitor = CudaMonitor::new(recorder.clone(), stream.clone(), config)?;

    // The stack: its kernel, its logits buffer (one per layer, as a real stack's activations).
    let ptx = compile_ptx_with_opts(
        STACK_KERNEL,
        CompileOptions {
            arch: Some("compute_80"),
            ..Default::default()
        },
    )?;
    let router = ctx.load_module(ptx)?.load_function("toy_router")?;
    let logits: Vec<CudaSlice<u16>> = (0..layers)
        .map(|_| stream.alloc_zeros::<u16>(tokens * experts))
        .collect::<Result<_, _>>()?;
    let logit_ptrs: Vec<DevicePtr> = logits
        .iter()
        .map(|s| DevicePtr(s.device_ptr(&stream).0))
        .collect();
    // 48 English tokens, then 16 Hebrew ones.
    let langs: Vec<_> = (0..tokens).map(|t| if t < 48 { en } else { he }).collect();
    monitor.stage_tags(&langs)?;
    monitor.stage_valid_tokens(tokens as u32)?;
    let info = TokenInfo {
        tags: Tags::Device(monitor.staged_tags()),
        sequence_ids: None,
        valid_tokens: Some(monitor.staged_valid_tokens()),
    };
    let tags_raw = monitor.staged_tags().0;

    // One decode step: per layer, the stack's router kernel, then the monitor's count.
    let decode_step =
        |monitor: &mut CudaMonitor, step: u32| -> Result<(), Box<dyn std::error::Error>> {
            let n = (tokens * experts) as u32;
            let cfg = moescope::cuda::cudarc::driver::LaunchConfig::for_num_elems(n);
            let he_tag = he.index() as u32;
            for (layer, buf) in logit_ptrs.iter().enumerate() {
                let (t, e, l) = (tokens as u32, experts as u32, layer as u32);
                let mut b = stream.launch_builder(&router);
                // Raw addresses, taken before capture: no cudarc event tracking inside the graph.
                b.arg(&buf.0)
                    .arg(&tags_raw)
                    .arg(&t)
                    .arg(&e)
                    .arg(&l)
                    .arg(&step)
                    .arg(&he_tag);
                // SAFETY: the kernel's arguments match its signature; `buf` is a T × E bf16 buffer.
                unsafe { b.launch(cfg) }?;
                let lg = Logits {
                    logits: *buf,
                    dtype: FloatType::Bf16,
                };
                // SAFETY: `buf` is `logits[layer]`, T × E bf16, alive for the whole example.
                unsafe { monitor.record_logits(layer, tokens, &lg, &info) }?;
            }
            Ok(())
        };

    // Eager prefill-like steps, then a captured decode step replayed.
    for step in 0..4 {
        decode_step(&mut monitor, step)?;
        monitor.end_step()?;
    }
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    decode_step(&mut monitor, 4)?;
    let graph = stream
        .end_capture(sys::CUgraphInstantiate_flags(0))?
        .ok_or("empty graph")?;
    for step in 0..60 {
        // A real stack restages tags (`stage_tags`) when the batch's requests change and the
        // valid-token count every step; here the requests stay, the padding varies.
        let valid = if step % 2 == 0 { tokens } else { 56 };
        monitor.stage_valid_tokens(valid as u32)?;
        graph.launch()?;
        if let Some(report) = monitor.end_step()? {
            println!(
                "flush merged {} token-layers ({} dropped)",
                report.merged_tokens, report.dropped_tokens
            );
        }
    }
    drop(graph); // before the monitor and the buffers its kernels read
    monitor.flush_blocking()?;
    let snapshot = recorder.snapshot();
    println!("monitor: {:?}", monitor.stats());
    println!("layer  entropy(en)  entropy(he)  [bits of usage over 128 experts]");
    for layer in [0, 20, 39, 40, 47] {
        let h = |tag: &str| {
            stats::usage_entropy_bits(&snapshot.languages[tag].layers[layer].expert_tokens)
                .unwrap_or(f64::NAN)
        };
        println!("{layer:>5}  {:>11.3}  {:>11.3}", h("en"), h("he"));
    }
    drop(logits);
    Ok(())
}
