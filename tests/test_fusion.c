/* Sequential's fused layer runs (Linear [+ ReLU] [+ BatchNorm1d [+ Dropout]])
 * against the same layers run one by one, on every device present: the same
 * outputs, gradients, running statistics, batch counts and random draws
 * over several training steps, in training and in evaluation. Also the
 * joined embeddings against one kn_embedding per column and a concat. */
#include "kn_test.h"
#include "nn/nn_internal.h"

#include <stdint.h>

enum { IN = 7, ROWS = 33, STEPS = 4 };

/* A small tabular stack whose runs fuse in different ways. */
static kn_module *make_model(kn_device dev, int variant) {
    kn_manual_seed(3);
    kn_module *m = kn_nn_sequential(0, NULL);
    kn_nn_sequential_append(m, kn_nn_linear(IN, 16, true));
    kn_nn_sequential_append(m, kn_nn_relu());
    kn_nn_sequential_append(m, kn_nn_batch_norm1d(16));
    kn_nn_sequential_append(m, kn_nn_dropout(variant == 2 ? 0.0 : 0.4)); /* p = 0 fuses as no dropout */
    kn_nn_sequential_append(m, kn_nn_linear(16, 12, variant != 1));     /* a Linear without bias */
    kn_nn_sequential_append(m, kn_nn_batch_norm1d(12));                 /* Linear -> BN, no ReLU */
    kn_nn_sequential_append(m, kn_nn_linear(12, 9, true));
    kn_nn_sequential_append(m, kn_nn_relu());                           /* Linear -> ReLU */
    kn_nn_sequential_append(m, kn_nn_dropout(variant == 3 ? 1.0 : 0.2)); /* p = 1: a layer of its own */
    kn_nn_sequential_append(m, kn_nn_linear(9, 4, true));
    kn_module_to(m, dev);
    return m;
}

typedef struct {
    double loss[STEPS], out_eval[ROWS * 4];
    double state[4096];
    int n_state;
} run_result;

static void run(kn_device dev, int variant, bool fuse, run_result *r) {
    kn__nn_set_fusion(fuse);
    kn_scope s = kn_scope_begin();
    kn_module *m = make_model(dev, variant);
    /* SGD, not Adam: Adam's step is the gradient's sign where the gradient is
     * rounding noise (a Linear's bias before a BatchNorm gets 0 exactly, in
     * theory), which would make equal computations look different. */
    kn_sgd_opts so = kn_sgd_defaults(0.05);
    so.momentum = 0.9;
    kn_optim *o = kn_sgd(m, so);
    kn_generator g = kn_generator_make(5);
    kn_tensor *x = kn_to(kn_randn(KN_SHAPE(ROWS, IN), KN_F32, KN_CPU, &g), dev);
    kn_tensor *y = kn_to(kn_randint(0, 4, KN_SHAPE(ROWS), KN_I64, KN_CPU, &g), dev);
    kn_manual_seed(9); /* the dropout masks */
    for (int i = 0; i < STEPS; i++) {
        kn_scope st = kn_scope_begin();
        kn_optim_zero_grad(o);
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(m, x), y);
        r->loss[i] = loss && kn_backward(loss) == KN_OK && kn_optim_step(o) == KN_OK ? kn_item(loss) : NAN;
        kn_scope_end(st);
    }
    /* Everything the steps left behind: parameters, gradients, buffers. */
    int n = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &n);
    r->n_state = 0;
    for (int i = 0; sd && i < n; i++) {
        kn_tensor *t = sd[i].tensor;
        for (int gr = 0; gr < 2; gr++) {
            kn_tensor *v = gr ? kn_grad(t) : t;
            if (!v) continue;
            int64_t k = kn_numel(v);
            if (r->n_state + k > 4096) break;
            kn_to_host(v, r->state + r->n_state, KN_F64);
            r->n_state += (int)k;
        }
    }
    kn_module_train(m, false);
    kn_tensor *e = kn_module_forward(m, x);
    if (!e || kn_to_host(e, r->out_eval, KN_F64) != KN_OK)
        for (int i = 0; i < ROWS * 4; i++) r->out_eval[i] = NAN;
    kn_optim_free(o);
    kn_module_free(m);
    kn_scope_end(s);
    kn__nn_set_fusion(true);
}

static void compare(const char *what, const double *a, const double *b, int n, double tol) {
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++)
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i])))) bad = i;
    CHECK(bad < 0, "%s: element %d fused %.9g, layer by layer %.9g", what, bad, bad >= 0 ? a[bad] : 0,
          bad >= 0 ? b[bad] : 0);
}

static void test_sequential(kn_device dev) {
    static run_result fused, plain, cpu;
    for (int variant = 0; variant < 4; variant++) {
        char what[160];
        run(dev, variant, true, &fused);
        run(dev, variant, false, &plain);
        if (dev.kind != KN_DEVICE_CPU) { /* and each against the CPU, for a device that computes on its own */
            for (int f = 0; f < 2; f++) {
                run(KN_CPU, variant, f, &cpu);
                run_result *r = f ? &fused : &plain;
                snprintf(what, sizeof what, "variant %d %s on %s against the CPU: losses", variant, f ? "fused" : "unfused",
                         kn_device_str(dev));
                compare(what, r->loss, cpu.loss, STEPS, 1e-4);
                snprintf(what, sizeof what, "variant %d %s on %s against the CPU: state", variant, f ? "fused" : "unfused",
                         kn_device_str(dev));
                compare(what, r->state, cpu.state, r->n_state < cpu.n_state ? r->n_state : cpu.n_state, 1e-3);
                snprintf(what, sizeof what, "variant %d %s on %s against the CPU: evaluation", variant, f ? "fused" : "unfused",
                         kn_device_str(dev));
                compare(what, r->out_eval, cpu.out_eval, ROWS * 4, 1e-3);
            }
        }
        snprintf(what, sizeof what, "variant %d on %s: losses", variant, kn_device_str(dev));
        compare(what, fused.loss, plain.loss, STEPS, 1e-5);
        CHECK(fused.n_state == plain.n_state && fused.n_state > 500, "variant %d: %d and %d state values", variant,
              fused.n_state, plain.n_state);
        snprintf(what, sizeof what, "variant %d on %s: parameters, gradients and buffers", variant, kn_device_str(dev));
        compare(what, fused.state, plain.state, fused.n_state < plain.n_state ? fused.n_state : plain.n_state, 1e-4);
        snprintf(what, sizeof what, "variant %d on %s: evaluation outputs", variant, kn_device_str(dev));
        compare(what, fused.out_eval, plain.out_eval, ROWS * 4, 1e-4);
        CHECK(isfinite(fused.loss[STEPS - 1]) && fused.loss[STEPS - 1] != fused.loss[0], "variant %d trains: %g -> %g",
              variant, fused.loss[0], fused.loss[STEPS - 1]);
    }
}

/* The runs do fuse: the last node of Linear, ReLU, BatchNorm1d, Dropout is the fused one. */
static void test_fuses(kn_device dev) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_to(kn_randn(KN_SHAPE(ROWS, IN), KN_F32, KN_CPU, NULL), dev);
    kn_module *block = kn_nn_sequential(4, (kn_module *[]){kn_nn_linear(IN, 5, true), kn_nn_relu(),
                                                           kn_nn_batch_norm1d(5), kn_nn_dropout(0.5)});
    kn_module_to(block, dev);
    kn_tensor *y = kn_module_forward(block, x);
    CHECK(y && kn_grad_fn_name(y) && !strcmp(kn_grad_fn_name(y), "linear_batch_norm"), "fused node, got %s",
          y ? kn_grad_fn_name(y) : "NULL");
    kn__nn_set_fusion(false);
    y = kn_module_forward(block, x);
    CHECK(y && kn_grad_fn_name(y) && !strcmp(kn_grad_fn_name(y), "dropout"), "unfused: dropout last, got %s",
          y ? kn_grad_fn_name(y) : "NULL");
    kn__nn_set_fusion(true);
    kn_module_free(block);
    kn_scope_end(s);
}

/* The batch counter counts on the device, also through the fused form. */
static void test_batch_count(kn_device dev) {
    kn_scope s = kn_scope_begin();
    kn_module *m = make_model(dev, 0);
    kn_tensor *x = kn_to(kn_randn(KN_SHAPE(ROWS, IN), KN_F32, KN_CPU, NULL), dev);
    for (int i = 0; i < 3; i++) kn_module_forward(m, x);
    kn_module_train(m, false);
    kn_module_forward(m, x);
    kn_tensor *c = kn_module_get(kn_module_child_at(m, 2), "num_batches_tracked");
    kn_tensor *c2 = kn_module_get(kn_module_child_at(m, 5), "num_batches_tracked");
    CHECK(c && kn_item(c) == 3 && c2 && kn_item(c2) == 3, "num_batches_tracked %g and %g after 3 training batches",
          c ? kn_item(c) : NAN, c2 ? kn_item(c2) : NAN);
    kn_module_free(m);
    kn_scope_end(s);
}

/* kn_embedding_cat against kn_embedding per column and kn_concat, gradients too,
 * with more tables than one call takes (groups) and strided codes. */
static void test_embedding_cat(kn_device dev) {
    enum { T = 19, N = 11 };
    kn_scope s = kn_scope_begin();
    kn_generator g = kn_generator_make(4);
    kn_tensor *w[T], *w2[T], *cols[T];
    int64_t codes[N * 2 * T];
    for (int k = 0; k < T; k++) {
        int64_t V = 1 + k % 5, D = 1 + k % 3;
        w[k] = kn_requires_grad_(kn_to(kn_randn(KN_SHAPE(V, D), KN_F32, KN_CPU, &g), dev), true);
        w2[k] = kn_requires_grad_(kn_clone(kn_detach(w[k])), true);
        for (int n = 0; n < N; n++) codes[n * 2 * T + 2 * k] = (n * 7 + k) % V, codes[n * 2 * T + 2 * k + 1] = -1;
    }
    /* Every other column of a wider tensor: strided codes. */
    kn_tensor *wide = kn_to(kn_from_data(codes, KN_I64, KN_SHAPE(N, 2 * T), KN_CPU), dev);
    kn_tensor *idx = kn_slice(wide, 1, 0, 2 * T, 2);
    kn_tensor *joined = kn_embedding_cat(T, w, idx);
    for (int k = 0; k < T; k++) cols[k] = kn_embedding(w2[k], kn_select(idx, 1, k));
    kn_tensor *ref = kn_concat(T, cols, 1);
    CHECK(joined && ref && kn_item(kn_sum_all(kn_abs(kn_sub(joined, ref)))) == 0, "embedding_cat = embeddings + concat on %s",
          kn_device_str(dev));
    kn_tensor *wt = kn_randn(2, kn_shape(ref), KN_F32, dev, &g);
    CHECK(kn_backward(kn_sum_all(kn_mul(joined, wt))) == KN_OK && kn_backward(kn_sum_all(kn_mul(ref, wt))) == KN_OK,
          "both backward");
    double worst = 0;
    for (int k = 0; k < T; k++) worst = fmax(worst, kn_item(kn_max(kn_abs(kn_sub(kn_grad(w[k]), kn_grad(w2[k]))), 0, NULL, false)));
    CHECK(worst < 1e-5, "embedding_cat gradients = per-table embedding gradients on %s (worst %g)", kn_device_str(dev),
          worst);
    /* Bad input: named errors. */
    kn_error_clear();
    CHECK(kn_embedding_cat(T, w, kn_narrow(idx, 1, 0, 3)) == NULL, "wrong number of columns");
    CHECK_ERROR("embedding_cat: indices must be [N, 19]");
    int64_t bad[2] = {0, 7};
    kn_tensor *bi = kn_to(kn_from_data(bad, KN_I64, KN_SHAPE(1, 2), KN_CPU), dev);
    kn_error_clear();
    kn_tensor *r = kn_embedding_cat(2, w, bi);
    CHECK(!r || kn_device_synchronize(dev) != KN_OK, "an index out of range fails");
    CHECK_ERROR("embedding_cat: index 7 is out of range for table 1");
    kn_error_clear();
    kn_scope_end(s);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    kn_device devs[8];
    int nd = kt_devices(devs, 8);
    for (int d = 0; d < nd; d++) {
        int before = kt_failed;
        test_sequential(devs[d]);
        test_fuses(devs[d]);
        test_batch_count(devs[d]);
        test_embedding_cat(devs[d]);
        printf("fusion on %s: %s\n", kn_device_str(devs[d]), kt_failed == before ? "all passed" : "FAILURES");
    }
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("fusion");
}
