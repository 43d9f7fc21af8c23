/* The pieces of a training loop around the model: gradient clipping (norm
 * and value), the reduce-on-plateau schedule, mini-batches, and loading a
 * model from a file in one call. References are computed here from the
 * definitions (PyTorch's, for clipping and the schedule; tests/test_python_nn.py
 * compares with PyTorch itself). Clipping and batches run on every test device. */
#include "kn_test.h"

#include <stdio.h>

static kn_tensor *vec(const double *v, int64_t n, kn_device d) {
    return kn_to(kn_from_data(v, KN_F64, 1, &n, KN_CPU), d);
}

static bool equal_to(kn_tensor *t, const double *ref, int64_t n, double tol) {
    double buf[64];
    if (!t || kn_numel(t) != n || n > 64 || kn_to_host(t, buf, KN_F64) != KN_OK) return false;
    for (int64_t k = 0; k < n; k++)
        if (!(fabs(buf[k] - ref[k]) <= tol * (1 + fabs(ref[k])))) return false;
    return true;
}

/* ---- clipping --------------------------------------------------------------------------------- */
/* Three parameters whose gradients become g0 [3], g1 [2, 2] and none (the third gets none). */
static const double G0[3] = {3, -4, 1}, G1[4] = {0.5, -2, 6, 0};

static void make_params(kn_tensor **p, kn_device d, kn_dtype dt) {
    double z[4] = {0};
    p[0] = kn_requires_grad_(kn_cast(vec(z, 3, d), dt), true);
    p[1] = kn_requires_grad_(kn_cast(kn_reshape(vec(z, 4, d), KN_SHAPE(2, 2)), dt), true);
    p[2] = kn_requires_grad_(kn_cast(vec(z, 2, d), dt), true);
    /* d/dp sum(p * g) = g */
    kn_tensor *l = kn_add(kn_sum_all(kn_mul(p[0], kn_cast(vec(G0, 3, d), dt))),
                          kn_sum_all(kn_mul(p[1], kn_cast(kn_reshape(vec(G1, 4, d), KN_SHAPE(2, 2)), dt))));
    CHECK(kn_backward(l) == KN_OK, "backward for the gradients");
}

static double ref_norm(double p) {
    double s = 0, m = 0;
    for (int k = 0; k < 3; k++) s += pow(fabs(G0[k]), p), m = fmax(m, fabs(G0[k]));
    for (int k = 0; k < 4; k++) s += pow(fabs(G1[k]), p), m = fmax(m, fabs(G1[k]));
    return isinf(p) ? m : pow(s, 1 / p);
}

static void test_clip_norm(kn_device d) {
    const double types[4] = {2, INFINITY, 1, 3};
    for (int dti = 0; dti < 2; dti++)
        for (int ti = 0; ti < 4; ti++)
            for (int big = 0; big < 2; big++) {
                kn_scope s = kn_scope_begin();
                kn_dtype dt = dti ? KN_F32 : KN_F64;
                kn_tensor *p[3];
                make_params(p, d, dt);
                double want = ref_norm(types[ti]), max_norm = big ? 100 : 1.5;
                double norm = kn_clip_grad_norm(3, p, max_norm, types[ti], true);
                double tol = dt == KN_F64 ? 1e-12 : 1e-6;
                CHECK(fabs(norm - want) <= tol * want, "clip_grad_norm p=%g %s on %s: norm %.10g, expected %.10g",
                      types[ti], kn_dtype_name(dt), kn_device_str(d), norm, want);
                double c = fmin(1, max_norm / (want + 1e-6)), g0[3], g1[4];
                for (int k = 0; k < 3; k++) g0[k] = G0[k] * c;
                for (int k = 0; k < 4; k++) g1[k] = G1[k] * c;
                CHECK(equal_to(kn_grad(p[0]), g0, 3, tol) && equal_to(kn_grad(p[1]), g1, 4, tol),
                      "clip_grad_norm p=%g %s max %g on %s scales by %g", types[ti], kn_dtype_name(dt), max_norm,
                      kn_device_str(d), c);
                CHECK(kn_grad(p[2]) == NULL, "a parameter without a gradient stays so");
                kn_scope_end(s);
            }
    /* Non-finite: an error with the gradients unchanged, or (allowed) PyTorch's NaN scaling. */
    kn_scope s = kn_scope_begin();
    double bad[2] = {NAN, 1};
    kn_tensor *q = kn_requires_grad_(vec((double[]){0, 0}, 2, d), true);
    CHECK(kn_backward(kn_sum_all(kn_mul(q, vec(bad, 2, d)))) == KN_OK, "backward with NaN");
    CHECK(kn_clip_grad_norm(1, &q, 1, 2, true) < 0, "a NaN norm is an error");
    CHECK_ERROR("clip_grad_norm: the total norm of the gradients is ");
    double g[2];
    CHECK(kn_to_host(kn_grad(q), g, KN_F64) == KN_OK && isnan(g[0]) && g[1] == 1, "gradients unchanged after the error");
    double r = kn_clip_grad_norm(1, &q, 1, 2, false); /* warns on stderr */
    CHECK(isnan(r), "the NaN norm is returned");
    CHECK(kn_to_host(kn_grad(q), g, KN_F64) == KN_OK && isnan(g[1]), "scaled by NaN, as PyTorch");
    kn_scope_end(s);
}

static void test_clip_value(kn_device d) {
    kn_scope s = kn_scope_begin();
    kn_tensor *p[3];
    make_params(p, d, KN_F32);
    CHECK(kn_clip_grad_value(3, p, 2.5) == KN_OK, "clip_grad_value");
    double g0[3], g1[4];
    for (int k = 0; k < 3; k++) g0[k] = fmax(-2.5, fmin(2.5, G0[k]));
    for (int k = 0; k < 4; k++) g1[k] = fmax(-2.5, fmin(2.5, G1[k]));
    CHECK(equal_to(kn_grad(p[0]), g0, 3, 0) && equal_to(kn_grad(p[1]), g1, 4, 0), "clip_grad_value clamps on %s",
          kn_device_str(d));
    CHECK(kn_clip_grad_value(3, p, -1) != KN_OK, "a negative clip");
    CHECK_ERROR("clip_grad_value: clip must be >= 0");
    kn_scope_end(s);
}

static void test_clip_module(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(3);
    kn_module *m = kn_nn_linear(4, 2, true);
    kn_tensor *x = kn_randn(KN_SHAPE(5, 4), KN_F32, KN_CPU, NULL);
    CHECK(kn_backward(kn_sum_all(kn_mul_scalar(kn_module_forward(m, x), 10))) == KN_OK, "module backward");
    int n = 0;
    const kn_named_tensor *ps = kn_module_parameters(m, &n);
    double sq = 0, buf[8];
    for (int i = 0; i < n; i++) {
        int64_t k = kn_numel(ps[i].tensor);
        kn_to_host(kn_grad(ps[i].tensor), buf, KN_F64);
        for (int64_t j = 0; j < k; j++) sq += buf[j] * buf[j];
    }
    double norm = kn_module_clip_grad_norm(m, 0.5, 2, false);
    CHECK(fabs(norm - sqrt(sq)) <= 1e-5 * sqrt(sq), "module norm %g, expected %g", norm, sqrt(sq));
    CHECK(kn_module_clip_grad_norm(m, 0.5, 2, false) <= 0.5 + 1e-5, "after clipping the norm is max_norm");
    CHECK(kn_module_clip_grad_value(m, 0.01) == KN_OK, "module clip_grad_value");
    CHECK(kn_module_clip_grad_norm(m, 1, INFINITY, false) <= 0.01 + 1e-9, "every element within the clip");
    CHECK(kn_module_clip_grad_norm(m, 1, 0, false) < 0, "norm_type 0");
    CHECK_ERROR("clip_grad_norm: norm_type must be positive");
    CHECK(kn_module_clip_grad_norm(NULL, 1, 2, false) < 0, "NULL module");
    kn_module_free(m);
    kn_scope_end(s);
}

/* ---- reduce on plateau --------------------------------------------------------------------------- */
static kn_optim *one_param_sgd(double lr, kn_tensor **keep) {
    *keep = kn_requires_grad_(kn_zeros(KN_SHAPE(1), KN_F32, KN_CPU), true);
    return kn_sgd_params(1, keep, kn_sgd_defaults(lr));
}

static void test_plateau(void) {
    kn_tensor *w;
    kn_optim *o = one_param_sgd(0.1, &w);
    kn_plateau_opts po = kn_plateau_defaults();
    po.factor = 0.5, po.patience = 2, po.threshold = 0.1, po.cooldown = 1, po.min_lr = 0.01;
    kn_sched *s = kn_sched_plateau(o, po);
    /* Worked by hand from ReduceLROnPlateau's rules: better = below best * 0.9;
     * a cut after 3 bad epochs; the epoch after a cut is cooldown (counts 0);
     * lr never below 0.01, and a cut to the same lr is not made. */
    const double metric[22] = {1.0, 0.95, 0.95, 0.95, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
                               0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    const double want[22] = {0.1,    0.1,    0.1,    0.05,   0.05,   0.05,   0.05,   0.05,  0.025, 0.025, 0.025,
                             0.025,  0.0125, 0.0125, 0.0125, 0.0125, 0.01,   0.01,   0.01,  0.01,  0.01,  0.01};
    kn_sched *twin = NULL;
    for (int e = 0; e < 22; e++) {
        double lr = kn_sched_plateau_step(s, metric[e]);
        CHECK(fabs(lr - want[e]) < 1e-15 && kn_optim_lr(o) == lr, "plateau epoch %d: lr %g, expected %g", e + 1, lr,
              want[e]);
        if (e == 9) { /* a second schedule from the saved state goes on the same way */
            kn_plateau_state st;
            CHECK(kn_sched_plateau_state(s, &st) == KN_OK && st.best == 0.5 && st.reductions == 2,
                  "state after 10 epochs: best %g, %d cuts", st.best, st.reductions);
            twin = kn_sched_plateau(o, po);
            CHECK(kn_sched_plateau_set_state(twin, &st) == KN_OK, "set_state");
        }
    }
    kn_plateau_state a, b;
    kn_sched_plateau_state(s, &a);
    CHECK(a.reductions == 4, "four cuts (the fifth would not change the lr): %d", a.reductions);
    /* The twin took over at epoch 10 on the same optimizer: replay 11..22 from lr 0.025. */
    kn_optim_set_lr(o, 0.025);
    for (int e = 10; e < 22; e++) {
        double lr = kn_sched_plateau_step(twin, metric[e]);
        CHECK(fabs(lr - want[e]) < 1e-15, "restored plateau epoch %d: lr %g, expected %g", e + 1, lr, want[e]);
    }
    kn_sched_plateau_state(twin, &b);
    CHECK(a.best == b.best && a.num_bad_epochs == b.num_bad_epochs && a.cooldown_counter == b.cooldown_counter &&
              a.reductions == b.reductions, "the restored schedule ends in the same state");
    kn_sched_free(twin);
    kn_sched_free(s);

    /* max mode, absolute threshold, patience 0; NaN is never an improvement. */
    kn_optim_set_lr(o, 1);
    po = kn_plateau_defaults();
    po.mode = KN_PLATEAU_MAX, po.threshold_abs = true, po.threshold = 0.05, po.patience = 0;
    s = kn_sched_plateau(o, po);
    const double acc[5] = {0.5, 0.52, 0.6, 0.6, NAN}, wmax[5] = {1, 0.1, 0.1, 0.01, 0.001};
    for (int e = 0; e < 5; e++) {
        double lr = kn_sched_plateau_step(s, acc[e]);
        CHECK(fabs(lr - wmax[e]) < 1e-15, "max-mode epoch %d: lr %g, expected %g", e + 1, lr, wmax[e]);
    }
    CHECK(isnan(kn_sched_step(s)), "kn_sched_step on a plateau schedule");
    CHECK_ERROR("kn_sched_plateau_step");
    kn_sched_free(s);

    po = kn_plateau_defaults();
    po.factor = 1;
    CHECK(!kn_sched_plateau(o, po), "factor 1");
    CHECK_ERROR("sched_plateau: factor must be in (0, 1)");
    po = kn_plateau_defaults();
    CHECK(!kn_sched_warmup(o, 5, 0.1, kn_sched_plateau(o, po)), "warm-up then plateau");
    CHECK_ERROR("warmup: a plateau schedule cannot follow");
    kn_sched *st = kn_sched_step_lr(o, 2, 0.5);
    CHECK(isnan(kn_sched_plateau_step(st, 1)), "plateau_step on a step schedule");
    kn_sched_free(st);
    kn_optim_free(o);
    kn_release(w);
}

/* ---- mini-batches ---------------------------------------------------------------------------------- */
enum { ROWS = 50 };

/* Reads one epoch of (x [ROWS, 2] with x[i] = (i, -i), y [ROWS] = 10 i): the
 * order of the rows in `order`; checks that x and y stay paired. */
static int64_t read_epoch(kn_batches *b, int64_t *order, int64_t *sizes, int *nb) {
    int64_t seen = 0, len;
    *nb = 0;
    kn_tensor *out[2];
    kn_scope s = kn_scope_begin();
    while ((len = kn_batches_next(b, out)) > 0) {
        double xb[2 * ROWS], yb[ROWS];
        CHECK(kn_size(out[0], 0) == len && kn_size(out[1], 0) == len && kn_size(out[0], 1) == 2, "batch shapes");
        if (kn_to_host(out[0], xb, KN_F64) != KN_OK || kn_to_host(out[1], yb, KN_F64) != KN_OK) break;
        for (int64_t i = 0; i < len; i++) {
            if (seen + i < ROWS) order[seen + i] = (int64_t)xb[2 * i];
            CHECK(xb[2 * i + 1] == -xb[2 * i] && yb[i] == 10 * xb[2 * i], "rows stay paired");
        }
        if (*nb < 64) sizes[(*nb)++] = len;
        seen += len;
    }
    CHECK(len == 0, "an epoch ends with 0: %s", kn_error());
    kn_scope_end(s);
    return seen;
}

static void test_batches(kn_device d) {
    kn_scope s = kn_scope_begin();
    double xv[2 * ROWS], yv[ROWS];
    for (int i = 0; i < ROWS; i++) xv[2 * i] = i, xv[2 * i + 1] = -i, yv[i] = 10 * i;
    kn_tensor *t[2] = {kn_to(kn_from_data(xv, KN_F64, KN_SHAPE(ROWS, 2), KN_CPU), d),
                       kn_cast(kn_to(kn_from_data(yv, KN_F64, KN_SHAPE(ROWS), KN_CPU), d), KN_F32)};
    int64_t order[ROWS], order2[ROWS], sizes[64];
    int nb;
    /* In order: views, 16 16 16 2, then 12 12 12 12 with drop_last. */
    kn_batches *b = kn_batches_new(2, t, 16, false, false, 0);
    CHECK(kn_batches_count(b) == 4, "4 batches");
    CHECK(read_epoch(b, order, sizes, &nb) == ROWS && nb == 4 && sizes[3] == 2, "in-order epoch on %s",
          kn_device_str(d));
    bool inorder = true;
    for (int i = 0; i < ROWS; i++) inorder = inorder && order[i] == i;
    CHECK(inorder, "rows in order");
    kn_tensor *out[2];
    kn_scope vs = kn_scope_begin();
    CHECK(kn_batches_next(b, out) == 16 && kn_shares_storage(out[0], t[0]), "an in-order batch is a view");
    kn_scope_end(vs);
    kn_batches_free(b);
    b = kn_batches_new(2, t, 12, false, true, 0);
    CHECK(kn_batches_count(b) == 4 && read_epoch(b, order, sizes, &nb) == 48 && nb == 4 && sizes[3] == 12,
          "drop_last leaves the 2 last rows out");
    CHECK(kn_batches_epoch(b) == 1, "one epoch done");
    kn_batches_free(b);

    /* Shuffled: every row once an epoch, a new order each epoch, the same orders from the same seed. */
    b = kn_batches_new(2, t, 7, true, false, 1234);
    kn_batches *c = kn_batches_new(2, t, 7, true, false, 1234);
    kn_batches *other = kn_batches_new(2, t, 7, true, false, 99);
    int64_t first[ROWS], o3[ROWS];
    for (int e = 0; e < 3; e++) {
        CHECK(read_epoch(b, order, sizes, &nb) == ROWS && nb == 8, "shuffled epoch %d", e);
        CHECK(read_epoch(c, order2, sizes, &nb) == ROWS, "twin epoch %d", e);
        CHECK(!memcmp(order, order2, sizeof order), "the same seed gives the same order (epoch %d)", e);
        bool seen[ROWS] = {false}, all = true;
        for (int i = 0; i < ROWS; i++) seen[order[i] >= 0 && order[i] < ROWS ? order[i] : 0] = true;
        for (int i = 0; i < ROWS; i++) all = all && seen[i];
        CHECK(all, "every row once in epoch %d", e);
        if (e == 0) memcpy(first, order, sizeof order);
        else CHECK(memcmp(order, first, sizeof order) != 0, "epoch %d's order is new", e);
    }
    read_epoch(other, o3, sizes, &nb);
    CHECK(memcmp(o3, first, sizeof o3) != 0, "another seed, another order");
    kn_batches_reset(b);
    CHECK(read_epoch(b, order, sizes, &nb) == ROWS && !memcmp(order, first, sizeof order),
          "reset: the first epoch's order again");
    kn_scope gs = kn_scope_begin();
    CHECK(kn_batches_next(b, out) == 7 && !kn_shares_storage(out[0], t[0]) &&
              kn_device_equal(kn_device_of(out[0]), d), "a shuffled batch is a copy on the device");
    kn_scope_end(gs);
    kn_batches_free(b);
    kn_batches_free(c);
    kn_batches_free(other);

    /* Errors. */
    kn_tensor *short_y = kn_narrow(t[1], 0, 0, 10), *bad[2] = {t[0], short_y};
    CHECK(!kn_batches_new(2, bad, 4, false, false, 0), "rows differ");
    CHECK_ERROR("batches_new: tensor 1 has 10 rows, tensor 0 has 50");
    CHECK(!kn_batches_new(2, t, 0, false, false, 0), "batch 0");
    CHECK_ERROR("batch_size must be positive");
    kn_tensor *z = kn_scalar(1, KN_F32, d);
    CHECK(!kn_batches_new(1, &z, 4, false, false, 0), "0-d");
    CHECK(kn_batches_next(NULL, out) < 0, "NULL batches");
    kn_scope_end(s);
}

/* ---- loading a model in one call ------------------------------------------------------------------- */
static void test_load_file(void) {
    const char *path = "train_utils_model.safetensors", *small = "train_utils_small.safetensors";
    kn_scope s = kn_scope_begin();
    kn_manual_seed(1);
    kn_module *a = kn_nn_linear(3, 4, true), *b = kn_nn_linear(3, 4, true), *c = kn_nn_linear(3, 5, true);
    kn_module *nb = kn_nn_linear(3, 4, false);
    CHECK(kn_module_save(a, path, 0, NULL) == KN_OK, "save: %s", kn_error());
    CHECK(kn_module_save(nb, small, 0, NULL) == KN_OK, "save without bias");
    CHECK(kn_module_load_file(b, path) == KN_OK, "load_file: %s", kn_error());
    double wa[12], wb[12];
    kn_to_host(kn_module_get(a, "weight"), wa, KN_F64);
    kn_to_host(kn_module_get(b, "weight"), wb, KN_F64);
    CHECK(!memcmp(wa, wb, sizeof wa), "the loaded weights are the saved ones");
    CHECK(kn_module_load_file(c, path) != KN_OK, "a mis-shaped model");
    CHECK_ERROR("train_utils_model.safetensors: tensor '");
    CHECK_ERROR("the model expects [");
    CHECK(kn_module_load_file(b, small) != KN_OK, "a missing tensor");
    CHECK_ERROR("train_utils_small.safetensors: tensor 'bias' is missing");
    CHECK(kn_module_load_file(b, "no_such_dir/none.safetensors") != KN_OK, "a missing file");
    CHECK_ERROR("no_such_dir/none.safetensors");
    CHECK(kn_module_load_file(NULL, path) != KN_OK, "NULL module");
    remove(path);
    remove(small);
    kn_module_free(a), kn_module_free(b), kn_module_free(c), kn_module_free(nb);
    kn_scope_end(s);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    kn_device devs[8];
    int nd = kt_devices(devs, 8);
    for (int i = 0; i < nd; i++) {
        test_clip_norm(devs[i]);
        test_clip_value(devs[i]);
        test_batches(devs[i]);
    }
    test_clip_module();
    test_plateau();
    test_load_file();
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("train_utils");
}
