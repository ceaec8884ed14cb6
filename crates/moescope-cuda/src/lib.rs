//! moescope-cuda: count a Mixture-of-Experts router's decisions on the GPU, in the serving
//! stack's own CUDA stream, and merge the counts into a [`moescope_core::Recorder`].
//!
//! A [`CudaMonitor`] takes, per MoE layer per step, device buffers the serving stack owns
//! (raw device addresses with their dtype and shape: candle, PyTorch's `data_ptr()`, or a
//! custom server) and enqueues one kernel that counts them into `[layer × tag × expert]`
//! accumulators on the device: top-k ids ([`TopK`]: i32, i64 or u32, optional f32/f16/bf16
//! weights) or router logits ([`Logits`]: f32/f16/bf16, softmax, top-k and selection entropy
//! computed on the device). Every few steps the monitor swaps its double buffer, copies the
//! old accumulator to pinned host memory on its own stream, and merges it into the recorder
//! once the copy has completed: the serving stream is never synchronized. The recording
//! calls allocate nothing and read their flags, tags and valid-token count from device
//! memory, so a captured CUDA graph keeps counting when replayed.
//!
//! At run time the monitor needs the NVIDIA driver (`libcuda`) and NVRTC 13
//! (`libnvrtc.so.13`, e.g. from the `nvidia-cuda-nvrtc` wheel); both are loaded dynamically
//! and their absence is an error ([`CudaError::LibraryMissing`]), never a panic. Building
//! needs neither.
//!
//! The [`reference`](mod@reference) module is a CPU model of the kernels; this example counts a step with it
//! and merges the result into a recorder, as the monitor does with the device's counts:
//!
//! ```
//! use moescope_core::{ModelSpec, Recorder};
//! use moescope_cuda::layout::{Aggregates, Layout};
//! use moescope_cuda::reference::{count_topk, Step, TokenTags};
//!
//! let recorder = Recorder::new(ModelSpec::new("tiny", 8, 2, vec![0, 1])?)?;
//! let he = recorder.language("he");
//! let mut acc = Aggregates::zeroed(Layout::for_recorder(&recorder));
//! // Layer 1: three Hebrew tokens, top-2 ids each (int64, as PyTorch's topk returns them).
//! let ids: [i64; 6] = [5, 1, 5, 2, 5, 7];
//! let step = Step {
//!     layer: 1,
//!     tokens: 3,
//!     tags: TokenTags::All(he.index() as u16),
//!     sequence_ids: None,
//!     salt: recorder.split_salt(),
//!     valid: None,
//! };
//! count_topk(&mut acc, &step, &ids, 2, None);
//! let report = acc.merge_into(&recorder);
//! assert_eq!(report.merged_tokens, 3);
//! let layer = &recorder.snapshot().languages["he"].layers[1];
//! assert_eq!(layer.expert_tokens, [0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With a GPU (see `examples/cuda_monitor.rs` in the repository for a complete stack with a
//! captured graph):
//!
//! ```no_run
//! use std::sync::Arc;
//! use moescope_core::{ModelSpec, Recorder};
//! use moescope_cuda::{open_device, CudaMonitor, DevicePtr, IdType, MonitorConfig, TokenInfo, TopK};
//!
//! let recorder = Arc::new(Recorder::new(ModelSpec::preset("qwen3-30b-a3b")?)?);
//! let ctx = open_device(0)?; // an error, not a panic, without a driver or a GPU
//! let stream = ctx.default_stream(); // or ctx.wrap_borrowed_stream(the stack's stream)
//! let mut monitor = CudaMonitor::new(recorder.clone(), stream, MonitorConfig::default())?;
//! let en = recorder.language("en");
//! # let (ids_ptr, tokens) = (0u64, 0usize);
//! let topk = TopK { ids: DevicePtr(ids_ptr), id_type: IdType::I64, weights: None };
//! // SAFETY: `ids_ptr` is the router's `tokens × 8` int64 top-k tensor on this device.
//! unsafe { monitor.record_topk(47, tokens, &topk, &TokenInfo::all(en))? };
//! monitor.end_step()?; // merges a completed flush; starts one every 64 steps
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`kernels`] (the CUDA source, NVRTC), [`layout`] (the accumulator and its merge),
//! [`buffers`] (double-buffer bookkeeping), [`reference`](mod@reference) (the CPU model), and the monitor.
#![warn(missing_docs)]

pub mod buffers;
pub mod kernels;
pub mod layout;
// The monitor is a wrapper over the CUDA driver's C API (raw device memory, pinned memory,
// streams, events, kernel launches): every unsafe block in it carries its SAFETY argument.
#[allow(unsafe_code)]
mod monitor;
pub mod reference;

pub use cudarc;
pub use layout::{Aggregates, Layout, MergeReport, Stat};
pub use monitor::{
    arch_for, open_device, CudaMonitor, DevicePtr, FloatType, IdType, Logits, MonitorConfig,
    MonitorStats, Tags, TokenInfo, TopK,
};

/// Why the CUDA path could not do something. Never a panic: the serving process goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library could not be loaded.
    #[error("{library} could not be loaded: install the NVIDIA driver and NVRTC 13 (e.g. `pip install nvidia-cuda-nvrtc`) and put its lib folder on LD_LIBRARY_PATH")]
    LibraryMissing {
        /// The library.
        library: &'static str,
    },
    /// No usable GPU.
    #[error("no CUDA device: {detail}")]
    NoDevice {
        /// What the driver said.
        detail: String,
    },
    /// The GPU is older than the kernels support (compute capability 8.0).
    #[error("compute capability {major}.{minor} is not supported: the kernels need 8.0 or later")]
    UnsupportedDevice {
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// NVRTC rejected the kernels.
    #[error("NVRTC failed to compile the kernels for {arch}: {log}")]
    Compile {
        /// The target architecture.
        arch: &'static str,
        /// NVRTC's log.
        log: String,
    },
    /// The model or configuration exceeds what the kernels support.
    #[error("{field} = {value} is not supported (at most {max})")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The largest supported value.
        max: usize,
    },
    /// A layer index not below the model's MoE layers.
    #[error("layer {layer} out of range: the model has {layers} MoE layers")]
    LayerOutOfRange {
        /// The layer.
        layer: usize,
        /// MoE layers.
        layers: usize,
    },
    /// More tokens than the monitor's `max_tokens`.
    #[error("{tokens} tokens exceed the monitor's max_tokens of {max}")]
    TooManyTokens {
        /// Tokens passed.
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// A required device address is 0.
    #[error("{field}: null device pointer")]
    NullPointer {
        /// The field.
        field: &'static str,
    },
    /// Every tag staging buffer is still being copied (more than three stagings in flight).
    #[error("every tag staging buffer is still in flight; the tags were not staged")]
    StagingBusy,
    /// A flush was requested while the serving stream is being captured into a graph.
    #[error("cannot flush while the serving stream is being captured")]
    Capturing,
    /// An error from the CUDA driver.
    #[error("CUDA driver: {0}")]
    Driver(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}
