/* KILN_VULKAN_PROFILE=1: per kernel slot, the calls, the dispatches they
 * recorded and the host time they took, plus the batches submitted and the
 * time spent waiting for them, printed at exit (stderr).
 * KILN_VULKAN_PROFILE=sync also waits for the device after every op, so an
 * op's time includes its shaders' (and batching is lost: slower overall). A composite shows
 * as the primitives it launched. Finding where a step's time goes: the
 * dispatch count is what a device pays per-dispatch overhead on. Off by
 * default; when off, the only cost is a test of one flag per dispatch. */
#include "vk_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NAMES 96

bool kvk_profiling;

typedef struct {
    const char *name;
    long long calls, dispatches;
    double ms;
} total;

static total totals[MAX_NAMES];
static int n_names;
static long long submits, dispatches;
static double wait_ms;
static kn_kernel real[KN_OP_COUNT];
static bool sync_each;
static mtx_t lock;
/* The dispatches of the slot running on this thread (kernels do not nest). */
static _Thread_local long long slot_dispatches;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void kvk_profile_dispatch(void) {
    slot_dispatches++;
    mtx_lock(&lock);
    dispatches++;
    mtx_unlock(&lock);
}

void kvk_profile_submit(double ms) {
    mtx_lock(&lock);
    submits++;
    wait_ms += ms;
    mtx_unlock(&lock);
}

double kvk_profile_now(void) { return now_ms(); }

static int by_time(const void *a, const void *b) {
    double x = ((const total *)a)->ms, y = ((const total *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void report(void) {
    mtx_lock(&lock);
    qsort(totals, (size_t)n_names, sizeof totals[0], by_time);
    double sum = 0;
    for (int k = 0; k < n_names; k++) sum += totals[k].ms;
    fprintf(stderr,
            "kiln vulkan profile: %lld dispatches, %lld submits, %.3f ms in kernel calls (host), "
            "%.3f ms submitting and waiting\n%-22s %9s %11s %11s %9s\n",
            dispatches, submits, sum, wait_ms, "op", "calls", "dispatches", "host ms", "avg us");
    for (int k = 0; k < n_names; k++)
        fprintf(stderr, "%-22s %9lld %11lld %11.3f %9.2f\n", totals[k].name, totals[k].calls, totals[k].dispatches,
                totals[k].ms, 1e3 * totals[k].ms / (double)totals[k].calls);
    kvk_print_devices(stderr);
    mtx_unlock(&lock);
}

static kn_status timed(kn_op op, int device, const void *args) {
    const char *name = kn__op_call_name(op, args);
    long long before = slot_dispatches;
    double t0 = now_ms();
    kn_status s = real[op](device, args);
    if (sync_each && s == KN_OK) s = kvk_synchronize(device);
    double ms = now_ms() - t0;
    mtx_lock(&lock);
    int k = 0;
    while (k < n_names && strcmp(totals[k].name, name)) k++;
    if (k == n_names && n_names < MAX_NAMES) totals[n_names++].name = name;
    if (k < MAX_NAMES) totals[k].calls++, totals[k].ms += ms, totals[k].dispatches += slot_dispatches - before;
    mtx_unlock(&lock);
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

void kvk_profile_install(kn_backend *b) {
    const char *e = getenv("KILN_VULKAN_PROFILE");
    if (!e || !*e || !strcmp(e, "0")) return;
    if (mtx_init(&lock, mtx_plain) != thrd_success || atexit(report) != 0) return;
    kvk_profiling = true;
    sync_each = !strcmp(e, "sync");
    for (int op = 0; op < KN_OP_COUNT; op++)
        if (b->kernels[op]) {
            real[op] = b->kernels[op];
            b->kernels[op] = wrappers[op];
        }
}
