/* Capture and replay with CUDA graphs.
 *
 * graph_begin starts capturing the device's stream (relaxed mode, so the
 * allocator may still call cudaMalloc) and gives the capture a private memory
 * pool (cuda_alloc.c). Nothing runs during a capture: the first replay does
 * the first step's work.
 *
 * Randomness: the host generator hands out Philox offsets when an op is
 * recorded, so a replayed graph would draw the same numbers every time. A
 * captured RANDOM or DROPOUT kernel therefore also reads a counter that lives
 * on the device, belongs to the graph and to the op's generator (its seed),
 * and adds it to its offset. The graph's last kernel (the queued Adam update
 * when the step ends with one, else a kernel of its own) adds to each counter the
 * span of offsets the capture used with that seed, S (from the lowest offset
 * to the end of the highest range: what the generator advanced while the
 * step was recorded; ops that reuse an offset, like dropout's backward, do
 * not count twice). Replay k (from 0) thus draws with offsets shifted by
 * k * S: exactly the numbers eager execution would have drawn step after step.
 * The host generator itself advances once, at capture. */
#include "cuda_internal.h"

#include <stdlib.h>

typedef struct {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    kc_pool *pool;
} kc_graph;

kn_status kc_graph_begin(int index) {
    const char *op = "graph_capture";
    kc_dev *d = kc_device(index, op);
    if (!d) return kn_error_code();
    if (d->capture) return kn__err(KN_ERR_INVALID, "%s: cuda:%d is already capturing", op, index);
    kn_status s = kc_adam_flush(d);
    if (s == KN_OK) s = kc_fault_check(d);
    if (s != KN_OK) return s;
    kc_pool *pool = kc_pool_new(index);
    if (!pool) return kn_error_code();
    d->capture = pool;
    /* The shift counter comes from the pool and is zeroed before capture
     * starts, so it is not part of the graph. */
    d->rng_shift = kc_alloc(index, KC_RNG_SLOTS * sizeof(unsigned long long));
    d->rng_slots = 0;
    if (!d->rng_shift) s = kn_error_code();
    d->capture = NULL;
    if (s == KN_OK)
        s = kc_check(cudaMemsetAsync(d->rng_shift, 0, KC_RNG_SLOTS * sizeof(unsigned long long), d->stream), op);
    if (s == KN_OK) s = kc_check(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeRelaxed), op);
    if (s != KN_OK) {
        if (d->rng_shift) kc_free(index, d->rng_shift, sizeof(unsigned long long));
        d->rng_shift = NULL;
        kc_pool_release(index, pool);
        return s;
    }
    d->capture = pool;
    return KN_OK;
}

void *kc_graph_end(int index, kn_status *status) {
    const char *op = "graph_capture";
    kc_dev *d = kc_device(index, op);
    if (!d || !d->capture) {
        *status = d ? kn__err(KN_ERR_INVALID, "%s: cuda:%d is not capturing", op, index) : kn_error_code();
        return NULL;
    }
    kc_pool *pool = d->capture;
    /* The shift advance (joined to queued Adam work, when there is some) and
     * the queued fused work belong to the graph. */
    kn_status s = d->rng_slots ? kc_rng_shift_advance(d) : KN_OK;
    if (s == KN_OK) s = kc_adam_flush(d);
    cudaGraph_t graph = NULL;
    kn_status es = kc_check(cudaStreamEndCapture(d->stream, &graph), op);
    if (s == KN_OK) s = es;
    d->capture = NULL;
    /* The counter's block belongs to the pool: freed now, it stays reserved
     * until the graph goes. */
    kc_graph *g = NULL;
    if (s == KN_OK && !(g = calloc(1, sizeof *g))) s = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    if (s == KN_OK) {
        g->graph = graph;
        g->pool = pool;
        s = kc_check(cudaGraphInstantiate(&g->exec, graph, 0), op);
        if (s == KN_OK) s = kc_check(cudaGraphUpload(g->exec, d->stream), op);
    }
    kc_free(index, d->rng_shift, sizeof(unsigned long long));
    d->rng_shift = NULL;
    if (s != KN_OK) {
        if (g && g->exec) (void)cudaGraphExecDestroy(g->exec);
        if (graph) (void)cudaGraphDestroy(graph);
        free(g);
        kc_pool_release(index, pool);
        (void)cudaGetLastError();
        *status = s;
        return NULL;
    }
    *status = KN_OK;
    return g;
}

kn_status kc_graph_launch(int index, void *graph) {
    const char *op = "graph_replay";
    kc_dev *d = kc_device(index, op);
    if (!d) return kn_error_code();
    if (d->capture) return kn__err(KN_ERR_INVALID, "%s: cannot replay a graph while capturing another", op);
    kn_status s = kc_adam_flush(d);
    if (s == KN_OK) s = kc_fault_check(d);
    if (s == KN_OK) s = kc_check(cudaGraphLaunch(((kc_graph *)graph)->exec, d->stream), op);
    if (s == KN_OK && kc_sync_mode()) s = kc_sync(d, op);
    return s;
}

void kc_graph_free(int index, void *graph) {
    kc_graph *g = graph;
    if (!g || !kc_device(index, "graph_free")) return;
    (void)cudaGraphExecDestroy(g->exec);
    (void)cudaGraphDestroy(g->graph);
    /* Later work on the stream runs after any replay still in flight, so the
     * pool's memory may be reused right away. */
    kc_pool_release(index, g->pool);
    free(g);
}
