/* What only the CUDA backend has: device addressing, host transfers (chunked
 * through pinned staging buffers), the caching allocator and out-of-memory
 * behaviour, errors that a kernel records and the next read reports, and
 * graph capture's own memory pool and rules. Every op's results, gradients,
 * random bits and graph replays against the CPU are test_backend_ops's cases,
 * run on every device (this GPU included). Skipped (exit 77) where there is
 * no CUDA device. */
#include "kn_test.h"

static kn_device cuda0;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* A CPU tensor of random values valid for dt in [lo, hi). */
static kn_tensor *rnd(int nd, const int64_t *shape, kn_dtype dt, double lo, double hi) {
    int64_t n = kn__numel_shape(nd, shape);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        double x = lo + (hi - lo) * urand();
        if (dt == KN_BOOL) x = urand() < 0.5;
        else if (!kn_dtype_is_float(dt)) x = floor(dt == KN_U8 ? fabs(x) * 10 : x * 10);
        v[i] = x;
    }
    kn_tensor *t = kn_cast(kn_from_data(v, KN_F64, nd, shape, KN_CPU), dt);
    free(v);
    return t;
}

/* Largest |a - b| / (1 + |a|) over the elements (NaN matching NaN is equal);
 * INFINITY when shapes or dtypes differ. */
static double diff(kn_tensor *cpu, kn_tensor *gpu) {
    if (!cpu || !gpu || cpu->ndim != gpu->ndim || cpu->dtype != gpu->dtype ||
        memcmp(cpu->shape, gpu->shape, (size_t)cpu->ndim * 8))
        return INFINITY;
    if (!kn_device_equal(kn_device_of(gpu), cuda0)) return INFINITY; /* results must stay on the GPU */
    int64_t n = kn_numel(cpu);
    double *a = malloc((size_t)(n ? n : 1) * 8), *b = malloc((size_t)(n ? n : 1) * 8), worst = 0;
    if (kn_to_host(cpu, a, KN_F64) != KN_OK || kn_to_host(gpu, b, KN_F64) != KN_OK) worst = INFINITY;
    for (int64_t i = 0; i < n && worst < INFINITY; i++) {
        if (a[i] != a[i] && b[i] != b[i]) continue;
        if (a[i] == b[i]) continue;
        double e = fabs(a[i] - b[i]) / (1 + fabs(a[i]));
        if (e != e) e = INFINITY;
        if (e > worst) worst = e;
    }
    free(a);
    free(b);
    return worst;
}

static const kn_dtype all_dtypes[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I32, KN_I64, KN_U8, KN_BOOL};

/* ---- devices, transfers, allocator ------------------------------------------------------ */
static void test_devices(void) {
    int n = kn_device_count(KN_DEVICE_CUDA);
    CHECK(kn_device_ok(kn_device_get("cuda")) && kn_device_equal(kn_device_get("cuda:0"), cuda0), "cuda:0 addressing");
    CHECK(strlen(kn_device_description(cuda0)) > 0, "device name");
    size_t fr = 0, tot = 0;
    CHECK(kn_device_memory(cuda0, &fr, &tot) == KN_OK && tot > 0 && fr <= tot, "device memory");
    char name[16];
    snprintf(name, sizeof name, "cuda:%d", n);
    kn_device bad = kn_device_get(name);
    CHECK(bad.kind < 0, "cuda:%d is absent", n);
    if (n == 1) CHECK_ERROR("device 'cuda:1' is not available: 1 CUDA device found");
    CHECK(kn_device_equal(kn_device_default(), cuda0) || getenv("KILN_DEVICE"), "cuda is the default device");
    if (n >= 2) { /* a copy between GPUs and an op on the second */
        kn_scope s = kn_scope_begin();
        kn_device c1 = kn_device_get("cuda:1");
        kn_tensor *a = rnd(KN_SHAPE(100, 7), KN_F32, -1, 1);
        kn_tensor *b = kn_to(kn_to(a, c1), cuda0), *e = kn_exp(kn_to(a, c1));
        CHECK(diff(a, b) == 0 && kn_device_equal(kn_device_of(e), c1), "cuda:0 <-> cuda:1");
        CHECK(diff(kn_exp(a), kn_to(e, cuda0)) < 1e-6, "an op on cuda:1");
        kn_scope_end(s);
    }
}

static void test_transfers(void) {
    kn_scope s = kn_scope_begin();
    for (size_t k = 0; k < sizeof all_dtypes / sizeof *all_dtypes; k++) {
        kn_dtype dt = all_dtypes[k];
        kn_tensor *a = rnd(KN_SHAPE(37, 11), dt, -50, 50);
        kn_tensor *g = kn_to(a, cuda0);
        CHECK(kn_device_equal(kn_device_of(g), cuda0) && diff(a, kn_to(g, KN_CPU)) == INFINITY, "to cuda");
        CHECK(diff(a, g) == 0, "round trip %s", kn_dtype_name(dt));
        /* non-contiguous both ways */
        kn_tensor *t = kn_transpose(a, 0, 1), *gt = kn_to(t, cuda0);
        CHECK(diff(t, gt) == 0, "transposed to cuda %s", kn_dtype_name(dt));
        kn_tensor *back = kn_to(kn_slice(kn_transpose(g, 0, 1), 0, 1, 11, 3), KN_CPU);
        CHECK(diff(kn_slice(t, 0, 1, 11, 3), kn_to(back, cuda0)) == 0, "strided to host %s", kn_dtype_name(dt));
    }
    /* Larger than the staging buffers: chunked and overlapped. */
    kn_tensor *big = rnd(KN_SHAPE(5, 1 << 20), KN_F32, -1, 1);
    kn_tensor *gb = kn_to(big, cuda0);
    CHECK(diff(big, gb) == 0, "40 MB round trip");
    CHECK(diff(big, kn_clone(gb)) == 0, "device-to-device clone");
    kn_tensor *z = kn_zeros(KN_SHAPE(0, 5), KN_F32, cuda0);
    CHECK(z && kn_numel(kn_to(z, KN_CPU)) == 0, "zero-size transfer");
    kn_scope_end(s);
}

static void test_allocator(void) {
    kn_device_synchronize(cuda0);
    kn_memory_stats m0, m1, m2, m3;
    kn_device_memory_stats(cuda0, &m0);
    kn_tensor *t = kn_empty(KN_SHAPE(1000, 1000), KN_F32, cuda0);
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use >= m0.in_use + 4000000 && m1.peak >= m1.in_use && m1.allocations > m0.allocations,
          "in use grows: %zu -> %zu", m0.in_use, m1.in_use);
    kn_release(t);
    kn_device_memory_stats(cuda0, &m2);
    CHECK(m2.in_use == m0.in_use && m2.cached >= 4000000, "freed block is cached (%zu cached)", m2.cached);
    t = kn_empty(KN_SHAPE(999, 1001), KN_F32, cuda0); /* same size class */
    kn_device_memory_stats(cuda0, &m3);
    CHECK(m3.cached + 4000000 <= m2.cached + 4096 && m3.in_use == m1.in_use, "the cached block is reused");
    kn_release(t);
    CHECK(kn_device_empty_cache(cuda0) == KN_OK, "empty_cache");
    kn_device_memory_stats(cuda0, &m3);
    CHECK(m3.cached == 0, "empty_cache leaves nothing cached (%zu)", m3.cached);

    /* Out of memory: a clear message, nothing breaks, the next allocation works. */
    kn_error_clear();
    kn_tensor *huge = kn_empty(KN_SHAPE((int64_t)1 << 48), KN_F32, cuda0); /* 1 PB */
    CHECK(huge == NULL && kn_error_code() == KN_ERR_OOM, "1 PB fails");
    CHECK_ERROR("out of memory on cuda:0: asked for 1125899906842624 bytes");
    CHECK_ERROR(" free");
    kn_error_clear();
    kn_scope s = kn_scope_begin();
    kn_tensor *ok = kn_ones(KN_SHAPE(1000), KN_F32, cuda0);
    CHECK(ok && kn_item(kn_sum_all(ok)) == 1000, "allocation after OOM works");
    kn_scope_end(s);
}

/* ---- errors a kernel records: reported at the next read, naming the op ------------------------ */
static void test_async_errors(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *gw = kn_to(rnd(KN_SHAPE(10, 4), KN_F32, -1, 1), cuda0);
    int64_t badc[] = {0, 1, 3, 0};
    kn_tensor *t2[2] = {kn_to(kn_ones(KN_SHAPE(2, 2), KN_F32, KN_CPU), cuda0), kn_to(kn_ones(KN_SHAPE(3, 1), KN_F32, KN_CPU), cuda0)};
    kn_error_clear();
    kn_tensor *ec = kn_embedding_cat(2, t2, kn_to(kn_from_data(badc, KN_I64, KN_SHAPE(2, 2), KN_CPU), cuda0));
    double ev = ec ? kn_item(kn_sum_all(ec)) : NAN;
    CHECK(ev != ev, "a bad code makes the read fail");
    CHECK_ERROR("embedding_cat: index 3 is out of range for table 0 of 2 rows");
    kn_error_clear();
    /* A bad index: recorded by the kernel, reported at the next read. */
    int64_t bad[] = {1, 12, 0};
    kn_tensor *bidx = kn_to(kn_from_data(bad, KN_I64, KN_SHAPE(3), KN_CPU), cuda0);
    kn_error_clear();
    kn_tensor *sel = kn_index_select(gw, 0, bidx);
    double v = sel ? kn_item(kn_sum_all(sel)) : NAN;
    CHECK(v != v, "a bad index makes the read fail");
    CHECK_ERROR("index_select: index 12 is out of range for dim 0 of size 10");
    kn_error_clear();
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(3), KN_F32, cuda0))) == 3, "the device works after the error");
    kn_scope_end(s);
    s = kn_scope_begin();
    /* A bad target: reported at the next read, naming the op. */
    int64_t tv[] = {0, 9, 1};
    kn_tensor *tg = kn_to(kn_from_data(tv, KN_I64, KN_SHAPE(3), KN_CPU), cuda0);
    kn_error_clear();
    kn_tensor *l = kn_cross_entropy(kn_zeros(KN_SHAPE(3, 4), KN_F32, cuda0), tg);
    double lv = l ? kn_item(l) : NAN; /* the error surfaces at a later op or at the read */
    CHECK(lv != lv, "a bad target makes the read fail");
    CHECK_ERROR("cross_entropy: target 9 is out of range for 4 classes");
    kn_error_clear();
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(3), KN_F32, cuda0))) == 3, "the device works after the error");
    kn_scope_end(s);
}

/* ---- graph capture ------------------------------------------------------------------------------------ */
typedef struct {
    kn_module *model;
    kn_optim *opt;
    kn_tensor *x, *y, *loss;
} train_ctx;

static kn_status train_step(void *p) {
    train_ctx *t = p;
    kn_scope s = kn_scope_begin();
    kn_tensor *loss = kn_cross_entropy(kn_module_forward(t->model, t->x), t->y);
    kn_optim_zero_grad(t->opt);
    kn_status st = loss ? kn_backward(loss) : kn_error_code();
    if (st == KN_OK) st = kn_optim_step(t->opt);
    kn_release(t->loss);
    t->loss = kn_retain(loss);
    kn_scope_end(s);
    return st;
}

static void make_train_ex(train_ctx *t, kn_device dev, double p, int opt) {
    kn_manual_seed(7);
    kn_module *m = kn_nn_sequential(0, NULL);
    kn_nn_sequential_append(m, kn_nn_linear(8, 32, true));
    kn_nn_sequential_append(m, kn_nn_relu());
    kn_nn_sequential_append(m, kn_nn_batch_norm1d(32));
    kn_nn_sequential_append(m, kn_nn_dropout(p));
    kn_nn_sequential_append(m, kn_nn_linear(32, 4, true));
    kn_module_to(m, dev);
    kn_generator g = kn_generator_make(1);
    kn_scope s = kn_scope_begin();
    t->x = kn_retain(kn_randn(KN_SHAPE(64, 8), KN_F32, dev, &g));
    t->y = kn_retain(kn_randint(0, 4, KN_SHAPE(64), KN_I64, dev, &g));
    kn_scope_end(s);
    t->model = m;
    kn_sgd_opts so = kn_sgd_defaults(0.05);
    so.momentum = 0.9;
    t->opt = opt ? kn_sgd(m, so) : kn_adam(m, kn_adam_defaults(0.01));
    t->loss = NULL;
}

static void make_train(train_ctx *t, kn_device dev) { make_train_ex(t, dev, 0.3, 0); }

static void free_train(train_ctx *t) {
    kn_optim_free(t->opt);
    kn_module_free(t->model);
    kn_release(t->x), kn_release(t->y), kn_release(t->loss);
}

static kn_status reading_step(void *p) {
    (void)p;
    kn_scope s = kn_scope_begin();
    double v = kn_item(kn_sum_all(kn_ones(KN_SHAPE(4), KN_F32, cuda0)));
    kn_scope_end(s);
    return v == v ? KN_OK : kn_error_code();
}

/* Capture's own rules: replays allocate nothing (the graph keeps its pool),
 * tensors made before it keep working, a read inside a capture is refused. */
static void test_graph_pool(void) {
    enum { STEPS = 10 };
    train_ctx t;
    CHECK(kn_graph_supported(cuda0), "cuda can capture");
    kn_memory_stats m0, m1;
    make_train(&t, cuda0);
    CHECK(train_step(&t) == KN_OK, "warm-up step"); /* the optimizer's state exists */
    kn_graph *g = kn_graph_capture(cuda0, train_step, &t);
    CHECK(g != NULL, "capture a training step");
    kn_device_memory_stats(cuda0, &m0);
    for (int i = 1; i < STEPS && g; i++) {
        CHECK(kn_graph_replay(g) == KN_OK, "replay");
        CHECK(isfinite(kn_item(t.loss)), "replayed loss");
    }
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use == m0.in_use, "replays allocate nothing (%zu -> %zu)", m0.in_use, m1.in_use);
    kn_tensor *p = kn_module_parameters(t.model, &(int){0})[0].tensor;
    CHECK(isfinite(kn_item(kn_sum_all(p))), "parameters readable after replays");
    kn_error_clear();
    CHECK(kn_graph_capture(cuda0, reading_step, NULL) == NULL, "a step that reads a value cannot be captured");
    CHECK_ERROR("cannot be captured");
    kn_error_clear();
    kn_graph_free(g);
    free_train(&t);
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(5), KN_F32, cuda0))) == 5, "eager after the graph");
}

int main(void) {
    if (kn_device_count(KN_DEVICE_CUDA) == 0) {
        printf("cuda: skipped (no CUDA device)\n");
        return 77;
    }
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    cuda0 = kn_device_get("cuda:0");
    printf("cuda: testing on %s\n", kn_device_description(cuda0));
    { kn_scope s_ = kn_scope_begin(); test_devices(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_transfers(); kn_scope_end(s_); }
    test_allocator(); /* releases by hand: no scope */
    { kn_scope s_ = kn_scope_begin(); test_async_errors(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_graph_pool(); kn_scope_end(s_); }
    kn_fallback_stat st[64];
    int n = kn_fallback_stats(st, 64);
    for (int i = 0; i < n && i < 64; i++)
        CHECK(st[i].kind != KN_DEVICE_CUDA, "op '%s' fell back to the CPU %lld times", st[i].op, (long long)st[i].count);
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("cuda");
}
