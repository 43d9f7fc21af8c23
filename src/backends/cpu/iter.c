/* The strided multi-operand iterator behind every elementwise CPU kernel. */
#include "cpu_internal.h"

void kn__iter_init(kn_iter *it, int n_ops, const kn_operand *const *ops) {
    kn_geom g;
    kn_geom_init(&g, n_ops, ops);
    it->n_ops = n_ops;
    it->ndim = g.ndim;
    it->numel = g.numel;
    for (int d = 0; d < g.ndim; d++) it->shape[d] = g.shape[d];
    for (int k = 0; k < n_ops; k++) {
        int64_t es = (int64_t)kn_dtype_size(ops[k]->dtype); /* the loops step in bytes */
        it->base[k] = (char *)ops[k]->data;
        for (int d = 0; d < g.ndim; d++) it->stride[k][d] = g.stride[k][d] * es;
    }
}

int64_t kn__iter_outer(const kn_iter *it) {
    int64_t n = 1;
    for (int d = 0; d < it->ndim - 1; d++) n *= it->shape[d];
    return it->numel ? n : 0;
}

void kn__iter_run(const kn_iter *it, int64_t begin, int64_t end, kn_inner_fn fn, void *ctx) {
    int last = it->ndim - 1;
    int64_t inner_stride[KN_ITER_MAX];
    for (int k = 0; k < it->n_ops; k++) inner_stride[k] = it->stride[k][last];
    for (int64_t o = begin; o < end; o++) {
        char *p[KN_ITER_MAX];
        int64_t rem = o;
        for (int k = 0; k < it->n_ops; k++) p[k] = it->base[k];
        for (int d = last - 1; d >= 0; d--) {
            int64_t i = rem % it->shape[d];
            rem /= it->shape[d];
            for (int k = 0; k < it->n_ops; k++) p[k] += i * it->stride[k][d];
        }
        fn(p, inner_stride, it->shape[last], ctx);
    }
}

typedef struct {
    const kn_iter *it;
    kn_inner_fn fn;
    void *ctx;
} run_ctx;

static void run_range(int64_t b, int64_t e, void *p) {
    run_ctx *r = p;
    kn__iter_run(r->it, b, e, r->fn, r->ctx);
}

/* A single long inner run is split into pieces, so large flat tensors also
 * use every core. */
static void run_split_inner(int64_t b, int64_t e, void *p) {
    run_ctx *r = p;
    const kn_iter *it = r->it;
    char *ptrs[KN_ITER_MAX];
    int64_t st[KN_ITER_MAX];
    for (int k = 0; k < it->n_ops; k++) {
        st[k] = it->stride[k][0];
        ptrs[k] = it->base[k] + b * st[k];
    }
    r->fn(ptrs, st, e - b, r->ctx);
}

void kn__iter_for_each(const kn_iter *it, kn_inner_fn fn, void *ctx) {
    enum { GRAIN = 32768 }; /* elements per task: below this threads cost more than they save */
    run_ctx r = {it, fn, ctx};
    int64_t outer = kn__iter_outer(it);
    if (outer == 0) return;
    if (it->ndim == 1) {
        if (it->numel < 2 * GRAIN) kn__iter_run(it, 0, 1, fn, ctx);
        else kn__parallel_for(it->numel, GRAIN, run_split_inner, &r);
        return;
    }
    int64_t inner = it->shape[it->ndim - 1];
    int64_t grain = inner >= GRAIN ? 1 : GRAIN / inner;
    if (outer <= grain) kn__iter_run(it, 0, outer, fn, ctx);
    else kn__parallel_for(outer, grain, run_range, &r);
}
