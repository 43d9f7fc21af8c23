/* Core: tensors, views, dtypes, scopes, devices, errors, randomness and the
 * CPU fallback of a backend without kernels. */
#include "kn_test.h"

static double at(kn_tensor *t, int64_t i, int64_t j) {
    return kn_get(t, (int64_t[]){i, j});
}

static void test_creation_and_views(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_arange(0, 12, 1, KN_F32, KN_CPU);
    CHECK(kn_numel(a) == 12 && kn_ndim(a) == 1, "arange numel");
    kn_tensor *m = kn_reshape(a, KN_SHAPE(3, 4));
    CHECK(kn_shares_storage(a, m), "reshape of contiguous is a view");
    CHECK(at(m, 2, 1) == 9, "reshape element");
    kn_tensor *t = kn_transpose(m, 0, 1);
    CHECK(kn_size(t, 0) == 4 && kn_stride(t, 0) == 1 && !kn_is_contiguous(t), "transpose strides");
    CHECK(at(t, 1, 2) == 9, "transpose element");
    kn_tensor *c = kn_contiguous(t);
    CHECK(kn_is_contiguous(c) && !kn_shares_storage(c, t) && at(c, 1, 2) == 9, "contiguous copy");
    kn_tensor *r = kn_reshape(t, KN_SHAPE(12));
    CHECK(r && !kn_shares_storage(r, t) && kn_get(r, (int64_t[]){1}) == 4, "reshape of transposed copies");
    CHECK(kn_view(t, KN_SHAPE(12)) == NULL, "view of transposed fails");
    CHECK_ERROR("view");
    kn_tensor *sl = kn_slice(m, 1, 1, 4, 2);
    CHECK(kn_size(sl, 1) == 2 && at(sl, 1, 0) == 5 && at(sl, 1, 1) == 7 && kn_offset(sl) == 1, "slice with step");
    kn_tensor *nr = kn_narrow(m, 0, 1, 2);
    CHECK(kn_size(nr, 0) == 2 && at(nr, 0, 0) == 4, "narrow");
    kn_tensor *sel = kn_select(m, 1, -1);
    CHECK(kn_ndim(sel) == 1 && kn_get(sel, (int64_t[]){2}) == 11, "select negative index");
    kn_tensor *e = kn_expand(kn_reshape(kn_arange(0, 3, 1, KN_F32, KN_CPU), KN_SHAPE(3, 1)), KN_SHAPE(3, 5));
    CHECK(kn_stride(e, 1) == 0 && at(e, 2, 4) == 2, "expand has stride 0");
    kn_tensor *u = kn_unsqueeze(m, 1);
    CHECK(kn_ndim(u) == 3 && kn_size(u, 1) == 1, "unsqueeze");
    CHECK(kn_ndim(kn_squeeze(u, 1)) == 2, "squeeze");
    kn_tensor *p = kn_permute(kn_reshape(a, KN_SHAPE(2, 3, 2)), KN_DIMS(2, 0, 1));
    CHECK(kn_size(p, 0) == 2 && kn_size(p, 2) == 3 && kn_get(p, (int64_t[]){1, 1, 2}) == 11, "permute");
    CHECK(kn_size(kn_flatten(p, 0, -1), 0) == 12, "flatten");
    kn_tensor *z = kn_zeros(KN_SHAPE(0, 3), KN_F32, KN_CPU);
    CHECK(z && kn_numel(z) == 0, "zero-size tensor");
    CHECK(kn_numel(kn_sum(z, KN_DIMS(0), false)) == 3, "sum over an empty dim");
    kn_tensor *full = kn_full(KN_SHAPE(2, 2), 7.5, KN_F64, KN_CPU);
    CHECK(at(full, 1, 1) == 7.5, "full");
    kn_tensor *ls = kn_linspace(0, 1, 5, KN_F32, KN_CPU);
    CHECK(kn_get(ls, (int64_t[]){4}) == 1 && kn_get(ls, (int64_t[]){1}) == 0.25, "linspace");
    kn_tensor *eye = kn_eye(3, KN_I32, KN_CPU);
    CHECK(at(eye, 1, 1) == 1 && at(eye, 1, 2) == 0, "eye");
    CHECK(kn_reshape(a, KN_SHAPE(5, -1)) == NULL, "bad reshape");
    CHECK_ERROR("reshape: shape [5, -1] is invalid for a tensor of shape [12]");
    kn_scope_end(s);
}

static void test_dtypes(void) {
    kn_scope s = kn_scope_begin();
    double vals[] = {-2.5, -0.5, 0, 1.5, 3.75, 65504, 1e-3, 300};
    kn_tensor *d = kn_from_data(vals, KN_F64, KN_SHAPE(8), KN_CPU);
    for (int dt = 0; dt < KN_DTYPE_REAL_COUNT; dt++) {
        kn_tensor *c = kn_cast(d, (kn_dtype)dt);
        double out[8];
        CHECK(c && kn_to_host(c, out, KN_F64) == KN_OK, "cast to %s", kn_dtype_name((kn_dtype)dt));
        for (int i = 0; i < 8; i++) {
            double want = vals[i];
            switch (dt) {
            case KN_F16: want = kn__f16_to_f32(kn__f32_to_f16((float)vals[i])); break;
            case KN_BF16: want = kn__bf16_to_f32(kn__f32_to_bf16((float)vals[i])); break;
            case KN_F32: want = (float)vals[i]; break;
            case KN_I32: case KN_I64: want = trunc(vals[i]); break;
            case KN_U8: want = vals[i] < 0 ? 0 : vals[i] > 255 ? 255 : trunc(vals[i]); break;
            case KN_BOOL: want = vals[i] != 0; break;
            default: break;
            }
            CHECK(out[i] == want, "%s element %d: %g vs %g", kn_dtype_name((kn_dtype)dt), i, out[i], want);
        }
    }
    /* f16 and bf16 precision: exact for these values, rounding to nearest even. */
    CHECK(kn__f16_to_f32(kn__f32_to_f16(65504.f)) == 65504.f, "f16 max");
    CHECK(isinf(kn__f16_to_f32(kn__f32_to_f16(70000.f))), "f16 overflow is inf");
    CHECK(kn__f16_to_f32(kn__f32_to_f16(5.96046448e-8f)) == 5.96046448e-8f, "f16 smallest subnormal");
    CHECK(kn__bf16_to_f32(kn__f32_to_bf16(1.00390625f)) == 1.0f, "bf16 ties to even");
    CHECK(kn_dtype_promote(KN_I64, KN_F16) == KN_F16 && kn_dtype_promote(KN_F16, KN_BF16) == KN_F32 &&
              kn_dtype_promote(KN_BOOL, KN_U8) == KN_U8,
          "promotion");
    kn_tensor *i = kn_arange(0, 4, 1, KN_I64, KN_CPU);
    kn_tensor *q = kn_div(i, kn_scalar(2, KN_I64, KN_CPU));
    CHECK(kn_dtype_of(q) == KN_F32 && kn_get(q, (int64_t[]){3}) == 1.5, "integer division is true division");
    CHECK(kn_dtype_of(kn_sum_all(kn_cast(i, KN_BOOL))) == KN_I64, "sum of bool is int64");
    kn_scope_end(s);
}

static void test_scopes_and_refs(void) {
    int64_t live = kn_live_tensors();
    kn_tensor *kept = NULL;
    {
        kn_scope outer = kn_scope_begin();
        kn_scope inner = kn_scope_begin();
        kn_tensor *a = kn_ones(KN_SHAPE(4), KN_F32, KN_CPU);
        kn_tensor *b = kn_add(a, a);
        kept = kn_keep(b);
        kn_scope_end(inner);
        CHECK(kn_get(kept, (int64_t[]){0}) == 2, "kept tensor survives the inner scope");
        kn_keep(kept); /* to the caller */
        kn_scope_end(outer);
    }
    CHECK(kn_live_tensors() == live + 1, "only the kept tensor is alive (%lld)", (long long)(kn_live_tensors() - live));
    kn_release(kept);
    CHECK(kn_live_tensors() == live, "all freed");
    /* Without a scope the caller owns results. */
    kn_tensor *x = kn_zeros(KN_SHAPE(2), KN_F32, KN_CPU);
    CHECK(kn_live_tensors() == live + 1, "unscoped tensor alive");
    kn_release(x);
    CHECK(kn_live_tensors() == live, "released");
}

static void test_errors(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_zeros(KN_SHAPE(3, 4), KN_F32, KN_CPU), *b = kn_zeros(KN_SHAPE(5, 6), KN_F32, KN_CPU);
    CHECK(kn_matmul(a, b) == NULL, "matmul shape mismatch");
    CHECK_ERROR("matmul: shapes [3, 4] and [5, 6] do not match");
    CHECK(kn_error_code() == KN_ERR_SHAPE, "status");
    /* A chain checked once at the end keeps the first cause. */
    kn_tensor *r = kn_relu(kn_exp(kn_matmul(a, b)));
    CHECK(r == NULL, "NULL propagates");
    CHECK_ERROR("matmul: shapes");
    CHECK(kn_add(a, b) == NULL, "broadcast mismatch");
    CHECK_ERROR("add: shapes [3, 4] and [5, 6] cannot be broadcast");
    kn_device d = kn_device_get("tpu");
    CHECK(d.kind < 0, "unknown device");
    CHECK_ERROR("unknown device 'tpu'");
    if (kn_device_count(KN_DEVICE_CUDA) == 0) {
        d = kn_device_get("cuda:1");
        CHECK(d.kind < 0, "absent device");
        CHECK_ERROR("device 'cuda:1' is not available");
        setenv("KILN_DEVICE", "cuda", 1);
        d = kn_device_default();
        CHECK(d.kind < 0, "KILN_DEVICE naming an absent device is an error, not a fallback");
        unsetenv("KILN_DEVICE");
    }
    setenv("KILN_DEVICE", "cpu", 1);
    CHECK(kn_device_equal(kn_device_default(), KN_CPU), "KILN_DEVICE=cpu");
    unsetenv("KILN_DEVICE");
    kn_tensor *ints = kn_zeros(KN_SHAPE(2, 2), KN_I64, KN_CPU);
    CHECK(kn_matmul(ints, ints) == NULL, "matmul on int64");
    CHECK_ERROR("matmul: int64 is not supported");
    CHECK(kn_requires_grad_(ints, true) == NULL, "int grad");
    CHECK_ERROR("only floating-point and complex tensors can require gradients, not int64");
    CHECK(kn_sum(a, KN_DIMS(2), false) == NULL, "bad dim");
    CHECK_ERROR("sum: dim 2 out of range for a 2-d tensor");
    CHECK(kn_zeros(KN_SHAPE(1, 2, 3, 4, 5, 6, 7, 8, 9), KN_F32, KN_CPU) == NULL, "too many dims");
    CHECK_ERROR("zeros: 9 dimensions (at most 8)");
    CHECK(kn_zeros(KN_SHAPE((int64_t)1 << 50, (int64_t)1 << 20), KN_F32, KN_CPU) == NULL, "huge alloc fails cleanly");
    CHECK(kn_error_code() == KN_ERR_OOM, "out of memory status");
    CHECK_ERROR("zeros: out of memory");
    kn_scope_end(s);
}

static int handler_calls;
static void handler(kn_status s, const char *msg, void *user) {
    (void)s;
    (void)msg;
    (void)user;
    handler_calls++;
}

static void test_error_handler(void) {
    kn_set_error_handler(handler, NULL);
    kn_tensor *t = kn_reshape(NULL, KN_SHAPE(1));
    kn_error_clear();
    t = kn_reshape(NULL, KN_SHAPE(1));
    CHECK(t == NULL && handler_calls >= 1, "handler called");
    kn_set_error_handler(NULL, NULL);
}

static void test_philox(void) {
    /* Known-answer vectors of Random123 (kat_vectors, philox4x32_10). */
    uint32_t out[4];
    kn_philox4x32((uint32_t[]){0, 0, 0, 0}, (uint32_t[]){0, 0}, out);
    CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u,
          "philox zeros: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
    kn_philox4x32((uint32_t[]){~0u, ~0u, ~0u, ~0u}, (uint32_t[]){~0u, ~0u}, out);
    CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu,
          "philox ones: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
    kn_philox4x32((uint32_t[]){0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                  (uint32_t[]){0xa4093822u, 0x299f31d0u}, out);
    CHECK(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u && out[3] == 0x24126ea1u,
          "philox pi: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);

    kn_scope s = kn_scope_begin();
    kn_generator g1 = kn_generator_make(42), g2 = kn_generator_make(42);
    kn_tensor *a = kn_rand(KN_SHAPE(1000), KN_F32, KN_CPU, &g1);
    kn_tensor *b = kn_rand(KN_SHAPE(1000), KN_F32, KN_CPU, &g2);
    kn_tensor *c = kn_rand(KN_SHAPE(1000), KN_F32, KN_CPU, &g1);
    CHECK(kn_item(kn_sum_all(kn_ne(a, b))) == 0, "same seed, same numbers");
    CHECK(kn_item(kn_sum_all(kn_ne(a, c))) > 990, "the stream advances");
    double mean = kn_item(kn_mean_all(a)), mn = kn_item(kn_min(a, 0, NULL, false)), mx = kn_item(kn_max(a, 0, NULL, false));
    CHECK(mean > 0.45 && mean < 0.55 && mn >= 0 && mx < 1, "uniform: mean %g in [%g, %g)", mean, mn, mx);
    kn_tensor *n = kn_randn(KN_SHAPE(20000), KN_F64, KN_CPU, &g1);
    double nm = kn_item(kn_mean_all(n)), sd = kn_item(kn_std(n, 0, NULL, 1, false));
    CHECK(fabs(nm) < 0.03 && fabs(sd - 1) < 0.03, "normal: mean %g std %g", nm, sd);
    kn_tensor *ri = kn_randint(-3, 4, KN_SHAPE(5000), KN_I64, KN_CPU, &g1);
    CHECK(kn_item(kn_min(ri, 0, NULL, false)) == -3 && kn_item(kn_max(ri, 0, NULL, false)) == 3, "randint range");
    kn_tensor *perm = kn_randperm(100, KN_CPU, &g1);
    kn_tensor *sorted_sum = kn_sum_all(perm);
    CHECK(kn_item(sorted_sum) == 4950, "randperm is a permutation");
    bool seen[100] = {0};
    int64_t pv[100];
    kn_to_host(perm, pv, KN_I64);
    int distinct = 0;
    for (int i = 0; i < 100; i++)
        if (pv[i] >= 0 && pv[i] < 100 && !seen[pv[i]]) seen[pv[i]] = true, distinct++;
    CHECK(distinct == 100, "randperm has every index once");
    kn_scope_end(s);
}

/* Every op on a backend with no kernels gives the CPU's result, and counts. */
static void test_fallback(void) {
    kn_device t = kt_register_test_device();
    CHECK(t.kind >= 0 && kn_device_count((kn_device_kind)t.kind) == 1, "test device registered");
    CHECK(kn_device_equal(kt_register_test_device(), t), "registering again gives the same kind");
    CHECK(!strcmp(kn_device_str(t), "test:0") && kn_device_equal(kn_device_get("test"), t), "named by the backend");
    CHECK(!strcmp(kn_device_kind_name((kn_device_kind)t.kind), "Test"), "titled by the backend");
    kn_device p = kt_prim_device();
    CHECK(p.kind >= 0 && p.kind != t.kind && kn_device_equal(kn_device_get("prim:0"), p), "a second run-time backend");
    kn_backend bad = {.name = "cpu", .title = "X", .device_count = kt_count, .alloc = kt_alloc, .free = kt_free,
                      .copy_h2d = kt_copy, .copy_d2h = kt_copy, .copy_d2d = kt_copy};
    CHECK(kn__backend_register(&bad) < 0, "the cpu backend cannot be replaced");
    CHECK_ERROR("the cpu backend cannot be replaced");
    bad.name = "incomplete", bad.alloc = NULL;
    CHECK(kn__backend_register(&bad) < 0, "a backend without alloc is refused");
    CHECK_ERROR("a backend needs a name, a title");
    kn_error_clear();
    CHECK(kn_device_equal(kn_device_default(), kn_device_default()) && kn_device_default().kind != t.kind &&
              kn_device_default().kind != p.kind,
          "priority 0 backends are never the default");
    kn_fallback_stats_reset();
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_randn(KN_SHAPE(5, 7), KN_F32, KN_CPU, NULL), *b = kn_randn(KN_SHAPE(7, 3), KN_F32, KN_CPU, NULL);
    kn_tensor *ta = kn_to(a, t), *tb = kn_to(b, t);
    CHECK(kn_device_equal(kn_device_of(ta), t), "moved to the test device");
    kn_tensor *ref = kn_relu(kn_matmul(kn_transpose(kn_transpose(a, 0, 1), 0, 1), b));
    kn_tensor *got = kn_relu(kn_matmul(kn_transpose(kn_transpose(ta, 0, 1), 0, 1), tb));
    CHECK(kn_device_equal(kn_device_of(got), t), "result stays on the device");
    kn_tensor *back = kn_to(got, KN_CPU);
    CHECK(kn_item(kn_max(kn_abs(kn_sub(back, ref)), 0, NULL, false)) == 0, "same result as on the CPU");
    /* A strided output (copy into a column) goes through the fallback too. */
    kn_tensor *z = kn_zeros(KN_SHAPE(5, 3), KN_F32, t);
    CHECK(kn_copy_(kn_select(z, 1, 1), kn_select(got, 1, 1)) == KN_OK, "strided copy_");
    CHECK(kn_get(z, (int64_t[]){2, 1}) == kn_get(got, (int64_t[]){2, 1}) && kn_get(z, (int64_t[]){2, 0}) == 0,
          "strided write-back keeps the other elements");
    kn_fallback_stat st[64];
    int n = kn_fallback_stats(st, 64);
    bool saw_matmul = false, saw_relu = false;
    for (int i = 0; i < n && i < 64; i++) {
        CHECK((int)st[i].kind == t.kind && st[i].count > 0, "fallback counters are per device kind");
        if (!strcmp(st[i].op, "matmul")) saw_matmul = true;
        if (!strcmp(st[i].op, "relu")) saw_relu = true;
    }
    CHECK(saw_matmul && saw_relu, "matmul and relu were counted as fallbacks");
    kn_scope_end(s);
}

static void test_devices(void) {
    CHECK(kn_device_count(KN_DEVICE_CPU) == 1, "one CPU device");
    CHECK(!strcmp(kn_device_str(KN_CPU), "cpu") && !strcmp(kn_device_kind_name(KN_DEVICE_CPU), "CPU"), "names");
    size_t fr = 0, tot = 0;
    CHECK(kn_device_memory(KN_CPU, &fr, &tot) == KN_OK && tot > 0 && fr <= tot, "CPU memory");
    kn_device d = kn_device_default();
    CHECK(kn_device_ok(d), "a default device exists");
    CHECK(strlen(kn_device_default_reason()) > 0, "the choice has a reason");
    CHECK(kn_num_threads() >= 1, "threads");
}

/* A strided copy in one dtype moves the bits: a signaling NaN stays one
 * (a copy through float arithmetic would quiet it). */
static void test_copy_bits(void) {
    kn_scope sc = kn_scope_begin();
    uint32_t f32[4] = {0x7f800001u, 0x3f800000u, 0xffc00123u, 0x00000001u}; /* sNaN, 1, a payload NaN, a denormal */
    uint16_t f16[4] = {0x7c01u, 0x3c00u, 0xfe23u, 0x0001u};
    uint64_t f64[4] = {0x7ff0000000000001ull, 0x3ff0000000000000ull, 0xfff8000000000123ull, 1};
    struct { kn_dtype dt; const void *bits; size_t es; } cases[] = {
        {KN_F32, f32, 4}, {KN_F16, f16, 2}, {KN_BF16, f16, 2}, {KN_F64, f64, 8}};
    for (int k = 0; k < 4; k++) {
        kn_tensor *t = kn_from_data(cases[k].bits, cases[k].dt, KN_SHAPE(2, 2), KN_CPU);
        kn_tensor *c = kn_contiguous(kn_transpose(t, 0, 1)); /* a strided copy */
        unsigned char got[32] = {0};
        const int order[4] = {0, 2, 1, 3};
        bool ok = c && kn_to_host(c, got, cases[k].dt) == KN_OK;
        for (int i = 0; ok && i < 4; i++)
            ok = !memcmp(got + (size_t)i * cases[k].es, (const char *)cases[k].bits + (size_t)order[i] * cases[k].es, cases[k].es);
        CHECK(ok, "%s: a strided copy keeps the bits (signaling NaN, NaN payload)", kn_dtype_name(cases[k].dt));
    }
    kn_scope_end(sc);
}

/* The deterministic-algorithms switch (its effect: bench_cnn_step's check on CUDA). */
static void test_deterministic_switch(void) {
    const char *e = getenv("KILN_DETERMINISTIC");
    bool from_env = e && *e && strcmp(e, "0");
    CHECK(kn_deterministic_algorithms() == from_env, "off by default, on with KILN_DETERMINISTIC=1");
    kn_use_deterministic_algorithms(true);
    CHECK(kn_deterministic_algorithms(), "turned on");
    kn_use_deterministic_algorithms(false);
    CHECK(!kn_deterministic_algorithms(), "turned off");
    kn_use_deterministic_algorithms(from_env);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    test_deterministic_switch();
    test_copy_bits();
    test_creation_and_views();
    test_dtypes();
    test_scopes_and_refs();
    test_errors();
    test_error_handler();
    test_philox();
    test_fallback();
    test_devices();
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("core");
}
