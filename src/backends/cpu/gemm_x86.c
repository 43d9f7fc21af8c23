/* x86 micro-kernels (AVX2 + FMA, AVX-512F) and AVX2 packing for the CPU GEMM.
 * Compiled with target attributes rather than -m flags, so the binary stays
 * portable: gemm.c calls these only after checking the CPU. */
#include "gemm_kernels.h"

#if defined(KN_GEMM_X86)
#include <immintrin.h>

#define KN_TGT_AVX2 __attribute__((target("avx2,fma")))
#define KN_TGT_AVX512 __attribute__((target("avx512f,avx2,fma")))

/* ---- packing ----------------------------------------------------------------------
 * Same layout as kn__gemm_pack_<T>. Panel columns contiguous in the source
 * (B, A^T) are vector copies; panel rows contiguous (A, B^T) need transposes:
 * groups of 8/4/2 rows x 8 columns (4/2 x 4 for doubles) go through
 * registers. */
/* 8 rows (stride rs) x 8 columns -> 8 columns of 8 at o, o + w, ... */
KN_TGT_AVX2 static inline void tp8_ps(const float *p, int64_t rs, float *o, int64_t w) {
    __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + rs);
    __m256 r2 = _mm256_loadu_ps(p + 2 * rs), r3 = _mm256_loadu_ps(p + 3 * rs);
    __m256 r4 = _mm256_loadu_ps(p + 4 * rs), r5 = _mm256_loadu_ps(p + 5 * rs);
    __m256 r6 = _mm256_loadu_ps(p + 6 * rs), r7 = _mm256_loadu_ps(p + 7 * rs);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(o, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(o + w, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(o + 2 * w, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(o + 3 * w, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(o + 4 * w, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(o + 5 * w, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(o + 6 * w, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(o + 7 * w, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* 4 rows x 8 columns -> 8 columns of 4. */
KN_TGT_AVX2 static inline void tp4_ps(const float *p, int64_t rs, float *o, int64_t w) {
    __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + rs);
    __m256 r2 = _mm256_loadu_ps(p + 2 * rs), r3 = _mm256_loadu_ps(p + 3 * rs);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm_storeu_ps(o, _mm256_castps256_ps128(u0));
    _mm_storeu_ps(o + w, _mm256_castps256_ps128(u1));
    _mm_storeu_ps(o + 2 * w, _mm256_castps256_ps128(u2));
    _mm_storeu_ps(o + 3 * w, _mm256_castps256_ps128(u3));
    _mm_storeu_ps(o + 4 * w, _mm256_extractf128_ps(u0, 1));
    _mm_storeu_ps(o + 5 * w, _mm256_extractf128_ps(u1, 1));
    _mm_storeu_ps(o + 6 * w, _mm256_extractf128_ps(u2, 1));
    _mm_storeu_ps(o + 7 * w, _mm256_extractf128_ps(u3, 1));
}

/* 2 rows x 8 columns -> 8 pairs. */
KN_TGT_AVX2 static inline void tp2_ps(const float *p, int64_t rs, float *o, int64_t w) {
    __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + rs);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m128 a = _mm256_castps256_ps128(t0), b = _mm256_extractf128_ps(t0, 1);
    __m128 c = _mm256_castps256_ps128(t1), d = _mm256_extractf128_ps(t1, 1);
    _mm_storel_pi((__m64 *)o, a);
    _mm_storeh_pi((__m64 *)(o + w), a);
    _mm_storel_pi((__m64 *)(o + 2 * w), c);
    _mm_storeh_pi((__m64 *)(o + 3 * w), c);
    _mm_storel_pi((__m64 *)(o + 4 * w), b);
    _mm_storeh_pi((__m64 *)(o + 5 * w), b);
    _mm_storel_pi((__m64 *)(o + 6 * w), d);
    _mm_storeh_pi((__m64 *)(o + 7 * w), d);
}

/* 4 rows x 4 columns of doubles -> 4 columns of 4. */
KN_TGT_AVX2 static inline void tp4_pd(const double *p, int64_t rs, double *o, int64_t w) {
    __m256d r0 = _mm256_loadu_pd(p), r1 = _mm256_loadu_pd(p + rs);
    __m256d r2 = _mm256_loadu_pd(p + 2 * rs), r3 = _mm256_loadu_pd(p + 3 * rs);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(o, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(o + w, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(o + 2 * w, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(o + 3 * w, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* 2 rows x 4 columns of doubles -> 4 pairs. */
KN_TGT_AVX2 static inline void tp2_pd(const double *p, int64_t rs, double *o, int64_t w) {
    __m256d r0 = _mm256_loadu_pd(p), r1 = _mm256_loadu_pd(p + rs);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    _mm_storeu_pd(o, _mm256_castpd256_pd128(t0));
    _mm_storeu_pd(o + w, _mm256_castpd256_pd128(t1));
    _mm_storeu_pd(o + 2 * w, _mm256_extractf128_pd(t0, 1));
    _mm_storeu_pd(o + 3 * w, _mm256_extractf128_pd(t1, 1));
}

/* Full panels only; partial ones (zero padding) go to the scalar packer. V is
 * the lanes of one transpose block; TP<g> handle g rows x V columns. */
#define KN_DEF_PACK_AVX2(T, sfx, V, COPYV, COPYH, TPBIG, TP4, TP2)                                \
    KN_TGT_AVX2 void kn__gemm_pack_##sfx##_avx2(int64_t rows, int64_t cols, const void *src,          \
                                                int64_t rs, int64_t cs, int w, void *dst) {       \
        if (cs != 1 && rs != 1) {                                                                 \
            kn__gemm_pack_##sfx(rows, cols, src, rs, cs, w, dst);                                          \
            return;                                                                               \
        }                                                                                         \
        const T *s = src;                                                                         \
        T *d = dst;                                                                               \
        for (int64_t r0 = 0; r0 < rows; r0 += w, d += cols * w) {                                 \
            const T *sp = s + r0 * rs;                                                            \
            if (rows - r0 < w) {                                                                  \
                kn__gemm_pack_##sfx(rows - r0, cols, sp, rs, cs, w, d);                                    \
                break;                                                                            \
            }                                                                                     \
            if (rs == 1) { /* panel columns are contiguous: copies */                             \
                for (int64_t c = 0; c < cols; c++) {                                              \
                    const T *col = sp + c * cs;                                                   \
                    T *o = d + c * w;                                                             \
                    int r = 0;                                                                    \
                    for (; r + (V) <= w; r += (V)) COPYV(o + r, col + r);                         \
                    for (; r + (V) / 2 <= w; r += (V) / 2) COPYH(o + r, col + r);                 \
                    for (; r < w; r++) o[r] = col[r];                                             \
                }                                                                                 \
                continue;                                                                         \
            }                                                                                     \
            for (int g0 = 0; g0 < w;) { /* rows are contiguous: transposes */                     \
                const int left = w - g0;                                                          \
                const int g = left >= (V) ? (V) : left >= 4 ? 4 : left >= 2 ? 2 : 1;              \
                const T *p = sp + g0 * rs;                                                        \
                T *o = d + g0;                                                                    \
                int64_t c = 0;                                                                    \
                if (g == (V))                                                                     \
                    for (; c + (V) <= cols; c += (V)) TPBIG(p + c, rs, o + c * w, w);             \
                else if (g == 4)                                                                  \
                    for (; c + (V) <= cols; c += (V)) TP4(p + c, rs, o + c * w, w);               \
                else if (g == 2)                                                                  \
                    for (; c + (V) <= cols; c += (V)) TP2(p + c, rs, o + c * w, w);               \
                for (; c < cols; c++)                                                             \
                    for (int i = 0; i < g; i++) o[c * w + i] = p[i * rs + c];                     \
                g0 += g;                                                                          \
            }                                                                                     \
        }                                                                                         \
    }
#define KN_CP8_PS(o, i) _mm256_storeu_ps((o), _mm256_loadu_ps(i))
#define KN_CP4_PS(o, i) _mm_storeu_ps((o), _mm_loadu_ps(i))
#define KN_CP4_PD(o, i) _mm256_storeu_pd((o), _mm256_loadu_pd(i))
#define KN_CP2_PD(o, i) _mm_storeu_pd((o), _mm_loadu_pd(i))
KN_DEF_PACK_AVX2(float, f32, 8, KN_CP8_PS, KN_CP4_PS, tp8_ps, tp4_ps, tp2_ps)
KN_DEF_PACK_AVX2(double, f64, 4, KN_CP4_PD, KN_CP2_PD, tp4_pd, tp4_pd, tp2_pd)

/* ---- micro-kernels: vector sets for KN_KERNEL -------------------------------------- */
/* AVX2 float: 12 accumulators of 16 ymm. */
#define S8_T float
#define S8_V __m256
#define S8_L 8
#define S8_ZERO() _mm256_setzero_ps()
#define S8_LOAD(p) _mm256_loadu_ps(p)
#define S8_STORE(p, v) _mm256_storeu_ps((p), (v))
#define S8_BCAST(p) _mm256_broadcast_ss(p)
#define S8_SET1(x) _mm256_set1_ps(x)
#define S8_FMA(x, y, z) _mm256_fmadd_ps((x), (y), (z))
#define S8_MUL(x, y) _mm256_mul_ps((x), (y))
#define S8_HAS_MASK 1
#define S8_MASK __m256i
#define S8_MASK_MAKE(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define S8_MLOAD(p, k) _mm256_maskload_ps((p), (k))
#define S8_MSTORE(p, k, v) _mm256_maskstore_ps((p), (k), (v))

/* AVX2 double */
#define D4_T double
#define D4_V __m256d
#define D4_L 4
#define D4_ZERO() _mm256_setzero_pd()
#define D4_LOAD(p) _mm256_loadu_pd(p)
#define D4_STORE(p, v) _mm256_storeu_pd((p), (v))
#define D4_BCAST(p) _mm256_broadcast_sd(p)
#define D4_SET1(x) _mm256_set1_pd(x)
#define D4_FMA(x, y, z) _mm256_fmadd_pd((x), (y), (z))
#define D4_MUL(x, y) _mm256_mul_pd((x), (y))
#define D4_HAS_MASK 1
#define D4_MASK __m256i
#define D4_MASK_MAKE(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
#define D4_MLOAD(p, k) _mm256_maskload_pd((p), (k))
#define D4_MSTORE(p, k, v) _mm256_maskstore_pd((p), (k), (v))

/* AVX-512 float: 24 accumulators of 32 zmm; the broadcast folds into the
 * FMA's memory operand. */
#define S16_T float
#define S16_V __m512
#define S16_L 16
#define S16_ZERO() _mm512_setzero_ps()
#define S16_LOAD(p) _mm512_loadu_ps(p)
#define S16_STORE(p, v) _mm512_storeu_ps((p), (v))
#define S16_BCAST(p) _mm512_set1_ps(*(p))
#define S16_SET1(x) _mm512_set1_ps(x)
#define S16_FMA(x, y, z) _mm512_fmadd_ps((x), (y), (z))
#define S16_MUL(x, y) _mm512_mul_ps((x), (y))
#define S16_HAS_MASK 1
#define S16_MASK __mmask16
#define S16_MASK_MAKE(n) ((__mmask16)((n) <= 0 ? 0 : (n) >= 16 ? 0xffff : (1u << (n)) - 1))
#define S16_MLOAD(p, k) _mm512_maskz_loadu_ps((k), (p))
#define S16_MSTORE(p, k, v) _mm512_mask_storeu_ps((p), (k), (v))

/* AVX-512 double */
#define D8_T double
#define D8_V __m512d
#define D8_L 8
#define D8_ZERO() _mm512_setzero_pd()
#define D8_LOAD(p) _mm512_loadu_pd(p)
#define D8_STORE(p, v) _mm512_storeu_pd((p), (v))
#define D8_BCAST(p) _mm512_set1_pd(*(p))
#define D8_SET1(x) _mm512_set1_pd(x)
#define D8_FMA(x, y, z) _mm512_fmadd_pd((x), (y), (z))
#define D8_MUL(x, y) _mm512_mul_pd((x), (y))
#define D8_HAS_MASK 1
#define D8_MASK __mmask8
#define D8_MASK_MAKE(n) ((__mmask8)((n) <= 0 ? 0 : (n) >= 8 ? 0xff : (1u << (n)) - 1))
#define D8_MLOAD(p, k) _mm512_maskz_loadu_pd((k), (p))
#define D8_MSTORE(p, k, v) _mm512_mask_storeu_pd((p), (k), (v))

KN_KERNEL(KN_TGT_AVX2, kn__gemm_kern_s_avx2, S8, 6, 2, KN_ROWS6, kn__gemm_merge_f32)
KN_KERNEL(KN_TGT_AVX2, kn__gemm_kern_s_avx2_h, S8, 6, 1, KN_ROWS6, kn__gemm_merge_f32)
KN_KERNEL(KN_TGT_AVX2, kn__gemm_kern_d_avx2, D4, 6, 2, KN_ROWS6, kn__gemm_merge_f64)
KN_KERNEL(KN_TGT_AVX2, kn__gemm_kern_d_avx2_h, D4, 6, 1, KN_ROWS6, kn__gemm_merge_f64)
KN_KERNEL(KN_TGT_AVX512, kn__gemm_kern_s_avx512, S16, 12, 2, KN_ROWS12, kn__gemm_merge_f32)
KN_KERNEL(KN_TGT_AVX512, kn__gemm_kern_s_avx512_h, S16, 12, 1, KN_ROWS12, kn__gemm_merge_f32)
KN_KERNEL(KN_TGT_AVX512, kn__gemm_kern_d_avx512, D8, 12, 2, KN_ROWS12, kn__gemm_merge_f64)
KN_KERNEL(KN_TGT_AVX512, kn__gemm_kern_d_avx512_h, D8, 12, 1, KN_ROWS12, kn__gemm_merge_f64)

#else
typedef int kn_gemm_x86_unused; /* ISO C wants a declaration in every file */
#endif
