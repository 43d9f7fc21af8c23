/* KILN_CUDA_PROFILE=1: the GPU time of every op, measured with events around
 * each kernel slot and printed per op name at exit (stderr). For finding the
 * slow kernels of a step; it makes fused Adam run at once and costs a little
 * host time per op, so it is off by default. */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING 2048
#define MAX_NAMES 96

typedef struct {
    const char *name;
    int dev;
    cudaEvent_t start, end;
} pending;

static pending ring[MAX_PENDING];
static int n_pending;
typedef struct {
    const char *name;
    long long calls;
    double ms;
} total;
static total totals[MAX_NAMES];
static int n_names;
static kn_kernel real[KN_OP_COUNT];

static void drain(void) {
    for (int i = 0; i < n_pending; i++) {
        pending *p = &ring[i];
        float ms = 0;
        if (cudaEventSynchronize(p->end) != cudaSuccess || cudaEventElapsedTime(&ms, p->start, p->end) != cudaSuccess)
            ms = 0;
        int k = 0;
        while (k < n_names && strcmp(totals[k].name, p->name)) k++;
        if (k == n_names && n_names < MAX_NAMES) totals[n_names++].name = p->name;
        if (k < MAX_NAMES) totals[k].calls++, totals[k].ms += ms;
    }
    n_pending = 0;
    (void)cudaGetLastError();
}

static int by_time(const void *a, const void *b) {
    double x = ((const total *)a)->ms, y = ((const total *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void report(void) {
    drain();
    qsort(totals, (size_t)n_names, sizeof totals[0], by_time);
    double sum = 0;
    for (int k = 0; k < n_names; k++) sum += totals[k].ms;
    fprintf(stderr, "kiln cuda profile: %.3f ms of GPU time in ops\n%-22s %9s %11s %9s\n", sum, "op", "calls", "total ms",
            "avg us");
    for (int k = 0; k < n_names; k++)
        fprintf(stderr, "%-22s %9lld %11.3f %9.2f\n", totals[k].name, totals[k].calls, totals[k].ms,
                1e3 * totals[k].ms / (double)totals[k].calls);
}

static kn_status timed(kn_op op, int device, const void *args) {
    const char *name = kn__op_call_name(op, args);
    kc_dev *d = kc_device(device, name);
    if (!d || d->capture) return real[op](device, args);
    /* Registered once the CUDA runtime is up, so the report runs before the
     * runtime's own exit handler tears it down (handlers run in reverse). */
    static bool reporting;
    if (!reporting) reporting = atexit(report) == 0;
    if (n_pending == MAX_PENDING) drain();
    pending *p = &ring[n_pending];
    if (!p->start) {
        (void)cudaEventCreate(&p->start);
        (void)cudaEventCreate(&p->end);
    }
    (void)kc_adam_flush(d);
    (void)cudaEventRecord(p->start, d->stream);
    kn_status s = real[op](device, args);
    if (op == KN_OP_ADAM) (void)kc_adam_flush(d);
    (void)cudaEventRecord(p->end, d->stream);
    p->name = name;
    p->dev = device;
    n_pending++;
    return s;
}

/* A kernel slot does not say which op it runs: one wrapper per op. */
#define KN_OP(ID, name, tier, fields) \
    static kn_status timed_##name(int device, const void *args) { return timed(KN_OP_##ID, device, args); }
#include "core/ops.def"
#undef KN_OP

static const kn_kernel wrappers[KN_OP_COUNT] = {
#define KN_OP(ID, name, tier, fields) [KN_OP_##ID] = timed_##name,
#include "core/ops.def"
#undef KN_OP
};

void kc_profile_install(kn_backend *b) {
    const char *e = getenv("KILN_CUDA_PROFILE");
    if (!e || !*e || !strcmp(e, "0")) return;
    for (int op = 0; op < KN_OP_COUNT; op++)
        if (b->kernels[op]) {
            real[op] = b->kernels[op];
            b->kernels[op] = wrappers[op];
        }
}
