/* What every benchmark program here shares: a monotonic clock and the
 * median of repeated timings. Header-only: each bench_*.c is one program. */
#ifndef KILN_BENCH_UTIL_H
#define KILN_BENCH_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Seconds on a monotonic clock. */
static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of t[0, n) (n >= 1); sorts t. */
static inline double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The --batch and --steps of the step benchmarks, in range; else a
 * message naming prog and false (exit status 2). */
static inline bool bench_check_batch_steps(const char *prog, int64_t batch, int steps) {
    if (batch >= 1 && batch <= 65536 && steps >= 1 && steps <= 100000) return true;
    fprintf(stderr, "%s: --batch must be in [1, 65536] and --steps in [1, 100000]\n", prog);
    return false;
}

#endif
