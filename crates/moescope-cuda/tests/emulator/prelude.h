// A CPU stand-in for the CUDA features the kernels use, so that the kernels' own source can
// be compiled by a C++20 compiler and run on the CPU: every thread of a block is a std::thread,
// __syncthreads and warp shuffles/votes are barriers, atomics take one global mutex. Slow and
// faithful to the kernels' logic (not to GPU timing); used by tests/kernels_emulated.rs.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace emu {
struct Dim { unsigned x = 1, y = 1, z = 1; };
inline thread_local Dim thread_idx, block_idx;
inline Dim block_dim, grid_dim;
inline std::mutex atomics;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<uint64_t> lanes;  // [warp][32]
inline std::vector<unsigned long long> shared;

inline unsigned long long* shared_mem() { return shared.data(); }

inline float half_to_float(unsigned short h) {
    uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0 && man == 0) bits = sign;
    else if (exp == 0) {
        int shift = 0;
        while (!(man & 0x400)) { man <<= 1; shift++; }
        bits = sign | uint32_t(127 - 15 + 1 - shift) << 23 | (man & 0x3ff) << 13;
    } else if (exp == 0x1f) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (exp + 127 - 15) << 23 | man << 13;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

template <class T> T exchange(T v, unsigned (*partner)(unsigned, int), int arg) {
    unsigned w = thread_idx.x / 32, l = thread_idx.x % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    lanes[w * 32 + l] = bits;
    warp_barriers[w]->arrive_and_wait();
    uint64_t other = lanes[w * 32 + partner(l, arg)];
    warp_barriers[w]->arrive_and_wait();
    T r;
    std::memcpy(&r, &other, sizeof(T));
    return r;
}
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <class T> T atomicAdd(T* p, T v) {
    std::lock_guard<std::mutex> g(emu::atomics);
    T old = *p;
    *p = old + v;
    return old;
}
inline int atomicCAS(int* p, int cmp, int v) {
    std::lock_guard<std::mutex> g(emu::atomics);
    int old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    return emu::exchange<T>(v, [](unsigned l, int o) { return l ^ unsigned(o); }, o);
}
inline bool __all_sync(unsigned, bool p) {
    unsigned w = emu::thread_idx.x / 32, l = emu::thread_idx.x % 32;
    emu::lanes[w * 32 + l] = p;
    emu::warp_barriers[w]->arrive_and_wait();
    bool all = true;
    for (unsigned i = 0; i < 32; i++) all = all && emu::lanes[w * 32 + i];
    emu::warp_barriers[w]->arrive_and_wait();
    return all;
}
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
using std::isfinite;
