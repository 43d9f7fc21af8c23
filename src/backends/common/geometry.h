/* Shared geometry of strided kernels: up to KN_GEOM_MAX_OPS views of one
 * shape (inputs already broadcast to the first, usually the output), with
 * size-1 dims dropped and neighbouring dims merged wherever every operand is
 * contiguous across them, so most operands become one flat run. Every
 * backend walks this instead of the views' own dims. */
#ifndef KILN_COMMON_GEOMETRY_H
#define KILN_COMMON_GEOMETRY_H

#include "core/backend.h"

#define KN_GEOM_MAX_OPS 4

typedef struct {
    int nops;
    int ndim; /* >= 1 after merging; stored outermost first */
    int64_t numel;
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_GEOM_MAX_OPS][KN_MAX_DIMS]; /* in elements */
} kn_geom;

static inline void kn_geom_init(kn_geom *g, int nops, const kn_operand *const *ops) {
    const kn_operand *ref = ops[0];
    int64_t shape[KN_MAX_DIMS], stride[KN_GEOM_MAX_OPS][KN_MAX_DIMS];
    int nd = 0;
    g->nops = nops;
    g->numel = kn_operand_numel(ref);
    /* Innermost first, so merging looks at the already merged inner dim. */
    for (int d = ref->ndim - 1; d >= 0; d--) {
        if (ref->shape[d] == 1) continue;
        if (nd > 0) {
            bool merge = true;
            for (int k = 0; k < nops; k++)
                if (ops[k]->stride[d] != stride[k][nd - 1] * shape[nd - 1]) merge = false;
            if (merge) {
                shape[nd - 1] *= ref->shape[d];
                continue;
            }
        }
        shape[nd] = ref->shape[d];
        for (int k = 0; k < nops; k++) stride[k][nd] = ops[k]->stride[d];
        nd++;
    }
    if (nd == 0) {
        shape[0] = 1;
        for (int k = 0; k < nops; k++) stride[k][0] = 0;
        nd = 1;
    }
    g->ndim = nd;
    for (int d = 0; d < nd; d++) {
        g->shape[d] = shape[nd - 1 - d];
        for (int k = 0; k < nops; k++) g->stride[k][d] = stride[k][nd - 1 - d];
    }
}

/* Element offset of operand k at row-major index i of the merged geometry. */
static inline int64_t kn_geom_offset(const kn_geom *g, int k, int64_t i) {
    int64_t off = 0;
    for (int d = g->ndim - 1; d >= 0; d--) {
        off += (i % g->shape[d]) * g->stride[k][d];
        i /= g->shape[d];
    }
    return off;
}

/* [outer, n, inner] of dim `dim` of a view's shape: the products of the dims
 * before and after it (softmax, norms, gather walk these). */
static inline void kn_geom_split(const kn_operand *v, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    int64_t o = 1, in = 1;
    for (int d = 0; d < dim; d++) o *= v->shape[d];
    for (int d = dim + 1; d < v->ndim; d++) in *= v->shape[d];
    *outer = o;
    *n = v->ndim ? v->shape[dim] : 1;
    *inner = in;
}

#endif
