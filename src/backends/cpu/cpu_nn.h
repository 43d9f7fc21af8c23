/* Helpers shared by the CPU nn kernels (cpu_softmax.c, cpu_norm.c). float32
 * has dedicated loops that accumulate in double; other float dtypes go
 * through double with kn__load/kn__store. Inputs of any strides are accepted:
 * the kernels copy non-contiguous bulk inputs to contiguous scratch first
 * (kn__cpu_dense). */
#ifndef KILN_CPU_NN_H
#define KILN_CPU_NN_H

#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Work per parallel chunk, in elements: below this threads cost more than they save. */
#define GRAIN_ELEMS 16384

static inline int64_t grain_for(int64_t per_unit) {
    return per_unit >= GRAIN_ELEMS ? 1 : GRAIN_ELEMS / (per_unit > 0 ? per_unit : 1);
}

/* Element k of a 1-D view of any dtype and stride (small parameter vectors),
 * or the element of a 0-d view. */
static inline double vget(const kn_operand *v, int64_t k) {
    int64_t s = v->ndim ? v->stride[0] : 0;
    return kn__load((const char *)v->data + (size_t)(k * s) * kn_dtype_size(v->dtype), v->dtype);
}
static inline void vset(const kn_operand *v, int64_t k, double x) {
    int64_t s = v->ndim ? v->stride[0] : 0;
    kn__store((char *)v->data + (size_t)(k * s) * kn_dtype_size(v->dtype), v->dtype, x);
}

/* A 1-D view's values as doubles (def where v is absent); malloc'd. */
static inline double *vload(const kn_operand *v, int64_t n, double def) {
    double *r = malloc((size_t)(n > 0 ? n : 1) * sizeof *r);
    if (!r) return NULL;
    for (int64_t k = 0; k < n; k++) r[k] = kn_operand_present(v) ? vget(v, k) : def;
    return r;
}

static inline kn_status oom(const char *op) { return kn__err(KN_ERR_OOM, "%s: out of memory for scratch", op); }

/* The hot float32 loops are compiled twice, the second time for AVX2, and
 * picked at run time (the build targets baseline x86-64). */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define KN_NN_AVX2 1
#define KN_INLINE static inline __attribute__((always_inline))
#define KN_TGT_AVX2 __attribute__((target("avx2,fma")))
static inline bool has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define KN_INLINE static inline
#endif
static inline bool cpu_avx2(void) {
#if defined(KN_NN_AVX2)
    return has_avx2();
#else
    return false;
#endif
}

#define LANES 8 /* independent partial sums: reductions vectorize */

/* exp for float32 in a form compilers vectorize (Cephes' expf polynomial,
 * about 1 ulp; no float selects, which block if-conversion): exp(x) =
 * 2^n exp(r), n = round(x / ln 2). Accurate for x <= 88 (softmax feeds x <=
 * 0); below the float range it gives 0, above 88 inf; NaN stays NaN. */
typedef union {
    float f;
    uint32_t u;
} f32_bits;

KN_INLINE float exp_f32(float x) {
    f32_bits t = {.f = x * 1.44269504088896341f + 12582912.0f}; /* 1.5 * 2^23 rounds to an integer */
    float n = t.f - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    f32_bits p = {.u = (t.u - 0x4B400000u + 127u) << 23}; /* 2^n */
    f32_bits res = {.f = y * p.f};
    uint32_t lo = 0u - (uint32_t)!(x < -87.0f), hi = 0u - (uint32_t)(x > 88.0f); /* masks */
    res.u = (res.u & lo & ~hi) | (0x7f800000u & hi);
    return res.f;
}


#endif
