/* Philox 4x32-10, inline, with a batched form the compiler vectorizes: the
 * CPU kernels draw millions of dropout bits per step. */
#ifndef KILN_PHILOX_H
#define KILN_PHILOX_H

#include <math.h>
#include <stdint.h>

#define KN_PHILOX_M0 0xD2511F53u
#define KN_PHILOX_M1 0xCD9E8D57u
#define KN_PHILOX_W0 0x9E3779B9u
#define KN_PHILOX_W1 0xBB67AE85u

static inline void kn__philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1, uint32_t out[4]) {
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)KN_PHILOX_M0 * c0, p1 = (uint64_t)KN_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += KN_PHILOX_W0;
        k1 += KN_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* ---- the element mapping every backend implements exactly ------------------ */
/* Random numbers (kiln's RANDOM primitive): element k of a draw of `kind`
 * (kn_random_kind codes: 0 uniform, 1 normal, 2 int, 3 bits) under (seed,
 * offset). Uniform and int take word k % 4 of counter offset + k / 4; normal
 * takes words 2 (k % 2) and 2 (k % 2) + 1 of counter offset + k / 2 (Box-Muller). */
static inline double kn__u01(uint32_t x) { return (double)(x >> 8) * (1.0 / 16777216.0); }

static inline void kn__random_block(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    kn__philox((uint32_t)counter, (uint32_t)(counter >> 32), 0, 0, (uint32_t)seed, (uint32_t)(seed >> 32), out);
}

static inline double kn__random_value(int kind, uint64_t seed, uint64_t offset, int64_t k, double a, double b) {
    uint32_t w[4];
    if (kind == 1) {
        kn__random_block(seed, offset + (uint64_t)(k / 2), w);
        int j = (int)(k % 2) * 2;
        double u1 = 1.0 - kn__u01(w[j]), u2 = kn__u01(w[j + 1]); /* u1 in (0, 1] */
        return a + b * sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
    }
    kn__random_block(seed, offset + (uint64_t)(k / 4), w);
    uint32_t x = w[k % 4];
    switch (kind) {
    case 0: return a + (b - a) * kn__u01(x);
    case 2: return a + floor((double)x * (1.0 / 4294967296.0) * (b - a));
    default: return (double)x;
    }
}

/* KN_PHILOX_BATCH consecutive counters (low 64 bits from `counter`, high
 * words zero) under a 64-bit seed: out[j][w] is word w of counter + j. */
#define KN_PHILOX_BATCH 8
static inline void kn__philox_batch(uint64_t seed, uint64_t counter, uint32_t out[KN_PHILOX_BATCH][4]) {
    uint32_t c0[KN_PHILOX_BATCH], c1[KN_PHILOX_BATCH], c2[KN_PHILOX_BATCH], c3[KN_PHILOX_BATCH];
    for (int j = 0; j < KN_PHILOX_BATCH; j++) {
        uint64_t c = counter + (uint64_t)j;
        c0[j] = (uint32_t)c;
        c1[j] = (uint32_t)(c >> 32);
        c2[j] = 0;
        c3[j] = 0;
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        for (int j = 0; j < KN_PHILOX_BATCH; j++) {
            uint64_t p0 = (uint64_t)KN_PHILOX_M0 * c0[j], p1 = (uint64_t)KN_PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        k0 += KN_PHILOX_W0;
        k1 += KN_PHILOX_W1;
    }
    for (int j = 0; j < KN_PHILOX_BATCH; j++) {
        out[j][0] = c0[j];
        out[j][1] = c1[j];
        out[j][2] = c2[j];
        out[j][3] = c3[j];
    }
}

/* The same 8 counters with AVX2 intrinsics, words transposed: w[word][j] is
 * word `word` of counter + j. 32x32->64 multiplies: low halves from mullo,
 * high halves from two mul_epu32 (even and odd lanes). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KN_HAVE_PHILOX_AVX2 1
__attribute__((target("avx2"))) static inline __m256i kn__mulhi32_avx2(__m256i a, __m256i m) {
    __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a, m), 32);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    return _mm256_blend_epi32(even, odd, 0xAA);
}

__attribute__((target("avx2"))) static inline void kn__philox8_avx2(uint64_t seed, uint64_t counter,
                                                                    uint32_t w[4][KN_PHILOX_BATCH]) {
    uint32_t lo = (uint32_t)counter, hi = (uint32_t)(counter >> 32);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)lo), lane);
    /* Carry into the high word where the low word wrapped. */
    __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32((int)lo), _mm256_set1_epi32(INT32_MIN)),
                                         _mm256_xor_si256(c0, _mm256_set1_epi32(INT32_MIN)));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32((int)hi), wrapped);
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    const __m256i m0 = _mm256_set1_epi32((int)KN_PHILOX_M0), m1 = _mm256_set1_epi32((int)KN_PHILOX_M1);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        __m256i hi0 = kn__mulhi32_avx2(c0, m0), lo0 = _mm256_mullo_epi32(c0, m0);
        __m256i hi1 = kn__mulhi32_avx2(c2, m1), lo1 = _mm256_mullo_epi32(c2, m1);
        __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
        __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += KN_PHILOX_W0;
        k1 += KN_PHILOX_W1;
    }
    _mm256_storeu_si256((__m256i *)w[0], c0);
    _mm256_storeu_si256((__m256i *)w[1], c1);
    _mm256_storeu_si256((__m256i *)w[2], c2);
    _mm256_storeu_si256((__m256i *)w[3], c3);
}
#endif

#endif
