/* The FFT ops on the CPU (core/ops.def: FFT, RFFT, IRFFT). Each line along
 * dim is gathered into complex doubles (any input strides), transformed by
 * its cached plan (cpu_fft_plan.c), scaled and stored; lines run on the
 * thread pool. Lines along a dim that is not the innermost are gathered in
 * blocks of neighbours, so the reads walk memory in order rather than one
 * cache line per element. The real transforms run a complex transform of
 * half the length for even n (two real samples per complex one, then the
 * standard split of its spectrum), a full one for odd n. */
#include "cpu_fft.h"

#include <stdatomic.h>
#include <stdlib.h>

/* The helpers inline into the worker, which is compiled twice (below). */
#if defined(__GNUC__)
#define KN_INLINE static inline __attribute__((always_inline))
#else
#define KN_INLINE static inline
#endif

enum { KIND_C2C, KIND_R2C, KIND_C2R };
#define BLOCK 8 /* lines gathered together along a non-innermost dim */

typedef struct {
    int kind;
    const kn_operand *x, *out; /* the pairs' operands for complex data */
    int dim;
    int64_t n;                 /* the transform length */
    bool inverse;
    double scale;
    const kn_fft_plan *plan;   /* the complex plan, or the real plan */
    int rest[KN_MAX_DIMS];     /* the dims of x other than dim (and the pairs) */
    int n_rest;
    int64_t block;             /* lines gathered together */
    atomic_bool failed;
} fft_job;

/* Element offsets of line l in x and out. */
KN_INLINE void line_offsets(const fft_job *j, int64_t l, int64_t *xo, int64_t *oo) {
    int64_t a = 0, b = 0;
    for (int r = j->n_rest - 1; r >= 0; r--) {
        int d = j->rest[r];
        int64_t i = l % j->x->shape[d];
        l /= j->x->shape[d];
        a += i * j->x->stride[d];
        b += i * j->out->stride[d];
    }
    *xo = a, *oo = b;
}

/* Gathers and scatters, one loop per dtype and direction so each is a plain
 * strided copy. Lines b < nb start at element offsets off[b] of base;
 * element k of a line is at k * s (its imaginary part, if any, p further);
 * in buf, line b is at dst + b * ld (gathers) or src[b] (scatters). k runs
 * outside the lines: neighbouring lines are read together. */
#define GATHER_PAIRS(T)                                                                                       \
    if (nb == 1 && s == 2 && p == 1) { /* one contiguous line: a plain conversion */                          \
        const T *x = (const T *)base + off[0];                                                                \
        for (int64_t k = 0; k < len; k++) dst[k] = (kn_cpx){x[2 * k], x[2 * k + 1]};                          \
        return;                                                                                               \
    }                                                                                                         \
    for (int64_t k = 0; k < len; k++)                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                                    \
            const T *x = (const T *)base + off[b] + k * s;                                                    \
            dst[b * ld + k] = (kn_cpx){x[0], x[p]};                                                           \
        }
KN_INLINE void gather_pairs(const void *base, bool f64, const int64_t *off, int64_t nb, int64_t len, int64_t s,
                         int64_t p, kn_cpx *dst, int64_t ld) {
    if (f64) {
        GATHER_PAIRS(double)
    } else {
        GATHER_PAIRS(float)
    }
}

/* Reals into complex: packed two per complex (even n of rfft) or as real parts. */
#define GATHER_REALS(T)                                                                                       \
    if (nb == 1 && s == 1 && packed) {                                                                        \
        const T *x = (const T *)base + off[0];                                                                \
        for (int64_t k = 0; k < len / 2; k++) dst[k] = (kn_cpx){x[2 * k], x[2 * k + 1]};                      \
        return;                                                                                               \
    }                                                                                                         \
    for (int64_t k = 0; k < len; k++)                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                                    \
            const T *x = (const T *)base + off[b] + k * s;                                                    \
            if (!packed)                                                                                      \
                dst[b * ld + k] = (kn_cpx){x[0], 0};                                                          \
            else if (k % 2)                                                                                   \
                dst[b * ld + k / 2].im = x[0];                                                                \
            else                                                                                              \
                dst[b * ld + k / 2].re = x[0];                                                                \
        }
KN_INLINE void gather_reals(const void *base, bool f64, const int64_t *off, int64_t nb, int64_t len, int64_t s,
                         bool packed, kn_cpx *dst, int64_t ld) {
    if (f64) {
        GATHER_REALS(double)
    } else {
        GATHER_REALS(float)
    }
}

#define SCATTER_PAIRS(T)                                                                                      \
    if (nb == 1 && s == 2 && p == 1) {                                                                        \
        T *y = (T *)base + off[0];                                                                            \
        const kn_cpx *v = src[0];                                                                             \
        for (int64_t k = 0; k < len; k++) y[2 * k] = (T)(v[k].re * sc), y[2 * k + 1] = (T)(v[k].im * sc);     \
        return;                                                                                               \
    }                                                                                                         \
    for (int64_t k = 0; k < len; k++)                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                                    \
            T *y = (T *)base + off[b] + k * s;                                                                \
            kn_cpx v = src[b][k];                                                                             \
            y[0] = (T)(v.re * sc), y[p] = (T)(v.im * sc);                                                     \
        }
KN_INLINE void scatter_pairs(void *base, bool f64, const int64_t *off, int64_t nb, int64_t len, int64_t s, int64_t p,
                          kn_cpx *const *src, double sc) {
    if (f64) {
        SCATTER_PAIRS(double)
    } else {
        SCATTER_PAIRS(float)
    }
}

/* Complex to reals: unpacked two per complex (even n of irfft) or the real parts. */
#define SCATTER_REALS(T)                                                                                      \
    if (nb == 1 && s == 1 && packed) {                                                                        \
        T *y = (T *)base + off[0];                                                                            \
        const kn_cpx *v = src[0];                                                                             \
        for (int64_t k = 0; k < len / 2; k++) y[2 * k] = (T)(v[k].re * sc), y[2 * k + 1] = (T)(v[k].im * sc); \
        return;                                                                                               \
    }                                                                                                         \
    for (int64_t k = 0; k < len; k++)                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                                    \
            T *y = (T *)base + off[b] + k * s;                                                                \
            const kn_cpx *v = src[b] + (packed ? k / 2 : k);                                                  \
            y[0] = (T)((packed && k % 2 ? v->im : v->re) * sc);                                               \
        }
KN_INLINE void scatter_reals(void *base, bool f64, const int64_t *off, int64_t nb, int64_t len, int64_t s, bool packed,
                          kn_cpx *const *src, double sc) {
    if (f64) {
        SCATTER_REALS(double)
    } else {
        SCATTER_REALS(float)
    }
}

/* ---- the per-line transforms -------------------------------------------------------------------- */
/* rfft, even n = 2h: z = x_even + i x_odd (in c[0..h)), Z = DFT_h(z); the
 * spectra of the even and odd samples are E_k = (Z_k + conj Z_{h-k})/2 and
 * O_k = (Z_k - conj Z_{h-k})/(2i), and X_k = E_k + w^k O_k for k <= h. */
KN_INLINE void r2c_split(const kn_fft_plan *p, const kn_cpx *restrict c, kn_cpx *restrict y) {
    int64_t h = p->n / 2;
    const kn_cpx *restrict w = p->rtw;
    /* k = 0 and h: E = re Z_0, O = im Z_0, w^0 = 1, w^h = -1 */
    y[0] = (kn_cpx){c[0].re + c[0].im, 0};
    y[h] = (kn_cpx){c[0].re - c[0].im, 0};
    for (int64_t k = 1; k < h; k++) {
        kn_cpx a = c[k], b = c[h - k];
        double er = 0.5 * (a.re + b.re), ei = 0.5 * (a.im - b.im);
        double orr = 0.5 * (a.im + b.im), oi = -0.5 * (a.re - b.re);
        y[k] = (kn_cpx){er + w[k].re * orr - w[k].im * oi, ei + w[k].re * oi + w[k].im * orr};
    }
}

/* irfft, even n = 2h: the reverse: 2 E_k + 2i O_k from the bins (the
 * imaginary parts of X_0 and X_h ignored), whose inverse DFT_h is
 * x_even + i x_odd, unscaled as the inverse DFT_n is. */
KN_INLINE void c2r_merge(const kn_fft_plan *p, kn_cpx *restrict y, kn_cpx *restrict c) {
    int64_t h = p->n / 2;
    y[0].im = 0, y[h].im = 0;
    for (int64_t k = 0; k < h; k++) {
        kn_cpx a = y[k], b = {y[h - k].re, -y[h - k].im}; /* X_k, conj X_{h-k} */
        kn_cpx s = {a.re + b.re, a.im + b.im}, d = {a.re - b.re, a.im - b.im};
        kn_cpx w = p->rtw[k];
        kn_cpx o = {w.re * d.re + w.im * d.im, w.re * d.im - w.im * d.re}; /* conj(w^k) d */
        c[k] = (kn_cpx){s.re - o.im, s.im + o.re};
    }
}

/* ---- the workers ---------------------------------------------------------------------------------- */
KN_INLINE void lines_body(int64_t begin, int64_t end, void *ctx) {
    fft_job *j = ctx;
    const kn_operand *X = j->x, *O = j->out;
    int64_t n = j->n, h = n / 2, B = j->block;
    bool f64 = X->dtype == KN_F64, even = n % 2 == 0;
    /* the complex plan run and its length */
    const kn_fft_plan *cp = j->kind == KIND_C2C ? j->plan : j->plan->sub;
    int64_t cn = cp->n;
    int64_t ylen = j->kind == KIND_C2C ? 0 : h + 1;
    /* line b in buf: c (cn), y (ylen), its scratch */
    int64_t ld = cn + ylen + (int64_t)kn__fft_scratch_len(cp);
    kn_cpx *buf = malloc((size_t)(B * ld) * sizeof *buf);
    if (!buf) {
        atomic_store(&j->failed, true);
        return;
    }
    int pd = X->ndim - 1; /* the pair dim of complex operands */
    int64_t xs = X->stride[j->dim], os = O->stride[j->dim];
    int64_t xp = j->kind == KIND_R2C ? 0 : X->stride[pd], op = j->kind == KIND_C2R ? 0 : O->stride[O->ndim - 1];
    double sc = j->scale;
    for (int64_t l0 = begin; l0 < end; l0 += B) {
        int64_t nb = end - l0 < B ? end - l0 : B, xo[BLOCK], oo[BLOCK];
        kn_cpx *res[BLOCK]; /* each line's result */
        for (int64_t b = 0; b < nb; b++) line_offsets(j, l0 + b, &xo[b], &oo[b]);
        switch (j->kind) {
        case KIND_C2C: gather_pairs(X->data, f64, xo, nb, n, xs, xp, buf, ld); break;
        case KIND_R2C: gather_reals(X->data, f64, xo, nb, n, xs, even, buf, ld); break;
        default: gather_pairs(X->data, f64, xo, nb, h + 1, xs, xp, buf + cn, ld); /* into y */
        }
        for (int64_t b = 0; b < nb; b++) {
            kn_cpx *c = buf + b * ld, *y = c + cn, *scratch = y + ylen;
            switch (j->kind) {
            case KIND_C2C: res[b] = kn__fft_exec(cp, c, j->inverse, scratch); break;
            case KIND_R2C: {
                kn_cpx *z = kn__fft_exec(cp, c, false, scratch);
                if (even)
                    r2c_split(j->plan, z, y);
                else
                    for (int64_t k = 0; k <= h; k++) y[k] = z[k];
                res[b] = y;
                break;
            }
            default:
                if (even) {
                    c2r_merge(j->plan, y, c);
                } else {
                    c[0] = (kn_cpx){y[0].re, 0};
                    for (int64_t k = 1; k <= h; k++) c[k] = y[k], c[n - k] = (kn_cpx){y[k].re, -y[k].im};
                }
                res[b] = kn__fft_exec(cp, c, true, scratch);
            }
        }
        switch (j->kind) {
        case KIND_C2C: scatter_pairs(O->data, f64, oo, nb, n, os, op, res, sc); break;
        case KIND_R2C: scatter_pairs(O->data, f64, oo, nb, h + 1, os, op, res, sc); break;
        default: scatter_reals(O->data, f64, oo, nb, n, os, even, res, sc);
        }
    }
    free(buf);
}

/* The worker for any CPU, and with AVX2 + FMA for the conversions and the
 * real transforms' split (the passes choose their own, cpu_fft_pass.c). */
static void lines_generic(int64_t begin, int64_t end, void *ctx) { lines_body(begin, end, ctx); }
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define KN_FFT_X86 1
__attribute__((target("avx2,fma"))) static void lines_avx2(int64_t begin, int64_t end, void *ctx) {
    lines_body(begin, end, ctx);
}
#endif

static kn_range_fn worker(void) {
#if defined(KN_FFT_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return lines_avx2;
#endif
    return lines_generic;
}

static kn_status run(fft_job *j, const char *op) {
    bool owned;
    j->plan = kn__fft_plan(j->n, j->kind != KIND_C2C, &owned);
    if (!j->plan) return kn__err(KN_ERR_OOM, "%s: out of memory for a plan of length %lld", op, (long long)j->n);
    for (int d = 0; d < j->x->ndim - (j->kind == KIND_R2C ? 0 : 1); d++)
        if (d != j->dim) j->rest[j->n_rest++] = d;
    int64_t n_lines = 1;
    for (int r = 0; r < j->n_rest; r++) n_lines *= j->x->shape[j->rest[r]];
    /* Along the innermost dim each line is one stream already. */
    int64_t xs = j->x->stride[j->dim], unit = j->kind == KIND_R2C ? 1 : 2;
    j->block = (xs == unit || xs == -unit || j->n > 4096) ? 1 : BLOCK;
    int64_t grain = 16384 / j->n + 1;
    if (grain < j->block) grain = j->block;
    kn__parallel_for(n_lines, grain, worker(), j);
    kn__fft_plan_release(j->plan, owned);
    return atomic_load(&j->failed) ? kn__err(KN_ERR_OOM, "%s: out of memory", op) : KN_OK;
}

static bool float_pairs(const kn_operand *v) {
    return (v->dtype == KN_F32 || v->dtype == KN_F64) && v->ndim >= 2 && v->shape[v->ndim - 1] == 2;
}

kn_status kn__cpu_fft(int device, const void *args) {
    (void)device;
    const kn_fft_args *a = args;
    if (a->x.dtype != a->out.dtype || !float_pairs(&a->x) || !float_pairs(&a->out))
        return kn__err(KN_ERR_DTYPE, "fft: expected float32 or float64 pairs [..., 2], got %s",
                       kn_dtype_name(a->x.dtype));
    if (a->dim < 0 || a->dim >= a->x.ndim - 1) return kn__err(KN_ERR_SHAPE, "fft: expected a dim before the pairs'");
    fft_job j = {.kind = KIND_C2C, .x = &a->x, .out = &a->out, .dim = (int)a->dim, .n = a->x.shape[a->dim],
                 .inverse = a->inverse != 0, .scale = a->scale};
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    return run(&j, "fft");
}

kn_status kn__cpu_rfft(int device, const void *args) {
    (void)device;
    const kn_rfft_args *a = args;
    if (a->x.dtype != a->out.dtype || (a->x.dtype != KN_F32 && a->x.dtype != KN_F64) || !float_pairs(&a->out) ||
        a->out.ndim != a->x.ndim + 1)
        return kn__err(KN_ERR_DTYPE, "rfft: expected a float32 or float64 input and pairs of its dtype, got %s",
                       kn_dtype_name(a->x.dtype));
    if (a->dim < 0 || a->dim >= a->x.ndim || a->out.shape[a->dim] != a->x.shape[a->dim] / 2 + 1)
        return kn__err(KN_ERR_SHAPE, "rfft: expected n/2 + 1 bins along dim %lld", (long long)a->dim);
    fft_job j = {.kind = KIND_R2C, .x = &a->x, .out = &a->out, .dim = (int)a->dim, .n = a->x.shape[a->dim],
                 .scale = a->scale};
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    return run(&j, "rfft");
}

kn_status kn__cpu_irfft(int device, const void *args) {
    (void)device;
    const kn_irfft_args *a = args;
    if (a->x.dtype != a->out.dtype || !float_pairs(&a->x) || a->x.ndim != a->out.ndim + 1)
        return kn__err(KN_ERR_DTYPE, "irfft: expected float32 or float64 pairs and an output of their dtype, got %s",
                       kn_dtype_name(a->x.dtype));
    if (a->dim < 0 || a->dim >= a->out.ndim || a->n < 1 || a->out.shape[a->dim] != a->n ||
        a->x.shape[a->dim] != a->n / 2 + 1)
        return kn__err(KN_ERR_SHAPE, "irfft: expected n/2 + 1 bins and n outputs along dim %lld", (long long)a->dim);
    fft_job j = {.kind = KIND_C2R, .x = &a->x, .out = &a->out, .dim = (int)a->dim, .n = a->n, .scale = a->scale};
    if (kn_operand_numel(&a->out) == 0) return KN_OK;
    return run(&j, "irfft");
}
