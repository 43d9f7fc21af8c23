/* float32 matmul on one device: GFLOP/s of kn_matmul for square sizes, and
 * the largest relative error against a float64 CPU product on a sample of
 * entries (so a fast wrong kernel cannot pass for a fast one). Run by
 * bench/matmul_device.py beside torch.matmul, or alone:
 * Usage: bench_matmul_device DEVICE [N ...]   (default sizes 512 1024 2048 4096) */
#include <kiln.h>

#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run(kn_device dev, int64_t n) {
    kn_scope sc = kn_scope_begin();
    int64_t shape[2] = {n, n};
    kn_generator gen = kn_generator_make(1);
    kn_tensor *a = kn_randn(2, shape, KN_F32, dev, &gen), *b = kn_randn(2, shape, KN_F32, dev, &gen);
    kn_tensor *c = kn_matmul(a, b); /* warm-up: pipelines, memory */
    if (!c || kn_device_synchronize(dev) != KN_OK) {
        fprintf(stderr, "bench_matmul_device: %s\n", kn_error());
        kn_scope_end(sc);
        return 1;
    }
    int reps = 0;
    double t0 = bench_now(), t;
    do {
        kn_scope inner = kn_scope_begin();
        kn_matmul(a, b);
        kn_scope_end(inner);
        reps++;
        kn_device_synchronize(dev);
        t = bench_now() - t0;
    } while (t < 0.5 && reps < 200);
    double sec = t / reps, gflops = 2.0 * (double)n * (double)n * (double)n / sec * 1e-9;
    /* 64 sampled entries against float64 dot products of the same inputs. */
    size_t nn = (size_t)(n * n);
    float *ha = malloc(nn * 4), *hb = malloc(nn * 4), *hc = malloc(nn * 4);
    double worst = 0;
    if (ha && hb && hc && kn_to_host(a, ha, KN_F32) == KN_OK && kn_to_host(b, hb, KN_F32) == KN_OK &&
        kn_to_host(c, hc, KN_F32) == KN_OK) {
        for (int s = 0; s < 64; s++) {
            int64_t i = (s * 7919) % n, j = (s * 104729 + 13) % n;
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < n; k++) {
                ref += (double)ha[i * n + k] * hb[k * n + j];
                mag += fabs((double)ha[i * n + k] * hb[k * n + j]);
            }
            double e = fabs(hc[i * n + j] - ref) / (mag > 0 ? mag : 1);
            if (e > worst) worst = e;
        }
    } else worst = NAN;
    free(ha), free(hb), free(hc);
    printf("%s %lld %.4f ms %.1f GFLOP/s max-rel-err %.2e\n", kn_device_str(dev), (long long)n, sec * 1e3, gflops,
           worst);
    kn_scope_end(sc);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_matmul_device DEVICE [N ...]\n");
        return 2;
    }
    kn_device dev = kn_device_get(argv[1]);
    if (!kn_device_ok(dev)) {
        fprintf(stderr, "bench_matmul_device: %s\n", kn_error());
        return 2;
    }
    static const int64_t sizes[] = {512, 1024, 2048, 4096};
    int rc = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) {
            char *end;
            long long n = strtoll(argv[i], &end, 10);
            if (*end || n < 1 || n > 16384) {
                fprintf(stderr, "bench_matmul_device: size %s is not in 1..16384\n", argv[i]);
                return 2;
            }
            rc |= run(dev, n);
        }
    } else
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) rc |= run(dev, sizes[i]);
    return rc;
}
