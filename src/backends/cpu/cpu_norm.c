/* CPU kernels for batch norm and layer norm, forward and backward. */
#include "cpu_nn.h"

/* ---- batch norm ------------------------------------------------------------------------------
 * x is [N, C, L] (contiguous after kn__cpu_dense). For L == 1 the channels are the
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

/* Dropout of t (contiguous) into out (may be t itself): KN_OP_DROPOUT's mask. */
static void bn_dropout(const kn_operand *t, const kn_operand *out, double p, int64_t seed, int64_t offset) {
    kn_dropout_args d = {.out = *out, .x = *t, .p = p, .seed = seed, .offset = offset};
    kn__cpu_dropout(0, &d);
}

kn_status kn__cpu_batch_norm(int device, const void *args) {
    (void)device;
    const kn_batch_norm_args *a = args;
    kn_dense xd;
    if (kn__cpu_dense("batch_norm", &xd, &a->x, a->x.dtype) != KN_OK) return kn_error_code();
    const kn_operand *x = &xd.v, *w = &a->weight, *bias = &a->bias, *rm = &a->running_mean,
                     *rv = &a->running_var;
    bool training = a->training != 0;
    double momentum = a->momentum, eps = a->eps;
    bn_ctx s = {.N = x->shape[0], .C = x->shape[1], .L = x->shape[2], .dt = x->dtype,
                .avx2 = cpu_avx2(), .x = x->data, .y = a->y.data};
    int64_t C = s.C, M = s.N * s.L;
    double *buf = malloc((size_t)(7 * (C > 0 ? C : 1)) * sizeof *buf);
    float *fbuf = NULL;
    if (!buf) {
        kn__cpu_dense_free(&xd);
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
            kn__cpu_dense_free(&xd);
            return oom("batch_norm");
        }
        for (int64_t ch = 0; ch < C; ch++) {
            double dm = s.s1[ch] / (double)M, var = s.s2[ch] / (double)M - dm * dm;
            if (var < 0) var = 0;
            mean[ch] = shift[ch] + dm;
            invstd[ch] = 1 / sqrt(var + eps);
            /* Running stats take the unbiased variance, as in PyTorch. */
            if (kn_operand_present(rm)) vset(rm, ch, (1 - momentum) * vget(rm, ch) + momentum * mean[ch]);
            if (kn_operand_present(rv))
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
        k1[ch] = invstd[ch] * (kn_operand_present(w) ? vget(w, ch) : 1);
        k0[ch] = kn_operand_present(bias) ? vget(bias, ch) : 0;
    }
    s.mean = mean, s.k0 = k0, s.k1 = k1;
    kn_status st = KN_OK;
    if (s.dt == KN_F32 && !(fbuf = bn_floats(&s))) st = oom("batch_norm");
    if (st == KN_OK) {
        bn_apply(&s);
        if (a->p > 0) bn_dropout(&a->y, &a->y, a->p, a->seed, a->offset);
        for (int64_t ch = 0; ch < C; ch++) {
            if (kn_operand_present(&a->mean)) vset(&a->mean, ch, mean[ch]);
            if (kn_operand_present(&a->invstd)) vset(&a->invstd, ch, invstd[ch]);
        }
        const kn_operand *count = &a->count;
        if (training && kn_operand_present(count))
            kn__store_i64(count->data, count->dtype, kn__load_i64(count->data, count->dtype) + 1);
    }
    free(fbuf);
    free(buf);
    kn__cpu_dense_free(&xd);
    return st;
}

/* After the backward pass: grad x (gx, contiguous) through the ReLU that
 * made x (zero where x <= 0) and its per-channel sums (a Linear's bias
 * gradient) into sums (or absent). */
static kn_status bn_backward_tail(const kn_operand *gx, const kn_operand *sums, const kn_operand *x,
                                  bool relu) {
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2];
    size_t es = kn_dtype_size(x->dtype);
    bool want = kn_operand_present(sums);
    double *acc = want ? calloc((size_t)(C > 0 ? C : 1), sizeof *acc) : NULL;
    if (want && !acc) return oom("batch_norm");
    const char *xp = x->data;
    char *gp = gx->data;
    if (x->dtype == KN_F32) { /* the hot case: one pass in float, sums in double */
        const float *xf = (const float *)xp;
        float *gf = (float *)gp;
        for (int64_t r = 0; r < N * C; r += L == 1 ? C : 1) {
            const float *xr = xf + r * L;
            float *gr = gf + r * L;
            if (L == 1) { /* a row of channels: two loops that vectorize */
                if (relu)
                    for (int64_t ch = 0; ch < C; ch++) gr[ch] = xr[ch] > 0 ? gr[ch] : 0.0f;
                if (acc)
                    for (int64_t ch = 0; ch < C; ch++) acc[ch] += (double)gr[ch];
                continue;
            }
            double a = 0;
            for (int64_t l = 0; l < L; l++) {
                float v = relu && !(xr[l] > 0) ? 0.0f : gr[l];
                gr[l] = v;
                a += v;
            }
            if (acc) acc[r % C] += a;
        }
        for (int64_t ch = 0; acc && ch < C; ch++) vset(sums, ch, acc[ch]);
        free(acc);
        return KN_OK;
    }
    for (int64_t i = 0; i < N * C * L; i++) {
        double v = kn__load(gp + (size_t)i * es, x->dtype);
        if (relu && !(kn__load(xp + (size_t)i * es, x->dtype) > 0)) {
            v = 0;
            kn__store(gp + (size_t)i * es, x->dtype, 0);
        }
        if (acc) acc[i / L % C] += v;
    }
    for (int64_t ch = 0; acc && ch < C; ch++) vset(sums, ch, acc[ch]);
    free(acc);
    return KN_OK;
}

kn_status kn__cpu_batch_norm_backward(int device, const void *args) {
    (void)device;
    const kn_batch_norm_backward_args *a = args;
    kn_dense gd, xd = {0};
    kn_status st = kn__cpu_dense("batch_norm", &gd, &a->grad, a->grad.dtype);
    if (st == KN_OK) st = kn__cpu_dense("batch_norm", &xd, &a->x, a->x.dtype);
    if (st == KN_OK && a->p > 0) { /* the grad of a dropout of y: back through its mask first */
        if (!gd.owned) { /* the caller's grad: the masked copy goes to scratch */
            kn_dense in = gd;
            gd.nbytes = (size_t)kn_operand_numel(&in.v) * kn_dtype_size(in.v.dtype);
            if (!(gd.owned = kn__cpu_scratch(gd.nbytes))) {
                gd.nbytes = 0;
                st = kn__err(KN_ERR_OOM, "batch_norm: out of memory");
            } else {
                gd.v = kn__cpu_dense_view(&in.v, in.v.dtype, gd.owned);
                bn_dropout(&in.v, &gd.v, a->p, a->seed, a->offset);
            }
        } else {
            bn_dropout(&gd.v, &gd.v, a->p, a->seed, a->offset);
        }
    }
    if (st != KN_OK) {
        kn__cpu_dense_free(&gd);
        kn__cpu_dense_free(&xd);
        return st;
    }
    const kn_operand *x = &xd.v, *w = &a->weight;
    bool training = a->training != 0;
    bn_ctx s = {.N = x->shape[0], .C = x->shape[1], .L = x->shape[2], .dt = x->dtype,
                .avx2 = cpu_avx2(), .x = x->data, .g = gd.v.data};
    int64_t C = s.C;
    double M = (double)(s.N * s.L);
    double *buf = malloc((size_t)(7 * (C > 0 ? C : 1)) * sizeof *buf);
    float *fbuf = NULL;
    st = buf ? KN_OK : oom("batch_norm");
    if (st == KN_OK) {
        double *mean = buf, *k0 = buf + C, *k1 = buf + 2 * C, *k2 = buf + 3 * C, *invstd = buf + 4 * C;
        s.s1 = buf + 5 * C;
        s.s2 = buf + 6 * C;
        for (int64_t ch = 0; ch < C; ch++) {
            mean[ch] = vget(&a->mean, ch);
            invstd[ch] = vget(&a->invstd, ch);
        }
        s.mean = s.shift = mean;
        if (!bn_stats(&s)) st = oom("batch_norm"); /* s1 = sum(g), s2 = sum(g * (x - mean)) */
        for (int64_t ch = 0; st == KN_OK && ch < C; ch++) {
            double is = invstd[ch];
            k1[ch] = is * (kn_operand_present(w) ? vget(w, ch) : 1);
            /* Training: the batch statistics depend on x too. */
            k0[ch] = training ? s.s1[ch] / M : 0;
            k2[ch] = training ? is * is * s.s2[ch] / M : 0;
            if (kn_operand_present(&a->grad_weight)) vset(&a->grad_weight, ch, s.s2[ch] * is);
            if (kn_operand_present(&a->grad_bias)) vset(&a->grad_bias, ch, s.s1[ch]);
        }
        s.k0 = k0, s.k1 = k1, s.k2 = k2;
        if (st == KN_OK && kn_operand_present(&a->grad_x)) {
            s.y = a->grad_x.data;
            if (s.dt == KN_F32 && !(fbuf = bn_floats(&s))) st = oom("batch_norm");
            else bn_apply(&s);
            if (st == KN_OK && (a->relu || kn_operand_present(&a->grad_pre_bias)))
                st = bn_backward_tail(&a->grad_x, &a->grad_pre_bias, x, a->relu != 0);
        }
    }
    free(fbuf);
    free(buf);
    kn__cpu_dense_free(&gd);
    kn__cpu_dense_free(&xd);
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

kn_status kn__cpu_layer_norm(int device, const void *args) {
    (void)device;
    const kn_layer_norm_args *a = args;
    int64_t H = a->n;
    kn_dense xd, wd = {0}, bd = {0};
    kn_status status = kn__cpu_dense("layer_norm", &xd, &a->x, a->x.dtype);
    if (status == KN_OK) status = kn__cpu_dense("layer_norm", &wd, &a->weight, a->x.dtype);
    if (status == KN_OK) status = kn__cpu_dense("layer_norm", &bd, &a->bias, a->x.dtype);
    if (status != KN_OK) {
        kn__cpu_dense_free(&xd), kn__cpu_dense_free(&wd), kn__cpu_dense_free(&bd);
        return status;
    }
    int64_t numel = kn_operand_numel(&xd.v);
    ln_ctx s = {.R = H ? numel / H : 0, .H = H, .dt = xd.v.dtype, .x = xd.v.data, .w = wd.v.data,
                .b = bd.v.data, .y = a->y.data, .eps = a->eps, .avx2 = cpu_avx2()};
    double *buf = malloc((size_t)(2 * s.R + 1) * sizeof *buf);
    if (!buf) {
        status = oom("layer_norm");
    } else {
        s.mean = buf;
        s.invstd = buf + s.R;
        kn__parallel_for(s.R, grain_for(3 * H), ln_fwd_range, &s);
        for (int64_t r = 0; r < s.R; r++) {
            if (kn_operand_present(&a->mean)) vset(&a->mean, r, s.mean[r]);
            if (kn_operand_present(&a->invstd)) vset(&a->invstd, r, s.invstd[r]);
        }
    }
    free(buf);
    kn__cpu_dense_free(&xd), kn__cpu_dense_free(&wd), kn__cpu_dense_free(&bd);
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

kn_status kn__cpu_layer_norm_backward(int device, const void *args) {
    (void)device;
    const kn_layer_norm_backward_args *a = args;
    kn_dense gd, xd = {0}, wd = {0};
    kn_status status = kn__cpu_dense("layer_norm", &gd, &a->grad, a->grad.dtype);
    if (status == KN_OK) status = kn__cpu_dense("layer_norm", &xd, &a->x, a->x.dtype);
    if (status == KN_OK) status = kn__cpu_dense("layer_norm", &wd, &a->weight, a->x.dtype);
    if (status != KN_OK) {
        kn__cpu_dense_free(&gd), kn__cpu_dense_free(&xd), kn__cpu_dense_free(&wd);
        return status;
    }
    const kn_operand *gw = &a->grad_weight, *gb = &a->grad_bias;
    int64_t R = kn_operand_numel(&a->mean), H = a->n;
    ln_ctx s = {.R = R, .H = H, .dt = xd.v.dtype, .x = xd.v.data, .g = gd.v.data, .w = wd.v.data,
                .avx2 = cpu_avx2()};
    double *buf = malloc((size_t)(2 * R + 2 * H + 1) * sizeof *buf);
    status = buf ? KN_OK : oom("layer_norm");
    if (status == KN_OK) {
        s.mean = buf;
        s.invstd = buf + R;
        for (int64_t r = 0; r < R; r++) {
            s.mean[r] = vget(&a->mean, r);
            s.invstd[r] = vget(&a->invstd, r);
        }
        if (kn_operand_present(&a->grad_x)) {
            s.y = a->grad_x.data;
            kn__parallel_for(R, grain_for(3 * H), ln_bwd_rows, &s);
        }
        if (kn_operand_present(gw) || kn_operand_present(gb)) {
            s.gw = kn_operand_present(gw) ? buf + 2 * R : NULL;
            s.gb = kn_operand_present(gb) ? buf + 2 * R + H : NULL;
            kn__parallel_for((H + LN_BLOCK - 1) / LN_BLOCK, grain_for(R * LN_BLOCK), ln_bwd_cols, &s);
            for (int64_t k = 0; k < H; k++) {
                if (s.gw) vset(gw, k, s.gw[k]);
                if (s.gb) vset(gb, k, s.gb[k]);
            }
        }
    }
    free(buf);
    kn__cpu_dense_free(&gd), kn__cpu_dense_free(&xd), kn__cpu_dense_free(&wd);
    return status;
}
