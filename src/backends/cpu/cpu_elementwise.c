/* CPU elementwise kernels: copy, fill (and arange), unary, binary, where.
 * float32 has dedicated loops; other dtypes go through double (floats) or
 * int64 (integers), which is exact for every value those dtypes hold except
 * int64 beyond 2^53 in float math. */
#include "cpu_internal.h"
#include "backends/common/scalar_math.h"

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
    /* One dtype: the bits, whatever they hold (NaN payloads, signaling NaNs included). */
    if (c->out == KN_F32 && c->in == KN_F32) {
        for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], p[1] + i * s[1], 4);
        return;
    }
    if (c->out == c->in) {
        for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], p[1] + i * s[1], es);
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

kn_status kn__cpu_copy(int device, const void *args) {
    (void)device;
    const kn_copy_args *a = args;
    kn_operand src = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[2] = {&a->out, &src};
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    copy_ctx cc = {a->out.dtype, src.dtype};
    kn__iter_for_each(&it, copy_inner, &cc);
    return KN_OK;
}

/* ---- fill and arange -------------------------------------------------------------------- */
static void fill_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    size_t es = kn_dtype_size(*(const kn_dtype *)vc);
    char pattern[8];
    memcpy(pattern, p[1], es);
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], pattern, es);
}

/* arange: out[k] = value + k * step in row-major order, through any strides. */
static void fill_steps(const kn_operand *t, double value, double step) {
    kn_geom g;
    const kn_operand *ops[1] = {t};
    kn_geom_init(&g, 1, ops);
    char *d = t->data;
    size_t es = kn_dtype_size(t->dtype);
    int64_t len = g.shape[g.ndim - 1], st = g.stride[0][g.ndim - 1];
    for (int64_t k0 = 0; k0 < g.numel; k0 += len) {
        int64_t off = kn_geom_offset(&g, 0, k0);
        for (int64_t j = 0; j < len; j++)
            kn__store(d + (size_t)(off + j * st) * es, t->dtype, value + (double)(k0 + j) * step);
    }
}

kn_status kn__cpu_fill(int device, const void *args) {
    (void)device;
    const kn_fill_args *a = args;
    const kn_operand *t = &a->out;
    if (a->step != 0) {
        fill_steps(t, a->value, a->step);
        return KN_OK;
    }
    /* The value, converted once, is read through a 0-stride second operand. */
    char value[8] = {0};
    kn__store(value, t->dtype, a->value);
    kn_operand v = *t;
    v.data = value;
    memset(v.stride, 0, sizeof v.stride);
    const kn_operand *ops[2] = {t, &v};
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    if (t->dtype == KN_F32 && kn_operand_contiguous(t)) {
        float *d = t->data, x = (float)a->value;
        for (int64_t i = 0; i < it.numel; i++) d[i] = x;
        return KN_OK;
    }
    kn_dtype dt = t->dtype;
    kn__iter_for_each(&it, fill_inner, &dt);
    return KN_OK;
}

/* ---- unary ------------------------------------------------------------------------------- */
typedef struct {
    int fn;
    double p0, p1;
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
    kn_unary_fn f = (kn_unary_fn)e->fn;
    double p0 = e->p0, p1 = e->p1;
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
        case KN_UNARY_SIN: F32_LOOP(sinf(x)); return;
        case KN_UNARY_COS: F32_LOOP(cosf(x)); return;
        case KN_UNARY_TAN: F32_LOOP(tanf(x)); return;
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

kn_status kn__cpu_unary(int device, const void *args) {
    (void)device;
    const kn_unary_args *a = args;
    kn_operand x = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[2] = {&a->out, &x};
    kn_iter it;
    kn__iter_init(&it, 2, ops);
    ew_ctx e = {(int)a->fn, a->p0, a->p1, a->out.dtype, x.dtype};
    kn__iter_for_each(&it, unary_inner, &e);
    return KN_OK;
}

static void unary_bw_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    const ew_ctx *e = vc;
    kn_unary_fn f = (kn_unary_fn)e->fn;
    double p0 = e->p0, p1 = e->p1;
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

kn_status kn__cpu_unary_backward(int device, const void *args) {
    (void)device;
    const kn_unary_backward_args *a = args;
    kn_operand g = kn_view_expand(&a->grad, &a->out), x = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[3] = {&a->out, &g, &x};
    kn_iter it;
    kn__iter_init(&it, 3, ops);
    ew_ctx e = {(int)a->fn, a->p0, a->p1, a->out.dtype, g.dtype};
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
    kn_binary_fn f = (kn_binary_fn)e->fn;
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

kn_status kn__cpu_binary(int device, const void *args) {
    (void)device;
    const kn_binary_args *a = args;
    kn_operand x = kn_view_expand(&a->a, &a->out), y = kn_view_expand(&a->b, &a->out);
    const kn_operand *ops[3] = {&a->out, &x, &y};
    kn_iter it;
    kn__iter_init(&it, 3, ops);
    ew_ctx e = {(int)a->fn, 0, 0, a->out.dtype, x.dtype};
    kn__iter_for_each(&it, binary_inner, &e);
    return KN_OK;
}

static void where_inner(char **p, const int64_t *s, int64_t n, void *vc) {
    size_t es = kn_dtype_size(((const ew_ctx *)vc)->out);
    for (int64_t i = 0; i < n; i++)
        memcpy(p[0] + i * s[0], *(const uint8_t *)(p[1] + i * s[1]) ? p[2] + i * s[2] : p[3] + i * s[3], es);
}

kn_status kn__cpu_where(int device, const void *args) {
    (void)device;
    const kn_where_args *a = args;
    kn_operand cond = kn_view_expand(&a->cond, &a->out), x = kn_view_expand(&a->a, &a->out),
            y = kn_view_expand(&a->b, &a->out);
    const kn_operand *ops[4] = {&a->out, &cond, &x, &y};
    kn_iter it;
    kn__iter_init(&it, 4, ops);
    ew_ctx e = {0, 0, 0, a->out.dtype, x.dtype};
    kn__iter_for_each(&it, where_inner, &e);
    return KN_OK;
}
