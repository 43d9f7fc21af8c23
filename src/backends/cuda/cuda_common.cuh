/* Device helpers shared by the kernel files: element conversions that give
 * the same bits as kn__load/kn__store (backends/common/dtype.h), strided
 * offsets, launch sizes and fault reporting. */
#ifndef KILN_CUDA_COMMON_CUH
#define KILN_CUDA_COMMON_CUH

#include "cuda_internal.h"

#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

#include <utility>

#define KC_THREADS 256
#define KC_BULK_BYTES ((size_t)8 << 20) /* from here on memset / memcpy beat a kernel */

/* Programmatic dependent launch (Hopper): a kernel may be launched while the
 * one before it still runs; it first waits here for that one to finish (and
 * its writes to be visible), then lets the next launch start. Every kernel of
 * the backend begins with this, so the chain stays in stream order while
 * launch latency overlaps the previous kernel. A no-op below sm_90. */
__device__ __forceinline__ void kc_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches on the device's stream, with the PDL attribute where supported. */
template <typename... K, typename... A>
static inline void kc_launch(kc_dev *d, void (*kernel)(K...), dim3 grid, dim3 block, size_t smem, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = d->stream;
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = d->pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
    if (e != cudaSuccess) d->launch_error = e;
}
#define KC_LAUNCH(d, kernel, grid, block, ...) kc_launch((d), kernel, dim3(grid), dim3(block), 0, __VA_ARGS__)

/* Blocks for a grid-stride loop over n items: enough to fill the GPU, no more. */
static inline unsigned kc_blocks(long long n, int threads = KC_THREADS) {
    long long b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 4096) b = 4096;
    return (unsigned)b;
}

#define KC_LOOP(i, n)                                                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                  \
         i += (long long)gridDim.x * blockDim.x)

/* ---- half precision, bit-exact with backends/common/dtype.h ------------------------ */
__device__ __forceinline__ float kc_h2f(uint16_t h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) /* NaN keeps its payload, as on the CPU */
        return __uint_as_float(((uint32_t)(h & 0x8000) << 16) | 0x7f800000u | ((uint32_t)(h & 0x3ff) << 13));
    return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ uint16_t kc_f2h(float f) {
    if (f != f) return (uint16_t)(((__float_as_uint(f) >> 16) & 0x8000) | 0x7e00);
    return __half_as_ushort(__float2half_rn(f));
}
__device__ __forceinline__ float kc_b2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t kc_f2b(float f) {
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- any dtype through double / int64, as kn__load and friends ----------------------- */
__device__ __forceinline__ double kc_load(const void *p, int dt) {
    if (dt == KN_F32) return *(const float *)p; /* the common case, without the jump table */
    switch (dt) {
    case KN_F32: return *(const float *)p;
    case KN_F64: return *(const double *)p;
    case KN_F16: return kc_h2f(*(const uint16_t *)p);
    case KN_BF16: return kc_b2f(*(const uint16_t *)p);
    case KN_I32: return *(const int32_t *)p;
    case KN_I64: return (double)*(const long long *)p;
    case KN_U8: return *(const uint8_t *)p;
    default: return *(const uint8_t *)p ? 1.0 : 0.0;
    }
}

__device__ __forceinline__ void kc_store(void *p, int dt, double v) {
    if (dt == KN_F32) {
        *(float *)p = (float)v;
        return;
    }
    switch (dt) {
    case KN_F32: *(float *)p = (float)v; break;
    case KN_F64: *(double *)p = v; break;
    case KN_F16: *(uint16_t *)p = kc_f2h((float)v); break;
    case KN_BF16: *(uint16_t *)p = kc_f2b((float)v); break;
    case KN_I32:
        *(int32_t *)p = v != v ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v;
        break;
    case KN_I64:
        *(long long *)p = v != v ? 0 : v >= 9.2233720368547758e18 ? INT64_MAX
                                     : v <= -9.2233720368547758e18 ? INT64_MIN : (long long)v;
        break;
    case KN_U8: *(uint8_t *)p = v != v || v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v; break;
    default: *(uint8_t *)p = v != 0; break;
    }
}

__device__ __forceinline__ long long kc_load_i(const void *p, int dt) {
    switch (dt) {
    case KN_I64: return *(const long long *)p;
    case KN_I32: return *(const int32_t *)p;
    case KN_U8: return *(const uint8_t *)p;
    case KN_BOOL: return *(const uint8_t *)p != 0;
    default: {
        double v = kc_load(p, dt);
        return v != v ? 0 : (long long)v;
    }
    }
}

__device__ __forceinline__ void kc_store_i(void *p, int dt, long long v) {
    switch (dt) {
    case KN_I64: *(long long *)p = v; break;
    case KN_I32: *(int32_t *)p = (int32_t)v; break;
    case KN_U8: *(uint8_t *)p = (uint8_t)v; break;
    case KN_BOOL: *(uint8_t *)p = v != 0; break;
    default: kc_store(p, dt, (double)v); break;
    }
}

__device__ __forceinline__ bool kc_is_float(int dt) {
    return dt == KN_F32 || dt == KN_F16 || dt == KN_BF16 || dt == KN_F64;
}

__device__ __forceinline__ int kc_dsize(int dt) {
    switch (dt) {
    case KN_F64: case KN_I64: return 8;
    case KN_F32: case KN_I32: return 4;
    case KN_F16: case KN_BF16: return 2;
    default: return 1;
    }
}

/* ---- strided offsets ------------------------------------------------------------------- */
/* i / s and i % s, in 32 bits when both fit (a 64-bit division is ~10x slower). */
__device__ __forceinline__ long long kc_divmod(long long i, long long s, long long *r) {
    if (((unsigned long long)i | (unsigned long long)s) <= 0xffffffffull) {
        unsigned q = (unsigned)i / (unsigned)s;
        *r = (long long)((unsigned)i - q * (unsigned)s);
        return q;
    }
    long long q = i / s;
    *r = i - q * s;
    return q;
}

template <int N>
__device__ __forceinline__ void kc_offsets(const kn_geom &it, long long i, long long *o) {
#pragma unroll
    for (int k = 0; k < N; k++) o[k] = 0;
    if (it.ndim == 1) {
#pragma unroll
        for (int k = 0; k < N; k++) o[k] = i * it.stride[k][0];
        return;
    }
    for (int d = it.ndim - 1; d >= 0; d--) {
        long long r;
        i = kc_divmod(i, it.shape[d], &r);
#pragma unroll
        for (int k = 0; k < N; k++) o[k] += r * it.stride[k][d];
    }
}

/* ---- faults: the first bad index or target of a kernel, for the host -------------------- */
__device__ __forceinline__ void kc_fault(long long *err, int code, int op, long long value, long long limit,
                                         long long dim) {
    volatile long long *e = err;
    if (e[KC_ERR_CODE]) return;
    e[KC_ERR_OP] = op;
    e[KC_ERR_VALUE] = value;
    e[KC_ERR_LIMIT] = limit;
    e[KC_ERR_DIM] = dim;
    __threadfence_system();
    e[KC_ERR_CODE] = code;
    __threadfence_system();
}

/* ---- Philox 4x32-10, bit-exact with backends/common/philox.h --------------------------------- */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox_block(unsigned long long seed, unsigned long long counter, uint32_t w[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        uint32_t h0 = __umulhi(PHILOX_M0, c0), l0 = PHILOX_M0 * c0;
        uint32_t h1 = __umulhi(PHILOX_M1, c2), l1 = PHILOX_M1 * c2;
        uint32_t n0 = h1 ^ c1 ^ k0, n2 = h0 ^ c3 ^ k1;
        c1 = l1;
        c3 = l0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    w[0] = c0, w[1] = c1, w[2] = c2, w[3] = c3;
}

/* Dropout's decision for element k (KN_OP_DROPOUT): word k % 4 of counter
 * offset + k / 4, kept when (word >> 8) >= thresh = ceil(p * 2^24). The word
 * is picked by selects, so the block stays in registers. */
__device__ __forceinline__ bool kc_keep(unsigned long long seed, unsigned long long offset, long long k,
                                        uint32_t thresh) {
    uint32_t w[4];
    philox_block(seed, offset + (unsigned long long)(k >> 2), w);
    int q = (int)(k & 3);
    uint32_t x = q == 0 ? w[0] : q == 1 ? w[1] : q == 2 ? w[2] : w[3];
    return (x >> 8) >= thresh;
}

/* ---- partial sums finished by the last block -------------------------------------------------- */
/* sum over k < n of p[k * stride], loads issued 8 at a time (a loop of
 * dependent adds would wait for each load in turn: n memory round trips). */
template <typename A>
__device__ __forceinline__ A kc_sum_strided(const A *p, long long stride, long long n) {
    A t = 0;
    for (long long k = 0; k < n; k += 8) {
        A v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) v[u] = k + u < n ? __ldcg(p + (k + u) * stride) : A(0);
#pragma unroll
        for (int u = 0; u < 8; u++) t += v[u];
    }
    return t;
}

/* ---- warp and block sums ------------------------------------------------------------------ */
template <typename T>
__device__ __forceinline__ T kc_warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
template <typename T>
__device__ __forceinline__ T kc_block_sum(T v, T *shared32) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = kc_warp_sum(v);
    __syncthreads(); /* shared32 may still be read from a previous call */
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    T r = lane < nw ? shared32[lane] : T(0);
    return kc_warp_sum(r);
}

#endif
