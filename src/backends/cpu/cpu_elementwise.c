/* CPU elementwise kernels: copy, fill, arange, unary, binary, where.
 * float32 has dedicated loops; other dtypes go through double (floats) or
 * int64 (integers), which is exact for every value those dtypes hold except
 * int64 beyond 2^53 in float math. */
#include "cpu_internal.h"
#include "core/scalar_math.h"

#include <math.h>
#include <string.h>

/* ---- copy ---------------------------------------------------------------------------- */
typedef struct {
    kn_dtype out, in;
} copy_ctx;

static void copy_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const copy_ctx *c = vc;
    size_t es = kn_dtype_size(c->out);
    if (c->out == c->in && s[0] == (int64_t)es && s[1] == (int64_t)es) {
        memcpy(p[0], p[1], (size_t)n * es);
        return;
    }
    if (c->out == KN_F32 && c->in == KN_F32) {
        for (int64_t i = 0; i < n; i++) *(float *)(p[0] + i * s[0]) = *(float *)(p[1] + i * s[1]);
        return;
    }
    if (c->out == KN_F32 && (c->in == KN_U8 || c->in == KN_BOOL)) { /* masks */
        for (int64_t i = 0; i < n; i++)
            *(float *)(p[0] + i * s[0]) = c->in == KN_BOOL ? (float)(*(const uint8_t *)(p[1] + i * s[1]) != 0)
                                                           : (float)*(const uint8_t *)(p[1] + i * s[1]);
        return;
    }
    if (c->out == KN_F32 && c->in == KN_F64) {
        for (int64_t i = 0; i < n; i++) *(float *)(p[0] + i * s[0]) = (float)*(const double *)(p[1] + i * s[1]);
        return;
    }
    if (c->out == KN_F64 && c->in == KN_F32) {
        for (int64_t i = 0; i < n; i++) *(double *)(p[0] + i * s[0]) = *(const float *)(p[1] + i * s[1]);
        return;
    }
    bool ints = !kn_dtype_is_float(c->out) && !kn_dtype_is_float(c->in);
    for (int64_t i = 0; i < n; i++) {
        if (ints) kn__store_i64(p[0] + i * s[0], c->out, kn__load_i64(p[1] + i * s[1], c->in));
        else kn__store(p[0] + i * s[0], c->out, kn__load(p[1] + i * s[1], c->in));
    }
}

kn_status kn__cpu_copy(const kn_call *c) {
    kn_tensor *src = c->in[0], *dst = c->out[0];
    kn_tensor *ops[2] = {dst, src};
    kn_tensor *bsrc = NULL;
    if (src->ndim != dst->ndim || memcmp(src->shape, dst->shape, (size_t)dst->ndim * 8)) {
        bsrc = kn__expand(src, dst->ndim, dst->shape);
        if (!bsrc) return kn_error_code();
        ops[1] = bsrc;
    }
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    copy_ctx cc = {dst->dtype, src->dtype};
    kn__iter_for_each(&it, copy_inner, &cc);
    kn_release(bsrc);
    return KN_OK;
}

/* ---- fill and arange -------------------------------------------------------------------- */
static void fill_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const kn_tensor *t = vc;
    size_t es = kn_dtype_size(t->dtype);
    char pattern[8];
    memcpy(pattern, p[1], es);
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], pattern, es);
}

kn_status kn__cpu_fill(const kn_call *c) {
    kn_tensor *t = c->out[0];
    /* The value, converted once, is read through a 0-stride second operand. */
    char value[8] = {0};
    kn__store(value, t->dtype, c->f[0]);
    kn_tensor v = *t;
    kn_storage vs = {.refcount = 1, .data = value, .nbytes = 8, .device = KN_CPU, .external = true};
    v.storage = &vs;
    v.offset = 0;
    memset(v.stride, 0, sizeof v.stride);
    kn_tensor *ops[2] = {t, &v};
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    if (t->dtype == KN_F32 && kn__is_contiguous(t)) {
        float *d = kn__data(t), x = (float)c->f[0];
        for (int64_t i = 0; i < it.numel; i++) d[i] = x;
        return KN_OK;
    }
    kn__iter_for_each(&it, fill_inner, t);
    return KN_OK;
}

kn_status kn__cpu_arange(const kn_call *c) {
    kn_tensor *t = c->out[0];
    char *d = kn__data(t);
    size_t es = kn_dtype_size(t->dtype);
    int64_t n = t->shape[0];
    for (int64_t k = 0; k < n; k++) kn__store(d + k * es, t->dtype, c->f[0] + (double)k * c->f[1]);
    return KN_OK;
}

/* ---- unary ------------------------------------------------------------------------------- */
typedef struct {
    const kn_call *c;
    kn_dtype out, in;
} ew_ctx;

/* The contiguous case gets its own loop so the compiler vectorizes it. */
/* Branch-free relu that keeps NaN (as PyTorch): a mask, not a compare-and-jump. */
static inline float relu_f32(float x) {
    uint32_t b, keep = -(uint32_t)!(x <= 0);
    memcpy(&b, &x, 4);
    b &= keep;
    memcpy(&x, &b, 4);
    return x;
}

#define F32_LOOP(expr)                                                                       \
    if (s[0] == 4 && s[1] == 4) {                                                            \
        float *o_ = (float *)p[0];                                                           \
        const float *i_ = (const float *)p[1];                                               \
        for (int64_t i = 0; i < n; i++) {                                                    \
            float x = i_[i];                                                                 \
            o_[i] = (expr);                                                                  \
        }                                                                                    \
    } else {                                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                    \
            float x = *(const float *)(p[1] + i * s[1]);                                     \
            *(float *)(p[0] + i * s[0]) = (expr);                                            \
        }                                                                                    \
    }

static void unary_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const ew_ctx *e = vc;
    kn_unary_fn f = (kn_unary_fn)e->c->i[0];
    double p0 = e->c->f[0], p1 = e->c->f[1];
    if (e->out == KN_F32 && e->in == KN_F32) {
        float a = (float)p0, b = (float)p1;
        switch (f) {
        case KN_UNARY_NEG: F32_LOOP(-x); return;
        case KN_UNARY_RELU: F32_LOOP(relu_f32(x)); return;
        case KN_UNARY_LEAKY_RELU: F32_LOOP(x > 0 ? x : x * a); return;
        case KN_UNARY_ADD_SCALAR: F32_LOOP(x + a); return;
        case KN_UNARY_MUL_SCALAR: F32_LOOP(x * a); return;
        case KN_UNARY_RSUB_SCALAR: F32_LOOP(a - x); return;
        case KN_UNARY_ABS: F32_LOOP(fabsf(x)); return;
        case KN_UNARY_EXP: F32_LOOP(expf(x)); return;
        case KN_UNARY_LOG: F32_LOOP(logf(x)); return;
        case KN_UNARY_SQRT: F32_LOOP(sqrtf(x)); return;
        case KN_UNARY_TANH: F32_LOOP(tanhf(x)); return;
        case KN_UNARY_SIGMOID: F32_LOOP(x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x))); return;
        case KN_UNARY_CLAMP: F32_LOOP(x != x ? x : x < a ? a : x > b ? b : x); return;
        default: F32_LOOP((float)kn__unary_eval(f, x, p0, p1)); return;
        }
    }
    if (!kn_dtype_is_float(e->out) && !kn_dtype_is_float(e->in) && f != KN_UNARY_SQRT &&
        f != KN_UNARY_EXP && f != KN_UNARY_LOG) {
        /* Integer math stays exact. */
        for (int64_t i = 0; i < n; i++) {
            int64_t x = kn__load_i64(p[1] + i * s[1], e->in), r;
            switch (f) {
            case KN_UNARY_NEG: r = -x; break;
            case KN_UNARY_ABS: r = x < 0 ? -x : x; break;
            case KN_UNARY_RELU: r = x > 0 ? x : 0; break;
            case KN_UNARY_ADD_SCALAR: r = x + (int64_t)p0; break;
            case KN_UNARY_MUL_SCALAR: r = x * (int64_t)p0; break;
            case KN_UNARY_RSUB_SCALAR: r = (int64_t)p0 - x; break;
            default: r = (int64_t)kn__unary_eval(f, (double)x, p0, p1); break;
            }
            kn__store_i64(p[0] + i * s[0], e->out, r);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        kn__store(p[0] + i * s[0], e->out, kn__unary_eval(f, kn__load(p[1] + i * s[1], e->in), p0, p1));
}

kn_status kn__cpu_unary(const kn_call *c) {
    kn_tensor *ops[2] = {c->out[0], c->in[0]};
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    ew_ctx e = {c, c->out[0]->dtype, c->in[0]->dtype};
    kn__iter_for_each(&it, unary_inner, &e);
    return KN_OK;
}

static void unary_bw_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const ew_ctx *e = vc;
    kn_unary_fn f = (kn_unary_fn)e->c->i[0];
    double p0 = e->c->f[0], p1 = e->c->f[1];
    if (e->out == KN_F32 && f == KN_UNARY_RELU && s[0] == 4 && s[1] == 4 && s[2] == 4) {
        float *o = (float *)p[0];
        const float *G = (const float *)p[1], *X = (const float *)p[2];
        /* A bit mask instead of a branch: signs are random, so a branch
         * mispredicts half the time, and the mask form vectorizes. */
        for (int64_t i = 0; i < n; i++) {
            uint32_t gb, keep = -(uint32_t)(X[i] > 0);
            memcpy(&gb, &G[i], 4);
            gb &= keep;
            memcpy(&o[i], &gb, 4);
        }
        return;
    }
    if (e->out == KN_F32) {
        for (int64_t i = 0; i < n; i++) {
            float g = *(const float *)(p[1] + i * s[1]), x = *(const float *)(p[2] + i * s[2]);
            float r;
            switch (f) {
            case KN_UNARY_RELU: r = x > 0 ? g : 0; break;
            case KN_UNARY_SIGMOID: r = g * x * (1 - x); break;
            case KN_UNARY_TANH: r = g * (1 - x * x); break;
            default: r = (float)kn__unary_grad(f, g, x, p0, p1); break;
            }
            *(float *)(p[0] + i * s[0]) = r;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        kn__store(p[0] + i * s[0], e->out,
                  kn__unary_grad(f, kn__load(p[1] + i * s[1], e->out),
                                 kn__load(p[2] + i * s[2], e->out), p0, p1));
}

kn_status kn__cpu_unary_backward(const kn_call *c) {
    kn_tensor *ops[3] = {c->out[0], c->in[0], c->in[1]};
    kn_iter it;
    kn__iter_init(&it, 3, ops);
    ew_ctx e = {c, c->out[0]->dtype, c->in[0]->dtype};
    kn__iter_for_each(&it, unary_bw_inner, &e);
    return KN_OK;
}

/* ---- binary ------------------------------------------------------------------------------- */
#define F32_BIN(expr)                                                                         \
    do {                                                                                      \
        if (s[0] == 4 && s[1] == 4 && s[2] == 4) {                                            \
            float *o = (float *)p[0];                                                         \
            const float *A = (const float *)p[1], *B = (const float *)p[2];                   \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float a = A[i], b = B[i];                                                     \
                o[i] = (expr);                                                                \
            }                                                                                 \
        } else if (s[0] == 4 && s[1] == 4 && s[2] == 0) {                                     \
            float *o = (float *)p[0];                                                         \
            const float *A = (const float *)p[1], b = *(const float *)p[2];                   \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float a = A[i];                                                               \
                o[i] = (expr);                                                                \
            }                                                                                 \
        } else if (s[0] == 4 && s[1] == 0 && s[2] == 4) {                                     \
            float *o = (float *)p[0];                                                         \
            const float a = *(const float *)p[1], *B = (const float *)p[2];                   \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float b = B[i];                                                               \
                o[i] = (expr);                                                                \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float a = *(const float *)(p[1] + i * s[1]), b = *(const float *)(p[2] + i * s[2]); \
                *(float *)(p[0] + i * s[0]) = (expr);                                         \
            }                                                                                 \
        }                                                                                     \
    } while (0)

static void binary_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const ew_ctx *e = vc;
    kn_binary_fn f = (kn_binary_fn)e->c->i[0];
    if (e->out == KN_F32 && e->in == KN_F32) {
        switch (f) {
        case KN_BINARY_ADD: F32_BIN(a + b); return;
        case KN_BINARY_SUB: F32_BIN(a - b); return;
        case KN_BINARY_MUL: F32_BIN(a * b); return;
        case KN_BINARY_DIV: F32_BIN(a / b); return;
        case KN_BINARY_MAX: F32_BIN(a != a || b != b ? NAN : a > b ? a : b); return;
        case KN_BINARY_MIN: F32_BIN(a != a || b != b ? NAN : a < b ? a : b); return;
        default: F32_BIN((float)kn__binary_eval(f, a, b)); return;
        }
    }
    if (!kn_dtype_is_float(e->in)) {
        for (int64_t i = 0; i < n; i++)
            kn__store_i64(p[0] + i * s[0], e->out,
                          kn__binary_i64(f, kn__load_i64(p[1] + i * s[1], e->in),
                                     kn__load_i64(p[2] + i * s[2], e->in)));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        kn__store(p[0] + i * s[0], e->out,
                  kn__binary_eval(f, kn__load(p[1] + i * s[1], e->in), kn__load(p[2] + i * s[2], e->in)));
}

kn_status kn__cpu_binary(const kn_call *c) {
    kn_tensor *ops[3] = {c->out[0], c->in[0], c->in[1]};
    kn_iter it;
    kn__iter_init(&it, 3, ops);
    ew_ctx e = {c, c->out[0]->dtype, c->in[0]->dtype};
    kn__iter_for_each(&it, binary_inner, &e);
    return KN_OK;
}

static void where_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    size_t es = kn_dtype_size(((const ew_ctx *)vc)->out);
    for (int64_t i = 0; i < n; i++)
        memcpy(p[0] + i * s[0], *(const uint8_t *)(p[1] + i * s[1]) ? p[2] + i * s[2] : p[3] + i * s[3], es);
}

kn_status kn__cpu_where(const kn_call *c) {
    kn_tensor *ops[4] = {c->out[0], c->in[0], c->in[1], c->in[2]};
    kn_iter it;
    kn__iter_init(&it, 4, ops);
    ew_ctx e = {c, c->out[0]->dtype, c->in[1]->dtype};
    kn__iter_for_each(&it, where_inner, &e);
    return KN_OK;
}
