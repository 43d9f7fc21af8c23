/* Host helpers on views: broadcasting, flat-run tests and contiguous
 * operands with their scratch from the caching allocator. */
#include "cuda_internal.h"

#include <string.h>

bool kc_geom_flat(const kn_geom *g) {
    if (g->ndim != 1) return false;
    for (int k = 0; k < g->nops; k++)
        if (g->stride[k][0] != 1 && g->stride[k][0] != 0) return false;
    return true;
}

kn_operand kc_view_expand(const kn_operand *v, int ndim, const int64_t *shape) {
    kn_operand e = *v;
    e.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        int sd = d - (ndim - v->ndim);
        e.shape[d] = shape[d];
        e.stride[d] = sd >= 0 && v->shape[sd] != 1 ? v->stride[sd] : 0;
    }
    return e;
}

kn_status kc_contig(kc_dev *d, const kn_operand *v, kn_dtype dt, kc_buf *out) {
    memset(out, 0, sizeof *out);
    out->v = *v;
    if (!kn_operand_present(v) || (v->dtype == dt && kn_operand_contiguous(v))) return KN_OK;
    kn_operand c = *v;
    c.dtype = dt;
    int64_t s = 1;
    for (int k = v->ndim - 1; k >= 0; k--) {
        c.stride[k] = s;
        s *= v->shape[k];
    }
    size_t nbytes = (size_t)s * kn_dtype_size(dt);
    if (!(c.data = kc_alloc(d->index, nbytes))) return kn_error_code();
    kn_status st = s > 0 ? kc_copy_view(d, &c, v) : KN_OK;
    if (st != KN_OK) {
        kc_free(d->index, c.data, nbytes);
        return st;
    }
    out->v = c;
    out->scratch = c.data;
    out->nbytes = nbytes;
    return KN_OK;
}

void kc_buf_free(kc_dev *d, kc_buf *b) {
    if (b->scratch) kc_free(d->index, b->scratch, b->nbytes);
    b->scratch = NULL;
}
