/* Element conversion for every dtype, on the host: the one table all host
 * code (the CPU backend, the host fallback, tests) loads and stores through.
 * GPU backends mirror these rules (round to nearest even for f16/bf16,
 * saturating float-to-int) and the harness checks them against these. */
#ifndef KILN_COMMON_DTYPE_H
#define KILN_COMMON_DTYPE_H

#include "kiln/core.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- half precision ---------------------------------------------------------- */
static inline float kn__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            bits = sign | ((exp + 112) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t kn__f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* round to nearest even */
    return (uint16_t)h;
}

static inline float kn__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t kn__f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- element access ------------------------------------------------------------ */
static inline double kn__load(const void *p, kn_dtype dt) {
    switch (dt) {
    case KN_F32: return *(const float *)p;
    case KN_F64: return *(const double *)p;
    case KN_F16: return kn__f16_to_f32(*(const uint16_t *)p);
    case KN_BF16: return kn__bf16_to_f32(*(const uint16_t *)p);
    case KN_I32: return *(const int32_t *)p;
    case KN_I64: return (double)*(const int64_t *)p;
    case KN_U8: return *(const uint8_t *)p;
    case KN_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    default: return NAN;
    }
}

static inline void kn__store(void *p, kn_dtype dt, double v) {
    switch (dt) {
    case KN_F32: *(float *)p = (float)v; break;
    case KN_F64: *(double *)p = v; break;
    case KN_F16: *(uint16_t *)p = kn__f32_to_f16((float)v); break;
    case KN_BF16: *(uint16_t *)p = kn__f32_to_bf16((float)v); break;
    /* Float-to-int conversion truncates toward zero, as in C and PyTorch;
     * NaN and out-of-range values saturate instead of being undefined.
     * (Integer-to-integer conversions wrap: see kn__store_i64.) */
    case KN_I32: *(int32_t *)p = v != v ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v; break;
    case KN_I64: *(int64_t *)p = v != v ? 0 : v >= 9.2233720368547758e18 ? INT64_MAX : v <= -9.2233720368547758e18 ? INT64_MIN : (int64_t)v; break;
    case KN_U8: *(uint8_t *)p = v != v || v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v; break;
    case KN_BOOL: *(uint8_t *)p = v != 0; break;
    default: break;
    }
}

static inline int64_t kn__load_i64(const void *p, kn_dtype dt) {
    switch (dt) {
    case KN_I64: return *(const int64_t *)p;
    case KN_I32: return *(const int32_t *)p;
    case KN_U8: return *(const uint8_t *)p;
    case KN_BOOL: return *(const uint8_t *)p != 0;
    default: {
        double v = kn__load(p, dt);
        return v != v ? 0 : (int64_t)v;
    }
    }
}

static inline void kn__store_i64(void *p, kn_dtype dt, int64_t v) {
    switch (dt) {
    case KN_I64: *(int64_t *)p = v; break;
    case KN_I32: *(int32_t *)p = (int32_t)v; break;
    case KN_U8: *(uint8_t *)p = (uint8_t)v; break;
    case KN_BOOL: *(uint8_t *)p = v != 0; break;
    default: kn__store(p, dt, (double)v); break;
    }
}

#endif
