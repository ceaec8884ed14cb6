// moescope's device-side routing counters, compiled at run time by NVRTC (no headers needed).
//
// Two kernels count one MoE layer's routing for one step into a [layer x tag x expert]
// accumulator (layout in src/layout.rs, which these offsets must match):
//   moescope_count_topk    top-k expert ids (i32, i64, u32), optional top-k weights
//   moescope_count_logits  router logits (f32, f16, bf16), T x E row-major: softmax, top-k,
//                          selection entropy and probability sums per token
// Each block privatizes its counts in shared memory for up to SLOTS distinct tags, then adds
// every non-empty bin to global memory with one atomic. Tokens of further tags in the same
// block go straight to global memory. Both kernels read the enable flag, the active buffer,
// the per-token tags and the valid-token count from device memory, so a captured CUDA graph
// keeps counting correctly when replayed.

#define SLOTS 4
#define MAX_K 16
#define MAX_PER_LANE 16          // experts per lane in the logits kernel: E <= 512
#define NSTATS 5                 // per-layer drop / skip counters
#define STAT_ID_RANGE 0          // an expert id < 0 or >= E
#define STAT_NON_FINITE 1        // a NaN or infinite weight or logit
#define STAT_INVALID_PROB 2      // a negative weight
#define STAT_TAG_RANGE 3         // a tag >= the tag capacity (and not EXCLUDED)
#define STAT_EXCLUDED 4          // tag EXCLUDED (0xFFFF): skipped, not a drop
#define TAG_EXCLUDED 0xFFFFu
#define NEG_INF __int_as_float(0xff800000)

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// Kernel arguments; mirrored by `Args` in src/kernels.rs (repr(C), same order and sizes).
struct Args {
    u64 acc[2];      // the two accumulators (u64 words); ctrl[1] picks the active one
    u64 ctrl;        // u32[4]: [0] enabled, [1] active accumulator
    u64 data;        // top-k ids (T x k) or logits (T x E)
    u64 weights;     // top-k weights (T x k), or 0
    u64 tags;        // u16 per token, or 0: every token has `default_tag`
    u64 seqs;        // u64 sequence id per token, or 0: halves by token parity
    u64 valid;       // u32 count of valid tokens, or 0: all `tokens`
    u64 salt;        // the recorder's split salt
    u32 tokens;      // T (the launch's capacity)
    u32 layer;
    u32 layers;
    u32 tag_cap;     // G
    u32 experts;     // E
    u32 k;
    u32 data_dtype;  // ids: 0 i32, 1 i64, 2 u32; logits: 0 f32, 1 f16, 2 bf16
    u32 weight_dtype;// 0 f32, 1 f16, 2 bf16
    u32 default_tag;
    u32 pad;
};

// Accumulator offsets (in u64 words), as src/layout.rs computes them.
__device__ __forceinline__ u64 off_counts(const Args& a, u32 g, u32 half) {
    return ((u64(a.layer) * a.tag_cap + g) * 2 + half) * a.experts;
}
__device__ __forceinline__ u64 base_probs(const Args& a) {
    return u64(a.layers) * a.tag_cap * 2 * a.experts;
}
__device__ __forceinline__ u64 off_probs(const Args& a, u32 g) {
    return base_probs(a) + (u64(a.layer) * a.tag_cap + g) * a.experts;
}
__device__ __forceinline__ u64 base_tokens(const Args& a) {
    return base_probs(a) + u64(a.layers) * a.tag_cap * a.experts;
}
__device__ __forceinline__ u64 off_tokens(const Args& a, u32 g, u32 half) {
    return base_tokens(a) + (u64(a.layer) * a.tag_cap + g) * 2 + half;
}
__device__ __forceinline__ u64 off_prob_tokens(const Args& a, u32 g) {
    return base_tokens(a) + u64(a.layers) * a.tag_cap * 2 + u64(a.layer) * a.tag_cap + g;
}
__device__ __forceinline__ u64 off_entropy(const Args& a, u32 g) {
    return base_tokens(a) + u64(a.layers) * a.tag_cap * 3 + u64(a.layer) * a.tag_cap + g;
}
__device__ __forceinline__ u64 off_weight(const Args& a, u32 g) {
    return base_tokens(a) + u64(a.layers) * a.tag_cap * 4 + u64(a.layer) * a.tag_cap + g;
}
__device__ __forceinline__ u64 off_stats(const Args& a, u32 s) {
    return base_tokens(a) + u64(a.layers) * a.tag_cap * 5 + u64(a.layer) * NSTATS + s;
}

// SplitMix64's finalizer, as moescope-core's `mix64`.
__device__ __forceinline__ u64 mix64(u64 x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

__device__ __forceinline__ float half_to_float(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float bf16_to_float(u16 h) {
    return __uint_as_float(u32(h) << 16);
}
__device__ __forceinline__ float load_float(u64 base, u32 dtype, u64 i) {
    if (dtype == 0) return ((const float*)base)[i];
    u16 h = ((const u16*)base)[i];
    return dtype == 1 ? half_to_float(h) : bf16_to_float(h);
}
// An expert id as a signed 64-bit value (u32 ids are never negative).
__device__ __forceinline__ long long load_id(u64 base, u32 dtype, u64 i) {
    if (dtype == 0) return ((const int*)base)[i];
    if (dtype == 1) return ((const long long*)base)[i];
    return (long long)((const u32*)base)[i];
}

struct Shared {
    int* slot_tag;     // [SLOTS], -1 free
    u32* counts;       // [SLOTS][2][E]
    u32* tokens;       // [SLOTS][2]
    u32* stats;        // [NSTATS]
    double* weight;    // [SLOTS]
    double* entropy;   // [SLOTS] (logits kernel)
    u32* prob_tokens;  // [SLOTS] (logits kernel)
    double* probs;     // [SLOTS][E] (logits kernel)
};

// Dynamic shared memory: doubles first (alignment), then 32-bit words.
__device__ __forceinline__ Shared carve(u64* smem, u32 experts, bool with_probs) {
    Shared s;
    double* d = (double*)smem;
    s.weight = d; d += SLOTS;
    s.entropy = d; d += SLOTS;
    s.probs = d; d += with_probs ? SLOTS * experts : 0;
    u32* w = (u32*)d;
    s.counts = w; w += SLOTS * 2 * experts;
    s.tokens = w; w += SLOTS * 2;
    s.prob_tokens = w; w += SLOTS;
    s.stats = w; w += NSTATS;
    s.slot_tag = (int*)w;
    return s;
}

__device__ __forceinline__ void zero_shared(const Shared& s, u32 experts, bool with_probs) {
    for (u32 i = threadIdx.x; i < SLOTS * 2 * experts; i += blockDim.x) s.counts[i] = 0;
    if (with_probs)
        for (u32 i = threadIdx.x; i < SLOTS * experts; i += blockDim.x) s.probs[i] = 0.0;
    for (u32 i = threadIdx.x; i < SLOTS * 2; i += blockDim.x) s.tokens[i] = 0;
    for (u32 i = threadIdx.x; i < SLOTS; i += blockDim.x) {
        s.weight[i] = 0.0;
        s.entropy[i] = 0.0;
        s.prob_tokens[i] = 0;
        s.slot_tag[i] = -1;
    }
    for (u32 i = threadIdx.x; i < NSTATS; i += blockDim.x) s.stats[i] = 0;
}

// The block's slot for tag g, claiming a free one; -1 when all are taken by other tags.
__device__ __forceinline__ int slot_for(const Shared& s, u32 g) {
    for (int i = 0; i < SLOTS; i++) {
        int cur = ((volatile int*)s.slot_tag)[i];
        if (cur == (int)g) return i;
        if (cur == -1) {
            int old = atomicCAS(&s.slot_tag[i], -1, (int)g);
            if (old == -1 || old == (int)g) return i;
        }
    }
    return -1;
}

// Adds the block's shared counts to the active accumulator: one atomic per non-empty bin.
__device__ __forceinline__ void flush_shared(const Args& a, const Shared& s, u64* acc, bool with_probs) {
    __syncthreads();
    const u32 e = a.experts;
    for (int i = 0; i < SLOTS; i++) {
        int g = s.slot_tag[i];
        if (g < 0) continue;
        for (u32 j = threadIdx.x; j < 2 * e; j += blockDim.x) {
            u32 v = s.counts[(i * 2) * e + j];
            if (v) atomicAdd(&acc[off_counts(a, g, j / e) + j % e], (u64)v);
        }
        if (with_probs)
            for (u32 j = threadIdx.x; j < e; j += blockDim.x) {
                double v = s.probs[i * e + j];
                if (v != 0.0) atomicAdd((double*)&acc[off_probs(a, g) + j], v);
            }
        if (threadIdx.x < 2) {
            u32 v = s.tokens[i * 2 + threadIdx.x];
            if (v) atomicAdd(&acc[off_tokens(a, g, threadIdx.x)], (u64)v);
        }
        if (threadIdx.x == 2 && s.weight[i] != 0.0)
            atomicAdd((double*)&acc[off_weight(a, g)], s.weight[i]);
        if (threadIdx.x == 3 && s.prob_tokens[i]) {
            atomicAdd(&acc[off_prob_tokens(a, g)], (u64)s.prob_tokens[i]);
            atomicAdd((double*)&acc[off_entropy(a, g)], s.entropy[i]);
        }
    }
    if (threadIdx.x < NSTATS && s.stats[threadIdx.x])
        atomicAdd(&acc[off_stats(a, threadIdx.x)], (u64)s.stats[threadIdx.x]);
}

// Whether this launch counts, and where: ctrl[0] enabled, ctrl[1] active accumulator.
__device__ __forceinline__ u64* active_acc(const Args& a) {
    const volatile u32* ctrl = (const volatile u32*)a.ctrl;
    if (ctrl[0] == 0) return 0;
    return (u64*)((ctrl[1] & 1) ? a.acc[1] : a.acc[0]);  // no dynamic index into params
}

__device__ __forceinline__ u32 valid_tokens(const Args& a) {
    if (a.valid == 0) return a.tokens;
    u32 v = *(const volatile u32*)a.valid;
    return v < a.tokens ? v : a.tokens;
}

// The token's tag: a slot index below tag_cap, TAG_EXCLUDED, or an out-of-range value.
__device__ __forceinline__ u32 token_tag(const Args& a, u32 t) {
    return a.tags ? (u32)((const u16*)a.tags)[t] : a.default_tag;
}

__device__ __forceinline__ u32 token_half(const Args& a, u32 t) {
    if (a.seqs) return (u32)(mix64(((const u64*)a.seqs)[t] ^ a.salt) & 1);
    return t & 1;
}

extern "C" __global__ void __launch_bounds__(256, 4) moescope_count_topk(const Args a) {
    u64* acc = active_acc(a);
    if (acc == 0) return;
    extern __shared__ u64 smem[];
    const Shared s = carve(smem, a.experts, false);
    zero_shared(s, a.experts, false);
    __syncthreads();
    const u32 n = valid_tokens(a);
    const u32 k = a.k, e = a.experts;
    for (u32 t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
        const u32 g = token_tag(a, t);
        if (g == TAG_EXCLUDED) { atomicAdd(&s.stats[STAT_EXCLUDED], 1u); continue; }
        if (g >= a.tag_cap) { atomicAdd(&s.stats[STAT_TAG_RANGE], 1u); continue; }
        double wsum = 0.0;
        if (a.weights) {
            bool finite = true, negative = false;
            for (u32 j = 0; j < k; j++) {
                float w = load_float(a.weights, a.weight_dtype, u64(t) * k + j);
                finite &= isfinite(w);
                negative |= w < 0.0f;
                wsum += (double)w;
            }
            if (!finite) { atomicAdd(&s.stats[STAT_NON_FINITE], 1u); continue; }
            if (negative) { atomicAdd(&s.stats[STAT_INVALID_PROB], 1u); continue; }
        }
        // Validate the row, then count it (a second read of k ids, from L1).
        bool in_range = true;
        for (u32 j = 0; j < k; j++) {
            long long id = load_id(a.data, a.data_dtype, u64(t) * k + j);
            in_range &= id >= 0 && id < (long long)e;
        }
        if (!in_range) { atomicAdd(&s.stats[STAT_ID_RANGE], 1u); continue; }
        const u32 half = token_half(a, t);
        const int slot = slot_for(s, g);
        if (slot >= 0) {
            u32* c = &s.counts[(slot * 2 + half) * e];
            for (u32 j = 0; j < k; j++)
                atomicAdd(&c[(u32)load_id(a.data, a.data_dtype, u64(t) * k + j)], 1u);
            atomicAdd(&s.tokens[slot * 2 + half], 1u);
            if (a.weights) atomicAdd(&s.weight[slot], wsum);
        } else {
            u64* c = &acc[off_counts(a, g, half)];
            for (u32 j = 0; j < k; j++)
                atomicAdd(&c[(u32)load_id(a.data, a.data_dtype, u64(t) * k + j)], 1ull);
            atomicAdd(&acc[off_tokens(a, g, half)], 1ull);
            if (a.weights) atomicAdd((double*)&acc[off_weight(a, g)], wsum);
        }
    }
    flush_shared(a, s, acc, false);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per token: lane l holds experts l, l + 32, ... (at most MAX_PER_LANE of them).
extern "C" __global__ void __launch_bounds__(256, 4) moescope_count_logits(const Args a) {
    u64* acc = active_acc(a);
    if (acc == 0) return;
    extern __shared__ u64 smem[];
    const Shared s = carve(smem, a.experts, true);
    zero_shared(s, a.experts, true);
    __syncthreads();
    const u32 n = valid_tokens(a);
    const u32 e = a.experts, k = a.k;
    const u32 lane = threadIdx.x & 31;
    const u32 warps = blockDim.x >> 5;
    for (u32 t = blockIdx.x * warps + (threadIdx.x >> 5); t < n; t += gridDim.x * warps) {
        const u32 g = token_tag(a, t);
        if (g == TAG_EXCLUDED) { if (lane == 0) atomicAdd(&s.stats[STAT_EXCLUDED], 1u); continue; }
        if (g >= a.tag_cap) { if (lane == 0) atomicAdd(&s.stats[STAT_TAG_RANGE], 1u); continue; }
        float v[MAX_PER_LANE];
        bool finite = true;
#pragma unroll
        for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 x = lane + 32 * j;
            v[j] = NEG_INF;
            if (x < e) {
                v[j] = load_float(a.data, a.data_dtype, u64(t) * e + x);
                finite &= isfinite(v[j]);
            }
        }
        if (!__all_sync(0xffffffffu, finite)) {
            if (lane == 0) atomicAdd(&s.stats[STAT_NON_FINITE], 1u);
            continue;
        }
        const u32 half = token_half(a, t);
        const int slot = slot_for(s, g);
        u32* counts = slot >= 0 ? &s.counts[(slot * 2 + half) * e] : 0;
        u64* gcounts = &acc[off_counts(a, g, half)];
        // Top-k by logit, ties to the lower expert index (chosen before the softmax, on the
        // logits themselves, so the choice does not depend on rounding). Each round's winner
        // is counted at once by lane 0.
        u32 chosen = 0;  // bit j: expert lane + 32 j is selected
        for (u32 r = 0; r < k; r++) {
            float best = NEG_INF;
            u32 best_x = 0xffffffffu;
#pragma unroll
            for (u32 j = 0; j < MAX_PER_LANE; j++) {
                const u32 x = lane + 32 * j;
                if (x < e && !((chosen >> j) & 1) && (v[j] > best || best_x == 0xffffffffu)) {
                    best = v[j];
                    best_x = x;
                }
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                float ob = __shfl_xor_sync(0xffffffffu, best, o);
                u32 ox = __shfl_xor_sync(0xffffffffu, best_x, o);
                if (ox != 0xffffffffu &&
                    (best_x == 0xffffffffu || ob > best || (ob == best && ox < best_x))) {
                    best = ob;
                    best_x = ox;
                }
            }
            if (best_x == 0xffffffffu) break;  // k > E: nothing left
            if ((best_x & 31) == lane) chosen |= 1u << (best_x >> 5);
            if (lane == 0) {
                if (slot >= 0) atomicAdd(&counts[best_x], 1u);
                else atomicAdd(&gcounts[best_x], 1ull);
            }
        }
        // Softmax (in place of the logits) and selection entropy in bits.
        float m = v[0];
#pragma unroll
        for (u32 j = 1; j < MAX_PER_LANE; j++) m = fmaxf(m, v[j]);
        m = warp_max(m);
        float part = 0.0f;
#pragma unroll
        for (u32 j = 0; j < MAX_PER_LANE; j++) {
            v[j] = (lane + 32 * j < e) ? expf(v[j] - m) : 0.0f;
            part += v[j];
        }
        const float inv = 1.0f / warp_sum(part);
        float h = 0.0f;
#pragma unroll
        for (u32 j = 0; j < MAX_PER_LANE; j++) {
            v[j] *= inv;
            if (v[j] > 0.0f) h -= v[j] * log2f(v[j]);
        }
        h = warp_sum(h);
        if (slot >= 0) {
#pragma unroll
            for (u32 j = 0; j < MAX_PER_LANE; j++)
                if (lane + 32 * j < e && v[j] != 0.0f)
                    atomicAdd(&s.probs[slot * e + lane + 32 * j], (double)v[j]);
            if (lane == 0) {
                atomicAdd(&s.tokens[slot * 2 + half], 1u);
                atomicAdd(&s.prob_tokens[slot], 1u);
                atomicAdd(&s.entropy[slot], (double)h);
            }
        } else {
#pragma unroll
            for (u32 j = 0; j < MAX_PER_LANE; j++)
                if (lane + 32 * j < e && v[j] != 0.0f)
                    atomicAdd((double*)&acc[off_probs(a, g) + lane + 32 * j], (double)v[j]);
            if (lane == 0) {
                atomicAdd(&acc[off_tokens(a, g, half)], 1ull);
                atomicAdd(&acc[off_prob_tokens(a, g)], 1ull);
                atomicAdd((double*)&acc[off_entropy(a, g)], (double)h);
            }
        }
    }
    flush_shared(a, s, acc, true);
}
