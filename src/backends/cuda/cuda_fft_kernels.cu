/* The FFT's own kernel: the normalization cuFFT leaves out, as one pass of
 * 16-byte loads and stores over the contiguous result (memory-bound; scalar
 * accesses would cost it a good part of the bandwidth). */
#include "cuda_common.cuh"
#include "cuda_cufft.h"

template <typename T>
struct alignas(16) kc_vec16 {
    T v[16 / sizeof(T)];
};

template <typename T>
__global__ void fft_scale(T *out, const T *x, long long n, T s, bool vec) {
    kc_pdl_wait();
    constexpr int W = 16 / sizeof(T);
    long long nv = vec ? n / W : 0;
    KC_LOOP(i, nv) {
        kc_vec16<T> a = reinterpret_cast<const kc_vec16<T> *>(x)[i];
#pragma unroll
        for (int k = 0; k < W; k++) a.v[k] *= s;
        reinterpret_cast<kc_vec16<T> *>(out)[i] = a;
    }
    KC_LOOP(i, n - nv * W) out[nv * W + i] = x[nv * W + i] * s; /* the tail, or all when unaligned */
}

extern "C" kn_status kc_fft_scale(kc_dev *d, void *out, const void *x, kn_dtype dt, int64_t n, double scale,
                                  const char *op) {
    if (n <= 0) return KN_OK;
    bool vec = ((uintptr_t)out | (uintptr_t)x) % 16 == 0;
    long long work = vec ? n / (16 / (long long)kn_dtype_size(dt)) + 1 : n;
    if (dt == KN_F32)
        KC_LAUNCH(d, fft_scale<float>, kc_blocks(work), KC_THREADS, (float *)out, (const float *)x, (long long)n,
                  (float)scale, vec);
    else
        KC_LAUNCH(d, fft_scale<double>, kc_blocks(work), KC_THREADS, (double *)out, (const double *)x, (long long)n,
                  scale, vec);
    return kc_after(d, op);
}
