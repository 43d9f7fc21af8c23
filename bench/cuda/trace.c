/* A kernel timeline of a program's CUDA graph replays, from CUPTI, for
 * finding where a replayed training step spends its time. Preload it:
 *
 *   cc -O2 -shared -fPIC bench/cuda/trace.c -I/usr/local/cuda/include \
 *      -L/usr/local/cuda/lib64 -lcupti -o libtrace.so
 *   LD_PRELOAD=./libtrace.so KILN_DEVICE=cuda build/car_evaluation --graph --epochs 20 --quiet
 *
 * At exit it prints the kernels of the second-to-last launch of the graph
 * launched most often, in order (start relative to the launch's first kernel, duration, gap after
 * the previous kernel's end, name), then the launch's span, the sum of the
 * kernel durations, and the time per kernel name. With programmatic
 * dependent launch a kernel may start before its predecessor ends and wait
 * inside; run with KILN_CUDA_PDL=0 for durations that are the kernels' own. */
#include <cupti.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE (8u << 20)
#define MAX_REC (1u << 20)

typedef struct {
    unsigned long long start, end;
    unsigned corr, graph;
    int gx, gy, gz, bx, by, bz;
    char name[72];
} rec;

static rec *recs;
static size_t n_recs;

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *max_records) {
    *buf = aligned_alloc(8, BUF_SIZE);
    *size = *buf ? BUF_SIZE : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && r->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
        if (!recs || n_recs >= MAX_REC) continue;
        rec *o = &recs[n_recs++];
        o->start = k->start, o->end = k->end, o->corr = k->correlationId, o->graph = k->graphId;
        o->gx = k->gridX, o->gy = k->gridY, o->gz = k->gridZ, o->bx = k->blockX, o->by = k->blockY, o->bz = k->blockZ;
        snprintf(o->name, sizeof o->name, "%s", k->name ? k->name : "?");
    }
    free(buf);
}

__attribute__((constructor)) static void trace_start(void) {
    recs = calloc(MAX_REC, sizeof *recs);
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS)
        fprintf(stderr, "trace: CUPTI could not be enabled\n");
}

static int by_start(const void *a, const void *b) {
    const rec *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

typedef struct {
    char name[72];
    int n;
    double us;
} agg;

__attribute__((destructor)) static void trace_report(void) {
    cuptiActivityFlushAll(1);
    if (!recs) return;
    qsort(recs, n_recs, sizeof *recs, by_start);
    /* The graph launched most often (the training step; other graphs, such as
     * those that time GEMM candidates, run a few times), and its
     * second-to-last launch: kernels of one launch share a correlation id. */
    static struct {
        unsigned graph, launches, last, prev;
    } gs[256];
    int ng = 0;
    for (size_t i = 0; i < n_recs; i++) {
        if (!recs[i].graph) continue;
        int j = 0;
        while (j < ng && gs[j].graph != recs[i].graph) j++;
        if (j == ng) {
            if (ng == 256) continue;
            gs[ng++].graph = recs[i].graph;
        }
        if (recs[i].corr != gs[j].last) gs[j].prev = gs[j].last, gs[j].last = recs[i].corr, gs[j].launches++;
    }
    int top = -1;
    for (int j = 0; j < ng; j++)
        if (top < 0 || gs[j].launches > gs[top].launches) top = j;
    unsigned pick = top < 0 ? 0 : gs[top].prev ? gs[top].prev : gs[top].last;
    if (!pick) {
        fprintf(stderr, "trace: no graph launches among %zu kernels\n", n_recs);
        return;
    }
    static agg aggs[256];
    int na = 0, nk = 0;
    unsigned long long t0 = 0, prev_end = 0, t_end = 0;
    double sum = 0;
    fprintf(stderr, "trace: kernels of one replay (start, duration, gap, grid x block, name), us\n");
    for (size_t i = 0; i < n_recs; i++) {
        rec *r = &recs[i];
        if (r->corr != pick) continue;
        if (!nk) t0 = prev_end = r->start;
        double d = (r->end - r->start) / 1e3, gap = ((double)r->start - (double)prev_end) / 1e3;
        fprintf(stderr, "%8.2f %7.2f %7.2f  (%d,%d,%d)x(%d,%d,%d)  %.60s\n", (r->start - t0) / 1e3, d, gap, r->gx, r->gy,
                r->gz, r->bx, r->by, r->bz, r->name);
        prev_end = r->end > prev_end ? r->end : prev_end;
        t_end = prev_end;
        sum += d;
        nk++;
        int j = 0;
        while (j < na && strcmp(aggs[j].name, r->name)) j++;
        if (j == na && na < 256) snprintf(aggs[na++].name, sizeof aggs[0].name, "%s", r->name);
        if (j < na) aggs[j].n++, aggs[j].us += d;
    }
    fprintf(stderr, "trace: %d kernels, span %.1f us, kernel time %.1f us\n", nk, (t_end - t0) / 1e3, sum);
    for (int i = 0; i < na; i++)
        for (int j = i + 1; j < na; j++)
            if (aggs[j].us > aggs[i].us) {
                agg t = aggs[i];
                aggs[i] = aggs[j];
                aggs[j] = t;
            }
    for (int i = 0; i < na && i < 30; i++) fprintf(stderr, "%8.1f us %3dx  %.60s\n", aggs[i].us, aggs[i].n, aggs[i].name);
}
