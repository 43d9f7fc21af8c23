/* The CUDA backend against the CPU: every op kind over dtypes and layouts
 * (contiguous, transposed, strided with an offset, broadcast, zero-size),
 * Philox bits, transfers, the caching allocator, out-of-memory behaviour,
 * device addressing, graph capture against eager execution, and gradient
 * checks on the GPU. Skipped (exit 77) where there is no CUDA device. */
#include "kn_test.h"
#include "ops/fused.h"

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

static double tol_of(kn_dtype dt) {
    switch (dt) {
    case KN_F64: return 1e-9;
    case KN_F32: return 1e-4;
    case KN_F16: return 1e-2;
    case KN_BF16: return 4e-2;
    default: return 0;
    }
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

/* ---- layouts: the same view of a CPU tensor and of its copy on the GPU -------------------- */
enum { CONTIG, TRANSPOSED, STRIDED, BROADCAST, N_LAYOUTS };
static const char *layout_name[] = {"contiguous", "transposed", "strided", "broadcast"};

/* Values of `shape` in a layout: built from a base on the CPU, moved, viewed alike. */
static void make_pair(int layout, int nd, const int64_t *shape, kn_dtype dt, double lo, double hi, kn_tensor **cpu,
                      kn_tensor **gpu) {
    int64_t bs[KN_MAX_DIMS];
    memcpy(bs, shape, (size_t)nd * 8);
    kn_tensor *base, *gbase;
    if (layout == TRANSPOSED && nd >= 2) {
        bs[nd - 1] = shape[nd - 2], bs[nd - 2] = shape[nd - 1];
        base = rnd(nd, bs, dt, lo, hi), gbase = kn_to(base, cuda0);
        *cpu = kn_transpose(base, -1, -2), *gpu = kn_transpose(gbase, -1, -2);
    } else if (layout == STRIDED && nd >= 1) {
        bs[nd - 1] = 2 * shape[nd - 1] + 1;
        base = rnd(nd, bs, dt, lo, hi), gbase = kn_to(base, cuda0);
        *cpu = kn_slice(base, -1, 1, bs[nd - 1], 2), *gpu = kn_slice(gbase, -1, 1, bs[nd - 1], 2);
    } else if (layout == BROADCAST && nd >= 1) {
        bs[0] = 1;
        base = rnd(nd, bs, dt, lo, hi), gbase = kn_to(base, cuda0);
        *cpu = kn_expand(base, nd, shape), *gpu = kn_expand(gbase, nd, shape);
    } else {
        *cpu = rnd(nd, shape, dt, lo, hi), *gpu = kn_to(*cpu, cuda0);
    }
}

static const kn_dtype floats[] = {KN_F32, KN_F64, KN_F16, KN_BF16};
static const kn_dtype all_dtypes[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I32, KN_I64, KN_U8, KN_BOOL};

#define CHECK_SAME(cpu, gpu, dt, ...)                                                            \
    do {                                                                                         \
        double e_ = diff((cpu), (gpu));                                                          \
        CHECK(e_ <= tol_of(dt), "%s: error %g", (__VA_ARGS__), e_);                              \
    } while (0)

static char what[256];
#define WHAT(...) (snprintf(what, sizeof what, __VA_ARGS__), what)

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

/* ---- elementwise ----------------------------------------------------------------------------- */
typedef kn_tensor *(*unary_fn)(kn_tensor *);
static kn_tensor *leaky(kn_tensor *a) { return kn_leaky_relu(a, 0.1); }
static kn_tensor *clampf(kn_tensor *a) { return kn_clamp(a, -0.5, 0.7); }
static kn_tensor *pow3(kn_tensor *a) { return kn_pow_scalar(a, 3); }
static kn_tensor *adds(kn_tensor *a) { return kn_add_scalar(a, 2); }
static kn_tensor *muls(kn_tensor *a) { return kn_mul_scalar(a, -3); }
static kn_tensor *rsubs(kn_tensor *a) { return kn_rsub_scalar(a, 1); }

static void test_unary(void) {
    struct {
        const char *name;
        unary_fn f;
        double lo, hi;
        bool ints;
    } fns[] = {{"neg", kn_neg, -3, 3, true},     {"exp", kn_exp, -3, 3, false},      {"log", kn_log, 0.1, 5, false},
               {"sqrt", kn_sqrt, 0, 5, false},   {"abs", kn_abs, -3, 3, true},       {"relu", kn_relu, -3, 3, true},
               {"leaky", leaky, -3, 3, false},   {"gelu", kn_gelu, -3, 3, false},    {"sigmoid", kn_sigmoid, -5, 5, false},
               {"tanh", kn_tanh, -3, 3, false},  {"softplus", kn_softplus, -30, 30, false},
               {"clamp", clampf, -2, 2, true},   {"pow", pow3, -2, 2, false},        {"add", adds, -3, 3, true},
               {"mul", muls, -3, 3, true},       {"rsub", rsubs, -3, 3, true}};
    for (size_t k = 0; k < sizeof fns / sizeof *fns; k++)
        for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++) {
            kn_dtype dt = all_dtypes[di];
            if (!kn_dtype_is_float(dt) && (!fns[k].ints || dt == KN_BOOL)) continue;
            for (int l = 0; l < N_LAYOUTS; l++) {
                kn_scope s = kn_scope_begin();
                kn_tensor *a, *g;
                make_pair(l, KN_SHAPE(13, 9), dt, fns[k].lo, fns[k].hi, &a, &g);
                kn_tensor *rc = fns[k].f(a), *rg = fns[k].f(g);
                CHECK_SAME(rc, rg, kn_dtype_of(rc), WHAT("%s %s %s", fns[k].name, kn_dtype_name(dt), layout_name[l]));
                if (kn_dtype_is_float(dt) && l == STRIDED) { /* the backward kernel, through autograd */
                    kn_tensor *xa = kn_requires_grad_(kn_clone(kn_detach(a)), true);
                    kn_tensor *xg = kn_requires_grad_(kn_clone(kn_detach(g)), true);
                    kn_backward(kn_sum_all(kn_mul(fns[k].f(xa), kn_cast(kn_arange(0, 9, 1, KN_F32, KN_CPU), dt))));
                    kn_backward(kn_sum_all(kn_mul(fns[k].f(xg), kn_cast(kn_arange(0, 9, 1, KN_F32, cuda0), dt))));
                    CHECK_SAME(kn_grad(xa), kn_grad(xg), dt, WHAT("%s backward %s", fns[k].name, kn_dtype_name(dt)));
                }
                kn_scope_end(s);
            }
        }
}

typedef kn_tensor *(*binary_fn)(kn_tensor *, kn_tensor *);

static void test_binary(void) {
    struct {
        const char *name;
        binary_fn f;
    } fns[] = {{"add", kn_add}, {"sub", kn_sub}, {"mul", kn_mul}, {"div", kn_div}, {"pow", kn_pow},
               {"maximum", kn_maximum}, {"minimum", kn_minimum}, {"eq", kn_eq}, {"ne", kn_ne},
               {"lt", kn_lt}, {"le", kn_le}, {"gt", kn_gt}, {"ge", kn_ge}};
    for (size_t k = 0; k < sizeof fns / sizeof *fns; k++)
        for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++)
            for (int l = 0; l < N_LAYOUTS; l++) {
                kn_dtype dt = all_dtypes[di];
                if (fns[k].f == kn_pow && !kn_dtype_is_float(dt)) continue;
                kn_scope s = kn_scope_begin();
                kn_tensor *a, *ga, *b, *gb;
                make_pair(l, KN_SHAPE(6, 1, 10), dt, 0.5, 2, &a, &ga);
                make_pair(CONTIG, KN_SHAPE(5, 10), dt, 0.5, 2, &b, &gb); /* broadcast against a */
                kn_tensor *rc = fns[k].f(a, b), *rg = fns[k].f(ga, gb);
                CHECK_SAME(rc, rg, kn_dtype_of(rc), WHAT("%s %s %s", fns[k].name, kn_dtype_name(dt), layout_name[l]));
                kn_scope_end(s);
            }
    /* where, mixed dtypes, promotion */
    kn_scope s = kn_scope_begin();
    for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++) {
        kn_dtype dt = all_dtypes[di];
        kn_tensor *c, *gc, *a, *ga, *b, *gb;
        make_pair(STRIDED, KN_SHAPE(4, 7), KN_BOOL, 0, 1, &c, &gc);
        make_pair(TRANSPOSED, KN_SHAPE(4, 7), dt, -9, 9, &a, &ga);
        make_pair(BROADCAST, KN_SHAPE(4, 7), dt, -9, 9, &b, &gb);
        CHECK_SAME(kn_where(c, a, b), kn_where(gc, ga, gb), dt, WHAT("where %s", kn_dtype_name(dt)));
    }
    kn_tensor *i = rnd(KN_SHAPE(3, 4), KN_I64, -5, 5), *f = rnd(KN_SHAPE(4), KN_F16, -2, 2);
    CHECK_SAME(kn_mul(i, f), kn_mul(kn_to(i, cuda0), kn_to(f, cuda0)), KN_F16, "int64 * float16");
    CHECK_SAME(kn_div(i, i), kn_div(kn_to(i, cuda0), kn_to(i, cuda0)), KN_F32, "int division is true division");
    kn_scope_end(s);
}

static void test_copy_fill(void) {
    kn_scope s = kn_scope_begin();
    for (size_t a = 0; a < sizeof all_dtypes / sizeof *all_dtypes; a++)
        for (size_t b = 0; b < sizeof all_dtypes / sizeof *all_dtypes; b++) {
            kn_tensor *c, *g;
            make_pair(TRANSPOSED, KN_SHAPE(9, 5), all_dtypes[a], -300, 300, &c, &g);
            /* conversions are exact: the CPU's rounding and clamping */
            CHECK(diff(kn_cast(c, all_dtypes[b]), kn_cast(g, all_dtypes[b])) == 0, "cast %s -> %s",
                  kn_dtype_name(all_dtypes[a]), kn_dtype_name(all_dtypes[b]));
        }
    double special[] = {NAN, INFINITY, -INFINITY, 1e10, -1e10, 65520, 1e-8, -0.0};
    kn_tensor *sp = kn_from_data(special, KN_F64, KN_SHAPE(8), KN_CPU);
    for (size_t b = 0; b < sizeof all_dtypes / sizeof *all_dtypes; b++)
        CHECK(diff(kn_cast(sp, all_dtypes[b]), kn_cast(kn_to(sp, cuda0), all_dtypes[b])) == 0, "special values to %s",
              kn_dtype_name(all_dtypes[b]));
    for (size_t b = 0; b < sizeof all_dtypes / sizeof *all_dtypes; b++) {
        kn_dtype dt = all_dtypes[b];
        CHECK(diff(kn_full(KN_SHAPE(3, 5), 2.75, dt, KN_CPU), kn_full(KN_SHAPE(3, 5), 2.75, dt, cuda0)) == 0, "full %s",
              kn_dtype_name(dt));
        CHECK(diff(kn_arange(-3, 40, 0.7, dt, KN_CPU), kn_arange(-3, 40, 0.7, dt, cuda0)) == 0, "arange %s",
              kn_dtype_name(dt));
        kn_tensor *zc = kn_zeros(KN_SHAPE(6, 8), dt, KN_CPU), *zg = kn_zeros(KN_SHAPE(6, 8), dt, cuda0);
        kn_fill_(kn_slice(zc, 1, 1, 8, 3), 5);
        kn_fill_(kn_slice(zg, 1, 1, 8, 3), 5);
        CHECK(diff(zc, zg) == 0, "strided fill %s", kn_dtype_name(dt));
        kn_copy_(kn_select(zc, 0, 2), kn_arange(0, 8, 1, dt, KN_CPU));
        kn_copy_(kn_select(zg, 0, 2), kn_arange(0, 8, 1, dt, KN_CPU)); /* from the host into a strided view */
        CHECK(diff(zc, zg) == 0, "copy_ into a row %s", kn_dtype_name(dt));
    }
    CHECK(diff(kn_linspace(0, 1, 7, KN_F32, KN_CPU), kn_linspace(0, 1, 7, KN_F32, cuda0)) == 0, "linspace");
    kn_tensor *parts_c[3], *parts_g[3];
    for (int k = 0; k < 3; k++) make_pair(k == 1 ? TRANSPOSED : CONTIG, KN_SHAPE(4, 2 + k), KN_F32, -1, 1, &parts_c[k], &parts_g[k]);
    CHECK(diff(kn_concat(3, parts_c, 1), kn_concat(3, parts_g, 1)) == 0, "concat");
    kn_scope_end(s);
}

/* ---- reductions ------------------------------------------------------------------------------ */
static void test_reduce(void) {
    int dims_list[][3] = {{0}, {1}, {2}, {0, 2}, {1, 2}, {0, 1, 2}};
    int ndims_list[] = {1, 1, 1, 2, 2, 3};
    for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++)
        for (int l = 0; l < N_LAYOUTS; l++)
            for (int q = 0; q < 6; q++) {
                kn_dtype dt = all_dtypes[di];
                kn_scope s = kn_scope_begin();
                kn_tensor *a, *g;
                make_pair(l, KN_SHAPE(5, 6, 37), dt, -4, 4, &a, &g);
                int nd = ndims_list[q], *dims = dims_list[q];
                bool keep = q % 2;
                const char *ln = layout_name[l], *dn = kn_dtype_name(dt);
                CHECK_SAME(kn_sum(a, nd, dims, keep), kn_sum(g, nd, dims, keep), kn_dtype_is_float(dt) ? dt : KN_F64,
                           WHAT("sum %s %s q%d", dn, ln, q));
                CHECK_SAME(kn_max(a, nd, dims, keep), kn_max(g, nd, dims, keep), dt, WHAT("max %s %s q%d", dn, ln, q));
                CHECK_SAME(kn_min(a, nd, dims, keep), kn_min(g, nd, dims, keep), dt, WHAT("min %s %s q%d", dn, ln, q));
                if (kn_dtype_is_float(dt) || dt == KN_I64) {
                    kn_dtype fd = kn_dtype_is_float(dt) ? dt : KN_F32;
                    CHECK_SAME(kn_mean(a, nd, dims, keep), kn_mean(g, nd, dims, keep), fd, WHAT("mean %s %s", dn, ln));
                    CHECK_SAME(kn_var(a, nd, dims, 1, keep), kn_var(g, nd, dims, 1, keep), fd, WHAT("var %s %s", dn, ln));
                    CHECK_SAME(kn_std(a, nd, dims, 0, keep), kn_std(g, nd, dims, 0, keep), fd, WHAT("std %s %s", dn, ln));
                }
                if (nd == 1 && dt != KN_BOOL) {
                    CHECK(diff(kn_argmax(a, dims[0], keep), kn_argmax(g, dims[0], keep)) == 0, "argmax %s %s", dn, ln);
                    CHECK(diff(kn_argmin(a, dims[0], keep), kn_argmin(g, dims[0], keep)) == 0, "argmin %s %s", dn, ln);
                }
                kn_scope_end(s);
            }
    kn_scope s = kn_scope_begin();
    /* Large: the split path, in both layouts. */
    kn_tensor *big = rnd(KN_SHAPE(3, 1 << 19), KN_F32, -1, 1), *gbig = kn_to(big, cuda0);
    CHECK_SAME(kn_sum_all(big), kn_sum_all(gbig), KN_F32, "sum of 1.5M");
    CHECK_SAME(kn_sum(big, KN_DIMS(1), false), kn_sum(gbig, KN_DIMS(1), false), KN_F32, "row sums of 512K");
    CHECK_SAME(kn_var(big, KN_DIMS(1), 1, false), kn_var(gbig, KN_DIMS(1), 1, false), KN_F32, "row var of 512K");
    kn_tensor *tall = kn_transpose(big, 0, 1), *gtall = kn_transpose(gbig, 0, 1);
    CHECK_SAME(kn_sum(tall, KN_DIMS(0), false), kn_sum(gtall, KN_DIMS(0), false), KN_F32, "column sums of 512K");
    CHECK_SAME(kn_max(tall, KN_DIMS(0), false), kn_max(gtall, KN_DIMS(0), false), KN_F32, "column max of 512K");
    /* Empty and NaN. */
    kn_tensor *e = kn_zeros(KN_SHAPE(0, 4), KN_F32, KN_CPU);
    CHECK_SAME(kn_sum(e, KN_DIMS(0), false), kn_sum(kn_to(e, cuda0), KN_DIMS(0), false), KN_F32, "sum over empty");
    CHECK_SAME(kn_mean(e, KN_DIMS(0), false), kn_mean(kn_to(e, cuda0), KN_DIMS(0), false), KN_F32, "mean over empty");
    /* Column sums of contiguous rows (bias gradients): the fast kernel, over its edges. */
    int64_t rs[] = {1, 31, 32, 33, 1382, 5000}, cs[] = {1, 7, 200, 1000};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) {
            kn_tensor *m = rnd(KN_SHAPE(rs[i], cs[j]), KN_F32, -1, 1);
            CHECK_SAME(kn_sum(m, KN_DIMS(0), false), kn_sum(kn_to(m, cuda0), KN_DIMS(0), false), KN_F32,
                       WHAT("column sums of [%lld, %lld]", (long long)rs[i], (long long)cs[j]));
        }
    kn_tensor *rows = kn_narrow(rnd(KN_SHAPE(300, 50), KN_F32, -1, 1), 1, 3, 40); /* row stride 50 */
    CHECK_SAME(kn_sum(rows, KN_DIMS(0), false), kn_sum(kn_to(kn_contiguous(kn_narrow(rows, 1, 0, 40)), cuda0), KN_DIMS(0), false),
               KN_F32, "column sums, strided rows (reference)");
    double nv[] = {1, NAN, 3, 7, 7, 2};
    kn_tensor *n = kn_from_data(nv, KN_F32, KN_SHAPE(2, 3), KN_CPU), *gn = kn_to(n, cuda0);
    CHECK_SAME(kn_max(n, KN_DIMS(1), false), kn_max(gn, KN_DIMS(1), false), KN_F32, "max with NaN");
    CHECK(diff(kn_argmax(n, 1, false), kn_argmax(gn, 1, false)) == 0, "argmax with NaN and ties");
    kn_scope_end(s);
}

/* ---- matmul ----------------------------------------------------------------------------------- */
static void test_matmul(void) {
    struct {
        int64_t as[3], bs[3];
        int na, nb;
    } cases[] = {{{33, 17}, {17, 29}, 2, 2},        {{4, 33, 17}, {4, 17, 29}, 3, 3},
                 {{4, 33, 17}, {17, 29}, 3, 2},     {{1, 64}, {64, 1}, 2, 2},
                 {{17}, {17, 5}, 1, 2},             {{3, 0}, {0, 4}, 2, 2},
                 {{0, 5}, {5, 3}, 2, 2},            {{128, 256}, {256, 96}, 2, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        for (size_t di = 0; di < 4; di++)
            for (int l = 0; l < 3; l++) {
                kn_dtype dt = floats[di];
                kn_scope s = kn_scope_begin();
                kn_tensor *a, *ga, *b, *gb;
                make_pair(l, cases[k].na, cases[k].as, dt, -1, 1, &a, &ga);
                make_pair(l == 1 ? STRIDED : l == 2 ? TRANSPOSED : CONTIG, cases[k].nb, cases[k].bs, dt, -1, 1, &b, &gb);
                double tol = dt == KN_F32 ? 1e-4 : tol_of(dt);
                double e = diff(kn_matmul(a, b), kn_matmul(ga, gb));
                CHECK(e <= tol, "matmul case %zu %s layout %d: %g", k, kn_dtype_name(dt), l, e);
                kn_scope_end(s);
            }
    kn_scope s = kn_scope_begin();
    for (size_t di = 0; di < 4; di++) { /* linear: bias in the epilogue, with autograd */
        kn_dtype dt = floats[di];
        kn_tensor *x = rnd(KN_SHAPE(50, 20), dt, -1, 1), *w = rnd(KN_SHAPE(30, 20), dt, -1, 1), *b = rnd(KN_SHAPE(30), dt, -1, 1);
        kn_tensor *gx = kn_requires_grad_(kn_to(x, cuda0), true), *gw = kn_requires_grad_(kn_to(w, cuda0), true);
        kn_tensor *gbias = kn_requires_grad_(kn_to(b, cuda0), true);
        kn_requires_grad_(x, true), kn_requires_grad_(w, true), kn_requires_grad_(b, true);
        CHECK_SAME(kn_linear(x, w, b), kn_linear(gx, gw, gbias), dt, WHAT("linear %s", kn_dtype_name(dt)));
        kn_backward(kn_sum_all(kn_relu(kn_linear(x, w, b))));
        kn_backward(kn_sum_all(kn_relu(kn_linear(gx, gw, gbias))));
        CHECK_SAME(kn_grad(x), kn_grad(gx), dt, WHAT("linear grad x %s", kn_dtype_name(dt)));
        CHECK_SAME(kn_grad(w), kn_grad(gw), dt, WHAT("linear grad w %s", kn_dtype_name(dt)));
        CHECK_SAME(kn_grad(b), kn_grad(gbias), dt, WHAT("linear grad b %s", kn_dtype_name(dt)));
    }
    kn_scope_end(s);
}

/* ---- indexing --------------------------------------------------------------------------------- */
static void test_index(void) {
    for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++)
        for (int l = 0; l < N_LAYOUTS; l++) {
            kn_dtype dt = all_dtypes[di];
            kn_scope s = kn_scope_begin();
            kn_tensor *a, *g;
            make_pair(l, KN_SHAPE(7, 5, 6), dt, -5, 5, &a, &g);
            int64_t iv[] = {3, 0, 6, 3, 3, 1};
            kn_dtype idts[] = {KN_I64, KN_I32, KN_U8};
            kn_tensor *idx = kn_cast(kn_from_data(iv, KN_I64, KN_SHAPE(6), KN_CPU), idts[l % 3]), *gidx = kn_to(idx, cuda0);
            const char *dn = kn_dtype_name(dt), *ln = layout_name[l];
            CHECK_SAME(kn_index_select(a, 0, idx), kn_index_select(g, 0, gidx), dt, WHAT("index_select %s %s", dn, ln));
            kn_tensor *gi = rnd(KN_SHAPE(7, 5, 4), KN_I64, 0, 0.59); /* values 0..5 */
            CHECK_SAME(kn_gather(a, 2, gi), kn_gather(g, 2, kn_to(gi, cuda0)), dt, WHAT("gather %s %s", dn, ln));
            kn_tensor *src = rnd(KN_SHAPE(6, 5, 6), dt, -3, 3);
            CHECK_SAME(kn_index_add(kn_contiguous(a), 0, idx, src), kn_index_add(kn_contiguous(g), 0, gidx, kn_to(src, cuda0)),
                       dt, WHAT("index_add with repeats %s %s", dn, ln));
            kn_scope_end(s);
        }
    kn_scope s = kn_scope_begin();
    /* embedding and its backward (index_add of repeated rows) */
    kn_tensor *w = rnd(KN_SHAPE(10, 4), KN_F32, -1, 1), *ids = rnd(KN_SHAPE(300), KN_I64, 0, 0.99);
    kn_tensor *gw = kn_requires_grad_(kn_to(w, cuda0), true);
    kn_requires_grad_(w, true);
    kn_backward(kn_sum_all(kn_mul(kn_embedding(w, ids), kn_embedding(w, ids))));
    kn_backward(kn_sum_all(kn_mul(kn_embedding(gw, kn_to(ids, cuda0)), kn_embedding(gw, kn_to(ids, cuda0)))));
    CHECK_SAME(kn_grad(w), kn_grad(gw), KN_F32, "embedding backward");
    /* Joined embeddings, every float dtype, shared-memory and atomic backward paths. */
    for (size_t di = 0; di < 4; di++)
        for (int big_table = 0; big_table < 2; big_table++) {
            kn_dtype dt = floats[di];
            int64_t V[3] = {4, big_table ? 3000 : 7, 2}, D[3] = {3, 2, 5};
            kn_tensor *tc[3], *tg[3];
            for (int k = 0; k < 3; k++) {
                tc[k] = kn_requires_grad_(rnd(KN_SHAPE(V[k], D[k]), dt, -1, 1), true);
                tg[k] = kn_requires_grad_(kn_to(kn_detach(tc[k]), cuda0), true);
            }
            int64_t codes[500 * 3];
            for (int n = 0; n < 500; n++)
                for (int k = 0; k < 3; k++) codes[n * 3 + k] = (n * 131 + k * 7 + n / 3) % V[k];
            kn_tensor *cc = kn_from_data(codes, KN_I64, KN_SHAPE(500, 3), KN_CPU), *cg = kn_to(cc, cuda0);
            kn_tensor *yc = kn_embedding_cat(3, tc, cc), *yg = kn_embedding_cat(3, tg, cg);
            CHECK_SAME(yc, yg, dt, WHAT("embedding_cat %s", kn_dtype_name(dt)));
            kn_tensor *wt = rnd(KN_SHAPE(500, 10), dt, -1, 1);
            kn_backward(kn_sum_all(kn_mul(yc, wt)));
            kn_backward(kn_sum_all(kn_mul(yg, kn_to(wt, cuda0))));
            for (int k = 0; k < 3; k++)
                CHECK_SAME(kn_grad(tc[k]), kn_grad(tg[k]), dt,
                           WHAT("embedding_cat grad %d %s%s", k, kn_dtype_name(dt), big_table ? " (atomics)" : ""));
        }
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
}

/* ---- nn functions --------------------------------------------------------------------------- */
/* Forward and input gradients of f on the CPU and the GPU; inputs [0, ngrad)
 * get gradients, the others are passed as they are (updated in place, maybe). */
typedef kn_tensor *(*nn_fn)(kn_tensor **in, void *ctx);

static void compare_fn(const char *name, nn_fn f, void *ctx, int n, int ngrad, kn_tensor **cpu, kn_tensor **gpu,
                       kn_dtype dt) {
    kn_scope s = kn_scope_begin();
    kn_tensor *xc[8], *xg[8];
    for (int k = 0; k < n; k++) {
        xc[k] = k < ngrad ? kn_requires_grad_(kn_clone(cpu[k]), true) : cpu[k];
        xg[k] = k < ngrad ? kn_requires_grad_(kn_clone(gpu[k]), true) : gpu[k];
    }
    kn_tensor *yc = f(xc, ctx), *yg = f(xg, ctx);
    CHECK_SAME(yc, yg, dt, WHAT("%s %s", name, kn_dtype_name(dt)));
    kn_tensor *w = rnd(kn_ndim(yc), kn_shape(yc), dt, -1, 1);
    if (yc && kn_requires_grad(yc)) {
        kn_backward(kn_sum_all(kn_mul(yc, w)));
        kn_backward(kn_sum_all(kn_mul(yg, kn_to(w, cuda0))));
        for (int k = 0; k < ngrad; k++)
                CHECK_SAME(kn_grad(xc[k]), kn_grad(xg[k]), dt, WHAT("%s grad %d %s", name, k, kn_dtype_name(dt)));
    }
    kn_scope_end(s);
}

static kn_tensor *f_softmax(kn_tensor **in, void *ctx) { return kn_softmax(in[0], *(int *)ctx); }
static kn_tensor *f_log_softmax(kn_tensor **in, void *ctx) { return kn_log_softmax(in[0], *(int *)ctx); }
static kn_tensor *f_ce(kn_tensor **in, void *ctx) {
    kn_loss_opts o = kn_loss_opts_default();
    int mode = *(int *)ctx;
    if (mode >= 1) o.label_smoothing = 0.1;
    if (mode >= 2) o.weight = in[2];
    if (mode >= 3) o.ignore_index = 2;
    if (mode == 4) o.reduction = KN_REDUCTION_NONE;
    return kn_cross_entropy_ex(in[0], in[1], &o);
}
static kn_tensor *f_bn(kn_tensor **in, void *ctx) {
    bool training = *(int *)ctx;
    return kn_batch_norm(in[0], in[3], in[4], in[1], in[2], training, 0.1, 1e-5);
}
static kn_tensor *f_ln(kn_tensor **in, void *ctx) {
    (void)ctx;
    return kn_layer_norm(in[0], 1, in[1], in[2], 1e-5);
}

/* The fused Linear [+ ReLU] -> BatchNorm [+ Dropout] block (in: x, w, b, gamma, beta, rm, rv, count). */
static kn_tensor *f_linear_bn(kn_tensor **in, void *ctx) {
    int mode = *(int *)ctx; /* bit 0: relu, bit 1: dropout, bit 2: eval */
    kn_generator g = kn_generator_make(21);
    kn__bn_opts o = {.running_mean = in[5], .running_var = in[6], .weight = in[3], .bias = in[4], .num_batches = in[7],
                     .training = !(mode & 4), .momentum = 0.1, .eps = 1e-5, .dropout = mode & 2 ? 0.3 : 0, .gen = &g};
    return kn__linear_bn(in[0], in[1], in[2], mode & 1 ? KN_ACT_RELU : KN_ACT_NONE, &o);
}
static kn_tensor *f_linear_relu(kn_tensor **in, void *ctx) {
    (void)ctx;
    return kn__linear_act(in[0], in[1], in[2], KN_ACT_RELU);
}

static void test_nn(void) {
    /* Fused blocks against the CPU: rows that fit the registers (300) and that do not (3000). */
    for (size_t di = 0; di < 4; di++)
        for (int mode = 0; mode < 8; mode++)
            for (int big = 0; big < 2; big++) {
                kn_dtype dt = floats[di];
                if (big && dt != KN_F32) continue;
                kn_scope s = kn_scope_begin();
                int64_t N = big ? 3000 : 300, C = 45;
                kn_tensor *c[8], *g[8];
                make_pair(mode % 2 ? TRANSPOSED : CONTIG, KN_SHAPE(N, 13), dt, -2, 2, &c[0], &g[0]);
                c[1] = rnd(KN_SHAPE(C, 13), dt, -0.5, 0.5), c[2] = rnd(KN_SHAPE(C), dt, -0.5, 0.5);
                c[3] = rnd(KN_SHAPE(C), dt, 0.5, 1.5), c[4] = rnd(KN_SHAPE(C), dt, -1, 1);
                c[5] = rnd(KN_SHAPE(C), KN_F32, -1, 1), c[6] = rnd(KN_SHAPE(C), KN_F32, 0.5, 2);
                c[7] = kn_zeros(0, NULL, KN_I64, KN_CPU);
                for (int k = 1; k < 8; k++) g[k] = kn_to(c[k], cuda0);
                char name[64];
                snprintf(name, sizeof name, "linear_batch_norm mode %d%s", mode, big ? " (3000 rows)" : "");
                compare_fn(name, f_linear_bn, &mode, 8, 5, c, g, dt);
                CHECK_SAME(c[5], g[5], KN_F32, WHAT("fused running mean %s mode %d", kn_dtype_name(dt), mode));
                CHECK_SAME(c[6], g[6], KN_F32, WHAT("fused running var %s mode %d", kn_dtype_name(dt), mode));
                CHECK(kn_item(c[7]) == kn_item(g[7]), "batch count %g on the CPU, %g on the GPU", kn_item(c[7]), kn_item(g[7]));
                if (mode == 0) compare_fn("linear_relu", f_linear_relu, NULL, 3, 3, c, g, dt);
                kn_scope_end(s);
            }

    for (size_t di = 0; di < 4; di++) {
        kn_dtype dt = floats[di];
        for (int dim = 0; dim < 3; dim++)
            for (int l = 0; l < 3; l++) {
                kn_tensor *a, *g;
                kn_scope s = kn_scope_begin();
                make_pair(l, KN_SHAPE(4, 9, 70), dt, -4, 4, &a, &g);
                compare_fn("softmax", f_softmax, &dim, 1, 1, &a, &g, dt);
                compare_fn("log_softmax", f_log_softmax, &dim, 1, 1, &a, &g, dt);
                kn_scope_end(s);
            }
        for (int mode = 0; mode < 5; mode++) {
            kn_scope s = kn_scope_begin();
            kn_tensor *c[3], *g[3];
            make_pair(mode % 2 ? TRANSPOSED : CONTIG, KN_SHAPE(40, 7), dt, -3, 3, &c[0], &g[0]);
            c[1] = rnd(KN_SHAPE(40), KN_I64, 0, 0.69), g[1] = kn_to(c[1], cuda0);
            c[2] = rnd(KN_SHAPE(7), dt, 0.5, 2), g[2] = kn_to(c[2], cuda0);
            compare_fn("cross_entropy", f_ce, &mode, 3, 1, c, g, dt);
            kn_scope_end(s);
        }
        for (int training = 0; training < 2; training++)
            for (int nd = 2; nd <= 3; nd++) {
                kn_scope s = kn_scope_begin();
                kn_tensor *c[5], *g[5];
                if (nd == 2) make_pair(STRIDED, KN_SHAPE(300, 45), dt, -2, 5, &c[0], &g[0]);
                else make_pair(TRANSPOSED, KN_SHAPE(6, 5, 33), dt, -2, 5, &c[0], &g[0]);
                int64_t C = kn_size(c[0], 1);
                c[1] = rnd(1, &C, dt, 0.5, 1.5), c[2] = rnd(1, &C, dt, -1, 1);
                c[3] = rnd(1, &C, KN_F32, -1, 1), c[4] = rnd(1, &C, KN_F32, 0.5, 2);
                for (int k = 1; k < 5; k++) g[k] = kn_to(c[k], cuda0);
                compare_fn("batch_norm", f_bn, &training, 5, 3, c, g, dt);
                CHECK_SAME(c[3], g[3], KN_F32, WHAT("running mean %s", kn_dtype_name(dt)));
                CHECK_SAME(c[4], g[4], KN_F32, WHAT("running var %s", kn_dtype_name(dt)));
                kn_scope_end(s);
            }
        kn_scope s = kn_scope_begin();
        kn_tensor *c[3], *g[3];
        make_pair(STRIDED, KN_SHAPE(3, 11, 80), dt, -2, 2, &c[0], &g[0]);
        c[1] = rnd(KN_SHAPE(80), dt, 0.5, 1.5), c[2] = rnd(KN_SHAPE(80), dt, -1, 1);
        g[1] = kn_to(c[1], cuda0), g[2] = kn_to(c[2], cuda0);
        compare_fn("layer_norm", f_ln, NULL, 3, 3, c, g, dt);
        kn_scope_end(s);
    }
    /* A bad target: reported at the next read, naming the op. */
    kn_scope s = kn_scope_begin();
    int64_t tv[] = {0, 9, 1};
    kn_tensor *tg = kn_to(kn_from_data(tv, KN_I64, KN_SHAPE(3), KN_CPU), cuda0);
    kn_error_clear();
    kn_tensor *l = kn_cross_entropy(kn_zeros(KN_SHAPE(3, 4), KN_F32, cuda0), tg);
    double v = l ? kn_item(l) : NAN; /* the error surfaces at a later op or at the read */
    CHECK(v != v, "a bad target makes the read fail");
    CHECK_ERROR("cross_entropy: target 9 is out of range for 4 classes");
    kn_error_clear();
    kn_scope_end(s);
}

/* ---- randomness: the same bits as the CPU --------------------------------------------------------- */
static void test_random(void) {
    kn_scope s = kn_scope_begin();
    for (size_t di = 0; di < 4; di++) {
        kn_dtype dt = floats[di];
        kn_generator a = kn_generator_make(99), b = kn_generator_make(99);
        for (int rep = 0; rep < 2; rep++) { /* the second draw starts at an odd offset */
            CHECK(diff(kn_rand(KN_SHAPE(1001), dt, KN_CPU, &a), kn_rand(KN_SHAPE(1001), dt, cuda0, &b)) == 0,
                  "rand %s identical", kn_dtype_name(dt));
            double e = diff(kn_randn(KN_SHAPE(3, 333), dt, KN_CPU, &a), kn_randn(KN_SHAPE(3, 333), dt, cuda0, &b));
            CHECK(e <= (dt == KN_F64 ? 1e-15 : 0), "randn %s identical (%g)", kn_dtype_name(dt), e);
        }
        kn_tensor *uc = kn_empty(KN_SHAPE(77), dt, KN_CPU), *ug = kn_empty(KN_SHAPE(77), dt, cuda0);
        kn_uniform_(uc, -3, 5, &a);
        kn_uniform_(ug, -3, 5, &b);
        CHECK(diff(uc, ug) == 0, "uniform_ %s", kn_dtype_name(dt));
    }
    kn_dtype ints[] = {KN_I64, KN_I32, KN_U8, KN_F32};
    for (int k = 0; k < 4; k++) {
        kn_generator a = kn_generator_make(5), b = kn_generator_make(5);
        CHECK(diff(kn_randint(-7, 200, KN_SHAPE(999), ints[k], KN_CPU, &a),
                   kn_randint(-7, 200, KN_SHAPE(999), ints[k], cuda0, &b)) == 0,
              "randint %s identical", kn_dtype_name(ints[k]));
    }
    kn_generator a = kn_generator_make(3), b = kn_generator_make(3);
    CHECK(diff(kn_randperm(500, KN_CPU, &a), kn_randperm(500, cuda0, &b)) == 0, "randperm identical");
    /* dropout: same mask, same output */
    for (size_t di = 0; di < 4; di++) {
        kn_dtype dt = floats[di];
        kn_tensor *x, *gx;
        make_pair(STRIDED, KN_SHAPE(37, 41), dt, -1, 1, &x, &gx);
        kn_generator ga = kn_generator_make(11), gb = kn_generator_make(11);
        kn_tensor *xc = kn_requires_grad_(kn_clone(x), true), *xg = kn_requires_grad_(kn_clone(gx), true);
        kn_tensor *yc = kn_dropout(xc, 0.3, true, &ga), *yg = kn_dropout(xg, 0.3, true, &gb);
        CHECK(diff(yc, yg) == 0, "dropout %s identical", kn_dtype_name(dt));
        kn_backward(kn_sum_all(yc));
        kn_backward(kn_sum_all(yg));
        CHECK(diff(kn_grad(xc), kn_grad(xg)) == 0, "dropout mask %s identical", kn_dtype_name(dt));
    }
    kn_scope_end(s);
}

/* ---- optimizers ------------------------------------------------------------------------------------ */
static void test_optim(void) {
    for (int kind = 0; kind < 4; kind++)
        for (size_t di = 0; di < 2; di++) {
            kn_dtype dt = floats[di];
            kn_scope s = kn_scope_begin();
            kn_tensor *pc[3], *pg[3];
            for (int k = 0; k < 3; k++) {
                pc[k] = kn_requires_grad_(rnd(KN_SHAPE(17 + 1000 * k), dt, -1, 1), true);
                pg[k] = kn_requires_grad_(kn_to(kn_detach(pc[k]), cuda0), true);
            }
            kn_adam_opts ao = kn_adam_defaults(0.01);
            ao.weight_decay = 0.1;
            kn_sgd_opts so = kn_sgd_defaults(0.1);
            so.momentum = 0.9, so.nesterov = kind == 3;
            kn_optim *oc = kind == 0 ? kn_adam_params(3, pc, ao) : kind == 1 ? kn_adamw_params(3, pc, ao) : kn_sgd_params(3, pc, so);
            kn_optim *og = kind == 0 ? kn_adam_params(3, pg, ao) : kind == 1 ? kn_adamw_params(3, pg, ao) : kn_sgd_params(3, pg, so);
            for (int step = 0; step < 3; step++) {
                kn_scope t = kn_scope_begin();
                kn_optim_zero_grad(oc);
                kn_optim_zero_grad(og);
                for (int k = 0; k < 3; k++) {
                    kn_backward(kn_sum_all(kn_mul(pc[k], pc[k])));
                    kn_backward(kn_sum_all(kn_mul(pg[k], pg[k])));
                }
                kn_optim_step(oc);
                kn_optim_step(og);
                kn_scope_end(t);
            }
            for (int k = 0; k < 3; k++)
                CHECK_SAME(pc[k], pg[k], dt, WHAT("optimizer %d param %d %s", kind, k, kn_dtype_name(dt)));
            kn_optim_free(oc);
            kn_optim_free(og);
            kn_scope_end(s);
        }
}

/* ---- graph capture: replay gives the eager losses ---------------------------------------------------- */
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


/* Eager against replayed losses for one configuration; prints both on a mismatch. */
static void graph_variant(const char *name, double p, int opt) {
    enum { N = 6 };
    double e[N], r[N];
    train_ctx t;
    make_train_ex(&t, cuda0, p, opt);
    for (int i = 0; i < N; i++) e[i] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN;
    free_train(&t);
    make_train_ex(&t, cuda0, p, opt);
    r[0] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN;
    kn_graph *g = kn_graph_capture(cuda0, train_step, &t);
    for (int i = 1; i < N; i++) r[i] = g && kn_graph_replay(g) == KN_OK ? kn_item(t.loss) : NAN;
    kn_graph_free(g);
    free_train(&t);
    bool same = true;
    for (int i = 0; i < N; i++) same = same && fabs(e[i] - r[i]) <= 1e-5 * (1 + fabs(e[i]));
    CHECK(same, "graph variant %s: eager %.7f %.7f %.7f %.7f, replay %.7f %.7f %.7f %.7f", name, e[0], e[1], e[2],
          e[3], r[0], r[1], r[2], r[3]);
}

/* Replays of a captured random op draw the numbers eager calls draw. */
static kn_tensor *rng_buf;
static kn_status rng_step(void *p) {
    (void)p;
    return kn_uniform_(rng_buf, 0, 1, NULL);
}

static void test_graph_rng(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *ref[5];
    kn_manual_seed(5);
    for (int k = 0; k < 5; k++) ref[k] = kn_rand(KN_SHAPE(3, 333), KN_F32, cuda0, NULL);
    kn_manual_seed(5);
    rng_buf = kn_empty(KN_SHAPE(3, 333), KN_F32, cuda0);
    rng_step(NULL);
    CHECK(diff(ref[0], rng_buf) == 0, "eager draw");
    kn_graph *g = kn_graph_capture(cuda0, rng_step, NULL);
    CHECK(g != NULL, "capture a random op");
    for (int k = 1; k < 5 && g; k++) {
        kn_graph_replay(g);
        CHECK(diff(ref[k], rng_buf) == 0, "replay %d draws the eager numbers", k);
    }
    kn_graph_free(g);
    kn_scope_end(s);
}

static kn_status reading_step(void *p) {
    (void)p;
    kn_scope s = kn_scope_begin();
    double v = kn_item(kn_sum_all(kn_ones(KN_SHAPE(4), KN_F32, cuda0)));
    kn_scope_end(s);
    return v == v ? KN_OK : kn_error_code();
}

static void test_graph(void) {
    enum { STEPS = 30 };
    test_graph_rng();
    graph_variant("sgd, no dropout", 0, 1);
    graph_variant("adam, no dropout", 0, 0);
    graph_variant("sgd, dropout", 0.3, 1);
    double eager[STEPS], replay[STEPS], cpu[3];
    train_ctx t;
    make_train(&t, KN_CPU);
    for (int i = 0; i < 3; i++) cpu[i] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN;
    free_train(&t);
    make_train(&t, cuda0);
    for (int i = 0; i < STEPS; i++) eager[i] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN;
    free_train(&t);
    for (int i = 0; i < 3; i++) CHECK_NEAR(eager[i], cpu[i], 1e-4);

    CHECK(kn_graph_supported(cuda0), "cuda can capture");
    kn_memory_stats m0, m1;
    make_train(&t, cuda0);
    replay[0] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN; /* warm-up: optimizer state exists */
    kn_graph *g = kn_graph_capture(cuda0, train_step, &t);
    CHECK(g != NULL, "capture a training step");
    kn_device_memory_stats(cuda0, &m0);
    for (int i = 1; i < STEPS && g; i++) {
        CHECK(kn_graph_replay(g) == KN_OK, "replay");
        replay[i] = kn_item(t.loss);
    }
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use == m0.in_use, "replays allocate nothing");
    for (int i = 0; i < STEPS && g; i++) CHECK_NEAR(replay[i], eager[i], 1e-5);
    /* Tensors made before the graph keep working beside it. */
    kn_tensor *p = kn_module_parameters(t.model, &(int){0})[0].tensor;
    CHECK(isfinite(kn_item(kn_sum_all(p))), "parameters readable after replays");
    /* A host transfer inside a capture is refused with a clear message. */
    kn_error_clear();
    CHECK(kn_graph_capture(cuda0, reading_step, NULL) == NULL, "a step that reads a value cannot be captured");
    CHECK_ERROR("cannot be captured");
    kn_error_clear();
    kn_graph_free(g);
    free_train(&t);
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(5), KN_F32, cuda0))) == 5, "eager after the graph");
}

/* ---- gradient checks in float64 on the GPU ------------------------------------------------------------ */
static kn_tensor *g_matmul(kn_tensor **in, void *c) { (void)c; return kn_matmul(in[0], kn_transpose(in[1], 0, 1)); }
static kn_tensor *g_softmax(kn_tensor **in, void *c) { (void)c; return kn_log_softmax(kn_mul(in[0], in[0]), 1); }
static kn_tensor *g_norms(kn_tensor **in, void *c) {
    (void)c;
    return kn_layer_norm(kn_batch_norm(in[0], NULL, NULL, in[1], NULL, true, 0.1, 1e-5), 1, NULL, NULL, 1e-5);
}
static kn_tensor *g_index(kn_tensor **in, void *c) {
    (void)c;
    return kn_gather(kn_tanh(kn_index_select(in[0], 0, in[1])), 1, in[2]);
}

static void test_gradcheck(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_to(rnd(KN_SHAPE(4, 5), KN_F64, -1, 1), cuda0), *b = kn_to(rnd(KN_SHAPE(3, 5), KN_F64, -1, 1), cuda0);
    kn_tensor *in1[2] = {a, b};
    double e = kn_gradcheck(g_matmul, 2, in1, NULL, 1e-6);
    CHECK(e >= 0 && e < 1e-6, "gradcheck matmul on cuda: %g", e);
    e = kn_gradcheck(g_softmax, 1, in1, NULL, 1e-6);
    CHECK(e >= 0 && e < 1e-6, "gradcheck softmax on cuda: %g", e);
    kn_tensor *w = kn_to(rnd(KN_SHAPE(5), KN_F64, 0.5, 1.5), cuda0), *in2[2] = {a, w};
    e = kn_gradcheck(g_norms, 2, in2, NULL, 1e-6);
    CHECK(e >= 0 && e < 1e-5, "gradcheck batch_norm + layer_norm on cuda: %g", e);
    int64_t iv[] = {2, 0, 2}, gv[] = {4, 1, 0, 3, 3, 2};
    kn_tensor *in3[3] = {a, kn_to(kn_from_data(iv, KN_I64, KN_SHAPE(3), KN_CPU), cuda0),
                         kn_to(kn_from_data(gv, KN_I64, KN_SHAPE(3, 2), KN_CPU), cuda0)};
    e = kn_gradcheck(g_index, 3, in3, NULL, 1e-6);
    CHECK(e >= 0 && e < 1e-6, "gradcheck index_select + gather on cuda: %g", e);
    kn_scope_end(s);
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
    { kn_scope s_ = kn_scope_begin(); test_copy_fill(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_unary(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_binary(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_reduce(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_matmul(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_index(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_nn(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_random(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_optim(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_graph(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_gradcheck(); kn_scope_end(s_); }
    kn_fallback_stat st[64];
    int n = kn_fallback_stats(st, 64);
    for (int i = 0; i < n && i < 64; i++)
        CHECK(st[i].kind != KN_DEVICE_CUDA, "op '%s' fell back to the CPU %lld times", st[i].op, (long long)st[i].count);
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("cuda");
}
