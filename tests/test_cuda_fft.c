/* What only the CUDA FFT has (src/backends/cuda/cuda_fft.c): cuFFT plans
 * made and used inside graph captures, the refusal of Bluestein plans
 * there, the plan cache past its size (evicted plans made again), the
 * workspace given back to kiln's allocator, and lengths and batches that
 * the composite could not run. Results are compared with the CPU's FFT,
 * which shares no code with cuFFT. Skipped (exit 77) without a CUDA device. */
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

static kn_tensor *crand(int64_t rows, int64_t cols, kn_dtype dt, uint64_t seed) {
    kn_generator g = kn_generator_make(seed);
    return kn_view_as_complex(kn_randn(KN_SHAPE(rows, cols, 2), kn_dtype_real(dt), KN_CPU, &g));
}

/* ---- graphs ------------------------------------------------------------------------------- */
typedef struct {
    kn_tensor *x, *y;
    int64_t n; /* the length of the second transform (along dim 0, cropped or padded) */
} fft_ctx;

static kn_status fft_step(void *p) {
    fft_ctx *t = p;
    kn_scope s = kn_scope_begin();
    kn_tensor *y = kn_ifft(kn_fft(t->x, -1, -1, KN_FFT_NORM_BACKWARD), t->n, 0, KN_FFT_NORM_ORTHO);
    kn_release(t->y);
    t->y = kn_retain(y);
    kn_scope_end(s);
    return y ? KN_OK : kn_error_code();
}

static void test_graphs(void) {
    kn_tensor *h = crand(48, 256, KN_C64, 3);
    fft_ctx t = {.x = kn_retain(kn_to(h, cuda0)), .n = 48};
    kn_tensor *ref = kn_ifft(kn_fft(h, -1, -1, KN_FFT_NORM_BACKWARD), 60, 0, KN_FFT_NORM_ORTHO);
    CHECK(fft_step(&t) == KN_OK, "eager step");
    t.n = 60; /* first seen in the capture: that plan is made there */
    kn_graph *g = kn_graph_capture(cuda0, fft_step, &t);
    CHECK(g != NULL, "capture a step of FFTs (one plan new)");
    kn_memory_stats m0, m1;
    kn_device_memory_stats(cuda0, &m0);
    for (int i = 0; i < 3 && g; i++) {
        CHECK(kn_graph_replay(g) == KN_OK, "replay");
        CHECK(cdiff(ref, t.y) < 1e-5, "replay %d matches the CPU (%g)", i, cdiff(ref, t.y));
    }
    kn_device_memory_stats(cuda0, &m1);
    CHECK(m1.in_use == m0.in_use, "replays allocate nothing (%zu -> %zu)", m0.in_use, m1.in_use);
    kn_graph_free(g);
    /* A length with a prime factor above 127 (Bluestein) first seen in a
     * capture is refused with the way out; after an eager step it works. */
    t.n = 131;
    kn_error_clear();
    CHECK(kn_graph_capture(cuda0, fft_step, &t) == NULL, "a new Bluestein plan in a capture is refused");
    CHECK_ERROR("before capturing");
    kn_error_clear();
    CHECK(fft_step(&t) == KN_OK, "eager Bluestein step");
    g = kn_graph_capture(cuda0, fft_step, &t);
    CHECK(g != NULL, "capture with the Bluestein plan cached");
    ref = kn_ifft(kn_fft(h, -1, -1, KN_FFT_NORM_BACKWARD), 131, 0, KN_FFT_NORM_ORTHO);
    CHECK(g && kn_graph_replay(g) == KN_OK, "replay");
    CHECK(cdiff(ref, t.y) < 1e-5, "the Bluestein replay matches the CPU (%g)", cdiff(ref, t.y));
    kn_graph_free(g);
    kn_release(t.x);
    kn_release(t.y);
    CHECK(kn_item(kn_sum_all(kn_ones(KN_SHAPE(5), KN_F32, cuda0))) == 5, "eager after the graphs");
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
    { kn_scope s_ = kn_scope_begin(); test_cache(); kn_scope_end(s_); }
    { kn_scope s_ = kn_scope_begin(); test_sizes(); kn_scope_end(s_); }
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("cuda_fft");
}
