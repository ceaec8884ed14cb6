//! [`CudaMonitor`]: counts a serving stack's routing on its own CUDA stream.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream};
use moescope_core::{LangId, Recorder};

use crate::buffers::{Begin, DoubleBuffer, FlushSchedule};
use crate::kernels::{self, Args, BLOCK_THREADS, KERNEL_LOGITS, KERNEL_TOPK, MAX_EXPERTS, MAX_K};
use crate::layout::{merge_words, Layout, MergeReport};
use crate::CudaError;

/// A raw device address (`CUdeviceptr`) of memory the serving stack owns. The monitor reads
/// it during its kernels and never frees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevicePtr(pub u64);

/// The element type of top-k expert ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdType {
    /// `int32` (vLLM, SGLang).
    I32 = 0,
    /// `int64` (PyTorch's `topk` indices).
    I64 = 1,
    /// `uint32`.
    U32 = 2,
}

/// The element type of weights and logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatType {
    /// `float32`.
    F32 = 0,
    /// IEEE `float16`.
    F16 = 1,
    /// `bfloat16`.
    Bf16 = 2,
}

/// The language of each token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tags {
    /// Every token has this language.
    All(LangId),
    /// A device buffer of one `u16` per token: each a [`LangId::index`], or `0xFFFF`
    /// ([`LangId::EXCLUDED`]) to skip the token. Use [`CudaMonitor::staged_tags`] for the
    /// monitor's own persistent buffer (what a captured CUDA graph should read).
    Device(DevicePtr),
}

/// What the tokens of one launch share besides their routing data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Languages.
    pub tags: Tags,
    /// One `u64` sequence id per token on the device: tokens then go to the split half the
    /// CPU recorder would give them. `None`: halves by token index parity.
    pub sequence_ids: Option<DevicePtr>,
    /// A device `u32` holding how many leading tokens are valid (padded batches, captured
    /// graphs); [`CudaMonitor::staged_valid_tokens`] is the monitor's own. `None`: all.
    pub valid_tokens: Option<DevicePtr>,
}

impl TokenInfo {
    /// Every token of language `lang`, halves by parity, no padding.
    pub fn all(lang: LangId) -> TokenInfo {
        TokenInfo {
            tags: Tags::All(lang),
            sequence_ids: None,
            valid_tokens: None,
        }
    }
}

/// Top-k routing decisions on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopK {
    /// `T × k` expert ids, row-major.
    pub ids: DevicePtr,
    /// Their type.
    pub id_type: IdType,
    /// `T × k` gate weights, aligned with the ids, and their type.
    pub weights: Option<(DevicePtr, FloatType)>,
}

/// Router logits on the device: `T × E`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logits {
    /// The logits.
    pub logits: DevicePtr,
    /// Their type.
    pub dtype: FloatType,
}

/// How a [`CudaMonitor`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Most tokens one launch may have (the staged tag buffer's length).
    pub max_tokens: usize,
    /// [`CudaMonitor::end_step`] starts a flush every this many steps (`0`: only
    /// [`CudaMonitor::flush`]).
    pub flush_every_steps: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            max_tokens: 16_384,
            flush_every_steps: 64,
        }
    }
}

/// Totals since the monitor started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Kernel launches issued.
    pub launches: u64,
    /// Flushes completed (merged into the recorder).
    pub flushes: u64,
    /// Token-layers merged.
    pub merged_tokens: u64,
    /// Token-layers dropped by the kernels (bad ids, NaN rows, unknown tags).
    pub dropped_tokens: u64,
    /// Token-layers the recorder refused to merge (e.g. a sampled language).
    pub unmerged_tokens: u64,
}

/// Device memory the monitor owns.
struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl DeviceBuffer {
    fn zeroed(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        ctx.bind_to_thread()?;
        // SAFETY: a fresh allocation of `bytes` (at least 8), zeroed before use; freed once,
        // in `drop`.
        let ptr = unsafe {
            let ptr = result::malloc_sync(bytes.max(8))?;
            result::memset_d8_sync(ptr, 0, bytes.max(8))?;
            ptr
        };
        Ok(DeviceBuffer {
            ptr,
            ctx: ctx.clone(),
        })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by `malloc_sync`, freed only here; the monitor waited for
            // its work before dropping its buffers.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// Page-locked host memory the monitor owns, `len` elements of `T`.
struct PinnedBuffer<T: Copy> {
    ptr: *mut T,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the buffer is plain host memory owned by this value alone.
unsafe impl<T: Copy + Send> Send for PinnedBuffer<T> {}

impl<T: Copy> PinnedBuffer<T> {
    fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<PinnedBuffer<T>, CudaError> {
        ctx.bind_to_thread()?;
        let bytes = (len * std::mem::size_of::<T>()).max(8);
        // SAFETY: a fresh page-locked allocation, zeroed below, freed once in `drop`.
        let ptr = unsafe { result::malloc_host(bytes, 0)? }.cast::<T>();
        // SAFETY: `ptr` points to `bytes` writable bytes.
        unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), 0, bytes) };
        Ok(PinnedBuffer {
            ptr,
            len,
            ctx: ctx.clone(),
        })
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialized elements (zeroed at allocation; written by copies the
        // monitor has waited for).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by `malloc_host`, freed only here, after the monitor's copies.
            let _ = unsafe { result::free_host(self.ptr.cast()) };
        }
    }
}

/// A stream the monitor creates for its copies, destroyed with it.
struct OwnedStream {
    stream: Arc<CudaStream>,
}

impl Drop for OwnedStream {
    fn drop(&mut self) {
        if self.stream.context().bind_to_thread().is_ok() {
            // SAFETY: created by the monitor with `stream::create`, wrapped without ownership,
            // destroyed only here; the monitor synchronized it first.
            let _ = unsafe { result::stream::destroy(self.stream.cu_stream()) };
        }
    }
}

/// Tag staging slots: pinned host buffers whose copy to the device may still be in flight.
const TAG_STAGING: usize = 3;

/// Counts one model's routing on the device, in the serving stack's stream, and merges the
/// counts into a [`Recorder`].
///
/// Per MoE layer per step, [`record_topk`](Self::record_topk) or
/// [`record_logits`](Self::record_logits) enqueue one kernel on the serving stream: no
/// allocation, no host synchronization, fixed device addresses, so the call can be captured
/// in a CUDA graph. [`end_step`](Self::end_step) (or [`flush`](Self::flush) and
/// [`poll`](Self::poll)) moves the counts to the recorder without ever waiting for the GPU.
///
/// Drop captured graphs that contain the monitor's kernels before the monitor: its buffers
/// are freed on drop (after waiting for the work it enqueued).
pub struct CudaMonitor {
    recorder: Arc<Recorder>,
    layout: Layout,
    top_k: usize,
    config: MonitorConfig,
    salt: u64,
    grid_cap: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    copy: OwnedStream,
    f_topk: CudaFunction,
    f_logits: CudaFunction,
    acc: [DeviceBuffer; 2],
    ctrl: DeviceBuffer,
    tags: DeviceBuffer,
    valid: DeviceBuffer,
    host: PinnedBuffer<u64>,
    tag_staging: Vec<(PinnedBuffer<u16>, CudaEvent)>,
    next_staging: usize,
    flip_done: CudaEvent,
    copy_done: CudaEvent,
    dbuf: DoubleBuffer,
    schedule: FlushSchedule,
    stats: MonitorStats,
    _module: Arc<CudaModule>,
}

impl std::fmt::Debug for CudaMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaMonitor")
            .field("layout", &self.layout)
            .field("config", &self.config)
            .field("buffers", &self.dbuf)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Opens GPU `ordinal`'s primary context, checking first that the driver library exists
/// (cudarc would panic without it).
///
/// # Errors
/// [`CudaError::LibraryMissing`] without `libcuda`; [`CudaError::NoDevice`] without a GPU.
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
    if !kernels::driver_available() {
        return Err(CudaError::LibraryMissing {
            library: "libcuda.so (the NVIDIA driver)",
        });
    }
    match CudaContext::device_count() {
        Ok(n) if (n as usize) > ordinal => Ok(CudaContext::new(ordinal)?),
        Ok(n) => Err(CudaError::NoDevice {
            detail: format!("{n} CUDA devices, ordinal {ordinal} requested"),
        }),
        Err(e) => Err(CudaError::NoDevice {
            detail: e.to_string(),
        }),
    }
}

/// The NVRTC target for a device of compute capability `major.minor`: its own SASS
/// architecture when NVRTC 13 knows it, else PTX for `compute_80` (JIT-compiled by the
/// driver on any later GPU). `None` below 8.0 (the kernels need Ampere or later).
pub fn arch_for(major: i32, minor: i32) -> Option<&'static str> {
    if major < 8 {
        return None;
    }
    Some(match (major, minor) {
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (10, 3) => "sm_103",
        (11, 0) => "sm_110",
        (12, 0) => "sm_120",
        (12, 1) => "sm_121",
        _ => "compute_80",
    })
}

impl CudaMonitor {
    /// A monitor counting into `recorder`, whose kernels run on `stream` (the serving stack's
    /// stream; wrap a foreign one with `CudaContext::wrap_borrowed_stream`). Compiles the
    /// kernels with NVRTC and allocates everything it will use; waits for the device once.
    ///
    /// # Errors
    /// [`CudaError`]: NVRTC missing, a model the kernels do not support (more than
    /// [`MAX_EXPERTS`] experts, top-k above [`MAX_K`]), or a driver error.
    pub fn new(
        recorder: Arc<Recorder>,
        stream: Arc<CudaStream>,
        config: MonitorConfig,
    ) -> Result<CudaMonitor, CudaError> {
        CudaMonitor::build(recorder, stream, config, None)
    }

    /// Like [`new`](Self::new), with the kernels' PTX compiled beforehand (by
    /// [`kernels::compile_ptx`] for this GPU's architecture, or `compute_80`): no NVRTC is
    /// needed at run time, only the driver.
    ///
    /// # Errors
    /// As [`new`](Self::new); the driver's error if it cannot load `ptx`.
    pub fn from_ptx(
        recorder: Arc<Recorder>,
        stream: Arc<CudaStream>,
        config: MonitorConfig,
        ptx: String,
    ) -> Result<CudaMonitor, CudaError> {
        CudaMonitor::build(recorder, stream, config, Some(ptx))
    }

    fn build(
        recorder: Arc<Recorder>,
        stream: Arc<CudaStream>,
        config: MonitorConfig,
        ptx: Option<String>,
    ) -> Result<CudaMonitor, CudaError> {
        let layout = Layout::for_recorder(&recorder);
        let top_k = recorder.spec().top_k as usize;
        if layout.experts > MAX_EXPERTS {
            return Err(CudaError::Unsupported {
                field: "num_experts",
                value: layout.experts,
                max: MAX_EXPERTS,
            });
        }
        if top_k > MAX_K {
            return Err(CudaError::Unsupported {
                field: "top_k",
                value: top_k,
                max: MAX_K,
            });
        }
        if config.max_tokens == 0 || config.max_tokens > u32::MAX as usize {
            return Err(CudaError::Unsupported {
                field: "max_tokens",
                value: config.max_tokens,
                max: u32::MAX as usize,
            });
        }
        let ctx = stream.context().clone();
        ctx.bind_to_thread()?;
        let (major, minor) = ctx.compute_capability()?;
        let arch = arch_for(major, minor).ok_or(CudaError::UnsupportedDevice { major, minor })?;
        let ptx = match ptx {
            Some(ptx) => ptx,
            None => kernels::compile_ptx(arch)?,
        };
        let module = ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
        let f_topk = module.load_function(KERNEL_TOPK)?;
        let f_logits = module.load_function(KERNEL_LOGITS)?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            .max(1) as u32;
        let bytes = layout.bytes();
        let acc = [
            DeviceBuffer::zeroed(&ctx, bytes)?,
            DeviceBuffer::zeroed(&ctx, bytes)?,
        ];
        let ctrl = DeviceBuffer::zeroed(&ctx, 16)?;
        // SAFETY: `ctrl` holds 16 bytes; enabled = 1, active = 0.
        unsafe { result::memcpy_htod_sync(ctrl.ptr, &[1u32, 0, 0, 0])? };
        let tags = DeviceBuffer::zeroed(&ctx, config.max_tokens * 2)?;
        let valid = DeviceBuffer::zeroed(&ctx, 4)?;
        let copy_raw = result::stream::create(result::stream::StreamKind::NonBlocking)?;
        let copy = OwnedStream {
            // SAFETY: a stream of this context that the monitor created; `OwnedStream`
            // destroys it after the wrapper's last use.
            stream: unsafe { ctx.wrap_borrowed_stream(copy_raw) },
        };
        let tag_staging = (0..TAG_STAGING)
            .map(|_| {
                Ok((
                    PinnedBuffer::new(&ctx, config.max_tokens)?,
                    ctx.new_event(None)?,
                ))
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let host = PinnedBuffer::new(&ctx, layout.words())?;
        Ok(CudaMonitor {
            salt: recorder.split_salt(),
            recorder,
            layout,
            top_k,
            config,
            grid_cap: 4 * sms,
            flip_done: ctx.new_event(None)?,
            copy_done: ctx.new_event(None)?,
            ctx,
            stream,
            copy,
            f_topk,
            f_logits,
            acc,
            ctrl,
            tags,
            valid,
            host,
            tag_staging,
            next_staging: 0,
            dbuf: DoubleBuffer::default(),
            schedule: FlushSchedule::every(config.flush_every_steps),
            stats: MonitorStats::default(),
            _module: module,
        })
    }

    /// The recorder counts are merged into.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The accumulators' layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Totals since the monitor started.
    pub fn stats(&self) -> MonitorStats {
        self.stats
    }

    /// The monitor's persistent tag buffer (`max_tokens` × `u16`), filled by
    /// [`stage_tags`](Self::stage_tags): pass `Tags::Device(monitor.staged_tags())` to
    /// launches a CUDA graph captures.
    pub fn staged_tags(&self) -> DevicePtr {
        DevicePtr(self.tags.ptr)
    }

    /// The monitor's persistent valid-token count (`u32`), set by
    /// [`stage_valid_tokens`](Self::stage_valid_tokens).
    pub fn staged_valid_tokens(&self) -> DevicePtr {
        DevicePtr(self.valid.ptr)
    }

    /// Copies the languages of the next launches into [`staged_tags`](Self::staged_tags),
    /// asynchronously on the serving stream (through a pinned staging buffer; never waits).
    /// Call it outside graph capture, before the launches or the graph replay that read them.
    ///
    /// # Errors
    /// [`CudaError::TooManyTokens`]; [`CudaError::StagingBusy`] when every staging buffer's
    /// previous copy is still in flight (the step's tags were not staged).
    pub fn stage_tags(&mut self, langs: &[LangId]) -> Result<(), CudaError> {
        if langs.len() > self.config.max_tokens {
            return Err(CudaError::TooManyTokens {
                tokens: langs.len(),
                max: self.config.max_tokens,
            });
        }
        self.ctx.bind_to_thread()?;
        for i in 0..TAG_STAGING {
            let slot = (self.next_staging + i) % TAG_STAGING;
            if !self.tag_staging[slot].1.try_is_complete()? {
                continue;
            }
            let (buf, event) = &mut self.tag_staging[slot];
            let dst = &mut buf.as_mut_slice()[..langs.len()];
            for (d, l) in dst.iter_mut().zip(langs) {
                *d = l.index() as u16;
            }
            // SAFETY: `dst` is pinned memory this slot owns until `event` completes; the
            // device buffer holds `max_tokens` u16s.
            unsafe { result::memcpy_htod_async(self.tags.ptr, &*dst, self.stream.cu_stream())? };
            event.record(&self.stream)?;
            self.next_staging = (slot + 1) % TAG_STAGING;
            return Ok(());
        }
        Err(CudaError::StagingBusy)
    }

    /// Sets [`staged_valid_tokens`](Self::staged_valid_tokens) to `n`, on the serving stream
    /// (a 4-byte memset: no host memory involved).
    ///
    /// # Errors
    /// A driver error.
    pub fn stage_valid_tokens(&mut self, n: u32) -> Result<(), CudaError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: `valid` holds one u32.
        unsafe { sys::cuMemsetD32Async(self.valid.ptr, n, 1, self.stream.cu_stream()).result()? };
        Ok(())
    }

    /// Turns counting on or off, in stream order (captured graphs see the change too).
    ///
    /// # Errors
    /// A driver error.
    pub fn set_enabled(&mut self, enabled: bool) -> Result<(), CudaError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: `ctrl` holds four u32s; word 0 is the enable flag.
        unsafe {
            sys::cuMemsetD32Async(
                self.ctrl.ptr,
                u32::from(enabled),
                1,
                self.stream.cu_stream(),
            )
            .result()?
        };
        Ok(())
    }

    fn args(&self, layer: usize, tokens: usize, info: &TokenInfo) -> Result<Args, CudaError> {
        if layer >= self.layout.layers {
            return Err(CudaError::LayerOutOfRange {
                layer,
                layers: self.layout.layers,
            });
        }
        if tokens > self.config.max_tokens {
            return Err(CudaError::TooManyTokens {
                tokens,
                max: self.config.max_tokens,
            });
        }
        let (tags, default_tag) = match info.tags {
            Tags::All(lang) => (0, lang.index() as u32),
            Tags::Device(p) => (nonnull(p, "tags")?, 0),
        };
        Ok(Args {
            acc: [self.acc[0].ptr, self.acc[1].ptr],
            ctrl: self.ctrl.ptr,
            tags,
            seqs: info
                .sequence_ids
                .map_or(Ok(0), |p| nonnull(p, "sequence_ids"))?,
            valid: info
                .valid_tokens
                .map_or(Ok(0), |p| nonnull(p, "valid_tokens"))?,
            salt: self.salt,
            tokens: tokens as u32,
            layer: layer as u32,
            layers: self.layout.layers as u32,
            tag_cap: self.layout.tags as u32,
            experts: self.layout.experts as u32,
            k: self.top_k as u32,
            default_tag,
            ..Args::default()
        })
    }

    fn launch(&mut self, logits: bool, mut args: Args, tokens: usize) -> Result<(), CudaError> {
        if tokens == 0 {
            return Ok(());
        }
        let grid = kernels::grid_size(tokens, logits, self.grid_cap);
        let shared = kernels::shared_bytes(self.layout.experts, logits) as u32;
        let f = if logits { &self.f_logits } else { &self.f_topk };
        self.ctx.bind_to_thread()?;
        let mut params = [(&mut args as *mut Args).cast::<c_void>()];
        // SAFETY: the kernel takes one `Args` by value, which `params` points to for the
        // duration of the call (the driver copies it). The device addresses in it are the
        // monitor's own buffers and those the caller vouched for.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (BLOCK_THREADS, 1, 1),
                shared,
                self.stream.cu_stream(),
                &mut params,
            )?
        };
        self.stats.launches += 1;
        Ok(())
    }

    /// Counts the top-k decisions of the MoE layer at depth `depth` (`0..L`, as
    /// [`RouterBatch::at_depth`](moescope_core::RouterBatch::at_depth); not the model's layer
    /// number) for one step: enqueues one kernel on the serving stream. No allocation, no
    /// synchronization; safe to capture in a CUDA graph.
    ///
    /// # Errors
    /// A [`CudaError`] naming the invalid argument (nothing is enqueued), or a driver error.
    ///
    /// # Safety
    /// Every device address must be valid memory of this context for the layouts described
    /// on [`TopK`] and [`TokenInfo`] (`tokens` rows), readable when the kernel runs on the
    /// stream (and at every replay of a graph that captured the call).
    pub unsafe fn record_topk(
        &mut self,
        depth: usize,
        tokens: usize,
        topk: &TopK,
        info: &TokenInfo,
    ) -> Result<(), CudaError> {
        let mut args = self.args(depth, tokens, info)?;
        args.data = nonnull(topk.ids, "ids")?;
        args.data_dtype = topk.id_type as u32;
        if let Some((w, t)) = topk.weights {
            args.weights = nonnull(w, "weights")?;
            args.weight_dtype = t as u32;
        }
        self.launch(false, args, tokens)
    }

    /// Counts the router logits of the MoE layer at depth `depth` for one step (softmax,
    /// top-k, selection entropy and probability sums computed on the device): one kernel on
    /// the serving stream, as [`record_topk`](Self::record_topk).
    ///
    /// # Errors
    /// As [`record_topk`](Self::record_topk).
    ///
    /// # Safety
    /// As [`record_topk`](Self::record_topk), for `tokens × E` logits.
    pub unsafe fn record_logits(
        &mut self,
        depth: usize,
        tokens: usize,
        logits: &Logits,
        info: &TokenInfo,
    ) -> Result<(), CudaError> {
        let mut args = self.args(depth, tokens, info)?;
        args.data = nonnull(logits.logits, "logits")?;
        args.data_dtype = logits.dtype as u32;
        self.launch(true, args, tokens)
    }

    /// Ends a step: merges a completed flush, and starts a flush when one is due. Never
    /// waits for the GPU. Returns the merge's report when one completed.
    ///
    /// # Errors
    /// A driver error (counts stay on the device; a later call retries).
    pub fn end_step(&mut self) -> Result<Option<MergeReport>, CudaError> {
        let report = self.poll()?;
        if self.schedule.step() && self.flush()? {
            self.schedule.flushed();
        }
        Ok(report)
    }

    /// Starts a flush: switches the kernels to the other accumulator (in stream order) and
    /// copies this one to pinned host memory on the monitor's stream. Returns false when the
    /// previous flush is still pending (call [`poll`](Self::poll)). Must not be called while
    /// the serving stream is being captured.
    ///
    /// # Errors
    /// [`CudaError::Capturing`] during capture; a driver error.
    pub fn flush(&mut self) -> Result<bool, CudaError> {
        self.ctx.bind_to_thread()?;
        if self.stream.capture_status()?
            != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
        {
            return Err(CudaError::Capturing);
        }
        let Begin::Flip { drain, activate } = self.dbuf.begin_flush() else {
            return Ok(false);
        };
        let issued = (|| -> Result<(), CudaError> {
            // SAFETY: `ctrl` holds four u32s; word 1 names the active accumulator.
            unsafe {
                sys::cuMemsetD32Async(
                    self.ctrl.ptr + 4,
                    activate as u32,
                    1,
                    self.stream.cu_stream(),
                )
                .result()?
            };
            self.flip_done.record(&self.stream)?;
            self.copy.stream.wait(&self.flip_done)?;
            let copy = self.copy.stream.cu_stream();
            let src = self.acc[drain].ptr;
            // SAFETY: the pinned buffer holds one accumulator's words and is not read until
            // `copy_done` completes; the accumulator is no longer written by kernels ordered
            // after the flip, and kernels before it finished (the copy stream waits for them).
            unsafe {
                result::memcpy_dtoh_async(self.host.as_mut_slice(), src, copy)?;
                result::memset_d8_async(src, 0, self.layout.bytes(), copy)?;
            }
            self.copy_done.record(&self.copy.stream)?;
            Ok(())
        })();
        if let Err(e) = issued {
            self.dbuf.abort_flush();
            return Err(e);
        }
        Ok(true)
    }

    /// Merges the pending flush into the recorder if its copy has completed (never waits).
    ///
    /// # Errors
    /// A driver error from the copy.
    pub fn poll(&mut self) -> Result<Option<MergeReport>, CudaError> {
        if self.dbuf.draining().is_none() {
            return Ok(None);
        }
        self.ctx.bind_to_thread()?;
        if !self.copy_done.try_is_complete()? {
            return Ok(None);
        }
        let report = merge_words(self.layout, self.host.as_slice(), &self.recorder);
        self.dbuf.finish_flush();
        self.stats.flushes += 1;
        self.stats.merged_tokens += report.merged_tokens;
        self.stats.dropped_tokens += report.dropped_tokens;
        self.stats.unmerged_tokens += report.unmerged_tokens;
        Ok(Some(report))
    }

    /// Flushes everything counted so far and waits for it. Blocks on the serving stream's work: for shutdown and tests, not the
    /// serving path.
    ///
    /// # Errors
    /// A driver error.
    pub fn flush_blocking(&mut self) -> Result<MergeReport, CudaError> {
        let mut total = MergeReport::default();
        // A pending flush first; then one flush drains the active accumulator, which holds
        // everything enqueued before this call (the other one was zeroed when last drained).
        while !self.flush()? {
            self.copy_done.synchronize()?;
            self.add_report(&mut total)?;
        }
        self.copy_done.synchronize()?;
        self.add_report(&mut total)?;
        Ok(total)
    }

    fn add_report(&mut self, total: &mut MergeReport) -> Result<(), CudaError> {
        if let Some(r) = self.poll()? {
            total.merged_tokens += r.merged_tokens;
            total.dropped_tokens += r.dropped_tokens;
            total.excluded_tokens += r.excluded_tokens;
            total.unmerged_tokens += r.unmerged_tokens;
            total.errors.extend(r.errors);
        }
        Ok(())
    }
}

impl Drop for CudaMonitor {
    fn drop(&mut self) {
        // Wait for the work that uses the monitor's buffers before freeing them.
        if self.ctx.bind_to_thread().is_ok() {
            if let Ok(done) = self.ctx.new_event(None) {
                if done.record(&self.stream).is_ok() {
                    let _ = done.synchronize();
                }
            }
            let _ = self.copy.stream.synchronize();
            for (_, e) in &self.tag_staging {
                let _ = e.synchronize();
            }
        }
    }
}

fn nonnull(p: DevicePtr, field: &'static str) -> Result<u64, CudaError> {
    if p.0 == 0 {
        Err(CudaError::NullPointer { field })
    } else {
        Ok(p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_architectures_get_their_own_target_and_others_portable_ptx() {
        assert_eq!(arch_for(9, 0), Some("sm_90"));
        assert_eq!(arch_for(8, 0), Some("sm_80"));
        assert_eq!(arch_for(10, 0), Some("sm_100"));
        assert_eq!(arch_for(13, 0), Some("compute_80"));
        assert_eq!(arch_for(7, 5), None);
    }

    #[test]
    fn the_monitor_can_move_to_the_serving_thread() {
        fn is_send<T: Send>() {}
        is_send::<CudaMonitor>();
    }

    #[test]
    fn a_null_device_pointer_is_named() {
        assert_eq!(
            nonnull(DevicePtr(0), "ids"),
            Err(CudaError::NullPointer { field: "ids" })
        );
        assert_eq!(nonnull(DevicePtr(0x7000), "ids"), Ok(0x7000));
    }
}
