//! A workaround for tract's AVX-512 kernels.

/// Clears the upper halves of the AVX registers after tract ran.
///
/// tract 0.23's AVX-512 matrix kernels return with the upper register state dirty. Until a
/// `vzeroupper`, every legacy-SSE instruction of the thread (all scalar `f64` code compiled
/// for baseline x86-64: the recorder's softmax, libm's `exp` and `log2`) pays a false
/// dependency on the whole register: measured here, recording one 264-token batch with
/// logits took 5.6 ms after a tract run and 0.24 ms after a `vzeroupper`.
#[inline]
#[allow(unsafe_code)] // one documented intrinsic call, below
pub fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above), the only requirement of a
            // `#[target_feature(enable = "avx")]` function; `_mm256_zeroupper` is an
            // intrinsic the compiler knows, so it keeps no vector value live across it.
            unsafe { zeroupper() }
        }
    }
}
