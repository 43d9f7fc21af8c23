/* The thread pool behind kn__parallel_for: every index exactly once, chunks
 * of at least `grain`, nested calls, concurrent callers from user threads,
 * resizing between (and during) regions, KILN_THREADS. Also prints the cost
 * of an almost empty region. Exit status 1 on any failure. */
#include "core/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (cond) {                                                                              \
            g_pass++;                                                                            \
        } else {                                                                                 \
            if (g_fail++ < 20) {                                                                 \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                             \
                fprintf(stderr, __VA_ARGS__);                                                    \
                fputc('\n', stderr);                                                             \
            }                                                                                    \
        }                                                                                        \
    } while (0)

typedef struct {
    atomic_int *hits;
    int64_t n, grain;
    atomic_int short_chunks, chunks;
    int nested; /* run a nested parallel_for inside each chunk */
} cover_ctx;

static void nested_fn(int64_t b, int64_t e, void *ctx) {
    atomic_int *sum = ctx;
    atomic_fetch_add(sum, (int)(e - b));
}

static void cover_fn(int64_t b, int64_t e, void *vctx) {
    cover_ctx *c = vctx;
    atomic_fetch_add(&c->chunks, 1);
    if (c->n > c->grain && e - b < c->grain) atomic_fetch_add(&c->short_chunks, 1);
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i], 1);
    if (c->nested) {
        atomic_int sum = 0;
        kn__parallel_for(1000, 10, nested_fn, &sum);
        if (atomic_load(&sum) != 1000) atomic_fetch_add(&c->short_chunks, 1000000);
    }
}

/* Runs one region and checks it; returns true when it was right. */
static bool cover(int64_t n, int64_t grain, int nested) {
    cover_ctx c = {calloc((size_t)(n > 0 ? n : 1), sizeof(atomic_int)), n, grain, 0, 0, nested};
    kn__parallel_for(n, grain, cover_fn, &c);
    bool ok = atomic_load(&c.short_chunks) == 0;
    for (int64_t i = 0; i < n; i++) ok = ok && atomic_load(&c.hits[i]) == 1;
    if (n <= 0) ok = ok && atomic_load(&c.chunks) == 0;
    free(c.hits);
    return ok;
}

static void coverage_suite(void) {
    static const int64_t ns[] = {0, 1, 2, 7, 64, 100, 1000, 4097, 100000};
    static const int64_t grains[] = {0, 1, 3, 64, 1000, 5000};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (size_t j = 0; j < sizeof grains / sizeof grains[0]; j++)
            for (int nested = 0; nested < 2; nested++)
                CHECK(cover(ns[i], grains[j], nested), "n=%lld grain=%lld nested=%d threads=%d",
                      (long long)ns[i], (long long)grains[j], nested, kn_num_threads());
}

static atomic_int g_user_fail;
static atomic_bool g_resizer_stop;

static void *user_thread(void *arg) {
    (void)arg;
    for (int r = 0; r < 300; r++)
        if (!cover(5000 + r, 16, r % 7 == 0)) atomic_fetch_add(&g_user_fail, 1);
    return NULL;
}

static void *resizer_thread(void *arg) {
    (void)arg;
    for (int r = 0; !atomic_load(&g_resizer_stop); r++) {
        kn_set_num_threads(1 + r % 4);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void noop(int64_t b, int64_t e, void *ctx) {
    (void)b, (void)e, (void)ctx;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
    /* Read once, at first use. */
    setenv("KILN_THREADS", "3", 1);
    CHECK(kn_num_threads() == 3, "KILN_THREADS=3 gave %d", kn_num_threads());
    unsetenv("KILN_THREADS");
    kn_set_num_threads(0); /* back to the cores */
    const int cores = kn_num_threads();
    CHECK(cores >= 1, "default %d", cores);

    static const int counts[] = {1, 2, 3, 4, 8, 2, 1};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        kn_set_num_threads(counts[i]);
        CHECK(kn_num_threads() == counts[i], "set %d got %d", counts[i], kn_num_threads());
        coverage_suite();
    }

    /* Several user threads at once, while another resizes the pool. */
    kn_set_num_threads(4);
    pthread_t users[4], resizer;
    pthread_create(&resizer, NULL, resizer_thread, NULL);
    for (int i = 0; i < 4; i++) pthread_create(&users[i], NULL, user_thread, NULL);
    for (int i = 0; i < 4; i++) pthread_join(users[i], NULL);
    atomic_store(&g_resizer_stop, true);
    pthread_join(resizer, NULL);
    CHECK(atomic_load(&g_user_fail) == 0, "%d concurrent regions went wrong",
          atomic_load(&g_user_fail));

    kn_set_num_threads(cores);
    for (int r = 0; r < 1000; r++) kn__parallel_for(1000, 1, noop, NULL); /* warm */
    const int reps = 20000;
    double t0 = now();
    for (int r = 0; r < reps; r++) kn__parallel_for(1000, 1, noop, NULL);
    double dt = (now() - t0) / reps;
    printf("threads: empty region on %d threads: %.2f us\n", cores, dt * 1e6);

    printf("threads: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
