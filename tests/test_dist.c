/* Data-parallel groups (kiln/dist.h) over every device present: the CPU,
 * the two host-memory test devices (so there are always several ranks) and
 * Vulkan or CUDA where present. The proof: N ranks, each on its shard of a
 * batch (shards of unequal sizes), train to the parameters one device gets
 * on the whole batch. */
#include "kn_test.h"

#include <kiln.h>

#define MAX 16

static double max_abs_diff(kn_tensor *a, kn_tensor *b) {
    int64_t n = kn_numel(a);
    double *x = malloc((size_t)n * 8), *y = malloc((size_t)n * 8), m = INFINITY;
    if (x && y && kn_numel(b) == n && kn_to_host(a, x, KN_F64) == KN_OK && kn_to_host(b, y, KN_F64) == KN_OK) {
        m = 0;
        for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i] - y[i]));
    }
    free(x);
    free(y);
    return m;
}

static void test_errors(const kn_device *devs, int n) {
    CHECK(kn_dist_new(0, devs) == NULL, "no ranks");
    CHECK_ERROR("0 ranks");
    kn_device twice[2] = {KN_CPU, KN_CPU};
    CHECK(kn_dist_new(2, twice) == NULL, "a device twice");
    CHECK_ERROR("device cpu is named twice (ranks 0 and 1)");
    kn_device absent[2] = {KN_CPU, {(int16_t)KN_DEVICE_CPU, 7}};
    CHECK(kn_dist_new(2, absent) == NULL, "an absent device");
    CHECK_ERROR("rank 1: device");
    CHECK_ERROR("is not available");
    if (n < 2) return;
    kn_dist *d = kn_dist_new(2, devs);
    CHECK(d != NULL, "two ranks");
    kn_scope sc = kn_scope_begin();
    kn_tensor *wrong_dev[2] = {kn_zeros(KN_SHAPE(3), KN_F32, devs[0]), kn_zeros(KN_SHAPE(3), KN_F32, devs[0])};
    CHECK(kn_dist_all_reduce(d, wrong_dev, KN_DIST_SUM) != KN_OK, "a tensor on another rank's device");
    CHECK_ERROR("rank 1's tensor is on");
    kn_tensor *wrong_shape[2] = {kn_zeros(KN_SHAPE(3), KN_F32, devs[0]), kn_zeros(KN_SHAPE(4), KN_F32, devs[1])};
    CHECK(kn_dist_all_reduce(d, wrong_shape, KN_DIST_SUM) != KN_OK, "shapes differ");
    CHECK_ERROR("rank 1's tensor is [4], rank 0's [3]");
    kn_tensor *ints[2] = {kn_zeros(KN_SHAPE(3), KN_I64, devs[0]), kn_zeros(KN_SHAPE(3), KN_I64, devs[1])};
    CHECK(kn_dist_all_reduce(d, ints, KN_DIST_SUM) != KN_OK, "integer tensors");
    CHECK_ERROR("expected one float dtype");
    CHECK(kn_dist_broadcast(d, wrong_shape, 5) != KN_OK, "root out of range (or shape)");
    kn_scope_end(sc);
    kn_dist_free(d);
}

static void test_buckets(void) {
    kn_scope sc = kn_scope_begin();
    /* float32 of 100, 200, 50, 300 elements (400, 800, 200, 1200 bytes), a
     * float64 of 10 (80 bytes) after them; taken from the last, cap 1000. */
    kn_tensor *t[5] = {kn_zeros(KN_SHAPE(100), KN_F32, KN_CPU), kn_zeros(KN_SHAPE(10, 20), KN_F32, KN_CPU),
                       kn_zeros(KN_SHAPE(50), KN_F32, KN_CPU), kn_zeros(KN_SHAPE(300), KN_F32, KN_CPU),
                       kn_zeros(KN_SHAPE(10), KN_F64, KN_CPU)};
    int b[5] = {-1, -1, -1, -1, -1};
    int nb = kn_dist_buckets(5, t, 1000, b);
    /* f64 alone (another dtype); 1200 bytes over the cap alone; 200 + 800
     * together (1000, at the cap); 400 in a new one. */
    CHECK(nb == 4, "4 buckets, got %d", nb);
    CHECK(b[4] == 0 && b[3] == 1 && b[2] == 2 && b[1] == 2 && b[0] == 3, "buckets %d %d %d %d %d", b[0], b[1], b[2],
          b[3], b[4]);
    CHECK(kn_dist_buckets(5, t, 0, b) == 2 && b[0] == 1 && b[3] == 1 && b[4] == 0, "the default cap: one per dtype");
    CHECK(kn_dist_buckets(0, NULL, 0, NULL) == 0, "no tensors, no buckets");
    CHECK(kn_dist_buckets(-1, t, 0, b) == -1, "a negative count");
    kn_scope_end(sc);
}

static void test_all_reduce(const kn_device *devs, int n) {
    kn_dist *d = kn_dist_new(n, devs);
    CHECK(d && kn_dist_size(d) == n && !strcmp(kn_dist_transport(d), "host"), "group of %d", n);
    if (!d) return;
    kn_dtype dts[2] = {KN_F32, KN_F64};
    for (int k = 0; k < 2; k++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *t[MAX], *want = kn_zeros(KN_SHAPE(5, 7), dts[k], KN_CPU);
        kn_generator g = kn_generator_make(11);
        for (int r = 0; r < n; r++) {
            kn_tensor *h = kn_randn(KN_SHAPE(5, 7), dts[k], KN_CPU, &g);
            t[r] = kn_to(h, devs[r]);
            want = kn_add(want, h);
        }
        CHECK(kn_dist_all_reduce(d, t, KN_DIST_SUM) == KN_OK, "sum");
        for (int r = 0; r < n; r++)
            CHECK(max_abs_diff(t[r], want) <= (k ? 1e-12 : 1e-5), "%s sum on rank %d (%s)", kn_dtype_name(dts[k]), r,
                  kn_device_str(devs[r]));
        CHECK(kn_dist_all_reduce(d, t, KN_DIST_MEAN) == KN_OK, "mean");
        for (int r = 0; r < n; r++)
            CHECK(max_abs_diff(t[r], want) <= (k ? 1e-12 : 1e-5), "the mean of equal tensors is each, rank %d", r);
        kn_tensor *b[MAX];
        for (int r = 0; r < n; r++) b[r] = kn_full(KN_SHAPE(4), (double)r, dts[k], devs[r]);
        CHECK(kn_dist_broadcast(d, b, n - 1) == KN_OK, "broadcast");
        for (int r = 0; r < n; r++)
            CHECK(kn_item(kn_sum(b[r], 0, NULL, false)) == 4.0 * (n - 1), "broadcast rank %d", r);
        kn_scope_end(sc);
    }
    /* Integers are broadcast too (buffers such as num_batches_tracked), as they are. */
    kn_scope sc = kn_scope_begin();
    kn_tensor *c[MAX];
    for (int r = 0; r < n; r++) c[r] = kn_full(KN_SHAPE(2), r == 0 ? 123456789 : r, KN_I64, devs[r]);
    CHECK(kn_dist_broadcast(d, c, 0) == KN_OK, "broadcast int64");
    for (int r = 0; r < n; r++) {
        int64_t v[2] = {0, 0};
        CHECK(kn_to_host(c[r], v, KN_I64) == KN_OK && v[0] == 123456789 && v[1] == 123456789,
              "int64 broadcast to rank %d (%s)", r, kn_device_str(devs[r]));
    }
    kn_scope_end(sc);
    kn_dist_free(d);
}

static kn_module *mlp(void) {
    return kn_nn_sequential(3, (kn_module *[]){kn_nn_linear(6, 16, true), kn_nn_relu(), kn_nn_linear(16, 3, true)});
}

/* Steps of SGD with one model on the whole batch (the CPU) against n ranks
 * on shards of rows [0, a), [a, b)...: rank 0's parameters must be the
 * single model's, every rank's rank 0's. */
static void test_data_parallel(const kn_device *devs, int n) {
    enum { ROWS = 29, STEPS = 5 };
    kn_scope sc = kn_scope_begin();
    kn_generator g = kn_generator_make(5);
    kn_tensor *x = kn_randn(KN_SHAPE(ROWS, 6), KN_F32, KN_CPU, &g);
    kn_tensor *y = kn_randint(0, 3, KN_SHAPE(ROWS), KN_I64, KN_CPU, &g);
    kn_manual_seed(1);
    kn_module *ref = mlp(), *rep[MAX];
    kn_optim *ref_opt = kn_sgd(ref, kn_sgd_defaults(0.5)), *opt[MAX];
    kn_manual_seed(2); /* other weights: the broadcast must replace them */
    for (int r = 0; r < n; r++) {
        rep[r] = r == 0 ? NULL : mlp();
        if (r > 0) kn_module_to(rep[r], devs[r]);
    }
    /* Rank 0 starts as the reference does. */
    kn_manual_seed(1);
    rep[0] = mlp();
    kn_module_to(rep[0], devs[0]);
    kn_dist *d = kn_dist_new(n, devs);
    CHECK(d && kn_dist_broadcast_module(d, rep) == KN_OK, "broadcast the model");
    for (int r = 0; r < n; r++) opt[r] = kn_sgd(rep[r], kn_sgd_defaults(0.5));
    int64_t start[MAX + 1];
    double w[MAX];
    for (int r = 0; r <= n; r++) start[r] = (int64_t)ROWS * r * (r + 1) / (n * (n + 1)); /* unequal shards */
    for (int r = 0; r < n; r++) w[r] = (double)(start[r + 1] - start[r]) / ROWS;
    double worst_loss = 0;
    for (int s = 0; s < STEPS && d; s++) {
        kn_scope st = kn_scope_begin();
        kn_module_zero_grad(ref);
        kn_tensor *l = kn_cross_entropy(kn_module_forward(ref, x), y);
        kn_backward(l);
        kn_optim_step(ref_opt);
        double whole = kn_item(l), sharded = 0;
        for (int r = 0; r < n; r++) {
            kn_module_zero_grad(rep[r]);
            int64_t len = start[r + 1] - start[r];
            kn_tensor *xs = kn_to(kn_narrow(x, 0, start[r], len), devs[r]);
            kn_tensor *ys = kn_to(kn_narrow(y, 0, start[r], len), devs[r]);
            kn_tensor *lr = kn_cross_entropy(kn_module_forward(rep[r], xs), ys);
            CHECK(lr && kn_backward(lr) == KN_OK, "rank %d backward", r);
            sharded += w[r] * kn_item(lr);
        }
        CHECK(kn_dist_average_gradients(d, rep, w, 256) == KN_OK, "average (buckets of 256 bytes: several)");
        for (int r = 0; r < n; r++) kn_optim_step(opt[r]);
        worst_loss = fmax(worst_loss, fabs(whole - sharded));
        kn_scope_end(st);
    }
    CHECK(worst_loss <= 1e-5, "the shards' weighted loss is the whole batch's (worst %.3g)", worst_loss);
    int np = 0, nr = 0;
    const kn_named_tensor *pr = kn_module_parameters(ref, &np);
    for (int r = 0; r < n; r++) {
        const kn_named_tensor *p = kn_module_parameters(rep[r], &nr);
        CHECK(nr == np, "parameter count");
        for (int i = 0; i < np && i < nr; i++)
            CHECK(max_abs_diff(p[i].tensor, pr[i].tensor) <= 1e-5, "rank %d (%s) %s after %d steps: %.3g", r,
                  kn_device_str(devs[r]), p[i].name, STEPS, max_abs_diff(p[i].tensor, pr[i].tensor));
    }
    /* Replicas that are not the same model. */
    if (d && n >= 2) {
        kn_module *other = kn_nn_sequential(1, (kn_module *[]){kn_nn_linear(6, 3, true)});
        kn_module_to(other, devs[1]);
        kn_module *mixed[MAX];
        for (int r = 0; r < n; r++) mixed[r] = r == 1 ? other : rep[r];
        CHECK(kn_dist_broadcast_module(d, mixed) != KN_OK, "replicas of different models");
        CHECK_ERROR("rank 1's model has 2 tensors, rank 0's 4");
        kn_module_free(other);
    }
    /* A rank whose parameter has no gradient: named. */
    for (int r = 0; r < n; r++) kn_module_zero_grad(rep[r]);
    if (d && n >= 1) {
        kn_status s = kn_dist_average_gradients(d, rep, NULL, 0);
        CHECK(s != KN_OK, "no gradients after zero_grad");
        CHECK_ERROR("parameter '0.weight' has no gradient on rank 0");
    }
    kn_dist_free(d);
    for (int r = 0; r < n; r++) {
        kn_optim_free(opt[r]);
        kn_module_free(rep[r]);
    }
    kn_optim_free(ref_opt);
    kn_module_free(ref);
    kn_scope_end(sc);
}

int main(void) {
    kn_device devs[MAX];
    int n = kt_devices(devs, MAX);
    printf("dist: %d devices:", n);
    for (int i = 0; i < n; i++) printf(" %s", kn_device_str(devs[i]));
    printf("\n");
    test_errors(devs, n);
    test_buckets();
    test_all_reduce(devs, 1);
    test_all_reduce(devs, n);
    test_data_parallel(devs, 1);
    test_data_parallel(devs, n);
    return kt_finish("dist");
}
