/* GEMM through kiln on the GPU: C = A @ B, square n, random data.
 *
 *   bench_cuda_gemm f32|bf16|f16|f64 n [iterations]
 *
 * TF32 for float32 when KILN_ALLOW_TF32=1. Prints one line:
 *   kiln_gemm <dtype> <n> <ms> <TFLOP/s> <max relative error of a sample>
 * The time is the median of 5 runs of `iterations` products each. */
#include "kiln.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "f32";
    int64_t n = argc > 2 ? atoll(argv[2]) : 4096;
    int iters = argc > 3 ? atoi(argv[3]) : 20;
    int dt = kn_dtype_from_name(name);
    kn_device dev = kn_device_get("cuda");
    if (dt < 0 || !kn_dtype_is_float((kn_dtype)dt) || dev.kind < 0) {
        fprintf(stderr, "bench_cuda_gemm: %s\n", dt < 0 ? "unknown dtype" : kn_error());
        return 1;
    }
    kn_generator g = kn_generator_make(1);
    kn_tensor *a = kn_randn(KN_SHAPE(n, n), (kn_dtype)dt, dev, &g), *b = kn_randn(KN_SHAPE(n, n), (kn_dtype)dt, dev, &g);
    for (int k = 0; k < 3; k++) kn_release(kn_matmul(a, b)); /* warm-up: plans, workspace, clocks */
    double runs[5];
    for (int r = 0; r < 5; r++) {
        kn_device_synchronize(dev);
        double t0 = now_ms();
        for (int k = 0; k < iters; k++) kn_release(kn_matmul(a, b));
        kn_device_synchronize(dev);
        runs[r] = (now_ms() - t0) / iters;
    }
    qsort(runs, 5, sizeof *runs, cmp);
    /* A sample of the result against float64 on the host. */
    kn_tensor *c = kn_matmul(a, b);
    int64_t s = 8;
    double *av = malloc((size_t)(s * n) * 8), *bv = malloc((size_t)(n * s) * 8), *cv = malloc((size_t)(s * s) * 8);
    kn_tensor *as = kn_narrow(a, 0, 0, s), *bs = kn_narrow(b, 1, 0, s), *cs = kn_narrow(kn_narrow(c, 0, 0, s), 1, 0, s);
    double worst = 0, scale = 0;
    if (kn_to_host(as, av, KN_F64) == KN_OK && kn_to_host(bs, bv, KN_F64) == KN_OK && kn_to_host(cs, cv, KN_F64) == KN_OK) {
        for (int64_t i = 0; i < s; i++)
            for (int64_t j = 0; j < s; j++) {
                double ref = 0;
                for (int64_t k = 0; k < n; k++) ref += av[i * n + k] * bv[k * s + j];
                worst = fmax(worst, fabs(ref - cv[i * s + j]));
                scale = fmax(scale, fabs(ref));
            }
    } else {
        worst = NAN;
    }
    printf("kiln_gemm %s %lld %.4f %.1f %.2e\n", name, (long long)n, runs[2], 2.0 * n * n * n / runs[2] / 1e9,
           worst / (scale > 0 ? scale : 1));
    free(av), free(bv), free(cv);
    kn_release(as), kn_release(bs), kn_release(cs), kn_release(c), kn_release(a), kn_release(b);
    return 0;
}
