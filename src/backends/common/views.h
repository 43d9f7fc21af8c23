/* Operand views every backend and the composites build the same way:
 * broadcasting to a shape, and the index views that turn the fused index ops
 * (index_select, index_add, the joined embeddings) into gather/scatter_add.
 * No data moves: each returns a kn_operand over the same memory. */
#ifndef KILN_COMMON_VIEWS_H
#define KILN_COMMON_VIEWS_H

#include "core/backend.h"

#include <string.h>

/* v broadcast to ref's shape: dims aligned at the right, stride 0 on the new
 * dims and on v's size-1 dims. v itself when the shapes already agree. */
static inline kn_operand kn_view_expand(const kn_operand *v, const kn_operand *ref) {
    if (v->ndim == ref->ndim && !memcmp(v->shape, ref->shape, (size_t)ref->ndim * sizeof *ref->shape)) return *v;
    kn_operand e = *v;
    e.ndim = ref->ndim;
    for (int d = 0; d < ref->ndim; d++) {
        int sd = d - (ref->ndim - v->ndim);
        e.shape[d] = ref->shape[d];
        e.stride[d] = sd >= 0 && v->shape[sd] != 1 ? v->stride[sd] : 0;
    }
    return e;
}

/* A 1-D index along dim, seen with like's shape (stride 0 elsewhere): the
 * index operand of the gather/scatter_add an index_select/index_add becomes. */
static inline kn_operand kn_view_index_along(const kn_operand *index, const kn_operand *like, int64_t dim) {
    kn_operand v = *like;
    v.data = index->data;
    v.dtype = index->dtype;
    for (int d = 0; d < v.ndim; d++) v.stride[d] = d == dim ? index->stride[0] : 0;
    return v;
}

/* Columns [off, off + width) of a 2-D view. */
static inline kn_operand kn_view_columns(const kn_operand *v, int64_t off, int64_t width) {
    kn_operand c = *v;
    c.data = (char *)v->data + (size_t)(off * v->stride[1]) * kn_dtype_size(v->dtype);
    c.shape[1] = width;
    return c;
}

/* Column k of codes [N, T], seen as [N, width] (stride 0 along the width): the
 * gather index that reads table k's rows into its columns of the output. */
static inline kn_operand kn_view_code_column(const kn_operand *codes, int64_t k, int64_t width) {
    kn_operand c = kn_view_columns(codes, k, 1);
    c.shape[1] = width;
    c.stride[1] = 0;
    return c;
}

#endif
