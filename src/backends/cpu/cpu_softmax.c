/* CPU kernels for softmax, log_softmax and the negative log-likelihood. */
#include "cpu_nn.h"

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

/* x: x (forward) or grad (backward); y: absent (forward) or the forward output. */
static kn_status softmax_run(const kn_operand *out, const kn_operand *x, const kn_operand *y, int64_t dim_,
                             bool log_, bool backward) {
    const char *op = log_ ? "log_softmax" : "softmax";
    int nd = out->ndim;
    int dim = nd ? (int)dim_ : 0;
    kn_dense a, b = {0};
    kn_status st = kn__cpu_dense(op, &a, x, x->dtype);
    if (st == KN_OK && backward) st = kn__cpu_dense(op, &b, y, y->dtype);
    if (st != KN_OK) {
        kn__cpu_dense_free(&a);
        return st;
    }
    sm_ctx s = {.a = a.v.data, .b = b.v.data, .out = out->data,
                .dt = out->dtype, .outer = 1, .D = nd ? out->shape[dim] : 1, .inner = 1,
                .log = log_, .backward = backward, .avx2 = cpu_avx2()};
    for (int d = 0; d < dim; d++) s.outer *= out->shape[d];
    for (int d = dim + 1; d < nd; d++) s.inner *= out->shape[d];
    s.nblk = (s.inner + SM_BLOCK - 1) / SM_BLOCK;
    int64_t units, per_unit;
    if (s.dt != KN_F32) units = s.outer * s.inner, per_unit = s.D;
    else if (s.inner == 1) units = s.outer, per_unit = s.D;
    else units = s.outer * s.nblk, per_unit = s.D * (s.inner < SM_BLOCK ? s.inner : SM_BLOCK);
    if (s.D > 0) kn__parallel_for(units, grain_for(per_unit * 4), sm_range, &s);
    kn__cpu_dense_free(&a);
    kn__cpu_dense_free(&b);
    return KN_OK;
}

kn_status kn__cpu_softmax(int device, const void *args) {
    (void)device;
    const kn_softmax_args *a = args;
    kn_operand none = {0};
    return softmax_run(&a->out, &a->x, &none, a->dim, a->log != 0, false);
}

kn_status kn__cpu_softmax_backward(int device, const void *args) {
    (void)device;
    const kn_softmax_backward_args *a = args;
    return softmax_run(&a->out, &a->grad, &a->y, a->dim, a->log != 0, true);
}

/* ---- nll ----------------------------------------------------------------------------------- */

static int64_t target_at(const kn_operand *t, int64_t n) {
    size_t es = kn_dtype_size(t->dtype);
    return kn__load_i64((const char *)t->data + (size_t)(n * t->stride[0]) * es, t->dtype);
}

static double lp_at(const kn_operand *lp, int64_t n, int64_t k) {
    size_t es = kn_dtype_size(lp->dtype);
    return kn__load((const char *)lp->data + (size_t)(n * lp->stride[0] + k * lp->stride[1]) * es, lp->dtype);
}

/* Checks every target but ignore; an error names the first bad one. */
static kn_status check_targets(const char *op, const kn_operand *tg, int64_t ignore, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        if (t != ignore && (t < 0 || t >= C))
            return kn__err(KN_ERR_INVALID, "%s: target %lld is out of range for %lld classes", op, (long long)t,
                           (long long)C);
    }
    return KN_OK;
}

kn_status kn__cpu_nll(int device, const void *args) {
    (void)device;
    const kn_nll_args *a = args;
    const kn_operand *lp = &a->logp, *tg = &a->target, *w = &a->weight;
    const kn_operand *loss = &a->loss, *wout = &a->row_weight;
    int64_t N = lp->shape[0], C = lp->shape[1], ignore = a->ignore_index;
    double s = a->smoothing;
    kn_status st = check_targets("nll_loss", tg, ignore, N, C);
    if (st != KN_OK) return st;
    double *wv = vload(w, C, 1.0);
    if (!wv) return oom("nll_loss");
    bool f32_rows = lp->dtype == KN_F32 && lp->stride[1] == 1;
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        double l = 0, rw = 0;
        if (t != ignore) {
            rw = wv[t];
            l = -(1 - s) * wv[t] * lp_at(lp, n, t);
            if (s != 0) {
                double acc = 0;
                if (f32_rows) {
                    const float *row = (const float *)lp->data + n * lp->stride[0];
                    for (int64_t k = 0; k < C; k++) acc += wv[k] * row[k];
                } else {
                    for (int64_t k = 0; k < C; k++) acc += wv[k] * lp_at(lp, n, k);
                }
                l -= s / (double)C * acc;
            }
        }
        vset(loss, n, l);
        if (kn_operand_present(wout)) vset(wout, n, rw);
    }
    free(wv);
    return KN_OK;
}

kn_status kn__cpu_nll_backward(int device, const void *args) {
    (void)device;
    const kn_nll_backward_args *a = args;
    const kn_operand *g = &a->grad, *tg = &a->target, *w = &a->weight, *out = &a->out;
    int64_t N = out->shape[0], C = out->shape[1], ignore = a->ignore_index;
    double s = a->smoothing;
    kn_status st = check_targets("nll_loss", tg, ignore, N, C);
    if (st != KN_OK) return st;
    double *wv = vload(w, C, 1.0);
    if (!wv) return oom("nll_loss");
    size_t es = kn_dtype_size(out->dtype);
    char *o = out->data;
    memset(o, 0, (size_t)(N * C) * es); /* all-zero bits are 0.0 in every float dtype */
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        if (t == ignore) continue;
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


/* ---- cross-entropy on logits, fused ----------------------------------------------------------
 * Rows in double: lse = max + log(sum exp(z - max)), lp = z - lse, and the
 * NLL row loss of lp. The backward needs only the saved lse:
 * d loss_n / d z_j = p_j * A_n - B_nj with p_j = exp(z_j - lse_n),
 * A_n = (1 - s) w_t + s / C * sum_c w_c, B_nj = (1 - s) w_t [j == t] + s / C * w_j. */
/* Logit j of row n (the logits are contiguous [N, C]). */
static double ce_z(const kn_operand *z, int64_t n, int64_t j, int64_t C) {
    if (z->dtype == KN_F32) return ((const float *)z->data)[n * C + j];
    return kn__load((const char *)z->data + (size_t)(n * C + j) * kn_dtype_size(z->dtype), z->dtype);
}

/* The class weights of a cross-entropy call as doubles, after checking its
 * targets; NULL with an error. */
static double *ce_weights(int64_t ignore, const kn_operand *tg, const kn_operand *w, int64_t N, int64_t C) {
    if (check_targets("cross_entropy", tg, ignore, N, C) != KN_OK) return NULL;
    double *wv = vload(w, C, 1.0);
    if (!wv) oom("cross_entropy");
    return wv;
}

kn_status kn__cpu_cross_entropy(int device, const void *args) {
    (void)device;
    const kn_cross_entropy_args *a = args;
    const kn_operand *tg = &a->target, *w = &a->weight;
    int64_t N = a->logits.shape[0], C = a->logits.shape[1], ignore = a->ignore_index, red = a->reduction;
    double s = a->smoothing;
    kn_dense zd;
    if (kn__cpu_dense("cross_entropy", &zd, &a->logits, a->logits.dtype) != KN_OK) return kn_error_code();
    const kn_operand *z = &zd.v;
    double *wv = ce_weights(ignore, tg, w, N, C);
    if (!wv) {
        kn__cpu_dense_free(&zd);
        return kn_error_code();
    }
    double total = 0, wsum = 0;
    for (int64_t n = 0; n < N; n++) {
        double mx = -INFINITY, e = 0, lse, l = 0;
        for (int64_t j = 0; j < C; j++) {
            double v = ce_z(z, n, j, C);
            mx = v > mx || v != v ? v : mx;
        }
        for (int64_t j = 0; j < C; j++) e += exp(ce_z(z, n, j, C) - mx);
        lse = mx + log(e);
        int64_t t = target_at(tg, n);
        if (t != ignore) {
            l = -(1 - s) * wv[t] * (ce_z(z, n, t, C) - lse);
            if (s != 0) {
                double acc = 0;
                for (int64_t j = 0; j < C; j++) acc += wv[j] * (ce_z(z, n, j, C) - lse);
                l -= s / (double)C * acc;
            }
            wsum += wv[t];
        }
        total += l;
        if (red == KN_REDUCTION_NONE) vset(&a->loss, n, l);
        vset(&a->lse, n, lse);
    }
    if (red != KN_REDUCTION_NONE) {
        double v = red == KN_REDUCTION_SUM ? total : total / wsum;
        kn__store(a->loss.data, a->loss.dtype, v);
    }
    kn__store(a->weight_sum.data, a->weight_sum.dtype, wsum);
    free(wv);
    kn__cpu_dense_free(&zd);
    return KN_OK;
}

kn_status kn__cpu_cross_entropy_backward(int device, const void *args) {
    (void)device;
    const kn_cross_entropy_backward_args *a = args;
    const kn_operand *g = &a->grad, *tg = &a->target, *w = &a->weight, *lse = &a->lse, *out = &a->out;
    int64_t N = out->shape[0], C = out->shape[1], ignore = a->ignore_index, red = a->reduction;
    double s = a->smoothing;
    kn_dense zd;
    if (kn__cpu_dense("cross_entropy", &zd, &a->logits, a->logits.dtype) != KN_OK) return kn_error_code();
    const kn_operand *z = &zd.v;
    double *wv = ce_weights(ignore, tg, w, N, C);
    if (!wv) {
        kn__cpu_dense_free(&zd);
        return kn_error_code();
    }
    double wall = 0;
    for (int64_t j = 0; j < C; j++) wall += wv[j];
    double G = red == KN_REDUCTION_NONE ? 0 : kn__load(g->data, g->dtype);
    if (red == KN_REDUCTION_MEAN) G /= kn__load(a->weight_sum.data, a->weight_sum.dtype);
    size_t es = kn_dtype_size(out->dtype);
    char *o = out->data;
    for (int64_t n = 0; n < N; n++) {
        int64_t t = target_at(tg, n);
        char *row = o + (size_t)(n * C) * es;
        if (t == ignore) {
            memset(row, 0, (size_t)C * es); /* all-zero bits are 0.0 in every float dtype */
            continue;
        }
        double Gn = red == KN_REDUCTION_NONE ? vget(g, n) : G, ln = vget(lse, n);
        double A = (1 - s) * wv[t] + s / (double)C * wall;
        for (int64_t j = 0; j < C; j++) {
            double B = (j == t ? (1 - s) * wv[t] : 0) + s / (double)C * wv[j];
            kn__store(row + (size_t)j * es, out->dtype, Gn * (exp(ce_z(z, n, j, C) - ln) * A - B));
        }
    }
    free(wv);
    kn__cpu_dense_free(&zd);
    return KN_OK;
}
