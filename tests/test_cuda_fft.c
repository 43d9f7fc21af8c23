/* What only the CUDA FFT has (src/backends/cuda/cuda_fft.c): cuFFT plans
 * made and used inside graph captures (complex and real transforms), the
 * refusal of Bluestein plans there, the plan cache past its size (evicted
 * plans made again), the workspace given back to kiln's allocator, the
 * inverse real transform's scratch copy (its input left as it was, the
 * imaginary parts of bin 0 and the Nyquist bin ignored), and lengths and
 * batches that the composite could not run. Results are compared with the
 * CPU's FFT, which shares no code with cuFFT. Skipped (exit 77) without a
 * CUDA device. */
#include "kn_test.h"
#include "kiln/fft.h"

static kn_device cuda0;

/* Largest |a - b| over the pairs, relative to the largest |a|; INFINITY when
 * the shapes differ or a read fails. */
static double cdiff(kn_tensor *cpu, kn_tensor *gpu) {
    if (!cpu || !gpu || kn_numel(cpu) != kn_numel(gpu)) return INFINITY;
    int64_t n = kn_numel(cpu);
    double *a = malloc((size_t)(2 * n + 2) * 8), *b = malloc((size_t)(2 * n + 2) * 8), worst = 0, top = 0;
    if (!a || !b || kn_to_host(cpu, a, KN_C128) != KN_OK || kn_to_host(gpu, b, KN_C128) != KN_OK) worst = INFINITY;
    for (int64_t i = 0; i < 2 * n && worst < INFINITY; i++) {
        top = fmax(top, fabs(a[i]));
        worst = fmax(worst, fabs(a[i] - b[i]));
    }
    free(a);
    free(b);
    return worst / (top > 0 ? top : 1);
}

/* As cdiff, for real or complex tensors of one shape (through the real view). */
static double rdiff(kn_tensor *cpu, kn_tensor *gpu) {
    if (cpu && kn_dtype_is_complex(kn_dtype_of(cpu))) cpu = kn_view_as_real(cpu);
    if (gpu && kn_dtype_is_complex(kn_dtype_of(gpu))) gpu = kn_view_as_real(gpu);
    if (!cpu || !gpu || kn_numel(cpu) != kn_numel(gpu)) return INFINITY;
    int64_t n = kn_numel(cpu);
    double *a = malloc((size_t)(n + 1) * 8), *b = malloc((size_t)(n + 1) * 8), worst = 0, top = 0;
    if (!a || !b || kn_to_host(cpu, a, KN_F64) != KN_OK || kn_to_host(gpu, b, KN_F64) != KN_OK) worst = INFINITY;
    for (int64_t i = 0; i < n && worst < INFINITY; i++) {
        top = fmax(top, fabs(a[i]));
        worst = fmax(worst, fabs(a[i] - b[i]));
    }
    free(a);
    free(b);
    return worst / (top > 0 ? top : 1);
}

static kn_tensor *rrand(int64_t rows, int64_t cols, kn_dtype dt, uint64_t seed) {
    kn_generator g = kn_generator_make(seed);
    return kn_randn(KN_SHAPE(rows, cols), dt, KN_CPU, &g);
}

static kn_tensor *crand(int64_t rows, int64_t cols, kn_dtype dt, uint64_t seed) {
    kn_generator g = kn_generator_make(seed);
    return kn_view_as_complex(kn_randn(KN_SHAPE(rows, cols, 2), kn_dtype_real(dt), KN_CPU, &g));
}

/* ---- graphs ------------------------------------------------------------------------------- */
/* A step of transforms of x into y; n is the length of the second one. */
typedef struct {
    kn_tensor *x, *y;
    int64_t n;
} step_ctx;

static kn_status keep_result(step_ctx *t, kn_tensor *y) {
    kn_release(t->y);
    t->y = kn_retain(y);
    return y ? KN_OK : kn_error_code();
}

/* y = ifft(fft(x) along dim 1) along dim 0, cropped or padded to n. */
static kn_status fft_step(void *p) {
    step_ctx *t = p;
    kn_scope s = kn_scope_begin();
    kn_status st = keep_result(t, kn_ifft(kn_fft(t->x, -1, -1, KN_FFT_NORM_BACKWARD), t->n, 0, KN_FFT_NORM_ORTHO));
    kn_scope_end(s);
    return st;
}

/* y = irfft(rfft(x) along dim 1, to length n). */
static kn_status rfft_step(void *p) {
    step_ctx *t = p;
    kn_scope s = kn_scope_begin();
    kn_status st = keep_result(t, kn_irfft(kn_rfft(t->x, -1, 1, KN_FFT_NORM_ORTHO), t->n, 1, KN_FFT_NORM_BACKWARD));
    kn_scope_end(s);
    return st;
}

/* step on h (on the CPU) captured in graphs on cuda0: eager at length n0,
 * then captured at n1, whose plan is first made in the capture, and replayed
 * without allocating; then the Bluestein length nb, refused in a capture
 * (with `refusal` in the error) until an eager step has cached its plan.
 * Every replay against the same step run on the CPU. */
static void check_graphs(const char *what, kn_status (*step)(void *), kn_tensor *h, int64_t n0, int64_t n1,
                         int64_t nb, const char *refusal) {
    step_ctx t = {.x = kn_retain(kn_to(h, cuda0)), .n = n0}, ref = {.x = h, .n = n1};
    CHECK(step(&ref) == KN_OK, "%s: the CPU's step", what);
    CHECK(step(&t) == KN_OK, "%s: eager step", what);
    t.n = n1;
    kn_graph *g = kn_graph_capture(cuda0, step, &t);
    CHECK(g != NULL, "%s: capture a step (one plan new)", what);
    kn_memory_stats m0, m1;
    kn_device_memory_stats(cuda0, &m0);
    for (int i = 0; i < 3 && g; i++) {
        CHECK(kn_graph_replay(g) == KN_OK, "%s: replay", what);
        CHECK(rdiff(ref.y, t.y) < 1e-5, "%s: replay %d matches the CPU (%g)", what, i, rdiff(ref.y, t.y));
    }
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use == m0.in_use, "%s: replays allocate nothing (%zu -> %zu)", what, m0.in_use, m1.in_use);
    kn_graph_free(g);
    t.n = ref.n = nb;
    kn_error_clear();
    CHECK(kn_graph_capture(cuda0, step, &t) == NULL, "%s: a new Bluestein plan in a capture is refused", what);
    CHECK_ERROR(refusal);
    kn_error_clear();
    CHECK(step(&t) == KN_OK, "%s: eager Bluestein step", what);
    g = kn_graph_capture(cuda0, step, &t);
    CHECK(g != NULL, "%s: capture with the Bluestein plan cached", what);
    CHECK(step(&ref) == KN_OK, "%s: the CPU's Bluestein step", what);
    CHECK(g && kn_graph_replay(g) == KN_OK, "%s: Bluestein replay", what);
    CHECK(rdiff(ref.y, t.y) < 1e-5, "%s: the Bluestein replay matches the CPU (%g)", what, rdiff(ref.y, t.y));
    kn_graph_free(g);
    kn_release(t.x);
    kn_release(t.y);
    kn_release(ref.y);
}

static void test_graphs(void) {
    /* Captured: an ifft of 60 along dim 0, a C2R of 150 (bins cropped from 101
     * to 76). 131 is a prime above 127 (Bluestein); 262 = 2 x 131 makes C2R
     * Bluestein too. */
    check_graphs("fft", fft_step, crand(48, 256, KN_C64, 3), 48, 60, 131, "before capturing");
    check_graphs("real", rfft_step, rrand(24, 200, KN_F32, 5), 200, 150, 262,
                 "irfft: length 262 has a prime factor above 127");
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(5), KN_F32, cuda0))) == 5, "eager after the graphs");
}

/* ---- the inverse real transform's input ----------------------------------------------------- */
/* C2R overwrites its input and assumes a Hermitian one: kiln runs it on a
 * copy with the imaginary parts of bin 0 and (even n) bin n/2 zeroed. The
 * random bins here have those parts of order 1; the result must match the
 * CPU (which ignores them) and the bins be left as they were, for layouts
 * that take each path: the last dim, dim 0, a transposed input, the middle
 * of a 3-D tensor (loops, and the copy with dim innermost), n of 1 and 2. */
static void test_c2r_input(void) {
    struct { int64_t a, b, c; int dim; int64_t n; bool transposed; kn_dtype dt; } c[] = {
        {64, 513, 1, 1, 1024, false, KN_C64}, {64, 513, 1, 1, 1025, false, KN_C64}, {9, 6, 1, 0, 10, false, KN_C64},
        {7, 17, 1, 1, 12, true, KN_C64},      {3, 5, 20, 1, 8, false, KN_C64},      {40, 5, 30, 1, 9, false, KN_C128},
        {6, 1, 1, 1, 1, false, KN_C64},       {6, 2, 1, 1, 2, false, KN_C128},      {6, 2, 1, 1, 3, false, KN_C64},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        kn_scope s = kn_scope_begin();
        kn_generator g = kn_generator_make(40 + i);
        kn_tensor *h = kn_view_as_complex(kn_randn(KN_SHAPE(c[i].a, c[i].b, c[i].c, 2), kn_dtype_real(c[i].dt), KN_CPU, &g));
        if (c[i].c == 1) h = kn_reshape(h, KN_SHAPE(c[i].a, c[i].b));
        kn_tensor *d = kn_to(h, cuda0);
        if (c[i].transposed) {
            h = kn_transpose(h, 0, 1);
            d = kn_transpose(d, 0, 1);
        }
        kn_tensor *before = kn_clone(d);
        kn_tensor *ref = kn_irfft(h, c[i].n, c[i].dim, KN_FFT_NORM_BACKWARD);
        kn_tensor *got = kn_irfft(d, c[i].n, c[i].dim, KN_FFT_NORM_BACKWARD);
        double e = rdiff(ref, got), tol = c[i].dt == KN_C128 ? 1e-12 : 1e-5;
        CHECK(e < tol, "irfft case %zu (n %lld along dim %d) matches the CPU (%g)", i, (long long)c[i].n, c[i].dim, e);
        CHECK(rdiff(before, d) == 0, "irfft case %zu leaves its input as it was", i);
        kn_scope_end(s);
    }
}

/* R2C reads its real input in place at its own strides, or from a copy:
 * each layout below against the CPU (the middle of a 3-D tensor with loops
 * over the outer dims and with the copy that puts dim innermost, odd and
 * even n, a stride of 2, a transposed, an offset and a broadcast input,
 * n of 1 and 2). */
static void test_r2c_layouts(void) {
    enum { PLAIN, STEP2, TRANSPOSED, OFFSET, EXPANDED };
    struct { int64_t a, b, c; int dim, how; kn_dtype dt; } c[] = {
        {3, 8, 20, 1, PLAIN, KN_F32},  {40, 6, 30, 1, PLAIN, KN_F32},  {40, 7, 30, 1, PLAIN, KN_F64},
        {5, 30, 1, 1, STEP2, KN_F32},  {17, 7, 1, 1, TRANSPOSED, KN_F32}, {6, 33, 1, 1, OFFSET, KN_F32},
        {4, 16, 1, 1, EXPANDED, KN_F32}, {6, 1, 1, 1, PLAIN, KN_F32},  {6, 2, 1, 1, PLAIN, KN_F64},
        {2, 9, 1, 0, PLAIN, KN_F32},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        kn_scope s = kn_scope_begin();
        kn_generator g = kn_generator_make(70 + i);
        kn_tensor *h = kn_randn(KN_SHAPE(c[i].a, c[i].b, c[i].c), c[i].dt, KN_CPU, &g);
        if (c[i].c == 1) h = kn_reshape(h, KN_SHAPE(c[i].a, c[i].b));
        kn_tensor *d = kn_to(h, cuda0);
        switch (c[i].how) {
        case STEP2: h = kn_slice(h, 1, 0, c[i].b, 2), d = kn_slice(d, 1, 0, c[i].b, 2); break;
        case TRANSPOSED: h = kn_transpose(h, 0, 1), d = kn_transpose(d, 0, 1); break;
        case OFFSET: h = kn_narrow(h, 1, 1, c[i].b - 1), d = kn_narrow(d, 1, 1, c[i].b - 1); break;
        case EXPANDED:
            h = kn_expand(kn_narrow(h, 0, 0, 1), KN_SHAPE(c[i].a, -1));
            d = kn_expand(kn_narrow(d, 0, 0, 1), KN_SHAPE(c[i].a, -1));
            break;
        default: break;
        }
        double e = rdiff(kn_rfft(h, -1, c[i].dim, KN_FFT_NORM_ORTHO), kn_rfft(d, -1, c[i].dim, KN_FFT_NORM_ORTHO));
        CHECK(e < (c[i].dt == KN_F64 ? 1e-12 : 1e-5), "rfft case %zu (along dim %d) matches the CPU (%g)", i, c[i].dim,
              e);
        kn_scope_end(s);
    }
}

/* ---- the plan cache, memory, sizes -------------------------------------------------------- */
static void test_cache(void) {
    kn_memory_stats m0, m1;
    kn_device_synchronize(cuda0);
    kn_device_memory_stats(cuda0, &m0);
    /* More lengths than the cache holds, twice: the first ones are evicted
     * and made again; every result still matches the CPU. */
    for (int pass = 0; pass < 2; pass++)
        for (int64_t n = 2; n < 2 + 40; n++) {
            kn_scope s = kn_scope_begin();
            kn_tensor *h = crand(5, n, KN_C64, (uint64_t)n);
            double e = cdiff(kn_fft(h, -1, 1, KN_FFT_NORM_BACKWARD), kn_fft(kn_to(h, cuda0), -1, 1, KN_FFT_NORM_BACKWARD));
            CHECK(e < 1e-5, "length %lld, pass %d (%g)", (long long)n, pass, e);
            kn_scope_end(s);
        }
    kn_device_synchronize(cuda0);
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use == m0.in_use, "workspaces given back (%zu -> %zu bytes in use)", m0.in_use, m1.in_use);
}

static void test_sizes(void) {
    /* Past the composite's limit of 32768, a large batch, float64, a prime. */
    struct { int64_t rows, cols; kn_dtype dt; double tol; } c[] = {
        {2, 40000, KN_C64, 1e-5}, {100000, 8, KN_C64, 1e-5}, {3, 1 << 16, KN_C128, 1e-12}, {4, 65537, KN_C64, 1e-5},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        kn_scope s = kn_scope_begin();
        kn_tensor *h = crand(c[i].rows, c[i].cols, c[i].dt, 11 + i);
        double e = cdiff(kn_ifft(h, -1, -1, KN_FFT_NORM_BACKWARD), kn_ifft(kn_to(h, cuda0), -1, -1, KN_FFT_NORM_BACKWARD));
        CHECK(e < c[i].tol, "ifft [%lld, %lld] %s (%g)", (long long)c[i].rows, (long long)c[i].cols,
              kn_dtype_name(c[i].dt), e);
        /* the real transforms of the real parts, there and back */
        kn_tensor *r = kn_contiguous(kn_real(h)), *rd = kn_to(r, cuda0);
        kn_tensor *z = kn_rfft(r, -1, -1, KN_FFT_NORM_BACKWARD), *zd = kn_rfft(rd, -1, -1, KN_FFT_NORM_BACKWARD);
        e = rdiff(z, zd);
        CHECK(e < c[i].tol, "rfft [%lld, %lld] %s (%g)", (long long)c[i].rows, (long long)c[i].cols,
              kn_dtype_name(c[i].dt), e);
        e = rdiff(kn_irfft(z, c[i].cols, -1, KN_FFT_NORM_BACKWARD), kn_irfft(zd, c[i].cols, -1, KN_FFT_NORM_BACKWARD));
        CHECK(e < c[i].tol, "irfft [%lld, %lld] %s (%g)", (long long)c[i].rows, (long long)c[i].cols,
              kn_dtype_name(c[i].dt), e);
        kn_scope_end(s);
    }
}

/* --missing: KILN_CUFFT names a file that is not there (before the first
 * FFT: the library is opened once per process). The FFT fails with the
 * loader's message, nothing falls back, and other ops keep working. */
static int test_missing(void) {
    setenv("KILN_CUFFT", "/nonexistent/libcufft.so.12", 1);
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_to(crand(2, 16, KN_C64, 1), cuda0);
    kn_error_clear();
    CHECK(x && kn_fft(x, -1, -1, KN_FFT_NORM_BACKWARD) == NULL, "no FFT without cuFFT");
    CHECK_ERROR("fft: cannot load cuFFT from KILN_CUFFT=/nonexistent/libcufft.so.12");
    kn_error_clear();
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(3), KN_F32, cuda0))) == 3, "other ops still run");
    kn_scope_end(s);
    return kt_finish("cuda_fft --missing");
}

int main(int argc, char **argv) {
    if (kn_device_count(KN_DEVICE_CUDA) == 0) {
        printf("cuda_fft: skipped (no CUDA device)\n");
        return 77;
    }
    cuda0 = kn_device_get("cuda:0");
    if (argc > 1 && !strcmp(argv[1], "--missing")) return test_missing();
    printf("cuda_fft: testing on %s\n", kn_device_description(cuda0));
    { kn_scope s_ = kn_scope_begin(); test_graphs(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_c2r_input(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_r2c_layouts(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_cache(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_sizes(); kn_scope_end(s_); }
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("cuda_fft");
}
