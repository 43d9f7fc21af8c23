/* GFLOP/s of kn__sgemm / kn__dgemm on the reference workload's shapes and
 * 1024^3, with 1 thread and with all of them.
 * Usage: gemm_bench [blas|avx512|avx2|generic] [f64] */
#include "backends/cpu/gemm.h"
#include "core/internal.h"

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *what;
    bool ta, tb;
    int64_t M, N, K;
} shape;

static double bench(const shape *s, bool dbl) {
    const int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    const size_t esz = dbl ? 8 : 4;
    const size_t na = (size_t)(s->M * s->K), nb = (size_t)(s->K * s->N), nc = (size_t)(s->M * s->N);
    char *A = malloc(na * esz), *B = malloc(nb * esz), *C = malloc(nc * esz);
    for (size_t i = 0; i < na; i++) {
        if (dbl) ((double *)A)[i] = (double)(i % 7) - 3;
        else ((float *)A)[i] = (float)(i % 7) - 3;
    }
    for (size_t i = 0; i < nb; i++) {
        if (dbl) ((double *)B)[i] = (double)(i % 5) - 2;
        else ((float *)B)[i] = (float)(i % 5) - 2;
    }
    memset(C, 0, nc * esz);
    double best = 1e30, total = 0;
    for (int rep = 0; total < 0.3 || rep < 5; rep++) {
        double t0 = bench_now();
        int inner = 0;
        do { /* batch tiny calls so the clock's cost does not count */
            if (dbl)
                kn__dgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0, (double *)A, lda, (double *)B,
                          ldb, 0.0, (double *)C, s->N);
            else
                kn__sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, (float *)A, lda, (float *)B,
                          ldb, 0.0f, (float *)C, s->N);
            inner++;
        } while (bench_now() - t0 < 2e-3);
        double dt = (bench_now() - t0) / inner;
        total += dt * inner;
        if (dt < best) best = dt;
        if (rep > 2000) break;
    }
    free(A), free(B), free(C);
    return 2.0 * (double)s->M * (double)s->N * (double)s->K / best * 1e-9;
}

int main(int argc, char **argv) {
    bool dbl = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "f64") == 0) dbl = true;
        else if (!kn__gemm_force(argv[i])) {
            fprintf(stderr, "gemm_bench: kernel %s not available\n", argv[i]);
            return 1;
        }
    }
    static const shape shapes[] = {
        {"fc1 fwd   X @ W1", false, false, 1382, 200, 12},
        {"fc1 dW    X^T @ dH", true, false, 12, 200, 1382},
        {"fc1 dX    dH @ W1^T", false, true, 1382, 12, 200},
        {"fc2 fwd   H @ W2", false, false, 1382, 100, 200},
        {"fc2 dW    H^T @ dY", true, false, 200, 100, 1382},
        {"fc2 dX    dY @ W2^T", false, true, 1382, 200, 100},
        {"both T    A^T @ B^T", true, true, 200, 100, 1382},
        {"square 256", false, false, 256, 256, 256},
        {"square 1024", false, false, 1024, 1024, 1024},
        {"square 1024 TT", true, true, 1024, 1024, 1024},
    };
    const int nt = kn_num_threads();
    printf("kernel %s, %s, GFLOP/s (best of repeated runs)\n", kn__gemm_kernel_name(),
           dbl ? "f64" : "f32");
    printf("%-22s %5s %5s %5s %9s %9s(%d)\n", "shape", "M", "N", "K", "1 thread", "threads", nt);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        kn_set_num_threads(1);
        double g1 = bench(s, dbl);
        kn_set_num_threads(nt);
        double gn = bench(s, dbl);
        printf("%-22s %5lld %5lld %5lld %9.1f %9.1f\n", s->what, (long long)s->M,
               (long long)s->N, (long long)s->K, g1, gn);
    }
    return 0;
}
