/* Gradients of complex leaves against central finite differences in float64.
 *
 * kiln follows PyTorch: for a real loss L of a complex z = x + iy, z's
 * gradient is dL/dx + i dL/dy (twice the conjugate Wirtinger derivative
 * dL/d(conj z)). The real view of the gradient is therefore the gradient of L
 * as a function of z's real pairs, which is what the differences below
 * measure, one pair component at a time. Every op kiln has on complex tensors
 * is covered: the views between complex and real pairs, real/imag/complex/
 * conj/abs, +, -, negation, scaling, casts and copies, views, and the FFTs.
 * tests/test_python_complex.py checks the same rules against torch.autograd. */
#include "kn_test.h"

#include "kiln/fft.h"

/* The loss of one case: a real scalar of the complex leaf z (and no other leaf). */
typedef kn_tensor *(*loss_fn)(kn_tensor *z, kn_tensor *w);

/* A fixed real weight per output pair component, so that every part counts. */
static kn_tensor *weights(int ndim, const int64_t *shape, int salt) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = sin(0.7 * (double)(i + 1) + salt) + 0.25;
    kn_tensor *t = kn_from_data(v, KN_F64, ndim, shape, KN_CPU);
    free(v);
    return t;
}

/* sum(w * view_as_real(y)) for a complex y, sum(w * y) for a real one; w is sized on first use. */
static kn_tensor *weigh(kn_tensor *y, int salt) {
    if (!y) return NULL;
    kn_tensor *r = kn_dtype_is_complex(kn_dtype_of(y)) ? kn_view_as_real(y) : y;
    if (!r) return NULL;
    return kn_sum(kn_mul(r, weights(kn_ndim(r), kn_shape(r), salt)), 0, NULL, false);
}

static kn_tensor *l_view_as_real(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return weigh(kn_view_as_real(z), 1);
}
static kn_tensor *l_round_trip(kn_tensor *z, kn_tensor *w) { /* complex -> pairs -> complex */
    (void)w;
    return weigh(kn_view_as_complex(kn_mul_scalar(kn_view_as_real(z), 3)), 2);
}
static kn_tensor *l_real_imag(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return kn_add(weigh(kn_real(z), 3), weigh(kn_mul(kn_imag(z), kn_imag(z)), 4));
}
static kn_tensor *l_abs(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return weigh(kn_abs(z), 5);
}
static kn_tensor *l_conj(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return weigh(kn_conj(z), 6);
}
static kn_tensor *l_arith(kn_tensor *z, kn_tensor *w) { /* -(z + 2.5 w) - z */
    return weigh(kn_sub(kn_neg(kn_add(z, kn_mul_scalar(w, 2.5))), z), 7);
}
static kn_tensor *l_with_real(kn_tensor *z, kn_tensor *w) { /* z + re(w) - im(w), a real operand each */
    return weigh(kn_sub(kn_add(z, kn_real(w)), kn_imag(w)), 8);
}
static kn_tensor *l_complex_of_parts(kn_tensor *z, kn_tensor *w) { /* complex(im z, re z * re z) */
    (void)w;
    return weigh(kn_complex(kn_imag(z), kn_mul(kn_real(z), kn_real(z))), 9);
}
static kn_tensor *l_views(kn_tensor *z, kn_tensor *w) {
    (void)w;
    kn_tensor *t = kn_transpose(z, 0, 1);
    return kn_add(weigh(kn_contiguous(t), 10), weigh(kn_select(kn_narrow(z, 1, 1, 2), 0, 1), 11));
}
static kn_tensor *l_reshape_clone(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return weigh(kn_clone(kn_reshape(z, KN_SHAPE(3, 2))), 12);
}
static kn_tensor *l_cast(kn_tensor *z, kn_tensor *w) { /* complex128 -> complex128 copy, and to */
    (void)w;
    return weigh(kn_to(kn_cast(z, KN_C128), KN_CPU), 13);
}
static kn_tensor *l_fft(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return kn_add(weigh(kn_fft(z, -1, 1, KN_FFT_NORM_BACKWARD), 14),
                  weigh(kn_fft(z, 5, -1, KN_FFT_NORM_ORTHO), 15)); /* padded */
}
static kn_tensor *l_ifft(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return kn_add(weigh(kn_ifft(z, 2, 1, KN_FFT_NORM_FORWARD), 16), /* cropped */
                  weigh(kn_abs(kn_ifft(z, -1, 0, KN_FFT_NORM_BACKWARD)), 17));
}
static kn_tensor *l_fft2(kn_tensor *z, kn_tensor *w) {
    (void)w;
    return kn_add(weigh(kn_fft2(z, NULL, NULL, KN_FFT_NORM_ORTHO), 18),
                  weigh(kn_ifft2(z, (int64_t[]){3, 4}, NULL, KN_FFT_NORM_BACKWARD), 19));
}
static kn_tensor *l_irfft(kn_tensor *z, kn_tensor *w) { /* a complex input to irfft */
    (void)w;
    return weigh(kn_irfft(z, 4, 1, KN_FFT_NORM_BACKWARD), 20);
}

/* L at z's pairs p (2 * 6 doubles), without recording. */
static double loss_at(loss_fn f, const double *p, kn_tensor *w) {
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    kn_tensor *l = f(kn_from_data(p, KN_C128, KN_SHAPE(2, 3), KN_CPU), w);
    double v = l ? kn_item(l) : NAN;
    kn_no_grad_end();
    kn_scope_end(s);
    return v;
}

static void check_case(const char *name, loss_fn f, kn_dtype dt) {
    kn_scope s = kn_scope_begin();
    double p[12];
    for (int i = 0; i < 12; i++) p[i] = cos(1.3 * i) + 0.1 * i - 0.4;
    const double wv[12] = {0.5, -1, 2, 0.25, -0.75, 1.5, 1, 1, -2, 0.5, 0.125, -0.5};
    kn_tensor *w = kn_from_data(wv, KN_C128, KN_SHAPE(2, 3), KN_CPU);
    kn_tensor *z = kn_cast(kn_from_data(p, KN_C128, KN_SHAPE(2, 3), KN_CPU), dt);
    CHECK(kn_requires_grad_(z, true) == z, "%s: a complex leaf may require grad", name);
    kn_tensor *l = f(z, w);
    CHECK(l && kn_dtype_is_float(kn_dtype_of(l)) && kn_backward(l) == KN_OK, "%s: backward", name);
    kn_tensor *g = kn_grad(z);
    CHECK(g && kn_dtype_of(g) == dt && kn_ndim(g) == 2 && kn_shape(g)[0] == 2 && kn_shape(g)[1] == 3,
          "%s: the gradient is %s of z's shape", name, kn_dtype_name(dt));
    double got[12] = {0};
    if (g && kn_to_host(g, got, KN_C128) != KN_OK) g = NULL;
    /* The exact p at the precision of dt, so the differences are taken where the gradient was. */
    double pd[12];
    CHECK(kn_to_host(z, pd, KN_C128) == KN_OK, "%s: host copy", name);
    const double h = 1e-6, tol = dt == KN_C64 ? 2e-3 : 1e-6;
    for (int i = 0; g && i < 12; i++) {
        double a[12], b[12];
        memcpy(a, pd, sizeof a);
        memcpy(b, pd, sizeof b);
        a[i] += h, b[i] -= h;
        double fd = (loss_at(f, a, w) - loss_at(f, b, w)) / (2 * h);
        CHECK(fabs(got[i] - fd) <= tol * (1 + fabs(fd)), "%s (%s): d/d%s(z[%d]) = %.9g, finite difference %.9g",
              name, kn_dtype_name(dt), i % 2 ? "Im" : "Re", i / 2, got[i], fd);
    }
    kn_scope_end(s);
}

/* |z| at 0 has no derivative; PyTorch takes 0 there (sgn(0) = 0), and so does kiln. */
static void test_abs_at_zero(void) {
    kn_scope s = kn_scope_begin();
    const double p[6] = {0, 0, 3, -4, -0.0, 0};
    kn_tensor *z = kn_requires_grad_(kn_from_data(p, KN_C128, KN_SHAPE(3), KN_CPU), true);
    CHECK(kn_backward(kn_sum(kn_abs(z), 0, NULL, false)) == KN_OK, "abs backward");
    double g[6] = {1, 1, 1, 1, 1, 1};
    CHECK(kn_grad(z) && kn_to_host(kn_grad(z), g, KN_C128) == KN_OK, "abs grad");
    CHECK(g[0] == 0 && g[1] == 0 && g[4] == 0 && g[5] == 0, "abs'(0) = 0: %g %g %g %g", g[0], g[1], g[4], g[5]);
    CHECK_NEAR(g[2], 0.6, 1e-15);
    CHECK_NEAR(g[3], -0.8, 1e-15);
    kn_scope_end(s);
}

/* A real leaf that meets complex ops gets a real gradient: the real part of
 * what flows back (PyTorch's rule for a real input of a complex function). */
static void test_real_leaf(void) {
    kn_scope s = kn_scope_begin();
    const double xv[3] = {0.5, -1, 2}, zv[6] = {1, 2, 3, 4, 5, 6}, wv[6] = {0.25, -3, 1.5, 7, -2, 0.5};
    kn_tensor *x = kn_requires_grad_(kn_from_data(xv, KN_F64, KN_SHAPE(3), KN_CPU), true);
    kn_tensor *w = kn_from_data(wv, KN_F64, KN_SHAPE(3, 2), KN_CPU);
    kn_tensor *y = kn_add(kn_from_data(zv, KN_C128, KN_SHAPE(3), KN_CPU), x); /* z + x: x moves the real parts */
    CHECK(kn_backward(kn_sum(kn_mul(kn_view_as_real(y), w), 0, NULL, false)) == KN_OK, "backward to a real leaf");
    double g[3] = {0};
    CHECK(kn_grad(x) && kn_dtype_of(kn_grad(x)) == KN_F64 && kn_to_host(kn_grad(x), g, KN_F64) == KN_OK &&
              g[0] == wv[0] && g[1] == wv[2] && g[2] == wv[4],
          "d/dx = the weights of the real parts: %g %g %g", g[0], g[1], g[2]);
    kn_scope_end(s);
}

/* The optimizers step a complex parameter as its real pairs, each part on
 * its own (PyTorch's rule): three steps on a complex leaf must give the bits
 * of the same optimizer on a real leaf holding the pairs, with the same loss
 * (sum of w * pairs^2, whose gradient differs per part). */
static kn_optim *make_opt(int kind, kn_tensor *p) {
    kn_adam_opts ao = kn_adam_defaults(0.1);
    ao.weight_decay = 0.01;
    kn_sgd_opts so = kn_sgd_defaults(0.1);
    so.momentum = 0.9, so.nesterov = true;
    return kind == 0 ? kn_adam_params(1, &p, ao) : kind == 1 ? kn_adamw_params(1, &p, ao) : kn_sgd_params(1, &p, so);
}

static void test_optimizers(kn_dtype dt) {
    static const char *names[3] = {"adam", "adamw", "sgd"};
    kn_dtype rt = dt == KN_C64 ? KN_F32 : KN_F64;
    const double v[8] = {1, -2, 0.5, 3, -1.5, 0.25, 2, -0.75}, wv[8] = {1, 2, 0.5, 3, 1.5, 0.25, 4, 0.75};
    for (int kind = 0; kind < 3; kind++) {
        kn_scope s = kn_scope_begin();
        kn_tensor *z = kn_requires_grad_(kn_to_dtype(kn_from_data(v, KN_C128, KN_SHAPE(4), KN_CPU), KN_CPU, dt), true);
        kn_tensor *r = kn_requires_grad_(kn_to_dtype(kn_from_data(v, KN_F64, KN_SHAPE(4, 2), KN_CPU), KN_CPU, rt), true);
        kn_tensor *w = kn_to_dtype(kn_from_data(wv, KN_F64, KN_SHAPE(4, 2), KN_CPU), KN_CPU, rt);
        kn_optim *oz = make_opt(kind, z), *orr = make_opt(kind, r);
        bool ok = oz && orr;
        for (int step = 0; ok && step < 3; step++) {
            kn_scope st = kn_scope_begin();
            kn_optim_zero_grad(oz), kn_optim_zero_grad(orr);
            kn_tensor *pz = kn_view_as_real(z);
            ok = kn_backward(kn_sum_all(kn_mul(kn_mul(pz, pz), w))) == KN_OK &&
                 kn_backward(kn_sum_all(kn_mul(kn_mul(r, r), w))) == KN_OK && kn_optim_step(oz) == KN_OK &&
                 kn_optim_step(orr) == KN_OK;
            kn_scope_end(st);
        }
        double a[8] = {0}, b[8] = {1};
        ok = ok && kn_to_host(z, a, KN_C128) == KN_OK && kn_to_host(r, b, KN_F64) == KN_OK;
        CHECK(ok && !memcmp(a, b, sizeof a) && a[0] != v[0], "%s on a %s leaf = %s on its real pairs (%s)", names[kind],
              kn_dtype_name(dt), names[kind], ok ? "compared" : kn_error());
        kn_optim_free(oz), kn_optim_free(orr);
        kn_scope_end(s);
    }
}

/* What is refused, and why. */
static void test_refusals(void) {
    kn_scope s = kn_scope_begin();
    const double p[4] = {1, 2, 3, 4};
    kn_tensor *z = kn_requires_grad_(kn_from_data(p, KN_C128, KN_SHAPE(2), KN_CPU), true);
    /* A complex result has no implicit gradient of 1 (PyTorch refuses it too). */
    kn_tensor *y = kn_select(kn_mul_scalar(z, 2), 0, 0);
    kn_error_clear();
    CHECK(kn_backward(y) == KN_ERR_AUTOGRAD, "backward from a complex scalar");
    CHECK_ERROR("backward: the tensor is complex128; backward starts from a real loss");
    /* With its gradient given, it runs: dL = Re(conj(g) dy), here g = 1 - 2i. */
    const double gv[2] = {1, -2};
    CHECK(kn_backward_with(y, kn_from_data(gv, KN_C128, 0, NULL, KN_CPU)) == KN_OK, "backward_with a complex grad");
    double g[4] = {0};
    CHECK(kn_grad(z) && kn_to_host(kn_grad(z), g, KN_C128) == KN_OK && g[0] == 2 && g[1] == -4 && g[2] == 0 &&
              g[3] == 0,
          "grad of 2 z[0] with upstream 1 - 2i: %g%+gi %g%+gi", g[0], g[1], g[2], g[3]);
    /* Ops without complex support refuse in the forward pass, naming themselves. */
    kn_error_clear();
    CHECK(kn_mul(z, z) == NULL, "complex mul is refused");
    CHECK_ERROR("mul: complex128 is not supported");
    /* Integer leaves still cannot require grad. */
    kn_error_clear();
    CHECK(kn_requires_grad_(kn_zeros(KN_SHAPE(2), KN_I32, KN_CPU), true) == NULL, "int32 leaf refused");
    CHECK_ERROR("only floating-point and complex tensors can require gradients, not int32");
    kn_scope_end(s);
}

int main(void) {
    int64_t live = kn_live_tensors();
    static const struct {
        const char *name;
        loss_fn f;
    } cases[] = {{"view_as_real", l_view_as_real}, {"view_as_complex", l_round_trip}, {"real/imag", l_real_imag},
                 {"abs", l_abs},   {"conj", l_conj},       {"add/sub/neg/mul_scalar", l_arith},
                 {"with a real operand", l_with_real},      {"complex(re, im)", l_complex_of_parts},
                 {"views", l_views}, {"reshape/clone", l_reshape_clone}, {"cast/to", l_cast},
                 {"fft", l_fft},   {"ifft", l_ifft},       {"fft2/ifft2", l_fft2}, {"irfft", l_irfft}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        check_case(cases[k].name, cases[k].f, KN_C128);
        check_case(cases[k].name, cases[k].f, KN_C64);
    }
    test_abs_at_zero();
    test_real_leaf();
    test_refusals();
    test_optimizers(KN_C128);
    test_optimizers(KN_C64);
    CHECK(kn_live_tensors() == live, "no tensor left alive");
    return kt_finish("complex_grad");
}
