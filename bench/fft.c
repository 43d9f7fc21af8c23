/* CPU FFT timings: complex-to-complex (complex64 and complex128) and real
 * (float32) transforms of a batch of lines, median of repeats. bench/fft.py
 * runs this and the same transforms in numpy and PyTorch and prints ratios.
 * Usage: bench_fft [--reps N]
 * Prints one line per case: "kind dtype batch n ms". */
#include <kiln.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *kind; /* fft, rfft */
    kn_dtype dt;      /* of the input */
    int64_t batch, n;
} bcase;

static double run(const bcase *c, int reps) {
    kn_scope outer = kn_scope_begin();
    kn_generator g = kn_generator_make(1);
    bool real = !strcmp(c->kind, "rfft");
    kn_tensor *x = real ? kn_randn(KN_SHAPE(c->batch, c->n), c->dt, KN_CPU, &g)
                        : kn_view_as_complex(kn_randn(KN_SHAPE(c->batch, c->n, 2), kn_dtype_real(c->dt), KN_CPU, &g));
    double t[64];
    int n = 0;
    for (int r = -2; r < reps; r++) { /* warm-ups: the plan and the allocator's cache */
        kn_scope sc = kn_scope_begin();
        double t0 = now();
        kn_tensor *y = real ? kn_rfft(x, -1, -1, KN_FFT_NORM_BACKWARD) : kn_fft(x, -1, -1, KN_FFT_NORM_BACKWARD);
        if (!y) {
            fprintf(stderr, "bench_fft: %s\n", kn_error());
            exit(1);
        }
        double dt = now() - t0;
        kn_scope_end(sc);
        if (r >= 0 && n < 64) t[n++] = dt;
    }
    kn_scope_end(outer);
    qsort(t, (size_t)n, sizeof *t, cmp);
    return t[n / 2];
}

int main(int argc, char **argv) {
    int reps = 9;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > 64) reps = 9;
        } else {
            fprintf(stderr, "usage: bench_fft [--reps N]\n");
            return 2;
        }
    }
    static const bcase cases[] = {
        {"fft", KN_C64, 256, 1024}, {"fft", KN_C128, 256, 1024}, {"fft", KN_C64, 64, 4096},
        {"fft", KN_C64, 256, 1000}, {"fft", KN_C64, 64, 4099}, {"fft", KN_C64, 1, 1 << 20},
        {"rfft", KN_F32, 256, 1024}, {"rfft", KN_F32, 64, 4096},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const bcase *c = &cases[k];
        printf("%s %s %lld %lld %.4f\n", c->kind, kn_dtype_name(c->dt), (long long)c->batch, (long long)c->n,
               1e3 * run(c, reps));
        fflush(stdout);
    }
    return 0;
}
