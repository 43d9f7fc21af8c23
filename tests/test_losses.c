/* The elementwise losses (mse_ex, l1, huber, smooth_l1, bce, bce_with_logits)
 * and sin / cos / tan: values against double references written here from
 * the formulas, in float64 and float32, every reduction; gradients against
 * finite differences on every test device; the edges PyTorch defines (a
 * probability of exactly 0 or 1, huge logits, beta 0); and the errors for
 * options a loss does not use. tests/test_python_nn.py checks the same
 * losses against PyTorch itself. */
#include "kn_test.h"

#define N 12

static kn_tensor *mk(const double *v, kn_dtype dt, int nd, const int64_t *shape) {
    kn_tensor *t = kn_from_data(v, KN_F64, nd, shape, KN_CPU);
    return dt == KN_F64 ? t : kn_cast(t, dt);
}

/* got (any shape, n elements) against ref: |got - ref| <= tol (1 + |ref|). */
static void expect(const char *what, kn_tensor *got, const double *ref, int64_t n, double tol) {
    double buf[64];
    CHECK(got && kn_numel(got) == n && n <= 64, "%s: a result of %lld elements", what, got ? (long long)kn_numel(got) : -1LL);
    if (!got || kn_numel(got) != n || n > 64 || kn_to_host(got, buf, KN_F64) != KN_OK) return;
    for (int64_t k = 0; k < n; k++)
        if (!(fabs(buf[k] - ref[k]) <= tol * (1 + fabs(ref[k])))) {
            CHECK(0, "%s: element %lld is %.12g, expected %.12g", what, (long long)k, buf[k], ref[k]);
            return;
        }
    CHECK(1, "%s", what);
}

/* ---- references ------------------------------------------------------------------------------ */
enum { MSE, L1, HUBER, SMOOTH, BCE, BCEL, N_LOSSES };
static const char *names[N_LOSSES] = {"mse", "l1", "huber", "smooth_l1", "bce", "bce_with_logits"};

/* The loss of one element: x input, y target, w weight, p pos_weight. */
static double ref_elem(int loss, double x, double y, double w, double p, double delta, double beta) {
    double d = x - y, a = fabs(d);
    switch (loss) {
    case MSE: return d * d;
    case L1: return a;
    case HUBER: return a < delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
    case SMOOTH: return beta == 0 ? a : a < beta ? 0.5 * d * d / beta : a - 0.5 * beta;
    case BCE: return -w * (y * fmax(log(x), -100) + (1 - y) * fmax(log(1 - x), -100));
    default: { /* from the definition, with the sigmoid's logs written stably */
        double ls = x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); /* log sigmoid(x) */
        double l1s = ls - x;                                        /* log(1 - sigmoid(x)) */
        return -w * (p * y * ls + (1 - y) * l1s);
    }
    }
}

static kn_tensor *run_loss(int loss, kn_tensor *x, kn_tensor *y, const kn_loss_opts *o) {
    switch (loss) {
    case MSE: return kn_mse_loss_ex(x, y, o);
    case L1: return kn_l1_loss(x, y, o);
    case HUBER: return kn_huber_loss(x, y, o);
    case SMOOTH: return kn_smooth_l1_loss(x, y, o);
    case BCE: return kn_bce_loss(x, y, o);
    default: return kn_bce_with_logits_loss(x, y, o);
    }
}

/* Inputs [3, 4]: for bce probabilities in (0, 1); weights [4] and pos_weight [4]. */
static void make_inputs(int loss, kn_generator *g, double *x, double *y, double *w, double *p) {
    kn_tensor *u = kn_rand(KN_SHAPE(4 * N), KN_F64, KN_CPU, g);
    double r[4 * N];
    kn_to_host(u, r, KN_F64);
    for (int k = 0; k < N; k++) {
        x[k] = loss == BCE ? 0.02 + 0.96 * r[k] : loss == BCEL ? 16 * r[k] - 8 : 4 * r[k] - 2;
        y[k] = loss >= BCE ? r[N + k] : 4 * r[N + k] - 2;
    }
    for (int k = 0; k < 4; k++) w[k] = 0.5 + 1.5 * r[2 * N + k], p[k] = 0.3 + 3 * r[3 * N + k];
}

static void test_values(void) {
    kn_scope s = kn_scope_begin();
    kn_generator g = kn_generator_make(41);
    for (int loss = 0; loss < N_LOSSES; loss++)
        for (int dti = 0; dti < 2; dti++)
            for (int red = 0; red < 3; red++)
                for (int opt = 0; opt < (loss >= BCE ? 2 : 1); opt++) {
                    kn_dtype dt = dti ? KN_F32 : KN_F64;
                    double x[N], y[N], w[4], p[4], ref[N], sum = 0;
                    make_inputs(loss, &g, x, y, w, p);
                    double delta = 0.8, beta = loss == SMOOTH && red == 2 ? 0 : 0.6; /* beta 0 once: l1 */
                    kn_loss_opts o = kn_loss_opts_default();
                    o.reduction = (kn_reduction)red;
                    o.delta = delta;
                    o.beta = beta;
                    if (opt) { /* bce: weight [4]; bce_with_logits: weight and pos_weight [4] */
                        o.weight = mk(w, dt, KN_SHAPE(4));
                        if (loss == BCEL) o.pos_weight = mk(p, dt, KN_SHAPE(4));
                    }
                    for (int k = 0; k < N; k++) {
                        ref[k] = ref_elem(loss, x[k], y[k], opt ? w[k % 4] : 1, opt && loss == BCEL ? p[k % 4] : 1,
                                          delta, beta);
                        sum += ref[k];
                    }
                    kn_tensor *r = run_loss(loss, mk(x, dt, KN_SHAPE(3, 4)), mk(y, dt, KN_SHAPE(3, 4)), &o);
                    char what[96];
                    snprintf(what, sizeof what, "%s %s reduction %d%s", names[loss], kn_dtype_name(dt), red,
                             opt ? " weighted" : "");
                    double tol = dt == KN_F64 ? 1e-12 : 2e-6;
                    if (red == 2) {
                        CHECK(r && kn_ndim(r) == 2 && kn_size(r, 1) == 4, "%s keeps the input's shape", what);
                        expect(what, r, ref, N, tol);
                    } else {
                        double v = red == 1 ? sum : sum / N;
                        CHECK(r && kn_ndim(r) == 0, "%s is 0-d", what);
                        expect(what, r, &v, 1, tol);
                    }
                    CHECK(!r || kn_dtype_of(r) == dt, "%s stays %s", what, kn_dtype_name(dt));
                }
    /* The old mse form is the new one with a reduction. */
    double a[3] = {1, 2, 3}, b[3] = {0, 4, 3}, m = (1 + 4 + 0) / 3.0;
    expect("mse_loss (reduction form)", kn_mse_loss(mk(a, KN_F64, KN_SHAPE(3)), mk(b, KN_F64, KN_SHAPE(3)),
                                                    KN_REDUCTION_MEAN), &m, 1, 1e-15);
    expect("mse_loss_ex NULL opts: mean", kn_mse_loss_ex(mk(a, KN_F64, KN_SHAPE(3)), mk(b, KN_F64, KN_SHAPE(3)), NULL),
           &m, 1, 1e-15);
    kn_scope_end(s);
}

/* ---- gradients --------------------------------------------------------------------------------- */
typedef struct {
    int loss, red;
    bool weighted;
} gctx;

static kn_tensor *f_loss(kn_tensor **in, void *p) {
    const gctx *c = p;
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = (kn_reduction)c->red;
    o.delta = 0.8;
    o.beta = 0.6;
    if (c->weighted) {
        double w[4] = {0.5, 2, 1, 1.5}, pw[4] = {3, 0.5, 1, 2};
        kn_device d = kn_device_of(in[0]);
        o.weight = kn_to(kn_from_data(w, KN_F64, KN_SHAPE(4), KN_CPU), d);
        if (c->loss == BCEL) o.pos_weight = kn_to(kn_from_data(pw, KN_F64, KN_SHAPE(4), KN_CPU), d);
    }
    kn_tensor *x = in[0], *y = in[1];
    if (c->loss == BCE) { /* probabilities and targets in (0, 1) from any reals */
        x = kn_add_scalar(kn_mul_scalar(kn_sigmoid(x), 0.9), 0.05);
        y = kn_sigmoid(y);
    } else if (c->loss == BCEL) {
        x = kn_mul_scalar(x, 3);
        y = kn_sigmoid(y);
    }
    return run_loss(c->loss, x, y, &o);
}

static void test_gradients(void) {
    kn_device devs[8];
    int nd = kt_devices(devs, 8);
    for (int d = 0; d < nd; d++)
        for (int loss = 0; loss < N_LOSSES; loss++)
            for (int red = 0; red < 3; red++) {
                kn_scope s = kn_scope_begin();
                gctx c = {loss, red, loss >= BCE && red != 1};
                kn_generator g = kn_generator_make(7 + (uint64_t)loss * 3 + (uint64_t)red);
                kn_tensor *x[2] = {kn_to(kn_randn(KN_SHAPE(3, 4), KN_F64, KN_CPU, &g), devs[d]),
                                   kn_to(kn_randn(KN_SHAPE(3, 4), KN_F64, KN_CPU, &g), devs[d])};
                double err = kn_gradcheck(f_loss, 2, x, &c, 1e-6);
                CHECK(err >= 0 && err < 1e-6, "gradcheck %s reduction %d on %s: error %g", names[loss], red,
                      kn_device_str(devs[d]), err);
                kn_scope_end(s);
            }
}

/* ---- PyTorch's edges ------------------------------------------------------------------------------ */
static void test_edges(void) {
    kn_scope s = kn_scope_begin();
    /* bce at probabilities 0 and 1: each log costs at most 100; the gradient
     * is PyTorch's (x - y) / max(x (1 - x), 1e-12), finite. */
    double x[4] = {0, 1, 0, 1}, y[4] = {1, 0, 0, 1};
    kn_tensor *X = kn_requires_grad_(mk(x, KN_F64, KN_SHAPE(4)), true);
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = KN_REDUCTION_NONE;
    kn_tensor *l = kn_bce_loss(X, mk(y, KN_F64, KN_SHAPE(4)), &o);
    double want[4] = {100, 100, 0, 0};
    expect("bce at 0 and 1 (clamped logs)", l, want, 4, 0);
    CHECK(kn_backward(kn_sum_all(l)) == KN_OK, "bce backward at 0 and 1");
    double e = (double)1e-12f, gw[4] = {-1 / e, 1 / e, 0, 0}; /* PyTorch's eps: the float 1e-12 */
    expect("bce gradient at 0 and 1 is finite", kn_grad(X), gw, 4, 1e-12);
    /* bce_with_logits at huge logits: no overflow, the loss is linear. */
    double z[4] = {-200, 200, 1000, -1000}, t[4] = {1, 0, 1, 0};
    kn_tensor *Z = kn_requires_grad_(mk(z, KN_F32, KN_SHAPE(4)), true);
    kn_tensor *lz = kn_bce_with_logits_loss(Z, mk(t, KN_F32, KN_SHAPE(4)), &o);
    double wz[4] = {200, 200, 0, 0};
    expect("bce_with_logits at huge logits", lz, wz, 4, 1e-6);
    CHECK(kn_backward(kn_sum_all(lz)) == KN_OK, "bce_with_logits backward at huge logits");
    double gz[4] = {-1, 1, 0, 0}; /* sigmoid(z) - t */
    expect("bce_with_logits gradient at huge logits", kn_grad(Z), gz, 4, 1e-6);
    /* huber and smooth_l1 at the joint: both pieces agree there. */
    double j[2] = {0.8, -0.8}, zero[2] = {0, 0}, hj[2] = {0.32, 0.32};
    o.delta = 0.8;
    expect("huber at |d| = delta", kn_huber_loss(mk(j, KN_F64, KN_SHAPE(2)), mk(zero, KN_F64, KN_SHAPE(2)), &o), hj,
           2, 1e-15);
    /* Integer inputs compute in float32, as mse_loss does. */
    int64_t ia[3] = {1, 5, -2}, ib[3] = {0, 0, 0};
    kn_tensor *il = kn_l1_loss(kn_from_data(ia, KN_I64, KN_SHAPE(3), KN_CPU), kn_from_data(ib, KN_I64, KN_SHAPE(3), KN_CPU),
                               NULL);
    double im = 8 / 3.0;
    CHECK(il && kn_dtype_of(il) == KN_F32, "l1_loss of int64 is float32");
    expect("l1_loss of int64", il, &im, 1, 1e-6);
    kn_scope_end(s);
}

static void test_errors(void) {
    kn_scope s = kn_scope_begin();
    double v[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
    kn_tensor *a = mk(v, KN_F32, KN_SHAPE(2, 3)), *b = mk(v, KN_F32, KN_SHAPE(2, 3));
    kn_loss_opts o = kn_loss_opts_default();
    CHECK(!kn_l1_loss(a, mk(v, KN_F32, KN_SHAPE(6)), &o), "l1 shapes");
    CHECK_ERROR("l1_loss: input [2, 3] and target [6] must have the same shape");
    o.weight = mk(v, KN_F32, KN_SHAPE(3));
    CHECK(!kn_huber_loss(a, b, &o), "huber with a weight");
    CHECK_ERROR("huber_loss: option weight is not used by this loss");
    CHECK(kn_bce_loss(a, b, &o) != NULL, "bce takes a weight [3] for [2, 3]: %s", kn_error());
    o.weight = mk(v, KN_F32, KN_SHAPE(2));
    CHECK(!kn_bce_loss(a, b, &o), "bce weight [2] for [2, 3]");
    CHECK_ERROR("bce_loss:");
    o = kn_loss_opts_default();
    o.pos_weight = mk(v, KN_F32, KN_SHAPE(3));
    CHECK(!kn_bce_loss(a, b, &o), "bce with pos_weight");
    CHECK_ERROR("bce_loss: option pos_weight is not used by this loss");
    int64_t tg[2] = {0, 1};
    CHECK(!kn_cross_entropy_ex(a, kn_from_data(tg, KN_I64, KN_SHAPE(2), KN_CPU), &o), "cross_entropy with pos_weight");
    CHECK_ERROR("cross_entropy: option pos_weight is not used");
    o = kn_loss_opts_default();
    o.label_smoothing = 0.1;
    CHECK(!kn_mse_loss_ex(a, b, &o), "mse with label smoothing");
    CHECK_ERROR("mse_loss: option label_smoothing is not used");
    o = kn_loss_opts_default();
    o.delta = 0;
    CHECK(!kn_huber_loss(a, b, &o), "huber delta 0");
    CHECK_ERROR("huber_loss: delta must be positive");
    o = kn_loss_opts_default();
    o.beta = -1;
    CHECK(!kn_smooth_l1_loss(a, b, &o), "smooth_l1 beta -1");
    CHECK_ERROR("smooth_l1_loss: beta must be >= 0");
    o = kn_loss_opts_default();
    o.reduction = (kn_reduction)7;
    CHECK(!kn_bce_with_logits_loss(a, b, &o), "bad reduction");
    CHECK_ERROR("bce_with_logits_loss: invalid reduction 7");
    int64_t iv[6] = {0, 1, 0, 1, 1, 0};
    CHECK(!kn_bce_loss(kn_from_data(iv, KN_I64, KN_SHAPE(2, 3), KN_CPU), b, NULL), "bce of integers");
    CHECK_ERROR("bce_loss: input must be floating point");
    CHECK(!kn_bce_with_logits_loss(NULL, b, NULL), "NULL input");
    kn_scope_end(s);
}

/* ---- sin, cos, tan ------------------------------------------------------------------------------- */
static void test_trig(void) {
    kn_scope s = kn_scope_begin();
    double x[6] = {0, M_PI / 6, M_PI / 4, -1.3, 2.5, 40}, rs[6], rc[6], rt[6];
    for (int k = 0; k < 6; k++) rs[k] = sin(x[k]), rc[k] = cos(x[k]), rt[k] = tan(x[k]);
    for (int dti = 0; dti < 2; dti++) {
        kn_dtype dt = dti ? KN_F32 : KN_F64;
        double tol = dti ? 1e-6 : 1e-15;
        kn_tensor *t = mk(x, dt, KN_SHAPE(6));
        expect(dti ? "sin float32" : "sin float64", kn_sin(t), rs, 6, tol);
        expect(dti ? "cos float32" : "cos float64", kn_cos(t), rc, 6, tol);
        expect(dti ? "tan float32" : "tan float64", kn_tan(t), rt, 6, tol);
    }
    int64_t i3[1] = {3};
    kn_tensor *si = kn_sin(kn_from_data(i3, KN_I64, KN_SHAPE(1), KN_CPU));
    double s3 = sin(3.0);
    CHECK(si && kn_dtype_of(si) == KN_F32, "sin of int64 is float32");
    expect("sin of int64", si, &s3, 1, 1e-6);
    /* d/dx: cos, -sin, 1 / cos^2 */
    kn_tensor *X = kn_requires_grad_(mk(x, KN_F64, KN_SHAPE(6)), true);
    CHECK(kn_backward(kn_sum_all(kn_add(kn_add(kn_sin(X), kn_cos(X)), kn_tan(X)))) == KN_OK, "trig backward");
    double gr[6];
    for (int k = 0; k < 6; k++) gr[k] = cos(x[k]) - sin(x[k]) + 1 / (cos(x[k]) * cos(x[k]));
    expect("trig gradients", kn_grad(X), gr, 6, 1e-13);
    kn_scope_end(s);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    test_values();
    test_gradients();
    test_edges();
    test_errors();
    test_trig();
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("losses");
}
