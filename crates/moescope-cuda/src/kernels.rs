//! The CUDA C++ source of the counting kernels, its launch constants, and NVRTC compilation.
//!
//! The source (`kernels/moescope.cu`) needs no CUDA headers. [`compile_ptx`] compiles it with
//! NVRTC (`libnvrtc.so.13`, loaded at run time) for one architecture; it never panics when the
//! library is missing: it returns [`CudaError::LibraryMissing`].

use cudarc::nvrtc::{CompileError, CompileOptions};

use crate::CudaError;

/// The kernels' CUDA C++ source.
pub const SOURCE: &str = include_str!("../kernels/moescope.cu");

/// Counts top-k expert ids (i32, i64 or u32), with optional top-k weights.
pub const KERNEL_TOPK: &str = "moescope_count_topk";
/// Computes softmax, top-k, selection entropy and probability sums from router logits.
pub const KERNEL_LOGITS: &str = "moescope_count_logits";
/// Every kernel in [`SOURCE`].
pub const KERNELS: [&str; 2] = [KERNEL_TOPK, KERNEL_LOGITS];

/// The architectures every test compiles and assembles the kernels for.
pub const TEST_ARCHS: [&str; 3] = ["sm_80", "sm_90", "sm_100"];

/// Threads per block of both kernels (their `__launch_bounds__`).
pub const BLOCK_THREADS: u32 = 256;
/// Distinct tags a block privatizes in shared memory; tokens of further tags in the same
/// block are added to global memory directly.
pub const SLOTS: usize = 4;
/// Largest top-k the kernels take.
pub const MAX_K: usize = 16;
/// Largest number of routed experts the kernels take (16 per lane of a warp).
pub const MAX_EXPERTS: usize = 512;
/// Per-layer counters of dropped and skipped tokens (see [`crate::layout::Stat`]).
pub const NSTATS: usize = 5;
/// Registers per thread that a kernel may use on any tested architecture (checked by the
/// ptxas test). 64 registers keep four 256-thread blocks resident per SM on every tested
/// architecture (65 536 registers per SM).
pub const MAX_REGISTERS: u32 = 64;

/// Bytes of dynamic shared memory a launch needs for `experts` experts (`with_probs`: the
/// logits kernel, which also privatizes probability sums).
pub const fn shared_bytes(experts: usize, with_probs: bool) -> usize {
    let doubles = 2 * SLOTS + if with_probs { SLOTS * experts } else { 0 };
    let words = SLOTS * 2 * experts + SLOTS * 2 + SLOTS + NSTATS + SLOTS;
    doubles * 8 + words * 4
}

/// Blocks of one launch for `tokens` tokens: one token per thread (top-k kernel) or per warp
/// (`logits`), at most `grid_cap` blocks (the kernels loop over the rest).
pub fn grid_size(tokens: usize, logits: bool, grid_cap: u32) -> u32 {
    let per_block = if logits {
        BLOCK_THREADS / 32
    } else {
        BLOCK_THREADS
    } as usize;
    tokens
        .div_ceil(per_block)
        .clamp(1, grid_cap.max(1) as usize) as u32
}

/// Whether NVRTC (`libnvrtc`, CUDA 13) can be loaded.
#[allow(unsafe_code)] // a dynamic-library probe
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library with libloading; calls nothing in it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda`) can be loaded. A GPU may still be absent.
#[allow(unsafe_code)] // a dynamic-library probe
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library with libloading; calls nothing in it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Compiles [`SOURCE`] to PTX for `arch` (e.g. `"sm_90"`, or `"compute_80"` for PTX the driver
/// JIT-compiles on any later GPU).
///
/// # Errors
/// [`CudaError::LibraryMissing`] without NVRTC; [`CudaError::Compile`] with NVRTC's log.
pub fn compile_ptx(arch: &'static str) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::LibraryMissing {
            library: "libnvrtc.so.13",
        });
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into()],
        name: Some("moescope.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| CudaError::Compile {
            arch,
            log: match e {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => other.to_string(),
            },
        })
}

/// The kernels' argument block; mirrors `struct Args` in the CUDA source field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Args {
    pub acc: [u64; 2],
    pub ctrl: u64,
    pub data: u64,
    pub weights: u64,
    pub tags: u64,
    pub seqs: u64,
    pub valid: u64,
    pub salt: u64,
    pub tokens: u32,
    pub layer: u32,
    pub layers: u32,
    pub tag_cap: u32,
    pub experts: u32,
    pub k: u32,
    pub data_dtype: u32,
    pub weight_dtype: u32,
    pub default_tag: u32,
    pub pad: u32,
}

#[allow(unsafe_code)]
// SAFETY: `Args` is `repr(C)`, plain integers with no padding (9 × 8 + 10 × 4 = 112 bytes),
// laid out exactly as the CUDA struct it is passed by value to.
unsafe impl cudarc::driver::DeviceRepr for Args {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_the_tokens_up_to_the_cap() {
        assert_eq!(grid_size(1, false, 528), 1);
        assert_eq!(grid_size(257, false, 528), 2);
        assert_eq!(grid_size(16384, false, 528), 64);
        assert_eq!(grid_size(16384, true, 528), 528);
        assert_eq!(grid_size(64, true, 528), 8);
        assert_eq!(grid_size(0, true, 0), 1);
    }

    #[test]
    fn args_match_the_cuda_struct_size() {
        assert_eq!(std::mem::size_of::<Args>(), 112);
        assert_eq!(std::mem::align_of::<Args>(), 8);
    }

    #[test]
    fn shared_memory_fits_the_default_limit_for_every_supported_expert_count() {
        // 48 KiB of dynamic shared memory is available without opting in.
        assert!(shared_bytes(MAX_EXPERTS, true) <= 48 * 1024);
        // Qwen3-30B-A3B: 4 slots × 2 halves × 128 experts × 4 B + 4 × 128 × 8 B, plus small.
        assert_eq!(
            shared_bytes(128, true),
            (8 + 512) * 8 + (1024 + 8 + 4 + 5 + 4) * 4
        );
        assert_eq!(shared_bytes(128, false), 8 * 8 + (1024 + 21) * 4);
    }

    #[test]
    fn the_source_defines_every_kernel_and_matches_the_constants() {
        for k in KERNELS {
            assert!(SOURCE.contains(&format!("__global__ void __launch_bounds__(256, 4) {k}(")));
        }
        for (name, v) in [
            ("SLOTS", SLOTS),
            ("MAX_K", MAX_K),
            ("MAX_PER_LANE", MAX_EXPERTS / 32),
            ("NSTATS", NSTATS),
        ] {
            assert!(
                SOURCE.contains(&format!("#define {name} {v}")),
                "{name} != {v} in the CUDA source"
            );
        }
    }
}
