/* GEMM through kiln on the GPU: C = A @ B, square n, random data.
 *
 *   bench_cuda_gemm f32|tf32|bf16|f16|f64 n [iterations]
 *
 * tf32 is float32 with KILN_ALLOW_TF32=1. Prints one line:
 *   kiln_gemm <dtype> <n> <ms> <TFLOP/s> <max relative error of a sample>
 * The time is the median of 5 runs of `iterations` products each.
 *
 * Built with -DKILN_GEMM_LIBRARY this file is instead a small shared library
 * (kgb_open / kgb_time / kgb_error / kgb_close) that bench/cuda/gemm.py loads
 * next to PyTorch, so that both run in one process, alternately, on a GPU in
 * the same state: a large GEMM runs at the power limit, and its clock depends
 * on what ran just before. */
#include "kiln.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static kn_device dev;
static kn_tensor *a, *b;
static int64_t n;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void kgb_close(void) {
    kn_release(a), kn_release(b);
    a = b = NULL;
}

/* Random n x n operands on the first CUDA device, and three warm-up products
 * (the first picks the GEMM's algorithm). 0, or -1 with the reason on stderr. */
int kgb_open(const char *dtype, long long size) {
    kgb_close();
    bool tf32 = !strcmp(dtype, "tf32");
    int dt = kn_dtype_from_name(tf32 ? "f32" : dtype);
    setenv("KILN_ALLOW_TF32", tf32 ? "1" : "0", 1);
    dev = kn_device_get("cuda");
    if (dt < 0 || !kn_dtype_is_float((kn_dtype)dt) || dev.kind < 0) {
        fprintf(stderr, "kiln gemm: %s\n", dt < 0 ? "unknown dtype" : kn_error());
        return -1;
    }
    n = size;
    kn_generator g = kn_generator_make(1);
    a = kn_randn(KN_SHAPE(n, n), (kn_dtype)dt, dev, &g);
    b = kn_randn(KN_SHAPE(n, n), (kn_dtype)dt, dev, &g);
    if (!a || !b) {
        fprintf(stderr, "kiln gemm: %s\n", kn_error());
        return -1;
    }
    for (int k = 0; k < 3; k++) kn_release(kn_matmul(a, b));
    return kn_device_synchronize(dev) == KN_OK ? 0 : -1;
}

/* Milliseconds per product over `calls` products back to back (a new output
 * each, as torch.matmul makes), from an idle stream to the last one done. */
double kgb_time(int calls) {
    kn_device_synchronize(dev);
    double t0 = now_ms();
    for (int k = 0; k < calls; k++) kn_release(kn_matmul(a, b));
    kn_device_synchronize(dev);
    return (now_ms() - t0) / calls;
}

/* The largest error of an 8 x 8 corner of A @ B against float64 on the host,
 * relative to the corner's largest value; NaN if it cannot be read back. */
double kgb_error(void) {
    kn_tensor *c = kn_matmul(a, b);
    int64_t s = 8;
    double *av = malloc((size_t)(s * n) * 8), *bv = malloc((size_t)(n * s) * 8), *cv = malloc((size_t)(s * s) * 8);
    kn_tensor *as = kn_narrow(a, 0, 0, s), *bs = kn_narrow(b, 1, 0, s), *cs = kn_narrow(kn_narrow(c, 0, 0, s), 1, 0, s);
    double worst = 0, scale = 0;
    if (av && bv && cv && kn_to_host(as, av, KN_F64) == KN_OK && kn_to_host(bs, bv, KN_F64) == KN_OK &&
        kn_to_host(cs, cv, KN_F64) == KN_OK) {
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
    free(av), free(bv), free(cv);
    kn_release(as), kn_release(bs), kn_release(cs), kn_release(c);
    return worst / (scale > 0 ? scale : 1);
}

#ifndef KILN_GEMM_LIBRARY
static int cmp(const void *x, const void *y) {
    double u = *(const double *)x, v = *(const double *)y;
    return u < v ? -1 : u > v;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "f32";
    long long size = argc > 2 ? atoll(argv[2]) : 4096;
    int iters = argc > 3 ? atoi(argv[3]) : 20;
    if (size < 8 || iters < 1) {
        fprintf(stderr, "usage: bench_cuda_gemm f32|tf32|bf16|f16|f64 n>=8 [iterations]\n");
        return 2;
    }
    if (kgb_open(name, size)) return 1;
    double runs[5];
    for (int r = 0; r < 5; r++) runs[r] = kgb_time(iters);
    qsort(runs, 5, sizeof *runs, cmp);
    printf("kiln_gemm %s %lld %.4f %.1f %.2e\n", name, size, runs[2], 2.0 * size * size * size / runs[2] / 1e9,
           kgb_error());
    kgb_close();
    return 0;
}
#endif
