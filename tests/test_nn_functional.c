/* nn functions (softmax, log_softmax, cross_entropy, nll_loss, mse_loss,
 * batch_norm, layer_norm, dropout): forward values against plain double
 * references written here and against constants from PyTorch, gradients
 * against central finite differences in f64 (and f32 gradients against f64
 * ones), and the error messages. Exit status: non-zero on any failure. */
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            g_pass++;                                                                        \
        } else {                                                                             \
            g_fail++;                                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                      \
            printf(__VA_ARGS__);                                                             \
            printf("\n");                                                                    \
        }                                                                                    \
    } while (0)

/* ---- helpers ---------------------------------------------------------------------------- */
static kn_tensor *mk(const double *v, kn_dtype dt, int nd, const int64_t *shape) {
    int64_t n = kn__numel_shape(nd, shape);
    char *buf = malloc((size_t)(n > 0 ? n : 1) * 8);
    for (int64_t k = 0; k < n; k++) kn__store(buf + (size_t)k * kn_dtype_size(dt), dt, v[k]);
    kn_tensor *t = kn_from_data(buf, dt, nd, shape, KN_CPU);
    free(buf);
    return t;
}

static kn_tensor *mk_i64(const int64_t *v, int64_t n) { return kn_from_data(v, KN_I64, 1, &n, KN_CPU); }

/* All of t as doubles (malloc'd); NULL t gives NULL. */
static double *host(const kn_tensor *t) {
    if (!t) return NULL;
    int64_t n = kn_numel(t);
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (kn_to_host(t, d, KN_F64) != KN_OK) {
        free(d);
        return NULL;
    }
    return d;
}

/* Compares t with ref elementwise: |got - ref| <= tol * (1 + |ref|). */
static void expect_close(const char *what, const kn_tensor *t, const double *ref, int64_t n, double tol) {
    if (!t) {
        CHECK(0, "%s: no result (%s)", what, kn_error());
        return;
    }
    CHECK(kn_numel(t) == n, "%s: %lld elements, expected %lld", what, (long long)kn_numel(t), (long long)n);
    if (kn_numel(t) != n) return;
    double *got = host(t);
    double worst = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < n; k++) {
        double e = fabs(got[k] - ref[k]) / (1 + fabs(ref[k]));
        if (!(e <= worst)) worst = e, at = k;
    }
    CHECK(worst <= tol, "%s: element %lld is %.10g, expected %.10g (err %.3g > %.3g)", what, (long long)at,
          got[at], ref[at], worst, tol);
    free(got);
}

static void expect_scalar(const char *what, const kn_tensor *t, double ref, double tol) {
    expect_close(what, t, &ref, 1, tol);
}

static void expect_error(const char *what, const void *result, const char *msg) {
    CHECK(result == NULL, "%s: expected an error, got a result", what);
    CHECK(strncmp(kn_error(), msg, strlen(msg)) == 0, "%s: message '%s', expected '%s...'", what, kn_error(), msg);
    kn_error_clear();
}

/* Deterministic values in [-1, 1]. */
static double wave(int64_t k, double phase) { return sin(1.7 * (double)k + phase); }

static void fill_wave(double *v, int64_t n, double phase, double scale) {
    for (int64_t k = 0; k < n; k++) v[k] = scale * wave(k, phase);
}

/* ---- plain double references ------------------------------------------------------------- */
static void ref_softmax(const double *x, int64_t outer, int64_t D, int64_t inner, bool log_, double *y) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            double mx = -INFINITY, s = 0;
            for (int64_t d = 0; d < D; d++) mx = fmax(mx, x[(o * D + d) * inner + j]);
            for (int64_t d = 0; d < D; d++) s += exp(x[(o * D + d) * inner + j] - mx);
            for (int64_t d = 0; d < D; d++) {
                double z = x[(o * D + d) * inner + j] - mx;
                y[(o * D + d) * inner + j] = log_ ? z - log(s) : exp(z) / s;
            }
        }
}

/* PyTorch's decomposition: (1 - s) * nll(weighted) + s / C * smooth, each
 * reduced on its own; rows[] gets the unreduced losses. */
static double ref_ce(const double *x, int64_t N, int64_t C, const int64_t *t, const double *w, double s,
                     int64_t ignore, kn_reduction red, double *rows) {
    double *lp = malloc((size_t)(N * C) * sizeof *lp);
    ref_softmax(x, N, C, 1, true, lp);
    double nll = 0, smooth = 0, wsum = 0;
    for (int64_t n = 0; n < N; n++) {
        double rn = 0, rs = 0;
        if (t[n] != ignore) {
            double wt = w ? w[t[n]] : 1;
            rn = -wt * lp[n * C + t[n]];
            for (int64_t c = 0; c < C; c++) rs -= (w ? w[c] : 1) * lp[n * C + c];
            wsum += wt;
        }
        nll += rn;
        smooth += rs;
        if (rows) rows[n] = (1 - s) * rn + s / (double)C * rs;
    }
    free(lp);
    if (red == KN_REDUCTION_SUM) return (1 - s) * nll + s / (double)C * smooth;
    return (1 - s) * nll / wsum + s / (double)C * smooth / wsum;
}

/* Batch norm of [N, C, L] with batch (training) or given statistics. */
static void ref_bn(const double *x, int64_t N, int64_t C, int64_t L, const double *w, const double *b,
                   const double *use_mean, const double *use_var, double eps, double *y, double *mean,
                   double *var) {
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t l = 0; l < L; l++) m += x[(n * C + c) * L + l];
        m /= (double)(N * L);
        for (int64_t n = 0; n < N; n++)
            for (int64_t l = 0; l < L; l++) v += pow(x[(n * C + c) * L + l] - m, 2);
        v /= (double)(N * L);
        if (mean) mean[c] = m;
        if (var) var[c] = v;
        if (use_mean) m = use_mean[c], v = use_var[c];
        for (int64_t n = 0; n < N; n++)
            for (int64_t l = 0; l < L; l++) {
                int64_t k = (n * C + c) * L + l;
                y[k] = (x[k] - m) / sqrt(v + eps) * (w ? w[c] : 1) + (b ? b[c] : 0);
            }
    }
}

static void ref_ln(const double *x, int64_t R, int64_t H, const double *w, const double *b, double eps, double *y) {
    for (int64_t r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int64_t k = 0; k < H; k++) m += x[r * H + k];
        m /= (double)H;
        for (int64_t k = 0; k < H; k++) v += pow(x[r * H + k] - m, 2);
        v /= (double)H;
        for (int64_t k = 0; k < H; k++)
            y[r * H + k] = (x[r * H + k] - m) / sqrt(v + eps) * (w ? w[k] : 1) + (b ? b[k] : 0);
    }
}

/* ---- gradient checking ----------------------------------------------------------------------- */
typedef kn_tensor *(*fn_t)(kn_tensor **in, void *ctx);
typedef struct {
    int nd;
    int64_t shape[4];
    const double *data;
} spec;

/* sum(f(in) * W) for fixed weights W. */
static kn_tensor *weighted(fn_t f, kn_tensor **in, void *ctx) {
    kn_tensor *y = f(in, ctx);
    if (!y) return NULL;
    int64_t n = kn_numel(y);
    double *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
    fill_wave(w, n, 0.4, 1.0);
    kn_tensor *W = mk(w, kn_dtype_of(y), kn_ndim(y), kn_shape(y));
    free(w);
    return kn_sum_all(kn_mul(y, W));
}

/* Leaves of dtype dt from the specs, requiring grad; grads[k] (malloc'd) after backward. */
static bool analytic(fn_t f, void *ctx, int n, const spec *sp, kn_dtype dt, kn_tensor **leaves, double **grads) {
    for (int k = 0; k < n; k++) {
        leaves[k] = kn_requires_grad_(mk(sp[k].data, dt, sp[k].nd, sp[k].shape), true);
    }
    kn_scope s = kn_scope_begin();
    kn_tensor *loss = weighted(f, leaves, ctx);
    bool ok = loss && kn_backward(loss) == KN_OK;
    kn_scope_end(s);
    for (int k = 0; k < n; k++) grads[k] = ok ? host(kn_grad(leaves[k])) : NULL;
    return ok;
}

/* fd: also against finite differences (small inputs); always f32 against f64. */
static void grad_check_ex(const char *name, fn_t f, void *ctx, int n, const spec *sp, bool fd) {
    kn_scope outer = kn_scope_begin();
    kn_tensor *leaves[6], *l32[6];
    double *g64[6], *g32[6];
    bool ok = analytic(f, ctx, n, sp, KN_F64, leaves, g64);
    CHECK(ok, "%s: backward failed: %s", name, kn_error());
    const double h = 1e-6;
    for (int k = 0; ok && k < n; k++) {
        CHECK(g64[k] != NULL, "%s: input %d has no gradient", name, k);
        if (!g64[k] || !fd) continue;
        double *data = kn__data(leaves[k]), worst = 0;
        int64_t at = 0, cnt = kn_numel(leaves[k]);
        double num_at = 0;
        kn_no_grad_begin();
        for (int64_t i = 0; i < cnt; i++) {
            double x0 = data[i];
            kn_scope s = kn_scope_begin();
            data[i] = x0 + h;
            double lp = kn_item(weighted(f, leaves, ctx));
            data[i] = x0 - h;
            double lm = kn_item(weighted(f, leaves, ctx));
            data[i] = x0;
            kn_scope_end(s);
            double num = (lp - lm) / (2 * h), e = fabs(num - g64[k][i]) / (1e-3 + fabs(num));
            if (!(e <= worst)) worst = e, at = i, num_at = num;
        }
        kn_no_grad_end();
        CHECK(worst <= 1e-4, "%s: d/d input %d [%lld]: analytic %.10g, numeric %.10g", name, k, (long long)at,
              g64[k][at], num_at);
    }
    /* float32 kernels against the float64 ones. */
    bool ok32 = ok && analytic(f, ctx, n, sp, KN_F32, l32, g32);
    CHECK(!ok || ok32, "%s: f32 backward failed: %s", name, kn_error());
    for (int k = 0; ok32 && k < n; k++) {
        int64_t cnt = kn_numel(leaves[k]);
        double mx = 0, worst = 0;
        for (int64_t i = 0; i < cnt; i++) mx = fmax(mx, fabs(g64[k][i]));
        for (int64_t i = 0; i < cnt; i++) worst = fmax(worst, fabs(g32[k][i] - g64[k][i]));
        CHECK(worst <= 1e-4 * (1 + mx), "%s: f32 grad of input %d differs from f64 by %.3g", name, k, worst);
    }
    for (int k = 0; k < n; k++) {
        if (ok) free(g64[k]);
        if (ok32) free(g32[k]);
    }
    kn_scope_end(outer);
}

static void grad_check(const char *name, fn_t f, void *ctx, int n, const spec *sp) {
    grad_check_ex(name, f, ctx, n, sp, true);
}

/* ---- shared data ------------------------------------------------------------------------------ */
static const double LOGITS[20] = {0.2, -1.3, 0.7, 2.1, -0.4, 1.5, 0.3, -0.8, 0.0, 0.9,
                                  -2.0, 0.4, 1.1, -0.6, 0.25, 0.8, 0.8, -1.7, 0.35, -0.1};
static const int64_t TARGET[4] = {3, 0, 4, 1};
static const int64_t TARGET_IGN[4] = {3, -100, 4, 1};
static const double CLASS_W[5] = {0.5, 1.0, 2.0, 1.5, 0.75};
static const double BN_X[18] = {1.0, -2.0, 0.5, 0.3, 0.7, 1.9, -1.1, 0.2, 2.5,
                                2.2, -0.4, 0.1, 0.0, 1.3, -0.7, 0.9, 0.6, 1.2};
static const double BN_W[3] = {1.5, 0.5, -1.0}, BN_B[3] = {0.1, -0.2, 0.3};

/* ---- softmax ----------------------------------------------------------------------------------- */
static void test_softmax(void) {
    kn_scope s = kn_scope_begin();
    double x[2 * 5 * 70], ref[2 * 5 * 70];
    fill_wave(x, 700, 0.1, 4.0);
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_F64 : KN_F32;
        double tol = dt ? 1e-12 : 2e-6;
        kn_tensor *a = mk(x, t, KN_SHAPE(3, 4));
        for (int lg = 0; lg < 2; lg++) {
            char what[64];
            ref_softmax(x, 3, 4, 1, lg, ref);
            snprintf(what, sizeof what, "%s dim 1 %s", lg ? "log_softmax" : "softmax", kn_dtype_name(t));
            expect_close(what, lg ? kn_log_softmax(a, 1) : kn_softmax(a, -1), ref, 12, tol);
            ref_softmax(x, 1, 3, 4, lg, ref);
            snprintf(what, sizeof what, "%s dim 0 %s", lg ? "log_softmax" : "softmax", kn_dtype_name(t));
            expect_close(what, lg ? kn_log_softmax(a, 0) : kn_softmax(a, 0), ref, 12, tol);
        }
        /* Middle dim with inner > one block of columns. */
        kn_tensor *b = mk(x, t, KN_SHAPE(2, 5, 70));
        ref_softmax(x, 2, 5, 70, false, ref);
        expect_close("softmax [2, 5, 70] dim 1", kn_softmax(b, 1), ref, 700, tol);
        ref_softmax(x, 2, 5, 70, true, ref);
        expect_close("log_softmax [2, 5, 70] dim 1", kn_log_softmax(b, 1), ref, 700, tol);
        /* Non-contiguous input: softmax of a^T over dim 1 is softmax of a over dim 0, transposed. */
        kn_tensor *r = kn_contiguous(kn_transpose(kn_softmax(kn_transpose(a, 0, 1), 1), 0, 1));
        ref_softmax(x, 1, 3, 4, false, ref);
        expect_close("softmax of a transposed view", r, ref, 12, tol);
    }
    /* Rows sum to 1 on a large row (parallel path) and huge logits stay finite. */
    double big[3] = {1000, 1001, 999}, rb[3];
    ref_softmax(big, 1, 3, 1, false, rb);
    expect_close("softmax of large logits", kn_softmax(mk(big, KN_F32, KN_SHAPE(3)), 0), rb, 3, 1e-6);
    kn_tensor *wide = kn_softmax(kn_randn(KN_SHAPE(64, 3000), KN_F32, KN_CPU, NULL), 1);
    double ones[64];
    for (int k = 0; k < 64; k++) ones[k] = 1;
    expect_close("softmax rows sum to 1", kn_sum(wide, KN_DIMS(1), false), ones, 64, 1e-5);
    /* float16 and bfloat16 go through double; the reference sees the rounded inputs. */
    for (int h = 0; h < 2; h++) {
        kn_dtype t = h ? KN_BF16 : KN_F16;
        double xr[12];
        char buf[2];
        for (int k = 0; k < 12; k++) kn__store(buf, t, x[k]), xr[k] = kn__load(buf, t);
        ref_softmax(xr, 3, 4, 1, h, ref);
        expect_close(h ? "log_softmax bfloat16" : "softmax float16",
                     h ? kn_log_softmax(mk(x, t, KN_SHAPE(3, 4)), 1) : kn_softmax(mk(x, t, KN_SHAPE(3, 4)), 1), ref,
                     12, h ? 1e-2 : 2e-3);
    }
    /* Integers are computed in float32. */
    kn_tensor *ints = kn_softmax(kn_arange(0, 4, 1, KN_I64, KN_CPU), 0);
    CHECK(ints && kn_dtype_of(ints) == KN_F32, "softmax of int64 gives float32");
    kn_error_clear();
    expect_error("softmax bad dim", kn_softmax(mk(x, KN_F32, KN_SHAPE(3, 4)), 2), "softmax: dim 2 out of range");
    CHECK(kn_softmax(NULL, 0) == NULL, "softmax(NULL) is NULL");
    kn_error_clear();
    kn_scope_end(s);
}

/* ---- cross_entropy / nll_loss -------------------------------------------------------------------- */
static void test_losses(void) {
    kn_scope s = kn_scope_begin();
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_F64 : KN_F32;
        double tol = dt ? 1e-12 : 1e-6;
        kn_tensor *L = mk(LOGITS, t, KN_SHAPE(4, 5)), *tg = mk_i64(TARGET, 4), *tgi = mk_i64(TARGET_IGN, 4);
        kn_tensor *W = mk(CLASS_W, t, KN_SHAPE(5));
        kn_loss_opts o = kn_loss_opts_default();
        CHECK(o.ignore_index == -100 && o.reduction == KN_REDUCTION_MEAN && !o.weight && o.label_smoothing == 0,
              "loss defaults");
        /* PyTorch 1.13 values: F.cross_entropy(L, t, ...) in float64 (see the options in each line). */
        expect_scalar("ce", kn_cross_entropy(L, tg), 0.9863982772515711, tol);
        o.weight = W;
        expect_scalar("ce weight", kn_cross_entropy_ex(L, tg, &o), 0.8959924697833103, tol);
        o.weight = NULL, o.label_smoothing = 0.1;
        expect_scalar("ce smoothing 0.1", kn_cross_entropy_ex(L, tg, &o), 1.0901482772515712, tol);
        o.weight = W;
        expect_scalar("ce weight + smoothing 0.1", kn_cross_entropy_ex(L, tg, &o), 1.0576580781478386, tol);
        expect_scalar("ce weight + smoothing + ignore", kn_cross_entropy_ex(L, tgi, &o), 1.0331119141657021, tol);
        o.reduction = KN_REDUCTION_NONE;
        double none[4] = {0.7858152507606855, 0.6086040720158626, 1.2878561016533359, 1.2839423686245108};
        expect_close("ce weight + smoothing, none", kn_cross_entropy_ex(L, tg, &o), none, 4, tol);
        o.reduction = KN_REDUCTION_SUM, o.label_smoothing = 0.2;
        expect_scalar("ce weight + smoothing 0.2, sum", kn_cross_entropy_ex(L, tg, &o), 4.572463824421376, tol);

        /* Against the reference here, every combination. */
        for (int mask = 0; mask < 16; mask++) {
            kn_loss_opts q = kn_loss_opts_default();
            const double *w = mask & 1 ? CLASS_W : NULL;
            q.weight = mask & 1 ? W : NULL;
            q.label_smoothing = mask & 2 ? 0.3 : 0;
            const int64_t *tt = mask & 4 ? TARGET_IGN : TARGET;
            q.reduction = mask & 8 ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN;
            double rows[4], r = ref_ce(LOGITS, 4, 5, tt, w, q.label_smoothing, -100, q.reduction, rows);
            char what[64];
            snprintf(what, sizeof what, "ce case %d %s", mask, kn_dtype_name(t));
            expect_scalar(what, kn_cross_entropy_ex(L, mask & 4 ? tgi : tg, &q), r, tol);
            q.reduction = KN_REDUCTION_NONE;
            expect_close(what, kn_cross_entropy_ex(L, mask & 4 ? tgi : tg, &q), rows, 4, tol);
        }
        /* A custom ignore_index and nll_loss on log-probabilities. */
        kn_loss_opts q = kn_loss_opts_default();
        q.ignore_index = 4;
        double rows[4];
        double r = ref_ce(LOGITS, 4, 5, TARGET, NULL, 0, 4, KN_REDUCTION_MEAN, rows);
        kn_tensor *lp = kn_log_softmax(L, 1);
        expect_scalar("nll mean, ignore_index 4", kn_nll_loss(lp, tg, &q), r, tol);
        q.reduction = KN_REDUCTION_SUM;
        expect_scalar("nll sum, ignore_index 4", kn_nll_loss(lp, tg, &q), ref_ce(LOGITS, 4, 5, TARGET, NULL, 0, 4, KN_REDUCTION_SUM, NULL), tol);
        q.reduction = KN_REDUCTION_NONE;
        expect_close("nll none, ignore_index 4", kn_nll_loss(lp, tg, &q), rows, 4, tol);
        expect_scalar("nll default opts", kn_nll_loss(lp, tg, NULL), 0.9863982772515711, tol);
        /* int32 targets work too. */
        int32_t t32[4] = {3, 0, 4, 1};
        expect_scalar("ce int32 target", kn_cross_entropy(L, kn_from_data(t32, KN_I32, KN_SHAPE(4), KN_CPU)),
                      0.9863982772515711, tol);
        /* All rows ignored: 0 / 0 like PyTorch. */
        int64_t all_ign[4] = {-100, -100, -100, -100};
        kn_tensor *nan_loss = kn_cross_entropy(L, mk_i64(all_ign, 4));
        CHECK(nan_loss && isnan(kn_item(nan_loss)), "ce with every row ignored is NaN");
    }
    /* PyTorch's gradient of the weighted, smoothed, ignoring case (float64). */
    double egrad[20] = {0.04152473583195076, 0.003798129141376507, 0.06122801144387985, -0.12641340120010933,
                        0.019862524782902152, 0, 0, 0, 0, 0, 0.002012194251915255, 0.049944391783718435,
                        0.10066028622340138, 0.01140661919240463, -0.16402349145143968, 0.09682053063714566,
                        -0.1831794693628544, -0.004107609957041984, 0.054466659532654074, 0.03599988915009655};
    for (int dt = 0; dt < 2; dt++) {
        kn_tensor *L = kn_requires_grad_(mk(LOGITS, dt ? KN_F64 : KN_F32, KN_SHAPE(4, 5)), true);
        kn_loss_opts o = kn_loss_opts_default();
        o.weight = mk(CLASS_W, KN_F64, KN_SHAPE(5)); /* a weight of another dtype is cast */
        o.label_smoothing = 0.1;
        CHECK(kn_backward(kn_cross_entropy_ex(L, mk_i64(TARGET_IGN, 4), &o)) == KN_OK, "ce backward: %s", kn_error());
        expect_close("ce gradient vs PyTorch", kn_grad(L), egrad, 20, dt ? 1e-12 : 1e-6);
    }

    /* mse_loss */
    double a[6] = {0.5, -1, 2, 3, 0.25, -0.75}, b[6] = {1, 1, 1.5, -2, 0, 0}, sq[6], sum = 0;
    for (int k = 0; k < 6; k++) sq[k] = (a[k] - b[k]) * (a[k] - b[k]), sum += sq[k];
    kn_tensor *A = mk(a, KN_F32, KN_SHAPE(2, 3)), *B = mk(b, KN_F32, KN_SHAPE(2, 3));
    expect_scalar("mse mean", kn_mse_loss(A, B, KN_REDUCTION_MEAN), sum / 6, 1e-6);
    expect_scalar("mse sum", kn_mse_loss(A, B, KN_REDUCTION_SUM), sum, 1e-6);
    expect_close("mse none", kn_mse_loss(A, B, KN_REDUCTION_NONE), sq, 6, 1e-6);
    expect_error("mse shapes", kn_mse_loss(A, mk(b, KN_F32, KN_SHAPE(6)), KN_REDUCTION_MEAN),
                 "mse_loss: input [2, 3] and target [6] must have the same shape");
    kn_scope_end(s);
}

/* ---- batch_norm ------------------------------------------------------------------------------------ */
static void test_batch_norm(void) {
    kn_scope s = kn_scope_begin();
    /* PyTorch 1.13, float64: F.batch_norm(x [6, 3], rm = 0, rv = 1, w, b, training=True,
     * momentum=0.1, eps=1e-5), then the same in eval mode with the updated stats. */
    double py_y[18] = {0.7675287739946977, -1.1768885466474208, 0.6855273113461584, -0.27084931888594327,
                       0.09936907074679022, -0.6098444547769335, -2.347605504647225, -0.13697493247435996,
                       -1.1650037831154014, 2.5476055046472252, -0.4205877363397402, 1.0556335302384703,
                       -0.7158685015490751, 0.3829818746121705, 1.7958459680230943, 0.6191890464403204,
                       0.05210027010256019, 0.037841428284612455};
    double py_rm[3] = {0.05500000000000001, 0.006666666666666667, 0.09166666666666667};
    double py_rv[3] = {1.0227, 1.0342666666666667, 1.0401666666666667};
    double py_eval[18] = {1.5016733504637934, -1.1865676651806911, -0.10036977158530241, 0.4633967945646872,
                          0.14087387767040488, -1.4730661313063391, -1.6131563172335255, -0.10494863026498324,
                          -2.0613645711867834, 3.2815760177194044, -0.39993563978744906, 0.2918291883349938,
                          0.018421127750784503, 0.4358608871928707, 1.0762271081755863, 1.3533481281924926,
                          0.09170937608332726, -0.7867179514458208};
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_F64 : KN_F32;
        double tol = dt ? 1e-12 : 2e-6;
        kn_tensor *x = mk(BN_X, t, KN_SHAPE(6, 3)), *w = mk(BN_W, t, KN_SHAPE(3)), *b = mk(BN_B, t, KN_SHAPE(3));
        kn_tensor *rm = kn_zeros(KN_SHAPE(3), t, KN_CPU), *rv = kn_ones(KN_SHAPE(3), t, KN_CPU);
        kn_tensor *y = kn_batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
        expect_close("batch_norm train vs PyTorch", y, py_y, 18, tol);
        expect_close("running_mean update", rm, py_rm, 3, tol);
        expect_close("running_var update (unbiased)", rv, py_rv, 3, tol);
        CHECK(!kn_has_grad_fn(rm) && !kn_requires_grad(rv), "running stats are not on the tape");
        expect_close("batch_norm eval vs PyTorch", kn_batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5), py_eval, 18, tol);
        expect_close("eval leaves running_mean", rm, py_rm, 3, tol);
        /* NULL weight/bias/running stats. */
        double ref[18];
        ref_bn(BN_X, 6, 3, 1, NULL, NULL, NULL, NULL, 1e-5, ref, NULL, NULL);
        expect_close("batch_norm without affine", kn_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), ref, 18, tol);
    }
    /* 3-D [N, C, L], non-contiguous input, running stats against the reference. */
    {
        double x[4 * 3 * 5], y[60], m[3], v[3];
        fill_wave(x, 60, 0.7, 3.0);
        for (int k = 0; k < 60; k++) x[k] += 10; /* a large mean tests the variance accuracy */
        ref_bn(x, 4, 3, 5, BN_W, BN_B, NULL, NULL, 1e-3, y, m, v);
        kn_tensor *X = mk(x, KN_F32, KN_SHAPE(4, 3, 5));
        kn_tensor *rm = kn_full(KN_SHAPE(3), 0.5, KN_F32, KN_CPU), *rv = kn_full(KN_SHAPE(3), 2, KN_F32, KN_CPU);
        expect_close("batch_norm 3-D", kn_batch_norm(X, rm, rv, mk(BN_W, KN_F32, KN_SHAPE(3)), mk(BN_B, KN_F32, KN_SHAPE(3)), true, 0.3, 1e-3), y, 60, 1e-5);
        double erm[3], erv[3];
        for (int c = 0; c < 3; c++) erm[c] = 0.7 * 0.5 + 0.3 * m[c], erv[c] = 0.7 * 2 + 0.3 * v[c] * 20 / 19;
        expect_close("3-D running_mean", rm, erm, 3, 1e-6);
        expect_close("3-D running_var", rv, erv, 3, 1e-6);
        /* The same data as a permuted (non-contiguous) view. */
        kn_tensor *Xp = kn_permute(kn_contiguous(kn_permute(X, KN_DIMS(2, 0, 1))), KN_DIMS(1, 2, 0));
        CHECK(!kn_is_contiguous(Xp), "permuted view is not contiguous");
        expect_close("batch_norm 3-D strided", kn_batch_norm(Xp, NULL, NULL, mk(BN_W, KN_F32, KN_SHAPE(3)), mk(BN_B, KN_F32, KN_SHAPE(3)), true, 0.3, 1e-3), y, 60, 1e-5);
        ref_bn(x, 4, 3, 5, NULL, NULL, erm, erv, 1e-3, y, NULL, NULL);
        expect_close("batch_norm 3-D eval", kn_batch_norm(X, rm, rv, NULL, NULL, false, 0.3, 1e-3), y, 60, 1e-5);
        expect_close("batch_norm 3-D f16", kn_batch_norm(kn_cast(X, KN_F16), rm, rv, NULL, NULL, false, 0.3, 1e-3), y, 60, 1e-2);
    }
    /* The reference workload's sizes: f32 (parallel paths) against f64, forward and backward. */
    {
        int64_t N = 1382, C = 200;
        kn_tensor *x = kn_add_scalar(kn_mul_scalar(kn_randn(KN_SHAPE(N, C), KN_F64, KN_CPU, NULL), 2), 5);
        kn_tensor *w = kn_randn(KN_SHAPE(C), KN_F64, KN_CPU, NULL), *b = kn_randn(KN_SHAPE(C), KN_F64, KN_CPU, NULL);
        kn_tensor *g = kn_randn(KN_SHAPE(N, C), KN_F64, KN_CPU, NULL);
        kn_tensor *in64[3] = {x, w, b}, *in32[3];
        double *res[2][4];
        for (int dt = 0; dt < 2; dt++) {
            kn_tensor **in = dt ? in64 : in32;
            if (!dt)
                for (int k = 0; k < 3; k++) in32[k] = kn_cast(in64[k], KN_F32);
            for (int k = 0; k < 3; k++) in[k] = kn_requires_grad_(kn_detach(in[k]), true);
            kn_tensor *y = kn_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
            CHECK(kn_backward_with(y, kn_cast(g, dt ? KN_F64 : KN_F32)) == KN_OK, "bn backward: %s", kn_error());
            res[dt][0] = host(y);
            for (int k = 0; k < 3; k++) res[dt][k + 1] = host(kn_grad(in[k]));
        }
        const char *names[4] = {"y", "grad x", "grad weight", "grad bias"};
        int64_t counts[4] = {N * C, N * C, C, C};
        for (int k = 0; k < 4; k++) {
            char what[64];
            snprintf(what, sizeof what, "batch_norm [1382, 200] f32 vs f64: %s", names[k]);
            double mx = 0;
            for (int64_t i = 0; i < counts[k]; i++) mx = fmax(mx, fabs(res[1][k][i]));
            kn_tensor *got = kn_from_data(res[0][k], KN_F64, KN_SHAPE(counts[k]), KN_CPU);
            double *scaled = malloc((size_t)counts[k] * 8);
            for (int64_t i = 0; i < counts[k]; i++) scaled[i] = res[1][k][i] / mx;
            expect_close(what, kn_mul_scalar(got, 1 / mx), scaled, counts[k], 2e-5);
            free(scaled);
            free(res[0][k]);
            free(res[1][k]);
        }
    }
    /* Errors. */
    double one[4] = {1, 2, 3, 4};
    expect_error("batch_norm N=1 training", kn_batch_norm(mk(one, KN_F32, KN_SHAPE(1, 4)), NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                 "batch_norm: expected more than 1 value per channel when training");
    kn_tensor *rm = kn_zeros(KN_SHAPE(4), KN_F32, KN_CPU), *rv = kn_ones(KN_SHAPE(4), KN_F32, KN_CPU);
    CHECK(kn_batch_norm(mk(one, KN_F32, KN_SHAPE(1, 4)), rm, rv, NULL, NULL, false, 0.1, 1e-5) != NULL,
          "batch_norm N=1 in eval works: %s", kn_error());
    expect_error("batch_norm eval without stats", kn_batch_norm(mk(one, KN_F32, KN_SHAPE(2, 2)), NULL, NULL, NULL, NULL, false, 0.1, 1e-5),
                 "batch_norm: running_mean and running_var are needed when not training");
    expect_error("batch_norm weight shape", kn_batch_norm(mk(one, KN_F32, KN_SHAPE(2, 2)), NULL, NULL, rm, NULL, true, 0.1, 1e-5),
                 "batch_norm: weight must have shape [2], got [4]");
    expect_error("batch_norm 1-D", kn_batch_norm(mk(one, KN_F32, KN_SHAPE(4)), NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                 "batch_norm: expected a 2-D [N, C] or 3-D [N, C, L] input, got [4]");
    kn_scope_end(s);
}

/* ---- layer_norm ------------------------------------------------------------------------------------- */
static void test_layer_norm(void) {
    kn_scope s = kn_scope_begin();
    double x[3 * 2 * 4], w[8], b[8], y[24];
    fill_wave(x, 24, 0.2, 2.0);
    fill_wave(w, 8, 1.1, 1.0);
    fill_wave(b, 8, 2.3, 0.5);
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_F64 : KN_F32;
        double tol = dt ? 1e-12 : 2e-6;
        kn_tensor *X = mk(x, t, KN_SHAPE(3, 2, 4));
        ref_ln(x, 6, 4, w, b, 1e-5, y);
        expect_close("layer_norm last dim", kn_layer_norm(X, 1, mk(w, t, KN_SHAPE(4)), mk(b, t, KN_SHAPE(4)), 1e-5), y, 24, tol);
        ref_ln(x, 3, 8, w, b, 1e-5, y);
        expect_close("layer_norm last 2 dims", kn_layer_norm(X, 2, mk(w, t, KN_SHAPE(2, 4)), mk(b, t, KN_SHAPE(2, 4)), 1e-5), y, 24, tol);
        ref_ln(x, 1, 24, NULL, NULL, 1e-5, y);
        expect_close("layer_norm all dims, no affine", kn_layer_norm(X, 3, NULL, NULL, 1e-5), y, 24, tol);
        /* Non-contiguous: normalizing rows of x^T. */
        double xt[24];
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 4; j++) xt[j * 6 + i] = x[i * 4 + j];
        ref_ln(xt, 4, 6, NULL, NULL, 1e-5, y);
        kn_tensor *T = kn_transpose(mk(x, t, KN_SHAPE(6, 4)), 0, 1);
        expect_close("layer_norm strided", kn_layer_norm(T, 1, NULL, NULL, 1e-5), y, 24, tol);
    }
    kn_tensor *X = mk(x, KN_F32, KN_SHAPE(3, 2, 4));
    expect_error("layer_norm weight shape", kn_layer_norm(X, 2, mk(w, KN_F32, KN_SHAPE(8)), NULL, 1e-5),
                 "layer_norm: weight must have shape [2, 4], got [8]");
    expect_error("layer_norm ndims", kn_layer_norm(X, 4, NULL, NULL, 1e-5), "layer_norm: cannot normalize over the last 4 dims");
    kn_scope_end(s);
}

/* ---- dropout -------------------------------------------------------------------------------------------- */
static void test_dropout(void) {
    kn_scope s = kn_scope_begin();
    int64_t n = 200000;
    kn_tensor *x = kn_ones(KN_SHAPE(n), KN_F32, KN_CPU);
    kn_generator g1 = kn_generator_make(1234), g2 = kn_generator_make(1234);
    kn_tensor *y1 = kn_dropout(x, 0.3, true, &g1), *y2 = kn_dropout(x, 0.3, true, &g2);
    CHECK(g1.offset == (uint64_t)(n / 4), "dropout reserves n/4 counters (offset %llu)", (unsigned long long)g1.offset);
    double *a = host(y1), *b = host(y2);
    int64_t zeros = 0, bad = 0, same = 1;
    for (int64_t k = 0; k < n; k++) {
        zeros += a[k] == 0;
        bad += a[k] != 0 && fabs(a[k] - 1 / 0.7) > 1e-6;
        same &= a[k] == b[k];
    }
    double frac = (double)zeros / (double)n;
    CHECK(fabs(frac - 0.3) < 0.006, "dropout zero fraction %.4f, expected 0.3", frac);
    CHECK(bad == 0, "dropout: %lld kept values are not scaled by 1/(1-p)", (long long)bad);
    CHECK(same, "dropout: the same seed gives the same mask");
    kn_tensor *y3 = kn_dropout(x, 0.3, true, &g1);
    double *c = host(y3);
    int64_t diff = 0;
    for (int64_t k = 0; k < n; k++) diff += (a[k] == 0) != (c[k] == 0);
    CHECK(diff > n / 10, "dropout: the next call draws a new mask (%lld differences)", (long long)diff);
    free(a), free(b), free(c);
    /* Mean is preserved in expectation. */
    expect_scalar("dropout keeps the mean", kn_mean_all(y1), 1.0, 0.01);
    CHECK(kn_dropout(x, 0.3, false, NULL) == x, "dropout in eval returns the input itself");
    CHECK(kn_dropout(x, 0.0, true, NULL) == x, "dropout p=0 returns the input itself");
    kn_tensor *z = kn_dropout(x, 1.0, true, NULL);
    CHECK(z && kn_item(kn_sum_all(kn_abs(z))) == 0, "dropout p=1 gives zeros");
    expect_error("dropout p", kn_dropout(x, 1.5, true, NULL), "dropout: probability must be in [0, 1], got 1.5");
    /* Backward is grad * mask / (1 - p). */
    double xv[15];
    fill_wave(xv, 15, 0.9, 1.0);
    kn_tensor *X = kn_requires_grad_(mk(xv, KN_F64, KN_SHAPE(3, 5)), true);
    kn_generator g = kn_generator_make(7);
    kn_tensor *Y = kn_dropout(X, 0.4, true, &g);
    double G[15];
    fill_wave(G, 15, 0.3, 1.0);
    CHECK(kn_backward_with(Y, mk(G, KN_F64, KN_SHAPE(3, 5))) == KN_OK, "dropout backward: %s", kn_error());
    double *yv = host(Y), *gv = host(kn_grad(X)), worst = 0;
    for (int k = 0; k < 15; k++) worst = fmax(worst, fabs(gv[k] - (yv[k] != 0 ? G[k] / 0.6 : 0)));
    CHECK(worst < 1e-12, "dropout gradient off by %.3g", worst);
    free(yv), free(gv);
    /* p = 1 has gradient zero. */
    kn_zero_grad(X);
    CHECK(kn_backward(kn_sum_all(kn_dropout(X, 1.0, true, NULL))) == KN_OK && kn_item(kn_sum_all(kn_abs(kn_grad(X)))) == 0,
          "dropout p=1 gradient is zero");
    kn_scope_end(s);
}

/* ---- gradients -------------------------------------------------------------------------------------- */
typedef struct {
    int dim;
    bool log;
    kn_loss_opts opts;
    const int64_t *target;
    bool training;
    double rm[3], rv[3];
    int ndims;
    uint64_t seed;
    kn_reduction red;
} gctx;

static kn_tensor *f_softmax(kn_tensor **in, void *p) {
    gctx *c = p;
    return c->log ? kn_log_softmax(in[0], c->dim) : kn_softmax(in[0], c->dim);
}
static kn_tensor *f_ce(kn_tensor **in, void *p) {
    gctx *c = p;
    kn_loss_opts o = c->opts;
    if (o.weight) o.weight = kn_cast(o.weight, kn_dtype_of(in[0]));
    return kn_cross_entropy_ex(in[0], mk_i64(c->target, 4), &o);
}
static kn_tensor *f_nll(kn_tensor **in, void *p) {
    gctx *c = p;
    return kn_nll_loss(kn_log_softmax(in[0], 1), mk_i64(c->target, 4), &c->opts);
}
static kn_tensor *f_mse(kn_tensor **in, void *p) { return kn_mse_loss(in[0], in[1], ((gctx *)p)->red); }
static kn_tensor *f_bn(kn_tensor **in, void *p) {
    gctx *c = p;
    kn_tensor *rm = NULL, *rv = NULL;
    if (!c->training) {
        rm = mk(c->rm, kn_dtype_of(in[0]), KN_SHAPE(3));
        rv = mk(c->rv, kn_dtype_of(in[0]), KN_SHAPE(3));
    }
    return kn_batch_norm(in[0], rm, rv, in[1], in[2], c->training, 0.1, 1e-5);
}
static kn_tensor *f_bn_x_only(kn_tensor **in, void *p) {
    return kn_batch_norm(in[0], NULL, NULL, NULL, NULL, ((gctx *)p)->training, 0.1, 1e-5);
}
static kn_tensor *f_ln(kn_tensor **in, void *p) {
    return kn_layer_norm(in[0], ((gctx *)p)->ndims, in[1], in[2], 1e-5);
}
static kn_tensor *f_dropout(kn_tensor **in, void *p) {
    kn_generator g = kn_generator_make(((gctx *)p)->seed); /* the same mask every call */
    return kn_dropout(in[0], 0.5, true, &g);
}

/* The same functions with a transposed output: backward gets a strided gradient. */
static kn_tensor *f_softmax_t(kn_tensor **in, void *p) { return kn_transpose(f_softmax(in, p), 0, 1); }
static kn_tensor *f_bn_t(kn_tensor **in, void *p) { return kn_transpose(f_bn(in, p), 0, 1); }
static kn_tensor *f_ln_t(kn_tensor **in, void *p) { return kn_transpose(f_ln(in, p), 0, 1); }

static void test_gradients(void) {
    kn_scope s = kn_scope_begin();
    double x[60], y[60], w[8], b[8];
    fill_wave(x, 60, 0.5, 2.0);
    fill_wave(y, 60, 1.5, 1.0);
    fill_wave(w, 8, 1.1, 1.0);
    fill_wave(b, 8, 2.3, 0.5);
    gctx c = {0};
    c.dim = 0;
    grad_check("softmax dim 0", f_softmax, &c, 1, (spec[]){{2, {3, 4}, x}});
    c.dim = 1;
    grad_check("softmax dim 1", f_softmax, &c, 1, (spec[]){{2, {3, 4}, x}});
    c.log = true, c.dim = -1;
    grad_check("log_softmax dim -1", f_softmax, &c, 1, (spec[]){{2, {3, 4}, x}});
    c.dim = 1;
    grad_check("log_softmax [2, 3, 4] dim 1", f_softmax, &c, 1, (spec[]){{3, {2, 3, 4}, x}});
    c.log = false;
    grad_check("softmax [2, 3, 4] dim 1", f_softmax, &c, 1, (spec[]){{3, {2, 3, 4}, x}});

    c.opts = kn_loss_opts_default();
    c.target = TARGET;
    grad_check("cross_entropy", f_ce, &c, 1, (spec[]){{2, {4, 5}, LOGITS}});
    c.opts.weight = mk(CLASS_W, KN_F64, KN_SHAPE(5));
    c.opts.label_smoothing = 0.25;
    c.target = TARGET_IGN;
    grad_check("cross_entropy weight + smoothing + ignore", f_ce, &c, 1, (spec[]){{2, {4, 5}, LOGITS}});
    c.opts.reduction = KN_REDUCTION_NONE;
    grad_check("cross_entropy none", f_ce, &c, 1, (spec[]){{2, {4, 5}, LOGITS}});
    c.opts = kn_loss_opts_default();
    c.opts.reduction = KN_REDUCTION_SUM;
    c.target = TARGET;
    grad_check("nll_loss sum", f_nll, &c, 1, (spec[]){{2, {4, 5}, LOGITS}});
    c.opts.reduction = KN_REDUCTION_MEAN;
    c.opts.ignore_index = 0;
    grad_check("nll_loss mean ignore 0", f_nll, &c, 1, (spec[]){{2, {4, 5}, LOGITS}});

    for (int r = 0; r < 3; r++) {
        c.red = (kn_reduction)r;
        grad_check("mse_loss", f_mse, &c, 2, (spec[]){{2, {3, 4}, x}, {2, {3, 4}, y}});
    }

    c.training = true;
    grad_check("batch_norm train 2-D", f_bn, &c, 3, (spec[]){{2, {6, 3}, BN_X}, {1, {3}, BN_W}, {1, {3}, BN_B}});
    grad_check("batch_norm train 3-D", f_bn, &c, 3, (spec[]){{3, {4, 3, 5}, x}, {1, {3}, BN_W}, {1, {3}, BN_B}});
    grad_check("batch_norm train x only", f_bn_x_only, &c, 1, (spec[]){{3, {2, 3, 4}, x}});
    c.training = false;
    c.rm[0] = 0.3, c.rm[1] = -0.2, c.rm[2] = 0.1, c.rv[0] = 1.5, c.rv[1] = 0.7, c.rv[2] = 2.0;
    grad_check("batch_norm eval", f_bn, &c, 3, (spec[]){{3, {4, 3, 5}, x}, {1, {3}, BN_W}, {1, {3}, BN_B}});

    c.ndims = 1;
    grad_check("layer_norm last dim", f_ln, &c, 3, (spec[]){{3, {3, 2, 4}, x}, {1, {4}, w}, {1, {4}, b}});
    c.ndims = 2;
    grad_check("layer_norm last 2 dims", f_ln, &c, 3, (spec[]){{3, {3, 2, 4}, x}, {2, {2, 4}, w}, {2, {2, 4}, b}});

    c.seed = 99;
    grad_check("dropout", f_dropout, &c, 1, (spec[]){{2, {4, 6}, x}});

    /* Strided incoming gradients. */
    c.dim = 1, c.log = false;
    grad_check("softmax, transposed output", f_softmax_t, &c, 1, (spec[]){{2, {3, 4}, x}});
    c.log = true;
    grad_check("log_softmax, transposed output", f_softmax_t, &c, 1, (spec[]){{2, {3, 4}, x}});
    c.training = true;
    grad_check("batch_norm, transposed output", f_bn_t, &c, 3, (spec[]){{2, {6, 3}, BN_X}, {1, {3}, BN_W}, {1, {3}, BN_B}});
    c.ndims = 1;
    grad_check("layer_norm, transposed output", f_ln_t, &c, 3, (spec[]){{2, {5, 4}, x}, {1, {4}, w}, {1, {4}, b}});

    /* Larger shapes (vector main loops, tails and several threads): f32 against f64 only. */
    int64_t nb = 300 * 203;
    double *big = malloc((size_t)nb * 8), *bw = malloc(203 * 8), *bb = malloc(203 * 8);
    fill_wave(big, nb, 0.05, 3.0);
    fill_wave(bw, 203, 0.6, 1.0);
    fill_wave(bb, 203, 1.9, 1.0);
    c.log = false, c.dim = 1;
    grad_check_ex("softmax [300, 203]", f_softmax, &c, 1, (spec[]){{2, {300, 203}, big}}, false);
    c.log = true;
    grad_check_ex("log_softmax [300, 203]", f_softmax, &c, 1, (spec[]){{2, {300, 203}, big}}, false);
    grad_check_ex("log_softmax [4, 37, 80] dim 1", f_softmax, &c, 1, (spec[]){{3, {4, 37, 80}, big}}, false);
    c.ndims = 1;
    grad_check_ex("layer_norm [300, 203]", f_ln, &c, 3, (spec[]){{2, {300, 203}, big}, {1, {203}, bw}, {1, {203}, bb}}, false);
    c.training = true;
    grad_check_ex("batch_norm [300, 203]", f_bn_x_only, &c, 1, (spec[]){{2, {300, 203}, big}}, false);
    grad_check_ex("batch_norm [30, 7, 290]", f_bn_x_only, &c, 1, (spec[]){{3, {30, 7, 290}, big}}, false);
    grad_check_ex("batch_norm [70, 601]", f_bn_x_only, &c, 1, (spec[]){{2, {70, 601}, big}}, false);
    free(big), free(bw), free(bb);
    kn_scope_end(s);
}

/* ---- errors ----------------------------------------------------------------------------------------- */
static void test_errors(void) {
    kn_scope s = kn_scope_begin();
    double l[16] = {0};
    kn_tensor *L = mk(l, KN_F32, KN_SHAPE(4, 4));
    int64_t t[4] = {0, 1, 7, 2};
    expect_error("ce target shape", kn_cross_entropy(L, kn_from_data(t, KN_I64, KN_SHAPE(4, 1), KN_CPU)),
                 "cross_entropy: target must have shape [4], got [4, 1]");
    expect_error("ce target range", kn_cross_entropy(L, mk_i64(t, 4)),
                 "cross_entropy: target 7 is out of range for 4 classes");
    int64_t neg[4] = {0, -3, 1, 2};
    expect_error("ce negative target", kn_cross_entropy(L, mk_i64(neg, 4)),
                 "cross_entropy: target -3 is out of range for 4 classes");
    expect_error("nll target range", kn_nll_loss(L, mk_i64(t, 4), NULL), "nll_loss: target 7 is out of range for 4 classes");
    expect_error("ce float target", kn_cross_entropy(L, kn_zeros(KN_SHAPE(4), KN_F32, KN_CPU)),
                 "cross_entropy: target must be an integer tensor of class indices, got float32");
    expect_error("ce 1-D logits", kn_cross_entropy(mk(l, KN_F32, KN_SHAPE(16)), mk_i64(t, 4)),
                 "cross_entropy: logits must have shape [N, C], got [16]");
    kn_loss_opts o = kn_loss_opts_default();
    o.weight = kn_ones(KN_SHAPE(3), KN_F32, KN_CPU);
    expect_error("ce weight shape", kn_cross_entropy_ex(L, mk_i64(TARGET, 4), &o),
                 "cross_entropy: weight must have shape [4], got [3]");
    o = kn_loss_opts_default();
    o.label_smoothing = 1.5;
    expect_error("ce smoothing", kn_cross_entropy_ex(L, mk_i64(TARGET, 4), &o),
                 "cross_entropy: label_smoothing must be in [0, 1], got 1.5");
    o.label_smoothing = 0, o.reduction = (kn_reduction)7;
    expect_error("ce reduction", kn_cross_entropy_ex(L, mk_i64(TARGET, 4), &o), "cross_entropy: invalid reduction 7");
    CHECK(kn_cross_entropy(NULL, mk_i64(TARGET, 4)) == NULL, "ce(NULL) is NULL");
    CHECK(kn_batch_norm(NULL, NULL, NULL, NULL, NULL, true, 0.1, 1e-5) == NULL, "batch_norm(NULL) is NULL");
    CHECK(kn_layer_norm(NULL, 1, NULL, NULL, 1e-5) == NULL, "layer_norm(NULL) is NULL");
    CHECK(kn_dropout(NULL, 0.5, true, NULL) == NULL, "dropout(NULL) is NULL");
    CHECK(kn_mse_loss(NULL, L, KN_REDUCTION_MEAN) == NULL, "mse_loss(NULL) is NULL");
    kn_error_clear();
    kn_scope_end(s);
}

int main(void) {
    test_softmax();
    test_losses();
    test_batch_norm();
    test_layer_norm();
    test_dropout();
    test_gradients();
    test_errors();
    CHECK(kn_live_tensors() == 0, "%lld tensors leaked", (long long)kn_live_tensors());
    printf("nn_functional: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
