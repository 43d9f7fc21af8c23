/* The CPU thread pool behind kn__parallel_for.
 *
 * Workers are started lazily and persist. A region is published as one 64-bit
 * "ticket" (generation | chunk count | next chunk); workers and the caller
 * claim chunks with a CAS on it, so a worker that wakes late can never run a
 * chunk of a region other than the one it claimed, and the caller waits only
 * for chunks that were claimed, never for sleeping workers to wake.
 *
 * Idle workers spin briefly (pause, then sched_yield so that other runnable
 * threads such as OpenBLAS's get the core), then sleep on a condvar; the
 * caller only touches the mutex when someone sleeps.
 *
 * One region runs at a time. A call made while a region is running (nested
 * from a worker or the caller, or from another user thread) runs inline on
 * its own thread: it never blocks and never deadlocks. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity */
#endif
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(KILN_HAVE_OPENBLAS)
extern void openblas_set_num_threads(int);
#endif

/* Helgrind does not model C11 atomics: -DKILN_HELGRIND tells it about the
 * happens-before edges they carry and stops it checking the atomics. */
#if defined(KILN_HELGRIND)
#include <valgrind/helgrind.h>
#define HG_BEFORE(p) ANNOTATE_HAPPENS_BEFORE(p)
#define HG_AFTER(p) ANNOTATE_HAPPENS_AFTER(p)
#define HG_IGNORE(v) VALGRIND_HG_DISABLE_CHECKING(&(v), sizeof(v))
#else
#define HG_BEFORE(p) ((void)0)
#define HG_AFTER(p) ((void)0)
#define HG_IGNORE(v) ((void)0)
#endif

enum { KN_THREADS_MAX = 1024, KN_CHUNKS_PER_THREAD = 4 };
#define KN_SPIN_PAUSE_NS 2000LL   /* cheap spin: catches back-to-back kernels */
#define KN_SPIN_YIELD_NS 100000LL /* then yield-spin up to this, then sleep */

/* ticket: generation (32 bits) | chunk count (16) | next chunk (16) */
#define TK_GEN(t) ((uint32_t)((t) >> 32))
#define TK_NCH(t) ((int)(((t) >> 16) & 0xffff))
#define TK_NEXT(t) ((int)((t)&0xffff))
#define TK_MAKE(g, nch) (((uint64_t)(g) << 32) | ((uint64_t)(nch) << 16))

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static atomic_int g_requested = 1; /* kn_num_threads() */

/* Region state. The job fields are plain: written before the ticket is
 * published (release) and read only after a chunk is claimed (acquire). */
static struct {
    kn_range_fn fn;
    void *ctx;
    int64_t n;
} g_job;
static _Atomic uint64_t g_ticket;
static atomic_int g_done; /* chunks finished in the current region */
static atomic_flag g_busy = ATOMIC_FLAG_INIT; /* a region (or a resize) runs */

/* Workers; owned by whoever holds g_busy. */
static pthread_t *g_workers;
static int g_nworkers;
static int g_pool_for = 1; /* thread count the pool was last sized for */
static uint32_t g_gen;

/* Sleeping. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static atomic_int g_sleepers;
static atomic_bool g_stop;
static bool g_atexit_done;

static _Thread_local bool tl_is_worker;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) && defined(__GNUC__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int default_threads(void) {
    const char *env = getenv("KILN_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1) return v > KN_THREADS_MAX ? KN_THREADS_MAX : (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__linux__) && defined(CPU_COUNT)
    /* Respect taskset / container CPU sets. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c >= 1 && (n < 1 || c < n)) n = c;
    }
#endif
    if (n < 1) n = 1;
    return n > KN_THREADS_MAX ? KN_THREADS_MAX : (int)n;
}

static void tell_blas(int n) {
#if defined(KILN_HAVE_OPENBLAS)
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

static void init_once(void) {
    HG_IGNORE(g_requested);
    HG_IGNORE(g_ticket);
    HG_IGNORE(g_done);
    HG_IGNORE(g_busy);
    HG_IGNORE(g_sleepers);
    HG_IGNORE(g_stop);
    int n = default_threads();
    atomic_store(&g_requested, n);
    tell_blas(n);
}

int kn_num_threads(void) {
    pthread_once(&g_once, init_once);
    return atomic_load_explicit(&g_requested, memory_order_relaxed);
}

/* n < 1 restores the default (KILN_THREADS, else the cores). Takes effect at
 * the next region; safe to call at any time, from any thread. */
void kn_set_num_threads(int n) {
    pthread_once(&g_once, init_once);
    if (n < 1) n = default_threads();
    if (n > KN_THREADS_MAX) n = KN_THREADS_MAX;
    atomic_store(&g_requested, n);
    tell_blas(n);
}

/* ---- running chunks ---------------------------------------------------------- */

/* Claims and runs chunks of generation `gen` until none is left. */
static void run_chunks(uint32_t gen) {
    uint64_t t = atomic_load_explicit(&g_ticket, memory_order_acquire);
    for (;;) {
        if (TK_GEN(t) != gen || TK_NEXT(t) >= TK_NCH(t)) return;
        if (!atomic_compare_exchange_weak_explicit(&g_ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* Chunk k of `gen` is ours and unfinished, so the job is still this one. */
        HG_AFTER(&g_ticket);
        int64_t k = TK_NEXT(t), nch = TK_NCH(t), n = g_job.n;
        int64_t base = n / nch, rem = n % nch;
        int64_t b = k * base + (k < rem ? k : rem);
        int64_t e = b + base + (k < rem ? 1 : 0);
        g_job.fn(b, e, g_job.ctx);
        HG_BEFORE(&g_done);
        atomic_fetch_add_explicit(&g_done, 1, memory_order_release);
        t = atomic_load_explicit(&g_ticket, memory_order_acquire);
    }
}

/* Waits until the ticket's generation differs from `seen` or the pool stops. */
static uint64_t wait_for_work(uint32_t seen) {
    int64_t start = now_ns();
    for (unsigned i = 1;; i++) {
        uint64_t t = atomic_load_explicit(&g_ticket, memory_order_acquire);
        if (TK_GEN(t) != seen || atomic_load_explicit(&g_stop, memory_order_relaxed)) return t;
        if ((i & 31) == 0) {
            int64_t dt = now_ns() - start;
            if (dt > KN_SPIN_YIELD_NS) break;
            if (dt > KN_SPIN_PAUSE_NS) {
                sched_yield();
                continue;
            }
        }
        cpu_relax();
    }
    pthread_mutex_lock(&g_mu);
    atomic_fetch_add(&g_sleepers, 1); /* seq_cst: pairs with the ticket store */
    uint64_t t;
    while (TK_GEN(t = atomic_load(&g_ticket)) == seen && !atomic_load(&g_stop))
        pthread_cond_wait(&g_cv, &g_mu);
    atomic_fetch_sub(&g_sleepers, 1);
    pthread_mutex_unlock(&g_mu);
    return t;
}

static void *worker_main(void *arg) {
    (void)arg;
    tl_is_worker = true;
    uint32_t seen = TK_GEN(atomic_load(&g_ticket));
    for (;;) {
        uint64_t t = wait_for_work(seen);
        if (atomic_load_explicit(&g_stop, memory_order_acquire)) break;
        seen = TK_GEN(t);
        run_chunks(seen);
    }
    return NULL;
}

/* ---- pool life ---------------------------------------------------------------- */

/* Caller holds g_busy. */
static void stop_workers(void) {
    if (g_nworkers == 0) return;
    pthread_mutex_lock(&g_mu);
    atomic_store(&g_stop, true);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < g_nworkers; i++) pthread_join(g_workers[i], NULL);
    free(g_workers);
    g_workers = NULL;
    g_nworkers = 0;
    atomic_store(&g_stop, false);
}

static void at_exit(void) {
    /* A region still running (exit from inside a kernel, or from another
     * thread) keeps its workers: the process is going away anyway. */
    if (tl_is_worker || atomic_flag_test_and_set_explicit(&g_busy, memory_order_acquire))
        return;
    HG_AFTER(&g_busy);
    stop_workers();
    HG_BEFORE(&g_busy);
    atomic_flag_clear_explicit(&g_busy, memory_order_release);
}

static void after_fork_child(void) {
    /* Only the forking thread survives: forget the workers. */
    free(g_workers);
    g_workers = NULL;
    g_nworkers = 0;
    g_pool_for = 1;
    atomic_store(&g_sleepers, 0);
    atomic_store(&g_stop, false);
    atomic_flag_clear(&g_busy);
    pthread_mutex_init(&g_mu, NULL);
    pthread_cond_init(&g_cv, NULL);
}

/* Caller holds g_busy. Starts up to `want` workers; keeps what it got. */
static void start_workers(int want) {
    if (!g_atexit_done) {
        g_atexit_done = true;
        atexit(at_exit);
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    g_workers = malloc((size_t)want * sizeof *g_workers);
    if (!g_workers) return;
    /* Workers get no signals: those stay with the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (g_nworkers < want && pthread_create(&g_workers[g_nworkers], NULL, worker_main, NULL) == 0)
        g_nworkers++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (g_nworkers == 0) {
        free(g_workers);
        g_workers = NULL;
    }
}

/* ---- regions ------------------------------------------------------------------ */

void kn__parallel_for(int64_t n, int64_t grain, kn_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = kn_num_threads();
    if (n <= grain || nt <= 1 || tl_is_worker ||
        atomic_flag_test_and_set_explicit(&g_busy, memory_order_acquire)) {
        fn(0, n, ctx);
        return;
    }
    HG_AFTER(&g_busy);
    if (g_pool_for != nt) {
        stop_workers();
        start_workers(nt - 1);
        g_pool_for = nt;
    }
    int64_t nch = n / grain;
    int64_t max_ch = (int64_t)(g_nworkers + 1) * KN_CHUNKS_PER_THREAD;
    if (nch > max_ch) nch = max_ch;
    if (g_nworkers == 0 || nch <= 1) {
        HG_BEFORE(&g_busy);
        atomic_flag_clear_explicit(&g_busy, memory_order_release);
        fn(0, n, ctx);
        return;
    }

    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.n = n;
    atomic_store_explicit(&g_done, 0, memory_order_relaxed);
    uint32_t gen = ++g_gen;
    HG_BEFORE(&g_ticket);
    atomic_store(&g_ticket, TK_MAKE(gen, nch)); /* seq_cst: pairs with the sleepers count */
    if (atomic_load(&g_sleepers) > 0) {
        pthread_mutex_lock(&g_mu);
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
    }

    run_chunks(gen);
    /* The rest was claimed by workers that are running it now. */
    for (unsigned i = 1; atomic_load_explicit(&g_done, memory_order_acquire) < nch; i++) {
        if (i < 4096)
            cpu_relax();
        else
            sched_yield();
    }
    HG_AFTER(&g_done);
    HG_BEFORE(&g_busy);
    atomic_flag_clear_explicit(&g_busy, memory_order_release);
}
