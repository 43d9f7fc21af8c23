/* CPU kernels for softmax, nll, batch norm and layer norm. float32 has
 * dedicated loops that accumulate in double; other float dtypes go through
 * double with kn__load/kn__store. Inputs of any strides are accepted: the
 * kernels copy non-contiguous bulk inputs to contiguous scratch first. */
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Work per parallel chunk, in elements: below this threads cost more than they save. */
#define GRAIN_ELEMS 16384

static int64_t grain_for(int64_t per_unit) {
    return per_unit >= GRAIN_ELEMS ? 1 : GRAIN_ELEMS / (per_unit > 0 ? per_unit : 1);
}

/* t itself (retained) when contiguous and of dtype dt, else a contiguous
 * scratch copy converted to dt. */
static kn_tensor *contig_as(kn_tensor *t, kn_dtype dt) {
    if (!t || (kn__is_contiguous(t) && t->dtype == dt)) return t ? kn_retain(t) : NULL;
    kn_tensor *o = kn__new(t->ndim, t->shape, dt, KN_CPU);
    if (!o) return NULL;
    kn_call c = {.op = KN_OP_COPY, .device = KN_CPU, .in = {t}, .out = {o}};
    if (kn__cpu_copy(&c) != KN_OK) {
        kn_release(o);
        return NULL;
    }
    return o;
}
static kn_tensor *contig(kn_tensor *t) { return t ? contig_as(t, t->dtype) : NULL; }

/* Element k of a 1-D tensor of any dtype and stride (small parameter vectors). */
static double vget(const kn_tensor *t, int64_t k) {
    return kn__load((const char *)kn__data(t) + (size_t)(k * t->stride[0]) * kn_dtype_size(t->dtype),
                    t->dtype);
}
static void vset(kn_tensor *t, int64_t k, double v) {
    kn__store((char *)kn__data(t) + (size_t)(k * t->stride[0]) * kn_dtype_size(t->dtype), t->dtype, v);
}

/* A 1-D tensor's values as doubles (def where t is NULL); malloc'd. */
static double *vload(const kn_tensor *t, int64_t n, double def) {
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (int64_t k = 0; k < n; k++) v[k] = t ? vget(t, k) : def;
    return v;
}

static kn_status oom(const char *op) { return kn__err(KN_ERR_OOM, "%s: out of memory for scratch", op); }

/* The hot float32 loops are compiled twice, the second time for AVX2, and
 * picked at run time (the build targets baseline x86-64). */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define KN_NN_AVX2 1
#define KN_INLINE static inline __attribute__((always_inline))
#define KN_TGT_AVX2 __attribute__((target("avx2,fma")))
static bool has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define KN_INLINE static inline
#endif
static bool cpu_avx2(void) {
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

/* ---- softmax ------------------------------------------------------------------------------
 * The tensor is viewed as [outer, D, inner] with the softmax dim in the middle. */
#define SM_BLOCK 64 /* inner columns handled together */

typedef struct {
    const char *a;  /* x (forward) or grad (backward) */
    const char *b;  /* NULL (forward) or y (backward) */
    char *out;
    kn_dtype dt;
    int64_t outer, D, inner, nblk;
    bool log, backward, avx2;
} sm_ctx;

/* Contiguous f32 rows [r0, r1) of length D (inner == 1). */
KN_INLINE void sm_rows_body(const float *A, const float *Y, float *O, int64_t r0, int64_t r1, int64_t D,
                            bool log_, bool backward) {
    for (int64_t r = r0; r < r1; r++) {
        const float *a = A + r * D;
        float *restrict o = O + r * D;
        double acc[LANES] = {0}, sum = 0;
        int64_t d = 0;
        if (!backward) {
            float m8[LANES], mx = -INFINITY;
            for (int j = 0; j < LANES; j++) m8[j] = -INFINITY;
            for (; d + LANES <= D; d += LANES)
                for (int j = 0; j < LANES; j++) m8[j] = a[d + j] > m8[j] ? a[d + j] : m8[j];
            for (; d < D; d++) mx = a[d] > mx ? a[d] : mx;
            for (int j = 0; j < LANES; j++) mx = m8[j] > mx ? m8[j] : mx;
            /* NaN needs no special case: exp(NaN - mx) makes the sum NaN. */
            for (d = 0; d < D; d++) o[d] = exp_f32(a[d] - mx);
            for (d = 0; d + LANES <= D; d += LANES)
                for (int j = 0; j < LANES; j++) acc[j] += o[d + j];
            for (; d < D; d++) sum += o[d];
            for (int j = 0; j < LANES; j++) sum += acc[j];
            if (log_) {
                float ls = (float)log(sum);
                for (d = 0; d < D; d++) o[d] = (a[d] - mx) - ls;
            } else {
                float inv = (float)(1.0 / sum);
                for (d = 0; d < D; d++) o[d] *= inv;
            }
        } else {
            const float *y = Y + r * D;
            /* log: gx = g - exp(y) * sum(g); else gx = y * (g - sum(g * y)). */
            for (; d + LANES <= D; d += LANES)
                for (int j = 0; j < LANES; j++) acc[j] += log_ ? (double)a[d + j] : (double)a[d + j] * y[d + j];
            for (; d < D; d++) sum += log_ ? (double)a[d] : (double)a[d] * y[d];
            for (int j = 0; j < LANES; j++) sum += acc[j];
            float fs = (float)sum;
            if (log_)
                for (d = 0; d < D; d++) o[d] = a[d] - exp_f32(y[d]) * fs;
            else
                for (d = 0; d < D; d++) o[d] = y[d] * (a[d] - fs);
        }
    }
}

static void sm_rows_plain(const float *a, const float *y, float *o, int64_t r0, int64_t r1, int64_t D, bool lg,
                          bool bw) {
    sm_rows_body(a, y, o, r0, r1, D, lg, bw);
}
#if defined(KN_NN_AVX2)
KN_TGT_AVX2 static void sm_rows_avx2(const float *a, const float *y, float *o, int64_t r0, int64_t r1, int64_t D,
                                     bool lg, bool bw) {
    sm_rows_body(a, y, o, r0, r1, D, lg, bw);
}
#endif

static void sm_rows_f32(const sm_ctx *s, int64_t r0, int64_t r1) {
    const float *a = (const float *)s->a, *y = (const float *)s->b;
    float *o = (float *)s->out;
#if defined(KN_NN_AVX2)
    if (s->avx2) {
        sm_rows_avx2(a, y, o, r0, r1, s->D, s->log, s->backward);
        return;
    }
#endif
    sm_rows_plain(a, y, o, r0, r1, s->D, s->log, s->backward);
}

/* f32 with inner > 1: a block of up to SM_BLOCK inner columns of one outer index. */
static void sm_block_f32(const sm_ctx *s, int64_t unit) {
    int64_t o = unit / s->nblk, j0 = unit % s->nblk * SM_BLOCK, inner = s->inner, D = s->D;
    int64_t nj = inner - j0 < SM_BLOCK ? inner - j0 : SM_BLOCK;
    int64_t base = o * D * inner + j0;
    const float *a = (const float *)s->a + base;
    const float *y = s->b ? (const float *)s->b + base : NULL;
    float *out = (float *)s->out + base;
    float mx[SM_BLOCK];
    double sum[SM_BLOCK];
    for (int64_t j = 0; j < nj; j++) mx[j] = -INFINITY, sum[j] = 0;
    if (!s->backward) {
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = 0; j < nj; j++) {
                float v = a[d * inner + j];
                mx[j] = v > mx[j] ? v : mx[j];
            }
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = 0; j < nj; j++) {
                float e = exp_f32(a[d * inner + j] - mx[j]);
                out[d * inner + j] = e; /* log_softmax overwrites it below */
                sum[j] += e;
            }
        if (s->log) {
            for (int64_t j = 0; j < nj; j++) sum[j] = log(sum[j]);
            for (int64_t d = 0; d < D; d++)
                for (int64_t j = 0; j < nj; j++)
                    out[d * inner + j] = (a[d * inner + j] - mx[j]) - (float)sum[j];
        } else {
            for (int64_t j = 0; j < nj; j++) sum[j] = 1.0 / sum[j];
            for (int64_t d = 0; d < D; d++)
                for (int64_t j = 0; j < nj; j++) out[d * inner + j] *= (float)sum[j];
        }
    } else {
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = 0; j < nj; j++)
                sum[j] += s->log ? a[d * inner + j] : (double)a[d * inner + j] * y[d * inner + j];
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = 0; j < nj; j++) {
                int64_t k = d * inner + j;
                out[k] = s->log ? a[k] - exp_f32(y[k]) * (float)sum[j] : y[k] * (a[k] - (float)sum[j]);
            }
    }
}

/* Any float dtype, through double: one (outer, inner) column. */
static void sm_column_any(const sm_ctx *s, int64_t unit) {
    int64_t o = unit / s->inner, j = unit % s->inner, D = s->D, inner = s->inner;
    size_t es = kn_dtype_size(s->dt);
    kn_dtype dt = s->dt;
#define AT(p, d) ((p) + (size_t)((o * D + (d)) * inner + j) * es)
    if (!s->backward) {
        double mx = -INFINITY, sum = 0;
        for (int64_t d = 0; d < D; d++) {
            double v = kn__load(AT(s->a, d), dt);
            mx = v > mx || v != v ? v : mx;
        }
        for (int64_t d = 0; d < D; d++) sum += exp(kn__load(AT(s->a, d), dt) - mx);
        double ls = log(sum);
        for (int64_t d = 0; d < D; d++) {
            double z = kn__load(AT(s->a, d), dt) - mx;
            kn__store(AT(s->out, d), dt, s->log ? z - ls : exp(z) / sum);
        }
    } else {
        double sum = 0;
        for (int64_t d = 0; d < D; d++) {
            double g = kn__load(AT(s->a, d), dt);
            sum += s->log ? g : g * kn__load(AT(s->b, d), dt);
        }
        for (int64_t d = 0; d < D; d++) {
            double g = kn__load(AT(s->a, d), dt), y = kn__load(AT(s->b, d), dt);
            kn__store(AT(s->out, d), dt, s->log ? g - exp(y) * sum : y * (g - sum));
        }
    }
#undef AT
}

static void sm_range(int64_t b, int64_t e, void *p) {
    const sm_ctx *s = p;
    if (s->dt != KN_F32) {
        for (int64_t u = b; u < e; u++) sm_column_any(s, u);
    } else if (s->inner == 1) {
        sm_rows_f32(s, b, e);
    } else {
        for (int64_t u = b; u < e; u++) sm_block_f32(s, u);
    }
}

static kn_status softmax_run(const kn_call *c, bool backward) {
    kn_tensor *out = c->out[0];
    int nd = out->ndim;
    int dim = nd ? (int)c->i[0] : 0;
    kn_tensor *a = contig(c->in[0]), *b = backward ? contig(c->in[1]) : NULL;
    if (!a || (backward && !b)) {
        kn_release(a);
        kn_release(b);
        return kn_error_code();
    }
    sm_ctx s = {.a = kn__data(a), .b = b ? kn__data(b) : NULL, .out = kn__data(out),
                .dt = out->dtype, .outer = 1, .D = nd ? out->shape[dim] : 1, .inner = 1,
                .log = c->i[1] != 0, .backward = backward, .avx2 = cpu_avx2()};
    for (int d = 0; d < dim; d++) s.outer *= out->shape[d];
    for (int d = dim + 1; d < nd; d++) s.inner *= out->shape[d];
    s.nblk = (s.inner + SM_BLOCK - 1) / SM_BLOCK;
    int64_t units, per_unit;
    if (s.dt != KN_F32) units = s.outer * s.inner, per_unit = s.D;
    else if (s.inner == 1) units = s.outer, per_unit = s.D;
    else units = s.outer * s.nblk, per_unit = s.D * (s.inner < SM_BLOCK ? s.inner : SM_BLOCK);
    if (s.D > 0) kn__parallel_for(units, grain_for(per_unit * 4), sm_range, &s);
    kn_release(a);
    kn_release(b);
    return KN_OK;
}

kn_status kn__cpu_softmax(const kn_call *c) { return softmax_run(c, false); }
kn_status kn__cpu_softmax_backward(const kn_call *c) { return softmax_run(c, true); }

/* ---- nll ----------------------------------------------------------------------------------- */
static const char *nll_name(const kn_call *c) { return c->i[1] ? "cross_entropy" : "nll_loss"; }

static int64_t target_at(const kn_tensor *t, int64_t n) {
    return kn__load_i64((const char *)kn__data(t) + (size_t)(n * t->stride[0]) * kn_dtype_size(t->dtype),
                        t->dtype);
}

static double lp_at(const kn_tensor *lp, int64_t n, int64_t k) {
    return kn__load((const char *)kn__data(lp) +
                        (size_t)(n * lp->stride[0] + k * lp->stride[1]) * kn_dtype_size(lp->dtype),
                    lp->dtype);
}

/* Checks every target; an error names the first bad one. */
static kn_status nll_check_targets(const kn_call *c, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(c->in[1], n);
        if (t != c->i[0] && (t < 0 || t >= C))
            return kn__err(KN_ERR_INVALID, "%s: target %lld is out of range for %lld classes",
                           nll_name(c), (long long)t, (long long)C);
    }
    return KN_OK;
}

kn_status kn__cpu_nll(const kn_call *c) {
    const kn_tensor *lp = c->in[0], *tg = c->in[1], *w = c->in[2];
    kn_tensor *loss = c->out[0], *wout = c->out[1];
    int64_t N = lp->shape[0], C = lp->shape[1];
    double s = c->f[0];
    kn_status st = nll_check_targets(c, N, C);
    if (st != KN_OK) return st;
    double *wv = vload(w, C, 1.0);
    if (!wv) return oom(nll_name(c));
    bool f32_rows = lp->dtype == KN_F32 && lp->stride[1] == 1;
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        double l = 0, rw = 0;
        if (t != c->i[0]) {
            rw = wv[t];
            l = -(1 - s) * wv[t] * lp_at(lp, n, t);
            if (s != 0) {
                double acc = 0;
                if (f32_rows) {
                    const float *row = (const float *)kn__data(lp) + n * lp->stride[0];
                    for (int64_t k = 0; k < C; k++) acc += wv[k] * row[k];
                } else {
                    for (int64_t k = 0; k < C; k++) acc += wv[k] * lp_at(lp, n, k);
                }
                l -= s / (double)C * acc;
            }
        }
        vset(loss, n, l);
        if (wout) vset(wout, n, rw);
    }
    free(wv);
    return KN_OK;
}

kn_status kn__cpu_nll_backward(const kn_call *c) {
    const kn_tensor *g = c->in[0], *tg = c->in[1], *w = c->in[2];
    kn_tensor *out = c->out[0];
    int64_t N = out->shape[0], C = out->shape[1];
    double s = c->f[0];
    kn_status st = nll_check_targets(c, N, C);
    if (st != KN_OK) return st;
    double *wv = vload(w, C, 1.0);
    if (!wv) return oom(nll_name(c));
    size_t es = kn_dtype_size(out->dtype);
    char *o = kn__data(out);
    memset(o, 0, (size_t)(N * C) * es); /* all-zero bits are 0.0 in every float dtype */
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        if (t == c->i[0]) continue;
        double gl = vget(g, n);
        char *row = o + (size_t)(n * C) * es;
        if (s != 0) {
            double k = -gl * s / (double)C;
            if (out->dtype == KN_F32)
                for (int64_t j = 0; j < C; j++) ((float *)row)[j] = (float)(k * wv[j]);
            else
                for (int64_t j = 0; j < C; j++) kn__store(row + (size_t)j * es, out->dtype, k * wv[j]);
        }
        double at = s != 0 ? kn__load(row + (size_t)t * es, out->dtype) : 0;
        kn__store(row + (size_t)t * es, out->dtype, at - gl * (1 - s) * wv[t]);
    }
    free(wv);
    return KN_OK;
}

/* ---- batch norm ------------------------------------------------------------------------------
 * x is [N, C, L] (contiguous after contig()). For L == 1 the channels are the
 * contiguous dim: each task owns a range of channels and streams every row
 * through per-channel accumulators (long, vectorizable inner loops); for
 * L > 1 work is split by channel. */
#define BN_BLOCK 16 /* channels per task unit (L == 1) */

/* Forward (g NULL): s1 = sum(x - K), s2 = sum((x - K)^2), with K the first
 * row, which keeps the one-pass variance accurate. Backward: s1 = sum(g),
 * s2 = sum(g * (x - K)) with K the mean. Channels [c0, c1) of [N, C], in
 * stripes whose accumulators live on this thread's stack (no false sharing).
 * Four rows are combined in float (shifted values, so exact enough) before
 * each double accumulation: that halves accumulator traffic and conversions. */
#define BN_STRIPE 256
KN_INLINE void bn_rows_stats_body(const float *x, const float *g, int64_t N, int64_t C, int64_t c0,
                                  int64_t c1, const float *K, double *s1, double *s2) {
    double a1[BN_STRIPE], a2[BN_STRIPE];
    for (int64_t b = c0; b < c1; b += BN_STRIPE) {
        int64_t nc = c1 - b < BN_STRIPE ? c1 - b : BN_STRIPE;
        const float *k = K + b;
        for (int64_t c = 0; c < nc; c++) a1[c] = a2[c] = 0;
        int64_t n = 0;
        for (; n + 4 <= N; n += 4) {
            const float *x0 = x + n * C + b, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
            if (!g) {
                for (int64_t c = 0; c < nc; c++) {
                    float d0 = x0[c] - k[c], d1 = x1[c] - k[c], d2 = x2[c] - k[c], d3 = x3[c] - k[c];
                    a1[c] += (double)((d0 + d1) + (d2 + d3));
                    a2[c] += (double)((d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3));
                }
            } else {
                const float *g0 = g + n * C + b, *g1 = g0 + C, *g2 = g1 + C, *g3 = g2 + C;
                for (int64_t c = 0; c < nc; c++) {
                    a1[c] += (double)((g0[c] + g1[c]) + (g2[c] + g3[c]));
                    a2[c] += (double)((g0[c] * (x0[c] - k[c]) + g1[c] * (x1[c] - k[c])) +
                                      (g2[c] * (x2[c] - k[c]) + g3[c] * (x3[c] - k[c])));
                }
            }
        }
        for (; n < N; n++) {
            const float *xr = x + n * C + b, *gr = g ? g + n * C + b : NULL;
            for (int64_t c = 0; c < nc; c++) {
                float d = xr[c] - k[c], gv = gr ? gr[c] : d;
                a1[c] += (double)gv;
                a2[c] += (double)(gv * d);
            }
        }
        for (int64_t c = 0; c < nc; c++) s1[b + c] = a1[c], s2[b + c] = a2[c];
    }
}

/* Rows [n0, n1) of [N, C]: y = (x - m) * k1 + k0 (forward, g NULL) or
 * k1 * (g - k0 - (x - m) * k2) (backward). */
KN_INLINE void bn_rows_apply_body(const float *x, const float *g, float *y, int64_t n0, int64_t n1,
                                  int64_t C, const float *m, const float *k0, const float *k1,
                                  const float *k2) {
    for (int64_t n = n0; n < n1; n++) {
        const float *xr = x + n * C;
        float *restrict yr = y + n * C;
        if (!g) {
            for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m[c]) * k1[c] + k0[c];
        } else {
            const float *gr = g + n * C;
            for (int64_t c = 0; c < C; c++) yr[c] = k1[c] * (gr[c] - k0[c] - (xr[c] - m[c]) * k2[c]);
        }
    }
}

static void bn_rows_stats_plain(const float *x, const float *g, int64_t N, int64_t C, int64_t c0, int64_t c1,
                                const float *K, double *s1, double *s2) {
    bn_rows_stats_body(x, g, N, C, c0, c1, K, s1, s2);
}
static void bn_rows_apply_plain(const float *x, const float *g, float *y, int64_t n0, int64_t n1, int64_t C,
                                const float *m, const float *k0, const float *k1, const float *k2) {
    bn_rows_apply_body(x, g, y, n0, n1, C, m, k0, k1, k2);
}
#if defined(KN_NN_AVX2)
KN_TGT_AVX2 static void bn_rows_stats_avx2(const float *x, const float *g, int64_t N, int64_t C, int64_t c0,
                                           int64_t c1, const float *K, double *s1, double *s2) {
    bn_rows_stats_body(x, g, N, C, c0, c1, K, s1, s2);
}
KN_TGT_AVX2 static void bn_rows_apply_avx2(const float *x, const float *g, float *y, int64_t n0, int64_t n1,
                                           int64_t C, const float *m, const float *k0, const float *k1,
                                           const float *k2) {
    bn_rows_apply_body(x, g, y, n0, n1, C, m, k0, k1, k2);
}
#endif

typedef struct {
    int64_t N, C, L;
    kn_dtype dt;
    bool avx2;
    const char *x, *g; /* g: grad of y (backward), else NULL */
    char *y;           /* y (forward) or grad x (backward) */
    const double *shift; /* K of the statistics pass */
    const float *fshift; /* the same as floats (f32, L == 1) */
    double *s1, *s2;     /* per-channel sums */
    const double *mean;
    /* Elementwise pass: out = (x - mean) * k1 + k0 (forward), or
     * k1 * (g - k0 - (x - mean) * k2) (backward). */
    const double *k0, *k1, *k2;
    const float *fmean, *fk0, *fk1, *fk2; /* float copies for the f32 loops */
} bn_ctx;

/* Units are channel blocks (f32, L == 1) or channels. */
static void bn_stats_range(int64_t b, int64_t e, void *p) {
    const bn_ctx *s = p;
    int64_t N = s->N, C = s->C, L = s->L;
    if (s->dt == KN_F32 && L == 1) {
        int64_t c0 = b * BN_BLOCK, c1 = e * BN_BLOCK < C ? e * BN_BLOCK : C;
        const float *x = (const float *)s->x, *g = (const float *)s->g;
#if defined(KN_NN_AVX2)
        if (s->avx2) {
            bn_rows_stats_avx2(x, g, N, C, c0, c1, s->fshift, s->s1, s->s2);
            return;
        }
#endif
        bn_rows_stats_plain(x, g, N, C, c0, c1, s->fshift, s->s1, s->s2);
        return;
    }
    size_t es = kn_dtype_size(s->dt);
    for (int64_t c = b; c < e; c++) {
        double K = s->shift[c], a1[LANES] = {0}, a2[LANES] = {0};
        for (int64_t n = 0; n < N; n++) {
            int64_t base = (n * C + c) * L, l = 0;
            if (s->dt == KN_F32) {
                const float *x = (const float *)s->x + base, *g = s->g ? (const float *)s->g + base : NULL;
                for (; l + LANES <= L; l += LANES)
                    for (int j = 0; j < LANES; j++) {
                        double d = (double)x[l + j] - K;
                        a1[j] += g ? g[l + j] : d;
                        a2[j] += g ? g[l + j] * d : d * d;
                    }
            }
            for (; l < L; l++) {
                double d = kn__load(s->x + (size_t)(base + l) * es, s->dt) - K;
                double gv = s->g ? kn__load(s->g + (size_t)(base + l) * es, s->dt) : d;
                a1[0] += gv;
                a2[0] += gv * d;
            }
        }
        double t1 = 0, t2 = 0;
        for (int j = 0; j < LANES; j++) t1 += a1[j], t2 += a2[j];
        s->s1[c] = t1;
        s->s2[c] = t2;
    }
}

/* The elementwise pass; units are rows n (L == 1) or (n, c) pairs. */
static void bn_apply_range(int64_t b, int64_t e, void *p) {
    const bn_ctx *s = p;
    int64_t C = s->C, L = s->L;
    if (s->dt == KN_F32) {
        const float *x = (const float *)s->x, *g = (const float *)s->g;
        float *y = (float *)s->y;
        const float *m = s->fmean, *k0 = s->fk0, *k1 = s->fk1, *k2 = s->fk2;
        if (L == 1) {
#if defined(KN_NN_AVX2)
            if (s->avx2) {
                bn_rows_apply_avx2(x, g, y, b, e, C, m, k0, k1, k2);
                return;
            }
#endif
            bn_rows_apply_plain(x, g, y, b, e, C, m, k0, k1, k2);
            return;
        }
        for (int64_t u = b; u < e; u++) {
            int64_t c = u % C;
            const float *xr = x + u * L;
            float *yr = y + u * L;
            float mc = m[c], a0 = k0[c], a1 = k1[c], a2 = k2[c];
            if (!g) {
                for (int64_t l = 0; l < L; l++) yr[l] = (xr[l] - mc) * a1 + a0;
            } else {
                const float *gr = g + u * L;
                for (int64_t l = 0; l < L; l++) yr[l] = a1 * (gr[l] - a0 - (xr[l] - mc) * a2);
            }
        }
        return;
    }
    size_t es = kn_dtype_size(s->dt);
    int64_t per = L == 1 ? C : L; /* elements per unit */
    for (int64_t u = b; u < e; u++) {
        for (int64_t k = 0; k < per; k++) {
            int64_t idx = u * per + k, c = L == 1 ? k : u % C;
            double xv = kn__load(s->x + (size_t)idx * es, s->dt) - s->mean[c], v;
            if (!s->g) v = xv * s->k1[c] + s->k0[c];
            else v = s->k1[c] * (kn__load(s->g + (size_t)idx * es, s->dt) - s->k0[c] - xv * s->k2[c]);
            kn__store(s->y + (size_t)idx * es, s->dt, v);
        }
    }
}

static bool bn_stats(bn_ctx *s) {
    int64_t per = s->N * s->L, C = s->C;
    if (s->dt != KN_F32 || s->L != 1) {
        kn__parallel_for(C, grain_for(per), bn_stats_range, s);
        return true;
    }
    float *f = malloc((size_t)(C > 0 ? C : 1) * sizeof *f);
    if (!f) return false;
    for (int64_t c = 0; c < C; c++) f[c] = (float)s->shift[c];
    s->fshift = f;
    kn__parallel_for((C + BN_BLOCK - 1) / BN_BLOCK, grain_for(per * BN_BLOCK), bn_stats_range, s);
    /* Backward wants sum(g * (x - mean)); the float shift differs from the mean. */
    if (s->g)
        for (int64_t c = 0; c < C; c++) s->s2[c] += ((double)f[c] - s->shift[c]) * s->s1[c];
    s->fshift = NULL;
    free(f);
    return true;
}

static void bn_apply(bn_ctx *s) {
    if (s->L == 1) kn__parallel_for(s->N, grain_for(s->C), bn_apply_range, s);
    else kn__parallel_for(s->N * s->C, grain_for(s->L), bn_apply_range, s);
}

/* mean, k0, k1, k2 of the context as floats (one allocation); NULL on OOM. */
static float *bn_floats(bn_ctx *s) {
    int64_t C = s->C;
    float *f = malloc((size_t)(4 * (C > 0 ? C : 1)) * sizeof *f);
    if (!f) return NULL;
    for (int64_t c = 0; c < C; c++) {
        f[c] = (float)s->mean[c];
        f[C + c] = (float)s->k0[c];
        f[2 * C + c] = (float)s->k1[c];
        f[3 * C + c] = s->k2 ? (float)s->k2[c] : 0;
    }
    s->fmean = f, s->fk0 = f + C, s->fk1 = f + 2 * C, s->fk2 = f + 3 * C;
    return f;
}

kn_status kn__cpu_batch_norm(const kn_call *c) {
    kn_tensor *x = contig(c->in[0]);
    if (!x) return kn_error_code();
    const kn_tensor *w = c->in[1], *bias = c->in[2];
    kn_tensor *rm = c->in[3], *rv = c->in[4];
    bool training = c->i[0] != 0;
    double momentum = c->f[0], eps = c->f[1];
    bn_ctx s = {.N = x->shape[0], .C = x->shape[1], .L = x->shape[2], .dt = x->dtype,
                .avx2 = cpu_avx2(), .x = kn__data(x), .y = kn__data(c->out[0])};
    int64_t C = s.C, M = s.N * s.L;
    double *buf = malloc((size_t)(7 * (C > 0 ? C : 1)) * sizeof *buf);
    float *fbuf = NULL;
    if (!buf) {
        kn_release(x);
        return oom("batch_norm");
    }
    double *mean = buf, *invstd = buf + C, *k0 = buf + 2 * C, *k1 = buf + 3 * C, *shift = buf + 6 * C;
    s.s1 = buf + 4 * C;
    s.s2 = buf + 5 * C;
    if (training) {
        /* Each channel's first value is its shift. */
        for (int64_t ch = 0; ch < C; ch++)
            shift[ch] = M ? kn__load(s.x + (size_t)(ch * s.L) * kn_dtype_size(s.dt), s.dt) : 0;
        s.shift = shift;
        if (!bn_stats(&s)) {
            free(buf);
            kn_release(x);
            return oom("batch_norm");
        }
        for (int64_t ch = 0; ch < C; ch++) {
            double dm = s.s1[ch] / (double)M, var = s.s2[ch] / (double)M - dm * dm;
            if (var < 0) var = 0;
            mean[ch] = shift[ch] + dm;
            invstd[ch] = 1 / sqrt(var + eps);
            /* Running stats take the unbiased variance, as in PyTorch. */
            if (rm) vset(rm, ch, (1 - momentum) * vget(rm, ch) + momentum * mean[ch]);
            if (rv)
                vset(rv, ch, (1 - momentum) * vget(rv, ch) +
                                 momentum * (M > 1 ? var * (double)M / (double)(M - 1) : NAN));
        }
    } else {
        for (int64_t ch = 0; ch < C; ch++) {
            mean[ch] = vget(rm, ch);
            invstd[ch] = 1 / sqrt(vget(rv, ch) + eps);
        }
    }
    for (int64_t ch = 0; ch < C; ch++) {
        k1[ch] = invstd[ch] * (w ? vget(w, ch) : 1);
        k0[ch] = bias ? vget(bias, ch) : 0;
    }
    s.mean = mean, s.k0 = k0, s.k1 = k1;
    kn_status st = KN_OK;
    if (s.dt == KN_F32 && !(fbuf = bn_floats(&s))) st = oom("batch_norm");
    if (st == KN_OK) {
        bn_apply(&s);
        for (int64_t ch = 0; ch < C; ch++) {
            if (c->out[1]) vset(c->out[1], ch, mean[ch]);
            if (c->out[2]) vset(c->out[2], ch, invstd[ch]);
        }
    }
    free(fbuf);
    free(buf);
    kn_release(x);
    return st;
}

kn_status kn__cpu_batch_norm_backward(const kn_call *c) {
    kn_tensor *g = contig(c->in[0]), *x = g ? contig(c->in[1]) : NULL;
    if (!x) {
        kn_release(g);
        return kn_error_code();
    }
    const kn_tensor *w = c->in[2];
    bool training = c->i[0] != 0;
    bn_ctx s = {.N = x->shape[0], .C = x->shape[1], .L = x->shape[2], .dt = x->dtype,
                .avx2 = cpu_avx2(), .x = kn__data(x), .g = kn__data(g)};
    int64_t C = s.C;
    double M = (double)(s.N * s.L);
    double *buf = malloc((size_t)(7 * (C > 0 ? C : 1)) * sizeof *buf);
    float *fbuf = NULL;
    kn_status st = buf ? KN_OK : oom("batch_norm");
    if (st == KN_OK) {
        double *mean = buf, *k0 = buf + C, *k1 = buf + 2 * C, *k2 = buf + 3 * C, *invstd = buf + 4 * C;
        s.s1 = buf + 5 * C;
        s.s2 = buf + 6 * C;
        for (int64_t ch = 0; ch < C; ch++) {
            mean[ch] = vget(c->in[3], ch);
            invstd[ch] = vget(c->in[4], ch);
        }
        s.mean = s.shift = mean;
        if (!bn_stats(&s)) st = oom("batch_norm"); /* s1 = sum(g), s2 = sum(g * (x - mean)) */
        for (int64_t ch = 0; st == KN_OK && ch < C; ch++) {
            double is = invstd[ch];
            k1[ch] = is * (w ? vget(w, ch) : 1);
            /* Training: the batch statistics depend on x too. */
            k0[ch] = training ? s.s1[ch] / M : 0;
            k2[ch] = training ? is * is * s.s2[ch] / M : 0;
            if (c->out[1]) vset(c->out[1], ch, s.s2[ch] * is);
            if (c->out[2]) vset(c->out[2], ch, s.s1[ch]);
        }
        s.k0 = k0, s.k1 = k1, s.k2 = k2;
        if (st == KN_OK && c->out[0]) {
            s.y = kn__data(c->out[0]);
            if (s.dt == KN_F32 && !(fbuf = bn_floats(&s))) st = oom("batch_norm");
            else bn_apply(&s);
        }
    }
    free(fbuf);
    free(buf);
    kn_release(g);
    kn_release(x);
    return st;
}

/* ---- layer norm ------------------------------------------------------------------------------
 * x viewed as [R, H]; statistics per row. */
typedef struct {
    int64_t R, H;
    kn_dtype dt;
    bool avx2;
    const char *x, *g, *w, *b; /* w, b: contiguous [H] of x's dtype or NULL */
    char *y;
    double eps;
    double *mean, *invstd;
    double *gw, *gb;
} ln_ctx;

static inline double ld(const char *p, int64_t k, kn_dtype dt) {
    return dt == KN_F32 ? ((const float *)p)[k] : kn__load(p + (size_t)k * kn_dtype_size(dt), dt);
}
static inline void st(char *p, int64_t k, kn_dtype dt, double v) {
    if (dt == KN_F32) ((float *)p)[k] = (float)v;
    else kn__store(p + (size_t)k * kn_dtype_size(dt), dt, v);
}

/* f32 rows [r0, r1): two-pass statistics in double (the row is in cache). */
KN_INLINE void ln_rows_f32_body(const float *X, const float *w, const float *b, float *Y, int64_t r0, int64_t r1,
                                int64_t H, double eps, double *mean, double *invstd) {
    for (int64_t r = r0; r < r1; r++) {
        const float *x = X + r * H;
        float *restrict y = Y + r * H;
        double acc[LANES] = {0}, sum = 0, sq = 0;
        int64_t k = 0;
        for (; k + LANES <= H; k += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += x[k + j];
        for (; k < H; k++) sum += x[k];
        for (int j = 0; j < LANES; j++) sum += acc[j], acc[j] = 0;
        double m = sum / (double)H;
        for (k = 0; k + LANES <= H; k += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += (x[k + j] - m) * (x[k + j] - m);
        for (; k < H; k++) sq += (x[k] - m) * (x[k] - m);
        for (int j = 0; j < LANES; j++) sq += acc[j];
        double is = 1 / sqrt(sq / (double)H + eps);
        float fm = (float)m, fi = (float)is;
        if (w && b) for (k = 0; k < H; k++) y[k] = (x[k] - fm) * fi * w[k] + b[k];
        else if (w) for (k = 0; k < H; k++) y[k] = (x[k] - fm) * fi * w[k];
        else if (b) for (k = 0; k < H; k++) y[k] = (x[k] - fm) * fi + b[k];
        else for (k = 0; k < H; k++) y[k] = (x[k] - fm) * fi;
        mean[r] = m;
        invstd[r] = is;
    }
}

/* f32 grad x of rows [r0, r1): gh = g * w,
 * gx = invstd * (gh - mean(gh) - xhat * mean(gh * xhat)). */
KN_INLINE void ln_bwd_f32_body(const float *X, const float *G, const float *w, float *Y, int64_t r0, int64_t r1,
                               int64_t H, const double *mean, const double *invstd) {
    for (int64_t r = r0; r < r1; r++) {
        const float *x = X + r * H, *g = G + r * H;
        float *restrict y = Y + r * H;
        float fm = (float)mean[r], fi = (float)invstd[r];
        double a1[LANES] = {0}, a2[LANES] = {0}, s1 = 0, s2 = 0;
        int64_t k = 0;
        for (; k + LANES <= H; k += LANES)
            for (int j = 0; j < LANES; j++) {
                float gh = w ? g[k + j] * w[k + j] : g[k + j];
                a1[j] += gh;
                a2[j] += gh * ((x[k + j] - fm) * fi);
            }
        for (; k < H; k++) {
            float gh = w ? g[k] * w[k] : g[k];
            s1 += gh;
            s2 += gh * ((x[k] - fm) * fi);
        }
        for (int j = 0; j < LANES; j++) s1 += a1[j], s2 += a2[j];
        float c1 = (float)(s1 / (double)H), c2 = (float)(s2 / (double)H);
        if (w)
            for (k = 0; k < H; k++) y[k] = fi * (g[k] * w[k] - c1 - (x[k] - fm) * fi * c2);
        else
            for (k = 0; k < H; k++) y[k] = fi * (g[k] - c1 - (x[k] - fm) * fi * c2);
    }
}

static void ln_rows_f32_plain(const float *x, const float *w, const float *b, float *y, int64_t r0, int64_t r1,
                              int64_t H, double eps, double *mean, double *invstd) {
    ln_rows_f32_body(x, w, b, y, r0, r1, H, eps, mean, invstd);
}
static void ln_bwd_f32_plain(const float *x, const float *g, const float *w, float *y, int64_t r0, int64_t r1,
                             int64_t H, const double *mean, const double *invstd) {
    ln_bwd_f32_body(x, g, w, y, r0, r1, H, mean, invstd);
}
#if defined(KN_NN_AVX2)
KN_TGT_AVX2 static void ln_rows_f32_avx2(const float *x, const float *w, const float *b, float *y, int64_t r0,
                                         int64_t r1, int64_t H, double eps, double *mean, double *invstd) {
    ln_rows_f32_body(x, w, b, y, r0, r1, H, eps, mean, invstd);
}
KN_TGT_AVX2 static void ln_bwd_f32_avx2(const float *x, const float *g, const float *w, float *y, int64_t r0,
                                        int64_t r1, int64_t H, const double *mean, const double *invstd) {
    ln_bwd_f32_body(x, g, w, y, r0, r1, H, mean, invstd);
}
#endif

static void ln_fwd_range(int64_t b, int64_t e, void *p) {
    ln_ctx *s = p;
    int64_t H = s->H;
    size_t es = kn_dtype_size(s->dt);
    if (s->dt == KN_F32) {
        const float *x = (const float *)s->x, *w = (const float *)s->w, *bb = (const float *)s->b;
#if defined(KN_NN_AVX2)
        if (s->avx2) {
            ln_rows_f32_avx2(x, w, bb, (float *)s->y, b, e, H, s->eps, s->mean, s->invstd);
            return;
        }
#endif
        ln_rows_f32_plain(x, w, bb, (float *)s->y, b, e, H, s->eps, s->mean, s->invstd);
        return;
    }
    for (int64_t r = b; r < e; r++) {
        const char *xr = s->x + (size_t)(r * H) * es;
        char *yr = s->y + (size_t)(r * H) * es;
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < H; k++) sum += ld(xr, k, s->dt);
        double m = sum / (double)H;
        for (int64_t k = 0; k < H; k++) {
            double d = ld(xr, k, s->dt) - m;
            sq += d * d;
        }
        double is = 1 / sqrt(sq / (double)H + s->eps);
        for (int64_t k = 0; k < H; k++) {
            double v = (ld(xr, k, s->dt) - m) * is;
            if (s->w) v *= ld(s->w, k, s->dt);
            if (s->b) v += ld(s->b, k, s->dt);
            st(yr, k, s->dt, v);
        }
        s->mean[r] = m;
        s->invstd[r] = is;
    }
}

kn_status kn__cpu_layer_norm(const kn_call *c) {
    int64_t H = c->i[0];
    kn_tensor *x = contig(c->in[0]);
    kn_tensor *w = x ? contig_as(c->in[1], x->dtype) : NULL, *b = x ? contig_as(c->in[2], x->dtype) : NULL;
    if (!x || (c->in[1] && !w) || (c->in[2] && !b)) {
        kn_release(x), kn_release(w), kn_release(b);
        return kn_error_code();
    }
    int64_t numel = kn__numel_shape(x->ndim, x->shape);
    ln_ctx s = {.R = H ? numel / H : 0, .H = H, .dt = x->dtype, .x = kn__data(x),
                .w = w ? kn__data(w) : NULL, .b = b ? kn__data(b) : NULL, .y = kn__data(c->out[0]),
                .eps = c->f[0], .avx2 = cpu_avx2()};
    double *buf = malloc((size_t)(2 * s.R + 1) * sizeof *buf);
    kn_status status = KN_OK;
    if (!buf) {
        status = oom("layer_norm");
    } else {
        s.mean = buf;
        s.invstd = buf + s.R;
        kn__parallel_for(s.R, grain_for(3 * H), ln_fwd_range, &s);
        for (int64_t r = 0; r < s.R; r++) {
            if (c->out[1]) vset(c->out[1], r, s.mean[r]);
            if (c->out[2]) vset(c->out[2], r, s.invstd[r]);
        }
    }
    free(buf);
    kn_release(x), kn_release(w), kn_release(b);
    return status;
}

/* grad x per row (other dtypes through double; the f32 loops above). */
static void ln_bwd_rows(int64_t b, int64_t e, void *p) {
    ln_ctx *s = p;
    int64_t H = s->H;
    size_t es = kn_dtype_size(s->dt);
    if (s->dt == KN_F32) {
        const float *x = (const float *)s->x, *g = (const float *)s->g, *w = (const float *)s->w;
#if defined(KN_NN_AVX2)
        if (s->avx2) {
            ln_bwd_f32_avx2(x, g, w, (float *)s->y, b, e, H, s->mean, s->invstd);
            return;
        }
#endif
        ln_bwd_f32_plain(x, g, w, (float *)s->y, b, e, H, s->mean, s->invstd);
        return;
    }
    for (int64_t r = b; r < e; r++) {
        const char *xr = s->x + (size_t)(r * H) * es, *gr = s->g + (size_t)(r * H) * es;
        char *yr = s->y + (size_t)(r * H) * es;
        double m = s->mean[r], is = s->invstd[r], a1 = 0, a2 = 0;
        for (int64_t k = 0; k < H; k++) {
            double gh = ld(gr, k, s->dt) * (s->w ? ld(s->w, k, s->dt) : 1);
            a1 += gh;
            a2 += gh * (ld(xr, k, s->dt) - m) * is;
        }
        a1 /= (double)H;
        a2 /= (double)H;
        for (int64_t k = 0; k < H; k++) {
            double gh = ld(gr, k, s->dt) * (s->w ? ld(s->w, k, s->dt) : 1);
            st(yr, k, s->dt, is * (gh - a1 - (ld(xr, k, s->dt) - m) * is * a2));
        }
    }
}

/* grad weight / bias: column sums over rows, in blocks of columns. */
#define LN_BLOCK 64
static void ln_bwd_cols(int64_t b, int64_t e, void *p) {
    ln_ctx *s = p;
    int64_t H = s->H;
    for (int64_t u = b; u < e; u++) {
        int64_t k0 = u * LN_BLOCK, nk = H - k0 < LN_BLOCK ? H - k0 : LN_BLOCK;
        double aw[LN_BLOCK] = {0}, ab[LN_BLOCK] = {0};
        for (int64_t r = 0; r < s->R; r++) {
            double m = s->mean[r], is = s->invstd[r];
            if (s->dt == KN_F32) {
                const float *x = (const float *)s->x + r * H + k0, *g = (const float *)s->g + r * H + k0;
                for (int64_t j = 0; j < nk; j++) {
                    aw[j] += g[j] * ((x[j] - m) * is);
                    ab[j] += g[j];
                }
            } else {
                size_t es = kn_dtype_size(s->dt);
                const char *x = s->x + (size_t)(r * H + k0) * es, *g = s->g + (size_t)(r * H + k0) * es;
                for (int64_t j = 0; j < nk; j++) {
                    double gv = ld(g, j, s->dt);
                    aw[j] += gv * (ld(x, j, s->dt) - m) * is;
                    ab[j] += gv;
                }
            }
        }
        for (int64_t j = 0; j < nk; j++) {
            if (s->gw) s->gw[k0 + j] = aw[j];
            if (s->gb) s->gb[k0 + j] = ab[j];
        }
    }
}

kn_status kn__cpu_layer_norm_backward(const kn_call *c) {
    kn_tensor *g = contig(c->in[0]), *x = g ? contig(c->in[1]) : NULL;
    kn_tensor *w = x ? contig_as(c->in[2], x->dtype) : NULL;
    if (!x || (c->in[2] && !w)) {
        kn_release(g), kn_release(x), kn_release(w);
        return kn_error_code();
    }
    int64_t R = c->in[3]->shape[0], H = R ? kn__numel_shape(x->ndim, x->shape) / R : 0;
    if (!R && (c->out[1] || c->out[2])) { /* no rows: H from the weight grads */
        kn_tensor *o = c->out[1] ? c->out[1] : c->out[2];
        H = kn__numel_shape(o->ndim, o->shape);
    }
    ln_ctx s = {.R = R, .H = H, .dt = x->dtype, .x = kn__data(x), .g = kn__data(g),
                .w = w ? kn__data(w) : NULL, .avx2 = cpu_avx2()};
    double *buf = malloc((size_t)(2 * R + 2 * H + 1) * sizeof *buf);
    kn_status status = buf ? KN_OK : oom("layer_norm");
    if (status == KN_OK) {
        s.mean = buf;
        s.invstd = buf + R;
        for (int64_t r = 0; r < R; r++) {
            s.mean[r] = vget(c->in[3], r);
            s.invstd[r] = vget(c->in[4], r);
        }
        if (c->out[0]) {
            s.y = kn__data(c->out[0]);
            kn__parallel_for(R, grain_for(3 * H), ln_bwd_rows, &s);
        }
        if (c->out[1] || c->out[2]) {
            s.gw = c->out[1] ? buf + 2 * R : NULL;
            s.gb = c->out[2] ? buf + 2 * R + H : NULL;
            kn__parallel_for((H + LN_BLOCK - 1) / LN_BLOCK, grain_for(R * LN_BLOCK), ln_bwd_cols, &s);
            for (int64_t k = 0; k < H; k++) {
                if (s.gw) vset(c->out[1], k, s.gw[k]);
                if (s.gb) vset(c->out[2], k, s.gb[k]);
            }
        }
    }
    free(buf);
    kn_release(g), kn_release(x), kn_release(w);
    return status;
}
